"""gunicorn's worker for the ASGI application: uvicorn's worker, with new connections spread
evenly over the workers.

    gunicorn config.asgi:application -k config.workers.BalancedUvicornWorker --workers 4

Why: gunicorn's workers all wait on one listening socket, and the first to wake takes every
connection waiting in its queue (asyncio and uvloop accept until the queue is empty). Clients
that open their connections together and keep them alive (a load balancer, a proxy's upstream
keep-alive pool, a benchmark) can end up all on one worker, which then serves everything on one
core while the others idle. Measured with `bench/load.py` (16 keep-alive connections, 2
workers): in about half of the rounds one worker held all 16 and throughput halved.

How: each worker accepts its connections itself, one per readiness of the socket, and only
while no other live worker holds fewer open connections. The workers publish their counts in a
small table in memory shared with the arbiter (a file mapped by all of them, created by the
arbiter before its first fork). A worker holding more defers for `DEFER_SECONDS` and lets the
others take the connection, and accepts anyway once it has deferred for `DEFER_LIMIT_SECONDS`,
so a peer that is stuck or slow to wake delays a new connection by that much at most. Requests
on open connections are never delayed.

What stays as it was: the socket is still the one gunicorn opened and shares, so a connection
queued while a worker stops is accepted by another (one socket per worker with SO_REUSEPORT
would drop it); everything after the accept (HTTP, TLS, limits, shutdown) is uvicorn's.
"""

import asyncio
import errno
import fcntl
import logging
import mmap
import os
import socket
import struct
import sys
import tempfile
import time
from contextlib import contextmanager

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

logger = logging.getLogger("uvicorn.error")

# How long a worker holding more connections than a peer waits before looking again, and how
# long it defers in all before accepting anyway.
DEFER_SECONDS = 0.002
DEFER_LIMIT_SECONDS = 0.05
# Accept errors that mean this process or the system is out of a resource: pause accepting for
# a second, as asyncio does, rather than spin on a socket that stays readable.
RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
RESOURCE_PAUSE_SECONDS = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError would mean alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class ConnectionTable:
    """Each worker's open connections: one (pid, connections) slot per worker in a file mapped
    by the arbiter and its workers. A POSIX record lock on the file serialises the updates; the
    kernel releases it if its holder dies, so a killed worker cannot wedge the others. A slot
    whose process is gone is taken back by the next worker that needs one."""

    SLOT = struct.Struct("=ii")

    def __init__(self, slots: int = 64):
        # Open for the life of the arbiter and its workers: the mapping and the lock need it.
        self._file = tempfile.TemporaryFile()  # noqa: SIM115
        self._file.truncate(slots * self.SLOT.size)
        self._map = mmap.mmap(self._file.fileno(), slots * self.SLOT.size)
        self.slot: int | None = None

    @contextmanager
    def _locked(self):
        fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)

    def _write(self, slot: int, pid: int, connections: int) -> None:
        self.SLOT.pack_into(self._map, slot * self.SLOT.size, pid, connections)

    def rows(self) -> list[tuple[int, int]]:
        """Every slot as (pid, connections); pid 0 is a free slot."""
        return list(self.SLOT.iter_unpack(self._map))

    def join(self) -> bool:
        """Takes a slot for this process: a free one, or one left by a process that died.
        False when every slot is held by a live process: this worker then accepts without
        deferring, as an unbalanced worker would."""
        pid = os.getpid()
        with self._locked():
            for slot, (owner, _) in enumerate(self.rows()):
                if owner in (0, pid) or not _alive(owner):
                    self._write(slot, pid, 0)
                    self.slot = slot
                    return True
        return False

    def leave(self) -> None:
        if self.slot is None:
            return
        with self._locked():
            self._write(self.slot, 0, 0)
        self.slot = None

    def publish(self, connections: int) -> None:
        if self.slot is not None:
            self._write(self.slot, os.getpid(), connections)

    def may_accept(self, connections: int) -> bool:
        """Publishes this worker's `connections`; True when no other live worker holds fewer,
        and then counts the connection about to be accepted."""
        if self.slot is None:
            return True
        pid = os.getpid()
        with self._locked():
            for slot, (owner, theirs) in enumerate(self.rows()):
                if slot == self.slot or owner == 0 or theirs >= connections:
                    continue
                if _alive(owner):
                    self._write(self.slot, pid, connections)
                    return False
                self._write(slot, 0, 0)
            self._write(self.slot, pid, connections + 1)
        return True


class BalancedServer(Server):
    """uvicorn's server, accepting on the given sockets itself (see the module's docstring)."""

    def __init__(self, config, table: ConnectionTable):
        super().__init__(config=config)
        self.table = table
        self.listeners: list[socket.socket] = []
        self._accepting: set[int] = set()
        self._deferred_since: dict[int, float] = {}
        self._handshaking = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's start-up (lifespan, state) without its listeners: this server accepts.
        await super().startup(sockets=[])
        if not self.started:
            return
        config = self.config
        self._loop = asyncio.get_running_loop()

        def create_protocol():
            return config.http_protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self._create_protocol = create_protocol
        balanced = self.table.join()
        for sock in sockets or []:
            sock.setblocking(False)
            self.listeners.append(sock)
            self._resume(sock)
        logger.info(
            "Accepting connections %s",
            "balanced over the workers" if balanced else "unbalanced (no free slot)",
        )

    def open_connections(self) -> int:
        return len(self.server_state.connections) + self._handshaking

    def _resume(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0 and fd not in self._accepting and not self.should_exit:
            self._accepting.add(fd)
            self._loop.add_reader(fd, self._on_readable, sock)

    def _pause(self, sock: socket.socket, seconds: float) -> None:
        fd = sock.fileno()
        self._accepting.discard(fd)
        self._loop.remove_reader(fd)
        self._loop.call_later(seconds, self._resume, sock)

    def _on_readable(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        now = time.monotonic()
        since = self._deferred_since.get(fd)
        overdue = since is not None and now - since >= DEFER_LIMIT_SECONDS
        if not overdue and not self.table.may_accept(self.open_connections()):
            self._deferred_since.setdefault(fd, now)
            self._pause(sock, DEFER_SECONDS)
            return
        self._deferred_since.pop(fd, None)
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRORS:
                raise
            logger.error("Cannot accept a connection (%s); pausing for a second", exc)
            self._pause(sock, RESOURCE_PAUSE_SECONDS)
            return
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._handshaking += 1
        task = self._loop.create_task(self._connect(conn))
        task.add_done_callback(self._connected)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._create_protocol, conn, ssl=self.config.ssl
            )
        except OSError:
            conn.close()  # the client went away, or TLS failed, before the protocol started

    def _connected(self, _task: asyncio.Task) -> None:
        self._handshaking -= 1

    async def on_tick(self, counter: int) -> bool:
        # Connections close without telling the table; publish the count ten times a second.
        self.table.publish(self.open_connections())
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for sock in self.listeners:
            if sock.fileno() in self._accepting:
                self._loop.remove_reader(sock.fileno())
        self._accepting.clear()
        self.table.leave()
        await super().shutdown(sockets=sockets)


class BalancedUvicornWorker(UvicornWorker):
    """uvicorn_worker.UvicornWorker with BalancedServer. The table is made by the arbiter when
    it builds its first worker, before forking it, so every worker maps the same memory."""

    table: ConnectionTable | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if BalancedUvicornWorker.table is None:
            BalancedUvicornWorker.table = ConnectionTable()

    async def _serve(self) -> None:
        # uvicorn_worker's _serve, with this module's server.
        self.config.app = self.wsgi
        server = BalancedServer(config=self.config, table=self.table)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
