"""Long fault-injection variant (`make stress`): a worker SIGKILLed again and again mid-stream.

The checker rebuilds the expected state by folding the source topic linearly through the pure
core and compares every profile, and ClickHouse's totals, with what the survivors left behind.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.producer import produce_records
from streams.simulate import SimParams, simulate
from streams.testing import WorkerConfig, WorkerProcess
from tests.e2e.harness import assert_changelog_is_replay, assert_reports_hold_each_event_once

KILLS = int(os.environ.get("TESSERA_STRESS_KILLS", "6"))
VISITORS = int(os.environ.get("TESSERA_STRESS_VISITORS", "1500"))


@pytest.mark.stress
@pytest.mark.timeout(3600)
def test_repeated_sigkill_converges_to_a_replay(embedded_stack: Any, tmp_path: Path) -> None:
    sim = simulate(
        VISITORS,
        seed=31,
        end=datetime.now(UTC) - timedelta(seconds=5),
        params=SimParams(duplicate_rate=0.03, malformed=5),
    )
    records = [(e["visitor_id"].encode(), orjson.dumps(e)) for e in sim.events]
    records += [(key.encode() if key else None, raw) for _, raw, key in sim.malformed]
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap,
        embedded_stack.redis_url,
        tmp_path / "w",
        extra_env={"TESSERA_BATCH_MAX_RECORDS": "500"},
    )
    chunk = len(records) // KILLS + 1
    ends: dict[int, int] = {}
    for i in range(KILLS):
        worker = WorkerProcess(config).start()
        sent = asyncio.run(
            produce_records(config.kafka, config.events_topic, records[i * chunk : (i + 1) * chunk])
        )
        for p, end in sent.items():
            ends[p] = max(ends.get(p, 0), end)
        before = sum(worker.status()["committed"].values())

        def progressed(w: WorkerProcess = worker, b: int = before) -> bool:
            return sum(w.status()["committed"].values()) > b

        worker.wait(progressed, 120, 0.01, "progress")
        worker.kill9()
    final = WorkerProcess(config).start()
    try:
        final.wait_committed(ends, timeout=900)
        assert_changelog_is_replay(config, deadline_s=300)
        assert_reports_hold_each_event_once(sim.events, [final.get("/v1/report", timeout=120)])
    finally:
        final.stop()
