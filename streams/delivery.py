"""Delivery: the runner of `tessera deliver` and the export of `tessera audiences export`.

**The runner** consumes the `messages` topic in its own consumer group
(`TESSERA_DELIVERY_GROUP_ID`) and hands each message to the adapter of its channel
(`TESSERA_DELIVERY_ROUTES`; adapters in `sinks.delivery`). A batch is made durable in this order
(`DeliveryRunner.step`):

1. **poll** a batch of records from the owned partitions;
2. **decode** each: a record that is not a valid `Message` becomes a dead letter (`not_json` or
   `schema_violation`); a campaign's holdout record is counted `holdout` and not delivered; the
   rest are routed (`sinks.delivery.plan.route`, pure);
3. **deliver** them, at most `TESSERA_DELIVERY_CONCURRENCY` at once: each adapter skips a message
   id it has delivered (`duplicate`), sends, retries with back-off, and marks the id delivered in
   Redis once the channel has accepted it; a message not delivered (`failed`, `undeliverable`)
   becomes a dead letter with its typed reason and the attempts made;
4. **dead letters** are sent to `TESSERA_DELIVERY_DLQ_TOPIC` and their acks awaited;
5. **offsets** are committed (the last offset + 1 of each partition of the batch).

Offsets last, because a committed message is never read again: its delivery or its dead letter must
be durable first. A crash before step 5 reads the batch again; the delivered ids (step 3) make the
second pass send nothing that was delivered. A crash inside step 3, between a channel accepting a
message and its id being marked, sends that one message again: delivery is at-least-once per
channel, and receivers drop the copy by the message id they are given (webhook header
`Tessera-Message-Id`, e-mail `Message-ID`). A step that fails (Redis down) seeks the batch's
partitions back to its first offsets and is tried again after a pause: nothing is lost, nothing
committed past it.

**The audience export** (`export_audiences`) reads the `segment-changes` topic from where the last
run stopped, folds the entries and exits into each audience's members, reads the members'
identifiers from the profiles on the changelog, and writes per audience an add and a remove file in
Meta's and Google's formats (`sinks.delivery.audiences`); the state (members, uploaded, offsets) is
written after the files, so a run that fails leaves the previous state and the next run writes the
same changes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from pydantic import ValidationError
from redis.asyncio import Redis

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.messages import Message
from sinks.delivery import ChannelAdapter, DeliveryResult, DeliveryStatus
from sinks.delivery.audiences import (
    AudienceState,
    Identifiers,
    audience_diff,
    fold_changes,
    google_row,
    meta_row,
    write_audience_files,
)
from sinks.delivery.plan import is_holdout, route
from streams.deadletters import dead_letter_record
from streams.logging import get_logger
from streams.recovery import ChangelogConsumer, fetch_to_high_watermark
from streams.settings import Settings

log = get_logger(__name__)

RETRY_PAUSE_S = (0.5, 10.0)
"""First and longest pause before a failed delivery step is tried again."""


class MessagesConsumer(Protocol):
    """What the runner needs of its group consumer (aiokafka's `AIOKafkaConsumer` has it)."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = ..., max_records: int | None = ...
    ) -> dict[TopicPartition, list[Any]]: ...

    async def commit(self, offsets: Any = ...) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


DeadLetterSend = Callable[[list[tuple[bytes | None, bytes]]], Awaitable[None]]
"""Sends dead-letter records and returns once the broker acknowledged them."""


@dataclass(slots=True)
class DeliveryStats:
    """What the runner did, by status (and records that were not messages)."""

    by_status: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    batches: int = 0

    def count(self, result: DeliveryResult) -> None:
        self.by_status[str(result.status)] = self.by_status.get(str(result.status), 0) + 1
        self.attempts += result.attempts


def decode(record: Any) -> Message | DeadLetter:
    """The message of a `messages` record, or the dead letter saying why it is none."""
    raw: bytes = record.value or b""
    try:
        return Message.model_validate_json(raw)
    except ValidationError as exc:
        json_invalid = any(error["type"] == "json_invalid" for error in exc.errors())
        reason = DeadLetterReason.not_json if json_invalid else DeadLetterReason.schema_violation
        return _dead(record, reason, str(exc)[:4000], None)


def _dead(record: Any, reason: DeadLetterReason, detail: str, attempts: int | None) -> DeadLetter:
    key = record.key.decode(errors="replace") if record.key else None
    return DeadLetter(
        reason=reason,
        detail=detail[:4000],
        source="delivery",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        received_at=datetime.now(UTC),
        original_b64=DeadLetter.encode_original(record.value or b""),
        attempts=attempts,
    )


class Dispatcher:
    """Routes a message to its adapter (pure choice, `plan.route`) and delivers it."""

    def __init__(self, adapters: Mapping[str, ChannelAdapter], routes: Mapping[str, str]) -> None:
        self.adapters = dict(adapters)
        self.routes = dict(routes)

    async def dispatch(self, message: Message) -> DeliveryResult:
        if is_holdout(message):
            return DeliveryResult(message.message_id, str(message.channel), DeliveryStatus.holdout)
        name = route(message, self.routes)
        adapter = self.adapters.get(name) if name is not None else None
        if adapter is None:
            return DeliveryResult(
                message.message_id,
                name or str(message.channel),
                DeliveryStatus.undeliverable,
                0,
                f"no adapter for channel {message.channel!r} (route {name!r})",
            )
        return await adapter.deliver(message)

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()


class DeliveryRunner:
    """The consume → deliver → dead-letter → commit loop (see the module docstring)."""

    def __init__(
        self,
        consumer: MessagesConsumer,
        dispatcher: Dispatcher,
        send_dead_letters: DeadLetterSend,
        *,
        concurrency: int = 16,
        max_records: int = 500,
    ) -> None:
        self.consumer = consumer
        self.dispatcher = dispatcher
        self.send_dead_letters = send_dead_letters
        self.concurrency = concurrency
        self.max_records = max_records
        self.stats = DeliveryStats()

    async def step(self, timeout_ms: int = 200) -> int:
        """One batch through steps 1–5; the number of records it held."""
        # 1. poll
        polled = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        records = [record for batch in polled.values() for record in batch]
        if not records:
            return 0
        try:
            # 2. decode and route
            decoded = [(record, decode(record)) for record in records]
            dead = [item for _, item in decoded if isinstance(item, DeadLetter)]
            # 3. deliver (each adapter marks what its channel accepted)
            gate = asyncio.Semaphore(self.concurrency)

            async def deliver(record: Any, message: Message) -> DeadLetter | None:
                async with gate:
                    result = await self.dispatcher.dispatch(message)
                self.stats.count(result)
                log.info(
                    "delivery.result",
                    message_id=result.message_id,
                    channel=result.channel,
                    status=str(result.status),
                    attempts=result.attempts,
                    detail=result.detail or None,
                )
                if not result.dead:
                    return None
                reason = (
                    DeadLetterReason.delivery_failed
                    if result.status is DeliveryStatus.failed
                    else DeadLetterReason.undeliverable
                )
                return _dead(record, reason, f"{result.channel}: {result.detail}", result.attempts)

            outcomes = await asyncio.gather(
                *(deliver(record, item) for record, item in decoded if isinstance(item, Message))
            )
            dead += [letter for letter in outcomes if letter is not None]
            # 4. dead letters, acknowledged
            if dead:
                await self.send_dead_letters([dead_letter_record(letter) for letter in dead])
                self.stats.by_status["dead_lettered"] = self.stats.by_status.get("dead_lettered", 0) + len(
                    dead
                )
        except BaseException:
            # Read the batch again: what was delivered is a duplicate then, nothing is lost.
            for tp, batch in polled.items():
                if batch:
                    self.consumer.seek(tp, batch[0].offset)
            raise
        # 5. offsets
        offsets = {tp: batch[-1].offset + 1 for tp, batch in polled.items() if batch}
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved to another member, which reads them from the last commit; the
            # delivered ids make what this member delivered a duplicate there.
            log.warning("delivery.commit_failed", error=str(exc))
        self.stats.batches += 1
        return len(records)

    async def run(
        self, stop: asyncio.Event, on_progress: Callable[[DeliveryStats], object] | None = None
    ) -> None:
        """Steps until `stop` is set; a failed step is logged and tried again after a pause."""
        pause = RETRY_PAUSE_S[0]
        while not stop.is_set():
            try:
                if await self.step() and on_progress is not None:
                    on_progress(self.stats)
                pause = RETRY_PAUSE_S[0]
            except Exception as exc:  # Kafka, Redis, a bug in an adapter: nothing stops the runner
                # The step sought its partitions back; the batch is read again after the pause.
                log.warning(
                    "delivery.step_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=pause,
                    exc_info=True,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, RETRY_PAUSE_S[1])


# -- identifiers from the profiles on the changelog -------------------------------------------------


async def read_identifiers(
    consumer: ChangelogConsumer, topic: str, visitors: Collection[str] | None
) -> dict[str, Identifiers]:
    """The identifiers of `visitors` (None: every visitor) from their latest profile on the changelog
    topic, read to its high watermark; only the latest record of each wanted visitor is kept while
    reading, and only those profiles are decoded."""
    from streams.core.profile import Profile

    wanted = set(visitors) if visitors is not None else None
    tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
    if not tps:  # no such topic (yet): nobody has identifiers
        return {}
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    latest: dict[str, bytes | None] = {}

    def keep(_tp: TopicPartition, batch: list[Any]) -> None:
        for record in batch:
            visitor = record.key.decode() if record.key else None
            if visitor is not None and (wanted is None or visitor in wanted):
                latest[visitor] = record.value

    await fetch_to_high_watermark(consumer, tps, keep)
    found: dict[str, Identifiers] = {}
    for visitor, raw in latest.items():
        if raw is None:
            continue
        profile = Profile.from_bytes(raw)
        found[visitor] = Identifiers.from_traits(profile.traits, profile.country)
    return found


async def _partitions(consumer: Any, topic: str) -> list[int]:
    found = consumer.partitions_for_topic(topic)
    if found is None:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
    return sorted(found or ())


class ChangelogContacts:
    """The e-mail channel's recipient lookup: a visitor's `email` trait from the changelog. The index
    is read on first use and read again on a miss at most every `refresh_s` (a visitor identified
    since)."""

    def __init__(
        self,
        open_consumer: Callable[[], Awaitable[ChangelogConsumer]],
        topic: str,
        refresh_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.open_consumer = open_consumer
        self.topic = topic
        self.refresh_s = refresh_s
        self.clock = clock
        self._emails: dict[str, str] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, visitor_id: str) -> str | None:
        if visitor_id in self._emails:
            return self._emails[visitor_id]
        async with self._lock:
            if self._read_at is None or self.clock() - self._read_at >= self.refresh_s:
                consumer = await self.open_consumer()
                try:
                    found = await read_identifiers(consumer, self.topic, None)
                finally:
                    await consumer.stop()
                self._emails = {v: ids.email for v, ids in found.items() if ids.email}
                self._read_at = self.clock()
        return self._emails.get(visitor_id)


# -- audience export --------------------------------------------------------------------------------


STATE_FILE = "state.json"


@dataclass(slots=True)
class ExportReport:
    run: str
    changes_read: int = 0
    audiences: dict[str, dict[str, int]] = field(default_factory=dict)
    """audience → {"members", "add", "remove", "skipped"}."""
    files: list[Path] = field(default_factory=list)


def read_state(path: Path) -> AudienceState:
    """The state the last export run left in `path` (none yet: empty)."""
    return AudienceState.from_json(json.loads(path.read_text())) if path.exists() else AudienceState()


def write_state(path: Path, state: AudienceState) -> None:
    """`state` to `path`, replacing it whole (written beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json()))
    tmp.replace(path)


async def read_changes(
    consumer: ChangelogConsumer,
    topic: str,
    offsets: dict[int, int],
    on_change: Callable[[tuple[str, str, str]], object],
    progress: Callable[[int], object] | None = None,
) -> int:
    """Every segment change of `topic` from `offsets` (partition → next offset; the beginning for a
    partition not named) to the high watermark, in order per partition, as (visitor, segment,
    transition); `offsets` is advanced. The number read."""
    tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
    if not tps:  # no such topic (yet): no changes
        return 0
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    for tp in tps:
        if tp.partition in offsets:
            consumer.seek(tp, offsets[tp.partition])  # type: ignore[attr-defined]
    read = 0

    def take(tp: TopicPartition, batch: list[Any]) -> None:
        nonlocal read
        for record in batch:
            change = orjson.loads(record.value)
            on_change((change["visitor_id"], change["segment"], change["transition"]))
            offsets[tp.partition] = record.offset + 1
        read += len(batch)
        if progress is not None:
            progress(read)

    await fetch_to_high_watermark(consumer, tps, take)
    return read


async def export_audiences(
    open_consumer: Callable[[], Awaitable[ChangelogConsumer]],
    changes_topic: str,
    changelog_topic: str,
    out: Path,
    audiences: Collection[str] = (),
    now: datetime | None = None,
    progress: Callable[[str, int], object] | None = None,
) -> ExportReport:
    """One export run into `out` (see the module docstring): files under `out/<run>/`, then
    `out/state.json`."""
    now = now or datetime.now(UTC)
    run = now.strftime("%Y%m%dT%H%M%SZ")
    state_path = out / STATE_FILE
    state = read_state(state_path)
    wanted = frozenset(audiences) if audiences else None
    report = ExportReport(run)

    # 1. the changes since the last run, folded into the members
    consumer = await open_consumer()
    try:
        pending: list[tuple[str, str, str]] = []

        def fold(change: tuple[str, str, str]) -> None:
            pending.append(change)
            if len(pending) >= 10_000:
                fold_changes(state.members, pending, wanted)
                pending.clear()

        report.changes_read = await read_changes(
            consumer,
            changes_topic,
            state.offsets,
            fold,
            (lambda n: progress("changes read", n)) if progress else None,
        )
        fold_changes(state.members, pending, wanted)
    finally:
        await consumer.stop()

    # 2. the identifiers of every visitor a file may name (members not uploaded yet, and leavers)
    involved: set[str] = set()
    for audience, members in state.members.items():
        uploaded = state.uploaded.get(audience, set())
        involved |= (members - uploaded) | (uploaded - members)
    for audience in set(state.uploaded) - set(state.members):
        involved |= state.uploaded[audience]
    consumer = await open_consumer()
    try:
        identifiers = await read_identifiers(consumer, changelog_topic, involved)
    finally:
        await consumer.stop()
    uploadable = {
        v: meta_row(ids) is not None or google_row(ids) is not None for v, ids in identifiers.items()
    }

    # 3. the files, per audience (streamed row by row)
    names = sorted(set(state.members) | set(state.uploaded))
    for done, audience in enumerate(names, 1):
        members = state.members.get(audience, set())
        uploaded = state.uploaded.get(audience, set())
        diff = audience_diff(audience, members, uploaded, uploadable)
        report.files += write_audience_files(out, run, diff, identifiers)
        state.uploaded[audience] = (uploaded - set(diff.remove)) | set(diff.add)
        report.audiences[audience] = {
            "members": len(members),
            "add": len(diff.add),
            "remove": len(diff.remove),
            "skipped": diff.skipped,
        }
        if progress is not None:
            progress("audiences written", done)

    # 4. the state, last: a failed run leaves the previous one and is written again next time
    write_state(state_path, state)
    log.info("audiences.exported", run=run, changes=report.changes_read, audiences=report.audiences)
    return report


# -- wiring (the edge) ----------------------------------------------------------------------------


def build_dispatcher(settings: Settings, redis: Redis, redis_url: str, bootstrap: str) -> Dispatcher:
    """Every adapter of `settings`, each idempotent through the delivered ids in `redis`."""
    from sinks.delivery import AudienceSender, ChannelSender, Idempotent, RedisDeliveredIds
    from sinks.delivery.email import EmailSender
    from sinks.delivery.inbox import InboxSender
    from sinks.delivery.webhook import WebhookSender, WebhookTarget
    from sinks.redis_serving import RedisServing
    from streams.recovery import open_changelog_consumer

    s = settings
    delivered = RedisDeliveredIds(redis, s.redis_prefix, s.delivered_ids_ttl_s)
    targets = {
        name: WebhookTarget(target.url, target.secret.get_secret_value().encode())
        for name, target in s.webhooks.items()
    }
    contacts = ChangelogContacts(lambda: open_changelog_consumer(bootstrap), s.changelog_topic)
    senders: list[ChannelSender] = [
        InboxSender(RedisServing(redis_url, prefix=s.redis_prefix)),
        WebhookSender(
            targets,
            max_attempts=s.delivery_max_attempts,
            backoff_s=s.delivery_backoff_s,
            backoff_max_s=s.delivery_backoff_max_s,
            timeout_s=s.delivery_timeout_s,
        ),
        EmailSender(
            s.smtp_host,
            s.smtp_port,
            s.smtp_from,
            contacts=contacts,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            starttls=s.smtp_starttls,
            timeout_s=s.delivery_timeout_s,
            max_attempts=s.delivery_max_attempts,
            backoff_s=s.delivery_backoff_s,
            backoff_max_s=s.delivery_backoff_max_s,
        ),
        AudienceSender(),
    ]
    return Dispatcher({sender.name: Idempotent(sender, delivered) for sender in senders}, s.delivery_routes)


async def run_delivery(
    settings: Settings,
    bootstrap: str,
    redis_url: str,
    stop: asyncio.Event,
    on_progress: Callable[[DeliveryStats], object] | None = None,
) -> DeliveryStats:
    """`tessera deliver`: the runner on the messages topic until `stop` is set."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from infra.topics import DLQ_RETENTION_MS, EVENTS_RETENTION_MS, TopicSpec, ensure_topics
    from streams.kafka import consumer_options, producer_options, send_all

    s = settings
    await ensure_topics(
        bootstrap,
        [
            # As the worker creates them (`infra.topics.default_topic_specs`); whoever starts first.
            TopicSpec(
                s.messages_topic,
                s.partitions,
                s.replication_factor,
                {"retention.ms": str(EVENTS_RETENTION_MS)},
            ),
            TopicSpec(
                s.delivery_dlq_topic,
                s.partitions,
                s.replication_factor,
                {"retention.ms": str(DLQ_RETENTION_MS)},
            ),
        ],
    )
    options = consumer_options(s) | {"group_id": s.delivery_group_id}
    consumer = AIOKafkaConsumer(s.messages_topic, bootstrap_servers=bootstrap, **options)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options(s))
    redis = Redis.from_url(redis_url, decode_responses=True)
    dispatcher = build_dispatcher(s, redis, redis_url, bootstrap)
    await producer.start()
    await consumer.start()

    async def send_dead_letters(records: list[tuple[bytes | None, bytes]]) -> None:
        for ack in await send_all(producer, s.delivery_dlq_topic, records):
            await ack

    runner = DeliveryRunner(consumer, dispatcher, send_dead_letters, concurrency=s.delivery_concurrency)
    log.info("delivery.started", topic=s.messages_topic, group=s.delivery_group_id, routes=s.delivery_routes)
    try:
        await runner.run(stop, on_progress)
    finally:
        await consumer.stop()
        await producer.stop()
        await dispatcher.close()
        await redis.aclose()
        log.info("delivery.stopped", **runner.stats.by_status)
    return runner.stats
