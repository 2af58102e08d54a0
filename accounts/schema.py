"""The OpenAPI security schemes of the API's credentials (registered when the app is ready)."""

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from tenants.schema import API_KEY_SCHEME


class HashedTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.HashedTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Token authentication: "Token <key>" from POST /api/v1/auth/token/.',
        }


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.APIKeyAuthentication"
    name = API_KEY_SCHEME

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": (
                "API key from POST /api/v1/api-keys/ (`cp_...`), bound to one organization. "
                'Also accepted as "Authorization: Api-Key <key>".'
            ),
        }


class BearerJWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerJWTAuthentication"
    name = "jwtAuth"
    priority = 1  # ahead of drf-spectacular's generic simplejwt extension

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Access token from POST /api/v1/auth/login (refresh: auth/refresh).",
        }


class PrincipalSessionAuthenticationScheme(SessionScheme):
    """The signed-in session, as drf-spectacular describes DRF's (cookieAuth)."""

    target_class = "accounts.authentication.PrincipalSessionAuthentication"
