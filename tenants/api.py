"""The base classes every API view builds on (the app kit).

Request flow: authentication -> tenant resolution -> permission -> throttle -> the tenant's
`api_calls` quota -> handler. DRF's own `initial()` runs it; the mixin extends the steps it
calls (authentication binds the tenant; the quota is counted after DRF's checks). Subclasses
cannot change the order: the mixin refuses, at class creation, a subclass that overrides a
sealed method, so no view can drop the tenant filter or the permission check by accident.

A tenant-owned resource with CRUD is a `TenantCrudViewSet`: `queryset`, `serializer_class`
(what answers show), `filterset_class`, `permission_area` (list/retrieve need `area.read`, the
standard writes `area.write`; custom actions name theirs in `required_permissions`, and an
action with no entry is refused), and the services that make the changes:

    class ProjectViewSet(TenantCrudViewSet):
        queryset = Project.objects.all()
        serializer_class = ProjectSerializer
        filterset_class = ProjectFilter
        permission_area = "playground"
        create_service = services.project_create    # (*, tenant, actor, **data) -> Project
        update_service = services.project_update    # (*, project, actor, **data) -> Project
        destroy_service = services.project_delete   # (*, project, actor) -> None
"""

import functools
import inspect
import re
import time
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.response import Response

from accounts.authentication import refuse_conflicting_credentials
from accounts.usage import observe_api_key_request
from config import epoch as principals_epoch
from config import observers
from config.exceptions import TenantSuspended
from config.renderers import JSONRenderer
from config.throttling import rate_limit_headers

from .permissions import PERMISSIONS_BY_AREA, AnyOf, HasRequiredPermission
from .resolution import TenantMode, resolve_tenant
from .services.quotas import quota_consume
from .throttling import TenantThrottle

# The standard actions and the level of the area's permission each needs.
STANDARD_ACTIONS = {
    "list": "read",
    "retrieve": "read",
    "create": "write",
    "update": "write",
    "partial_update": "write",
    "destroy": "write",
}
# Class attributes holding services: stored as plain functions, never bound as methods.
_SERVICE_HOOKS = ("create_service", "update_service", "destroy_service")


class ControlPlaneAPIMixin:
    """Auth, tenant, permission and throttle for every API view; first in the bases."""

    _is_base = True
    _sealed = (
        "initial",
        "perform_authentication",
        "get_permissions",
        "check_permissions",
        "permission_classes",
    )

    permission_classes = (HasRequiredPermission,)
    throttle_classes = (TenantThrottle,)
    # action (or lowercase HTTP method for plain views) -> permission string, AnyOf(...) of
    # several, or access level.
    required_permissions: Mapping[str, str | AnyOf] = {}
    # The permission area of the standard actions the view has (see STANDARD_ACTIONS); entries
    # in required_permissions win over the derived ones.
    permission_area: str | None = None
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
        for hook in _SERVICE_HOOKS:
            if callable(cls.__dict__.get(hook)):
                setattr(cls, hook, staticmethod(cls.__dict__[hook]))
        if cls.__dict__.get("_is_base", False) and cls.__module__ == __name__:
            return
        overridden = [name for name in cls._sealed if name in cls.__dict__]
        if overridden:
            raise ImproperlyConfigured(
                f"{cls.__qualname__} overrides {', '.join(overridden)}; tenant scoping and "
                "permissions are fixed by the base class. Use scope_queryset() and "
                "required_permissions instead."
            )
        cls._derive_required_permissions()

    @classmethod
    def _derive_required_permissions(cls) -> None:
        explicit = {**getattr(cls, "_explicit_permissions", {})}
        explicit.update(cls.__dict__.get("required_permissions", {}))
        cls._explicit_permissions = explicit
        area = cls.permission_area
        if area is None:
            cls.required_permissions = explicit
            return
        derived = {
            action: f"{area}.{level}"
            for action, level in STANDARD_ACTIONS.items()
            if callable(getattr(cls, action, None))
        }
        needed = {STANDARD_ACTIONS[action] for action in derived}
        missing = sorted(needed - set(PERMISSIONS_BY_AREA.get(area, ())))
        if missing:
            raise ImproperlyConfigured(
                f"{cls.__qualname__}.permission_area {area!r} has no {'/'.join(missing)} "
                "permission (tenants.permissions.PERMISSIONS_BY_AREA)."
            )
        cls.required_permissions = {**derived, **explicit}

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
        """DRF's: negotiation, authentication (with the tenant, below), permission, throttles;
        then the tenant's api_calls quota.

        Authentication may act on a process's kept lookup (config.epoch). It stands only if
        the throttle's admission confirmed it, in the step that counted the request; if the
        admission found it stale, no admission confirmed it, or anything refused the request,
        the request is authenticated again from the database, and everything decided on the
        kept rows is decided again. A refusal is thus never made on kept rows."""
        principals_epoch.allow_keeping(request)
        try:
            super().initial(request, *args, **kwargs)
            if principals_epoch.unconfirmed(request):
                raise principals_epoch.StaleLookup()
        except Exception:
            if principals_epoch.kept_epoch(request) is None:
                raise
            self._forget_authentication(request)
            super().initial(request, *args, **kwargs)
        self.count_api_call(request)

    @staticmethod
    def _forget_authentication(request) -> None:
        """What the first pass of `initial` set, so the second reads it afresh."""
        principals_epoch.allow_keeping(request, reuse=False)
        for attribute in ("_user", "_auth"):
            request.__dict__.pop(attribute, None)
        request._authenticator = None
        request._rate_limit_states = []

    def perform_authentication(self, request):
        """The credential, then the tenant it acts in: the permission check needs both."""
        if getattr(self, request.method.lower(), None) is None:
            # An unrouted method is a 405 whoever asks, before any auth or tenant work.
            raise MethodNotAllowed(request.method)
        if self.get_authenticators():
            refuse_conflicting_credentials(request)
        super().perform_authentication(request)
        self.bind_tenant(request)

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
        # A response another step completes (the gateway's async part) is counted there, once
        # its real status is known.
        if not getattr(response, "completes_later", False):
            observe_api_key_request(request, response)
            observers.observe(request, response)
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
    _sealed = (*ControlPlaneAPIMixin._sealed, "get_queryset", "get_object", "filter_queryset")
    # For rows only the person they belong to may see (a notification's recipient): the field
    # naming that user. Everyone else in the tenant finds them "not found", like a random id.
    owner_field: str | None = None

    def get_queryset(self):
        queryset = super().get_queryset()
        request = getattr(self, "request", None)
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            queryset = queryset.filter(tenant=tenant)
        elif not (self.staff_cross_tenant and request is not None and request.user.is_staff):
            return queryset.none()
        if self.owner_field is not None:
            queryset = queryset.filter(**{self.owner_field: request.user})
        return self.scope_queryset(queryset)

    def scope_queryset(self, queryset):
        """Narrow the (already tenant-filtered) queryset: select_related, visibility rules."""
        return queryset

    def perform_create(self, serializer):
        serializer.save(tenant=self.request.tenant)


# Service-backed writes -------------------------------------------------------------------------


@functools.cache
def _parameters(service) -> frozenset[str] | None:
    """The keyword parameters `service` declares; None when it takes any (**kwargs)."""
    parameters = inspect.signature(service).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return frozenset(parameter.name for parameter in parameters)


class ServiceWriteMixin:
    """What the write mixins share: validating the body and calling services with the actor."""

    # The kwarg a service takes the object by (`api_key=`, `membership=`); default: the model's
    # name in snake case.
    service_object_name: str | None = None

    def service_context(self) -> dict:
        """Keyword arguments a service call gets besides its data, when the service declares
        them: the actor (always declared) and the actor's permissions in the tenant."""
        return {"actor": self.request.user, "actor_permissions": self.request.permissions}

    def call_service(self, service, **arguments):
        """`service(**arguments)` plus the context arguments it declares (see service_context);
        the data arguments are passed whatever they are, so an unexpected one still fails."""
        accepted = _parameters(service)
        context = {
            name: value
            for name, value in self.service_context().items()
            if accepted is None or name in accepted
        }
        return service(**context, **arguments)

    def service_object_kwarg(self) -> str:
        if self.service_object_name:
            return self.service_object_name
        # APIKey -> api_key, QuotaCounter -> quota_counter.
        name = self.queryset.model.__name__
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()

    def validated_input(self, serializer_class, *, instance=None, partial=False) -> dict:
        serializer = serializer_class(
            instance, data=self.request.data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def refreshed(self, instance):
        """The object as reads show it (the view's annotations and related rows)."""
        return self.get_queryset().get(pk=instance.pk)

    # Updates: the routed update/partial_update (ServiceUpdateMixin) and singletons' own
    # PUT/PATCH actions (organizations/current, organizations/theme) both end here.
    update_serializer_class = None
    update_service = None

    def service_update(self, *, partial: bool) -> Response:
        """The object through `update_serializer_class` (default: `serializer_class`; PATCH
        partial), then `perform_service_update`; answers the object."""
        instance = self.get_object()
        serializer_class = self.update_serializer_class or self.get_serializer_class()
        data = self.validated_input(serializer_class, instance=instance, partial=partial)
        updated = self.perform_service_update(instance, data, partial=partial)
        return Response(self.get_serializer(updated).data)

    def perform_service_update(self, instance, data: dict, *, partial: bool):
        """`update_service(<object>=, actor=, **data)`, the object as reads show it after."""
        updated = self.call_service(
            self.update_service, **{self.service_object_kwarg(): instance}, **data
        )
        return self.refreshed(updated)


class AcceptsShownDocumentMixin:
    """For a viewset whose update body has its own serializer (`update_serializer_class`): the
    document a GET showed may be sent back, its read-only keys unchanged being accepted
    (config.serializers.RefusesUnwritableFieldsMixin), because the update serializer is handed
    the object's shown representation. First in the bases."""

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if getattr(self, "action", None) in ("update", "partial_update"):
            context["representation"] = lambda: self.get_serializer(self.get_object()).data
        return context


class ServiceCreateMixin(ServiceWriteMixin):
    """POST: the body through `create_serializer_class` (default: `serializer_class`), then
    `create_service(tenant=, actor=, **data)`; answers `create_output_serializer_class`
    (default: `serializer_class`) with 201. The tenant is the request's, never the body's."""

    create_serializer_class = None
    create_output_serializer_class = None
    create_service = None

    def create(self, request, *args, **kwargs):
        data = self.validated_input(self.create_serializer_class or self.get_serializer_class())
        instance = self.perform_service_create(data)
        output = self.create_output_serializer_class or self.get_serializer_class()
        context = self.get_serializer_context()
        return Response(output(instance, context=context).data, status=status.HTTP_201_CREATED)

    def perform_service_create(self, data: dict):
        created = self.call_service(self.create_service, tenant=self.request.tenant, **data)
        return self.refreshed(created)


class ServiceUpdateMixin(ServiceWriteMixin):
    """PUT and PATCH on the detail route: the body through `update_serializer_class` (default:
    `serializer_class`; PATCH partial), then `update_service(<object>=, actor=, **data)`;
    answers the object."""

    def update(self, request, *args, **kwargs):
        return self.service_update(partial=False)

    def partial_update(self, request, *args, **kwargs):
        return self.service_update(partial=True)


class ServiceDestroyMixin(ServiceWriteMixin):
    """DELETE: `destroy_service(<object>=, actor=)`; 204."""

    destroy_service = None

    def destroy(self, request, *args, **kwargs):
        self.call_service(self.destroy_service, **{self.service_object_kwarg(): self.get_object()})
        return Response(status=status.HTTP_204_NO_CONTENT)


class TenantCrudViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    """List, retrieve, create, update and destroy over a tenant-owned model, every write
    through the app's services (see the module docstring). A resource without some of the
    writes composes the mixins it has with TenantScopedViewSet instead."""

    _is_base = True
