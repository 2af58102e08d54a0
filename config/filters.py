"""The filter backends of every list, and filter fields shared by every app's FilterSets."""

import functools
from datetime import UTC

import django_filters
from django import forms
from django_filters.rest_framework import DjangoFilterBackend
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


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, without the work it does on every request to no effect.

    - A request that names none of its FilterSet's filters is not filtered through it.
      django-filter makes the FilterSet, a copy of each of its filters, a form class from them
      and the form, then cleans every field of it, on every list request (a tenth of a page
      of members); with no value given, each filter gives its queryset back as it is. A
      parameter is taken to name a filter when it is the filter's name or starts with it and
      an underscore (the parameters of a range's or a lookup's widget), so a request naming
      one is always filtered. A FilterSet that filters by rules of its own (an override of
      `filter_queryset`, `qs`, `is_valid`, `form`, `get_form_class` or `__init__`: the
      notifications' default channel) or has a required filter is always made.
    - A view's `filterset_fields` make their FilterSet class once per view and model, where
      django-filter makes a new class on every request."""

    def get_filterset_class(self, view, queryset=None):
        fields = getattr(view, "filterset_fields", None)
        if getattr(view, "filterset_class", None) or not fields or queryset is None:
            return super().get_filterset_class(view, queryset)
        key = (type(view), queryset.model, repr(fields))
        made = _AUTOMATIC_FILTERSETS.get(key)
        if made is None:
            made = _AUTOMATIC_FILTERSETS[key] = super().get_filterset_class(view, queryset)
        return made

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None:
            return queryset
        if _filters_only_given_values(filterset_class) and not _names_a_filter(
            request.query_params, filterset_class.base_filters
        ):
            return queryset
        return super().filter_queryset(request, queryset, view)


# (view class, model, fields) -> the FilterSet class made for them. Two threads making the same
# one at once each make a class, and one is kept: both filter alike.
_AUTOMATIC_FILTERSETS: dict = {}

# What a FilterSet overrides when it filters by more than the values it is given.
_FILTERING_BY_OWN_RULES = (
    "__init__",
    "filter_queryset",
    "qs",
    "is_valid",
    "form",
    "get_form_class",
)


@functools.cache
def _filters_only_given_values(filterset_class) -> bool:
    """Whether `filterset_class` leaves its queryset as it is when no filter is given a value."""
    base = django_filters.FilterSet
    return all(
        getattr(filterset_class, name) is getattr(base, name) for name in _FILTERING_BY_OWN_RULES
    ) and not any(f.extra.get("required") for f in filterset_class.base_filters.values())


def _names_a_filter(parameters, filters) -> bool:
    return any(
        parameter == name or parameter.startswith(f"{name}_")
        for parameter in parameters
        for name in filters
    )
