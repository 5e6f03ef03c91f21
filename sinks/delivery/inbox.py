"""On-site channel: the message in the visitor's Redis inbox (`sinks.redis_serving`).

The worker already writes on-site messages there on its latency path; the runner writes the same
field again (HSET of the message id: idempotent), so an on-site message reaches the inbox even when
it was produced to the `messages` topic by something other than a worker.
"""

from __future__ import annotations

from schemas.messages import Message
from sinks.delivery import DeliveryResult, DeliveryStatus
from sinks.redis_serving import ServingStore, VisitorUpdate


class InboxSender:
    """`ChannelSender` writing to the on-site inbox through a `ServingStore`."""

    name = "inbox"

    def __init__(self, serving: ServingStore) -> None:
        self.serving = serving

    async def send(self, message: Message) -> DeliveryResult:
        update = VisitorUpdate(
            visitor_id=message.visitor_id,
            summary=None,
            segments=[],
            messages=[message],
            segments_changed=False,
        )
        await self.serving.write([update])
        return DeliveryResult(message.message_id, self.name, DeliveryStatus.delivered, 1)

    async def close(self) -> None:
        await self.serving.close()
