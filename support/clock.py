"""Working time: the arithmetic of SLA clocks, in business hours or around the clock.

`hours` is an SLA policy's `business_hours` ({"weekdays": [0, 1, 2, 3, 4], "start": "09:00",
"end": "18:00", "time_zone": "Europe/Paris"}; Monday is 0) or None for around the clock. The
working window of a day is its wall-clock `start` to `end` in the policy's time zone, so a
daylight-saving change moves it with the local day. Pure functions, no database: the ticket
services compute due times with them, the tests call them directly.

A policy's targets are reachable within a year of its business hours (the SLA policy service
checks it); a walk covers the working time asked for, pauses included, so a ticket that waited
for years still gets the right instant.
"""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Business hours without a working minute (never accepted): the walk stops here.
MAX_DAYS = 800


def _window(day: date, hours: dict, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
    if day.weekday() not in hours["weekdays"]:
        return None
    start = datetime.combine(day, time.fromisoformat(hours["start"]), tzinfo=zone)
    end = datetime.combine(day, time.fromisoformat(hours["end"]), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def weekly_minutes(hours: dict) -> int:
    """The working minutes of a week (nominal: a daylight-saving day is counted as any other)."""
    start = time.fromisoformat(hours["start"])
    end = time.fromisoformat(hours["end"])
    daily = (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
    return daily * len(hours["weekdays"])


def add_working_time(start: datetime, seconds: float, hours: dict | None) -> datetime:
    """The instant `seconds` of working time after `start`."""
    if hours is None:
        return start + timedelta(seconds=seconds)
    if seconds <= 0:
        return start
    zone = ZoneInfo(hours["time_zone"])
    start = start.astimezone(UTC)
    day = start.astimezone(zone).date()
    remaining = seconds
    # Enough days for `seconds` of working time (pauses included), with room for the week
    # being walked into and for the daylight-saving days (two a year) that may shorten or skip
    # a window.
    weekly = weekly_minutes(hours) * 60
    weeks = int(seconds // weekly) if weekly > 0 else MAX_DAYS
    for _ in range(7 * (weeks + 3 + weeks // 20)):
        window = _window(day, hours, zone)
        if window is not None:
            begin = max(window[0], start)
            if begin < window[1]:
                available = (window[1] - begin).total_seconds()
                if remaining <= available:
                    return begin + timedelta(seconds=remaining)
                remaining -= available
        day += timedelta(days=1)
    # Unreachable for business hours the service accepted; never loop for ever on bad data.
    raise ValueError("Business hours without working time.")


def working_seconds(start: datetime, end: datetime, hours: dict | None) -> float:
    """The working time between `start` and `end` (0 when `end` is not after `start`)."""
    if end <= start:
        return 0.0
    if hours is None:
        return (end - start).total_seconds()
    zone = ZoneInfo(hours["time_zone"])
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    day = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    total = 0.0
    while day <= last:
        window = _window(day, hours, zone)
        if window is not None:
            overlap = (min(window[1], end) - max(window[0], start)).total_seconds()
            total += max(overlap, 0.0)
        day += timedelta(days=1)
    return total
