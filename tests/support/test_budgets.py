"""Budgets: the generic battery for /api/v1/budgets/; creation (calendar periods by default, a
period starting on day 1 to 28, period_end computed or checked, a start in the past rolled to
the period holding now, one budget per type and currency, thresholds and amounts validated,
server-kept keys refused); updates (limits, thresholds, per-customer limit, period length,
alerts newly reached); usage records (drawn under the limit and the per-customer limit, refund
budgets refused, Idempotency-Key); alerts once per threshold and period and who is notified;
periods rolled by a draw and by the beat job; concurrent draws never passing the limit; who
may do what; the admin; filters and ordering."""

import itertools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from io import StringIO

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from notifications.models import Channel, Notification
from support.models import Budget, BudgetUsageRecord
from support.services import budgets_roll
from support.tasks import roll_budgets
from tenants.models import Role
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory, UserFactory, issue_api_key

from .factories import BudgetFactory, CustomerProfileFactory, RefundFactory

pytestmark = pytest.mark.django_db

BUDGETS = "/api/v1/budgets/"

# Moments the tests travel to: all in the past, so the callers' tokens (issued now) hold.
MAY_17 = datetime(2026, 5, 17, 10, 30, tzinfo=UTC)
JUNE_3 = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
# Amounts stay JSON-safe integers (support.serializers.MONEY_MAX): audit payloads carry them.
MONEY_MAX = 2**53 - 1


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def shown(moment: datetime) -> str:
    """A datetime as the API shows it."""
    return moment.isoformat().replace("+00:00", "Z")


def detail(budget) -> str:
    return f"{BUDGETS}{getattr(budget, 'pk', budget)}/"


def usage_url(budget) -> str:
    return f"{detail(budget)}usage-records/"


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def body(**overrides) -> dict:
    """A valid create body: a USD compensation budget of 10,000 cents a month."""
    return {
        "type": "COMPENSATION",
        "period": "MONTHLY",
        "limit_cents": 10_000,
        "currency": "USD",
        **overrides,
    }


def create(caller, **overrides):
    return caller.client.post(BUDGETS, body(**overrides), format="json")


def created(caller, **overrides) -> dict:
    response = create(caller, **overrides)
    assert response.status_code == 201, response.content
    return response.json()


def compensation(tenant, **fields) -> Budget:
    """A USD compensation budget of 10,000 cents covering the current calendar month (with the
    factory's 80 % threshold)."""
    return BudgetFactory(
        tenant=tenant,
        **{"type": "COMPENSATION", "currency": "USD", "limit_cents": 10_000, **fields},
    )


def draw(caller, budget, amount_cents: int, headers: dict | None = None, **extra):
    return caller.client.post(
        usage_url(budget), {"amount_cents": amount_cents, **extra}, format="json", **(headers or {})
    )


def drawn(caller, budget, amount_cents: int, **extra) -> dict:
    response = draw(caller, budget, amount_cents, **extra)
    assert response.status_code == 201, response.content
    return response.json()


def events(tenant, event_type: str):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type)


def alerts(tenant) -> list[int]:
    """The percentages of the threshold events recorded, each as often as it was."""
    return sorted(
        event.payload["percentage"] for event in events(tenant, "budget.threshold_reached")
    )


def thresholds(*percentages, disabled=()) -> list[dict]:
    return [{"percentage": p, "enabled": p not in disabled} for p in percentages]


def listed(caller, **params) -> list[str]:
    response = caller.client.get(BUDGETS, {**params, "page_size": 100})
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def ids(*objects) -> list[str]:
    return [str(obj.pk) for obj in objects]


# The battery ------------------------------------------------------------------------------------

# Each create body of the battery gets a currency of its own: one budget per type and currency.
_BODY_CURRENCIES = itertools.cycle(["EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK"])


class TestBudgets(ResourceBattery):
    url = BUDGETS
    update_data = {
        "limit_cents": 75_000,
        "alert_thresholds": thresholds(50, 90, disabled=(90,)),
        "refund_limit_per_customer_cents": 5_000,
    }
    audit_prefix = "budget"

    def make(self, tenant, **fields):
        budget = super().make(tenant, **{"type": "COMPENSATION", **fields})
        self._made = budget
        return budget

    @property
    def create_data(self):
        made = getattr(self, "_made", None)
        if made is not None:
            # PUT sends this body over a budget made first, whose type and currency are fixed:
            # it names them as they are, like the document a GET showed.
            return body(type=made.type, currency=made.currency, limit_cents=50_000)
        return body(currency=next(_BODY_CURRENCIES), limit_cents=50_000)


# Creation: periods -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "period", "start", "end"),
    [
        (MAY_17, "MONTHLY", utc(2026, 5, 1), utc(2026, 6, 1)),
        (MAY_17, "QUARTERLY", utc(2026, 4, 1), utc(2026, 7, 1)),
        (MAY_17, "YEARLY", utc(2026, 1, 1), utc(2027, 1, 1)),
        (utc(2025, 12, 31, 23, 59, 59), "MONTHLY", utc(2025, 12, 1), utc(2026, 1, 1)),
        (utc(2025, 12, 31, 23, 59, 59), "QUARTERLY", utc(2025, 10, 1), utc(2026, 1, 1)),
        (utc(2026, 1, 1), "QUARTERLY", utc(2026, 1, 1), utc(2026, 4, 1)),
    ],
    ids=[
        "monthly",
        "quarterly",
        "yearly",
        "monthly-last-second-of-year",
        "quarterly-last-second-of-year",
        "quarterly-first-instant",
    ],
)
def test_without_period_start_a_budget_covers_the_calendar_period_holding_now(
    owner, now, period, start, end
):
    with time_machine.travel(now, tick=False):
        shown_budget = created(owner, period=period)

    assert shown_budget["period_start"] == shown(start)
    assert shown_budget["period_end"] == shown(end)
    budget = Budget.objects.get(pk=shown_budget["id"])
    assert (budget.period_start, budget.period_end) == (start, end)


@time_machine.travel(MAY_17, tick=False)
def test_a_minimal_creation_takes_the_defaults_and_is_audited(owner):
    response = owner.client.post(
        BUDGETS, {"type": "DISCOUNT", "period": "MONTHLY", "limit_cents": 20_000}, format="json"
    )

    assert response.status_code == 201, response.content
    budget = response.json()
    assert budget["currency"] == "USD"
    assert budget["spent_cents"] == 0
    assert budget["remaining_cents"] == 20_000
    assert budget["alert_thresholds"] == []
    assert budget["alerted_percentages"] == []
    assert budget["refund_limit_per_customer_cents"] is None
    assert budget["usage_records"] == []
    assert budget["created_by"]["id"] == str(owner.user.pk)
    assert owner.client.get(detail(budget["id"])).json() == budget
    event = events(owner.tenant, "budget.created").get()
    assert event.actor_id == owner.user.pk
    assert event.payload == {
        "budget_id": budget["id"],
        "type": "DISCOUNT",
        "period": "MONTHLY",
        "currency": "USD",
        "limit_cents": 20_000,
        "spent_cents": 0,
        "remaining_cents": 20_000,
        "period_start": "2026-05-01T00:00:00+00:00",
        "period_end": "2026-06-01T00:00:00+00:00",
    }
    assert not events(owner.tenant, "budget.period_rolled").exists()


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("MONTHLY", "2026-05-01T00:00:00Z", utc(2026, 6, 1)),
        ("MONTHLY", "2026-04-28T00:00:00Z", utc(2026, 5, 28)),
        ("QUARTERLY", "2026-04-15T09:30:00Z", utc(2026, 7, 15, 9, 30)),
        ("YEARLY", "2026-02-01T00:00:00Z", utc(2027, 2, 1)),
        # Another offset, read in UTC: 2026-05-09T22:00Z.
        ("MONTHLY", "2026-05-10T00:00:00+02:00", utc(2026, 6, 9, 22)),
        # A start after now: the budget waits for it.
        ("MONTHLY", "2026-06-05T00:00:00Z", utc(2026, 7, 5)),
    ],
    ids=["day-1", "day-28", "quarterly-day-15", "yearly", "offset", "future"],
)
@time_machine.travel(MAY_17, tick=False)
def test_a_period_start_on_day_1_to_28_is_kept_and_its_end_computed(owner, period, start, end):
    budget = created(owner, period=period, period_start=start)

    stored = Budget.objects.get(pk=budget["id"])
    assert stored.period_start == datetime.fromisoformat(start)
    assert stored.period_end == end
    assert budget["period_end"] == shown(end)
    assert not events(owner.tenant, "budget.period_rolled").exists()


@pytest.mark.parametrize(
    "start",
    ["2026-01-29T00:00:00Z", "2026-03-30T12:00:00Z", "2026-05-31T00:00:00Z"],
    ids=["day-29", "day-30", "day-31"],
)
@time_machine.travel(MAY_17, tick=False)
def test_a_period_start_on_day_29_to_31_is_400_naming_period_start(owner, start):
    error = assert_envelope(create(owner, period_start=start), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"period_start"}
    assert "day 1 to 28" in error["details"]["period_start"][0]
    assert not Budget.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize(
    ("period", "start", "end", "expected"),
    [
        ("MONTHLY", "2026-05-01T00:00:00Z", "2026-05-31T00:00:00Z", "2026-06-01T00:00:00+00:00"),
        ("MONTHLY", None, "2026-06-02T00:00:00Z", "2026-06-01T00:00:00+00:00"),
        ("QUARTERLY", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", "2026-07-01T00:00:00+00:00"),
        ("YEARLY", "2026-02-10T00:00:00Z", "2026-02-10T00:00:00Z", "2027-02-10T00:00:00+00:00"),
    ],
    ids=["monthly-short", "calendar-default", "quarterly-as-monthly", "yearly-empty"],
)
@time_machine.travel(MAY_17, tick=False)
def test_a_period_end_other_than_the_next_periods_start_is_400_naming_period_end(
    owner, period, start, end, expected
):
    overrides = {"period": period, "period_end": end}
    if start is not None:
        overrides["period_start"] = start

    error = assert_envelope(create(owner, **overrides), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"period_end"}
    assert expected in error["details"]["period_end"][0]
    assert not Budget.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("MONTHLY", "2026-05-10T00:00:00Z", "2026-06-10T00:00:00Z"),
        ("MONTHLY", None, "2026-06-01T00:00:00Z"),
        ("QUARTERLY", "2026-04-15T00:00:00Z", "2026-07-15T02:00:00+02:00"),
    ],
    ids=["explicit", "calendar-default", "same-instant-other-offset"],
)
@time_machine.travel(MAY_17, tick=False)
def test_a_period_end_matching_the_computed_one_is_accepted(owner, period, start, end):
    overrides = {"period": period, "period_end": end}
    if start is not None:
        overrides["period_start"] = start

    budget = created(owner, **overrides)

    assert Budget.objects.get(pk=budget["id"]).period_end == datetime.fromisoformat(end)


@pytest.mark.parametrize(
    ("period", "start", "rolled_start", "rolled_end"),
    [
        ("MONTHLY", utc(2025, 11, 10), utc(2026, 5, 10), utc(2026, 6, 10)),
        ("QUARTERLY", utc(2024, 1, 20), utc(2026, 4, 20), utc(2026, 7, 20)),
        ("YEARLY", utc(2020, 6, 1), utc(2025, 6, 1), utc(2026, 6, 1)),
    ],
    ids=["monthly", "quarterly", "yearly"],
)
@time_machine.travel(MAY_17, tick=False)
def test_a_start_far_in_the_past_is_rolled_to_the_period_holding_now_and_audited(
    owner, period, start, rolled_start, rolled_end
):
    budget = created(owner, period=period, period_start=start.isoformat())

    assert budget["period_start"] == shown(rolled_start)
    assert budget["period_end"] == shown(rolled_end)
    assert budget["spent_cents"] == 0
    assert events(owner.tenant, "budget.created").count() == 1
    rolled = events(owner.tenant, "budget.period_rolled").get()
    assert rolled.actor_id == owner.user.pk
    assert rolled.payload["closed_period_start"] == start.isoformat()
    assert rolled.payload["closed_spent_cents"] == 0
    assert rolled.payload["period_start"] == rolled_start.isoformat()
    assert rolled.payload["period_end"] == rolled_end.isoformat()


def test_a_period_ending_exactly_now_is_rolled_and_one_ending_a_second_later_is_not(owner):
    with time_machine.travel(utc(2026, 5, 1), tick=False):
        ended = created(owner, period_start="2026-04-01T00:00:00Z")
        current = created(owner, currency="EUR", period_start="2026-04-01T00:00:01Z")

    assert ended["period_start"] == shown(utc(2026, 5, 1))
    assert current["period_start"] == shown(utc(2026, 4, 1, 0, 0, 1))
    assert events(owner.tenant, "budget.period_rolled").count() == 1


# Creation: type, currency, amounts, thresholds ---------------------------------------------------


def test_a_lower_case_currency_is_upper_cased_and_counts_as_the_same(owner):
    budget = created(owner, currency="eur")

    assert budget["currency"] == "EUR"
    assert Budget.objects.get(pk=budget["id"]).currency == "EUR"
    assert_envelope(create(owner, currency="EUR"), 409, "CONFLICT")


@pytest.mark.parametrize(
    "currency",
    ["ABC", "US", "USDX", "", "U$D", 840, None],
    ids=["unknown", "short", "long", "empty", "symbol", "number", "null"],
)
def test_a_currency_that_is_not_an_iso_code_is_400(owner, currency):
    error = assert_envelope(create(owner, currency=currency), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"currency"}
    assert not Budget.objects.filter(tenant=owner.tenant).exists()


def test_a_second_budget_of_a_type_and_currency_is_409_naming_type(owner):
    first = created(owner)

    error = assert_envelope(create(owner, limit_cents=1), 409, "CONFLICT")

    assert set(error["details"]) == {"type"}
    assert "USD" in error["message"]
    assert list(Budget.objects.filter(tenant=owner.tenant).values_list("id", flat=True)) == [
        uuid.UUID(first["id"])
    ]


def test_the_same_type_in_another_currency_or_another_type_or_tenant_is_another_budget(
    owner, make_caller
):
    created(owner)

    created(owner, currency="EUR")
    created(owner, type="CREDIT")
    created(make_caller(Role.OWNER))

    assert Budget.objects.filter(tenant=owner.tenant).count() == 3


def test_thresholds_are_sorted_and_enabled_by_default(owner):
    given = [{"percentage": 80}, {"percentage": 50, "enabled": False}, {"percentage": 100}]

    budget = created(owner, alert_thresholds=given)

    expected = [
        {"percentage": 50, "enabled": False},
        {"percentage": 80, "enabled": True},
        {"percentage": 100, "enabled": True},
    ]
    assert budget["alert_thresholds"] == expected
    assert Budget.objects.get(pk=budget["id"]).alert_thresholds == expected


def test_ten_thresholds_from_1_to_100_are_accepted(owner):
    percentages = [1, 10, 20, 30, 40, 50, 60, 70, 80, 100]

    budget = created(owner, alert_thresholds=[{"percentage": p} for p in percentages])

    assert [t["percentage"] for t in budget["alert_thresholds"]] == percentages


@pytest.mark.parametrize(
    "value",
    [
        [{"percentage": 0}],
        [{"percentage": 101}],
        [{"percentage": -5}],
        [{"percentage": 50.5}],
        [{"enabled": True}],
        [{"percentage": 50}, {"percentage": 50, "enabled": False}],
        [{"percentage": p} for p in range(5, 60, 5)],
        [{"percentage": 50, "notify": "email"}],
        [{"percentage": 50, "enabled": "yes"}],
        [50],
        {"percentage": 50},
        None,
    ],
    ids=[
        "zero",
        "over-100",
        "negative",
        "fraction",
        "no-percentage",
        "duplicate",
        "eleven",
        "unknown-key",
        "enabled-not-boolean",
        "item-not-object",
        "not-a-list",
        "null",
    ],
)
def test_an_invalid_threshold_list_is_400(owner, value):
    error = assert_envelope(create(owner, alert_thresholds=value), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"alert_thresholds"}
    assert not Budget.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize("limit", [0, 1, MONEY_MAX], ids=["zero", "one", "money-max"])
def test_a_limit_from_0_to_the_json_safe_maximum_is_accepted(owner, limit):
    assert created(owner, limit_cents=limit)["remaining_cents"] == limit


def test_a_budget_of_the_json_safe_maximum_can_be_drawn_whole_and_alerts(owner):
    budget = created(owner, limit_cents=MONEY_MAX, alert_thresholds=[{"percentage": 100}])

    drawn(owner, budget["id"], MONEY_MAX)

    assert owner.client.get(detail(budget["id"])).json()["remaining_cents"] == 0
    assert alerts(owner.tenant) == [100]
    usage = events(owner.tenant, "budget.usage_recorded").get()
    assert usage.payload["amount_cents"] == MONEY_MAX


def test_a_limit_over_the_json_safe_maximum_is_400_in_a_patch_too(owner):
    budget = compensation(owner.tenant)

    for value in (MONEY_MAX + 1, -1):
        error = assert_envelope(
            owner.client.patch(detail(budget), {"limit_cents": value}, format="json"), 400
        )
        assert set(error["details"]) == {"limit_cents"}

    assert fresh(budget).limit_cents == 10_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("limit_cents", -1),
        ("limit_cents", MONEY_MAX + 1),
        ("limit_cents", 2**63),
        ("limit_cents", 1.5),
        ("limit_cents", "lots"),
        ("limit_cents", None),
        ("refund_limit_per_customer_cents", -1),
        ("refund_limit_per_customer_cents", MONEY_MAX + 1),
        ("type", "GIFT"),
        ("period", "WEEKLY"),
        ("period", "monthly"),
        ("period_start", "next monday"),
    ],
    ids=[
        "limit-negative",
        "limit-over-money-max",
        "limit-over-bigint",
        "limit-fraction",
        "limit-text",
        "limit-null",
        "customer-limit-negative",
        "customer-limit-over-money-max",
        "type-unknown",
        "period-unknown",
        "period-lower-case",
        "period-start-not-a-time",
    ],
)
def test_an_invalid_value_is_400_naming_its_field(owner, field, value):
    error = assert_envelope(create(owner, **{field: value}), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {field}


@pytest.mark.parametrize("field", ["type", "period", "limit_cents"])
def test_type_period_and_limit_are_required(owner, field):
    data = body()
    del data[field]

    error = assert_envelope(owner.client.post(BUDGETS, data, format="json"), 400)

    assert set(error["details"]) == {field}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("spent_cents", 0),
        ("remaining_cents", 10_000),
        ("alerted_percentages", []),
        ("id", "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"),
        ("created_at", "2026-05-01T00:00:00Z"),
        ("usage_records", []),
    ],
    ids=["spent", "remaining", "alerted", "id", "created_at", "usage_records"],
)
def test_a_server_kept_key_in_a_create_body_is_400_naming_it(owner, key, value):
    error = assert_envelope(create(owner, **{key: value}), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {key}
    assert error["details"][key][0].startswith("Unknown field.")
    assert not Budget.objects.filter(tenant=owner.tenant).exists()


def test_another_tenants_budget_is_404_on_every_route(owner):
    foreign = compensation(TenantFactory())
    random_id = uuid.uuid4()

    answers = [
        owner.client.get(detail(foreign)),
        owner.client.patch(detail(foreign), {"limit_cents": 1}, format="json"),
        owner.client.put(detail(foreign), {"limit_cents": 1}, format="json"),
        owner.client.delete(detail(foreign)),
        draw(owner, foreign, 100),
    ]

    messages = {assert_envelope(response, 404)["message"] for response in answers}
    assert messages == {assert_envelope(owner.client.get(detail(random_id)), 404)["message"]}
    assert fresh(foreign).limit_cents == 10_000
    assert fresh(foreign).spent_cents == 0
    assert not events(foreign.tenant, "budget.updated").exists()


# Updates -----------------------------------------------------------------------------------------


def test_patch_changes_the_limits_and_thresholds_and_records_what_changed(owner):
    budget = compensation(owner.tenant, alert_thresholds=[])

    response = owner.client.patch(
        detail(budget),
        {
            "limit_cents": 25_000,
            "alert_thresholds": [{"percentage": 90}, {"percentage": 75, "enabled": False}],
            "refund_limit_per_customer_cents": 2_000,
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    shown_budget = response.json()
    assert shown_budget["limit_cents"] == 25_000
    assert shown_budget["remaining_cents"] == 25_000
    assert shown_budget["alert_thresholds"] == thresholds(75, 90, disabled=(75,))
    assert shown_budget["refund_limit_per_customer_cents"] == 2_000
    event = events(owner.tenant, "budget.updated").get()
    assert event.actor_id == owner.user.pk
    assert event.payload["changed"] == [
        "alert_thresholds",
        "limit_cents",
        "refund_limit_per_customer_cents",
    ]
    assert event.payload["limit_cents"] == 25_000


def test_a_null_per_customer_limit_means_no_limit(owner):
    budget = compensation(owner.tenant, refund_limit_per_customer_cents=1_000)
    customer = CustomerProfileFactory(tenant=owner.tenant)
    assert_envelope(draw(owner, budget, 1_500, customer_id=str(customer.pk)), 409)

    response = owner.client.patch(
        detail(budget), {"refund_limit_per_customer_cents": None}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["refund_limit_per_customer_cents"] is None
    drawn(owner, budget, 1_500, customer_id=str(customer.pk))
    drawn(owner, budget, 5_000, customer_id=str(customer.pk))
    assert fresh(budget).spent_cents == 6_500


@time_machine.travel(MAY_17, tick=False)
def test_a_period_change_keeps_period_start_and_recomputes_period_end(owner):
    budget = created(owner, period_start="2026-05-10T00:00:00Z")
    drawn(owner, budget["id"], 2_000)

    ends = {}
    for period in ("QUARTERLY", "YEARLY", "MONTHLY"):
        response = owner.client.patch(detail(budget["id"]), {"period": period}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["period_start"] == shown(utc(2026, 5, 10))
        assert response.json()["spent_cents"] == 2_000
        ends[period] = response.json()["period_end"]

    assert ends == {
        "QUARTERLY": shown(utc(2026, 8, 10)),
        "YEARLY": shown(utc(2027, 5, 10)),
        "MONTHLY": shown(utc(2026, 6, 10)),
    }
    changed = [e.payload["changed"] for e in events(owner.tenant, "budget.updated")]
    assert changed == [["period", "period_end"]] * 3
    assert not events(owner.tenant, "budget.period_rolled").exists()


@time_machine.travel(MAY_17, tick=False)
def test_shortening_the_period_never_lets_the_current_period_pass_its_limit(owner):
    budget = created(owner, period="QUARTERLY", period_start="2026-04-01T00:00:00Z")
    drawn(owner, budget["id"], 6_000)  # on May 17

    # A month from April 1 would have ended May 1: rolling at once would forget the 6,000.
    response = owner.client.patch(detail(budget["id"]), {"period": "MONTHLY"}, format="json")

    assert "period" in assert_envelope(response, 409, "CONFLICT")["details"]
    stored = Budget.objects.get(pk=budget["id"])
    assert (stored.period, stored.spent_cents) == ("QUARTERLY", 6_000)
    assert_envelope(draw(owner, budget["id"], 10_000), 409, "CONFLICT")


@pytest.mark.parametrize(
    ("key", "value"),
    [("type", "CREDIT"), ("currency", "EUR"), ("period_start", "2026-01-01T00:00:00Z")],
    ids=["type", "currency", "period_start"],
)
def test_type_currency_and_period_start_cannot_be_changed(owner, key, value):
    budget = compensation(owner.tenant)

    for method in (owner.client.patch, owner.client.put):
        error = assert_envelope(method(detail(budget), {key: value}, format="json"), 400)
        assert error["details"] == {key: ["This field is read-only."]}

    assert getattr(fresh(budget), key) == getattr(budget, key)
    assert not events(owner.tenant, "budget.updated").exists()


def test_the_shown_document_put_back_with_a_new_limit_is_accepted(owner):
    budget = compensation(owner.tenant)
    drawn(owner, budget, 1_000)
    document = owner.client.get(detail(budget)).json()

    response = owner.client.put(detail(budget), {**document, "limit_cents": 4_000}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["limit_cents"] == 4_000
    assert response.json()["remaining_cents"] == 3_000
    assert response.json()["usage_records"] == document["usage_records"]
    assert events(owner.tenant, "budget.updated").get().payload["changed"] == ["limit_cents"]


def test_figures_the_server_keeps_sent_back_in_a_patch_are_ignored(owner):
    budget = compensation(owner.tenant, alert_thresholds=thresholds(50))
    drawn(owner, budget, 6_000)
    before = owner.client.get(detail(budget)).json()

    response = owner.client.patch(
        detail(budget),
        {
            "spent_cents": 0,
            "remaining_cents": 10_000,
            "alerted_percentages": [],
            "period_end": "2030-01-01T00:00:00Z",
            "updated_at": "2020-01-01T00:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    after = fresh(budget)
    assert after.spent_cents == 6_000
    assert after.alerted_percentages == [50]
    assert shown(after.period_end) == before["period_end"]
    assert not events(owner.tenant, "budget.updated").exists()


def test_an_update_that_changes_nothing_records_nothing(owner):
    budget = compensation(owner.tenant)

    response = owner.client.patch(
        detail(budget), {"limit_cents": 10_000, "period": "MONTHLY"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert not events(owner.tenant, "budget.updated").exists()


def test_lowering_the_limit_below_spent_leaves_nothing_and_fires_the_thresholds_reached(owner):
    budget = compensation(owner.tenant, alert_thresholds=thresholds(50, 80, 100))
    drawn(owner, budget, 4_000)
    assert alerts(owner.tenant) == []

    response = owner.client.patch(detail(budget), {"limit_cents": 3_000}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["spent_cents"] == 4_000
    assert response.json()["remaining_cents"] == 0
    assert response.json()["alerted_percentages"] == [50, 80, 100]
    assert alerts(owner.tenant) == [50, 80, 100]
    payload = events(owner.tenant, "budget.threshold_reached").filter(payload__percentage=100)
    assert payload.get().payload["limit_cents"] == 3_000
    error = assert_envelope(draw(owner, budget, 1), 409, "CONFLICT")
    assert error["details"]["remaining_cents"] == 0


def test_a_threshold_already_alerted_is_not_alerted_again_after_an_update(owner):
    budget = compensation(owner.tenant, alert_thresholds=thresholds(50))
    drawn(owner, budget, 5_000)
    assert alerts(owner.tenant) == [50]

    owner.client.patch(detail(budget), {"limit_cents": 9_000}, format="json")
    response = owner.client.patch(
        detail(budget), {"alert_thresholds": thresholds(50, 55)}, format="json"
    )

    assert response.status_code == 200, response.content
    assert alerts(owner.tenant) == [50, 55]
    assert response.json()["alerted_percentages"] == [50, 55]


def test_raising_the_limit_does_not_re_arm_a_threshold_within_the_period(owner):
    budget = compensation(owner.tenant, alert_thresholds=thresholds(50))
    drawn(owner, budget, 5_000)
    owner.client.patch(detail(budget), {"limit_cents": 20_000}, format="json")

    drawn(owner, budget, 6_000)

    assert fresh(budget).spent_cents == 11_000
    assert alerts(owner.tenant) == [50]


def test_a_new_threshold_already_passed_alerts_at_once(owner):
    budget = compensation(owner.tenant, alert_thresholds=[])
    drawn(owner, budget, 7_000)

    owner.client.patch(detail(budget), {"alert_thresholds": thresholds(60, 90)}, format="json")

    assert alerts(owner.tenant) == [60]
    assert fresh(budget).alerted_percentages == [60]


def test_deleting_a_budget_takes_its_records_keeps_refunds_and_is_audited(owner):
    budget = compensation(owner.tenant)
    drawn(owner, budget, 1_000)
    refund = RefundFactory(tenant=owner.tenant, budget=budget, amount_cents=2_500)

    response = owner.client.delete(detail(budget))

    assert response.status_code == 204, response.content
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert not BudgetUsageRecord.objects.filter(budget_id=budget.pk).exists()
    refund = fresh(refund)
    assert refund.budget_id is None
    assert refund.amount_cents == 2_500
    event = events(owner.tenant, "budget.deleted").get()
    assert event.payload["budget_id"] == str(budget.pk)
    assert event.payload["spent_cents"] == 1_000
    assert event.actor_id == owner.user.pk


# Usage records -----------------------------------------------------------------------------------


@pytest.mark.parametrize("budget_type", ["COMPENSATION", "DISCOUNT", "CREDIT"])
def test_a_draw_is_recorded_in_the_period_and_audited(owner, budget_type):
    budget = compensation(owner.tenant, type=budget_type)
    customer = CustomerProfileFactory(tenant=owner.tenant)

    record = drawn(
        owner, budget, 2_500, customer_id=str(customer.pk), description="Outage goodwill"
    )

    assert record["budget_id"] == str(budget.pk)
    assert record["amount_cents"] == 2_500
    assert record["customer_id"] == str(customer.pk)
    assert record["customer"] == {
        "id": str(customer.pk),
        "name": customer.name,
        "email": customer.email,
        "tier": customer.tier,
    }
    assert record["refund_id"] is None
    assert record["description"] == "Outage goodwill"
    assert record["period_start"] == shown(budget.period_start)
    assert record["created_by"]["id"] == str(owner.user.pk)
    shown_budget = owner.client.get(detail(budget)).json()
    assert shown_budget["spent_cents"] == 2_500
    assert shown_budget["remaining_cents"] == 7_500
    assert shown_budget["usage_records"] == [record]
    event = events(owner.tenant, "budget.usage_recorded").get()
    assert event.actor_id == owner.user.pk
    assert event.payload["usage_record_id"] == record["id"]
    assert event.payload["amount_cents"] == 2_500
    assert event.payload["customer_id"] == str(customer.pk)
    assert event.payload["refund_id"] is None
    assert event.payload["spent_cents"] == 2_500
    assert event.payload["remaining_cents"] == 7_500


def test_a_draw_without_a_customer_is_recorded_without_one(owner):
    budget = compensation(owner.tenant)

    record = drawn(owner, budget, 100)

    assert record["customer_id"] is None
    assert record["customer"] is None
    assert record["description"] == ""


def test_the_detail_lists_the_records_newest_first(owner):
    budget = compensation(owner.tenant)
    records = [drawn(owner, budget, amount)["id"] for amount in (100, 200, 300)]

    shown_records = owner.client.get(detail(budget)).json()["usage_records"]

    assert [r["id"] for r in shown_records] == records[::-1]


def test_a_refund_budget_is_not_drawn_directly(owner):
    budget = compensation(owner.tenant, type="REFUND")

    error = assert_envelope(draw(owner, budget, 100), 409, "CONFLICT")

    assert error["details"] == {"budget_id": str(budget.pk), "type": "REFUND"}
    assert fresh(budget).spent_cents == 0
    assert not BudgetUsageRecord.objects.filter(budget=budget).exists()
    assert not events(owner.tenant, "budget.usage_recorded").exists()


def test_a_draw_beyond_what_remains_is_409_naming_what_remains(owner):
    budget = compensation(owner.tenant)
    drawn(owner, budget, 7_000)

    error = assert_envelope(draw(owner, budget, 3_001), 409, "CONFLICT")

    details = error["details"]
    assert details["remaining_cents"] == 3_000
    assert details["amount_cents"] == 3_001
    assert details["limit_cents"] == 10_000
    assert details["spent_cents"] == 7_000
    assert details["budget_id"] == str(budget.pk)
    assert fresh(budget).spent_cents == 7_000
    assert BudgetUsageRecord.objects.filter(budget=budget).count() == 1
    # Exactly what remains fits.
    drawn(owner, budget, 3_000)
    assert owner.client.get(detail(budget)).json()["remaining_cents"] == 0


def test_a_budget_of_limit_zero_refuses_every_draw(owner):
    budget = compensation(owner.tenant, limit_cents=0)

    error = assert_envelope(draw(owner, budget, 1), 409, "CONFLICT")

    assert error["details"]["remaining_cents"] == 0


def test_a_customers_draws_stop_at_the_per_customer_limit(owner):
    budget = compensation(owner.tenant, refund_limit_per_customer_cents=2_500)
    ada, bob = (CustomerProfileFactory(tenant=owner.tenant) for _ in range(2))
    drawn(owner, budget, 1_500, customer_id=str(ada.pk))

    error = assert_envelope(draw(owner, budget, 1_500, customer_id=str(ada.pk)), 409, "CONFLICT")

    details = error["details"]
    assert details["customer_id"] == str(ada.pk)
    assert details["customer_limit_cents"] == 2_500
    assert details["customer_spent_cents"] == 1_500
    assert details["customer_remaining_cents"] == 1_000
    assert details["remaining_cents"] == 8_500
    assert details["amount_cents"] == 1_500
    drawn(owner, budget, 1_000, customer_id=str(ada.pk))
    assert_envelope(draw(owner, budget, 1, customer_id=str(ada.pk)), 409)
    # Another customer has their own allowance; a draw for nobody has none.
    drawn(owner, budget, 2_500, customer_id=str(bob.pk))
    drawn(owner, budget, 3_000)
    assert fresh(budget).spent_cents == 8_000


def test_a_customer_of_another_tenant_is_refused_like_a_random_id(owner):
    budget = compensation(owner.tenant)
    foreign = CustomerProfileFactory(tenant=TenantFactory())

    answers = [
        assert_envelope(draw(owner, budget, 100, customer_id=value), 400, "VALIDATION_ERROR")
        for value in (str(foreign.pk), str(uuid.uuid4()))
    ]

    assert answers[0]["details"] == answers[1]["details"]
    assert set(answers[0]["details"]) == {"customer_id"}
    assert fresh(budget).spent_cents == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"amount_cents": 0},
        {"amount_cents": -100},
        {"amount_cents": MONEY_MAX + 1},
        {"amount_cents": "ten"},
        {"amount_cents": None},
        {"amount_cents": 100, "customer_id": "not-a-uuid"},
        {"amount_cents": 100, "description": "x" * 501},
        {"amount_cents": 100, "refund_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"},
    ],
    ids=[
        "zero",
        "negative",
        "over-money-max",
        "text",
        "null",
        "customer-not-uuid",
        "description-too-long",
        "unknown-key",
    ],
)
def test_an_invalid_draw_body_is_400(owner, extra):
    budget = compensation(owner.tenant)

    error = assert_envelope(
        owner.client.post(usage_url(budget), extra, format="json"), 400, "VALIDATION_ERROR"
    )

    assert error["details"]
    assert fresh(budget).spent_cents == 0


def test_an_idempotency_key_replays_the_first_answer_and_draws_once(owner):
    budget = compensation(owner.tenant)
    headers = {"HTTP_IDEMPOTENCY_KEY": "goodwill-4711"}

    first = draw(owner, budget, 1_200, headers=headers, description="Goodwill")
    again = draw(owner, budget, 1_200, headers=headers, description="Goodwill")

    assert first.status_code == again.status_code == 201, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert fresh(budget).spent_cents == 1_200
    assert BudgetUsageRecord.objects.filter(budget=budget).count() == 1
    assert events(owner.tenant, "budget.usage_recorded").count() == 1


def test_a_refused_draw_is_replayed_too(owner):
    budget = compensation(owner.tenant)
    headers = {"HTTP_IDEMPOTENCY_KEY": "too-much"}

    first = draw(owner, budget, 20_000, headers=headers)
    owner.client.patch(detail(budget), {"limit_cents": 50_000}, format="json")
    again = draw(owner, budget, 20_000, headers=headers)

    assert first.status_code == again.status_code == 409
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["error"]["details"] == first.json()["error"]["details"]
    assert fresh(budget).spent_cents == 0


def test_the_same_idempotency_key_with_another_body_is_422(owner):
    budget = compensation(owner.tenant)
    headers = {"HTTP_IDEMPOTENCY_KEY": "goodwill-4712"}
    draw(owner, budget, 1_200, headers=headers)

    response = draw(owner, budget, 1_300, headers=headers)

    assert_envelope(response, 422, "IDEMPOTENCY_KEY_REUSED")
    assert fresh(budget).spent_cents == 1_200


# Alerts ------------------------------------------------------------------------------------------


def test_crossing_two_thresholds_in_one_draw_alerts_each_once(owner):
    budget = compensation(owner.tenant, alert_thresholds=thresholds(50, 80, 100))

    record = drawn(owner, budget, 8_500)

    assert alerts(owner.tenant) == [50, 80]
    event = events(owner.tenant, "budget.threshold_reached").get(payload__percentage=80)
    assert event.actor_id == owner.user.pk
    assert event.payload == {
        "budget_id": str(budget.pk),
        "type": "COMPENSATION",
        "period": "MONTHLY",
        "currency": "USD",
        "limit_cents": 10_000,
        "spent_cents": 8_500,
        "remaining_cents": 1_500,
        "period_start": budget.period_start.isoformat(),
        "period_end": budget.period_end.isoformat(),
        "percentage": 80,
    }
    assert record["amount_cents"] == 8_500
    drawn(owner, budget, 500)
    assert alerts(owner.tenant) == [50, 80]
    drawn(owner, budget, 1_000)
    assert alerts(owner.tenant) == [50, 80, 100]
    assert fresh(budget).alerted_percentages == [50, 80, 100]


def test_a_threshold_is_reached_when_spent_is_its_share_of_the_limit_or_more(owner):
    exact = compensation(owner.tenant, alert_thresholds=thresholds(50))
    drawn(owner, exact, 4_999)
    assert alerts(owner.tenant) == []
    drawn(owner, exact, 1)
    assert alerts(owner.tenant) == [50]
    thirds = compensation(
        owner.tenant, type="CREDIT", limit_cents=3, alert_thresholds=thresholds(66, 67)
    )

    drawn(owner, thirds, 2)

    # 2 of 3 is 66.7 %: 66 reached, 67 not.
    assert alerts(owner.tenant) == [50, 66]


def test_a_disabled_threshold_never_fires(owner):
    budget = compensation(owner.tenant, alert_thresholds=thresholds(50, 80, disabled=(50,)))

    drawn(owner, budget, 10_000)

    assert alerts(owner.tenant) == [80]
    assert fresh(budget).alerted_percentages == [80]


def test_after_a_roll_the_same_threshold_fires_again(owner):
    with time_machine.travel(MAY_17, tick=False):
        budget = compensation(owner.tenant, alert_thresholds=thresholds(50))
        drawn(owner, budget, 6_000)
        drawn(owner, budget, 1_000)
    with time_machine.travel(JUNE_3, tick=False):
        drawn(owner, budget, 6_000)

    reached = events(owner.tenant, "budget.threshold_reached").order_by("created_at")
    assert [e.payload["period_start"] for e in reached] == [
        "2026-05-01T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00",
    ]
    assert fresh(budget).alerted_percentages == [50]


def test_billing_and_admin_members_are_notified_and_a_plain_member_is_not(owner):
    billing = MembershipFactory(tenant=owner.tenant, role=Role.BILLING)
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    MembershipFactory(tenant=owner.tenant, role=Role.MEMBER)
    MembershipFactory(tenant=owner.tenant, role=Role.VIEWER)
    MembershipFactory(tenant=TenantFactory(), role=Role.ADMIN)
    budget = compensation(owner.tenant, alert_thresholds=thresholds(50, 80))

    drawn(owner, budget, 8_000)

    notices = Notification.objects.filter(
        event_type="budget.threshold_reached", channel=Channel.IN_APP
    )
    assert sorted(notices.values_list("recipient_id", flat=True)) == sorted(
        [billing.user_id, billing.user_id, admin.user_id, admin.user_id]
    )
    assert set(notices.values_list("tenant_id", flat=True)) == {owner.tenant.pk}
    assert {n.title for n in notices} == {
        "COMPENSATION budget at 50%",
        "COMPENSATION budget at 80%",
    }
    notice = notices.filter(title="COMPENSATION budget at 80%", recipient=billing.user).get()
    assert notice.message.startswith("8000 of 10000 cents (USD) spent this period; 2000 left until")
    # A draw below any new threshold notifies nobody.
    drawn(owner, budget, 500)
    assert notices.count() == 4


# Periods and the roll ----------------------------------------------------------------------------


def test_a_draw_after_period_end_lands_in_the_next_period(owner):
    with time_machine.travel(MAY_17, tick=False):
        budget = created(owner)
        may = drawn(owner, budget["id"], 3_000)
    with time_machine.travel(JUNE_3, tick=False):
        june = drawn(owner, budget["id"], 1_000)
        shown_budget = owner.client.get(detail(budget["id"])).json()

    assert may["period_start"] == shown(utc(2026, 5, 1))
    assert june["period_start"] == shown(utc(2026, 6, 1))
    assert shown_budget["period_start"] == shown(utc(2026, 6, 1))
    assert shown_budget["period_end"] == shown(utc(2026, 7, 1))
    assert shown_budget["spent_cents"] == 1_000
    assert shown_budget["remaining_cents"] == 9_000
    # The past period's record is kept, not shown.
    assert [r["id"] for r in shown_budget["usage_records"]] == [june["id"]]
    assert BudgetUsageRecord.objects.filter(budget_id=budget["id"]).count() == 2
    rolled = events(owner.tenant, "budget.period_rolled").get()
    assert rolled.payload["closed_period_start"] == "2026-05-01T00:00:00+00:00"
    assert rolled.payload["closed_spent_cents"] == 3_000
    assert rolled.payload["spent_cents"] == 0


def test_the_per_customer_limit_starts_afresh_each_period(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    with time_machine.travel(MAY_17, tick=False):
        budget = created(owner, refund_limit_per_customer_cents=1_000)
        drawn(owner, budget["id"], 1_000, customer_id=str(customer.pk))
        assert_envelope(draw(owner, budget["id"], 1, customer_id=str(customer.pk)), 409)
    with time_machine.travel(JUNE_3, tick=False):
        drawn(owner, budget["id"], 1_000, customer_id=str(customer.pk))


def test_the_beat_rolls_each_due_budget_once(owner):
    with time_machine.travel(MAY_17, tick=False):
        due = compensation(owner.tenant, alert_thresholds=thresholds(50))
        drawn(owner, due, 6_000)
        foreign_due = compensation(TenantFactory())
        yearly = compensation(
            owner.tenant,
            currency="EUR",
            period="YEARLY",
            period_start=utc(2026, 1, 1),
            period_end=utc(2027, 1, 1),
        )

    with time_machine.travel(JUNE_3, tick=False):
        assert budgets_roll() == 2
        assert budgets_roll() == 0

    due = fresh(due)
    assert (due.period_start, due.period_end) == (utc(2026, 6, 1), utc(2026, 7, 1))
    assert due.spent_cents == 0
    assert due.alerted_percentages == []
    assert BudgetUsageRecord.objects.filter(budget=due).count() == 1
    assert fresh(foreign_due).period_start == utc(2026, 6, 1)
    assert fresh(yearly).period_start == utc(2026, 1, 1)
    rolled = events(owner.tenant, "budget.period_rolled").get()
    assert rolled.actor_id is None
    assert rolled.payload["closed_spent_cents"] == 6_000


def test_the_beat_skips_idle_periods_to_the_one_holding_now(owner):
    with time_machine.travel(utc(2026, 1, 20), tick=False):
        budget = created(owner, period_start="2026-01-10T00:00:00Z")

    assert budgets_roll(now=MAY_17) == 1

    budget = Budget.objects.get(pk=budget["id"])
    assert (budget.period_start, budget.period_end) == (utc(2026, 5, 10), utc(2026, 6, 10))
    rolled = events(owner.tenant, "budget.period_rolled").get()
    assert rolled.payload["closed_period_start"] == "2026-01-10T00:00:00+00:00"


def test_a_quarterly_budget_starting_on_day_15_keeps_day_15(owner):
    with time_machine.travel(utc(2026, 1, 20), tick=False):
        budget = created(owner, period="QUARTERLY", period_start="2026-01-15T08:00:00Z")

    starts = []
    for now in (utc(2026, 4, 15, 8), utc(2026, 9, 1), utc(2026, 11, 30)):
        budgets_roll(now=now)
        starts.append(Budget.objects.get(pk=budget["id"]).period_start)

    assert starts == [utc(2026, 4, 15, 8), utc(2026, 7, 15, 8), utc(2026, 10, 15, 8)]
    assert Budget.objects.get(pk=budget["id"]).period_end == utc(2027, 1, 15, 8)


def test_the_roll_budgets_command_prints_how_many_rolled(owner):
    with time_machine.travel(MAY_17, tick=False):
        compensation(owner.tenant)
        compensation(owner.tenant, type="CREDIT")
    first, second = StringIO(), StringIO()

    with time_machine.travel(JUNE_3, tick=False):
        call_command("roll_budgets", stdout=first)
        call_command("roll_budgets", stdout=second)

    assert first.getvalue().strip() == "2 budget(s) rolled into their next period."
    assert second.getvalue().strip() == "0 budget(s) rolled into their next period."


def test_the_beat_task_rolls_and_returns_the_count(owner):
    with time_machine.travel(MAY_17, tick=False):
        budget = compensation(owner.tenant)

    with time_machine.travel(JUNE_3, tick=False):
        assert roll_budgets.apply().get() == 1
        assert roll_budgets.apply().get() == 0

    assert fresh(budget).period_start == utc(2026, 6, 1)
    schedule = settings.CELERY_BEAT_SCHEDULE["support.roll-budgets"]
    assert schedule["task"] == roll_budgets.name == "support.tasks.roll_budgets"


def test_a_budget_whose_first_period_is_ahead_refuses_draws_until_it_starts(owner):
    with time_machine.travel(MAY_17, tick=False):
        budget = created(owner, period_start="2026-06-05T00:00:00Z")
        error = assert_envelope(draw(owner, budget["id"], 100), 409, "CONFLICT")
        assert budgets_roll() == 0
    with time_machine.travel(utc(2026, 6, 5), tick=False):
        record = drawn(owner, budget["id"], 100)

    assert error["details"]["period_start"] == shown(utc(2026, 6, 5))
    assert record["period_start"] == shown(utc(2026, 6, 5))
    assert Budget.objects.get(pk=budget["id"]).spent_cents == 100


# Concurrency -------------------------------------------------------------------------------------


def _parallel_draws(caller, budget, *, attempts: int, amount_cents: int, **extra) -> list[int]:
    start = threading.Event()

    def post(_):
        try:
            client = caller.client_for(caller.tenant.pk)
            start.wait(timeout=30)
            response = client.post(
                usage_url(budget), {"amount_cents": amount_cents, **extra}, format="json"
            )
            return response.status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(post, n) for n in range(attempts)]
        start.set()
        return [future.result(timeout=120) for future in futures]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_draws_never_pass_the_limit_and_alert_once(make_caller):
    caller = make_caller(Role.BILLING)
    budget = compensation(caller.tenant, alert_thresholds=thresholds(50, 100))
    ada = CustomerProfileFactory(tenant=caller.tenant)
    limited = compensation(
        caller.tenant, type="CREDIT", limit_cents=100_000, refund_limit_per_customer_cents=3_000
    )

    statuses = _parallel_draws(caller, budget, attempts=20, amount_cents=1_000)
    for_ada = _parallel_draws(
        caller, limited, attempts=10, amount_cents=1_000, customer_id=str(ada.pk)
    )

    assert sorted(statuses) == [201] * 10 + [409] * 10
    budget = fresh(budget)
    assert budget.spent_cents == 10_000
    assert BudgetUsageRecord.objects.filter(budget=budget).count() == 10
    assert alerts(caller.tenant) == [50, 100]
    assert budget.alerted_percentages == [50, 100]
    assert sorted(for_ada) == [201] * 3 + [409] * 7
    assert fresh(limited).spent_cents == 3_000


# Who may do what ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.BILLING, Role.ADMIN], ids=str)
def test_the_support_team_and_billing_read_budgets(make_caller, role):
    caller = make_caller(role)
    budget = compensation(caller.tenant)

    assert listed(caller) == ids(budget)
    assert caller.client.get(detail(budget)).status_code == 200


def test_a_member_with_neither_billing_nor_support_read_sees_no_budget(make_caller):
    caller = make_caller(Role.DPO)
    budget = compensation(caller.tenant)

    assert_envelope(caller.client.get(BUDGETS), 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(caller.client.get(detail(budget)), 403, "INSUFFICIENT_PERMISSIONS")


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.DPO], ids=str)
def test_without_billing_write_a_member_changes_no_budget(make_caller, role):
    caller = make_caller(role)
    budget = compensation(caller.tenant)

    answers = [
        caller.client.post(BUDGETS, body(currency="EUR"), format="json"),
        caller.client.patch(detail(budget), {"limit_cents": 1}, format="json"),
        caller.client.put(detail(budget), {"limit_cents": 1}, format="json"),
        caller.client.delete(detail(budget)),
        draw(caller, budget, 100),
    ]

    for response in answers:
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert list(Budget.objects.filter(tenant=caller.tenant)) == [budget]
    assert fresh(budget).limit_cents == 10_000
    assert fresh(budget).spent_cents == 0


def test_billing_sets_budgets_and_draws_from_them(make_caller):
    caller = make_caller(Role.BILLING)

    budget = created(caller, alert_thresholds=[{"percentage": 80}])
    patched = caller.client.patch(detail(budget["id"]), {"limit_cents": 5_000}, format="json")
    record = drawn(caller, budget["id"], 4_000)
    deleted = caller.client.delete(detail(budget["id"]))

    assert patched.status_code == 200, patched.content
    assert record["created_by"]["id"] == str(caller.user.pk)
    assert deleted.status_code == 204, deleted.content
    assert alerts(caller.tenant) == [80]


def test_an_api_key_with_the_read_scope_reads_budgets_and_writes_none(owner):
    budget = compensation(owner.tenant)
    _, raw = issue_api_key(owner.membership, scopes=("read",))
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw, HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk))

    response = client.get(BUDGETS)

    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == ids(budget)
    assert client.get(detail(budget)).status_code == 200
    assert_envelope(
        client.post(BUDGETS, body(currency="EUR"), format="json"), 403, "INSUFFICIENT_PERMISSIONS"
    )
    assert_envelope(
        client.post(usage_url(budget), {"amount_cents": 1}, format="json"),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )


# The admin ---------------------------------------------------------------------------------------


@pytest.fixture
def admin_client():
    client = Client()
    client.user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(client.user)
    return client


def test_staff_see_the_budgets_and_their_usage_records_in_the_admin(owner, admin_client):
    budget = compensation(owner.tenant)
    drawn(owner, budget, 1_234, description="Refund of the outage week")

    changelist = admin_client.get("/admin/support/budget/")
    change = admin_client.get(f"/admin/support/budget/{budget.pk}/change/")

    assert changelist.status_code == 200
    assert str(budget.pk) in changelist.content.decode()
    assert change.status_code == 200
    assert "Refund of the outage week" in change.content.decode()


def test_an_admin_deletion_goes_through_the_service(owner, admin_client):
    budget = compensation(owner.tenant)
    drawn(owner, budget, 1_000)

    response = admin_client.post(f"/admin/support/budget/{budget.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert not BudgetUsageRecord.objects.filter(budget_id=budget.pk).exists()
    event = events(owner.tenant, "budget.deleted").get()
    assert event.actor_id == admin_client.user.pk


def test_the_admins_delete_selected_action_goes_through_the_service(owner, admin_client):
    budgets = [compensation(owner.tenant), compensation(owner.tenant, type="CREDIT")]

    response = admin_client.post(
        "/admin/support/budget/",
        {"action": "delete_selected", "_selected_action": ids(*budgets), "post": "yes"},
    )

    assert response.status_code == 302
    assert not Budget.objects.filter(tenant=owner.tenant).exists()
    assert events(owner.tenant, "budget.deleted").count() == 2


# Filters and ordering ----------------------------------------------------------------------------


def test_type_and_period_take_comma_lists_and_currency_any_case(owner):
    t = owner.tenant
    refund = BudgetFactory(tenant=t, type="REFUND", currency="USD", period="MONTHLY")
    credit = BudgetFactory(tenant=t, type="CREDIT", currency="EUR", period="QUARTERLY")
    discount = BudgetFactory(tenant=t, type="DISCOUNT", currency="USD", period="YEARLY")
    BudgetFactory(tenant=TenantFactory(), type="CREDIT", currency="EUR", period="QUARTERLY")

    assert listed(owner, type="CREDIT") == ids(credit)
    assert sorted(listed(owner, type="CREDIT,REFUND")) == sorted(ids(credit, refund))
    assert listed(owner, type="COMPENSATION") == []
    assert sorted(listed(owner, period="MONTHLY,YEARLY")) == sorted(ids(refund, discount))
    assert sorted(listed(owner, currency="usd")) == sorted(ids(refund, discount))
    assert listed(owner, currency="Eur") == ids(credit)
    assert listed(owner, currency="usd", type="DISCOUNT,CREDIT") == ids(discount)


@pytest.mark.parametrize(
    "params",
    [{"type": "GIFT"}, {"type": "CREDIT,NOPE"}, {"period": "monthly"}, {"currency": "DOLLARS"}],
    ids=["type-unknown", "type-one-unknown", "period-lower-case", "currency-too-long"],
)
def test_an_invalid_filter_value_is_400(owner, params):
    compensation(owner.tenant)

    error = assert_envelope(owner.client.get(BUDGETS, params), 400)

    assert set(params) <= set(error["details"])


def test_ordering_by_limit_spent_and_period_end(owner):
    t = owner.tenant
    small = compensation(t, type="REFUND", limit_cents=1_000)
    large = compensation(t, type="CREDIT", limit_cents=50_000)
    middle = compensation(t, type="DISCOUNT", limit_cents=20_000)
    drawn(owner, large, 100)
    drawn(owner, middle, 5_000)
    Budget.objects.filter(pk=small.pk).update(period_end=utc(2099, 1, 1))

    assert listed(owner, ordering="limit_cents") == ids(small, middle, large)
    assert listed(owner, ordering="-spent_cents") == ids(middle, large, small)
    assert listed(owner, ordering="-period_end")[0] == str(small.pk)
    # By default: type, then currency.
    assert listed(owner) == ids(large, middle, small)
