"""The plan catalogue a fresh installation offers, and the shape of a plan's `features`.

`features` holds the limits a plan grants, under the organization settings' keys (so the
tenants app applies them: tenants.plans.granted_limits), and the flags of what it includes.
Loaded by the catalogue's data migration and by `manage.py load_demo_data` (idempotently:
existing rows are left as staff edited them).

The Free plan's limits are the free tier's, Team's the pro tier's and Enterprise's the
enterprise tier's, so tenants moved onto them by the migration keep the limits they had.
Starter and Team are the catalogue's published examples.
"""

from collections.abc import Mapping

# key -> (type, description). Limits are whole numbers >= 1; flags are booleans.
LIMIT_FEATURES: Mapping[str, str] = {
    "maxDocuments": "documents stored",
    "maxUsers": "members (seats)",
    "maxTokensPerMonth": "AI tokens per month, included in the price",
    "maxStorageMB": "storage in MB, included in the price",
}
FLAG_FEATURES: Mapping[str, str] = {
    "advancedAnalytics": "advanced analytics",
    "prioritySupport": "priority support",
    "sso": "single sign-on",
    "apiAccess": "API keys and the API",
}
PLAN_FEATURES = (*LIMIT_FEATURES, *FLAG_FEATURES)

# Micro-units per currency unit, and per cent.
MICROS = 1_000_000
MICROS_PER_CENT = 10_000


def _features(documents, users, tokens, storage_mb, **flags) -> dict:
    return {
        "maxDocuments": documents,
        "maxUsers": users,
        "maxTokensPerMonth": tokens,
        "maxStorageMB": storage_mb,
        **{flag: bool(flags.get(flag, False)) for flag in FLAG_FEATURES},
    }


PLANS = [
    {
        "code": "free",
        "name": "Free",
        "description": "Try the platform: the essentials, no card needed",
        "price_cents": 0,
        "tier": "free",
        "position": 0,
        "features": _features(100, 3, 50_000, 1_000, apiAccess=True),
    },
    {
        "code": "starter",
        "name": "Starter",
        "description": "Perfect for small teams getting started",
        "price_cents": 4_900,
        "tier": "pro",
        "trial_days": 14,
        "position": 10,
        "features": _features(100, 3, 50_000, 1_000),
        "token_overage_micros_per_1k": 2_000,
        "storage_overage_cents_per_gb": 50,
    },
    {
        "code": "team",
        "name": "Team",
        "description": "Great for growing teams",
        "price_cents": 14_900,
        "tier": "pro",
        "trial_days": 14,
        "position": 20,
        "features": _features(500, 10, 200_000, 5_000, advancedAnalytics=True, apiAccess=True),
        "token_overage_micros_per_1k": 1_500,
        "storage_overage_cents_per_gb": 40,
    },
    {
        "code": "business",
        "name": "Business",
        "description": "For organizations running AI in production",
        "price_cents": 39_900,
        "tier": "enterprise",
        "trial_days": 14,
        "position": 30,
        "features": _features(
            2_000, 25, 1_000_000, 20_000,
            advancedAnalytics=True, prioritySupport=True, apiAccess=True,
        ),
        "token_overage_micros_per_1k": 1_000,
        "storage_overage_cents_per_gb": 30,
    },
    {
        "code": "enterprise",
        "name": "Enterprise",
        "description": "Everything, single sign-on, and the gateway's costs passed through",
        "price_cents": 99_900,
        "tier": "enterprise",
        "trial_days": 30,
        "position": 40,
        "features": _features(
            10_000, 100, 2_000_000, 100_000,
            advancedAnalytics=True, prioritySupport=True, sso=True, apiAccess=True,
        ),
        "token_pricing": "at_cost",
        "storage_overage_cents_per_gb": 25,
    },
]  # fmt: skip

# The plan an existing tenant of each tier was moved onto (and a new tenant starts on: free).
PLAN_OF_TIER = {"free": "free", "pro": "team", "enterprise": "enterprise", "custom": "enterprise"}


def features_errors(value) -> list[str]:
    """What is wrong with a plan's `features` (empty when it is valid): an object with known
    keys only, limits whole numbers >= 1, flags booleans."""
    if not isinstance(value, Mapping):
        return ["Must be an object."]
    errors = []
    for key, item in value.items():
        if key in LIMIT_FEATURES:
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                errors.append(f"{key}: must be a whole number of at least 1.")
        elif key in FLAG_FEATURES:
            if not isinstance(item, bool):
                errors.append(f"{key}: must be true or false.")
        else:
            errors.append(f"{key}: unknown feature (known: {', '.join(PLAN_FEATURES)}).")
    return errors


def seed_plans(plan_model, currency: str) -> int:
    """Create the missing seeded plans; returns how many were added."""
    added = 0
    for spec in PLANS:
        _, created = plan_model.objects.get_or_create(
            code=spec["code"], defaults={**spec, "currency": currency}
        )
        added += created
    return added
