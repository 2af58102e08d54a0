"""Plan tiers (free, pro, enterprise, custom): the default quota limits and rate limits of each
tier, and the limits that apply to one tenant once its settings are taken into account.

Limits come from the tier, replaced by those of the tenant's billing plan (`plan_features`,
which billing writes with every plan change), and a tenant's `settings` may set its own
(`maxUsers`, ...). Raising one above the plan needs staff (tenants.serializers.organizations);
lowering it is the tenant's choice. Pure functions over a loaded Tenant: no queries, so the
request path can use them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone

from config.metering import Window

MIB = 1024 * 1024


@dataclass(frozen=True)
class PlanLimits:
    documents: int
    users: int
    tokens: int  # AI tokens per quota period
    storage_mb: int
    api_calls: int  # API calls per quota period


PLAN_LIMITS: Mapping[str, PlanLimits] = {
    "free": PlanLimits(documents=100, users=3, tokens=50_000, storage_mb=1_000, api_calls=10_000),
    "pro": PlanLimits(documents=500, users=10, tokens=200_000, storage_mb=5_000, api_calls=100_000),
    "enterprise": PlanLimits(
        documents=10_000, users=100, tokens=2_000_000, storage_mb=100_000, api_calls=1_000_000
    ),
    # Negotiated: starts at the enterprise figures; staff set the agreed ones in settings.
    "custom": PlanLimits(
        documents=10_000, users=100, tokens=2_000_000, storage_mb=100_000, api_calls=1_000_000
    ),
}

# Organization settings key -> (resource, factor from the setting's unit to the counter's).
LIMIT_SETTINGS: Mapping[str, tuple[str, int]] = {
    "maxDocuments": ("documents", 1),
    "maxUsers": ("users", 1),
    "maxTokensPerMonth": ("tokens", 1),
    "maxStorageMB": ("storage", MIB),
    "maxApiCallsPerMonth": ("api_calls", 1),
}
RATE_SETTING = "rateLimitPerHour"

# Resources whose counters restart every quota period; the others are stock levels.
PERIODIC_RESOURCES = ("tokens", "api_calls")


def plan_limits(plan: str) -> dict[str, int]:
    """The tier's limits, in counter units (storage in bytes)."""
    tier = PLAN_LIMITS.get(plan, PLAN_LIMITS["free"])
    return {
        "documents": tier.documents,
        "users": tier.users,
        "tokens": tier.tokens,
        "storage": tier.storage_mb * MIB,
        "api_calls": tier.api_calls,
    }


def setting_limit(tenant_settings, key: str) -> int | None:
    """The positive whole number a tenant's settings set for a limit `key`, else None (unset,
    or anything else stored before settings were validated)."""
    if not isinstance(tenant_settings, Mapping):
        return None
    value = tenant_settings.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def granted_limits(plan: str, features: Mapping | None = None) -> dict[str, int]:
    """What the tenant's plan grants, in counter units: the tier's limits, replaced by the
    limits among its billing plan's `features` (same keys as the settings)."""
    limits = plan_limits(plan)
    for key, (resource, factor) in LIMIT_SETTINGS.items():
        value = setting_limit(features, key)
        if value is not None:
            limits[resource] = value * factor
    return limits


def tenant_limits(tenant) -> dict[str, int]:
    """The limits that apply to `tenant`: what its plan grants, replaced by any its settings
    set."""
    limits = granted_limits(tenant.plan, tenant.plan_features)
    for key, (resource, factor) in LIMIT_SETTINGS.items():
        value = setting_limit(tenant.settings, key)
        if value is not None:
            limits[resource] = value * factor
    return limits


def plan_setting_ceiling(plan: str, key: str, features: Mapping | None = None) -> int:
    """The highest value of a limit setting (in the setting's unit) the plan allows: its
    billing plan's `features` where they set it, else its tier's."""
    if key == RATE_SETTING:
        return _rate_per_hour(plan_rates(plan)["tenant"])
    resource, factor = LIMIT_SETTINGS[key]
    return granted_limits(plan, features)[resource] // factor


def plan_rates(plan: str) -> dict[str, str]:
    """The tier's DRF-style rates: `tenant` (every request in the tenant) and the per-tenant
    scopes it raises (analytics, billing, gateway); scopes it leaves out keep the defaults."""
    tiers = settings.API_PLAN_RATES
    return dict(tiers.get(plan) or tiers["free"])


def tenant_hourly_rate(tenant) -> str:
    """The rate of all requests in `tenant`: its settings' `rateLimitPerHour`, else its tier's."""
    value = setting_limit(tenant.settings, RATE_SETTING)
    if value is not None:
        return f"{value}/hour"
    return plan_rates(tenant.plan)["tenant"]


def _rate_per_hour(rate: str) -> int:
    return Window.from_rate("plan", rate).per_hour


def first_of_next_month(now: datetime | None = None) -> datetime:
    """00:00 UTC on the first day of the month after `now`: when a quota period ends."""
    now = (now or timezone.now()).astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)
