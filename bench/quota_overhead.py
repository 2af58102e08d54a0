"""What quota counting and throttling cost per request: GET /api/v1/organizations/current
as served (the tenant's api_calls counted in one atomic step: a Lua script on Redis, else a
conditional UPDATE; the caller, tenant-plan and scope windows in one more cache call) against
the same view with both off.

    python bench/quota_overhead.py [--calls 100] [--rounds 31]

Same client, token, tenant, middleware and URL resolution, in one run, interleaved in short
rounds; the ratio is the median of the rounds' ratios. Target: ratio >= 0.90 (the counting
costs at most 10 %).
"""

import statistics

from common import (
    bench_main,
    bench_owner,
    comparable,
    describe_environment,
    interleaved,
    interleaved_samples,
    paired_ratio,
)


def main():
    bench_main(__doc__, run, calls=100, rounds=31)


def run(calls: int, rounds: int) -> None:
    from django.test import Client

    from tenants.models import Tenant
    from tenants.services.quotas import quota_states

    _, tenant, token = bench_owner()

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
