"""The fast path of batch validation against the serializer it stands in for.

`validated_events` first tries `_plain_event_fields`, which accepts only plainly valid events
and must give each exactly the fields the serializer gives it; anything else goes through
`QueryEventSerializer`. On generated events mixing good values with every kind of bad or
unusual one (other JSON types, bounds, blanks, padding, control and invisible characters,
NaN, dates in the future or past retention), the fast path is checked to either decline or
agree with the serializer, never to accept what the serializer refuses; and the ordinary
events a product sends are checked to take it.
"""

import math
from datetime import timedelta

from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from analytics.serializers import (
    FUTURE_TOLERANCE,
    QueryEventSerializer,
    _plain_event_fields,
    validated_events,
)
from analytics.streams import retained_from
from tests.strategies import OTHER_JSON, awkward_text

NOW = timezone.now()
AWKWARD_TEXT = awkward_text(64, 65, 128, 129, 2000, 2001)
TEXT = st.one_of(st.text(max_size=40), AWKWARD_TEXT)
INTEGER = st.one_of(
    st.integers(-2, 7),
    st.sampled_from([2**31 - 1, 2**31, 2**53 - 1, 2**53]),
    st.sampled_from([4.0, 4.5, "4", True, False, None]),
)
FLOAT = st.one_of(
    st.floats(-1, 4000, allow_nan=False),
    st.sampled_from([0, 1, 3600, 3601, 1.0000001, math.nan, math.inf, "0.5", True, None]),
)
MOMENTS = st.sampled_from(
    [
        NOW,
        NOW - timedelta(days=3),
        NOW + FUTURE_TOLERANCE - timedelta(seconds=30),
        NOW + FUTURE_TOLERANCE + timedelta(minutes=1),
        retained_from(NOW) + timedelta(minutes=5),
        retained_from(NOW) - timedelta(minutes=5),
    ]
)
TIMESTAMP = st.one_of(
    MOMENTS.map(lambda moment: moment.isoformat()),
    MOMENTS.map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")),
    MOMENTS.map(lambda moment: moment.replace(tzinfo=None).isoformat()),  # naive: the default zone
    st.sampled_from(["", "yesterday", "2026-02-30T10:00:00Z", "2026-12-01", 1700000000, None]),
)
FIELDS = {
    "id": st.one_of(TEXT, OTHER_JSON),
    "type": st.sampled_from(["query", "Query", "click", "", None, 1]),
    "timestamp": TIMESTAMP,
    "query_text": st.one_of(TEXT, OTHER_JSON),
    "query_category": st.one_of(TEXT, OTHER_JSON),
    "response_time": FLOAT,
    "success": st.sampled_from([True, False, "true", 1, 0, None]),
    "error_category": st.one_of(st.sampled_from(["", "timeout"]), TEXT, OTHER_JSON),
    "satisfaction": INTEGER,
    "tokens": INTEGER,
    "cost_micros": INTEGER,
    "user_ref": st.one_of(TEXT, OTHER_JSON),
    "relevance_score": FLOAT,
    "confidence_score": FLOAT,
    "unknown_field": st.just("x"),
}


# Text the serializer takes (formats, joiners and spaces included: the fast path leaves
# those to it).
PLAIN = st.characters(exclude_categories=("Cc", "Cs"))
VALID = {
    "id": st.text(st.characters(exclude_categories=("Cc", "Cs", "Zs")), min_size=1, max_size=20),
    "type": st.just("query"),
    "timestamp": st.just(NOW.isoformat()),
    "query_text": st.text(PLAIN, max_size=60),
    "query_category": st.sampled_from(["", "billing", "account"]),
    "response_time": st.one_of(st.none(), st.floats(0, 3600)),
    "success": st.just(True),
    "satisfaction": st.one_of(st.none(), st.integers(1, 5)),
    "tokens": st.integers(0, 5000),
    "cost_micros": st.integers(0, 10**9),
    "user_ref": st.text(PLAIN, max_size=20),
    "relevance_score": st.one_of(st.none(), st.floats(0, 1)),
    "confidence_score": st.one_of(st.none(), st.floats(0, 1)),
}


@st.composite
def events(draw):
    """A plausible event (some optional fields left out), with zero to three of its fields
    replaced by awkward values."""
    event = {name: draw(strategy) for name, strategy in VALID.items()}
    for name in draw(
        st.sets(st.sampled_from(sorted(set(VALID) - {"id", "type", "timestamp"})), max_size=4)
    ):
        event.pop(name, None)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2)):
        event[name] = draw(FIELDS[name])
    return event


def serializer_verdict(raw):
    serializer = QueryEventSerializer()
    try:
        return serializer.event_fields(serializer.run_validation(raw))
    except serializers.ValidationError:
        return None


def fast_verdict(raw):
    serializer = QueryEventSerializer()
    now = timezone.now()
    return _plain_event_fields(
        raw, serializer.fields["timestamp"], retained_from(now), now + FUTURE_TOLERANCE
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_the_fast_path_declines_or_agrees_with_the_serializer(raw):
    fast = fast_verdict(raw)
    if fast is not None:
        assert fast == serializer_verdict(raw)


def ordinary_event(n):
    return {
        "id": f"evt-{n}",
        "type": "query",
        "timestamp": NOW.isoformat(),
        "query_text": "How do I reset my password?",
        "query_category": "account",
        "response_time": 0.8,
        "success": n % 2 == 0,
        "error_category": "" if n % 2 == 0 else "timeout",
        "satisfaction": 4 if n % 3 else None,
        "tokens": 120,
        "cost_micros": 1500,
        "user_ref": "user-7",
        "relevance_score": 1,
        "confidence_score": 0.25,
    }


def test_ordinary_events_take_the_fast_path_with_the_serializers_values():
    for n in range(6):
        raw = ordinary_event(n)
        fast = fast_verdict(raw)
        assert fast is not None
        assert fast == serializer_verdict(raw)
    minimal = {"id": "only-required", "type": "query", "timestamp": NOW.isoformat()}
    assert fast_verdict(minimal) == serializer_verdict(minimal)
    assert fast_verdict({**minimal, "id": "  padded  "})["event_id"] == "padded"


def test_a_batch_keeps_the_serializers_errors_and_counts_repeated_ids():
    good = ordinary_event(0)
    batch = [
        good,
        {**good, "id": "other", "satisfaction": 9},
        {**good},  # the same id again
        "not an object",
        {**good, "id": "tabbed", "query_text": "a\tb"},  # slow path, valid
        {**good, "id": "ok", "success": True, "error_category": "timeout"},
    ]
    events, errors, repeated = validated_events(batch)
    assert [event["event_id"] for event in events] == ["evt-0", "tabbed"]
    assert events[1]["query_text"] == "a\tb"
    assert repeated == 1
    assert [(error["index"], error["id"]) for error in errors] == [
        (1, "other"),
        (3, None),
        (5, "ok"),
    ]
    assert "satisfaction" in errors[0]["errors"]
    assert errors[1]["errors"] == {"event": ["Must be an object."]}
    assert "error_category" in errors[2]["errors"]
