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
from pathlib import Path
from typing import Any

import pytest

from streams.producer import produce_records
from streams.testing import WorkerProcess, group_committed, wait_on_worker
from tests.e2e.harness import (
    assert_changelog_is_replay,
    assert_reports_hold_each_event_once,
    merged_ends,
    simulated_stream,
    small_batch_config,
    start_on_first_half,
)


@pytest.mark.timeout(600)
def test_second_worker_joins_mid_stream(embedded_stack: Any, tmp_path: Path) -> None:
    events, records = simulated_stream(400, seed=31)
    first_config = small_batch_config(embedded_stack, tmp_path / "first")
    second_config = dataclasses.replace(first_config, data_dir=tmp_path / "second")
    group = first_config.group_id

    first, ends_first, second_half = start_on_first_half(first_config, records)
    second: WorkerProcess | None = None
    try:
        second = WorkerProcess(second_config).start()
        ends = asyncio.run(produce_records(first_config.kafka, first_config.events_topic, second_half))
        merged = merged_ends(ends_first, ends)

        def all_committed() -> bool:
            committed = asyncio.run(
                group_committed(first_config.kafka, group, first_config.events_topic, first_config.partitions)
            )
            return all(committed.get(p, 0) >= end for p, end in merged.items())

        wait_on_worker(all_committed, 240, 0.5, f"group {group} committed {merged}")
        first_status, second_status = first.status(), second.status()
        # The second worker took partitions that already had state, and worked on the second half.
        assert second_status["recovered_records"] > 0
        assert second_status["records"] > 0
        assert first_status["records"] + second_status["records"] == len(records), (
            "a record was processed twice (or not at all) across the rebalance"
        )

        assert_changelog_is_replay(first_config)

        # Each worker writes its own embedded ClickHouse folder: together they hold every event once.
        assert_reports_hold_each_event_once(events, [worker.get("/v1/report") for worker in (first, second)])
    finally:
        first.stop()
        if second is not None:
            second.stop()
