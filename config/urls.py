"""URL map: the one API router at /api/v1/, schema and docs, probes, admin.

Unknown paths anywhere answer the JSON error envelope, in DEBUG too.
"""

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts.routes import routes as accounts_routes
from analytics.routes import routes as analytics_routes
from audit.routes import routes as audit_routes
from billing.routes import routes as billing_routes
from billing.views import CheckoutPage
from notifications.routes import routes as notifications_routes
from playground.routes import routes as playground_routes
from security.routes import routes as security_routes
from support.routes import routes as support_routes
from tenants.routes import routes as tenants_routes
from tenants.views.invitation_page import InvitationAcceptPage

from .health import HealthView, ReadyView
from .routers import OptionalSlashRouter
from .views import not_found

router = OptionalSlashRouter()
for prefix, viewset, basename in (
    *accounts_routes,
    *tenants_routes,
    *audit_routes,
    *billing_routes,
    *security_routes,
    *playground_routes,
    *support_routes,
    *analytics_routes,
    *notifications_routes,
):
    router.register(prefix, viewset, basename=basename)

urlpatterns = [
    path("api/v1/", include(router.urls)),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    re_path(r"^api/redoc/?$", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    re_path(r"^ready/?$", ReadyView.as_view(), name="ready"),
    # Where invitation emails link by default (INVITATION_ACCEPT_URL).
    re_path(
        r"^invitations/accept/?$", InvitationAcceptPage.as_view(), name="invitation-accept-page"
    ),
    # The local payment provider's hosted checkout page (billing.providers.local).
    re_path(
        r"^billing/checkout/(?P<session_id>[A-Za-z0-9_-]{1,255})/?$",
        CheckoutPage.as_view(),
        name="billing-checkout-page",
    ),
    path("admin/", admin.site.urls),
]
if settings.BROWSABLE_API:
    urlpatterns.append(path("api-auth/", include("rest_framework.urls")))
# Uploaded files (theme logos) in development; static() adds nothing unless DEBUG. Production
# serves MEDIA_URL from the web server or object storage, ideally on another origin.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
# Unknown paths answer 404 whatever the method; CSRF (which would answer an HTML 403 to a POST
# carrying a session cookie) has nothing to protect there.
urlpatterns.append(re_path(r"^", csrf_exempt(not_found)))

handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
handler404 = "config.views.page_not_found"
handler500 = "config.views.server_error"
