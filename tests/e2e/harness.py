"""What the end-to-end tests assert on workers run against the embedded stack: the changelog against
a replay of the events topic by the pure core, ClickHouse reports, and the stream scenarios the tests
share.

Starting, asking and stopping workers, reading topics and replaying them, is `streams.testing`.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.core.definitions import load_definitions
from streams.core.profile import Profile
from streams.producer import produce_records
from streams.settings import DEFAULT_SEGMENTS_FILE
from streams.simulate import SimParams, simulate
from streams.testing import WorkerConfig, WorkerProcess, read_topic, replay_records


def assert_changelog_is_replay(config: WorkerConfig, deadline_s: float = 30) -> None:
    """The latest changelog profile of every visitor equals a replay of the events topic."""
    source = asyncio.run(read_topic(config.kafka, config.events_topic, deadline_s=deadline_s))
    in_order = sorted(source, key=lambda r: (r.partition, r.offset))
    expected = replay_records(in_order, load_definitions(DEFAULT_SEGMENTS_FILE), wall_now=time.time())
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
) -> tuple[WorkerProcess, dict[int, int], list[tuple[bytes, bytes]]]:
    """A worker started on `config` that has committed the first half of `records` (produced
    here): returns it, the end offsets of that half, and the second half, not yet produced."""
    half = len(records) // 2
    worker = WorkerProcess(config).start()
    try:
        ends = asyncio.run(produce_records(config.kafka, config.events_topic, records[:half]))
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
