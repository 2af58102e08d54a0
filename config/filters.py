"""Filter fields shared by every app's FilterSets."""

from datetime import UTC

import django_filters
from django import forms
from rest_framework import filters
from rest_framework.exceptions import ValidationError


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


def distinct_words(words) -> list[str]:
    """`words` without repeats, whatever their case (every search matches case-insensitively),
    each kept as first written."""
    distinct = {}
    for word in words:
        distinct.setdefault(word.casefold(), word)
    return list(distinct.values())


class SearchFilter(filters.SearchFilter):
    """DRF's `search=`, bounded. Each word (or quoted phrase) becomes its own OR of a
    case-insensitive match over every search field, ANDed with the others' and with joins to
    related tables, so the query grows with the words: a few hundred cost PostgreSQL half a
    second, and thousands (a URL holds them) made one backend use memory until the kernel
    killed it, which restarts every connection of the database. Past MAX_LENGTH characters or
    MAX_TERMS distinct words, the answer is a 400; a repeated word is searched once."""

    MAX_LENGTH = 500
    MAX_TERMS = 20

    def get_search_terms(self, request):
        value = request.query_params.get(self.search_param, "")
        if len(value) > self.MAX_LENGTH:
            raise ValidationError({self.search_param: [f"At most {self.MAX_LENGTH} characters."]})
        terms = distinct_words(super().get_search_terms(request))
        if len(terms) > self.MAX_TERMS:
            raise ValidationError(
                {self.search_param: [f"At most {self.MAX_TERMS} words or quoted phrases."]}
            )
        return terms

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["description"] = (
                f"Words or quoted phrases (at most {self.MAX_TERMS}), each matched "
                "case-insensitively in any of the searched fields; every one must match."
            )
            parameter["schema"]["maxLength"] = self.MAX_LENGTH
        return parameters


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
