"""The fast path of a chat completion's body against the serializer it stands in for.

`ChatCompletionSerializer.validated` first tries `plain_chat_completion`, which accepts only
plainly valid bodies and must give each exactly the values the serializer gives it; anything
else goes through `ChatCompletionSerializer`. On generated bodies mixing good values with every
kind of bad or unusual one (other JSON types, bounds, blanks, padding, control and invisible
characters, NaN, unknown keys, content parts), the fast path is checked to either decline or
agree with the serializer, never to accept what the serializer refuses; and the bodies the
official SDKs send are checked to take it.
"""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from playground.serializers import ChatCompletionSerializer, plain_chat_completion
from tests.strategies import OTHER_JSON, awkward_text

AWKWARD_TEXT = awkward_text(64, 65, 100, 101, 256, 257)
TEXT = st.one_of(st.text(max_size=30), AWKWARD_TEXT)
FLOAT = st.one_of(
    st.floats(-1, 3, allow_nan=False),
    st.sampled_from([0, 1, 2, 3, 1.0000001, 2.0000001, math.nan, math.inf, "0.5", True, None]),
)
INTEGER = st.one_of(
    st.integers(-2, 5000),
    st.sampled_from([2**31, 2**63 - 1, 2**63, 4.0, 4.5, "4", True, False, None]),
)
ROLE = st.sampled_from(["system", "developer", "user", "assistant", "tool", "User", "", None, 1])
CONTENT = st.one_of(
    TEXT,
    st.none(),
    st.integers(0, 3),
    st.just([{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]),
    st.just([{"type": "image_url", "image_url": {"url": "http://x"}}]),
    st.just([]),
)
STOP = st.one_of(
    TEXT,
    st.lists(TEXT, max_size=5),
    st.sampled_from([None, 1, ["ok", 2], [""], ["a", "b", "c", "d"], ["a", "b", "c", "d", "e"]]),
)


@st.composite
def messages(draw):
    message = {"role": draw(ROLE), "content": draw(CONTENT)}
    if draw(st.booleans()):
        message["name"] = draw(st.one_of(TEXT, OTHER_JSON))
    if draw(st.integers(0, 9)) == 0:
        message["tool_calls"] = []
    if draw(st.integers(0, 9)) == 0:
        message.pop(draw(st.sampled_from(["role", "content"])))
    return message


VALID_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant"]),
        "content": st.text(max_size=40),
    }
)
VALID = {
    "model": st.sampled_from(["gpt-4", "claude-3-haiku", "local-model", " padded "]),
    "messages": st.lists(VALID_MESSAGE, min_size=1, max_size=4),
    "temperature": st.one_of(st.none(), st.floats(0, 2), st.integers(0, 2)),
    "top_p": st.one_of(st.none(), st.floats(0, 1)),
    "max_tokens": st.one_of(st.none(), st.integers(1, 4096)),
    "max_completion_tokens": st.one_of(st.none(), st.integers(1, 4096)),
    "stop": st.one_of(st.none(), st.just("END"), st.just(["a", "b"])),
    "stream": st.booleans(),
    "user": st.sampled_from(["", "user-7", "  spaced  "]),
    "n": st.sampled_from([None, 1]),
    "stream_options": st.sampled_from(
        [None, {}, {"include_usage": True}, {"include_usage": False}]
    ),
}
AWKWARD = {
    "model": st.one_of(TEXT, OTHER_JSON),
    "messages": st.one_of(
        st.lists(messages(), max_size=3),
        OTHER_JSON,
        st.just("not a list"),
        st.just([{"role": "user", "content": "hi"}] * 257),
    ),
    "temperature": FLOAT,
    "top_p": FLOAT,
    "max_tokens": INTEGER,
    "max_completion_tokens": INTEGER,
    "stop": STOP,
    "stream": st.sampled_from([True, False, "true", 1, 0, None]),
    "user": st.one_of(TEXT, OTHER_JSON),
    "n": st.sampled_from([1, 2, 0, None, 1.0, "1", True]),
    "stream_options": st.sampled_from(
        [None, {"include_usage": 1}, {"include_usage": None}, {"other": 1}, [], "x"]
    ),
    "tenant_id": st.sampled_from(["acme", None, 7]),
    "functions": st.just([]),
}


@st.composite
def bodies(draw):
    """A plausible body (some optional keys left out), with zero to three of its keys replaced
    by awkward values or added."""
    body = {name: draw(strategy) for name, strategy in VALID.items()}
    for name in draw(st.sets(st.sampled_from(sorted(set(VALID) - {"model", "messages"})))):
        body.pop(name, None)
    for name in draw(st.lists(st.sampled_from(sorted(AWKWARD)), max_size=3)):
        body[name] = draw(AWKWARD[name])
    if draw(st.integers(0, 19)) == 0:
        body.pop(draw(st.sampled_from(["model", "messages"])))
    return body


def serializer_verdict(raw):
    serializer = ChatCompletionSerializer(data=raw)
    if not serializer.is_valid():
        return None
    return serializer.validated_data


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_the_fast_path_declines_or_agrees_with_the_serializer(raw):
    fast = plain_chat_completion(raw)
    if fast is not None:
        assert fast == serializer_verdict(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=VALID))
def test_plainly_valid_bodies_take_the_fast_path(optional):
    raw = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], **optional}
    if raw.get("max_tokens") and raw.get("max_completion_tokens"):
        raw["max_completion_tokens"] = raw["max_tokens"]
    fast = plain_chat_completion(raw)
    assert fast is not None
    assert fast == serializer_verdict(raw)


def test_the_bodies_the_sdks_send_take_the_fast_path_with_the_serializers_values():
    sdk_bodies = [
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]},
        {
            "model": "gpt-4",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "Hello", "name": "ada"},
                {"role": "assistant", "content": ""},
            ],
            "max_completion_tokens": 64,
            "temperature": 0.2,
            "top_p": 1,
            "stop": ["\n\n"],
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "end-user-7",
            "n": 1,
        },
        {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "max_tokens": 16},
    ]
    for raw in sdk_bodies:
        fast = plain_chat_completion(raw)
        assert fast is not None
        assert fast == serializer_verdict(raw)
    second = plain_chat_completion(sdk_bodies[1])
    assert second["messages"][0] == {"role": "system", "content": "Be brief."}
    assert second["max_tokens"] == 64
    assert second["stop"] == ("\n\n",)
    assert plain_chat_completion(sdk_bodies[0])["stream"] is False


@pytest.mark.parametrize(
    "raw",
    [
        {"model": "gpt-4", "messages": []},
        {"model": "", "messages": [{"role": "user", "content": "Hi"}]},
        {"model": "gpt-4", "messages": [{"role": "tool", "content": "Hi"}]},
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "temperature": 3},
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0},
        {
            "model": "gpt-4",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8,
            "max_completion_tokens": 9,
        },
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "stream": "yes"},
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "logprobs": True},
    ],
)
def test_an_invalid_body_is_the_serializers_400(raw):
    assert plain_chat_completion(raw) is None
    with pytest.raises(serializers.ValidationError) as refused:
        ChatCompletionSerializer.validated(raw)
    serializer = ChatCompletionSerializer(data=raw)
    assert not serializer.is_valid()
    assert refused.value.detail == serializer.errors


def test_bodies_left_to_the_serializer_keep_its_values():
    raw = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
        "tenant_id": "another",
    }
    assert plain_chat_completion(raw) is None
    data = ChatCompletionSerializer.validated(raw)
    assert data["messages"] == [{"role": "user", "content": "a"}]
    assert "tenant_id" not in data
