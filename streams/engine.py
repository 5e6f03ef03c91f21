"""The profile worker's batch loop: Kafka in, the core in the middle, every effect handed on.

Partition ownership comes from a Kafka consumer group (`settings.group_id`): partitions of the
events topic are spread over the workers; each worker holds the profiles of its partitions in
memory (`streams.profile_store.ProfileStore`), backed by a changelog topic with the same partition
numbers.

Per poll (`Engine.step`): records of a partition not recovered yet recover it first
(`streams.recovery`); each partition's event-time clock moves and its due timers are popped
(`streams.timers`); the core folds records and timers (`streams.core.batch.process_batch`); its
results go to memory, then to the latency path (`streams.publish`: topics and the urgent Redis
writes), and everything else to the `streams.checkpoint.Checkpoint`. Every `checkpoint_interval_ms`
the checkpoint makes what is pending durable by the commit protocol (sinks → state → offsets),
beside the next batches; the protocol is written out in `streams/checkpoint.py` and in
docs/ARCHITECTURE.md, "The commit protocol".

Any failure restarts the loop from the committed offsets, with back-off; a rebalance checkpoints
what was processed before it lets partitions go.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from sinks.clickhouse import AnalyticsSink
from sinks.redis_serving import ServingStore
from streams.checkpoint import Checkpoint
from streams.core.batch import BatchResult, IngestLimits, Record, UnprocessableRecord, process_batch
from streams.core.definitions import Definitions
from streams.core.enrich import Enricher
from streams.kafka import KafkaChangelog, consumer_options, producer_options
from streams.logging import get_logger
from streams.profile_store import ProfileStore, new_partition_profiles
from streams.publish import Publisher
from streams.recovery import open_changelog_consumer, recover_partitions
from streams.settings import Settings
from streams.stats import EngineStats
from streams.timers import DueTimers, TimerQueue

log = get_logger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Checkpoint what was processed (so the next owner does not replay it), then let go.
        revoked = list(revoked)
        async with self.engine._lock:
            if self.engine.consumer is not None and revoked:
                await self.engine._checkpointer.take(wait=True)
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
    """Owns the consumer, producer and store; runs batches through the core and hands their effects
    to publishing and to the checkpoint."""

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
            exclude_bots=settings.exclude_bots,
        )
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.watch_loop = True
        """Record loop stalls (`stats.loop_lag_max_ms`); the worker turns it on after its set-up."""
        self.unprocessable: dict[tuple[int, int], str] = {}
        """(partition, offset) → why: events-topic records whose fold failed on a live profile
        (`UnprocessableRecord`); the replay after the restart dead-letters them."""
        self._stopping = asyncio.Event()
        self._recovery_lock = asyncio.Lock()
        self._lock = asyncio.Lock()
        """Serialises batches, checkpoints and rebalance callbacks (aiokafka runs those in its
        coordinator task, concurrently with the loop)."""
        self._due_timers = DueTimers(settings.timers_per_batch)
        self._publisher = Publisher(settings, self.start_producer, serving)
        self._checkpointer = Checkpoint(
            settings,
            self.store,
            analytics,
            serving,
            KafkaChangelog(self.start_producer, settings.changelog_topic),
            lambda: self.consumer,
            self.stats,
        )
        self._last_core_s = 0.0

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
                if isinstance(exc, UnprocessableRecord):
                    self._remember_unprocessable(exc)
                log.error("engine_failed_restarting", error=repr(exc), backoff_s=backoff)
                await self._close_consumer()
                self.store.drop_all()
                self._checkpointer.abandon()  # uncommitted: the restart replays it
                self._publisher.forget_served()
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 10.0)

    def _remember_unprocessable(self, exc: UnprocessableRecord) -> None:
        """The replay dead-letters this record instead of folding it again (`process_batch`);
        records below a partition's committed offset are done with and forgotten."""
        committed = self.stats.committed
        self.unprocessable = {
            at: detail for at, detail in self.unprocessable.items() if at[1] >= committed.get(at[0], 0)
        }
        self.unprocessable[(exc.partition, exc.offset)] = exc.detail
        log.warning(
            "record_unprocessable", partition=exc.partition, offset=exc.offset, visitor=exc.visitor_id
        )

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
            wait_ms = 0 if self._due_timers.backlog else 100
            polled = await consumer.getmany(timeout_ms=wait_ms, max_records=s.batch_max_records)
            await self.step(polled)

    def timers(self) -> dict[str, int | bool]:
        """Timers queued over the owned partitions, and whether due ones wait past a batch's cap."""
        return self._due_timers.status({p: state.timers for p, state in self.store.partitions.items()})

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
            checkpoint = self._checkpointer
            await checkpoint.raise_if_failed()  # a failed checkpoint restarts the loop
            result = await self._process(polled)
            processed = time.perf_counter()
            if checkpoint.due() and not checkpoint.running():
                await checkpoint.take(wait=False)
            ended = time.perf_counter()
            if (ended - begun) * 1000 > self.settings.slow_batch_ms:
                self.stats.slow_batches += 1
                log.warning(
                    "slow_batch",
                    records=sum(len(b) for b in polled.values()),
                    core_ms=round(self._last_core_s * 1000, 1),
                    serving_ms=round(self._publisher.serving_s * 1000, 1),
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
        checkpoint = self._checkpointer
        records: list[Record] = []
        for tp, batch in polled.items():
            if not batch:
                continue
            self.store.partitions[tp.partition].last_record_wall = wall
            records += batch  # aiokafka's ConsumerRecords: partition, offset, key, value
            checkpoint.processed(tp, batch[-1].offset + 1)
        clocks, queues = self._clocks(wall)
        due = self._due_timers.pop(queues, clocks)
        if not records and not due:
            return None
        core_begun = time.perf_counter()
        result = process_batch(
            records,
            checkpoint.profile,  # copy-on-write: serialises a profile the running checkpoint needs
            due,
            clocks,
            defs=self.defs,
            enricher=self.enricher,
            limits=self.limits,
            wall_now=wall,
            topic=self.settings.events_topic,
            unprocessable=self.unprocessable,
        )
        self._last_core_s = time.perf_counter() - core_begun
        self._remember(result)
        sends = await self._publisher.publish(result)
        checkpoint.add(result, len(records), sends)
        self._count(result, len(records))
        return result

    def _remember(self, result: BatchResult) -> None:
        """Apply a batch to memory before anything is sent: the next batch must see its profiles
        and timers, and the checkpoint which profiles it touched."""
        partitions = self.store.partitions
        for partition, clock in result.clocks.items():
            state = partitions.get(partition)
            if state is not None:
                state.clock = max(state.clock, clock)
        touched = self._checkpointer.touched
        for visitor_id, effect in result.visitors.items():
            state = partitions.get(effect.partition)
            if state is None:
                continue
            state.profiles[visitor_id] = effect.profile  # serialised by the next checkpoint
            touched[visitor_id] = effect.partition
            state.timers.schedule(visitor_id, effect.profile.next_check_at)

    def _clocks(self, wall: float) -> tuple[dict[int, float], dict[int, TimerQueue]]:
        """Each owned partition's event-time clock for this batch, and its timer queue."""
        clocks: dict[int, float] = {}
        queues: dict[int, TimerQueue] = {}
        for partition, state in self.store.partitions.items():
            if wall - state.last_record_wall >= self.settings.idle_clock_after_s:
                # Idle partition: no event will move event time, so let wall time drive timers.
                state.clock = max(state.clock, wall - self.settings.clock_lateness_s)
            clocks[partition] = state.clock
            queues[partition] = state.timers
        return clocks, queues

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
        st.bots += result.bots

    async def checkpoint(self) -> None:
        """Write a checkpoint of everything processed so far and wait for it."""
        async with self._lock:
            await self._checkpointer.take(wait=True)

    # -- recovery -------------------------------------------------------------------------------

    async def recover(self, partitions: list[int]) -> None:
        """Rebuild the store for `partitions` from the changelog (`streams.recovery`).

        Serialised by a lock: the rebalance listener and `step` may both ask for a partition; the
        second caller finds it recovered.
        """
        async with self._recovery_lock:
            started = time.perf_counter()
            s = self.settings
            recovered = await recover_partitions(
                [p for p in partitions if p not in self.store.partitions],
                s.changelog_topic,
                functools.partial(open_changelog_consumer, self.bootstrap),
                lambda partition: new_partition_profiles(s.profile_store, s.data_dir / "profiles", partition),
            )
            self.store.partitions.update(recovered.states)
            elapsed = time.perf_counter() - started
            self.stats.recovered_records += recovered.records
            self.stats.recovery_seconds += elapsed
            if self.stats.ready_at is None:
                self.stats.ready_at = time.time()
            log.info(
                "partitions_recovered",
                partitions=partitions,
                changelog_records=recovered.records,
                profiles=sum(len(state.profiles) for state in recovered.states.values()),
                seconds=round(elapsed, 3),
            )
