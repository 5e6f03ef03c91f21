"""A second worker joining the group mid-stream: partitions move, no event is lost or counted twice.

The first worker owns every partition and processes half of the stream; a second worker (same
group, its own data folder) joins, the group rebalances (the first checkpoints what it processed,
then lets go; the second recovers the profiles of its partitions from the changelog), and both
process the rest. The profiles in the changelog must equal a replay of the topic by the pure core,
and the two workers' ClickHouse folders together must hold every event exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.simulate import SimParams, simulate
from tests.e2e.harness import (
    Worker,
    WorkerConfig,
    assert_changelog_is_replay,
    group_committed,
    produce,
    unique_totals,
    wait_until,
)


@pytest.mark.timeout(600)
def test_second_worker_joins_mid_stream(embedded_stack: Any, tmp_path: Path) -> None:
    sim = simulate(
        400, seed=31, end=datetime.now(UTC) - timedelta(seconds=5), params=SimParams(duplicate_rate=0.02)
    )
    records = [(e["visitor_id"].encode(), orjson.dumps(e)) for e in sim.events]
    half = len(records) // 2
    first_config = WorkerConfig(
        embedded_stack.kafka_bootstrap,
        embedded_stack.redis_url,
        tmp_path / "first",
        extra_env={"TESSERA_BATCH_MAX_RECORDS": "300"},
    )
    second_config = dataclasses.replace(first_config, data_dir=tmp_path / "second")
    group = f"tessera-{first_config.run_id}"

    first = Worker(first_config).start()
    second: Worker | None = None
    try:
        ends_first = asyncio.run(produce(first_config.kafka, first_config.events_topic, records[:half]))
        first.wait_committed(ends_first)

        second = Worker(second_config).start()
        ends = asyncio.run(produce(first_config.kafka, first_config.events_topic, records[half:]))
        merged = {p: max(ends_first.get(p, 0), ends.get(p, 0)) for p in set(ends_first) | set(ends)}

        def all_committed() -> bool:
            committed = asyncio.run(
                group_committed(first_config.kafka, group, first_config.events_topic, first_config.partitions)
            )
            return all(committed.get(p, 0) >= end for p, end in merged.items())

        wait_until(all_committed, 240, 0.5, f"group {group} committed {merged}")
        first_status, second_status = first.status(), second.status()
        # The second worker took partitions that already had state, and worked on the second half.
        assert second_status["recovered_records"] > 0
        assert second_status["records"] > 0
        assert first_status["records"] + second_status["records"] == len(records), (
            "a record was processed twice (or not at all) across the rebalance"
        )

        assert_changelog_is_replay(first_config)

        # Each worker writes its own embedded ClickHouse folder: together they hold every event once.
        events, revenue = unique_totals(sim.events)
        totals = [worker.get("/v1/report")["totals"] for worker in (first, second)]
        assert sum(t["events"] for t in totals) == events
        assert math.isclose(sum(t["revenue"] for t in totals), revenue, rel_tol=1e-9, abs_tol=1e-6)
    finally:
        first.stop()
        if second is not None:
            second.stop()
