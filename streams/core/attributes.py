"""What a segment condition can read: built-in facts, windowed attributes, CEL expressions.

Three kinds of names are visible to a condition (a CEL expression):

* **facts** (`FACTS`): read straight from the profile at time `now`: device, OS, geo, traffic
  source, cart, recency ("minutes since the last add-to-cart"), the products viewed in the last
  30 minutes. Unknown strings are `""` so `country == "CH"` never raises; unknown numbers that
  have no sane default (`age`, `lat`, `lon`) are `null` and come with a `has_…` guard.
* **attributes** (`AttributeDef`): windowed aggregates declared once in the definitions file:
  sums over the profile's day buckets ("purchases in the last 30 days") or aggregates over its
  timeline entries (`streams.core.aggregates`: "the largest order in 365 days").
* **params**: named constants from the definitions file (handled by `streams.core.definitions`).

Windows
-------
Buckets are UTC epoch days (`profile.days[d]`). Day `d` is inside a W-day window at time `now`
iff ``d > floor(now / 86400) - W``: today and the W-1 days before it. There is no upper bound
(a bucket dated after `now`, an event clock ahead of the timer, counts). A bucket therefore
leaves a W-day window at exactly ``(d + W) * 86400`` (a UTC midnight); `window_exit_at` gives
the next such moment, which `streams.core.segments.next_check_at` hands to the due queue.

Time-relative facts
-------------------
All "time since" facts are computed from ``round(now - t, 3)`` (millisecond precision) so a
timer firing at exactly ``t + delay`` sees exactly ``delay`` (float noise would otherwise leave a
condition like ``minutes_since_add_to_cart >= 30`` false at its own due time). Facts that flip by
themselves at a fixed offset (`session_active`, `viewed_products_30m`, `purchased_products_24h`)
flip exactly at ``t + 30 min`` / ``t + 24 h`` (strict ``<``), and `sliding_fact_times` reports
those moments. Facts whose flip depends on a threshold the user writes (`RELATIVE_FACTS`) need
an explicit ``recheck`` in the segment definition.

CEL values
----------
Count attributes are CEL `int`, `spend` sums and ratios are `double` (timeline attributes: see
`streams.core.aggregates`). CEL compares int and double
freely (``purchases_30d >= 3``, ``spend_365d["clothing"] >= 600``) but does not mix them in
arithmetic: write ``double(purchases_30d) * 1.5``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import cel
from cel.stdlib import STDLIB_FUNCTIONS
from haversine import haversine

from streams.core.aggregates import Aggregate, aggregate_value, timeline_exit_at
from streams.core.fastcel import FastCondition, compile_fast
from streams.core.profile import DAY_S, DIMENSIONED_METRICS, METRICS, RETENTION_DAYS, SESSION_GAP_S, Profile
from streams.core.timeline import metric_codes, since
from streams.core.windows import DEFAULT_ZONE, Window, WindowView, exit_at, local_time, view_of

__all__ = [
    "FACTS",
    "FLOAT_METRICS",
    "LOCAL_TIME_FACTS",
    "NEVER",
    "RECHECK_ANCHORS",
    "RELATIVE_FACTS",
    "AttributeDef",
    "CelSyntaxError",
    "Expr",
    "LazyValues",
    "ValuePlan",
    "WindowGroup",
    "anchor_times",
    "base_name",
    "cel_functions",
    "cel_literal",
    "compile_expr",
    "compute_values",
    "dimension_var",
    "display_name",
    "groups_exit_at",
    "inline_constants",
    "parse_duration",
    "parse_metric_ref",
    "scalarize",
    "sliding_fact_anchors",
    "sliding_fact_times",
    "window_exit_at",
    "window_groups",
]

NEVER = 1e9
"""Value of a `minutes_since_…` / `…_days_ago` fact when the thing never happened (≈ 1900 years)."""
MAX_WINDOW_DAYS = 365
"""Longest window an attribute may declare (the profile keeps RETENTION_DAYS of buckets)."""
assert MAX_WINDOW_DAYS <= RETENTION_DAYS
RECENT_VIEW_S = 30 * 60
RECENT_PURCHASE_S = 24 * 3600
FLOAT_METRICS: frozenset[str] = frozenset({"spend"})
"""Metrics summed as CEL doubles; every other metric is a count (CEL int)."""


# -- windows and durations --------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^([1-9][0-9]*)(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": DAY_S}


def parse_duration(text: object) -> float:
    """`"30m"` → 1800.0; units s, m, h, d."""
    match = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"bad duration {text!r}: write it like 90s, 30m, 24h or 7d")
    return float(int(match.group(1)) * _UNIT_S[match.group(2)])


def parse_metric_ref(text: object) -> str:
    """`"purchases"` or `"spend@electronics"` → the day-bucket key, validated."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"bad metric {text!r}")
    metric, sep, dimension = text.partition("@")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(sorted(METRICS))})")
    if sep and metric not in DIMENSIONED_METRICS:
        raise ValueError(
            f"metric {metric!r} has no dimension (per category: {', '.join(sorted(DIMENSIONED_METRICS))})"
        )
    if sep and not dimension:
        raise ValueError(f"bad metric {text!r}: empty dimension")
    return text


# -- attributes --------------------------------------------------------------------------------------

AttributeKind = Literal["sum", "days", "ratio", "by", "timeline"]


@dataclass(frozen=True, slots=True)
class AttributeDef:
    """One windowed aggregate (`streams.core.windows`: sliding, calendar or lifetime).

    kind ``sum``   — sum of `key` (``purchases`` or ``spend@electronics``) over the window;
    kind ``days``  — number of days in the window on which `key` was non-zero;
    kind ``ratio`` — sum of `key` / sum of `denominator` (0.0 when the denominator is 0);
    kind ``by``    — a map dimension → sum of ``metric@dimension`` (``spend_365d["clothing"]``);
                     `dimensions` are always present (0 when nothing was counted), other keys only
                     when the visitor has data for them;
    kind ``timeline`` — `aggregate` over the window's timeline entries (`streams.core.aggregates`:
                     count, sum, min, max, avg, distinct, first, last, top, share, filtered and
                     grouped); `key` is its one-line description, and with a ``by`` it is a map like
                     kind ``by`` (`dimensions` always present, with the empty value).
    """

    name: str
    kind: AttributeKind
    window: Window
    key: str
    denominator: str | None = None
    dimensions: frozenset[str] = frozenset()
    line: int | None = None
    aggregate: Aggregate | None = None
    """What a kind ``timeline`` attribute computes."""
    integer: bool = field(init=False, default=True)
    """Whether values are CEL ints (counts) rather than doubles (spend, ratios)."""

    def __post_init__(self) -> None:
        metric = self.key.partition("@")[0]
        integer = self.kind == "days" or (self.kind in ("sum", "by") and metric not in FLOAT_METRICS)
        if self.aggregate is not None:
            integer = self.aggregate.result == "int"
        object.__setattr__(self, "integer", integer)

    @property
    def is_map(self) -> bool:
        """Whether values are maps (read as ``name["key"]``)."""
        return self.kind == "by" or (self.aggregate is not None and self.aggregate.by is not None)

    def keys(self) -> tuple[str, ...]:
        """Bucket keys this attribute reads (for `by`: the metric, meaning every `metric@*`; none for
        kind ``timeline``)."""
        if self.aggregate is not None:
            return ()
        return (self.key,) if self.denominator is None else (self.key, self.denominator)

    def event_codes(self) -> frozenset[int] | None:
        """Timeline codes (`streams.core.timeline.CODES`) of the events that can change the value;
        None: any event. A new event that trims the timeline (`TIMELINE_MAX`) is not counted."""
        if self.aggregate is not None:
            return self.aggregate.event_codes()
        codes: set[int] = set()
        for key in self.keys():
            counted = metric_codes(key.partition("@")[0])
            if counted is None:
                return None
            codes |= counted
        return frozenset(codes)

    def with_dimensions(self, extra: Iterable[str]) -> AttributeDef:
        return AttributeDef(
            self.name,
            self.kind,
            self.window,
            self.key,
            self.denominator,
            self.dimensions | set(extra),
            self.line,
            self.aggregate,
        )


# -- facts ---------------------------------------------------------------------------------------------


def _elapsed(now: float, t: float) -> float:
    return round(now - t, 3)


def _minutes_since(t: float | None, now: float) -> float:
    return NEVER if t is None or t <= 0.0 else _elapsed(now, t) / 60.0


def _recent(items: list[tuple[str, float]], now: float, within_s: float) -> list[str]:
    # round(now - at, 3) < within_s, i.e. at > now - within_s (+ half a millisecond of slack)
    cutoff = now - within_s + 0.0005
    return list(dict.fromkeys(product_id for product_id, at in items if at > cutoff))


def _text(name: str) -> Callable[[Profile, float], str]:
    def get(profile: Profile, now: float) -> str:
        value = getattr(profile, name)
        return value if isinstance(value, str) else ""

    get.__name__ = name
    return get


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    type: str
    doc: str
    get: Callable[[Profile, float], Any]


def _facts() -> dict[str, Fact]:
    """The built-in facts, by name. Long because it is a table (one row per fact), not logic."""
    facts: list[Fact] = []
    for name, doc in (
        ("device_category", "desktop, mobile, tablet, bot or other"),
        ("os", 'operating system family as ua-parser names it: "Android", "iOS", "Windows", "Mac OS X"'),
        ("os_version", 'major OS version, e.g. "10" for Windows 10'),
        ("browser", 'browser family, e.g. "Chrome"'),
        ("country", 'ISO 3166-1 alpha-2, e.g. "CH"'),
        ("region", "region name as the geo database spells it"),
        ("region_code", 'ISO 3166-2 subdivision code, e.g. "NW", "BY"'),
        ("city", 'city name, e.g. "Munich"'),
        ("traffic_source", "latest non-internal medium: search, social, paid, ai_assistant, ... (traffic)"),
        ("traffic_name", 'who sent the latest visit: "google", "newsletter", a host'),
        ("session_source", "source kind of the current session's landing"),
        ("session_source_name", "who sent the current session"),
        ("session_landing_path", 'path the current session landed on, e.g. "/"'),
        ("last_page_path", "path of the latest page"),
        ("last_page_type", "home, category, product, cart, checkout, search, content, other"),
        ("locale", 'e.g. "de-CH"'),
    ):
        facts.append(Fact(name, "string", doc, _text(name)))
    facts += [
        Fact("lat", "double|null", "visitor latitude (null when unknown)", lambda p, now: p.lat),
        Fact("lon", "double|null", "visitor longitude (null when unknown)", lambda p, now: p.lon),
        Fact(
            "has_location",
            "bool",
            "lat/lon known (guard for distance_km)",
            lambda p, now: p.lat is not None and p.lon is not None,
        ),
        Fact("age", "int|null", "age when the visitor told it (null otherwise)", lambda p, now: p.age),
        Fact("has_age", "bool", "age known", lambda p, now: p.age is not None),
        Fact("identified", "bool", "a user id is known", lambda p, now: p.user_id is not None),
        Fact(
            "session_active",
            "bool",
            "last event less than 30 minutes ago",
            lambda p, now: p.last_seen > 0.0 and _elapsed(now, p.last_seen) < SESSION_GAP_S,
        ),
        Fact(
            "first_seen_days_ago",
            "double",
            "days since the first event (fractional)",
            lambda p, now: NEVER if p.first_seen <= 0.0 else _elapsed(now, p.first_seen) / DAY_S,
        ),
        Fact(
            "minutes_since_last_seen", "double", "", lambda p, now: _minutes_since(p.last_seen or None, now)
        ),
        Fact(
            "session_minutes",
            "double",
            "minutes since the session started",
            lambda p, now: _minutes_since(p.session_started or None, now),
        ),
        Fact(
            "minutes_since_add_to_cart",
            "double",
            f"{NEVER:g} when never",
            lambda p, now: _minutes_since(p.last_add_to_cart_at, now),
        ),
        Fact(
            "minutes_since_purchase",
            "double",
            f"{NEVER:g} when never",
            lambda p, now: _minutes_since(p.last_purchase_at, now),
        ),
        Fact(
            "minutes_since_exit_intent",
            "double",
            f"{NEVER:g} when never",
            lambda p, now: _minutes_since(p.last_exit_intent_at, now),
        ),
        Fact("cart_items", "int", "units in the cart", lambda p, now: sum(p.cart.values())),
        Fact("cart_value", "double", "cart value", lambda p, now: float(p.cart_value)),
        Fact("cart_products", "list(string)", "product ids in the cart", lambda p, now: sorted(p.cart)),
        Fact(
            "viewed_products_30m",
            "list(string)",
            "product ids viewed in the last 30 minutes",
            lambda p, now: _recent(p.recent_views, now, RECENT_VIEW_S),
        ),
        Fact(
            "purchased_products_24h",
            "list(string)",
            "product ids bought in the last 24 hours",
            lambda p, now: _recent(p.recent_purchases, now, RECENT_PURCHASE_S),
        ),
        Fact(
            "consent_marketing", "bool", "latest marketing consent", lambda p, now: bool(p.consent_marketing)
        ),
        Fact(
            "local_hour",
            "int",
            "hour of the evaluation moment, 0-23, in the definitions' timezone",
            lambda p, now: local_time(now, DEFAULT_ZONE)[0],
        ),
        Fact(
            "local_weekday",
            "int",
            "weekday of the evaluation moment, 1 = Monday … 7 = Sunday, in the definitions' timezone",
            lambda p, now: local_time(now, DEFAULT_ZONE)[1],
        ),
    ]
    return {fact.name: fact for fact in facts}


LOCAL_TIME_FACTS = frozenset({"local_hour", "local_weekday"})
"""Facts of the evaluation moment in the definitions' zone: a member of a segment reading them is
rechecked at the next full hour (`streams.core.segments.next_check_at`)."""


FACTS: dict[str, Fact] = _facts()
"""Built-in facts every expression can read, by name."""

RECHECK_ANCHORS: dict[str, Callable[[Profile], list[float]]] = {
    "first_seen": lambda p: [p.first_seen] if p.first_seen > 0.0 else [],
    "last_seen": lambda p: [p.last_seen] if p.last_seen > 0.0 else [],
    "session_started": lambda p: [p.session_started] if p.session_started > 0.0 else [],
    "last_add_to_cart_at": lambda p: [] if p.last_add_to_cart_at is None else [p.last_add_to_cart_at],
    "last_purchase_at": lambda p: [] if p.last_purchase_at is None else [p.last_purchase_at],
    "last_exit_intent_at": lambda p: [] if p.last_exit_intent_at is None else [p.last_exit_intent_at],
    "recent_views": lambda p: [at for _, at in p.recent_views],
    "recent_purchases": lambda p: [at for _, at in p.recent_purchases],
}
"""Profile times a `recheck: {after: …, delay: …}` can count from (lists: every entry)."""

RELATIVE_FACTS: dict[str, str] = {
    "first_seen_days_ago": "first_seen",
    "minutes_since_last_seen": "last_seen",
    "session_minutes": "session_started",
    "minutes_since_add_to_cart": "last_add_to_cart_at",
    "minutes_since_purchase": "last_purchase_at",
    "minutes_since_exit_intent": "last_exit_intent_at",
}
"""Facts that change as time passes by a threshold only the condition knows → need a recheck."""

_SLIDING_FACTS: dict[str, tuple[str, float]] = {
    "session_active": ("last_seen", float(SESSION_GAP_S)),
    "viewed_products_30m": ("recent_views", float(RECENT_VIEW_S)),
    "purchased_products_24h": ("recent_purchases", float(RECENT_PURCHASE_S)),
}


def anchor_times(profile: Profile, anchor: str) -> list[float]:
    return RECHECK_ANCHORS[anchor](profile)


def sliding_fact_anchors(names: Iterable[str]) -> tuple[tuple[str, float], ...]:
    """(anchor, delay) of each self-sliding fact among `names`: it changes at every anchor time
    plus the delay (prepared once per definitions; see `segments.next_check_at`)."""
    return tuple(_SLIDING_FACTS[name] for name in sorted(names) if name in _SLIDING_FACTS)


def sliding_fact_times(profile: Profile, names: Iterable[str]) -> list[float]:
    """Moments at which the self-sliding facts among `names` change for this profile."""
    return [
        t + delay for anchor, delay in sliding_fact_anchors(names) for t in RECHECK_ANCHORS[anchor](profile)
    ]


# -- computing values ---------------------------------------------------------------------------------

_MISSING = object()
NULLABLE_FACTS: frozenset[str] = frozenset({"age", "lat", "lon"})
"""Facts whose value may be `null` (the CEL context must register them explicitly)."""


@dataclass(frozen=True, slots=True)
class ValuePlan:
    """Which facts and attributes may be read, prepared once per definitions (not per visitor)."""

    facts: frozenset[str]
    attributes: Mapping[str, AttributeDef]
    windows: tuple[Window, ...]
    zone: str = DEFAULT_ZONE
    """Time zone of calendar windows and of the local-time facts."""

    @classmethod
    def build(
        cls, names: Iterable[str], attributes: Mapping[str, AttributeDef], zone: str = DEFAULT_ZONE
    ) -> ValuePlan:
        wanted = set(names)
        attrs = {n: attributes[n] for n in sorted(wanted) if n in attributes}
        return cls(
            frozenset(n for n in wanted if n in FACTS),
            attrs,
            tuple(sorted({a.window for a in attrs.values()}, key=lambda w: w.text)),
            zone,
        )

    @property
    def names(self) -> frozenset[str]:
        return self.facts | frozenset(self.attributes)


def _attribute_value(attr: AttributeDef, days: Mapping[int, Mapping[str, float]], view: WindowView) -> Any:
    kind = attr.kind
    if kind == "sum":
        total = view.total(days, attr.key)
        return round(total) if attr.integer else float(total)
    if kind == "ratio":
        assert attr.denominator is not None
        den = view.total(days, attr.denominator)
        return view.total(days, attr.key) / den if den > 0 else 0.0
    if kind == "days":
        return view.active_days(days, attr.key)
    totals = view.by(days, attr.key + "@")
    for dim in attr.dimensions:
        totals.setdefault(dim, 0.0)
    if attr.integer:
        return {dim: round(totals[dim]) for dim in sorted(totals)}
    return {dim: float(totals[dim]) for dim in sorted(totals)}


class LazyValues:
    """Facts and attributes of one profile at `now`, computed on first read and kept.

    `get` is the CEL variable resolver: CEL asks only for the names an expression actually
    reaches (`&&`/`||` short-circuit left to right), so a micro-segment that starts with
    ``country == "CH"`` never computes its other inputs for a visitor elsewhere. Each window is
    looked at once per visitor (`streams.core.windows.view_of`); each attribute then sums its key
    over its window's view. Kind ``timeline`` attributes read the window's timeline entries
    (`streams.core.aggregates`), whose first index is also found once per window.
    Unknown names and `null` values return None (CEL then falls back to registered variables).
    """

    __slots__ = ("_ascending", "_starts", "_views", "cache", "members", "now", "plan", "profile")

    def __init__(
        self, profile: Profile, plan: ValuePlan, now: float, known: Mapping[str, Any] | None = None
    ) -> None:
        self.profile, self.plan, self.now = profile, plan, now
        self.cache: dict[str, Any] = dict(known) if known else {}
        self._ascending: list[int] | None = None
        # Keyed by the window's text: a str caches its hash, where the frozen dataclass hashes its
        # fields in Python on every look-up (≈ 24 look-ups per evaluation).
        self._views: dict[str, WindowView] = {}
        self._starts: dict[str, int] = {}
        self.members: set[str] = set(profile.segments)
        """Segments the visitor is in as evaluated so far (``segment("x")`` reads it; the
        evaluator fills it in dependency order, so a segment reads its dependencies' new state)."""

    def get(self, name: str) -> Any:
        value = self.cache.get(name, _MISSING)
        if value is not _MISSING:
            return value
        fact = FACTS.get(name)
        if fact is not None:
            if name in LOCAL_TIME_FACTS:
                hour, weekday = local_time(self.now, self.plan.zone)
                value = self.cache[name] = hour if name == "local_hour" else weekday
            else:
                value = self.cache[name] = fact.get(self.profile, self.now)
            return value
        attr = self.plan.attributes.get(name)
        if attr is not None:
            if attr.aggregate is not None:
                value = self.cache[name] = self.timeline_value(attr, attr.aggregate)
            else:
                value = self.cache[name] = _attribute_value(attr, self.profile.days, self.view(attr.window))
            return value
        if name.startswith(SEGMENT_REF_PREFIX):  # not cached: it changes during one evaluation
            return name[len(SEGMENT_REF_PREFIX) :] in self.members
        split = split_dimension_var(name)
        if split is not None and split[0] in self.plan.attributes:
            attr = self.plan.attributes[split[0]]
            if attr.aggregate is not None:
                value = self.cache[name] = self.get(split[0]).get(split[1], attr.aggregate.empty)
                return value
            total = self.view(attr.window).total(self.profile.days, f"{attr.key}@{split[1]}")
            value = self.cache[name] = round(total) if attr.integer else float(total)
            return value
        return None

    def ascending_days(self) -> list[int]:
        if self._ascending is None:
            self._ascending = sorted(self.profile.days)
        return self._ascending

    def view(self, window: Window) -> WindowView:
        """`window` of this profile at `now` (see `streams.core.windows`)."""
        view = self._views.get(window.text)
        if view is None:
            p, days = self.profile, self.ascending_days()
            view = view_of(
                window,
                self.now,
                self.plan.zone,
                days,
                p.timeline,
                p.timeline_from_day,
                p.totals,
                p.first_seen,
            )
            self._views[window.text] = view
        return view

    def timeline_value(self, attr: AttributeDef, aggregate: Aggregate) -> Any:
        """A kind ``timeline`` attribute over the entries inside its window."""
        window, timeline = attr.window, self.profile.timeline
        start = self._starts.get(window.text)
        if start is None:
            start = self._starts[window.text] = since(timeline, window.cut(self.now, self.plan.zone))
        return aggregate_value(aggregate, timeline, start, self.plan.zone, attr.dimensions)

    def all(self) -> dict[str, Any]:
        for name in self.plan.facts:
            self.get(name)
        for name in self.plan.attributes:
            self.get(name)
        return self.cache


def compute_values(profile: Profile, plan: ValuePlan, now: float) -> dict[str, Any]:
    """Every fact and attribute in `plan` for this profile at `now` (plain Python values)."""
    return LazyValues(profile, plan, now).all()


@dataclass(frozen=True, slots=True)
class WindowGroup:
    """The bucket keys read over one window, by all the attributes that use it."""

    window: Window
    keys: frozenset[str]
    prefixes: tuple[str, ...]
    """``metric@`` of map attributes: any key starting with it counts."""
    events: frozenset[int] | None = frozenset()
    """Event codes the kind ``timeline`` attributes over the window read: an entry of one of them
    leaving the window can change them. None: any event; empty: no such attribute."""
    counted_codes: frozenset[int] | None = None
    """Event codes whose entries can count in `keys`/`prefixes` (None: any): `exit_at` skips the
    others without working out what they count."""


def window_groups(attributes: Iterable[AttributeDef]) -> tuple[WindowGroup, ...]:
    keys: dict[Window, set[str]] = {}
    prefixes: dict[Window, set[str]] = {}
    events: dict[Window, frozenset[int] | None] = {}
    for attr in attributes:
        keys.setdefault(attr.window, set())
        if attr.aggregate is not None:
            codes, known = attr.aggregate.codes, events.get(attr.window, frozenset())
            events[attr.window] = None if codes is None or known is None else known | codes
        elif attr.kind == "by":
            prefixes.setdefault(attr.window, set()).add(attr.key + "@")
        else:
            keys[attr.window].update(attr.keys())
    return tuple(
        WindowGroup(
            w,
            frozenset(keys[w]),
            tuple(sorted(prefixes.get(w, ()))),
            events.get(w, frozenset()),
            _counted_codes([*keys[w], *prefixes.get(w, ())]),
        )
        for w in sorted(keys, key=lambda w: w.text)
        if w.kind != "lifetime"
    )


def _counted_codes(keys: Iterable[str]) -> frozenset[int] | None:
    """Event codes that can count in any of `keys` (metric keys or ``metric@`` prefixes)."""
    out: set[int] = set()
    for key in keys:
        codes = metric_codes(key.partition("@")[0])
        if codes is None:
            return None
        out |= codes
    return frozenset(out)


def window_exit_at(
    profile: Profile,
    attributes: Iterable[AttributeDef] | Iterable[WindowGroup],
    now: float,
    zone: str = DEFAULT_ZONE,
) -> float | None:
    """The next moment after `now` at which an event one of these attributes counts leaves its
    window: the next moment they can change without any new event. Pass `window_groups(...)`
    prepared once to skip regrouping per call."""
    items = list(attributes)
    groups = [g for g in items if isinstance(g, WindowGroup)]
    groups += window_groups(a for a in items if isinstance(a, AttributeDef))
    return groups_exit_at(profile, groups, now, zone)


def groups_exit_at(
    profile: Profile,
    groups: Iterable[WindowGroup],
    now: float,
    zone: str = DEFAULT_ZONE,
    ascending_days: list[int] | None = None,
) -> float | None:
    """`window_exit_at` over groups prepared once (`window_groups`): the per-evaluation path.
    `ascending_days`: the profile's bucket days sorted, when the caller has them."""
    days = profile.days
    if not days:
        return None
    ordered = sorted(days) if ascending_days is None else ascending_days
    best: float | None = None
    for group in groups:
        if group.keys or group.prefixes:
            leaves = exit_at(
                group.window,
                group.keys,
                group.prefixes,
                now,
                zone,
                days,
                ordered,
                profile.timeline,
                profile.timeline_from_day,
                group.counted_codes,
            )
            if leaves is not None and leaves > now and (best is None or leaves < best):
                best = leaves
        if group.events is None or group.events:
            leaves = timeline_exit_at(group.window, group.events, now, zone, profile.timeline)
            if leaves is not None and leaves > now and (best is None or leaves < best):
                best = leaves
    return best


# -- CEL -------------------------------------------------------------------------------------------------

_CEL_ERROR_RE = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_BINDER_RE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
CEL_BUILTIN_FUNCTIONS: frozenset[str] = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double", "string",
        "bytes", "timestamp", "duration", "dyn", "type", "getFullYear", "getMonth", "getDayOfYear",
        "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes", "getSeconds",
        "getMilliseconds", "of", "none", "hasValue", "value", "or", "orValue",
    }
)  # fmt: skip
CEL_BUILTIN_NAMES: frozenset[str] = frozenset(
    {"int", "uint", "double", "string", "bool", "bytes", "list", "map", "null_type", "type", "timestamp",
     "duration", "optional", "math", "strings", "sets", "base64", "lists"}
)  # fmt: skip
"""Identifiers CEL itself resolves (type names, function namespaces)."""
_STDLIB_BY_SHORT: dict[str, tuple[str, ...]] = {}
for _full in STDLIB_FUNCTIONS:
    if _full != "contains":  # CEL's native string contains() stays; lists use `in`
        _short = _full.rsplit(".", 1)[-1]
        _STDLIB_BY_SHORT[_short] = (*_STDLIB_BY_SHORT.get(_short, ()), _full)
CUSTOM_FUNCTIONS: frozenset[str] = frozenset({"distance_km"})


class CelSyntaxError(ValueError):
    def __init__(self, line: int, column: int, reason: str) -> None:
        super().__init__(f"{line}:{column}: {reason}")
        self.line, self.column, self.reason = line, column, reason


@dataclass(frozen=True)
class Expr:
    """A compiled CEL expression and the names it reads."""

    source: str
    """What runs: the written text with params and for_each constants inlined as literals."""
    program: cel.Program = field(repr=False, compare=False)
    variables: frozenset[str]
    """Identifiers read at run time (CEL type names, namespaces, macro-bound names and inlined
    constants removed)."""
    functions: frozenset[str]
    """Named functions called (operators removed)."""
    written: str = ""
    """The expression as the definitions file wrote it."""
    fast: FastCondition | None = field(default=None, repr=False, compare=False)
    """`source` as a Python closure when it is a plain condition (`streams.core.fastcel`)."""

    @property
    def unknown_functions(self) -> frozenset[str]:
        return frozenset(f for f in self.functions if f not in _KNOWN_FUNCTIONS)

    @property
    def stdlib_functions(self) -> dict[str, Callable[..., Any]]:
        """Extended-stdlib callables this expression needs registered (`lowerAscii`, `math.abs`…)."""
        return {
            full: STDLIB_FUNCTIONS[full]
            for short in self.functions
            if short not in CEL_BUILTIN_FUNCTIONS
            for full in _STDLIB_BY_SHORT.get(short, ())
        }


_KNOWN_FUNCTIONS = CEL_BUILTIN_FUNCTIONS | CUSTOM_FUNCTIONS | frozenset(_STDLIB_BY_SHORT)


def _compile(source: str) -> cel.Program:
    try:
        return cel.compile(source)
    except ValueError as exc:
        match = _CEL_ERROR_RE.search(str(exc))
        if match is None:
            raise CelSyntaxError(1, 1, str(exc).splitlines()[0]) from None
        raise CelSyntaxError(int(match.group(1)), int(match.group(2)), match.group(3).strip()) from None


def compile_expr(source: str, constants: Mapping[str, Any] | None = None, maps: Iterable[str] = ()) -> Expr:
    """Compile CEL text; a syntax error raises `CelSyntaxError` with CEL's line and column.

    Before the final compile, names in `constants` that the expression reads become CEL literals
    (params and for_each constants cost nothing per evaluation), and a literal key into a map
    attribute in `maps` (``spend_365d["clothing"]``, ``spend_365d.clothing``) becomes a variable of
    its own (`dimension_var`): a scalar is far cheaper to hand to CEL than a map, and a missing
    key reads 0 instead of failing.
    """
    program = _compile(source)
    refs = program.references()
    bound = set(_BINDER_RE.findall(source))
    variables = frozenset(v for v in refs["variables"] if v not in bound and v not in CEL_BUILTIN_NAMES)
    functions = frozenset(
        f for f in refs["functions"] if not (f.startswith("_") or f.startswith("@") or f.startswith("!_"))
    )
    inline = {name: constants[name] for name in variables if constants and name in constants}
    map_names = frozenset(maps) & variables
    if not inline and not map_names:
        return Expr(source, program, variables, functions, source, _fast(source, functions))
    runtime = inline_constants(source, inline, map_names)
    program = _compile(runtime)
    runtime_vars = frozenset(
        v for v in program.references()["variables"] if v not in bound and v not in CEL_BUILTIN_NAMES
    )
    return Expr(runtime, program, runtime_vars, functions, source, _fast(runtime, functions))


def _fast(source: str, functions: frozenset[str]) -> FastCondition | None:
    return compile_fast(source, functions & CUSTOM_FUNCTIONS)


_TOKEN_RE = re.compile(
    r'(?P<str>[rRbB]{0,2}(?:"""[\s\S]*?"""|'
    + r"'''[\s\S]*?'''"
    + r'|"(?:\\.|[^"\\\n])*"'
    + r"|'(?:\\.|[^'\\\n])*'))"
    + r"|(?P<comment>//[^\n]*)"
    + r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    + r"|(?P<other>[\s\S])"
)


def cel_literal(value: Any) -> str:
    """A Python constant (bool, int, finite float, str, list of them) as CEL source."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(cel_literal(v) for v in value) + "]"
    raise ValueError(f"{value!r} cannot be a CEL constant")


_DIM_PREFIX = "_dim_"


def dimension_var(attribute: str, dimension: str) -> str:
    """The variable standing for ``attribute[dimension]`` (``_dim_<attribute>_<hex of dimension>``)."""
    return f"{_DIM_PREFIX}{attribute}_{dimension.encode('utf-8').hex()}"


@lru_cache(maxsize=4096)
def split_dimension_var(name: str) -> tuple[str, str] | None:
    """`dimension_var` reversed; None for any other name."""
    if not name.startswith(_DIM_PREFIX):
        return None
    attribute, _, encoded = name[len(_DIM_PREFIX) :].rpartition("_")
    try:
        return attribute, bytes.fromhex(encoded).decode("utf-8")
    except ValueError:
        return None


SEGMENT_REF_PREFIX = "_seg_"


def segment_ref_var(segment_id: str) -> str:
    """The variable standing for ``segment("<segment_id>")`` (``_seg_<segment_id>``)."""
    return SEGMENT_REF_PREFIX + segment_id


def split_segment_ref(name: str) -> str | None:
    """`segment_ref_var` reversed: the segment id, or None for any other name."""
    return name[len(SEGMENT_REF_PREFIX) :] if name.startswith(SEGMENT_REF_PREFIX) else None


def rewrite_segment_refs(source: str) -> str:
    """``segment("x")`` → `segment_ref_var("x")`; strings and comments are left alone."""
    if "segment" not in source:
        return source
    tokens = [(m.lastgroup, m.group(0)) for m in _TOKEN_RE.finditer(source)]
    significant = [i for i, (kind, text) in enumerate(tokens) if kind != "comment" and not text.isspace()]
    out = [text for _, text in tokens]
    for pos, i in enumerate(significant):
        kind, text = tokens[i]
        if kind != "ident" or text != "segment" or (pos > 0 and tokens[significant[pos - 1]][1] == "."):
            continue
        ahead = [tokens[j] for j in significant[pos + 1 : pos + 4]]
        if len(ahead) == 3 and ahead[0][1] == "(" and ahead[1][0] == "str" and ahead[2][1] == ")":
            segment_id = _string_value(ahead[1][1])
            if segment_id is not None:
                out[i] = segment_ref_var(segment_id)
                for j in significant[pos + 1 : pos + 4]:
                    out[j] = ""
    return "".join(out)


def base_name(name: str) -> str:
    """The fact/attribute a runtime variable belongs to (`dimension_var` → its attribute)."""
    split = split_dimension_var(name)
    return name if split is None else split[0]


def display_name(name: str) -> str:
    """How a runtime variable is reported: `dimension_var` → ``attribute.dimension``."""
    split = split_dimension_var(name)
    return name if split is None else f"{split[0]}.{split[1]}"


def _string_value(token: str) -> str | None:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'" and "\\" not in token:
        body = token[1:-1]
        return None if token[0] in body else body
    return None


def inline_constants(source: str, constants: Mapping[str, Any], maps: Iterable[str] = ()) -> str:
    """Rewrite CEL text: identifiers in `constants` become literals, then ``m["key"]``/``m.key``
    of a map in `maps` becomes `dimension_var(m, key)`. Strings, comments and field names (after
    a `.`) are left alone."""
    if constants:
        source = _rewrite(source, constants, frozenset())
    map_names = frozenset(maps)
    return _rewrite(source, {}, map_names) if map_names else source


def _rewrite(source: str, constants: Mapping[str, Any], map_names: frozenset[str]) -> str:
    tokens = [(m.lastgroup, m.group(0)) for m in _TOKEN_RE.finditer(source)]
    significant = [i for i, (kind, text) in enumerate(tokens) if kind != "comment" and not text.isspace()]
    out = [text for _, text in tokens]
    for pos, i in enumerate(significant):
        kind, text = tokens[i]
        if kind != "ident" or (pos > 0 and tokens[significant[pos - 1]][1] == "."):
            continue
        if text in constants:
            out[i] = cel_literal(constants[text])
        elif text in map_names:
            ahead = [tokens[j] for j in significant[pos + 1 : pos + 4]]
            key: str | None = None
            width = 0
            if len(ahead) == 3 and ahead[0][1] == "[" and ahead[1][0] == "str" and ahead[2][1] == "]":
                key, width = _string_value(ahead[1][1]), 3
            elif len(ahead) >= 2 and ahead[0][1] == "." and ahead[1][0] == "ident":
                key, width = ahead[1][1], 2
            if key is not None:
                out[i] = dimension_var(text, key)
                for j in significant[pos + 1 : pos + 1 + width]:
                    out[j] = ""
    return "".join(out)


def _distance_km(lat: float | None, lon: float | None) -> Callable[[Any, Any], float | None]:
    def distance_km(to_lat: Any, to_lon: Any) -> float | None:
        # Never raise here: the CEL binding prints exceptions from Python functions.
        if (
            lat is None
            or lon is None
            or not isinstance(to_lat, int | float)
            or not isinstance(to_lon, int | float)
        ):
            return None
        return float(haversine((lat, lon), (float(to_lat), float(to_lon))))

    return distance_km


def cel_functions(profile: Profile, needed: Iterable[str]) -> dict[str, Callable[..., Any]]:
    """Per-visitor custom functions among `needed`.

    `distance_km(lat, lon)`: great-circle distance in km from the visitor to the point, `null`
    when the visitor's location is unknown (guard with `has_location`).
    """
    return {"distance_km": _distance_km(profile.lat, profile.lon)} if "distance_km" in needed else {}


def scalarize(name: str, value: Any, out: dict[str, Any]) -> None:
    """Flatten a value into `out` as wire-friendly scalars (`AttributeValue`).

    Lists become comma-joined strings, maps become `name.key` entries.
    """
    if isinstance(value, dict):
        for key in sorted(value):
            out[f"{name}.{key}"] = value[key]
    elif isinstance(value, list | tuple):
        out[name] = ",".join(str(v) for v in value)
    else:
        out[name] = value
