"""The checkpoint: what the batches since the last one changed, made durable by the commit protocol.

Per batch (the latency path: `streams.engine`, `streams.publish`) the core's results go to memory,
segment changes, messages and dead letters are sent, and Redis is written. The rest is handed to
the `Checkpoint`: ClickHouse rows (events, changes, messages, conversions), the acks of those sends,
the touched profiles and the processed source offsets. Every `checkpoint_interval_ms` (or
`checkpoint_max_rows` buffered rows) it takes a snapshot of what is pending and writes it by the
commit protocol, beside the next batches, in this order (`Checkpoint.commit`):

1. sinks:   buffered ClickHouse rows inserted with a deterministic deduplication token; the
            latest profile summary of each touched visitor written to Redis; the broker's acks
            for every topic send since the last checkpoint awaited;
2. state:   one changelog record per visitor touched since the last checkpoint, acknowledged;
3. offsets: the source offsets processed since the last checkpoint are committed.

Beside step 2, after the changelog write: the cohort sketches of the owned partitions that changed
since the last checkpoint are published to the cohorts topic (`streams.cohorts`), as of the
snapshot. They are derived from the profiles (their recorded cohort values) and never read back by
recovery, which rebuilds them from the restored profiles: so they need no place in the order that
makes replays exact, and a crash that loses one publication loses nothing the next owner does not
publish again. After the changelog rather than before, so a published sketch never counts values of
a state that is not durable yet.

Like quixstreams' checkpoints, this writes each profile once per checkpoint, not once per event,
and keeps slow sinks (a ClickHouse insert) off the latency path. A crash anywhere before 3 replays
from the last committed offsets. Replays are exact for state (each profile remembers the last
source offset folded into it, so restored profiles skip what they already contain) and idempotent
for sinks (ReplacingMergeTree on event/change ids plus insert tokens in ClickHouse; set/replace
semantics in Redis). Topic outputs are at-least-once with deterministic ids (`change_id`,
`message_id`) so consumers can drop redeliveries. See docs/ARCHITECTURE.md, "The commit protocol".

The producer (as a `ChangelogWriter`), the consumer (for its offset commit), the analytics sink
and the serving store are passed in, so tests run the protocol against in-memory fakes
(`streams.testing.fakes`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition

from sinks.clickhouse import CHANGE_COLUMNS, AnalyticsBatch, AnalyticsRows, AnalyticsSink, analytics_rows
from sinks.redis_serving import ServingStore, VisitorUpdate
from streams.core.batch import BatchResult
from streams.core.profile import Profile
from streams.core.sketch import QuantileSketch
from streams.profile_store import ProfileStore
from streams.settings import Settings
from streams.stats import EngineStats

SERIALISE_SLICE = 100
"""Profiles a checkpoint serialises before it yields to the batch loop (≈ 2 ms of work)."""


class ChangelogWriter(Protocol):
    """Step 2's writer (`streams.kafka.KafkaChangelog` on the worker's producer)."""

    async def write(self, records: list[tuple[str, int, bytes]]) -> None:
        """Write (visitor id, partition, serialised profile) records; return once acknowledged."""
        ...


class CohortPublisher(Protocol):
    """The cohort sketches' writer beside step 2 (`streams.cohorts.CohortWriter`)."""

    async def write(self, sketches: list[tuple[int, str, QuantileSketch]]) -> None:
        """Publish (partition, cohort, sketch) records; return once acknowledged."""
        ...


class OffsetCommitter(Protocol):
    """Step 3's committer: the events consumer (aiokafka's `AIOKafkaConsumer` has it)."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


@dataclass(slots=True)
class Snapshot:
    """Everything one checkpoint makes durable, captured when it was taken."""

    offsets: dict[TopicPartition, int]
    token: str
    rows: AnalyticsRows
    sends: list[Awaitable[Any]]
    changelog: list[tuple[str, int, bytes]]
    serving: list[VisitorUpdate]
    unserialised: dict[str, tuple[int, Profile]] = field(default_factory=dict)
    """Visitors whose profile this checkpoint holds as the live object, not yet serialised:
    `Checkpoint.commit` serialises them in slices between batches, and a batch about to change one
    serialises it first (`Checkpoint.profile`), so the snapshot sees each exactly as of when it was
    taken."""
    cohorts: list[tuple[int, str, QuantileSketch]] = field(default_factory=list)
    """The owned partitions' cohort sketches changed since the last snapshot: (partition, cohort,
    a copy as of this snapshot)."""


class Checkpoint:
    """What is pending since the last checkpoint, and the one place that makes it durable.

    One checkpoint is written at a time, in order. The batch loop hands each batch's effects over
    (`processed`, `touched`, `add`), asks whether one is `due()` and not still `running()`, and
    `take`s it; the write runs beside the next batches unless the caller waits for it.
    """

    def __init__(
        self,
        settings: Settings,
        store: ProfileStore,
        analytics: AnalyticsSink,
        serving: ServingStore,
        changelog: ChangelogWriter,
        consumer: Callable[[], OffsetCommitter | None],
        stats: EngineStats,
        clock: Callable[[], float] = time.monotonic,
        cohorts: CohortPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        """The owned partitions' profiles: a snapshot's touched visitors are read from here."""
        self.analytics = analytics
        self.serving = serving
        self.changelog = changelog
        self.consumer = consumer
        """Returns the events consumer, or None while there is none (its offsets are then not
        committed: the next owner replays them)."""
        self.stats = stats
        self.clock = clock
        """Monotonic seconds, for the checkpoint interval."""
        self.cohorts = cohorts
        """Publishes the changed cohort sketches (None: they are not published)."""
        self.touched: dict[str, int] = {}
        """Visitor → partition of every profile a batch changed since the last snapshot. The batch
        loop marks them in its one pass over a batch's visitors, as it stores their profiles."""
        self._offsets: dict[TopicPartition, int] = {}
        self._starts: dict[TopicPartition, int] = {}
        """Where the pending offset ranges begin (the previous snapshot's offsets): the token."""
        self._rows = AnalyticsRows()
        """The ClickHouse rows of the batches since the last snapshot, built as each is added."""
        self._sends: list[Awaitable[Any]] = []
        self._records = 0
        self._last = clock()
        self._inflight: asyncio.Future[None] | None = None
        self._writing: Snapshot | None = None
        """The snapshot being written, whose live profiles a batch must serialise before use."""

    # -- what the batches hand over -------------------------------------------------------------

    def processed(self, tp: TopicPartition, next_offset: int) -> None:
        """The records of `tp` before `next_offset` are processed: commit it with the next snapshot."""
        self._offsets[tp] = next_offset

    def add(self, result: BatchResult, records: int, sends: Sequence[Awaitable[Any]]) -> None:
        """Buffer a processed batch's analytics rows, changes, messages and conversions, the futures
        of its topic sends (their acks are awaited before the offsets are committed), and count its
        `records`. Its touched profiles are marked in `touched`."""
        self._sends += sends
        # The rows are built here, not at the insert: the batch's objects are freed with it
        # (`sinks.clickhouse.AnalyticsRows`).
        self._rows.extend(
            analytics_rows(result.analytics_rows, result.changes, result.messages, result.conversions)
        )
        self._records += records

    def profile(self, visitor_id: str, partition: int) -> bytes | Profile | None:
        """The store's profile for a batch, serialised first if the in-flight checkpoint still
        needs it as it was (copy-on-write: the batch may change the object after this)."""
        snap = self._writing
        if snap is not None and visitor_id in snap.unserialised:
            self._serialise(snap, visitor_id, keep_object=True)  # the batch changes it next
        return self.store.get(visitor_id, partition)

    # -- when -----------------------------------------------------------------------------------

    def due(self) -> bool:
        """Something is pending and the interval (or the row cap) says write it now."""
        if not self._pending():
            return False
        s = self.settings
        elapsed_ms = (self.clock() - self._last) * 1000
        enough = self._records >= s.checkpoint_min_records
        # Low traffic waits for `checkpoint_min_records` (up to the max interval): each ClickHouse
        # insert has a fixed cost of ≈ 10 ms CPU, which at a few events/s was most of the worker's.
        return (
            len(self._rows.events) >= s.checkpoint_max_rows
            or elapsed_ms >= max(s.checkpoint_max_interval_ms, s.checkpoint_interval_ms)
            or (elapsed_ms >= s.checkpoint_interval_ms and enough)
        )

    def running(self) -> bool:
        """A checkpoint is still being written and the next one may wait for it: the batch loop
        goes on and the next snapshot takes everything pending since, rather than the loop
        stalling on a slow sink. Past `checkpoint_max_rows` buffered rows it does stall (bounded
        memory; the sink sets the pace)."""
        inflight = self._inflight
        return (
            inflight is not None
            and not inflight.done()
            and len(self._rows.events) < self.settings.checkpoint_max_rows
        )

    # -- taking and writing ---------------------------------------------------------------------

    async def take(self, wait: bool) -> None:
        """Snapshot what is pending and write it by the commit protocol (`commit`).

        One checkpoint is in flight at a time, in order: this first waits for the previous one.
        With `wait=False` the write runs beside the next batches (the ClickHouse insert then no
        longer stalls the latency path); a failure surfaces at `raise_if_failed`, and the loop
        restarts from the committed offsets. The batch loop does not take one while the previous
        is still `running()`, so this waits only at a stop, a rebalance or past the row cap.
        """
        await self._await_inflight()
        snapshot = self.snapshot()
        if snapshot is None:
            return
        if wait:
            await self.commit(snapshot)
        else:
            self._inflight = asyncio.ensure_future(self.commit(snapshot))

    async def raise_if_failed(self) -> None:
        """If the background write has finished, take its outcome: re-raises its failure."""
        if self._inflight is not None and self._inflight.done():
            await self._await_inflight()

    def snapshot(self) -> Snapshot | None:
        """Capture what the next checkpoint makes durable (None: nothing is pending) and start
        pending anew. Cheap: touched profiles are handed over as live objects and serialised later
        (`commit`), not here in the batch path; from here on a batch that touches one of them
        serialises it first (`profile`)."""
        if not self._pending():
            self._last = self.clock()
            return None
        changelog: list[tuple[str, int, bytes]] = []
        serving: list[VisitorUpdate] = []
        unserialised: dict[str, tuple[int, Profile]] = {}
        for visitor_id, partition in self.touched.items():
            state = self.store.partitions.get(partition)
            held = state.profiles.get(visitor_id) if state is not None else None
            if state is None or held is None:
                continue
            if isinstance(held, Profile):
                unserialised[visitor_id] = (partition, held)
                continue
            changelog.append((visitor_id, partition, held))
            serving.append(_summary_update(visitor_id, Profile.from_bytes(held)))
        offsets = dict(self._offsets)
        cohorts = [
            (partition, name, sketch)
            for partition, state in sorted(self.store.partitions.items())
            for name, sketch in state.cohorts.take_changed().items()
        ]
        snapshot = Snapshot(
            offsets=offsets,
            token=_dedup_token(offsets, self._starts, self._rows.changes),
            rows=self._rows,
            sends=self._sends,
            changelog=changelog,
            serving=serving,
            unserialised=unserialised,
            cohorts=cohorts,
        )
        self._reset()
        self._writing = snapshot
        return snapshot

    async def commit(self, snap: Snapshot) -> None:
        """Make `snap` durable: the commit protocol, its steps in this order.

        Nothing is committed before the effects of its records are durable, so a crash replays
        from the last checkpoint: state exactly (profiles restored from the changelog skip offsets
        they already hold), sinks idempotently, topic outputs at least once with stable ids. A
        step that fails raises, and nothing after it happens.
        """
        # 1. sinks: the snapshot's ClickHouse rows are inserted (deduplication token = the offset
        #    ranges they came from) in a thread while the loop serialises its profiles in slices;
        #    both finish before anything of the state is written. Then the profile summaries go to
        #    Redis (segment sets went per batch) and the broker's acks of its topic sends are awaited.
        try:
            if snap.rows:
                batch = AnalyticsBatch(snap.token, snap.rows)
                inserting = asyncio.ensure_future(asyncio.to_thread(self.analytics.write, batch))
                try:
                    await self._serialise_all(snap)
                finally:
                    await inserting
            else:
                await self._serialise_all(snap)
        finally:
            if self._writing is snap:
                self._writing = None
        if snap.serving:
            await self.serving.write(snap.serving)
        if snap.sends:
            await asyncio.gather(*snap.sends)
        # 2. state: one changelog record per visitor touched since the last checkpoint (its bytes
        #    as of the snapshot), acknowledged.
        await self.changelog.write(snap.changelog)
        #    Beside it, once it is durable: the changed cohort sketches (module docstring).
        if snap.cohorts and self.cohorts is not None:
            await self.cohorts.write(snap.cohorts)
        # 3. offsets: committed.
        consumer = self.consumer()
        if snap.offsets and consumer is not None:
            await consumer.commit(snap.offsets)
            for tp, offset in snap.offsets.items():
                self.stats.committed[tp.partition] = offset
        self.stats.checkpoints += 1
        self.stats.changelog_writes += len(snap.changelog)

    def abandon(self) -> None:
        """Drop the write in flight and everything pending (the loop restarts from the committed
        offsets and replays it)."""
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None
        self._writing = None
        self._reset()

    # -- internals ------------------------------------------------------------------------------

    def _pending(self) -> bool:
        return bool(self._offsets or self.touched or self._rows or self._sends) or any(
            state.cohorts.changed for state in self.store.partitions.values()
        )

    async def _await_inflight(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    def _reset(self) -> None:
        self._records = 0
        self._starts = dict(self._offsets) or self._starts
        self._offsets = {}
        self._rows = AnalyticsRows()
        self._sends = []
        self.touched = {}
        self._last = self.clock()

    def _serialise(self, snap: Snapshot, visitor_id: str, keep_object: bool = False) -> None:
        """Serialise one of the snapshot's live profiles into its changelog and Redis summaries;
        the store then holds the bytes (memory), unless `keep_object` or a batch replaced it."""
        partition, profile = snap.unserialised.pop(visitor_id)
        raw = profile.to_bytes()
        snap.changelog.append((visitor_id, partition, raw))
        snap.serving.append(_summary_update(visitor_id, profile))
        state = self.store.partitions.get(partition)
        if not keep_object and state is not None and state.profiles.get(visitor_id) is profile:
            state.profiles[visitor_id] = raw

    async def _serialise_all(self, snap: Snapshot) -> None:
        """Serialise the snapshot's live profiles in slices, letting batches run in between (one
        slice is ≈ 2 ms; all at once was a stall of up to 20 ms at 2,000 events/s)."""
        while snap.unserialised:
            for visitor_id in list(itertools.islice(snap.unserialised, SERIALISE_SLICE)):
                self._serialise(snap, visitor_id)
            if snap.unserialised:
                await asyncio.sleep(0)  # yield to the batch loop between slices


_CHANGE_ID_AT = CHANGE_COLUMNS.index("change_id")


def _dedup_token(
    offsets: dict[TopicPartition, int], starts: dict[TopicPartition, int], change_rows: list[tuple[Any, ...]]
) -> str:
    """The ClickHouse insert token of a snapshot: the offset ranges its rows came from."""
    if offsets:
        return ",".join(f"{tp.partition}:{starts.get(tp, '')}-{off}" for tp, off in sorted(offsets.items()))
    # Timer-only checkpoint: the changes themselves identify it.
    return "timers:" + ",".join(sorted(row[_CHANGE_ID_AT] for row in change_rows))[:512]


def _summary_update(visitor_id: str, profile: Profile) -> VisitorUpdate:
    """The checkpoint's Redis write for a visitor: its summary (segment sets went per batch)."""
    return VisitorUpdate(
        visitor_id=visitor_id, summary=profile.summary(), segments=profile.segments, segments_changed=False
    )
