"""API views of the playground app: the OpenAI-compatible gateway, its catalogue and call
records, and prompt templates with executions and analytics (`gateway/metrics` is served by the
analytics app, from its roll-ups of the calls).

`chat/completions` is the one async view of the project (docs/gateway.md, "Serving model"):
its viewset runs the platform's request path (authentication, tenant, permission, throttle,
validation, reservation) in a worker thread like every other view, then the upstream call and
the stream run on the event loop, holding no thread while the upstream thinks.
"""

import asyncio
import functools
import json
import logging
import time
import uuid
from datetime import timedelta

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.db import close_old_connections
from django.db.models import Case, IntegerField, Q, Value, When
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.models import APIKey
from accounts.usage import observe_api_key_request
from config import request_context
from config.exceptions import AIServiceError, as_outage, error_body, log_unavailable
from config.middleware import request_context_of
from config.pagination import EventCursorPagination, StandardPagination
from config.views import dependency_unavailable_response, server_error
from tenants.api import (
    ServiceWriteMixin,
    TenantContextViewSet,
    TenantCrudViewSet,
    TenantScopedViewSet,
)
from tenants.idempotency import idempotent
from tenants.throttling import TenantThrottle

from . import selectors, services
from .filters import (
    ArtifactFilter,
    GatewayCallFilter,
    OrchestrationRunFilter,
    OrchestrationTemplateFilter,
    ProjectFilter,
    PromptExecutionFilter,
    PromptTemplateFilter,
    WorkflowJobFilter,
)
from .models import (
    PRIORITY_RANK,
    Artifact,
    GatewayCall,
    OrchestrationRun,
    OrchestrationTemplate,
    Project,
    PromptExecution,
    PromptTemplate,
    WorkflowJob,
)
from .serializers import (
    AnalyticsQuerySerializer,
    ArtifactSerializer,
    BulkResultSerializer,
    BulkSerializer,
    CategorySerializer,
    ChatCompletionResponseSerializer,
    ChatCompletionSerializer,
    CompareResultSerializer,
    CompareSerializer,
    ExecuteSerializer,
    GatewayCallSerializer,
    LanguageModelSerializer,
    OrchestrateSerializer,
    OrchestrationStartedSerializer,
    OrchestrationTemplateSerializer,
    ProjectDetailSerializer,
    ProjectSerializer,
    PromptExecutionSerializer,
    PromptTemplateDetailSerializer,
    PromptTemplateSerializer,
    PromptTemplateWriteSerializer,
    PublishSerializer,
    RatingSerializer,
    RunCancelledSerializer,
    RunDetailSerializer,
    RunListSerializer,
    TemplateAnalyticsSerializer,
    TemplateUpdateQuerySerializer,
    TemplateVersionQuerySerializer,
    WorkflowExecuteSerializer,
    WorkflowJobSerializer,
    WorkflowMetricsSerializer,
    WorkflowQueuedSerializer,
    WorkflowTypeSerializer,
)
from .workflows import REGISTRY, hidden_types

# The gateway ---------------------------------------------------------------------------------

logger = logging.getLogger(__name__)


class GatewayThrottle(TenantThrottle):
    """The tenant throttle, keeping the gateway window's state for OpenAI's headers."""

    def admit(self, request, view, windows):
        admission = super().admit(request, view, windows)
        if admission.stale:
            return admission  # counted nothing: the request is authenticated again
        scope_key = f"{view.throttle_scope}:"
        for window, state in zip(windows, admission.states, strict=True):
            if window.key.startswith(scope_key):
                request.gateway_window = state
        return admission


class PendingCompletion(Response):
    """What the sync part answers when the call is reserved: the async part completes it, and
    counts the API key's request then (`completes_later`), when its real status is known."""

    completes_later = True

    def __init__(self, reservation, *, stream: bool, drf_request):
        super().__init__(status=status.HTTP_200_OK)
        self.reservation = reservation
        self.stream = stream
        self.drf_request = drf_request


def _openai_headers(request, reservation) -> dict[str, str]:
    headers = {}
    window = getattr(request, "gateway_window", None)
    if window is not None:
        headers["x-ratelimit-limit-requests"] = str(window.limit)
        headers["x-ratelimit-remaining-requests"] = str(window.remaining)
        headers["x-ratelimit-reset-requests"] = f"{max(window.reset_at - int(time.time()), 0)}s"
    tokens_window = reservation.tokens_window
    if tokens_window is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens_window.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens_window.remaining)
        headers["x-ratelimit-reset-tokens"] = (
            f"{max(tokens_window.reset_at - int(time.time()), 0)}s"
        )
    return headers


class ChatCompletionViewSet(TenantContextViewSet):
    """POST chat/completions: OpenAI's chat completion, metered against the organization's
    tokens quota (and the API key's budget), streaming included."""

    required_permissions = {"create": "playground.execute"}
    throttle_scope = "gateway"
    throttle_classes = (GatewayThrottle,)
    serializer_class = ChatCompletionSerializer

    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        sync_view = super().as_view(actions, **initkwargs)

        def request_path(request, *args, **kwargs):
            try:
                return sync_view(request, *args, **kwargs)
            finally:
                if hasattr(request, "scope"):
                    # ASGI: the thread's connection is seen to before the upstream call. Under
                    # Django's own handler (a thread per request: DATABASE_POOL), it goes back
                    # to the pool here; held for the whole call, the pool would cap the calls
                    # in flight, and the settlement (another thread) would wait for one forever.
                    close_old_connections()

        run_request_path = sync_to_async(request_path)

        async def view(request, *args, **kwargs):
            response = await reserved_response(run_request_path(request, *args, **kwargs))
            return await complete_if_pending(response)

        functools.update_wrapper(view, sync_view)
        markcoroutinefunction(view)
        # The sync part alone, for playground.serving.GatewayFront (which runs it in one
        # hop to a thread and completes the answer itself).
        view.request_path = sync_view
        return csrf_exempt(view)

    @extend_schema(
        request=ChatCompletionSerializer,
        responses={
            200: OpenApiResponse(
                ChatCompletionResponseSerializer,
                description=(
                    "The completion; with `stream: true`, `text/event-stream` of "
                    "chat.completion.chunk objects ending with `data: [DONE]`."
                ),
            )
        },
        summary="Chat completion (OpenAI-compatible)",
    )
    def create(self, request, *args, **kwargs):
        data = ChatCompletionSerializer.validated(request.data)
        credential = request.auth if isinstance(request.auth, APIKey) else None
        reservation = services.gateway_reserve(
            tenant=request.tenant,
            user_id=request.user.pk,
            api_key=credential,
            chat=services.ChatInput(
                model=data["model"],
                messages=tuple(data["messages"]),
                max_tokens=data.get("max_tokens"),
                temperature=data.get("temperature"),
                top_p=data.get("top_p"),
                stop=tuple(data.get("stop") or ()),
                user=data.get("user", ""),
            ),
            request_id=getattr(request._request, "request_id", ""),
            streamed=data["stream"],
        )
        return PendingCompletion(reservation, stream=data["stream"], drf_request=request)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, PendingCompletion):
            for header, value in _openai_headers(request, response.reservation).items():
                response[header] = value
        return response


def _carry_headers(pending: PendingCompletion, response):
    for header, value in pending.items():
        if header.lower() not in ("content-type", "content-length"):
            response[header] = value
    if not response.streaming:
        # What CommonMiddleware sets on every answer; under playground.serving the middleware
        # ran on the pending response, not on this one.
        response["Content-Length"] = str(len(response.content))
    observe_api_key_request(pending.drf_request, response)
    return response


def _error_response(error: AIServiceError) -> JsonResponse:
    return JsonResponse(
        error_body(error.code, error.message, error.details), status=error.status_code
    )


def _usage(call) -> dict:
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "total_tokens": call.total_tokens,
    }


async def complete_if_pending(response):
    """The answer: a reserved call completed (upstream call, settlement, JSON or the event
    stream), any other response as it is. The completion runs after the view has returned,
    outside the API's exception handler: a failure in it is answered here, in the envelope."""
    if isinstance(response, PendingCompletion):
        try:
            return await _complete(response)
        except Exception as error:
            outage = _outage_or_logged(error)
            if outage is not None:
                return _carry_headers(response, dependency_unavailable_response(outage))
            return _carry_headers(response, server_error(response.drf_request._request))
    return response


def _outage_or_logged(error: Exception):
    """A call's completion failed on something other than the upstream (answered as
    AI_SERVICE_ERROR where it happens): the 503 of a dependency's outage that outlasted the
    settlement's retries (logged as one line), or None for a bug (logged with its traceback:
    the caller answers it as a 500)."""
    outage = as_outage(error)
    if outage is not None:
        log_unavailable(outage, where="the gateway's completion")
    else:
        logger.error("A gateway call's completion failed", exc_info=error)
    return outage


async def reserved_response(request_path):
    """The response of the sync request path, which `request_path` (an awaitable) runs on a
    thread. A client that goes away meanwhile cancels this wait, not the thread: the path
    runs to its end, a call it reserved is given back (settled as cancelled, in the request's
    context) and the cancellation goes on."""
    running = asyncio.ensure_future(request_path)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        response = await running
        if isinstance(response, PendingCompletion):
            django_request = response.drf_request._request
            reservation = response.reservation
            reservation.asgi = hasattr(django_request, "scope")
            token = request_context.activate(request_context_of(django_request))
            try:
                await services.gateway_abandon(reservation)
            finally:
                request_context.deactivate(token)
        raise


async def _complete(pending: PendingCompletion):
    reservation = pending.reservation
    reservation.asgi = hasattr(pending.drf_request._request, "scope")
    if reservation.asgi:
        return await _answer(pending)
    try:
        return await _answer(pending)
    finally:
        # Under WSGI the view's event loop ends with the request, and nothing would reuse the
        # upstream clients kept for it.
        await services.gateway_clients_close(reservation=reservation)


async def _answer(pending: PendingCompletion):
    reservation = pending.reservation
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not pending.stream:
        try:
            result, call = await services.gateway_complete(reservation)
        except AIServiceError as error:
            return _carry_headers(pending, _error_response(error))
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.content},
                    "finish_reason": result.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(call),
            "system_fingerprint": None,
        }
        return _carry_headers(pending, JsonResponse(body))
    stream = services.GatewayStream(reservation)
    try:
        await stream.start()
    except AIServiceError as error:
        return _carry_headers(pending, _error_response(error))
    events = _sse(stream, completion_id, created)
    if not reservation.asgi:
        # Under WSGI (the test client, a sync server) the view's event loop ends with the
        # view, and the upstream stream with it: the events are sent as one body. ASGI, the
        # serving model, streams them as they come.
        body = b"".join([event async for event in events])
        return _carry_headers(pending, HttpResponse(body, content_type="text/event-stream"))
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Proxies (nginx) must pass each chunk on at once.
    response["X-Accel-Buffering"] = "no"
    return _carry_headers(pending, response)


def _event(payload) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


_PIECE = "\x00piece\x00"  # stands for a content piece in a chunk made once per stream


def _content_events(content_chunk: dict):
    """A function from content pieces to their chunk events, all in one bytes: each is what
    `_event` makes of `content_chunk` with the piece as its content (given as `_PIECE`), with
    only the piece's JSON made per piece."""
    head, tail = _event(content_chunk).split(json.dumps(_PIECE).encode())

    def events(pieces) -> bytes:
        return b"".join(head + json.dumps(piece).encode() + tail for piece in pieces)

    return events


async def _sse(stream, completion_id: str, created: int):
    """OpenAI's chunk stream: the role, the content pieces, the finish reason, the usage,
    `[DONE]`. A failure after the first chunk is an `error` event (what OpenAI's SDKs raise).
    The pieces that arrived from the upstream together go out together, in one write."""

    def chunk(delta, finish_reason=None):
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": stream.model.name,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }

    content_events = _content_events(chunk({"content": _PIECE}))
    relay = aiter(stream)
    role = _event(chunk({"role": "assistant", "content": ""}))
    try:
        try:
            async for batch in relay:
                events = content_events(delta.content for delta in batch if delta.content)
                if role or events:
                    yield role + events
                    role = b""
        finally:
            # The client may go away mid-stream (this generator is closed): close the relay
            # now, which settles the call at what was sent, rather than whenever it is
            # collected.
            await relay.aclose()
    except Exception as error:
        # The settlement failed (an outage past its retries, a bug) after the answer began:
        # an error event, as for an upstream's failure, rather than a stream cut short.
        outage = _outage_or_logged(error)
        if outage is not None:
            body = error_body(outage.code, outage.message, outage.details)
        else:
            body = error_body("INTERNAL_ERROR", "An unexpected error occurred.")
        yield role + _event(body)
        return
    if stream.error is not None:
        error = services.gateway._ai_error(stream.error)
        yield role + _event(error_body(error.code, error.message, error.details))
        return
    call = stream.call
    usage = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": stream.model.name,
        "choices": [],
        "usage": _usage(call),
    }
    yield role + _event(chunk({}, stream.finish_reason)) + _event(usage) + b"data: [DONE]\n\n"


class LanguageModelViewSet(mixins.ListModelMixin, TenantContextViewSet):
    """GET gateway/models: the catalogue the organization may call, with prices."""

    queryset = selectors.callable_models()
    serializer_class = LanguageModelSerializer
    required_permissions = {"list": "playground.read"}


class GatewayCallViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """GET gateway/calls: the organization's call records (cursor pagination)."""

    queryset = GatewayCall.objects.all()
    serializer_class = GatewayCallSerializer
    filterset_class = GatewayCallFilter
    pagination_class = EventCursorPagination
    permission_area = "playground"


# Prompt templates ----------------------------------------------------------------------------


class PromptTemplateViewSet(
    ServiceWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """Versioned prompt templates: CRUD (content changes as new versions), publish, execute,
    executions, analytics, compare, categories and bulk operations."""

    queryset = PromptTemplate.objects.all()
    serializer_class = PromptTemplateSerializer
    filterset_class = PromptTemplateFilter
    search_fields = ("name", "description")
    ordering_fields = ("created_at", "updated_at", "name", "category")
    permission_area = "playground"
    service_object_name = "template"
    required_permissions = {
        "create": "playground.write",
        "update": "playground.write",
        "partial_update": "playground.write",
        "destroy": "playground.write",
        "publish": "playground.write",
        "execute": "playground.execute",
        "executions": "playground.read",
        "analytics": "playground.read",
        "compare": "playground.read",
        "categories": "playground.read",
        "bulk": "playground.write",
    }

    def get_serializer_class(self):
        if self.action == "retrieve":
            return PromptTemplateDetailSerializer
        return PromptTemplateSerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("created_by")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        templates = selectors.attach_latest_versions(page)
        return self.get_paginated_response(PromptTemplateSerializer(templates, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("version", int, description="A version number."),
            OpenApiParameter("label", str, enum=["production", "latest"]),
        ]
    )
    def retrieve(self, request, *args, **kwargs):
        template = self.get_object()
        query = TemplateVersionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        template.shown_version = selectors.template_version(template, **query.validated_data)
        return Response(PromptTemplateDetailSerializer(template).data)

    def _answer(self, template, status_code=status.HTTP_200_OK):
        template = self.get_queryset().prefetch_related("versions").get(pk=template.pk)
        template.shown_version = selectors.template_version(template)
        return Response(PromptTemplateDetailSerializer(template).data, status=status_code)

    @extend_schema(
        request=PromptTemplateWriteSerializer, responses={201: PromptTemplateDetailSerializer}
    )
    def create(self, request, *args, **kwargs):
        data = self.validated_input(PromptTemplateWriteSerializer)
        data.pop("change_note", None)
        template = self.call_service(services.prompt_template_create, tenant=request.tenant, **data)
        return self._answer(template, status.HTTP_201_CREATED)

    @extend_schema(
        request=PromptTemplateWriteSerializer,
        responses={200: PromptTemplateDetailSerializer},
        parameters=[TemplateUpdateQuerySerializer],
    )
    def update(self, request, *args, **kwargs):
        return self._update(partial=False)

    @extend_schema(
        request=PromptTemplateWriteSerializer,
        responses={200: PromptTemplateDetailSerializer},
        parameters=[TemplateUpdateQuerySerializer],
    )
    def partial_update(self, request, *args, **kwargs):
        return self._update(partial=True)

    def _update(self, *, partial: bool):
        template = self.get_object()
        query = TemplateUpdateQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        data = self.validated_input(PromptTemplateWriteSerializer, partial=partial)
        # Called directly: the service takes the changes as keywords, so call_service would
        # pass it the context arguments (actor_permissions) as changes too.
        template = services.prompt_template_update(
            template=template,
            actor=self.request.user,
            create_new_version=query.validated_data["create_new_version"],
            **data,
        )
        return self._answer(template)

    def destroy(self, request, *args, **kwargs):
        self.call_service(services.prompt_template_delete, template=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=PublishSerializer, responses={200: PromptTemplateDetailSerializer})
    @action(detail=True, methods=["post"], url_path="publish")
    def publish(self, request, pk=None):
        """Move the `production` label to a version."""
        template = self.get_object()
        data = self.validated_input(PublishSerializer)
        template = self.call_service(services.prompt_template_publish, template=template, **data)
        return self._answer(template)

    @extend_schema(request=ExecuteSerializer, responses={200: PromptExecutionSerializer})
    @action(detail=True, methods=["post"], url_path="execute")
    def execute(self, request, pk=None):
        """Render the template (the production version when published, else the latest) and
        run it through the gateway; metered like chat/completions."""
        template = self.get_object()
        data = self.validated_input(ExecuteSerializer)
        label = data.get("label")
        if "version" not in data and label is None:
            label = "production" if template.production_version else "latest"
        version = selectors.template_version(template, version=data.get("version"), label=label)
        execution = self.call_service(
            services.prompt_template_execute,
            template=template,
            version=version,
            api_key=request.auth if isinstance(request.auth, APIKey) else None,
            variables=data["variables"],
            save_execution=data["save_execution"],
            request_id=getattr(request._request, "request_id", ""),
        )
        return Response(PromptExecutionSerializer(execution).data)

    @extend_schema(
        responses={200: PromptExecutionSerializer(many=True)},
        parameters=[
            OpenApiParameter("status", str, enum=["succeeded", "failed"]),
            OpenApiParameter("version", int),
            OpenApiParameter("since", str, description="ISO 8601; executions at or after."),
            OpenApiParameter("until", str, description="ISO 8601; executions before."),
        ],
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="executions",
        pagination_class=EventCursorPagination,
        filter_backends=[],
    )
    def executions(self, request, pk=None):
        template = self.get_object()
        queryset = PromptExecutionFilter(
            request.query_params,
            # By tenant too: the index of a template's executions starts with it.
            queryset=PromptExecution.objects.filter(
                tenant_id=template.tenant_id, template=template
            ).select_related("version"),
            request=request,
        ).qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(PromptExecutionSerializer(page, many=True).data)

    @extend_schema(
        parameters=[AnalyticsQuerySerializer], responses={200: TemplateAnalyticsSerializer}
    )
    @action(detail=True, methods=["get"], url_path="analytics")
    def analytics(self, request, pk=None):
        template = self.get_object()
        query = AnalyticsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(
            TemplateAnalyticsSerializer(
                selectors.template_analytics(template=template, **query.validated_data)
            ).data
        )

    @extend_schema(request=CompareSerializer, responses={200: CompareResultSerializer})
    @action(detail=False, methods=["post"], url_path="compare")
    def compare(self, request):
        data = self.validated_input(CompareSerializer)
        return Response(
            CompareResultSerializer(selectors.templates_compare(tenant=request.tenant, **data)).data
        )

    @extend_schema(request=BulkSerializer, responses={200: BulkResultSerializer})
    @action(detail=False, methods=["post"], url_path="bulk")
    def bulk(self, request):
        data = self.validated_input(BulkSerializer)
        results = self.call_service(services.prompt_templates_bulk, tenant=request.tenant, **data)
        errors = [{"id": r.id, "error": r.error} for r in results if r.status != "success"]
        return Response(
            {
                "success_count": len(results) - len(errors),
                "error_count": len(errors),
                "total_count": len(results),
                "errors": errors,
                "results": [
                    {"id": r.id, "status": r.status, **({"error": r.error} if r.error else {})}
                    for r in results
                ],
            }
        )


class TemplateCategoryViewSet(TenantContextViewSet):
    """GET playground/categories: each category with its templates counted by status."""

    required_permissions = {"list": "playground.read"}
    pagination_class = StandardPagination
    filter_backends = ()

    @extend_schema(responses={200: CategorySerializer(many=True)})
    def list(self, request):
        page = self.paginate_queryset(selectors.template_categories(tenant=request.tenant))
        return self.get_paginated_response(CategorySerializer(page, many=True).data)


class PromptExecutionViewSet(TenantScopedViewSet):
    """POST playground/executions/{id}/rating: rate an execution 1 to 5."""

    queryset = PromptExecution.objects.all()
    serializer_class = PromptExecutionSerializer
    required_permissions = {"rating": "playground.execute"}

    def scope_queryset(self, queryset):
        return queryset.select_related("version")

    @extend_schema(request=RatingSerializer, responses={200: PromptExecutionSerializer})
    @action(detail=True, methods=["post"], url_path="rating")
    def rating(self, request, pk=None):
        execution = self.get_object()
        serializer = RatingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        execution = services.prompt_execution_rate(
            execution=execution, actor=request.user, **serializer.validated_data
        )
        return Response(PromptExecutionSerializer(execution).data)


# Projects and orchestration templates ---------------------------------------------------------


class ProjectViewSet(TenantCrudViewSet):
    """CRUD projects: filters `status` and `priority` (one value or several, comma-separated),
    `created_after` / `created_before`, `search` (name, description, topic), `ordering`
    (`priority` sorts low < medium < high < urgent)."""

    queryset = Project.objects.select_related("created_by")
    serializer_class = ProjectSerializer
    filterset_class = ProjectFilter
    permission_area = "playground"
    search_fields = ("name", "description", "topic")
    ordering_fields = ("created_at", "updated_at", "name", "priority", "status")
    ordering_aliases = {"priority": "priority_rank"}
    create_service = services.project_create
    update_service = services.project_update
    destroy_service = services.project_delete

    def get_serializer_class(self):
        return ProjectDetailSerializer if self.action == "retrieve" else ProjectSerializer

    def scope_queryset(self, queryset):
        return queryset.annotate(
            priority_rank=Case(
                *(When(priority=value, then=Value(rank)) for value, rank in PRIORITY_RANK.items()),
                output_field=IntegerField(),
            )
        )


class OrchestrationTemplateViewSet(TenantCrudViewSet):
    """CRUD orchestration templates: a public one is seen by every member, a private one by
    its creator only (anyone else finds it "not found")."""

    queryset = OrchestrationTemplate.objects.select_related("created_by")
    serializer_class = OrchestrationTemplateSerializer
    filterset_class = OrchestrationTemplateFilter
    permission_area = "playground"
    search_fields = ("name", "description")
    ordering_fields = ("created_at", "updated_at", "name", "usage_count")
    create_service = services.orchestration_template_create
    update_service = services.orchestration_template_update
    destroy_service = services.orchestration_template_delete
    service_object_name = "orchestration_template"

    def scope_queryset(self, queryset):
        return queryset.filter(Q(is_public=True) | Q(created_by=self.request.user))


# Orchestration runs ---------------------------------------------------------------------------

UUID_PATTERN = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 120:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    return f"{round(seconds / 60)} minutes"


class OrchestrateViewSet(ServiceWriteMixin, TenantContextViewSet):
    """POST orchestrate: start a run of a project (queued for a worker; answers at once)."""

    required_permissions = {"create": "playground.execute"}
    serializer_class = OrchestrateSerializer

    @extend_schema(
        request=OrchestrateSerializer,
        responses={201: OrchestrationStartedSerializer},
        summary="Start an orchestration run",
    )
    @idempotent
    def create(self, request):
        data = self.validated_input(OrchestrateSerializer)
        run = self.call_service(
            services.orchestration_start,
            tenant=request.tenant,
            project_id=data["project_id"],
            topic=data.get("topic", ""),
            custom_phases=data.get("custom_phases"),
            template_id=data.get("template_id"),
            integration_enabled=data.get("integration_enabled"),
            run_settings=data.get("settings"),
        )
        per_phase = selectors.phase_seconds_estimate(request.tenant, run.ai_model)
        phases = run.phases.order_by("position")
        body = {
            "run_id": run.pk,
            "status": "started",
            "message": "Orchestration started successfully",
            "estimated_completion": timezone.now()
            + timedelta(seconds=per_phase * run.total_phases),
            "phases": [
                {
                    "code": phase.code,
                    "name": phase.display_name,
                    "status": phase.status,
                    "estimated_duration": _duration(per_phase),
                }
                for phase in phases
            ],
        }
        return Response(OrchestrationStartedSerializer(body).data, status=status.HTTP_201_CREATED)


class OrchestrationRunViewSet(
    ServiceWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """GET orchestration (filters `project_id`, `status`), GET orchestration/{run_id} (the
    run, its phases and integration operations), POST orchestration/{run_id}/cancel."""

    queryset = OrchestrationRun.objects.select_related("project")
    serializer_class = RunListSerializer
    filterset_class = OrchestrationRunFilter
    permission_area = "playground"
    required_permissions = {"cancel": "playground.execute"}
    ordering_fields = ("created_at", "execution_time_ms", "status")
    lookup_value_regex = UUID_PATTERN

    @extend_schema(responses={200: RunDetailSerializer})
    def retrieve(self, request, *args, **kwargs):
        run = self.get_object()
        return Response(RunDetailSerializer(selectors.run_detail(run)).data)

    @extend_schema(request=None, responses={200: RunCancelledSerializer})
    @action(detail=True, methods=["post"], url_path="cancel")
    def cancel(self, request, pk=None):
        run = self.call_service(services.orchestration_run_cancel, run=self.get_object())
        body = {
            "message": "Orchestration cancelled successfully",
            "run_id": run.pk,
            "status": run.status,
        }
        return Response(RunCancelledSerializer(body).data)


# Workflows and artifacts ----------------------------------------------------------------------


class WorkflowJobViewSet(
    ServiceWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """Background workflows: POST workflows/execute queues a job of a registered type,
    GET workflows/{job_id} its status and output, DELETE workflows/{job_id} cancels it,
    GET workflows/metrics counts jobs, GET workflows/types lists the registry."""

    queryset = WorkflowJob.objects.all()
    serializer_class = WorkflowJobSerializer
    filterset_class = WorkflowJobFilter
    permission_area = "playground"
    required_permissions = {
        "execute": "playground.execute",
        "destroy": "playground.execute",
        "metrics": "playground.read",
        "types": "playground.read",
    }
    ordering_fields = ("created_at", "priority", "status")
    lookup_value_regex = UUID_PATTERN

    def scope_queryset(self, queryset):
        """A job of a type whose permission the caller lacks is not theirs to read: its
        output_data summarises the artifact they may not open (as ArtifactViewSet)."""
        hidden = hidden_types(self.request.permissions)
        return queryset.exclude(workflow_type__in=hidden) if hidden else queryset

    @extend_schema(
        request=WorkflowExecuteSerializer,
        responses={201: WorkflowQueuedSerializer},
        summary="Queue a workflow job",
    )
    @action(detail=False, methods=["post"], url_path="execute")
    @idempotent
    def execute(self, request):
        data = self.validated_input(WorkflowExecuteSerializer)
        job = self.call_service(services.workflow_execute, tenant=request.tenant, **data)
        body = {"job_id": job.pk, "status": job.status, "message": "Workflow execution started"}
        return Response(WorkflowQueuedSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: WorkflowJobSerializer}, summary="Cancel a workflow job")
    def destroy(self, request, *args, **kwargs):
        """Cancel the job (a running one stops at its next checkpoint); 409 when finished.
        The job stays listed, cancelled."""
        job = self.call_service(services.workflow_job_cancel, workflow_job=self.get_object())
        return Response(WorkflowJobSerializer(job).data)

    @extend_schema(responses={200: WorkflowMetricsSerializer}, summary="Workflow job metrics")
    @action(detail=False, methods=["get"], url_path="metrics", filter_backends=[],
            pagination_class=None)  # fmt: skip
    def metrics(self, request):
        return Response(WorkflowMetricsSerializer(selectors.workflow_metrics(request.tenant)).data)

    @extend_schema(responses={200: WorkflowTypeSerializer(many=True)})
    @action(detail=False, methods=["get"], url_path="types", filter_backends=[])
    def types(self, request):
        rows = [vars(workflow) for workflow in REGISTRY.values()]
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(WorkflowTypeSerializer(page, many=True).data)


class ArtifactViewSet(
    ServiceWriteMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    """Files runs and workflows wrote: list (filters `run_id`, `workflow_job_id`), retrieve,
    download, delete (frees the storage quota)."""

    queryset = Artifact.objects.all()
    serializer_class = ArtifactSerializer
    filterset_class = ArtifactFilter
    permission_area = "playground"
    required_permissions = {"download": "playground.read", "destroy": "playground.write"}
    ordering_fields = ("created_at", "size_bytes", "name")

    def scope_queryset(self, queryset):
        """A workflow's artifact also needs its type's permission (an audit_export is the
        audit chain: audit.read, as GET audit/export); without it, it is not found."""
        hidden = hidden_types(self.request.permissions)
        return queryset.exclude(workflow_job__workflow_type__in=hidden) if hidden else queryset

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiResponse(description="The file.")}
    )
    @action(detail=True, methods=["get"], url_path="download")
    def download(self, request, pk=None):
        artifact = self.get_object()
        response = FileResponse(
            selectors.artifact_file(artifact),
            content_type=artifact.content_type,
            as_attachment=True,
            filename=artifact.name,
        )
        response["X-Content-Type-Options"] = "nosniff"
        return response

    def destroy(self, request, *args, **kwargs):
        self.call_service(services.artifact_delete, artifact=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
