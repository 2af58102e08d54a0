"""FilterSets of the tenants app."""

import django_filters
from django.db.models import Q

from .models import Membership, MembershipStatus, Role


class MemberFilter(django_filters.FilterSet):
    """The member filters: role, status, and `search` over email and name (a pending
    invitation's address included)."""

    role = django_filters.ChoiceFilter(choices=Role.choices)
    status = django_filters.ChoiceFilter(choices=MembershipStatus.choices)
    search = django_filters.CharFilter(
        method="filter_search", max_length=254, label="Search by email or name"
    )

    class Meta:
        model = Membership
        fields = ["role", "status", "search"]

    def filter_search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        # A pending invitation matches on the address typed only: matching on the name of an
        # account the address may have would reveal that account.
        joined = ~Q(status=MembershipStatus.INVITED)
        return queryset.filter(
            Q(invited_email__icontains=value)
            | (joined & (Q(user__email__icontains=value) | Q(user__name__icontains=value)))
        )
