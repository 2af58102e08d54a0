"""playground.serving.GatewayFront, what config/asgi.py serves, driven in-process over ASGI: the
gateway's path answers exactly as Django's ASGI handler answers it (status, headers, body,
errors, every credential type), the request's id reaches the recorded call and the audit
events of its settlement, every other request is answered as Django's handler answers it
(tests/test_asgi_serving.py), a client that goes away is settled as cancelled, and the request
path runs on the front's own threads.
"""

import asyncio
import json
import threading
import time
from dataclasses import dataclass

import pytest
from django.db import connections

from accounts.services import jwt_login
from audit.models import AuditEvent
from playground import services
from playground.models import CallStatus, GatewayCall
from tenants.models import QuotaCounter
from tests.conftest import on_each_thread
from tests.factories import MembershipFactory, issue_api_key
from tests.test_dependency_outages import closed_port

from .factories import LanguageModelFactory, ProviderFactory
from .loops import finish_like_a_server
from .upstream import FakeUpstream

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("connections_closed_per_request"),
]

URL = "/api/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Hello there, gateway."}]
# Headers whose values differ from one request to the next (ids, the windows' countdowns,
# a body of another length).
VARYING_HEADERS = {
    "x-request-id",
    "date",
    "content-length",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
}


@pytest.fixture(autouse=True)
def _fast_gateway(settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0.01


@pytest.fixture(params=["front", "django"])
def application(request, applications):
    return applications[request.param]


# --- Driving an ASGI application in-process --------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lowercased names
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def header_names(self) -> set[str]:
        return set(self.headers)

    def stable_headers(self) -> dict[str, str]:
        return {name: value for name, value in self.headers.items() if name not in VARYING_HEADERS}


def _scope(
    method: str = "POST",
    path: str = URL,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    root_path: str = "",
) -> dict:
    raw_headers = [(b"host", b"testserver")]
    if method == "POST":
        raw_headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode(), value.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": raw_headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


def _serve(application, scope: dict, body: bytes = b"", *, disconnect=None) -> list[dict]:
    """Run one request through `application`; the messages it sent. `disconnect`: an async
    callable the client awaits before going away (None: it stays until the answer is sent)."""
    messages: list[dict] = []

    async def run():
        request_sent = False
        forever = asyncio.Event()

        async def receive():
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            if disconnect is None:
                await forever.wait()
            else:
                await disconnect()
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)

        await application(scope, receive, send)
        await finish_like_a_server()

    asyncio.run(run())
    return messages


def _answer(messages: list[dict]) -> Answer:
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Answer(start["status"], headers, body)


def request(application, method="POST", path=URL, *, payload=None, **scope_options) -> Answer:
    body = json.dumps(payload).encode() if payload is not None else b""
    scope = _scope(method, path, body=body, **scope_options)
    return _answer(_serve(application, scope, body))


def both(applications: dict, **options) -> tuple[Answer, Answer]:
    """The same request through the front and through Django's handler."""
    return request(applications["front"], **options), request(applications["django"], **options)


def bearer(credential: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", **more}


def completion(model: str = "gpt-4", **extra) -> dict:
    return {"model": model, "messages": MESSAGES, "max_tokens": 20, **extra}


def error_of(answer: Answer) -> dict:
    """The error envelope's error object (the shape tests.conftest.assert_envelope checks)."""
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["request_id"] == answer.headers["x-request-id"]
    return body["error"]


def assert_same_answer(front_answer: Answer, django_answer: Answer) -> None:
    """Same status, same header names, same values of the headers that do not vary. Content-
    Length is left to test_a_completed_answer_has_a_content_length_as_under_djangos_handler
    (the front's completed answers lack it)."""
    assert front_answer.status == django_answer.status, (front_answer, django_answer)
    names = {"content-length"}
    assert front_answer.header_names - names == django_answer.header_names - names
    assert front_answer.stable_headers() == django_answer.stable_headers()


def tokens_used(tenant) -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    return row.used if row else 0


def _key() -> tuple:
    """A member and a key of theirs allowed to call the gateway: (membership, key string)."""
    membership = MembershipFactory()
    _, raw = issue_api_key(membership, scopes=["write"])
    return membership, raw


# --- The same answers as Django's handler ----------------------------------------------------


def test_a_json_completion_with_an_api_key_is_answered_as_by_djangos_handler(applications):
    membership, raw = _key()

    front_answer, django_answer = (
        request(
            applications[name], payload=completion(), headers=bearer(raw, **{"X-Request-ID": name})
        )
        for name in ("front", "django")
    )

    assert front_answer.status == 200, front_answer.body
    assert_same_answer(front_answer, django_answer)
    assert front_answer.headers["content-type"] == "application/json"
    for header in ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"):
        assert front_answer.headers[header] == django_answer.headers[header]
    front_body, django_body = front_answer.json(), django_answer.json()
    assert set(front_body) == set(django_body)
    assert set(front_body["choices"][0]) == set(django_body["choices"][0])
    assert front_body["choices"][0]["message"] == django_body["choices"][0]["message"]
    assert front_body["usage"] == django_body["usage"]
    assert front_body["object"] == "chat.completion"
    # One recorded call each, settled at the usage answered.
    for name, body in (("front", front_body), ("django", django_body)):
        call = GatewayCall.objects.get(request_id=name)
        assert call.status == CallStatus.SUCCEEDED
        assert call.total_tokens == body["usage"]["total_tokens"]
        assert call.tenant_id == membership.tenant_id
    assert GatewayCall.objects.count() == 2
    assert tokens_used(membership.tenant) == 2 * front_body["usage"]["total_tokens"]


def test_a_bad_api_key_is_refused_as_by_djangos_handler(applications):
    MembershipFactory()

    front_answer, django_answer = both(
        applications, payload=completion(), headers=bearer("cp_" + "0" * 48)
    )

    assert front_answer.status == 401
    assert_same_answer(front_answer, django_answer)
    assert error_of(front_answer)["code"] == error_of(django_answer)["code"]
    assert error_of(front_answer)["message"] == error_of(django_answer)["message"]
    assert error_of(front_answer)["message"] == "Invalid API key."
    assert not GatewayCall.objects.exists()


def test_an_invalid_body_is_refused_naming_the_field_as_by_djangos_handler(applications):
    membership, raw = _key()

    front_answer, django_answer = both(
        applications, payload={"model": "gpt-4"}, headers=bearer(raw)
    )

    assert front_answer.status == 400
    assert_same_answer(front_answer, django_answer)
    error = error_of(front_answer)
    assert error["code"] == "VALIDATION_ERROR"
    assert "messages" in error["details"]
    assert error["details"] == error_of(django_answer)["details"]
    assert not GatewayCall.objects.exists()
    assert tokens_used(membership.tenant) == 0


def test_a_members_jwt_is_served_as_by_djangos_handler(applications):
    # The front serves every credential type, not only API keys.
    membership = MembershipFactory()
    access = jwt_login(user=membership.user)["access_token"]

    front_answer, django_answer = both(applications, payload=completion(), headers=bearer(access))

    assert front_answer.status == 200, front_answer.body
    assert_same_answer(front_answer, django_answer)
    assert set(front_answer.json()) == set(django_answer.json())
    calls = GatewayCall.objects.filter(tenant=membership.tenant)
    assert calls.count() == 2
    assert set(calls.values_list("user_id", flat=True)) == {membership.user_id}
    assert set(calls.values_list("api_key_id", flat=True)) == {None}


def test_a_call_refused_by_the_tokens_quota_is_refused_as_by_djangos_handler(applications):
    membership, raw = _key()
    membership.tenant.settings = {"maxTokensPerMonth": 10}
    membership.tenant.save()

    front_answer, django_answer = both(applications, payload=completion(), headers=bearer(raw))

    assert front_answer.status == 429
    assert_same_answer(front_answer, django_answer)
    error = error_of(front_answer)
    assert error["code"] == "QUOTA_EXCEEDED"
    assert error["details"] == error_of(django_answer)["details"]
    assert error["details"]["resource"] == "tokens"
    assert error["details"]["limit"] == 10
    assert not GatewayCall.objects.exists()
    assert tokens_used(membership.tenant) == 0


def test_a_completed_answer_has_a_content_length_as_under_djangos_handler(applications):
    _, raw = _key()

    front_answer, django_answer = both(applications, payload=completion(), headers=bearer(raw))

    assert django_answer.headers["content-length"] == str(len(django_answer.body))
    assert front_answer.headers.get("content-length") == str(len(front_answer.body))


def test_the_security_headers_are_on_the_fronts_answer_as_on_djangos(applications):
    _, raw = _key()

    front_answer, django_answer = both(applications, payload=completion(), headers=bearer(raw))

    assert front_answer.headers["x-content-type-options"] == "nosniff"
    assert front_answer.headers["x-frame-options"] == django_answer.headers["x-frame-options"]
    assert front_answer.headers["x-frame-options"] == "DENY"
    assert front_answer.headers.get("referrer-policy") == django_answer.headers.get(
        "referrer-policy"
    )


# --- The request's id ------------------------------------------------------------------------


def test_the_clients_request_id_is_echoed_and_recorded_on_the_call(front):
    _, raw = _key()

    answer = request(
        front, payload=completion(), headers=bearer(raw, **{"X-Request-ID": "client-req-42"})
    )

    assert answer.status == 200, answer.body
    assert answer.headers["x-request-id"] == "client-req-42"
    call = GatewayCall.objects.get()
    assert call.request_id == "client-req-42"


def test_an_audit_event_of_the_settlement_carries_the_request_id(application):
    # The settlement runs on the gateway's settlement threads: the request's context (its id)
    # is active for the async part, and copied to them.
    with FakeUpstream(reply="Short answer.", chunks=2, prompt_tokens=900) as upstream:
        provider = ProviderFactory(kind="openai", base_url=upstream.url + "/v1", max_retries=0)
        model = LanguageModelFactory(provider=provider)
        membership, raw = _key()
        membership.tenant.settings = {"maxTokensPerMonth": 1000}
        membership.tenant.save()

        answer = request(
            application,
            payload=completion(model.name),
            headers=bearer(raw, **{"X-Request-ID": "settled-req-7"}),
        )

    assert answer.status == 200, answer.body
    call = GatewayCall.objects.get()
    # The reservation stayed under the threshold; the usage the upstream reported crossed it.
    assert call.reserved_tokens * 100 < 80 * 1000 <= call.total_tokens * 100
    warning = AuditEvent.objects.get(tenant=membership.tenant, event_type="quota.warning")
    assert warning.request_id == "settled-req-7" == call.request_id
    assert warning.payload["used"] == call.total_tokens


# --- What the front takes, and what it leaves to Django --------------------------------------


def test_the_trailing_slash_path_is_served_by_the_front(front):
    _, raw = _key()
    scope = _scope(path=URL + "/")

    answer = request(
        front, path=URL + "/", payload=completion(), headers=bearer(raw, **{"X-Request-ID": "s"})
    )

    assert front.takes(scope)
    assert answer.status == 200, answer.body
    assert GatewayCall.objects.get().request_id == "s"


def test_a_root_path_is_taken_by_the_front_and_served(applications):
    front = applications["front"]
    _, raw = _key()
    scope = _scope(path="/cp" + URL, root_path="/cp")

    front_answer, django_answer = both(
        applications, path="/cp" + URL, root_path="/cp", payload=completion(), headers=bearer(raw)
    )

    assert front.takes(scope)
    assert front_answer.status == 200, front_answer.body
    assert_same_answer(front_answer, django_answer)
    assert GatewayCall.objects.count() == 2


@pytest.mark.parametrize(
    ("method", "path", "root_path"),
    [
        ("GET", URL, ""),
        ("POST", "/api/v1/chat/completion", ""),
        ("POST", "/api/v1/chat/completions/extra", ""),
        ("POST", "/api/v1/gateway/models", ""),
        ("POST", URL, "/cp"),  # the path does not start with the root path: it is the route
    ],
)
def test_what_the_front_takes(front, method, path, root_path):
    taken = front.takes(_scope(method, path, root_path=root_path))

    assert taken is (method == "POST" and path == URL)
    assert not front.takes({"type": "websocket", "path": URL})


def test_the_health_probe_is_answered_through_the_front(front):
    scope = _scope("GET", "/health/")

    answer = request(front, "GET", "/health/")

    assert not front.takes(scope)
    assert answer.status == 200


def test_a_get_of_the_gateway_path_is_djangos_405_through_the_front(applications):
    _, raw = _key()

    front_answer, django_answer = both(applications, method="GET", headers=bearer(raw))

    assert front_answer.status == 405
    assert_same_answer(front_answer, django_answer)
    assert error_of(front_answer)["code"] == error_of(django_answer)["code"]
    assert front_answer.headers["allow"] == django_answer.headers["allow"]


# --- A client that goes away -----------------------------------------------------------------


@pytest.fixture
def slow_upstream():
    with FakeUpstream(reply="A slow answer.", chunks=3, delay=1.0) as upstream:
        yield upstream


@pytest.fixture
def slow_model(slow_upstream):
    provider = ProviderFactory(kind="openai", base_url=slow_upstream.url + "/v1", max_retries=0)
    return LanguageModelFactory(provider=provider)


def test_a_client_gone_during_the_upstream_call_is_settled_as_cancelled(
    application, slow_upstream, slow_model
):
    membership, raw = _key()
    body = json.dumps(completion(slow_model.name)).encode()

    async def once_the_upstream_is_called():
        while not slow_upstream.requests:
            await asyncio.sleep(0.005)

    messages = _serve(
        application,
        _scope(body=body, headers=bearer(raw)),
        body,
        disconnect=once_the_upstream_is_called,
    )

    # No answer for a client that left; nothing raised out of the application (_serve).
    assert not [m for m in messages if m["type"] == "http.response.start"]
    call = GatewayCall.objects.get()
    assert call.status == CallStatus.CANCELLED
    assert call.reserved_tokens > 0
    # The reservation is given back: only what was consumed stays counted.
    assert tokens_used(membership.tenant) == call.total_tokens


def test_a_client_gone_right_after_the_body_leaves_nothing_reserved(
    front, slow_upstream, slow_model, caplog
):
    membership, raw = _key()
    body = json.dumps(completion(slow_model.name)).encode()

    async def at_once():
        return None

    _serve(front, _scope(body=body, headers=bearer(raw)), body, disconnect=at_once)
    # Whatever the front left running on its threads ends before the checks.
    front.threads.shutdown(wait=True)

    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert not errors
    # The request path ran on its thread to the end: its reservation is settled as cancelled.
    call = GatewayCall.objects.get()
    assert call.status == CallStatus.CANCELLED
    assert tokens_used(membership.tenant) == call.total_tokens == 0
    assert not slow_upstream.requests


def test_a_client_gone_while_the_request_path_runs_gets_its_reservation_back(
    application, slow_upstream, slow_model, monkeypatch
):
    membership, raw = _key()
    body = json.dumps(completion(slow_model.name)).encode()
    reserved, gone = threading.Event(), threading.Event()
    real_reserve = services.gateway_reserve

    def reserve_then_linger(**kwargs):
        reservation = real_reserve(**kwargs)
        reserved.set()
        # The request path is still running when the client goes away, and for a moment
        # after: long enough for the server to notice.
        gone.wait(10)
        time.sleep(0.2)
        return reservation

    monkeypatch.setattr(services, "gateway_reserve", reserve_then_linger)

    async def once_reserved():
        while not reserved.is_set():
            await asyncio.sleep(0.005)
        gone.set()

    _serve(application, _scope(body=body, headers=bearer(raw)), body, disconnect=once_reserved)

    assert reserved.is_set()
    call = GatewayCall.objects.get()
    assert call.status == CallStatus.CANCELLED
    assert tokens_used(membership.tenant) == call.total_tokens


# --- The front's own threads -----------------------------------------------------------------


def test_the_request_path_runs_on_the_fronts_threads(front, monkeypatch):
    _, raw = _key()
    threads = []
    real_reserve = services.gateway_reserve

    def recording_reserve(**kwargs):
        threads.append(threading.current_thread().name)
        return real_reserve(**kwargs)

    monkeypatch.setattr(services, "gateway_reserve", recording_reserve)

    answers = [request(front, payload=completion(), headers=bearer(raw)) for _ in range(3)]

    assert [answer.status for answer in answers] == [200, 200, 200]
    assert len(threads) == 3
    assert all(name.startswith("request") for name in threads), threads
    # A pool of long-lived threads (two here), not a thread per request.
    assert len(set(threads)) <= 2


# --- The database gone while the upstream answers ------------------------------------------------


@pytest.fixture
def database_gone_during_the_call(slow_upstream, settings):
    """Once the upstream is called, new database connections go to a port where nothing
    listens (each request and settlement connects anew here: CONN_MAX_AGE 0), and the
    settlement does not wait for it to come back; put back after."""
    settings.GATEWAY_SETTLE_RETRY_SECONDS = 0
    # No settlement thread keeps a connection from an earlier test: the settlement connects.
    settle_threads = services.gateway._settle_threads
    on_each_thread(settle_threads, settle_threads._max_workers, connections.close_all)
    database = connections.settings["default"]
    before = database["HOST"], database["PORT"]
    flipped = threading.Event()

    def flip_once_called():
        deadline = time.monotonic() + 10
        while not slow_upstream.requests and time.monotonic() < deadline:
            time.sleep(0.005)
        database["HOST"], database["PORT"] = "127.0.0.1", closed_port()
        flipped.set()

    flipper = threading.Thread(target=flip_once_called)
    flipper.start()
    yield flipped
    flipper.join()
    database["HOST"], database["PORT"] = before
    connections.close_all()


@pytest.mark.postgres
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_settlement_that_cannot_reach_the_database_is_answered_in_the_envelope(
    application, slow_model, database_gone_during_the_call, stream, caplog
):
    _, raw = _key()

    answer = request(
        application, payload=completion(slow_model.name, stream=stream), headers=bearer(raw)
    )

    assert database_gone_during_the_call.is_set()
    expected = {
        "code": "SERVICE_UNAVAILABLE",
        "message": "The service is briefly unavailable: the database is not answering. Try "
        "again in a few seconds.",
        "details": {"dependency": "database", "retry_after_seconds": 5},
    }
    if stream:
        # The answer had begun: the failure is the stream's last event.
        assert answer.status == 200
        last = answer.body.decode().strip().split("\n\n")[-1]
        error = json.loads(last.removeprefix("data: "))["error"]
        assert {key: error[key] for key in expected} == expected
    else:
        assert answer.status == 503
        assert answer.headers["retry-after"] == "5"
        error = error_of(answer)
        assert {key: error[key] for key in expected} == expected
    lines = [r.getMessage() for r in caplog.records if r.name == "config.exceptions"]
    assert [line.split(" (")[0] for line in lines] == [
        "database unavailable in the gateway's completion"
    ]
    assert not [r for r in caplog.records if r.exc_info]
