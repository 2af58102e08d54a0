"""Plan-tier rate limits through the API, and the fixed-window counter under them
(config.throttling.hit, Window.from_rate) on Redis and on the local-memory cache.

The test settings raise every tier's `tenant` rate out of the way; each test here sets
API_PLAN_RATES itself (rates are read at call time)."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate

from config.metering import RateLimitState, Window, admit
from tenants.api import TenantContextViewSet
from tenants.models import PlanTier, Role, Tenant
from tenants.permissions import TENANT_MEMBER
from tenants.services.quotas import quota_states
from tests.conftest import assert_envelope

pytestmark = pytest.mark.django_db

ORG_URL = "/api/v1/organizations/current"
QUOTAS_URL = "/api/v1/organizations/quotas"
API_KEYS_URL = "/api/v1/api-keys/"

# 15:09:26 UTC: the hourly window ends at 16:00:00, 3034 s later; the minute one 34 s later.
NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
HOUR_END = int(datetime(2026, 3, 14, 16, 0, tzinfo=UTC).timestamp())
MINUTE_END = int(datetime(2026, 3, 14, 15, 10, tzinfo=UTC).timestamp())

LOW_RATES = {
    "free": {"tenant": "3/hour"},
    "pro": {"tenant": "10/hour", "analytics": "4/min"},
    "enterprise": {"tenant": "100/hour", "analytics": "6/min"},
    "custom": {"tenant": "100/hour"},
}


@pytest.fixture(autouse=True)
def frozen():
    """A fixed clock, so every request of a test falls in the same windows."""
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def low_rates(settings):
    settings.API_PLAN_RATES = LOW_RATES
    return settings


def tenant_of(plan: str, make_caller, members: int = 1, role=Role.VIEWER, **tenant_fields):
    """`members` callers with `role` in one new tenant on `plan`."""
    first = make_caller(role)
    Tenant.objects.filter(pk=first.tenant.pk).update(plan=plan, **tenant_fields)
    first.tenant.refresh_from_db()
    return [first] + [make_caller(role, tenant=first.tenant) for _ in range(members - 1)]


def limit_headers(response) -> tuple[int, int, int]:
    return (
        int(response["X-RateLimit-Limit"]),
        int(response["X-RateLimit-Remaining"]),
        int(response["X-RateLimit-Reset"]),
    )


def api_calls_used(tenant) -> int:
    return quota_states(Tenant.objects.get(pk=tenant.pk))["api_calls"].current


# The tenant's plan rate -----------------------------------------------------------------------


def test_fourth_request_of_a_free_tenant_is_refused_whichever_member_sends_it(
    low_rates, make_caller
):
    first, second = tenant_of(PlanTier.FREE, make_caller, members=2)

    answers = [caller.client.get(QUOTAS_URL) for caller in (first, second, first)]
    refused = second.client.get(QUOTAS_URL)

    assert [response.status_code for response in answers] == [200, 200, 200]
    assert [limit_headers(response) for response in answers] == [
        (3, 2, HOUR_END),
        (3, 1, HOUR_END),
        (3, 0, HOUR_END),
    ]
    error = assert_envelope(refused, 429, "RATE_LIMIT_EXCEEDED")
    assert limit_headers(refused) == (3, 0, HOUR_END)
    assert refused["Retry-After"] == str(HOUR_END - int(NOW.timestamp())) == "3034"
    assert error["details"]["retry_after_seconds"] == 3034


def test_refusal_reports_the_most_restrictive_window(low_rates, make_caller):
    """The caller's own window (100000/min in tests) has room; the tenant's is the one shown."""
    (caller,) = tenant_of(PlanTier.FREE, make_caller)
    for _ in range(3):
        caller.client.get(ORG_URL)

    refused = caller.client.get(QUOTAS_URL)

    assert_envelope(refused, 429, "RATE_LIMIT_EXCEEDED")
    assert limit_headers(refused) == (3, 0, HOUR_END)


def test_pro_tenant_is_not_refused_at_the_same_count(low_rates, make_caller):
    (free,) = tenant_of(PlanTier.FREE, make_caller)
    (pro,) = tenant_of(PlanTier.PRO, make_caller)

    free_answers = [free.client.get(QUOTAS_URL).status_code for _ in range(4)]
    pro_answers = [pro.client.get(QUOTAS_URL) for _ in range(4)]

    assert free_answers == [200, 200, 200, 429]
    assert [response.status_code for response in pro_answers] == [200] * 4
    assert limit_headers(pro_answers[-1]) == (10, 6, HOUR_END)


def test_each_tenant_has_its_own_window(low_rates, make_caller):
    (spent,) = tenant_of(PlanTier.FREE, make_caller)
    (fresh,) = tenant_of(PlanTier.FREE, make_caller)
    for _ in range(3):
        spent.client.get(ORG_URL)

    assert_envelope(spent.client.get(ORG_URL), 429, "RATE_LIMIT_EXCEEDED")
    response = fresh.client.get(ORG_URL)

    assert response.status_code == 200
    assert limit_headers(response) == (3, 2, HOUR_END)


def test_one_user_in_two_tenants_is_counted_in_each_tenant(low_rates, make_caller):
    (home,) = tenant_of(PlanTier.FREE, make_caller)
    (other,) = tenant_of(PlanTier.FREE, make_caller)
    other.membership.user = home.user
    other.membership.save()
    for _ in range(3):
        home.client.get(ORG_URL)

    elsewhere = home.client_for(other.tenant.pk).get(ORG_URL)

    assert elsewhere.status_code == 200, elsewhere.content
    assert limit_headers(elsewhere) == (3, 2, HOUR_END)


def test_rate_limit_per_hour_setting_lowers_the_tier_rate(low_rates, make_caller):
    (caller,) = tenant_of(PlanTier.FREE, make_caller, settings={"rateLimitPerHour": 2})

    answers = [caller.client.get(QUOTAS_URL) for _ in range(3)]

    assert [response.status_code for response in answers] == [200, 200, 429]
    assert limit_headers(answers[-1]) == (2, 0, HOUR_END)


def test_rate_limit_per_hour_setting_raises_the_tier_rate(low_rates, make_caller):
    (caller,) = tenant_of(PlanTier.FREE, make_caller, settings={"rateLimitPerHour": 5})

    answers = [caller.client.get(QUOTAS_URL).status_code for _ in range(6)]

    assert answers == [200] * 5 + [429]


def test_rate_change_in_settings_applies_to_the_next_request(low_rates, make_caller):
    (caller,) = tenant_of(PlanTier.FREE, make_caller)
    for _ in range(3):
        caller.client.get(QUOTAS_URL)
    assert_envelope(caller.client.get(QUOTAS_URL), 429, "RATE_LIMIT_EXCEEDED")

    Tenant.objects.filter(pk=caller.tenant.pk).update(settings={"rateLimitPerHour": 4})
    response = caller.client.get(QUOTAS_URL)

    assert response.status_code == 200, response.content
    assert limit_headers(response) == (4, 0, HOUR_END)


# A refused request uses up nothing ---------------------------------------------------------------


def test_refused_requests_consume_no_window_and_no_api_call(low_rates, make_caller):
    first, second = tenant_of(PlanTier.FREE, make_caller, members=2)
    for caller in (first, second, first):
        assert caller.client.get(QUOTAS_URL).status_code == 200
    for caller in (second, first, second):
        assert_envelope(caller.client.get(QUOTAS_URL), 429, "RATE_LIMIT_EXCEEDED")
    assert api_calls_used(first.tenant) == 3

    low_rates.API_PLAN_RATES = {**LOW_RATES, "free": {"tenant": "10/hour"}}
    response = first.client.get(QUOTAS_URL)

    assert response.status_code == 200, response.content
    # Four counted requests: the three refused ones left the shared window as it was.
    assert limit_headers(response) == (10, 6, HOUR_END)
    assert api_calls_used(first.tenant) == 4


def test_refusal_by_the_callers_window_leaves_the_tenants_window_untouched(low_rates, make_caller):
    low_rates.REST_FRAMEWORK = {
        **low_rates.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **low_rates.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "2/min",
        },
    }
    low_rates.API_PLAN_RATES = {**LOW_RATES, "free": {"tenant": "50/hour"}}
    chatty, quiet = tenant_of(PlanTier.FREE, make_caller, members=2)
    for _ in range(2):
        assert chatty.client.get(QUOTAS_URL).status_code == 200

    refused = chatty.client.get(QUOTAS_URL)
    low_rates.REST_FRAMEWORK = {
        **low_rates.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **low_rates.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "100/min",
        },
    }
    response = quiet.client.get(QUOTAS_URL)

    assert_envelope(refused, 429, "RATE_LIMIT_EXCEEDED")
    assert limit_headers(refused) == (2, 0, MINUTE_END)
    assert refused["Retry-After"] == "34"
    assert response.status_code == 200
    # quiet's own window: 99 left; the tenant's: 50 - 3 = 47, so the tenant's is shown.
    assert limit_headers(response) == (50, 47, HOUR_END)
    assert api_calls_used(quiet.tenant) == 3


# Headers ------------------------------------------------------------------------------------------


def test_every_successful_throttled_response_carries_the_headers(low_rates, make_caller):
    (caller,) = tenant_of(PlanTier.ENTERPRISE, make_caller, role=Role.OWNER)
    client = caller.client
    requests = [
        lambda: client.get(ORG_URL),
        lambda: client.patch(ORG_URL, {"description": "Counted"}, format="json"),
        lambda: client.get("/api/v1/auth/me"),
        lambda: client.get(API_KEYS_URL),
        lambda: client.get(f"/api/v1/tenants/{caller.tenant.slug}/"),
    ]

    responses = [send() for send in requests]

    for response in responses:
        assert response.status_code == 200, response.content
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            response.headers
        ), response.request["PATH_INFO"]
        assert "Retry-After" not in response.headers
    # The tenant-scoped ones share the tenant's window: 100 per hour, counted down.
    tenant_scoped = [limit_headers(r) for r in responses[:4]]
    assert tenant_scoped == [(100, 99, HOUR_END), (100, 98, HOUR_END), (100, 97, HOUR_END),
                             (100, 96, HOUR_END)]  # fmt: skip


# A tenant scope raised by the tier ---------------------------------------------------------------


class AnalyticsProbe(TenantContextViewSet):
    required_permissions = {"list": TENANT_MEMBER}
    throttle_scope = "analytics"

    def list(self, request):
        return Response({"ok": True})


def probe(caller):
    request = APIRequestFactory().get("/probe", HTTP_X_ORGANIZATION_ID=str(caller.tenant.pk))
    force_authenticate(request, user=caller.user)
    return AnalyticsProbe.as_view({"get": "list"})(request)


@pytest.fixture
def analytics_default(low_rates):
    low_rates.REST_FRAMEWORK = {
        **low_rates.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **low_rates.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "analytics": "2/min",
        },
    }
    return low_rates


def test_scope_rate_defaults_when_the_tier_does_not_raise_it(analytics_default, make_caller):
    first, second = tenant_of(PlanTier.FREE, make_caller, members=2)

    answers = [probe(caller) for caller in (first, second, first)]

    assert [response.status_code for response in answers] == [200, 200, 429]
    assert answers[-1].data["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert limit_headers(answers[-1]) == (2, 0, MINUTE_END)


@pytest.mark.parametrize(("plan", "limit"), [(PlanTier.PRO, 4), (PlanTier.ENTERPRISE, 6)])
def test_scope_rate_is_raised_by_the_tier(analytics_default, make_caller, plan, limit):
    first, second = tenant_of(plan, make_caller, members=2)

    answers = [probe((first, second)[i % 2]) for i in range(limit + 1)]

    assert [response.status_code for response in answers] == [200] * limit + [429]
    assert limit_headers(answers[limit - 1]) == (limit, 0, MINUTE_END)
    assert limit_headers(answers[-1]) == (limit, 0, MINUTE_END)


# Window.from_rate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "limit", "seconds"),
    [
        ("5/s", 5, 1),
        ("5/sec", 5, 1),
        ("10/m", 10, 60),
        ("10/min", 10, 60),
        ("100/hour", 100, 3600),
        ("100/h", 100, 3600),
        ("1/day", 1, 86400),
    ],
)
def test_from_rate_reads_count_and_period(rate, limit, seconds):
    assert Window.from_rate("user:1", rate) == Window("user:1", limit, seconds)


@pytest.mark.parametrize(
    "rate", ["", "10", "10/", "/min", "ten/min", "1.5/min", "10/fortnight", "10 per min"]
)
def test_invalid_rate_is_improperly_configured(rate):
    with pytest.raises(ImproperlyConfigured, match="tenant:acme"):
        Window.from_rate("tenant:acme", rate)


def test_invalid_tier_rate_in_settings_fails_loudly(settings, make_caller):
    settings.API_PLAN_RATES = {**LOW_RATES, "free": {"tenant": "lots"}}
    (caller,) = tenant_of(PlanTier.FREE, make_caller)

    error = assert_envelope(caller.client.get(QUOTAS_URL), 500, "INTERNAL_ERROR")

    assert "lots" not in error["message"]


# admit() on both cache backends -------------------------------------------------------------------


def hit(windows, now=None):
    admission = admit(windows, now=now)
    return admission.refused_window, admission.states


LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                      "LOCATION": "throttling-tests"}}  # fmt: skip
T0 = 1_000_000.5  # 16666 minutes and 40.5 s: the minute window ends at 1_000_020


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "locmem"])
def backend(request):
    if request.param == "redis":
        assert isinstance(caches["default"], RedisCache)
        yield request.param
        return
    with override_settings(CACHES=LOCMEM):
        assert isinstance(caches["default"], LocMemCache)
        caches["default"].clear()
        yield request.param
        caches["default"].clear()


def test_hit_counts_down_a_fixed_window(backend):
    window = Window("user:a", 2, 60)

    first = hit([window], now=T0)
    second = hit([window], now=T0 + 10)
    third = hit([window], now=T0 + 19)

    assert first == (None, [RateLimitState(2, 1, 1_000_020)])
    assert second == (None, [RateLimitState(2, 0, 1_000_020)])
    assert third == (0, [RateLimitState(2, 0, 1_000_020)])


def test_hit_starts_afresh_in_the_next_window(backend):
    window = Window("user:a", 1, 60)
    hit([window], now=T0)
    assert hit([window], now=1_000_019.999)[0] == 0

    refused, states = hit([window], now=1_000_020)

    assert refused is None
    assert states == [RateLimitState(1, 0, 1_000_080)]


def test_hit_reads_the_clock_when_not_given_a_time(backend, frozen):
    window = Window("tenant:t", 1, 3600)

    assert hit([window]) == (None, [RateLimitState(1, 0, HOUR_END)])
    assert hit([window])[0] == 0
    frozen.move_to(datetime(2026, 3, 14, 16, 0, tzinfo=UTC))
    assert hit([window])[0] is None


def test_hit_refuses_with_the_first_full_window_and_counts_nothing(backend):
    roomy, tight, also_full = (
        Window("user:u", 5, 60),
        Window("tenant:t", 1, 3600),
        Window("analytics:t", 1, 60),
    )
    assert hit([tight, also_full], now=T0)[0] is None

    refused, states = hit([roomy, tight, also_full], now=T0)
    again, _ = hit([roomy, tight, also_full], now=T0)

    assert (refused, again) == (1, 1)
    assert [state.remaining for state in states] == [5, 0, 0]
    assert hit([roomy], now=T0) == (None, [RateLimitState(5, 4, 1_000_020)])


def test_windows_with_other_keys_or_lengths_are_counted_apart(backend):
    assert hit([Window("user:a", 1, 60)], now=T0)[0] is None

    assert hit([Window("user:b", 1, 60)], now=T0)[0] is None
    assert hit([Window("user:a", 1, 3600)], now=T0)[0] is None
    assert hit([Window("user:a", 1, 60)], now=T0)[0] == 0


@pytest.mark.redis
def test_hit_uses_the_configured_default_cache(backend):
    """Counts made on one backend are invisible to the other: hit() follows caches["default"]."""
    window = Window("user:shared", 1, 60)
    assert hit([window], now=T0)[0] is None

    other = {"redis": LOCMEM, "locmem": None}[backend]
    if other is None:
        with override_settings(CACHES=_redis_caches()):
            assert isinstance(caches["default"], RedisCache)
            assert hit([window], now=T0)[0] is None
    else:
        with override_settings(CACHES=other):
            assert hit([window], now=T0)[0] is None
    assert hit([window], now=T0)[0] == 0


def _redis_caches() -> dict:
    from django.conf import settings

    # The locmem override is active here; the test settings module still holds the Redis one.
    from config.settings import test as test_settings

    assert settings.CACHES == LOCMEM
    return test_settings.CACHES


@pytest.mark.redis
def test_redis_buckets_expire_after_their_window():
    assert isinstance(caches["default"], RedisCache)
    cache = caches["default"]
    hit([Window("user:ttl", 3, 60)], now=T0)

    key = cache.make_and_validate_key(f"rl:user:ttl:60:{int(T0 // 60)}")
    ttl = cache._cache.get_client().ttl(key)

    assert 0 < ttl <= 61
    assert cache.get(f"rl:user:ttl:60:{int(T0 // 60)}") == 1
