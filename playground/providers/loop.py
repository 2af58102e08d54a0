"""One long-lived event loop per process for gateway calls made from sync code.

Orchestration phases (Celery), template executions and workflows call the gateway from sync
code. asgiref's `async_to_sync` would run each call on an event loop of its own, on a new
thread, made for the call and closed after it. The adapters keep their HTTP connection pools
per event loop (`Provider.transport`), so every such call had to close its pools and the next
one opened a new TCP (and TLS) connection to the provider.

Here the process keeps one loop on a daemon thread, started on first use and again after a
fork (a Celery prefork child, say, gets its own). `run_sync` schedules the coroutine there the
way asgiref does for a sync thread under an async server: the calling thread waits, and runs
the coroutine's thread-sensitive sync work itself (`sync_to_async` with its default
`thread_sensitive=True`: the settlement's database writes), so that work stays on the caller's
database connection and inside its transaction. Context variables set by the coroutine come
back to the caller, as with `async_to_sync`. The pools stay open on the loop between calls,
so a phase reuses the connection the previous one opened; they are closed when the process
exits.
"""

import asyncio
import atexit
import logging
import os
import threading

from asgiref.sync import SyncToAsync, async_to_sync

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_SECONDS = 5


class _BackgroundLoop:
    """The process's loop and its thread, made on first use, and again in a forked child
    (after_fork_in_child, registered below, forgets the parent's)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_close = []

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = self._start()
            return self._loop

    @staticmethod
    def _start() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        running = threading.Event()

        def run():
            asyncio.set_event_loop(loop)
            loop.call_soon(running.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        threading.Thread(target=run, name="gateway-sync-loop", daemon=True).start()
        running.wait()
        return loop

    def after_fork_in_child(self) -> None:
        # The parent's lock may have been held by one of its threads at the fork, and its
        # loop's thread did not come along: the child starts afresh.
        self._lock = threading.Lock()
        self._loop = None

    def on_close(self, coroutine_function) -> None:
        """`coroutine_function()` is awaited on the loop when the process exits."""
        self._on_close.append(coroutine_function)

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None or not loop.is_running():
            return

        async def close_all():
            for coroutine_function in self._on_close:
                try:
                    await coroutine_function()
                except Exception:
                    logger.debug("Closing the sync-call connection pools failed", exc_info=True)

        try:
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(_CLOSE_TIMEOUT_SECONDS)
        except Exception:
            logger.debug("Closing the gateway's sync-call loop timed out", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)


background_loop = _BackgroundLoop()
atexit.register(background_loop.close)
os.register_at_fork(after_in_child=background_loop.after_fork_in_child)


def run_sync(coroutine_function, *args, **kwargs):
    """`coroutine_function(*args, **kwargs)` run to its end on the process's long-lived loop,
    from sync code, as `async_to_sync` runs it (the caller runs the thread-sensitive sync
    work the coroutine hands back; its context variables come back to the caller).

    A thread already serving an event loop's sync work (a sync view under Django's ASGI
    handler) keeps asgiref's behaviour: the coroutine runs on that loop."""
    local = SyncToAsync.threadlocal
    recorded = getattr(local, "main_event_loop", None)
    recorded_pid = getattr(local, "main_event_loop_pid", None)
    if recorded is not None and recorded_pid == os.getpid() and recorded.is_running():
        return async_to_sync(coroutine_function)(*args, **kwargs)
    # asgiref runs the coroutine on `main_event_loop` when the calling thread records one for
    # this process, as SyncToAsync records on the threads it runs sync code on (and leaves
    # there afterwards: a loop recorded earlier may have ended since, hence the check above).
    local.main_event_loop = background_loop.get()
    local.main_event_loop_pid = os.getpid()
    try:
        return async_to_sync(coroutine_function)(*args, **kwargs)
    finally:
        local.main_event_loop = recorded
        local.main_event_loop_pid = recorded_pid
