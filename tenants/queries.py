"""Hot reads of tenants, compiled by the ORM once per thread and prepared on the database server
(config.prepared.CompiledQuery): for these, building and compiling the queryset and planning
the SQL cost more than running it."""

from config.prepared import CompiledQuery

from .models import Tenant


def _organization(pk):
    return (
        Tenant.objects.with_member_count()
        .with_quota_usage()
        .select_related("theme")
        .filter(pk=pk)
        .order_by()
    )


_organizations = CompiledQuery(_organization, Tenant._meta.pk)


def organization_detail(pk) -> Tenant:
    """The tenant as GET organizations/current shows it: active member count, quota usage and
    theme, in one query. Raises Tenant.DoesNotExist."""
    found = _organizations(pk)
    if not found:
        raise Tenant.DoesNotExist(f"No tenant {pk}.")
    return found[0]
