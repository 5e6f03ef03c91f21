"""The ClickHouse sink in a child process (`streams.analytics_process`), against real chDB.

The child decodes the shipped record values again; these tests check that what lands in
ClickHouse is row for row what the in-process sink writes from the models, that a lost child is
replaced, that a bad request is an error and not the end of the child, and that the child stops
with its socket.
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from sinks.clickhouse import EVENT_COLUMNS, AnalyticsBatch, ClickHouseSink
from streams.analytics_process import AnalyticsProcessError, ClickHouseProcess, raw_events
from streams.core.batch import IngestLimits, SourceRecord, process_batch
from streams.core.enrich import default_enricher
from streams.core.profile import Profile
from streams.core.segments import load_definitions
from streams.settings import DEFAULT_SEGMENTS_FILE
from streams.simulate import simulate

pytestmark = pytest.mark.timeout(180)

END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _gone(pid: int, deadline_s: float = 30.0) -> bool:
    """Wait (condition with a deadline) until `pid` no longer runs."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)  # polling a condition, bounded by the deadline
    return False


def _batches(seed: int, visitors: int, per_batch: int) -> list[AnalyticsBatch]:
    """Analytics batches as the engine builds them: `process_batch` over simulated records."""
    events = simulate(visitors, seed, END).events
    defs = load_definitions(DEFAULT_SEGMENTS_FILE)
    enricher = default_enricher(None)
    profiles: dict[str, Profile] = {}
    offsets: dict[int, int] = {}
    batches = []
    for start in range(0, len(events), per_batch):
        records = []
        for event in events[start : start + per_batch]:
            partition = zlib.crc32(event["visitor_id"].encode()) % 3
            offsets[partition] = offsets.get(partition, -1) + 1
            records.append(
                SourceRecord(partition, offsets[partition], event["visitor_id"].encode(), orjson.dumps(event))
            )
        result = process_batch(
            records,
            lambda visitor_id, _p: profiles.get(visitor_id),
            {},
            {},
            defs=defs,
            enricher=enricher,
            limits=IngestLimits(),
            wall_now=END.timestamp(),
            topic="events",
        )
        for visitor_id, effect in result.visitors.items():
            profiles[visitor_id] = effect.profile
        batches.append(
            AnalyticsBatch(
                token=f"t{start}",
                events=result.analytics_rows,
                raw=result.analytics_raw,
                changes=result.changes,
                messages=result.messages,
            )
        )
    return batches


@pytest.fixture(scope="module")
def batches() -> list[AnalyticsBatch]:
    return _batches(seed=5, visitors=40, per_batch=250)


@pytest.fixture
def process(tmp_path: Path) -> Iterator[ClickHouseProcess]:
    proc = ClickHouseProcess(f"chdb://{tmp_path / 'chdb'}")
    yield proc
    proc.close()


def _all_rows(store: Any, database: str = "tessera") -> list[tuple[Any, ...]]:
    cols = ", ".join(f"`{c}`" for c in EVENT_COLUMNS)
    return list(store.query(f"SELECT {cols} FROM {database}.events ORDER BY event_id"))


def test_the_child_writes_what_the_in_process_sink_writes(
    batches: list[AnalyticsBatch], process: ClickHouseProcess, tmp_path: Path
) -> None:
    assert sum(len(b.events) for b in batches) > 500 and any(b.changes for b in batches)
    assert all(len(b.raw) == len(b.events) for b in batches)
    in_process = ClickHouseSink(f"chdb://{tmp_path / 'reference'}")
    try:
        in_process.apply_ddl()
        for batch in batches:
            process.write(batch)
            in_process.write(batch)
        assert _all_rows(process) == _all_rows(in_process)
        assert process.totals() == in_process.totals()
        assert process.segment_report() == in_process.segment_report()
    finally:
        in_process.close()


def test_a_batch_without_record_values_is_built_here(batches: list[AnalyticsBatch]) -> None:
    batch = batches[0]
    from_raw, built = raw_events(batch)
    assert len(from_raw) == len(batch.events) and built == []
    bare = AnalyticsBatch(token=batch.token, events=batch.events)
    from_raw, built = raw_events(bare)
    assert from_raw == [] and len(built) == len(batch.events)


def test_a_retried_write_is_dropped_by_its_token(
    batches: list[AnalyticsBatch], process: ClickHouseProcess
) -> None:
    process.write(batches[0])
    process.write(batches[0])
    ((stored,),) = process.query("SELECT count() FROM tessera.events")
    assert stored == len(batches[0].events)


def test_a_lost_child_is_replaced_by_the_next_call(
    batches: list[AnalyticsBatch], process: ClickHouseProcess
) -> None:
    process.write(batches[0])
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert _gone(first)
    process.write(batches[1])  # a new child, on the same folder, once the old one is gone
    assert process.pid not in (None, first)
    assert process.totals()["events"] == len(batches[0].events) + len(batches[1].events)


def test_a_bad_request_is_an_error_and_the_child_stays(process: ClickHouseProcess) -> None:
    pid = process.pid
    with pytest.raises(AnalyticsProcessError, match="no_such_table"):
        process.query("SELECT count() FROM tessera.no_such_table")
    assert process.query("SELECT 1") == [(1,)]
    assert process.pid == pid


def test_close_stops_the_child_and_later_calls_fail(tmp_path: Path) -> None:
    proc = ClickHouseProcess(f"chdb://{tmp_path / 'chdb'}")
    pid = proc.pid
    assert pid is not None
    proc.close()
    assert _gone(pid)
    with pytest.raises(AnalyticsProcessError, match="closed"):
        proc.totals()


def test_the_child_exits_when_its_worker_goes(tmp_path: Path) -> None:
    """A worker killed outright closes its socket end; the child sees that and exits (it
    ignores SIGINT and SIGTERM, so a Ctrl-C to the group leaves it to the worker)."""
    proc = ClickHouseProcess(f"chdb://{tmp_path / 'chdb'}")
    pid = proc.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    assert proc.query("SELECT 1") == [(1,)] and proc.pid == pid
    assert proc._conn is not None
    proc._conn.close()  # as the kernel does for a worker that died
    assert _gone(pid)
    proc._conn = None
    proc.close()
