"""The profile worker's batch loop: Kafka in, core in the middle, every effect out.

Partition ownership comes from a Kafka consumer group (`settings.group_id`): partitions of the
events topic are spread over the workers; each worker holds the profiles of its partitions in
memory (`ProfileStore`), backed by a changelog topic with the same partition numbers.

Per batch (the latency path, `Engine._publish`): the core's results go to memory, segment changes,
messages and dead letters are sent, and Redis is written. Every `checkpoint_interval_ms` (or
`checkpoint_max_rows` buffered rows) a snapshot of what is pending is taken and written by the
commit protocol, beside the next batches, in this order (`Engine._write_snapshot`):

1. sinks:   buffered ClickHouse rows inserted with a deterministic deduplication token; the
            latest profile summary of each touched visitor written to Redis; the broker's acks
            for every topic send since the last checkpoint awaited;
2. state:   one changelog record per visitor touched since the last checkpoint, acknowledged;
3. offsets: the source offsets processed since the last checkpoint are committed.

Like quixstreams' checkpoints, this writes each profile once per checkpoint, not once per event,
and keeps slow sinks (a ClickHouse insert) off the latency path. A crash anywhere before 3 replays
from the last committed offsets. Replays are exact for
state (each profile remembers the last source offset folded into it, so restored profiles skip what
they already contain) and idempotent for sinks (ReplacingMergeTree on event/change ids plus insert
tokens in ClickHouse; set/replace semantics in Redis). Topic outputs are at-least-once with
deterministic ids (`change_id`, `message_id`) so consumers can drop redeliveries.

Recovery reads each assigned changelog partition to the high watermark reported by Fetch, not to
ListOffsets, which the embedded broker answers short (see DESIGN.md).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from schemas.deadletter import DeadLetter
from sinks.clickhouse import AnalyticsBatch, AnalyticsSink
from sinks.redis_serving import ServingStore, VisitorUpdate
from streams.core.batch import BatchResult, IngestLimits, Record, process_batch
from streams.core.enrich import Enricher
from streams.core.profile import Profile, profile_clock_fields
from streams.core.segments import Definitions
from streams.logging import get_logger
from streams.partitioning import partition_for
from streams.profile_store import close_partition_profiles, new_partition_profiles
from streams.settings import Settings

log = get_logger(__name__)

SERIALISE_SLICE = 100
"""Profiles a checkpoint serialises before it yields to the batch loop (≈ 2 ms of work)."""

RECOVERY_FETCH_MAX_WAIT_MS = 5
"""Recovery reads partitions that hold data up to their high watermark: no reason to wait long."""


@dataclass(slots=True)
class PartitionState:
    """Everything a worker holds for one owned partition."""

    profiles: MutableMapping[str, bytes | Profile] = field(default_factory=dict)
    """Serialised profiles; a visitor touched since the last checkpoint is held decoded (the next
    batch skips decoding it) and serialised once, by the checkpoint that writes its changelog."""
    due: list[tuple[float, str]] = field(default_factory=list)
    """Heap of (due time, visitor); entries that no longer match `next_due` are stale."""
    next_due: dict[str, float] = field(default_factory=dict)
    """Each visitor's current timer (its profile's `next_check_at`)."""
    clock: float = 0.0
    """Event-time clock: newest event time seen, capped at the wall clock."""
    last_record_wall: float = 0.0
    """Wall time the partition last delivered records (for the idle fallback)."""


@dataclass(slots=True)
class EngineStats:
    batches: int = 0
    records: int = 0
    events_applied: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    replayed: int = 0
    changes: int = 0
    messages: int = 0
    timer_evaluations: int = 0
    restarts: int = 0
    checkpoints: int = 0
    changelog_writes: int = 0
    recovered_records: int = 0
    recovery_seconds: float = 0.0
    committed: dict[int, int] = field(default_factory=dict)
    slow_batches: int = 0
    loop_lag_max_ms: float = 0.0
    """Longest time the event loop was blocked (a 10 ms watchdog timer's lateness)."""
    loop_stalls_over_50ms: int = 0
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "records": self.records,
            "events_applied": self.events_applied,
            "dead_letters": self.dead_letters,
            "duplicates": self.duplicates,
            "replayed": self.replayed,
            "changes": self.changes,
            "messages": self.messages,
            "timer_evaluations": self.timer_evaluations,
            "restarts": self.restarts,
            "checkpoints": self.checkpoints,
            "changelog_writes": self.changelog_writes,
            "recovered_records": self.recovered_records,
            "recovery_seconds": round(self.recovery_seconds, 3),
            "committed": {str(p): o for p, o in sorted(self.committed.items())},
            "slow_batches": self.slow_batches,
            "loop_lag_max_ms": round(self.loop_lag_max_ms, 1),
            "loop_stalls_over_50ms": self.loop_stalls_over_50ms,
            "ready_after_s": None if self.ready_at is None else round(self.ready_at - self.started_at, 3),
        }


@dataclass(slots=True)
class _Snapshot:
    """Everything one checkpoint makes durable, captured when it was taken."""

    offsets: dict[TopicPartition, int]
    token: str
    rows: list[Any]
    changes: list[Any]
    messages: list[Any]
    sends: list[asyncio.Future[Any]]
    changelog: list[tuple[str, int, bytes]]
    serving: list[VisitorUpdate]
    unserialised: dict[str, tuple[int, Profile]] = field(default_factory=dict)
    """Visitors whose profile this checkpoint holds as the live object, not yet serialised:
    `_write_snapshot` serialises them in slices between batches, and a batch about to change one
    serialises it first (`Engine._profile`), so the snapshot sees each exactly as of when it was
    taken."""


class ProfileStore:
    """Profiles of the owned partitions, in memory, restored from the changelog on assignment."""

    def __init__(self) -> None:
        self.partitions: dict[int, PartitionState] = {}

    def get(self, visitor_id: str, partition: int) -> bytes | Profile | None:
        state = self.partitions.get(partition)
        if state is not None:
            found = state.profiles.get(visitor_id)
            if found is not None:
                return found
        # A visitor keyed inconsistently may live elsewhere; look before creating a second one.
        for other in self.partitions.values():
            found = other.profiles.get(visitor_id)
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return sum(len(s.profiles) for s in self.partitions.values())

    def drop(self, partition: int) -> None:
        """Let go of a partition (revoked): its profiles are in the changelog."""
        state = self.partitions.pop(partition, None)
        if state is not None:
            close_partition_profiles(state.profiles)

    def drop_all(self) -> None:
        for partition in list(self.partitions):
            self.drop(partition)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Checkpoint what was processed (so the next owner does not replay it), then let go.
        revoked = list(revoked)
        async with self.engine._lock:
            if self.engine.consumer is not None and revoked:
                await self.engine._checkpoint(wait=True)
            for tp in revoked:
                self.engine.store.drop(tp.partition)
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        await self.engine.recover(sorted(tp.partition for tp in assigned))
        consumer = self.engine.consumer
        if consumer is not None:
            # Start the progress report from the group's committed offsets (an earlier owner's).
            for tp in assigned:
                committed = await consumer.committed(tp)
                self.engine.stats.committed[tp.partition] = committed or 0


class Engine:
    """Owns the consumer, producer and store; runs batches through the core and commits them."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        defs: Definitions,
        enricher: Enricher,
        analytics: AnalyticsSink,
        serving: ServingStore,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.defs = defs
        self.enricher = enricher
        self.analytics = analytics
        self.serving = serving
        self.store = ProfileStore()
        self.stats = EngineStats()
        self.limits = IngestLimits(
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            dedupe_window=settings.dedupe_window,
        )
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._analytics_lock = asyncio.Lock()
        self._recovery_lock = asyncio.Lock()
        self._lock = asyncio.Lock()
        """Serialises batches, checkpoints and rebalance callbacks (aiokafka runs those in its
        coordinator task, concurrently with the loop)."""
        self._pending_offsets: dict[TopicPartition, int] = {}
        self._checkpoint_start: dict[TopicPartition, int] = {}
        self._pending_rows: list[Any] = []
        self._pending_changes: list[Any] = []
        self._pending_messages: list[Any] = []
        self._pending_sends: list[asyncio.Future[Any]] = []
        self._dirty: dict[str, int] = {}
        self._served: set[str] = set()
        """Visitors whose segment set this process has written (a first write is always full)."""
        self._last_checkpoint = time.monotonic()
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_snapshot: _Snapshot | None = None
        """The checkpoint being written, whose live profiles a batch must serialise before use."""
        self._records_since_checkpoint = 0
        self._timers_backlog = False
        """Due timers are still queued past `timers_per_batch` (see `_pop_due`)."""
        self._last_core_s = 0.0
        self._last_serving_s = 0.0
        self.watch_loop = True
        """Record loop stalls (`stats.loop_lag_max_ms`); the worker turns it on after its set-up."""

    # -- lifecycle --------------------------------------------------------------------------------

    async def start_producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            options = producer_options(self.settings)
            self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **options)
            await self.producer.start()
        return self.producer

    async def run(self) -> None:
        """Run batches until `stop()`; any failure restarts the loop from committed offsets."""
        await self.start_producer()
        watchdog = asyncio.ensure_future(self._watch_loop())
        try:
            await self._run_until_stopped()
        finally:
            watchdog.cancel()

    async def _watch_loop(self, tick_s: float = 0.01) -> None:
        """Measure how long the event loop is blocked (batches, GC, a sink holding the GIL)."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(tick_s)  # a watchdog tick, not a synchronisation
            lag_ms = (time.perf_counter() - before - tick_s) * 1000
            if not self.watch_loop:
                continue
            if lag_ms > self.stats.loop_lag_max_ms:
                self.stats.loop_lag_max_ms = lag_ms
            if lag_ms > 50:
                self.stats.loop_stalls_over_50ms += 1

    async def _run_until_stopped(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                await self._run_consumer()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.restarts += 1
                log.error("engine_failed_restarting", error=repr(exc), backoff_s=backoff)
                await self._close_consumer()
                self.store.drop_all()
                if self._inflight is not None:
                    self._inflight.cancel()
                    self._inflight = None
                self._inflight_snapshot = None
                self._reset_buffers()  # uncommitted: the restart replays them
                self._served.clear()
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 10.0)

    async def stop(self) -> None:
        self._stopping.set()
        if self.consumer is not None:
            try:
                await self.checkpoint()
            except Exception as exc:
                log.warning("final_checkpoint_failed", error=repr(exc))
        await self._close_consumer()
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        self.store.drop_all()  # a disk store's folders go; the changelog has every profile

    async def _close_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:
                log.warning("consumer_stop_failed", error=repr(exc))

    async def _run_consumer(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **consumer_options(s))
        self.consumer = consumer
        await consumer.start()
        consumer.subscribe([s.events_topic], listener=_Rebalance(self))
        log.info("engine_started", group=s.group_id, topic=s.events_topic)
        while not self._stopping.is_set():
            # Due timers left over from the last batch: poll without waiting, then evaluate them.
            wait_ms = 0 if self._timers_backlog else 100
            polled = await consumer.getmany(timeout_ms=wait_ms, max_records=s.batch_max_records)
            await self.step(polled)

    def timers(self) -> dict[str, int | bool]:
        """Timers queued over the owned partitions, and whether due ones wait past a batch's cap."""
        queued = sum(len(state.next_due) for state in self.store.partitions.values())
        return {"queued": queued, "backlog": self._timers_backlog}

    async def lag(self) -> dict[str, dict[str, int | None]]:
        """Per owned partition: position, Fetch high watermark and lag (never ListOffsets)."""
        consumer = self.consumer
        out: dict[str, dict[str, int | None]] = {}
        if consumer is None:
            return out
        for tp in sorted(consumer.assignment()):
            try:
                position: int | None = await consumer.position(tp)
            except Exception:
                position = None
            highwater = consumer.highwater(tp)
            lag = highwater - position if highwater is not None and position is not None else None
            out[str(tp.partition)] = {"position": position, "highwater": highwater, "lag": lag}
        return out

    # -- one batch ------------------------------------------------------------------------------

    async def step(self, polled: dict[TopicPartition, list[Any]]) -> BatchResult | None:
        """Process one poll: core, then the latency path (topics, Redis); checkpoint when due."""
        async with self._lock:
            begun = time.perf_counter()
            if self._inflight is not None and self._inflight.done():
                await self._await_inflight()  # re-raises a failed checkpoint: restart the loop
            result = await self._process(polled)
            processed = time.perf_counter()
            if self._checkpoint_due() and not self._checkpoint_running():
                await self._checkpoint(wait=False)
            ended = time.perf_counter()
            if (ended - begun) * 1000 > self.settings.slow_batch_ms:
                self.stats.slow_batches += 1
                log.warning(
                    "slow_batch",
                    records=sum(len(b) for b in polled.values()),
                    core_ms=round(self._last_core_s * 1000, 1),
                    serving_ms=round(self._last_serving_s * 1000, 1),
                    process_and_publish_ms=round((processed - begun) * 1000, 1),
                    checkpoint_snapshot_ms=round((ended - processed) * 1000, 1),
                )
            return result

    async def _process(self, polled: dict[TopicPartition, list[Any]]) -> BatchResult | None:
        # aiokafka applies a new assignment (and starts fetching) before it awaits the rebalance
        # listener, so records can arrive while recovery still runs: recover them here first.
        missing = [
            tp.partition
            for tp, batch in polled.items()
            if batch and tp.partition not in self.store.partitions
        ]
        if missing:
            await self.recover(missing)
        wall = time.time()
        records: list[Record] = []
        for tp, batch in polled.items():
            if not batch:
                continue
            self.store.partitions[tp.partition].last_record_wall = wall
            records += batch  # aiokafka's ConsumerRecords: partition, offset, key, value
            self._pending_offsets[tp] = batch[-1].offset + 1
        clocks = self._clocks(wall)
        due = self._pop_due(clocks)
        if not records and not due:
            return None
        core_begun = time.perf_counter()
        result = process_batch(
            records,
            self._profile,
            due,
            clocks,
            defs=self.defs,
            enricher=self.enricher,
            limits=self.limits,
            wall_now=wall,
            topic=self.settings.events_topic,
        )
        self._last_core_s = time.perf_counter() - core_begun
        await self._publish(result)
        self._count(result, len(records))
        self._records_since_checkpoint += len(records)
        return result

    async def _publish(self, result: BatchResult) -> None:
        """Apply a batch to memory and send what downstream waits for; buffer the rest."""
        s = self.settings
        # Memory first: the next batch must see these profiles and timers.
        for partition, clock in result.clocks.items():
            state = self.store.partitions.get(partition)
            if state is not None:
                state.clock = max(state.clock, clock)
        for visitor_id, effect in result.visitors.items():
            state = self.store.partitions.get(effect.partition)
            if state is None:
                continue
            state.profiles[visitor_id] = effect.profile  # serialised by the next checkpoint
            self._dirty[visitor_id] = effect.partition
            self._schedule(state, visitor_id, effect.profile.next_check_at)
        # Latency path: segment changes, messages and dead letters go out now; their acks are
        # awaited at the checkpoint, before any offset is committed.
        producer = await self.start_producer()
        sends = self._pending_sends
        if result.dead_letters:
            sends += await send_all(
                producer, s.dlq_topic, [(_key(d.key), _dlq_value(d)) for d in result.dead_letters]
            )
        if result.changes:
            sends += await send_all(
                producer,
                s.changes_topic,
                [(c.visitor_id.encode(), c.model_dump_json().encode()) for c in result.changes],
            )
        if result.messages:
            sends += await send_all(
                producer,
                s.messages_topic,
                [(m.visitor_id.encode(), m.model_dump_json().encode()) for m in result.messages],
            )
        # Serving: segment sets, member sets and inboxes now (they are what a website reacts to);
        # profile summaries once per checkpoint, the latest per visitor (most of Redis' cost).
        urgent = []
        for visitor_id, effect in result.visitors.items():
            profile = effect.profile
            if effect.entered or effect.exited or effect.messages or visitor_id not in self._served:
                urgent.append(
                    VisitorUpdate(
                        visitor_id=visitor_id,
                        summary=None,
                        segments=list(profile.segments),
                        entered=effect.entered,
                        exited=effect.exited,
                        messages=effect.messages,
                    )
                )
                self._served.add(visitor_id)
        if urgent:
            serving_begun = time.perf_counter()
            await self.serving.write(urgent)
            self._last_serving_s = time.perf_counter() - serving_begun
        else:
            self._last_serving_s = 0.0
        self._pending_rows.extend(result.analytics_rows)
        self._pending_changes.extend(result.changes)
        self._pending_messages.extend(result.messages)

    def _checkpoint_due(self) -> bool:
        if not (self._pending_offsets or self._dirty or self._pending_rows or self._pending_sends):
            return False
        s = self.settings
        elapsed_ms = (time.monotonic() - self._last_checkpoint) * 1000
        enough = self._records_since_checkpoint >= s.checkpoint_min_records
        # Low traffic waits for `checkpoint_min_records` (up to the max interval): each ClickHouse
        # insert has a fixed cost of ≈ 10 ms CPU, which at a few events/s was most of the worker's.
        return (
            len(self._pending_rows) >= s.checkpoint_max_rows
            or elapsed_ms >= max(s.checkpoint_max_interval_ms, s.checkpoint_interval_ms)
            or (elapsed_ms >= s.checkpoint_interval_ms and enough)
        )

    def _checkpoint_running(self) -> bool:
        """A checkpoint is still being written and the next one may wait for it: the batch loop
        goes on and the next snapshot takes everything pending since, rather than the loop
        stalling on a slow sink. Past `checkpoint_max_rows` buffered rows it does stall (bounded
        memory; the sink sets the pace)."""
        inflight = self._inflight
        return (
            inflight is not None
            and not inflight.done()
            and len(self._pending_rows) < self.settings.checkpoint_max_rows
        )

    async def checkpoint(self) -> None:
        async with self._lock:
            await self._checkpoint(wait=True)

    async def _checkpoint(self, wait: bool) -> None:
        """Snapshot what is pending and write it by the commit protocol (`_write_snapshot`).

        One checkpoint is in flight at a time, in order. With `wait=False` it runs beside the next
        batches (the ClickHouse insert then no longer stalls the latency path); a failure surfaces
        at the next batch and restarts the loop from the committed offsets. `step` does not start
        one while the previous is still running (`_checkpoint_running`), so this waits only at a
        stop, a rebalance or past the row cap.
        """
        await self._await_inflight()
        snapshot = self._take_snapshot()
        if snapshot is None:
            return
        # From here on a batch that touches one of its live profiles serialises it first.
        self._inflight_snapshot = snapshot
        if wait:
            await self._write_snapshot(snapshot)
        else:
            self._inflight = asyncio.ensure_future(self._write_snapshot(snapshot))

    async def _await_inflight(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    def _profile(self, visitor_id: str, partition: int) -> bytes | Profile | None:
        """The store's profile for a batch, serialised first if the in-flight checkpoint still
        needs it as it was (copy-on-write: the batch may change the object after this)."""
        snap = self._inflight_snapshot
        if snap is not None and visitor_id in snap.unserialised:
            self._serialise(snap, visitor_id, keep_object=True)  # the batch changes it next
        return self.store.get(visitor_id, partition)

    def _take_snapshot(self) -> _Snapshot | None:
        """Capture what the next checkpoint makes durable. Cheap: touched profiles are handed over
        as live objects and serialised later (`_serialise`), not here in the batch path."""
        if not (self._pending_offsets or self._dirty or self._pending_rows or self._pending_sends):
            self._last_checkpoint = time.monotonic()
            return None
        changelog: list[tuple[str, int, bytes]] = []
        serving: list[VisitorUpdate] = []
        unserialised: dict[str, tuple[int, Profile]] = {}
        for visitor_id, partition in self._dirty.items():
            state = self.store.partitions.get(partition)
            held = state.profiles.get(visitor_id) if state is not None else None
            if state is None or held is None:
                continue
            if isinstance(held, Profile):
                unserialised[visitor_id] = (partition, held)
                continue
            changelog.append((visitor_id, partition, held))
            serving.append(_summary_update(visitor_id, Profile.from_bytes(held)))
        offsets = dict(self._pending_offsets)
        snapshot = _Snapshot(
            offsets=offsets,
            token=self._token(offsets, self._checkpoint_start, self._pending_changes),
            rows=self._pending_rows,
            changes=self._pending_changes,
            messages=self._pending_messages,
            sends=self._pending_sends,
            changelog=changelog,
            serving=serving,
            unserialised=unserialised,
        )
        self._reset_buffers()
        return snapshot

    def _serialise(self, snap: _Snapshot, visitor_id: str, keep_object: bool = False) -> None:
        """Serialise one of the snapshot's live profiles into its changelog and Redis summaries;
        the store then holds the bytes (memory), unless `keep_object` or a batch replaced it."""
        partition, profile = snap.unserialised.pop(visitor_id)
        raw = profile.to_bytes()
        snap.changelog.append((visitor_id, partition, raw))
        snap.serving.append(_summary_update(visitor_id, profile))
        state = self.store.partitions.get(partition)
        if not keep_object and state is not None and state.profiles.get(visitor_id) is profile:
            state.profiles[visitor_id] = raw

    async def _serialise_all(self, snap: _Snapshot) -> None:
        """Serialise the snapshot's live profiles in slices, letting batches run in between (one
        slice is ≈ 2 ms; all at once was a stall of up to 20 ms at 2,000 events/s)."""
        while snap.unserialised:
            for visitor_id in list(itertools.islice(snap.unserialised, SERIALISE_SLICE)):
                self._serialise(snap, visitor_id)
            if snap.unserialised:
                await asyncio.sleep(0)  # yield to the batch loop between slices

    async def _write_snapshot(self, snap: _Snapshot) -> None:
        """The commit protocol, in this order:

        1. sinks: the snapshot's ClickHouse rows are inserted (deduplication token = the offset
           ranges they came from) while the loop serialises its profiles in slices; profile
           summaries go to Redis (segment sets went per batch); the broker's acks for its topic
           sends are awaited;
        2. state: one changelog record per visitor touched since the last checkpoint (its bytes
           as of the snapshot), acknowledged;
        3. offsets: committed.

        Nothing is committed before the effects of its records are durable, so a crash replays
        from the last checkpoint: state exactly (profiles restored from the changelog skip offsets
        they already hold), sinks idempotently, topic outputs at least once with stable ids.
        """
        s = self.settings
        try:
            # The ClickHouse insert runs in its thread while the loop serialises the snapshot's
            # profiles; both finish before anything of the state is written (step 2).
            if snap.rows or snap.changes or snap.messages:
                batch = AnalyticsBatch(
                    token=snap.token, events=snap.rows, changes=snap.changes, messages=snap.messages
                )
                async with self._analytics_lock:
                    inserting = asyncio.ensure_future(asyncio.to_thread(self.analytics.write, batch))
                    try:
                        await self._serialise_all(snap)
                    finally:
                        await inserting
            else:
                await self._serialise_all(snap)
        finally:
            self._inflight_snapshot = None
        if snap.serving:
            await self.serving.write(snap.serving)
        if snap.sends:
            await asyncio.gather(*snap.sends)
        producer = await self.start_producer()
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for visitor_id, partition, raw in snap.changelog:
            by_partition.setdefault(partition, []).append((visitor_id.encode(), raw))
        acks: list[asyncio.Future[Any]] = []
        for partition, items in by_partition.items():
            acks += await send_all(producer, s.changelog_topic, items, partition=partition)
        if acks:
            await asyncio.gather(*acks)
        if snap.offsets and self.consumer is not None:
            await self.consumer.commit(snap.offsets)
            for tp, offset in snap.offsets.items():
                self.stats.committed[tp.partition] = offset
        self.stats.checkpoints += 1
        self.stats.changelog_writes += len(snap.changelog)

    def _reset_buffers(self) -> None:
        self._records_since_checkpoint = 0
        self._checkpoint_start = dict(self._pending_offsets) or self._checkpoint_start
        self._pending_offsets = {}
        self._pending_rows = []
        self._pending_changes = []
        self._pending_messages = []
        self._pending_sends = []
        self._dirty = {}
        self._last_checkpoint = time.monotonic()

    def _clocks(self, wall: float) -> dict[int, float]:
        clocks: dict[int, float] = {}
        for partition, state in self.store.partitions.items():
            if wall - state.last_record_wall >= self.settings.idle_clock_after_s:
                # Idle partition: no event will move event time, so let wall time drive timers.
                state.clock = max(state.clock, wall - self.settings.clock_lateness_s)
            clocks[partition] = state.clock
        return clocks

    def _pop_due(self, clocks: dict[int, float]) -> dict[str, tuple[int, float]]:
        """The timers due by each partition's clock, earliest first, at most `timers_per_batch`
        (shared out over the partitions): after a restart or a clock jump tens of thousands can
        be due at once, and evaluating them in one batch blocked the loop for seconds (100k due:
        a 6 s batch, longer than the group's session timeout). The rest stay queued and
        `_timers_backlog` makes the next poll return at once."""
        due: dict[str, tuple[int, float]] = {}
        partitions = self.store.partitions
        share = max(1, -(-self.settings.timers_per_batch // max(len(partitions), 1)))
        backlog = False
        for partition, state in partitions.items():
            now = clocks[partition]
            heap = state.due
            taken = 0
            while heap and heap[0][0] <= now:
                if taken >= share:
                    backlog = True
                    break
                at, visitor_id = heapq.heappop(heap)
                if state.next_due.get(visitor_id) == at:  # else stale: the visitor was rescheduled
                    del state.next_due[visitor_id]
                    due[visitor_id] = (partition, at)
                    taken += 1
        self._timers_backlog = backlog
        return due

    @staticmethod
    def _schedule(state: PartitionState, visitor_id: str, due: float | None) -> None:
        if due is None:
            state.next_due.pop(visitor_id, None)
        elif state.next_due.get(visitor_id) != due:
            state.next_due[visitor_id] = due
            heapq.heappush(state.due, (due, visitor_id))

    @staticmethod
    def _token(
        offsets: dict[TopicPartition, int], starts: dict[TopicPartition, int], changes: list[Any]
    ) -> str:
        if offsets:
            return ",".join(
                f"{tp.partition}:{starts.get(tp, '')}-{off}" for tp, off in sorted(offsets.items())
            )
        # Timer-only checkpoint: the changes themselves identify it.
        return "timers:" + ",".join(sorted(c.change_id for c in changes))[:512]

    def _count(self, result: BatchResult, records: int) -> None:
        st = self.stats
        st.batches += 1
        st.records += records
        st.events_applied += result.events_applied
        st.dead_letters += len(result.dead_letters)
        st.duplicates += result.duplicates
        st.replayed += result.replayed
        st.changes += len(result.changes)
        st.messages += len(result.messages)
        st.timer_evaluations += result.timer_evaluations

    # -- recovery -------------------------------------------------------------------------------

    async def recover(self, partitions: list[int]) -> None:
        """Rebuild the store for `partitions` by reading the changelog to its high watermark.

        Serialised by a lock: the rebalance listener and `step` may both ask for a partition; the
        second caller finds it recovered.
        """
        async with self._recovery_lock:
            await self._recover(partitions)

    async def _recover(self, partitions: list[int]) -> None:
        started = time.perf_counter()
        fresh = [p for p in partitions if p not in self.store.partitions]
        s = self.settings
        states = {
            p: PartitionState(profiles=new_partition_profiles(s.profile_store, s.data_dir / "profiles", p))
            for p in fresh
        }
        restored = 0
        if fresh:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                fetch_max_wait_ms=RECOVERY_FETCH_MAX_WAIT_MS,
                max_partition_fetch_bytes=8 * 1024 * 1024,
                fetch_max_bytes=64 * 1024 * 1024,
            )
            await consumer.start()
            try:
                tps = [TopicPartition(self.settings.changelog_topic, p) for p in fresh]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                remaining = set(tps)
                while remaining:
                    # Short: an empty changelog partition answers with no records, and getmany would
                    # otherwise wait its whole timeout before the high watermark is checked.
                    polled = await consumer.getmany(*remaining, timeout_ms=20, max_records=50_000)
                    for tp, batch in polled.items():
                        profiles = states[tp.partition].profiles
                        for msg in batch:
                            if msg.value is None:
                                profiles.pop(msg.key.decode(), None)
                            else:
                                profiles[msg.key.decode()] = msg.value
                        restored += len(batch)
                    for tp in list(remaining):
                        # Fetch's high watermark, never ListOffsets (short on the embedded broker).
                        highwater = consumer.highwater(tp)
                        if highwater is not None and await consumer.position(tp) >= highwater:
                            remaining.discard(tp)
            finally:
                await consumer.stop()
        wall = time.time()
        for partition, state in states.items():
            latest = state.clock
            next_due = state.next_due
            due = state.due
            for visitor_id, raw in state.profiles.items():
                # The serialised header only: no profile is decompressed or parsed here.
                last_seen, next_check_at = (
                    profile_clock_fields(raw)
                    if isinstance(raw, bytes)
                    else (raw.last_seen, raw.next_check_at)
                )
                if last_seen > latest:
                    latest = last_seen
                if next_check_at is not None:
                    next_due[visitor_id] = next_check_at
                    due.append((next_check_at, visitor_id))
            state.clock = max(state.clock, min(latest, wall))
            heapq.heapify(state.due)
            state.last_record_wall = wall
            self.store.partitions[partition] = state
        elapsed = time.perf_counter() - started
        self.stats.recovered_records += restored
        self.stats.recovery_seconds += elapsed
        if self.stats.ready_at is None:
            self.stats.ready_at = time.time()
        log.info(
            "partitions_recovered",
            partitions=partitions,
            changelog_records=restored,
            profiles=sum(len(s.profiles) for s in states.values()),
            seconds=round(elapsed, 3),
        )


def consumer_options(s: Settings) -> dict[str, Any]:
    """aiokafka options of the worker's events consumer (the bench's bare relay uses them too)."""
    return {
        "group_id": s.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": int(s.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(s.heartbeat_interval_s * 1000),
        "fetch_max_wait_ms": s.fetch_max_wait_ms,
        "fetch_min_bytes": s.fetch_min_bytes,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "isolation_level": "read_uncommitted",
    }


def producer_options(s: Settings) -> dict[str, Any]:
    """aiokafka options of the worker's producer (the bench's bare relay uses them too)."""
    return {
        "linger_ms": s.producer_linger_ms,
        "acks": "all",
        "max_request_size": 4 * 1024 * 1024,
        # One batch per partition per send_all (16 KB default = ~25 segment changes or ~8
        # profiles): `send_batch` waits for the previous batch of a partition to drain.
        "max_batch_size": 1024 * 1024,
    }


_PARTITIONER = DefaultPartitioner()


async def send_all(
    producer: AIOKafkaProducer,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    partition: int | None = None,
) -> list[asyncio.Future[Any]]:
    """Queue records as whole batches per partition (one future per batch, not per record).

    `send()` costs a coroutine, a partitioner call and an accumulator lookup per record; building
    batches directly is what the per-batch engine wants. Keys are partitioned like `send()` does
    (murmur2, as the Java client), unless `partition` is given. Each batch is closed before it is
    queued: aiokafka sends a closed batch at once instead of letting it linger (`linger_ms` is for
    batches `send()` still fills), so a segment change is not held back by the producer.
    """
    if not records:
        return []
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    if partition is not None:
        by_partition[partition] = records
    else:
        partitions = sorted(await producer.partitions_for(topic))
        count = len(partitions)
        for key, value in records:
            # `partition_for` is aiokafka's choice for a key (cached); a null key picks at random.
            part = (
                partitions[partition_for(key, count)]
                if key is not None
                else _PARTITIONER(key, partitions, partitions)
            )
            by_partition.setdefault(part, []).append((key, value))
    futures: list[asyncio.Future[Any]] = []
    for part, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=part))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"record of {len(value)} bytes does not fit a batch for {topic}")
        if batch.record_count():
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=part))
    return futures


def _summary_update(visitor_id: str, profile: Profile) -> VisitorUpdate:
    """The checkpoint's Redis write for a visitor: its summary (segment sets went per batch)."""
    return VisitorUpdate(
        visitor_id=visitor_id, summary=profile.summary(), segments=profile.segments, segments_changed=False
    )


def _key(key: str | None) -> bytes | None:
    return key.encode() if key is not None else None


def _dlq_value(letter: DeadLetter) -> bytes:
    return orjson.dumps(letter.model_dump(mode="json"))
