"""The webhook relay's throughput, and what publishing an event costs a write request.

    python bench/webhook_relay.py [--calls 10000] [--rounds 3]

1. Relay: `--calls` due deliveries (10,000) to a local receiver that answers 200 (its own
   process, so it does not share our interpreter), sent by the relay
   (notifications.services.webhook_deliveries_send: claim with SKIP LOCKED, sign, POST,
   record each attempt) with 1 and 4 concurrent senders, against a bare loop that POSTs the
   same bodies with the same HTTP client (httpx on asyncio, same concurrency) and does nothing
   else. Rounds alternate the variants. Target: relay >= 0.7x the bare loop. One more
   variant sends the same 10,000 spread over 100 organizations (4 senders): what sharing each
   claim between the organizations waiting costs.

2. Publishing: PATCH organizations/members/{id} (a role change: the audit event is a public
   event) in a tenant with 3 endpoints subscribed, against the same request with the catalogue
   hook off (the audit event alone, as before this app). Target: publishing adds <= 10 %.
"""

import asyncio
import multiprocessing
import socket
import time

from common import bench_main, bench_owner, describe_environment, interleaved_samples, medians

ORGANIZATIONS = 100


def main():
    bench_main(__doc__, run, calls=10_000, rounds=3)


# The receiver ------------------------------------------------------------------------------

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def _serve(port_queue) -> None:
    """A minimal keep-alive HTTP/1.1 server that reads each request and answers 200."""

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(handle, sock=sock, backlog=256)
        port_queue.put(sock.getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_receiver() -> tuple[multiprocessing.Process, str]:
    queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve, args=(queue,), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{queue.get(timeout=10)}/hooks"


# 1. Relay throughput -------------------------------------------------------------------------


def _bare_loop(url: str, bodies: list[bytes], concurrency: int) -> None:
    """POST every body with the relay's HTTP client (httpx on asyncio), `concurrency` at a
    time, and nothing else: no claim, no signature, no record."""
    import httpx

    async def send_all():
        slots = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=15) as client:

            async def one(body):
                async with slots:
                    response = await client.post(
                        url, content=body, headers={"Content-Type": "application/json"}
                    )
                    await response.aread()
                    assert response.status_code == 200

            await asyncio.gather(*(one(body) for body in bodies))

    asyncio.run(send_all())


def relay_throughput(url: str, deliveries: int, rounds: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    from audit.models import AuditEvent
    from notifications.catalog import EVENT_TYPES
    from notifications.models import (
        DeliveryStatus,
        WebhookAttempt,
        WebhookDelivery,
        WebhookEndpoint,
        WebhookEvent,
    )
    from notifications.services import webhook_deliveries_send, webhook_endpoint_create
    from notifications.services.events import _event_body
    from tenants.services import tenant_create

    user, tenant, _ = bench_owner()
    with transaction.atomic():
        endpoint, _ = webhook_endpoint_create(
            tenant=tenant, actor=user, name="Bench receiver", url=url, events=["*"]
        )
    entry = EVENT_TYPES["organization.member.joined"]
    now = timezone.now()
    events = []
    for number in range(deliveries):
        audit = AuditEvent(tenant=tenant, event_type="member.joined", payload={}, created_at=now)
        data = {**entry.example, "email": f"member{number}@example.com"}
        events.append(
            WebhookEvent(
                id=audit.id,
                tenant=tenant,
                event_type=entry.type,
                body=_event_body(audit, entry, data),
            )
        )
    WebhookEvent.objects.bulk_create(events, batch_size=2000)
    WebhookDelivery.objects.bulk_create(
        (
            WebhookDelivery(
                tenant=tenant, endpoint=endpoint, event=event, event_type=event.event_type
            )
            for event in events
        ),
        batch_size=2000,
    )
    # The same events again, for one endpoint in each of ORGANIZATIONS organizations: what
    # sharing each claim between the organizations waiting costs.
    spread = []
    with transaction.atomic():
        for number in range(ORGANIZATIONS):
            other = tenant_create(
                actor=None, owner=user, name=f"Spread {number}", slug=f"spread-{number}"
            )
            spread.append(
                webhook_endpoint_create(
                    tenant=other, actor=user, name="Bench receiver", url=url, events=["*"]
                )[0]
            )
    WebhookDelivery.objects.bulk_create(
        (
            WebhookDelivery(
                tenant_id=spread[number % ORGANIZATIONS].tenant_id,
                endpoint=spread[number % ORGANIZATIONS],
                event=event,
                event_type=event.event_type,
            )
            for number, event in enumerate(events)
        ),
        batch_size=2000,
    )
    bodies = [event.body.encode() for event in events]

    def reset(one_organization: bool):
        WebhookAttempt.objects.all().delete()
        deliveries = WebhookDelivery.objects.all()
        due = (
            deliveries.filter(endpoint=endpoint)
            if one_organization
            else deliveries.exclude(endpoint=endpoint)
        )
        deliveries.exclude(pk__in=due.values("pk")).update(
            status=DeliveryStatus.SUCCEEDED, next_attempt_at=None, claim=""
        )
        due.update(
            status=DeliveryStatus.PENDING,
            next_attempt_at=timezone.now(),
            attempt_count=0,
            claim="",
            succeeded_at=None,
        )
        WebhookEndpoint.objects.update(failure_count=0, failing_since=None)

    def relay(concurrency, one_organization=True):
        def run():
            reset(one_organization)
            started = time.perf_counter()
            report = webhook_deliveries_send(concurrency=concurrency)
            elapsed = time.perf_counter() - started
            assert report.succeeded == deliveries, report
            return elapsed

        return run

    def bare(concurrency):
        def run():
            started = time.perf_counter()
            _bare_loop(url, bodies, concurrency)
            return time.perf_counter() - started

        return run

    variants = {
        "bare x1": bare(1),
        "relay x1": relay(1),
        "bare x4": bare(4),
        "relay x4": relay(4),
        "relay x4, spread": relay(4, one_organization=False),
    }
    _bare_loop(url, bodies[:200], 1)  # warm up
    samples = {name: [] for name in variants}
    for round_number in range(rounds):
        order = list(variants.items())
        for name, fn in order if round_number % 2 == 0 else reversed(order):
            samples[name].append(fn())
    best = {name: min(values) for name, values in samples.items()}
    rate = {name: deliveries / seconds for name, seconds in best.items()}
    print(f"1. relay: {deliveries} deliveries per round, {rounds} rounds (best round)")
    for name in variants:
        print(f"   {name:16s} {rate[name]:8.0f} deliveries/s")
    for concurrency in (1, 4):
        ratio = rate[f"relay x{concurrency}"] / rate[f"bare x{concurrency}"]
        verdict = "ok" if ratio >= 0.7 else "BELOW TARGET"
        print(f"   relay/bare, {concurrency} sender(s): {ratio:.2f}x (target >= 0.70) {verdict}")
    spread_ratio = rate["relay x4, spread"] / rate["bare x4"]
    print(
        f"   relay/bare, 4 senders, spread over {ORGANIZATIONS} organizations: "
        f"{spread_ratio:.2f}x (no target: what the fair share costs)"
    )
    WebhookDelivery.objects.all().delete()
    WebhookEvent.objects.all().delete()
    WebhookEndpoint.objects.all().delete()


# 2. Publishing cost on a write request -------------------------------------------------------


def publishing_cost(url: str, calls: int, rounds: int) -> None:
    from common import UNMETERED
    from django.db import transaction
    from django.test import Client

    from accounts.services import auth_token_issue, user_create
    from audit import services as audit_services
    from notifications.models import WebhookDelivery
    from notifications.services import webhook_endpoint_create
    from notifications.services.events import publish
    from tenants.models import Role
    from tenants.services import membership_add, tenant_create

    with transaction.atomic():
        owner = user_create(email="owner2@example.com", password="bench-password-1")
        tenant = tenant_create(
            actor=None, owner=owner, name="Publishing", slug="publishing", settings=UNMETERED
        )
        member = user_create(email="member2@example.com", password="bench-password-1")
        membership = membership_add(tenant=tenant, user=member, role=Role.MEMBER, actor=None)
        for number in range(3):
            webhook_endpoint_create(
                tenant=tenant, actor=owner, name=f"Endpoint {number}", url=url, events=["*"]
            )
        token = auth_token_issue(user=owner)
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_X_ORGANIZATION_ID=str(tenant.pk))
    path = f"/api/v1/organizations/members/{membership.pk}"
    roles = iter(["viewer", "member"] * (calls * rounds * 4 + 100))

    def change_role():
        response = client.patch(path, {"role": next(roles)}, content_type="application/json")
        assert response.status_code == 200, response.content

    hooks = list(audit_services._RECORDED_HOOKS)
    assert publish in hooks

    def without_publishing():
        audit_services._RECORDED_HOOKS[:] = []
        try:
            change_role()
        finally:
            audit_services._RECORDED_HOOKS[:] = hooks

    variants = {"audit only": without_publishing, "published to 3": change_role}
    interleaved_samples(variants, calls=20, rounds=1)  # warm up
    before = WebhookDelivery.objects.count()
    samples = interleaved_samples(variants, calls=calls, rounds=rounds)
    created = WebhookDelivery.objects.count() - before
    seconds = medians(samples)
    overhead = seconds["published to 3"] / seconds["audit only"] - 1
    print(f"2. publishing: PATCH organizations/members/{{id}}, {calls} calls x {rounds} rounds")
    for name, value in seconds.items():
        print(f"   {name:15s} {value * 1000:7.2f} ms/request")
    verdict = "ok" if overhead <= 0.10 else "ABOVE TARGET"
    print(f"   publishing adds {overhead * 100:.1f} % (target <= 10 %) {verdict}")
    assert created == 3 * calls * rounds, (created, calls * rounds)


def run(calls: int, rounds: int) -> None:
    print(f"webhook_relay: {describe_environment()}")
    process, url = start_receiver()
    try:
        relay_throughput(url, calls, rounds)
        publishing_cost(url, calls=200, rounds=max(rounds * 4, 9))
    finally:
        process.terminate()


if __name__ == "__main__":
    main()
