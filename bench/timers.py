"""Timer latency: how long after its due moment a time-driven segment change reaches a consumer.

A worker with the shipped definitions (`segments/default.yaml`) gets one add-to-cart per visitor,
sent in one burst. Each event is stamped so that its `cart_abandoners` recheck (30 minutes after the
add) falls due a few seconds after the burst, spread evenly over the visitors (`min_delay_s` to
`max_delay_s`). After the burst nothing is sent: the partitions are idle and only the timers make
changes. A consumer in this process (the same clock as the stamps), assigned to every partition of
the segment-changes topic before anything is sent, stamps each `cart_abandoners` entry on arrival:
lateness = arrival − due moment. The worker's own share is the change's `processed_at` (its batch
start) − due moment.

    .venv/bin/python -m bench.timers               # its own embedded stack in a temporary folder
    .venv/bin/python -m bench --steps timers       # as a step of the bench, in its table

The wait for the changes is a condition with a deadline: every visitor's entry arrived, or
`drain_s` past the latest due moment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import BenchError, create_topics, note, percentile
from bench.latency import PRODUCER_LINGER_MS, _consumer_at_start
from bench.pipeline import Worker, WorkerSpec
from streams.settings import DEFAULT_SEGMENTS_FILE

SEGMENT = "cart_abandoners"
ABANDON_AFTER_S = 30 * 60
"""The segment's `recheck` delay in `segments/default.yaml`: its timer is due this long after the add."""


@dataclass
class TimerRun:
    visitors: int
    matched: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    fired_p50_ms: float
    """The worker's share: its batch start (`processed_at`) − due moment."""
    fired_p99_ms: float
    reasons: dict[str, int]
    """Reasons the matched changes carried (all `timer` when the timers decided)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _add_to_cart(visitor_id: str, event_time: str) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "visitor_id": visitor_id,
            "session_id": f"s-{visitor_id}",
            "event_time": event_time,
            "type": "add_to_cart",
            "context": {
                "ip": "178.197.224.1",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/120.0 Safari/537.36",
                "page_path": "/cart",
                "page_url": "https://shop.example/cart",
                "consent": {"analytics": True, "personalization": True, "marketing": True},
            },
            "properties": {"product_id": "P-1", "price": 19.9},
        }
    )


async def _run(
    bootstrap: str,
    events_topic: str,
    changes_topic: str,
    visitors: int,
    min_delay_s: float,
    max_delay_s: float,
    drain_s: float,
) -> TimerRun:
    consumer = await _consumer_at_start(bootstrap, changes_topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=PRODUCER_LINGER_MS, acks="all")
    await producer.start()
    label = uuid.uuid4().hex[:8]
    due: dict[str, float] = {}
    arrived: dict[str, float] = {}
    processed: dict[str, float] = {}
    reasons: dict[str, int] = {}
    try:
        base = time.time()
        pending = []
        for i in range(visitors):
            visitor_id = f"timer-{label}-{i}"
            delay = min_delay_s + (max_delay_s - min_delay_s) * i / max(visitors - 1, 1)
            stamp = datetime.fromtimestamp(base + delay - ABANDON_AFTER_S, UTC).isoformat(
                timespec="milliseconds"
            )
            # The due moment as the worker reads it: the stamp's own milliseconds + the delay.
            due[visitor_id] = datetime.fromisoformat(stamp).timestamp() + ABANDON_AFTER_S
            pending.append(
                await producer.send(events_topic, _add_to_cart(visitor_id, stamp), key=visitor_id.encode())
            )
        await asyncio.gather(*pending)
        note(f"timers: {visitors} add-to-carts sent; due {min_delay_s:g}–{max_delay_s:g} s after the send")
        deadline = max(due.values()) + drain_s
        while len(arrived) < visitors and time.time() < deadline:
            polled = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for batch in polled.values():
                for record in batch:
                    change = orjson.loads(record.value) if record.value is not None else {}
                    whose = change.get("visitor_id")
                    if (
                        change.get("segment") == SEGMENT
                        and change.get("transition") == "entered"
                        and whose in due
                        and whose not in arrived
                    ):
                        arrived[whose] = now
                        processed[whose] = datetime.fromisoformat(change["processed_at"]).timestamp()
                        reasons[change["reason"]] = reasons.get(change["reason"], 0) + 1
    finally:
        await producer.stop()
        await consumer.stop()
    late = [(arrived[v] - due[v]) * 1000 for v in arrived]
    fired = [(processed[v] - due[v]) * 1000 for v in arrived]
    return TimerRun(
        visitors=visitors,
        matched=len(arrived),
        p50_ms=percentile(late, 50),
        p99_ms=percentile(late, 99),
        max_ms=max(late, default=float("nan")),
        min_ms=min(late, default=float("nan")),
        fired_p50_ms=percentile(fired, 50),
        fired_p99_ms=percentile(fired, 99),
        reasons=reasons,
    )


def measure_timers(
    kafka: str,
    redis_url: str,
    workdir: Path,
    visitors: int = 200,
    min_delay_s: float = 3.0,
    max_delay_s: float = 13.0,
    drain_s: float = 15.0,
) -> TimerRun:
    """Due moment → time-driven change consumed, through a fresh worker deployment on `kafka`."""
    run_id = uuid.uuid4().hex[:10]
    topic = f"bench-timers-events-{run_id}"
    asyncio.run(create_topics(kafka, [topic]))
    # The shipped definitions whatever `--segments-file` says: the step measures their cart timer.
    spec = WorkerSpec(
        kafka, redis_url, workdir / "timers", topic, run_id=run_id, segments_file=DEFAULT_SEGMENTS_FILE
    )
    worker = Worker(spec, "worker-timers")
    note(
        f"timers: a worker with the shipped definitions, {visitors} carts abandoned due in {min_delay_s:g}–"
        f"{max_delay_s:g} s"
    )
    try:
        worker.start()
        result = asyncio.run(
            _run(kafka, topic, spec.changes_topic, visitors, min_delay_s, max_delay_s, drain_s)
        )
    finally:
        code = worker.stop()
        note(f"timers: worker stopped (exit {code})")
    if not result.matched:
        raise BenchError(f"no {SEGMENT} entry arrived; worker log {worker.log_path}")
    note(
        f"timers: due → consumed p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max "
        f"{result.max_ms:.1f} ms (min {result.min_ms:.1f}); due → worker batch start p50 "
        f"{result.fired_p50_ms:.1f} p99 {result.fired_p99_ms:.1f} ms; {result.matched}/{result.visitors} "
        f"matched, reasons {result.reasons}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    from infra.stack import EmbeddedStack
    from streams.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m bench.timers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--min-delay", type=float, default=3.0, help="earliest due moment, s after the send")
    parser.add_argument("--max-delay", type=float, default=13.0, help="latest due moment, s after the send")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="tessera-bench-timers-") as folder:
        workdir = Path(folder)
        stack = EmbeddedStack(workdir / "stack")
        endpoints = stack.start()
        try:
            result = measure_timers(
                endpoints.kafka_bootstrap,
                endpoints.redis_url,
                workdir,
                args.visitors,
                args.min_delay,
                args.max_delay,
            )
        finally:
            stack.stop()
    print(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0 if result.matched == result.visitors else 1


if __name__ == "__main__":
    sys.exit(main())
