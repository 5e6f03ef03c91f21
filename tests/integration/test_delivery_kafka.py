"""Delivery on the embedded stack (Tansu and redis-server, started here and stopped by PID): messages
produced to the topic reach a local webhook server exactly once each, a restarted runner delivers
nothing again, a fresh consumer group finds every id already delivered (Redis), on-site messages
land in the inbox; and `export_audiences` turns segment changes and profiles into upload files."""

from __future__ import annotations

import asyncio
import collections
import csv
import functools
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.stack import EmbeddedStack, StackEndpoints
from infra.topics import TopicSpec, ensure_topics
from schemas.changes import SegmentChange
from schemas.deadletter import DeadLetter
from schemas.messages import Message
from sinks.delivery.plan import SIGNATURE_HEADER, verify_signature
from sinks.redis_serving import RedisServing
from streams.cli import build_parser, cmd_audiences
from streams.core.profile import Profile
from streams.delivery import export_audiences, run_delivery
from streams.producer import produce_records
from streams.recovery import open_changelog_consumer
from streams.settings import Settings
from streams.testing import ChildProcess, async_wait_until, read_topic, unique_name
from streams.testing.kafka import group_committed
from streams.testing.webhook import WebhookReceiver, serve_webhook

pytestmark = pytest.mark.timeout(180)

SECRET = "whsec-integration-0123456789"
PARTITIONS = 2
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    with EmbeddedStack(
        tmp_path_factory.mktemp("delivery-stack"), clickhouse_dsn="chdb://unused"
    ) as endpoints:
        yield endpoints


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    async with serve_webhook() as served:
        yield served


def message(n: int, channel: str = "crm") -> Message:
    return Message(
        message_id=f"m-{n}",
        visitor_id=f"v-{n}",
        kind="escalation" if channel == "crm" else "exit_intent_overlay",
        channel=channel,  # type: ignore[arg-type]
        rule="top_spender_escalation" if channel == "crm" else "exit_intent_overlay",
        event_time=T0,
        payload={"n": n},
    )


def records(messages: list[Message]) -> list[tuple[bytes | None, bytes]]:
    return [(m.visitor_id.encode(), m.model_dump_json().encode()) for m in messages]


class Runner:
    """`run_delivery` as a task, stopped through its event."""

    def __init__(self, settings: Settings, stack: StackEndpoints) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            run_delivery(settings, stack.kafka_bootstrap, stack.redis_url, self.stop)
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def test_runner_delivers_each_message_once_across_restarts(
    stack: StackEndpoints, receiver: tuple[WebhookReceiver, str]
) -> None:
    server, url = receiver
    name = unique_name("delivery")
    settings = Settings(
        kafka_broker=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        partitions=PARTITIONS,
        messages_topic=f"{name}.messages",
        delivery_dlq_topic=f"{name}.messages.dlq",
        delivery_group_id=f"{name}-group",
        redis_prefix=name,
        webhooks={"crm": {"url": url, "secret": SECRET}},
        delivery_backoff_s=0.01,
    ).for_embedded_broker()
    topic = settings.messages_topic
    await ensure_topics(stack.kafka_bootstrap, [TopicSpec(topic, PARTITIONS)])
    first = [message(n) for n in range(6)] + [message(100, "onsite")]
    ends = await produce_records(stack.kafka_bootstrap, topic, records(first))

    async def committed(group: str, expected: dict[int, int]) -> bool:
        found = await group_committed(stack.kafka_bootstrap, group, topic, PARTITIONS)
        return all(found.get(p, 0) >= end for p, end in expected.items())

    runner = Runner(settings, stack)
    try:
        await async_wait_until(lambda: len(server.ids()) >= 6, timeout=60, message="6 webhooks received")
        await async_wait_until(
            functools.partial(committed, settings.delivery_group_id, ends),
            timeout=30,
            message="offsets committed",
        )
    finally:
        await runner.close()
    assert server.ids() == collections.Counter({f"m-{n}": 1 for n in range(6)})
    for headers, body in server.requests:
        assert verify_signature(
            SECRET.encode(), headers[SIGNATURE_HEADER], body, now=datetime.now(UTC).timestamp()
        )
    serving = RedisServing(stack.redis_url, prefix=name)
    try:
        visitor = await serving.get_visitor("v-100")
    finally:
        await serving.close()
    assert visitor is not None and [m["message_id"] for m in visitor["inbox"]] == ["m-100"]

    # A restart reads from the committed offsets: only the new messages are delivered.
    later = [message(n) for n in range(6, 9)]
    ends |= await produce_records(stack.kafka_bootstrap, topic, records(later))
    runner = Runner(settings, stack)
    try:
        await async_wait_until(lambda: len(server.ids()) >= 9, timeout=60, message="9 webhooks received")
        await async_wait_until(
            functools.partial(committed, settings.delivery_group_id, ends),
            timeout=30,
            message="offsets committed",
        )
    finally:
        await runner.close()
    assert server.ids() == collections.Counter({f"m-{n}": 1 for n in range(9)})

    # A fresh group reads the topic from the start: every id is a duplicate by Redis, nothing is sent.
    fresh = settings.model_copy(update={"delivery_group_id": f"{name}-fresh"})
    runner = Runner(fresh, stack)
    try:
        await async_wait_until(
            functools.partial(committed, fresh.delivery_group_id, ends),
            timeout=60,
            message="fresh group done",
        )
    finally:
        await runner.close()
    assert server.ids() == collections.Counter({f"m-{n}": 1 for n in range(9)})


async def test_tessera_deliver_command(
    stack: StackEndpoints, receiver: tuple[WebhookReceiver, str], tmp_path: Path
) -> None:
    """`tessera deliver` as its own process, configured by environment variables, stopped by
    SIGTERM: webhooks delivered, an e-mail without an address dead-lettered on messages.dlq."""
    server, url = receiver
    name = unique_name("deliver-cmd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")} | {
        "TESSERA_KAFKA_BROKER": stack.kafka_bootstrap,
        "TESSERA_REDIS_URL": stack.redis_url,
        "TESSERA_DATA_DIR": str(tmp_path / "data"),
        "TESSERA_PARTITIONS": str(PARTITIONS),
        "TESSERA_MESSAGES_TOPIC": f"{name}.messages",
        "TESSERA_DELIVERY_DLQ_TOPIC": f"{name}.messages.dlq",
        "TESSERA_CHANGELOG_TOPIC": f"{name}.changelog",
        "TESSERA_DELIVERY_GROUP_ID": f"{name}-group",
        "TESSERA_REDIS_PREFIX": name,
        "TESSERA_WEBHOOKS": json.dumps({"top_spender_escalation": {"url": url, "secret": SECRET}}),
        "TESSERA_SESSION_TIMEOUT_S": "4",
        "TESSERA_HEARTBEAT_INTERVAL_S": "1.33",
    }
    topic = env["TESSERA_MESSAGES_TOPIC"]
    await ensure_topics(stack.kafka_bootstrap, [TopicSpec(topic, PARTITIONS)])
    unaddressed = Message.model_validate(
        message(200).model_dump() | {"channel": "email", "kind": "coupon_email", "rule": "cart_coupon"}
    )
    await produce_records(stack.kafka_bootstrap, topic, records([message(1), message(2), unaddressed]))
    child = ChildProcess(
        "deliver", [sys.executable, "-m", "streams.cli", "deliver"], env, tmp_path / "deliver.log"
    )
    child.spawn()
    try:
        await async_wait_until(lambda: len(server.ids()) >= 2, timeout=60, message="2 webhooks received")

        async def dead_lettered() -> list[Any]:
            child.check_alive()
            return await read_topic(stack.kafka_bootstrap, env["TESSERA_DELIVERY_DLQ_TOPIC"], deadline_s=2)

        letters = await async_wait_until(dead_lettered, timeout=60, message="the e-mail dead-lettered")
    finally:
        code = await asyncio.to_thread(child.stop, 30.0)
    assert code == 0, child.log_tail()
    assert server.ids() == collections.Counter({"m-1": 1, "m-2": 1})
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert (letter.reason, letter.source, letter.key) == ("undeliverable", "delivery", "v-200")
    assert "no e-mail address" in letter.detail


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def change(visitor: str, segment: str, transition: str, n: int) -> tuple[bytes | None, bytes]:
    record = SegmentChange(
        change_id=f"c-{n}",
        visitor_id=visitor,
        segment=segment,
        transition=transition,  # type: ignore[arg-type]
        event_time=T0,
        processed_at=T0,
        definition_version="1",
    )
    return visitor.encode(), record.model_dump_json().encode()


def profile(visitor: str, traits: dict[str, str], country: str = "DE") -> tuple[bytes | None, bytes]:
    return visitor.encode(), Profile(visitor_id=visitor, traits=dict(traits), country=country).to_bytes()


def rows(path: Path) -> list[list[str]]:
    with path.open() as handle:
        return list(csv.reader(handle))


async def test_audience_export_adds_and_removes(
    stack: StackEndpoints, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name("audiences")
    changes, changelog = f"{name}.changes", f"{name}.changelog"
    await ensure_topics(
        stack.kafka_bootstrap, [TopicSpec(changes, PARTITIONS), TopicSpec(changelog, PARTITIONS)]
    )
    await produce_records(
        stack.kafka_bootstrap,
        changelog,
        [
            profile("v-ann", {"email": " Ann.Lee@Gmail.com ", "first_name": "Ann"}),
            profile("v-bob", {"phone": "030 1234567"}),
        ],
    )
    await produce_records(
        stack.kafka_bootstrap,
        changes,
        [
            change("v-ann", "cart_abandoners", "entered", 1),
            change("v-bob", "cart_abandoners", "entered", 2),
            change("v-anon", "cart_abandoners", "entered", 3),
        ],
    )
    opener = functools.partial(open_changelog_consumer, stack.kafka_bootstrap)
    first = await export_audiences(opener, changes, changelog, tmp_path, now=T0)
    assert first.audiences == {"cart_abandoners": {"members": 3, "add": 2, "remove": 0, "skipped": 1}}
    meta_add = rows(tmp_path / first.run / "cart_abandoners.meta.add.csv")
    assert meta_add[0] == ["email", "phone", "fn", "ln", "zip", "ct", "st", "country"]
    assert sorted(r[0] for r in meta_add[1:]) == sorted(["", sha("ann.lee@gmail.com")])
    assert sorted(r[1] for r in meta_add[1:]) == sorted(["", sha("49301234567")])
    google_add = rows(tmp_path / first.run / "cart_abandoners.google.add.csv")
    assert google_add[0] == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
    assert sorted(r[1] for r in google_add[1:]) == sorted(["", sha("+49301234567")])

    # Ann buys: the next run removes her and adds nobody.
    await produce_records(stack.kafka_bootstrap, changes, [change("v-ann", "cart_abandoners", "exited", 4)])
    second = await export_audiences(opener, changes, changelog, tmp_path, now=T0.replace(hour=10))
    assert second.changes_read == 1
    assert second.audiences == {"cart_abandoners": {"members": 2, "add": 0, "remove": 1, "skipped": 1}}
    meta_remove = rows(tmp_path / second.run / "cart_abandoners.meta.remove.csv")
    assert [r[0] for r in meta_remove[1:]] == [sha("ann.lee@gmail.com")]
    assert rows(tmp_path / second.run / "cart_abandoners.meta.add.csv") == [meta_add[0]]

    # The command: a third run with nothing new writes header-only files and says so.
    settings = Settings(kafka_broker=stack.kafka_bootstrap, changes_topic=changes, changelog_topic=changelog)
    args = build_parser().parse_args(["audiences", "export", "--out", str(tmp_path)])
    assert await asyncio.to_thread(cmd_audiences, settings, args) == 0
    printed = capsys.readouterr().out
    assert "0 segment changes read" in printed
    assert "cart_abandoners" in printed and "add      0" in printed and "remove      0" in printed
