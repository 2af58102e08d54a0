"""Gateway calls from sync code run on the process's long-lived event loop
(playground/providers/loop.py): one loop for every call, the caller's thread doing the
thread-sensitive work (its database connection, its transaction), context variables coming
back, a loop of its own after a fork, and the upstream's connection kept from one call to the
next."""

import asyncio
import contextvars
import multiprocessing
import os
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from playground.models import CallSource, GatewayCall, Project
from playground.providers.loop import background_loop, run_sync
from playground.services import gateway as gateway_services
from playground.services.gateway import ChatInput, gateway_call

from .factories import LanguageModelFactory, ProjectFactory, ProviderFactory
from .upstream import FakeUpstream

SEEN = contextvars.ContextVar("seen", default=None)


async def _where():
    return asyncio.get_running_loop(), threading.get_ident()


def test_every_call_runs_on_one_loop_on_another_thread():
    first_loop, first_thread = run_sync(_where)
    second_loop, second_thread = run_sync(_where)

    assert first_loop is second_loop
    assert first_loop.is_running() and not first_loop.is_closed()
    assert first_thread == second_thread != threading.get_ident()


def test_thread_sensitive_work_runs_on_the_calling_thread():
    async def sync_work_thread():
        return await sync_to_async(threading.get_ident)()

    assert run_sync(sync_work_thread) == threading.get_ident()


def test_the_coroutines_context_variables_come_back_as_with_async_to_sync():
    async def set_it(value):
        SEEN.set(value)
        return value * 2

    token = SEEN.set("before")
    try:
        assert run_sync(set_it, 21) == 42
        assert SEEN.get() == 21
    finally:
        SEEN.reset(token)


def test_an_exception_reaches_the_caller_and_the_loop_serves_the_next_call():
    async def fails():
        raise LookupError("from the loop")

    with pytest.raises(LookupError, match="from the loop"):
        run_sync(fails)
    assert run_sync(_where)[0].is_running()


def test_a_loop_recorded_earlier_that_has_ended_is_not_used(monkeypatch):
    """asgiref leaves the loop of the last sync_to_async call recorded on its thread; when
    that loop has ended since, the call runs on the process's loop and the record is kept."""
    from asgiref.sync import SyncToAsync

    ended = asyncio.new_event_loop()
    ended.close()
    local = SyncToAsync.threadlocal
    monkeypatch.setattr(local, "main_event_loop", ended, raising=False)
    monkeypatch.setattr(local, "main_event_loop_pid", os.getpid(), raising=False)

    loop, _thread = run_sync(_where)

    assert loop is background_loop.get()
    assert local.main_event_loop is ended


@pytest.mark.django_db(transaction=True)
def test_the_database_work_sees_the_callers_transaction(owner):
    """The coroutine's sync database work runs on the caller's connection, inside its
    transaction: it sees the caller's rows before they are committed, and a rollback takes
    its writes back too."""

    async def read_and_write(project_pk):
        def work():
            project = Project.objects.get(pk=project_pk)
            project.description = "written from the loop's call"
            project.save(update_fields=["description"])
            return project.topic

        return await sync_to_async(work)()

    with pytest.raises(RuntimeError), transaction.atomic():
        project = ProjectFactory(tenant=owner.tenant, topic="uncommitted")
        assert run_sync(read_and_write, project.pk) == "uncommitted"
        assert Project.objects.get(pk=project.pk).description == "written from the loop's call"
        raise RuntimeError("roll back")

    assert not Project.objects.filter(pk=project.pk).exists()


def _in_a_child(results):
    loop, thread = run_sync(_where)
    results.put((os.getpid(), id(loop), loop.is_running(), thread != threading.get_ident()))


def test_a_forked_process_starts_a_loop_of_its_own():
    """A Celery prefork child, say: the parent's loop thread does not survive the fork, and
    neither does a lock some other thread of the parent held at that moment (held here)."""
    parent_loop, _thread = run_sync(_where)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_in_a_child, args=(results,))
    with background_loop._lock:
        child.start()
    try:
        pid, _loop_id, running, other_thread = results.get(timeout=30)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()

    assert child.exitcode == 0
    assert pid != os.getpid() and running and other_thread
    assert parent_loop.is_running()


def _upstream_model(upstream: FakeUpstream):
    """A catalogue model served by an OpenAI-compatible provider at `upstream`."""
    provider = ProviderFactory(kind="openai", base_url=upstream.url + "/v1", max_retries=0)
    return LanguageModelFactory(provider=provider)


def _call_model(owner, model):
    """A sync gateway call to `model`, as a template execution makes it."""
    return gateway_call(
        tenant=owner.tenant,
        user_id=owner.user.pk,
        api_key=None,
        chat=ChatInput(model=model.name, messages=({"role": "user", "content": "Hello"},)),
        source=CallSource.PLAYGROUND,
    )


@pytest.mark.django_db
def test_sync_gateway_calls_reuse_the_upstreams_connection(owner):
    """Orchestration phases and template executions call the gateway from sync code: the
    second call goes over the connection the first opened, not a new one."""
    with FakeUpstream(reply="Kept connection.", chunks=2) as upstream:
        model = _upstream_model(upstream)

        for _ in range(3):
            result, call, error = _call_model(owner, model)
            assert error is None and result.content == "Kept connection."
            assert call.status == "succeeded" and call.provider == model.provider.name

        assert len(upstream.requests) == 3
        assert len({request["client_port"] for request in upstream.requests}) == 1
        assert GatewayCall.objects.filter(tenant=owner.tenant, status="succeeded").count() == 3


@pytest.mark.django_db
def test_closing_the_loop_closes_the_kept_clients_and_a_later_call_starts_again(owner):
    """What happens when the process exits (atexit); a call after it gets a new loop."""
    with FakeUpstream(reply="Closed at exit.", chunks=2) as upstream:
        model = _upstream_model(upstream)

        def call():
            return _call_model(owner, model)

        call()
        loop = background_loop.get()
        adapter = gateway_services._adapter_for(model.provider)[1]
        transport = adapter._transports[loop]
        assert transport._session is not None and not transport._session.closed

        background_loop.close()

        assert transport._session is None  # closed
        assert loop not in adapter._transports
        result, _call, error = call()
        assert error is None and result.content == "Closed at exit."
        assert background_loop.get() is not loop


def _closed_on_the_loop(transport) -> bool:
    """Whether the transport's session is closed, once the loop ran its retirement."""
    for _ in range(100):
        if transport._session is None:
            return True
        run_sync(asyncio.sleep, 0.01)
    return False


@pytest.mark.django_db
def test_editing_a_provider_retires_its_adapter_and_closes_its_connections(owner):
    """One adapter per provider row: an edit (a new upstream, key or timeout) builds a new one
    for the next call, and the old one's kept connections are closed, not left open."""
    from playground.services.catalogue import provider_update

    with FakeUpstream(reply="Edited.", chunks=2) as upstream:
        model = _upstream_model(upstream)
        provider = model.provider

        def call():
            result, _call, error = _call_model(owner, model)
            assert error is None and result.content == "Edited."

        call()
        before = gateway_services._adapters[provider.pk][1]
        old_transport = before._transports[background_loop.get()]

        with transaction.atomic():
            provider_update(provider=provider, actor=None, timeout_seconds=30)
        call()

        after = gateway_services._adapters[provider.pk][1]
        assert after is not before
        assert after.config.timeout_seconds == 30
        assert _closed_on_the_loop(old_transport)
        # The second call went out on a connection of its own: the first one was closed.
        assert len({request["client_port"] for request in upstream.requests}) == 2


@pytest.mark.django_db
def test_a_provider_that_serves_no_active_model_is_retired_when_the_catalogue_reloads(owner):
    with FakeUpstream(reply="Retired.", chunks=2) as upstream:
        model = _upstream_model(upstream)
        provider = model.provider
        _call_model(owner, model)
        adapter = gateway_services._adapters[provider.pk][1]
        transport = adapter._transports[background_loop.get()]

        model.active = False
        model.save(update_fields=["active"])
        gateway_services.catalogue_cache.clear()
        gateway_services.catalogue_cache.models()

        assert provider.pk not in gateway_services._adapters
        assert _closed_on_the_loop(transport)
