"""Cohort thresholds shared by every worker: the partitions' sketches on the compacted cohorts topic.

A cohort (``cohorts:`` in the definitions, `streams.core.definitions.CohortDef`) is a quantile of an
attribute over the profiles whose value is > 0. Each worker holds, per owned partition, the sketch
of every cohort's population (`streams.core.sketch.PartitionCohorts`):

- rebuilt from the restored profiles' recorded values (`Profile.cohort_values`) when the partition
  is recovered (`rebuild`);
- kept current from the moves each batch returns (`BatchResult.cohort_deltas`);
- published when it changed, at the checkpoint, after the changelog write (`CohortWriter`; where
  and why: `streams.checkpoint`), to `settings.cohorts_topic`: one partition, key
  ``<cohort>:<partition>``, value a `schemas.cohorts.CohortSketchRecord`.

Every worker follows the topic (`CohortWatcher`): it keeps the latest record of each key
(`CohortBoard`), merges those of each cohort its definitions name (same ``of``, same α: bucket
counts add up exactly) and takes the cohort's quantile of the merged sketch: its threshold. At most
once per `settings.cohort_recheck_s`, thresholds that moved are handed to the engine
(`Engine.move_thresholds`), which runs its batches with them and re-evaluates the populations of
the moved cohorts (reason ``cohort``). A cohort with no data has no threshold (conditions read
+infinity).

Error bound: a threshold is within α (`settings.cohort_alpha`, 1 %) of the exact quantile of the
values the published sketches count. Those lag the profiles by up to a checkpoint interval and the
thresholds by up to the recheck interval; a partition whose owner is gone keeps its last published
sketch until the next owner recovers it and publishes again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas.cohorts import CohortSketchRecord, cohort_key
from streams.core.definitions import Definitions
from streams.core.profile import Profile, profile_cohort_values
from streams.core.sketch import PartitionCohorts, QuantileSketch
from streams.kafka import FOLLOW_FETCH_TIMEOUT_MS, FollowedPartition, follow, send_all
from streams.logging import get_logger
from streams.recovery import ChangelogConsumer, ConsumerFactory, fetch_to_high_watermark

log = get_logger(__name__)

PublishedSketch = tuple[int, str, QuantileSketch]
"""(partition, cohort name, sketch) as a checkpoint publishes it."""


def sketch_record(defs: Definitions, partition: int, name: str, sketch: QuantileSketch) -> CohortSketchRecord:
    """The topic record of one partition's sketch of cohort `name` (``of`` is empty for a cohort
    `defs` do not define any more: no reader merges it)."""
    cohort = defs.cohorts.get(name)
    offset, counts = sketch.dense()
    return CohortSketchRecord(
        cohort=name,
        partition=partition,
        of=cohort.of if cohort is not None else "",
        alpha=sketch.alpha,
        offset=offset,
        counts=counts,
        count=sketch.count,
        definition_version=defs.version,
        published_at=datetime.now(UTC),
    )


def rebuild(profiles: Iterable[tuple[str, bytes | Profile]], alpha: float) -> PartitionCohorts:
    """A partition's cohort sketches from its profiles' recorded values (recovery), read from each
    serialised profile's header (`profile_cohort_values`: no body is decompressed)."""
    state = PartitionCohorts(alpha)
    for visitor_id, stored in profiles:
        values = stored.cohort_values if isinstance(stored, Profile) else profile_cohort_values(stored)
        if values:
            state.record(visitor_id, values)
    return state


class CohortWriter:
    """The checkpoint's cohort publisher (`streams.checkpoint.CohortPublisher`) on the worker's
    producer: one record per changed sketch, acknowledged."""

    def __init__(
        self,
        producer: Callable[[], Awaitable[AIOKafkaProducer]],
        topic: str,
        defs: Callable[[], Definitions],
    ) -> None:
        self.producer = producer
        """Returns the started producer (the engine starts it on first use)."""
        self.topic = topic
        self.defs = defs
        """The running definitions (what each cohort is a quantile of)."""

    async def write(self, sketches: list[PublishedSketch]) -> None:
        if not sketches:
            return
        defs = self.defs()
        records: list[tuple[bytes | None, bytes]] = [
            (
                cohort_key(name, partition).encode(),
                sketch_record(defs, partition, name, sketch).model_dump_json().encode(),
            )
            for partition, name, sketch in sketches
        ]
        acks = await send_all(await self.producer(), self.topic, records, partition=0)
        if acks:
            await asyncio.gather(*acks)


class CohortBoard:
    """The latest sketch of every ``<cohort>:<partition>`` key read from the topic."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[CohortSketchRecord, QuantileSketch]] = {}

    def add(self, key: bytes | None, value: bytes | None) -> None:
        """Take one topic record; one this release cannot read is logged and skipped."""
        if key is None or value is None:
            return
        name = key.decode("utf-8", "replace")
        try:
            record = CohortSketchRecord.model_validate_json(value)
            sketch = QuantileSketch.from_dense(record.alpha, record.offset, record.counts)
        except (ValidationError, ValueError) as exc:
            log.warning("cohort_record_unreadable", key=name, error=str(exc).splitlines()[0])
            return
        self.latest[name] = (record, sketch)

    def add_all(self, records: Iterable[Any]) -> None:
        """`add` each record (anything with `key` and `value`)."""
        for record in records:
            self.add(record.key, record.value)

    def merged(self, defs: Definitions, alpha: float) -> dict[str, QuantileSketch]:
        """Per cohort of `defs`, the merge of every partition's latest sketch of it (records of
        another ``of`` or α are left out)."""
        out: dict[str, QuantileSketch] = {}
        for record, sketch in self.latest.values():
            cohort = defs.cohorts.get(record.cohort)
            if cohort is None or record.of != cohort.of or record.alpha != alpha:
                continue
            out.setdefault(record.cohort, QuantileSketch(alpha)).merge(sketch)
        return out

    def thresholds(self, defs: Definitions, alpha: float) -> dict[str, float]:
        """Each cohort's quantile of its merged sketch; a cohort with no data is left out."""
        out: dict[str, float] = {}
        for name, sketch in self.merged(defs, alpha).items():
            value = sketch.quantile(defs.cohorts[name].quantile)
            if value is not None:
                out[name] = value
        return out


async def _read_board(consumer: ChangelogConsumer, partition: TopicPartition) -> CohortBoard:
    """The board of the cohorts topic (`partition`) read from its beginning to its high watermark."""
    board = CohortBoard()
    consumer.assign([partition])
    await consumer.seek_to_beginning(partition)
    await fetch_to_high_watermark(consumer, [partition], lambda _tp, batch: board.add_all(batch))
    return board


async def read_board(topic: str, open_consumer: ConsumerFactory) -> CohortBoard:
    """Every partition's latest sketch on the cohorts topic, read once (what `tessera segments
    preview` takes thresholds from)."""
    consumer = await open_consumer()
    try:
        return await _read_board(consumer, TopicPartition(topic, 0))
    finally:
        await consumer.stop()


class CohortWatcher:
    """Follows the cohorts topic in a worker: after each fetch, when `recheck_s` has passed since the
    thresholds were last handed over, the thresholds of the running definitions (`defs()`) that
    differ from the engine's (`current()`) are handed to `on_thresholds`."""

    def __init__(
        self,
        topic: str,
        open_consumer: ConsumerFactory,
        defs: Callable[[], Definitions],
        alpha: float,
        recheck_s: float,
        current: Callable[[], Mapping[str, float]],
        on_thresholds: Callable[[dict[str, float]], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.partition = TopicPartition(topic, 0)
        self.open_consumer = open_consumer
        self.defs, self.alpha, self.recheck_s = defs, alpha, recheck_s
        self.current, self.on_thresholds, self.clock = current, on_thresholds, clock
        self.board = CohortBoard()
        self._followed: FollowedPartition | None = None
        """The followed partition on its consumer, while started."""
        self._next_at = 0.0
        """Monotonic time before which no thresholds are handed over."""

    @property
    def started(self) -> bool:
        return self._followed is not None

    async def start(self) -> None:
        """Open the consumer and read the topic from the beginning to its high watermark (`board`
        then holds every partition's latest sketch)."""
        consumer = await self.open_consumer()
        try:
            self.board = await _read_board(consumer, self.partition)
        except BaseException:
            await consumer.stop()
            raise
        self._followed = FollowedPartition(consumer, self.partition)

    def thresholds(self) -> dict[str, float]:
        """The thresholds of the running definitions, as read so far."""
        return self.board.thresholds(self.defs(), self.alpha)

    async def step(self, timeout_ms: int = FOLLOW_FETCH_TIMEOUT_MS) -> dict[str, float] | None:
        """One poll (`FollowedPartition`); the thresholds handed to `on_thresholds`, if any moved
        and the recheck interval allows."""
        followed = self._followed
        assert followed is not None, "start() first"
        polled = await followed.poll(timeout_ms)
        for batch in polled.values():
            self.board.add_all(batch)
        if self.clock() < self._next_at:
            return None
        thresholds = self.thresholds()
        if thresholds == dict(self.current()):
            return None
        self._next_at = self.clock() + self.recheck_s
        log.info("cohort_thresholds", thresholds={k: round(v, 4) for k, v in sorted(thresholds.items())})
        await self.on_thresholds(thresholds)
        return thresholds

    async def close(self) -> None:
        followed, self._followed = self._followed, None
        if followed is not None:
            await followed.consumer.stop()

    async def run(self) -> None:
        """`start`, then `step` until cancelled; a failed fetch is retried with back-off."""
        await follow(self, "cohorts_watch_failed")
