from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager


class OrganizationAPIKeyManager(BaseAPIKeyManager):
    def get_usable_keys(self):
        # The library's hook; the tenant comes with the key, in the same query.
        return super().get_usable_keys().select_related("tenant")


class OrganizationAPIKey(AbstractAPIKey):
    """The peer's key bound to one tenant (the library guide's `OrganizationAPIKey`)."""

    objects = OrganizationAPIKeyManager()
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="peer_api_keys"
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "Organization API key"
