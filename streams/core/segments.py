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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from schemas.changes import AttributeValue
from streams.core.attributes import RECHECK_ANCHORS, LazyValues, cel_functions, groups_exit_at, scalarize
from streams.core.definitions import Definitions, SegmentDef
from streams.core.profile import Profile

__all__ = [
    "Evaluation",
    "diff",
    "evaluate",
    "next_check_at",
    "preview",
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
            for seg in defs.segments:
                if seg.id in wanted and seg.id not in out:
                    out[seg.id] = _read_values(seg, self.values)
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


def _evaluate(profile: Profile, defs: Definitions, now: float, explain: bool) -> Evaluation:
    values = LazyValues(profile, defs.plan, now)
    functions = defs.segment_functions
    if defs.segment_function_names:
        functions = {**functions, **cel_functions(profile, defs.segment_function_names)}
    resolve = values.get
    env: cel.Context | None = None  # built when a condition needs CEL (most run in Python)
    members: set[str] = set()
    errors: dict[str, str] = {}
    for seg in defs.segments:
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
    deciding: dict[str, dict[str, AttributeValue]] = {}
    if explain:
        previous = profile.segments
        for seg in defs.segments:
            if seg.id in members or seg.id in previous:
                deciding[seg.id] = _read_values(seg, values)
    return Evaluation(frozenset(members), deciding, values.cache, errors, values)


def _read_values(seg: SegmentDef, values: LazyValues) -> dict[str, AttributeValue]:
    """The fact/attribute values `seg`'s condition reads (maps flattened, lists joined)."""
    read: dict[str, Any] = {}
    for name, label in seg.read_labels:
        scalarize(label, values.get(name), read)
    return read


def evaluate(profile: Profile, defs: Definitions, now: float, *, explain: bool = True) -> Evaluation:
    """Which segments the profile is in at `now`. Pure: the profile is not changed.

    A condition that fails at run time (e.g. ``age >= 18`` with an unknown age and no `has_age`
    guard) counts as false and is reported in `Evaluation.errors`. With `explain=False`,
    `deciding` stays empty; `Evaluation.explain` computes it for the segments that need it.
    """
    return _evaluate(profile, defs, now, explain=explain)


def diff(previous: Iterable[str], current: frozenset[str]) -> tuple[list[str], list[str]]:
    """(entered, exited), each sorted."""
    before = set(previous)
    return sorted(current - before), sorted(before - current)


def next_check_at(profile: Profile, defs: Definitions, now: float) -> float | None:
    """The earliest moment after `now` at which a membership can change with no new event.

    Candidates: every declared ``recheck`` (each time the anchor names, plus the delay); the
    self-sliding facts segments read (``session_active``: last_seen + 30 min; each
    ``viewed_products_30m`` view + 30 min; each ``purchased_products_24h`` purchase + 24 h); and
    for windowed attributes, the moment the oldest in-window non-zero bucket slides out of each
    window a segment reads (``(day + W) * 86400``). `None` when nothing is pending.
    """
    best: float | None = groups_exit_at(profile, defs.window_groups, now)
    for anchor, delay in defs.time_anchors:
        for t in RECHECK_ANCHORS[anchor](profile):
            t += delay
            if t > now and (best is None or t < best):
                best = t
    return best


def preview(profiles: Iterable[Profile], defs: Definitions, now: float) -> dict[str, int]:
    """Segment sizes under `defs` (e.g. a changed file, before it goes live): id → members."""
    counts = dict.fromkeys((seg.id for seg in defs.segments), 0)
    for profile in profiles:
        for segment_id in _evaluate(profile, defs, now, explain=False).members:
            counts[segment_id] += 1
    return counts
