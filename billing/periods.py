"""Billing periods and the arithmetic of money over time: pure functions, no queries.

Periods are calendar periods, like the tenant's quota periods: a monthly plan's period runs
from 00:00 UTC on the first of a month to the first of the next, a yearly plan's for twelve
such months. A subscription that starts mid-month (a checkout, a trial's end) has a shorter
first period, up to the next first of the month, and pays for it pro rata. So every period
ends when a quota period ends, and the usage billed in arrears is a quota period's.

Proration (an upgrade, a short first period) is to the second and in integer cents:

    amount = price_difference_cents * remaining_seconds / full_period_seconds

rounded half-up once, where the full period is the whole calendar period (month or year)
containing the moment, and remaining the seconds from the moment to its end. docs/billing.md
works an example through.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from .catalogue import MICROS_PER_CENT


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(start: datetime, months: int) -> datetime:
    """The first of the month `months` after `start`'s month (00:00 UTC)."""
    start = month_start(start)
    index = start.year * 12 + (start.month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


INTERVAL_MONTHS = {"monthly": 1, "yearly": 12}


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    # The whole calendar period this one is part of (the same unless it starts mid-month).
    full_start: datetime

    @property
    def seconds(self) -> int:
        return whole_seconds(self.start, self.end)

    @property
    def full_seconds(self) -> int:
        return whole_seconds(self.full_start, self.end)

    @property
    def is_partial(self) -> bool:
        return self.start != self.full_start


def whole_seconds(start: datetime, end: datetime) -> int:
    return max(int((end - start).total_seconds()), 0)


def period_from(start: datetime, interval: str) -> Period:
    """The period that starts at `start`: to the end of the calendar period it falls in."""
    months = INTERVAL_MONTHS[interval]
    full_start = month_start(start)
    return Period(
        start=start.astimezone(UTC), end=add_months(full_start, months), full_start=full_start
    )


def following_period(end: datetime, interval: str) -> Period:
    """The period after one ending at `end` (a first of the month): a whole one."""
    return period_from(end, interval)


def divide_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator in integers, rounded half away from zero (half-up for amounts)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(abs(numerator), denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


def prorated_cents(price_cents: int, *, seconds: int, full_seconds: int) -> int:
    """`price_cents` for `seconds` of a `full_seconds` period, rounded half-up once."""
    return divide_half_up(price_cents * seconds, full_seconds)


def micros_to_cents(micros: int) -> int:
    """Micro-units to cents, rounded half-up once (a line's amount)."""
    return divide_half_up(micros, MICROS_PER_CENT)


def annual_price_cents(price_cents: int, interval: str) -> int:
    """A plan's price over a year: how plans of different intervals compare."""
    return price_cents * 12 // INTERVAL_MONTHS[interval]
