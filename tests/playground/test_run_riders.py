"""A phase's own writes carried by its gateway call's statements (config.prepared.Rider): the
reservation's note in the reservation, the outcome in the settlement. On PostgreSQL each pair is
one statement (counted here); on SQLite (the smoke part) the same steps run apart, in one
transaction, and a run ends the same way."""

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.exceptions import QuotaExceeded, RateLimitExceeded
from playground.models import (
    GatewayCall,
    JobStatus,
    OrchestrationPhase,
    OrchestrationRun,
    PhaseStatus,
)
from playground.services import runs
from playground.services.ledger import gateway_tokens_reserve
from playground.services.runs import orchestration_run_execute
from tenants.models import QuotaCounter, Tenant
from tenants.services.quotas import quota_states
from tests.factories import APIKeyFactory

from .factories import claimed_phase, started_run

pytestmark = pytest.mark.django_db

PHASE_TABLE = OrchestrationPhase._meta.db_table
CALL_TABLE = GatewayCall._meta.db_table


def used(tenant) -> int:
    return quota_states(Tenant.objects.get(pk=tenant.pk))["tokens"].current


def phases_of(run):
    return list(OrchestrationPhase.objects.filter(run_id=run.pk).order_by("position"))


def reserved_with_its_outcome(owner):
    """The first phase's call reserved, its outcome set to ride on the call's settlement:
    (run, phase, the next phase, reservation, outcome)."""
    run, held, phase, token, chat = claimed_phase(owner)
    second = phases_of(run)[1]
    reservation = runs._reserve(run, phase.pk, token, chat)
    outcome = runs._PhaseOutcome(held, phase, token, 0.0, second)
    reservation.settle_rider = outcome
    return run, phase, second, reservation, outcome


@pytest.mark.smoke
def test_a_run_ends_with_its_phases_calls_and_quota_in_step(owner):
    """Whichever way the writes are made (carried on PostgreSQL, apart on SQLite)."""
    run = started_run(owner, topic="riders")

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.COMPLETED

    run.refresh_from_db()
    phases = phases_of(run)
    calls = GatewayCall.objects.filter(tenant=owner.tenant)
    assert (run.completed_phases, run.failed_phases, run.total_phases) == (3, 0, 3)
    assert [p.status for p in phases] == [PhaseStatus.COMPLETED] * 3
    assert {p.gateway_call_id for p in phases} == set(calls.values_list("pk", flat=True))
    for phase in phases:
        call = calls.get(pk=phase.gateway_call_id)
        assert phase.total_tokens == call.total_tokens > 0
        assert phase.cost_micros == call.cost_micros
        assert phase.response_text and phase.completed_at is not None
        assert phase.claim is not None and phase.attempts == 1
    assert used(owner.tenant) == sum(p.total_tokens for p in phases)
    assert run.lease_token is None and run.completed_at is not None


@pytest.mark.postgres
def test_a_phases_reservation_and_its_note_are_one_statement(owner):
    run, _held, phase, token, chat = claimed_phase(owner)
    QuotaCounter.objects.get_or_create(tenant=owner.tenant, resource="tokens")  # not the first call
    before = used(owner.tenant)

    with CaptureQueriesContext(connection) as queries:
        reservation = runs._reserve(run, phase.pk, token, chat)

    # The one statement writing the phase is the one counting the tokens.
    [statement] = [q["sql"] for q in queries.captured_queries if PHASE_TABLE in q["sql"]]
    assert "quota_update AS (UPDATE" in statement and f"UPDATE {PHASE_TABLE}" in statement
    phase.refresh_from_db()
    assert phase.reserved_tokens == reservation.tokens > 0
    assert used(owner.tenant) == before + reservation.tokens


@pytest.mark.postgres
def test_a_phases_outcome_is_written_by_its_calls_settlement(owner):
    run, phase, second, reservation, outcome = reserved_with_its_outcome(owner)

    with CaptureQueriesContext(connection) as queries:
        result, call, error = runs.gateway_call_reserved(reservation)

    # The one statement recording the call also writes the phase's outcome and the next claim.
    [statement] = [q["sql"] for q in queries.captured_queries if CALL_TABLE in q["sql"]]
    assert "INSERT INTO" in statement and "held AS" in statement
    assert error is None
    assert outcome.written() == (True, outcome.next_token)
    phase.refresh_from_db()
    second.refresh_from_db()
    assert phase.status == PhaseStatus.COMPLETED and phase.gateway_call_id == call.pk
    assert phase.response_text == result.content and phase.total_tokens == call.total_tokens
    assert second.status == PhaseStatus.RUNNING and second.claim == outcome.next_token
    run.refresh_from_db()
    assert run.completed_phases == 1
    assert used(owner.tenant) == call.total_tokens


@pytest.mark.postgres
def test_a_settlement_after_a_cancel_records_the_call_but_not_the_outcome(owner):
    run, phase, second, reservation, outcome = reserved_with_its_outcome(owner)
    OrchestrationRun.objects.filter(pk=run.pk).update(status=JobStatus.CANCELLED)

    _result, call, _error = runs.gateway_call_reserved(reservation)

    assert outcome.written() == (False, None)
    assert GatewayCall.objects.filter(pk=call.pk).exists()
    assert used(owner.tenant) == call.total_tokens  # metered all the same
    phase.refresh_from_db()
    second.refresh_from_db()
    assert phase.status == PhaseStatus.RUNNING and phase.gateway_call_id is None
    assert second.status == PhaseStatus.PENDING


def test_a_reservation_for_a_phase_no_longer_ours_is_given_back(owner):
    run, _held, phase, token, chat = claimed_phase(owner)
    OrchestrationPhase.objects.filter(pk=phase.pk).update(status=PhaseStatus.CANCELLED)

    with pytest.raises(runs._Stop):
        runs._reserve(run, phase.pk, token, chat)

    phase.refresh_from_db()
    assert phase.reserved_tokens == 0
    assert used(owner.tenant) == 0
    [call] = GatewayCall.objects.filter(tenant=owner.tenant)
    assert call.status == "cancelled" and call.total_tokens == 0


def test_a_refused_tokens_window_gives_back_the_reservation_and_its_note(owner, settings):
    run, _held, phase, token, chat = claimed_phase(owner)
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "gateway_tokens": "1/min"},
    }

    with time_machine.travel(timezone.now(), tick=True), pytest.raises(RateLimitExceeded):
        runs._reserve(run, phase.pk, token, chat)

    phase.refresh_from_db()
    assert phase.reserved_tokens == 0
    assert used(owner.tenant) == 0
    assert not GatewayCall.objects.filter(tenant=owner.tenant).exists()


def test_a_reservation_with_an_api_key_carries_a_note_only_when_it_fits(owner):
    _run, _held, phase, token, _chat = claimed_phase(owner)
    key = APIKeyFactory(tenant=owner.tenant, monthly_token_budget=100)

    fits = runs._note(phase.pk, token, 60)
    gateway_tokens_reserve(tenant=owner.tenant, api_key=key, amount=60, rider=fits)
    too_much = runs._note(phase.pk, token, 50)
    with pytest.raises(QuotaExceeded):
        gateway_tokens_reserve(tenant=owner.tenant, api_key=key, amount=50, rider=too_much)

    assert fits.answered == (1,) and not any(too_much.answered or ())
    phase.refresh_from_db()
    key.refresh_from_db()
    assert phase.reserved_tokens == 60  # the refused one noted nothing
    assert key.budget_tokens_used == 60 and used(owner.tenant) == 60
