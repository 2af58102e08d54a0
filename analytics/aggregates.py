"""`Aggregate`: what a roll-up row holds, in memory, with its one operation: merge.

A stream's facts over an hour become one Aggregate per dimension (analytics.streams); the hour
is stored as Rollup rows; a day row is the merge of its hours; an endpoint merges the rows of
its range and groups. Every part merges exactly: counts and sums add, "max_" measures keep the
largest, histograms add per bucket, distinct sketches unite (analytics.sketches).
"""

from dataclasses import dataclass, field

from . import sketches


@dataclass(eq=False)
class Aggregate:
    count: int = 0
    measures: dict[str, int] = field(default_factory=dict)
    latency_histogram: dict[str, int] = field(default_factory=dict)
    # The distinct-users sketches merged so far, united only when read (`users`): one pass
    # over a range's sketches instead of one per merge.
    user_sketches: list = field(default_factory=list)

    def __init__(self, count=0, measures=None, latency_histogram=None, users=None):
        self.count = count
        self.measures = measures if measures is not None else {}
        self.latency_histogram = latency_histogram if latency_histogram is not None else {}
        self.user_sketches = [users] if users else []

    def __eq__(self, other):
        if not isinstance(other, Aggregate):
            return NotImplemented
        return (self.count, self.measures, self.latency_histogram, self.users) == (
            other.count,
            other.measures,
            other.latency_histogram,
            other.users,
        )

    __hash__ = None

    @property
    def users(self) -> dict:
        if len(self.user_sketches) != 1:
            self.user_sketches = [sketches.sketch_union(self.user_sketches)]
        return self.user_sketches[0]

    @users.setter
    def users(self, sketch: dict) -> None:
        self.user_sketches = [sketch] if sketch else []

    def add(self, **measures: int) -> None:
        """Add one fact's measures (None values are skipped)."""
        for name, value in measures.items():
            if value is None:
                continue
            value = int(value)
            if name.startswith("max_"):
                if value > self.measures.get(name, value - 1):
                    self.measures[name] = value
            else:
                self.measures[name] = self.measures.get(name, 0) + value

    def merge(self, other: "Aggregate") -> "Aggregate":
        self.count += other.count
        for name, value in other.measures.items():
            if name.startswith("max_"):
                if name not in self.measures or value > self.measures[name]:
                    self.measures[name] = value
            else:
                self.measures[name] = self.measures.get(name, 0) + value
        if other.latency_histogram:
            sketches.histogram_merge(self.latency_histogram, other.latency_histogram)
        if other.user_sketches:
            self.user_sketches.extend(other.user_sketches)
        return self

    def m(self, name: str) -> int:
        return self.measures.get(name, 0)

    @property
    def distinct_users(self) -> int:
        return sketches.sketch_count(self.users) if self.user_sketches else 0

    def percentile_ms(self, q: float) -> float | None:
        return sketches.percentile_ms(self.latency_histogram, q)

    def ratio(self, numerator: str, denominator: str) -> float | None:
        """measures[numerator] / measures[denominator], None when there is nothing to divide."""
        below = self.m(denominator)
        return self.m(numerator) / below if below else None

    @classmethod
    def of_row(cls, row) -> "Aggregate":
        """A roll-up row's aggregate (reads and builds take the columns as tuples instead)."""
        return cls(row.count, dict(row.measures), dict(row.latency_histogram), dict(row.users))


def merged(aggregates) -> Aggregate:
    total = Aggregate()
    for aggregate in aggregates:
        total.merge(aggregate)
    return total
