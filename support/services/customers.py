"""Customer profiles: the organization's own end customers, created, changed and deleted, each
audited (`customer_profile.*`).

An email is unique in the organization whatever its case, an external id when given; both are
checked first for a clear answer and held by unique constraints against races (409 either way).
Usage stays within its limits: `token_balance` <= `token_limit`, `active_sites` <=
`sites_limit`.
"""

from django.db import transaction

from audit.services import record
from config.db import create_or_conflict, locked_or_404, update_or_conflict
from config.exceptions import ApplicationError, Conflict
from config.services import UNSET, given
from tenants.models import Tenant

from ..models import CustomerProfile


def _record(event_type: str, actor, customer: CustomerProfile, **payload) -> None:
    # The customer's email is personal data of the organization's customer: the audit trail
    # names the profile by id.
    record(
        tenant=customer.tenant,
        event_type=event_type,
        actor=actor,
        payload={"customer_profile_id": str(customer.pk), **payload},
    )


def _check_limits(values: dict) -> None:
    for used, limit in (("token_balance", "token_limit"), ("active_sites", "sites_limit")):
        if values[used] > values[limit]:
            raise ApplicationError(
                f"Invalid {used}.", details={used: [f"At most {limit} ({values[limit]})."]}
            )


def _check_unique(tenant, values: dict, *, exclude=None) -> None:
    others = CustomerProfile.objects.filter(tenant=tenant)
    if exclude is not None:
        others = others.exclude(pk=exclude.pk)
    if others.filter(email__iexact=values["email"]).exists():
        raise _taken("email")
    if values["external_id"] and others.filter(external_id=values["external_id"]).exists():
        raise _taken("external_id")


def _taken(field: str) -> Conflict:
    return Conflict(
        f"Another customer of the organization has this {field}.",
        details={field: ["Already taken."]},
    )


# What the limits and uniqueness are checked on.
_CHECKED = ("email", "external_id", "token_balance", "token_limit", "active_sites", "sites_limit")
_CONFLICT = "Another customer of the organization has this email or external_id."


@transaction.atomic
def customer_profile_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    email: str,
    tier: str = "FREE",
    standing: str = "GOOD",
    lifetime_value_cents: int = 0,
    currency: str = "USD",
    token_balance: int = 0,
    token_limit: int = 0,
    active_sites: int = 0,
    sites_limit: int = 0,
    billing_cycle: str = "MONTHLY",
    context: dict | None = None,
    external_id: str = "",
) -> CustomerProfile:
    values = {
        "name": name,
        "email": email,
        "tier": tier,
        "standing": standing,
        "lifetime_value_cents": lifetime_value_cents,
        "currency": currency,
        "token_balance": token_balance,
        "token_limit": token_limit,
        "active_sites": active_sites,
        "sites_limit": sites_limit,
        "billing_cycle": billing_cycle,
        "context": dict(context or {}),
        "external_id": external_id,
    }
    _check_limits(values)
    _check_unique(tenant, values)
    customer = create_or_conflict(
        CustomerProfile, conflict_message=_CONFLICT, tenant=tenant, **values
    )
    _record("customer_profile.created", actor, customer, tier=tier, standing=standing)
    return customer


@transaction.atomic
def customer_profile_update(
    *,
    customer_profile: CustomerProfile,
    actor,
    name=UNSET,
    email=UNSET,
    tier=UNSET,
    standing=UNSET,
    lifetime_value_cents=UNSET,
    currency=UNSET,
    token_balance=UNSET,
    token_limit=UNSET,
    active_sites=UNSET,
    sites_limit=UNSET,
    billing_cycle=UNSET,
    context=UNSET,
    external_id=UNSET,
) -> CustomerProfile:
    """Change the fields given; the limits and uniqueness hold for the result."""
    customer = locked_or_404(CustomerProfile.objects, pk=customer_profile.pk)
    changes = given(
        name=name,
        email=email,
        tier=tier,
        standing=standing,
        lifetime_value_cents=lifetime_value_cents,
        currency=currency,
        token_balance=token_balance,
        token_limit=token_limit,
        active_sites=active_sites,
        sites_limit=sites_limit,
        billing_cycle=billing_cycle,
        context=context,
        external_id=external_id,
    )
    result = {name: changes.get(name, getattr(customer, name)) for name in _CHECKED}
    _check_limits(result)
    if "email" in changes or "external_id" in changes:
        _check_unique(customer.tenant, result, exclude=customer)
    changed = update_or_conflict(customer, changes, conflict_message=_CONFLICT)
    if changed:
        _record("customer_profile.updated", actor, customer, changed=sorted(changed))
    return customer


@transaction.atomic
def customer_profile_delete(*, customer_profile: CustomerProfile, actor) -> None:
    customer = locked_or_404(CustomerProfile.objects, pk=customer_profile.pk)
    if customer.tickets.exists():
        raise Conflict(
            "The customer has tickets: they keep their customer (close the account with "
            "standing CLOSED instead).",
            details={"tickets": customer.tickets.count()},
        )
    if customer.refunds.exists():
        raise Conflict(
            "The customer has refunds, records of money that keep their customer (close the "
            "account with standing CLOSED instead).",
            details={"refunds": customer.refunds.count()},
        )
    _record("customer_profile.deleted", actor, customer)
    customer.delete()
