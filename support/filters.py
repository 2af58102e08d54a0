"""FilterSets of the support app (django-filter), each named by a viewset's
`filterset_class`.

The queryset a FilterSet narrows is already the request tenant's, but a filter choosing among
other objects (`ModelChoiceFilter`) builds its own: it takes
`queryset=tenants.serializers.fields.tenant_queryset(Model)`, so no other tenant's row is
listed or matched. Timestamps use `config.filters.UTCDateTimeFilter`; text filters set a
`max_length`.
"""

import django_filters

from config.filters import ChoiceInFilter

from .models import (
    CustomerProfile,
    CustomerStanding,
    CustomerTier,
    Representative,
    RepresentativeRole,
    RepresentativeStatus,
)


class CustomerProfileFilter(django_filters.FilterSet):
    tier = ChoiceInFilter(choices=CustomerTier.choices)
    standing = ChoiceInFilter(choices=CustomerStanding.choices)
    email = django_filters.CharFilter(lookup_expr="iexact", max_length=254)
    external_id = django_filters.CharFilter(max_length=200)

    class Meta:
        model = CustomerProfile
        fields = ["tier", "standing", "email", "external_id"]


class RepresentativeFilter(django_filters.FilterSet):
    role = ChoiceInFilter(choices=RepresentativeRole.choices)
    status = ChoiceInFilter(choices=RepresentativeStatus.choices)
    user_id = django_filters.UUIDFilter(field_name="user_id")

    class Meta:
        model = Representative
        fields = ["role", "status", "user_id"]
