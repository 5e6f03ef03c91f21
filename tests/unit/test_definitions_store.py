"""The definitions topic (`streams.definitions_store`): publish, refusals, rollback, history, the
worker's start-up and its head watcher, against an in-memory topic (`FakeConsumer` read,
`FakeTopicProducer` appended to)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from schemas.definitions import HEAD_KEY, DefinitionsRecord, text_sha256
from streams.core.batch import SourceRecord
from streams.core.definitions import DefinitionError, Definitions
from streams.definitions_store import (
    DefinitionsStore,
    HeadWatcher,
    UnknownVersion,
    VersionClash,
    initial_definitions,
)
from streams.recovery import ChangelogConsumer
from streams.testing.fakes import FakeConsumer, FakeTopicProducer

TOPIC = "defs"


def definitions(version: str, condition: str = "cart_value > 100", extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        version: "{version}"
        segments:
          - id: big_cart
            description: a full cart
            when: {condition}
        """
    ) + extra


class Topic:
    """One in-memory definitions topic: a store reads and writes it; each read gets its own consumer."""

    def __init__(self) -> None:
        self.records: list[SourceRecord] = []
        self.producer = FakeTopicProducer(FakeConsumer(topics={TopicPartition(TOPIC, 0): self.records}))
        self.consumers: list[FakeConsumer] = []

    def store(self) -> DefinitionsStore:
        async def open_consumer() -> ChangelogConsumer:
            consumer = FakeConsumer(topics={TopicPartition(TOPIC, 0): self.records}, empty_fetches=1)
            self.consumers.append(consumer)
            return consumer

        async def open_producer() -> FakeTopicProducer:
            return self.producer

        return DefinitionsStore(TOPIC, open_consumer, open_producer)

    def keys(self) -> list[str]:
        return [r.key.decode() for r in self.records if r.key is not None]


async def test_publish_writes_the_version_then_the_head_and_history_reads_them_back() -> None:
    topic = Topic()
    store = topic.store()
    first = await store.publish(definitions("1"), "ana", "first cut")
    second = await store.publish(definitions("2", "cart_value > 200"), "ben", "raise the bar")

    assert topic.keys() == ["version:1", "head", "version:2", "head"]
    assert (first.changed, second.changed) == (True, True)
    assert second.defs.version == "2"
    history = await store.read()
    assert history.head == second.record
    assert [(r.version, r.action, r.applied_by, r.comment) for r in history.entries] == [
        ("1", "apply", "ana", "first cut"),
        ("2", "apply", "ben", "raise the bar"),
    ]
    assert history.head is not None and history.head.previous == "1"
    assert history.head.sha256 == text_sha256(definitions("2", "cart_value > 200"))
    assert all(consumer.stopped for consumer in topic.consumers)
    await store.close()
    assert topic.producer.stopped


async def test_a_refused_file_never_reaches_the_topic() -> None:
    topic = Topic()
    store = topic.store()
    with pytest.raises(DefinitionError) as refused:
        await store.publish(definitions("1", "cart_valeu > 100"), "ana", path="mine.yaml")
    assert (refused.value.path, refused.value.line, refused.value.column) == ("mine.yaml", 5, 11)
    assert "cart_valeu" in refused.value.message
    assert topic.records == [] and topic.consumers == []  # refused before the topic was read


async def test_the_same_version_with_other_content_is_refused_and_the_same_text_is_a_no_op() -> None:
    topic = Topic()
    store = topic.store()
    await store.publish(definitions("1"), "ana")
    with pytest.raises(VersionClash, match="version 1 exists with other content; bump version"):
        await store.publish(definitions("1", "cart_value > 5"), "ana")
    again = await store.publish(definitions("1"), "ana")
    assert not again.changed and again.record.version == "1"
    assert topic.keys() == ["version:1", "head"]


async def test_rollback_makes_an_older_version_the_head_and_history_shows_it() -> None:
    topic = Topic()
    store = topic.store()
    await store.publish(definitions("1"), "ana")
    await store.publish(definitions("2", "cart_value > 200"), "ana")
    rolled = await store.rollback("1", "ben", "2 was too strict")

    assert rolled.changed and rolled.defs.version == "1"
    assert topic.keys()[-2:] == ["rollback:1", "head"]
    history = await store.read()
    assert history.head == rolled.record
    record = rolled.record
    assert (record.action, record.rolled_back_to, record.previous, record.text) == (
        "rollback",
        "1",
        "2",
        definitions("1"),
    )
    assert [(r.version, r.action) for r in history.entries] == [
        ("1", "apply"),
        ("2", "apply"),
        ("1", "rollback"),
    ]
    assert not (await store.rollback("1", "ben")).changed  # the head already
    with pytest.raises(UnknownVersion, match="no version 9"):
        await store.rollback("9", "ben")
    # Applying version 2's text again makes it the head again: a rollback, numbered on.
    again = await store.publish(definitions("2", "cart_value > 200"), "ana")
    assert again.changed and again.record.action == "rollback" and topic.keys()[-2:] == ["rollback:2", "head"]


async def test_a_record_this_release_cannot_read_is_skipped() -> None:
    topic = Topic()
    store = topic.store()
    await store.publish(definitions("1"), "ana")
    await topic.producer.send_and_wait(TOPIC, b"{not json", key=HEAD_KEY.encode())
    history = await store.read()
    assert history.head is not None and history.head.version == "1"


async def test_start_up_seeds_an_empty_topic_from_the_file_then_runs_the_head(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(definitions("1"), encoding="utf-8")
    topic = Topic()
    store = topic.store()

    seeded = await initial_definitions(store, seed)
    assert seeded.version == "1" and topic.keys() == ["version:1", "head"]
    head = (await store.read()).head
    assert head is not None and (head.applied_by, head.text) == ("seed", definitions("1"))

    await store.publish(definitions("2", "cart_value > 200"), "ana")
    seed.write_text(definitions("3"), encoding="utf-8")  # the file is only the seed now
    assert (await initial_definitions(store, seed)).version == "2"


async def test_the_watcher_hands_over_each_new_head_and_skips_one_that_does_not_parse() -> None:
    topic = Topic()
    store = topic.store()
    await store.publish(definitions("1"), "ana")
    running: list[Definitions] = []

    async def switch(defs: Definitions) -> None:
        running.append(defs)

    watcher = HeadWatcher(store, switch, lambda: running[-1].source_sha if running else "")
    await watcher.start()
    assert (await watcher.step(0)) is not None  # the head read at start differs from "" here
    assert [d.version for d in running] == ["1"]
    assert await watcher.step(0) is None  # nothing new

    await store.publish(definitions("2", "cart_value > 200"), "ana")
    switched = await watcher.step(0)
    assert switched is not None and switched.version == "2"

    # A head this release refuses (written by hand, past the store's validation) is skipped.
    text = "version: 3\n"
    bad = DefinitionsRecord(version="3", text=text, sha256=text_sha256(text), applied_at=datetime.now(UTC))
    await topic.producer.send_and_wait(TOPIC, bad.model_dump_json().encode(), key=HEAD_KEY.encode())
    assert await watcher.step(0) is None
    assert await watcher.step(0) is None  # not retried
    await store.rollback("1", "ben")
    rolled = await watcher.step(0)
    assert rolled is not None and rolled.version == "1"
    assert [d.version for d in running] == ["1", "2", "1"]
    await watcher.close()
    assert topic.consumers[-1].stopped
