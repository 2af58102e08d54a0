"""FilterSets of the playground app (django-filter), each named by a viewset's
`filterset_class`. Timestamps use `config.filters.UTCDateTimeFilter`; text filters set a
`max_length`."""

import django_filters

from config.filters import ChoiceInFilter, UTCDateTimeFilter

from .models import (
    CallStatus,
    ExecutionStatus,
    GatewayCall,
    OrchestrationTemplate,
    Priority,
    Project,
    ProjectStatus,
    PromptExecution,
    PromptTemplate,
    TemplateStatus,
)


class PromptTemplateFilter(django_filters.FilterSet):
    category = django_filters.CharFilter(max_length=64)
    status = django_filters.ChoiceFilter(choices=TemplateStatus.choices)

    class Meta:
        model = PromptTemplate
        fields = ["category", "status"]


class PromptExecutionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ExecutionStatus.choices)
    version = django_filters.NumberFilter(field_name="version__version")
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = PromptExecution
        fields = ["status", "version"]


class GatewayCallFilter(django_filters.FilterSet):
    model = django_filters.CharFilter(max_length=100)
    status = django_filters.ChoiceFilter(choices=CallStatus.choices)
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = GatewayCall
        fields = ["model", "status", "api_key"]


class ProjectFilter(django_filters.FilterSet):
    """Exact values, several at once (`?status=active,completed`), and a creation range."""

    status = ChoiceInFilter(choices=ProjectStatus.choices)
    priority = ChoiceInFilter(choices=Priority.choices)
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Project
        fields = ["status", "priority"]


class OrchestrationTemplateFilter(django_filters.FilterSet):
    category = django_filters.CharFilter(max_length=64)
    is_public = django_filters.BooleanFilter()

    class Meta:
        model = OrchestrationTemplate
        fields = ["category", "is_public"]
