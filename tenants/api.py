"""The base classes every API view builds on.

Request flow: authentication -> tenant resolution -> permission -> throttle -> the tenant's
`api_calls` quota -> handler. The
order lives in one place (`ControlPlaneAPIMixin.initial`) and subclasses cannot change it: the
mixin refuses, at class creation, a subclass that overrides the sealed methods, so no view can
drop the tenant filter or the permission check by accident.
"""

import time
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured
from rest_framework import viewsets
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.response import Response

from accounts.authentication import refuse_conflicting_credentials
from accounts.usage import observe_api_key_request
from config.exceptions import TenantSuspended
from config.renderers import JSONRenderer
from config.throttling import rate_limit_headers

from .permissions import HasRequiredPermission
from .resolution import TenantMode, resolve_tenant
from .services.quotas import quota_consume
from .throttling import TenantThrottle


class ControlPlaneAPIMixin:
    """Auth, tenant, permission and throttle for every API view; first in the bases."""

    _is_base = True
    _sealed = ("initial", "get_permissions", "check_permissions", "permission_classes")

    permission_classes = (HasRequiredPermission,)
    throttle_classes = (TenantThrottle,)
    # action (or lowercase HTTP method for plain views) -> permission string or access level.
    required_permissions: Mapping[str, str] = {}
    tenant_mode = TenantMode.REQUIRED
    # Staff may call without a tenant and see every tenant's rows.
    staff_cross_tenant = False
    # Actions that still answer while the tenant is suspended or cancelled.
    allowed_when_suspended: frozenset[str] = frozenset()
    # Per-tenant throttle scope (analytics, billing, gateway), on top of the per-user rate.
    throttle_scope: str | None = None
    ordering_fields: tuple[str, ...] = ()
    # Actions an API key (a tenant-bound credential) may call; None means every action. Keys
    # never reach platform endpoints (no tenant) or staff actions, whatever this says.
    api_key_actions: frozenset[str] | None = None
    # Whether a member's or key's request counts one of the tenant's `api_calls`.
    counts_api_calls = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_is_base", False) and cls.__module__ == __name__:
            return
        overridden = [name for name in cls._sealed if name in cls.__dict__]
        if overridden:
            raise ImproperlyConfigured(
                f"{cls.__qualname__} overrides {', '.join(overridden)}; tenant scoping and "
                "permissions are fixed by the base class. Use scope_queryset() and "
                "required_permissions instead."
            )

    def get_permissions(self):
        return [permission() for permission in self.permission_classes]

    def accepts_tenant_bound_credential(self) -> bool:
        if self.tenant_mode is TenantMode.NONE:
            return False
        return self.api_key_actions is None or self.action_name in self.api_key_actions

    def initialize_request(self, request, *args, **kwargs):
        request.started_at = time.perf_counter()
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        self.format_kwarg = self.get_format_suffix(**kwargs)
        neg = self.perform_content_negotiation(request)
        request.accepted_renderer, request.accepted_media_type = neg
        version, scheme = self.determine_version(request, *args, **kwargs)
        request.version, request.versioning_scheme = version, scheme

        if getattr(self, request.method.lower(), None) is None:
            # An unrouted method is a 405 whoever asks, before any auth or tenant work.
            raise MethodNotAllowed(request.method)
        if self.get_authenticators():
            refuse_conflicting_credentials(request)
        self.perform_authentication(request)
        self.bind_tenant(request)
        self.check_permissions(request)
        self.check_throttles(request)
        self.count_api_call(request)

    @property
    def action_name(self) -> str:
        return getattr(self, "action", None) or self.request.method.lower()

    def bind_tenant(self, request) -> None:
        mode = self.tenant_mode
        if self.staff_cross_tenant and request.user.is_authenticated and request.user.is_staff:
            mode = TenantMode.EXPLICIT
        context = resolve_tenant(request, mode)
        request.tenant = context.tenant
        request.membership = context.membership
        request.permissions = context.permissions
        blocked = context.tenant is not None and context.tenant.is_blocked
        if blocked and self.action_name not in self.allowed_when_suspended:
            raise TenantSuspended()

    def counts_api_call(self, request) -> bool:
        """Calls in the tenant's name count (members, its API keys); staff acting as operators
        do not."""
        return bool(
            self.counts_api_calls and request.tenant is not None and request.membership is not None
        )

    def count_api_call(self, request) -> None:
        """One atomic step: count the call or refuse it (429 QUOTA_EXCEEDED). On Redis the
        throttle has already done it, in the same step as its windows (tenants.throttling)."""
        if self.counts_api_call(request) and not getattr(request, "api_call_counted", False):
            quota_consume(tenant=request.tenant, resource="api_calls")

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and _wants_json_instead(request, response):
            # The browsable API (development) shows successful reads; every error and every
            # write's answer stays JSON, which is what API clients parse.
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        for header, value in rate_limit_headers(request, response).items():
            response[header] = value
        observe_api_key_request(request, response)
        return response

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["tenant"] = getattr(self.request, "tenant", None)
        return context


def _wants_json_instead(request, response) -> bool:
    renderer = getattr(response, "accepted_renderer", None)
    if renderer is None or isinstance(renderer, JSONRenderer):
        return False
    return response.status_code >= 400 or request.method not in ("GET", "HEAD")


class PlatformViewSet(ControlPlaneAPIMixin, viewsets.GenericViewSet):
    """Endpoints outside any tenant: auth, the tenant directory, staff tools."""

    _is_base = True
    tenant_mode = TenantMode.NONE


class TenantContextViewSet(ControlPlaneAPIMixin, viewsets.GenericViewSet):
    """Endpoints inside one tenant that serve the tenant itself (no tenant-owned queryset)."""

    _is_base = True
    tenant_mode = TenantMode.REQUIRED


class TenantScopedViewSet(TenantContextViewSet):
    """Endpoints over a tenant-owned model: the queryset is always filtered by `request.tenant`,
    `tenant` is set on create and never read from the body."""

    _is_base = True
    _sealed = (*ControlPlaneAPIMixin._sealed, "get_queryset")

    def get_queryset(self):
        queryset = super().get_queryset()
        request = getattr(self, "request", None)
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            queryset = queryset.filter(tenant=tenant)
        elif not (self.staff_cross_tenant and request is not None and request.user.is_staff):
            return queryset.none()
        return self.scope_queryset(queryset)

    def scope_queryset(self, queryset):
        """Narrow the (already tenant-filtered) queryset: select_related, visibility rules."""
        return queryset

    def perform_create(self, serializer):
        serializer.save(tenant=self.request.tenant)
