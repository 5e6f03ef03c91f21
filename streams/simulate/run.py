"""Running a simulation: the plan, each visitor's events and truth, merged in time order."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from random import Random
from typing import Any

from streams.core.definitions import Definitions
from streams.logging import get_logger
from streams.simulate.clock import iso, to_ms
from streams.simulate.malformed import malformed
from streams.simulate.params import SimParams
from streams.simulate.personas import BEHAVIOURS
from streams.simulate.plan import plan
from streams.simulate.results import Simulation, VisitorTruth
from streams.simulate.spec import VisitorSpec
from streams.simulate.targets import SegmentTargets, default_targets
from streams.simulate.truth import visitor_truth
from streams.simulate.visitor import Visitor

log = get_logger(__name__)

MIN_HISTORY_DAYS = 14
"""Personas but the casual visitor are first seen more than 10.5 days before `end`."""


@dataclass(slots=True)
class Generated:
    events: list[tuple[int, int, dict[str, Any]]]
    """(time ms, sequence, event) in time order."""
    truth: VisitorTruth


@dataclass(slots=True)
class _Run:
    params: SimParams
    targets: SegmentTargets
    end_ms: int
    history_days: int
    master: Random
    specs: list[VisitorSpec]

    def generate(self, spec: VisitorSpec) -> Generated:
        """One visitor's events, client retries included (`SimParams.duplicate_rate`), and its truth."""
        visitor = Visitor(spec, self.end_ms, self.history_days, self.targets)
        BEHAVIOURS[spec.persona](visitor)
        timeline = visitor.session.events
        timeline.sort(key=lambda te: te[0])
        out: list[tuple[int, int, dict[str, Any]]] = []
        duplicates = 0
        rate = self.params.duplicate_rate
        for seq, (t, event) in enumerate(timeline):
            out.append((t, 2 * seq, event))
            if rate > 0 and visitor.rng.random() < rate:
                out.append((t, 2 * seq + 1, dict(event)))
                duplicates += 1
        span = (timeline[0][0], timeline[-1][0]) if timeline else None
        truth = visitor_truth(
            spec, visitor.shop.age, self.targets, span, len(out), duplicates, visitor.extra_segments
        )
        return Generated(out, truth)


def _prepare(
    visitors: int,
    seed: int,
    end: datetime,
    history_days: int,
    params: SimParams | None,
    defs: Definitions | None,
) -> _Run:
    if visitors < 0:
        raise ValueError("visitors must be >= 0")
    if history_days < MIN_HISTORY_DAYS:
        raise ValueError(
            f"history_days must be >= {MIN_HISTORY_DAYS} "
            "(personas are first seen more than 10 days before end)"
        )
    params = params or SimParams()
    targets = default_targets() if defs is None else SegmentTargets.from_definitions(defs)
    master = Random(seed)
    specs = plan(visitors, master, params, targets)
    return _Run(params, targets, to_ms(end), history_days, master, specs)


def simulate(
    visitors: int,
    seed: int,
    end: datetime,
    history_days: int = 60,
    params: SimParams | None = None,
    *,
    defs: Definitions | None = None,
) -> Simulation:
    """`visitors` visitors' traffic up to `end` (a naive `end` is taken as UTC) and its ground truth,
    for the definitions `defs` (default: the shipped `segments/default.yaml`)."""
    run = _prepare(visitors, seed, end, history_days, params, defs)
    keyed: list[tuple[int, int, int, dict[str, Any]]] = []
    truth: dict[str, VisitorTruth] = {}
    for spec in run.specs:
        generated = run.generate(spec)
        truth[spec.visitor_id] = generated.truth
        keyed.extend((t, spec.index, seq, event) for t, seq, event in generated.events)
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    bad = malformed(
        Random(run.master.getrandbits(64)),
        run.params.malformed,
        [s.visitor_id for s in run.specs],
        run.end_ms,
    )
    log.info(
        "simulation_built",
        visitors=visitors,
        seed=seed,
        events=len(keyed),
        malformed=len(bad),
        end=iso(run.end_ms),
    )
    return Simulation(
        events=[k[3] for k in keyed], truth=truth, malformed=bad, seed=seed, end=iso(run.end_ms)
    )


def iter_events(
    visitors: int,
    seed: int,
    end: datetime,
    history_days: int = 60,
    params: SimParams | None = None,
    *,
    ordered: bool = True,
    defs: Definitions | None = None,
) -> Iterator[dict[str, Any]]:
    """The events of `simulate(...)` as an iterator.

    `ordered=True` yields exactly `simulate(...).events` (each visitor is generated up front, then
    merged by time). `ordered=False` yields visitor after visitor (each in time order) and holds one
    visitor at a time: constant memory for load tests that need volume, not global time order.
    """
    run = _prepare(visitors, seed, end, history_days, params, defs)
    if not ordered:
        for spec in run.specs:
            for _, _, event in run.generate(spec).events:
                yield event
        return
    streams = [
        [(t, spec.index, seq, event) for t, seq, event in run.generate(spec).events] for spec in run.specs
    ]
    for item in heapq.merge(*streams, key=lambda k: (k[0], k[1], k[2])):
        yield item[3]
