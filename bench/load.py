"""The request path under a real server: requests per second, p50 and p99 of a few endpoints, and
each one's ratio to GET /health/ measured in the same round.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/load.py \
        [--rounds 5] [--seconds 5] [--connections 16] [--workers 2] [--server asgi|wsgi]

Set-up: a throw-away database (`test_` + DATABASE_URL's name), migrated, with the demo data
(`manage.py load_demo_data`). The organization with the most members is the caller's: its owner
gets a token and an API key (scope `read`), and its monthly `api_calls` quota is raised above
what the run sends. The server is started as the README's production section runs it:
production settings, gunicorn with `--workers` uvicorn workers on `config.asgi` (`--server
wsgi`: gunicorn's sync workers on `config.wsgi`), against PostgreSQL and Redis, with rate limits
raised by the environment (API_RATE_USER, API_RATE_PLAN_*) so that no request is throttled. Every
request carries `X-Forwarded-Proto: https`, as behind the TLS-terminating proxy.

Load: wrk (Debian's package), `--connections` connections on 2 threads, for `--seconds` per
endpoint after a warm-up, in `--rounds` rounds; the endpoints' order alternates from round to
round so that no endpoint always runs first. Endpoints:

- GET /health/ (no credential, no database): the baseline;
- GET /api/v1/organizations/current with the token, and with the API key;
- GET /api/v1/organizations/members (token), a page of members;
- GET /api/v1/audit/events/ (token), a page of the audit log.

Prints each round's req/s, p50 and p99 (wrk's latency distribution), each endpoint's req/s over
/health/'s in that round, and the medians over the rounds (targets: token 0.25, API key 0.35).
A response other than 200 fails the run (exit 1). The server's log is kept when it fails.

Each measurement also reads the workers' CPU time (Linux /proc): when one worker did at least
`ONE_WORKER_SHARE` of it, the line says so. Under uvicorn's own worker class the worker that
wakes first could take every connection wrk opens at once and keep them, and such a round ran
at about half the rate; the production worker class (config.workers) shares them, so the mark
should not appear (docs/performance.md).
"""

import argparse
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from common import describe_environment
from serving import Processes, free_port, gunicorn, production_environment, run_with_servers

UNLIMITED_RATE = "1000000000/min"
UNLIMITED_HOURLY = "1000000000/hour"
TARGETS = {"current (token)": 0.25, "current (API key)": 0.35}
# A measurement in which one worker used this share of the workers' CPU time was served by it.
ONE_WORKER_SHARE = 0.8


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    # The busiest worker's share of the workers' CPU time while it was measured.
    busiest_worker_share: float | None = None


def endpoints(token: str, api_key: str, tenant_id: str) -> list[Endpoint]:
    by_token = (f"Authorization: Token {token}", f"X-Organization-ID: {tenant_id}")
    return [
        Endpoint("/health/", "/health/"),
        Endpoint("current (token)", "/api/v1/organizations/current", by_token),
        Endpoint("current (API key)", "/api/v1/organizations/current", (f"X-API-Key: {api_key}",)),
        Endpoint("members (token)", "/api/v1/organizations/members", by_token),
        Endpoint("audit events (token)", "/api/v1/audit/events/", by_token),
    ]


# wrk ------------------------------------------------------------------------------------------

_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(base_url: str, endpoint: Endpoint, *, seconds: int, connections: int) -> Result:
    command = ["wrk", "--latency", "-t", "2", "-c", str(connections), "-d", f"{max(seconds, 1)}s"]
    for header in ("X-Forwarded-Proto: https", *endpoint.headers):
        command += ["-H", header]
    output = subprocess.run(  # noqa: S603
        [*command, base_url + endpoint.path], capture_output=True, text=True, check=True
    ).stdout
    rate = _RATE.search(output)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate for {endpoint.name}:\n{output}")
    percentiles = {p: float(v) * _UNIT_MS[unit] for p, v, unit in _PERCENTILE.findall(output)}
    errors = sum(int(n) for n in _NON_2XX.findall(output))
    socket_errors = _SOCKET_ERRORS.search(output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Result(float(rate[1]), percentiles.get("50", 0.0), percentiles.get("99", 0.0), errors)


def worker_pids(server_pid: int) -> list[int]:
    """The server's worker processes: gunicorn's children (Linux /proc; none elsewhere)."""
    try:
        with open(f"/proc/{server_pid}/task/{server_pid}/children") as children:
            return [int(pid) for pid in children.read().split()]
    except OSError:
        return []


def cpu_ticks(pids: list[int]) -> list[int]:
    """Each process's user + system CPU time so far, in clock ticks."""
    ticks = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks.append(int(fields[11]) + int(fields[12]))
        except OSError:
            ticks.append(0)
    return ticks


def measure(base_url: str, endpoint: Endpoint, pids: list[int], **load) -> Result:
    """wrk's result, with the busiest worker's share of the workers' CPU time."""
    before = cpu_ticks(pids)
    result = wrk(base_url, endpoint, **load)
    used = [after - was for was, after in zip(before, cpu_ticks(pids), strict=True)]
    if len(used) < 2 or sum(used) <= 0:
        return result
    return replace(result, busiest_worker_share=max(used) / sum(used))


# Set-up ---------------------------------------------------------------------------------------


def create_caller() -> tuple[str, str, str]:
    """(token, API key, organization id) of the demo organization with the most members."""
    from django.core.management import call_command
    from django.db import transaction
    from django.db.models import Count, Q

    from accounts.services import api_key_create, auth_token_issue
    from tenants.models import Membership, MembershipStatus, Role, Tenant

    call_command("load_demo_data", force=True, verbosity=0, stdout=io.StringIO())
    with transaction.atomic():
        tenant = (
            Tenant.objects.annotate(
                active=Count("memberships", filter=Q(memberships__status=MembershipStatus.ACTIVE))
            )
            .order_by("-active", "name")
            .first()
        )
        owner = (
            Membership.objects.select_related("user")
            .filter(tenant=tenant, role=Role.OWNER, status=MembershipStatus.ACTIVE)
            .first()
            .user
        )
        # The run's requests are far above any plan's monthly api_calls: raised as staff would
        # for this organization (its settings' limit), the benchmark's own set-up.
        Tenant.objects.filter(pk=tenant.pk).update(
            settings={**tenant.settings, "maxApiCallsPerMonth": 10**12}
        )
        token = auth_token_issue(user=owner)
        _, api_key = api_key_create(tenant=tenant, actor=owner, name="load", scopes=["read"])
    return token, api_key, str(tenant.pk)


def served_environment(database_url: str) -> dict[str, str]:
    return production_environment(
        database_url,
        API_RATE_USER=UNLIMITED_RATE,
        API_RATE_ANON=UNLIMITED_RATE,
        API_RATE_PLAN_FREE=UNLIMITED_HOURLY,
        API_RATE_PLAN_PRO=UNLIMITED_HOURLY,
        API_RATE_PLAN_ENTERPRISE=UNLIMITED_HOURLY,
        API_RATE_PLAN_CUSTOM=UNLIMITED_HOURLY,
    )


def server_command(server: str, port: int, workers: int) -> list[str]:
    if server == "asgi":
        return gunicorn("config.asgi:application", port, workers)
    return [
        *(sys.executable, "-m", "gunicorn", "config.wsgi:application"),
        *("--workers", str(workers), "--bind", f"127.0.0.1:{port}"),
    ]


# The run --------------------------------------------------------------------------------------


def run(args, processes: Processes) -> bool:
    from django.db import connection

    database = connection.settings_dict["NAME"]
    database_url = urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{database}").geturl()
    token, api_key, tenant_id = create_caller()
    connection.close()  # the server's connections only, while it is measured
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = processes.start(
        "server", server_command(args.server, port, args.workers), served_environment(database_url)
    )
    processes.wait_ready("server", base_url)
    pids = worker_pids(server.pid)

    targets = endpoints(token, api_key, tenant_id)
    print(
        f"load: {describe_environment()} cpus={os.cpu_count()} server={args.server} "
        f"(gunicorn, {args.workers} workers) wrk: {args.connections} connections, "
        f"{args.seconds:g} s per endpoint, {args.rounds} rounds"
    )
    for endpoint in targets:  # warm-up: connections, prepared statements, caches
        wrk(base_url, endpoint, seconds=args.warmup, connections=args.connections)

    results: dict[str, list[Result]] = {endpoint.name: [] for endpoint in targets}
    ratios: dict[str, list[float]] = {endpoint.name: [] for endpoint in targets}
    failed = False
    for number in range(args.rounds):
        order = targets if number % 2 == 0 else list(reversed(targets))
        measured = {
            endpoint.name: measure(
                base_url, endpoint, pids, seconds=args.seconds, connections=args.connections
            )
            for endpoint in order
        }
        health = measured["/health/"].requests_per_second
        print(f"round {number + 1}:")
        for endpoint in targets:
            result = measured[endpoint.name]
            ratio = result.requests_per_second / health
            results[endpoint.name].append(result)
            ratios[endpoint.name].append(ratio)
            failed |= result.errors > 0
            print(
                f"  {endpoint.name:22s} {result.requests_per_second:8.0f} req/s  "
                f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                f"x{ratio:5.2f} of /health/"
                + (f"  ERRORS {result.errors}" if result.errors else "")
                + (f"  one worker ({share:.0%})" if (share := _one_worker(result)) else "")
            )

    print("median over the rounds:")
    for endpoint in targets:
        rows = results[endpoint.name]
        target = TARGETS.get(endpoint.name)
        print(
            f"  {endpoint.name:22s} "
            f"{statistics.median(r.requests_per_second for r in rows):8.0f} req/s  "
            f"p50 {statistics.median(r.p50_ms for r in rows):6.2f} ms  "
            f"p99 {statistics.median(r.p99_ms for r in rows):6.2f} ms  "
            f"x{statistics.median(ratios[endpoint.name]):5.2f} of /health/"
            + (f"  (target {target})" if target else "")
        )
    by_one = {
        name: sum(1 for result in rows if _one_worker(result)) for name, rows in results.items()
    }
    if any(by_one.values()):
        print(
            "served by one worker: "
            + ", ".join(f"{name} {n} of {args.rounds}" for name, n in by_one.items() if n)
        )
    if failed:
        print("FAILED: some responses were not 200 (or sockets failed); see the server log")
    return not failed


def _one_worker(result: Result) -> float | None:
    """The busiest worker's share, when it served the measurement alone (near enough)."""
    share = result.busiest_worker_share
    return share if share is not None and share >= ONE_WORKER_SHARE else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=("asgi", "wsgi"), default="asgi")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/load.py drives the server with wrk: apt-get install wrk")
    run_with_servers("load", run, args)


if __name__ == "__main__":
    main()
