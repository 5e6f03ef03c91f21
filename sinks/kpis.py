"""The KPI queries: one function per KPI and per view of the segments, over the ClickHouse rollups.

Every reader of segment figures — the dashboard (`/v1/dashboard`), the persona report
(`tessera report`), the exports (`tessera export kpis`), Grafana's panels (the same SQL shapes) and the
tests — goes through this module, against chDB or a ClickHouse server alike (anything with
`database` and `query(sql, parameters)`, such as `sinks.clickhouse.ClickHouseSink`).

The five KPIs of seed 002, per segment, over a time range `[start, end)` in whole minutes, with the
pseudo-segment `*` (every visitor, bots excluded) as the baseline:

| KPI | definition |
|---|---|
| purchases | distinct purchase events made while in the segment |
| conversion_rate | buyers / visitors: the share of the segment's visitors in the range who purchased |
| revenue | the sum of those purchases' values |
| revenue_per_user | revenue / visitors |
| page_views_per_user | distinct page views / visitors |

"While in the segment": an event counts for the segments its visitor was in right after it (the
`segments` column of `events`). Every figure is a distinct count over the range (the rollup keeps
each minute's events as a set of (event, visitor, session, kind, revenue) tuples), so visitors,
buyers and sessions are distinct over the whole range, not sums of per-minute figures. Floats are
rounded to 6 decimals: a Float64 sum depends on the order ClickHouse reads its rows in.

Sizes come from entries and exits (`segment_flow_minute`): the size at the end of a bucket is every
entry minus every exit up to it, so it matches the serving store once every change is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from schemas.analytics import FlowPoint, FunnelRow, Persona, SegmentKpis, TopValue
from sinks.clickhouse import ROLLUP_TABLE

ALL_VISITORS: Final = "*"
"""The rollup's pseudo-segment of every (non-bot) visitor: the KPIs' baseline."""

KPIS: Final = ("purchases", "conversion_rate", "revenue", "revenue_per_user", "page_views_per_user")
"""Seed 002's KPIs, in the order every table shows them."""


class ClickHouseReader(Protocol):
    """What the queries need: the database holding Tessera's tables, and a read query."""

    database: str

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True, slots=True)
class TimeRange:
    """`[start, end)`, both cut down to whole minutes (the rollups' grain), in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def last(cls, span: timedelta, now: datetime | None = None) -> TimeRange:
        """The `span` up to the end of the current minute."""
        end = _minute(now or datetime.now(UTC)) + timedelta(minutes=1)
        return cls(end - span, end)

    @classmethod
    def everything(cls) -> TimeRange:
        return cls(datetime(1970, 1, 1, tzinfo=UTC), datetime(2106, 1, 1, tzinfo=UTC))

    def parameters(self) -> dict[str, int]:
        return {"start": int(_minute(self.start).timestamp()), "end": int(_minute(self.end).timestamp())}


def _minute(value: datetime) -> datetime:
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def _in_range(column: str) -> str:
    """`column` within `TimeRange.parameters()`' `[start, end)` (UTC epoch seconds)."""
    return f"{column} >= toDateTime({{start:UInt32}}, 'UTC') AND {column} < toDateTime({{end:UInt32}}, 'UTC')"


_IN_RANGE = _in_range("minute")


def rollup_source(database: str) -> str:
    """The rollup with one row per stored tuple `i` (event_id, visitor_id, session_id, kind, revenue;
    kind 1: page view, 2: purchase): what every measure below reads (`FROM` this, then `WHERE`)."""
    return f"{database}.{ROLLUP_TABLE} ARRAY JOIN items AS i"


# The measures over the rollup's tuples, named once: every KPI below is an expression over these.
# Distinct counts, so a tuple stored twice (a replayed event before the merge collapses it) counts once.
EVENTS: Final = "uniqExact(i.1)"
VISITORS: Final = "uniqExact(i.2)"
SESSIONS: Final = "uniqExactIf((i.2, assumeNotNull(i.3)), isNotNull(i.3))"
PAGE_VIEWS: Final = "uniqExactIf(i.1, i.4 = 1)"
PURCHASES: Final = "uniqExactIf(i.1, i.4 = 2)"
BUYERS: Final = "uniqExactIf(i.2, i.4 = 2)"
REVENUE: Final = "arraySum(p -> p.2, groupUniqArrayIf((i.1, i.5), i.4 = 2))"

KPI_SQL: Final[dict[str, str]] = {
    "purchases": f"toFloat64({PURCHASES})",
    "conversion_rate": f"if({VISITORS} = 0, 0, {BUYERS} / {VISITORS})",
    "revenue": REVENUE,
    "revenue_per_user": f"if({VISITORS} = 0, 0, {REVENUE} / {VISITORS})",
    "page_views_per_user": f"if({VISITORS} = 0, 0, {PAGE_VIEWS} / {VISITORS})",
}
"""Each KPI as a ClickHouse expression over `rollup_source`, grouped by segment (and time)."""


def _kpi_by_segment(ch: ClickHouseReader, kpi: str, rng: TimeRange) -> dict[str, float]:
    rows = ch.query(
        f"SELECT toString(segment), {KPI_SQL[kpi]} FROM {rollup_source(ch.database)}"
        f" WHERE {_IN_RANGE} GROUP BY segment",
        rng.parameters(),
    )
    return {str(segment): round(float(value), 6) for segment, value in rows}


def purchases(ch: ClickHouseReader, rng: TimeRange) -> dict[str, int]:
    """Segment → purchases made while in it (`*`: all visitors)."""
    return {s: int(v) for s, v in _kpi_by_segment(ch, "purchases", rng).items()}


def conversion_rate(ch: ClickHouseReader, rng: TimeRange) -> dict[str, float]:
    """Segment → buyers / visitors over the range."""
    return _kpi_by_segment(ch, "conversion_rate", rng)


def revenue(ch: ClickHouseReader, rng: TimeRange) -> dict[str, float]:
    """Segment → revenue of the purchases made while in it."""
    return _kpi_by_segment(ch, "revenue", rng)


def revenue_per_user(ch: ClickHouseReader, rng: TimeRange) -> dict[str, float]:
    """Segment → revenue / visitors over the range."""
    return _kpi_by_segment(ch, "revenue_per_user", rng)


def page_views_per_user(ch: ClickHouseReader, rng: TimeRange) -> dict[str, float]:
    """Segment → page views / visitors over the range."""
    return _kpi_by_segment(ch, "page_views_per_user", rng)


def kpi_table(ch: ClickHouseReader, rng: TimeRange) -> list[SegmentKpis]:
    """Every segment with events in the range, the baseline `*` first, then by visitors."""
    # No aliases: an alias named like a rollup column would replace that column in later expressions.
    kpis = ", ".join(KPI_SQL[k] for k in KPIS)
    rows = ch.query(
        f"SELECT toString(segment), {EVENTS}, {VISITORS}, {SESSIONS}, {PAGE_VIEWS}, {BUYERS}, {kpis}"
        f" FROM {rollup_source(ch.database)} WHERE {_IN_RANGE} GROUP BY segment",
        rng.parameters(),
    )
    table = [
        SegmentKpis(
            segment=str(r[0]),
            events=int(r[1]),
            visitors=int(r[2]),
            sessions=int(r[3]),
            page_views=int(r[4]),
            buyers=int(r[5]),
            purchases=int(r[6]),
            conversion_rate=round(float(r[7]), 6),
            revenue=round(float(r[8]), 6),
            revenue_per_user=round(float(r[9]), 6),
            page_views_per_user=round(float(r[10]), 6),
        )
        for r in rows
    ]
    return sorted(table, key=lambda k: (k.segment != ALL_VISITORS, -k.visitors, k.segment))


def kpi_series(
    ch: ClickHouseReader, kpi: str, rng: TimeRange, bucket_minutes: int
) -> dict[str, list[tuple[datetime, float]]]:
    """Segment → (bucket start, the KPI over that bucket) for the buckets with events, oldest first."""
    rows = ch.query(
        f"SELECT toString(segment), toStartOfInterval(minute, toIntervalMinute({{bucket:UInt32}})) AS t,"
        f" {KPI_SQL[kpi]} FROM {rollup_source(ch.database)} WHERE {_IN_RANGE}"
        " GROUP BY segment, t ORDER BY segment, t",
        {**rng.parameters(), "bucket": bucket_minutes},
    )
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for segment, t, value in rows:
        series[str(segment)].append((_utc(t), round(float(value), 6)))
    return dict(series)


# -- sizes and flows ------------------------------------------------------------------------------


def current_sizes(ch: ClickHouseReader) -> dict[str, int]:
    """Segment → entries minus exits over every change kept (the current size)."""
    rows = ch.query(
        f"SELECT toString(segment), toInt64(uniqExactMerge(entries)) - toInt64(uniqExactMerge(exits))"
        f" FROM {ch.database}.segment_flow_minute GROUP BY segment"
    )
    return {str(s): int(n) for s, n in rows}


def segment_flows(ch: ClickHouseReader, rng: TimeRange, bucket_minutes: int) -> dict[str, list[FlowPoint]]:
    """Segment → its buckets in the range with entries or exits, each with the size at its end (every
    change before the range counted in)."""
    params = {**rng.parameters(), "bucket": bucket_minutes}
    before = ch.query(
        f"SELECT toString(segment), toInt64(uniqExactMerge(entries)) - toInt64(uniqExactMerge(exits))"
        f" FROM {ch.database}.segment_flow_minute WHERE minute < toDateTime({{start:UInt32}}, 'UTC')"
        " GROUP BY segment",
        params,
    )
    size = {str(s): int(n) for s, n in before}
    rows = ch.query(
        f"SELECT toString(segment), toStartOfInterval(minute, toIntervalMinute({{bucket:UInt32}})) AS t,"
        " toInt64(uniqExactMerge(entries)), toInt64(uniqExactMerge(exits))"
        f" FROM {ch.database}.segment_flow_minute WHERE {_IN_RANGE} GROUP BY segment, t ORDER BY segment, t",
        params,
    )
    flows: dict[str, list[FlowPoint]] = defaultdict(list)
    for segment, t, entries, exits in rows:
        seg = str(segment)
        size[seg] = size.get(seg, 0) + int(entries) - int(exits)
        flows[seg].append(FlowPoint(start=_utc(t), entries=int(entries), exits=int(exits), size=size[seg]))
    for seg, n in size.items():  # a segment without changes in the range keeps its size
        flows.setdefault(seg, [])
        if not flows[seg]:
            flows[seg].append(FlowPoint(start=_minute(rng.start), entries=0, exits=0, size=n))
    return dict(flows)


# -- the message funnel ---------------------------------------------------------------------------


def funnel_sql(database: str, in_range: Callable[[str], str]) -> str:
    """The message funnel's one query, per campaign and variant (`message_funnel` and Grafana's panel
    run it; `in_range(column)` is the time filter on a message's `event_time`, as each writes it).

    The unit is the message: each message decided in the range (`messages FINAL`) is shown, clicked
    or dismissed when an outcome of its visitor names it (`message_outcomes`, distinct per message)
    and converted when the engine attributed a purchase to it (`conversions FINAL`: the one
    attribution rule, `streams.core.journeys`); its revenue is those purchases' values. Outcomes and
    conversions are read by message id, their tables' leading key. A campaign's holdout records are
    one row (variant ``holdout``); every row's uplift is its conversion rate minus that row's."""
    messages_in_range = f"SELECT message_id FROM {database}.messages WHERE {in_range('event_time')}"
    # Inner aliases carry a prefix: an alias named like a column would replace it in later expressions.
    return f"""SELECT campaign, variant, holdout, sent, holdout_records, visitors, shown, clicked, dismissed,
       converted, revenue, conversion_rate,
       if(holdout, NULL, conversion_rate - holdout_rate) AS uplift,
       if(holdout OR NOT holdout_rate > 0, NULL, uplift / holdout_rate) AS uplift_relative
FROM
(
    SELECT f_campaign AS campaign, f_variant AS variant, f_holdout AS holdout,
           countIf(NOT f_holdout) AS sent, countIf(f_holdout) AS holdout_records,
           uniqExact(f_visitor) AS visitors,
           countIf(f_shown) AS shown, countIf(f_clicked) AS clicked, countIf(f_dismissed) AS dismissed,
           countIf(f_orders > 0) AS converted, sum(f_revenue) AS revenue,
           converted / count() AS conversion_rate,
           max(if(holdout, conversion_rate, NULL)) OVER (PARTITION BY campaign) AS holdout_rate
    FROM
    (
        SELECT m.f_visitor AS f_visitor, m.f_campaign AS f_campaign, m.f_variant AS f_variant,
               m.f_holdout AS f_holdout, o.f_shown AS f_shown, o.f_clicked AS f_clicked,
               o.f_dismissed AS f_dismissed, c.f_orders AS f_orders, c.f_revenue AS f_revenue
        FROM
        (
            SELECT message_id AS f_message, visitor_id AS f_visitor,
                   if(campaign != '', toString(campaign), toString(rule)) AS f_campaign,
                   if(holdout, 'holdout', toString(variant)) AS f_variant, holdout AS f_holdout
            FROM {database}.messages FINAL
            WHERE {in_range("event_time")}
        ) AS m
        LEFT JOIN
        (
            SELECT message_id AS f_message, visitor_id AS f_visitor,
                   max(outcome = 'shown') AS f_shown, max(outcome = 'clicked') AS f_clicked,
                   max(outcome = 'dismissed') AS f_dismissed
            FROM {database}.message_outcomes
            WHERE message_id IN ({messages_in_range})
            GROUP BY message_id, visitor_id
        ) AS o ON o.f_message = m.f_message AND o.f_visitor = m.f_visitor
        LEFT JOIN
        (
            SELECT message_id AS f_message, count() AS f_orders, sum(value) AS f_revenue
            FROM {database}.conversions FINAL
            WHERE message_id IN ({messages_in_range})
            GROUP BY message_id
        ) AS c ON c.f_message = m.f_message
    )
    GROUP BY f_campaign, f_variant, f_holdout
)
ORDER BY campaign, holdout, variant"""


def message_funnel(ch: ClickHouseReader, rng: TimeRange) -> list[FunnelRow]:
    """Per campaign (a message without one: its trigger rule) and variant, the messages decided in
    the range: delivered and holdout records, visitors, shown, clicked, dismissed, converted, revenue,
    conversion rate and uplift against the campaign's holdout (`funnel_sql`). Exact under retried and
    replayed inserts: messages and conversions are read `FINAL`, outcomes as distinct messages."""
    rows = ch.query(funnel_sql(ch.database, _in_range), rng.parameters())
    return [
        FunnelRow(
            campaign=str(campaign),
            variant=str(variant),
            holdout=bool(holdout),
            sent=int(sent),
            holdout_records=int(records),
            visitors=int(visitors),
            shown=int(shown),
            clicked=int(clicked),
            dismissed=int(dismissed),
            converted=int(converted),
            revenue=round(float(revenue), 6),
            conversion_rate=round(float(rate), 6),
            uplift=None if uplift is None else round(float(uplift), 6),
            uplift_relative=None if relative is None else round(float(relative), 6),
        )
        for (
            campaign,
            variant,
            holdout,
            sent,
            records,
            visitors,
            shown,
            clicked,
            dismissed,
            converted,
            revenue,
            rate,
            uplift,
            relative,
        ) in rows
    ]


# -- personas -------------------------------------------------------------------------------------

PROFILE_COLUMNS: Final[dict[str, str]] = {
    "categories": "category",
    "products": "product_id",
    "devices": "device_category",
    "os": "os",
    "regions": "region",
    "cities": "city",
    "traffic_sources": "traffic_source",
}
"""Who a segment is, by the `events` column each breakdown counts distinct visitors over."""


def personas(ch: ClickHouseReader, top: int = 5) -> list[Persona]:
    """Every segment with members, largest first, after the baseline `*` (every visitor seen), over
    all time: size and share, the top values of each `PROFILE_COLUMNS` breakdown, purchases, revenue,
    average order value, recency, frequency and the KPIs."""
    db = ch.database
    sizes = {s: n for s, n in current_sizes(ch).items() if n > 0}
    table = {k.segment: k for k in kpi_table(ch, TimeRange.everything())}
    everyone = table[ALL_VISITORS].visitors if ALL_VISITORS in table else 0
    found: dict[str, dict[str, Any]] = {
        s: {"segment": s, "members": n, "share": round(n / everyone, 6) if everyone else 0.0}
        for s, n in [(ALL_VISITORS, everyone), *sizes.items()]
    }
    for segment, fields in found.items():
        fields["visitors"] = table[segment].visitors if segment in table else 0
        fields["kpis"] = table.get(segment)
        fields["breakdowns"] = {}
    for name, column in PROFILE_COLUMNS.items():
        rows = ch.query(
            f"SELECT toString(segment), toString({column}) AS value, uniqExact(visitor_id) AS n"
            f" FROM {db}.events FINAL ARRAY JOIN arrayPushFront(segments, '*') AS segment"
            f" WHERE NOT is_bot AND value != '' GROUP BY segment, value"
            f" ORDER BY segment, n DESC, value LIMIT {int(top)} BY segment"
        )
        for segment, value, n in rows:
            if str(segment) in found:
                found[str(segment)]["breakdowns"].setdefault(name, []).append(
                    TopValue(value=str(value), visitors=int(n))
                )
    rows = ch.query(
        f"""
        SELECT segment, sum(purchases), sum(revenue), quantileExact(0.5)(recency), avg(sessions)
        FROM (
            SELECT toString(segment) AS segment, visitor_id,
                   countIf(type = 'purchase') AS purchases, sumIf(revenue, type = 'purchase') AS revenue,
                   dateDiff('second', max(event_time), (SELECT max(event_time) FROM {db}.events FINAL))
                       / 86400 AS recency,
                   uniqExactIf(session_id, session_id IS NOT NULL) AS sessions
            FROM {db}.events FINAL ARRAY JOIN arrayPushFront(segments, '*') AS segment
            WHERE NOT is_bot
            GROUP BY segment, visitor_id
        )
        GROUP BY segment
        """
    )
    for segment, bought, spent, recency, sessions in rows:
        persona = found.get(str(segment))
        if persona is None:
            continue
        persona["purchases"] = int(bought)
        persona["revenue"] = round(float(spent), 6)
        persona["average_order_value"] = round(float(spent) / int(bought), 6) if bought else 0.0
        persona["recency_days"] = round(float(recency), 3)
        persona["frequency_sessions"] = round(float(sessions), 3)
    baseline = Persona(**found.pop(ALL_VISITORS))
    ordered = sorted((Persona(**f) for f in found.values()), key=lambda p: (-p.members, p.segment))
    return [baseline, *ordered]


# -- exports --------------------------------------------------------------------------------------


def members_sql(database: str) -> str:
    """Visitors in `{segment:String}` now: their latest change is an entry (over `segment_changes FINAL`)."""
    return (
        "SELECT visitor_id, entered_at FROM ("
        " SELECT visitor_id, argMax(transition, (event_time, change_id)) AS last,"
        "        maxIf(event_time, transition = 'entered') AS entered_at"
        f" FROM {database}.segment_changes FINAL WHERE segment = {{segment:String}} GROUP BY visitor_id)"
        " WHERE last = 'entered' ORDER BY visitor_id"
    )


def events_sql(database: str) -> str:
    """Enriched events of `[{start:UInt32}, {end:UInt32})`, deduplicated, in event time order."""
    return (
        f"SELECT * FROM {database}.events FINAL WHERE {_in_range('event_time')} ORDER BY event_time, event_id"
    )


def kpi_export_sql(database: str) -> str:
    """The KPI table per segment and minute of the range (one row per minute with events)."""
    # Inner aliases carry a prefix: one named like a rollup column would replace it in later expressions.
    inner = ", ".join(f"{KPI_SQL[k]} AS k_{k}" for k in KPIS)
    outer = ", ".join(f"k_{k} AS {k}" for k in KPIS)
    return (
        "SELECT k_minute AS minute, k_segment AS segment, k_events AS events, k_visitors AS visitors,"
        f" {outer} FROM (SELECT minute AS k_minute, toString(segment) AS k_segment,"
        f" {EVENTS} AS k_events, {VISITORS} AS k_visitors, {inner}"
        f" FROM {rollup_source(database)} WHERE {_IN_RANGE} GROUP BY segment, minute)"
        " ORDER BY minute, segment"
    )


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    raise TypeError(f"not a datetime: {value!r}")
