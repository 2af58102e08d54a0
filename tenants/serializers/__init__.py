"""Serializers of the tenants app, one module per area, and the tenant-scoped reference helpers
every app's serializers and FilterSets use."""

from .fields import TenantScopedPrimaryKeyRelatedField, tenant_queryset

__all__ = ["TenantScopedPrimaryKeyRelatedField", "tenant_queryset"]
