"""The API's credentials: hashed tokens, API keys and JWTs."""

import hmac
import re
from functools import partial
from typing import NamedTuple

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db.models import F, FilteredRelation, Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework import exceptions
from rest_framework.authentication import (
    BaseAuthentication,
    SessionAuthentication,
    TokenAuthentication,
)
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from config import epoch
from config.exceptions import ApplicationError
from config.prepared import CompiledQuery
from tenants.models import Membership, MembershipStatus, Tenant
from tenants.permissions import effective_permissions, expand_scopes

from .models import APIKey, AuthToken, hash_secret
from .principals import token_principal, user_principal

API_KEY_HEADER = "X-API-Key"
API_KEY_KEYWORD = "Api-Key"
# OpenAI's SDKs send their key as `Authorization: Bearer <key>`: an API key there is accepted
# too (it cannot be mistaken for a JWT, which never starts with the key's prefix).
BEARER_KEYWORD = "Bearer"
API_KEY_PREFIX = "cp_"
_API_KEY_META = "HTTP_X_API_KEY"
_API_KEY_PATTERN = re.compile(r"^cp_(?P<key_id>[0-9a-f]{32})_(?P<secret>[A-Za-z0-9_-]{43})\Z")


def refuse_conflicting_credentials(request) -> None:
    """A request carries one credential. `Authorization` and `X-API-Key` together are a 400
    unless they are the same API key: otherwise which one acts would depend on the order the
    authentication classes run in, and a client could be acting as someone it did not mean."""
    api_key = request.META.get(_API_KEY_META, "").strip()
    authorization = request.META.get("HTTP_AUTHORIZATION", "").strip()
    if not (api_key and authorization):
        return
    keyword, _, value = authorization.partition(" ")
    if _names_api_key(keyword) and value.strip() == api_key:
        return
    raise ApplicationError(
        "Send one credential: the Authorization header or X-API-Key, not both.",
        details={API_KEY_HEADER: ["Another credential is in the Authorization header."]},
    )


def _names_api_key(keyword: str, value: str = API_KEY_PREFIX) -> bool:
    """Whether an Authorization header's keyword (and value) carry an API key."""
    keyword = keyword.lower()
    if keyword == API_KEY_KEYWORD.lower():
        return True
    return keyword == BEARER_KEYWORD.lower() and value.strip().startswith(API_KEY_PREFIX)


class HashedTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, looked up by the key's SHA-256 digest; expired keys fail.

    Unlike DRF's stock token, the database never holds a usable credential. The token, its
    user and their memberships for tenant resolution are one statement (accounts.principals).
    """

    model = AuthToken

    def authenticate(self, request):
        # DRF makes an authenticator per request: the request is this one's for its lookup.
        self.request = request
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        principal = token_principal(self.request, hash_secret(key))
        if principal is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        token = principal.credential
        if token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("Token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token


class BoundTenant(NamedTuple):
    """What an API key brings to tenant resolution (tenants.resolution: `tenant_context`)."""

    tenant: Tenant
    membership: Membership
    permissions: frozenset[str]


def parse_api_key(raw: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key string, else None."""
    match = _API_KEY_PATTERN.match(raw)
    return (match["key_id"], match["secret"]) if match else None


def _key_candidates(key_id: str):
    """The key with its tenant, creator and the creator's active membership there: one query."""
    return (
        APIKey.objects.annotate(
            creator_membership=FilteredRelation(
                "created_by__memberships",
                condition=Q(
                    created_by__memberships__tenant=F("tenant"),
                    created_by__memberships__status=MembershipStatus.ACTIVE,
                ),
            )
        )
        .select_related("tenant", "created_by", "creator_membership")
        # Only what authentication and the request's context read: fewer columns to send and
        # parse on every API-key request. The tenant and the membership stay whole (views and
        # services read them); a deferred field, if ever read, loads on access.
        .defer(
            "key_id",
            "usage_count",
            "success_count",
            "failed_count",
            "response_time_us_total",
            "requests_by_endpoint",
            "last_used_at",
            "budget_tokens_used",
            "budget_period",
            "created_at",
            "updated_at",
            "created_by__password",
            "created_by__last_login",
            "created_by__date_joined",
        )
        .filter(key_id=key_id)
        .order_by()
    )


# Compiling this four-table select_related query costs several times more than running it, and
# so do PostgreSQL's parsing and planning of it: every API-key request skips both.
_find_keys = CompiledQuery(_key_candidates, APIKey._meta.get_field("key_id"))


class APIKeyAuthentication(BaseAuthentication):
    """`X-API-Key: <key>`, `Authorization: Api-Key <key>` or `Authorization: Bearer <key>`
    (what OpenAI's SDKs send).

    request.user is the key's creator, request.auth the APIKey, carrying `tenant_context` (its
    tenant, the creator's membership, and the key's scopes intersected with the creator's current
    permissions), which tenant resolution uses without another query. Revoked, deactivated or
    expired keys, and keys whose creator left the tenant, are refused (401).
    """

    def authenticate(self, request):
        raw = request.META.get(_API_KEY_META)
        if not raw:
            authorization = request.META.get("HTTP_AUTHORIZATION", "")
            keyword, _, value = authorization.partition(" ")
            if not _names_api_key(keyword, value):
                return None
            raw = value
        parsed = parse_api_key(raw.strip())
        if parsed is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        key_id, secret = parsed
        digest = hash_secret(secret)
        # The key's rows may be a kept lookup (config.epoch), which the request's admission
        # confirms; the secret is compared on every request all the same.
        candidates = _find_keys(key_id, fetch=partial(epoch.fetch_kept, request))
        key = next((k for k in candidates if hmac.compare_digest(k.secret_hash, digest)), None)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return self._accept(request, key)

    def _accept(self, request, key: APIKey):
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if not key.is_active:
            raise exceptions.AuthenticationFailed("This API key is deactivated.")
        if key.is_expired():
            raise exceptions.AuthenticationFailed("This API key has expired.")
        creator = key.created_by
        membership = getattr(key, "creator_membership", None)
        if creator is None or not creator.is_active or membership is None:
            raise exceptions.AuthenticationFailed(
                "This API key's creator is no longer an active member of its organization."
            )
        membership.tenant = key.tenant
        membership.user = creator
        permissions = expand_scopes(key.scopes) & effective_permissions(
            membership.role, membership.permissions
        )
        key.tenant_context = BoundTenant(key.tenant, membership, permissions)
        # Read by accounts.usage when the response is finalized.
        request._request.api_key = key
        return creator, key

    def authenticate_header(self, request):
        return API_KEY_KEYWORD


class BearerJWTAuthentication(JWTAuthentication):
    """`Authorization: Bearer <access JWT>` from POST /api/v1/auth/login (simplejwt).

    The user and their memberships for tenant resolution are one statement
    (accounts.principals); simplejwt's checks on the user (active, password unchanged since
    the token) are applied to it as simplejwt applies them. Errors are the envelope's plain
    message, never simplejwt's nested detail.
    """

    def authenticate(self, request):
        self.request = request
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            if exc.get_codes() == "password_changed":
                raise exceptions.AuthenticationFailed(
                    "The token was issued before a password change."
                ) from None
            raise exceptions.AuthenticationFailed("Invalid or expired token.") from None

    def get_user(self, validated_token):
        try:
            user_id = validated_token[jwt_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken("Token contained no recognizable user identification") from None
        if jwt_settings.USER_ID_FIELD != "id":
            raise ImproperlyConfigured("SIMPLE_JWT['USER_ID_FIELD'] must be the user's id.")
        principal = user_principal(self.request, user_id)
        if principal is None:
            raise exceptions.AuthenticationFailed("User not found", code="user_not_found")
        user = principal.user
        if jwt_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise exceptions.AuthenticationFailed("User is inactive", code="user_inactive")
        if jwt_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            jwt_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise exceptions.AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        return user


class PrincipalSessionAuthentication(SessionAuthentication):
    """The signed-in session of the admin and the browsable API, CSRF-checked as DRF's.

    Reads the session's user and their memberships for tenant resolution in one statement
    (accounts.principals) instead of Django's user query, and verifies the session exactly as
    `django.contrib.auth.get_user` does: the backend it was signed in with must still be
    configured, and the password hash it was signed in under must still be the user's (the
    secret key's fallbacks accepted, the session then moved to the current one); otherwise the
    session is flushed and the request is anonymous.
    """

    def authenticate(self, request):
        django_request = request._request
        cached = getattr(django_request, "_cached_user", None)
        if cached is not None:
            # Something before the view already read the session's user: trust that reading.
            return super().authenticate(request)
        session = getattr(django_request, "session", None)
        if session is None:
            return None
        try:
            user_id = session[auth.SESSION_KEY]
            backend_path = session[auth.BACKEND_SESSION_KEY]
        except KeyError:
            return None
        if backend_path not in settings.AUTHENTICATION_BACKENDS:
            return None
        backend = auth.load_backend(backend_path)
        if not isinstance(backend, ModelBackend):
            return super().authenticate(request)  # a backend of its own: Django's reading
        principal = user_principal(request, user_id)
        user = principal.user if principal is not None else None
        if user is not None and not backend.user_can_authenticate(user):
            user = None  # what ModelBackend.get_user answers for an inactive user
        if user is not None and not _session_verified(session, user):
            user = None
        # What django.contrib.auth's middleware would have read, so request.user agrees.
        django_request._cached_user = user or AnonymousUser()
        if user is None:
            return None
        self.enforce_csrf(request)
        return (user, None)


def _session_verified(session, user) -> bool:
    """django.contrib.auth.get_user's check of a session against its user's password hash."""
    session_hash = session.get(auth.HASH_SESSION_KEY)
    current = user.get_session_auth_hash()
    if session_hash and constant_time_compare(session_hash, current):
        return True
    if session_hash and any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    ):
        session.cycle_key()
        session[auth.HASH_SESSION_KEY] = current
        return True
    session.flush()
    return False
