"""Webhook channel: the message's JSON POSTed to the target's URL, signed, retried with back-off.

Headers: ``Content-Type: application/json``, ``Tessera-Message-Id`` (the idempotency key a receiver
can drop redeliveries by) and ``Tessera-Signature: t=…,v1=…`` (`sinks.delivery.plan.signature`).
A 2xx answer is delivered; a 5xx, 408, 425, 429, a connection error or a timeout is tried again after
the back-off of `plan.retry_delays`; another 4xx is final. Either way a message that is not
delivered is reported `failed` with the attempts made and the last error, and the runner
dead-letters it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from schemas.messages import Message
from sinks.delivery import Attempt, DeliveryResult, DeliveryStatus, send_with_retries
from sinks.delivery.plan import (
    MESSAGE_ID_HEADER,
    SIGNATURE_HEADER,
    retry_delays,
    retryable,
    signature,
    target_key,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    secret: bytes


Sleep = Callable[[float], Awaitable[object]]


class WebhookSender:
    """`ChannelSender` for webhooks; `targets` by campaign, rule or channel (`plan.target_key`)."""

    name = "webhook"

    def __init__(
        self,
        targets: Mapping[str, WebhookTarget],
        *,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = dict(targets)
        self.delays = retry_delays(max_attempts, backoff_s, backoff_max_s)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.sleep = sleep
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: Message) -> DeliveryResult:
        key = target_key(message, self.targets)
        if key is None:
            return DeliveryResult(
                message.message_id,
                self.name,
                DeliveryStatus.undeliverable,
                0,
                f"no webhook target for campaign, rule {message.rule!r} or channel {message.channel!r}",
            )
        target = self.targets[key]
        body = message.model_dump_json().encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        session = self._session

        async def attempt_once() -> Attempt:
            headers = {
                "Content-Type": "application/json",
                MESSAGE_ID_HEADER: message.message_id,
                SIGNATURE_HEADER: signature(target.secret, int(self.clock()), body),
            }
            try:
                async with session.post(target.url, data=body, headers=headers) as answer:
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                return False, f"{type(exc).__name__}: {exc}"[:500], True
            if 200 <= status < 300:
                return True, "", False
            return False, f"HTTP {status} from {target.url}", retryable(status)

        return await send_with_retries(
            message.message_id,
            self.name,
            self.delays,
            self.sleep,
            attempt_once,
            "delivery.webhook",
            target=key,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
