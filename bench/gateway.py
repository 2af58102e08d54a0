"""The LLM gateway (POST /api/v1/chat/completions) as served, against calling its upstream
directly and against a minimal async pass-through proxy on the same machine, in one run.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/gateway.py [--quick]

Set-up: a throw-away database (`test_` + DATABASE_URL's name), migrated; a free-plan
organization whose quotas the run never reaches, its owner and an API key (scope `write`); a
catalogue model `bench-model` served by an OpenAI-compatible provider (no retries) at a local
upstream, bench/llm_upstream.py in its own process: JSON answers after 200 ms, streams of 50
pieces 2 ms apart, usage on every answer. The gateway runs as it is served (config/asgi.py:
gunicorn with uvicorn workers, pooled connections, production settings, 2 workers), with rate
limits the run never reaches (API_RATE_*); the baseline, bench/passthrough_proxy.py (the
HTTP client the gateway's adapters use), runs under the same command. The same request body
goes to all three. Each run has its own cache key prefix; every process is stopped at the end,
on errors and on Ctrl-C / SIGTERM, and the server logs are kept when the run fails.

1. Added latency: sequential requests (50 JSON, 30 streamed, after a warm-up), interleaved
   direct / proxy / gateway. p50 and p95 of each, and what the gateway adds over the direct
   call: total time of a JSON answer; time to the first content piece and total time of a
   stream.
2. Throughput: 100 clients (arriving over the first half of the warm-up), each sending its
   next request as soon as its previous one is answered, for 10 s after a 2 s warm-up, against
   the proxy and the gateway, JSON and streamed; 3 rounds, alternating which goes first. Prints
   each round's req/s (answers received whole in the window), latency under load, CPU per
   request from /proc (the server's processes and each worker's share; PostgreSQL's backends
   and Redis serving them; the upstream; the load generator), how busy the machine was, and
   the ratio gateway/proxy; then the medians (target: gateway/proxy >= 0.8).
3. Accounting: every request must be answered 200 with the whole answer and its usage, and
   the tokens in the gateway's answers, in its GatewayCall rows (one per request), in the
   organization's tokens quota counter, in the API key's budget counter and in what the
   upstream reported for the gateway's calls must be the same sum. Exits 1 otherwise.

--quick: a smoke run (fewer requests, 3 s per throughput phase, 1 round). Other options:
--clients, --seconds, --warmup, --rounds, --calls, --stream-calls, --workers, --delay,
--chunks, --chunk-delay.

The load generator is a lean HTTP/1.1 client on asyncio (uvloop), not httpx: on a 2-core
machine, a client that costs more CPU than the servers it measures takes their CPU and pulls
every ratio towards 1.
"""

import argparse
import asyncio
import json
import math
import os
import re
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common import describe_environment
from serving import Processes, free_port, gunicorn, production_environment, run_with_servers

from tests.playground.upstream import DEFAULT_REPLY

REPO = Path(__file__).resolve().parent.parent
MODEL = "bench-model"
# The name the gateway calls the upstream by: the upstream's counts tell its calls apart.
UPSTREAM_MODEL = "bench-model-upstream"
GATEWAY_PATH = "/api/v1/chat/completions"
UPSTREAM_PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark in fifty pieces, please."}]
MAX_TOKENS = 64
UNLIMITED_RATE = "1000000000/min"
HUGE = 10**15
TARGET = 0.8
REQUEST_TIMEOUT = 60  # seconds; an answer later than this counts as lost


# Processes -----------------------------------------------------------------------------------


# CPU accounting (/proc) ----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


@dataclass
class CPUProbe:
    """CPU seconds used so far, process by process: the process groups named, PostgreSQL's
    backends of our database and Redis (when they run on this machine), this process, and the
    machine. `used` sums what each process used between two snapshots, so a process that
    starts or ends in between counts for what it used, never less than nothing."""

    groups: dict[str, int]  # name -> process group id
    database: str
    redis_pid: int | None

    def snapshot(self) -> dict[str, dict[int, float]]:
        seconds: dict[str, dict[int, float]] = {name: {} for name in (*self.groups, "db+redis")}
        if self.redis_pid:
            seconds["db+redis"][self.redis_pid] = _cpu_seconds(self.redis_pid)
        by_group = {pgid: name for name, pgid in self.groups.items()}
        database = self.database.encode()
        for pid in _pids():
            fields = _stat_fields(pid)
            if fields is None:
                continue
            used = (int(fields[11]) + int(fields[12])) / _TICK
            name = by_group.get(int(fields[2]))
            if name is not None:
                seconds[name][pid] = used
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            # A backend's title: "postgres: USER DATABASE HOST(PORT) STATE".
            title = cmdline.split(b" ", 3)
            if len(title) > 2 and title[0] == b"postgres:" and title[2] == database:
                seconds["db+redis"][pid] = used
        times = os.times()
        seconds["client"] = {os.getpid(): times.user + times.system}
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        seconds["machine_busy"] = {0: (sum(values) - values[3] - values[4]) / _TICK}
        seconds["machine_total"] = {0: sum(values) / _TICK}
        return seconds

    def worker_shares(self, before: dict, after: dict, group: str) -> list[float]:
        """Each worker's share (%) of its server's CPU, largest first (the master left out)."""
        used = {
            pid: max(value - before[group].get(pid, 0.0), 0.0)
            for pid, value in after[group].items()
            if pid != self.groups[group]
        }
        total = sum(used.values()) or 1.0
        return sorted((value * 100 / total for value in used.values()), reverse=True)

    @staticmethod
    def used(before: dict, after: dict) -> dict[str, float]:
        return {
            key: sum(max(value - before[key].get(pid, 0.0), 0.0) for pid, value in pids.items())
            for key, pids in after.items()
        }


# A lean HTTP/1.1 client ----------------------------------------------------------------------

_CONTENT_PIECE = re.compile(rb'"content": ?"[^"]')


@dataclass
class Target:
    name: str
    port: int
    path: str
    token: str = ""

    def request(self, body: bytes) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Content-Type: application/json\r\n"
            # Behind the TLS-terminating proxy production settings expect (no SSL redirect).
            "X-Forwarded-Proto: https\r\n"
            + (f"Authorization: Bearer {self.token}\r\n" if self.token else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


@dataclass
class Answer:
    status: int = 0
    seconds: float = 0.0
    first_piece: float | None = None  # seconds to the first content piece of a stream
    tokens: int | None = None  # usage.total_tokens
    pieces: int = 0
    text: str | None = None
    done: bool = False  # a stream's `data: [DONE]`
    error: str = ""
    body: bytes = b""
    ok: bool = False  # 200 with the whole answer and its usage (Ledger.record)


def _body(stream: bool) -> bytes:
    payload = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return json.dumps(payload).encode()


BODIES = {False: _body(False), True: _body(True)}


class Connection:
    """One keep-alive connection to a target, one request at a time."""

    def __init__(self, target: Target):
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.target.port, limit=2**20
        )
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, stream: bool) -> Answer:
        answer = Answer()
        started = time.perf_counter()
        try:
            if self.writer is None or self.reader.at_eof():
                await self.connect()
            self.writer.write(self.target.request(BODIES[stream]))
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self._read(answer, started)
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
        ) as e:
            answer.error = f"{type(e).__name__}: {e}"
            self.close()
        answer.seconds = time.perf_counter() - started
        return answer

    async def _read(self, answer: Answer, started: float) -> None:
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        answer.status = int(head[9:12])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        events = b"text/event-stream" in headers.get(b"content-type", b"")
        buffer = bytearray()

        def feed(data: bytes) -> None:
            if not events:
                buffer.extend(data)
                return
            buffer.extend(data)
            while (end := buffer.find(b"\n\n")) >= 0:
                event = bytes(buffer[:end])
                del buffer[: end + 2]
                self._event(answer, event, started)

        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                feed((await reader.readexactly(size + 2))[:-2])
        elif b"content-length" in headers:
            feed(await reader.readexactly(int(headers[b"content-length"])))
        else:
            feed(await reader.read())
            self.close()
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        if not events:
            answer.body = bytes(buffer)
            if answer.status == 200:
                payload = json.loads(answer.body)
                answer.text = payload["choices"][0]["message"]["content"]
                answer.tokens = payload["usage"]["total_tokens"]

    @staticmethod
    def _event(answer: Answer, event: bytes, started: float) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                answer.done = True
                continue
            pieces = len(_CONTENT_PIECE.findall(data))
            if pieces and answer.first_piece is None:
                answer.first_piece = time.perf_counter() - started
            answer.pieces += pieces
            if b'"total_tokens"' in data:
                answer.tokens = json.loads(data)["usage"]["total_tokens"]
            if data.startswith(b'{"error"'):
                answer.error = data[:300].decode(errors="replace")
                answer.body = data


# What every request must get, and the ledger of each target -------------------------------


@dataclass
class Ledger:
    sent: int = 0
    ok: int = 0
    tokens: int = 0  # usage.total_tokens in the answers
    failures: list[str] = field(default_factory=list)

    def record(self, answer: Answer, stream: bool, chunks: int) -> bool:
        self.sent += 1
        if answer.tokens is not None:
            self.tokens += answer.tokens
        whole = answer.done and answer.pieces == chunks if stream else answer.text == DEFAULT_REPLY
        ok = answer.status == 200 and not answer.error and answer.tokens is not None and whole
        answer.ok = ok
        if ok:
            self.ok += 1
        elif len(self.failures) < 5:
            kind = "stream" if stream else "JSON"
            self.failures.append(
                f"{kind}: HTTP {answer.status} {answer.error} pieces={answer.pieces} "
                f"done={answer.done} tokens={answer.tokens} "
                f"body={answer.body[:300].decode(errors='replace')!r}"
            )
        return ok


class Bench:
    def __init__(self, args, targets: dict[str, Target], probe: CPUProbe):
        self.args = args
        self.targets = targets
        self.probe = probe
        self.ledgers = {name: Ledger() for name in targets}

    async def send(self, connection: Connection, stream: bool) -> Answer:
        answer = await connection.post(stream)
        self.ledgers[connection.target.name].record(answer, stream, self.args.chunks)
        return answer

    async def warm_up(self, name: str, requests: int, concurrency: int) -> None:
        """Concurrent requests, so that every worker has its connections and clients."""
        queue = [stream for stream in (False, True) for _ in range(requests)]

        async def client():
            connection = Connection(self.targets[name])
            while queue:
                await self.send(connection, queue.pop())
            connection.close()

        await asyncio.gather(*(client() for _ in range(concurrency)))

    async def measure(self) -> dict:
        args = self.args
        for name in ("proxy", "gateway"):
            await self.warm_up(name, requests=args.clients, concurrency=min(args.clients, 20))
        summary = {}

        print(f"1. added latency: sequential requests after {args.latency_warm} of warm-up")
        samples = await self.latency(False, args.calls, args.latency_warm)
        summary["json"] = print_latency(
            f"JSON answers, total ({args.calls} each)", samples, "total"
        )
        samples = await self.latency(True, args.stream_calls, args.latency_warm)
        summary["first"] = print_latency(
            f"streams, time to the first piece ({args.stream_calls} each)", samples, "first"
        )
        summary["stream"] = print_latency("streams, total", samples, "total")

        print(
            f"2. throughput: {args.clients} concurrent clients, {args.seconds:g} s after "
            f"{args.warmup:g} s of warm-up, {args.rounds} round(s)"
        )
        rates = {(mode, name): [] for mode in ("json", "stream") for name in ("proxy", "gateway")}
        cpu = {key: [] for key in rates}  # (server, db+redis) CPU ms per request
        for round_number in range(args.rounds):
            order = ["proxy", "gateway"] if round_number % 2 == 0 else ["gateway", "proxy"]
            for mode, stream in (("json", False), ("stream", True)):
                label = "JSON" if mode == "json" else "streamed"
                print(f"   round {round_number + 1}, {label}:")
                results = {}
                for name in order:
                    results[name] = await self.load(name, stream)
                    print(f"     {load_line(name, results[name], name)}")
                    rates[mode, name].append(results[name]["rate"])
                    per_request = results[name]["per_request"]
                    cpu[mode, name].append((per_request[name], per_request["db+redis"]))
                ratio = results["gateway"]["rate"] / max(results["proxy"]["rate"], 1e-9)
                print(f"     gateway/proxy {ratio:.2f}")
        summary["rates"] = rates
        summary["cpu"] = cpu
        return summary

    # 1. Added latency

    async def latency(self, stream: bool, calls: int, warm: int) -> dict[str, dict]:
        names = list(self.targets)
        connections = {name: Connection(target) for name, target in self.targets.items()}
        samples = {name: {"total": [], "first": []} for name in names}
        for number in range(warm + calls):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                answer = await self.send(connections[name], stream)
                if number >= warm:
                    samples[name]["total"].append(answer.seconds)
                    if answer.first_piece is not None:
                        samples[name]["first"].append(answer.first_piece)
        for connection in connections.values():
            connection.close()
        return samples

    # 2. Throughput

    async def load(self, name: str, stream: bool) -> dict:
        """`clients` closed-loop clients for warm-up + seconds; what finished in the window."""
        args = self.args
        started = time.perf_counter()
        window_start = started + args.warmup
        stop = window_start + args.seconds
        latencies: list[float] = []

        async def client(number: int):
            # Clients arrive over the first half of the warm-up, as they would in service,
            # not all in the same millisecond: one worker would accept every connection.
            await asyncio.sleep(number * args.warmup / 2 / args.clients)
            connection = Connection(self.targets[name])
            while time.perf_counter() < stop:
                answer = await self.send(connection, stream)
                if answer.ok and window_start <= time.perf_counter() < stop:
                    latencies.append(answer.seconds)
            connection.close()

        async def measure():
            await asyncio.sleep(args.warmup)
            before = self.probe.snapshot()
            await asyncio.sleep(args.seconds)
            after = self.probe.snapshot()
            return self.probe.used(before, after), self.probe.worker_shares(before, after, name)

        *_, (cpu, shares) = await asyncio.gather(
            *(client(number) for number in range(args.clients)), measure()
        )
        count = len(latencies)
        return {
            "rate": count / args.seconds,
            "latencies": latencies,
            "cpu": cpu,
            # Milliseconds per request answered in the window; NaN when none was.
            "per_request": {
                key: value * 1000 / count if count else math.nan for key, value in cpu.items()
            },
            "shares": shares,
        }


# Reporting -----------------------------------------------------------------------------------


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def _median(values: list[float]) -> float:
    """The median of the figures that are numbers; NaN when none is."""
    numbers = [value for value in values if not math.isnan(value)]
    return statistics.median(numbers) if numbers else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def print_latency(title: str, samples: dict, metric: str) -> dict[str, float]:
    print(f"   {title}")
    print(f"     {'':13s} {'p50':>10s}  {'p95':>10s}")
    for name, values in samples.items():
        print(f"     {name:13s} {ms(p50(values[metric]))}  {ms(p95(values[metric]))}")
    added = {}
    direct = samples["direct"][metric]
    for name in ("proxy", "gateway"):
        values = samples[name][metric]
        added[name] = (p50(values) - p50(direct), p95(values) - p95(direct))
        print(f"     {name + ' adds':13s} {ms(added[name][0])}  {ms(added[name][1])}")
    return added["gateway"]


def load_line(name: str, result: dict, server_group: str) -> str:
    cpu = result["cpu"]

    def per_request(key):
        return f"{result['per_request'][key]:5.2f}"

    busy = cpu["machine_busy"] / cpu["machine_total"] * 100 if cpu["machine_total"] else 0
    latencies = result["latencies"]
    return (
        f"{name:8s} {result['rate']:7.1f} req/s  "
        f"p50 {ms(p50(latencies) if latencies else math.nan)} "
        f"p95 {ms(p95(latencies) if len(latencies) > 1 else math.nan)}  "
        f"CPU ms/request: server {per_request(server_group)} "
        f"(workers {'/'.join(f'{share:.0f}' for share in result['shares'])} %) "
        f"db+redis {per_request('db+redis')} upstream {per_request('upstream')} "
        f"client {per_request('client')}  machine busy {busy:3.0f} %"
    )


# Set-up --------------------------------------------------------------------------------------


def create_rows(upstream_url: str) -> tuple[str, object]:
    """The organization, its owner and API key, and the catalogue model; (key, tenant)."""
    from django.db import transaction

    from accounts.services import api_key_create, user_create
    from playground.services.catalogue import language_model_create, provider_create
    from tenants.services import tenant_create

    with transaction.atomic():
        owner = user_create(email="gateway@example.com", password="bench-password-1", name="GW")
        # Limits above the free tier: set up by the system (no actor), as staff would.
        tenant = tenant_create(
            actor=None,
            owner=owner,
            name="Bench Gateway",
            slug="bench-gateway",
            settings={"maxTokensPerMonth": HUGE, "maxApiCallsPerMonth": HUGE},
        )
        _, raw_key = api_key_create(tenant=tenant, actor=owner, name="bench", scopes=["write"])
        provider = provider_create(
            actor=None,
            name="bench-upstream",
            kind="openai",
            base_url=f"{upstream_url}/v1",
            api_key_env="",
            max_retries=0,
        )
        language_model_create(
            actor=None,
            name=MODEL,
            provider=provider,
            upstream_model=UPSTREAM_MODEL,
            context_window=100_000,
            max_output_tokens=4096,
            input_price_micros=500_000,
            output_price_micros=1_500_000,
        )
    return raw_key, tenant


def redis_pid() -> int | None:
    """Redis's process id when it runs on this machine, for its CPU."""
    from django.core.cache import cache

    try:
        pid = int(cache._cache.get_client().info("server")["process_id"])
        comm = Path(f"/proc/{pid}/comm").read_text()
    except Exception:
        return None
    return pid if comm.startswith("redis") else None


def served_environment(database_url: str, upstream_url: str) -> dict[str, str]:
    # Rates the run never reaches; the free tier's scope rates are these defaults.
    return production_environment(
        database_url,
        API_RATE_USER=UNLIMITED_RATE,
        API_RATE_GATEWAY=UNLIMITED_RATE,
        API_RATE_GATEWAY_TOKENS=UNLIMITED_RATE,
        API_RATE_PLAN_FREE="1000000000/hour",
        BENCH_UPSTREAM_URL=upstream_url,
    )


# The run -------------------------------------------------------------------------------------


def run(args, processes: Processes) -> bool:
    from django.db import connection

    database = connection.settings_dict["NAME"]
    database_url = urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{database}").geturl()
    upstream_port, gateway_port, proxy_port = free_port(), free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    raw_key, tenant = create_rows(upstream_url)
    env = served_environment(database_url, upstream_url)
    processes.start(
        "upstream",
        [
            *(sys.executable, str(REPO / "bench" / "llm_upstream.py")),
            *(
                "--port",
                str(upstream_port),
                "--delay",
                str(args.delay),
                "--chunks",
                str(args.chunks),
            ),
            *("--chunk-delay", str(args.chunk_delay)),
        ],
        env,
    )
    processes.start("gateway", gunicorn("config.asgi:application", gateway_port, args.workers), env)
    processes.start("proxy", gunicorn("bench.passthrough_proxy:app", proxy_port, args.workers), env)
    processes.wait_ready("upstream", upstream_url)
    processes.wait_ready("gateway", f"http://127.0.0.1:{gateway_port}")
    processes.wait_ready("proxy", f"http://127.0.0.1:{proxy_port}")
    probe = CPUProbe(
        groups={name: process.pid for name, process in processes.running.items()},
        database=database,
        redis_pid=redis_pid(),
    )
    connection.close()  # idle until the accounting

    targets = {
        "direct": Target("direct", upstream_port, UPSTREAM_PATH),
        "proxy": Target("proxy", proxy_port, UPSTREAM_PATH),
        "gateway": Target("gateway", gateway_port, GATEWAY_PATH, token=raw_key),
    }
    bench = Bench(args, targets, probe)
    print(
        f"gateway: {describe_environment()} cpus={os.cpu_count()} "
        f"servers: gunicorn, {args.workers} uvicorn workers each"
    )
    print(
        f"   upstream: JSON after {args.delay * 1000:.0f} ms; streams of {args.chunks} pieces "
        f"{args.chunk_delay * 1000:g} ms apart (bench/llm_upstream.py)"
    )
    summary = runner(bench.measure())
    return account(bench, summary, tenant)


def runner(coroutine):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def account(bench: Bench, summary: dict, tenant) -> bool:
    import httpx
    from django.db.models import Count, Q, Sum

    from accounts.models import APIKey
    from playground.models import CallStatus, GatewayCall
    from tenants.models import QuotaCounter

    upstream = httpx.get(
        f"http://127.0.0.1:{bench.targets['direct'].port}/stats", trust_env=False
    ).json()
    via_gateway = upstream.get(UPSTREAM_MODEL, {"requests": 0, "total_tokens": 0})
    direct_or_proxy = upstream.get(MODEL, {"requests": 0})
    calls = GatewayCall.objects.filter(tenant=tenant).aggregate(
        count=Count("id"),
        tokens=Sum("total_tokens"),
        succeeded=Count("id", filter=Q(status=CallStatus.SUCCEEDED, usage_estimated=False)),
    )
    quota = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    key_tokens = APIKey.objects.filter(tenant=tenant).aggregate(t=Sum("budget_tokens_used"))["t"]
    ledgers = bench.ledgers
    gateway = ledgers["gateway"]

    print("3. accounting (every request of the run, warm-ups included)")
    for name, ledger in ledgers.items():
        print(
            f"   {name:8s} sent {ledger.sent:6d}  answered 200 whole {ledger.ok:6d}  "
            f"lost {ledger.sent - ledger.ok}"
        )
        for failure in ledger.failures:
            print(f"      {failure}")
    tokens = {
        "in the gateway's answers": gateway.tokens,
        "GatewayCall rows": calls["tokens"] or 0,
        "tokens quota counter": quota.used if quota else 0,
        "API key budget counter": key_tokens or 0,
        "reported by the upstream": via_gateway["total_tokens"],
    }
    for label, value in tokens.items():
        print(f"   tokens {label:26s} {value:10d}")
    print(
        f"   calls: {gateway.sent} requests, {calls['count']} GatewayCall rows "
        f"({calls['succeeded']} succeeded with reported usage), "
        f"{via_gateway['requests']} upstream calls"
    )
    lost = sum(ledger.sent - ledger.ok for ledger in ledgers.values())
    upstream_lost = ledgers["direct"].sent + ledgers["proxy"].sent - direct_or_proxy["requests"]
    metered = len(set(tokens.values())) == 1 and (
        gateway.sent == calls["count"] == calls["succeeded"] == via_gateway["requests"]
    )
    print(f"   metered == reported: {'yes' if metered else 'NO'}")

    rates = summary["rates"]
    print(f"summary (ratios against the baseline measured in this run; target >= {TARGET:.1f})")
    for key, label in (
        ("json", "JSON answer, total      "),
        ("first", "stream, first piece     "),
        ("stream", "stream, total           "),
    ):
        added_p50, added_p95 = summary[key]
        print(
            f"   gateway adds, {label}: p50 {added_p50 * 1000:+6.1f} ms  "
            f"p95 {added_p95 * 1000:+6.1f} ms"
        )
    for mode, label in (("json", "JSON    "), ("stream", "streamed")):
        pairs = zip(rates[mode, "gateway"], rates[mode, "proxy"], strict=True)
        ratio = statistics.median(g / max(p, 1e-9) for g, p in pairs)
        verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
        print(
            f"   throughput {label}: gateway {statistics.median(rates[mode, 'gateway']):7.1f} "
            f"req/s, proxy {statistics.median(rates[mode, 'proxy']):7.1f} req/s, "
            f"gateway/proxy {ratio:.2f} (target >= {TARGET:.1f}) {verdict}"
        )
    cpu = summary["cpu"]
    for mode, label in (("json", "JSON    "), ("stream", "streamed")):
        gateway_cpu = [server + services for server, services in cpu[mode, "gateway"]]
        proxy_cpu = [server for server, _ in cpu[mode, "proxy"]]
        print(
            f"   CPU per request {label}: gateway {_median(gateway_cpu):6.2f} ms "
            "(server + PostgreSQL + Redis), "
            f"proxy {_median(proxy_cpu):6.2f} ms (medians of the rounds)"
        )
    print(
        f"   requests lost: {lost} (upstream calls missing behind direct/proxy: "
        f"{upstream_lost}); metered == reported: {'yes' if metered else 'NO'}"
    )
    return lost == 0 and upstream_lost == 0 and metered


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, help="throughput window (10, quick 3)")
    parser.add_argument("--warmup", type=float, help="before the window (2, quick 1)")
    parser.add_argument("--rounds", type=int, help="throughput rounds (3, quick 1)")
    parser.add_argument("--calls", type=int, help="sequential JSON requests (50, quick 10)")
    parser.add_argument("--stream-calls", type=int, help="sequential streams (30, quick 10)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.2, help="upstream JSON answer delay")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--chunk-delay", type=float, default=0.002)
    args = parser.parse_args()
    defaults = {
        "seconds": (10, 3),
        "warmup": (2, 1),
        "rounds": (3, 1),
        "calls": (50, 10),
        "stream_calls": (30, 10),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.latency_warm = 3 if args.quick else 10
    if not 1 <= args.chunks <= MAX_TOKENS:
        parser.error(f"--chunks: from 1 to {MAX_TOKENS} (the requests' max_tokens)")

    run_with_servers("gateway", run, args)


if __name__ == "__main__":
    main()
