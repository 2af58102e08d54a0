"""Usage: each ended quota period kept as a usage record when its counters restart, the history
with what it costs at the plan's prices, and the current period with its projection and
warnings."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Plan
from billing.selectors import usage_history
from playground.models import GatewayCall
from tenants.models import QuotaCounter, Tenant, UsageRecord
from tenants.services.quotas import quota_reset, quotas_reset_due
from tests.conftest import assert_envelope, rows_read
from tests.playground.factories import GatewayCallFactory

from .factories import SubscriptionFactory

pytestmark = pytest.mark.django_db

USAGE = "/api/v1/billing/usage"
MIB = 1024 * 1024
JAN_1, FEB_1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def set_counter(tenant, resource: str, used: int) -> None:
    QuotaCounter.objects.update_or_create(tenant=tenant, resource=resource, defaults={"used": used})


def on_team(tenant):
    team = Plan.objects.get(code="team")
    Tenant.objects.filter(pk=tenant.pk).update(plan=team.tier, plan_features=team.features)
    return SubscriptionFactory(tenant=tenant, plan=team)


def test_the_reset_keeps_what_the_period_used(owner):
    tenant = owner.tenant
    Tenant.objects.filter(pk=tenant.pk).update(last_reset_at=JAN_1, quota_reset_at=FEB_1)
    for resource, used in (("tokens", 1234), ("api_calls", 56), ("documents", 7), ("storage", MIB)):
        set_counter(tenant, resource, used)
    with time_machine.travel(datetime(2026, 2, 1, 0, 5, tzinfo=UTC), tick=False):
        assert quotas_reset_due() == [tenant.slug]
    record = UsageRecord.objects.get(tenant=tenant)
    assert (record.period_start, record.period_end) == (JAN_1, FEB_1)
    assert (record.tokens, record.api_calls, record.documents, record.storage_bytes) == (
        1234,
        56,
        7,
        MIB,
    )
    # The periodic counters restart; stock levels stay.
    assert QuotaCounter.objects.get(tenant=tenant, resource="tokens").used == 0
    assert QuotaCounter.objects.get(tenant=tenant, resource="documents").used == 7


def test_a_manual_reset_keeps_its_period_too(owner):
    set_counter(owner.tenant, "tokens", 10)
    quota_reset(tenant=owner.tenant, actor=None)
    assert UsageRecord.objects.get(tenant=owner.tenant).tokens == 10


@time_machine.travel(datetime(2026, 4, 10, tzinfo=UTC), tick=False)
def test_the_history_lists_recent_periods_with_their_costs(owner):
    tenant = owner.tenant
    on_team(tenant)
    for month, tokens in ((1, 150_000), (2, 260_000), (3, 201_000)):
        start = datetime(2026, month, 1, tzinfo=UTC)
        end = datetime(2026, month + 1, 1, tzinfo=UTC)
        UsageRecord.objects.create(
            tenant=tenant,
            period_start=start,
            period_end=end,
            tokens=tokens,
            api_calls=100 * month,
            documents=month,
            storage_bytes=6_000 * MIB,
        )
        call = GatewayCallFactory(tenant=tenant, total_tokens=tokens, cost_micros=1_000_000 * month)
        type(call).objects.filter(pk=call.pk).update(created_at=start)
    page = owner.client.get(USAGE, {"months": 2}).json()
    assert page["count"] == 2
    body = page["results"]
    assert [row["period_start"] for row in body] == ["2026-03-01", "2026-02-01"]
    march, february = body
    assert march["period_end"] == "2026-03-31"
    assert march["tokens_used"] == 201_000 and march["api_calls"] == 300
    assert march["storage_used_mb"] == 6_000
    # Team includes 200,000 tokens; 1,000 beyond at 1,500 micros per 1,000 = 0.15 cent -> 0.
    assert march["token_cost_cents"] == 0
    # 60,000 beyond: 60 x 1,500 micros = 90,000 micros = 9 cents.
    assert february["token_cost_cents"] == 9
    # 1,000 MB beyond the 5,000 included: one started GB at 40 cents.
    assert february["storage_cost_cents"] == 40
    assert february["total_cost_cents"] == 49
    assert february["gateway_cost_micros"] == 2_000_000
    assert owner.client.get(USAGE).json()["count"] == 3


@pytest.mark.postgres
@time_machine.travel(datetime(2026, 4, 10, tzinfo=UTC), tick=False)
def test_the_history_reads_only_the_calls_of_its_periods(owner):
    """Each period's sums filter their own calls, and the statement read every call the
    organization ever made: a year of history, or the current period, read them all."""
    tenant = owner.tenant
    subscription = on_team(tenant)
    old = GatewayCallFactory.create_batch(60, tenant=tenant, total_tokens=5, cost_micros=7)
    GatewayCall.objects.filter(pk__in=[c.pk for c in old]).update(created_at=JAN_1)
    recent = GatewayCallFactory.create_batch(3, tenant=tenant, total_tokens=11, cost_micros=13)
    GatewayCall.objects.filter(pk__in=[c.pk for c in recent]).update(
        created_at=datetime(2026, 3, 15, tzinfo=UTC)
    )
    UsageRecord.objects.create(
        tenant=tenant,
        period_start=datetime(2026, 3, 1, tzinfo=UTC),
        period_end=datetime(2026, 4, 1, tzinfo=UTC),
        tokens=33,
    )
    with CaptureQueriesContext(connection) as captured:
        [march] = usage_history(tenant=tenant, subscription=subscription, months=2)
    assert (march["usage"].tokens, march["usage"].cost_micros) == (33, 39)
    [statement] = [q["sql"] for q in captured.captured_queries if "gatewaycall" in q["sql"]]
    assert rows_read(statement, GatewayCall._meta.db_table) == 3


@pytest.mark.parametrize("months", ["0", "13", "x"])
def test_months_is_one_to_twelve(owner, months):
    assert_envelope(owner.client.get(USAGE, {"months": months}), 400, "VALIDATION_ERROR")


@time_machine.travel(datetime(2026, 1, 11, tzinfo=UTC), tick=False)
def test_the_current_period_with_its_projection_and_warnings(owner):
    tenant = owner.tenant
    on_team(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(last_reset_at=JAN_1, quota_reset_at=FEB_1)
    # A third of the month gone: 10 days of 31.
    set_counter(tenant, "tokens", 100_000)
    set_counter(tenant, "storage", 2_400 * MIB)
    set_counter(tenant, "documents", 450)
    body = owner.client.get(f"{USAGE}/current").json()
    assert body["current_period"] == {"start": "2026-01-01", "end": "2026-01-11"}
    assert body["period_end"] == "2026-01-31"
    assert body["usage"]["tokens"] == {"used": 100_000, "limit": 200_000, "percentage": 50.0}
    assert body["usage"]["storage"] == {"used_mb": 2_400, "limit_mb": 5_000, "percentage": 48.0}
    # Nothing beyond the included amounts yet: nothing owed.
    assert body["costs"] == {"total_cents": 0, "breakdown": {"tokens": 0, "storage": 0, "other": 0}}
    # 100,000 tokens in 10 of 31 days -> 310,000 by the end: 110,000 beyond = 110 x 1,500
    # micros = 16.5 cents -> 17.
    assert body["projected_costs"] == {"total_cents": 17, "token_cents": 17, "storage_cents": 0}
    warnings = {w["resource"]: w for w in body["warnings"]}
    assert warnings["documents"]["severity"] == "high"  # 90 %
    assert warnings["tokens"]["severity"] == "medium"  # 50 %
    assert warnings["storage"]["message"] == "Storage usage is at 48.0% of limit"
