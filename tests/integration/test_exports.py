"""Exports (`sinks/export.py`) against chDB: each kind as Parquet reads back equal to its query, CSV
has the query's rows, blocks are streamed (several per export), and the manifest says what was written."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest

from sinks import kpis
from sinks.clickhouse import ClickHouseSink
from sinks.export import Kind, export, export_query
from tests.integration.test_clickhouse_sink import BASE
from tests.integration.test_kpis import chdb_path, insert, known_events, make_changes, sink  # noqa: F401

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("kind", ["members", "kpis", "events"])
def test_parquet_round_trip_equals_the_query(sink: ClickHouseSink, tmp_path: Path, kind: Kind) -> None:  # noqa: F811
    import pyarrow.parquet as pq

    events = known_events(seed=9, n=500)
    insert(sink, events, 50, "first", changes=make_changes())
    insert(sink, events[100:], 33, "replay", changes=make_changes()[5:])
    rng = kpis.TimeRange(BASE + timedelta(minutes=2), BASE + timedelta(minutes=20))
    segment = "high_value" if kind == "members" else None
    blocks: list[int] = []
    out = tmp_path / f"{kind}.parquet"
    manifest = export(
        sink, kind, "parquet", out, segment=segment, rng=rng, block_rows=64, progress=blocks.append
    )

    sql, parameters = export_query(sink.database, kind, segment, rng)  # type: ignore[arg-type]
    with sink._lock:
        expected = sink._client.query_arrow(sql, parameters=parameters)
    read = pq.read_table(out)
    assert manifest.rows == read.num_rows == expected.num_rows > 0
    assert read.column_names == expected.column_names == manifest.columns
    assert read.to_pylist() == expected.to_pylist()
    if expected.num_rows > 64:
        assert len(blocks) > 1  # streamed in blocks, progress after each
    assert json.loads(Path(f"{out}.manifest.json").read_text())["rows"] == manifest.rows


def test_csv_has_the_query_rows(sink: ClickHouseSink, tmp_path: Path) -> None:  # noqa: F811
    events = known_events(seed=4, n=200)
    insert(sink, events, 40, "first")
    out = tmp_path / "events.csv"
    manifest = export(sink, "events", "csv", out)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == manifest.rows == len({e.event.event_id for e, _ in events})
    assert {r["event_id"] for r in rows} == {e.event.event_id for e, _ in events}
    segments = {e.event.event_id: "|".join(s) for e, s in events}
    assert all(r["segments"] == segments[r["event_id"]] for r in rows)


def test_members_without_a_segment_refused(sink: ClickHouseSink, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="segment"):
        export(sink, "members", "csv", tmp_path / "m.csv")
