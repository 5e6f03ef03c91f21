"""Tessera's full pipeline as a `tessera worker` subprocess: throughput, then restart and recovery.

A worker is started exactly like the end-to-end tests start one, by `streams.testing.WorkerProcess`:
`python -m streams.cli worker` with `TESSERA_*` variables naming this run's topics, consumer group,
Redis prefix, changelog topic and its own chDB folder. Readiness is GET /healthz `ready`; progress
is GET /v1/status `committed` compared with the end offsets the producer's RecordMetadata reported
(never ListOffsets, which the embedded broker answers short).

- throughput: events/s from the worker's readiness to every partition committed to its end;
  the worker process's CPU seconds over the same span give CPU µs per event; the record count the
  worker reports must equal the workload's (a worker may commit past records it dropped). A
  `live` variant (records produced once the worker is ready) is the fallback `python -m bench`
  runs when the pre-filled run fails (see LIVE_HINT);
- start-up: the worker is stopped (SIGTERM by PID) and a second one is spawned on the same group
  and changelog; spawn → /healthz ready, the worker's own `ready_after_s`, and the recovery rate
  `recovered_records / recovery_seconds` from /v1/status;
- recovery floor: a bare aiokafka consumer reading the same changelog topic to its Fetch high
  watermark (records/s), the I/O-only rate the worker's recovery is compared with.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.common import (
    PARTITIONS,
    ROOT,
    BenchError,
    BenchProcess,
    Workload,
    note,
    produce,
    python_env,
    wait_until,
)
from streams.testing import WaitTimeout, WorkerConfig, WorkerProcess, fetch_to_highwater

T = TypeVar("T")
POLL_S = 0.05
"""How often readiness and committed offsets are polled: the resolution of every span measured here."""


@dataclass
class WorkerSpec(WorkerConfig):
    """A bench worker deployment: topics, group and Redis prefix named `bench-…<run_id>`, six
    partitions, the web API on 127.0.0.1; the events topic (the 4th argument) is the workload's."""

    partitions: int = PARTITIONS
    prefix: str = "bench-"
    web_host: str | None = "127.0.0.1"


class Worker(BenchProcess, WorkerProcess):
    """One `tessera worker` subprocess and its web API, with the bench's waits and errors: ready
    within 120 s, polled every 50 ms; a failure is a BenchError."""

    ready_timeout_s = 120.0
    ready_poll_s = POLL_S
    healthz_timeout_s = 2.0
    status_timeout_s = 10.0

    def __init__(self, spec: WorkerConfig, name: str) -> None:
        super().__init__(spec, name, log_path=spec.data_dir / f"{name}.log", cwd=ROOT)

    def environment(self) -> dict[str, str]:
        return python_env(self.config.tessera_env(self.port))

    def wait(
        self,
        predicate: Callable[[], T | None],
        timeout: float,
        interval: float = POLL_S,
        message: str | None = None,
    ) -> T:
        """The bench's `wait_until` (anything but a BenchError is "not yet"), raising at once when
        this worker has exited."""

        def alive_and_holds() -> T | None:
            self.check_alive()
            return predicate()

        return wait_until(alive_and_holds, timeout, interval, message or "")

    def stop(self, timeout: float = 30.0, kill_timeout: float | None = None) -> int | None:
        return super().stop(timeout, kill_timeout)


class Progress:
    """Watches the statuses of a worker on its way to `ends`: a progress line every 10 s, and a
    BenchError when neither the committed offsets nor the processed-record count moved for
    `stall_s` seconds (a worker that fetched records and dropped them would otherwise hold the
    bench until the wait's timeout)."""

    def __init__(self, worker: Worker, ends: dict[int, int], stall_s: float = 30.0) -> None:
        self.worker, self.ends, self.stall_s = worker, ends, stall_s
        self.total = sum(ends.values())
        self.mark: object = None
        self.moved_at = self.noted_at = time.monotonic()

    def __call__(self, status: dict[str, Any]) -> None:
        committed = status["committed"]
        mark = (status.get("records"), tuple(sorted(committed.items())))
        now = time.monotonic()
        if now - self.noted_at >= 10:
            done_so_far = sum(min(committed.get(str(p), 0), end) for p, end in self.ends.items())
            note(f"{self.worker.name}: {done_so_far:,}/{self.total:,} committed")
            self.noted_at = now
        if mark != self.mark:
            self.mark, self.moved_at = mark, now
        elif now - self.moved_at > self.stall_s:
            raise BenchError(
                f"{self.worker.name} made no progress for {self.stall_s:.0f}s: processed "
                f"{status.get('records')} records, committed {committed}, expected {self.ends}; "
                f"log {self.worker.log_path}"
            )


@dataclass
class PipelineResult:
    events: int
    seconds: float
    events_per_s: float
    cpu_us_per_event: float
    gc_share: float
    """Share of the worker's CPU time spent in cyclic garbage collection (its gc callbacks)."""
    cores: float
    """The worker's CPU over the measured span / its length."""
    main_thread_cores: float
    """The same for its main thread alone: near 1.0, the batch loop is what bounds the worker."""
    ready_s: float
    """Spawn → /healthz ready on a fresh group (topic creation, DDL, group join, empty recovery)."""
    mode: str
    """`prefilled` (records in the topic before the worker starts) or `live` (produced after ready)."""
    status: dict[str, Any]
    log: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StartupResult:
    spawn_to_ready_s: float
    ready_after_s: float | None
    recovered_records: int
    recovery_seconds: float
    recovery_records_per_s: float
    profiles: int
    floor_records: int
    floor_seconds: float
    floor_records_per_s: float
    """A bare aiokafka consumer reading the same changelog to its high watermark."""
    log: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


LIVE_HINT = (
    "a worker started on a topic that already holds records dropped what it fetched while its "
    "partitions were being recovered: streams/engine.py `Engine.step` skips records of partitions "
    "whose state is not restored yet (aiokafka fetches during `on_partitions_assigned`), and a later "
    "commit on the partition moves past them"
)


def run_pipeline(
    workload: Workload,
    spec: WorkerSpec,
    timeout: float = 600,
    live_records: Sequence[tuple[bytes | None, bytes]] | None = None,
) -> PipelineResult:
    """Throughput of a fresh worker (group and topics of `spec`).

    Pre-filled (the default, `live_records` None): the worker reads the workload topic, which holds
    every record before it starts; events/s from /healthz ready to all offsets committed.
    Live (`live_records` given): `spec.events_topic` is a fresh, empty topic; the records are
    produced there once the worker is ready; events/s from the first send to all committed.

    Checked after the offsets are committed: the worker's `records` count must equal the number
    of records; offsets committed past records it never processed make the rate meaningless.
    """
    worker = Worker(spec, "worker-1" if live_records is None else "worker-1-live")
    expected = workload.events if live_records is None else len(live_records)
    note(f"pipeline: starting a tessera worker on {spec.events_topic} (group {spec.group_id})")
    try:
        worker.start()
        cpu_before = worker.cpu_seconds()
        main_before = worker.main_thread_cpu_seconds()
        gc_before = _gc_seconds(worker.status())
        ready_s = worker.ready_at - worker.spawned_at
        if live_records is None:
            ends, begun = workload.ends, worker.ready_at
            note(f"pipeline: worker ready after {ready_s:.1f}s; waiting for {expected:,} events committed")
        else:
            note(f"pipeline: worker ready after {ready_s:.1f}s; producing {expected:,} events to it now")
            begun = time.time()
            ends = asyncio.run(produce(spec.kafka, spec.events_topic, live_records))
            note(f"pipeline: produced in {time.time() - begun:.1f}s; waiting for all committed")
        try:
            status = worker.wait_committed(ends, timeout, POLL_S, Progress(worker, ends))
        except BenchError as exc:
            if live_records is not None:
                raise
            raise BenchError(f"{exc}\nlikely cause: {LIVE_HINT}") from exc
        finished = time.time()
        cpu = worker.cpu_seconds() - cpu_before
        main_cpu = worker.main_thread_cpu_seconds() - main_before
    finally:
        code = worker.stop()
        note(f"pipeline: worker stopped (exit {code})")
    seconds = finished - begun
    processed = int(status.get("records", -1))
    if processed != expected:
        raise BenchError(
            f"the worker committed every offset of {spec.events_topic} but processed {processed:,} of "
            f"{expected:,} records (committed {status.get('committed')}, {status.get('batches')} batches); "
            f"likely cause: {LIVE_HINT}; log {worker.log_path}"
        )
    result = PipelineResult(
        events=expected,
        seconds=seconds,
        events_per_s=expected / seconds,
        cpu_us_per_event=cpu / expected * 1e6,
        gc_share=(_gc_seconds(status) - gc_before) / cpu if cpu > 0 else 0.0,
        cores=cpu / seconds,
        main_thread_cores=main_cpu / seconds,
        ready_s=ready_s,
        mode="prefilled" if live_records is None else "live",
        status=status,
        log=str(worker.log_path),
    )
    note(
        f"pipeline: {result.events_per_s:,.0f} events/s ({result.cpu_us_per_event:,.0f} µs CPU per event, "
        f"{result.gc_share:.0%} of it cyclic GC; {result.cores:.2f} cores, "
        f"main thread {result.main_thread_cores:.2f})"
    )
    return result


@dataclass
class ScaleResult:
    workers: int
    events: int
    seconds: float
    events_per_s: float
    cpu_us_per_event: float
    """CPU of all workers over the span / events."""
    processed: int
    """Records the workers processed together: ≥ events (a rebalance replays from the last commit)."""
    logs: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_scaled(workload: Workload, specs: Sequence[WorkerSpec], timeout: float = 600) -> ScaleResult:
    """Throughput of several workers in one group (the same `run_id`) on the pre-filled topic.

    All are spawned at once, so they join the group's first generation together (the embedded
    broker answers a JoinGroup only after half the session timeout); events/s runs from the first
    worker's /healthz ready to every partition committed, rebalances included. Each worker has its
    own data folder (chDB's folder belongs to one process) and web port. Offsets are checked per
    partition as the highest any worker reports, since a worker keeps reporting partitions it owned
    before a rebalance.
    """
    workers = [Worker(spec, f"worker-scale-{i + 1}") for i, spec in enumerate(specs)]
    note(f"scale: {len(workers)} tessera workers in one group on {workload.topic}")
    ends = workload.ends
    try:
        for worker in workers:
            worker.spawn()
        for worker in workers:
            worker.wait_ready()
        begun = min(worker.ready_at for worker in workers)
        cpu_before = sum(worker.cpu_seconds() for worker in workers)
        note(f"scale: all ready after {max(w.ready_at - w.spawned_at for w in workers):.1f}s")

        def done() -> list[dict[str, Any]] | None:
            statuses = [worker.status() for worker in workers]
            committed: dict[int, int] = {}
            for status in statuses:
                for partition, offset in status["committed"].items():
                    committed[int(partition)] = max(committed.get(int(partition), 0), int(offset))
            if all(committed.get(p, 0) >= end for p, end in ends.items() if end > 0):
                return statuses
            return None

        statuses = wait_until(done, timeout, 0.05, f"{len(workers)} workers to commit {ends}")
        finished = time.time()
        cpu = sum(worker.cpu_seconds() for worker in workers) - cpu_before
    finally:
        for worker in workers:
            code = worker.stop()
            note(f"scale: {worker.name} stopped (exit {code})")
    processed = sum(int(status.get("records", 0)) for status in statuses)
    if processed < workload.events:
        raise BenchError(
            f"{len(workers)} workers committed every offset but processed {processed:,} of "
            f"{workload.events:,} records; logs {[str(w.log_path) for w in workers]}"
        )
    seconds = finished - begun
    result = ScaleResult(
        workers=len(workers),
        events=workload.events,
        seconds=seconds,
        events_per_s=workload.events / seconds,
        cpu_us_per_event=cpu / workload.events * 1e6,
        processed=processed,
        logs=[str(w.log_path) for w in workers],
    )
    note(
        f"scale: {len(workers)} workers {result.events_per_s:,.0f} events/s "
        f"({result.cpu_us_per_event:,.0f} µs CPU per event), {processed:,} records processed"
    )
    return result


def _gc_seconds(status: dict[str, Any]) -> float:
    return float(status.get("gc", {}).get("total_seconds", 0.0))


def run_restart(spec: WorkerSpec, timeout: float = 300) -> StartupResult:
    """Start a second worker on the group and changelog of `spec`; time readiness and recovery.

    The changelog is read by a bare consumer first (the floor, and the count the worker must
    recover: the second worker writes to the changelog itself once its timers fire).
    """
    floor_records, floor_s = asyncio.run(read_to_highwater(spec.kafka, spec.changelog_topic))
    worker = Worker(spec, "worker-2")
    note(f"startup: second worker on the existing group (changelog of {floor_records:,} records)")
    try:
        worker.start(ready_timeout=timeout)
        spawn_to_ready = worker.ready_at - worker.spawned_at
        status = worker.status()
    finally:
        code = worker.stop()
        note(f"startup: worker stopped (exit {code})")
    recovered = int(status.get("recovered_records", 0))
    recovery_s = float(status.get("recovery_seconds", 0.0))
    note(
        f"startup: ready {spawn_to_ready:.1f}s after spawn; "
        f"{recovered:,} changelog records in {recovery_s:.2f}s"
    )
    if floor_records != recovered:
        note(f"startup: the worker recovered {recovered:,} records, the changelog held {floor_records:,}")
    return StartupResult(
        spawn_to_ready_s=spawn_to_ready,
        ready_after_s=status.get("ready_after_s"),
        recovered_records=recovered,
        recovery_seconds=recovery_s,
        recovery_records_per_s=recovered / recovery_s if recovery_s > 0 else float("nan"),
        profiles=int(status.get("profiles", 0)),
        floor_records=floor_records,
        floor_seconds=floor_s,
        floor_records_per_s=floor_records / floor_s if floor_s > 0 else float("nan"),
        log=str(worker.log_path),
    )


def run_large_recovery(
    kafka: str,
    redis_url: str,
    workdir: Path,
    profiles: int,
    template_visitors: int,
    seed: int,
    timeout: float,
) -> StartupResult:
    """Start-up and recovery with `profiles` profiles in the changelog (the workload's changelog
    holds one record per visitor per checkpoint, ≈ 7k: too few to time recovery on).

    The changelog of a fresh deployment is filled with `profiles` real profiles, cloned from the
    full histories of `template_visitors` simulated visitors (`bench.memory`: ≈ 1.2 KB each),
    keyed and partitioned like the worker writes them; its events topic is empty. Then
    `run_restart`: a worker spawned on it must recover every record before /healthz says ready.
    """
    from bench.memory import clone_profiles, template_profiles
    from infra.topics import TopicSpec, ensure_topics

    spec = WorkerSpec(
        kafka, redis_url, workdir / "tessera-recovery", f"bench-recovery-{uuid.uuid4().hex[:8]}"
    )
    note(f"recovery: {profiles:,} profiles cloned from {template_visitors} simulated full histories")
    templates = template_profiles(template_visitors, seed)
    records = [(visitor_id.encode(), raw) for visitor_id, raw in clone_profiles(templates, profiles, seed)]
    asyncio.run(
        ensure_topics(
            kafka,
            [
                TopicSpec(spec.events_topic, PARTITIONS),
                TopicSpec(spec.changelog_topic, PARTITIONS, config={"cleanup.policy": "compact"}),
            ],
        )
    )
    begun = time.perf_counter()
    ends = asyncio.run(produce(kafka, spec.changelog_topic, records))
    note(f"recovery: {sum(ends.values()):,} changelog records produced in {time.perf_counter() - begun:.1f}s")
    result = run_restart(spec, timeout)
    if result.profiles != profiles:
        raise BenchError(f"the worker holds {result.profiles:,} profiles after recovery, not {profiles:,}")
    return result


async def read_to_highwater(bootstrap: str, topic: str, deadline_s: float = 300) -> tuple[int, float]:
    """Read every partition of `topic` to its Fetch high watermark; return (records, seconds)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        sizes: list[int] = []
        begun = time.perf_counter()
        try:
            await fetch_to_highwater(
                consumer, tps, deadline_s, lambda batch: sizes.append(len(batch)), max_records=50_000
            )
        except WaitTimeout as exc:
            raise BenchError(f"reading {topic} to its high watermark took over {deadline_s}s") from exc
        return sum(sizes), time.perf_counter() - begun
    finally:
        await consumer.stop()
