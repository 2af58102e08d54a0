"""One walk of a chain at a time: while a verification or an export of a chain runs, another
one of the same chain is refused (429 RATE_LIMIT_EXCEEDED with Retry-After), other chains are
not held up, and the slot is given back when the walk ends: after the verification, after an
export's last line, or when the client closes the export early."""

import threading

import pytest
from django.db import connection

from audit import services
from audit.walks import WALK_RETRY_SECONDS, give_back_walk_slot, take_walk_slot
from config.exceptions import RateLimitExceeded
from tests.conftest import assert_envelope, race

pytestmark = pytest.mark.django_db

VERIFY_URL = "/api/v1/audit/verify/"
EXPORT_URL = "/api/v1/audit/events/export"


def exported(response) -> bytes:
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def test_a_chain_being_walked_refuses_another_walk_and_not_other_chains(owner, make_caller):
    token = take_walk_slot(owner.tenant.pk)

    verify = owner.client.get(VERIFY_URL)
    export = owner.client.get(EXPORT_URL)

    for response in (verify, export):
        error = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
        assert "already running" in error["message"]
        assert response["Retry-After"] == str(WALK_RETRY_SECONDS)
    other = make_caller()
    assert other.client.get(VERIFY_URL).status_code == 200
    give_back_walk_slot(owner.tenant.pk, token)
    assert owner.client.get(VERIFY_URL).status_code == 200


def test_the_slot_is_given_back_after_a_verification_and_after_an_export(owner):
    assert owner.client.get(VERIFY_URL).status_code == 200
    assert owner.client.get(VERIFY_URL).status_code == 200

    first = exported(owner.client.get(EXPORT_URL))
    second = exported(owner.client.get(EXPORT_URL))

    assert first.startswith(b'{"type":"header"') and first == second


def test_an_export_closed_early_gives_the_slot_back(owner):
    response = owner.client.get(EXPORT_URL)
    assert response.status_code == 200
    next(iter(response.streaming_content))  # the header line; then the client goes away
    # (Asked of the slot itself: a request here would share the open export's connection.)
    with pytest.raises(RateLimitExceeded):
        take_walk_slot(owner.tenant.pk)

    response.close()

    give_back_walk_slot(owner.tenant.pk, take_walk_slot(owner.tenant.pk))


def test_a_slot_given_back_late_does_not_free_anothers(owner):
    """A walk whose slot expired (its process was slow or died) gives back nothing that is
    not its own."""
    mine = take_walk_slot(owner.tenant.pk)
    give_back_walk_slot(owner.tenant.pk, "someone-else")

    assert_envelope(owner.client.get(VERIFY_URL), 429, "RATE_LIMIT_EXCEEDED")
    give_back_walk_slot(owner.tenant.pk, mine)


@pytest.mark.postgres
def test_parallel_verifications_of_one_chain_walk_once(transactional_db, owner, monkeypatch):
    """Four verifications at once: whichever takes the slot walks, and keeps walking until the
    three others were answered; they are all refused."""
    refused = []
    everyone_else_answered = threading.Event()
    verify = services.chain_verify

    def slow_verify(**kwargs):
        everyone_else_answered.wait(timeout=30)
        return verify(**kwargs)

    monkeypatch.setattr(services, "chain_verify", slow_verify)

    def ask():
        try:
            status = owner.client_for(owner.tenant.pk).get(VERIFY_URL).status_code
            if status == 429:
                refused.append(status)
                if len(refused) == 3:
                    everyone_else_answered.set()
            return status
        finally:
            connection.close()

    assert sorted(race(4, ask)) == [200, 429, 429, 429]
