"""A worker SIGKILLed mid-stream recovers its profiles from the changelog, exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from streams.producer import produce_records
from streams.testing import WorkerProcess, group_committed
from tests.e2e.harness import (
    assert_changelog_is_replay,
    assert_reports_hold_each_event_once,
    merged_ends,
    simulated_stream,
    small_batch_config,
    start_on_first_half,
)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_sigkill_mid_stream_recovers_exact_profiles(embedded_stack: Any, tmp_path: Path, store: str) -> None:
    """With either profile store (`TESSERA_PROFILE_STORE`): the disk store of the killed worker is
    left behind, and the next one starts its partitions' folders empty and refills them."""
    events, records = simulated_stream(400, seed=23)
    config = small_batch_config(embedded_stack, tmp_path / "w")
    config.extra_env["TESSERA_PROFILE_STORE"] = store
    first, ends_first, second_half = start_on_first_half(config, records)
    before = sum(first.status()["committed"].values())
    ends = asyncio.run(produce_records(config.kafka, config.events_topic, second_half))
    # Kill as soon as the second half is being processed (not before, not after it is done).
    first.wait(lambda: sum(first.status()["committed"].values()) > before, 120, 0.01, "second half started")
    first.kill9()
    merged = merged_ends(ends_first, ends)
    at_kill = asyncio.run(
        group_committed(config.kafka, config.group_id, config.events_topic, config.partitions)
    )
    assert sum(at_kill.values()) < sum(merged.values()), "the kill came after the stream was done"

    second = WorkerProcess(config).start()
    try:
        second.wait_committed(merged)
        status = second.status()
        assert status["recovered_records"] > 0

        assert_changelog_is_replay(config)
        assert_reports_hold_each_event_once(events, [second.get("/v1/report")])
        folders = sorted(p.name for p in (config.data_dir / "profiles").glob("p*"))
        assert folders == ([f"p{n}" for n in range(config.partitions)] if store == "rocksdb" else [])
    finally:
        second.stop()
    assert not list((config.data_dir / "profiles").glob("p*"))  # a stopped worker deletes them
