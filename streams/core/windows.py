"""Time windows of attributes: sliding to the second, calendar periods in a zone, lifetime.

Three kinds, written in the definitions' ``window:``:

* **sliding** — ``15m``, ``2h``, ``30d`` (1 minute to 365 days): the events with ``t > now - W``.
  An event leaves the window at exactly ``t + W``. Summed from the day buckets for the days wholly
  inside and from the timeline for the day the window starts in (see `streams.core.timeline`).
* **calendar** — ``today``, ``this_week`` (Monday 00:00 on), ``this_month``: the events since the
  start of the current period in the definitions' time zone (``timezone:``, default Europe/Berlin).
  Everything leaves at the start of the next period.
* **lifetime** — every event the visitor ever sent (`Profile.totals`, never expires).

`WindowView` is one window of one profile at one moment, computed once per evaluation and shared
by every attribute over that window; `exit_at` is the next moment an attribute over the window can
change with no new event (the due-queue clock of `streams.core.segments.next_check_at`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.timeline import DAY_S, Entry, contributions, metric_codes, since

__all__ = [
    "CALENDAR_UNITS",
    "DEFAULT_ZONE",
    "MAX_WINDOW_S",
    "Window",
    "WindowView",
    "calendar_start",
    "exit_at",
    "local_time",
    "next_full_hour",
    "parse_window",
    "period_start",
    "view_of",
    "zone_of",
]

DEFAULT_ZONE = "Europe/Berlin"
MAX_WINDOW_S = 365 * DAY_S
"""Longest sliding window (the profile keeps 400 days of buckets)."""
CALENDAR_UNITS: dict[str, Literal["day", "week", "month"]] = {
    "today": "day",
    "this_week": "week",
    "this_month": "month",
}
_SLIDING_RE = re.compile(r"^([1-9][0-9]*)(m|h|d)$")
_UNIT_S = {"m": 60, "h": 3600, "d": DAY_S}
_CALENDAR_EPSILON = 1e-6
"""A calendar period holds ``t >= start``; as a cut (``t > cut``) that is ``start - 1 µs``: event
times carry at most microseconds."""


@dataclass(frozen=True, slots=True)
class Window:
    text: str
    """As written: ``30d``, ``15m``, ``today``, ``lifetime``."""
    kind: Literal["sliding", "calendar", "lifetime"]
    seconds: float = 0.0
    """Length of a sliding window."""
    unit: Literal["", "day", "week", "month"] = ""
    """Period of a calendar window."""

    def cut(self, now: float, zone: str) -> float:
        """Events with ``t > cut`` are inside at `now` (not for lifetime)."""
        if self.kind == "sliding":
            return now - self.seconds
        return calendar_start(now, self.unit, zone) - _CALENDAR_EPSILON


def parse_window(text: object) -> Window:
    """``30d`` / ``15m`` / ``2h`` / ``today`` / ``this_week`` / ``this_month`` / ``lifetime``."""
    if not isinstance(text, str):
        raise ValueError(f"bad window {text!r}: write it like 15m, 2h, 30d, today, this_week, lifetime")
    word = text.strip()
    if word == "lifetime":
        return Window(word, "lifetime")
    if word in CALENDAR_UNITS:
        return Window(word, "calendar", unit=CALENDAR_UNITS[word])
    match = _SLIDING_RE.match(word)
    if match is None:
        raise ValueError(
            f"bad window {text!r}: write it like 15m, 2h, 30d (sliding), today, this_week, this_month "
            "(calendar) or lifetime"
        )
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_WINDOW_S:
        raise ValueError(f"bad window {text!r}: at most 365d")
    return Window(word, "sliding", float(seconds))


@lru_cache(maxsize=64)
def zone_of(name: str) -> ZoneInfo:
    """The IANA zone `name` (ValueError when unknown)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None


def period_start(local: datetime, unit: str) -> datetime:
    """Start of the day / week (Monday) / month containing the zone-aware `local`."""
    start = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if unit == "week":
        start -= timedelta(days=start.weekday())
    elif unit == "month":
        start = start.replace(day=1)
    return start.replace(tzinfo=local.tzinfo)


def calendar_start(now: float, unit: str, zone: str) -> float:
    return period_start(datetime.fromtimestamp(now, zone_of(zone)), unit).timestamp()


def calendar_next(now: float, unit: str, zone: str) -> float:
    """Start of the period after the one containing `now`."""
    start = period_start(datetime.fromtimestamp(now, zone_of(zone)), unit)
    if unit == "day":
        naive = start.replace(tzinfo=None) + timedelta(days=1)
    elif unit == "week":
        naive = start.replace(tzinfo=None) + timedelta(days=7)
    else:
        naive = (start.replace(tzinfo=None) + timedelta(days=32)).replace(day=1)
    return naive.replace(tzinfo=start.tzinfo).timestamp()


_QUARTER_S = 900


def local_time(t: float, zone: str) -> tuple[int, int]:
    """(hour 0-23, ISO weekday 1-7) of the moment `t` in `zone`."""
    return _local_quarter(int(t // _QUARTER_S), zone)


@lru_cache(maxsize=8192)
def _local_quarter(quarter: int, zone: str) -> tuple[int, int]:
    # Zone offsets and their changes fall on whole quarter hours: one answer per UTC quarter hour.
    local = datetime.fromtimestamp(quarter * _QUARTER_S, zone_of(zone))
    return local.hour, local.isoweekday()


def next_full_hour(now: float, zone: str) -> float:
    """The first full hour after `now` in `zone` (zones with half-hour offsets included)."""
    local = datetime.fromtimestamp(now, zone_of(zone))
    start = local.replace(minute=0, second=0, microsecond=0)
    return (start + timedelta(hours=1)).timestamp() if start.timestamp() <= now else start.timestamp()


class WindowView:
    """One window of one profile at one moment: the bucket days wholly inside, and what the
    in-window events of the day the window starts in count (`partial`)."""

    __slots__ = ("days", "partial", "totals")

    def __init__(
        self, days: list[int], partial: dict[str, float], totals: Mapping[str, float] | None = None
    ) -> None:
        self.days, self.partial, self.totals = days, partial, totals

    def total(self, buckets: Mapping[int, Mapping[str, float]], key: str) -> float:
        if self.totals is not None:
            return self.totals.get(key, 0)
        total = self.partial.get(key, 0)
        for day in self.days:
            value = buckets[day].get(key)
            if value:
                total += value
        return total

    def active_days(self, buckets: Mapping[int, Mapping[str, float]], key: str) -> int:
        """Days inside the window on which `key` counted something (UTC days)."""
        count = 1 if self.partial.get(key) else 0
        return count + sum(1 for day in self.days if buckets[day].get(key))

    def by(self, buckets: Mapping[int, Mapping[str, float]], prefix: str) -> dict[str, float]:
        """``key → total`` of every key starting with `prefix`, the prefix cut off."""
        cut = len(prefix)
        out: dict[str, float] = {}
        sources: Iterable[Mapping[str, float]] = (
            [self.totals] if self.totals is not None else [self.partial, *(buckets[d] for d in self.days)]
        )
        for source in sources:
            for key, value in source.items():
                if key.startswith(prefix):
                    dim = key[cut:]
                    out[dim] = out.get(dim, 0) + value
        return out


def view_of(
    window: Window,
    now: float,
    zone: str,
    ascending_days: list[int],
    timeline: list[Entry],
    timeline_from_day: int,
    totals: Mapping[str, float],
    first_seen: float = 0.0,
) -> WindowView:
    """The `WindowView` of `window` at `now` (`ascending_days`: the profile's bucket days, sorted).

    `first_seen`: the profile's oldest event time; when the window starts before it, every event
    is inside and the view is the lifetime totals (most visitors are younger than most windows).
    Not for a profile without lifetime totals (formats before 2 kept none)."""
    if window.kind == "lifetime":
        return WindowView([], {}, totals)
    cut = window.cut(now, zone)
    if 0.0 < cut < first_seen and totals.get("events"):
        return WindowView(ascending_days, {}, totals)  # every bucket day inside whole (active days)
    first = math.floor(cut / DAY_S)
    days = ascending_days[bisect_right(ascending_days, first) :]
    partial: dict[str, float] = {}
    if first >= timeline_from_day and timeline:
        day_end = (first + 1) * DAY_S
        for i in range(since(timeline, cut), len(timeline)):
            entry = timeline[i]
            if entry[0] >= day_end:
                break
            for key, amount in contributions(entry):
                partial[key] = partial.get(key, 0) + amount
    return WindowView(days, partial)


def _counts(entry: Entry, keys: frozenset[str], prefixes: tuple[str, ...]) -> bool:
    return any(
        amount and (key in keys or (prefixes and key.startswith(prefixes)))
        for key, amount in contributions(entry)
    )


def exit_at(
    window: Window,
    keys: frozenset[str],
    prefixes: tuple[str, ...],
    now: float,
    zone: str,
    buckets: Mapping[int, Mapping[str, float]],
    ascending_days: list[int],
    timeline: list[Entry],
    timeline_from_day: int,
    codes: frozenset[int] | None = None,
) -> float | None:
    """The next moment after `now` at which an event counted in `keys` (or under `prefixes`) leaves
    `window`; None when none is inside (or the window is lifetime). `codes`: the event codes that
    can count in them (None: any)."""
    if window.kind == "lifetime":
        return None
    cut = window.cut(now, zone)
    first = math.floor(cut / DAY_S)
    for day in ascending_days[bisect_left(ascending_days, first) :]:
        bucket = buckets[day]
        if not any(bucket.get(k) for k in keys) and not (
            prefixes and any(v and k.startswith(prefixes) for k, v in bucket.items())
        ):
            continue
        if day < timeline_from_day:  # day-granular: as if every event of the day was at its start
            if day == first:
                continue
            leaves = day * DAY_S + window.seconds
        else:
            after = max(cut, day * DAY_S - 1e-9)
            leaves_at = _first_counted(timeline, after, (day + 1) * DAY_S, keys, prefixes, codes)
            if leaves_at is None:
                if day == first:
                    continue
                leaves_at = day * DAY_S
            leaves = leaves_at + window.seconds
        if window.kind == "calendar":
            return calendar_next(now, window.unit, zone)
        return leaves
    return None


def _first_counted(
    timeline: list[Entry],
    after: float,
    before: float,
    keys: frozenset[str],
    prefixes: tuple[str, ...],
    codes: frozenset[int] | None = None,
) -> float | None:
    """Time of the first entry with ``after < t < before`` that counts in `keys`/`prefixes`."""
    for i in range(since(timeline, after), len(timeline)):
        entry = timeline[i]
        if entry[0] >= before:
            return None
        if (codes is None or entry[1] in codes) and _counts(entry, keys, prefixes):
            return float(entry[0])
    return None


def drop_at(
    window: Window,
    key: str,
    bound: float,
    inclusive: bool,
    now: float,
    zone: str,
    buckets: Mapping[int, Mapping[str, float]],
    ascending_days: list[int],
    timeline: list[Entry],
    timeline_from_day: int,
) -> float | None:
    """The first moment after `now` at which the window's total of `key` falls below `bound`
    (``inclusive``: to `bound` or below), as its events leave; None when it is there already or
    never gets there. A condition ``x >= 3`` can change only then, not at every event leaving.

    The moment is never late. Sums of whole numbers are exact; any other sum is compared with a rounding
    slack that errs early: within it of `bound` it counts as not there yet at `now`, and as there
    during the walk (a timer that finds nothing changed sets the next one; a late one would delay
    a change)."""
    if window.kind == "lifetime":
        return None

    cut = window.cut(now, zone)
    first = math.floor(cut / DAY_S)
    days = ascending_days[bisect_left(ascending_days, first) :]
    # The whole buckets from the first day on hold at least what is inside: already there by them,
    # it is there (most visitors, most bounds: no entry is looked at).
    upper = sum(buckets[day].get(key, 0) for day in days) + 1e-9 * max(1.0, abs(bound))
    if upper <= bound if inclusive else upper < bound:
        return None
    codes = _key_codes(key)
    # The days after the one the cut falls in are inside whole; that one counts its events after
    # the cut, which leave first.
    inside = [
        (day, amount, day < timeline_from_day)
        for day in days
        if day > first and (amount := buckets[day].get(key))
    ]
    exact = float(bound).is_integer() and all(float(amount).is_integer() for _, amount, _ in inside)
    slack = 0.0 if exact else 1e-9 * max(1.0, abs(bound))

    def there(total: float, margin: float) -> bool:
        return total <= bound + margin if inclusive else total < bound + margin

    total = math.fsum(amount for _, amount, _ in inside)
    if (
        there(total, slack)
        and first >= timeline_from_day
        and days
        and days[0] == first
        and buckets[first].get(key)
    ):
        # Whether it gets there while the first day's events leave: look at them.
        parts = list(_amounts(timeline, key, codes, cut, (first + 1) * DAY_S))
        total += math.fsum(value for _, value in parts)
        if exact and not all(float(value).is_integer() for _, value in parts):
            slack = 1e-9 * max(1.0, abs(bound))
        if there(total, -slack):
            return None
        if window.kind == "calendar":
            return calendar_next(now, window.unit, zone)
        return _leaves_there(parts, total, there, slack, window.seconds, now)
    if there(total, -slack):
        return None
    if window.kind == "calendar":  # everything leaves at once when the next period starts
        return calendar_next(now, window.unit, zone) if there(0.0, slack) else None
    for day, amount, granular in inside:
        if not there(total - amount, slack):  # the whole day leaves before the total gets there
            total -= amount
            continue
        leaves = day * DAY_S + window.seconds  # day-granular, or a day with no entries (older profiles)
        if granular:
            return leaves
        day_parts = _amounts(timeline, key, codes, day * DAY_S - 1e-9, (day + 1) * DAY_S)
        return _leaves_there(day_parts, total, there, slack, window.seconds, leaves)
    return None


def _leaves_there(
    parts: Iterable[tuple[float, float]],
    total: float,
    there: Callable[[float, float], bool],
    slack: float,
    seconds: float,
    otherwise: float,
) -> float:
    """The moment the total gets there as `parts` ((time, amount), in time order) leave a window of
    `seconds`; by whole days it is there once they all have, so the last one's moment (`otherwise`
    when there are none) when rounding keeps the running total above."""
    leaves = otherwise
    for t, value in parts:
        total -= value
        leaves = t + seconds
        if there(total, slack):
            return leaves
    return leaves


@lru_cache(maxsize=1024)
def _key_codes(key: str) -> frozenset[int] | None:
    return metric_codes(key.partition("@")[0])


def _amounts(
    timeline: list[Entry], key: str, codes: frozenset[int] | None, after: float, before: float
) -> Iterator[tuple[float, float]]:
    """(time, amount) of each entry with ``after < t < before`` that counts in `key` (only entries
    of `codes` can; None: any)."""
    for i in range(since(timeline, after), len(timeline)):
        entry = timeline[i]
        if entry[0] >= before:
            return
        if codes is not None and entry[1] not in codes:
            continue
        for counted, value in contributions(entry):
            if counted == key and value:
                yield float(entry[0]), value
