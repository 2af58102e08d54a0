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


@pytest.mark.django_db
def test_sync_gateway_calls_reuse_the_upstreams_connection(owner):
    """Orchestration phases and template executions call the gateway from sync code: the
    second call goes over the connection the first opened, not a new one."""
    with FakeUpstream(reply="Kept connection.", chunks=2) as upstream:
        provider = ProviderFactory(kind="openai", base_url=upstream.url + "/v1", max_retries=0)
        model = LanguageModelFactory(provider=provider)
        chat = ChatInput(model=model.name, messages=({"role": "user", "content": "Hello"},))

        for _ in range(3):
            result, call, error = gateway_call(
                tenant=owner.tenant,
                user_id=owner.user.pk,
                api_key=None,
                chat=chat,
                source=CallSource.PLAYGROUND,
            )
            assert error is None and result.content == "Kept connection."
            assert call.status == "succeeded" and call.provider == provider.name

        assert len(upstream.requests) == 3
        assert len({request["client_port"] for request in upstream.requests}) == 1
        assert GatewayCall.objects.filter(tenant=owner.tenant, status="succeeded").count() == 3


@pytest.mark.django_db
def test_closing_the_loop_closes_the_kept_clients_and_a_later_call_starts_again(owner):
    """What happens when the process exits (atexit); a call after it gets a new loop."""
    with FakeUpstream(reply="Closed at exit.", chunks=2) as upstream:
        provider = ProviderFactory(kind="openai", base_url=upstream.url + "/v1", max_retries=0)
        model = LanguageModelFactory(provider=provider)
        chat = ChatInput(model=model.name, messages=({"role": "user", "content": "Hello"},))

        def call():
            return gateway_call(
                tenant=owner.tenant,
                user_id=owner.user.pk,
                api_key=None,
                chat=chat,
                source=CallSource.PLAYGROUND,
            )

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
