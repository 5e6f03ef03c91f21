"""The worker's Kafka clients: consumer and producer options, whole-batch sends, the changelog writer,
and the loop that follows a topic (`follow`).

The bench's bare relay and its aiokafka floor use the same options, so their figures are the
floor of exactly the clients the worker runs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from streams.logging import get_logger
from streams.partitioning import partition_for
from streams.recovery import ChangelogConsumer
from streams.settings import Settings

log = get_logger(__name__)

FOLLOW_BACKOFF_S = (0.5, 10.0)
"""First and longest pause of `follow` after a failed step."""


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


class KafkaChangelog:
    """The checkpoint's changelog writer on the worker's producer (`streams.checkpoint.ChangelogWriter`).

    Each visitor's record goes to the changelog partition numbered like the events partition that
    owns the visitor, so recovery of a partition reads exactly its visitors.
    """

    def __init__(self, producer: Callable[[], Awaitable[AIOKafkaProducer]], topic: str) -> None:
        self.producer = producer
        """Returns the started producer (the engine starts it on first use)."""
        self.topic = topic

    async def write(self, records: list[tuple[str, int, bytes]]) -> None:
        """Send (visitor id, partition, serialised profile) records and wait for their acks."""
        producer = await self.producer()
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for visitor_id, partition, raw in records:
            by_partition.setdefault(partition, []).append((visitor_id.encode(), raw))
        acks: list[asyncio.Future[Any]] = []
        for partition, items in by_partition.items():
            acks += await send_all(producer, self.topic, items, partition=partition)
        if acks:
            await asyncio.gather(*acks)


FOLLOW_INTERVAL_S = 0.5
"""How often a follower fetches its topic (definitions, cohort sketches): a new record is seen within
about this."""

FOLLOW_FETCH_MAX_WAIT_MS = 5
"""How long the broker may hold one of a follower's fetches (a short wait: the partition is paused
again right after, see `poll_paused`)."""

FOLLOW_FETCH_TIMEOUT_MS = 20
"""How long one poll of a follower waits for records before its partition is paused again."""


class Follower(Protocol):
    """A reader that follows a topic (`streams.definitions_store.HeadWatcher`,
    `streams.cohorts.CohortWatcher`): opened by `start`, one poll per `step`, released by `close`."""

    @property
    def started(self) -> bool: ...

    async def start(self) -> None: ...

    async def step(self) -> object: ...

    async def close(self) -> None: ...


async def poll_paused(
    consumer: ChangelogConsumer, partition: TopicPartition, timeout_ms: int = FOLLOW_FETCH_TIMEOUT_MS
) -> dict[TopicPartition, list[Any]]:
    """One poll of a followed partition that stays paused between polls: resumed, fetched for at
    most `timeout_ms`, paused again. aiokafka fetches an assigned partition all the time, so a
    follower always had a fetch held open at the broker: with the worker's two, produce → segment
    change p99 at 500 events/s on the embedded broker was 26–28 ms against 23 ms with them paused,
    whatever the wait (100 ms, 500 ms or 2 s; bench/RESULTS.md)."""
    consumer.resume(partition)
    try:
        return await consumer.getmany(partition, timeout_ms=timeout_ms)
    finally:
        consumer.pause(partition)


FOLLOW_FULL_POLL_S = 10.0
"""Longest time between two fetches of a followed partition, whatever ListOffsets answers (a guard
for a broker whose answer would not move)."""


class FollowedPartition:
    """The partition a follower reads, fetched (`poll_paused`) only when it may hold something new.

    Each `poll` first asks ListOffsets(latest), one short request; the fetch (several requests
    while the partition is resumed) is skipped when the answer is the one seen when the partition
    was last read to its end. The answer moves with every appended record batch on both brokers
    Tessera runs on: Kafka answers the end offset, the embedded broker the base offset of the last
    batch + 1 (short of the end, docs/ARCHITECTURE.md: never read as the end, here only as a change
    detector). A poll that did not reach the Fetch high watermark leaves the answer unremembered,
    so the next poll fetches again. Two idle followers polling every 0.5 s cost the embedded broker
    1.3–2.7 ms of CPU a second this way against 5.3–6.7 with a fetch at every poll, and their own
    process 3.8–4.4 against 7.2–7.4 (2.4–3.3 with no follower; bench/RESULTS.md)."""

    def __init__(
        self,
        consumer: ChangelogConsumer,
        partition: TopicPartition,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.partition = partition
        self.clock = clock
        self._read_at_answer: int | None = None
        """The ListOffsets answer when the partition was last read to its high watermark."""
        self._fetched_at = -math.inf

    async def poll(self, timeout_ms: int = FOLLOW_FETCH_TIMEOUT_MS) -> dict[TopicPartition, list[Any]]:
        """What arrived since the last poll (nothing fetched if ListOffsets says nothing did)."""
        tp = self.partition
        answer = (await self.consumer.end_offsets([tp]))[tp]
        now = self.clock()
        if answer == self._read_at_answer and now - self._fetched_at < FOLLOW_FULL_POLL_S:
            return {}
        self._read_at_answer = None
        self._fetched_at = now
        polled = await poll_paused(self.consumer, tp, timeout_ms)
        highwater = self.consumer.highwater(tp)
        if highwater is not None and await self.consumer.position(tp) >= highwater:
            self._read_at_answer = answer
        return polled


async def follow(
    follower: Follower,
    failed_event: str,
    backoff_s: tuple[float, float] = FOLLOW_BACKOFF_S,
    interval_s: float = FOLLOW_INTERVAL_S,
) -> None:
    """`start` (unless started), then `step` every `interval_s` until cancelled. A failed step is
    logged as `failed_event`, the follower closed and started again after a back-off (doubling up
    to the longest); it is closed when this ends."""
    backoff = backoff_s[0]
    try:
        while True:
            try:
                if not follower.started:
                    await follower.start()
                await follower.step()
                backoff = backoff_s[0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(failed_event, error=repr(exc), backoff_s=backoff)
                await follower.close()
                await asyncio.sleep(backoff)  # back-off before reconnecting, not a synchronisation
                backoff = min(backoff * 2, backoff_s[1])
                continue
            await asyncio.sleep(interval_s)  # the interval between polls, not a synchronisation
    finally:
        await follower.close()


async def open_follower(bootstrap: str) -> AIOKafkaConsumer:
    """A started consumer following a rarely changing topic (no group, no commits; short fetches, one
    poll at a time with `poll_paused`): `streams.definitions_store.HeadWatcher`,
    `streams.cohorts.CohortWatcher`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FOLLOW_FETCH_MAX_WAIT_MS
    )
    await consumer.start()
    return consumer
