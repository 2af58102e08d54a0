"""Filter fields shared by every app's FilterSets."""

from datetime import UTC

import django_filters
from django import forms
from rest_framework import filters


class UTCIsoDateTimeField(forms.DateTimeField):
    """ISO 8601, converted to UTC: PostgreSQL refuses offsets beyond ±15:59 that Python allows."""

    input_formats = [django_filters.fields.IsoDateTimeField.ISO_8601]

    def strptime(self, value, format):
        return django_filters.fields.IsoDateTimeField().strptime(value, format)

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Date and time out of range.", code="invalid") from None


class UTCDateTimeFilter(django_filters.Filter):
    field_class = UTCIsoDateTimeField


class OrderingFilter(filters.OrderingFilter):
    """DRF's `ordering=`, plus a view's `ordering_aliases`: a public field sorted by another
    expression, e.g. `{"priority": "priority_rank"}` so that priorities sort low < medium <
    high < urgent rather than alphabetically (the view annotates the rank)."""

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        aliases = getattr(view, "ordering_aliases", None)
        if not ordering or not aliases:
            return ordering
        return [
            ("-" if term.startswith("-") else "") + aliases.get(term.lstrip("-"), term.lstrip("-"))
            for term in ordering
        ]


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """One value or several, comma-separated (`?status=active,completed`), each a choice."""
