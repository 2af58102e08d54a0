"""Quota representations: one object per resource (organizations/quotas) and a flat quota
(tenants/{slug}/quota and each tenant in the directory). Storage is counted in bytes and shown
in MB (organizations/quotas) or GB (the flat quota)."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.serializers import CharField, ResponseSerializer

from ..plans import MIB
from ..services.quotas import QuotaState


@extend_schema_field(OpenApiTypes.NUMBER)
class NumberField(serializers.ReadOnlyField):
    """An int or a float, as computed."""


def _in_unit(value: int, resource: str, unit: int = MIB) -> int | float:
    if resource != "storage":
        return value
    whole, rest = divmod(value, unit)
    return whole if rest == 0 else round(value / unit, 2)


class QuotaStateSerializer(ResponseSerializer):
    resource = CharField()
    current = NumberField()
    limit = NumberField()
    percentage = serializers.FloatField()
    warning_threshold = serializers.FloatField()
    exceeded = serializers.BooleanField()

    def to_representation(self, state: QuotaState):
        return {
            "resource": state.resource,
            "current": _in_unit(state.current, state.resource),
            "limit": _in_unit(state.limit, state.resource),
            "percentage": state.percentage,
            "warning_threshold": state.warning_threshold,
            "exceeded": state.exceeded,
        }


class OrganizationQuotasSerializer(ResponseSerializer):
    """GET organizations/quotas: one object per resource (documents, users, tokens, storage in MB,
    api_calls), and the quota period."""

    organization_id = serializers.UUIDField()
    documents = QuotaStateSerializer()
    users = QuotaStateSerializer()
    tokens = QuotaStateSerializer()
    storage = QuotaStateSerializer()
    api_calls = QuotaStateSerializer()
    quota_reset_at = serializers.DateTimeField()
    last_reset_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance):
        tenant, states = instance
        rendered = {
            resource: QuotaStateSerializer(state).data for resource, state in states.items()
        }
        return {
            "organization_id": str(tenant.pk),
            **rendered,
            "quota_reset_at": serializers.DateTimeField().to_representation(tenant.quota_reset_at),
            "last_reset_at": serializers.DateTimeField().to_representation(tenant.last_reset_at),
            "updated_at": serializers.DateTimeField().to_representation(timezone.now()),
        }


class TenantQuotaSerializer(ResponseSerializer):
    """A tenant's flat quota: limit, used and percentage for API calls, AI tokens, storage (GB)
    and documents, the user limit and count, and the quota period."""

    api_calls_limit = serializers.IntegerField()
    api_calls_used = serializers.IntegerField()
    api_calls_percentage = serializers.FloatField()
    ai_tokens_limit = serializers.IntegerField()
    ai_tokens_used = serializers.IntegerField()
    ai_tokens_percentage = serializers.FloatField()
    storage_limit_gb = serializers.FloatField()
    storage_used_gb = serializers.FloatField()
    storage_percentage = serializers.FloatField()
    documents_limit = serializers.IntegerField()
    documents_used = serializers.IntegerField()
    documents_percentage = serializers.FloatField()
    max_users = serializers.IntegerField()
    current_users = serializers.IntegerField()
    quota_reset_at = serializers.DateTimeField()
    last_reset_at = serializers.DateTimeField()

    def to_representation(self, instance):
        tenant, states = instance
        gib = 1024 * MIB
        datetime_field = serializers.DateTimeField()
        return {
            "api_calls_limit": states["api_calls"].limit,
            "api_calls_used": states["api_calls"].current,
            "api_calls_percentage": states["api_calls"].percentage,
            "ai_tokens_limit": states["tokens"].limit,
            "ai_tokens_used": states["tokens"].current,
            "ai_tokens_percentage": states["tokens"].percentage,
            "storage_limit_gb": _in_unit(states["storage"].limit, "storage", gib),
            "storage_used_gb": _in_unit(states["storage"].current, "storage", gib),
            "storage_percentage": states["storage"].percentage,
            "documents_limit": states["documents"].limit,
            "documents_used": states["documents"].current,
            "documents_percentage": states["documents"].percentage,
            "max_users": states["users"].limit,
            "current_users": states["users"].current,
            "quota_reset_at": datetime_field.to_representation(tenant.quota_reset_at),
            "last_reset_at": datetime_field.to_representation(tenant.last_reset_at),
        }
