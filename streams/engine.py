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

Beside the loop, a watcher follows the cohorts topic (`streams.cohorts`): moved cohort thresholds
replace the ones batches run with, and the moved cohorts' populations are re-evaluated
(`move_thresholds`, sliced between batches like a definitions switch).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from schemas.changes import ChangeReason
from sinks.clickhouse import AnalyticsSink
from sinks.redis_serving import ServingStore
from streams.checkpoint import Checkpoint
from streams.cohorts import CohortWatcher, CohortWriter, rebuild
from streams.core.batch import (
    BatchResult,
    IngestLimits,
    Record,
    UnprocessableRecord,
    process_batch,
    reevaluate,
)
from streams.core.definitions import Definitions
from streams.core.enrich import Enricher
from streams.core.guardrails import BudgetLedger
from streams.core.segments import Preview, preview
from streams.core.sketch import PartitionCohorts
from streams.kafka import KafkaChangelog, consumer_options, open_follower, producer_options
from streams.logging import get_logger
from streams.profile_store import ProfileStore, new_partition_profiles
from streams.publish import Publisher
from streams.recovery import open_changelog_consumer, recover_partitions
from streams.settings import Settings
from streams.stats import EngineStats
from streams.timers import DueTimers, TimerQueue, WallClock

log = get_logger(__name__)

SWITCH_SLICE_S = 0.02
"""Work a definitions switch or preview does before it yields to the batch loop (a profile costs
≈ 0.1 to 1 ms, by its history)."""
COHORTS_READ_WAIT_S = 10.0
"""Longest the first batch waits for the cohorts topic to be read (then it runs without thresholds)."""
T = TypeVar("T")


class _Slices(Generic[T]):
    """Items handed out in slices of about `seconds` of the caller's work each."""

    def __init__(self, items: Iterable[T], seconds: float) -> None:
        self._items = iter(items)
        self.seconds = seconds
        self.exhausted = False
        self.handed_out = 0

    def next_slice(self) -> Iterator[T]:
        """Items until `seconds` have passed since the first was taken, or none is left."""
        deadline = time.perf_counter() + self.seconds
        for item in self._items:
            self.handed_out += 1
            yield item
            if time.perf_counter() >= deadline:
                return
        self.exhausted = True


async def _caught_up(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """The consumer's position in `tp` has reached its Fetch high watermark. No network call: both
    are what the last fetch answered. A partition not fetched yet, or no longer assigned, is not."""
    try:
        highwater = consumer.highwater(tp)
        return highwater is not None and bool(await consumer.position(tp) >= highwater)
    except (AssertionError, IllegalStateError):  # revoked meanwhile
        return False


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
        self.budget = BudgetLedger(share=settings.budget_share)
        """Campaign spend per local day, this worker's (`streams.core.guardrails`: its limits)."""
        """(partition, offset) → why: events-topic records whose fold failed on a live profile
        (`UnprocessableRecord`); the replay after the restart dead-letters them."""
        self._stopping = asyncio.Event()
        self._recovery_lock = asyncio.Lock()
        self._lock = asyncio.Lock()
        self._switch_lock = asyncio.Lock()
        """One definitions switch at a time (`switch_definitions`)."""
        self.definition_switches = 0
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
            cohorts=CohortWriter(self.start_producer, settings.cohorts_topic, lambda: self.defs),
        )
        self._last_core_s = 0.0
        self.thresholds: dict[str, float] = {}
        """The cohort thresholds batches run with (`streams.cohorts`; a cohort missing here reads
        +infinity), read at the start and set by `move_thresholds`."""
        self._cohorts: CohortWatcher | None = None
        """The follower of the cohorts topic, once `_follow_cohorts` made it (its board holds every
        partition's latest sketch: a preview takes another version's thresholds from it)."""
        self._thresholds_read = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start_producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            options = producer_options(self.settings)
            self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **options)
            await self.producer.start()
        return self.producer

    async def run(self) -> None:
        """Run batches until `stop()`; any failure restarts the loop from committed offsets. Beside
        them, follow the cohorts topic (`cohort_watcher`)."""
        await self.start_producer()
        watchdog = asyncio.ensure_future(self._watch_loop())
        cohorts = asyncio.ensure_future(self._follow_cohorts())
        try:
            await self._run_until_stopped()
        finally:
            watchdog.cancel()
            cohorts.cancel()
            await asyncio.gather(cohorts, return_exceptions=True)  # it closes its consumer

    async def _follow_cohorts(self) -> None:
        """Read the cohorts topic and take its thresholds as they are, with no re-evaluation (the
        stored memberships were decided by them, as far as they are known); then follow it
        (`cohort_watcher`). Batches wait for the first read (`COHORTS_READ_WAIT_S` at most): a
        restarted worker must not evaluate its members against thresholds it has not read yet."""
        watcher = self._cohorts = self.cohort_watcher()
        try:
            await watcher.start()
            self.thresholds = watcher.thresholds()
            log.info("cohort_thresholds_read", cohorts=len(self.thresholds))
        except Exception as exc:  # the watcher starts again below, with back-off
            log.warning("cohorts_read_failed", error=repr(exc))
        finally:
            self._thresholds_read.set()
        await watcher.run()

    def cohort_watcher(self) -> CohortWatcher:
        """The follower of the cohorts topic that moves this engine's thresholds (`move_thresholds`)."""
        s = self.settings
        return CohortWatcher(
            s.cohorts_topic,
            functools.partial(open_follower, self.bootstrap),
            lambda: self.defs,
            s.cohort_alpha,
            s.cohort_recheck_s,
            lambda: self.thresholds,
            self.move_thresholds,
        )

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
        wall_clock = WallClock(s.idle_clock_after_s, s.clock_lateness_s)
        while not self._stopping.is_set():
            # Due timers left over from the last batch: poll without waiting, then evaluate them.
            # Else wait for records at most until the next timer fires by the wall clock (only a
            # caught-up partition's can; one behind has records coming).
            if self._due_timers.backlog:
                wait_ms = 0
            else:
                waiting = [
                    (state.timers, state.last_record_wall)
                    for partition, state in list(self.store.partitions.items())
                    if await _caught_up(consumer, TopicPartition(s.events_topic, partition))
                ]
                wait_ms = wall_clock.poll_wait_ms(waiting, time.time())
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
        if not self._thresholds_read.is_set():  # only before the first batch (`_follow_cohorts`)
            try:
                await asyncio.wait_for(self._thresholds_read.wait(), COHORTS_READ_WAIT_S)
            except TimeoutError:
                log.warning("cohorts_not_read", waited_s=COHORTS_READ_WAIT_S)
                self._thresholds_read.set()
        wall = time.time()
        checkpoint = self._checkpointer
        records: list[Record] = []
        for tp, batch in polled.items():
            if not batch:
                continue
            self.store.partitions[tp.partition].last_record_wall = wall
            records += batch  # aiokafka's ConsumerRecords: partition, offset, key, value
            checkpoint.processed(tp, batch[-1].offset + 1)
        clocks, queues = await self._clocks(wall)
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
            cohorts=self.thresholds,
            budget=self.budget,
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
        for partition, deltas in result.cohort_deltas.items():
            state = partitions.get(partition)
            if state is not None:
                state.cohorts.apply(deltas)

    async def _clocks(self, wall: float) -> tuple[dict[int, float], dict[int, TimerQueue]]:
        """Each owned partition's event-time clock for this batch (`streams.timers.WallClock`: the
        wall clock drives only partitions fetched up to their high watermark), and its timer queue."""
        s = self.settings
        wall_clock = WallClock(s.idle_clock_after_s, s.clock_lateness_s)
        consumer = self.consumer
        clocks: dict[int, float] = {}
        queues: dict[int, TimerQueue] = {}
        for partition, state in self.store.partitions.items():
            caught_up = consumer is not None and await _caught_up(
                consumer, TopicPartition(s.events_topic, partition)
            )
            state.clock = wall_clock.clock(state.clock, wall, state.last_record_wall, caught_up)
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
        st.conversions += len(result.conversions)
        for reason, count in result.suppressed.items():
            st.suppressed[reason] = st.suppressed.get(reason, 0) + count
        st.timer_evaluations += result.timer_evaluations
        st.bots += result.bots

    async def checkpoint(self) -> None:
        """Write a checkpoint of everything processed so far and wait for it."""
        async with self._lock:
            await self._checkpointer.take(wait=True)

    # -- definitions ----------------------------------------------------------------------------

    async def switch_definitions(self, defs: Definitions) -> int:
        """Run on `defs` from now on and re-evaluate every profile of the owned partitions under them;
        the number of segment changes.

        Under the lock `defs` replace the running definitions, so every batch from then on uses
        them. Then the profiles are re-evaluated as of their partition's clock
        (`streams.core.batch.reevaluate`: reason ``definition_change``, no messages) in slices of
        about `SWITCH_SLICE_S` of work, each under the lock and handed to the same path as a batch's
        effects: memory and timers, then the latency path (topics, Redis), then the pending
        checkpoint, which the batch loop writes when due (so a failed write restarts the loop as
        for a batch); batches run between slices. A second switch waits for the first. A partition
        revoked meanwhile is skipped: its profiles keep their membership until their next event or
        timer.
        """
        async with self._switch_lock:
            async with self._lock:
                previous, self.defs = self.defs, defs
                work = _Slices(self._owned_visitors(), SWITCH_SLICE_S)
            started = time.perf_counter()
            changes = await self._reevaluate_in_slices(work, defs, "definition_change")
            self.definition_switches += 1
            log.info(
                "definitions_switched",
                version=defs.version,
                previous=previous.version,
                profiles=work.handed_out,
                changes=changes,
                seconds=round(time.perf_counter() - started, 3),
            )
            return changes

    async def move_thresholds(self, thresholds: Mapping[str, float]) -> int:
        """Run batches with these cohort `thresholds` from now on, and re-evaluate the population of
        every cohort whose threshold moved (the owned profiles with a recorded value of it) for the
        segments reading it: reason ``cohort``, no messages; the number of segment changes.

        The same path as `switch_definitions` (and serialised with it): under the lock the
        thresholds are replaced, then the profiles are re-evaluated as of their partition's clock in
        slices between batches. A visitor outside the population (no value > 0) is not re-evaluated:
        a condition comparing its attribute with a threshold (always > 0) answers the same for it.
        """
        async with self._switch_lock:
            async with self._lock:
                previous, self.thresholds = self.thresholds, dict(thresholds)
                names = previous.keys() | thresholds.keys()
                moved = frozenset(name for name in names if previous.get(name) != thresholds.get(name))
                defs = self.defs
                visitors = [
                    (visitor_id, partition)
                    for partition, state in sorted(self.store.partitions.items())
                    for visitor_id in sorted(state.cohorts.readers(moved))
                ]
                work = _Slices(visitors, SWITCH_SLICE_S)
            started = time.perf_counter()
            changes = await self._reevaluate_in_slices(work, defs, "cohort", moved)
            log.info(
                "cohort_thresholds_moved",
                cohorts=sorted(moved),
                profiles=work.handed_out,
                changes=changes,
                seconds=round(time.perf_counter() - started, 3),
            )
            return changes

    async def _reevaluate_in_slices(
        self,
        work: _Slices[tuple[str, int]],
        defs: Definitions,
        reason: ChangeReason,
        moved: frozenset[str] = frozenset(),
    ) -> int:
        """Re-evaluate `work`'s (visitor id, partition) pairs (`streams.core.batch.reevaluate` with
        `reason`, the running thresholds and the `moved` cohorts) a slice at a time, each under the
        lock and handed to the same path as a batch's effects: memory, timers and cohort sketches,
        then the latency path (topics, Redis), then the pending checkpoint, which the batch loop
        writes when due (so a failed write restarts the loop as for a batch); batches run between
        slices. The number of segment changes."""
        changes = 0
        while not work.exhausted:
            async with self._lock:
                result = reevaluate(
                    work.next_slice(),
                    self._checkpointer.profile,  # copy-on-write, as for a batch
                    defs,
                    {partition: state.clock for partition, state in self.store.partitions.items()},
                    wall_now=time.time(),
                    reason=reason,
                    cohorts=self.thresholds,
                    moved=moved,
                )
                self._remember(result)
                sends = await self._publisher.publish(result)
                self._checkpointer.add(result, 0, sends)
                self.stats.changes += len(result.changes)
                changes += len(result.changes)
            await asyncio.sleep(0)  # yield to the batch loop between slices
        return changes

    async def preview(self, defs: Definitions) -> tuple[Preview, list[int]]:
        """`streams.core.segments.preview` of `defs` against the running definitions over the owned
        partitions' profiles, each as of its partition's clock (as a switch would evaluate them),
        in slices of about `SWITCH_SLICE_S` between batches; and the partitions it covered."""
        current = self.defs
        partitions = sorted(self.store.partitions)
        watcher = self._cohorts
        # The new version's cohort thresholds from the same sketches (a changed quantile moves them).
        thresholds = (
            watcher.board.thresholds(defs, self.settings.cohort_alpha)
            if watcher is not None and watcher.started
            else self.thresholds
        )
        result = preview((), defs, time.time(), current=current)
        work = _Slices(self._owned_visitors(), SWITCH_SLICE_S)
        while not work.exhausted:
            for partition, pairs in itertools.groupby(work.next_slice(), key=lambda pair: pair[1]):
                state = self.store.partitions.get(partition)
                if state is None:  # revoked meanwhile
                    continue
                stored = (state.profiles.get(visitor_id) for visitor_id, _ in pairs)
                preview(
                    (p for p in stored if p),
                    defs,
                    state.clock,
                    current=current,
                    into=result,
                    cohorts=thresholds,
                    cohorts_current=self.thresholds,
                )
            await asyncio.sleep(0)  # yield to the batch loop between slices
        return result, partitions

    def _owned_visitors(self) -> list[tuple[str, int]]:
        """(visitor id, partition) of every profile of the owned partitions now, by partition."""
        return [
            (visitor_id, partition)
            for partition, state in sorted(self.store.partitions.items())
            for visitor_id in state.profiles
        ]

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
            for state in recovered.states.values():
                state.cohorts = (
                    rebuild(state.profiles.items(), s.cohort_alpha)
                    if self.defs.cohorts
                    else PartitionCohorts(s.cohort_alpha)
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
