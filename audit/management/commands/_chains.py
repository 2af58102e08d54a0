"""Choosing chains by command-line option, shared by the audit commands."""

from django.core.management.base import CommandError

from audit.models import PLATFORM_CHAIN, AuditEvent
from tenants.models import Tenant


def add_chain_arguments(parser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--tenant", metavar="SLUG", help="one tenant's chain")
    group.add_argument("--platform", action="store_true", help="the platform chain")
    group.add_argument("--all", action="store_true", help="every chain that has events")


def selected_chains(options) -> list[tuple[str, object]]:
    """(label, tenant_id or None) of each chain the options name."""
    if options["tenant"]:
        tenant = Tenant.objects.filter(slug=options["tenant"].lower()).first()
        if tenant is None:
            raise CommandError(f"No tenant with slug {options['tenant']!r}.")
        return [(tenant.slug, tenant.pk)]
    if options["platform"]:
        return [(PLATFORM_CHAIN, None)]
    tenant_ids = AuditEvent.objects.order_by().values_list("tenant_id", flat=True).distinct()
    slugs = dict(Tenant.objects.values_list("pk", "slug"))
    return sorted(
        ((slugs.get(tenant_id, str(tenant_id)) if tenant_id else PLATFORM_CHAIN, tenant_id)
         for tenant_id in tenant_ids),
        key=lambda chain: chain[0],
    )  # fmt: skip
