"""Every routed API endpoint, discovered from the URL resolver, for the generic contract tests.

A new viewset registered on the router joins every contract test with no change here; the
objects of a new tenant-owned model come from its factory in tests/<app>/factories.py, found
by tests.factories.factory_for.
"""

import re
import uuid
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver

from tenants.api import TenantScopedViewSet
from tenants.permissions import AUTHENTICATED, PUBLIC, STAFF, permissions_in
from tenants.resolution import TenantMode

_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")


@dataclass(frozen=True)
class Endpoint:
    regex: str
    view_class: type
    method: str
    action: str

    @property
    def is_detail(self) -> bool:
        return bool(self.lookups)

    @property
    def lookups(self) -> list[str]:
        """The names of the URL's lookups (`pk`, `slug`), in order."""
        return _GROUP.findall(self.regex)

    @property
    def list_url(self) -> str:
        """The URL of the collection a detail route names one object of."""
        return "/" + self.regex.split("(?P<")[0]

    @property
    def requirement(self) -> str | None:
        return self.view_class.required_permissions.get(self.action)

    @property
    def permissions(self) -> tuple[str, ...]:
        """The permission strings of which the action needs one (none for an access level)."""
        return permissions_in(self.requirement)

    @property
    def needs_tenant(self) -> bool:
        return self.view_class.tenant_mode is not TenantMode.NONE and self.requirement not in (
            PUBLIC,
            AUTHENTICATED,
            STAFF,
        )

    @property
    def model(self):
        queryset = getattr(self.view_class, "queryset", None)
        return queryset.model if queryset is not None else None

    @property
    def is_tenant_scoped(self) -> bool:
        return issubclass(self.view_class, TenantScopedViewSet)

    def make(self, tenant, *, owner=None):
        """One object of the endpoint's model in `tenant` (from its factory). Rows only their
        owner sees (the view's `owner_field`, e.g. a notification's recipient) belong to
        `owner`."""
        from tests.factories import factory_for

        owner_field = getattr(self.view_class, "owner_field", None)
        fields = {owner_field: owner} if owner_field and owner is not None else {}
        return factory_for(self.model)(tenant=tenant, **fields)

    def url(self, lookup: str | None = None, *, slash: bool = True) -> str:
        value = lookup or str(uuid.uuid4())
        path = _GROUP.sub(value, self.regex).replace("^", "").replace("$", "")
        path = path.replace("/?", "/" if slash else "")
        return "/" + path

    def __str__(self):
        return (
            f"{self.method.upper()} {self.url('{id}')} ({self.view_class.__name__}.{self.action})"
        )


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + _regex(entry))
        elif isinstance(entry, URLPattern):
            yield prefix + _regex(entry), entry.callback


def _regex(entry) -> str:
    return entry.pattern.regex.pattern.lstrip("^").removesuffix("$").replace("\\Z", "")


def api_endpoints() -> list[Endpoint]:
    endpoints = []
    for regex, callback in _walk(get_resolver().url_patterns):
        if not regex.startswith("api/v1/"):
            continue
        view_class = getattr(callback, "cls", None)
        actions = getattr(callback, "actions", None)
        if view_class is None:
            raise AssertionError(f"{regex} is not served by a DRF view")
        if actions:
            for method, action in actions.items():
                endpoints.append(Endpoint(regex, view_class, method, action))
        else:
            for method in view_class().allowed_methods:
                if method.lower() not in ("options", "head"):
                    endpoints.append(Endpoint(regex, view_class, method.lower(), method.lower()))
    return endpoints


ENDPOINTS = api_endpoints()
