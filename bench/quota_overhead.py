"""What quota counting and throttling cost per request: GET /api/v1/organizations/current
as served (the tenant's api_calls counted in one atomic step: a Lua script on Redis, else a
conditional UPDATE; the caller, tenant-plan and scope windows in one more cache call) against
the same view with both off.

    python bench/quota_overhead.py [--calls 100] [--rounds 31]

Same client, token, tenant, middleware and URL resolution, in one run, interleaved in short
rounds; the ratio is the median of the rounds' ratios. Target: ratio >= 0.90 (the counting
costs at most 10 %).
"""

import argparse
import statistics

from common import (
    UNMETERED,
    comparable,
    describe_environment,
    interleaved,
    interleaved_samples,
    paired_ratio,
    setup_django,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="requests per round per variant")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()

    teardown = setup_django(urlconf="bench.urls")
    try:
        run(args.calls, args.rounds)
    finally:
        teardown()


def run(calls: int, rounds: int) -> None:
    from django.conf import settings
    from django.db import transaction
    from django.test import Client

    from accounts.services import auth_token_issue, user_create
    from tenants.models import Tenant
    from tenants.services import tenant_create
    from tenants.services.quotas import quota_states

    # Real rates (the throttle runs every window), never reached by the benchmark.
    settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"] = "100000000/min"
    with transaction.atomic():
        user = user_create(email="bench@example.com", password="bench-password-1", name="Bench")
        tenant = tenant_create(actor=user, name="Bench Org", slug="bench-org", settings=UNMETERED)
        token = auth_token_issue(user=user)

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_X_ORGANIZATION_ID=str(tenant.pk))
    counted_url = "/api/v1/organizations/current"
    uncounted_url = "/api/v1/uncounted/organizations/current"

    counted = client.get(counted_url)
    uncounted = client.get(uncounted_url)
    assert comparable(counted.json()) == comparable(uncounted.json()), "same document"
    assert "X-RateLimit-Limit" in counted and "X-RateLimit-Limit" not in uncounted

    def get(url):
        def call():
            response = client.get(url)
            assert response.status_code == 200, response.content

        return call

    variants = {"counted": get(counted_url), "uncounted": get(uncounted_url)}
    interleaved(variants, calls=max(calls // 5, 20), rounds=1)  # warm up

    def api_calls() -> int:
        return quota_states(Tenant.objects.get(pk=tenant.pk))["api_calls"].current

    before = api_calls()
    samples = interleaved_samples(variants, calls=calls, rounds=rounds)
    after = api_calls()

    seconds = {name: statistics.median(values) for name, values in samples.items()}
    ratio = paired_ratio(samples, "uncounted", "counted")
    print(f"quota_overhead: {describe_environment()} calls={calls} rounds={rounds}")
    print(
        f"  quota + throttle off (baseline): {1 / seconds['uncounted']:8.0f} req/s  "
        f"{seconds['uncounted'] * 1e6:7.0f} us/request"
    )
    print(
        f"  quota + throttle on            : {1 / seconds['counted']:8.0f} req/s  "
        f"{seconds['counted'] * 1e6:7.0f} us/request"
    )
    print(
        f"  cost per request               : "
        f"{(seconds['counted'] - seconds['uncounted']) * 1e6:8.0f} us"
    )
    print(f"  ratio on/off req/s (paired)    : {ratio:8.2f}  (target >= 0.90)")
    print(f"  api_calls counted during the run: {after - before} (expected {calls * rounds})")


if __name__ == "__main__":
    main()
