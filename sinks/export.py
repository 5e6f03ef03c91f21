"""Exports for analysts and agencies: a segment's members, the KPI table per minute and segment, and
the enriched events of a time range, as CSV or Parquet, streamed in ClickHouse's blocks (memory
stays at one block whatever the size), with a manifest beside the file (`schemas.analytics.ExportManifest`).

The queries are `sinks.kpis`' (`members_sql`, `kpi_export_sql`, `events_sql`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from schemas.analytics import ExportManifest
from sinks import kpis
from sinks.clickhouse import ClickHouseSink

log = structlog.get_logger(__name__)

Kind = Literal["members", "kpis", "events"]
Format = Literal["csv", "parquet"]


def export_query(
    database: str, kind: Kind, segment: str | None, rng: kpis.TimeRange
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of one export."""
    if kind == "members":
        if not segment:
            raise ValueError("a members export needs a segment")
        return kpis.members_sql(database), {"segment": segment}
    if kind == "kpis":
        return kpis.kpi_export_sql(database), rng.parameters()
    return kpis.events_sql(database), rng.parameters()


def _csv_ready(batch: Any) -> Any:
    """The batch with dictionary columns decoded and list columns joined with `|` (CSV has neither)."""
    import pyarrow as pa

    columns = []
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            # In Python, one block at a time: a list of dictionary-encoded strings has no arrow cast.
            column = pa.array(
                ["|".join(map(str, v)) if v is not None else None for v in column.to_pylist()], pa.string()
            )
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def export(
    sink: ClickHouseSink,
    kind: Kind,
    fmt: Format,
    out: Path,
    *,
    segment: str | None = None,
    rng: kpis.TimeRange | None = None,
    block_rows: int = 65_536,
    progress: Callable[[int], None] | None = None,
) -> ExportManifest:
    """Write one export to `out` and its manifest to `<out>.manifest.json`; `progress(rows)` after
    each block."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = rng or kpis.TimeRange.everything()
    sql, parameters = export_query(sink.database, kind, segment, rng)
    started = datetime.now(UTC)
    rows = 0
    writer: Any = None
    schema: Any = None
    try:
        with sink.arrow_batches(sql, parameters, block_rows) as batches:
            for batch in batches:
                if fmt == "csv":
                    batch = _csv_ready(batch)
                if writer is None:
                    schema = batch.schema
                    writer = (
                        pq.ParquetWriter(out, schema) if fmt == "parquet" else pacsv.CSVWriter(out, schema)
                    )
                writer.write_batch(batch)
                rows += batch.num_rows
                if progress is not None:
                    progress(rows)
        if writer is None:  # no rows: the file still has the columns
            schema = sink.arrow_schema(sql, parameters)
            if fmt == "parquet":
                writer = pq.ParquetWriter(out, schema)
            else:
                import pyarrow as pa

                schema = _csv_ready(pa.RecordBatch.from_pylist([], schema=schema)).schema
                writer = pacsv.CSVWriter(out, schema)
    finally:
        if writer is not None:
            writer.close()
    manifest = ExportManifest(
        kind=kind,
        format=fmt,
        file=out.name,
        rows=rows,
        columns=list(schema.names),
        query=sql,
        parameters={k: v for k, v in parameters.items()},
        started_at=started,
        finished_at=datetime.now(UTC),
    )
    Path(f"{out}.manifest.json").write_text(manifest.model_dump_json(indent=2))
    log.info("export.written", kind=kind, format=fmt, file=str(out), rows=rows)
    return manifest
