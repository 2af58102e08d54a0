"""Servers a benchmark starts as production runs them: each in its own process group, logging to
a file, stopped with SIGTERM (then SIGKILL) at the end (bench/gateway.py, bench/load.py)."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """The subprocesses of the run, each in its own process group, logging to a file."""

    def __init__(self):
        self.log_dir = Path(tempfile.mkdtemp(prefix="bench-servers-"))
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(  # noqa: S603
                args,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, name: str, url: str, timeout: float = 60) -> None:
        import httpx

        process = self.running[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{self.log_tail(name)}")
            try:
                if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{self.log_tail(name)}")

    def stop(self) -> None:
        """SIGTERM to each process group; whatever is left after 15 s is killed."""
        for process in self.running.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.running.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        # Workers the master could not stop (it was killed) are in its group.
        for process in self.running.values():
            _signal_group(process, signal.SIGKILL)
        self.running.clear()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def interrupted(signum, frame):
    """A SIGTERM handler: stop the run as Ctrl-C does, so the servers are stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def gunicorn(app: str, port: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "gunicorn", app),
        *("-k", "config.workers.BalancedUvicornWorker", "--workers", str(workers)),
        *("--bind", f"127.0.0.1:{port}"),
    ]


def production_environment(database_url: str, **overrides: str) -> dict[str, str]:
    """This process's environment with production settings against `database_url` and REDIS_URL
    (a random secret key, loopback hosts), and `overrides` (raised rates, say)."""
    redis_url = os.environ["REDIS_URL"]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }


def run_with_servers(name: str, run, args) -> None:
    """`run(args, processes)` on a throw-away database, with this run's own cache keys; every
    server it starts is stopped at the end, on errors and on Ctrl-C / SIGTERM, and their logs
    are kept when the run fails (`run` returns False). Exits 1 then."""
    from common import setup_django

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")) or not os.environ.get(
        "REDIS_URL"
    ):
        raise SystemExit(
            f"bench/{name}.py serves as production does: set DATABASE_URL (postgres://...) "
            "and REDIS_URL (redis://...)"
        )
    signal.signal(signal.SIGTERM, interrupted)
    # This run's cache keys (rate windows, cooldowns) are its own.
    os.environ["CACHE_KEY_PREFIX"] = f"bench-{name}-{secrets.token_hex(4)}"
    teardown = setup_django()
    processes = Processes()
    passed = False
    try:
        passed = run(args, processes)
    except KeyboardInterrupt:
        print("interrupted: stopping the servers")
    finally:
        processes.stop()
        teardown()
        if passed:
            shutil.rmtree(processes.log_dir, ignore_errors=True)
        else:
            print(f"server logs: {processes.log_dir}")
    if not passed:
        sys.exit(1)
