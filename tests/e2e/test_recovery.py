"""A worker SIGKILLed mid-stream recovers its profiles from the changelog, exactly."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core.batch import IngestLimits, SourceRecord, process_batch
from streams.core.enrich import default_enricher
from streams.core.profile import Profile
from streams.core.segments import load_definitions
from streams.settings import DEFAULT_SEGMENTS_FILE
from streams.simulate import SimParams, simulate
from tests.e2e.harness import Worker, WorkerConfig, group_committed, produce, read_topic, wait_until


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


@pytest.mark.timeout(600)
def test_sigkill_mid_stream_recovers_exact_profiles(embedded_stack: Any, tmp_path: Path) -> None:
    sim = simulate(
        400, seed=23, end=datetime.now(UTC) - timedelta(seconds=5), params=SimParams(duplicate_rate=0.02)
    )
    records = [(e["visitor_id"].encode(), orjson.dumps(e)) for e in sim.events]
    half = len(records) // 2
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap,
        embedded_stack.redis_url,
        tmp_path / "w",
        extra_env={"TESSERA_BATCH_MAX_RECORDS": "300"},
    )
    first = Worker(config).start()
    ends_first = asyncio.run(produce(config.kafka, config.events_topic, records[:half]))
    first.wait_committed(ends_first)
    before = sum(first.status()["committed"].values())
    ends = asyncio.run(produce(config.kafka, config.events_topic, records[half:]))
    # Kill as soon as the second half is being processed (not before, not after it is done).
    wait_until(lambda: sum(first.status()["committed"].values()) > before, 120, 0.01, "second half started")
    first.kill9()
    merged = {p: max(ends_first.get(p, 0), ends.get(p, 0)) for p in set(ends_first) | set(ends)}
    at_kill = asyncio.run(
        group_committed(config.kafka, f"tessera-{config.run_id}", config.events_topic, config.partitions)
    )
    assert sum(at_kill.values()) < sum(merged.values()), "the kill came after the stream was done"

    second = Worker(config).start()
    try:
        second.wait_committed(merged)
        status = second.status()
        assert status["recovered_records"] > 0

        source = asyncio.run(read_topic(config.kafka, config.events_topic))
        expected = replay(sorted(source, key=lambda r: (r.partition, r.offset)))
        changelog = asyncio.run(read_topic(config.kafka, config.changelog_topic))
        latest: dict[str, Profile] = {}
        for record in changelog:
            latest[record.key.decode()] = Profile.from_bytes(record.value)
        assert set(latest) == set(expected)
        mismatched = [v for v, p in expected.items() if latest[v].days != p.days or latest[v].cart != p.cart]
        assert not mismatched, f"{len(mismatched)} profiles differ from a replay, e.g. {mismatched[:3]}"

        unique = {e["event_id"]: e for e in sim.events}
        revenue = sum(e["properties"]["value"] for e in unique.values() if e["type"] == "purchase")
        totals = second.get("/v1/report")["totals"]
        assert totals["events"] == len(unique)
        assert math.isclose(totals["revenue"], revenue, rel_tol=1e-9, abs_tol=1e-6)
    finally:
        second.stop()
