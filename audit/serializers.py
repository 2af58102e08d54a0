from rest_framework import serializers

from config.serializers import (
    CharField,
    ChoiceField,
    ModelSerializer,
    QuerySerializer,
    ResponseSerializer,
)

from .models import AuditEvent


class AuditEventSerializer(ModelSerializer):
    """One audit event: its type and payload, when (`timestamp`), its place in the chain (`seq`,
    `prev_hash`, `hash`), who acted (`actor_*`) and the request context."""

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


class ChainQuerySerializer(QuerySerializer):
    """Which chain: the caller's tenant; staff may name any tenant or the platform chain."""

    tenant_id = serializers.UUIDField(required=False)
    chain = ChoiceField(choices=["platform"], required=False)


class ExportQuerySerializer(ChainQuerySerializer):
    from_seq = serializers.IntegerField(required=False, min_value=1, max_value=2**62, default=1)
    to_seq = serializers.IntegerField(required=False, min_value=1, max_value=2**62)

    def validate(self, attrs):
        if attrs.get("to_seq") is not None and attrs["to_seq"] < attrs["from_seq"]:
            raise serializers.ValidationError({"to_seq": ["Must not be below from_seq."]})
        return attrs


class BrokenLinkSerializer(ResponseSerializer):
    event_id = serializers.UUIDField(allow_null=True)
    event_type = CharField(allow_null=True)
    timestamp = CharField(allow_null=True)
    seq = serializers.IntegerField(allow_null=True)
    reason = CharField()
    computed_hash = CharField(allow_null=True)
    stored_hash = CharField(allow_null=True)


class ChainVerificationSerializer(ResponseSerializer):
    """A chain's verification: whether it is intact (`chain_valid`), how many events were
    verified of how many, the broken links found, and the sealing and checkpoint figures."""

    chain = CharField(help_text='A tenant id, or "platform".')
    chain_valid = serializers.BooleanField()
    verified_count = serializers.IntegerField()
    total_events = serializers.IntegerField()
    unsealed_count = serializers.IntegerField()
    chain_head = CharField(allow_null=True)
    last_seq = serializers.IntegerField()
    checkpoints_checked = serializers.IntegerField()
    broken_links = BrokenLinkSerializer(many=True)


class PublicKeySerializer(ResponseSerializer):
    algorithm = CharField()
    public_key = CharField(help_text="base64 of the raw 32-byte Ed25519 key")
    key_id = CharField()
