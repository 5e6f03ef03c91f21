"""Every Grafana panel's SQL runs against chDB with the project's DDL (Grafana's macros substituted),
on data inserted twice with other batch cuts; the KPI table panel equals `sinks.kpis.kpi_table`, the
funnel panel `sinks.kpis.message_funnel`, and the dashboard file is what `infra.grafana.dashboard`
builds."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest

from infra.grafana import dashboard
from sinks import kpis
from sinks.clickhouse import ClickHouseSink
from tests.integration.test_clickhouse_sink import BASE
from tests.integration.test_kpis import (  # noqa: F401
    chdb_path,
    funnel_set,
    insert,
    insert_funnel,
    known_events,
    make_changes,
    sink,
)

pytestmark = pytest.mark.timeout(180)


def grafana_macros(sql: str, database: str, start: datetime, end: datetime) -> str:
    """`sql` as Grafana's ClickHouse plugin sends it: its time macros replaced, on `database`."""
    since, until = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m[1]} >= toDateTime({since}, 'UTC') AND {m[1]} <= toDateTime({until}, 'UTC')",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({since}, 'UTC')").replace(
        "$__toTime", f"toDateTime({until}, 'UTC')"
    )
    assert "$__" not in sql, sql
    return re.sub(r"\btessera\.", f"{database}.", sql)


def test_dashboard_file_is_built_from_the_kpi_module() -> None:
    assert dashboard.PATH.read_text() == dashboard.render(), "run `python -m infra.grafana.dashboard`"


def test_every_panel_runs_and_the_kpi_table_matches(sink: ClickHouseSink) -> None:  # noqa: F811
    events = known_events(seed=12, n=400)
    insert(sink, events, 50, "first", changes=make_changes())
    insert(sink, events[60:], 29, "replay", changes=make_changes()[3:])
    messages, conversions, outcomes = funnel_set()
    insert_funnel(sink, 13, "first-funnel", messages, conversions, outcomes)
    insert_funnel(sink, 19, "replay-funnel", messages[5:], conversions[2:], outcomes[9:])
    start, end = BASE - timedelta(minutes=1), BASE + timedelta(minutes=30)
    panels = json.loads(dashboard.PATH.read_text())["panels"]
    ran = 0
    for panel in panels:
        for target in panel.get("targets", []):
            rows = sink.query(grafana_macros(target["rawSql"], sink.database, start, end))
            assert rows, panel["title"]
            ran += 1
    assert ran == sum(1 for p in panels if p.get("targets"))

    (table_panel,) = [p for p in panels if p["title"].startswith("KPIs per segment")]
    rows = sink.query(grafana_macros(table_panel["targets"][0]["rawSql"], sink.database, start, end))
    expected = {k.segment: k for k in kpis.kpi_table(sink, kpis.TimeRange(start, end + timedelta(minutes=1)))}
    assert {r[0] for r in rows} == set(expected)
    for segment, visitors, *values in rows:
        k = expected[segment]
        assert visitors == k.visitors
        assert values == pytest.approx([getattr(k, name) for name in kpis.KPIS], abs=1e-6)

    (sizes_panel,) = [p for p in panels if p["title"].startswith("Segment sizes now")]
    sizes = dict(sink.query(grafana_macros(sizes_panel["targets"][0]["rawSql"], sink.database, start, end)))
    assert sizes == {s: n for s, n in kpis.current_sizes(sink).items() if n}

    (funnel_panel,) = [p for p in panels if p["title"].startswith("Message funnel")]
    rows = sink.query(grafana_macros(funnel_panel["targets"][0]["rawSql"], sink.database, start, end))
    funnel = kpis.message_funnel(sink, kpis.TimeRange(start, end))  # no message at `end` itself
    assert len(funnel) == len(rows) >= 4 and any(row.holdout for row in funnel)
    fields = list(type(funnel[0]).model_fields)
    for row, expected_row in zip(rows, funnel, strict=True):
        got = dict(zip(fields, row, strict=True))
        for name, value in expected_row.model_dump().items():
            assert got[name] == (value if value is None else pytest.approx(value, abs=1e-6)), name
