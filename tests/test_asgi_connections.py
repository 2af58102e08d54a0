"""Database connections under config.asgi: each of the front's request threads and each gateway
settlement thread keeps its connection between requests (CONN_MAX_AGE, no pool), and one the
server has closed meanwhile is replaced before it is used: by the first middleware on a request
thread, before the settlement on a settlement thread."""

import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections
from django.db.backends.signals import connection_created

from playground.models import CallStatus, GatewayCall
from playground.services import gateway as gateway_services
from tests.conftest import end_other_sessions, on_each_thread, without_connection_pool
from tests.factories import MembershipFactory, issue_api_key
from tests.playground.test_gateway_serving import bearer, completion, request

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL connections"),
    without_connection_pool,
]

ORG_URL = "/api/v1/organizations/current"
SETTLE_THREADS = gateway_services._settle_threads._max_workers


@pytest.fixture
def kept_connections(settings):
    """Connections kept as production keeps them; at the end, closed on every thread that
    may hold one, so that none outlives the test database."""
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] > 0
    assert "pool" not in settings.DATABASES["default"].get("OPTIONS", {})
    yield
    on_each_thread(gateway_services._settle_threads, SETTLE_THREADS, connections.close_all)


@pytest.fixture
def opened():
    """(thread name, backend pid) of every connection opened meanwhile."""
    seen = []

    def record(sender, connection, **kwargs):
        seen.append((threading.current_thread().name, connection.connection.info.backend_pid))

    connection_created.connect(record, weak=False)
    yield seen
    connection_created.disconnect(record)


@pytest.fixture
def one_thread_front(kept_connections):
    from django.core.asgi import get_asgi_application

    from playground.serving import GatewayFront

    front = GatewayFront(get_asgi_application(), threads=1)
    yield front
    on_each_thread(front.threads, 1, connections.close_all)
    front.threads.shutdown(wait=True)


def _terminate_other_backends() -> None:
    """The server ends every backend of the test database but the test's own."""
    end_other_sessions()
    time.sleep(0.05)  # the FATAL messages and the ends of file reach the kept connections


def _connect_this_thread() -> None:
    connection.ensure_connection()  # `connection` is the calling thread's own


def _token(owner) -> dict[str, str]:
    return {"Authorization": f"Token {owner.token}", "X-Organization-ID": str(owner.tenant.pk)}


def test_a_request_thread_opens_one_connection_for_all_its_requests(
    one_thread_front, owner, opened
):
    answers = [request(one_thread_front, "GET", ORG_URL, headers=_token(owner)) for _ in range(5)]

    assert [answer.status for answer in answers] == [200] * 5
    assert [name for name, _ in opened] == ["request_0"]


def test_a_connection_the_server_closed_is_replaced_before_the_next_request(
    one_thread_front, owner, opened
):
    assert request(one_thread_front, "GET", ORG_URL, headers=_token(owner)).status == 200
    [(_, first_pid)] = opened

    _terminate_other_backends()
    answer = request(one_thread_front, "GET", ORG_URL, headers=_token(owner))

    assert answer.status == 200, answer.body
    assert [name for name, _ in opened] == ["request_0", "request_0"]
    assert opened[1][1] != first_pid


@pytest.fixture
def caller():
    membership = MembershipFactory()
    _, raw = issue_api_key(membership, scopes=["write"])
    return raw


def test_settlement_threads_keep_their_connections(one_thread_front, caller, opened):
    for number in range(6):
        answer = request(
            one_thread_front,
            payload=completion(),
            headers=bearer(caller, **{"X-Request-ID": f"kept-{number}"}),
        )
        assert answer.status == 200, answer.body

    settling = Counter(name for name, _ in opened if name.startswith("gateway-settle"))
    assert settling, opened
    # One connection per settlement thread used, however many calls it settled.
    assert set(settling.values()) == {1}
    assert GatewayCall.objects.filter(status=CallStatus.SUCCEEDED).count() == 6


def test_a_settlement_after_the_server_closed_its_connection_is_recorded(
    one_thread_front, caller, opened
):
    first = request(one_thread_front, payload=completion(), headers=bearer(caller))
    assert first.status == 200, first.body
    # Every settlement thread holds a connection, so the next call's is one the server closed.
    on_each_thread(gateway_services._settle_threads, SETTLE_THREADS, _connect_this_thread)

    _terminate_other_backends()
    answer = request(
        one_thread_front, payload=completion(), headers=bearer(caller, **{"X-Request-ID": "after"})
    )

    assert answer.status == 200, answer.body
    call = GatewayCall.objects.get(request_id="after")
    assert call.status == CallStatus.SUCCEEDED
    assert call.total_tokens == answer.json()["usage"]["total_tokens"]
