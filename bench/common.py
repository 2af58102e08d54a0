"""Shared set-up for the benchmarks: Django on a throw-away test database, timing helpers.

Uses DATABASE_URL / REDIS_URL when given (PostgreSQL, Redis), else in-memory SQLite and the
local-memory cache. Every figure is printed next to a baseline measured in the same run.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")


def setup_django(urlconf: str | None = None):
    """Configure Django, create a fresh test database, return its teardown function."""
    import django
    from django.conf import settings

    django.setup()
    if urlconf:
        settings.ROOT_URLCONF = urlconf
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)

    def teardown():
        connection.creation.destroy_test_db(old_name, verbosity=0)

    return teardown


def per_call_seconds(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved_samples(
    variants: dict[str, Callable[[], object]], calls: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds per call of each variant in each round. Rounds alternate the variants so that
    machine noise hits every variant alike; every other round runs them in reverse order, so
    that no variant always goes first."""
    samples = {name: [] for name in variants}
    for round_number in range(rounds):
        order = list(variants.items())
        for name, fn in order if round_number % 2 == 0 else reversed(order):
            samples[name].append(per_call_seconds(fn, calls))
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def interleaved(variants: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict:
    """Median seconds per call of each variant (see interleaved_samples)."""
    return medians(interleaved_samples(variants, calls, rounds))


def ok_get(client, path: str) -> Callable[[], None]:
    """A variant: GET `path` with the test client, insisting on 200."""

    def get():
        response = client.get(path)
        assert response.status_code == 200, response.content

    return get


def rate_line(label: str, seconds: float) -> str:
    """`label: N req/s  M us/request` for a median of `seconds` per request."""
    return f"  {label}: {1 / seconds:8.0f} req/s  {seconds * 1e6:7.0f} us/request"


def paired_ratio(samples: dict[str, list[float]], baseline: str, variant: str) -> float:
    """Median over rounds of baseline time / variant time, each pair measured back to back:
    steadier than a ratio of medians when the machine's speed drifts during the run."""
    pairs = zip(samples[baseline], samples[variant], strict=True)
    return statistics.median(base / other for base, other in pairs)


def describe_environment() -> str:
    from django.conf import settings
    from django.db import connection

    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    return f"database={connection.vendor} cache={cache} python={sys.version.split()[0]}"


# Organization settings for benchmark tenants: an api_calls quota the runs never reach.
UNMETERED = {"maxApiCallsPerMonth": 10**12}


def comparable(body: dict) -> dict:
    """A response body without the counters that change from one request to the next."""
    return {key: value for key, value in body.items() if key != "api_quota_used"}


def bench_main(doc: str, run: Callable[[int, int], None], *, calls: int, rounds: int, prepare=None):
    """Parse --calls/--rounds, set up Django on a throw-away database, run, tear down."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--calls", type=int, default=calls, help="requests per round per variant")
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args()
    if prepare is not None:
        prepare()
    teardown = setup_django(urlconf="bench.urls")
    try:
        run(args.calls, args.rounds)
    finally:
        teardown()


def bench_owner():
    """(user, tenant, token): the owner of an unmetered tenant, with a DRF token. The fairness
    throttles stay on, with rates the benchmarks never reach."""
    from django.conf import settings
    from django.db import transaction

    from accounts.services import auth_token_issue, user_create
    from tenants.services import tenant_create

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    rates["user"] = rates["anon"] = "100000000/min"
    with transaction.atomic():
        user = user_create(email="bench@example.com", password="bench-password-1", name="Bench")
        # Unmetered limits are above every plan: set up by the system (no actor), as staff would.
        tenant = tenant_create(
            actor=None, owner=user, name="Bench Org", slug="bench-org", settings=UNMETERED
        )
        token = auth_token_issue(user=user)
    return user, tenant, token
