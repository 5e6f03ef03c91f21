"""The dependency index: which segments an event can change, so only those are evaluated.

A segment's condition reads facts, attributes and other segments (``segment("x")``). An event
changes some of them:

* an **attribute** changes when an event of a type it counts arrives (`AttributeDef.event_codes`,
  e.g. ``purchases_30d`` only on purchases), or when the timeline drops its oldest day to stay
  within `TIMELINE_MAX` (the batch then evaluates every segment);
* a **state fact** (device, place, traffic source, cart, age …) changes when the profile field it
  reads changes — the batch compares those fields before and after the visitor's events
  (`DependencyIndex.snapshot`), so a visitor whose country stays "CH" does not re-evaluate the
  hundred Swiss micro-segments on every page view;
* an **event fact** (``minutes_since_add_to_cart``, ``viewed_products_30m``, ``session_active`` …)
  changes with the events it counts from (`EVENT_FACTS`);
* a segment that reads another one changes when that one is evaluated;
* a **cohort** threshold (``electronics_spend_p95``) changes with no event of the visitor's: when it
  moves, the cohort's population is re-evaluated for the segments reading it (`Changes.cohorts`);
  an event changes a segment reading it only through the attribute the segment also reads.

What changes with time alone (windows sliding, "minutes since", rechecks, calendar periods) is what
`streams.core.segments.next_check_at` schedules: while the evaluation moment is before the profile's
`next_check_at`, time has changed no condition since the last evaluation. When it is not, or the
profile was evaluated under other definitions, every segment is evaluated (`Changes` is None). A
new visitor's changes count from the empty profile, evaluated once per definitions
(`streams.core.segments.NewVisitorStart`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from streams.core.attributes import FACTS, LOCAL_TIME_FACTS, AttributeDef, base_name, split_segment_ref
from streams.core.timeline import CODES

__all__ = ["EVENT_FACTS", "STATE_FACTS", "Changes", "DependencyIndex"]

_ANY = None
STATE_FACTS: dict[str, tuple[str, ...]] = {
    "device_category": ("device_category",),
    "os": ("os",),
    "os_version": ("os_version",),
    "browser": ("browser",),
    "country": ("country",),
    "region": ("region",),
    "region_code": ("region_code",),
    "city": ("city",),
    "lat": ("lat",),
    "lon": ("lon",),
    "has_location": ("lat", "lon"),
    "traffic_source": ("traffic_source",),
    "traffic_name": ("traffic_name",),
    "session_source": ("session_source",),
    "session_source_name": ("session_source_name",),
    "session_landing_path": ("session_landing_path",),
    "last_page_path": ("last_page_path",),
    "last_page_type": ("last_page_type",),
    "locale": ("locale",),
    "age": ("age",),
    "has_age": ("age",),
    "identified": ("user_id",),
    "cart_items": ("cart",),
    "cart_value": ("cart_value",),
    "cart_products": ("cart",),
    "consent_marketing": ("consent_marketing",),
}
"""Facts read from profile fields, with the fields: they change only when those fields do."""

_CART = frozenset({CODES["add_to_cart"], CODES["remove_from_cart"], CODES["purchase"]})
EVENT_FACTS: dict[str, frozenset[int] | None] = {
    "session_active": _ANY,
    "first_seen_days_ago": _ANY,
    "minutes_since_last_seen": _ANY,
    "session_minutes": _ANY,
    "minutes_since_add_to_cart": frozenset({CODES["add_to_cart"]}),
    "minutes_since_purchase": frozenset({CODES["purchase"]}),
    "minutes_since_exit_intent": frozenset({CODES["exit_intent"]}),
    "viewed_products_30m": frozenset({CODES["product_view"]}),
    "purchased_products_24h": frozenset({CODES["purchase"]}),
}
"""Facts that change with time and with the events of these codes (None: any event)."""


def _unclassified() -> set[str]:
    """Facts none of the tables names (local-time facts move with every event: evaluated on any)."""
    return set(FACTS) - set(STATE_FACTS) - set(EVENT_FACTS) - LOCAL_TIME_FACTS


_EXACT = 2**53


@dataclass(frozen=True, slots=True)
class _StringGuards:
    guarded: frozenset[int]
    by_value: Mapping[str, frozenset[int]]

    def ruled_out(self, value: Any, out: set[int]) -> None:
        if type(value) is str:
            matching = self.by_value.get(value)
            out.update(self.guarded if matching is None else self.guarded - matching)


@dataclass(frozen=True, slots=True)
class _NumberGuards:
    at_least: tuple[float, ...]
    """Bounds of ``name >= bound`` guards, ascending; `at_least_segments` aligned with them."""
    at_least_segments: tuple[int, ...]
    above: tuple[float, ...]
    """Bounds of ``name > bound`` guards, ascending; `above_segments` aligned with them."""
    above_segments: tuple[int, ...]

    def ruled_out(self, value: Any, out: set[int]) -> None:
        kind = type(value)
        if (kind is int and -_EXACT <= value <= _EXACT) or (kind is float and value == value):
            out.update(self.at_least_segments[bisect_right(self.at_least, value) :])
            out.update(self.above_segments[bisect_left(self.above, value) :])


GUARD_MIN_SEGMENTS = 8
"""A name becomes a guard when this many segments' conditions pin it: reading it for a guard costs
what reading it in a condition costs, which pays off only over many conditions (a guard computes
its name up front, where a condition's `&&` might never have reached it)."""


def _guard_table(guards: Sequence[Iterable[tuple[Any, ...]]]) -> dict[str, _StringGuards | _NumberGuards]:
    """name → the guards on it (`streams.core.fastcel.condition_guards`) of every segment."""
    strings: dict[str, dict[str, set[int]]] = {}
    string_guarded: dict[str, set[int]] = {}
    numbers: dict[str, list[tuple[float, bool, int]]] = {}
    for i, segment_guards in enumerate(guards):
        for guard in segment_guards:
            if guard[0] == "one_of":
                _, name, literals = guard
                string_guarded.setdefault(name, set()).add(i)
                for literal in literals:
                    strings.setdefault(name, {}).setdefault(literal, set()).add(i)
            elif guard[0] == "at_least":
                _, name, bound, strict = guard
                numbers.setdefault(name, []).append((float(bound), strict, i))
    table: dict[str, _StringGuards | _NumberGuards] = {}
    for name, segs in string_guarded.items():
        if len(segs) < GUARD_MIN_SEGMENTS:
            continue
        by_value = {v: frozenset(s) for v, s in strings.get(name, {}).items()}
        table[name] = _StringGuards(frozenset(segs), by_value)
    for name, bounds in numbers.items():
        if len(bounds) < GUARD_MIN_SEGMENTS or name in string_guarded:
            continue  # a name compared both with strings and numbers: leave it to the conditions
        at_least = sorted((b, i) for b, strict, i in bounds if not strict)
        above = sorted((b, i) for b, strict, i in bounds if strict)
        table[name] = _NumberGuards(
            tuple(b for b, _ in at_least), tuple(i for _, i in at_least),
            tuple(b for b, _ in above), tuple(i for _, i in above),
        )  # fmt: skip
    return table


def _with_dependents(dependents: Mapping[int, Iterable[int]], start: Iterable[int]) -> frozenset[int]:
    """`start` and every segment reading one of them, however indirectly."""
    todo = list(start)
    out = set(todo)
    while todo:
        for dep in dependents.get(todo.pop(), ()):
            if dep not in out:
                out.add(dep)
                todo.append(dep)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Changes:
    """What a visitor's events of one batch changed: their event codes and the profile fields."""

    codes: frozenset[int]
    fields: frozenset[str]
    cohorts: frozenset[str] = frozenset()
    """Cohorts whose threshold moved (`streams.core.batch.reevaluate` with reason ``cohort``)."""
    time: bool = False
    """Time has passed a moment the visitor's timer plan names (its `next_check_at`): the
    segments time can change for it are evaluated too (`TimerPlan.segments`)."""
    start: frozenset[str] | None = None
    """A new visitor's changes are counted from the empty profile (`NewVisitorStart`): the
    membership the segments they cannot affect keep is the empty profile's, not the stored one."""


class DependencyIndex:
    """Segments by what can change them, prepared once per definitions."""

    __slots__ = (
        "_by_code", "_by_cohort", "_by_field", "_dependents", "_guards", "_index_of", "_on_any",
        "_position", "_snapshot", "cohorts", "fields", "order",
    )  # fmt: skip

    def __init__(
        self,
        reads: Sequence[Iterable[str]],
        segment_ids: Sequence[str],
        attributes: Mapping[str, AttributeDef],
        order: Sequence[int],
        guards: Sequence[Iterable[tuple[Any, ...]]] = (),
        cohorts: Collection[str] = (),
    ) -> None:
        """`reads[i]`: the runtime names segment i's condition reads; `order`: evaluation order;
        `guards[i]`: the necessary conditions of segment i's top-level conjuncts
        (`streams.core.fastcel.condition_guards`); `cohorts`: the cohort names conditions read."""
        unclassified = _unclassified()
        assert not unclassified, f"facts missing from the dependency index: {sorted(unclassified)}"
        index_of = {sid: i for i, sid in enumerate(segment_ids)}
        by_code: dict[int, set[int]] = {}
        by_field: dict[str, set[int]] = {}
        on_any: set[int] = set()
        by_cohort: dict[str, set[int]] = {}
        dependents: dict[int, set[int]] = {}
        for i, names in enumerate(reads):
            for name in names:
                ref = split_segment_ref(name)
                if ref is not None:
                    if ref in index_of:
                        dependents.setdefault(index_of[ref], set()).add(i)
                    continue
                base = base_name(name)
                if base in cohorts:
                    by_cohort.setdefault(base, set()).add(i)
                    continue
                codes: frozenset[int] | None
                if base in STATE_FACTS:
                    for field_name in STATE_FACTS[base]:
                        by_field.setdefault(field_name, set()).add(i)
                    continue
                if base in attributes:
                    codes = attributes[base].event_codes()
                elif base in EVENT_FACTS:
                    codes = EVENT_FACTS[base]
                else:
                    codes = _ANY  # local time facts, and anything new: evaluate on every event
                if codes is None:
                    on_any.add(i)
                else:
                    for code in codes:
                        by_code.setdefault(code, set()).add(i)

        def closure(start: Iterable[int]) -> frozenset[int]:
            return _with_dependents(dependents, start)

        self.order = tuple(order)
        self._position = {segment: pos for pos, segment in enumerate(self.order)}
        self._on_any = closure(on_any)
        self._by_code = {code: closure(segs) | self._on_any for code, segs in by_code.items()}
        self._by_field = {name: closure(segs) for name, segs in by_field.items()}
        self._by_cohort = {name: closure(segs) for name, segs in by_cohort.items()}
        self._guards = _guard_table(guards)
        self._dependents = dependents
        self._index_of = index_of
        self.cohorts = frozenset(by_cohort)
        """The cohort names some condition reads (what `Changes.cohorts` names)."""
        self.fields = tuple(sorted(self._by_field))
        """Profile fields some segment reads through a state fact (`snapshot` takes these)."""
        getter = attrgetter(*self.fields) if self.fields else None
        self._snapshot: Callable[[Any], tuple[Any, ...]] = (
            (lambda p: (getter(p),)) if len(self.fields) == 1 and getter else getter or (lambda p: ())
        )

    def snapshot(self, profile: Any) -> tuple[Any, ...]:
        """The fields state facts read, to compare after the visitor's events (`changed_fields`).
        Containers are copied (the cart is changed in place)."""
        return tuple(dict(v) if isinstance(v, dict) else v for v in self._snapshot(profile))

    def changed_fields(self, before: tuple[Any, ...], profile: Any) -> frozenset[str]:
        after = self._snapshot(profile)
        pairs = zip(self.fields, before, after, strict=True)
        return frozenset(name for name, old, new in pairs if old != new)

    def ruled_out(self, resolve: Callable[[str], Any]) -> set[int]:
        """Segments a guard rules out: a top-level ``country == "CH"`` while the visitor is elsewhere,
        ``purchases_30d >= 3`` while it is 1. They are false without running their conditions."""
        out: set[int] = set()
        for name, guards in self._guards.items():
            guards.ruled_out(resolve(name), out)
        return out

    @property
    def has_guards(self) -> bool:
        return bool(self._guards)

    def with_readers(self, segment_ids: Iterable[str]) -> frozenset[int]:
        """Indices of `segment_ids` and of every segment reading one of them, however indirectly."""
        index_of = self._index_of
        return _with_dependents(self._dependents, [index_of[sid] for sid in segment_ids if sid in index_of])

    def affected(self, changes: Changes, timed: Collection[int] = ()) -> list[int]:
        """Segments (indices) the changes can affect, in evaluation order; with `Changes.time`,
        `timed` too (the segments time can change for the visitor: `TimerPlan.segments`)."""
        hit: set[int] = set(self._on_any)
        if changes.time:
            hit.update(timed)
        for code in changes.codes:
            hit |= self._by_code.get(code, frozenset())
        for name in changes.fields:
            hit |= self._by_field.get(name, frozenset())
        for name in changes.cohorts:
            hit |= self._by_cohort.get(name, frozenset())
        position = self._position
        return sorted(hit, key=position.__getitem__)
