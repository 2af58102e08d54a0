import uuid

from django.conf import settings
from django.db import models

from tenants.models import Tenant


class ActorType(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """One append-only event. A tenant's events form its chain; tenant-less ones the platform chain.

    `seq`, `prev_hash` and `hash` are assigned when the chain is sealed (audit.services); until
    then they are empty.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null for platform events. The one table with a nullable tenant: see README, "Citus".
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="audit_events"
    )
    event_type = models.CharField(max_length=100)
    actor_type = models.CharField(
        max_length=16, choices=ActorType.choices, default=ActorType.SYSTEM
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        # The id stays after the user is deleted: an audit record is never rewritten.
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    # Who acted, as known at the time (email, key prefix, task name): survives the actor's deletion.
    actor_label = models.CharField(max_length=254, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(db_index=True)
    seq = models.BigIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="audit_event_tenant_time"),
            models.Index(
                fields=["tenant", "event_type", "-created_at"], name="audit_event_tenant_type"
            ),
            models.Index(
                fields=["tenant", "created_at", "id"],
                name="audit_event_unsealed",
                condition=models.Q(seq__isnull=True),
            ),
        ]
        constraints = [
            # One gapless sequence per chain. NULLs are distinct in a unique index, so the
            # platform chain (tenant NULL) needs its own partial constraint.
            models.UniqueConstraint(
                fields=["tenant", "seq"],
                condition=models.Q(seq__isnull=False),
                name="audit_event_tenant_seq_unique",
            ),
            models.UniqueConstraint(
                fields=["seq"],
                condition=models.Q(tenant__isnull=True, seq__isnull=False),
                name="audit_event_platform_seq_unique",
            ),
        ]

    def __str__(self):
        return f"{self.event_type} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class AuditCheckpoint(models.Model):
    """A signed statement that a chain had `head_hash` at `seq`: the anchor that catches a
    truncated tail or a consistently re-hashed suffix. Append-only, like the events."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null for the platform chain.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="audit_checkpoints"
    )
    seq = models.BigIntegerField()
    head_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    # base64 Ed25519 signature of audit.canonical.checkpoint_message(...)
    signature = models.CharField(max_length=128)
    # Fingerprint of the public key that verifies the signature (key rotation).
    key_id = models.CharField(max_length=16)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "seq"], name="audit_checkpoint_chain_seq")]

    def __str__(self):
        return f"checkpoint of {self.tenant_id or 'platform'} at seq {self.seq}"

    @property
    def chain(self) -> str:
        return str(self.tenant_id) if self.tenant_id else PLATFORM_CHAIN


PLATFORM_CHAIN = "platform"


class TenantAuditChain(Tenant):
    """A tenant seen as its audit chain: the admin's chain-status page."""

    class Meta:
        proxy = True
        verbose_name = "tenant audit chain"
        verbose_name_plural = "tenant audit chains"
