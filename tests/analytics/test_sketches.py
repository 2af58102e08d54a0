"""The two mergeable summaries of analytics.sketches, against exact computations.

- the latency histogram: every nearest-rank quantile is within ALPHA (2 %) of the exact
  nearest-rank percentile of the raw values, whatever the distribution; merging histograms is
  the histogram of the concatenated values; an empty one answers None;
- the distinct-count sketch: exact up to EXACT_LIMIT ids, a HyperLogLog past it (within 5 %
  at 10k and 100k ids); merging is the sketch of the union (each id once), commutative,
  associative and idempotent, also across the exact and HyperLogLog forms.
"""

import json
import math
import random

import pytest

from analytics import sketches
from analytics.aggregates import Aggregate, merged

QS = (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
LOW_MS, HIGH_MS = 0.01, 600_000.0
# ALPHA, plus room for the floating-point error of log() at a bucket's very edge.
TOLERANCE = sketches.ALPHA + 1e-9


def exact_percentile(values, q):
    """The nearest-rank percentile: the value of rank ceil(q * n) (at least 1)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def clamp(value):
    return min(max(value, LOW_MS), HIGH_MS)


def lognormal(rng, n):
    mu, sigma = rng.uniform(-2, 9), rng.uniform(0.2, 3)
    return [clamp(rng.lognormvariate(mu, sigma)) for _ in range(n)]


def uniform(rng, n):
    low = rng.uniform(LOW_MS, 1_000)
    high = rng.uniform(low, HIGH_MS)
    return [rng.uniform(low, high) for _ in range(n)]


def bimodal(rng, n):
    fast, slow = rng.uniform(0.5, 50), rng.uniform(500, 200_000)
    share = rng.uniform(0.5, 0.99)
    return [
        clamp(rng.gauss(fast, fast / 5) if rng.random() < share else rng.gauss(slow, slow / 10))
        for _ in range(n)
    ]


def log_uniform(rng, n):
    """Spread evenly over the whole 0.01 ms - 600 s range (seven decades)."""
    return [math.exp(rng.uniform(math.log(LOW_MS), math.log(HIGH_MS))) for _ in range(n)]


DISTRIBUTIONS = {
    "lognormal": lognormal,
    "uniform": uniform,
    "bimodal": bimodal,
    "log_uniform": log_uniform,
}


def assert_close(answer, exact):
    assert answer is not None
    assert abs(answer - exact) <= TOLERANCE * exact, (answer, exact, abs(answer / exact - 1))


# Histograms ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("seed", range(12))
def test_quantiles_are_within_two_percent_of_the_exact_nearest_rank_percentile(kind, seed):
    rng = random.Random(f"{kind}-{seed}")
    values = DISTRIBUTIONS[kind](rng, rng.choice([1, 2, 3, 7, 50, 101, 1_000, 5_000]))
    histogram = sketches.histogram_of(values)

    answers = sketches.quantiles(histogram, QS)

    assert set(answers) == set(QS)
    for q in QS:
        assert_close(answers[q], exact_percentile(values, q))
        assert sketches.percentile_ms(histogram, q) == answers[q]
    assert sum(histogram.values()) == len(values)


def test_the_extremes_of_the_range_and_every_bucket_edge_stay_within_two_percent():
    edges = [sketches.GAMMA**i for i in range(-250, 700)]
    values = [LOW_MS, HIGH_MS, *edges, *(edge * 1.000001 for edge in edges)]
    values = [value for value in values if LOW_MS <= value <= HIGH_MS]
    assert len(values) > 800
    for value in values:
        answer = sketches.bucket_value(sketches.bucket_of(value))
        assert_close(answer, value)


def test_a_single_value_is_every_quantile():
    histogram = sketches.histogram_of([123.456])
    answers = sketches.quantiles(histogram, QS)
    assert len(set(answers.values())) == 1
    assert_close(answers[0.5], 123.456)


def test_zero_and_values_below_a_microsecond_answer_zero():
    assert sketches.bucket_of(0) == sketches.ZERO
    assert sketches.bucket_of(0.0005) == sketches.ZERO
    assert sketches.bucket_of(sketches.MIN_MS) == sketches.ZERO
    assert sketches.bucket_of(0.0011) != sketches.ZERO
    histogram = sketches.histogram_of([0, 0, 0.0001, 0.001, 5.0])
    assert histogram[sketches.ZERO] == 4
    answers = sketches.quantiles(histogram, [0.5, 0.8, 0.81, 1.0])
    assert answers[0.5] == 0.0
    assert answers[0.8] == 0.0  # rank 4 of 5: still a zero
    assert_close(answers[0.81], 5.0)  # rank 5
    assert_close(answers[1.0], 5.0)


def test_tiny_values_just_above_a_microsecond_are_within_two_percent():
    rng = random.Random(7)
    values = [rng.uniform(0.0011, 0.05) for _ in range(500)]
    answers = sketches.quantiles(sketches.histogram_of(values), QS)
    for q in QS:
        assert_close(answers[q], exact_percentile(values, q))


def test_zero_bucket_sorts_below_every_other_bucket():
    # Buckets of values below 1 ms have negative keys: the zero bucket must still come first.
    values = [0.0] * 10 + [0.002] * 10 + [0.5] * 10 + [2.0] * 10
    answers = sketches.quantiles(sketches.histogram_of(values), [0.25, 0.5, 0.75, 1.0])
    assert answers[0.25] == 0.0
    assert_close(answers[0.5], 0.002)
    assert_close(answers[0.75], 0.5)
    assert_close(answers[1.0], 2.0)


def test_quantiles_of_an_empty_histogram_are_none():
    assert sketches.quantiles({}, [0.5, 0.95, 0.99]) == {0.5: None, 0.95: None, 0.99: None}
    assert sketches.percentile_ms({}, 0.5) is None
    assert sketches.histogram_of([]) == {}
    assert Aggregate().percentile_ms(0.99) is None


@pytest.mark.parametrize("seed", range(6))
def test_merging_histograms_is_the_histogram_of_the_concatenation(seed):
    rng = random.Random(seed)
    parts = [
        DISTRIBUTIONS[rng.choice(sorted(DISTRIBUTIONS))](rng, rng.randint(0, 400))
        for _ in range(rng.randint(2, 6))
    ]
    everything = [value for part in parts for value in part]
    expected = sketches.histogram_of(everything)

    total: dict[str, int] = {}
    for part in parts:
        # Through JSON, as they are stored in Rollup rows.
        stored = json.loads(json.dumps(sketches.histogram_of(part)))
        assert sketches.histogram_merge(total, stored) is total
    assert total == expected
    assert sketches.quantiles(total, QS) == sketches.quantiles(expected, QS)
    if everything:
        for q in QS:
            assert_close(sketches.percentile_ms(total, q), exact_percentile(everything, q))

    reversed_total: dict[str, int] = {}
    for part in reversed(parts):
        sketches.histogram_merge(reversed_total, sketches.histogram_of(part))
    assert reversed_total == expected


def test_merge_leaves_the_other_histogram_alone_and_accepts_none():
    other = sketches.histogram_of([1.0, 2.0, 3.0])
    frozen = dict(other)
    target = sketches.histogram_of([2.0])
    sketches.histogram_merge(target, other)
    assert other == frozen
    assert sum(target.values()) == 4
    assert sketches.histogram_merge(target, None) == target
    assert sketches.histogram_merge({}, {}) == {}


def test_aggregates_merge_histograms_and_sums_exactly():
    rng = random.Random(11)
    parts = [lognormal(rng, 200) for _ in range(5)]
    aggregates = []
    for part in parts:
        aggregate = Aggregate(count=len(part), latency_histogram=sketches.histogram_of(part))
        aggregate.add(latency_us=sum(round(v * 1000) for v in part), max_ms=round(max(part)))
        aggregates.append(aggregate)
    total = merged(aggregates)
    everything = [value for part in parts for value in part]
    assert total.count == len(everything)
    assert total.m("latency_us") == sum(sum(round(v * 1000) for v in part) for part in parts)
    assert total.m("max_ms") == max(round(max(part)) for part in parts)
    assert total.latency_histogram == sketches.histogram_of(everything)
    for q in (0.5, 0.95, 0.99):
        assert_close(total.percentile_ms(q), exact_percentile(everything, q))


# Distinct counts -------------------------------------------------------------------------------


def ids(prefix, n, start=0):
    return [f"{prefix}:{i}" for i in range(start, start + n)]


def test_sketch_is_exact_up_to_the_limit():
    for n in (0, 1, 2, 17, 100, 255, sketches.EXACT_LIMIT):
        identifiers = ids("user", n)
        sketch = sketches.sketch_of(identifiers + identifiers[: n // 2])  # duplicates too
        assert "exact" in sketch and "hll" not in sketch
        assert sketches.sketch_count(sketch) == n


def test_blank_identifiers_are_not_counted():
    assert sketches.sketch_count(sketches.sketch_of(["", "", "a", "a", "b"])) == 2
    assert sketches.sketch_count(sketches.sketch_of([""])) == 0


def test_empty_sketches_count_zero():
    assert sketches.sketch_count(None) == 0
    assert sketches.sketch_count({}) == 0
    assert sketches.sketch_count(sketches.sketch_of([])) == 0
    assert sketches.sketch_merge(None, None) == sketches.sketch_of([])


def test_past_the_limit_the_sketch_becomes_a_hyperloglog():
    sketch = sketches.sketch_of(ids("user", sketches.EXACT_LIMIT + 1))
    assert set(sketch) == {"hll", "n"}
    assert abs(sketches.sketch_count(sketch) - 257) <= 257 * 0.05


def test_a_hyperloglog_keeps_the_estimate_of_its_registers():
    """`n` is read instead of recomputed: it must be what the registers give, and a sketch
    stored without it (older rows) is counted the same."""
    for sketch in (
        sketches.sketch_of(ids("k", 5_000)),
        sketches.sketch_merge(sketches.sketch_of(ids("k", 300)), sketches.sketch_of(ids("j", 900))),
    ):
        bare = {"hll": sketch["hll"]}
        assert sketch["n"] == sketches.sketch_count(bare)
        assert sketches.sketch_count(sketch) == sketches.sketch_count(bare)
        assert sketches.sketch_merge(bare, bare) == sketch


def test_union_counts_each_identifier_once():
    left = sketches.sketch_of(ids("u", 100))  # u:0 .. u:99
    right = sketches.sketch_of(ids("u", 100, start=50))  # u:50 .. u:149
    union = sketches.sketch_merge(left, right)
    assert sketches.sketch_count(union) == 150
    assert union == sketches.sketch_of(ids("u", 150))
    # Merging the same hours' users again adds no one.
    assert sketches.sketch_count(sketches.sketch_merge(union, right)) == 150


def test_a_union_of_exact_sketches_past_the_limit_is_the_sketch_of_the_union():
    left = sketches.sketch_of(ids("u", 200))
    right = sketches.sketch_of(ids("u", 200, start=100))  # overlap of 100: union of 300
    union = sketches.sketch_merge(left, right)
    assert set(union) == {"hll", "n"}
    assert union == sketches.sketch_of(ids("u", 300))
    assert abs(sketches.sketch_count(union) - 300) <= 300 * 0.05


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_hyperloglog_estimate_is_within_five_percent(n):
    estimate = sketches.sketch_count(sketches.sketch_of(ids(f"n{n}", n)))
    assert abs(estimate - n) <= n * 0.05, estimate


def test_merged_parts_equal_the_sketch_of_everything_exactly():
    """A range's users are the merge of its hours': identical to sketching all ids at once,
    whether the parts are exact or HyperLogLogs, and however they overlap."""
    rng = random.Random(3)
    universe = ids("person", 20_000)
    parts = [rng.sample(universe, rng.choice([5, 80, 256, 257, 3_000])) for _ in range(12)]
    everyone = {identifier for part in parts for identifier in part}

    total = None
    for part in parts:
        stored = json.loads(json.dumps(sketches.sketch_of(part)))  # as a Rollup row holds it
        total = sketches.sketch_merge(total, stored)

    assert total == sketches.sketch_of(everyone)
    assert abs(sketches.sketch_count(total) - len(everyone)) <= len(everyone) * 0.05


def test_merging_exact_into_hyperloglog():
    big = sketches.sketch_of(ids("u", 10_000))
    small_inside = sketches.sketch_of(ids("u", 200, start=5_000))
    small_outside = sketches.sketch_of(ids("other", 200))

    inside = sketches.sketch_merge(big, small_inside)
    assert inside == big  # nothing new
    outside = sketches.sketch_merge(small_outside, big)
    assert outside == sketches.sketch_of(ids("u", 10_000) + ids("other", 200))
    assert abs(sketches.sketch_count(outside) - 10_200) <= 10_200 * 0.05


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (ids("a", 10), ids("a", 10, start=5)),
        (ids("a", 200), ids("b", 200)),
        (ids("a", 5_000), ids("a", 30)),
        (ids("a", 5_000), ids("a", 7_000, start=2_000)),
        ([], ids("a", 400)),
    ],
)
def test_merge_is_commutative_and_idempotent(left, right):
    a, b = sketches.sketch_of(left), sketches.sketch_of(right)
    ab, ba = sketches.sketch_merge(a, b), sketches.sketch_merge(b, a)
    assert ab == ba
    assert sketches.sketch_merge(a, a) == a
    assert sketches.sketch_merge(b, b) == b
    assert sketches.sketch_merge(ab, a) == ab
    assert sketches.sketch_merge(ab, ab) == ab
    assert sketches.sketch_count(sketches.sketch_merge(a, {})) == sketches.sketch_count(a)
    c = sketches.sketch_of(ids("c", 300))
    assert sketches.sketch_merge(sketches.sketch_merge(a, b), c) == sketches.sketch_merge(
        a, sketches.sketch_merge(b, c)
    )


def test_merge_does_not_change_its_arguments():
    a = sketches.sketch_of(ids("a", 300))
    b = sketches.sketch_of(ids("b", 10))
    a_before, b_before = json.dumps(a), json.dumps(b)
    sketches.sketch_merge(a, b)
    sketches.sketch_merge(b, a)
    assert json.dumps(a) == a_before and json.dumps(b) == b_before


def test_aggregate_users_are_the_union_of_the_merged_aggregates():
    hours = [
        Aggregate(count=1, users=sketches.sketch_of(ids("u", 100, start=i * 30))) for i in range(5)
    ]
    total = merged(hours)
    assert total.distinct_users == 100 + 4 * 30
    # An aggregate without users leaves the union alone.
    assert merged([*hours, Aggregate(count=3)]).distinct_users == 220


def test_the_register_wise_maximum_equals_a_plain_per_register_max():
    """The union's big-integer maximum against max() per register, with the extreme ranks
    (0 and the largest a 64-bit hash can give) side by side in neighbouring registers."""
    rng = random.Random(7)
    top = 64 - sketches.PRECISION + 1
    for _ in range(200):
        logs = [
            bytes(
                rng.choice((0, 1, top, top - 1, rng.randint(0, top)))
                for _ in range(sketches.REGISTERS)
            )
            for _ in range(rng.randint(1, 6))
        ]
        expected = logs[0] if len(logs) == 1 else bytes(map(max, *logs))
        assert sketches._registers_max(logs) == expected
