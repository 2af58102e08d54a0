"""Serializer fields shared across the app: tenant-scoped references (serializers and
FilterSets) and strict JSON booleans."""

from rest_framework import serializers


class TenantScopedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A reference by id to another object of the request's tenant; a foreign tenant's id is
    "does not exist", exactly like a random one."""

    def get_queryset(self):
        queryset = super().get_queryset()
        tenant = self.context.get("tenant")
        return queryset.filter(tenant=tenant) if tenant is not None else queryset.none()


def tenant_queryset(model):
    """A django-filter `queryset=` callable scoped to the request's tenant, for FilterSets."""

    def scoped(request):
        tenant = getattr(request, "tenant", None)
        return model.objects.filter(tenant=tenant) if tenant is not None else model.objects.none()

    return scoped


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: "yes", 1 or "false" are refused, not guessed."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data
