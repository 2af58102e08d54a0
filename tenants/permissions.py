"""The role -> permission table and the one DRF permission class that enforces it.

Permissions are `area.action` strings. A view declares, per action, what it needs:

    required_permissions = {"list": "security.read", "create": "security.write"}

Besides permission strings an entry may be one of the access levels below, or `AnyOf(...)`
several permissions of which any one is enough (a refund is approved by the support team or by
finance). An action with no entry is refused (deny by default); tests/api checks that every
routed action has one.
"""

import functools
from collections.abc import Mapping

from rest_framework.permissions import BasePermission

from .models import Role

PUBLIC = "@public"  # no authentication
AUTHENTICATED = "@authenticated"  # any authenticated caller, no tenant needed
TENANT_MEMBER = "@tenant-member"  # any active member of the resolved tenant
STAFF = "@staff"  # platform operators only
ACCESS_LEVELS = frozenset({PUBLIC, AUTHENTICATED, TENANT_MEMBER, STAFF})

PERMISSIONS_BY_AREA: dict[str, tuple[str, ...]] = {
    "documents": ("read", "write", "delete"),
    "conversations": ("read", "moderate"),
    "analytics": ("read", "write"),
    "settings": ("read", "write"),
    "billing": ("read", "write"),
    "security": ("read", "write"),
    "support": ("read", "write"),
    "playground": ("read", "write", "execute"),
    "audit": ("read",),
    "members": ("read", "write"),
    "keys": ("read", "write"),
}
ALL_PERMISSIONS = frozenset(
    f"{area}.{action}" for area, actions in PERMISSIONS_BY_AREA.items() for action in actions
)

# API-key scopes: `read` is every `*.read` permission, `write` every other one; a
# scope may also be one explicit permission string.
READ_PERMISSIONS = frozenset(name for name in ALL_PERMISSIONS if name.endswith(".read"))
SCOPE_GROUPS: Mapping[str, frozenset[str]] = {
    "read": READ_PERMISSIONS,
    "write": ALL_PERMISSIONS - READ_PERMISSIONS,
}
KNOWN_SCOPES = frozenset(SCOPE_GROUPS) | ALL_PERMISSIONS


class AnyOf(tuple):
    """A requirement met by any one of its permissions:
    `{"approve": AnyOf("support.write", "billing.write")}`."""

    def __new__(cls, *names: str):
        unknown = set(names) - ALL_PERMISSIONS
        if len(names) < 2 or unknown:
            raise ValueError(f"AnyOf needs two or more known permissions: {names!r}")
        return super().__new__(cls, names)

    def __repr__(self):
        return " | ".join(self)


def permissions_in(requirement) -> tuple[str, ...]:
    """The permission strings a requirement names: none for an access level."""
    if isinstance(requirement, AnyOf):
        return tuple(requirement)
    if requirement in ACCESS_LEVELS or requirement is None:
        return ()
    return (requirement,)


def _perms(*names: str) -> frozenset[str]:
    unknown = set(names) - ALL_PERMISSIONS
    if unknown:
        raise ValueError(f"unknown permissions in the role table: {sorted(unknown)}")
    return frozenset(names)


_READ_BASICS = ("documents.read", "conversations.read", "settings.read", "members.read")

ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    Role.OWNER: ALL_PERMISSIONS,
    Role.ADMIN: ALL_PERMISSIONS,
    Role.MEMBER: _perms(
        *_READ_BASICS,
        "documents.write",
        "analytics.read",
        "support.read",
        "support.write",
        "playground.read",
        "playground.write",
        "playground.execute",
        "keys.read",
        "keys.write",
    ),
    Role.VIEWER: _perms(*_READ_BASICS, "analytics.read", "support.read", "playground.read"),
    Role.BILLING: _perms(
        "settings.read", "members.read", "billing.read", "billing.write", "analytics.read"
    ),
    Role.DPO: _perms(
        *_READ_BASICS, "security.read", "security.write", "audit.read", "analytics.read"
    ),
}


def effective_permissions(role: str, overrides: Mapping | None = None) -> frozenset[str]:
    """The role's set with a membership's per-area overrides applied ({area: {action: bool}})."""
    if not overrides:
        # Most memberships: the role's own set, built once (runs on every request).
        return ROLE_PERMISSIONS.get(role, frozenset())
    granted = set(ROLE_PERMISSIONS.get(role, frozenset()))
    for area, actions in (overrides or {}).items():
        if not isinstance(actions, Mapping):
            continue
        for action, allowed in actions.items():
            name = f"{area}.{action}"
            if name not in ALL_PERMISSIONS:
                continue
            if allowed is True:
                granted.add(name)
            elif allowed is False:
                granted.discard(name)
    return frozenset(granted)


def unknown_scopes(scopes) -> list[str]:
    """The entries of `scopes` that are neither a scope group nor a known permission."""
    return [scope for scope in scopes if scope not in KNOWN_SCOPES]


def expand_scopes(scopes) -> frozenset[str]:
    """The permissions a list of scopes names (unknown entries grant nothing). An API key's
    scopes are expanded on each of its requests: a key's few lists are expanded once."""
    return _expanded_scopes(tuple(scopes))


@functools.lru_cache(maxsize=1024)
def _expanded_scopes(scopes: tuple[str, ...]) -> frozenset[str]:
    granted: set[str] = set()
    for scope in scopes:
        if scope in SCOPE_GROUPS:
            granted |= SCOPE_GROUPS[scope]
        elif scope in ALL_PERMISSIONS:
            granted.add(scope)
    return frozenset(granted)


def is_tenant_bound_credential(request) -> bool:
    """The request authenticated with a credential bound to one tenant (an API key)."""
    return getattr(getattr(request, "auth", None), "tenant_context", None) is not None


def permissions_as_object(permissions: frozenset[str]) -> dict[str, dict[str, bool]]:
    """The permission object: every area, each action true or false,
    {"documents": {"read": true, ...}, ...}."""
    return {
        area: {action: f"{area}.{action}" in permissions for action in actions}
        for area, actions in PERMISSIONS_BY_AREA.items()
    }


def required_permission_for(view, request) -> str | None:
    """The entry a view declares for the action being run, or None when it declares none."""
    action = getattr(view, "action", None)
    if action is None:
        action = request.method.lower()
    if action == "metadata":
        return AUTHENTICATED
    return view.required_permissions.get(action)


def _accepts_tenant_bound_credential(view) -> bool:
    accepts = getattr(view, "accepts_tenant_bound_credential", None)
    return bool(accepts is not None and accepts())


class HasRequiredPermission(BasePermission):
    """Enforces `view.required_permissions[action]`; deny by default.

    A tenant-bound credential (an API key) holds only its tenant's permissions: it is refused on
    staff actions and wherever the view does not accept it (`accepts_tenant_bound_credential`),
    whatever its creator could do with a password.
    """

    message = "You do not have permission to perform this action."
    bound_credential_message = "An API key cannot be used for this action."

    def has_permission(self, request, view) -> bool:
        required = required_permission_for(view, request)
        if required is None:
            return False
        if required == PUBLIC:
            return True
        if not (request.user and request.user.is_authenticated):
            return False
        if is_tenant_bound_credential(request) and (
            required == STAFF or not _accepts_tenant_bound_credential(view)
        ):
            self.message = self.bound_credential_message
            return False
        if required == AUTHENTICATED:
            return True
        if required == STAFF:
            return bool(request.user.is_staff)
        if getattr(request, "tenant", None) is None:
            # Only staff on a cross-tenant view act without a tenant (their permissions are all).
            return bool(getattr(view, "staff_cross_tenant", False) and request.user.is_staff)
        if required == TENANT_MEMBER:
            return True
        return any(name in request.permissions for name in permissions_in(required))


def unknown_overrides(overrides: Mapping) -> list[str]:
    """The entries of a permission object that name no known area or action, or whose
    value is not a boolean: `["reports", "documents.print", "analytics.read=yes"]`."""
    unknown = []
    for area, actions in overrides.items():
        if area not in PERMISSIONS_BY_AREA or not isinstance(actions, Mapping):
            unknown.append(str(area))
            continue
        for action, allowed in actions.items():
            if action not in PERMISSIONS_BY_AREA[area]:
                unknown.append(f"{area}.{action}")
            elif not isinstance(allowed, bool):
                unknown.append(f"{area}.{action}={allowed!r}")
    return unknown
