"""The worker process: a Faust app hosting the batch engine, the collector and the visitor API.

Faust provides the worker (lifecycle, signals, services) and the web server. The profile hot path
is `streams.engine.Engine`, a batch loop over aiokafka that Faust runs as a service: Faust's own
stream machinery costs ≈ 200 µs per record and one changelog write per table update (DESIGN.md,
"Where Faust's cost sits"), which the batch loop avoids by folding a whole poll at once and
writing each touched profile once per batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
import mode
import orjson
from faust.app.base import BootStrategy
from faust.web import Request, Response, View

from infra.topics import default_topic_specs, ensure_topics
from schemas.deadletter import DeadLetter, DeadLetterReason
from sinks.clickhouse import ClickHouseSink
from sinks.redis_serving import RedisServing
from streams import gcstats
from streams.collector import parse_body
from streams.core.enrich import default_enricher
from streams.core.segments import Definitions, load_definitions
from streams.engine import Engine
from streams.logging import get_logger
from streams.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    clickhouse_dsn: str


@dataclass(slots=True)
class Runtime:
    """The parts a running worker shares between the engine and the web views."""

    settings: Settings
    endpoints: Endpoints
    defs: Definitions
    engine: Engine
    analytics: ClickHouseSink
    serving: RedisServing


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


def create_app(settings: Settings, endpoints: Endpoints) -> tuple[faust.App, Runtime]:
    defs = load_definitions(settings.segments_file)
    analytics = ClickHouseSink(endpoints.clickhouse_dsn)
    serving = RedisServing(endpoints.redis_url, prefix=settings.redis_prefix)
    enricher = default_enricher(settings.geoip_db)
    engine = Engine(settings, endpoints.kafka_bootstrap, defs, enricher, analytics, serving)
    runtime = Runtime(settings, endpoints, defs, engine, analytics, serving)

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
        """Prepares topics and sinks, then runs the engine until the worker stops."""

        async def on_start(self) -> None:
            await ensure_topics(
                endpoints.kafka_bootstrap,
                default_topic_specs(
                    events=settings.events_topic,
                    dlq=settings.dlq_topic,
                    changes=settings.changes_topic,
                    messages=settings.messages_topic,
                    changelog=settings.changelog_topic,
                    partitions=settings.partitions,
                    replication_factor=settings.replication_factor,
                ),
            )
            await asyncio.to_thread(analytics.apply_ddl)
            await engine.start_producer()
            log.info(
                "worker_ready_to_consume",
                web=f"http://{settings.web_host}:{settings.web_port}",
                segments=len(defs.segments),
                definition_version=defs.version,
            )

        @mode.Service.task
        async def _run(self) -> None:
            await engine.run()

        async def on_stop(self) -> None:
            await engine.stop()
            await serving.close()
            await asyncio.to_thread(analytics.close)

    _register_views(app, runtime)
    return app, runtime


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


def _json(view: View, value: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(value), content_type="application/json", status=status)


def _register_views(app: faust.App, rt: Runtime) -> None:
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
                    **engine.stats.as_dict(),
                    "gc": gcstats.snapshot(),
                },
            )

    @app.page("/healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            ready = rt.engine.stats.ready_at is not None
            return _json(self, {"ok": True, "ready": ready}, status=200)


def run_worker(settings: Settings, endpoints: Endpoints) -> None:
    """Run a worker in this process until SIGINT/SIGTERM."""
    # The hot path allocates many short-lived objects per batch; with the default thresholds
    # cyclic GC took ≈ 40 % of the core's time (bench). Collect the young generation less often.
    gc.set_threshold(settings.gc_gen0_threshold, 20, 100)
    gcstats.install()
    _leave_group_from_first_generation()
    app, _ = create_app(settings, endpoints)
    gc.freeze()  # start-up objects (definitions, parsers, modules) never need scanning again
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        redirect_stdouts=False,
        override_logging=False,
    )
    # Faust's terminal spinner turns the root logger to DEBUG (24 % slower, DESIGN.md).
    worker.spinner = None
    worker.execute_from_commandline()
