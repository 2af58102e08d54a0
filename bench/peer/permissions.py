from rest_framework_api_key.permissions import BaseHasAPIKey

from .models import OrganizationAPIKey


class HasOrganizationAPIKey(BaseHasAPIKey):
    """The library's `BaseHasAPIKey` over the tenant-bound key. It keeps the key it checked, so
    the view and the throttle read the tenant without looking the key up again."""

    model = OrganizationAPIKey

    def has_permission(self, request, view):
        raw = self.get_key(request)
        if not raw:
            return False
        try:
            key = self.model.objects.get_from_key(raw)
        except self.model.DoesNotExist:
            return False
        if key.has_expired:
            return False
        request.tenant = key.tenant
        return True
