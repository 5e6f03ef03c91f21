"""Which moments can change a visitor's segments with no new event, and for whom: the timer plan.

Time alone moves some of what conditions read: windowed attributes (an event leaves the window),
the self-sliding facts (``session_active`` ends 30 minutes after the last event, a view leaves
``viewed_products_30m``), and the "minutes since" facts a ``recheck`` names. Each is a **source**
of moments:

* an attribute name: every moment an event it counts leaves its window (`WindowGroup`);
* a `Drop`: the moment a windowed count or sum falls below a bound (``purchases_30d >= 3`` can
  change only when the third-newest purchase leaves, not at every purchase leaving);
* an `Anchor`: each time of a profile field plus a delay (every ``last_seen`` + 30 min).

Not every source concerns every visitor. ``purchases_30d >= 3`` can only turn false as purchases
leave: only a member can leave, nobody enters by waiting. ``minutes_since_add_to_cart >= 30`` can
only turn true: only a visitor outside can enter. `streams.core.fastcel.time_effects` reads this
off each atom of a condition; a segment's sources are split into those that can let a visitor in
(`TimedSegment.enter`: timers for visitors outside it) and those that can take a member out
(`TimedSegment.exit`: timers for its members). A visitor's `TimerPlan` is every segment's `enter`
sources and the `exit` sources of the segments it is in; a timer evaluates only the segments those
sources belong to.

Each attribute and `Drop` source of a definitions set has an index (`source_index`): a visitor's
plan lists them as `Moments` (one walk each), so the moment each gave can be kept with the profile
and reused until an event it counts arrives (`streams.core.segments.next_check_at`).

Not sources here: local-time facts (members of a segment reading them are rechecked at every full
hour, `streams.core.segments.next_check_at`; a visitor enters such a segment with an event), a
segment read by another (its own timers re-evaluate its readers when it changes), and cohort
thresholds (a threshold move re-evaluates its population). A cohort's attribute is a source for
every visitor: the partition's sketch counts its current value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streams.core.attributes import (
    RELATIVE_FACTS,
    AttributeDef,
    WindowGroup,
    base_name,
    sliding_fact_anchors,
    split_dimension_var,
    window_groups,
)
from streams.core.fastcel import ENTER, EXIT, Bound, Motion, time_effects
from streams.core.timeline import metric_codes
from streams.core.windows import Window

__all__ = [
    "Anchor",
    "Drop",
    "Moments",
    "Source",
    "SourceTable",
    "TimedSegment",
    "TimerPlan",
    "base_plan",
    "plan_for",
    "source_index",
    "source_segments",
    "timed_segment",
]

Anchor = tuple[str, float]
"""(profile time field, delay): a moment at each of the field's times plus the delay."""


@dataclass(frozen=True, slots=True, order=True)
class Drop:
    """The moment the window total of `key` (`attribute`'s window) falls below `bound`
    (`inclusive`: to it or below)."""

    attribute: str
    key: str
    inclusive: bool
    bound: float


Source = str | Anchor | Drop
"""An attribute name (every exit from its window), an `Anchor`, or a `Drop`."""

_SLIDING_MOTION: dict[str, Motion] = {
    "session_active": "fades",
    "viewed_products_30m": "shrinks",
    "purchased_products_24h": "shrinks",
}
_BOTH = frozenset({ENTER, EXIT})


@dataclass(frozen=True, slots=True)
class TimedSegment:
    """One segment's sources of time-driven change, split by whom they concern."""

    enter: frozenset[Source]
    """Sources whose moments can let a visitor outside the segment in (timers for non-members)."""
    exit: frozenset[Source]
    """Sources whose moments can take a member out (timers for members)."""


@dataclass(frozen=True, slots=True)
class Moments:
    """One attribute or `Drop` source as `next_check_at` walks it: exactly one of `group` (every
    exit of the attribute's counted events from its window) and `drop` ((window, key, inclusive,
    bound) of the `Drop`) is set."""

    index: int
    """The source's `source_index`: the key its moment is kept under in the profile."""
    group: WindowGroup | None
    drop: tuple[Window, str, bool, float] | None
    codes: frozenset[int] | None
    """Event codes whose arrival can move the moment (None: any event)."""
    segments: frozenset[int] = frozenset()
    """Indices of the segments the source's moments can change (and of their readers): what a
    timer evaluates when this source is due."""


@dataclass(frozen=True, slots=True)
class TimerPlan:
    """What `next_check_at` scans for one visitor, and what a timer evaluates."""

    moments: tuple[Moments, ...]
    anchors: tuple[Anchor, ...]
    segments: frozenset[int] = frozenset()
    """Indices of the segments time can change for this visitor, and of those reading them."""
    anchor_segments: tuple[frozenset[int], ...] = ()
    """Per anchor (same order), the segments its moments can change (`Moments.segments`)."""
    hourly: frozenset[int] = frozenset()
    """The segments rechecked at every full hour for this visitor (a member of one reading the
    local hour or weekday), with their readers."""


def _motion(attr: AttributeDef) -> Motion:
    """How a windowed attribute's value moves as its events leave the window."""
    if attr.aggregate is None:
        return "down" if attr.kind in ("sum", "days", "by") else "any"
    return "down" if attr.aggregate.agg in ("count", "distinct") else "any"


def _drop_key(var: str, attr: AttributeDef) -> str | None:
    """The bucket key whose window total `var` is, when it is one (a sum, or one key of a map)."""
    if attr.aggregate is not None:
        return None
    if attr.kind == "sum" and var == attr.name:
        return attr.key
    split = split_dimension_var(var)
    if attr.kind == "by" and split is not None:
        return f"{attr.key}@{split[1]}"
    return None


def timed_segment(
    source: str,
    variables: Iterable[str],
    rechecks: Iterable[Anchor],
    attributes: Mapping[str, AttributeDef],
) -> TimedSegment | None:
    """The sources of one condition (`source`, reading `variables`, with its declared `rechecks`);
    None when time alone cannot change it."""
    moving: dict[str, Motion] = {}
    sources_of: dict[str, list[Source]] = {}
    drop_key: dict[str, tuple[str, str]] = {}
    readers_of_field: dict[str, list[str]] = {}
    for var in variables:
        base = base_name(var)
        attr = attributes.get(base)
        if attr is not None:
            if attr.window.kind != "lifetime":
                moving[var] = _motion(attr)
                sources_of[var] = [base]
                key = _drop_key(var, attr)
                if key is not None:
                    drop_key[var] = (base, key)
        elif base in _SLIDING_MOTION:
            moving[var] = _SLIDING_MOTION[base]
            sources_of[var] = list(sliding_fact_anchors([base]))
        elif base in RELATIVE_FACTS:
            moving[var] = "up"
            sources_of[var] = []  # its moments are the rechecks on its field (below)
            readers_of_field.setdefault(RELATIVE_FACTS[base], []).append(var)
    rechecks = tuple(rechecks)
    if not moving and not rechecks:
        return None
    found = time_effects(source, moving) if moving else {}
    reads: Mapping[str, list[tuple[frozenset[str], Bound | None]]] = (
        found if found is not None else {var: [(_BOTH, None)] for var in moving}
    )
    enter: set[Source] = set()
    exit_: set[Source] = set()
    for var, atoms in reads.items():
        for effects, bound in atoms:
            sources: list[Source] = list(sources_of[var])
            if bound is not None and var in drop_key:
                attribute, key = drop_key[var]
                sources = [Drop(attribute, key, *bound)]
            if ENTER in effects:
                enter.update(sources)
            if EXIT in effects:
                exit_.update(sources)
    for anchor in rechecks:
        readers = readers_of_field.get(anchor[0], ())
        concerns = frozenset(e for var in readers for effects, _ in reads.get(var, ()) for e in effects)
        if not concerns:  # a recheck on no fact the condition reads: for everyone
            concerns = _BOTH
        if ENTER in concerns:
            enter.add(anchor)
        if EXIT in concerns:
            exit_.add(anchor)
    if not enter and not exit_:
        return None
    return TimedSegment(frozenset(enter), frozenset(exit_))


def source_index(timed: Mapping[str, TimedSegment], always: frozenset[str]) -> dict[Source, int]:
    """An index for every attribute and `Drop` source of `timed` and `always`, in a fixed order
    (the same definitions give the same indices in every process)."""
    sources: set[Source] = set(always)
    for seg in timed.values():
        sources |= seg.enter | seg.exit
    names = sorted(s for s in sources if isinstance(s, str))
    drops = sorted(s for s in sources if isinstance(s, Drop))
    ordered: list[Source] = [*names, *drops]
    return {source: i for i, source in enumerate(ordered)}


def source_segments(
    timed: Mapping[str, TimedSegment], indices: Callable[[Iterable[str]], frozenset[int]]
) -> dict[Source, frozenset[int]]:
    """Per source of `timed`, the segments naming it (to enter or to leave) with their readers."""
    naming: dict[Source, set[str]] = {}
    for segment_id, seg in timed.items():
        for source in seg.enter | seg.exit:
            naming.setdefault(source, set()).add(segment_id)
    return {source: indices(sorted(ids)) for source, ids in naming.items()}


@dataclass(frozen=True, slots=True)
class SourceTable:
    """What a definitions set knows of its sources, for every plan: `source_index` and
    `source_segments`."""

    index: Mapping[Source, int]
    segments: Mapping[Source, frozenset[int]]


def base_plan(
    timed: Mapping[str, TimedSegment],
    always: frozenset[str],
    attributes: Mapping[str, AttributeDef],
    indices: Callable[[Iterable[str]], frozenset[int]],
    table: SourceTable | None = None,
) -> TimerPlan:
    """The plan of a visitor in no segment: the `enter` sources of every timed segment and the
    attributes in `always` (the cohorts'); `indices`: segment ids → their indices with those of the
    segments reading them; `table`: these definitions' sources (None: built here)."""
    sources: set[Source] = set(always)
    for seg in timed.values():
        sources |= seg.enter
    if table is None:
        table = SourceTable(source_index(timed, always), source_segments(timed, indices))
    return _plan(sources, attributes, indices(sid for sid, seg in timed.items() if seg.enter), table)


def plan_for(
    members: frozenset[str],
    base: TimerPlan,
    timed: Mapping[str, TimedSegment],
    attributes: Mapping[str, AttributeDef],
    hourly: frozenset[str] = frozenset(),
    indices: Callable[[Iterable[str]], frozenset[int]] = lambda ids: frozenset(),
    *,
    table: SourceTable,
) -> TimerPlan:
    """The plan of a visitor in `members`: `base` (every segment's `enter` sources) and the `exit`
    sources of the segments it is in. A member's `enter` sources stay in: a moment that concerns
    nobody costs one evaluation that changes nothing, and the plan is built from `base` in time
    proportional to the visitor's segments, not to all of them (1,000 definitions). `hourly`: the
    segments rechecked at every full hour for their members (local time); `table`: the sources
    `base` was planned with."""
    extra: set[Source] = set()
    for segment_id in members:
        seg = timed.get(segment_id)
        if seg is not None:
            extra |= seg.exit
    concerned = [m for m in members if (m in timed and timed[m].exit) or m in hourly]
    if not concerned:
        return base
    known = {m.index for m in base.moments}
    more = _plan(extra, attributes, indices(concerned), table, known)
    anchors = sorted(set(base.anchors) | set(more.anchors))
    return TimerPlan(
        base.moments + more.moments,
        tuple(anchors),
        base.segments | more.segments,
        tuple(table.segments.get(anchor, frozenset()) for anchor in anchors),
        indices(m for m in members if m in hourly),
    )


def _plan(
    sources: Iterable[Source],
    attributes: Mapping[str, AttributeDef],
    segments: frozenset[int],
    table: SourceTable,
    known: frozenset[int] | set[int] = frozenset(),
) -> TimerPlan:
    """The plan of `sources`, leaving out the moments whose index is in `known` (already planned)."""
    moments: list[Moments] = []
    anchors: list[Anchor] = []
    for source in sorted(set(sources), key=_source_order):
        if isinstance(source, tuple) and not isinstance(source, Drop):
            anchors.append(source)
            continue
        at = table.index[source]
        if at in known:
            continue
        concerned = table.segments.get(source, frozenset())
        if isinstance(source, Drop):
            drop = (attributes[source.attribute].window, source.key, source.inclusive, source.bound)
            moments.append(Moments(at, None, drop, metric_codes(source.key.partition("@")[0]), concerned))
        else:
            for group in window_groups([attributes[source]]):
                moments.append(Moments(at, group, None, _group_codes(group), concerned))
    anchor_segments = tuple(table.segments.get(anchor, frozenset()) for anchor in anchors)
    return TimerPlan(tuple(moments), tuple(anchors), segments, anchor_segments)


def _source_order(source: Source) -> tuple[int, str]:
    return (0, source) if isinstance(source, str) else (1, repr(source))


def _group_codes(group: WindowGroup) -> frozenset[int] | None:
    """Event codes whose arrival can move the group's next exit (None: any)."""
    if group.counted_codes is None or group.events is None:
        return None
    return group.counted_codes | group.events
