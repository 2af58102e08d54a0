"""Factories of the playground app's models (registered with tests.factories.factory_for)."""

import factory
from django.core.files.base import ContentFile

from playground import jobs
from playground.models import (
    Artifact,
    CallStatus,
    ExecutionStatus,
    GatewayCall,
    LanguageModel,
    OrchestrationPhase,
    OrchestrationRun,
    OrchestrationTemplate,
    Project,
    PromptExecution,
    PromptTemplate,
    PromptTemplateVersion,
    Provider,
    WorkflowJob,
)
from playground.services import runs
from playground.services.gateway import ChatInput
from playground.services.runs import orchestration_start


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = "openai"
    base_url = "http://127.0.0.1:9/v1"
    api_key_env = ""


class LanguageModelFactory(factory.django.DjangoModelFactory):
    """A model served by the local provider unless given one."""

    class Meta:
        model = LanguageModel
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"test-model-{n}")
    provider = None
    upstream_model = factory.LazyAttribute(lambda model: model.name)
    context_window = 8_192
    max_output_tokens = 1_024
    input_price_micros = 10_000_000
    output_price_micros = 30_000_000


class GatewayCallFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GatewayCall

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    requested_model = "gpt-4"
    model = "gpt-4"
    provider = "local"
    status = CallStatus.SUCCEEDED
    prompt_tokens = 20
    completion_tokens = 10
    total_tokens = 30
    reserved_tokens = 100
    cost_micros = 1_200
    latency_ms = 250


class PromptTemplateFactory(factory.django.DjangoModelFactory):
    """A template with its version 1 (created without the service: no audit event)."""

    class Meta:
        model = PromptTemplate
        skip_postgeneration_save = True

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Template {n}")
    category = "faq"

    @factory.post_generation
    def with_version(template, create, extracted, **kwargs):
        if create and extracted is not False:
            PromptTemplateVersionFactory(tenant=template.tenant, template=template, version=1)


class PromptTemplateVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptTemplateVersion

    tenant = factory.SelfAttribute("template.tenant")
    template = factory.SubFactory(PromptTemplateFactory, with_version=False)
    version = 1
    system_prompt = "You are a helpful assistant."
    user_prompt_template = "Question: {question}"
    variables = factory.LazyFunction(
        lambda: [{"name": "question", "type": "string", "required": True}]
    )
    model_config = factory.LazyFunction(lambda: {"model": "gpt-3.5-turbo", "max_tokens": 100})


class PromptExecutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptExecution

    template = factory.SubFactory(PromptTemplateFactory)
    tenant = factory.SelfAttribute("template.tenant")
    version = factory.LazyAttribute(lambda execution: execution.template.versions.first())
    status = ExecutionStatus.SUCCEEDED
    variables = factory.LazyFunction(lambda: {"question": "Why?"})
    rendered_prompt = "Question: Why?"
    output = "Because."
    model = "gpt-3.5-turbo"
    response_time_ms = 400
    prompt_tokens = 12
    completion_tokens = 8
    tokens_used = 20
    cost_micros = 30


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Project {n}")
    topic = "Build a scalable e-commerce platform"
    priority = "medium"


class OrchestrationTemplateFactory(factory.django.DjangoModelFactory):
    """A public template (every member of the tenant sees it)."""

    class Meta:
        model = OrchestrationTemplate

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Template {n}")
    category = "web-development"
    is_public = True
    template_data = factory.LazyFunction(
        lambda: {"phases": ["ideation", "design"], "integrations": [], "settings": {}}
    )


class OrchestrationRunFactory(factory.django.DjangoModelFactory):
    """A pending run of two phases (not queued: tests run it by calling the service)."""

    class Meta:
        model = OrchestrationRun
        skip_postgeneration_save = True

    project = factory.SubFactory(ProjectFactory)
    tenant = factory.SelfAttribute("project.tenant")
    topic = "Create a REST API for user management"
    ai_model = "gpt-3.5-turbo"
    max_tokens = 256
    total_phases = 2

    @factory.post_generation
    def phases(run, create, extracted, **kwargs):
        if not create:
            return
        names = extracted or ["ideation", "design"][: run.total_phases]
        OrchestrationPhase.objects.bulk_create(
            OrchestrationPhase(tenant=run.tenant, run=run, position=position, name=name)
            for position, name in enumerate(names)
        )


class WorkflowJobFactory(factory.django.DjangoModelFactory):
    """A pending usage report (not queued)."""

    class Meta:
        model = WorkflowJob

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    workflow_type = "usage_report"
    input_data = factory.LazyFunction(lambda: {"start": "2026-01-01", "end": "2026-01-31"})


class ArtifactFactory(factory.django.DjangoModelFactory):
    """A small text file in the artifacts storage (not counted against the quota: tests of
    the quota make artifacts through services.artifact_write)."""

    class Meta:
        model = Artifact

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"artifact-{n}.txt")
    content_type = "text/plain; charset=utf-8"
    size_bytes = 12
    sha256 = "0" * 64
    file = factory.LazyAttribute(lambda artifact: ContentFile(b"hello world\n", artifact.name))


def started_run(owner, *, topic: str = "t", phases=("ideation", "design", "review")):
    """Not a factory: a run started by `owner` on a project of its own, with `phases`."""
    project = ProjectFactory(tenant=owner.tenant, topic=topic)
    return orchestration_start(
        tenant=owner.tenant, actor=owner.user, project_id=project.pk, custom_phases=list(phases)
    )


def claimed_phase(owner, phases=("ideation", "design")):
    """Not a factory: a run we hold, its first phase claimed: (run, held, phase, claim, chat)."""
    project = ProjectFactory(tenant=owner.tenant, topic="riders")
    run = orchestration_start(
        tenant=owner.tenant, actor=owner.user, project_id=project.pk, custom_phases=list(phases)
    )
    held = jobs.claim(OrchestrationRun, run.pk)
    run = OrchestrationRun.objects.select_related("tenant", "created_by").get(pk=run.pk)
    phase = OrchestrationPhase.objects.filter(run_id=run.pk).order_by("position").first()
    token = runs._claim_phase(held, phase)
    chat = ChatInput(
        model=run.ai_model,
        messages=({"role": "user", "content": "hello"},),
        max_tokens=run.max_tokens,
    )
    return run, held, phase, token, chat
