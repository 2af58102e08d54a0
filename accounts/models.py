import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from config.models import UUIDModel
from config.validators import validate_name
from tenants.models import TenantOwned


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, username):
        return self.get(email__iexact=username)


class User(UUIDModel, AbstractBaseUser, PermissionsMixin):
    """A person; logs in with email. Tenant access comes from memberships, not from this row."""

    email = models.EmailField(max_length=254, unique=True)
    name = models.CharField(max_length=200, blank=True, validators=[validate_name])
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(
        default=False,
        help_text="Platform operator: admin site, tenant lifecycle, cross-tenant views.",
    )
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["name"]

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
        ]

    def __str__(self):
        return self.email

    def clean(self):
        super().clean()
        self.email = self.__class__.objects.normalize_email(self.email).lower()


def hash_secret(raw: str) -> str:
    """SHA-256 hex digest: the only form in which a high-entropy secret is stored."""
    return hashlib.sha256(raw.encode()).hexdigest()


class AuthToken(UUIDModel):
    """A bearer token from POST /auth/token/. Only its SHA-256 digest is stored; requests find
    the token by it. The UUID `id` names the row elsewhere (admin URLs, deletion) so that the
    digest never leaves the database."""

    digest = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="auth_tokens")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"token for {self.user_id} (expires {self.expires_at:%Y-%m-%d %H:%M})"

    @staticmethod
    def generate_key() -> str:
        return secrets.token_hex(20)

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class APIKeyQuerySet(models.QuerySet):
    def usable(self):
        """Keys that may still authenticate (active, not revoked); expiry is checked per use."""
        return self.filter(is_active=True, revoked_at__isnull=True)


class APIKey(TenantOwned):
    """A tenant's machine credential, acting for its creator within `scopes`.

    The key string is `cp_<key_id>_<secret>`: `key_id` (128 random bits, hex) finds the row,
    and only the SHA-256 digest of the secret (256 random bits) is stored. A request through
    the key holds the key's scopes intersected with the creator's current permissions in the
    tenant. Revoking keeps the row (with its usage figures) and sets `revoked_at`.
    """

    PREFIX = "cp_"

    name = models.CharField(max_length=200, validators=[validate_name])
    key_id = models.CharField(max_length=32, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    key_prefix = models.CharField(
        max_length=32, editable=False, help_text="Masked form for display."
    )
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        User,
        # The key dies with its creator's membership anyway; the row and its usage stay.
        on_delete=models.SET_NULL,
        null=True,
        related_name="api_keys",
        editable=False,
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Usage, written by the batched flush (accounts.usage), never on the request path.
    usage_count = models.PositiveBigIntegerField(default=0, editable=False)
    success_count = models.PositiveBigIntegerField(default=0, editable=False)
    failed_count = models.PositiveBigIntegerField(default=0, editable=False)
    response_time_us_total = models.PositiveBigIntegerField(default=0, editable=False)
    requests_by_endpoint = models.JSONField(default=dict, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Optional cap on the gateway tokens calls through this key use per calendar month (UTC),
    # enforced like the tenant's tokens quota (accounts.services.api_key_tokens_reserve).
    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    budget_tokens_used = models.PositiveBigIntegerField(default=0, editable=False)
    # The first day of the month `budget_tokens_used` counts; a call in a later month restarts it.
    budget_period = models.DateField(null=True, blank=True, editable=False)

    objects = APIKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key_id"], name="accounts_apikey_tenant_key"),
        ]
        indexes = [
            # Authentication looks a key up by key_id alone (the tenant comes from the key).
            models.Index(fields=["key_id"], name="accounts_apikey_key_id"),
            models.Index(fields=["tenant", "-created_at"], name="accounts_apikey_tenant_time"),
        ]

    def __str__(self):
        return f"{self.name} ({self.key_prefix})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


def generate_api_key() -> tuple[str, dict]:
    """A new key string and the fields stored for it (never the key or its secret)."""
    key_id = secrets.token_hex(16)
    secret = secrets.token_urlsafe(32)
    raw = f"{APIKey.PREFIX}{key_id}_{secret}"
    return raw, {
        "key_id": key_id,
        "secret_hash": hash_secret(secret),
        "key_prefix": f"{APIKey.PREFIX}{key_id[:4]}...{secret[-4:]}",
    }
