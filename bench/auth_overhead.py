"""Requests per second of one GET authenticated four ways, in one run, interleaved:

- our API key (`X-API-Key`: one prepared query for key + tenant + creator + membership, reused
  by tenant resolution; usage statistics buffered in memory and pushed to Redis off the request
  path),
- our hashed DRF token (`Authorization: Token`),
- our JWT (`Authorization: Bearer`, simplejwt),
- the peer, djangorestframework-api-key (`Authorization: Api-Key`; bench/requirements.txt), on
  bench-only views serving the same document (bench/urls.py):
  - `peer`: under the same rules as ours. Its key belongs to one tenant, the way the library's
    guide binds keys to organizations (a custom key model, its manager and permission;
    bench/peer), and the request is counted in the same rate windows and api_calls quota, in
    the same one Redis step. This is the comparison the target applies to.
  - `peer_bare`: the library's plain HasAPIKey, as its README shows: the key belongs to no
    tenant, the organization is whatever X-Organization-ID names, and only the caller's window
    is counted. It does less than the GET it mirrors (it would serve any organization to any
    key); printed for reference.

    pip install -r bench/requirements.txt
    python bench/auth_overhead.py [--calls 20] [--rounds 101]

The GET is /api/v1/organizations/current (the peer: the same query and serializer). Prints each
req/s, the ratios api_key/token and api_key/peer (targets: >= 1.0), and api_key/peer_bare. Many
short rounds: each pair of variants is measured within a second, so the machine's drift cancels
out of the ratios.
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

PEER_APPS = ("rest_framework_api_key", "bench.peer")


def enable_peer() -> None:
    """Install the peer's apps (their key tables) for this run only, before Django starts."""
    from django.conf import settings

    try:
        __import__(PEER_APPS[0])
    except ImportError:
        raise SystemExit("Install the peer first: pip install -r bench/requirements.txt") from None
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, *PEER_APPS]


def main():
    bench_main(__doc__, run, calls=20, rounds=101, prepare=enable_peer)


def run(calls: int, rounds: int) -> None:
    from django.db import transaction
    from django.test import Client
    from rest_framework_api_key.models import APIKey as BarePeerAPIKey

    from accounts.services import api_key_create, jwt_login
    from accounts.usage import flush_api_key_usage
    from bench.peer.models import OrganizationAPIKey

    user, tenant, token = bench_owner()
    with transaction.atomic():
        access = jwt_login(user=user)["access_token"]
        _, api_key = api_key_create(tenant=tenant, actor=user, name="bench", scopes=["read"])
        _, peer_key = OrganizationAPIKey.objects.create_key(name="bench", tenant=tenant)
        _, bare_peer_key = BarePeerAPIKey.objects.create_key(name="bench")

    org = {"HTTP_X_ORGANIZATION_ID": str(tenant.pk)}
    url = "/api/v1/organizations/current"
    variants = {
        "api_key": (Client(HTTP_X_API_KEY=api_key), url),
        "token": (Client(HTTP_AUTHORIZATION=f"Token {token}", **org), url),
        "jwt": (Client(HTTP_AUTHORIZATION=f"Bearer {access}", **org), url),
        "peer": (
            Client(HTTP_AUTHORIZATION=f"Api-Key {peer_key}"),
            "/api/v1/peer/organizations/current",
        ),
        "peer_bare": (
            Client(HTTP_AUTHORIZATION=f"Api-Key {bare_peer_key}", **org),
            "/api/v1/peer-bare/organizations/current",
        ),
    }
    bodies = {
        name: comparable(client.get(path).json()) for name, (client, path) in variants.items()
    }
    assert all(body == bodies["token"] for body in bodies.values()), "variants must agree"
    # Each request of the GET counts one of the tenant's api_calls and shows the new total;
    # only the bare peer counts none.
    for name, (client, path) in variants.items():
        before, after = (client.get(path).json()["api_quota_used"] for _ in range(2))
        expected = 0 if name == "peer_bare" else 1
        assert after - before == expected, f"{name} counted {after - before} api_calls"

    functions = {name: ok_get(client, path) for name, (client, path) in variants.items()}
    interleaved(functions, calls=20, rounds=1)  # warm up
    samples = interleaved_samples(functions, calls=calls, rounds=rounds)
    seconds = medians(samples)
    counted = flush_api_key_usage()

    print(f"auth_overhead: {describe_environment()} calls={calls} rounds={rounds}")
    labels = {
        "api_key": "our API key (X-API-Key)",
        "token": "our DRF token (baseline)",
        "jwt": "our JWT (Bearer)",
        "peer": "peer, same rules",
        "peer_bare": "peer, bare (reference)",
    }
    for name, label in labels.items():
        print(rate_line(f"{label:28}", seconds[name]))
    # Each ratio is the median of the rounds' ratios, each pair measured back to back.
    print(f"  ratio api_key/token req/s   : {paired_ratio(samples, 'token', 'api_key'):8.2f}")
    print(f"  ratio api_key/peer req/s    : {paired_ratio(samples, 'peer', 'api_key'):8.2f}")
    print(f"  ratio jwt/token req/s       : {paired_ratio(samples, 'token', 'jwt'):8.2f}")
    print(f"  ratio api_key/peer_bare     : {paired_ratio(samples, 'peer_bare', 'api_key'):8.2f}")
    print(f"  API-key requests counted and flushed: {counted}")


if __name__ == "__main__":
    main()
