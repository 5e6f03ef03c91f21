"""ClickHouse analytics sink: events, segment changes, messages, conversions, message outcomes;
per-minute KPIs per segment.

One `write(batch)` makes one insert per table. Each insert carries
`insert_deduplication_token = "<batch token>:<table>"`, so a batch retried after a failed
acknowledgement is dropped by ClickHouse at insert time. A replay cut into other batches (other
tokens) lands twice on disk but never counts twice: the tables are ReplacingMergeTree keyed by
the row's id and every counting reader (the KPI view, `segment_report`, `totals`, the funnel)
reads `FINAL` or counts distinct ids.
The schema and the reasoning behind each key live in `infra/clickhouse/ddl.sql`.

`write` is synchronous; the worker calls it through `asyncio.to_thread`. One lock serialises every
call on the client, so a dashboard query from the event loop's thread and an insert from a worker
thread never interleave on the (embedded chDB or HTTP) connection.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from schemas.changes import SegmentChange
from schemas.enriched import EnrichedEvent
from schemas.events import EventType
from schemas.messages import Conversion, Message
from schemas.onsite import OUTCOME_NAMES

log = structlog.get_logger(__name__)

DDL_PATH = Path(__file__).resolve().parent.parent / "infra" / "clickhouse" / "ddl.sql"
"""The schema file; its statements name the database `tessera` (substituted when configured)."""

DDL_DATABASE = "tessera"

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "visitor_id",
    "user_id",
    "session_id",
    "event_time",
    "received_at",
    "type",
    "page_url",
    "page_path",
    "referrer",
    "product_id",
    "category",
    "order_id",
    "revenue",
    "currency",
    "coupon",
    "items",
    "device_category",
    "os",
    "browser",
    "country",
    "region",
    "city",
    "lat",
    "lon",
    "traffic_source",
    "traffic_name",
    "traffic_keyword",
    "utm_campaign",
    "in_app_browser",
    "time_zone",
    "segments",
    "partition",
    "offset",
)

CHANGE_COLUMNS: tuple[str, ...] = (
    "change_id",
    "visitor_id",
    "segment",
    "transition",
    "event_time",
    "processed_at",
    "definition_version",
    "reason",
    "trigger_event_id",
    "attributes",
)

MESSAGE_COLUMNS: tuple[str, ...] = (
    "message_id",
    "visitor_id",
    "kind",
    "channel",
    "rule",
    "segment",
    "event_time",
    "expires_at",
    "payload",
    "campaign",
    "variant",
    "holdout",
    "journey",
    "step",
    "cost",
)

CONVERSION_COLUMNS: tuple[str, ...] = (
    "message_id",
    "order_id",
    "visitor_id",
    "campaign",
    "variant",
    "holdout",
    "journey",
    "step",
    "rule",
    "message_time",
    "event_time",
    "value",
    "currency",
)

OUTCOME_COLUMNS: tuple[str, ...] = (
    "event_id",
    "message_id",
    "visitor_id",
    "outcome",
    "event_time",
    "display",
)


@dataclass(slots=True)
class AnalyticsRows:
    """ClickHouse rows, per table, each a tuple in that table's column order.

    The checkpoint builds them when a batch is handed to it (`analytics_rows`), not at the
    insert: the batch's event objects (≈ 20 objects under the cyclic GC per event, pydantic
    models and their sets and dicts) are then freed at once instead of living until the insert,
    where ≈ 38k pending events made each young-generation collection scan ≈ 0.8 million objects
    (300 ms a pass, measured in the bench's worker). A row of plain values is one object.
    """

    events: list[tuple[Any, ...]] = field(default_factory=list)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    conversions: list[tuple[Any, ...]] = field(default_factory=list)
    """Purchases the core attributed to a message (`BatchResult.conversions`)."""
    outcomes: list[tuple[Any, ...]] = field(default_factory=list)
    """`message_outcomes`: picked out of the events' custom events (`outcome_rows`)."""

    def extend(self, other: AnalyticsRows) -> None:
        self.events += other.events
        self.changes += other.changes
        self.messages += other.messages
        self.conversions += other.conversions
        self.outcomes += other.outcomes

    def __bool__(self) -> bool:
        return bool(self.events or self.changes or self.messages or self.conversions or self.outcomes)


def analytics_rows(
    events: Sequence[tuple[EnrichedEvent, Sequence[str]]] = (),
    changes: Iterable[SegmentChange] = (),
    messages: Iterable[Message] = (),
    conversions: Iterable[Conversion] = (),
) -> AnalyticsRows:
    """The rows of `events` (each enriched event with the visitor's full segment set right after
    it), of the message outcomes among them, and of `changes`, `messages` and `conversions`."""
    custom: list[EnrichedEvent] = []
    return AnalyticsRows(
        events=event_rows(events, custom) if events else [],
        changes=[change_row(c) for c in changes],
        messages=[message_row(m) for m in messages],
        conversions=[conversion_row(c) for c in conversions],
        outcomes=outcome_rows(custom) if custom else [],
    )


@dataclass(slots=True)
class AnalyticsBatch:
    """What one checkpoint adds to ClickHouse.

    `token` must identify the batch's content deterministically (e.g. topic, partition and the
    offset range it covers): a retry with the same token is dropped at insert, first write wins.
    """

    token: str
    rows: AnalyticsRows = field(default_factory=AnalyticsRows)

    @classmethod
    def of(
        cls,
        token: str,
        events: Sequence[tuple[EnrichedEvent, Sequence[str]]] = (),
        changes: Iterable[SegmentChange] = (),
        messages: Iterable[Message] = (),
        conversions: Iterable[Conversion] = (),
    ) -> AnalyticsBatch:
        """A batch of these objects' rows (`analytics_rows`)."""
        return cls(token, analytics_rows(events, changes, messages, conversions))


@dataclass(frozen=True, slots=True)
class SegmentReportRow:
    segment: str
    members: int
    """Visitors currently in the segment: entered minus exited over deduplicated changes."""
    events: int
    """Events whose visitor was in the segment right after the event."""
    visitors: int
    """Distinct visitors behind those events."""
    purchases: int
    revenue: float


class AnalyticsSink(Protocol):
    """What the worker needs from the analytics store (tests pass a fake)."""

    def write(self, batch: AnalyticsBatch) -> None: ...


# -- row building ---------------------------------------------------------------------------------
# Runs once per event: attributes are read directly (no model_dump), payload fields are picked
# by a per-type function, datetimes become epoch milliseconds here (exact integer arithmetic, naive
# values taken as UTC) so the driver writes them without per-value conversion.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)

# product_id, category, order_id, revenue, currency, coupon, items
_Payload = tuple[str, str, str, float, str, str, int]
_NO_PAYLOAD: _Payload = ("", "", "", 0.0, "", "", 0)


def _ms(value: datetime) -> int:
    if value.tzinfo is None:
        return (value - _EPOCH_NAIVE) // _MS
    return (value - _EPOCH) // _MS


def _ms_or_none(value: datetime | None) -> int | None:
    return None if value is None else _ms(value)


def _p_category_view(p: Any) -> _Payload:
    return ("", p.category, "", 0.0, "", "", 0)


def _p_product_view(p: Any) -> _Payload:
    return (p.product_id, p.category or "", "", 0.0, p.currency, "", 0)


def _p_cart_view(p: Any) -> _Payload:
    return ("", "", "", 0.0, "", "", p.items or 0)


def _p_add_to_cart(p: Any) -> _Payload:
    return (p.product_id, p.category or "", "", 0.0, p.currency, "", p.quantity)


def _p_remove_from_cart(p: Any) -> _Payload:
    return (p.product_id, "", "", 0.0, "", "", p.quantity)


def _p_checkout(p: Any) -> _Payload:
    return ("", "", "", 0.0, p.currency, "", 0)


def _p_purchase(p: Any) -> _Payload:
    units = 0
    for item in p.items:
        units += item.quantity
    return ("", "", p.order_id, p.value, p.currency, p.coupon or "", units)


def _p_coupon_applied(p: Any) -> _Payload:
    return ("", "", "", 0.0, "", p.coupon, 0)


def _p_none(p: Any) -> _Payload:
    return _NO_PAYLOAD


_PAYLOAD: dict[str, Callable[[Any], _Payload]] = {
    "category_view": _p_category_view,
    "product_view": _p_product_view,
    "cart_view": _p_cart_view,
    "add_to_cart": _p_add_to_cart,
    "remove_from_cart": _p_remove_from_cart,
    "checkout": _p_checkout,
    "purchase": _p_purchase,
    "coupon_applied": _p_coupon_applied,
}
"""Per event type, the payload fields the `events` table keeps; other types keep none.
`revenue` is the purchase value (after discounts); `items` counts units (purchase: sum of
quantities; cart view: items in cart; add/remove: quantity)."""

_BY_TYPE: dict[str, tuple[str, Callable[[Any], _Payload]]] = {
    t.value: (t.value, _PAYLOAD.get(t.value, _p_none)) for t in EventType
}
"""Event type value → (column value, payload extractor), looked up by the member's `_value_`:
hashing the enum member itself runs `Enum.__hash__` in Python (0.9 µs per row)."""

_TYPE_AT = EVENT_COLUMNS.index("type")
_CUSTOM_KIND = _BY_TYPE[EventType.custom.value][0]
"""The `type` column's value of a custom event: the very object every custom row holds."""


def event_rows(
    events: Sequence[tuple[EnrichedEvent, Sequence[str]]], custom: list[EnrichedEvent] | None = None
) -> list[tuple[Any, ...]]:
    """`event_row` of each; a batch's events share one `received_at` object, converted once.

    With `custom`, the ``custom`` events among them are appended to it (`outcome_rows` reads those):
    told by the type of each row just built, one identity test, where a second pass over the batch's
    events would cost ≈ 0.6 µs per event (measured: their objects are no longer in the CPU's cache)."""
    rows: list[tuple[Any, ...]] = []
    received_at: datetime | None = None
    received_ms = 0
    for enriched, segments in events:
        if enriched.received_at is not received_at:
            received_at = enriched.received_at
            received_ms = _ms(received_at)
        row = event_row(enriched, segments, received_ms)
        rows.append(row)
        if row[_TYPE_AT] is _CUSTOM_KIND and custom is not None:
            custom.append(enriched)
    return rows


def event_row(
    enriched: EnrichedEvent, segments: Sequence[str], received_ms: int | None = None
) -> tuple[Any, ...]:
    """One `events` row in `EVENT_COLUMNS` order (`received_ms`: `received_at`, converted)."""
    ev = enriched.event
    ctx = ev.context
    device = enriched.device
    geo = enriched.geo
    traffic = enriched.traffic
    kind, extract = _BY_TYPE[ev.type._value_]
    payload = extract(ev.properties)
    utm = ctx.utm
    campaign = traffic.campaign or (utm.campaign if utm is not None else None) or ""
    return (
        ev.event_id,
        ev.visitor_id,
        ev.user_id,
        ev.session_id,
        _ms(ev.event_time),
        _ms(enriched.received_at) if received_ms is None else received_ms,
        kind,
        ctx.page_url or "",
        ctx.page_path or "",
        ctx.referrer or "",
        *payload,
        device.category,
        device.os or "",
        device.browser or "",
        geo.country or "",
        geo.region or "",
        geo.city or "",
        geo.lat,
        geo.lon,
        traffic.source,
        traffic.name or "",
        traffic.keyword or "",
        campaign,
        device.in_app_browser or "",
        geo.time_zone or "",
        tuple(segments),  # the core's tuple itself (tuple() does not copy one): no new object per row
        enriched.partition,
        enriched.offset,
    )


def change_row(change: SegmentChange) -> tuple[Any, ...]:
    """One `segment_changes` row in `CHANGE_COLUMNS` order."""
    return (
        change.change_id,
        change.visitor_id,
        change.segment,
        change.transition._value_,
        _ms(change.event_time),
        _ms(change.processed_at),
        change.definition_version,
        change.reason,
        change.trigger_event_id or "",
        orjson.dumps(change.attributes, option=orjson.OPT_SORT_KEYS).decode(),
    )


def message_row(message: Message) -> tuple[Any, ...]:
    """One `messages` row in `MESSAGE_COLUMNS` order."""
    return (
        message.message_id,
        message.visitor_id,
        message.kind._value_,
        message.channel,
        message.rule,
        message.segment or "",
        _ms(message.event_time),
        _ms_or_none(message.expires_at),
        orjson.dumps(message.payload, option=orjson.OPT_SORT_KEYS, default=str).decode(),
        message.campaign or "",
        message.variant or "",
        message.holdout,
        message.journey or "",
        message.step or "",
        message.cost,
    )


def conversion_row(conversion: Conversion) -> tuple[Any, ...]:
    """One `conversions` row in `CONVERSION_COLUMNS` order."""
    return (
        conversion.message_id,
        conversion.order_id,
        conversion.visitor_id,
        conversion.campaign or "",
        conversion.variant or "",
        conversion.holdout,
        conversion.journey or "",
        conversion.step or "",
        conversion.rule,
        _ms(conversion.message_time),
        _ms(conversion.event_time),
        conversion.value,
        conversion.currency,
    )


def outcome_rows(events: Iterable[EnrichedEvent]) -> list[tuple[Any, ...]]:
    """One `message_outcomes` row in `OUTCOME_COLUMNS` order per outcome event among `events`: a
    ``custom`` event named in `schemas.onsite.OUTCOME_NAMES` whose properties carry a `message_id`
    string (the collector validates it; an event sent in Tessera's own format may lack one, and
    is then only an event). `analytics_rows` passes the custom events `event_rows` set aside."""
    rows: list[tuple[Any, ...]] = []
    for enriched in events:
        ev = enriched.event
        if ev.type is not EventType.custom:
            continue
        props: Any = ev.properties
        outcome = OUTCOME_NAMES.get(props.name)
        message_id = props.message_id
        if outcome is None or message_id is None:
            continue
        display = props.properties.get("display")
        rows.append(
            (
                ev.event_id,
                message_id,
                ev.visitor_id,
                outcome._value_,
                _ms(ev.event_time),
                display if isinstance(display, str) else "",
            )
        )
    return rows


def columns(rows: list[tuple[Any, ...]]) -> list[Sequence[Any]]:
    """Rows to column-oriented data (the transpose runs in C)."""
    return list(zip(*rows, strict=True))


# -- DDL ------------------------------------------------------------------------------------------


def ddl_statements(database: str = DDL_DATABASE, path: Path = DDL_PATH) -> list[str]:
    """The statements of `ddl.sql`, comment lines dropped, database name substituted."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ValueError(f"invalid ClickHouse database name: {database!r}")
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")]
    text = re.sub(rf"\b{DDL_DATABASE}\b", database, "\n".join(lines))
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


ROLLUP_TABLE = "segment_rollup_minute"


def rollup_backfill(statements: Sequence[str], database: str) -> str:
    """`INSERT INTO` the rollup the SELECT of its view, over every event already stored (safe to
    repeat or to overlap the view's own inserts: the rollup holds sets)."""
    head = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{ROLLUP_TABLE}_mv"
    (view,) = [stmt for stmt in statements if stmt.startswith(head)]
    select = view[view.index("SELECT") :]
    return f"INSERT INTO {database}.{ROLLUP_TABLE} {select}"


# -- the sink -------------------------------------------------------------------------------------


RETENTION_COLUMNS: dict[str, str] = {
    "events": "event_time",
    "segment_changes": "event_time",
    "messages": "event_time",
    "conversions": "message_time",
    "message_outcomes": "event_time",
    ROLLUP_TABLE: "minute",
    "segment_flow_minute": "minute",
}
"""Tables with a configurable TTL (`Settings.clickhouse_retention`) → the time column it counts from."""


class ClickHouseSink:
    """Writes analytics batches to ClickHouse (a server over HTTP, or chDB in-process).

    `dsn`: `http://user:pass@host:8123` or `chdb:///abs/path`. chDB hosts one engine per process
    and its data folder belongs to one process: in the embedded mode keep one sink per worker
    process and run dashboard queries through it (`segment_report`, `totals`, `query`).
    """

    def __init__(self, dsn: str, database: str = "tessera") -> None:
        # Imported here: clickhouse-connect (and chDB, numpy, pyarrow behind it) load in the thread
        # that opens the sink during the worker's group join, not with the engine's modules.
        import clickhouse_connect

        _skip_pandas_probe()
        self.database = database
        self._lock = threading.Lock()
        # The database may not exist yet (apply_ddl creates it): connect to `default`, and qualify
        # every table name instead.
        self._client = clickhouse_connect.get_client(dsn=dsn, database="default")
        self._events_table = f"{database}.events"
        self._changes_table = f"{database}.segment_changes"
        self._messages_table = f"{database}.messages"
        self._conversions_table = f"{database}.conversions"
        self._outcomes_table = f"{database}.message_outcomes"
        self._kpi_view = f"{database}.segment_kpis_minute"
        self._column_types: dict[tuple[str, tuple[str, ...]], Sequence[Any]] = {}
        """(table, insert columns) → their types, asked once: without them every insert asks the
        server first (a DESCRIBE: ≈ 1 ms per insert in chDB, a round trip over HTTP)."""
        log.info("clickhouse.connected", dsn=_redact(dsn), database=database)

    # -- schema -----------------------------------------------------------------------------------

    def apply_ddl(self) -> None:
        statements = ddl_statements(self.database)
        with self._lock:
            self._column_types.clear()
            rebuilt = self._drop_rollup_of_states()
            for stmt in statements:
                self._client.command(stmt)
            if rebuilt:
                self._client.command(rollup_backfill(statements, self.database))
                log.info("clickhouse.rollup_migrated", database=self.database, table=ROLLUP_TABLE)
        log.info("clickhouse.ddl_applied", database=self.database, statements=len(statements))

    def _drop_rollup_of_states(self) -> bool:
        """Drop the rollup's first form (one uniqExact state per measure, told by its `events`
        column) and its view, so that the DDL makes the tuple-set form; True if it did. The new
        table is filled from `events` afterwards (`rollup_backfill`)."""
        (found,) = self._client.query(
            "SELECT count() FROM system.columns WHERE database = {db:String} AND table = {t:String}"
            " AND name = 'events'",
            parameters={"db": self.database, "t": ROLLUP_TABLE},
        ).result_rows[0]
        if not found:
            return False
        self._client.command(f"DROP VIEW IF EXISTS {self.database}.{ROLLUP_TABLE}_mv")
        self._client.command(f"DROP TABLE IF EXISTS {self.database}.{ROLLUP_TABLE}")
        return True

    def apply_retention(self, days_by_table: Mapping[str, int]) -> None:
        """Set each table's TTL to its days (`RETENTION_COLUMNS` names the time column), or remove it
        for 0. Existing parts are not rewritten at once (`materialize_ttl_after_modify = 0`): rows past
        the TTL go at the parts' next merges, so a restart with a new TTL costs no mutation."""
        with self._lock:
            for table, days in days_by_table.items():
                column = RETENTION_COLUMNS[table]
                name = f"{self.database}.{table}"
                if days > 0:
                    self._client.command(
                        f"ALTER TABLE {name} MODIFY TTL toDateTime({column}) + INTERVAL {int(days)} DAY"
                        " SETTINGS materialize_ttl_after_modify = 0"
                    )
                elif self._has_ttl(table):
                    self._client.command(f"ALTER TABLE {name} REMOVE TTL")
        log.info("clickhouse.retention_applied", database=self.database, days=dict(days_by_table))

    def _has_ttl(self, table: str) -> bool:
        (create,) = self._client.query(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": self.database, "t": table},
        ).result_rows[0]
        return " TTL " in str(create)

    # -- writes -----------------------------------------------------------------------------------

    def write(self, batch: AnalyticsBatch) -> None:
        """One insert per non-empty table, each with its own deduplication token."""
        rows = batch.rows
        inserts = [
            (table, column_names, table_rows)
            for table, column_names, table_rows in (
                (self._events_table, EVENT_COLUMNS, rows.events),
                (self._changes_table, CHANGE_COLUMNS, rows.changes),
                (self._messages_table, MESSAGE_COLUMNS, rows.messages),
                (self._conversions_table, CONVERSION_COLUMNS, rows.conversions),
                (self._outcomes_table, OUTCOME_COLUMNS, rows.outcomes),
            )
            if table_rows
        ]
        started = time.perf_counter()
        with self._lock:
            for table, column_names, table_rows in inserts:
                self._client.insert(
                    table,
                    columns(table_rows),
                    column_names=list(column_names),
                    column_types=self._types_of(table, column_names),
                    column_oriented=True,
                    settings={"insert_deduplication_token": f"{batch.token}:{table.rsplit('.', 1)[1]}"},
                )
        log.debug(
            "clickhouse.batch_written",
            token=batch.token,
            events=len(rows.events),
            changes=len(rows.changes),
            messages=len(rows.messages),
            conversions=len(rows.conversions),
            outcomes=len(rows.outcomes),
            insert_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _types_of(self, table: str, column_names: tuple[str, ...]) -> Sequence[Any]:
        """The types of `column_names` in `table` (asked on the first insert; `apply_ddl` forgets
        them). Call with the lock held."""
        key = (table, column_names)
        types = self._column_types.get(key)
        if types is None:
            context = self._client.create_insert_context(table, list(column_names), column_oriented=True)
            types = self._column_types[key] = context.column_types
        return types

    # -- reads ------------------------------------------------------------------------------------

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a read query (for dashboards and tests); serialised with the writes."""
        with self._lock:
            return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]

    @contextmanager
    def arrow_batches(
        self, sql: str, parameters: dict[str, Any] | None = None, block_rows: int = 65_536
    ) -> Iterator[Iterator[Any]]:
        """The rows of a read query as pyarrow RecordBatches of at most about `block_rows`, streamed
        (ClickHouse sends block by block; memory stays at one block). Holds the lock until closed."""
        with (
            self._lock,
            self._client.query_arrow_stream(
                sql, parameters=parameters, settings={"max_block_size": block_rows}
            ) as stream,
        ):
            yield iter(stream)

    def arrow_schema(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """The pyarrow schema of a read query's rows (it runs with `LIMIT 0`)."""
        with self._lock:
            return self._client.query_arrow(f"SELECT * FROM ({sql}) LIMIT 0", parameters=parameters).schema

    def command(self, sql: str) -> None:
        """Run one statement that returns no rows (DDL, ALTER, ...); serialised with the writes."""
        with self._lock:
            self._client.command(sql)

    def segment_report(self) -> list[SegmentReportRow]:
        """Per segment: current members and the KPIs of events made while in it, by members desc.

        Revenue is rounded to 6 decimals: a Float64 sum depends on the order rows are read in."""
        db = self.database
        sql = f"""
            SELECT segment, members, events, visitors, purchases, revenue
            FROM (
                SELECT toString(segment) AS segment,
                       toInt64(countIf(transition = 'entered')) - toInt64(countIf(transition = 'exited'))
                           AS members
                FROM {db}.segment_changes FINAL
                GROUP BY segment
            ) AS m
            FULL OUTER JOIN (
                SELECT toString(segment) AS segment,
                       toUInt64(sum(events)) AS events,
                       toUInt64(uniqExactMerge(visitors_state)) AS visitors,
                       toUInt64(sum(purchases)) AS purchases,
                       toFloat64(sum(revenue)) AS revenue
                FROM {db}.segment_kpis_minute
                GROUP BY segment
            ) AS k USING (segment)
            ORDER BY members DESC, segment ASC
        """
        return [
            SegmentReportRow(
                segment=str(seg),
                members=int(members),
                events=int(events),
                visitors=int(visitors),
                purchases=int(purchases),
                revenue=round(float(revenue), 6),
            )
            for seg, members, events, visitors, purchases, revenue in self.query(sql)
        ]

    def totals(self) -> dict[str, Any]:
        """Counts over deduplicated events; `events == distinct_event_ids` unless an id arrived twice
        with different timestamps. `rows_stored` counts rows on disk before deduplication."""
        db = self.database
        ((events, distinct, purchases, revenue),) = self.query(
            f"SELECT count(), uniqExact(event_id), countIf(type = 'purchase'), sum(revenue)"
            f" FROM {db}.events FINAL"
        )
        ((stored,),) = self.query(f"SELECT count() FROM {db}.events")
        return {
            "events": int(events),
            "distinct_event_ids": int(distinct),
            "purchases": int(purchases),
            "revenue": round(float(revenue), 6),
            "rows_stored": int(stored),
        }

    def close(self) -> None:
        with self._lock:
            self._client.close()
        log.info("clickhouse.closed", database=self.database)


def _skip_pandas_probe() -> None:
    """Keep clickhouse-connect from importing pandas (≈ 0.3 s, ≈ 70 MB RSS, measured) at the first
    insert, where it only tests `isinstance(data, DataFrame)`: this sink inserts lists of columns
    and reads rows. Its lazy `pd` is resolved to None, as when pandas is not installed; left alone
    if pandas is loaded already or clickhouse-connect has resolved it."""
    from clickhouse_connect.driver import options

    if "pandas" not in sys.modules and "pd" not in vars(options):
        options.pd = None
        options.pd_time_test = None


def _redact(dsn: str) -> str:
    """The DSN without a password, for logs."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)
