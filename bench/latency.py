"""Latency produce → segment change at fixed rates, and two floors without Tessera's work.

A paced producer sends page views stamped with the current time. Visitors take turns
(round-robin over `2 × rate` visitors, so one visitor's events are ≈ 2 s apart and never share a
worker batch), and each visitor's pages alternate /probe/odd, /probe/even, ... The worker runs with
`bench/latency_segments.yaml`, whose only segment `probe_odd` reads `last_page_path`, so every
event enters or exits it: one segment change per event, carrying the event's id as
`trigger_event_id`.

A consumer in this process (same clock as the producer, assigned to every partition of the
segment-changes topic before anything is sent) stamps each change on arrival:
latency = arrival time − the time just before the event's `send()`. Two floors use the same paced
producer and consumer on fresh topics: `floor` with nothing in between (one broker hop instead of
two), and `relay` with a bare consume → produce relay in its own process (`bench.relay`: the two
hops of produce → segment change with the worker's fetch, produce and commit settings).

The drain after the last send is a condition with deadlines: stop when every event is matched, or
when nothing new arrived for `drain_idle_s`, or at `drain_max_s`.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import (
    BENCH_DIR,
    PARTITIONS,
    BenchError,
    Child,
    busy_cpu_seconds,
    create_topics,
    note,
    percentile,
    python_env,
    wait_until,
)
from bench.pipeline import Worker, WorkerSpec
from bench.relay import READY_LINE

SEGMENTS_FILE = BENCH_DIR / "latency_segments.yaml"
ODD, EVEN = "/probe/odd", "/probe/even"
PRODUCER_LINGER_MS = 5


@dataclass
class LatencyRun:
    kind: str
    """`tessera` (produce → segment change) or `floor` (bare aiokafka produce → consume)."""
    rate: int
    seconds: float
    sent: int
    matched: int
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProbeEvents:
    """Page views for the probe, shaped like a simulated event (same fields, similar size)."""

    def __init__(self, template: dict[str, Any], label: str, visitors: int) -> None:
        self.template = _page_view(template)
        self.visitors = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{label}-{i}")) for i in range(visitors)]
        self.sessions = [f"s-bench-{label}-{i}" for i in range(visitors)]

    def build(self, i: int) -> tuple[bytes, bytes, str]:
        """The i-th event: (key, value, event_id); event_time is now."""
        n = len(self.visitors)
        slot = i % n
        path = ODD if (i // n) % 2 == 0 else EVEN
        # Shallow copies: the probe's own CPU competes with the worker for the same 2 cores.
        event_id = str(uuid.uuid4())
        event = {
            **self.template,
            "event_id": event_id,
            "visitor_id": self.visitors[slot],
            "session_id": self.sessions[slot],
            "event_time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "context": {
                **self.template["context"],
                "page_path": path,
                "page_url": f"https://shop.example{path}",
            },
        }
        return self.visitors[slot].encode(), orjson.dumps(event), event_id


def _page_view(sample: dict[str, Any]) -> dict[str, Any]:
    context = dict(sample.get("context", {}))
    context.pop("utm", None)
    context["referrer"] = "https://shop.example/"
    context["consent"] = {"analytics": True, "personalization": True, "marketing": True}
    return {
        "schema_version": 1,
        "event_id": "",
        "visitor_id": "",
        "session_id": "",
        "event_time": "",
        "type": "page_view",
        "context": context,
        "properties": {"page_type": "content", "title": "Latency probe page"},
    }


def _change_event_id(value: bytes) -> str | None:
    change = orjson.loads(value)
    found = change.get("trigger_event_id")
    if not isinstance(found, str):
        return None
    _PROCESSED_AT[found] = datetime.fromisoformat(change["processed_at"]).timestamp()
    return found


_PROCESSED_AT: dict[str, float] = {}
"""Trigger event id → the worker's batch start (`processed_at`) of its change: splits latency into
waiting for the worker (producer linger, broker, fetch, earlier batches) and the worker's own part."""


def _event_id(value: bytes) -> str | None:
    found = orjson.loads(value).get("event_id")
    return found if isinstance(found, str) else None


async def _consumer_at_start(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer on every partition of `topic` (still empty), positioned at its beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def paced_run(
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    topic: str,
    probe: ProbeEvents,
    rate: int,
    seconds: float,
    match: Callable[[bytes], str | None],
    kind: str,
    drain_idle_s: float = 3.0,
    drain_max_s: float = 30.0,
) -> LatencyRun:
    total = max(1, int(rate * seconds))
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    producing = True
    produce_ended = 0.0

    async def consume() -> None:
        last_progress = time.monotonic()
        while True:
            polled = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for batch in polled.values():
                for record in batch:
                    event_id = match(record.value) if record.value is not None else None
                    if event_id is not None and event_id in sent and event_id not in arrived:
                        arrived[event_id] = now
                        last_progress = time.monotonic()
            if not producing:
                clock = time.monotonic()
                if len(arrived) >= len(sent):
                    return
                if clock - last_progress > drain_idle_s or clock - produce_ended > drain_max_s:
                    return

    consumer_task = asyncio.create_task(consume())
    pending = []
    begun = time.perf_counter()
    i = 0
    try:
        while i < total:
            due = min(total, int((time.perf_counter() - begun) * rate) + 1)
            while i < due:
                key, value, event_id = probe.build(i)
                sent[event_id] = time.time()
                pending.append(await producer.send(topic, value, key=key))
                i += 1
            await asyncio.sleep(0.001)  # pacing tick of the producer, not a synchronisation
        produce_seconds = time.perf_counter() - begun
        await asyncio.gather(*pending)
    finally:
        producing = False
        produce_ended = time.monotonic()
    await consumer_task
    latencies = [(arrived[e] - sent[e]) * 1000 for e in arrived]
    split = [e for e in arrived if e in _PROCESSED_AT]
    if split:
        before = [(_PROCESSED_AT[e] - sent[e]) * 1000 for e in split]
        after = [(arrived[e] - _PROCESSED_AT[e]) * 1000 for e in split]
        note(
            f"latency {kind} @{rate}/s: send → worker batch start p50 {percentile(before, 50):.1f} "
            f"p99 {percentile(before, 99):.1f} ms; batch start → change consumed p50 "
            f"{percentile(after, 50):.1f} p99 {percentile(after, 99):.1f} ms"
        )
    return LatencyRun(
        kind=kind,
        rate=rate,
        seconds=produce_seconds,
        sent=len(sent),
        matched=len(arrived),
        achieved_rate=len(sent) / produce_seconds if produce_seconds else float("nan"),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies) if latencies else float("nan"),
    )


async def _measure(
    bootstrap: str,
    produce_topic: str,
    consume_topic: str,
    rates: list[int],
    seconds: float,
    template: dict[str, Any],
    match: Callable[[bytes], str | None],
    kind: str,
) -> list[LatencyRun]:
    # The product's producer default (`streams.producer`, 5 ms): with linger 0 every record is its
    # own produce request, and the embedded broker spent 0.76 cores on them at 2,000/s (floor p99
    # 121 ms vs 16 ms with 5 ms). The linger is inside the measured latency.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=PRODUCER_LINGER_MS, acks="all")
    await producer.start()
    consumer = await _consumer_at_start(bootstrap, consume_topic)
    runs: list[LatencyRun] = []
    try:
        # Warm-up (not reported): metadata, connections, the worker's first batches.
        warm = ProbeEvents(template, f"{kind}-warmup", 200)
        await paced_run(producer, consumer, produce_topic, warm, 200, 1.0, match, kind, drain_idle_s=2.0)
        for rate in rates:
            probe = ProbeEvents(template, f"{kind}-{rate}", max(2 * rate, 10))
            run = await paced_run(producer, consumer, produce_topic, probe, rate, seconds, match, kind)
            note(
                f"latency {kind} @{rate}/s: p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, "
                f"{run.matched:,}/{run.sent:,} matched"
            )
            runs.append(run)
    finally:
        await consumer.stop()
        await producer.stop()
    return runs


def measure_floor(
    bootstrap: str, rates: list[int], seconds: float, template: dict[str, Any]
) -> list[LatencyRun]:
    """Bare aiokafka produce → consume, each rate on a fresh topic (the floor).

    A fresh topic per rate: the embedded broker's in-memory storage slows down as a partition
    accumulates record batches (four 8 s runs at 2,000/s on one topic: p99 21, 140, 312, 455 ms;
    on four fresh topics: 18–30 ms each), so a shared topic would measure the run order.
    """
    note(f"latency floor: bare aiokafka round trip at {rates} events/s, {seconds:.0f}s each")
    runs: list[LatencyRun] = []
    for rate in rates:
        topic = f"bench-latency-floor-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topics(bootstrap, [topic]))
        runs += asyncio.run(_measure(bootstrap, topic, topic, [rate], seconds, template, _event_id, "floor"))
    return runs


def _relay_ready(child: Child) -> bool:
    child.check_alive()
    return READY_LINE in child.log_tail()


def measure_relay(
    kafka: str, workdir: Path, rates: list[int], seconds: float, template: dict[str, Any]
) -> list[LatencyRun]:
    """Produce → bare relay (`bench.relay`, a child process) → consume: the two-hop floor.

    The same two broker hops as produce → segment change, with the worker's fetch, produce and
    commit settings and no work in between; fresh topics and group per rate, like the worker.
    """
    note(f"latency relay: bare aiokafka consume → produce relay at {rates} events/s, {seconds:.0f}s each")
    runs: list[LatencyRun] = []
    for rate in rates:
        run_id = uuid.uuid4().hex[:10]
        source, target = f"bench-relay-in-{run_id}", f"bench-relay-out-{run_id}"
        asyncio.run(create_topics(kafka, [source, target]))
        child = Child(
            f"relay-{rate}",
            [sys.executable, "-m", "bench.relay", kafka, source, target, f"bench-relay-{run_id}"],
            python_env(),
            workdir / f"relay-{rate}-{run_id}.log",
        )
        try:
            child.start()

            wait_until(functools.partial(_relay_ready, child), 60, 0.05, f"{child.name} {READY_LINE}")
            runs += asyncio.run(
                _measure(kafka, source, target, [rate], seconds, template, _event_id, "relay")
            )
        finally:
            code = child.stop()
            if code not in (0, None):
                note(f"latency relay: exit {code}; log {child.log_path}")
    return runs


def measure_tessera(
    kafka: str, redis_url: str, workdir: Path, rates: list[int], seconds: float, template: dict[str, Any]
) -> list[LatencyRun]:
    """Produce → segment change through a worker running the bench's flip-on-every-event segment.

    One fresh worker deployment (topics, group, changelog) per rate, like the floor's fresh topic.
    """
    note(f"latency: a worker with {SEGMENTS_FILE.name} per rate, at {rates} events/s, {seconds:.0f}s each")
    runs: list[LatencyRun] = []
    for rate in rates:
        run_id = uuid.uuid4().hex[:10]
        topic = f"bench-latency-events-{run_id}"
        asyncio.run(create_topics(kafka, [topic]))
        spec = WorkerSpec(
            kafka, redis_url, workdir / f"latency-{rate}", topic, run_id=run_id, segments_file=SEGMENTS_FILE
        )
        worker = Worker(spec, f"worker-latency-{rate}")
        try:
            worker.start()
            cpu_before, busy_before, wall_before = worker.cpu_seconds(), busy_cpu_seconds(), time.monotonic()
            before = worker.status()
            runs += asyncio.run(
                _measure(
                    kafka, topic, spec.changes_topic, [rate], seconds, template, _change_event_id, "tessera"
                )
            )
            status = worker.status()
            wall = time.monotonic() - wall_before
            note(
                f"latency tessera @{rate}/s (with warm-up and drain): worker used "
                f"{(worker.cpu_seconds() - cpu_before) / wall:.2f} cores, the whole machine "
                f"{(busy_cpu_seconds() - busy_before) / wall:.2f} of {psutil.cpu_count()}"
            )
            batches = int(status.get("batches", 0)) - int(before.get("batches", 0))
            records = int(status.get("records", 0)) - int(before.get("records", 0))
            checkpoints = int(status.get("checkpoints", 0)) - int(before.get("checkpoints", 0))
            note(
                f"latency tessera @{rate}/s: {batches / wall:,.0f} batches/s of "
                f"{records / max(batches, 1):.1f} records, {checkpoints / wall:.1f} checkpoints/s"
            )
            note(
                f"latency tessera @{rate}/s: worker loop blocked at most {status.get('loop_lag_max_ms')} ms, "
                f"{status.get('loop_stalls_over_50ms')} stalls > 50 ms, {status.get('slow_batches')} slow "
                f"batches; GC {status.get('gc')}"
            )
        finally:
            code = worker.stop()
            note(f"latency: worker stopped (exit {code})")
        if not runs[-1].matched:
            raise BenchError(f"no segment change matched a probe event; worker log {worker.log_path}")
    return runs
