"""FilterSets of the playground app (django-filter), each named by a viewset's
`filterset_class`. Timestamps use `config.filters.UTCDateTimeFilter`; text filters set a
`max_length`."""

import django_filters

from config.filters import ChoiceInFilter, UTCDateTimeFilter

from .models import (
    Artifact,
    CallStatus,
    ExecutionStatus,
    GatewayCall,
    JobStatus,
    OrchestrationRun,
    OrchestrationTemplate,
    Priority,
    Project,
    ProjectStatus,
    PromptExecution,
    PromptTemplate,
    TemplateStatus,
    WorkflowJob,
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


class OrchestrationRunFilter(django_filters.FilterSet):
    project_id = django_filters.UUIDFilter(field_name="project_id")
    status = ChoiceInFilter(choices=JobStatus.choices)
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = OrchestrationRun
        fields = ["project_id", "status"]


class WorkflowJobFilter(django_filters.FilterSet):
    workflow_type = django_filters.CharFilter(max_length=64)
    status = ChoiceInFilter(choices=JobStatus.choices)

    class Meta:
        model = WorkflowJob
        fields = ["workflow_type", "status"]


class ArtifactFilter(django_filters.FilterSet):
    run_id = django_filters.UUIDFilter(field_name="run_id")
    workflow_job_id = django_filters.UUIDFilter(field_name="workflow_job_id")

    class Meta:
        model = Artifact
        fields = ["run_id", "workflow_job_id"]
