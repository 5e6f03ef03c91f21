"""Reading what a worker wrote to Kafka: whole topics to their Fetch high watermark, group offsets.

The high watermark comes from Fetch answers (`consumer.highwater`), never ListOffsets, which the
embedded broker answers short.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.recovery import fetch_once
from streams.testing.wait import WaitTimeout, async_wait_until

FETCH_TIMEOUT_MS = 200
"""How long one `getmany` waits for records before the positions are compared again."""


async def fetch_to_highwater(
    consumer: AIOKafkaConsumer,
    partitions: Collection[TopicPartition],
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole read, not for one call
    on_records: Callable[[list[Any]], object],
    max_records: int | None = None,
) -> None:
    """`streams.recovery.fetch_to_high_watermark` with a deadline: fetch from `partitions` (assigned
    and positioned by the caller) until each one's position reaches its Fetch high watermark, handing
    every fetched batch to `on_records`.

    Raises `WaitTimeout` when `timeout` seconds pass first (what was fetched until then has been
    handed over).
    """
    remaining = set(partitions)

    def hand_over(_partition: TopicPartition, batch: list[Any]) -> None:
        on_records(batch)

    def drained() -> Awaitable[bool]:
        return fetch_once(consumer, remaining, hand_over, FETCH_TIMEOUT_MS, max_records)

    if remaining:
        # No pause between fetches: `getmany` itself waits up to FETCH_TIMEOUT_MS for records.
        await async_wait_until(drained, timeout, 0.0, f"{len(remaining)} partitions read to their end")


async def read_topic(bootstrap: str, topic: str, deadline_s: float = 30) -> list[Any]:
    """Every record of `topic`, read to the Fetch high watermark of each partition.

    What was read when `deadline_s` passes is returned as it is (nothing for a topic that does not
    exist by then): the caller's comparison shows what is missing.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + deadline_s

    async def known_partitions() -> set[int] | None:
        found = consumer.partitions_for_topic(topic)
        if found is None:
            await consumer._client.force_metadata_update()
            found = consumer.partitions_for_topic(topic)
        return found

    try:
        try:
            partitions = await async_wait_until(known_partitions, deadline_s, 0.0, f"topic {topic} known")
        except WaitTimeout:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        try:
            await fetch_to_highwater(consumer, tps, max(0.0, deadline - time.monotonic()), records.extend)
        except WaitTimeout:
            pass  # the records read so far are the answer
    finally:
        await consumer.stop()
    return records


async def group_committed(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, read without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


__all__ = ["fetch_to_highwater", "group_committed", "read_topic"]
