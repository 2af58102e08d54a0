"""User and credential state changes."""

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record

from .models import AuthToken, User, hash_secret


@transaction.atomic
def user_create(
    *, email: str, password: str | None, name: str = "", is_superuser: bool = False, actor=None
) -> User:
    """Create a user (a staff superuser when `is_superuser`); None password means unusable."""
    manager = User.objects
    create = manager.create_superuser if is_superuser else manager.create_user
    user = create(email=email, password=password, name=name)
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
def auth_login_failed(*, identifier: str) -> None:
    """Record a failed login attempt (the identifier tried, never the password)."""
    record(
        tenant=None,
        event_type="auth.login.failed",
        actor_label=identifier[:254],
        payload={"method": "token", "identifier": identifier[:254]},
    )


def auth_tokens_purge_expired(*, batch_size: int = 1000) -> int:
    """Delete expired tokens in batches; returns how many were removed. Safe to run concurrently."""
    removed = _purge_expired_token_batches(batch_size)
    if removed:
        with transaction.atomic():
            record(
                tenant=None,
                event_type="auth.tokens.purged",
                payload={"tokens_removed": removed},
            )
    return removed


def _purge_expired_token_batches(batch_size: int) -> int:
    removed = 0
    while True:
        digests = list(
            AuthToken.objects.filter(expires_at__lte=timezone.now()).values_list(
                "digest", flat=True
            )[:batch_size]
        )
        if not digests:
            return removed
        deleted, _ = AuthToken.objects.filter(digest__in=digests).delete()
        removed += deleted
