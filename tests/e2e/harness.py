"""Run real worker processes against the embedded stack, each test with its own topics and keys."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.stack import free_port
from streams.core.batch import IngestLimits, SourceRecord, process_batch
from streams.core.enrich import default_enricher
from streams.core.profile import Profile
from streams.core.segments import load_definitions
from streams.producer import produce_records
from streams.settings import DEFAULT_SEGMENTS_FILE
from streams.simulate import SimParams, simulate
from tests import helpers


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """`tests.helpers.wait_until`, treating "the worker does not answer yet" as not yet.

    A worker that died raises at once (`Worker._alive`), with the tail of its log.
    """
    return helpers.wait_until(
        predicate, timeout, interval, what or None, ignore=(OSError, ValueError, KeyError)
    )


@dataclass
class WorkerConfig:
    kafka: str
    redis_url: str
    data_dir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def events_topic(self) -> str:
        return f"events-{self.run_id}"

    @property
    def dlq_topic(self) -> str:
        return f"events-{self.run_id}.dlq"

    @property
    def changes_topic(self) -> str:
        return f"segment-changes-{self.run_id}"

    @property
    def messages_topic(self) -> str:
        return f"messages-{self.run_id}"

    @property
    def changelog_topic(self) -> str:
        return f"profiles-changelog-{self.run_id}"

    @property
    def group_id(self) -> str:
        return f"tessera-{self.run_id}"

    @property
    def redis_prefix(self) -> str:
        return f"t{self.run_id}"

    def env(self, web_port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TESSERA_KAFKA_BROKER": self.kafka,
                "TESSERA_REDIS_URL": self.redis_url,
                # chDB's folder belongs to one process: the worker owns it, tests read via HTTP.
                "TESSERA_CLICKHOUSE_DSN": f"chdb://{(self.data_dir / 'chdb').resolve()}",
                "TESSERA_DATA_DIR": str(self.data_dir),
                "TESSERA_EVENTS_TOPIC": self.events_topic,
                "TESSERA_DLQ_TOPIC": self.dlq_topic,
                "TESSERA_CHANGES_TOPIC": self.changes_topic,
                "TESSERA_MESSAGES_TOPIC": self.messages_topic,
                "TESSERA_CHANGELOG_TOPIC": self.changelog_topic,
                "TESSERA_GROUP_ID": self.group_id,
                "TESSERA_REDIS_PREFIX": self.redis_prefix,
                "TESSERA_PARTITIONS": str(self.partitions),
                "TESSERA_WEB_PORT": str(web_port),
                "TESSERA_LOG_LEVEL": "INFO",
            }
        )
        env.update(self.extra_env)
        return env


class Worker:
    """One `tessera worker` subprocess."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.port = free_port()
        self.web = f"http://127.0.0.1:{self.port}"
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = config.data_dir / f"worker-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 90) -> Worker:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.config.env(self.port),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: self._alive() and self.get("/healthz")["ready"], ready_timeout, 0.1, "worker ready"
        )
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}; log:\n{self.log_tail()}")
        return True

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.web + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.web + path, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def status(self) -> dict[str, Any]:
        return self.get("/v1/status")

    def wait_committed(self, end_offsets: dict[int, int], timeout: float = 240) -> None:
        def done() -> bool:
            self._alive()
            committed = self.status()["committed"]
            return all(committed.get(str(p), 0) >= end for p, end in end_offsets.items() if end > 0)

        wait_until(done, timeout, 0.2, f"offsets {end_offsets} committed")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


produce = produce_records
"""Send (key, value) records; return partition → last offset + 1 of what was sent."""


async def read_topic(bootstrap: str, topic: str, deadline_s: float = 30) -> list[Any]:
    """Every record of `topic`, read to the Fetch high watermark of each partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + deadline_s
        partitions = None
        while partitions is None:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
                if partitions is None and time.monotonic() > deadline:
                    return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = set(tps)
        while remaining and time.monotonic() < deadline:
            polled = await consumer.getmany(*remaining, timeout_ms=200)
            for batch in polled.values():
                records.extend(batch)
            for tp in list(remaining):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return records


async def group_committed(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, read without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


def replay(records: list[Any]) -> dict[str, Profile]:
    """The expected state: every record folded once, in offset order, by the pure core."""
    store: dict[str, bytes] = {}
    result = process_batch(
        [SourceRecord(r.partition, r.offset, r.key, r.value) for r in records],
        lambda visitor_id, partition: store.get(visitor_id),
        {},
        {},
        defs=load_definitions(DEFAULT_SEGMENTS_FILE),
        enricher=default_enricher(None),
        limits=IngestLimits(),
        wall_now=time.time(),
        topic="events",
    )
    return {v: e.profile for v, e in result.visitors.items()}


def assert_changelog_is_replay(config: WorkerConfig, deadline_s: float = 30) -> None:
    """The latest changelog profile of every visitor equals a replay of the events topic."""
    source = asyncio.run(read_topic(config.kafka, config.events_topic, deadline_s=deadline_s))
    expected = replay(sorted(source, key=lambda r: (r.partition, r.offset)))
    changelog = asyncio.run(read_topic(config.kafka, config.changelog_topic, deadline_s=deadline_s))
    latest: dict[str, Profile] = {}
    for record in changelog:
        latest[record.key.decode()] = Profile.from_bytes(record.value)
    assert set(latest) == set(expected)
    mismatched = [v for v, p in expected.items() if latest[v].days != p.days or latest[v].cart != p.cart]
    assert not mismatched, f"{len(mismatched)} profiles differ from a replay, e.g. {mismatched[:3]}"


def unique_totals(events: list[dict[str, Any]]) -> tuple[int, float]:
    """(distinct events, purchase revenue over distinct events): what ClickHouse must report."""
    unique = {e["event_id"]: e for e in events}
    revenue = sum(e["properties"]["value"] for e in unique.values() if e["type"] == "purchase")
    return len(unique), revenue


def assert_reports_hold_each_event_once(events: list[dict[str, Any]], reports: list[dict[str, Any]]) -> None:
    """The `/v1/report` answers of the workers that shared a stream (each its own ClickHouse
    folder on the embedded stack) count every distinct event once, and its purchase revenue."""
    expected_events, expected_revenue = unique_totals(events)
    totals = [report["totals"] for report in reports]
    assert sum(t["events"] for t in totals) == expected_events
    assert math.isclose(sum(t["revenue"] for t in totals), expected_revenue, rel_tol=1e-9, abs_tol=1e-6)


def start_on_first_half(
    config: WorkerConfig, records: list[tuple[bytes, bytes]]
) -> tuple[Worker, dict[int, int], list[tuple[bytes, bytes]]]:
    """A worker started on `config` that has committed the first half of `records` (produced
    here): returns it, the end offsets of that half, and the second half, not yet produced."""
    half = len(records) // 2
    worker = Worker(config).start()
    try:
        ends = asyncio.run(produce(config.kafka, config.events_topic, records[:half]))
        worker.wait_committed(ends)
    except BaseException:
        worker.stop()
        raise
    return worker, ends, records[half:]


def simulated_stream(
    visitors: int, seed: int, duplicate_rate: float = 0.02
) -> tuple[list[dict[str, Any]], list[tuple[bytes, bytes]]]:
    """Simulated events ending 5 s ago (client retries included) and their (key, value) records."""
    sim = simulate(
        visitors,
        seed=seed,
        end=datetime.now(UTC) - timedelta(seconds=5),
        params=SimParams(duplicate_rate=duplicate_rate),
    )
    return sim.events, [(e["visitor_id"].encode(), orjson.dumps(e)) for e in sim.events]


def small_batch_config(stack: Any, data_dir: Path) -> WorkerConfig:
    """A worker on the embedded stack with batches of at most 300 records (many per test)."""
    return WorkerConfig(
        stack.kafka_bootstrap, stack.redis_url, data_dir, extra_env={"TESSERA_BATCH_MAX_RECORDS": "300"}
    )


def merged_ends(*ends: dict[int, int]) -> dict[int, int]:
    """Partition → the highest end offset over several produce calls."""
    merged: dict[int, int] = {}
    for each in ends:
        for partition, end in each.items():
            merged[partition] = max(merged.get(partition, 0), end)
    return merged
