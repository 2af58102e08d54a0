from rest_framework import serializers

from .models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    """Seed 002's event shape (`timestamp`, `prev_hash`, `hash`) plus actor and request context."""

    tenant_id = serializers.UUIDField(read_only=True, allow_null=True)
    actor_id = serializers.UUIDField(read_only=True, allow_null=True)
    timestamp = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "tenant_id",
            "event_type",
            "actor_type",
            "actor_id",
            "actor_label",
            "payload",
            "request_id",
            "ip_address",
            "user_agent",
            "timestamp",
            "seq",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields
