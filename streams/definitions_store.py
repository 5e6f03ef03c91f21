"""The definitions at run time: versions on the compacted definitions topic, and the head every worker runs.

The topic (`settings.definitions_topic`, one partition) and its keys are described in
`schemas/definitions.py`: ``version:<v>`` per version as first applied, ``rollback:<n>`` per
rollback, ``head`` for the current record. This module is the one place that reads and writes it:

- `DefinitionsStore.read` reads the topic to its Fetch high watermark
  (`streams.recovery.fetch_to_high_watermark`) into a `DefinitionsHistory`: the head, each
  version's record, and every apply and rollback in order.
- `DefinitionsStore.publish` validates the text first (`parse_definitions`): a refused file raises
  `DefinitionError` and nothing reaches the topic. A version string that exists with other content
  is refused (`VersionClash`); the same text again is a no-op when it is the head, and makes that
  older version the head again (a rollback) when it is not. Else it writes the version record, then
  the head.
- `DefinitionsStore.rollback` makes an earlier version the head again (validated again first: this
  release's loader must still accept it).
- `HeadWatcher` follows the topic in a worker and hands every new head whose text differs from the
  running one to a callback (`Engine.switch_definitions`); a head whose text no longer parses is
  logged and skipped, and the worker keeps its current definitions.
- `initial_definitions` is the worker's start-up: the head, or, on an empty topic, the segments
  file published as the first version (so a fresh deployment starts as before).

Two publishers racing with the same new version string and different texts can both pass the
clash check (each reads, then writes); the later head wins. Publish from one place at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas.definitions import (
    HEAD_KEY,
    ROLLBACK_KEY_PREFIX,
    VERSION_KEY_PREFIX,
    DefinitionsRecord,
    text_sha256,
)
from streams.core.definitions import Definitions, parse_definitions, read_definitions_text
from streams.kafka import FOLLOW_FETCH_TIMEOUT_MS, FollowedPartition, follow
from streams.logging import get_logger
from streams.recovery import ChangelogConsumer, ConsumerFactory, fetch_to_high_watermark

log = get_logger(__name__)

WATCH_BACKOFF_S = (0.5, 10.0)
"""First and longest pause of the watcher after a failed fetch."""


class RecordProducer(Protocol):
    """What the store needs of a started producer (aiokafka's `AIOKafkaProducer` has it)."""

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None
    ) -> Any: ...

    async def stop(self) -> None: ...


ProducerFactory = Callable[[], Awaitable[RecordProducer]]
"""Returns a started producer; the store stops it in `DefinitionsStore.close`."""


class VersionClash(ValueError):
    """A version string that exists on the topic with other content."""

    def __init__(self, version: str) -> None:
        super().__init__(f"version {version} exists with other content; bump version")
        self.version = version


class UnknownVersion(LookupError):
    """A version the topic does not hold."""

    def __init__(self, version: str) -> None:
        super().__init__(f"no version {version} on the definitions topic")
        self.version = version

    def __str__(self) -> str:  # LookupError's would quote the message
        return str(self.args[0])


@dataclass(slots=True)
class DefinitionsHistory:
    """The definitions topic as read so far."""

    head: DefinitionsRecord | None = None
    versions: dict[str, DefinitionsRecord] = field(default_factory=dict)
    """Each version's record as first applied."""
    entries: list[DefinitionsRecord] = field(default_factory=list)
    """Every apply and rollback, in topic order."""
    rollbacks: int = 0

    def add(self, key: bytes | None, value: bytes | None) -> bool:
        """Take one topic record into the history; whether it was a head. A record this release
        cannot read is logged and skipped."""
        if key is None or value is None:
            return False
        name = key.decode("utf-8", "replace")
        try:
            record = DefinitionsRecord.model_validate_json(value)
        except ValidationError as exc:
            log.warning("definitions_record_unreadable", key=name, error=str(exc).splitlines()[0])
            return False
        if name == HEAD_KEY:
            self.head = record
            return True
        if name.startswith(VERSION_KEY_PREFIX):
            self.versions[record.version] = record
            self.entries.append(record)
        elif name.startswith(ROLLBACK_KEY_PREFIX):
            self.rollbacks += 1
            self.entries.append(record)
        return False

    def add_all(self, records: Iterable[Any]) -> bool:
        """`add` each record (anything with `key` and `value`); whether any was a head."""
        heads = False
        for record in records:
            heads = self.add(record.key, record.value) or heads
        return heads


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish or a rollback made the head."""

    record: DefinitionsRecord
    defs: Definitions
    changed: bool
    """False when it was the head already (nothing was written)."""


def record_path(topic: str, version: str) -> str:
    """The place a version's errors are reported at (`DefinitionError.path`)."""
    return f"{topic}@{version}"


class DefinitionsStore:
    """Reads and writes the definitions topic. Consumers are opened per read; the producer is opened
    on the first write and stopped by `close`."""

    def __init__(self, topic: str, open_consumer: ConsumerFactory, open_producer: ProducerFactory) -> None:
        self.topic = topic
        self.partition = TopicPartition(topic, 0)
        self.open_consumer = open_consumer
        self._open_producer = open_producer
        self._producer: RecordProducer | None = None

    async def read(self) -> DefinitionsHistory:
        """The whole topic, read to its Fetch high watermark."""
        consumer = await self.open_consumer()
        try:
            history = DefinitionsHistory()
            await self.read_into(consumer, history)
            return history
        finally:
            await consumer.stop()

    async def read_into(self, consumer: ChangelogConsumer, history: DefinitionsHistory) -> None:
        """Assign the topic to `consumer` and read it from the beginning into `history`, to its
        Fetch high watermark (the consumer stays there)."""
        consumer.assign([self.partition])
        await consumer.seek_to_beginning(self.partition)
        await fetch_to_high_watermark(consumer, [self.partition], lambda _tp, batch: history.add_all(batch))

    async def publish(
        self, text: str, applied_by: str, comment: str = "", path: str | None = None
    ) -> Published:
        """Validate `text` and make it the head (module docstring: what is refused, what is a no-op).

        Raises `DefinitionError` for a refused file (reported at `path`, by default the topic and
        the version) and `VersionClash`; nothing is written then.
        """
        defs = parse_definitions(text, path or record_path(self.topic, "<new>"))
        history = await self.read()
        sha = text_sha256(text)
        existing = history.versions.get(defs.version)
        if existing is not None:
            if existing.sha256 != sha:
                raise VersionClash(defs.version)
            return await self._make_head_again(history, existing, defs, applied_by, comment)
        record = DefinitionsRecord(
            version=defs.version,
            text=text,
            sha256=sha,
            applied_at=datetime.now(UTC),
            applied_by=applied_by,
            comment=comment,
            action="apply",
            previous=history.head.version if history.head is not None else None,
        )
        await self._send(VERSION_KEY_PREFIX + defs.version, record)
        await self._send(HEAD_KEY, record)
        log.info("definitions_published", version=defs.version, applied_by=applied_by, sha256=sha[:12])
        return Published(record, defs, changed=True)

    async def rollback(self, version: str, applied_by: str, comment: str = "") -> Published:
        """Make `version` the head again; raises `UnknownVersion`, or `DefinitionError` when this
        release's loader refuses its text (nothing is written then)."""
        history = await self.read()
        target = history.versions.get(version)
        if target is None:
            raise UnknownVersion(version)
        defs = parse_definitions(target.text, record_path(self.topic, version))
        return await self._make_head_again(history, target, defs, applied_by, comment)

    async def _make_head_again(
        self,
        history: DefinitionsHistory,
        target: DefinitionsRecord,
        defs: Definitions,
        applied_by: str,
        comment: str,
    ) -> Published:
        head = history.head
        if head is not None and head.sha256 == target.sha256:
            return Published(head, defs, changed=False)
        record = target.model_copy(
            update={
                "applied_at": datetime.now(UTC),
                "applied_by": applied_by,
                "comment": comment,
                "action": "rollback",
                "rolled_back_to": target.version,
                "previous": head.version if head is not None else None,
            }
        )
        await self._send(f"{ROLLBACK_KEY_PREFIX}{history.rollbacks + 1}", record)
        await self._send(HEAD_KEY, record)
        log.info("definitions_rolled_back", version=target.version, applied_by=applied_by)
        return Published(record, defs, changed=True)

    async def _send(self, key: str, record: DefinitionsRecord) -> None:
        if self._producer is None:
            self._producer = await self._open_producer()
        await self._producer.send_and_wait(
            self.topic, value=record.model_dump_json().encode(), key=key.encode(), partition=0
        )

    async def close(self) -> None:
        """Stop the producer, if one was opened."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


async def open_producer(bootstrap: str) -> AIOKafkaProducer:
    """A started producer for the definitions topic (writes wait for every replica)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    return producer


async def initial_definitions(store: DefinitionsStore, seed: Path) -> Definitions:
    """The definitions a starting worker runs: the topic's head, or on an empty topic the `seed`
    file, published as the first version. A head this release refuses stops the start-up with its
    `DefinitionError` (publish a fixed version with `tessera segments apply`)."""
    history = await store.read()
    head = history.head
    if head is None:
        published = await store.publish(
            read_definitions_text(seed), applied_by="seed", comment=f"seeded from {seed}", path=str(seed)
        )
        log.info("definitions_seeded", version=published.defs.version, file=str(seed), topic=store.topic)
        return published.defs
    defs = parse_definitions(head.text, record_path(store.topic, head.version))
    log.info("definitions_from_topic", version=head.version, topic=store.topic, file_ignored=str(seed))
    return defs


class HeadWatcher:
    """Follows the definitions topic in a worker: every new head whose text differs from what runs
    (`running_sha()`, a `Definitions.source_sha`) is parsed and handed to `on_head`. A head whose
    text does not parse is logged and skipped; a failing `on_head` is logged. Its consumer comes from
    `open_consumer` (default: the store's)."""

    def __init__(
        self,
        store: DefinitionsStore,
        on_head: Callable[[Definitions], Awaitable[object]],
        running_sha: Callable[[], str],
        open_consumer: ConsumerFactory | None = None,
    ) -> None:
        self.store = store
        self.on_head = on_head
        self.running_sha = running_sha
        self.open_consumer = open_consumer or store.open_consumer
        self.history = DefinitionsHistory()
        self._followed: FollowedPartition | None = None
        """The followed partition on its consumer, while started."""

    async def start(self) -> None:
        """Open the consumer and read the topic to its end (the head there is what runs already,
        or is handed over by the next `step`)."""
        self.history = DefinitionsHistory()
        consumer = await self.open_consumer()
        self._followed = FollowedPartition(consumer, self.store.partition)
        await self.store.read_into(consumer, self.history)

    async def step(self, timeout_ms: int = FOLLOW_FETCH_TIMEOUT_MS) -> Definitions | None:
        """One poll (`FollowedPartition`); the definitions handed to `on_head` if a new head arrived
        (or the head read by `start` differs from what runs)."""
        followed = self._followed
        assert followed is not None, "start() first"
        polled = await followed.poll(timeout_ms)
        for batch in polled.values():
            self.history.add_all(batch)
        head = self.history.head
        if head is None or head.sha256 == self.running_sha():
            return None
        try:
            defs = parse_definitions(head.text, record_path(self.store.topic, head.version))
        except ValueError as exc:  # a DefinitionError
            log.error("definitions_head_refused", version=head.version, error=str(exc))
            self.history.head = None  # not retried until a newer head arrives
            return None
        log.info("definitions_switching", version=defs.version, previous_sha=self.running_sha()[:12])
        try:
            await self.on_head(defs)
        except Exception as exc:
            log.error("definitions_switch_failed", version=defs.version, error=repr(exc))
        self.history.head = None  # handled: a later head is the next to act on
        return defs

    @property
    def started(self) -> bool:
        return self._followed is not None

    async def close(self) -> None:
        followed, self._followed = self._followed, None
        if followed is not None:
            await followed.consumer.stop()

    async def run(self) -> None:
        """`start`, then `step` until cancelled; a failed fetch is retried with back-off."""
        await follow(self, "definitions_watch_failed", WATCH_BACKOFF_S)
