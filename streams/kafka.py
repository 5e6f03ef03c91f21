"""The worker's Kafka clients: consumer and producer options, whole-batch sends, the changelog writer,
and the loop that follows a topic (`follow`).

The bench's bare relay and its aiokafka floor use the same options, so their figures are the
floor of exactly the clients the worker runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streams.logging import get_logger
from streams.partitioning import partition_for
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


class Follower(Protocol):
    """A reader that follows a topic (`streams.definitions_store.HeadWatcher`,
    `streams.cohorts.CohortWatcher`): opened by `start`, one fetch per `step`, released by `close`."""

    @property
    def started(self) -> bool: ...

    async def start(self) -> None: ...

    async def step(self) -> object: ...

    async def close(self) -> None: ...


async def follow(
    follower: Follower, failed_event: str, backoff_s: tuple[float, float] = FOLLOW_BACKOFF_S
) -> None:
    """`start` (unless started), then `step` until cancelled. A failed step is logged as
    `failed_event`, the follower closed and started again after a back-off (doubling up to the
    longest); it is closed when this ends."""
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
    finally:
        await follower.close()


FOLLOW_FETCH_MAX_WAIT_MS = 500
"""How long the broker may hold a follower's fetch: long, so following a topic that rarely changes
(definitions, cohort sketches) costs the broker and this process about two fetches a second, not
the hundreds a short wait makes (a new record is seen within about this)."""


async def open_follower(bootstrap: str) -> AIOKafkaConsumer:
    """A started consumer following a rarely changing topic (no group, no commits; fetches wait
    long): `streams.definitions_store.HeadWatcher`, `streams.cohorts.CohortWatcher`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FOLLOW_FETCH_MAX_WAIT_MS
    )
    await consumer.start()
    return consumer
