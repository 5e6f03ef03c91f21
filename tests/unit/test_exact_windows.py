"""Exact windows against a brute-force reference that recomputes every attribute from the raw events.

Random event sequences (out of order, client retries, gaps of months) go through the batch core;
random definitions (sliding windows from a minute to 365 days, lifetime; sums, per-category maps,
ratios, active days) decide the segments. Membership is checked at random instants and at the exact
second of every time-driven change: the due-queue clock (`next_check_at`) must name every moment
the reference changes, and the evaluation must agree with the reference just before and at it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.batch import IngestLimits, SourceRecord, process_batch
from streams.core.definitions import Definitions, parse_definitions
from streams.core.dependencies import Changes
from streams.core.profile import DAY_S, Profile
from streams.core.segments import evaluate, next_check_at
from streams.testing.fakes import fixed_enricher
from streams.testing.replay import event_records, replay_batches

BASE = 1_790_000_000.0  # 2026-09-21
WINDOWS: dict[str, float] = {"1m": 60, "15m": 900, "1h": 3600, "6h": 21_600, "1d": DAY_S, "7d": 7 * DAY_S}
WINDOWS |= {"30d": 30 * DAY_S, "90d": 90 * DAY_S, "365d": 365 * DAY_S, "lifetime": math.inf}
CATEGORIES = ("tv", "books", "garden")
ENRICHER = fixed_enricher()


@dataclass(frozen=True)
class RawEvent:
    event_id: str
    kind: str  # purchase, add_to_cart, page_view, product_view
    at: float
    category: str
    value: int
    coupon: bool

    def payload(self) -> dict[str, Any]:
        if self.kind == "purchase":
            item = {"product_id": "P1", "category": self.category, "price": self.value, "quantity": 1}
            props: dict[str, Any] = {"order_id": self.event_id, "value": self.value, "items": [item]}
            if self.coupon:
                props["coupon"] = "SAVE10"
        elif self.kind == "add_to_cart":
            props = {"product_id": "P1", "category": self.category, "price": self.value}
        elif self.kind == "product_view":
            props = {"product_id": "P1", "category": self.category}
        else:
            props = {}
        return {
            "event_id": self.event_id,
            "visitor_id": "v1",
            "event_time": datetime.fromtimestamp(self.at, UTC).isoformat(),
            "type": self.kind,
            "context": {"ip": "178.197.224.1", "user_agent": "x", "page_path": "/"},
            "properties": props,
        }


def as_parsed(at: float) -> float:
    """`at` as the worker reads it back from the event's ISO time (microseconds, float rounding)."""
    return datetime.fromisoformat(datetime.fromtimestamp(at, UTC).isoformat()).timestamp()


# -- the reference: every attribute from the raw events --------------------------------------------


def counted(event: RawEvent, metric: str) -> float:
    """What `event` counts for `metric` (``purchases``, ``spend@tv``), from its raw fields."""
    name, _, category = metric.partition("@")
    if category and category != event.category:
        return 0
    if name == "purchases":
        return 1 if event.kind == "purchase" else 0
    if name == "coupon_purchases":
        return 1 if event.kind == "purchase" and event.coupon else 0
    if name == "spend":
        return event.value if event.kind == "purchase" else 0
    if name == "add_to_carts":
        return 1 if event.kind == "add_to_cart" else 0
    if name == "page_views":
        return 1 if event.kind == "page_view" else 0
    if name == "product_views":
        return 1 if event.kind == "product_view" else 0
    if name == "events":
        return 1
    raise AssertionError(metric)


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str  # sum, days, ratio, by
    metric: str
    window: str
    denominator: str = ""

    def yaml(self) -> str:
        if self.kind == "ratio":
            return f"  {self.name}: {{ratio: [{self.metric}, {self.denominator}], window: {self.window}}}"
        extra = {"sum": "", "days": ", agg: days", "by": ", by: category"}[self.kind]
        return f"  {self.name}: {{metric: {self.metric}{extra}, window: {self.window}}}"

    def reference(self, events: list[RawEvent], now: float) -> Any:
        inside = [e for e in events if e.at > now - WINDOWS[self.window]]
        if self.kind == "sum":
            return sum(counted(e, self.metric) for e in inside)
        if self.kind == "days":
            return len({int(e.at // DAY_S) for e in inside if counted(e, self.metric)})
        if self.kind == "ratio":
            den = sum(counted(e, self.denominator) for e in inside)
            return sum(counted(e, self.metric) for e in inside) / den if den > 0 else 0.0
        return {c: sum(counted(e, f"{self.metric}@{c}") for e in inside) for c in CATEGORIES}


SESSION_S = 30 * 60

_COMPARE = {
    ">=": lambda v, t: v >= t - 1e-9,
    ">": lambda v, t: v > t + 1e-9,
    "<": lambda v, t: v < t - 1e-9,
    "<=": lambda v, t: v <= t + 1e-9,
    "==": lambda v, t: abs(v - t) < 1e-9,
    "!=": lambda v, t: abs(v - t) >= 1e-9,
}


@dataclass(frozen=True)
class Atom:
    """``attribute op threshold``, or ``session_active`` when `attr` is None."""

    attr: Attr | None
    op: str = ">="
    threshold: float = 1.0
    category: str = ""

    def condition(self) -> str:
        if self.attr is None:
            return "session_active"
        read = f'{self.attr.name}["{self.category}"]' if self.attr.kind == "by" else self.attr.name
        return f"{read} {self.op} {self.threshold!r}"

    def reference(self, events: list[RawEvent], now: float) -> bool:
        if self.attr is None:  # the newest event less than 30 minutes ago
            return bool(events) and now - max(e.at for e in events) < SESSION_S
        value = self.attr.reference(events, now)
        if self.attr.kind == "by":
            value = value[self.category]
        return bool(_COMPARE[self.op](value, self.threshold))


@dataclass(frozen=True)
class Segment:
    """One to three atoms joined by ``&&`` or ``||``, the whole possibly negated: conditions that
    time can only turn false, only turn true, or both (`streams.core.timer_plan`)."""

    id: str
    atoms: tuple[Atom, ...]
    join: str = "&&"
    negated: bool = False

    def condition(self) -> str:
        text = f" {self.join} ".join(f"({a.condition()})" for a in self.atoms)
        return f"!({text})" if self.negated else text

    def reference(self, events: list[RawEvent], now: float) -> bool:
        values = [a.reference(events, now) for a in self.atoms]
        held = all(values) if self.join == "&&" else any(values)
        return held != self.negated

    @property
    def attrs(self) -> list[Attr]:
        return [a.attr for a in self.atoms if a.attr is not None]


def definitions(segments: list[Segment]) -> Definitions:
    attrs = {a.name: a for s in segments for a in s.attrs}
    lines = ['version: "prop"', "attributes:", *(a.yaml() for a in attrs.values()), "segments:"]
    if not attrs:
        lines[1] = "attributes: {}"
    for s in segments:
        lines += [f"  - id: {s.id}", "    description: generated", f"    when: '{s.condition()}'"]
    return parse_definitions("\n".join(lines) + "\n", "prop.yaml")


def members_by_reference(segments: list[Segment], events: list[RawEvent], now: float) -> frozenset[str]:
    return frozenset(s.id for s in segments if s.reference(events, now))


# -- strategies ---------------------------------------------------------------------------------------

METRICS = ("purchases", "coupon_purchases", "spend", "add_to_carts", "page_views", "events")


@st.composite
def atom_strategy(draw: st.DrawFn, name: str) -> Atom:
    if draw(st.integers(0, 9)) == 0:
        return Atom(None)
    window = draw(st.sampled_from(sorted(WINDOWS)))
    kind = draw(st.sampled_from(["sum", "sum", "days", "ratio", "by"]))
    if kind == "days" and window == "lifetime":
        kind = "sum"
    op = draw(st.sampled_from([">=", ">=", ">=", ">", "<", "<=", "==", "!="]))
    if kind == "by":
        attr = Attr(name, "by", draw(st.sampled_from(["spend", "add_to_carts", "product_views"])), window)
        threshold = draw(st.integers(1, 3)) * 1.0
        category = draw(st.sampled_from(CATEGORIES))
    elif kind == "ratio":
        attr, threshold, category = Attr(name, "ratio", "coupon_purchases", window, "purchases"), 0.5, ""
    else:
        metric = draw(st.sampled_from(METRICS))
        attr = Attr(name, kind, metric, window)
        threshold = draw(st.integers(1, 4)) * (100.0 if metric == "spend" else 1.0)
        category = ""
    if op in ("==", "!="):
        threshold = 0.0  # `== 0`: only turns true as events leave (counts never go below zero)
    return Atom(attr, op, threshold, category)


@st.composite
def segments_strategy(draw: st.DrawFn) -> list[Segment]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        atoms = tuple(draw(atom_strategy(f"a{i}_{j}")) for j in range(draw(st.sampled_from([1, 1, 2, 3]))))
        join = draw(st.sampled_from(["&&", "||"]))
        out.append(Segment(f"s{i}", atoms, join, draw(st.integers(0, 4)) == 0))
    return out


GAPS = [1, 7, 59, 61, 600, 3599, 3601, DAY_S - 1, DAY_S + 1, 20 * DAY_S, 95 * DAY_S]
"""Seconds between bursts: across every window edge, up to gaps of months."""


@st.composite
def events_strategy(draw: st.DrawFn) -> list[RawEvent]:
    """Events in bursts separated by gaps of seconds to months, then shuffled a little and with
    some client retries (the same event again, a few records later)."""
    events: list[RawEvent] = []
    at = BASE
    for i in range(draw(st.integers(0, 40))):
        at += draw(
            st.sampled_from([1, 7, 59, 61, 600, 3599, 3601, DAY_S - 1, DAY_S + 1, 20 * DAY_S, 95 * DAY_S])
        )
        at += draw(st.integers(0, 999)) / 1000
        at = as_parsed(at)
        kind = draw(st.sampled_from(["purchase", "purchase", "add_to_cart", "page_view", "product_view"]))
        events.append(
            RawEvent(
                f"e{i}",
                kind,
                at,
                draw(st.sampled_from(CATEGORIES)),
                draw(st.integers(1, 300)),
                draw(st.booleans()),
            )
        )
    arrival = list(events)
    for _ in range(draw(st.integers(0, 6)) if arrival else 0):  # out of order: swap neighbours
        i = draw(st.integers(0, len(arrival) - 1))
        j = min(len(arrival) - 1, i + draw(st.integers(1, 3)))
        arrival[i], arrival[j] = arrival[j], arrival[i]
    for _ in range(draw(st.integers(0, 3)) if arrival else 0):  # client retries
        i = draw(st.integers(0, len(arrival) - 1))
        arrival.insert(min(len(arrival), i + draw(st.integers(1, 5))), arrival[i])
    return arrival


def fold(arrival: list[RawEvent], defs: Definitions) -> Profile:
    """The visitor's profile after the pure core folds `arrival` in one batch."""
    wall = max((e.at for e in arrival), default=BASE) + 1
    records = event_records(e.payload() for e in arrival)
    touched = next(replay_batches([records], defs, wall_now=wall, enricher=ENRICHER))
    return touched.get("v1", Profile(visitor_id="v1"))


def unique(arrival: list[RawEvent]) -> list[RawEvent]:
    return list({e.event_id: e for e in arrival}.values())


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- the properties -------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(segments=segments_strategy(), arrival=events_strategy(), probes=st.lists(st.floats(0, 1), max_size=8))
def test_membership_at_random_instants_matches_the_reference(
    segments: list[Segment], arrival: list[RawEvent], probes: list[float]
) -> None:
    defs = definitions(segments)
    profile = fold(arrival, defs)
    events = unique(arrival)
    last = max((e.at for e in events), default=BASE)
    for fraction in probes:  # from the newest event up to 400 days later
        now = last + fraction * 400 * DAY_S
        assert evaluate(profile, defs, now).members == members_by_reference(segments, events, now), now


@PROPERTY_SETTINGS
@given(segments=segments_strategy(), arrival=events_strategy())
def test_every_time_driven_change_happens_at_its_exact_second(
    segments: list[Segment], arrival: list[RawEvent]
) -> None:
    defs = definitions(segments)
    profile = fold(arrival, defs)
    events = unique(arrival)
    now = max((e.at for e in events), default=BASE)
    # Where the reference changes with no new event: an event leaving a window, the session ending.
    moments = {e.at + WINDOWS[a.window] for e in events for s in segments for a in s.attrs}
    moments.add(now + SESSION_S)
    changes = [
        t
        for t in sorted(moments)
        if now < t < math.inf
        and members_by_reference(segments, events, t) != members_by_reference(segments, events, t - 0.001)
    ]
    # As the worker evaluates on a timer: only the segments time can change (`Changes.time`); the
    # others keep the membership stored in the profile, and its timers follow that membership.
    profile.segments = sorted(evaluate(profile, defs, now).members)
    profile.definitions_sha = defs.source_sha
    on_timer = Changes(frozenset(), frozenset(), time=True)
    checks: list[float] = []
    while (due := next_check_at(profile, defs, now)) is not None:
        assert due > now
        assert len(checks) < 2_000
        checks.append(due)
        before = due - 0.001
        assert evaluate(profile, defs, before).members == members_by_reference(segments, events, before)
        members = evaluate(profile, defs, due, changes=on_timer).members
        assert members == members_by_reference(segments, events, due)
        profile.segments = sorted(members)
        profile.next_check_at = due
        now = due
    missed = [t for t in changes if not any(abs(t - c) < 1e-6 for c in checks)]
    assert not missed


def test_the_issue_example_three_purchases_in_30_days() -> None:
    """Purchases 29 days 23 hours, 10 days and 1 day ago count; the visitor leaves at the second the
    oldest turns 30 days old, not at a UTC midnight."""
    attr = Attr("purchases_30d", "sum", "purchases", "30d")
    segment = Segment("frequent_buyers", (Atom(attr, ">=", 3.0),))
    defs = definitions([segment])
    now = BASE + 400 * DAY_S + 12_345.5
    ages = [29 * DAY_S + 23 * 3600, 10 * DAY_S, DAY_S]
    events = [
        RawEvent(f"p{i}", "purchase", as_parsed(now - age), "tv", 10, False) for i, age in enumerate(ages)
    ]
    profile = fold(events, defs)
    assert evaluate(profile, defs, now).members == {"frequent_buyers"}
    leaves = events[0].at + 30 * DAY_S
    assert next_check_at(profile, defs, now) == leaves
    assert evaluate(profile, defs, leaves - 0.001).members == {"frequent_buyers"}
    assert evaluate(profile, defs, leaves).members == frozenset()


def test_calendar_window_today_in_berlin_and_lifetime() -> None:
    lines = [
        'version: "cal"',
        "timezone: Europe/Berlin",
        "attributes:",
        "  views_today: {metric: page_views, window: today}",
        "  views_ever: {metric: page_views, window: lifetime}",
        "segments:",
        "  - {id: viewer_today, description: d, when: views_today >= 1}",
        "  - {id: viewer_ever, description: d, when: views_ever >= 2}",
    ]
    defs = parse_definitions("\n".join(lines) + "\n", "cal.yaml")
    # 2026-11-20 23:30 UTC is 2026-11-21 00:30 in Berlin: a new local day has begun.
    late = datetime(2026, 11, 20, 23, 30, tzinfo=UTC).timestamp()
    early = datetime(2026, 11, 20, 22, 30, tzinfo=UTC).timestamp()
    profile = fold([RawEvent("a", "page_view", early, "tv", 1, False)], defs)
    assert evaluate(profile, defs, early).members == {"viewer_today"}
    assert evaluate(profile, defs, late).members == frozenset()
    assert next_check_at(profile, defs, early) == datetime(2026, 11, 20, 23, 0, tzinfo=UTC).timestamp()
    profile = fold(
        [RawEvent("a", "page_view", early, "tv", 1, False), RawEvent("b", "page_view", late, "tv", 1, False)],
        defs,
    )
    assert evaluate(profile, defs, late + 400 * DAY_S).members == {"viewer_ever"}


def test_calendar_weeks_and_months_start_in_the_zone() -> None:
    from streams.core.windows import calendar_next, calendar_start

    def utc(year: int, month: int, day: int, hour: int, minute: int) -> float:
        return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()

    berlin = "Europe/Berlin"
    # Wednesday 2026-11-25 10:00 Berlin (09:00 UTC): the week began Monday 23rd 00:00 Berlin.
    now = utc(2026, 11, 25, 9, 0)
    assert calendar_start(now, "week", berlin) == utc(2026, 11, 22, 23, 0)
    assert calendar_start(now, "month", berlin) == utc(2026, 10, 31, 23, 0)
    assert calendar_next(now, "month", berlin) == utc(2026, 11, 30, 23, 0)
    # Around the switch to summer time (29 March 2026): local midnights move from 23:00 to 22:00 UTC.
    assert calendar_next(utc(2026, 3, 28, 12, 0), "day", berlin) == utc(2026, 3, 28, 23, 0)
    assert calendar_next(utc(2026, 3, 29, 12, 0), "day", berlin) == utc(2026, 3, 29, 22, 0)


def test_local_hour_and_weekday_and_the_hourly_recheck_of_members() -> None:
    lines = [
        'version: "hours"',
        "timezone: Europe/Zurich",
        "segments:",
        "  - id: weekday_mornings",
        "    description: d",
        "    when: local_weekday <= 5 && local_hour >= 7 && local_hour < 13",
    ]
    defs = parse_definitions("\n".join(lines) + "\n", "hours.yaml")
    # Friday 2026-11-27 12:30 in Zurich is 11:30 UTC.
    at = datetime(2026, 11, 27, 11, 30, tzinfo=UTC).timestamp()
    profile = fold([RawEvent("a", "page_view", at, "tv", 1, False)], defs)
    assert profile.segments == ["weekday_mornings"]
    one_pm = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()
    assert next_check_at(profile, defs, at) == one_pm
    assert evaluate(profile, defs, one_pm).members == frozenset()
    saturday = datetime(2026, 11, 28, 9, 0, tzinfo=UTC).timestamp()
    assert evaluate(profile, defs, saturday).members == frozenset()


@PROPERTY_SETTINGS
@given(
    segments=segments_strategy(),
    arrival=events_strategy(),
    cuts=st.lists(st.integers(1, 6), max_size=12),
)
def test_batches_and_timers_keep_membership_exact(
    segments: list[Segment], arrival: list[RawEvent], cuts: list[int]
) -> None:
    """As the worker runs it: the events in random batch cuts, and between them every timer the
    profile sets, fired at its moment. A batch reuses the moment each window source gave, kept in
    the profile, until an event that source counts arrives, and a timer evaluates only the segments
    of the sources due (`timer_check`, `_due_segments`): after every batch and every timer the
    membership is the reference's at that moment, the next check is the one walked from scratch,
    and no change the reference makes with no new event is missed."""
    defs = definitions(segments)
    records = event_records(e.payload() for e in arrival)
    wall = max((e.at for e in arrival), default=BASE) + 400 * DAY_S
    store: dict[str, bytes] = {}
    folded: list[RawEvent] = []

    def run(batch: list[SourceRecord], due: dict[str, tuple[int, float]]) -> Profile:
        result = process_batch(
            batch,
            lambda visitor_id, _partition: store.get(visitor_id),
            due,
            {},
            defs=defs,
            enricher=ENRICHER,
            limits=IngestLimits(),
            wall_now=wall,
            topic="replay",
        )
        for visitor_id, effect in result.visitors.items():
            store[visitor_id] = effect.profile.to_bytes()
        profile = Profile.from_bytes(store["v1"])
        now = profile.evaluated_at
        assert frozenset(profile.segments) == members_by_reference(segments, unique(folded), now), now
        fresh = Profile.from_bytes(store["v1"])
        fresh.timer_moments = []
        assert profile.next_check_at == next_check_at(fresh, defs, now)
        return profile

    def changes_between(start: float, end: float) -> list[float]:
        events = unique(folded)
        moments = {e.at + WINDOWS[a.window] for e in events for s in segments for a in s.attrs}
        moments |= {e.at + SESSION_S for e in events}
        return [
            t
            for t in sorted(moments)
            if start < t < end
            and members_by_reference(segments, events, t) != members_by_reference(segments, events, t - 0.001)
        ]

    batches: list[list[SourceRecord]] = []
    rest = list(records)
    for size in [*cuts, len(rest)]:
        if rest:
            batches.append(rest[:size])
            rest = rest[size:]
    profile: Profile | None = None
    for batch in [*batches, []]:
        first = min((_event_time(r) for r in batch), default=wall)
        if profile is not None:
            start = profile.evaluated_at
            checks: list[float] = []
            while profile.next_check_at is not None and profile.next_check_at < first:
                assert len(checks) < 500
                checks.append(profile.next_check_at)
                profile = run([], {"v1": (0, profile.next_check_at)})
            missed = [t for t in changes_between(start, first) if not any(abs(t - c) < 1e-6 for c in checks)]
            assert not missed
        if batch:
            folded.extend(arrival[r.offset] for r in batch)
            profile = run(batch, {})


def _event_time(record: SourceRecord) -> float:
    assert record.value is not None
    return as_parsed(datetime.fromisoformat(orjson.loads(record.value)["event_time"]).timestamp())
