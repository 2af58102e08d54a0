"""The webhook sender's requests (notifications.sender.Sender): one future each, so the relay
can record what has answered while a slow request is still out, and withdraw() takes back
what has not started. Over real HTTP to loopback."""

import socket
import threading
import time

import pytest

from notifications import targets
from notifications.sender import Sender

from .receiver import Receiver, Unanswering

SYSTEM_RESOLVE = targets._resolve


def _request(url: str) -> tuple[str, bytes, dict]:
    return (url, b"{}", {})


@pytest.fixture
def silent():
    endpoint = Unanswering()
    yield endpoint
    endpoint.release()


def test_each_request_answers_on_its_own_while_another_is_still_out(settings, silent):
    settings.WEBHOOK_TIMEOUT_SECONDS = 60
    with Receiver() as receiver, Sender(concurrency=2) as sender:
        held, answered = sender.submit(
            [_request(silent.url), _request(receiver.url)], owners=["a", "b"]
        )

        assert answered.result(timeout=30).succeeded
        assert not held.done()
        silent.release()
        assert not held.result(timeout=30).succeeded  # its connection closed


def test_withdraw_takes_back_only_what_waits_for_a_sender(settings, silent):
    settings.WEBHOOK_TIMEOUT_SECONDS = 60
    with Sender(concurrency=1) as sender:
        first, second, third = sender.submit([_request(silent.url)] * 3, owners=["a"] * 3)
        _wait_until(lambda: sender.owners_waiting() == {"a"} and len(silent.held) == 1)

        sender.withdraw()

        assert second.result(timeout=30) is None
        assert third.result(timeout=30) is None
        assert sender.owners_waiting() == set()
        assert not first.done()  # started: it is not taken back
        silent.release()
        assert not first.result(timeout=30).succeeded


def test_owners_waiting_names_those_with_requests_behind_the_senders(settings, silent):
    settings.WEBHOOK_TIMEOUT_SECONDS = 60
    with Receiver() as receiver, Sender(concurrency=2) as sender:
        # "a" may hold 1 of the 2 senders: its second request waits, and "b"'s takes the other.
        futures = sender.submit(
            [_request(silent.url), _request(silent.url), _request(receiver.url)],
            owners=["a", "a", "b"],
        )
        assert futures[2].result(timeout=30).succeeded
        assert sender.owners_waiting() == {"a"}

        silent.release()  # the first fails (closed), then the second (refused)
        assert [future.result(timeout=30).succeeded for future in futures[:2]] == [False] * 2
        assert sender.owners_waiting() == set()


def _wait_until(condition, attempts: int = 3000) -> None:
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the condition did not hold within the wait")


class UnansweringDNS:
    """A stand-in for targets.resolver whose server never answers for the `.hung.test` names
    (anyone can point their domain's name servers at an address that drops every query): each
    such lookup blocks its thread until `answer()`, then fails. Other names resolve as usual."""

    def __init__(self):
        self.answered = threading.Event()
        self.hanging = 0
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        if not host.endswith(".hung.test"):
            return SYSTEM_RESOLVE(host, port)
        with self._lock:
            self.hanging += 1
        self.answered.wait()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    def answer(self) -> None:
        self.answered.set()


@pytest.fixture
def hung_dns(monkeypatch):
    dns = UnansweringDNS()
    monkeypatch.setattr(targets, "resolver", dns)
    yield dns
    dns.answer()


def test_an_organization_whose_dns_never_answers_delays_no_other(settings, hung_dns):
    """40 endpoints of one organization on hosts whose DNS never answers (more lookups than
    any machine's default thread pool has threads), then one of another organization: that one
    is answered at once. The first organization's lookups take its share of the senders, all
    but one, and no more: they hold them past their timeout until the lookups end."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    with Receiver() as receiver, Sender(concurrency=4) as sender:
        hung = sender.submit(
            [_request(f"http://e{n}.hung.test/hook") for n in range(40)], owners=["a"] * 40
        )
        _wait_until(lambda: hung_dns.hanging == 3)
        (other,) = sender.submit([_request(receiver.url)], owners=["b"])

        assert other.result(timeout=30).succeeded
        # a's first three timed out, its others wait: the lookups still hold their senders.
        assert [future.result(timeout=30).error for future in hung[:3]] == [
            "Timed out (no complete answer within 1 s: TimeoutError)."
        ] * 3
        assert hung_dns.hanging == 3 and sender.owners_waiting() == {"a"}

        hung_dns.answer()  # the lookups fail: a's next requests go on, and fail the same way
        _wait_until(lambda: hung_dns.hanging > 3)
