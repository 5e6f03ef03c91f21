"""Sending events to Kafka: `EventProducer` (async, batched, keyed by visitor) and `produce_file`.

Keys are the visitor id (UTF-8), so aiokafka's default partitioner (murmur2, as in the Java
client) puts all of one visitor's events on one partition, where that visitor's profile lives.

Delivery: `acks="all"` and a bounded number of sends in flight. Idempotent producing
(`enable_idempotence`) is off by default because the embedded Tansu broker (0.6) answers
InitProducerId with an error (checked: aiokafka's start fails with UnknownError); turn it on for
Apache Kafka. Without it a retried batch can be written twice; the pipeline drops such duplicates
by event id (`Settings.dedupe_window`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

__all__ = ["EventProducer", "SendStats", "key_for_line", "produce_file"]

log = structlog.get_logger(__name__)

DEFAULT_MAX_IN_FLIGHT = 20_000
"""Sends not yet acknowledged before `send`/`send_many` wait for some to complete."""
_KEY_FIELDS = ("visitor_id", "anonymousId", "anonymous_id")


@dataclass(slots=True)
class SendStats:
    sent: int = 0
    """Records the broker acknowledged."""
    failed: int = 0
    """Records whose delivery failed (logged with the error)."""
    bytes: int = 0
    seconds: float = 0.0
    partitions: dict[int, int] = field(default_factory=dict)
    """Partition → records acknowledged there."""

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class EventProducer:
    """An `AIOKafkaProducer` for one topic; use as `async with EventProducer(bootstrap, topic) as p`.

    `send` serialises (orjson) and enqueues one event without waiting for the broker; `send_many`
    streams (key, value) pairs; both keep at most `max_in_flight` unacknowledged sends.
    `flush_offsets()` waits for everything sent and returns, per partition, the offset after the
    last record this producer wrote there (what a consumer's committed offset reaches when done).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 5,
        acks: str | int = "all",
        enable_idempotence: bool = False,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_batch_size: int = 256 * 1024,
        compression_type: str | None = None,
        request_timeout_ms: int = 30_000,
        client_id: str = "tessera-producer",
    ) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.max_in_flight = max_in_flight
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            linger_ms=linger_ms,
            acks=acks,
            enable_idempotence=enable_idempotence,
            max_batch_size=max_batch_size,
            compression_type=compression_type,
            request_timeout_ms=request_timeout_ms,
        )
        self._pending: set[asyncio.Future[RecordMetadata]] = set()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._next_offsets: dict[int, int] = {}
        self._partitions: dict[int, int] = {}
        self._sent = 0
        self._failed = 0
        self._bytes = 0
        self._errors: list[BaseException] = []
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._producer.start()
        self._started = True
        log.debug("producer_started", bootstrap=self.bootstrap, topic=self.topic)

    async def stop(self) -> None:
        if not self._started:
            return
        try:
            await self.flush()
        finally:
            await self._producer.stop()
            self._started = False
            log.debug("producer_stopped", topic=self.topic, sent=self._sent, failed=self._failed)

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- sending ----------------------------------------------------------------------------------

    async def send(
        self, event: dict[str, Any] | bytes, key: str | bytes | None
    ) -> asyncio.Future[RecordMetadata]:
        """Enqueue one event (a dict is serialised with orjson; bytes are sent as they are).

        Returns the delivery future; awaiting it is optional (`flush` / `flush_offsets` wait for
        all). Waits only when `max_in_flight` sends are unacknowledged.
        """
        value = event if isinstance(event, bytes) else orjson.dumps(event)
        raw_key = key.encode("utf-8") if isinstance(key, str) else key
        await self._slots.acquire()
        try:
            future = await self._producer.send(self.topic, value, key=raw_key)
        except BaseException:
            self._slots.release()
            raise
        self._bytes += len(value)
        self._pending.add(future)
        future.add_done_callback(self._on_done)
        return future

    async def send_many(
        self,
        records: Iterable[tuple[str | bytes | None, bytes]] | AsyncIterable[tuple[str | bytes | None, bytes]],
    ) -> SendStats:
        """Send (key, value bytes) pairs and wait until all are acknowledged; counts for this call."""
        started = time.perf_counter()
        sent0, failed0, bytes0 = self._sent, self._failed, self._bytes
        partitions0 = dict(self._partitions)
        if isinstance(records, AsyncIterable):
            async for key, value in records:
                await self.send(value, key)
        else:
            for key, value in records:
                await self.send(value, key)
        await self.flush()
        return SendStats(
            sent=self._sent - sent0,
            failed=self._failed - failed0,
            bytes=self._bytes - bytes0,
            seconds=time.perf_counter() - started,
            partitions={
                p: n - partitions0.get(p, 0) for p, n in self._partitions.items() if n - partitions0.get(p, 0)
            },
        )

    async def flush(self) -> None:
        """Wait until every send so far is acknowledged or failed."""
        await self._producer.flush()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def flush_offsets(self) -> dict[int, int]:
        """`flush`, then partition → offset after the last record this producer wrote there."""
        await self.flush()
        return dict(self._next_offsets)

    @property
    def stats(self) -> SendStats:
        """Totals since start (seconds not tracked here)."""
        return SendStats(
            sent=self._sent, failed=self._failed, bytes=self._bytes, partitions=dict(self._partitions)
        )

    def _on_done(self, future: asyncio.Future[RecordMetadata]) -> None:
        self._pending.discard(future)
        self._slots.release()
        if future.cancelled():
            self._failed += 1
            return
        exc = future.exception()
        if exc is not None:
            self._failed += 1
            if len(self._errors) < 10:
                self._errors.append(exc)
                log.warning("produce_failed", topic=self.topic, error=repr(exc))
            return
        meta = future.result()
        self._sent += 1
        self._partitions[meta.partition] = self._partitions.get(meta.partition, 0) + 1
        if meta.offset + 1 > self._next_offsets.get(meta.partition, 0):
            self._next_offsets[meta.partition] = meta.offset + 1


# -- files --------------------------------------------------------------------------------------------


def key_for_line(line: bytes) -> str:
    """The Kafka key of one JSONL line: its visitor_id / anonymousId, else a stable hash of the line.

    Lines that are not JSON, not an object, or carry no visitor id are still sent (nothing is lost):
    the pipeline dead-letters them with the right reason. Their key, `~` + 16 hex digits of the
    line's BLAKE2b hash, is stable, so the same bad line always lands on the same partition.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        for name in _KEY_FIELDS:
            value = obj.get(name)
            if isinstance(value, str) and value:
                return value
        user = obj.get("userId")
        if isinstance(user, str) and user:
            return user
    return "~" + hashlib.blake2b(line, digest_size=8).hexdigest()


def _lines(path: Path) -> Iterable[tuple[str, bytes]]:
    with path.open("rb") as handle:
        for line in handle:
            raw = line.rstrip(b"\r\n")
            if raw.strip():
                yield key_for_line(raw), raw


async def produce_file(
    path: str | Path,
    bootstrap: str,
    topic: str,
    progress: Callable[[int], None] | None = None,
    *,
    linger_ms: int = 5,
    enable_idempotence: bool = False,
    progress_every: int = 1000,
) -> int:
    """Send every non-empty line of a JSONL file, its bytes as they are, keyed by `key_for_line`.

    Calls `progress(records sent so far)` every `progress_every` lines and once at the end.
    Returns the number of records acknowledged; raises `RuntimeError` if any delivery failed.
    """
    path = Path(path)
    sent = 0
    started = time.perf_counter()
    async with EventProducer(
        bootstrap, topic, linger_ms=linger_ms, enable_idempotence=enable_idempotence
    ) as producer:
        for key, raw in _lines(path):
            await producer.send(raw, key)
            sent += 1
            if progress is not None and sent % progress_every == 0:
                progress(sent)
        await producer.flush()
        stats = producer.stats
    if progress is not None:
        progress(stats.sent)
    elapsed = time.perf_counter() - started
    log.info(
        "file_produced",
        path=str(path),
        topic=topic,
        records=stats.sent,
        failed=stats.failed,
        seconds=round(elapsed, 3),
        per_second=round(stats.sent / elapsed) if elapsed > 0 else None,
    )
    if stats.failed:
        raise RuntimeError(f"{stats.failed} of {sent} records from {path} were not delivered to {topic}")
    return stats.sent


async def produce_records(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    linger_ms: int = 5,
) -> dict[int, int]:
    """Send raw (key, value) records; return partition → last offset + 1 of what was sent.

    The end offsets come from the brokers' acknowledgements (RecordMetadata), never from
    ListOffsets, which the embedded broker answers short.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, acks="all", max_batch_size=256 * 1024
    )
    await producer.start()
    ends: dict[int, int] = {}
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        for meta in await asyncio.gather(*futures):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends
