"""Per-request overhead of the full API stack (token auth + tenant resolution + permission +
throttle) against a bare DRF view rendering the same serializer from the same query.

    python bench/request_overhead.py [--calls 300] [--rounds 7]

Both go through the same middleware and Django test client, in one run, interleaved.
Prints requests per second, the overhead per request in microseconds and the ratio.
"""

from common import (
    bench_main,
    bench_owner,
    comparable,
    describe_environment,
    interleaved,
    ok_get,
    rate_line,
)


def main():
    bench_main(__doc__, run, calls=300, rounds=7)


def run(calls: int, rounds: int) -> None:
    from django.test import Client

    _, tenant, token = bench_owner()

    full_client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_X_ORGANIZATION_ID=str(tenant.pk))
    bare_client = Client()
    full_url = "/api/v1/organizations/current"
    bare_url = f"/bench/bare/{tenant.pk}"

    full_body = comparable(full_client.get(full_url).json())
    bare_body = comparable(bare_client.get(bare_url).json())
    assert full_body == bare_body, "the two variants must return the same document"

    variants = {"full": ok_get(full_client, full_url), "bare": ok_get(bare_client, bare_url)}
    interleaved(variants, calls=max(calls // 5, 20), rounds=1)  # warm up
    seconds = interleaved(variants, calls=calls, rounds=rounds)

    overhead_us = (seconds["full"] - seconds["bare"]) * 1e6
    print(f"request_overhead: {describe_environment()} calls={calls} rounds={rounds}")
    print(rate_line("bare DRF view (baseline)", seconds["bare"]))
    print(rate_line("full stack              ", seconds["full"]))
    print(
        f"  overhead per request    : {overhead_us:8.0f} us "
        "(token auth + tenant + permission + throttle)"
    )
    print(f"  ratio full/bare req/s   : {seconds['bare'] / seconds['full']:8.2f}")


if __name__ == "__main__":
    main()
