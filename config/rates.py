"""Rates as the API's limits spell them ("100/min", "1000/hour", "5/s", "10/day"): read in one
place, for the throttles' windows (config.metering) and for the settings, which check every rate
from the environment when the process starts (config.settings.base)."""

import re
from functools import lru_cache

# DRF's spellings, read strictly: DRF reads a period by its first letter, so "10/month" was
# ten a minute.
PERIODS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hour"), 3600),
    **dict.fromkeys(("d", "day"), 86400),
}
_RATE = re.compile(r"([0-9]+)/([a-z]+)")


@lru_cache(maxsize=1024)  # read on every request: a few rates, each parsed once
def parse_rate(rate: str) -> tuple[int, int]:
    """(requests, seconds) of `rate`; ValueError unless it is a whole number, a slash and one
    of the periods above."""
    match = _RATE.fullmatch(rate)
    if match is None or match[2] not in PERIODS:
        raise ValueError(f"not a rate: {rate!r}")
    return int(match[1]), PERIODS[match[2]]
