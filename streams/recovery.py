"""Recovery: a newly assigned partition's state, rebuilt from its changelog partition.

The changelog topic has the events topic's partition numbers and holds one record per visitor per
checkpoint (the serialised profile; a tombstone deletes). Recovery reads each assigned changelog
partition from the beginning to the high watermark reported by Fetch, never to ListOffsets, which
the embedded broker answers short (docs/ARCHITECTURE.md, "The embedded stack and its known
limits"). Then, per partition and without decoding any profile (only the serialised header is
read):

- the profiles are kept as they were read, serialised;
- every profile's `next_check_at` becomes its timer;
- the event-time clock starts at the newest `last_seen`, capped at the wall clock.

The consumer is passed in as a factory, so tests hand in an in-memory one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.core.profile import Profile, profile_clock_fields
from streams.profile_store import PartitionState

RECOVERY_FETCH_MAX_WAIT_MS = 5
"""Recovery reads partitions that hold data up to their high watermark: no reason to wait long."""

FETCH_TIMEOUT_MS = 20
"""Short: an empty changelog partition answers with no records, and `getmany` would otherwise wait
its whole timeout before the high watermark is checked."""

FETCH_MAX_RECORDS = 50_000


class ChangelogConsumer(Protocol):
    """What recovery and the topic followers (`streams.kafka.FollowedPartition`) need of a started
    consumer (aiokafka's `AIOKafkaConsumer` has it)."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = ..., max_records: int | None = ...
    ) -> dict[TopicPartition, list[Any]]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def stop(self) -> None: ...


ConsumerFactory = Callable[[], Awaitable[ChangelogConsumer]]
"""Returns a started consumer; recovery stops it when done."""

ProfilesFactory = Callable[[int], MutableMapping[str, bytes | Profile]]
"""An empty profile mapping for a partition (`streams.profile_store.new_partition_profiles`)."""


@dataclass(slots=True)
class Recovered:
    states: dict[int, PartitionState]
    """The rebuilt state of each recovered partition."""
    records: int
    """Changelog records read."""


async def open_changelog_consumer(bootstrap: str) -> ChangelogConsumer:
    """A started aiokafka consumer for reading changelog partitions (no group, no commits)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=RECOVERY_FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    return consumer


async def recover_partitions(
    partitions: Iterable[int],
    topic: str,
    open_consumer: ConsumerFactory,
    new_profiles: ProfilesFactory = lambda partition: {},
) -> Recovered:
    """Rebuild the state of `partitions` from `topic`, the changelog (no consumer for none)."""
    states = {partition: PartitionState(profiles=new_profiles(partition)) for partition in partitions}
    records = 0
    if states:
        consumer = await open_consumer()
        try:
            records = await read_changelog(consumer, topic, states)
        finally:
            await consumer.stop()
    rebuild_timers_and_clocks(states.values(), wall=time.time())
    return Recovered(states, records)


async def read_changelog(consumer: ChangelogConsumer, topic: str, states: dict[int, PartitionState]) -> int:
    """Read each partition's changelog from the beginning into its profiles, up to Fetch's high
    watermark; the number of records read. A tombstone deletes the visitor's profile."""
    tps = [TopicPartition(topic, partition) for partition in states]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    records = 0

    def restore(tp: TopicPartition, batch: list[Any]) -> None:
        nonlocal records
        profiles = states[tp.partition].profiles
        for msg in batch:
            if msg.value is None:
                profiles.pop(msg.key.decode(), None)
            else:
                profiles[msg.key.decode()] = msg.value
        records += len(batch)

    await fetch_to_high_watermark(consumer, tps, restore)
    return records


async def fetch_to_high_watermark(
    consumer: ChangelogConsumer,
    partitions: Collection[TopicPartition],
    on_batch: Callable[[TopicPartition, list[Any]], object],
    timeout_ms: int = FETCH_TIMEOUT_MS,
    max_records: int | None = FETCH_MAX_RECORDS,
) -> None:
    """Fetch from `partitions` (assigned and positioned by the caller), handing each fetched batch
    to `on_batch`, until every partition's position reaches its high watermark as Fetch reports it
    (never ListOffsets: short on the embedded broker). A fetch may answer nothing while the high
    watermark is still unknown: fetching goes on."""
    remaining = set(partitions)
    while remaining:
        await fetch_once(consumer, remaining, on_batch, timeout_ms, max_records)


async def fetch_once(
    consumer: ChangelogConsumer,
    remaining: set[TopicPartition],
    on_batch: Callable[[TopicPartition, list[Any]], object],
    timeout_ms: int,
    max_records: int | None,
) -> bool:
    """One step of `fetch_to_high_watermark`: one fetch from `remaining`, each batch handed to
    `on_batch`, then the partitions whose position reached their Fetch high watermark leave
    `remaining`. True when none remains."""
    polled = await consumer.getmany(*remaining, timeout_ms=timeout_ms, max_records=max_records)
    for tp, batch in polled.items():
        on_batch(tp, batch)
    for tp in list(remaining):
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) >= highwater:
            remaining.discard(tp)
    return not remaining


def rebuild_timers_and_clocks(states: Iterable[PartitionState], wall: float) -> None:
    """Each partition's timers and event-time clock from its profiles' serialised headers: no
    profile is decompressed or parsed here."""
    for state in states:
        latest = state.clock
        next_due: dict[str, float] = {}
        for visitor_id, raw in state.profiles.items():
            last_seen, next_check_at = (
                profile_clock_fields(raw) if isinstance(raw, bytes) else (raw.last_seen, raw.next_check_at)
            )
            if last_seen > latest:
                latest = last_seen
            if next_check_at is not None:
                next_due[visitor_id] = next_check_at
        state.timers.schedule_all(next_due)
        state.clock = max(state.clock, min(latest, wall))
        state.last_record_wall = wall
