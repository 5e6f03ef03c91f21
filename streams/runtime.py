"""The parts of a running worker: built by start-up (`streams.app`), read by the web views (`streams.web`).

Two parts are set up in a thread while the consumer joins its group (`streams.app.run_worker`):
the User-Agent parser and the ClickHouse sink. `WhenReady` holds such a part until it is ready;
whoever needs it first waits for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sinks.clickhouse import AnalyticsBatch, ClickHouseSink, SegmentReportRow
from sinks.redis_serving import RedisServing
from streams.core.definitions import Definitions
from streams.core.enrich import UserAgentParser
from streams.definitions_store import DefinitionsStore
from streams.engine import Engine
from streams.logging import get_logger
from streams.priority import BackgroundThreads
from streams.settings import Settings

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    clickhouse_dsn: str


class WhenReady(Generic[T]):
    """A part being set up in a thread during start-up; `get()` blocks until it is ready.

    A failed set-up re-raises from every `get()` (and from `wait()`, which fails the start-up).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._future: Future[T] = Future()

    def run(self, make: Callable[[], T]) -> None:
        """Set the part up (in the calling thread)."""
        if not self._future.set_running_or_notify_cancel():
            return
        started = time.perf_counter()
        try:
            self._future.set_result(make())
        except BaseException as exc:
            self._future.set_exception(exc)
            log.error("startup_part_failed", part=self.what, error=repr(exc))
        else:
            log.info("startup_part_ready", part=self.what, seconds=round(time.perf_counter() - started, 3))

    def get(self) -> T:
        return self._future.result()

    def ready(self) -> bool:
        return self._future.done() and self._future.exception() is None

    async def wait(self) -> T:
        return await asyncio.wrap_future(self._future)


class Analytics:
    """The ClickHouse sink, opened (chDB loads in-process) and migrated (DDL) in a thread during the
    group join. Every call waits for that, so no batch is written before its tables exist.

    chDB runs in this process and is called from threads (the checkpoint's insert, the report
    view), one call at a time: a lock serialises them, and a report's two reads see no insert
    between them. After every insert, the threads that appeared since (chDB starts its pool
    threads lazily) are lowered to `background`'s nice value (`streams.priority`).
    """

    def __init__(self, sink: WhenReady[ClickHouseSink], background: BackgroundThreads | None = None) -> None:
        self.sink = sink
        self.background = background or BackgroundThreads(0)
        self._lock = threading.Lock()

    def write(self, batch: AnalyticsBatch) -> None:
        sink = self.sink.get()
        with self._lock:
            sink.write(batch)
        self.background.lower()

    def report(self) -> tuple[list[SegmentReportRow], dict[str, Any]]:
        """Segment sizes and KPIs (`segment_report`, `totals`), read together."""
        sink = self.sink.get()
        with self._lock:
            return sink.segment_report(), sink.totals()

    def read(self, reader: Callable[[ClickHouseSink], T]) -> T:
        """`reader(sink)` with no insert between its queries (dashboards, the persona report)."""
        sink = self.sink.get()
        with self._lock:
            return reader(sink)

    def close(self) -> None:
        if self.sink.ready():
            with self._lock:
                self.sink.get().close()


@dataclass(slots=True)
class Runtime:
    """The parts a running worker shares between the engine and the web views."""

    settings: Settings
    endpoints: Endpoints
    engine: Engine
    analytics: Analytics
    serving: RedisServing
    engine_task: asyncio.Task[None]
    """`engine.run()`, started before Faust so the consumer joins its group while the rest starts."""
    parser: WhenReady[UserAgentParser]
    definitions: DefinitionsStore
    """The definitions topic: the admin routes publish to it, `definitions_task` follows it."""
    definitions_task: asyncio.Task[None]
    """`HeadWatcher.run()`: every new head is switched to (`Engine.switch_definitions`)."""
    setup_done: bool = False
    """Set once the parts built during the join are ready (the User-Agent parser, ClickHouse)."""
    early_signals: list[int] = field(default_factory=list)
    """SIGINT/SIGTERM received before Faust installed its handlers (`run_worker`)."""

    @property
    def defs(self) -> Definitions:
        """The definitions the engine runs now (a switch replaces them)."""
        return self.engine.defs

    @property
    def ready(self) -> bool:
        """Ready to serve: the set-up done during the join is complete and the first assignment
        recovered (`/healthz`)."""
        return self.setup_done and self.engine.stats.ready_at is not None
