"""The page an invitation email links to (INVITATION_ACCEPT_URL's default), for deployments
without a front end of their own: a form whose script posts the token, and a name and password
for a new account, to POST /api/v1/invitations/accept, which holds every rule (single use,
expiry, seats, password validators, the `auth` rate). The page itself reads nothing and
changes nothing."""

import secrets

from django.http import JsonResponse
from django.urls import reverse
from django.views.generic import TemplateView

from config.exceptions import error_body

from ..serializers.members import INVITATION_TOKEN_MAX_LENGTH


class InvitationAcceptPage(TemplateView):
    template_name = "tenants/invitation_accept.html"
    http_method_names = ["get", "head", "options"]

    def get(self, request, *args, **kwargs):
        # The page's one inline script and style run under a fresh nonce; nothing else does.
        self.nonce = secrets.token_urlsafe(16)
        response = super().get(request, *args, **kwargs)
        response["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{self.nonce}'; "
            f"style-src 'nonce-{self.nonce}'; connect-src 'self'; form-action 'none'; "
            "base-uri 'none'; frame-ancestors 'none'"
        )
        # The token is in the address: keep it out of caches and of any Referer header.
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
        return response

    def get_context_data(self, **kwargs):
        token = self.request.GET.get("token", "").strip()
        return {
            "token": token if len(token) <= INVITATION_TOKEN_MAX_LENGTH else "",
            "accept_api": reverse("invitation-accept"),
            "nonce": self.nonce,
        }

    def http_method_not_allowed(self, request, *args, **kwargs):
        response = JsonResponse(
            error_body("METHOD_NOT_ALLOWED", f'Method "{request.method}" not allowed.'),
            status=405,
        )
        response["Allow"] = ", ".join(m.upper() for m in self._allowed_methods())
        return response
