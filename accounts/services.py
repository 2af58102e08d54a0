"""User and credential state changes: tokens, JWT sessions, API keys."""

from datetime import UTC, date, datetime

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from audit.services import record
from config.db import delete_in_batches, locked_or_404, raw_uuid
from config.exceptions import ApplicationError, Conflict, QuotaExceeded
from config.services import model_update
from tenants.models import Membership, MembershipStatus, Tenant
from tenants.permissions import effective_permissions, expand_scopes, unknown_scopes
from tenants.plans import first_of_next_month

from .models import APIKey, AuthToken, User, generate_api_key, hash_secret
from .usage import flush_api_key_usage, key_counter_writes, usage_store


class LoginLocked(ApplicationError):
    """Too many failed logins for this account from this address (django-axes)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message, details={"retry_after_seconds": retry_after})
        # Read by the exception handler for the Retry-After header.
        self.wait = retry_after


class InvalidRefreshToken(ApplicationError):
    """A refresh token that does not verify, has expired, or was already used (rotated away)."""

    status_code = status.HTTP_401_UNAUTHORIZED
    code = "AUTHENTICATION_REQUIRED"
    default_detail = "The refresh token is invalid, expired or already used."
    auth_header = 'Bearer realm="api"'


class NotAMember(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "INSUFFICIENT_PERMISSIONS"
    default_detail = (
        "API keys act on behalf of an active member of the organization, which you are not."
    )


@transaction.atomic
def user_create(
    *, email: str, password: str | None, name: str = "", is_superuser: bool = False, actor=None
) -> User:
    """Create a user (a staff superuser when `is_superuser`); None password means unusable."""
    manager = User.objects
    create = manager.create_superuser if is_superuser else manager.create_user
    try:
        with transaction.atomic():
            user = create(email=email, password=password, name=name)
    except IntegrityError:
        # An account for this address saved after the caller checked (a double-clicked
        # "Save" in the admin).
        raise Conflict("A user with this email address already exists.") from None
    record(
        tenant=None,
        event_type="user.created",
        actor=actor,
        payload={"user_id": str(user.pk), "is_staff": user.is_staff},
    )
    return user


@transaction.atomic
def auth_token_issue(*, user: User) -> str:
    """Issue a new API token for `user`; returns the raw key, which is never stored."""
    raw_key = AuthToken.generate_key()
    AuthToken.objects.create(
        digest=hash_secret(raw_key),
        user=user,
        expires_at=timezone.now() + settings.AUTH_TOKEN_TTL,
    )
    record(
        tenant=None,
        event_type="auth.login.succeeded",
        actor=user,
        payload={"method": "token"},
    )
    return raw_key


@transaction.atomic
def auth_login_failed(*, identifier: str, method: str = "token", locked_out: bool = False) -> None:
    """Record a failed login attempt (the identifier tried, never the password)."""
    record(
        tenant=None,
        event_type="auth.login.failed",
        actor_label=identifier[:254],
        payload={
            "method": method,
            "identifier": identifier[:254],
            "reason": "locked_out" if locked_out else "invalid_credentials",
        },
    )


def _only_membership(user: User) -> Membership | None:
    memberships = list(
        Membership.objects.filter(user=user, status=MembershipStatus.ACTIVE).order_by()[:2]
    )
    return memberships[0] if len(memberships) == 1 else None


def _jwt_pair(refresh: RefreshToken) -> dict:
    return {
        "access_token": str(refresh.access_token),
        "refresh_token": str(refresh),
        "token_type": "bearer",
        "expires_in": int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
    }


@transaction.atomic
def jwt_login(*, user: User) -> dict:
    """Open a JWT session: an access and a refresh token, and who the user is."""
    refresh = RefreshToken.for_user(user)
    membership = _only_membership(user)
    record(tenant=None, event_type="auth.login.succeeded", actor=user, payload={"method": "jwt"})
    return {
        **_jwt_pair(refresh),
        "user": {
            "id": user.pk,
            "email": user.email,
            "name": user.name,
            "organization_id": membership.tenant_id if membership else None,
            "role": membership.role if membership else None,
        },
    }


@transaction.atomic
def jwt_refresh(*, refresh_token: str) -> dict:
    """A new access token and a rotated refresh token; the presented one is blacklisted.

    The refresh token's row is locked first, so two concurrent uses of one refresh token
    cannot both succeed: the second finds it blacklisted (401).
    """
    try:
        presented = RefreshToken(refresh_token)
    except TokenError:
        raise InvalidRefreshToken() from None
    jti = presented[jwt_settings.JTI_CLAIM]
    # order_by: the model orders by its (nullable) user, an outer join FOR UPDATE refuses.
    outstanding = (
        OutstandingToken.objects.select_for_update().filter(jti=jti).order_by("pk").first()
    )
    if outstanding is None or BlacklistedToken.objects.filter(token=outstanding).exists():
        raise InvalidRefreshToken()
    user = User.objects.filter(pk=presented.get(jwt_settings.USER_ID_CLAIM), is_active=True).first()
    if user is None:
        raise InvalidRefreshToken()
    if jwt_settings.CHECK_REVOKE_TOKEN and presented.get(
        jwt_settings.REVOKE_TOKEN_CLAIM
    ) != get_md5_hash_password(user.password):
        # The password changed since this session began.
        raise InvalidRefreshToken()
    BlacklistedToken.objects.create(token=outstanding)
    return _jwt_pair(RefreshToken.for_user(user))


@transaction.atomic
def auth_logout(*, user: User, credential, refresh_token: str | None) -> None:
    """End a session: blacklist the given refresh token, delete the hashed token used to call.

    An access JWT stays valid until it expires (JWT_ACCESS_TOKEN_MINUTES): it is not stored.
    """
    ended = []
    if refresh_token:
        try:
            refresh = RefreshToken(refresh_token)
        except TokenError:
            raise ApplicationError(
                "The refresh token is invalid, expired or already used.",
                details={"refresh_token": ["Invalid, expired or already used."]},
            ) from None
        if refresh.get(jwt_settings.USER_ID_CLAIM) != str(user.pk):
            raise ApplicationError(
                "The refresh token belongs to another user.",
                details={"refresh_token": ["Belongs to another user."]},
            )
        refresh.blacklist()
        ended.append("jwt")
    if isinstance(credential, AuthToken):
        AuthToken.objects.filter(pk=credential.pk).delete()
        ended.append("token")
    if not ended:
        raise ApplicationError(
            "Send the refresh_token of the session to end.",
            details={"refresh_token": ["This field is required to log out a JWT session."]},
        )
    record(tenant=None, event_type="auth.logout", actor=user, payload={"ended": ended})


def auth_tokens_purge_expired(*, batch_size: int = 1000) -> int:
    """Delete expired credentials in batches: hashed tokens, the JWT refresh-token records
    (outstanding and blacklisted) past their expiry, and the admin's expired sessions (Django
    never deletes a session row on its own: without this the table only grows). Returns how
    many were removed; safe to run concurrently."""
    tokens = _delete_expired_in_batches(AuthToken, batch_size)
    refresh_tokens = _delete_expired_in_batches(OutstandingToken, batch_size)
    sessions = _delete_expired_in_batches(Session, batch_size, expiry="expire_date")
    if tokens or refresh_tokens or sessions:
        with transaction.atomic():
            record(
                tenant=None,
                event_type="auth.tokens.purged",
                payload={
                    "tokens_removed": tokens,
                    "refresh_tokens_removed": refresh_tokens,
                    "sessions_removed": sessions,
                },
            )
    return tokens + refresh_tokens + sessions


def _delete_expired_in_batches(model, batch_size: int, *, expiry: str = "expires_at") -> int:
    """Rows of `model` whose `expiry` has passed, deleted `batch_size` at a time."""
    expired = model.objects.filter(**{f"{expiry}__lte": timezone.now()})
    return delete_in_batches(expired, batch_size=batch_size)


# API keys ----------------------------------------------------------------------------------


def _check_scopes(scopes: list[str], *, grantable: frozenset[str]) -> list[str]:
    """Scopes deduplicated in order; unknown ones, or permissions not grantable, are a 400."""
    scopes = list(dict.fromkeys(scopes))
    unknown = unknown_scopes(scopes)
    if unknown:
        raise ApplicationError(
            f"Unknown scope(s): {', '.join(unknown)}.",
            details={
                "scopes": [
                    f"Unknown scope(s): {', '.join(unknown)}. Use read, write or permission "
                    "strings such as documents.read."
                ]
            },
        )
    explicit = {scope for scope in scopes if "." in scope}
    missing = sorted(expand_scopes(explicit) - grantable)
    if missing:
        raise ApplicationError(
            f"You cannot grant permissions you do not hold: {', '.join(missing)}.",
            details={"scopes": [f"You do not hold: {', '.join(missing)}."]},
        )
    return scopes


def _member_permissions(*, tenant: Tenant, user: User) -> frozenset[str]:
    membership = Membership.objects.filter(
        tenant=tenant, user=user, status=MembershipStatus.ACTIVE
    ).first()
    if membership is None:
        raise NotAMember()
    return effective_permissions(membership.role, membership.permissions)


def _key_payload(api_key: APIKey) -> dict:
    return {"api_key_id": str(api_key.pk), "name": api_key.name, "key_prefix": api_key.key_prefix}


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant,
    actor: User,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    monthly_token_budget: int | None = None,
) -> tuple[APIKey, str]:
    """Create a key acting for `actor`; returns it and the key string, which is never stored.

    The actor must be an active member (the key holds at most the creator's current rights),
    and may grant explicit permissions only among those they hold. At most
    API_KEYS_PER_TENANT keys that are not revoked per organization (409 past it).
    """
    grantable = _member_permissions(tenant=tenant, user=actor)
    scopes = _check_scopes(scopes, grantable=grantable)
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError(
            "The expiry must be in the future.", details={"expires_at": ["Must be in the future."]}
        )
    # Revoked keys stay (with their usage figures) and do not count; deactivated ones may be
    # reactivated, so they do.
    Tenant.objects.ensure_room(
        tenant.pk,
        APIKey.objects.filter(tenant=tenant, revoked_at__isnull=True),
        limit=settings.API_KEYS_PER_TENANT,
        counted="api_keys",
        noun="API keys that are not revoked",
        advice="Revoke one it no longer uses.",
    )
    raw, secret_fields = generate_api_key()
    api_key = APIKey.objects.create(
        tenant=tenant,
        name=name,
        scopes=scopes,
        expires_at=expires_at,
        monthly_token_budget=monthly_token_budget,
        created_by=actor,
        **secret_fields,
    )
    record(
        tenant=tenant,
        event_type="api_key.created",
        actor=actor,
        payload={
            **_key_payload(api_key),
            "scopes": scopes,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "monthly_token_budget": monthly_token_budget,
        },
    )
    return api_key, raw


_UPDATABLE = ("name", "scopes", "is_active", "monthly_token_budget")


@transaction.atomic
def api_key_update(
    *, api_key: APIKey, actor: User, actor_permissions: frozenset[str], **changes
) -> APIKey:
    """Rename, re-scope, deactivate or reactivate a key; a revoked key stays revoked."""
    unknown_fields = set(changes) - set(_UPDATABLE)
    if unknown_fields:
        raise ValueError(f"api_key_update cannot change {sorted(unknown_fields)}")
    api_key = locked_or_404(APIKey.objects, pk=api_key.pk)
    if "scopes" in changes:
        changes["scopes"] = _check_scopes(changes["scopes"], grantable=actor_permissions)
    if changes.get("is_active") and api_key.revoked_at is not None:
        raise Conflict("A revoked API key cannot be reactivated; create a new key.")
    # Only the changed columns are saved: the usage flush adds to the counters concurrently.
    diff = model_update(instance=api_key, data=changes)
    if diff:
        record(
            tenant=api_key.tenant,
            event_type="api_key.updated",
            actor=actor,
            payload={**_key_payload(api_key), "changes": diff},
        )
    return api_key


@transaction.atomic
def api_key_revoke(*, api_key: APIKey, actor: User | None) -> APIKey:
    """Revoke a key for good (idempotent): it stops authenticating at once; the row stays."""
    api_key = locked_or_404(APIKey.objects, pk=api_key.pk)
    if api_key.revoked_at is not None:
        return api_key
    api_key.is_active = False
    api_key.revoked_at = timezone.now()
    api_key.save(update_fields=["is_active", "revoked_at", "updated_at"])
    record(
        tenant=api_key.tenant,
        event_type="api_key.revoked",
        actor=actor,
        payload=_key_payload(api_key),
    )
    return api_key


# One statement each, no read-modify-write: the month restarts inside the same UPDATE that
# checks the budget, so concurrent calls can never pass it and no reset job is needed. Only the
# model's table name is interpolated; every value is a parameter.
_KEY_TABLE = APIKey._meta.db_table
# The key's tokens this month (the parameter): the count restarts with the month.
BUDGET_USED_SQL = "CASE WHEN budget_period = %s THEN budget_tokens_used ELSE 0 END"
_BUDGET_RESERVE_SQL = (
    f"UPDATE {_KEY_TABLE} SET budget_tokens_used = {BUDGET_USED_SQL} + %s, "  # noqa: S608
    f"budget_period = %s WHERE id = %s AND (monthly_token_budget IS NULL "
    f"OR {BUDGET_USED_SQL} + %s <= monthly_token_budget) RETURNING budget_tokens_used"
)
_BUDGET_ADJUST_SQL = (
    f"UPDATE {_KEY_TABLE} SET budget_tokens_used = CASE WHEN {BUDGET_USED_SQL} + %s > 0 "  # noqa: S608
    f"THEN {BUDGET_USED_SQL} + %s ELSE 0 END, budget_period = %s WHERE id = %s"
)


def budget_month() -> date:
    """The month (its first day, UTC) a key's budget counts in now."""
    return timezone.now().astimezone(UTC).date().replace(day=1)


def api_key_tokens_reserve(*, api_key: APIKey, amount: int) -> None:
    """Count `amount` gateway tokens against the key's monthly budget in one atomic step, or
    refuse with QuotaExceeded (429), counting nothing. A key without a budget only counts."""
    if amount < 0:
        raise ValueError("amount must not be negative")
    month = budget_month()
    with key_counter_writes(), connection.cursor() as cursor:
        cursor.execute(
            _BUDGET_RESERVE_SQL, [month, amount, month, raw_uuid(api_key.pk), month, amount]
        )
        admitted = cursor.fetchone() is not None
    if not admitted:
        api_key.refresh_from_db(
            fields=["budget_tokens_used", "budget_period", "monthly_token_budget"]
        )
        used = api_key.budget_tokens_used if api_key.budget_period == month else 0
        raise api_key_budget_exceeded_error(
            limit=api_key.monthly_token_budget, used=used, amount=amount
        )


def api_key_budget_exceeded_error(*, limit: int, used: int, amount: int) -> QuotaExceeded:
    """The 429 refusing `amount` tokens to a key whose monthly budget `limit` has `used`."""
    return QuotaExceeded(
        "This API key's monthly token budget is exhausted.",
        details={
            "resource": "api_key_tokens",
            "limit": limit,
            "used": used,
            "requested": amount,
            "resets_at": first_of_next_month(),
        },
    )


def api_key_tokens_adjust(*, api_key: APIKey, delta: int) -> None:
    """Settle a reservation: add `delta` (negative gives tokens back), never below zero and
    never refused (the tokens were consumed upstream)."""
    if delta == 0:
        return
    month = budget_month()
    with key_counter_writes(), connection.cursor() as cursor:
        cursor.execute(
            _BUDGET_ADJUST_SQL, [month, delta, month, delta, month, raw_uuid(api_key.pk)]
        )


def api_key_usage(*, api_key: APIKey) -> dict:
    """A key's usage statistics (totals, successes, failures, average response time, requests
    by route): what the flushes wrote plus what is counted but not yet flushed."""
    pending = usage_store().pending(str(api_key.pk))
    total = api_key.usage_count + pending.requests
    time_us = api_key.response_time_us_total + pending.response_time_us
    endpoints = dict(api_key.requests_by_endpoint or {})
    for route, count in pending.endpoints.items():
        endpoints[route] = endpoints.get(route, 0) + count
    return {
        "total_requests": total,
        "success_requests": api_key.success_count + pending.success,
        "failed_requests": api_key.failed_count + pending.failed,
        "avg_response_time_ms": round(time_us / total / 1000, 2) if total else 0.0,
        "requests_by_endpoint": dict(
            sorted(endpoints.items(), key=lambda item: (-item[1], item[0]))
        ),
    }


def api_key_usage_flush() -> int:
    """Write the counted API-key usage to the database (beat and `manage.py flush_api_key_usage`);
    returns how many requests were written."""
    return flush_api_key_usage()
