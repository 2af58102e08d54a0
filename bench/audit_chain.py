"""Audit chain throughput on PostgreSQL, against floors measured in the same run.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/audit_chain.py [--events 200000]

1. Sealing and verification throughput (events/s) of one chain, and the raw floor: the same rows
   streamed with a bare server-side cursor, canonicalised and hashed in a plain loop.
   Prints verify/floor and seal/floor (target: verify/floor >= 0.5).
2. What record() adds to a state-changing request: POST /api/v1/tenants/ (which records two
   events, each queueing a seal on commit) against the same request with record() switched off.
   Prints the added cost (target: at most 15 %).
"""

import argparse
import hashlib
import time
import uuid
from datetime import timedelta

from common import describe_environment, interleaved, setup_django


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=100, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    teardown = setup_django()
    try:
        from django.db import connection

        if connection.vendor != "postgresql":
            raise SystemExit("bench/audit_chain.py needs PostgreSQL: set DATABASE_URL")
        print(f"audit_chain: {describe_environment()}")
        chain_throughput(args.events)
        record_overhead(args.requests, args.rounds)
    finally:
        teardown()


def _insert_unsealed(tenant, count: int) -> None:
    from django.utils import timezone

    from audit.models import AuditEvent

    start = timezone.now() - timedelta(days=1)
    batch = []
    for n in range(count):
        batch.append(
            AuditEvent(
                tenant=tenant,
                event_type="bench.event",
                actor_type="system",
                actor_label="bench",
                payload={"n": n, "resource": str(uuid.uuid4()), "tags": ["a", "b"], "ok": True},
                request_id=uuid.uuid4().hex,
                ip_address="127.0.0.1",
                user_agent="bench/1.0",
                created_at=start + timedelta(microseconds=n * 10),
            )
        )
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)


def _floor(tenant_id) -> int:
    """Stream the chain's rows with a plain server-side cursor; canonicalise and hash each."""
    import json

    import rfc8785
    from django.db import connection, transaction

    from audit.canonical import format_timestamp

    rows = 0
    prev = ""
    with transaction.atomic(), connection.cursor() as django_cursor:
        raw = django_cursor.connection  # the psycopg connection
        with raw.cursor(name="bench_floor") as cursor:
            cursor.itersize = 2000
            cursor.execute(
                "SELECT id, tenant_id, seq, event_type, actor_type, actor_id, actor_label, "
                "payload, request_id, ip_address, user_agent, created_at "
                "FROM audit_auditevent WHERE tenant_id = %s AND seq IS NOT NULL ORDER BY seq",
                [tenant_id],
            )
            for row in cursor:
                payload = row[7] if isinstance(row[7], dict) else json.loads(row[7])
                document = {
                    "id": str(row[0]), "tenant": str(row[1]), "seq": row[2],
                    "event_type": row[3],
                    "actor": {"type": row[4], "id": row[5] and str(row[5]), "label": row[6]},
                    "payload": payload, "request_id": row[8],
                    "ip_address": row[9] and str(row[9]), "user_agent": row[10],
                    "created_at": format_timestamp(row[11]),
                }  # fmt: skip
                digest = hashlib.sha256(prev.encode())
                digest.update(rfc8785.dumps(document))
                prev = digest.hexdigest()
                rows += 1
    return rows


def chain_throughput(events: int) -> None:
    from audit import services
    from tenants.models import Tenant

    tenant = Tenant.objects.create(name="Bench", slug="bench-audit")
    _insert_unsealed(tenant, events)

    started = time.perf_counter()
    sealed = services.chain_seal(tenant_id=tenant.pk)
    seal_seconds = time.perf_counter() - started
    assert sealed == events, (sealed, events)

    started = time.perf_counter()
    result = services.chain_verify(tenant_id=tenant.pk)
    verify_seconds = time.perf_counter() - started
    assert result.chain_valid and result.verified_count == events

    started = time.perf_counter()
    floor_rows = _floor(tenant.pk)
    floor_seconds = time.perf_counter() - started
    assert floor_rows == events

    seal_rate, verify_rate, floor_rate = (
        events / seal_seconds,
        events / verify_seconds,
        events / floor_seconds,
    )
    print(f"  chain of {events} events")
    print(f"  floor (bare cursor + canonicalise + hash): {floor_rate:9.0f} events/s")
    print(
        f"  verify                                  : {verify_rate:9.0f} events/s  "
        f"verify/floor = {verify_rate / floor_rate:.2f}"
    )
    print(
        f"  seal                                    : {seal_rate:9.0f} events/s  "
        f"seal/floor   = {seal_rate / floor_rate:.2f}"
    )


def record_overhead(requests: int, rounds: int) -> None:
    from unittest import mock

    from django.conf import settings
    from django.db import transaction
    from django.test import Client

    from accounts.services import auth_token_issue, user_create

    settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"] = "100000000/min"
    with transaction.atomic():
        user = user_create(email="bench-audit@example.com", password="bench-password-1")
        token = auth_token_issue(user=user)
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    counter = iter(range(10**9))

    def create_tenant():
        response = client.post(
            "/api/v1/tenants/", {"name": f"Bench {next(counter)}"}, content_type="application/json"
        )
        assert response.status_code == 201, response.content

    def without_record():
        with mock.patch("tenants.services.lifecycle.record"):
            create_tenant()

    interleaved({"with": create_tenant, "without": without_record}, calls=10, rounds=1)  # warm
    seconds = interleaved(
        {"with": create_tenant, "without": without_record}, calls=requests, rounds=rounds
    )
    added = seconds["with"] / seconds["without"] - 1
    print(f"  POST /api/v1/tenants/ without record(): {seconds['without'] * 1e3:7.2f} ms/request")
    print(
        f"  POST /api/v1/tenants/ with record()   : {seconds['with'] * 1e3:7.2f} ms/request  "
        f"(2 events + seal queued on commit)"
    )
    print(f"  record() adds {added * 100:5.1f} % to the request")


if __name__ == "__main__":
    main()
