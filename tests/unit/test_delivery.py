"""Delivery decisions (pure) and the runner's ordering, with in-memory parts: routing, webhook
targets, the signature, the retry schedule, e-mail rendering, idempotency by message id, and
deliver → dead letters → commit."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import TopicPartition

from schemas.deadletter import DELIVERY_REASONS, DeadLetter
from schemas.messages import Message
from sinks.delivery import (
    AudienceSender,
    DeliveryResult,
    DeliveryStatus,
    Idempotent,
    MemoryDeliveredIds,
)
from sinks.delivery.plan import (
    DEFAULT_ROUTES,
    email_message_id,
    render_email,
    retry_delays,
    retryable,
    route,
    signature,
    target_key,
    verify_signature,
)
from streams.delivery import DeliveryRunner, Dispatcher
from streams.settings import Settings

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def message(mid: str = "m-1", channel: str = "crm", **fields: Any) -> Message:
    return Message(
        message_id=mid,
        visitor_id=fields.pop("visitor_id", "v-1"),
        kind=fields.pop("kind", "escalation"),
        channel=channel,  # type: ignore[arg-type]
        rule=fields.pop("rule", "top_spender_escalation"),
        segment=fields.pop("segment", "top_spender_electronics"),
        event_time=T0,
        payload=fields.pop("payload", {}),
    )


# -- pure decisions ---------------------------------------------------------------------------------


def test_routes_by_channel() -> None:
    assert DEFAULT_ROUTES == Settings().delivery_routes
    assert route(message(channel="onsite", kind="exit_intent_overlay"), DEFAULT_ROUTES) == "inbox"
    assert route(message(channel="email", kind="coupon_email"), DEFAULT_ROUTES) == "email"
    assert route(message(channel="crm"), DEFAULT_ROUTES) == "webhook"
    assert route(message(channel="ads", kind="retargeting"), DEFAULT_ROUTES) == "audience"
    assert route(message(channel="crm"), {"onsite": "inbox"}) is None


def test_webhook_target_campaign_then_rule_then_channel() -> None:
    plain = message()
    assert target_key(plain, {"crm": 1}) == "crm"
    assert target_key(plain, {"crm": 1, "top_spender_escalation": 2}) == "top_spender_escalation"
    campaigned = Message.model_validate(plain.model_dump() | {"campaign": "cafe_morning"})
    assert (
        target_key(campaigned, {"crm": 1, "top_spender_escalation": 2, "cafe_morning": 3}) == "cafe_morning"
    )
    assert target_key(plain, {"email": 1}) is None
    # A newer producer's extra fields do not stop this reader.
    newer = plain.model_dump(mode="json") | {"a_field_of_version_3": 1}
    assert Message.model_validate_json(orjson.dumps(newer)).message_id == "m-1"


def test_signature_is_stripe_like_and_verifies() -> None:
    secret, body = b"whsec-0123456789abcdef", b'{"message_id":"m-1"}'
    header = signature(secret, 1_790_000_000, body)
    expected = hmac.new(secret, b"1790000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1790000000,v1={expected}"
    assert verify_signature(secret, header, body, now=1_790_000_100)
    assert not verify_signature(secret, header, body + b" ", now=1_790_000_100)  # body changed
    assert not verify_signature(b"other-secret-000000", header, body, now=1_790_000_100)
    assert not verify_signature(secret, header, body, now=1_790_000_000 + 301)  # too old: a replay
    assert not verify_signature(secret, "garbage", body, now=1_790_000_000)


def test_retry_schedule() -> None:
    assert retry_delays(5, 0.5, 30.0) == [0.5, 1.0, 2.0, 4.0]
    assert retry_delays(8, 1.0, 10.0) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert retry_delays(1, 1.0, 10.0) == []
    assert [s for s in (200, 400, 404, 408, 429, 500, 503) if retryable(s)] == [408, 429, 500, 503]


def test_email_rendering() -> None:
    coupon = message(
        "m-7",
        "email",
        kind="coupon_email",
        rule="cart_abandoners_coupon_email",
        payload={
            "template": "cart_coupon",
            "discount_percent": 10,
            "coupon_valid_for": "48h",
            "cart_value": 129.5,
        },
    )
    rendered = render_email(coupon)
    assert rendered.subject == "Your cart is waiting: a coupon for you"
    assert "worth 129.50" in rendered.body and "within 48h and save 10 %" in rendered.body
    own = message(
        "m-8", "email", kind="coupon_email", payload={"subject": "Hi $name", "body": "Code $code, $missing"}
    )
    own.payload["name"], own.payload["code"] = "Ann", "SAVE10"
    assert render_email(own).subject == "Hi Ann"
    assert render_email(own).body == "Code SAVE10, $missing"  # no value: left as written
    assert email_message_id("m-8", "shop.example") == "<m-8@shop.example>"


# -- idempotency ------------------------------------------------------------------------------------


@dataclass
class CountingSender:
    name: str = "webhook"
    status: DeliveryStatus = DeliveryStatus.delivered
    sent: int = 0

    async def send(self, message: Message) -> DeliveryResult:
        self.sent += 1
        return DeliveryResult(message.message_id, self.name, self.status, 1)

    async def close(self) -> None:
        return None


async def test_redelivered_message_id_is_a_duplicate() -> None:
    sender = CountingSender()
    adapter = Idempotent(sender, MemoryDeliveredIds())
    first = await adapter.deliver(message("m-1"))
    again = await adapter.deliver(message("m-1"))
    assert (first.status, again.status, sender.sent) == ("delivered", "duplicate", 1)


async def test_a_failed_send_is_not_marked_delivered() -> None:
    sender = CountingSender(status=DeliveryStatus.failed)
    adapter = Idempotent(sender, MemoryDeliveredIds())
    await adapter.deliver(message("m-1"))
    await adapter.deliver(message("m-1"))
    assert sender.sent == 2


async def test_ads_are_deferred_to_the_audience_export() -> None:
    result = await AudienceSender().send(
        message("m-2", "ads", kind="retargeting", payload={"audience": "cart_abandoners"})
    )
    assert result.status is DeliveryStatus.deferred
    assert "cart_abandoners" in result.detail


# -- the runner's order -----------------------------------------------------------------------------


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class ScriptedConsumer:
    def __init__(self, calls: list[str], batches: Sequence[dict[TopicPartition, list[Record]]]) -> None:
        self.calls = calls
        self.batches = list(batches)
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets: Any = None) -> None:
        self.calls.append("commit")
        self.commits.append(dict(offsets))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))


async def test_runner_delivers_then_dead_letters_then_commits() -> None:
    calls: list[str] = []
    tp0, tp1 = TopicPartition("messages", 0), TopicPartition("messages", 1)
    ok = message("m-ok", "crm")
    failing = message("m-fail", "email", kind="coupon_email")
    unrouted = message("m-none", "ads", kind="retargeting")
    batch = {
        tp0: [
            Record("messages", 0, 10, b"v-1", ok.model_dump_json().encode()),
            Record("messages", 0, 11, b"v-1", b"{not json"),
        ],
        tp1: [
            Record("messages", 1, 4, b"v-2", failing.model_dump_json().encode()),
            Record("messages", 1, 5, b"v-3", unrouted.model_dump_json().encode()),
        ],
    }
    consumer = ScriptedConsumer(calls, [batch])

    class Recording(CountingSender):
        async def send(self, message: Message) -> DeliveryResult:
            calls.append(f"send {message.message_id}")
            return await super().send(message)

    webhook = Recording("webhook")
    email = Recording("email", DeliveryStatus.failed)
    delivered = MemoryDeliveredIds()
    dispatcher = Dispatcher(
        {"webhook": Idempotent(webhook, delivered), "email": Idempotent(email, delivered)},
        {"crm": "webhook", "email": "email"},
    )
    letters: list[tuple[bytes | None, bytes]] = []

    async def send_dead_letters(records: list[tuple[bytes | None, bytes]]) -> None:
        calls.append("dead letters")
        letters.extend(records)

    runner = DeliveryRunner(consumer, dispatcher, send_dead_letters)
    assert await runner.step() == 4
    assert calls[-2:] == ["dead letters", "commit"]
    assert sorted(calls[:-2]) == ["send m-fail", "send m-ok"]
    assert consumer.commits == [{tp0: 12, tp1: 6}]
    dead = sorted(
        (DeadLetter.model_validate(orjson.loads(v)) for _, v in letters), key=lambda d: d.offset or 0
    )
    assert [(d.partition, d.offset, d.reason, d.source, d.attempts) for d in dead] == [
        (1, 4, "delivery_failed", "delivery", 1),
        (1, 5, "undeliverable", "delivery", 0),
        (0, 11, "not_json", "delivery", None),
    ]
    assert dead[0].original == failing.model_dump_json().encode()
    assert {d.reason for d in dead} >= DELIVERY_REASONS  # every reason only delivery gives
    assert runner.stats.by_status == {"delivered": 1, "failed": 1, "undeliverable": 1, "dead_lettered": 3}


async def test_a_failed_step_commits_nothing_and_reads_the_batch_again() -> None:
    calls: list[str] = []
    tp0 = TopicPartition("messages", 0)
    batch = {tp0: [Record("messages", 0, 7, b"v-1", message("m-1").model_dump_json().encode())]}
    consumer = ScriptedConsumer(calls, [batch])

    class Broken(CountingSender):
        async def send(self, message: Message) -> DeliveryResult:
            raise ConnectionError("redis went away")

    async def no_dead_letters(records: list[tuple[bytes | None, bytes]]) -> None:
        raise AssertionError("nothing to dead-letter")

    dispatcher = Dispatcher({"webhook": Idempotent(Broken(), MemoryDeliveredIds())}, {"crm": "webhook"})
    runner = DeliveryRunner(consumer, dispatcher, no_dead_letters)
    try:
        await runner.step()
    except ConnectionError:
        pass
    else:
        raise AssertionError("the step should fail")
    assert consumer.commits == []
    assert consumer.seeks == [(tp0, 7)]


class PositionedConsumer:
    """One partition read from a position that `seek` moves back (as aiokafka's does)."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.position = 0
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        batch, self.position = self.records[self.position :], len(self.records)
        return {TopicPartition("messages", 0): batch} if batch else {}

    async def commit(self, offsets: Any = None) -> None:
        self.commits.append(dict(offsets))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.position = offset


async def test_the_runner_survives_a_failed_step_and_delivers_on_the_next() -> None:
    import asyncio

    from redis.exceptions import ConnectionError as RedisConnectionError

    consumer = PositionedConsumer(
        [Record("messages", 0, 0, b"v-1", message("m-1").model_dump_json().encode())]
    )

    class FlakyIds(MemoryDeliveredIds):
        failures = 1

        async def seen(self, channel: str, message_id: str) -> bool:
            if self.failures:
                self.failures -= 1
                raise RedisConnectionError("redis went away")
            return await super().seen(channel, message_id)

    sender = CountingSender()
    dispatcher = Dispatcher({"webhook": Idempotent(sender, FlakyIds())}, {"crm": "webhook"})

    async def no_dead_letters(records: list[tuple[bytes | None, bytes]]) -> None:
        raise AssertionError("nothing to dead-letter")

    runner = DeliveryRunner(consumer, dispatcher, no_dead_letters)
    stop = asyncio.Event()
    await asyncio.wait_for(runner.run(stop, on_progress=lambda stats: stop.set()), timeout=10)
    assert sender.sent == 1
    assert consumer.commits == [{TopicPartition("messages", 0): 1}]


async def test_a_holdout_record_is_never_delivered() -> None:
    sender = CountingSender()
    dispatcher = Dispatcher({"webhook": Idempotent(sender, MemoryDeliveredIds())}, {"crm": "webhook"})
    held = Message.model_validate(message("m-h").model_dump() | {"campaign": "cafe", "holdout": True})
    messaged = Message.model_validate(message("m-v").model_dump() | {"campaign": "cafe", "variant": "a"})
    assert (await dispatcher.dispatch(held)).status is DeliveryStatus.holdout
    assert (await dispatcher.dispatch(messaged)).status is DeliveryStatus.delivered
    assert sender.sent == 1
    assert not (await dispatcher.dispatch(held)).dead
