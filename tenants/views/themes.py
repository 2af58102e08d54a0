"""Theme endpoints: the current organization's theme and logo, and each tenant's public
stylesheet."""

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotModified
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response

from config.exceptions import ApplicationError

from ..api import PlatformViewSet, ServiceWriteMixin, TenantContextViewSet
from ..models import Tenant, Theme
from ..permissions import PUBLIC
from ..serializers.themes import ThemeLogoUploadSerializer, ThemeSerializer
from ..services.themes import theme_logo_set, theme_update
from ..theme_assets import (
    StylesheetInput,
    etag_matches,
    logo_too_large_message,
    render_stylesheet,
    stylesheet_etag,
)

# Room for the multipart envelope around the file when refusing an oversized body up front.
_MULTIPART_OVERHEAD_BYTES = 64 * 1024
STYLESHEET_MAX_AGE_SECONDS = 300


class ThemeViewSet(ServiceWriteMixin, TenantContextViewSet):
    """The current organization's theme: GET, PUT/PATCH organizations/theme and
    POST organizations/theme/logo. Registered on the `organizations` prefix beside
    OrganizationViewSet."""

    serializer_class = ThemeSerializer
    required_permissions = {
        "theme": "settings.read",
        "update_theme": "settings.write",
        "partial_update_theme": "settings.write",
        "upload_logo": "settings.write",
    }

    def get_object(self) -> Theme:
        """The tenant's theme, or the unsaved defaults."""
        # OPTIONS describes PUT on a clone of the request that has no tenant (as with
        # TenantScopedViewSet, nothing is found and PUT is left out).
        tenant = getattr(self.request, "tenant", None)
        if tenant is None:
            raise NotFound()
        # tenant_id, not tenant=: an unsaved default must not land in request.tenant.theme.
        return Theme.objects.filter(tenant=tenant).first() or Theme(tenant_id=tenant.pk)

    @extend_schema(responses={200: ThemeSerializer}, summary="The organization's theme")
    @action(detail=False, methods=["get"], url_path="theme")
    def theme(self, request):
        """The theme; the defaults (with `id` null) while the organization has none."""
        return Response(self.get_serializer(self.get_object()).data)

    def perform_service_update(self, instance, data, *, partial):
        return self.call_service(theme_update, tenant=self.request.tenant, data=data)

    @extend_schema(request=ThemeSerializer, responses={200: ThemeSerializer})
    @theme.mapping.put
    def update_theme(self, request):
        """Set the fields given (a subset is accepted); the others keep their values."""
        return self.service_update(partial=False)

    @extend_schema(request=ThemeSerializer, responses={200: ThemeSerializer})
    @theme.mapping.patch
    def partial_update_theme(self, request):
        return self.service_update(partial=True)

    @extend_schema(
        request={"multipart/form-data": ThemeLogoUploadSerializer},
        responses={200: ThemeSerializer},
        summary="Upload the organization's logo",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="theme/logo",
        parser_classes=(MultiPartParser,),
    )
    def upload_logo(self, request):
        """PNG, JPEG or SVG in the multipart field `file`, recognised by content (SVG is
        sanitised); replaces the previous logo and any external logo_url."""
        declared = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.THEME_LOGO_MAX_BYTES
        if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD_BYTES:
            # Refused before the body is read and spooled to disk.
            message = logo_too_large_message(limit)
            raise ApplicationError(message, details={"file": [message]})
        upload = ThemeLogoUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        theme = theme_logo_set(
            tenant=request.tenant, actor=request.user, uploaded_file=upload.validated_data["file"]
        )
        return Response(self.get_serializer(theme).data)


class CSSRenderer(BaseRenderer):
    """text/css: what content negotiation matches `Accept` against, and what the schema names;
    the stylesheet itself is returned as a ready HttpResponse."""

    media_type = "text/css"
    format = "css"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data.encode(self.charset) if isinstance(data, str) else data


_ETAG_HEADER = OpenApiParameter(
    "ETag",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[200, 304],
    description="Strong validator: a hash of the stylesheet.",
)
_CACHE_CONTROL_HEADER = OpenApiParameter(
    "Cache-Control",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[200, 304],
    description=f"public, max-age={STYLESHEET_MAX_AGE_SECONDS}",
)
_IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="ETag(s) the client holds (a list, `*`, `W/` prefixes accepted): 304 on a match.",
)


class ThemeStylesheetViewSet(PlatformViewSet):
    """GET themes/{slug}/css: a tenant's generated stylesheet, public (it is the branding its
    sign-in pages show). Served for suspended and cancelled tenants too: it reveals nothing a
    login page would not. An inactive theme (`is_active` false) serves the platform defaults.
    Errors stay the JSON envelope whatever the Accept header asked for."""

    queryset = Tenant.objects.all()
    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]{1,63}"
    # Public: no credentials are read, so a stale or foreign token cannot turn it into a 401.
    authentication_classes = ()
    required_permissions = {"css": PUBLIC}
    # Every visitor of a tenant's sign-in page loads it, many behind one address (a company
    # NAT): its own per-address window, apart from the other anonymous endpoints'.
    anonymous_throttle_scope = "stylesheet"
    renderer_classes = (CSSRenderer,)

    @extend_schema(
        summary="An organization's generated stylesheet",
        parameters=[_IF_NONE_MATCH, _ETAG_HEADER, _CACHE_CONTROL_HEADER],
        responses={
            (200, "text/css"): OpenApiResponse(
                OpenApiTypes.STR,
                description="CSS custom properties (--cp-primary-color, ...) and custom CSS.",
            ),
            304: OpenApiResponse(description="Not modified: If-None-Match matched the ETag."),
        },
    )
    @action(detail=True, methods=["get"], url_path="css")
    def css(self, request, slug=None):
        tenant = Tenant.objects.select_related("theme").filter(slug=slug.lower()).first()
        if tenant is None:
            raise NotFound("Organization not found.")
        body = render_stylesheet(self._stylesheet_input(tenant, request))
        etag = stylesheet_etag(body)
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            response = HttpResponseNotModified()
        else:
            response = HttpResponse(body, content_type="text/css; charset=utf-8")
        response["ETag"] = etag
        response["Cache-Control"] = f"public, max-age={STYLESHEET_MAX_AGE_SECONDS}"
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @staticmethod
    def _stylesheet_input(tenant: Tenant, request) -> StylesheetInput:
        # Theme() with no tenant: Theme(tenant=tenant) would replace the cached tenant.theme.
        defaults = Theme()
        theme = getattr(tenant, "theme", None)
        if theme is None or not theme.is_active:
            theme = defaults
        return StylesheetInput(
            slug=tenant.slug,
            primary_color=theme.primary_color,
            secondary_color=theme.secondary_color,
            accent_color=theme.accent_color,
            default_colors=(
                defaults.primary_color,
                defaults.secondary_color,
                defaults.accent_color,
            ),
            logo_url=theme.logo_in_use(request),
            custom_css=theme.custom_css,
        )
