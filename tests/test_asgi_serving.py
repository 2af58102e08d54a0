"""What config/asgi.py serves, for every request but the gateway's: the whole request in one hop to
the front's long-lived threads (playground.serving.GatewayFront), answered as Django's ASGI
handler answers it (status, headers, body), a streamed answer included, and the request's
database connection given back on the thread that used it."""

import json
import threading

import pytest
from django.db import connections

from tests.factories import issue_api_key
from tests.playground.test_gateway_serving import assert_same_answer, both, error_of, request

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("connections_closed_per_request"),
]

ORG_URL = "/api/v1/organizations/current"


def _token(caller) -> dict[str, str]:
    return {"Authorization": f"Token {caller.token}", "X-Organization-ID": str(caller.tenant.pk)}


def _without_live_figures(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "api_quota_used"}


def test_a_read_is_answered_as_by_djangos_handler(applications, owner):
    front_answer, django_answer = both(
        applications, method="GET", path=ORG_URL, headers=_token(owner)
    )

    assert front_answer.status == 200
    assert_same_answer(front_answer, django_answer)
    assert _without_live_figures(front_answer.json()) == _without_live_figures(django_answer.json())


def test_an_api_key_read_is_answered_as_by_djangos_handler(applications, owner):
    _, raw = issue_api_key(owner.membership)

    front_answer, django_answer = both(
        applications, method="GET", path=ORG_URL, headers={"X-API-Key": raw}
    )

    assert front_answer.status == 200
    assert_same_answer(front_answer, django_answer)


def test_a_write_is_answered_as_by_djangos_handler(applications, owner):
    answers = []
    for name in ("front", "django"):
        body = json.dumps({"description": f"Written through {name}."})
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        answers.append(
            request(
                applications[name],
                "PATCH",
                ORG_URL,
                payload=json.loads(body),
                headers={**_token(owner), **headers},
            )
        )

    assert [answer.status for answer in answers] == [200, 200]
    assert answers[0].json()["description"] == "Written through front."
    assert_same_answer(*answers)


def test_errors_are_the_same_envelope(applications, owner):
    for path, status in (("/api/v1/no-such-thing/", 404), (ORG_URL, 401)):
        front_answer, django_answer = both(applications, method="GET", path=path)

        assert front_answer.status == status
        assert_same_answer(front_answer, django_answer)
        assert error_of(front_answer)["code"] == error_of(django_answer)["code"]


def test_a_streamed_answer_arrives_whole(applications, owner):
    front_answer, django_answer = both(
        applications, method="GET", path="/api/v1/audit/events/export", headers=_token(owner)
    )

    assert front_answer.status == 200
    assert front_answer.headers["content-type"] == "application/x-ndjson"
    assert front_answer.body == django_answer.body


@pytest.mark.postgres
def test_the_request_runs_on_the_fronts_threads_and_gives_its_connection_back(
    front, owner, monkeypatch
):
    from tenants.views.organizations import OrganizationViewSet

    seen = []
    real_current = OrganizationViewSet.current

    def recording_current(self, request, *args, **kwargs):
        response = real_current(self, request, *args, **kwargs)
        seen.append((threading.current_thread().name, connections["default"]))
        return response

    monkeypatch.setattr(OrganizationViewSet, "current", recording_current)

    answers = [request(front, "GET", ORG_URL, headers=_token(owner)) for _ in range(3)]

    assert [answer.status for answer in answers] == [200, 200, 200]
    assert all(name.startswith("request") for name, _ in seen), seen
    assert len({name for name, _ in seen}) <= 2  # a pool of two long-lived threads
    # request_finished, sent on the request's own thread, closed its connection.
    assert all(connection.connection is None for _, connection in seen)
