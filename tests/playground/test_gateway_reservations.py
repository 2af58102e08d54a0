"""The gateway's note of a call's reservation (playground.models.GatewayReservation).

A call that no work of the platform notes (`chat/completions`, a template execution) leaves a
row from its reservation to its settlement, written and deleted by those two statements. A
row past its lease is a call whose process died before settling: the release of expired
reservations gives its tokens back to the quota and the key's budget. Exactly one of the
release and the settlement gives a reservation back, even when they race, and a call that
outlives its lease is counted again when it settles. The last test kills a real server process
in the middle of a call.
"""

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from config.celery import app
from config.exceptions import QuotaExceeded, RateLimitExceeded
from playground import tokens
from playground.models import GatewayCall, GatewayReservation, OrchestrationPhase
from playground.services import ChatInput, gateway_call_reserved, gateway_reserve, runs
from playground.services.ledger import (
    gateway_reservations_release_expired,
    gateway_tokens_lock,
    gateway_tokens_release_unsettled,
)
from tenants.models import Tenant
from tests.conftest import migrate_to, migrated_back_to
from tests.factories import APIKeyFactory, MembershipFactory, TenantFactory, issue_api_key

from .factories import (
    GatewayCallFactory,
    LanguageModelFactory,
    ProviderFactory,
    WorkflowJobFactory,
    claimed_phase,
)
from .test_gateway_ledger import counter, fresh, key_state, path, quota_used, run_in_threads
from .test_run_worker import REPO, SubprocessWorker, wait_for
from .upstream import FakeUpstream

pytestmark = pytest.mark.django_db

__all__ = ["path"]  # the fixture: each rule on PostgreSQL's statements and on the portable path

LIMIT = 100_000
MESSAGES = ({"role": "user", "content": "Note my reservation, please."},)
MAX_TOKENS = 20
RESERVED = tokens.estimate_prompt_tokens(MESSAGES) + MAX_TOKENS


@pytest.fixture
def tenant():
    return TenantFactory(settings={"maxTokensPerMonth": LIMIT})


@pytest.fixture
def key(tenant):
    return APIKeyFactory(tenant=tenant, monthly_token_budget=LIMIT)


def reserve(tenant, key=None, model="gpt-4", **options):
    return gateway_reserve(
        tenant=tenant,
        user_id=None,
        api_key=key,
        chat=ChatInput(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS),
        request_id="req-reservation-note",
        **options,
    )


def past_every_lease():
    return timezone.now() + timedelta(seconds=django_settings.GATEWAY_RESERVATION_LEASE_SECONDS + 1)


def recorded_tokens(tenant) -> int:
    return sum(GatewayCall.objects.filter(tenant=tenant).values_list("total_tokens", flat=True))


# --- The note --------------------------------------------------------------------------------


def test_a_reservation_is_noted_with_its_tokens_key_and_lease(path, tenant, key, settings):
    settings.GATEWAY_RESERVATION_LEASE_SECONDS = 120
    before = timezone.now()

    reservation = reserve(tenant, key)

    note = GatewayReservation.objects.get()
    assert note.pk == reservation.noted_as
    assert (note.tenant_id, note.api_key_id, note.tokens) == (tenant.pk, key.pk, RESERVED)
    assert note.source == "api"
    assert note.request_id == "req-reservation-note"
    lease = timedelta(seconds=120)
    assert before + lease <= note.expires_at <= timezone.now() + lease
    assert quota_used(tenant) == key_state(key)[0] == RESERVED


def test_the_settlement_deletes_the_note_in_its_statement(path, tenant, key):
    _result, call, _error = gateway_call_reserved(reserve(tenant, key))

    assert not GatewayReservation.objects.exists()
    assert quota_used(tenant) == key_state(key)[0] == call.total_tokens < RESERVED


@pytest.mark.postgres
def test_the_note_adds_no_statement_to_the_reservation_or_the_settlement(tenant, key, settings):
    settings.GATEWAY_CATALOGUE_CACHE_SECONDS = 60
    gateway_call_reserved(reserve(tenant, key))  # the counter made, the catalogue kept

    with CaptureQueriesContext(connection) as reserving:
        reservation = reserve(tenant, key)
    with CaptureQueriesContext(connection) as settling:
        gateway_call_reserved(reservation)

    assert len(reserving) == 1, [query["sql"] for query in reserving]
    assert "INSERT INTO" in reserving[0]["sql"]
    assert len(settling) == 1, [query["sql"] for query in settling]
    assert "DELETE FROM" in settling[0]["sql"]
    assert not GatewayReservation.objects.exists()


def test_a_call_without_a_key_is_noted_and_settled_too(path, tenant):
    reservation = reserve(tenant)
    assert GatewayReservation.objects.get().api_key_id is None

    _result, call, _error = gateway_call_reserved(reservation)

    assert not GatewayReservation.objects.exists()
    assert quota_used(tenant) == call.total_tokens


def test_a_reservation_refused_by_the_quota_notes_nothing(path):
    tenant = TenantFactory(settings={"maxTokensPerMonth": RESERVED - 1})

    with pytest.raises(QuotaExceeded):
        reserve(tenant)

    assert not GatewayReservation.objects.exists()


def test_a_reservation_refused_by_the_tokens_window_takes_its_note_back(path, tenant, settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "gateway_tokens": f"{RESERVED - 1}/min"},
    }

    with pytest.raises(RateLimitExceeded):
        reserve(tenant)

    assert not GatewayReservation.objects.exists()
    assert quota_used(tenant) == 0


def test_a_phase_notes_its_reservation_and_the_gateway_notes_it_too(path, owner):
    run, _held, phase, claim, chat = claimed_phase(owner)

    reservation = runs._reserve(run, phase.pk, claim, chat)

    note = GatewayReservation.objects.get(pk=reservation.noted_as)
    assert (note.tokens, note.source) == (reservation.tokens, "orchestration")
    assert note.request_id == runs._request_id(run.pk, phase.pk, claim) == reservation.request_id
    assert OrchestrationPhase.objects.get(pk=phase.pk).reserved_tokens == reservation.tokens


def test_a_phase_taken_over_is_given_back_once_though_its_old_call_settles_after(path, owner):
    """What a worker that outlived its lease (or a statement the server ran after its client
    gave up) does: its call settles after the phase was taken over and its reservation given
    back. The settlement finds the gateway's note gone and counts the call's usage alone."""
    run, _held, phase, claim, chat = claimed_phase(owner)
    reservation = runs._reserve(run, phase.pk, claim, chat)
    taken_over = OrchestrationPhase.objects.select_related("tenant").get(pk=phase.pk)

    runs._release_unsettled(taken_over)
    assert quota_used(owner.tenant) == 0
    _result, call, _error = gateway_call_reserved(reservation)

    assert call.total_tokens > 0
    assert quota_used(owner.tenant) == call.total_tokens
    assert not GatewayReservation.objects.exists()
    runs._release_unsettled(taken_over)  # a second successor finds nothing to give back
    assert quota_used(owner.tenant) == call.total_tokens


def test_a_phase_whose_call_settled_has_nothing_to_give_back(path, owner):
    run, _held, phase, claim, chat = claimed_phase(owner)
    reservation = runs._reserve(run, phase.pk, claim, chat)
    _result, call, _error = gateway_call_reserved(reservation)

    given_back = gateway_tokens_release_unsettled(
        tenant=owner.tenant, request_id=reservation.request_id
    )

    assert given_back == 0
    assert quota_used(owner.tenant) == call.total_tokens


# --- The release of expired reservations ------------------------------------------------------


def test_an_expired_note_is_given_back_to_the_quota_and_the_keys_budget(path, tenant, key, caplog):
    reserve(tenant, key)

    with caplog.at_level(logging.WARNING, logger="playground.services.ledger"):
        assert gateway_reservations_release_expired(now=past_every_lease()) == 1

    assert not GatewayReservation.objects.exists()
    assert quota_used(tenant) == key_state(key)[0] == 0
    [warning] = [r.getMessage() for r in caplog.records if r.name == "playground.services.ledger"]
    assert f"Gave back {RESERVED} tokens" in warning
    assert tenant.slug in warning and "req-reservation-note" in warning


def test_a_note_within_its_lease_is_left_alone(path, tenant, key):
    reserve(tenant, key)

    assert gateway_reservations_release_expired() == 0

    assert GatewayReservation.objects.count() == 1
    assert quota_used(tenant) == key_state(key)[0] == RESERVED


def test_the_release_finds_nothing_of_a_settled_call(path, tenant, key):
    _result, call, _error = gateway_call_reserved(reserve(tenant, key))

    assert gateway_reservations_release_expired(now=past_every_lease()) == 0

    assert quota_used(tenant) == key_state(key)[0] == call.total_tokens


def test_a_call_settled_after_its_note_was_given_back_is_counted_once(path, tenant, key):
    # The call outlived its lease: the release gave the reservation back while it ran, so its
    # settlement counts what it used, not what it used minus a reservation no longer there.
    reservation = reserve(tenant, key)
    assert gateway_reservations_release_expired(now=past_every_lease()) == 1

    _result, call, _error = gateway_call_reserved(reservation)

    assert call.total_tokens > 0
    assert quota_used(tenant) == key_state(key)[0] == call.total_tokens == recorded_tokens(tenant)
    assert not GatewayReservation.objects.exists()


def test_the_release_is_bounded_and_takes_the_oldest_first(tenant):
    first, second, third = (reserve(tenant) for _ in range(3))

    assert gateway_reservations_release_expired(now=past_every_lease(), limit=2) == 2

    assert list(GatewayReservation.objects.values_list("pk", flat=True)) == [third.noted_as]
    assert quota_used(tenant) == RESERVED
    assert {first.noted_as, second.noted_as}.isdisjoint(
        GatewayReservation.objects.values_list("pk", flat=True)
    )


def test_the_command_and_beats_task_release_expired_reservations(tenant, settings):
    reserve(tenant)
    settings.GATEWAY_RESERVATION_LEASE_SECONDS = 0
    reserve(tenant)  # expires at once
    out = StringIO()

    call_command("release_expired_reservations", stdout=out)

    assert out.getvalue().strip() == "1 expired reservations given back"
    assert quota_used(tenant) == RESERVED
    schedule = django_settings.CELERY_BEAT_SCHEDULE["playground.release-expired-reservations"]
    assert schedule["task"] in app.tasks
    assert schedule["schedule"] == timedelta(minutes=1)


def test_the_admin_lists_reservations_read_only(admin_client, tenant):
    reserve(tenant)
    url = reverse("admin:playground_gatewayreservation_changelist")

    response = admin_client.get(url)

    assert response.status_code == 200
    assert tenant.slug.encode() in response.content
    add = admin_client.get(reverse("admin:playground_gatewayreservation_add"))
    assert add.status_code == 403


# --- Racing ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_releases_racing_settlements_give_each_reservation_back_exactly_once():
    """Sixteen calls past their lease settle while two releases run: the eight answered by a
    slow upstream are given back while they wait and settle by their usage alone; the eight
    answered at once race the releases for their notes. Whoever wins, each reservation is
    given back once and the counters end at the calls' usage."""
    tenant = TenantFactory(settings={"maxTokensPerMonth": LIMIT})
    key = APIKeyFactory(tenant=tenant, monthly_token_budget=LIMIT)
    counter(tenant)
    each = 8
    with FakeUpstream(delay=1.0) as upstream:
        slow = LanguageModelFactory(
            provider=ProviderFactory(kind="openai", base_url=upstream.url + "/v1", max_retries=0)
        )
        reservations = [reserve(tenant, key, model=slow.name) for _ in range(each)]
        reservations += [reserve(tenant, key) for _ in range(each)]
        calls = len(reservations)
        assert quota_used(tenant) == sum(r.tokens for r in reservations)
        later = past_every_lease()

        def settle_or_release(index):
            if index >= calls:  # the two releases, fired with the settlements
                return gateway_reservations_release_expired(now=later)
            reservation = reservations[index]
            reservation.tenant, reservation.api_key = fresh(tenant, key)
            return gateway_call_reserved(reservation)[1].total_tokens

        outcomes = run_in_threads(settle_or_release, calls + 2)

    given_back = sum(outcomes[calls:])
    assert each <= given_back <= calls  # the slow calls' at least, none twice
    assert not GatewayReservation.objects.exists()
    assert GatewayCall.objects.filter(tenant=tenant).count() == calls
    used = sum(outcomes[:calls])
    assert quota_used(tenant) == key_state(key)[0] == used == recorded_tokens(tenant)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_takeovers_racing_late_settlements_give_each_phase_reservation_back_exactly_once(owner):
    """Eight phases of one run are in flight when their successors take them over (a run
    resumed after an outage, the reaper, a cancel): each successor gives back its phase's
    reservation while the old worker's call settles. Four calls wait on a slow upstream, so
    their successors win; four answer at once and race theirs. Whoever wins, each
    reservation is given back once and the counter ends at the calls' usage."""
    phases = [f"phase-{n}" for n in range(8)]
    run, held, _first, first_claim, chat = claimed_phase(owner, phases=phases)
    in_flight = []
    with FakeUpstream(delay=1.0) as upstream:
        slow = LanguageModelFactory(
            provider=ProviderFactory(kind="openai", base_url=upstream.url + "/v1", max_retries=0)
        )
        for index, phase in enumerate(
            OrchestrationPhase.objects.filter(run=run).order_by("position")
        ):
            claim = runs._claim_phase(held, phase) if index else first_claim
            asked = chat if index % 2 else dataclasses.replace(chat, model=slow.name)
            in_flight.append(runs._reserve(run, phase.pk, claim, asked))
        reserved = sum(reservation.tokens for reservation in in_flight)
        assert quota_used(owner.tenant) == reserved
        count = len(in_flight)

        def settle_or_take_over(index):
            reservation = in_flight[index % count]
            if index < count:  # the old worker's call
                reservation.tenant = Tenant.objects.get(pk=owner.tenant.pk)
                return gateway_call_reserved(reservation)[1].total_tokens
            with transaction.atomic():  # its successor, in the lock order of every takeover
                gateway_tokens_lock(tenant_id=owner.tenant.pk)
                return gateway_tokens_release_unsettled(
                    tenant=owner.tenant, request_id=reservation.request_id
                )

        outcomes = run_in_threads(settle_or_take_over, 2 * count)

    usage, given_back = outcomes[:count], outcomes[count:]
    slow_ones = [r.tokens for n, r in enumerate(in_flight) if n % 2 == 0]
    assert sum(slow_ones) <= sum(given_back) <= reserved  # the slow calls' at least, none twice
    assert all(back in (0, r.tokens) for back, r in zip(given_back, in_flight, strict=True))
    assert not GatewayReservation.objects.filter(tenant=owner.tenant).exists()
    assert quota_used(owner.tenant) == sum(usage) == recorded_tokens(owner.tenant)


# --- A server killed mid-call ------------------------------------------------------------------

SERVER_START_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_server_killed_mid_call_leaves_a_note_that_gives_its_tokens_back(tmp_path):
    """The production ASGI application under uvicorn, in its own process on the test
    database, SIGKILLed while a `chat/completions` call waits for its upstream: nothing
    settles, the quota and the key's budget keep the reservation, and once the lease has run
    out the release gives it back."""
    tenant = TenantFactory(settings={"maxTokensPerMonth": LIMIT})
    key, raw = issue_api_key(
        MembershipFactory(tenant=tenant), scopes=["write"], monthly_token_budget=LIMIT
    )
    port = _free_port()
    log = tmp_path / "server.log"
    with FakeUpstream(delay=30) as upstream:
        provider = ProviderFactory(
            kind="openai", base_url=upstream.url + "/v1", max_retries=0, timeout_seconds=60
        )
        model = LanguageModelFactory(provider=provider)
        environment = SubprocessWorker(log).environment()
        server_options = ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        with log.open("wb") as output:
            server = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "uvicorn", "config.asgi:application", *server_options],
                cwd=REPO,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                lambda: server.poll() is None and _answers(base + "/health/"),
                "the server to answer /health/",
                timeout=SERVER_START_SECONDS,
                details=lambda: log.read_text(errors="replace")[-3000:],
            )
            caller = threading.Thread(target=_call, args=(base, raw, model.name), daemon=True)
            caller.start()
            wait_for(
                lambda: len(upstream.requests) == 1,
                "the call to reach the upstream",
                timeout=30,
                details=lambda: log.read_text(errors="replace")[-3000:],
            )
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        caller.join(timeout=10)

    note = GatewayReservation.objects.get(tenant=tenant)
    assert not GatewayCall.objects.filter(tenant=tenant).exists()
    assert note.api_key_id == key.pk
    assert quota_used(tenant) == key_state(key)[0] == note.tokens > 0

    assert gateway_reservations_release_expired(now=note.expires_at) == 1

    assert quota_used(tenant) == key_state(key)[0] == 0
    assert not GatewayReservation.objects.exists()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _call(base: str, raw: str, model: str) -> None:
    body = {"model": model, "messages": list(MESSAGES), "max_tokens": MAX_TOKENS}
    headers = {"Authorization": f"Bearer {raw}"}
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
        httpx.post(f"{base}/api/v1/chat/completions", json=body, headers=headers, timeout=60)


def _persistence() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relpersistence FROM pg_class WHERE oid = %s::regclass",
            [GatewayReservation._meta.db_table],
        )
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_notes_are_written_to_the_wal_so_a_crash_or_a_failover_keeps_them():
    """An UNLOGGED table is emptied by PostgreSQL's crash recovery and not copied to replicas:
    the notes of the calls in flight would be lost, and their worst cases counted until the
    month's end. The notes' table is a permanent one, and a database migrated while it was
    UNLOGGED gets a permanent one, its notes kept."""
    assert _persistence() == "p"  # "p": permanent, "u": unlogged

    with migrated_back_to(("playground", "0008_gateway_reservations")):
        assert _persistence() == "u"
        GatewayReservation.objects.create(
            tenant=TenantFactory(), tokens=64, expires_at=timezone.now()
        )
        migrate_to(("playground", "0009_gateway_reservations_logged"))

        assert _persistence() == "p"
        assert GatewayReservation.objects.get().tokens == 64


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_work_in_flight_when_the_gateway_starts_noting_it_gets_its_note(owner):
    """Before, a phase's or a batch row's reservation was noted on the work only, and its
    successor gave it back unless a call was recorded. The migration writes the gateway's
    note of each one still unsettled, so that a successor gives it back; a settled call gets
    none."""
    with migrated_back_to(("playground", "0009_gateway_reservations_logged")):
        run, _held, phase, claim, _chat = claimed_phase(owner, phases=("ideation", "design"))
        OrchestrationPhase.objects.filter(pk=phase.pk).update(reserved_tokens=500)
        settled = OrchestrationPhase.objects.filter(run=run, position__gt=phase.position).get()
        settled_claim = uuid.uuid4()
        OrchestrationPhase.objects.filter(pk=settled.pk).update(
            status="running", claim=settled_claim, reserved_tokens=300
        )
        GatewayCallFactory(
            tenant=owner.tenant, request_id=runs._request_id(run.pk, settled.pk, settled_claim)
        )
        job = WorkflowJobFactory(
            tenant=owner.tenant,
            status="running",
            reserved_tokens=200,
            reserved_call="job:1:row:1:claim",
        )
        WorkflowJobFactory(tenant=owner.tenant, status="completed", reserved_tokens=0)
        counter(owner.tenant, used=500 + 200)

        migrate_to(("playground", "0010_gateway_notes_of_work_in_flight"))

        notes = {
            note.request_id: (note.tokens, note.source)
            for note in GatewayReservation.objects.filter(tenant=owner.tenant)
        }
        assert notes == {
            runs._request_id(run.pk, phase.pk, claim): (500, "orchestration"),
            job.reserved_call: (200, "workflow"),
        }
        assert all(n.expires_at > timezone.now() for n in GatewayReservation.objects.all())
        migrate_to(("playground", "0009_gateway_reservations_logged"))
        assert not GatewayReservation.objects.exists()  # the old code would give them back twice
        migrate_to(("playground", "0010_gateway_notes_of_work_in_flight"))

    taken_over = OrchestrationPhase.objects.select_related("tenant").get(pk=phase.pk)
    runs._release_unsettled(taken_over)
    assert quota_used(owner.tenant) == 200
