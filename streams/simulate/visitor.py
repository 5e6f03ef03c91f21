"""One visitor being generated: its own generator, its recorder, browsing and shopping, and the
scheduling of its sessions on the timeline before `end`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from random import Random

from streams.simulate.browsing import Browsing
from streams.simulate.clock import DAY_MS, HOUR_MS, SESSION_GAP_MS, hour_weight
from streams.simulate.session import SessionRecorder
from streams.simulate.shopping import Shopping
from streams.simulate.spec import VisitorSpec
from streams.simulate.targets import SegmentTargets

SessionRunner = Callable[[int], None]
"""Builds and places one session meant to start at the given time."""
PlannedSession = tuple[int, int, str, bool]
"""(earliest start, latest start, kind, required) of a session to schedule."""


class Visitor:
    """The parts a persona's behaviour is written with (`streams.simulate.personas`)."""

    def __init__(self, spec: VisitorSpec, end_ms: int, history_days: int, targets: SegmentTargets) -> None:
        self.spec = spec
        self.rng = Random(spec.seed)
        self.end = end_ms
        self.history_ms = history_days * DAY_MS
        self.targets = targets
        self.session = SessionRecorder(spec, self.rng, end_ms)
        self.pages = Browsing(self.session, self.rng, spec.device.category, targets.product_x)
        self.shop = Shopping(self.session, self.pages, self.rng, targets)
        self.extra_segments: set[str] = set()
        """Segments the behaviour earned beyond its persona's (`PERSONA_SEGMENTS`), for the truth."""

    def first_seen(self) -> int:
        """A first visit more than 10.5 days before `end` (never a new visitor), within the history."""
        oldest = self.end - self.history_ms + HOUR_MS
        return self.rng.randint(oldest, self.end - int(10.5 * DAY_MS))

    def pick_time(self, lo: int, hi: int, taken: list[int]) -> int | None:
        """A start in [lo, hi], biased to daytime, at least SESSION_GAP_MS from every taken start."""
        if hi < lo:
            return None
        candidate = None
        for _ in range(60):
            candidate = self.rng.randint(lo, hi)
            if all(abs(candidate - t) >= SESSION_GAP_MS for t in taken) and self.rng.random() < hour_weight(
                candidate
            ):
                return candidate
        if candidate is not None and all(abs(candidate - t) >= SESSION_GAP_MS for t in taken):
            return candidate
        return None

    def schedule(self, plan: list[PlannedSession], fixed: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """(start, kind) of the `fixed` sessions and the planned ones, required ones placed first."""
        taken = [t for t, _ in fixed]
        out = list(fixed)
        for lo, hi, kind, required in sorted(plan, key=lambda p: not p[3]):
            start = self.pick_time(lo, hi, taken)
            if start is None and required:
                # Crowded range: relax the gap rather than lose a session the persona needs.
                start = self.rng.randint(lo, max(lo, hi))
            if start is not None:
                taken.append(start)
                out.append((start, kind))
        out.sort()
        return out

    @staticmethod
    def run_sessions(sessions: list[tuple[int, str]], runners: Mapping[str, SessionRunner]) -> None:
        for start, kind in sessions:
            runners[kind](start)

    def browse_runner(
        self, lo: int, hi: int, category: str | None = None, bargain: bool = False
    ) -> SessionRunner:
        """A runner of browsing sessions of `lo`..`hi` pages."""

        def run(start: int) -> None:
            self.session.begin(start)
            self.pages.browse(self.rng.randint(lo, hi), category=category, bargain=bargain)
            self.session.place(start)

        return run
