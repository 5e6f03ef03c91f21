"""The worker's background threads run at a lower CPU priority than its event loop.

The event loop (the main thread) is the latency path: batches, topic sends, Redis writes. Every other
thread of a worker does background work — chDB's inserts, merges and pools above all, then the
set-up and the `asyncio.to_thread` helpers. On a small machine they compete with the loop for the
CPU, not for the GIL (chDB releases it): with 2 cores at 500 events/s the loop waited on a run
queue for > 2 ms about once per ClickHouse insert (bench/RESULTS.md, seventeenth pass). Linux gives
each thread its own nice value, and raising one's own threads' nice needs no privilege.
"""

from __future__ import annotations

import os
import sys
import threading

from streams.logging import get_logger

log = get_logger(__name__)

_TASKS = "/proc/self/task"


class BackgroundThreads:
    """Keeps every thread of this process but the main one at nice `nice` at least (Linux; a no-op
    elsewhere or for 0). `lower()` looks at the thread ids that appeared since its last call, so it
    is cheap to call after every ClickHouse insert: chDB starts pool threads lazily."""

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self._seen: set[int] = set()
        self.enabled = nice > 0 and sys.platform == "linux" and os.path.isdir(_TASKS)

    def lower(self) -> int:
        """Lower the threads that appeared since the last call; how many were changed."""
        if not self.enabled:
            return 0
        try:
            tids = {int(tid) for tid in os.listdir(_TASKS)}
        except OSError:
            return 0
        new = tids - self._seen
        self._seen = tids
        new.discard(threading.main_thread().native_id or -1)
        changed = 0
        for tid in new:
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) < self.nice:
                    os.setpriority(os.PRIO_PROCESS, tid, self.nice)
                    changed += 1
            except OSError:  # the thread ended meanwhile
                continue
        if changed:
            log.debug("background_threads_lowered", threads=changed, nice=self.nice)
        return changed
