"""The quick start's prompt templates, executions and gateway calls (called by
`manage.py load_demo_data` after the tenants), in the `acme` organization:

- "FAQ answer" (faq): two versions, version 1 published to production, executed and rated;
- "Ticket summary" (support): active, executed with an enum variable;
- "Release notes" (writing): a draft, never executed;
- a few chat completions through the gateway on several models;
- four projects (active, completed, archived; every priority) and two orchestration
  templates, one public and one private to the owner;
- orchestration runs: two executed to completion (one with its phases written as artifacts,
  one from the public template), one cancelled, one queued for the quick start's worker;
- workflow jobs: a usage report and a template batch executed (their CSV and JSON Lines
  artifacts downloadable), an audit export queued for the worker.

Everything runs through the real services on the local provider, so tokens, cost and the
tokens quota are metered as for any call. The executions and calls are then spread over the
last two weeks (their timestamps only), so the analytics have a daily series to show.

Runs once: an organization that already has templates (or projects) keeps them as they are.
"""

import datetime as dt

from django.utils import timezone

from tenants.models import Membership, Role, Tenant
from tenants.permissions import ROLE_PERMISSIONS

from .models import (
    GatewayCall,
    OrchestrationRun,
    OrchestrationTemplate,
    Project,
    PromptExecution,
    PromptTemplate,
)
from .services import (
    ChatInput,
    gateway_call,
    orchestration_run_cancel,
    orchestration_run_execute,
    orchestration_start,
    orchestration_template_create,
    project_create,
    prompt_execution_rate,
    prompt_template_create,
    prompt_template_execute,
    prompt_template_publish,
    prompt_template_update,
    workflow_execute,
    workflow_job_execute,
)

DEMO_SLUG = "acme"
QUESTIONS = [
    "What is your return policy?",
    "Do you ship to Canada?",
    "How do I reset my password?",
    "Can I change my plan mid-cycle?",
    "Where can I download my invoices?",
    "Is there an API rate limit?",
]


def _faq(tenant, owner):
    template = prompt_template_create(
        tenant=tenant,
        actor=owner,
        name="FAQ answer",
        description="Answers a customer question from knowledge-base context.",
        category="faq",
        status="active",
        system_prompt="You are a helpful customer service assistant. Answer clearly.",
        user_prompt_template="Question: {question}\n\nContext: {context}",
        variables=[
            {"name": "question", "type": "string", "required": True},
            {"name": "context", "type": "string", "default": "Our help centre articles."},
        ],
        model_config={"model": "gpt-4", "temperature": 0.1, "max_tokens": 300},
    )
    prompt_template_publish(template=template, actor=owner, version=1)
    prompt_template_update(
        template=template,
        actor=owner,
        create_new_version=True,
        change_note="Shorter answers on a cheaper model.",
        user_prompt_template="Answer in two sentences.\nQuestion: {question}\nContext: {context}",
        model_config={"model": "gpt-3.5-turbo", "temperature": 0.2, "max_tokens": 200},
    )
    return template


def _summary(tenant, owner):
    return prompt_template_create(
        tenant=tenant,
        actor=owner,
        name="Ticket summary",
        description="Summarises a support ticket for the escalation queue.",
        category="support",
        status="active",
        user_prompt_template="Summarise this {tone} ticket in one line: {ticket}",
        variables=[
            {"name": "ticket", "type": "string", "required": True},
            {
                "name": "tone",
                "type": "enum",
                "options": ["neutral", "urgent"],
                "default": "neutral",
            },
        ],
        model_config={"model": "claude-3-haiku", "max_tokens": 120},
    )


def _spread_over_two_weeks(tenant) -> None:
    now = timezone.now()
    for index, execution in enumerate(PromptExecution.objects.filter(tenant=tenant)):
        when = now - dt.timedelta(days=index % 14, hours=index % 5)
        PromptExecution.objects.filter(pk=execution.pk).update(created_at=when)
        if execution.gateway_call_id:
            GatewayCall.objects.filter(pk=execution.gateway_call_id).update(created_at=when)


PROJECTS = [
    ("E-commerce Platform", "Build a scalable e-commerce platform with AI recommendations",
     "active", "high", {"estimated_duration": "3 months", "complexity": "high"}),
    ("Support assistant", "Answer customer questions from the knowledge base",
     "active", "urgent", {"team_size": 4}),
    ("Internal wiki search", "Semantic search over the company wiki",
     "completed", "medium", {"technologies": ["PostgreSQL", "pgvector"]}),
    ("Legacy report generator", "Replace the nightly PDF reports", "archived", "low", {}),
]  # fmt: skip


def _projects(tenant, owner) -> int:
    """Projects and orchestration templates, once: a tenant that has projects keeps them."""
    if Project.objects.filter(tenant=tenant).exists():
        return 0
    for name, topic, status, priority, metadata in PROJECTS:
        project_create(
            tenant=tenant,
            actor=owner,
            name=name,
            topic=topic,
            status=status,
            priority=priority,
            metadata=metadata,
        )
    orchestration_template_create(
        tenant=tenant,
        actor=owner,
        name="Web Application Starter",
        description="Template for creating modern web applications",
        category="web-development",
        is_public=True,
        template_data={
            "phases": ["ideation", "design", "development"],
            "integrations": ["file_system"],
            "settings": {"ai_model": "gpt-4", "max_tokens": 2000, "temperature": 0.7},
        },
    )
    orchestration_template_create(
        tenant=tenant,
        actor=owner,
        name="Owner's research checklist",
        description="A private template: only its creator sees it",
        category="research",
        template_data={"phases": ["research", "summary"]},
    )
    return len(PROJECTS)


def _runs(tenant, owner) -> None:
    """Runs of the active projects: executed here through the service the worker calls (so
    their phases, tokens and artifacts are real), cancelled, or left for the worker."""
    shop = Project.objects.get(tenant=tenant, name="E-commerce Platform")
    support = Project.objects.get(tenant=tenant, name="Support assistant")
    starter = OrchestrationTemplate.objects.get(tenant=tenant, name="Web Application Starter")
    full = orchestration_start(
        tenant=tenant,
        actor=owner,
        project_id=shop.pk,
        integration_enabled=True,
        run_settings={"ai_model": "gpt-4", "max_tokens": 400, "temperature": 0.3},
    )
    from_template = orchestration_start(
        tenant=tenant,
        actor=owner,
        project_id=support.pk,
        template_id=starter.pk,
        topic="A help-centre assistant that answers from the knowledge base",
    )
    for run in (full, from_template):
        orchestration_run_execute(run_id=run.pk)
    cancelled = orchestration_start(
        tenant=tenant,
        actor=owner,
        project_id=shop.pk,
        custom_phases=["research", "design", "review"],
        topic="A loyalty programme for repeat customers",
    )
    orchestration_run_cancel(run=cancelled, actor=owner)
    orchestration_start(
        tenant=tenant,
        actor=owner,
        project_id=support.pk,
        custom_phases=["research", "implementation", "testing"],
        topic="Escalate unanswered questions to a human",
    )


def _workflows(tenant, owner, faq) -> None:
    permissions = ROLE_PERMISSIONS[Role.OWNER]
    today = timezone.now().date()
    report = workflow_execute(
        tenant=tenant,
        actor=owner,
        actor_permissions=permissions,
        workflow_type="usage_report",
        input_data={"start": str(today - dt.timedelta(days=30)), "end": str(today)},
    )
    batch = workflow_execute(
        tenant=tenant,
        actor=owner,
        actor_permissions=permissions,
        workflow_type="template_batch",
        input_data={"template_id": str(faq.pk), "rows": [{"question": q} for q in QUESTIONS]},
        priority=8,
    )
    for job in (report, batch):
        workflow_job_execute(job_id=job.pk)
    workflow_execute(
        tenant=tenant,
        actor=owner,
        actor_permissions=permissions,
        workflow_type="audit_export",
        input_data={},
        priority=3,
    )


def load(*, stdout, staff) -> None:
    tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
    if tenant is None:
        return
    owner = Membership.objects.get(tenant=tenant, role=Role.OWNER, user__isnull=False).user
    projects = _projects(tenant, owner)
    if projects:
        stdout.write(
            f"Playground: {projects} projects and 2 orchestration templates in {tenant.name}."
        )
    if not OrchestrationRun.objects.filter(tenant=tenant).exists():
        _runs(tenant, owner)
        stdout.write(
            f"Playground: 4 orchestration runs in {tenant.name} (2 completed, 1 cancelled, "
            "1 queued for the worker)."
        )
    if PromptTemplate.objects.filter(tenant=tenant).exists():
        return
    faq, summary = _faq(tenant, owner), _summary(tenant, owner)
    prompt_template_create(
        tenant=tenant,
        actor=owner,
        name="Release notes",
        category="writing",
        user_prompt_template="Write release notes for: {changes}",
        variables=[{"name": "changes", "type": "string", "required": True}],
    )
    executions = 0
    for round_number in range(3):
        for index, question in enumerate(QUESTIONS):
            version = faq.versions.get(version=1 + (index + round_number) % 2)
            execution = prompt_template_execute(
                template=faq,
                version=version,
                actor=owner,
                api_key=None,
                variables={"question": question},
            )
            if index % 2 == 0:
                prompt_execution_rate(execution=execution, actor=owner, rating=3 + index % 3)
            executions += 1
    for ticket, tone in (("Checkout page times out", "urgent"), ("Typo in invoice", "neutral")):
        prompt_template_execute(
            template=summary,
            version=summary.versions.get(version=1),
            actor=owner,
            api_key=None,
            variables={"ticket": ticket, "tone": tone},
        )
        executions += 1
    for model in ("gpt-4", "gpt-4-turbo", "claude-3-sonnet", "o1-mini"):
        gateway_call(
            tenant=tenant,
            user_id=owner.pk,
            api_key=None,
            chat=ChatInput(
                model=model,
                messages=({"role": "user", "content": f"Say hello from {model}."},),
                max_tokens=64,
            ),
            source="api",
        )
    _spread_over_two_weeks(tenant)
    _workflows(tenant, owner, faq)
    stdout.write(
        f"Playground: 3 workflow jobs in {tenant.name} (a usage report and a template batch "
        "done, an audit export queued for the worker)."
    )
    stdout.write(
        f"Playground: 3 prompt templates and {executions} executions in {tenant.name}, "
        "4 chat completions through the gateway (local provider)."
    )
