"""Resolving the tenant of an API request, once, after authentication.

Order: an API key's tenant, the X-Organization-ID header, the organization_id query parameter,
the caller's only active membership. Header and query parameter naming two different
organizations is a 400. A tenant the caller cannot see is "not found", exactly like
one that does not exist.

An API key is bound to one tenant: its authentication class has already loaded that tenant,
the creator's membership and the key's permissions (one query) and hands them over as the
credential's `tenant_context` (`tenant`, `membership`, `permissions`), which wins. Naming
another tenant with it is a 403.
"""

import enum
import re
import uuid
from dataclasses import dataclass

from django.http.request import HttpHeaders
from rest_framework.exceptions import NotFound, PermissionDenied

from config.exceptions import ApplicationError, TenantRequired

from .models import Membership, MembershipStatus, Tenant
from .permissions import ALL_PERMISSIONS, effective_permissions

TENANT_HEADER = "X-Organization-ID"
TENANT_QUERY_PARAM = "organization_id"
_TENANT_META = HttpHeaders.to_wsgi_name(TENANT_HEADER)
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,63}\Z")


class TenantMode(enum.Enum):
    NONE = "none"  # platform endpoint: no tenant
    OPTIONAL = "optional"  # tenant when one is named or implied, else none
    EXPLICIT = "explicit"  # tenant only when named (staff reading across tenants)
    REQUIRED = "required"  # 400 TENANT_REQUIRED when none can be found


@dataclass(frozen=True)
class TenantContext:
    tenant: Tenant | None = None
    membership: Membership | None = None
    permissions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MembershipCandidates:
    """What authentication already read for tenant resolution (accounts.principals): the
    user's active memberships, with their tenants, in the organization `named` (or up to two
    of them when `named` is None)."""

    user_id: object
    named: str | None
    memberships: tuple[Membership, ...]


def tenant_lookup(identifier: str) -> dict:
    """The tenant filter an organization's name stands for: {"pk": UUID} or {"slug": slug};
    {} when it cannot be any organization's."""
    try:
        return {"pk": uuid.UUID(identifier)}
    except ValueError:
        pass
    if _SLUG.match(identifier):
        return {"slug": identifier.lower()}
    return {}


def _tenant_filter(identifier: str) -> dict:
    lookup = tenant_lookup(identifier)
    if not lookup:
        raise NotFound("Organization not found.")
    return lookup


def _membership_context(user, membership: Membership) -> TenantContext:
    if user.is_staff:
        return TenantContext(membership.tenant, membership, ALL_PERMISSIONS)
    permissions = effective_permissions(membership.role, membership.permissions)
    return TenantContext(membership.tenant, membership, permissions)


def _active_memberships(user):
    return Membership.objects.select_related("tenant").filter(
        user=user, status=MembershipStatus.ACTIVE
    )


def _preloaded(request, named: str | None) -> tuple[Membership, ...] | None:
    """The memberships authentication read for this user and this name, if it did."""
    candidates = getattr(getattr(request, "_request", request), "membership_candidates", None)
    if candidates is None or candidates.named != named or candidates.user_id != request.user.pk:
        return None
    return candidates.memberships


def _context_for(request, identifier: str) -> TenantContext:
    user = request.user
    lookup = _tenant_filter(identifier)
    preloaded = _preloaded(request, identifier)
    if preloaded is not None:
        membership = preloaded[0] if preloaded else None
    else:
        tenant_filter = {f"tenant__{key}": value for key, value in lookup.items()}
        membership = _active_memberships(user).filter(**tenant_filter).first()
    if membership is not None:
        return _membership_context(user, membership)
    if user.is_staff:
        # An operator acting in an organization they are not a member of: a rarer path, read
        # on its own.
        tenant = Tenant.objects.filter(**lookup).first()
        if tenant is not None:
            return TenantContext(tenant, None, ALL_PERMISSIONS)
    raise NotFound("Organization not found.")


def _names_tenant(identifier: str, tenant: Tenant) -> bool:
    try:
        return uuid.UUID(identifier) == tenant.pk
    except ValueError:
        return identifier.lower() == tenant.slug


def _bound_context(bound, identifiers: list[str]) -> TenantContext:
    """`bound` has `tenant`, `membership` and `permissions` (accounts.authentication)."""
    if any(not _names_tenant(identifier, bound.tenant) for identifier in identifiers):
        raise PermissionDenied(
            "This API key belongs to another organization; omit the organization or name its own."
        )
    return TenantContext(bound.tenant, bound.membership, bound.permissions)


def named_organizations(request) -> list[str]:
    """The organizations the request names: header first, then query parameter. (Read so that
    the one left out, usually the parameter, costs no exception: `headers.get` raises and
    catches a KeyError for a missing header, `QueryDict.get` two for a missing parameter.)"""
    query = request.query_params
    values = (
        request.META.get(_TENANT_META),
        query.get(TENANT_QUERY_PARAM) if TENANT_QUERY_PARAM in query else None,
    )
    return [value.strip() for value in values if value and value.strip()]


def _check_same_tenant(context: TenantContext, identifiers: list[str]) -> TenantContext:
    """Header and query parameter may both be given, but must name the same organization."""
    if len(identifiers) > 1 and not _names_tenant(identifiers[1], context.tenant):
        raise ApplicationError(
            f"{TENANT_HEADER} and {TENANT_QUERY_PARAM} name different organizations; name one.",
            details={TENANT_QUERY_PARAM: [f"Names another organization than {TENANT_HEADER}."]},
        )
    return context


def resolve_tenant(request, mode: TenantMode) -> TenantContext:
    if mode is TenantMode.NONE or not request.user.is_authenticated:
        return TenantContext()
    identifiers = named_organizations(request)
    bound = getattr(request.auth, "tenant_context", None)
    if bound is not None:
        return _bound_context(bound, identifiers)
    if identifiers:
        context = _context_for(request, identifiers[0])
        return _check_same_tenant(context, identifiers)

    if mode is TenantMode.EXPLICIT:
        return TenantContext()
    memberships = _preloaded(request, None)
    if memberships is None:
        memberships = list(_active_memberships(request.user)[:2])
    if len(memberships) == 1:
        return _membership_context(request.user, memberships[0])
    if mode is TenantMode.REQUIRED:
        raise TenantRequired()
    return TenantContext()
