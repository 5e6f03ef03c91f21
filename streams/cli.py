"""The `tessera` command: worker, up, demo, simulate, produce, visitor, segments, schemas."""

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
    from streams.core.definitions import Definitions

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


def _endpoints_for(settings: Settings) -> dict[str, str] | None:
    """Configured endpoints, or those of a stack `tessera up` runs in the data folder."""
    saved = settings.data_dir / ENDPOINTS_FILE
    found: dict[str, str] = {}
    if saved.exists():
        found = json.loads(saved.read_text())
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


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import EmbeddedStack
    from streams.app import Endpoints, run_worker

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
        print(f"Collector         POST {web}/v1/events")
        print(f"Visitor API       GET  {web}/v1/visitors/<visitor_id>")
        print(f"Segments / report GET  {web}/v1/segments   {web}/v1/report   {web}/v1/status")
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


def cmd_segments(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else settings.segments_file
    defs = _definitions(path)
    if defs is None:
        return 1
    if args.action == "validate":
        print(
            f"ok: {path} version {defs.version}: {len(defs.segments)} segments, {len(defs.triggers)} triggers"
        )
        return 0
    for seg in defs.segments:
        print(f"{seg.id:34} {seg.description}")
    return 0


def cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    from schemas.export import SCHEMA_DIR, main

    main()
    print(f"exported JSON Schemas to {SCHEMA_DIR}")
    return 0


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
    segments = sub.add_parser("segments", help="list or validate segment definitions")
    segments.add_argument("action", choices=["list", "validate"])
    segments.add_argument("file", nargs="?")
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
    "schemas": cmd_schemas,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    quiet = args.command in ("demo", "visitor", "segments", "schemas", "simulate", "produce")
    configure_logging("WARNING" if quiet else settings.log_level, settings.log_json)
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
