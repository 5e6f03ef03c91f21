"""The `tessera` command: worker, up, demo, simulate, produce, visitor, segments, deliver, audiences,
report, export, schemas."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.logging import configure_logging, get_logger
from streams.settings import Settings

if TYPE_CHECKING:
    from schemas.definitions import DefinitionsRecord
    from streams.core.definitions import Definitions
    from streams.definitions_store import DefinitionsStore

log = get_logger(__name__)
ENDPOINTS_FILE = "endpoints.json"


def _progress(label: str, done: int, total: int | None = None) -> None:
    """One overwritten status line on stderr (CLI only)."""
    if total:
        width = 30
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{label} [{bar}] {done:,}/{total:,}")
    else:
        sys.stderr.write(f"\r{label} {done:,}")
    sys.stderr.flush()


def _definitions(path: Path, *, simulated: bool = False) -> Definitions | None:
    """The definitions in `path`, or None once the reason they are refused is printed: the loader's
    (`path:line:column: reason`), or with `simulated` what the simulator cannot serve."""
    from streams.core.definitions import load_definitions
    from streams.simulate import SegmentTargets

    try:
        defs = load_definitions(path)
        if simulated:
            SegmentTargets.from_definitions(defs)
    except ValueError as exc:  # a DefinitionError is one
        print(f"refused: {exc}", file=sys.stderr)
        return None
    return defs


def _saved_endpoints(settings: Settings) -> dict[str, str]:
    """The endpoints of a stack `tessera up` runs in the data folder (none: empty)."""
    saved = settings.data_dir / ENDPOINTS_FILE
    found: dict[str, str] = json.loads(saved.read_text()) if saved.exists() else {}
    return found


def _endpoints_for(settings: Settings) -> dict[str, str] | None:
    """Configured endpoints, or those of a stack `tessera up` runs in the data folder."""
    found = _saved_endpoints(settings)
    kafka = settings.kafka_broker or found.get("kafka_bootstrap")
    redis_url = settings.redis_url or found.get("redis_url")
    dsn = settings.clickhouse_dsn or found.get("clickhouse_dsn")
    if kafka and redis_url:
        return {
            "kafka_bootstrap": kafka,
            "redis_url": redis_url,
            "clickhouse_dsn": dsn or "",
            "web": found.get("web", ""),
        }
    return None


# -- worker / up ----------------------------------------------------------------------------------


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import EmbeddedStack
    from streams.app import Endpoints, run_worker

    with EmbeddedStack(
        settings.data_dir,
        kafka_broker=settings.kafka_broker,
        redis_url=settings.redis_url,
        clickhouse_dsn=settings.clickhouse_dsn,
    ) as ep:
        run_worker(settings, Endpoints(ep.kafka_bootstrap, ep.redis_url, ep.clickhouse_dsn))
    return 0


DEMO_SITE = "demo"
DEMO_WRITE_KEY = "tessera-demo-key"
"""The write key of the site `tessera up` configures when TESSERA_SITES is unset (public, like any
write key in a web page: `tessera up` is for a local machine)."""


def with_demo_site(settings: Settings) -> Settings:
    """`settings` with the demo site (`DEMO_WRITE_KEY`, the worker's own origins) and the demo shop on
    it, when no site is configured and the collector is not open; else `settings` as they are."""
    from streams.settings import Site

    if settings.sites or settings.collector_open:
        return settings
    port = settings.web_port
    origins = (f"http://{settings.web_host}:{port}", f"http://localhost:{port}", f"http://127.0.0.1:{port}")
    site = Site(write_key=DEMO_WRITE_KEY, origins=tuple(dict.fromkeys(origins)))
    return settings.model_copy(update={"sites": {DEMO_SITE: site}, "demo_shop_site": DEMO_SITE})


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import EmbeddedStack
    from streams.app import Endpoints, run_worker

    settings = with_demo_site(settings)

    with EmbeddedStack(
        settings.data_dir,
        kafka_broker=settings.kafka_broker,
        redis_url=settings.redis_url,
        clickhouse_dsn=settings.clickhouse_dsn,
    ) as ep:
        web = f"http://{settings.web_host}:{settings.web_port}"
        (settings.data_dir / ENDPOINTS_FILE).write_text(
            json.dumps(
                {
                    "kafka_bootstrap": ep.kafka_bootstrap,
                    "redis_url": ep.redis_url,
                    "clickhouse_dsn": ep.clickhouse_dsn,
                    "web": web,
                }
            )
        )
        print(f"Kafka broker      {ep.kafka_bootstrap}  (topic {settings.events_topic})")
        print(f"Redis             {ep.redis_url}")
        print(f"ClickHouse        {ep.clickhouse_dsn}")
        print(f"Collector         POST {web}/v1/batch (Segment's HTTP API: /v1/track, /v1/page, ...)")
        for site_id, site in settings.sites.items():
            origins = ", ".join(site.origins) or "no browser origins"
            shown = site.write_key.get_secret_value() if site_id == DEMO_SITE else "(from TESSERA_SITES)"
            print(f"  site {site_id:11} write key {shown}; {origins}")
        if settings.collector_open:
            print("  TESSERA_COLLECTOR_OPEN: calls without a known write key are accepted (local use only)")
        print(f"Tracker           GET  {web}/tracker.js")
        if settings.demo_shop_site in settings.sites:
            print(f"Demo shop         {web}/shop/  (exit through the top of the window with a full cart)")
        print(f"Visitor API       GET  {web}/v1/visitors/<visitor_id>")
        print(f"Segments / report GET  {web}/v1/segments   {web}/v1/report   {web}/v1/status")
        print("Delivery          tessera deliver (inbox, webhooks, e-mail); tessera audiences export")
        print(f"Dashboard         {web}/dashboard   (persona report: tessera report --out report.html)")
        print("Ctrl-C stops the worker and the embedded stack.", flush=True)
        try:
            run_worker(settings, Endpoints(ep.kafka_bootstrap, ep.redis_url, ep.clickhouse_dsn))
        finally:
            (settings.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
    return 0


# -- demo -----------------------------------------------------------------------------------------


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """The embedded stack, a worker subprocess (`streams.testing.WorkerProcess`, its log in
    `<data_dir>/demo/worker.log`), traffic simulated for `settings.segments_file`, then the segment
    report."""
    from infra.stack import EmbeddedStack, free_port
    from streams.producer import EventProducer
    from streams.simulate import simulate, write_jsonl
    from streams.testing import WorkerConfig, WorkerProcess

    defs = _definitions(settings.segments_file, simulated=True)
    if defs is None:
        return 1
    started = time.monotonic()
    demo_dir = settings.data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    if settings.web_port == 6066:
        settings = settings.model_copy(update={"web_port": free_port()})
    print(f"Tessera demo: {args.visitors:,} simulated visitors (seed {args.seed}) on the embedded stack")
    with EmbeddedStack(
        demo_dir / "stack",
        kafka_broker=settings.kafka_broker,
        redis_url=settings.redis_url,
        clickhouse_dsn=settings.clickhouse_dsn,
    ) as ep:
        print(f"  stack up: kafka {ep.kafka_bootstrap}, redis {ep.redis_url}, clickhouse {ep.clickhouse_dsn}")
        config = WorkerConfig.from_settings(settings, ep.kafka_bootstrap, ep.redis_url, ep.clickhouse_dsn)
        worker = WorkerProcess(config, port=settings.web_port, log_path=demo_dir / "worker.log")
        try:
            worker.start(ready_timeout=120)
            print(f"  worker ready in {time.monotonic() - started:.1f}s; collector at {worker.web}/v1/events")
            sim = simulate(args.visitors, args.seed, datetime.now(UTC), defs=defs)
            write_jsonl(sim, demo_dir / "events.jsonl", demo_dir / "truth.json")
            total = len(sim.events)

            async def produce() -> dict[int, int]:
                async with EventProducer(ep.kafka_bootstrap, config.events_topic) as producer:
                    sent = 0
                    step = max(total // 200, 1)
                    for event in sim.events:
                        await producer.send(event, key=event["visitor_id"])
                        sent += 1
                        if sent % step == 0 or sent == total:
                            _progress("  producing events ", sent, total)
                    return await producer.flush_offsets()

            last_offsets = asyncio.run(produce())
            sys.stderr.write("\n")
            produced = sum(last_offsets.values())

            def progress(status: dict[str, Any]) -> None:
                committed = status["committed"]
                done = sum(min(committed.get(str(p), 0), end) for p, end in last_offsets.items())
                _progress("  processing       ", done, produced)

            worker.wait_committed(last_offsets, 900, 0.5, on_status=progress)
            _progress("  processing       ", produced, produced)
            sys.stderr.write("\n")
            # Timers: idle partitions follow the wall clock after `idle_clock_after_s`.
            worker.wait(lambda: worker.status()["timer_evaluations"] > 0, 60, 0.2, "timers")
            report = worker.get("/v1/report", timeout=60)
            status = worker.status()
            _print_report(report, status, time.monotonic() - started)
            nonempty = [r for r in report["segments"] if r["members"] > 0]
            return 0 if nonempty else 1
        finally:
            worker.stop()


def _print_report(report: dict[str, Any], status: dict[str, Any], elapsed: float) -> None:
    totals = report["totals"]
    print()
    print(f"{'segment':34} {'members':>8} {'events':>9} {'visitors':>9} {'purchases':>9} {'revenue':>12}")
    print("-" * 86)
    for row in report["segments"]:
        print(
            f"{row['segment']:34} {row['members']:>8,} {row['events']:>9,} {row['visitors']:>9,} "
            f"{row['purchases']:>9,} {row['revenue']:>12,.2f}"
        )
    print("-" * 86)
    print(
        f"events in ClickHouse {totals.get('events', 0):,} "
        f"(distinct {totals.get('distinct_event_ids', 0):,}), "
        f"purchases {totals.get('purchases', 0):,}, revenue {totals.get('revenue', 0):,.2f}"
    )
    print(
        f"worker: {status['events_applied']:,} events applied, {status['dead_letters']:,} dead letters, "
        f"{status['duplicates']:,} duplicates dropped, {status['changes']:,} segment changes, "
        f"{status['messages']:,} messages, {status['profiles']:,} profiles; demo took {elapsed:.1f}s"
    )


# -- simulate / produce / visitor / segments -------------------------------------------------------


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Traffic simulated for `settings.segments_file`, to Kafka or a JSONL file."""
    from streams.simulate import simulate, write_jsonl

    defs = _definitions(settings.segments_file, simulated=True)
    if defs is None:
        return 1
    end = datetime.now(UTC) if args.end is None else datetime.fromisoformat(args.end)
    sim = simulate(args.visitors, args.seed, end, defs=defs)
    truth = Path(args.truth)
    if args.out:
        write_jsonl(sim, Path(args.out), truth)
        print(f"wrote {len(sim.events):,} events to {args.out}, ground truth to {truth}")
        return 0
    endpoints = _endpoints_for(settings)
    if endpoints is None:
        print(
            "no Kafka broker: set TESSERA_KAFKA_BROKER, run `tessera up`, or pass --out FILE.jsonl",
            file=sys.stderr,
        )
        return 2
    from streams.producer import EventProducer

    write_jsonl(sim, settings.data_dir / "simulated.jsonl", truth)

    async def produce() -> None:
        async with EventProducer(endpoints["kafka_bootstrap"], settings.events_topic) as producer:
            for i, event in enumerate(sim.events, 1):
                await producer.send(event, key=event["visitor_id"])
                if i % 1000 == 0 or i == len(sim.events):
                    _progress("producing", i, len(sim.events))

    asyncio.run(produce())
    sys.stderr.write("\n")
    print(f"sent {len(sim.events):,} events; ground truth in {truth}")
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streams.producer import produce_file

    endpoints = _endpoints_for(settings)
    if endpoints is None:
        print("no Kafka broker: set TESSERA_KAFKA_BROKER or run `tessera up`", file=sys.stderr)
        return 2
    sent = asyncio.run(
        produce_file(
            Path(args.file),
            endpoints["kafka_bootstrap"],
            settings.events_topic,
            progress=lambda n: _progress("producing", n),
        )
    )
    sys.stderr.write("\n")
    print(f"sent {sent:,} records from {args.file}")
    return 0


def cmd_visitor(settings: Settings, args: argparse.Namespace) -> int:
    from sinks.redis_serving import RedisServing

    endpoints = _endpoints_for(settings)
    if endpoints is None:
        print("no Redis: set TESSERA_REDIS_URL or run `tessera up`", file=sys.stderr)
        return 2

    async def fetch() -> dict[str, Any] | None:
        serving = RedisServing(endpoints["redis_url"], prefix=settings.redis_prefix)
        try:
            return await serving.get_visitor(args.visitor_id)
        finally:
            await serving.close()

    found = asyncio.run(fetch())
    if found is None:
        print(
            json.dumps({"visitor_id": args.visitor_id, "error": "unknown visitor"})
            if args.json
            else f"unknown visitor {args.visitor_id}"
        )
        return 1
    if args.json:
        print(json.dumps(found, default=str))
    else:
        print(f"visitor  {found['visitor_id']}")
        print(f"segments {', '.join(found['segments']) or '-'}")
        print(json.dumps(found["profile"], indent=2, default=str))
    return 0


# -- segments: the definitions lifecycle ----------------------------------------------------------

SEGMENTS_TIMEOUT_S = 30.0
"""Longest wait of a `tessera segments` command on Kafka."""
LIST_TIMEOUT_S = 5.0
"""`tessera segments list` falls back to the file when Kafka does not answer within this."""


class _NoBroker(Exception):
    """No Kafka broker configured or running (`tessera up`)."""


def _kafka_for(settings: Settings) -> str | None:
    """The configured Kafka bootstrap, or that of a stack `tessera up` runs in the data folder."""
    return settings.kafka_broker or _saved_endpoints(settings).get("kafka_bootstrap")


def _file_definitions(path: Path) -> tuple[str, Definitions]:
    """A definitions file's text and definitions; raises `DefinitionError`."""
    from streams.core.definitions import parse_definitions, read_definitions_text

    text = read_definitions_text(path)
    return text, parse_definitions(text, str(path))


def _on_topic(settings: Settings, work: Any, timeout_s: float = SEGMENTS_TIMEOUT_S) -> Any:
    """Run `await work(store, bootstrap)` on the definitions topic (created if missing); raises
    `_NoBroker`, or TimeoutError past `timeout_s`."""
    import functools

    from infra.topics import definitions_topic_spec, ensure_topics
    from streams.definitions_store import DefinitionsStore, open_producer
    from streams.recovery import open_changelog_consumer

    bootstrap = _kafka_for(settings)
    if bootstrap is None:
        raise _NoBroker()

    async def run() -> Any:
        spec = definitions_topic_spec(settings.definitions_topic, settings.replication_factor)
        await ensure_topics(bootstrap, [spec], timeout_s=timeout_s)
        store = DefinitionsStore(
            settings.definitions_topic,
            functools.partial(open_changelog_consumer, bootstrap),
            functools.partial(open_producer, bootstrap),
        )
        try:
            return await work(store, bootstrap)
        finally:
            await store.close()

    async def bounded() -> Any:
        return await asyncio.wait_for(run(), timeout_s)

    return asyncio.run(bounded())


async def _head_definitions(store: DefinitionsStore) -> tuple[DefinitionsRecord | None, Definitions | None]:
    """The topic's head record and its definitions, or (None, None)."""
    from streams.core.definitions import parse_definitions
    from streams.definitions_store import record_path

    head = (await store.read()).head
    if head is None:
        return None, None
    return head, parse_definitions(head.text, record_path(store.topic, head.version))


def _segments_validate(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else settings.segments_file
    _, defs = _file_definitions(path)
    print(
        f"ok: {path} version {defs.version}: {len(defs.segments)} segments, {len(defs.triggers)} triggers, "
        f"{len(defs.journeys)} journeys, {len(defs.campaigns)} campaigns"
    )
    return 0


def _segments_list(settings: Settings, args: argparse.Namespace) -> int:
    """The segments of FILE, else of the topic's head when Kafka answers, else of the settings' file."""
    defs: Definitions | None = None
    source = ""
    if not args.file and _kafka_for(settings) is not None:
        try:
            head, defs = _on_topic(settings, lambda store, _b: _head_definitions(store), LIST_TIMEOUT_S)
            source = f"head of {settings.definitions_topic}" if head is not None else ""
        except Exception as exc:  # any failure to read the head: the file is the answer
            print(f"no head read ({exc!r}); listing {settings.segments_file}", file=sys.stderr)
    if defs is None:
        path = Path(args.file) if args.file else settings.segments_file
        _, defs = _file_definitions(path)
        source = str(path)
    print(f"version {defs.version} ({source})")
    for seg in defs.segments:
        print(f"{seg.id:34} {seg.description}")
    return 0


def _segments_diff(settings: Settings, args: argparse.Namespace) -> int:
    from streams.core.definitions_diff import diff_definitions

    _, new = _file_definitions(Path(args.file))
    if args.against:
        _, old = _file_definitions(Path(args.against))
        against = f"{args.against} (version {old.version})"
    else:
        head, found = _on_topic(settings, lambda store, _b: _head_definitions(store))
        if head is None or found is None:
            print(f"{settings.definitions_topic} has no head yet: nothing to compare with", file=sys.stderr)
            return 1
        old, against = found, f"the head of {settings.definitions_topic} (version {head.version})"
    lines = diff_definitions(old, new)
    print(f"{args.file} (version {new.version}) against {against}:")
    print("\n".join(lines) if lines else "no differences")
    return 0


def _segments_preview(settings: Settings, args: argparse.Namespace) -> int:
    """FILE's definitions and the head's over every profile of the changelog, each as of its
    partition's clock as recovery sets it (the newest `last_seen` there), with the cohort thresholds
    of the sketches on the cohorts topic."""
    from streams.cohorts import read_board
    from streams.core.segments import preview
    from streams.recovery import open_changelog_consumer, recover_partitions

    _, defs = _file_definitions(Path(args.file))

    async def work(store: DefinitionsStore, bootstrap: str) -> Any:
        head, current = await _head_definitions(store)
        recovered = await recover_partitions(
            range(settings.partitions),
            settings.changelog_topic,
            lambda: open_changelog_consumer(bootstrap),
        )
        # The cohort thresholds each version would run with, from the partitions' published
        # sketches: a changed quantile gives its own threshold before any worker runs it.
        board = await read_board(settings.cohorts_topic, lambda: open_changelog_consumer(bootstrap))
        thresholds = board.thresholds(defs, settings.cohort_alpha)
        thresholds_now = board.thresholds(current, settings.cohort_alpha) if current is not None else None
        result = preview((), defs, time.time(), current=current)
        for state in recovered.states.values():
            preview(
                state.profiles.values(),
                defs,
                state.clock,
                current=current,
                into=result,
                cohorts=thresholds,
                cohorts_current=thresholds_now,
            )
        return head, result

    head, result = _on_topic(settings, work, max(SEGMENTS_TIMEOUT_S, 300.0))
    against = f"the head (version {head.version})" if head is not None else "the stored memberships"
    print(
        f"{args.file} (version {defs.version}) against {against}, over {result.profiles:,} profiles "
        f"of {settings.changelog_topic}:"
    )
    print(f"{'segment':34} {'status':8} {'now':>8} {'after':>8} {'entering':>9} {'leaving':>8}")
    for segment_id, seg in result.segments.items():
        print(
            f"{segment_id:34} {seg.status:8} {seg.members_now:>8,} {seg.members_after:>8,} "
            f"{seg.entering:>9,} {seg.leaving:>8,}"
        )
        if seg.entering_sample:
            print(f"{'':36}entering e.g. {', '.join(seg.entering_sample)}")
        if seg.leaving_sample:
            print(f"{'':36}leaving e.g. {', '.join(seg.leaving_sample)}")
    return 0


def _segments_apply(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    text, _ = _file_definitions(path)  # refused here, before Kafka is asked anything
    published = _on_topic(
        settings, lambda store, _b: store.publish(text, args.by, args.comment, path=str(path))
    )
    record = published.record
    if not published.changed:
        print(f"version {record.version} is the head already: nothing written")
    elif record.action == "rollback":
        print(f"version {record.version} is the head again (its text was applied before)")
    else:
        print(f"applied version {record.version} (head of {settings.definitions_topic})")
    return 0


def _segments_history(settings: Settings, args: argparse.Namespace) -> int:
    history = _on_topic(settings, lambda store, _b: store.read())
    if not history.entries:
        print(f"{settings.definitions_topic} holds no version yet")
        return 0
    print(f"  {'version':16} {'action':8} {'applied at (UTC)':20} {'by':12} comment")
    for record in history.entries:
        mark = "*" if record == history.head else " "
        at = record.applied_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{mark} {record.version:16} {record.action:8} {at:20} {record.applied_by:12} {record.comment}")
    print("(* the head: what every worker runs)")
    return 0


def _segments_rollback(settings: Settings, args: argparse.Namespace) -> int:
    published = _on_topic(settings, lambda store, _b: store.rollback(args.version, args.by, args.comment))
    if published.changed:
        print(f"rolled back: version {published.record.version} is the head again")
    else:
        print(f"version {published.record.version} is the head already: nothing written")
    return 0


SEGMENT_ACTIONS = {
    "validate": _segments_validate,
    "list": _segments_list,
    "diff": _segments_diff,
    "preview": _segments_preview,
    "apply": _segments_apply,
    "history": _segments_history,
    "rollback": _segments_rollback,
}


def cmd_segments(settings: Settings, args: argparse.Namespace) -> int:
    """`tessera segments ACTION`: a refused file or version prints `refused: path:line:column:
    reason` and exits 1; no Kafka exits 2."""
    from streams.definitions_store import UnknownVersion

    try:
        return SEGMENT_ACTIONS[args.action](settings, args)
    except (ValueError, UnknownVersion) as exc:  # DefinitionError and VersionClash are ValueErrors
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except _NoBroker:
        print("no Kafka broker: set TESSERA_KAFKA_BROKER or run `tessera up`", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"Kafka did not answer in time: {exc}", file=sys.stderr)
        return 2


# -- delivery -------------------------------------------------------------------------------------


def cmd_deliver(settings: Settings, args: argparse.Namespace) -> int:
    """The delivery runner on the messages topic until SIGINT/SIGTERM (`streams.delivery`)."""
    import signal

    from streams.delivery import DeliveryStats, run_delivery

    endpoints = _endpoints_for(settings)
    if endpoints is None:
        print(
            "no Kafka broker and Redis: set TESSERA_KAFKA_BROKER and TESSERA_REDIS_URL, or run `tessera up`",
            file=sys.stderr,
        )
        return 2

    def progress(stats: DeliveryStats) -> None:
        counts = ", ".join(f"{status} {n:,}" for status, n in sorted(stats.by_status.items()))
        sys.stderr.write(f"\rdelivery: {counts}   ")
        sys.stderr.flush()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_delivery(
            settings,
            endpoints["kafka_bootstrap"],
            endpoints["redis_url"],
            stop,
            progress if sys.stderr.isatty() else None,
        )

    asyncio.run(run())
    return 0


def cmd_audiences(settings: Settings, args: argparse.Namespace) -> int:
    """`tessera audiences export --out DIR`: one export run (`streams.delivery.export_audiences`)."""
    import functools

    from streams.delivery import export_audiences
    from streams.recovery import open_changelog_consumer

    bootstrap = _kafka_for(settings)
    if bootstrap is None:
        print("no Kafka broker: set TESSERA_KAFKA_BROKER or run `tessera up`", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (settings.audience_dir or settings.data_dir / "audiences")
    report = asyncio.run(
        export_audiences(
            functools.partial(open_changelog_consumer, bootstrap),
            settings.changes_topic,
            settings.changelog_topic,
            out,
            settings.audience_segments,
            progress=lambda label, n: _progress(label, n),
        )
    )
    sys.stderr.write("\n")
    print(f"run {report.run}: {report.changes_read:,} segment changes read; files in {out / report.run}")
    for audience, counts in sorted(report.audiences.items()):
        print(
            f"  {audience:32} members {counts['members']:>7,}  add {counts['add']:>6,}  "
            f"remove {counts['remove']:>6,}  skipped (no e-mail or phone) {counts['skipped']:>6,}"
        )
    return 0


# -- report and exports -----------------------------------------------------------------------------


def _clickhouse_dsn(settings: Settings, given: str | None) -> str | None:
    return given or settings.clickhouse_dsn or _saved_endpoints(settings).get("clickhouse_dsn")


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    """The persona report as one HTML file: from a ClickHouse (`--clickhouse`), else from a running
    worker's `/v1/personas` (`--worker`, else `tessera up`'s, else the configured web address)."""
    from schemas.analytics import PersonaReport
    from streams.report import render_html

    if args.clickhouse:
        from sinks.clickhouse import ClickHouseSink
        from streams.core.definitions import load_definitions
        from streams.dashboard import persona_report

        defs = load_definitions(settings.segments_file)
        sink = ClickHouseSink(args.clickhouse, database=args.database)
        try:
            report = persona_report(sink, defs.version, {seg.id: seg.description for seg in defs.segments})
        finally:
            sink.close()
    else:
        import urllib.request

        web = (
            args.worker
            or _saved_endpoints(settings).get("web")
            or f"http://{settings.web_host}:{settings.web_port}"
        )
        with urllib.request.urlopen(f"{web.rstrip('/')}/v1/personas", timeout=args.timeout) as answer:
            report = PersonaReport.model_validate_json(answer.read())
    out = Path(args.out)
    out.write_text(render_html(report), encoding="utf-8")
    segments = sum(1 for p in report.personas if p.segment != "*")
    print(f"wrote {out} ({segments} segments with members, {out.stat().st_size:,} bytes)")
    return 0


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """One export, streamed from ClickHouse (a chDB folder can be read only while no worker holds it)."""
    from sinks.clickhouse import ClickHouseSink
    from sinks.export import Format, export
    from sinks.kpis import TimeRange

    dsn = _clickhouse_dsn(settings, args.clickhouse)
    if not dsn:
        print("no ClickHouse: pass --clickhouse DSN or set TESSERA_CLICKHOUSE_DSN", file=sys.stderr)
        return 2
    whole = TimeRange.everything()
    rng = TimeRange(_when(args.start) or whole.start, _when(args.end) or whole.end)
    fmt: Format = args.format or ("parquet" if args.out.endswith(".parquet") else "csv")
    sink = ClickHouseSink(dsn, database=args.database)
    try:
        manifest = export(
            sink,
            args.kind,
            fmt,
            Path(args.out),
            segment=args.segment,
            rng=rng,
            block_rows=args.block_rows,
            progress=lambda rows: _progress(f"export {args.kind}", rows),
        )
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    finally:
        sink.close()
    sys.stderr.write("\n")
    print(f"wrote {args.out}: {manifest.rows:,} rows ({fmt}); manifest {args.out}.manifest.json")
    return 0


def cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    from schemas.export import SCHEMA_DIR, main

    main()
    print(f"exported JSON Schemas to {SCHEMA_DIR}")
    return 0


def _segments_parser(segments: argparse.ArgumentParser) -> None:
    actions = segments.add_subparsers(dest="action", required=True)
    validate = actions.add_parser("validate", help="check a file (default: TESSERA_SEGMENTS_FILE)")
    validate.add_argument("file", nargs="?")
    listing = actions.add_parser("list", help="the segments of FILE, else of the head, else of the file")
    listing.add_argument("file", nargs="?")
    diff = actions.add_parser("diff", help="what FILE changes against the head (or --against OTHER)")
    diff.add_argument("file")
    diff.add_argument("--against", default=None, help="compare with this file instead of the head")
    preview = actions.add_parser("preview", help="who would enter and leave each segment under FILE")
    preview.add_argument("file")
    apply = actions.add_parser("apply", help="validate FILE and make it the version every worker runs")
    apply.add_argument("file")
    rollback = actions.add_parser("rollback", help="make an earlier version the head again")
    rollback.add_argument("version")
    for parser in (apply, rollback):
        parser.add_argument("--comment", default="", help="why (kept in the history)")
        parser.add_argument("--by", default="cli", help="who (kept in the history)")
    actions.add_parser("history", help="every version applied and rolled back; the head marked")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a profile worker (starts embedded parts that are not configured)")
    sub.add_parser("up", help="start the embedded stack and a worker; serve until Ctrl-C")
    demo = sub.add_parser("demo", help="stack + worker + simulated traffic, then a segment report")
    demo.add_argument("--visitors", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=7)
    sim = sub.add_parser(
        "simulate", help="simulate persona traffic for TESSERA_SEGMENTS_FILE to Kafka or a JSONL file"
    )
    sim.add_argument("--visitors", type=int, default=1000)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--end", default=None, help="ISO time the simulated history ends (default: now)")
    sim.add_argument("--out", default=None, help="write events to this JSONL file instead of Kafka")
    sim.add_argument("--truth", default="truth.json", help="where to write each visitor's persona")
    produce = sub.add_parser("produce", help="send a JSONL file of events to the events topic")
    produce.add_argument("file")
    visitor = sub.add_parser("visitor", help="show one visitor's profile and segments from Redis")
    visitor.add_argument("visitor_id")
    visitor.add_argument("--json", action="store_true")
    _segments_parser(sub.add_parser("segments", help="segment definitions: check, compare, apply, roll back"))
    sub.add_parser("deliver", help="deliver the messages topic to its channels (inbox, webhook, e-mail, ads)")
    audiences = sub.add_parser("audiences", help="ad audiences as Meta and Google upload files")
    audience_actions = audiences.add_subparsers(dest="action", required=True)
    export = audience_actions.add_parser(
        "export", help="write the additions and removals since the last export, per audience"
    )
    export.add_argument(
        "--out", default=None, help="folder (default: TESSERA_AUDIENCE_DIR, else <data dir>/audiences)"
    )
    report = sub.add_parser("report", help="the persona report: one self-contained HTML file")
    report.add_argument("--out", default="report.html")
    report.add_argument(
        "--worker", default=None, help="a worker's address (default: tessera up's, or the settings')"
    )
    report.add_argument(
        "--clickhouse", default=None, help="read this ClickHouse DSN instead of asking a worker"
    )
    report.add_argument("--database", default="tessera")
    report.add_argument("--timeout", type=float, default=120.0)
    exp = sub.add_parser("export", help="a segment's members, the KPI table or the events as CSV or Parquet")
    exp.add_argument("kind", choices=["members", "kpis", "events"])
    exp.add_argument("--out", required=True, help="the file; .parquet means Parquet unless --format says")
    exp.add_argument("--format", choices=["csv", "parquet"], default=None)
    exp.add_argument("--segment", default=None, help="the segment (members)")
    exp.add_argument("--start", default=None, help="ISO time, inclusive (kpis, events)")
    exp.add_argument("--end", default=None, help="ISO time, exclusive (kpis, events)")
    exp.add_argument("--clickhouse", default=None, help="ClickHouse DSN (default: TESSERA_CLICKHOUSE_DSN)")
    exp.add_argument("--database", default="tessera")
    exp.add_argument("--block-rows", type=int, default=65_536, help="rows per streamed block")
    sub.add_parser("schemas", help="export the JSON Schemas of every wire format")
    return parser


COMMANDS = {
    "worker": cmd_worker,
    "up": cmd_up,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "produce": cmd_produce,
    "visitor": cmd_visitor,
    "segments": cmd_segments,
    "deliver": cmd_deliver,
    "audiences": cmd_audiences,
    "report": cmd_report,
    "export": cmd_export,
    "schemas": cmd_schemas,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    quiet = args.command in (
        "demo",
        "visitor",
        "segments",
        "schemas",
        "simulate",
        "produce",
        "audiences",
        "report",
        "export",
    )
    configure_logging("WARNING" if quiet else settings.log_level, settings.log_json)
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
