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
deterministic field), so a batch written twice leaves the same state. A batch is applied by one
server-side script (`APPLY_LUA`, loaded once, run with EVALSHA) per `SCRIPT_CHUNK` visitors: the
client packs one command per chunk instead of four to eight per visitor (redis-py's per-command
packing and reply parsing were most of the worker's Redis cost), and a script runs atomically, so a
reader never sees a visitor's segment set half replaced. (On Redis Cluster the keys span slots and
the script would have to run per visitor slot.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from schemas.messages import Message

log = structlog.get_logger(__name__)

INBOX_TTL_SECONDS = 7 * 24 * 3600
SCRIPT_CHUNK = 1000
"""Visitors per script call: bounds how long one call keeps Redis busy."""

APPLY_LUA = """
local p, ttl, inbox_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local updates = cjson.decode(ARGV[4])
local registry = p .. ':segments'
for _, u in ipairs(updates) do
  local vid = u[1]
  local vkey = p .. ':v:' .. vid
  if u[2] ~= cjson.null then
    if ttl > 0 then redis.call('SET', vkey, u[2], 'EX', ttl) else redis.call('SET', vkey, u[2]) end
  end
  local segs = u[3]
  if segs ~= cjson.null then
    local skey = vkey .. ':segments'
    redis.call('DEL', skey)
    if #segs > 0 then
      redis.call('SADD', skey, unpack(segs))
      if ttl > 0 then redis.call('EXPIRE', skey, ttl) end
    end
  end
  local entered = u[4]
  for _, s in ipairs(entered) do redis.call('SADD', p .. ':seg:' .. s .. ':members', vid) end
  if #entered > 0 then redis.call('SADD', registry, unpack(entered)) end
  for _, s in ipairs(u[5]) do redis.call('SREM', p .. ':seg:' .. s .. ':members', vid) end
  local inbox = u[6]
  if #inbox > 0 then
    local ikey = vkey .. ':inbox'
    redis.call('HSET', ikey, unpack(inbox))
    redis.call('EXPIRE', ikey, inbox_ttl)
  end
end
return #updates
"""
"""ARGV: prefix, visitor TTL (0 = none), inbox TTL, JSON list of updates
[visitor_id, summary JSON | null, segment set | null, entered, exited, [message_id, JSON, ...]]."""


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
        self._sha: str | None = None
        """SHA1 of `APPLY_LUA` once loaded into the server."""

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
        """All updates of one batch, one script call per `SCRIPT_CHUNK` visitors, one round trip.

        Updates apply in list order; each visitor's update is atomic (inside one script call).
        """
        if not updates:
            return
        ttl = str(self.visitor_ttl_seconds or 0)
        inbox_ttl = str(INBOX_TTL_SECONDS)
        payloads = [
            orjson.dumps([_packed(up) for up in updates[i : i + SCRIPT_CHUNK]])
            for i in range(0, len(updates), SCRIPT_CHUNK)
        ]
        try:
            await self._apply(payloads, ttl, inbox_ttl)
        except NoScriptError:
            # Redis restarted (or SCRIPT FLUSH): load the script again; the updates are idempotent.
            self._sha = None
            await self._apply(payloads, ttl, inbox_ttl)
        log.debug("redis.batch_written", visitors=len(updates), script_calls=len(payloads))

    async def _apply(self, payloads: list[bytes], ttl: str, inbox_ttl: str) -> None:
        if self._sha is None:
            self._sha = str(await self._redis.script_load(APPLY_LUA))
        if len(payloads) == 1:
            await self._redis.evalsha(self._sha, 0, self.prefix, ttl, inbox_ttl, payloads[0])
            return
        pipe = self._redis.pipeline(transaction=False)
        for payload in payloads:
            pipe.evalsha(self._sha, 0, self.prefix, ttl, inbox_ttl, payload)
        await pipe.execute()

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


def _packed(up: VisitorUpdate) -> list[Any]:
    """One update in the script's positional form (see `APPLY_LUA`)."""
    inbox: list[str] = []
    for message in up.messages:
        inbox += (message.message_id, message.model_dump_json())
    return [
        up.visitor_id,
        orjson.dumps(up.summary, default=str).decode() if up.summary is not None else None,
        up.segments if up.segments_changed else None,
        up.entered,
        up.exited,
        inbox,
    ]
