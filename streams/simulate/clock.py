"""Simulated time: integer milliseconds since the Unix epoch (UTC), their ISO form, and the day's rhythm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
SESSION_GAP_MS: Final = 2 * HOUR_MS
"""Minimum distance between two planned session starts (sessions last < 35 minutes)."""
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def _day_prefix(day: int) -> str:
    return f"{EPOCH + timedelta(days=day):%Y-%m-%d}T"


def iso(ms: int) -> str:
    """ISO-8601 UTC with milliseconds: `2026-11-20T15:37:12.345Z`."""
    day, rest = divmod(ms, DAY_MS)
    seconds, millis = divmod(rest, SECOND_MS)
    minutes, sec = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_day_prefix(day)}{hour:02d}:{minute:02d}:{sec:02d}.{millis:03d}Z"


def to_ms(moment: datetime) -> int:
    """`moment` in milliseconds since the epoch; a naive `moment` is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def hour_weight(ms: int) -> float:
    """How likely a session starts at `ms`'s hour of day, relative to the evening peak."""
    hour = (ms // HOUR_MS) % 24  # UTC; the shop's visitors are in UTC+0..+2
    if hour < 5:
        return 0.12
    if hour < 8:
        return 0.5
    if hour < 16:
        return 0.8
    if hour < 21:
        return 1.0
    return 0.55
