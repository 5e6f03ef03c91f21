"""Redis serving layer: what the website reads about one visitor, and segment sizes.

Keys (prefix `p`, visitor `id`):

| key | type | written as |
|---|---|---|
| `{p}:v:{id}` | string | profile summary JSON (orjson), replaced |
| `{p}:v:{id}:segments` | set | the visitor's full current segment set, replaced (DEL + SADD) |
| `{p}:v:{id}:inbox` | hash | message_id → message JSON (redelivery overwrites itself); 7-day expiry |
| `{p}:seg:{segment}:members` | set | SADD on enter, SREM on exit; size = SCARD |
| `{p}:segments` | set | registry of every segment ever entered (for `segment_counts`) |

Every command is idempotent (SET, DEL+SADD of the full set, SADD/SREM of one member, HSET of a
deterministic field), so a batch written twice leaves the same state. One batch is one pipeline
sent as MULTI/EXEC: one round trip, and a reader never sees a visitor's segment set half replaced.
(On Redis Cluster the keys span slots and the pipeline would have to run without a transaction.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import structlog
from redis.asyncio import Redis

from schemas.messages import Message

log = structlog.get_logger(__name__)

INBOX_TTL_SECONDS = 7 * 24 * 3600


@dataclass(slots=True)
class VisitorUpdate:
    """One visitor's serving state after a batch (the last state if the batch touched it twice)."""

    visitor_id: str
    summary: dict[str, Any] | None
    """Profile summary, JSON-serialisable (orjson: datetimes allowed); None leaves it as it is."""
    segments: list[str]
    """The full current segment set."""
    entered: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    segments_changed: bool = True
    """False when the segment set is known unchanged: skips replacing it (two commands fewer)."""


class ServingStore(Protocol):
    async def write(self, updates: list[VisitorUpdate]) -> None: ...

    async def get_visitor(self, visitor_id: str) -> dict[str, Any] | None: ...

    async def segment_counts(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


class RedisServing:
    """`ServingStore` on Redis (redis-py asyncio, RESP3).

    `visitor_ttl_seconds`: optional expiry of a visitor's summary and segment set, refreshed on
    every write. Segment member sets do not expire per member: a visitor who expires stays counted
    until an exit is written for them.
    """

    def __init__(self, url: str, prefix: str = "tessera", visitor_ttl_seconds: int | None = None) -> None:
        self.prefix = prefix
        self.visitor_ttl_seconds = visitor_ttl_seconds
        self._redis: Redis = Redis.from_url(url, decode_responses=True)
        self._registry = f"{prefix}:segments"

    # -- keys -------------------------------------------------------------------------------------

    def visitor_key(self, visitor_id: str) -> str:
        return f"{self.prefix}:v:{visitor_id}"

    def segments_key(self, visitor_id: str) -> str:
        return f"{self.prefix}:v:{visitor_id}:segments"

    def inbox_key(self, visitor_id: str) -> str:
        return f"{self.prefix}:v:{visitor_id}:inbox"

    def members_key(self, segment: str) -> str:
        return f"{self.prefix}:seg:{segment}:members"

    # -- writes -----------------------------------------------------------------------------------

    async def write(self, updates: list[VisitorUpdate]) -> None:
        """All updates of one batch in one round trip. Updates apply in list order."""
        if not updates:
            return
        # One pipeline; MULTI/EXEC so a reader never sees a half-replaced segment set.
        ttl = self.visitor_ttl_seconds
        pipe = self._redis.pipeline(transaction=True)
        for up in updates:
            vid = up.visitor_id
            if up.summary is not None:
                pipe.set(self.visitor_key(vid), orjson.dumps(up.summary, default=str), ex=ttl)
            if up.segments_changed:
                seg_key = self.segments_key(vid)
                pipe.delete(seg_key)
                if up.segments:
                    pipe.sadd(seg_key, *up.segments)
                    if ttl is not None:
                        pipe.expire(seg_key, ttl)
            for segment in up.entered:
                pipe.sadd(self.members_key(segment), vid)
            for segment in up.exited:
                pipe.srem(self.members_key(segment), vid)
            if up.entered:
                pipe.sadd(self._registry, *up.entered)
            if up.messages:
                inbox = self.inbox_key(vid)
                pipe.hset(inbox, mapping={m.message_id: m.model_dump_json() for m in up.messages})
                pipe.expire(inbox, INBOX_TTL_SECONDS)
        await pipe.execute()
        log.debug("redis.batch_written", visitors=len(updates), commands=len(pipe))

    # -- reads ------------------------------------------------------------------------------------

    async def get_visitor(self, visitor_id: str, now: datetime | None = None) -> dict[str, Any] | None:
        """Summary, sorted segments and unexpired inbox messages (oldest first); None if unknown."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self.visitor_key(visitor_id))
        pipe.smembers(self.segments_key(visitor_id))
        pipe.hvals(self.inbox_key(visitor_id))
        raw_summary, segments, raw_messages = await pipe.execute()
        if raw_summary is None and not segments and not raw_messages:
            return None
        now = now or datetime.now(UTC)
        inbox = [Message.model_validate_json(raw) for raw in raw_messages]
        inbox = [m for m in inbox if m.expires_at is None or m.expires_at > now]
        inbox.sort(key=lambda m: (m.event_time, m.message_id))
        return {
            "visitor_id": visitor_id,
            "segments": sorted(segments),
            "profile": orjson.loads(raw_summary) if raw_summary is not None else {},
            "inbox": [m.model_dump(mode="json") for m in inbox],
        }

    async def segment_counts(self) -> dict[str, int]:
        """Members per known segment (0 for a segment everybody left), by segment name."""
        segments: list[str] = sorted(str(s) for s in await self._redis.smembers(self._registry))
        if not segments:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for segment in segments:
            pipe.scard(self.members_key(segment))
        counts = await pipe.execute()
        return {segment: int(n) for segment, n in zip(segments, counts, strict=True)}

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
