"""What quota counting and throttling cost per request: GET /api/v1/organizations/current
as served (the tenant's api_calls counted in one atomic step: a Lua script on Redis, else a
conditional UPDATE; the caller, tenant-plan and scope windows in one more cache call) against
the same view with both off.

    python bench/quota_overhead.py [--calls 100] [--rounds 31]

Same client, token, tenant, middleware and URL resolution, in one run, interleaved in short
rounds; the ratio is the median of the rounds' ratios. Target: ratio >= 0.90 (the counting
costs at most 10 %).
"""

from common import (
    bench_main,
    bench_owner,
    comparable,
    describe_environment,
    interleaved,
    interleaved_samples,
    medians,
    ok_get,
    paired_ratio,
    rate_line,
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

    variants = {"counted": ok_get(client, counted_url), "uncounted": ok_get(client, uncounted_url)}
    interleaved(variants, calls=max(calls // 5, 20), rounds=1)  # warm up

    def api_calls() -> int:
        return quota_states(Tenant.objects.get(pk=tenant.pk))["api_calls"].current

    before = api_calls()
    samples = interleaved_samples(variants, calls=calls, rounds=rounds)
    after = api_calls()

    seconds = medians(samples)
    ratio = paired_ratio(samples, "uncounted", "counted")
    print(f"quota_overhead: {describe_environment()} calls={calls} rounds={rounds}")
    print(rate_line("quota + throttle off (baseline)", seconds["uncounted"]))
    print(rate_line("quota + throttle on            ", seconds["counted"]))
    print(
        f"  cost per request               : "
        f"{(seconds['counted'] - seconds['uncounted']) * 1e6:8.0f} us"
    )
    print(f"  ratio on/off req/s (paired)    : {ratio:8.2f}  (target >= 0.90)")
    print(f"  api_calls counted during the run: {after - before} (expected {calls * rounds})")


if __name__ == "__main__":
    main()
