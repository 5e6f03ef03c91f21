"""Due timers: when each visitor's profile must be evaluated again without an event of its own.

A profile's `next_check_at` (a cart left alone for 30 minutes, a lapsed buyer) is its timer. Each
owned partition keeps its timers in a `TimerQueue`; `DueTimers` hands out the ones due by each
partition's event-time clock (docs/ARCHITECTURE.md, "The time model"), at most `per_batch` per batch.

The clock rule (`WallClock`): a partition's clock is the newest event time it delivered (capped at
the wall clock, never going back); while the consumer has fetched the partition up to its Fetch high
watermark, it is at least `wall − lateness_s` too (after `idle_after_s` without records; 0 by
default, so at once). A partition still behind its high watermark (a replay, a catch-up after a
restart, a backlog, or not fetched yet) follows event time alone: old traffic decides by its own
times, and no timer fires by the wall clock ahead of records the partition already holds. So on a
live partition a timer fires `lateness_s` after its due moment by the wall clock, records or not,
and the engine's poll waits no longer than that (`WallClock.poll_wait_ms` over the caught-up
partitions). An event stamped before the moment its visitor was last evaluated at arrived late:
the core corrects the visitor's membership as of that moment (`streams.core.batch`, reason
`correction`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class TimerQueue:
    """One partition's timers: each visitor's current due time, and a heap of (due, visitor).

    Rescheduling a visitor pushes a new heap entry and leaves the old one in place: an entry whose
    time no longer matches the visitor's current due time is stale and skipped when it surfaces
    (cheaper than removing it from the middle of the heap).
    """

    __slots__ = ("_heap", "_next_due")

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._next_due: dict[str, float] = {}

    def schedule(self, visitor_id: str, due: float | None) -> None:
        """Set the visitor's timer to `due` (epoch seconds of event time); None cancels it."""
        if due is None:
            self._next_due.pop(visitor_id, None)
        elif self._next_due.get(visitor_id) != due:
            self._next_due[visitor_id] = due
            heapq.heappush(self._heap, (due, visitor_id))

    def schedule_all(self, due: Mapping[str, float]) -> None:
        """Set many visitors' timers at once (recovery): one heapify instead of a push per timer."""
        self._next_due.update(due)
        self._heap.extend([(at, visitor_id) for visitor_id, at in due.items()])
        heapq.heapify(self._heap)

    def due_at(self, visitor_id: str) -> float | None:
        """The visitor's current due time, None if it has no timer."""
        return self._next_due.get(visitor_id)

    def next_due(self) -> float | None:
        """The earliest due time queued, None if none; drops the stale entries in front of it."""
        heap, next_due = self._heap, self._next_due
        while heap and next_due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def __len__(self) -> int:
        """Timers queued (one per visitor; stale heap entries do not count)."""
        return len(self._next_due)


class DueTimers:
    """Pops the due timers of all owned partitions, earliest first per partition, at most
    `per_batch` per batch shared out over the partitions.

    After a restart or a jump of a partition's clock tens of thousands of timers can be due at
    once; evaluating them in one batch blocked the event loop for seconds (100k due: a 6 s batch,
    longer than the consumer group's session timeout). What is left past the cap stays queued and
    `backlog` is set, so the next poll returns at once instead of waiting for records.
    """

    __slots__ = ("backlog", "per_batch")

    def __init__(self, per_batch: int) -> None:
        self.per_batch = per_batch
        self.backlog = False
        """The last `pop` left due timers queued past the cap."""

    def pop(
        self, queues: Mapping[int, TimerQueue], clocks: Mapping[int, float]
    ) -> dict[str, tuple[int, float]]:
        """Take the timers due by each partition's clock: visitor id → (partition, due time)."""
        due: dict[str, tuple[int, float]] = {}
        share = max(1, -(-self.per_batch // max(len(queues), 1)))
        backlog = False
        for partition, queue in queues.items():
            now = clocks[partition]
            heap = queue._heap  # the queue's own module: the hot path skips a call per timer
            next_due = queue._next_due
            taken = 0
            while heap and heap[0][0] <= now:
                if taken >= share:
                    backlog = True
                    break
                at, visitor_id = heapq.heappop(heap)
                if next_due.get(visitor_id) == at:  # else stale: the visitor was rescheduled
                    del next_due[visitor_id]
                    due[visitor_id] = (partition, at)
                    taken += 1
        self.backlog = backlog
        return due

    def status(self, queues: Mapping[int, TimerQueue]) -> dict[str, int | bool]:
        """Timers queued over `queues`, and whether due ones wait past a batch's cap."""
        return {"queued": sum(len(queue) for queue in queues.values()), "backlog": self.backlog}


@dataclass(frozen=True, slots=True)
class WallClock:
    """When a partition's event-time clock follows the wall clock (the rule in the module docstring)."""

    idle_after_s: float
    """Seconds without records before a caught-up partition's clock follows the wall clock."""
    lateness_s: float
    """How far behind the wall clock a caught-up partition's clock runs: time for events in flight."""

    def clock(self, clock: float, wall: float, last_record_wall: float, caught_up: bool) -> float:
        """The partition's clock for the next batch: `clock` (its newest event time so far), moved to
        `wall − lateness_s` when it is caught up and has had no records for `idle_after_s`."""
        if caught_up and wall - last_record_wall >= self.idle_after_s:
            return max(clock, wall - self.lateness_s)
        return clock

    def fires_at(self, due: float, last_record_wall: float) -> float:
        """The wall time at which a caught-up partition's clock reaches `due` with no new record."""
        return max(due + self.lateness_s, last_record_wall + self.idle_after_s)

    def poll_wait_ms(
        self, partitions: Iterable[tuple[TimerQueue, float]], wall: float, longest_ms: int = 100
    ) -> int:
        """How long the next poll may wait for records, given each partition's (timers, wall time of
        its last records): until the earliest timer fires (`fires_at`), at most `longest_ms`, never
        negative. Rounded up to whole milliseconds, so the poll does not return just before it."""
        wake = math.inf
        for queue, last_record_wall in partitions:
            due = queue.next_due()
            if due is not None:
                wake = min(wake, self.fires_at(due, last_record_wall))
        if wake == math.inf:
            return longest_ms
        return min(longest_ms, max(0, math.ceil((wake - wall) * 1000)))
