# ruff: noqa: E501  (panel SQL and the panel list read better unwrapped)
"""Builds `infra/grafana/dashboards/tessera-segments.json`, Grafana's equivalent of the built-in
`/dashboard`, with every KPI's SQL taken from `sinks.kpis.KPI_SQL` (one definition of each KPI) and the
message funnel's from `sinks.kpis.funnel_sql`.

`python -m infra.grafana.dashboard` rewrites the file; a test keeps the file equal to `build()` and
runs each panel's SQL against chDB with the project's DDL, Grafana's macros substituted. Dead letters
and consumer lag are not in ClickHouse (dead letters go to the `events.dlq` topic, lag is each
worker's `/v1/status`): the built-in dashboard shows them, this one has a text panel saying where.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sinks.kpis import KPI_SQL, KPIS, VISITORS, funnel_sql, rollup_source

PATH = Path(__file__).resolve().parent / "dashboards" / "tessera-segments.json"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "tessera-clickhouse"}
DB = "tessera"

_IN_RANGE = "$__timeFilter(minute)"

SIZES_NOW = f"""SELECT toString(segment) AS segment,
       toInt64(uniqExactMerge(entries)) - toInt64(uniqExactMerge(exits)) AS members
FROM {DB}.segment_flow_minute
GROUP BY segment
HAVING members != 0
ORDER BY members DESC"""

SIZES_OVER_TIME = f"""SELECT time, segment, size
FROM
(
    SELECT minute AS time, segment,
           sum(delta) OVER (PARTITION BY segment ORDER BY minute ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
               AS size
    FROM
    (
        SELECT minute, toString(segment) AS segment,
               toInt64(uniqExactMerge(entries)) - toInt64(uniqExactMerge(exits)) AS delta
        FROM {DB}.segment_flow_minute
        WHERE minute <= $__toTime
        GROUP BY segment, minute
    )
)
WHERE time >= toStartOfMinute($__fromTime)
ORDER BY time"""

FLOWS = f"""SELECT minute AS time, uniqExactMerge(entries) AS entries, -toInt64(uniqExactMerge(exits)) AS exits
FROM {DB}.segment_flow_minute
WHERE {_IN_RANGE}
GROUP BY time
ORDER BY time"""

KPI_TABLE = (
    f"SELECT toString(segment) AS segment, {VISITORS} AS visitors_,\n       "
    + ",\n       ".join(f"{KPI_SQL[k]} AS {k}_" for k in KPIS)
    + f"\nFROM {rollup_source(DB)}\nWHERE {_IN_RANGE}\nGROUP BY segment\nORDER BY visitors_ DESC"
)
"""Aliases end in `_`: an alias named like a rollup column would replace it in later expressions."""


def kpi_over_time(kpi: str) -> str:
    return (
        f"SELECT minute AS time, toString(segment) AS segment, {KPI_SQL[kpi]} AS value\n"
        f"FROM {rollup_source(DB)}\nWHERE {_IN_RANGE}\nGROUP BY segment, minute\nORDER BY time"
    )


FUNNEL = funnel_sql(DB, lambda column: f"$__timeFilter({column})")
"""The message funnel of `sinks.kpis.message_funnel`, on the messages decided in the dashboard's range."""

EVENTS = f"""SELECT toStartOfMinute(event_time) AS time, count() AS events
FROM {DB}.events FINAL
WHERE $__timeFilter(event_time)
GROUP BY time
ORDER BY time"""

HEALTH_TEXT = (
    "Dead letters and consumer lag are not in ClickHouse: dead letters go to the `events.dlq` topic, and "
    "each worker reports its lag and dead-letter count at `/v1/status`. The worker's own `/dashboard` "
    "shows both."
)


def _panel(
    pid: int, kind: str, title: str, sql: str | None, grid: tuple[int, int, int, int], **extra: Any
) -> dict[str, Any]:
    x, y, w, h = grid
    panel: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
    }
    if sql is not None:
        query_type = "timeseries" if kind == "timeseries" else "table"
        panel["targets"] = [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "format": 0 if query_type == "timeseries" else 1,
                "queryType": query_type,
                "rawSql": sql,
            }
        ]
    panel.update(extra)
    return panel


def build() -> dict[str, Any]:
    panels = [
        _panel(
            1,
            "bargauge",
            "Segment sizes now (entries − exits)",
            SIZES_NOW,
            (0, 0, 12, 9),
            options={"orientation": "horizontal", "displayMode": "basic"},
        ),
        _panel(2, "timeseries", "Segment sizes over time", SIZES_OVER_TIME, (12, 0, 12, 9)),
        _panel(3, "timeseries", "Entries (up) and exits (down) per minute", FLOWS, (0, 9, 12, 8)),
        _panel(4, "timeseries", "Events per minute", EVENTS, (12, 9, 12, 8)),
        _panel(5, "table", "KPIs per segment (* = all visitors)", KPI_TABLE, (0, 17, 24, 10)),
        _panel(
            6, "timeseries", "Revenue per user per segment", kpi_over_time("revenue_per_user"), (0, 27, 12, 8)
        ),
        _panel(
            7, "timeseries", "Conversion rate per segment", kpi_over_time("conversion_rate"), (12, 27, 12, 8)
        ),
        _panel(
            8,
            "timeseries",
            "Page views per user per segment",
            kpi_over_time("page_views_per_user"),
            (0, 35, 12, 8),
        ),
        _panel(9, "timeseries", "Purchases per segment", kpi_over_time("purchases"), (12, 35, 12, 8)),
        _panel(
            10,
            "table",
            "Message funnel per campaign and variant (uplift against the holdout)",
            FUNNEL,
            (0, 43, 24, 8),
        ),
        _panel(
            11,
            "text",
            "Dead letters and consumer lag",
            None,
            (0, 51, 24, 4),
            options={"mode": "markdown", "content": HEALTH_TEXT},
        ),
    ]
    return {
        "uid": "tessera-segments",
        "title": "Tessera — live segments",
        "description": "Segment sizes and flows, the KPIs per segment against all visitors, messages: the "
        "ClickHouse rollups (the same queries as the worker's /dashboard).",
        "tags": ["tessera", "segments"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "schemaVersion": 39,
        "version": 3,
        "annotations": {"list": []},
        "templating": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
