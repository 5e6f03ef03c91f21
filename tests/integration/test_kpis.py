"""The KPI module (`sinks/kpis.py`) against chDB: every KPI equals the value computed in Python from
the known event set, after the events were inserted twice with other batch boundaries and tokens
(a replay) and one batch was retried with its own token."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import EVENT_ADAPTER, Conversion, Device, EnrichedEvent, Geo, Message, SegmentChange, Traffic
from sinks import kpis
from sinks.clickhouse import AnalyticsBatch, ClickHouseSink, ddl_statements, outcome_rows
from tests.integration.test_clickhouse_sink import BASE, make_events, value_of

pytestmark = pytest.mark.timeout(180)

Events = list[tuple[EnrichedEvent, tuple[str, ...]]]


@pytest.fixture(scope="module")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb_kpis")


@pytest.fixture
def sink(chdb_path: Path, request: pytest.FixtureRequest) -> Iterator[ClickHouseSink]:
    database = "k_" + re.sub(r"\W", "_", request.node.name)[:60]
    s = ClickHouseSink(f"chdb://{chdb_path}", database=database)
    s.apply_ddl()
    yield s
    s.close()


def known_events(seed: int = 18, n: int = 600) -> Events:
    """`make_events` with sessions (a new one every 7 events of a visitor) and a few bots (in no segment)."""
    rng = random.Random(seed)
    out: Events = []
    seen: dict[str, int] = defaultdict(int)
    for ev, segs in make_events(seed, n):
        visitor = ev.event.visitor_id
        seen[visitor] += 1
        event = ev.event.model_copy(update={"session_id": f"s{seen[visitor] // 7}"})
        if rng.random() < 0.05:
            out.append((ev.model_copy(update={"event": event, "device": Device(category="bot")}), ()))
        else:
            out.append((ev.model_copy(update={"event": event}), segs))
    return out


def insert(
    sink: ClickHouseSink,
    events: Events,
    size: int,
    prefix: str,
    changes: Sequence[SegmentChange] = (),
    messages: Sequence[Message] = (),
) -> None:
    for i in range(0, max(len(events), len(changes), len(messages)), size):
        sink.write(
            AnalyticsBatch.of(
                token=f"{prefix}:{i}",
                events=events[i : i + size],
                changes=list(changes[i : i + size]),
                messages=list(messages[i : i + size]),
            )
        )


def expected(events: Events, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """Segment (and `*`) → the five KPIs and their parts, computed directly from the events."""
    acc: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "events": 0,
            "visitors": set(),
            "sessions": set(),
            "page_views": 0,
            "buyers": set(),
            "purchases": 0,
            "revenue": 0.0,
        }
    )
    for ev, segs in {e.event.event_id: (e, s) for e, s in events}.values():
        t = ev.event.event_time
        if not start <= t.replace(second=0, microsecond=0) < end:
            continue
        names = list(segs) if ev.device.category == "bot" else ["*", *segs]
        for seg in names:
            a = acc[seg]
            a["events"] += 1
            a["visitors"].add(ev.event.visitor_id)
            a["sessions"].add((ev.event.visitor_id, ev.event.session_id))
            if ev.event.type == "page_view":
                a["page_views"] += 1
            if ev.event.type == "purchase":
                a["purchases"] += 1
                a["buyers"].add(ev.event.visitor_id)
                a["revenue"] += value_of(ev)
    out = {}
    for seg, a in acc.items():
        v = len(a["visitors"])
        out[seg] = {
            "events": a["events"],
            "visitors": v,
            "sessions": len(a["sessions"]),
            "page_views": a["page_views"],
            "buyers": len(a["buyers"]),
            "purchases": a["purchases"],
            "conversion_rate": round(len(a["buyers"]) / v, 6),
            "revenue": round(a["revenue"], 6),
            "revenue_per_user": round(a["revenue"] / v, 6),
            "page_views_per_user": round(a["page_views"] / v, 6),
        }
    return out


def replayed(sink: ClickHouseSink, events: Events, **extra: Any) -> None:
    """The events written as the worker would, then replayed with other batch cuts and tokens, and one
    batch retried with its own token."""
    insert(sink, events, 50, "first", **extra)
    insert(sink, events[120:], 37, "replay", **{k: v[7:] for k, v in extra.items()})
    insert(sink, events, 50, "first", **extra)  # a retry of every batch: same tokens


RANGES = [
    (BASE.replace(tzinfo=UTC), BASE + timedelta(hours=2)),
    (BASE + timedelta(minutes=5), BASE + timedelta(minutes=17)),
]


@pytest.mark.parametrize("window", range(len(RANGES)))
def test_each_kpi_equals_python_after_replays(sink: ClickHouseSink, window: int) -> None:
    events = known_events()
    replayed(sink, events)
    start, end = RANGES[window]
    rng = kpis.TimeRange(start, end)
    want = expected(events, start, end)
    assert set(want) >= {"*", "high_value"}

    assert kpis.purchases(sink, rng) == {s: w["purchases"] for s, w in want.items()}
    for name in ("conversion_rate", "revenue", "revenue_per_user", "page_views_per_user"):
        got = getattr(kpis, name)(sink, rng)
        assert got == pytest.approx({s: w[name] for s, w in want.items()}, abs=1e-6), name

    assert_kpi_table(sink, events, rng)


def assert_kpi_table(sink: ClickHouseSink, events: Events, rng: kpis.TimeRange) -> None:
    """`kpi_table` over `rng` equals the Python computation from `events`, every column."""
    want = expected(events, rng.start, rng.end)
    table = kpis.kpi_table(sink, rng)
    assert table[0].segment == kpis.ALL_VISITORS
    for row in table:
        w = want[row.segment]
        for name in ("events", "visitors", "sessions", "page_views", "buyers", "purchases"):
            assert getattr(row, name) == w[name], (row.segment, name)
        for name in kpis.KPIS[1:]:
            assert getattr(row, name) == pytest.approx(w[name], abs=1e-6), (row.segment, name)
    assert {r.segment for r in table} == set(want)


ROLLUP_OF_STATES = [
    """CREATE TABLE {db}.segment_rollup_minute (minute DateTime('UTC'), segment LowCardinality(String),
    events AggregateFunction(uniqExact, String), visitors AggregateFunction(uniqExact, String),
    sessions AggregateFunction(uniqExact, String), page_views AggregateFunction(uniqExact, String),
    purchases AggregateFunction(uniqExact, String), buyers AggregateFunction(uniqExact, String),
    revenue AggregateFunction(groupUniqArray, Tuple(String, Float64)))
    ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(minute) ORDER BY (segment, minute)""",
    """CREATE MATERIALIZED VIEW {db}.segment_rollup_minute_mv TO {db}.segment_rollup_minute AS
    SELECT toStartOfMinute(event_time) AS minute,
    arrayJoin(if(device_category = 'bot', segments, arrayPushFront(segments, '*'))) AS segment,
    uniqExactState(event_id) AS events, uniqExactState(visitor_id) AS visitors,
    uniqExactStateIf(concat(visitor_id, '/', ifNull(session_id, '')), session_id IS NOT NULL) AS sessions,
    uniqExactStateIf(event_id, type = 'page_view') AS page_views,
    uniqExactStateIf(event_id, type = 'purchase') AS purchases,
    uniqExactStateIf(visitor_id, type = 'purchase') AS buyers,
    groupUniqArrayStateIf((event_id, revenue), type = 'purchase') AS revenue
    FROM {db}.events GROUP BY minute, segment""",
]
"""The rollup's first form (one uniqExact state per measure), as releases before the tuple set made it."""


def test_rollup_of_states_migrates_to_the_tuple_set(chdb_path: Path) -> None:
    """A database holding the rollup's first form: `apply_ddl` replaces table and view and fills the new
    table from the stored events, so every KPI is the Python value again, counting the events stored
    before the migration and those written after it."""
    db = "k_rollup_upgrade"
    s = ClickHouseSink(f"chdb://{chdb_path}", database=db)
    try:
        for stmt in ddl_statements(db):
            if "segment_rollup_minute" not in stmt.splitlines()[0]:  # the rollup's table and view
                s.command(stmt)
        for stmt in ROLLUP_OF_STATES:
            s.command(stmt.format(db=db))
        events = known_events(seed=5, n=400)
        insert(s, events[:250], 50, "before")
        columns = (
            f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'segment_rollup_minute'"
        )
        assert ("events",) in s.query(columns)
        s.apply_ddl()
        assert s.query(columns) == [("minute",), ("segment",), ("items",)]
        insert(s, events[200:], 40, "after")  # overlapping the backfill: a replay
        assert_kpi_table(s, events, kpis.TimeRange(*RANGES[0]))
        s.apply_ddl()  # migrated once: nothing to drop any more
        assert_kpi_table(s, events, kpis.TimeRange(*RANGES[0]))
    finally:
        s.close()


def test_kpi_series_per_bucket(sink: ClickHouseSink) -> None:
    events = known_events(seed=7, n=300)
    replayed(sink, events)
    rng = kpis.TimeRange(BASE, BASE + timedelta(hours=1))
    series = kpis.kpi_series(sink, "revenue_per_user", rng, bucket_minutes=5)
    for segment, points in series.items():
        for t, value in points:
            want = expected(events, t, t + timedelta(minutes=5))[segment]
            assert value == pytest.approx(want["revenue_per_user"], abs=1e-6)


def make_changes(n: int = 300, seed: int = 3) -> list[SegmentChange]:
    """Visitors entering and leaving two segments over 20 minutes, in time order per visitor."""
    rng = random.Random(seed)
    state: dict[tuple[str, str], bool] = {}
    out = []
    for i in range(n):
        visitor, segment = f"v{rng.randrange(30)}", rng.choice(["high_value", "cart_abandoners"])
        inside = state.get((visitor, segment), False)
        state[(visitor, segment)] = not inside
        out.append(
            SegmentChange(
                change_id=f"c{i}",
                visitor_id=visitor,
                segment=segment,
                transition="exited" if inside else "entered",  # type: ignore[arg-type]
                event_time=BASE + timedelta(seconds=4 * i),
                processed_at=BASE + timedelta(seconds=4 * i),
                definition_version="1",
                attributes={},
            )
        )
    return out


def test_sizes_and_flows_from_entries_and_exits(sink: ClickHouseSink) -> None:
    changes = make_changes()
    insert(sink, [], 40, "first", changes=changes)
    insert(sink, [], 23, "replay", changes=changes[11:])
    final: dict[str, int] = defaultdict(int)
    for c in changes:
        final[c.segment] += 1 if c.transition == "entered" else -1
    assert kpis.current_sizes(sink) == dict(final)

    start = BASE + timedelta(minutes=6)
    flows = kpis.segment_flows(sink, kpis.TimeRange(start, BASE + timedelta(hours=1)), bucket_minutes=3)
    for segment, points in flows.items():
        for p in points:
            until = [
                c for c in changes if c.segment == segment and c.event_time < p.start + timedelta(minutes=3)
            ]
            # The first bucket may begin before the range: it holds the range's part of it only.
            inside = [c for c in until if c.event_time >= max(p.start, start)]
            assert p.size == sum(1 if c.transition == "entered" else -1 for c in until)
            assert p.entries == sum(c.transition == "entered" for c in inside)
            assert p.exits == sum(c.transition == "exited" for c in inside)
        assert points[-1].size == final[segment]


# -- the message funnel ---------------------------------------------------------------------------

FunnelKey = tuple[str, str, bool]
"""(campaign, variant, holdout) as `kpis.message_funnel` groups."""


def outcome_event(n: int, visitor: str, name: str, properties: dict[str, Any], at: datetime) -> EnrichedEvent:
    event = EVENT_ADAPTER.validate_python(
        {
            "event_id": f"oe{n:05d}",
            "visitor_id": visitor,
            "event_time": at,
            "type": "custom",
            "properties": {"name": name, "properties": properties},
        }
    )
    return EnrichedEvent(
        event=event,
        device=Device(category="desktop"),
        geo=Geo(),
        traffic=Traffic(),
        received_at=at,
        partition=n % 3,
        offset=10_000 + n,
    )


def funnel_set(seed: int = 17) -> tuple[list[Message], list[Conversion], Events]:
    """Messages of campaign `spring` (variants a and b, about a quarter held out) and of a trigger rule
    without a campaign, the engine's conversions of some (holdout records too; one message with two
    orders), and outcome events: some reported twice (a client retry, other event ids), some by another
    visitor or naming no known message, one without a message id, besides an unrelated custom event."""
    rng = random.Random(seed)
    messages: list[Message] = []
    conversions: list[Conversion] = []
    events: Events = []

    def outcome(visitor: str, name: str, message_id: str | None, at: datetime) -> None:
        props: dict[str, Any] = {"outcome": name.removeprefix("message_"), "display": "overlay"}
        if message_id is not None:
            props["message_id"] = message_id
        events.append((outcome_event(len(events), visitor, name, props, at), ()))

    for n in range(120):
        visitor = f"fv{n % 50}"
        at = BASE + timedelta(minutes=n % 40, seconds=n)
        in_campaign = n % 7 != 0
        holdout = in_campaign and rng.random() < 0.25
        message = Message(
            message_id=f"fm{n}",
            visitor_id=visitor,
            kind="exit_intent_overlay" if in_campaign else "coupon_email",  # type: ignore[arg-type]
            channel="onsite" if in_campaign else "email",
            rule="cart_recovery.remind" if in_campaign else "cart_abandoned_30m",
            event_time=at,
            campaign="spring" if in_campaign else None,
            variant=rng.choice(["a", "b"]) if in_campaign else None,
            holdout=holdout,
            journey="cart_recovery" if in_campaign else None,
            step="remind" if in_campaign else None,
            cost=0.0 if holdout else 0.25,
        )
        messages.append(message)
        for order in range(2 if n == 8 else int(rng.random() < 0.35)):
            conversions.append(
                Conversion(
                    message_id=message.message_id,
                    visitor_id=visitor,
                    campaign=message.campaign,
                    variant=message.variant,
                    holdout=holdout,
                    journey=message.journey,
                    step=message.step,
                    rule=message.rule,
                    message_time=at,
                    event_time=at + timedelta(hours=order + 1),
                    order_id=f"fo{n}-{order}",
                    value=round(rng.uniform(5, 200), 2),
                )
            )
        if holdout:
            continue
        for name in ("message_shown", "message_clicked", "message_dismissed"):
            if rng.random() < {"message_shown": 0.7}.get(name, 0.25):
                outcome(visitor, name, message.message_id, at + timedelta(seconds=2))
                if rng.random() < 0.2:
                    outcome(visitor, name, message.message_id, at + timedelta(seconds=3))
        if rng.random() < 0.1:
            outcome("someone-else", "message_clicked", message.message_id, at + timedelta(seconds=4))
    outcome("fv1", "message_shown", "no-such-message", BASE)
    outcome("fv2", "message_shown", None, BASE)
    events.append((outcome_event(len(events), "fv3", "wishlist_add", {"message_id": "fm1"}, BASE), ()))
    rng.shuffle(events)
    return messages, conversions, events


def funnel_in_python(
    messages: list[Message], conversions: list[Conversion], events: Events, start: datetime, end: datetime
) -> dict[FunnelKey, dict[str, Any]]:
    """Every funnel column computed directly from the known set."""
    orders: dict[str, list[float]] = defaultdict(list)
    for c in conversions:
        orders[c.message_id].append(c.value)
    reported: set[tuple[str, str, str]] = set()  # (message id, visitor id, outcome event name)
    for enriched, _ in events:
        props: Any = enriched.event.properties
        if "message_id" in props.properties:
            reported.add((props.properties["message_id"], enriched.event.visitor_id, props.name))
    rows: dict[FunnelKey, dict[str, Any]] = {}
    for m in messages:
        if not start <= m.event_time < end:
            continue
        key = (m.campaign or m.rule, "holdout" if m.holdout else m.variant or "", m.holdout)
        row = rows.setdefault(
            key,
            {"sent": 0, "holdout_records": 0, "visitors": set(), "converted": 0, "revenue": 0.0}
            | {"shown": 0, "clicked": 0, "dismissed": 0},
        )
        row["holdout_records" if m.holdout else "sent"] += 1
        row["visitors"].add(m.visitor_id)
        for outcome in ("shown", "clicked", "dismissed"):
            row[outcome] += (m.message_id, m.visitor_id, f"message_{outcome}") in reported
        row["converted"] += bool(orders[m.message_id])
        row["revenue"] += sum(orders[m.message_id])
    for row in rows.values():
        row["visitors"] = len(row["visitors"])
        row["conversion_rate"] = row["converted"] / (row["sent"] + row["holdout_records"])
    for (campaign, _, holdout), row in rows.items():
        control = next((r for (c, _, h), r in rows.items() if c == campaign and h), None)
        row["uplift"] = row["uplift_relative"] = None
        if control is not None and not holdout:
            row["uplift"] = row["conversion_rate"] - control["conversion_rate"]
            if control["conversion_rate"] > 0:
                row["uplift_relative"] = row["uplift"] / control["conversion_rate"]
    return rows


def insert_funnel(
    sink: ClickHouseSink,
    size: int,
    prefix: str,
    messages: list[Message],
    conversions: list[Conversion],
    events: Events,
) -> None:
    for i in range(0, max(len(messages), len(conversions), len(events)), size):
        sink.write(
            AnalyticsBatch.of(
                token=f"{prefix}:{i}",
                events=events[i : i + size],
                messages=messages[i : i + size],
                conversions=conversions[i : i + size],
            )
        )


FUNNEL_RANGES = [
    (BASE, BASE + timedelta(days=1)),
    (BASE + timedelta(minutes=5), BASE + timedelta(minutes=17)),
]


@pytest.mark.parametrize("window", range(len(FUNNEL_RANGES)))
def test_message_funnel_equals_python_after_replays(sink: ClickHouseSink, window: int) -> None:
    messages, conversions, events = funnel_set()
    db = sink.database
    for table in ("messages", "conversions", "message_outcomes"):
        sink.command(f"SYSTEM STOP MERGES {db}.{table}")  # duplicates stay on disk: FINAL must do it
    insert_funnel(sink, 11, "first", messages, conversions, events)
    insert_funnel(sink, 17, "replay", messages, conversions, events)  # other cuts, other tokens
    insert_funnel(sink, 11, "first", messages, conversions, events)  # a retry: dropped at insert
    # On disk: the first write and the replay's copies; the retry was dropped at insert (its tokens).
    stored = {
        t: sink.query(f"SELECT count() FROM {db}.{t}")[0][0] for t in ("conversions", "message_outcomes")
    }
    assert stored == {
        "conversions": 2 * len(conversions),
        "message_outcomes": 2 * len(outcome_rows(e for e, _ in events)),
    }

    start, end = FUNNEL_RANGES[window]
    want = funnel_in_python(messages, conversions, events, start, end)
    got = {
        (r.campaign, r.variant, r.holdout): r for r in kpis.message_funnel(sink, kpis.TimeRange(start, end))
    }
    assert set(got) == set(want)
    assert {("spring", "a", False), ("spring", "b", False), ("spring", "holdout", True)} <= set(want)
    for key, w in want.items():
        row = got[key]
        for name in ("sent", "holdout_records", "visitors", "shown", "clicked", "dismissed", "converted"):
            assert getattr(row, name) == w[name], (key, name)
        for name in ("revenue", "conversion_rate", "uplift", "uplift_relative"):
            assert getattr(row, name) == (None if w[name] is None else pytest.approx(w[name], abs=1e-6)), (
                key,
                name,
            )
    assert got[("spring", "a", False)].uplift is not None
    assert got[("spring", "holdout", True)].shown == 0


def test_messages_table_gains_the_v2_columns(chdb_path: Path) -> None:
    """A `messages` table made before campaign, variant, holdout, journey, step and cost gets them from
    `apply_ddl` (ALTER ... ADD COLUMN IF NOT EXISTS): old rows read '' and false, new rows carry them."""
    db = "k_messages_upgrade"
    s = ClickHouseSink(f"chdb://{chdb_path}", database=db)
    try:
        new_columns = re.compile(r"^\s*(campaign|variant|holdout|journey|step|cost)\s.*$\n?", re.M)
        for stmt in ddl_statements(db):
            if not stmt.startswith("ALTER"):
                s.command(new_columns.sub("", stmt) if f"{db}.messages" in stmt.split("(")[0] else stmt)
        s.command(
            f"INSERT INTO {db}.messages (message_id, visitor_id, kind, channel, rule, segment, event_time,"
            " payload) VALUES ('old', 'v', 'retargeting', 'ads', 'r', '', now64(3), '{}')"
        )
        s.apply_ddl()
        messages = funnel_set()[0]
        held = next(m for m in messages if m.holdout)
        s.write(AnalyticsBatch.of(token="upgrade", messages=[held]))
        rows = s.query(
            f"SELECT message_id, campaign, variant, holdout, journey, step, cost FROM {db}.messages FINAL"
            " ORDER BY message_id"
        )
        assert rows == [
            (held.message_id, "spring", held.variant, True, "cart_recovery", "remind", 0.0),
            ("old", "", "", False, "", "", 0.0),
        ]
    finally:
        s.close()


def test_retention_ttl_set_and_removed(sink: ClickHouseSink) -> None:
    sink.apply_retention({"events": 30, "segment_rollup_minute": 90})
    create = dict(
        sink.query(f"SELECT name, create_table_query FROM system.tables WHERE database = '{sink.database}'")
    )
    assert "TTL toDateTime(event_time) + toIntervalDay(30)" in create["events"]
    assert "TTL toDateTime(minute) + toIntervalDay(90)" in create["segment_rollup_minute"]
    sink.apply_retention({"events": 0, "segment_rollup_minute": 0, "messages": 0})
    create = dict(
        sink.query(f"SELECT name, create_table_query FROM system.tables WHERE database = '{sink.database}'")
    )
    assert " TTL " not in create["events"] and " TTL " not in create["segment_rollup_minute"]
