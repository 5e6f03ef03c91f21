"""The KPI module (`sinks/kpis.py`) against chDB: every KPI equals the value computed in Python from
the known event set, after the events were inserted twice with other batch boundaries and tokens
(a replay) and one batch was retried with its own token."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import Device, EnrichedEvent, Message, SegmentChange
from sinks import kpis
from sinks.clickhouse import AnalyticsBatch, ClickHouseSink
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
    changes: list[SegmentChange] = (),
    messages: list[Message] = (),
) -> None:  # type: ignore[assignment]
    for i in range(0, max(len(events), len(changes), len(messages)), size):
        sink.write(
            AnalyticsBatch(
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

    table = kpis.kpi_table(sink, rng)
    assert table[0].segment == kpis.ALL_VISITORS
    for row in table:
        w = want[row.segment]
        for name in ("events", "visitors", "sessions", "page_views", "buyers", "purchases"):
            assert getattr(row, name) == w[name], (row.segment, name)
        for name in kpis.KPIS[1:]:
            assert getattr(row, name) == pytest.approx(w[name], abs=1e-6), (row.segment, name)
    assert {r.segment for r in table} == set(want)


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


def test_message_funnel_with_holdout(sink: ClickHouseSink) -> None:
    events = known_events(seed=5, n=400)
    buyers = sorted({e.event.visitor_id for e, _ in events if e.event.type == "purchase"})
    messages = [
        Message(
            message_id=f"m{n}",
            visitor_id=f"v{n}",
            kind="coupon_email",  # type: ignore[arg-type]
            channel="email",
            rule="cart_abandoned_30m",
            event_time=BASE + timedelta(minutes=n % 10),
            payload={"variant": "holdout" if n % 3 == 0 else "a"},
        )
        for n in range(40)
    ]
    replayed(sink, events, messages=messages)
    funnel = kpis.message_funnel(sink, kpis.TimeRange(BASE, BASE + timedelta(days=1)))
    unique = {e.event.event_id: e for e, _ in events}.values()
    want: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0.0])
    for m in messages:
        variant = m.payload["variant"]
        after = [
            e
            for e in unique
            if e.event.type == "purchase"
            and e.event.visitor_id == m.visitor_id
            and m.event_time < e.event.event_time <= m.event_time + timedelta(days=kpis.ATTRIBUTION_DAYS)
        ]
        want[variant][0] += 1
        want[variant][1] += bool(after)
        want[variant][2] += sum(value_of(e) for e in after)
    assert buyers  # some messaged visitors bought
    got = {row.variant: row for row in funnel}
    assert set(got) == {"a", "holdout"}
    for variant, (sent, converted, revenue) in want.items():
        assert (got[variant].sent, got[variant].converted) == (sent, converted)
        assert got[variant].revenue == pytest.approx(revenue, abs=1e-6)
    assert got["a"].uplift == pytest.approx(
        converted_rate(want["a"]) - converted_rate(want["holdout"]), abs=1e-6
    )
    assert got["holdout"].uplift is None

    # Message v2's campaign, variant and holdout as columns of `messages` (the table may gain them):
    # the funnel reads them instead of the rule and the payload, with the same figures.
    db = sink.database
    sink.command(
        f"ALTER TABLE {db}.messages ADD COLUMN IF NOT EXISTS campaign Nullable(String),"
        " ADD COLUMN IF NOT EXISTS variant Nullable(String),"
        " ADD COLUMN IF NOT EXISTS holdout Bool DEFAULT false"
    )
    sink.command(
        f"ALTER TABLE {db}.messages UPDATE campaign = 'spring',"
        " variant = if(JSONExtractString(payload, 'variant') = 'holdout', NULL,"
        " JSONExtractString(payload, 'variant')),"
        " holdout = JSONExtractString(payload, 'variant') = 'holdout' WHERE true SETTINGS mutations_sync = 2"
    )
    by_columns = {
        row.variant: row for row in kpis.message_funnel(sink, kpis.TimeRange(BASE, BASE + timedelta(days=1)))
    }
    assert {row.campaign for row in by_columns.values()} == {"spring"}
    for variant in ("a", "holdout"):
        assert (by_columns[variant].sent, by_columns[variant].converted, by_columns[variant].uplift) == (
            got[variant].sent,
            got[variant].converted,
            got[variant].uplift,
        )


def converted_rate(row: list[Any]) -> float:
    return row[1] / row[0]


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
