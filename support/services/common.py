"""Lookups the support services share: another organization's id is refused like a random one
(400 naming the field), and a ticket is changed under its row lock."""

from django.db.models import Exists, OuterRef

from config.db import locked_or_404
from config.exceptions import ApplicationError
from tenants.models import Membership, MembershipStatus, Tenant

from ..models import CustomerProfile, Representative, Ticket


def serving():
    """The representative is still an active member of their organization: one who left (or was
    suspended) is given no ticket."""
    return Exists(
        Membership.objects.filter(
            tenant=OuterRef("tenant"),
            user=OuterRef("user"),
            status=MembershipStatus.ACTIVE,
            user__is_active=True,
        )
    )


def customer_of(tenant: Tenant, customer):
    """The organization's customer profile of this id (or instance), None for None; 400 for
    anything else."""
    if customer is None:
        return None
    customer_id = getattr(customer, "pk", customer)
    found = CustomerProfile.objects.filter(tenant=tenant, pk=customer_id).first()
    if found is None:
        raise ApplicationError(
            "Invalid customer.",
            details={"customer_id": ["No customer of the organization has this id."]},
        )
    return found


def representative_of(
    tenant: Tenant, representative, field: str = "representative"
) -> Representative:
    """The organization's representative of this id (or instance) who still serves it; 400
    naming `field` otherwise."""
    representative_id = getattr(representative, "pk", representative)
    found = Representative.objects.filter(tenant=tenant, pk=representative_id).filter(serving())
    found = found.first()
    if found is None:
        raise ApplicationError(
            "Invalid representative.",
            details={field: ["No representative of the organization has this id."]},
        )
    return found


def locked_ticket(ticket: Ticket) -> Ticket:
    """The ticket again, locked for the change (its tenant and assignee loaded)."""
    return locked_or_404(Ticket.objects.select_related("tenant", "assignee"), pk=ticket.pk)
