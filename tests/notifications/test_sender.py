"""The webhook sender's requests (notifications.sender.Sender): one future each, so the relay
can record what has answered while a slow request is still out, and withdraw() takes back
what has not started. Over real HTTP to loopback."""

import time

import pytest

from notifications.sender import Sender

from .receiver import Receiver, Unanswering


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
