"""Channel adapters: how a decided `schemas.messages.Message` reaches its channel.

Every adapter has one method, `deliver(message) -> DeliveryResult`, and is idempotent by message id:
`Idempotent` wraps the channel's own send with a `DeliveredIds` store, so a message id already
delivered is not sent again and is reported `duplicate`. The store is a Redis key per id with an
expiry at the edge (`RedisDeliveredIds`), a set in memory in unit tests (`MemoryDeliveredIds`).

An id is marked delivered only after the channel accepted the message, so a crash between the two
sends it again (at-least-once): the receiver can drop that second copy by the message id it carries
(webhook header `Tessera-Message-Id`, e-mail `Message-ID`).

Adapters: `sinks.delivery.inbox.InboxSender` (the on-site inbox in Redis),
`sinks.delivery.webhook.WebhookSender` (signed HTTP POST with retries),
`sinks.delivery.email.EmailSender` (SMTP) and `AudienceSender` (below: ad audiences are exported
as files from the segment changes, `sinks.delivery.audiences`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis

from schemas.messages import Message

log = structlog.get_logger(__name__)


class DeliveryStatus(StrEnum):
    delivered = "delivered"
    """The channel accepted the message."""
    duplicate = "duplicate"
    """This message id was delivered before: nothing sent."""
    holdout = "holdout"
    """A campaign's holdout record (`Message.holdout`): never delivered, by design."""
    deferred = "deferred"
    """The channel takes it another way (ad audiences: `tessera audiences export`)."""
    failed = "failed"
    """The channel refused it or kept failing until the attempts ran out: dead-lettered."""
    undeliverable = "undeliverable"
    """Nothing can take it (no route, no target, no recipient): dead-lettered."""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    message_id: str
    channel: str
    status: DeliveryStatus
    attempts: int = 0
    """Sends tried (1 for a first-time success; 0 for a duplicate)."""
    detail: str = ""

    @property
    def dead(self) -> bool:
        """Whether the message goes to the dead-letter topic."""
        return self.status in (DeliveryStatus.failed, DeliveryStatus.undeliverable)


Attempt = tuple[bool, str, bool]
"""One send's outcome: (accepted, error when not, whether another attempt may succeed)."""


async def send_with_retries(
    message_id: str,
    channel: str,
    delays: Sequence[float],
    sleep: Callable[[float], Awaitable[Any]],
    attempt_once: Callable[[], Awaitable[Attempt]],
    event: str,
    **fields: Any,
) -> DeliveryResult:
    """`attempt_once` until it is accepted, says no retry can help, or the attempts run out (the
    first at once, then after each of `delays`); logs ``{event}_sent`` or ``{event}_attempt_failed``
    with `fields`. The one retry loop of the adapters that retry (webhook, e-mail)."""
    last_error = ""
    attempts = 0
    for attempt, delay in enumerate([0.0, *delays], start=1):
        if delay:
            await sleep(delay)
        attempts = attempt
        accepted, last_error, retry = await attempt_once()
        if accepted:
            log.info(f"{event}_sent", message_id=message_id, attempts=attempt, **fields)
            return DeliveryResult(message_id, channel, DeliveryStatus.delivered, attempt)
        if not retry:
            break
        log.warning(
            f"{event}_attempt_failed", message_id=message_id, attempt=attempt, error=last_error, **fields
        )
    return DeliveryResult(message_id, channel, DeliveryStatus.failed, attempts, last_error)


class ChannelAdapter(Protocol):
    """One channel. `deliver` never raises for a failure of the channel: it reports it."""

    name: str

    async def deliver(self, message: Message) -> DeliveryResult: ...

    async def close(self) -> None: ...


class DeliveredIds(Protocol):
    """Message ids a channel has delivered (idempotency by message id)."""

    async def seen(self, channel: str, message_id: str) -> bool: ...

    async def mark(self, channel: str, message_id: str) -> None: ...


class MemoryDeliveredIds:
    """`DeliveredIds` in memory (unit tests; a single short-lived process)."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str]] = set()

    async def seen(self, channel: str, message_id: str) -> bool:
        return (channel, message_id) in self.ids

    async def mark(self, channel: str, message_id: str) -> None:
        self.ids.add((channel, message_id))


class RedisDeliveredIds:
    """`DeliveredIds` in Redis: key `{prefix}:delivered:{channel}:{message_id}` with an expiry.

    One key per id (not one set) so each id expires on its own; the expiry only has to outlast any
    redelivery of the `messages` topic (its retention is 7 days).
    """

    def __init__(self, redis: Redis, prefix: str = "tessera", ttl_s: int = 30 * 24 * 3600) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, channel: str, message_id: str) -> str:
        return f"{self.prefix}:delivered:{channel}:{message_id}"

    async def seen(self, channel: str, message_id: str) -> bool:
        return bool(await self.redis.exists(self.key(channel, message_id)))

    async def mark(self, channel: str, message_id: str) -> None:
        await self.redis.set(self.key(channel, message_id), "1", ex=self.ttl_s)


class ChannelSender(Protocol):
    """A channel's own send, without idempotency (`Idempotent` adds it)."""

    name: str

    async def send(self, message: Message) -> DeliveryResult: ...

    async def close(self) -> None: ...


class Idempotent:
    """A `ChannelAdapter`: a channel's send made idempotent by message id (module docstring)."""

    def __init__(self, sender: ChannelSender, delivered: DeliveredIds) -> None:
        self.sender = sender
        self.name = sender.name
        self.delivered = delivered

    async def deliver(self, message: Message) -> DeliveryResult:
        if await self.delivered.seen(self.name, message.message_id):
            log.info("delivery.duplicate", channel=self.name, message_id=message.message_id)
            return DeliveryResult(message.message_id, self.name, DeliveryStatus.duplicate)
        result = await self.sender.send(message)
        if result.status in (DeliveryStatus.delivered, DeliveryStatus.deferred):
            await self.delivered.mark(self.name, message.message_id)
        return result

    async def close(self) -> None:
        await self.sender.close()


class AudienceSender:
    """The `ads` channel: a retargeting message names an audience (`payload.audience`, else its
    segment), and audiences are segments, so membership reaches Meta and Google through the files of
    `tessera audiences export` (built from the segment changes), not per message. Reported
    `deferred`, with the audience it belongs to."""

    name = "audience"

    async def send(self, message: Message) -> DeliveryResult:
        audience = message.payload.get("audience") or message.segment or message.rule
        return DeliveryResult(
            message.message_id,
            self.name,
            DeliveryStatus.deferred,
            0,
            f"audience {audience}: exported as files",
        )

    async def close(self) -> None:
        return None


__all__ = [
    "Attempt",
    "AudienceSender",
    "ChannelAdapter",
    "ChannelSender",
    "DeliveredIds",
    "DeliveryResult",
    "DeliveryStatus",
    "Idempotent",
    "MemoryDeliveredIds",
    "RedisDeliveredIds",
    "send_with_retries",
]
