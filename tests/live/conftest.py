"""The quick start, for real: `scripts/run.sh` on the embedded defaults (SQLite, local-memory
cache, file-system Celery transport), run in a temporary directory so it never touches the
repository's var/.

One instance per test session (per pytest-xdist worker), each with its own folder and port. The
tests talk to it over HTTP only; it needs neither PostgreSQL nor Redis, whatever the test
process itself is configured with.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .client import is_healthy

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
HEALTH_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 10
API_KEY_USAGE_FLUSH_SECONDS = 2
# Settings the test process may carry (test.sh exports some, a developer's shell others) that
# would make the subprocess something other than the quick start.
_INHERITED_SETTINGS_TO_DROP = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "MEDIA_ROOT",
    "VAR_DIR",
    "DEBUG",
)


@dataclass
class QuickStart:
    """The running quick start: its base URL and the processes run.sh would have started."""

    url: str
    var_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("http://")

    def log_text(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{path.read_text(errors='replace')}"
            for name, path in self.logs.items()
            if path.exists()
        )

    def assert_healthy(self):
        """Every process still runs and none has logged a locked database (SQLite gives up
        waiting for the write lock): the defect the embedded settings must keep away."""
        stopped = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        assert not stopped, f"stopped: {stopped}\n{self.log_text()}"
        locked = [
            f"{name}: {line}"
            for name, path in self.logs.items()
            if path.exists()
            for line in path.read_text(errors="replace").splitlines()
            if "database is locked" in line
        ]
        assert not locked, "\n".join(locked)


def _environment(var_dir: Path) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if key not in _INHERITED_SETTINGS_TO_DROP
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings.dev",
        # The test process points DATABASE_URL at PostgreSQL; the quick start is a fresh SQLite
        # file, and no Redis (the settings then fall back to the file-system broker in VAR_DIR).
        DATABASE_URL=f"sqlite:///{var_dir / 'db.sqlite3'}",
        REDIS_URL="",
        CELERY_BROKER_URL="",
        VAR_DIR=str(var_dir),
        # celery -A config runs from var_dir, not from the repository.
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        # The web process writes its API keys' usage itself (no Redis): often, so that the
        # tests' calls cross such flushes.
        API_KEY_USAGE_FLUSH_SECONDS=str(API_KEY_USAGE_FLUSH_SECONDS),
        # One quick start and one demo owner serve every live test: together they send more
        # in a minute (the hostile corpus alone sends 50) than the per-user rate a reader meets
        # (100/min), and a test would be throttled by the tests before it.
        API_RATE_USER="1000/min",
    )
    return environment


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _run(name: str, args: list[str], *, env: dict, var_dir: Path, logs: dict) -> None:
    log = var_dir / "logs" / f"{name}.log"
    logs[name] = log
    with log.open("wb") as out:
        result = subprocess.run(  # noqa: S603
            args, cwd=var_dir, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}\n{log.read_text()}")


def _start(name: str, args: list[str], *, env: dict, qs: QuickStart) -> subprocess.Popen:
    log = qs.var_dir / "logs" / f"{name}.log"
    qs.logs[name] = log
    with log.open("wb") as out:
        # Its own process group, so stopping it also stops its children (the worker's pool).
        process = subprocess.Popen(  # noqa: S603
            args,
            cwd=qs.var_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    qs.processes[name] = process
    return process


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to each, as run.sh stops them (the worker then stops its own pool: a warm
    shutdown on the file-system transport takes about five seconds); whatever is left of a
    process group after STOP_TIMEOUT_SECONDS is killed."""
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _serve(qs: QuickStart, env: dict) -> None:
    """The ASGI server (uvicorn, as in the quick start) on a free port; a port taken between
    choosing and binding it is retried with another."""
    for _attempt in range(3):
        port = _free_port()
        server = _start(
            "web",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                HOST,
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=env,
            qs=qs,
        )
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while time.monotonic() < deadline and server.poll() is None:
            if is_healthy(url):
                qs.url = url
                return
            time.sleep(0.1)
        if server.poll() is None or "already in use" not in qs.logs["web"].read_text():
            break
    raise RuntimeError(f"the live server did not become healthy\n{qs.log_text()}")


@pytest.fixture(scope="session")
def quick_start(tmp_path_factory):
    """Migrate a fresh SQLite database, load the demo data, then run the web server, a Celery
    worker and beat as scripts/run.sh does; yields the running QuickStart."""
    var_dir = tmp_path_factory.mktemp("quick-start")
    (var_dir / "logs").mkdir()
    env = _environment(var_dir)
    qs = QuickStart(url="", var_dir=var_dir)
    manage = [sys.executable, str(REPO / "manage.py")]
    started = time.monotonic()
    try:
        _run("migrate", [*manage, "migrate", "--noinput"], env=env, var_dir=var_dir, logs=qs.logs)
        _run("load_demo_data", [*manage, "load_demo_data"], env=env, var_dir=var_dir, logs=qs.logs)
        celery = [sys.executable, "-m", "celery", "-A", "config"]
        _start("worker", [*celery, "worker", "--loglevel=INFO", "--concurrency=1"], env=env, qs=qs)
        _start("beat", [*celery, "beat", "--loglevel=INFO"], env=env, qs=qs)
        _serve(qs, env)
        sys.stderr.write(f"\nquick start up at {qs.url} in {time.monotonic() - started:.1f}s\n")
        yield qs
    finally:
        _stop(qs.processes)
