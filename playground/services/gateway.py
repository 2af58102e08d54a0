"""The LLM gateway: one call, metered exactly.

A call has three steps, so the slow middle one holds no thread (docs/gateway.md, "Serving
model"):

1. `gateway_reserve` (sync, one transaction): resolve the model and its routes (the model,
   then its fallbacks, minus those cooling down), check the request against the model's limits,
   count the worst case (prompt estimate + max_tokens) in the tenant's tokens-per-minute window
   and reserve it against the tenant's `tokens` quota and the API key's monthly budget, each one
   atomic conditional step. Nothing fits: 429 and nothing is counted.
2. `gateway_complete` / `gateway_stream` (async): the upstream call, with retries and back-off
   on 429/5xx/timeouts, then the fallbacks; a stream commits to a route at its first chunk.
3. `gateway_settle` (sync, one transaction, run by step 2 whatever happened): the quota and
   the key's budget move from the reservation to the usage the upstream reported (estimated,
   and flagged, when a stream ended without it or the report is past belief; what was consumed
   when the call failed or the client went away), and one GatewayCall row records the call.

Every reservation is noted by the gateway in a GatewayReservation row, written by step 1's
statement and deleted by step 3's; if the process dies between the two, the row's lease runs
out and beat gives the tokens back, unless the work it was for (`note`, below) is taken over
first and its successor does (services.ledger).
"""

import asyncio
import contextvars
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from accounts.models import APIKey
from config.connections import drop_closed_connections
from config.exceptions import (
    AIServiceError,
    ApplicationError,
    RateLimitExceeded,
    unavailable_dependency,
)
from config.metering import Window, admit
from config.prepared import Rider
from tenants.models import Tenant
from tenants.plans import plan_rates
from tenants.throttling import configured_rate

from .. import cooldown, tokens
from ..models import (
    CallSource,
    CallStatus,
    GatewayCall,
    GatewayReservation,
    LanguageModel,
    Provider,
)
from ..providers import (
    ChatRequest,
    ChatResult,
    ErrorKind,
    ProviderConfig,
    StreamDelta,
    UpstreamError,
    Usage,
    build_provider,
)
from ..providers.local import LocalProvider
from ..providers.loop import background_loop, run_sync
from .ledger import (
    gateway_tokens_release,
    gateway_tokens_reserve,
    gateway_tokens_settle,
    reservation_note,
)

logger = logging.getLogger(__name__)

LOCAL_PROVIDER_NAME = "local"
_local = LocalProvider(ProviderConfig(name=LOCAL_PROVIDER_NAME, kind="local"))
# One adapter per provider row, with the row's version it was built from, so that it keeps its
# HTTP connections between calls; a new version replaces it and retires the old one.
_adapters: dict[object, tuple[tuple, object]] = {}
_adapters_lock = threading.Lock()


async def _close_adapter_transports() -> None:
    for _version, adapter in list(_adapters.values()):
        await adapter.aclose()


# The connection pools kept on the loop of sync calls are closed when the process exits.
background_loop.on_close(_close_adapter_transports)


def _retire_adapters(keep) -> None:
    """Retire the adapters of the provider rows not in `keep` (removed, or no longer serving
    an active model): their connections are closed once their calls in flight end."""
    with _adapters_lock:
        gone = [pk for pk in _adapters if pk not in keep]
        retired = [_adapters.pop(pk)[1] for pk in gone]
    for adapter in retired:
        adapter.retire()


@dataclass(frozen=True)
class ChatInput:
    """A validated chat request, in the public model's name."""

    model: str
    messages: tuple[dict, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    user: str = ""


@dataclass(frozen=True)
class Route:
    """One way to answer: a catalogue model through an adapter."""

    model: LanguageModel
    provider_name: str
    adapter: object
    retries: int


@dataclass
class Reservation:
    """What step 1 counted, and what steps 2 and 3 need."""

    tenant: Tenant
    user_id: object
    api_key: APIKey | None
    source: str
    request_id: str
    requested: LanguageModel
    routes: list[Route]
    chat: ChatRequest
    tokens: int
    prompt_tokens_rule: int
    streamed: bool = False
    # Served by ASGI (the view says so): settlements then run on the gateway's own threads.
    asgi: bool = False
    started: float = field(default_factory=time.perf_counter)
    tokens_window: object = None  # the TPM window's RateLimitState, for the response headers
    # The caller's write to carry in the settlement's statement (an orchestration phase's
    # outcome): made from the call and the outcome when settling; None for none.
    settle_rider: Callable[[GatewayCall, "Outcome"], Rider | None] | None = None
    # The id of the GatewayReservation row the gateway noted the reservation in; the
    # settlement deletes it (or finds it gone: the reservation was given back meanwhile).
    noted_as: object = None


@dataclass
class Outcome:
    """What step 2 found, for step 3."""

    status: str
    route: Route | None = None
    usage: Usage | None = None
    usage_estimated: bool = False
    error: UpstreamError | None = None
    attempts: int = 0
    failed_models: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    last_route: Route | None = None  # the last route tried, when none answered
    result: ChatResult | None = None  # the answer of a call that succeeded (not streamed)


def _adapter_for(provider: Provider | None):
    """The adapter serving `provider`, or the local one when it is missing or unconfigured."""
    if provider is None or not provider.is_configured:
        return LOCAL_PROVIDER_NAME, _local
    version = (provider.updated_at, provider.api_key_env)
    kept = _adapters.get(provider.pk)
    if kept is not None and kept[0] == version:
        return provider.name, kept[1]
    with _adapters_lock:
        kept = _adapters.get(provider.pk)
        if kept is not None and kept[0] == version:
            return provider.name, kept[1]
        adapter = build_provider(
            ProviderConfig(
                name=provider.name,
                kind=provider.kind,
                base_url=provider.base_url,
                api_key=provider.api_key,
                timeout_seconds=float(provider.timeout_seconds),
            )
        )
        _adapters[provider.pk] = (version, adapter)
    if kept is not None:
        # The row was edited (its upstream, key or timeouts): the old adapter's connections
        # are closed once the calls still using them end.
        kept[1].retire()
    return provider.name, adapter


class _Catalogue:
    """The active models with their providers, kept per process for
    GATEWAY_CATALOGUE_CACHE_SECONDS: the catalogue changes rarely and every call reads it.
    A change through the catalogue services clears this process's copy at once; other
    processes see it within the TTL (0: read on every call)."""

    def __init__(self):
        self._models: dict[str, LanguageModel] = {}
        self._loaded_at = float("-inf")

    def models(self) -> dict[str, LanguageModel]:
        ttl = settings.GATEWAY_CATALOGUE_CACHE_SECONDS
        if ttl <= 0 or time.monotonic() - self._loaded_at > ttl:
            self._models = {
                model.name: model
                for model in LanguageModel.objects.select_related("provider").filter(active=True)
            }
            self._loaded_at = time.monotonic()
            _retire_adapters({model.provider_id for model in self._models.values()})
        return self._models

    def clear(self) -> None:
        self._loaded_at = float("-inf")


catalogue_cache = _Catalogue()


def _routes(model: LanguageModel, models: dict[str, LanguageModel]) -> list[Route]:
    names = [model.name, *[name for name in model.fallbacks if name != model.name]]
    routes = []
    for name in names:
        candidate = models.get(name)
        if candidate is None:
            continue
        provider_name, adapter = _adapter_for(candidate.provider)
        retries = candidate.provider.max_retries if provider_name != LOCAL_PROVIDER_NAME else 0
        routes.append(Route(candidate, provider_name, adapter, retries))
    return routes


def _invalid(field_name: str, message: str) -> ApplicationError:
    return ApplicationError(message, details={field_name: [message]})


def _resolve_model(name: str, models: dict[str, LanguageModel]) -> LanguageModel:
    """The active catalogue model called `name`, or a 400 naming the field."""
    model = models.get(name)
    if model is None:
        raise _invalid("model", f"Unknown model {name!r}; GET gateway/models lists them.")
    return model


def _tokens_window(tenant: Tenant, amount: int) -> Window:
    rate = plan_rates(tenant.plan).get("gateway_tokens") or configured_rate("gateway_tokens")
    window = Window.from_rate(f"gateway_tokens:{tenant.pk}", rate)
    return replace(window, cost=amount)


def _refuse_tokens_window(window: Window, state) -> None:
    fits = window.cost <= window.limit
    if fits:
        message = "The organization's tokens-per-minute limit is reached."
    else:
        message = (
            f"This call may use up to {window.cost} tokens, more than the organization's "
            f"tokens-per-minute limit ({window.limit}); lower max_tokens or shorten the prompt."
        )
    raise RateLimitExceeded(
        message,
        wait=state.reset_at - time.time(),
        details={"limit_tokens": window.limit, "requested_tokens": window.cost},
        retryable=fits,
    )


def gateway_reserve(
    *,
    tenant: Tenant,
    user_id,
    api_key: APIKey | None,
    chat: ChatInput,
    source: str = CallSource.API,
    request_id: str = "",
    streamed: bool = False,
    note: Callable[[int], Rider] | None = None,
) -> Reservation:
    """Step 1: resolve, check and reserve the call's worst case (see the module docstring).

    The gateway notes every reservation (a GatewayReservation row, written by the
    reservation's statement and deleted by the settlement's; given back if its lease runs out).
    `note(amount)`: the caller's write noting the reservation on the work it is for too (an
    orchestration phase, a batch job), so that whoever takes the work over after its worker
    died gives back a reservation that was never settled (gateway_tokens_release_unsettled).
    A Rider made with the reservation in its statement (written only when the tokens were
    counted), undone with it if the tokens window refuses; its answer's first value counts the
    rows it wrote. None written (the work is no longer the caller's): the reservation is given
    back, recorded as a cancelled call, and ReservationNotNoted raised."""
    models = catalogue_cache.models()
    model = _resolve_model(chat.model, models)
    max_tokens = chat.max_tokens or model.max_output_tokens
    if max_tokens > model.max_output_tokens:
        raise _invalid(
            "max_tokens", f"{model.name} answers at most {model.max_output_tokens} tokens."
        )
    estimate = tokens.estimate_prompt_tokens(chat.messages)
    if estimate + max_tokens > model.context_window:
        raise _invalid(
            "messages",
            f"The prompt (about {estimate} tokens) plus max_tokens ({max_tokens}) exceeds "
            f"{model.name}'s context window of {model.context_window} tokens.",
        )
    reserved = estimate + max_tokens
    routes = _routes(model, models)
    upstreams = [r.model.name for r in routes if r.adapter is not _local]
    cooling = cooldown.cooling_down(upstreams)
    available = _not_cooling(model, routes, cooling)
    noted = GatewayReservation(
        tenant=tenant,
        api_key=api_key,
        source=source,
        tokens=reserved,
        request_id=request_id[:128],
        expires_at=timezone.now() + timedelta(seconds=settings.GATEWAY_RESERVATION_LEASE_SECONDS),
    )
    rider = (
        reservation_note(noted)
        if note is None
        else note(reserved).alongside(reservation_note(noted))
    )
    gateway_tokens_reserve(tenant=tenant, api_key=api_key, amount=reserved, rider=rider)
    # Last: the window is counted in Redis, which a refusal above could not take back. If the
    # window refuses, the reservation is given back (and the rider's write undone with it).
    window = _tokens_window(tenant, reserved)
    admission = admit([window])
    if admission.refused_window is not None:
        _give_back(tenant, api_key, reserved, rider)
        _refuse_tokens_window(window, admission.states[0])
    if not cooling.confirmed():
        # The cooldowns came from what this process kept, and the admission saw the epoch
        # move since (playground.cooldown): read them again before calling anyone.
        try:
            available = _not_cooling(model, routes, cooldown.cooling_down(upstreams, read=True))
        except AIServiceError:
            _give_back(tenant, api_key, reserved, rider)
            raise
    request = ChatRequest(
        model=model.upstream_model,
        messages=tuple(chat.messages),
        max_tokens=max_tokens,
        temperature=chat.temperature,
        top_p=chat.top_p,
        stop=tuple(chat.stop),
        user=chat.user,
    )
    reservation = Reservation(
        tenant=tenant,
        user_id=user_id,
        api_key=api_key,
        source=source,
        request_id=request_id,
        requested=model,
        routes=available,
        chat=request,
        tokens=reserved,
        prompt_tokens_rule=tokens.prompt_tokens(chat.messages),
        streamed=streamed,
        tokens_window=admission.states[0],
        noted_as=noted.pk,
    )
    if not rider.answered[0]:
        run_sync(gateway_abandon, reservation)
        raise ReservationNotNoted
    return reservation


def _not_cooling(
    model: LanguageModel, routes: list[Route], cooling: cooldown.Cooling
) -> list[Route]:
    available = [r for r in routes if r.model.name not in cooling]
    if not available:
        raise AIServiceError(
            f"Every upstream of {model.name} is cooling down after repeated failures; retry "
            "shortly.",
            details={"model": model.name, "retry_after": settings.GATEWAY_COOLDOWN_SECONDS},
            unavailable=True,
        )
    return available


def _give_back(tenant: Tenant, api_key: APIKey | None, reserved: int, rider: Rider) -> None:
    """A reservation refused after its statement: its tokens and the rider's write undone."""
    with transaction.atomic():
        gateway_tokens_release(tenant=tenant, api_key=api_key, amount=reserved)
        if rider.undo is not None:
            rider.undo()


class ReservationNotNoted(Exception):
    """A reservation's note wrote nothing: the work it was for is no longer the caller's
    (cancelled, or taken over). The reservation was given back and nothing was called."""


def _request_for(reservation: Reservation, route: Route) -> ChatRequest:
    return replace(
        reservation.chat,
        model=route.model.upstream_model,
        max_tokens=min(reservation.chat.max_tokens, route.model.max_output_tokens),
    )


def _backoff(retry: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, settings.GATEWAY_RETRY_AFTER_MAX_SECONDS)
    delay = settings.GATEWAY_RETRY_BACKOFF_SECONDS * (2**retry)
    return delay * (1 + random.random() / 4)  # noqa: S311 (jitter, not security)


async def _first_success(reservation: Reservation, outcome: Outcome, attempt):
    """Run `attempt(route, request)` over the routes, retrying each; the first result wins.
    Raises the last UpstreamError when every route failed."""
    last_error = None
    for route in reservation.routes:
        request = _request_for(reservation, route)
        for retry in range(route.retries + 1):
            outcome.attempts += 1
            try:
                result = await attempt(route, request)
            except UpstreamError as error:
                last_error = error
                outcome.last_route = route
                if _says_upstream_is_unwell(error):
                    outcome.failed_models.append(route.model.name)
                logger.warning(
                    "Gateway attempt failed: model=%s provider=%s kind=%s status=%s",
                    route.model.name,
                    route.provider_name,
                    error.kind,
                    error.status,
                )
                if not error.retryable or retry == route.retries:
                    break
                await asyncio.sleep(_backoff(retry, error.retry_after))
                continue
            outcome.route = route
            return result
    raise last_error


def _says_upstream_is_unwell(error: UpstreamError) -> bool:
    """Whether a failure counts towards the model's cooldown: the upstream's health (429,
    5xx, timeouts, broken answers, a refused key), not a request it rejected as invalid."""
    return error.kind != ErrorKind.REJECTED or error.status in (401, 403)


def _ai_error(error: UpstreamError) -> AIServiceError:
    return AIServiceError(
        "The AI provider could not answer this request.",
        details={"reason": str(error.kind)},
    )


async def gateway_run(
    reservation: Reservation,
) -> tuple[ChatResult | None, GatewayCall, UpstreamError | None]:
    """Step 2 without streaming, then step 3: the result (None when every route failed), the
    recorded call, and the last upstream error. The call is settled and recorded either way."""
    outcome = Outcome(status=CallStatus.FAILED)

    async def attempt(route, request):
        return await route.adapter.complete(request)

    try:
        result = await _first_success(reservation, outcome, attempt)
    except UpstreamError as error:
        outcome.error = error
        outcome.usage = _believed(error.partial_usage, reservation, outcome)
        return None, await _settle_async(reservation, outcome), error
    except BaseException:
        outcome.status = CallStatus.CANCELLED
        await asyncio.shield(_settle_async(reservation, outcome))
        raise
    outcome.status = CallStatus.SUCCEEDED
    outcome.result = result
    outcome.first_token_at = time.perf_counter()
    usage = _believed(result.usage, reservation, outcome)
    if usage is None:
        usage = Usage(reservation.prompt_tokens_rule, tokens.count_tokens(result.content))
        outcome.usage_estimated = True
    outcome.usage = usage
    return result, await _settle_async(reservation, outcome), None


def _believed(usage: Usage | None, reservation: Reservation, outcome: Outcome) -> Usage | None:
    """The usage an upstream reported, unless no call to the model that answered can have it:
    more tokens than its context window (as the catalogue states it). Such a report, a broken
    or hostile upstream's, is not metered: the call is estimated by the counting rule, as when
    no usage came, and a warning names the model for its entry or its upstream to be fixed.
    (Believed, it would also overflow the counters: 10**30 tokens is valid JSON.)"""
    if usage is None:
        return None
    route = outcome.route or outcome.last_route
    model = route.model if route is not None else reservation.requested
    if usage.total_tokens <= model.context_window:
        return usage
    logger.warning(
        "Model %s: the upstream reported %s prompt and %s completion tokens, more than the "
        "catalogue's context window (%s); the call is metered by estimate.",
        model.name,
        usage.prompt_tokens,
        usage.completion_tokens,
        model.context_window,
    )
    return None


async def gateway_abandon(reservation: Reservation) -> GatewayCall:
    """A reserved call whose client went away before the upstream was called: settled as
    cancelled with no usage (the whole reservation given back) and recorded."""
    return await _settle_async(reservation, Outcome(status=CallStatus.CANCELLED))


async def gateway_complete(reservation: Reservation) -> tuple[ChatResult, GatewayCall]:
    """`gateway_run`, raising AIServiceError (502) when every route failed."""
    result, call, error = await gateway_run(reservation)
    if error is not None:
        raise _ai_error(error)
    return result, call


class GatewayStream:
    """Step 2 streaming: `await stream.start()` picks a route (retries and fallbacks happen
    before the first chunk; a failure there raises AIServiceError, so the client still gets a
    proper error response), then `async for batch in stream` relays the deltas, in the lists
    they arrived in from the upstream (Provider.stream_batches). Step 3 runs
    when the stream ends, breaks, or is closed because the client went away; `call` then holds
    the recorded GatewayCall and `error` the failure, if any."""

    def __init__(self, reservation: Reservation):
        self.reservation = reservation
        self.outcome = Outcome(status=CallStatus.FAILED)
        self.call: GatewayCall | None = None
        self.error: UpstreamError | None = None
        self._iterator = None
        self._first: list[StreamDelta] | None = None
        self._text: list[str] = []
        self._finish_reason: str | None = None
        self._settled = False

    @property
    def model(self) -> LanguageModel:
        route = self.outcome.route
        return route.model if route is not None else self.reservation.requested

    async def start(self) -> None:
        async def attempt(route, request):
            iterator = aiter(route.adapter.stream_batches(request))
            try:
                first = await anext(iterator)
            except StopAsyncIteration:
                first = [StreamDelta(finish_reason="stop")]
            except BaseException:
                await _close(iterator)
                raise
            return iterator, first

        try:
            self._iterator, self._first = await _first_success(
                self.reservation, self.outcome, attempt
            )
        except UpstreamError as error:
            self.error = self.outcome.error = error
            self.outcome.usage = _believed(error.partial_usage, self.reservation, self.outcome)
            await self._settle()
            raise _ai_error(error) from None
        except BaseException:
            self.outcome.status = CallStatus.CANCELLED
            await self._settle()
            raise
        self.outcome.first_token_at = time.perf_counter()

    def __aiter__(self):
        return self._relay()

    async def _relay(self) -> AsyncIterator[list[StreamDelta]]:
        usage = None
        status = CallStatus.CANCELLED  # unless the stream ends or breaks below
        try:
            batch = self._first
            while batch is not None:
                for delta in batch:
                    if delta.usage is not None:
                        usage = delta.usage
                    if delta.finish_reason:
                        self._finish_reason = delta.finish_reason
                    if delta.content:
                        self._text.append(delta.content)
                yield batch
                try:
                    batch = await anext(self._iterator)
                except StopAsyncIteration:
                    batch = None
            status = CallStatus.SUCCEEDED
        except UpstreamError as error:
            self.error = self.outcome.error = error
            usage = usage or error.partial_usage
            relayed = tokens.count_tokens("".join(self._text))
            if usage is not None and usage.completion_tokens < relayed:
                # A broken stream's partial usage can lag what was relayed (Anthropic's
                # message_start says 1 output token): never meter less than was sent.
                usage = Usage(usage.prompt_tokens, relayed)
                self.outcome.usage_estimated = True
            status = CallStatus.FAILED
        finally:
            self.outcome.status = status
            usage = _believed(usage, self.reservation, self.outcome)
            if usage is None:
                # No usage from the upstream (a stream without it, broken, or cancelled):
                # metered by the counting rule on what was relayed, and flagged.
                usage = Usage(
                    self.reservation.prompt_tokens_rule, tokens.count_tokens("".join(self._text))
                )
                self.outcome.usage_estimated = True
            self.outcome.usage = usage
            await _close(self._iterator)
            # Shielded: a client that goes away cancels the relay, never the settlement.
            await asyncio.shield(self._settle())

    @property
    def finish_reason(self) -> str:
        return self._finish_reason or "stop"

    async def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            self.call = await _settle_async(self.reservation, self.outcome)


async def _close(iterator) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            logger.debug("Closing an upstream stream failed", exc_info=True)


# Under ASGI, settlements run on these threads, not on the request's: a client that went away
# has cancelled the request (and its thread) by the time its call is settled.
_settle_threads = ThreadPoolExecutor(
    max_workers=settings.GATEWAY_SETTLE_THREADS,
    thread_name_prefix="gateway-settle",
)


def _settle_and_release(reservation: Reservation, outcome: Outcome) -> GatewayCall:
    # A settlement thread keeps its connection between calls, as a request thread does, and
    # checks it the way a request does at its start: one the server closed meanwhile (a
    # restart, a failover) is dropped here, not found by the settlement's statement.
    drop_closed_connections()
    try:
        return gateway_settle(reservation=reservation, outcome=outcome)
    finally:
        # As at a request's end: closed if it failed or outlived CONN_MAX_AGE (or, with
        # DATABASE_POOL, given back to the pool).
        close_old_connections()


async def _settle_async(reservation: Reservation, outcome: Outcome) -> GatewayCall:
    if reservation.asgi:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the request id, for logs and audit events
        return await loop.run_in_executor(
            _settle_threads, context.run, _settle_and_release, reservation, outcome
        )
    # Under WSGI (the test client, a sync server) on the request's own thread and connection.
    return await sync_to_async(gateway_settle)(reservation=reservation, outcome=outcome)


def gateway_settle(*, reservation: Reservation, outcome: Outcome) -> GatewayCall:
    """Step 3: cool down failing upstreams, then move the quota and the key's budget from the
    reservation to the usage and record the call, in one atomic step (services.ledger)."""
    usage = outcome.usage or Usage(0, 0)
    used = usage.total_tokens
    if outcome.failed_models:
        _record_failures(
            [name for name in outcome.failed_models if _is_upstream(reservation, name)]
        )
    route = outcome.route
    model = route.model if route is not None else reservation.requested
    tried = route or outcome.last_route
    now = time.perf_counter()
    latency_ms = int((now - reservation.started) * 1000)
    first_token_ms = (
        int((outcome.first_token_at - reservation.started) * 1000)
        if outcome.first_token_at is not None
        else None
    )
    call = GatewayCall(
        tenant=reservation.tenant,
        api_key=reservation.api_key,
        user_id=reservation.user_id,
        source=reservation.source,
        requested_model=reservation.requested.name,
        model=model.name,
        provider=tried.provider_name if tried is not None else "",
        status=outcome.status,
        error_type=str(outcome.error.kind) if outcome.error is not None else "",
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=used,
        reserved_tokens=reservation.tokens,
        cost_micros=tokens.cost_micros(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            input_price=model.input_price_micros,
            output_price=model.output_price_micros,
        ),
        latency_ms=latency_ms,
        time_to_first_token_ms=first_token_ms,
        streamed=reservation.streamed,
        usage_estimated=outcome.usage_estimated,
        attempts=max(outcome.attempts, 1),
        request_id=reservation.request_id[:128],
    )
    return gateway_tokens_settle(
        tenant=reservation.tenant,
        api_key=reservation.api_key,
        delta=used - reservation.tokens,
        call=call,
        rider=reservation.settle_rider(call, outcome) if reservation.settle_rider else None,
        noted_as=reservation.noted_as,
        reserved=reservation.tokens,
    )


def _record_failures(names: list[str]) -> None:
    """Count the upstreams' failures towards their cooldowns (Redis). The settlement does not
    depend on it: with Redis down the call is still metered and recorded, and the failures
    go uncounted."""
    try:
        cooldown.record_failures(names)
    except Exception as error:
        if unavailable_dependency(error) is None:
            raise
        logger.warning(
            "Upstream failures of %s not counted towards cooldowns: the cache is unavailable (%s)",
            ", ".join(names),
            error,
        )


def _is_upstream(reservation: Reservation, model_name: str) -> bool:
    return any(r.model.name == model_name and r.adapter is not _local for r in reservation.routes)


def gateway_call(
    *,
    tenant: Tenant,
    user_id,
    api_key: APIKey | None,
    chat: ChatInput,
    source: str,
    request_id: str = "",
    note: Callable[[int], Rider] | None = None,
) -> tuple[ChatResult | None, GatewayCall, UpstreamError | None]:
    """Steps 1 to 3 from sync code (template executions): the result, the recorded call, and
    the upstream's error when every route failed (the call is then metered and recorded as
    failed). Reservation refusals (400, 429) raise as usual; `note` as gateway_reserve's."""
    reservation = gateway_reserve(
        tenant=tenant,
        user_id=user_id,
        api_key=api_key,
        chat=chat,
        source=source,
        request_id=request_id,
        note=note,
    )
    return gateway_call_reserved(reservation)


def gateway_call_reserved(
    reservation: Reservation,
) -> tuple[ChatResult | None, GatewayCall, UpstreamError | None]:
    """Steps 2 and 3 from sync code, for a reservation the caller made (orchestration
    phases note theirs first): as gateway_call."""

    # On the process's long-lived loop, where the adapters keep their HTTP clients (and
    # connections) from one call to the next (providers/loop.py).
    return run_sync(gateway_run, reservation)


async def gateway_clients_close(*, reservation: Reservation) -> None:
    """Close the HTTP clients the call's adapters keep for this event loop: for a loop that
    ends with the call (a request served under WSGI), whose clients nothing would reuse."""
    adapters = {id(route.adapter): route.adapter for route in reservation.routes}
    for adapter in adapters.values():
        await adapter.aclose()
