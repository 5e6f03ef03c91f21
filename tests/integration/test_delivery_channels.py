"""The webhook and e-mail channels against real local servers: an aiohttp server that fails, then
succeeds (or always fails), and an aiosmtpd SMTP server. Back-off waits are recorded, not slept."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any, cast

import orjson
import pytest
from aiokafka import TopicPartition

from infra.stack import free_port
from schemas.deadletter import DeadLetter
from schemas.messages import Message
from sinks.delivery import DeliveryStatus, Idempotent, MemoryDeliveredIds
from sinks.delivery.email import EmailSender
from sinks.delivery.plan import MESSAGE_ID_HEADER, SIGNATURE_HEADER, verify_signature
from sinks.delivery.webhook import WebhookSender, WebhookTarget
from streams.delivery import DeliveryRunner, Dispatcher
from streams.testing import async_wait_until
from streams.testing.webhook import WebhookReceiver, serve_webhook

pytestmark = pytest.mark.timeout(60)

SECRET = b"whsec-test-0123456789"
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def crm_message(mid: str) -> Message:
    return Message(
        message_id=mid,
        visitor_id="v-1",
        kind="escalation",
        channel="crm",
        rule="top_spender_escalation",
        segment="top_spender_electronics",
        event_time=T0,
        payload={"note": "VIP: hand to account manager", "category_spend": 1800.0},
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    async with serve_webhook() as served:
        yield served


class Waits:
    """Records the back-off waits instead of sleeping them."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)


def webhook(url: str, waits: Waits, attempts: int = 4) -> WebhookSender:
    return WebhookSender(
        {"crm": WebhookTarget(url, SECRET)},
        max_attempts=attempts,
        backoff_s=0.5,
        backoff_max_s=30,
        sleep=waits,
    )


async def test_webhook_fails_then_succeeds_delivered_once_and_signed(
    receiver: tuple[WebhookReceiver, str],
) -> None:
    server, url = receiver
    server.statuses = [500, 503]
    waits = Waits()
    sender = webhook(url, waits)
    adapter = Idempotent(sender, MemoryDeliveredIds())
    try:
        result = await adapter.deliver(crm_message("m-1"))
        again = await adapter.deliver(crm_message("m-1"))  # a redelivered message id
    finally:
        await adapter.close()
    assert (result.status, result.attempts) == (DeliveryStatus.delivered, 3)
    assert waits.seen == [0.5, 1.0]  # exponential back-off before attempts 2 and 3
    assert again.status is DeliveryStatus.duplicate
    assert len(server.requests) == 3  # two failures, one success, nothing for the duplicate
    headers, body = server.requests[-1]
    assert orjson.loads(body)["message_id"] == "m-1"
    assert headers[MESSAGE_ID_HEADER] == "m-1"
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, now=time.time())
    assert not verify_signature(b"wrong-secret-0000000", headers[SIGNATURE_HEADER], body, now=time.time())


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class OneBatch:
    def __init__(self, batch: dict[TopicPartition, list[Record]]) -> None:
        self.batch: dict[TopicPartition, list[Record]] | None = batch
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        batch, self.batch = self.batch or {}, None
        return batch

    async def commit(self, offsets: Any = None) -> None:
        self.commits.append(dict(offsets))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        raise AssertionError("no step should fail")


async def test_webhook_always_failing_is_dead_lettered_after_n_attempts(
    receiver: tuple[WebhookReceiver, str],
) -> None:
    server, url = receiver
    server.statuses = [500] * 10
    waits = Waits()
    dispatcher = Dispatcher(
        {"webhook": Idempotent(webhook(url, waits), MemoryDeliveredIds())}, {"crm": "webhook"}
    )
    tp = TopicPartition("messages", 3)
    raw = crm_message("m-2").model_dump_json().encode()
    consumer = OneBatch({tp: [Record("messages", 3, 41, b"v-1", raw)]})
    letters: list[tuple[bytes | None, bytes]] = []

    async def send_dead_letters(records: list[tuple[bytes | None, bytes]]) -> None:
        letters.extend(records)

    runner = DeliveryRunner(consumer, dispatcher, send_dead_letters)
    try:
        assert await runner.step() == 1
    finally:
        await dispatcher.close()
    assert len(server.requests) == 4  # N = 4 attempts
    assert waits.seen == [0.5, 1.0, 2.0]
    assert len(letters) == 1
    key, value = letters[0]
    letter = DeadLetter.model_validate(orjson.loads(value))
    assert key == b"v-1"
    assert (letter.reason, letter.source, letter.attempts) == ("delivery_failed", "delivery", 4)
    assert (letter.topic, letter.partition, letter.offset) == ("messages", 3, 41)
    assert "HTTP 500" in letter.detail
    assert letter.original == raw
    assert consumer.commits == [{tp: 42}]  # committed after the dead letter, not before


async def test_webhook_refused_with_4xx_is_not_retried(receiver: tuple[WebhookReceiver, str]) -> None:
    server, url = receiver
    server.statuses = [400]
    waits = Waits()
    sender = webhook(url, waits)
    try:
        result = await sender.send(crm_message("m-3"))
    finally:
        await sender.close()
    assert (result.status, result.attempts, len(server.requests), waits.seen) == ("failed", 1, 1, [])


# -- e-mail -----------------------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler keeping every mail it accepts."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(
            (
                list(envelope.rcpt_tos),
                cast(EmailMessage, message_from_bytes(envelope.content, policy=default_policy)),
            )
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


async def test_email_one_mail_per_message_id(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server

    async def contacts(visitor_id: str) -> str | None:
        return {"v-9": "ann@example.com"}.get(visitor_id)

    sender = EmailSender("127.0.0.1", port, "Shop <shop@shop.example>", contacts=contacts, sleep=Waits())
    adapter = Idempotent(sender, MemoryDeliveredIds())
    coupon = Message(
        message_id="m-mail-1",
        visitor_id="v-9",
        kind="coupon_email",
        channel="email",
        rule="cart_abandoners_coupon_email",
        segment="cart_abandoners",
        event_time=T0,
        payload={
            "template": "cart_coupon",
            "discount_percent": 10,
            "coupon_valid_for": "48h",
            "cart_value": 129.5,
        },
    )
    first = await adapter.deliver(coupon)
    again = await adapter.deliver(coupon)
    nobody = await adapter.deliver(coupon.model_copy(update={"message_id": "m-mail-2", "visitor_id": "v-0"}))
    assert (first.status, again.status, nobody.status) == ("delivered", "duplicate", "undeliverable")
    await async_wait_until(lambda: len(mailbox.mails) >= 1, timeout=10, message="mail received")
    assert len(mailbox.mails) == 1
    recipients, mail = mailbox.mails[0]
    assert recipients == ["ann@example.com"]
    assert mail["From"] == "Shop <shop@shop.example>"
    assert mail["To"] == "ann@example.com"
    assert mail["Subject"] == "Your cart is waiting: a coupon for you"
    assert mail["Message-ID"] == "<m-mail-1@shop.example>"
    assert mail[MESSAGE_ID_HEADER] == "m-mail-1"
    body = mail.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "worth 129.50" in text and "within 48h and save 10 %" in text


async def test_email_address_in_payload_wins(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    sender = EmailSender("127.0.0.1", port, "shop@shop.example")
    message = crm_message("m-mail-3").model_copy(
        update={
            "channel": "email",
            "payload": {"to": "bob@example.com", "subject": "Hello $name", "name": "Bob"},
        }
    )
    result = await sender.send(message)
    assert result.status is DeliveryStatus.delivered
    await async_wait_until(lambda: len(mailbox.mails) >= 1, timeout=10, message="mail received")
    assert mailbox.mails[0][0] == ["bob@example.com"]
    assert mailbox.mails[0][1]["Subject"] == "Hello Bob"
