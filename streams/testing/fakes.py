"""In-memory fakes of the worker's sinks and Kafka clients: its pieces run without Kafka, Redis or
ClickHouse.

Each fake records its calls in a `CallLog`; fakes that share one log show the order in which a
piece reached them (the commit protocol's sinks → state → offsets). `CallLog.fail_on` makes a call
raise, to show what happens, and what does not, after a failed step::

    calls = CallLog()
    analytics, serving = FakeAnalyticsSink(calls), FakeServingStore(calls)
    producer, consumer = FakeProducer(calls), FakeConsumer(calls)
    calls.fail_on("analytics.write", OSError("ClickHouse is down"))

The names recorded: `analytics.write`, `serving.write`, `producer.ack` (a topic send's ack awaited),
`changelog.write`, `consumer.commit`, and the changelog consumer's `consumer.assign`,
`consumer.seek_to_beginning`, `consumer.getmany`, `consumer.stop`; a `FakeTopicProducer`'s
`producer.send_and_wait` (records appended to a `FakeConsumer`'s topics).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition

from schemas.enriched import Device, Geo
from sinks.clickhouse import AnalyticsBatch
from sinks.redis_serving import VisitorUpdate
from streams.core.batch import SourceRecord
from streams.core.enrich import Enricher


class CallLog:
    """The calls the fakes sharing it received, in order (thread-safe: a sink writes in a thread)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._failures: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def fail_on(self, call: str, error: BaseException) -> None:
        """Make every `call` from now on raise `error` (after it is recorded)."""
        self._failures[call] = error

    def record(self, call: str) -> None:
        """Note `call`; raise if it was told to fail."""
        with self._lock:
            self.calls.append(call)
        error = self._failures.get(call)
        if error is not None:
            raise error

    def count(self, call: str) -> int:
        return self.calls.count(call)


class FakeAnalyticsSink:
    """`sinks.clickhouse.AnalyticsSink` in memory: the batches written, first write of a token wins."""

    def __init__(self, calls: CallLog | None = None) -> None:
        self.calls = calls if calls is not None else CallLog()
        self.batches: list[AnalyticsBatch] = []
        """Every batch written, including a retry's."""
        self._tokens: set[str] = set()
        self._lock = threading.Lock()

    def write(self, batch: AnalyticsBatch) -> None:
        self.calls.record("analytics.write")
        with self._lock:
            self.batches.append(batch)
            self._tokens.add(batch.token)

    def tokens(self) -> set[str]:
        """The deduplication tokens written (a replay of a batch reuses its token)."""
        with self._lock:
            return set(self._tokens)


class FakeServingStore:
    """`sinks.redis_serving.ServingStore` in memory, applying updates as the Redis script does."""

    def __init__(self, calls: CallLog | None = None) -> None:
        self.calls = calls if calls is not None else CallLog()
        self.writes: list[list[VisitorUpdate]] = []
        """Every `write` call's updates, in order."""
        self.summaries: dict[str, dict[str, Any]] = {}
        self.segments: dict[str, set[str]] = {}
        """Each visitor's current segment set."""
        self.members: dict[str, set[str]] = {}
        """Each segment's members."""
        self.inboxes: dict[str, dict[str, Any]] = {}
        """Each visitor's messages by message id."""
        self.closed = False

    async def write(self, updates: list[VisitorUpdate]) -> None:
        self.calls.record("serving.write")
        self.writes.append(list(updates))
        for update in updates:
            visitor_id = update.visitor_id
            if update.summary is not None:
                self.summaries[visitor_id] = update.summary
            if update.segments_changed:
                self.segments[visitor_id] = set(update.segments)
            for segment in update.entered:
                self.members.setdefault(segment, set()).add(visitor_id)
            for segment in update.exited:
                self.members.setdefault(segment, set()).discard(visitor_id)
            for message in update.messages:
                self.inboxes.setdefault(visitor_id, {})[message.message_id] = message.model_dump(mode="json")

    async def get_visitor(self, visitor_id: str) -> dict[str, Any] | None:
        summary = self.summaries.get(visitor_id)
        segments = self.segments.get(visitor_id, set())
        inbox = self.inboxes.get(visitor_id, {})
        if summary is None and not segments and not inbox:
            return None
        return {
            "visitor_id": visitor_id,
            "segments": sorted(segments),
            "profile": summary if summary is not None else {},
            "inbox": list(inbox.values()),
        }

    async def segment_counts(self) -> dict[str, int]:
        return {segment: len(members) for segment, members in sorted(self.members.items())}

    async def close(self) -> None:
        self.closed = True


class FakeAck:
    """A topic send's acknowledgement: awaiting it records `producer.ack` (and raises if told to)."""

    def __init__(self, calls: CallLog, topic: str) -> None:
        self.calls = calls
        self.topic = topic

    def __await__(self) -> Generator[Any, None, None]:
        self.calls.record("producer.ack")
        yield from ()  # acknowledged at once: awaiting completes without suspending


class FakeProducer:
    """The producer's two parts in a checkpoint: topic sends whose acks are awaited, and the
    changelog writer (`streams.checkpoint.ChangelogWriter`)."""

    def __init__(self, calls: CallLog | None = None) -> None:
        self.calls = calls if calls is not None else CallLog()
        self.sent: list[tuple[str, list[tuple[bytes | None, bytes]]]] = []
        """(topic, records) of every `send`."""
        self.changelog: list[tuple[str, int, bytes]] = []
        """Every changelog record written: (visitor id, partition, serialised profile)."""

    def send(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> FakeAck:
        """Queue records on `topic`; the broker's ack, to be awaited."""
        self.sent.append((topic, records))
        return FakeAck(self.calls, topic)

    async def write(self, records: list[tuple[str, int, bytes]]) -> None:
        self.calls.record("changelog.write")
        self.changelog.extend(records)

    def latest(self) -> dict[str, bytes]:
        """Each visitor's last changelog record (what recovery would restore)."""
        return {visitor_id: raw for visitor_id, _, raw in self.changelog}


class FakeConsumer:
    """A consumer in memory: the events consumer's offset commits, and a changelog consumer reading
    `topics` (`streams.recovery.ChangelogConsumer`).

    Fetch is modelled as aiokafka's: a partition's high watermark is unknown (None) until a fetch
    answered for it. The first `empty_fetches` fetches answer nothing (a broker with no data ready
    yet), and each answers at most `max_per_fetch` records per partition. ListOffsets(latest)
    answers `list_offsets(end)` (default: the end; the embedded broker's answer is short).
    """

    def __init__(
        self,
        calls: CallLog | None = None,
        topics: Mapping[TopicPartition, Sequence[SourceRecord]] | None = None,
        empty_fetches: int = 0,
        max_per_fetch: int | None = None,
        list_offsets: Callable[[int], int] = lambda end: end,
    ) -> None:
        self.calls = calls if calls is not None else CallLog()
        self.list_offsets = list_offsets
        self.topics = dict(topics or {})
        self.commits: list[dict[TopicPartition, int]] = []
        self.assigned: list[TopicPartition] = []
        self.stopped = False
        self._empty_fetches = empty_fetches
        self._max_per_fetch = max_per_fetch
        self._positions: dict[TopicPartition, int] = {}
        self._highwaters: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.calls.record("consumer.commit")
        self.commits.append(dict(offsets))

    def last_committed(self) -> dict[TopicPartition, int]:
        """The latest committed offset of each partition."""
        latest: dict[TopicPartition, int] = {}
        for offsets in self.commits:
            latest.update(offsets)
        return latest

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.calls.record("consumer.assign")
        self.assigned = list(partitions)
        self._positions = dict.fromkeys(partitions, 0)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.calls.record("consumer.seek_to_beginning")
        for tp in partitions:
            self._positions[tp] = 0

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        self.calls.record("consumer.getmany")
        if self._empty_fetches > 0:
            self._empty_fetches -= 1
            return {}
        answer: dict[TopicPartition, list[Any]] = {}
        for tp in partitions or tuple(self.assigned):
            if tp in self.paused:  # as aiokafka: a paused partition is not fetched
                continue
            log = self.topics.get(tp, ())
            position = self._positions[tp]
            limit = len(log) if self._max_per_fetch is None else self._max_per_fetch
            batch = list(log[position : position + limit])
            self._highwaters[tp] = len(log)
            if batch:
                self._positions[tp] = position + len(batch)
                answer[tp] = batch
        return answer

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._highwaters.get(partition)

    async def position(self, partition: TopicPartition) -> int:
        return self._positions[partition]

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.calls.record("consumer.end_offsets")
        return {tp: self.list_offsets(len(self.topics.get(tp, ()))) for tp in partitions}

    async def stop(self) -> None:
        self.calls.record("consumer.stop")
        self.stopped = True


class FakeTopicProducer:
    """A producer appending to the in-memory topics a `FakeConsumer` reads: what it sends, the
    consumer fetches next (`send_and_wait`, as aiokafka's; records get the next offset)."""

    def __init__(self, consumer: FakeConsumer, calls: CallLog | None = None) -> None:
        self.consumer = consumer
        self.calls = calls if calls is not None else consumer.calls
        self.stopped = False

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None
    ) -> SourceRecord:
        self.calls.record("producer.send_and_wait")
        tp = TopicPartition(topic, partition or 0)
        log = self.consumer.topics.setdefault(tp, [])
        assert isinstance(log, list), "the consumer's topic must be a list to be appended to"
        record = SourceRecord(partition=tp.partition, offset=len(log), key=key, value=value)
        log.append(record)
        return record

    async def stop(self) -> None:
        self.stopped = True


def changelog_records(partition: int, entries: Sequence[tuple[str, bytes | None]]) -> list[SourceRecord]:
    """A changelog partition's records, offsets from 0: (visitor id, serialised profile or None for
    a tombstone)."""
    return [
        SourceRecord(partition=partition, offset=offset, key=visitor_id.encode(), value=value)
        for offset, (visitor_id, value) in enumerate(entries)
    ]


__all__ = [
    "CallLog",
    "FakeAck",
    "FakeAnalyticsSink",
    "FakeConsumer",
    "FakeProducer",
    "FakeServingStore",
    "FakeTopicProducer",
    "changelog_records",
]


class FixedUa:
    """A user-agent parser that sees the same device in every user agent."""

    def __init__(self, device: Device | None = None) -> None:
        self.device = device or Device(category="mobile", os="Android", browser="Chrome")

    def parse(self, ua: str) -> Device:
        return self.device


class FixedGeo:
    """A geo lookup that places every IP in the same city."""

    def __init__(self, geo: Geo | None = None) -> None:
        self.geo = geo or Geo(country="CH", city="Zurich", source="ip")

    def lookup(self, ip: str) -> Geo | None:
        return self.geo


def fixed_enricher() -> Enricher:
    """An `Enricher` with no databases: every event from an Android phone in Zurich."""
    return Enricher(FixedUa(), FixedGeo())
