"""Segment evaluation: which segments a visitor is in, the transitions, the due-queue clock.

The definitions it evaluates (the file format, the loader, `Definitions`) are
`streams.core.definitions`.

How it runs (once per touched visitor per batch). At load time every expression is compiled once;
params and ``for_each`` constants are inlined as CEL literals and a literal key into a map attribute
(``spend_365d["clothing"]``) becomes a scalar variable of its own, so none of them costs anything
per evaluation. Plain conditions (comparisons, ``&&``, ``||``, ``!``, ``in`` over strings; every
shipped one) also compile to Python closures (`streams.core.fastcel`), which answer exactly as CEL
does or decline; a declined or non-plain condition runs its CEL program. Per visitor, names
resolve lazily (`LazyValues`), for the closures and for one CEL context built only when a
condition needs it: ``&&``/``||`` short-circuit left to right, so a condition only computes the
facts and attributes it actually reaches. Handing CEL a value costs ≈0.5 µs for an int, ≈2 µs for
a string, far more for lists and maps, which is why nothing is converted up front. Write cheap,
selective tests first (``country == "CH" && …``).
"""

from __future__ import annotations

import bisect
import dataclasses
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cel

from schemas.changes import AttributeValue
from streams.core.attributes import RECHECK_ANCHORS, LazyValues, cel_functions, groups_exit_at, scalarize
from streams.core.definitions import Definitions, SegmentDef
from streams.core.dependencies import Changes
from streams.core.profile import Profile
from streams.core.timer_plan import Moments
from streams.core.windows import drop_at, next_full_hour

__all__ = [
    "PREVIEW_SAMPLE",
    "Evaluation",
    "Preview",
    "SegmentPreview",
    "diff",
    "evaluate",
    "new_visitor_start",
    "next_check_at",
    "preview",
    "timer_check",
]


@dataclass(frozen=True)
class Evaluation:
    members: frozenset[str]
    deciding: dict[str, dict[str, AttributeValue]]
    """Per segment that is a member now or was one before (`profile.segments`) — every segment that
    can appear in a transition — the fact/attribute values its condition read (maps flattened to
    ``name.key``, lists comma-joined)."""
    context: dict[str, Any] = field(default_factory=dict)
    """The fact/attribute values computed while evaluating (conditions short-circuit, so not every
    name); pass it on to `streams.core.triggers.decide`, which computes only what is missing."""
    errors: dict[str, str] = field(default_factory=dict)
    """Segments whose condition failed at run time (counted as not a member), with the reason."""
    values: LazyValues | None = field(default=None, repr=False, compare=False)
    """The values the conditions were evaluated on (for `explain` after the fact)."""
    complete: bool = True
    """Every segment was evaluated (not only those the visitor's changes can affect)."""
    timed: bool = False
    """Time had reached the profile's `next_check_at`: the segments time can change for the
    visitor were evaluated too (`Changes.time`)."""

    def explain(self, defs: Definitions, segment_ids: Iterable[str]) -> dict[str, dict[str, AttributeValue]]:
        """The values each of `segment_ids`' conditions read, as `deciding` holds them: from
        `deciding` when it has them, else computed now (an evaluation with `explain=False` skips
        them, since only a transition needs them and most evaluations have none)."""
        out: dict[str, dict[str, AttributeValue]] = {}
        wanted = set(segment_ids)
        for segment_id in wanted & self.deciding.keys():
            out[segment_id] = self.deciding[segment_id]
        if self.values is not None:
            # A segment no longer defined (definitions reloaded) has nothing to explain.
            by_id = defs.segments_by_id
            for segment_id in sorted(wanted - out.keys()):
                seg = by_id.get(segment_id)
                if seg is not None:
                    out[segment_id] = _read_values(seg, self.values)
        return out


# -- evaluation -----------------------------------------------------------------------------------------


def _context(
    values: LazyValues, functions: Mapping[str, Callable[..., Any]], nullable: Iterable[str]
) -> cel.Context:
    """A CEL context resolving names lazily from `values`.

    Measured: handing CEL a value costs ~0.5 µs (int) to ~2 µs (string) and lists/maps far more,
    so putting every fact on the context up front costs more than resolving, only if a
    condition gets that far (conditions short-circuit left to right), the names it reads.
    """
    env = cel.Context(None, dict(functions) if functions else None)
    env.set_variable_resolver(values.get)
    for name in nullable:  # the resolver's None means "not mine": a null must be registered
        env.add_variable(name, None)
    return env


GUARDS_FROM = 24
"""Segments to evaluate from which the guards (`DependencyIndex.ruled_out`) are consulted first."""


def _to_evaluate(
    profile: Profile, defs: Definitions, now: float, changes: Changes | None
) -> tuple[Sequence[int], bool]:
    """Indices of the segments to evaluate, in evaluation order: all of them (no `changes`, or a
    profile not yet evaluated under these definitions), else those the changes can affect, and
    those time can change once `now` has reached the profile's `next_check_at` (see
    `streams.core.dependencies`); and whether time had reached it."""
    index = defs.dependencies
    if index is None:
        return range(len(defs.segments)), False
    if changes is None or (profile.definitions_sha != defs.source_sha and changes.start is None):
        return index.order, False
    pending = profile.next_check_at
    if pending is not None and now >= pending and not changes.time:
        changes = dataclasses.replace(changes, time=True)
    timed = _due_segments(profile, defs, now) if changes.time else ()
    return index.affected(changes, timed), changes.time


def _due_segments(profile: Profile, defs: Definitions, now: float) -> frozenset[int] | set[int]:
    """The segments time can have changed for the visitor between its latest evaluation and `now`:
    those of the sources whose moment fell in between (the window moments kept by `timer_check`,
    the anchors' times, the full hours of local-time members). Without kept moments (other
    definitions, a trimmed timeline, none yet): every segment of the visitor's timer plan.

    Events folded since need nothing here: the segments reading what they changed are evaluated
    for them (`DependencyIndex.affected`), and a new event only moves a window's moments later."""
    plan = defs.timer_plan(profile.segments)
    found = _kept_moments(profile, defs)
    if found is None:
        return plan.segments
    kept = found[1]
    due: set[int] = set()
    for m in plan.moments:
        at = kept.get(m.index, _UNKNOWN)
        if at == _UNKNOWN or (at is not None and at <= now):
            due |= m.segments
    since = profile.evaluated_at
    for (anchor, delay), segments in zip(plan.anchors, plan.anchor_segments, strict=True):
        if segments <= due:
            continue
        if any(since < t + delay <= now for t in RECHECK_ANCHORS[anchor](profile)):
            due |= segments
    if plan.hourly and not plan.hourly <= due and next_full_hour(since, defs.zone) <= now:
        due |= plan.hourly
    return due


def _evaluate(
    profile: Profile,
    defs: Definitions,
    now: float,
    explain: bool,
    changes: Changes | None = None,
    known: Mapping[str, Any] | None = None,
) -> Evaluation:
    if known is None and defs.cohorts:
        known = defs.cohort_thresholds(None)  # no threshold known: each reads +infinity
    values = LazyValues(profile, defs.plan, now, known)
    functions = defs.segment_functions
    if defs.segment_function_names:
        functions = {**functions, **cel_functions(profile, defs.segment_function_names)}
    resolve = values.get
    env: cel.Context | None = None  # built when a condition needs CEL (most run in Python)
    segments = defs.segments
    chosen, timed = _to_evaluate(profile, defs, now, changes)
    members = values.members  # the stored membership; each evaluated segment replaces its own
    if len(chosen) == len(segments):
        members.clear()
    else:
        if changes is not None and changes.start is not None:  # a new visitor: the empty profile's
            members.clear()
            members.update(changes.start)
        else:
            members.intersection_update(defs.segment_ids)
        ids = defs.segment_id_list
        members.difference_update([ids[i] for i in chosen])
    errors: dict[str, str] = {}
    index = defs.dependencies
    # Guards pay off over many conditions; over a few, reading every guarded name costs more.
    use_guards = index is not None and index.has_guards and len(chosen) >= GUARDS_FROM
    ruled_out = index.ruled_out(resolve) if use_guards and index is not None else ()
    for i in chosen:
        if i in ruled_out:
            continue
        seg = segments[i]
        fast = seg.when.fast
        if fast is not None:
            try:
                if fast(resolve, functions):
                    members.add(seg.id)
                continue
            except Exception:  # Declined, or a value that raised: CEL gives the answer and the error
                pass
        if env is None:
            env = _context(values, functions, defs.segment_nullable)
        try:
            result = seg.when.program.execute(env)
        except Exception as exc:  # CEL raises RuntimeError/TypeError/KeyError/ZeroDivisionError…
            errors[seg.id] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        if result is True:
            members.add(seg.id)
        elif result is not False:
            errors[seg.id] = f"condition gave {result!r}, not true/false"
    members = set(members)
    deciding: dict[str, dict[str, AttributeValue]] = {}
    if explain:
        previous = profile.segments
        for seg in defs.segments:
            if seg.id in members or seg.id in previous:
                deciding[seg.id] = _read_values(seg, values)
    complete = len(chosen) == len(segments)
    return Evaluation(frozenset(members), deciding, values.cache, errors, values, complete, timed)


@dataclass(frozen=True, slots=True)
class NewVisitorStart:
    """What a new visitor's evaluation starts from: the empty profile, evaluated once per
    definitions. The visitor's events change what they change from there
    (`DependencyIndex.affected`), so only those segments are evaluated and every other one is
    what it is for the empty profile. That needs no clock: on the empty profile only the facts
    of any event (the clock facts among them) move with time, and their readers are evaluated
    for every event; the cohort readers are evaluated too (`changes`). Long-tail traffic is
    mostly new visitors."""

    snapshot: tuple[Any, ...]
    """The empty profile's state-fact fields (`DependencyIndex.snapshot`)."""
    members: frozenset[str]
    """The segments the empty profile is in."""

    def changes(self, defs: Definitions, codes: frozenset[int], profile: Profile) -> Changes:
        """The changes of a new visitor whose batch's events had `codes` (every cohort reader is
        evaluated too: the empty profile was evaluated with no threshold known)."""
        index = defs.dependencies
        assert index is not None
        fields = index.changed_fields(self.snapshot, profile) if index.fields else frozenset()
        return Changes(codes, fields, index.cohorts, start=self.members)


_NEW_VISITOR_STARTS: weakref.WeakKeyDictionary[Definitions, NewVisitorStart | None] = (
    weakref.WeakKeyDictionary()
)


def new_visitor_start(defs: Definitions) -> NewVisitorStart | None:
    """The definitions' `NewVisitorStart` (None without a dependency index, or when a condition
    fails on the empty profile: then a new visitor has every segment evaluated)."""
    try:
        return _NEW_VISITOR_STARTS[defs]
    except KeyError:
        pass
    start: NewVisitorStart | None = None
    index = defs.dependencies
    if index is not None:
        empty = Profile(visitor_id="")
        evaluation = _evaluate(empty, defs, _EMPTY_PROFILE_MOMENT, explain=False)
        if not evaluation.errors:  # else each new visitor's evaluation reports its own
            start = NewVisitorStart(index.snapshot(empty), evaluation.members)
    _NEW_VISITOR_STARTS[defs] = start
    return start


_EMPTY_PROFILE_MOMENT = 1_700_000_000.0
"""Any moment does: what a moment changes on the empty profile is evaluated again per visitor."""


def _read_values(seg: SegmentDef, values: LazyValues) -> dict[str, AttributeValue]:
    """The fact/attribute values `seg`'s condition reads (maps flattened, lists joined)."""
    read: dict[str, Any] = {}
    for name, label in seg.read_labels:
        scalarize(label, values.get(name), read)
    return read


def evaluate(
    profile: Profile,
    defs: Definitions,
    now: float,
    *,
    explain: bool = True,
    changes: Changes | None = None,
    known: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Which segments the profile is in at `now`. Pure: the profile is not changed.

    `changes`: what the visitor's new events changed (`streams.core.dependencies`); segments they
    cannot affect keep their stored membership. None evaluates every segment. `known`: values
    conditions read as given, not computed: the cohort thresholds (`Definitions.cohort_thresholds`;
    None: no threshold is known, each reads +infinity).

    A condition that fails at run time (e.g. ``age >= 18`` with an unknown age and no `has_age`
    guard) counts as false and is reported in `Evaluation.errors`. With `explain=False`,
    `deciding` stays empty; `Evaluation.explain` computes it for the segments that need it.
    """
    return _evaluate(profile, defs, now, explain=explain, changes=changes, known=known)


def diff(previous: Iterable[str], current: frozenset[str]) -> tuple[list[str], list[str]]:
    """(entered, exited), each sorted."""
    before = set(previous)
    return sorted(current - before), sorted(before - current)


Applied = tuple[float, Collection[int]]
"""What a batch folded into a profile since it was loaded: (`totals["events"]` at the load, the
event codes of the events folded since)."""


def next_check_at(
    profile: Profile, defs: Definitions, now: float, applied: Applied | None = None
) -> float | None:
    """The earliest moment after `now` at which a membership can change with no new event
    (`timer_check`'s moment; the profile is not changed)."""
    return timer_check(profile, defs, now, applied)[0]


def timer_check(
    profile: Profile, defs: Definitions, now: float, applied: Applied | None = None
) -> tuple[float | None, list[float | None]]:
    """The earliest moment after `now` at which a membership can change with no new event, and
    the moments to keep in `profile.timer_moments` for the next call. Pure.

    Candidates, from the visitor's timer plan (`Definitions.timer_plan`: per segment, the sources
    that can let it in while it is outside, or take it out while it is a member): declared
    ``recheck``s (each time the anchor names, plus the delay); the self-sliding facts
    (``session_active``: last_seen + 30 min; each ``viewed_products_30m`` view + 30 min; each
    ``purchased_products_24h`` purchase + 24 h); the moment the next counted event leaves each
    window; and for a member of a segment reading the local hour or weekday, the next full hour in
    the definitions' zone. `None` when nothing is pending.

    The moment each window source gives is kept (`profile.timer_moments`, stored by the caller) and
    reused while it is
    still ahead and no event that source counts has arrived: with no event since, as long as
    `totals["events"]` and `timeline_from_day` are what they were; `applied` (from a batch) names
    the codes of the events folded since the profile was loaded, so a page view does not make a
    purchase window walk again. The moment of a source is a function of the events in the profile
    alone while it is ahead: events leaving only make a total fall, on a path fixed by the events.
    """
    plan = defs.timer_plan(profile.segments)
    best: float | None = None
    kept: list[float | None] = []
    if plan.moments:
        best, kept = _window_moments(profile, defs, plan.moments, now, applied)
    if defs.local_time_segments and not defs.local_time_segments.isdisjoint(profile.segments):
        hour = next_full_hour(now, defs.zone)
        if best is None or hour < best:
            best = hour
    for anchor, delay in plan.anchors:
        for t in RECHECK_ANCHORS[anchor](profile):
            t += delay
            if t > now and (best is None or t < best):
                best = t
    return best, kept


_UNKNOWN = -1.0
"""A source with no moment kept (moments kept are > 0 or None)."""


def _kept_moments(profile: Profile, defs: Definitions) -> tuple[float | None, dict[int, float | None]] | None:
    """(`totals["events"]` then, source index → moment) of the moments the profile kept under these
    definitions and its current timeline; None when it kept none that apply."""
    stored = profile.timer_moments
    if len(stored) < 3 or stored[2] != defs.timer_marker or stored[1] != profile.timeline_from_day:
        return None
    return stored[0], dict(zip(stored[3::2], stored[4::2], strict=True))  # type: ignore[arg-type]


def _window_moments(
    profile: Profile, defs: Definitions, moments: Sequence[Moments], now: float, applied: Applied | None
) -> tuple[float | None, list[float | None]]:
    """The earliest of `moments` after `now`, each reused from `profile.timer_moments` where still
    valid (see `timer_check`), and the moments to keep."""
    events, from_day = profile.totals.get("events", 0), profile.timeline_from_day
    kept: dict[int, float | None] = {}
    stale: Collection[int] | None = ()  # codes whose events arrived since (None: any)
    found = _kept_moments(profile, defs)
    if found is not None:
        kept_at, kept = found
        if kept_at != events:  # events arrived since: only a batch can say which
            if applied is not None and kept_at == applied[0]:
                stale = applied[1]
            else:
                kept = {}
    days, zone, timeline = profile.days, defs.zone, profile.timeline
    ascending: list[int] | None = None
    fresh: list[float | None] = [events, from_day, defs.timer_marker]
    best: float | None = None
    for m in moments:
        at = kept.get(m.index, _UNKNOWN)
        if (
            at == _UNKNOWN
            or (at is not None and at <= now)
            or (stale and (m.codes is None or not m.codes.isdisjoint(stale)))
        ):
            at = None
            if days:
                if ascending is None:
                    ascending = sorted(days)
                if m.drop is not None:
                    window, key, inclusive, bound = m.drop
                    at = drop_at(
                        window, key, bound, inclusive, now, zone, days, ascending, timeline, from_day
                    )
                elif m.group is not None:
                    at = groups_exit_at(profile, (m.group,), now, zone, ascending)
        fresh.append(m.index)
        fresh.append(at)
        if at is not None and at > now and (best is None or at < best):
            best = at
    return best, fresh


PREVIEW_SAMPLE = 5
"""Visitor ids a preview names per segment and direction (the smallest ids, so it is stable)."""


@dataclass(slots=True)
class SegmentPreview:
    """One segment before and after a definitions change, over the previewed profiles."""

    status: Literal["kept", "added", "removed"]
    """Whether the segment is in both definitions, only the new ones, or only the current ones."""
    members_now: int = 0
    members_after: int = 0
    entering: int = 0
    leaving: int = 0
    entering_sample: list[str] = field(default_factory=list)
    leaving_sample: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Preview:
    """What applying `version` would do to the previewed profiles, per segment (`preview`)."""

    version: str
    current_version: str | None
    profiles: int = 0
    segments: dict[str, SegmentPreview] = field(default_factory=dict)
    """The new definitions' segments in their order, then those only the current ones have."""

    def sizes(self) -> dict[str, int]:
        """Members of each segment of the new definitions."""
        return {sid: seg.members_after for sid, seg in self.segments.items() if seg.status != "removed"}

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "current_version": self.current_version,
            "profiles": self.profiles,
            "segments": {sid: dataclasses.asdict(seg) for sid, seg in self.segments.items()},
        }


def _empty_preview(defs: Definitions, current: Definitions | None) -> Preview:
    result = Preview(defs.version, current.version if current is not None else None)
    segments = result.segments
    for seg in defs.segments:
        segments[seg.id] = SegmentPreview("added" if current is not None else "kept")
    if current is not None:
        for seg in current.segments:
            if seg.id in segments:
                segments[seg.id].status = "kept"
            else:
                segments[seg.id] = SegmentPreview("removed")
    return result


def _sample_add(sample: list[str], visitor_id: str, size: int) -> None:
    if len(sample) < size or (sample and visitor_id < sample[-1]):
        bisect.insort(sample, visitor_id)
        del sample[size:]


def preview(
    profiles: Iterable[Profile | bytes],
    defs: Definitions,
    now: float,
    *,
    current: Definitions | None = None,
    sample: int = PREVIEW_SAMPLE,
    into: Preview | None = None,
    cohorts: Mapping[str, float] | None = None,
    cohorts_current: Mapping[str, float] | None = None,
) -> Preview:
    """What `defs` (e.g. a changed file, before it goes live) would make of `profiles` (objects or
    their stored bytes): per segment
    the members now and after, how many enter and leave, and a sample of their ids. Pure.

    Each profile is evaluated as of `now`. "Now" is `current`'s evaluation at that same moment, so
    the counts show what the definitions change and not what time changed; without `current` it is
    the membership stored in the profile. `into` (a preview of the same definitions) is added to and
    returned: profiles can be previewed a chunk at a time, each chunk as of its own moment (a
    partition's clock). `cohorts`: the cohort thresholds known for `defs` (unknown ones read
    +infinity); `cohorts_current`: those of `current`, when they differ (a changed quantile moves a
    threshold; default: `cohorts`).
    """
    result = into if into is not None else _empty_preview(defs, current)
    segments = result.segments
    known_after = defs.cohort_thresholds(cohorts)
    before_thresholds = cohorts if cohorts_current is None else cohorts_current
    known_before = current.cohort_thresholds(before_thresholds) if current is not None else None
    for stored in profiles:
        profile = stored if isinstance(stored, Profile) else Profile.from_bytes(stored)
        after = _evaluate(profile, defs, now, explain=False, known=known_after).members
        before = (
            _evaluate(profile, current, now, explain=False, known=known_before).members
            if current is not None
            else frozenset(profile.segments)
        )
        result.profiles += 1
        visitor_id = profile.visitor_id
        for segment_id in before:
            counted = segments.get(segment_id)
            if counted is None:  # stored membership of a segment neither definition has
                counted = segments[segment_id] = SegmentPreview("removed")
            counted.members_now += 1
            if segment_id not in after:
                counted.leaving += 1
                _sample_add(counted.leaving_sample, visitor_id, sample)
        for segment_id in after:
            counted = segments[segment_id]
            counted.members_after += 1
            if segment_id not in before:
                counted.entering += 1
                _sample_add(counted.entering_sample, visitor_id, sample)
    return result
