"""config.workers: the table of open connections, and gunicorn's workers sharing new
connections under a real arbiter."""

import collections
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from config.workers import ConnectionTable, _alive

REPO = Path(__file__).resolve().parent.parent


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def table():
    table = ConnectionTable(slots=4)
    assert table.join()
    yield table
    table.leave()


@pytest.fixture
def live_peer():
    """A live process to stand for another worker."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_worker_takes_the_first_free_slot_and_gives_it_back(table):
    assert table.slot == 0
    assert table.rows()[0] == (os.getpid(), 0)
    table.leave()
    assert table.slot is None
    assert table.rows()[0] == (0, 0)


def test_a_worker_alone_always_accepts_and_counts_the_connection(table):
    assert table.may_accept(0)
    assert table.rows()[0] == (os.getpid(), 1)
    assert table.may_accept(7)
    assert table.rows()[0] == (os.getpid(), 8)


def test_a_worker_defers_to_a_live_peer_holding_fewer(table, live_peer):
    table._write(1, live_peer, 2)
    assert not table.may_accept(3)
    assert table.rows()[0] == (os.getpid(), 3), "the count is published even when deferring"
    assert table.may_accept(2), "a tie accepts"
    assert table.rows()[0] == (os.getpid(), 3)


def test_a_dead_workers_slot_is_freed_instead_of_deferred_to(table):
    dead = _dead_pid()
    table._write(2, dead, 0)
    assert table.may_accept(5)
    assert table.rows()[2] == (0, 0)


def test_a_new_worker_takes_back_a_dead_workers_slot(live_peer):
    table = ConnectionTable(slots=2)
    table._write(0, live_peer, 3)
    table._write(1, _dead_pid(), 9)
    assert table.join()
    assert table.slot == 1
    assert table.rows()[1] == (os.getpid(), 0)


def test_with_every_slot_held_by_a_live_worker_a_new_one_accepts_unbalanced(live_peer):
    table = ConnectionTable(slots=2)
    table._write(0, live_peer, 0)
    table._write(1, os.getppid(), 0)
    assert not table.join()
    assert table.may_accept(100)
    table.publish(5)
    assert table.rows() == [(live_peer, 0), (os.getppid(), 0)]


def test_the_table_is_shared_with_forked_processes_and_a_killed_holder_frees_the_lock(table):
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        try:
            table.slot = None
            table.join()
            table.publish(4)
            fcntl.lockf(table._file.fileno(), fcntl.LOCK_EX)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status)
    assert table.rows()[1] == (child, 4)
    # The lock its holder died with is free: taking it must not block.
    fcntl.lockf(table._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.lockf(table._file.fileno(), fcntl.LOCK_UN)
    assert table.may_accept(6), "the dead child's slot is not deferred to"
    assert table.rows()[1] == (0, 0)


# Under gunicorn -------------------------------------------------------------------------------

PID_APP = textwrap.dedent(
    """
    import os

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    """
)


class Gunicorn:
    def __init__(self, directory: Path, workers: int):
        (directory / "pid_app.py").write_text(PID_APP)
        self.log_path = directory / "gunicorn.log"
        self.process = subprocess.Popen(  # noqa: S603
            [
                *(sys.executable, "-m", "gunicorn", "pid_app:app", "--chdir", str(directory)),
                *("-k", "config.workers.BalancedUvicornWorker", "--workers", str(workers)),
                *("--bind", "127.0.0.1:0", "--graceful-timeout", "5"),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("w"),
        )
        self.port = int(self.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)")[0])
        self.wait_for(r"\[(\d+)\] \[INFO\] Accepting connections balanced", count=workers)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, count: int = 1) -> list[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            assert self.process.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged {count} times:\n{self.log()}")

    def workers(self) -> list[int]:
        """The live workers, from gunicorn's log (the arbiter reaps a dead one before it boots
        its replacement)."""
        booted = [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.log())]
        return [pid for pid in booted if _alive(pid)]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def gunicorn(tmp_path):
    servers = []

    def start(workers: int = 2) -> Gunicorn:
        servers.append(Gunicorn(tmp_path, workers))
        return servers[-1]

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


def serving_pids(port: int, connections: int) -> collections.Counter:
    """Opens `connections` keep-alive connections at once, then asks on each which worker
    answers; returns the count of connections per worker pid."""
    address = ("127.0.0.1", port)
    sockets = [socket.create_connection(address, timeout=30) for _ in range(connections)]
    try:
        for sock in sockets:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        answered = collections.Counter()
        for sock in sockets:
            data = b""
            while not re.search(rb"\r\n\r\n\d+$", data):
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            answered[int(data.rsplit(b"\r\n\r\n", 1)[1])] += 1
        return answered
    finally:
        for sock in sockets:
            sock.close()


def test_connections_opened_together_are_shared_by_the_workers(gunicorn):
    server = gunicorn(workers=2)
    workers = server.workers()
    for _ in range(3):
        answered = serving_pids(server.port, 16)
        assert set(answered) == set(workers), answered
        assert min(answered.values()) >= 6, answered


def test_a_stopped_worker_delays_new_connections_without_refusing_them(gunicorn):
    server = gunicorn(workers=2)
    stopped, running = server.workers()
    os.kill(stopped, signal.SIGSTOP)
    try:
        answered = serving_pids(server.port, 4)
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert answered == {running: 4}


def test_a_killed_worker_is_replaced_and_its_replacement_takes_its_slot(gunicorn):
    server = gunicorn(workers=2)
    killed = server.workers()[0]
    os.kill(killed, signal.SIGKILL)
    server.wait_for(r"\[(\d+)\] \[INFO\] Accepting connections balanced", count=3)
    assert "unbalanced" not in server.log()
    workers = server.workers()
    assert killed not in workers and len(workers) == 2
    answered = serving_pids(server.port, 16)
    assert set(answered) == set(workers), answered
    assert min(answered.values()) >= 6, answered


def test_the_server_stops_cleanly(gunicorn):
    server = gunicorn(workers=2)
    assert serving_pids(server.port, 2).total() == 2
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_after_a_reload_the_new_workers_share_the_connections(gunicorn):
    server = gunicorn(workers=2)
    old = set(server.workers())
    server.process.send_signal(signal.SIGHUP)
    server.wait_for(r"\[(\d+)\] \[INFO\] Accepting connections balanced", count=4)
    deadline = time.monotonic() + 30
    while old & set(server.workers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = server.workers()
    assert not old & set(workers) and len(workers) == 2
    answered = serving_pids(server.port, 16)
    assert set(answered) == set(workers), answered
    assert min(answered.values()) >= 6, answered
