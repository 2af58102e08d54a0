"""A gateway call's settlement that meets the database unavailable (its backend terminated by
the server, as a restart or a failover does) is tried again for up to
GATEWAY_SETTLE_RETRY_SECONDS and applied once: the upstream's tokens are recorded, not given back
when the reservation's lease ends (playground.services.ledger). One that meets the cache down
is recorded without counting its upstreams' failures towards their cooldowns."""

import logging
import threading
import time

import psycopg
import pytest
from django.db import OperationalError, connection, connections
from django.test import override_settings

from accounts.services import budget_month
from playground.models import CallStatus, GatewayCall
from playground.services.gateway import (
    ChatInput,
    Outcome,
    _is_upstream,
    gateway_reserve,
    gateway_settle,
)
from playground.services.ledger import gateway_tokens_settle
from tenants.models import QuotaCounter
from tests.factories import APIKeyFactory, TenantFactory
from tests.playground.test_gateway_ledger import (
    AMOUNT,
    counter,
    key_state,
    noted,
    quota_used,
    settle,
    spend,
    unsaved_call,
)
from tests.playground.test_gateway_upstreams import openai_model
from tests.playground.upstream import FakeUpstream
from tests.test_dependency_outages import unreachable_cache

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

USED = 25  # the call's tokens; reserved AMOUNT (30), so the settlement gives 5 back


@pytest.fixture
def tenant():
    return TenantFactory(settings={"maxTokensPerMonth": 1_000})


@pytest.fixture
def key(tenant):
    return APIKeyFactory(tenant=tenant, monthly_token_budget=500)


@pytest.fixture
def admin_connection():
    """A connection of its own, to lock rows and terminate backends as an operator would."""
    with psycopg.connect(**connection.get_connection_params()) as own:
        yield own


def terminate(admin_connection, pid: int) -> None:
    admin_connection.execute("SELECT pg_terminate_backend(%s)", [pid])


def backend_pid() -> int:
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def settled_once(tenant, key) -> None:
    assert GatewayCall.objects.filter(tenant=tenant).count() == 1
    assert quota_used(tenant) == 100 + USED - AMOUNT
    assert key_state(key) == (50 + USED - AMOUNT, budget_month())


def test_a_settlement_whose_backend_is_terminated_is_tried_again_and_applied_once(
    tenant, key, admin_connection, caplog
):
    counter(tenant, used=100)
    spend(key, 50)
    call = unsaved_call(tenant, key, total=USED)
    # The counter's row is held, so the settlement waits on it, where it is terminated.
    admin_connection.execute(
        f"SELECT 1 FROM {QuotaCounter._meta.db_table} WHERE tenant_id = %s FOR UPDATE",  # noqa: S608
        [tenant.pk],
    )
    outcome = {}

    def settle_call():
        try:
            outcome["call"] = settle(tenant=tenant, api_key=key, delta=USED - AMOUNT, call=call)
        except Exception as error:  # the assertion below names it
            outcome["error"] = error
        finally:
            connections.close_all()

    with caplog.at_level(logging.WARNING, logger="playground.services.ledger"):
        settling = threading.Thread(target=settle_call)
        settling.start()
        waiting = None
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as watcher:
            deadline = time.monotonic() + 10
            while waiting is None and time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE %s",
                    ["%quota_update%"],
                ).fetchone()
                time.sleep(0.01)
            assert waiting is not None, "the settlement never waited on the counter"
            watcher.execute("SELECT pg_terminate_backend(%s)", [waiting[0]])
        admin_connection.rollback()  # the row is free for the next try
        settling.join(timeout=30)

    assert "error" not in outcome, outcome
    assert outcome["call"].pk == call.pk
    settled_once(tenant, key)
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"Settling gateway call {call.pk}: the database is unavailable (")


def test_a_try_that_committed_but_lost_its_answer_is_not_applied_again(
    tenant, key, admin_connection, caplog
):
    counter(tenant, used=100)
    spend(key, 50)
    call = unsaved_call(tenant, key, total=USED)
    note = noted(tenant, key)
    settled = {"delta": USED - AMOUNT, "call": call, "noted_as": note, "reserved": AMOUNT}
    gateway_tokens_settle(tenant=tenant, api_key=key, **settled)
    # As if the connection had dropped after the commit, before the answer arrived: the same
    # call is settled again on a connection the server has closed.
    terminate(admin_connection, backend_pid())
    admin_connection.commit()

    with caplog.at_level(logging.WARNING, logger="playground.services.ledger"):
        again = gateway_tokens_settle(tenant=tenant, api_key=key, **settled)

    assert again.pk == call.pk
    settled_once(tenant, key)
    assert caplog.records[-1].getMessage() == (
        f"Gateway call {call.pk} had been settled by an earlier try"
    )


def test_past_the_retry_time_the_failure_is_raised_and_nothing_moves(
    tenant, key, admin_connection, settings
):
    settings.GATEWAY_SETTLE_RETRY_SECONDS = 0
    counter(tenant, used=100)
    spend(key, 50)
    note = noted(tenant, key)
    terminate(admin_connection, backend_pid())
    admin_connection.commit()

    with pytest.raises(OperationalError):
        gateway_tokens_settle(
            tenant=tenant,
            api_key=key,
            delta=USED - AMOUNT,
            call=unsaved_call(tenant, key),
            noted_as=note,
            reserved=AMOUNT,
        )

    connection.close()
    assert GatewayCall.objects.filter(tenant=tenant).count() == 0
    assert quota_used(tenant) == 100
    assert key_state(key) == (50, budget_month())


@pytest.mark.redis
def test_a_call_settles_while_the_cache_is_down_its_upstreams_failures_uncounted(tenant, caplog):
    with FakeUpstream() as upstream:
        model = openai_model(upstream)
    reservation = gateway_reserve(
        tenant=tenant,
        user_id=None,
        api_key=None,
        chat=ChatInput(
            model=model.name, messages=({"role": "user", "content": "Hi"},), max_tokens=5
        ),
    )
    assert _is_upstream(reservation, model.name)
    outcome = Outcome(status=CallStatus.FAILED, attempts=2, failed_models=[model.name])

    with (
        override_settings(CACHES=unreachable_cache()),
        caplog.at_level(logging.WARNING, logger="playground.services.gateway"),
    ):
        call = gateway_settle(reservation=reservation, outcome=outcome)

    assert GatewayCall.objects.get(pk=call.pk).status == CallStatus.FAILED
    assert quota_used(tenant) == 0  # nothing was used: the reservation came back
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        f"Upstream failures of {model.name} not counted towards cooldowns: the cache is "
        "unavailable ("
    )
