"""ClickHouse sink against chDB (in-process): DDL, insert-token dedup, replay dedup, KPI view."""

from __future__ import annotations

import random
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import EVENT_ADAPTER, Device, EnrichedEvent, Geo, Message, SegmentChange, Traffic
from schemas.events import Purchase
from sinks.clickhouse import (
    AnalyticsBatch,
    AnalyticsSink,
    ClickHouseSink,
    SegmentReportRow,
    ddl_statements,
    event_row,
)

pytestmark = pytest.mark.timeout(120)

BASE = datetime(2026, 3, 1, 11, 58, tzinfo=UTC)
SEGMENTS = ("cart_abandoners", "high_value", "mobile_users", "newsletter_fans", "bargain_hunters")


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One chDB data folder for the module (chDB hosts one engine path per process at a time)."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def sink(chdb_path: Path, request: pytest.FixtureRequest) -> Iterator[ClickHouseSink]:
    """A sink on its own database (named after the test), DDL applied, closed afterwards."""
    database = "t_" + re.sub(r"\W", "_", request.node.name)[:60]
    s = ClickHouseSink(f"chdb://{chdb_path}", database=database)
    s.apply_ddl()
    yield s
    s.close()


# -- data -----------------------------------------------------------------------------------------


def make_event(rng: random.Random, i: int) -> EnrichedEvent:
    visitor = f"v{rng.randrange(40)}"
    when = BASE + timedelta(seconds=i * 3, milliseconds=rng.randrange(1000))
    kind = rng.choice(["page_view", "product_view", "add_to_cart", "purchase", "cart_view", "coupon_applied"])
    props: dict[str, Any] = {}
    if kind == "product_view":
        props = {"product_id": f"p{rng.randrange(20)}", "category": "shoes", "price": 59.0}
    elif kind == "add_to_cart":
        props = {"product_id": f"p{rng.randrange(20)}", "price": 59.0, "quantity": rng.randint(1, 3)}
    elif kind == "purchase":
        props = {
            "order_id": f"o{i}",
            "value": round(rng.uniform(10, 300), 2),
            "currency": "CHF",
            "coupon": rng.choice([None, "SPRING10"]),
            "items": [{"product_id": "p1", "price": 20.0, "quantity": 2}, {"product_id": "p2", "price": 5.0}],
        }
    elif kind == "cart_view":
        props = {"items": rng.randint(0, 5)}
    elif kind == "coupon_applied":
        props = {"coupon": "WELCOME"}
    event = EVENT_ADAPTER.validate_python(
        {
            "event_id": f"e{i:05d}",
            "visitor_id": visitor,
            "user_id": None if i % 3 else f"u{visitor}",
            "event_time": when,
            "type": kind,
            "properties": props,
            "context": {
                "page_url": f"https://shop.example/{kind}/{i}",
                "page_path": f"/{kind}/{i}",
                "utm": {"campaign": "spring"} if i % 4 == 0 else None,
            },
        }
    )
    return EnrichedEvent(
        event=event,
        device=Device(category=rng.choice(["desktop", "mobile"]), os="iOS", browser="Safari"),
        geo=Geo(country="CH", region="Zurich", city="Zurich", lat=47.37, lon=8.54, source="ip")
        if i % 5
        else Geo(),
        traffic=Traffic(source="search", name="google") if i % 2 else Traffic(),
        received_at=when + timedelta(milliseconds=40),
        partition=i % 3,
        offset=i,
    )


def value_of(ev: EnrichedEvent) -> float:
    assert isinstance(ev.event, Purchase)
    return ev.event.properties.value


def make_events(seed: int, n: int) -> list[tuple[EnrichedEvent, tuple[str, ...]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        segs = tuple(sorted(rng.sample(SEGMENTS, rng.randint(0, 3))))
        out.append((make_event(rng, i), segs))
    return out


def expected_kpis(events: list[tuple[EnrichedEvent, tuple[str, ...]]]) -> dict[tuple[datetime, str], tuple]:
    """(minute, segment) → (events, distinct visitors, purchases, revenue), computed in Python."""
    acc: dict[tuple[datetime, str], list[Any]] = defaultdict(lambda: [0, set(), 0, 0.0])
    for ev, segs in events:
        minute = ev.event.event_time.replace(second=0, microsecond=0, tzinfo=None)
        for seg in segs:
            a = acc[(minute, seg)]
            a[0] += 1
            a[1].add(ev.event.visitor_id)
            if ev.event.type == "purchase":
                a[2] += 1
                a[3] += value_of(ev)
    return {k: (a[0], len(a[1]), a[2], round(a[3], 6)) for k, a in acc.items()}


def kpis(sink: ClickHouseSink) -> dict[tuple[datetime, str], tuple]:
    rows = sink.query(
        f"SELECT minute, toString(segment), events, visitors, purchases, revenue"
        f" FROM {sink.database}.segment_kpis_minute"
    )
    return {
        (minute.replace(tzinfo=None), seg): (ev, vis, pur, round(rev, 6))
        for minute, seg, ev, vis, pur, rev in rows
    }


def make_changes(seed: int) -> list[SegmentChange]:
    """v0..v9 enter high_value, v0..v2 exit it again; v0..v4 enter cart_abandoners."""
    out = []
    spec = [("high_value", "entered", range(10)), ("high_value", "exited", range(3))]
    spec.append(("cart_abandoners", "entered", range(5)))
    for seg, transition, visitors in spec:
        for n in visitors:
            out.append(
                SegmentChange(
                    change_id=f"{seg}:{transition}:v{n}",
                    visitor_id=f"v{n}",
                    segment=seg,
                    transition=transition,  # type: ignore[arg-type]
                    event_time=BASE + timedelta(seconds=n),
                    processed_at=BASE + timedelta(seconds=n, milliseconds=5),
                    definition_version="3",
                    trigger_event_id=f"e{n:05d}",
                    attributes={"purchases_30d": n, "spend_365d": 12.5 * n},
                )
            )
    random.Random(seed).shuffle(out)
    return out


def make_messages() -> list[Message]:
    return [
        Message(
            message_id=f"m{n}",
            visitor_id=f"v{n}",
            kind="coupon_email",  # type: ignore[arg-type]
            channel="email",
            rule="cart_abandoned_30m",
            segment="cart_abandoners" if n % 2 else None,
            event_time=BASE + timedelta(minutes=n),
            expires_at=BASE + timedelta(days=2) if n % 2 else None,
            payload={"coupon": "SAVE5", "at": BASE},
        )
        for n in range(6)
    ]


def stop_merges(sink: ClickHouseSink) -> None:
    """Without background merges, rows on disk show exactly what each insert kept: a duplicate
    hidden by a merge cannot make a dedup test pass by accident."""
    for table in ("events", "segment_changes", "messages", "conversions", "message_outcomes"):
        sink.query(f"SYSTEM STOP MERGES {sink.database}.{table}")


def count(sink: ClickHouseSink, table: str, final: bool = False) -> int:
    ((n,),) = sink.query(f"SELECT count() FROM {sink.database}.{table}{' FINAL' if final else ''}")
    return int(n)


# -- tests ----------------------------------------------------------------------------------------


def test_ddl_is_idempotent(sink: ClickHouseSink) -> None:
    sink.apply_ddl()  # second time (the fixture applied it once)
    sink.apply_ddl()
    rows = sink.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": sink.database},
    )
    assert rows == [
        ("conversions", "ReplacingMergeTree"),
        ("events", "ReplacingMergeTree"),
        ("message_outcomes", "ReplacingMergeTree"),
        ("messages", "ReplacingMergeTree"),
        ("segment_changes", "ReplacingMergeTree"),
        ("segment_flow_minute", "AggregatingMergeTree"),
        ("segment_flow_minute_mv", "MaterializedView"),
        ("segment_kpis_minute", "View"),
        ("segment_rollup_minute", "AggregatingMergeTree"),
        ("segment_rollup_minute_mv", "MaterializedView"),
    ]
    settings = sink.query(
        "SELECT name, create_table_query FROM system.tables"
        " WHERE database = {db:String} AND engine NOT IN ('View', 'MaterializedView')",
        parameters={"db": sink.database},
    )
    for name, create in settings:
        assert "non_replicated_deduplication_window = 1000" in create, name


def test_ddl_adds_the_enrichment_columns_to_an_older_events_table(chdb_path: Path) -> None:
    """An `events` table made before traffic_keyword, in_app_browser, time_zone and is_bot gets them
    from `apply_ddl` (ALTER ... ADD COLUMN IF NOT EXISTS), and rows carry the new fields."""
    s = ClickHouseSink(f"chdb://{chdb_path}", database="t_events_upgrade")
    try:
        new_columns = re.compile(r"^\s*(traffic_keyword|in_app_browser|time_zone|is_bot)\s.*$\n?", re.M)
        for stmt in ddl_statements("t_events_upgrade"):
            if not stmt.startswith("ALTER"):
                s.command(new_columns.sub("", stmt))
        assert not s.query("SELECT name FROM system.columns WHERE database = 't_events_upgrade'"
                           " AND table = 'events' AND name = 'time_zone'")  # fmt: skip
        s.apply_ddl()
        rng = random.Random(3)
        human, bot = make_event(rng, 1), make_event(rng, 2)
        human = human.model_copy(
            update={
                "traffic": Traffic(source="search", name="bing", keyword="rote schuhe"),
                "device": Device(category="mobile", in_app_browser="instagram"),
                "geo": Geo(country="CH", source="ip", time_zone="Europe/Zurich"),
            }
        )
        bot = bot.model_copy(update={"device": Device(category="bot")})
        events = [(human, ("a",)), (bot, ())]
        s.write(AnalyticsBatch.of(token="upgrade:1", events=events, changes=[], messages=[]))
        rows = s.query(
            "SELECT traffic_keyword, in_app_browser, time_zone, is_bot FROM t_events_upgrade.events FINAL"
            " ORDER BY event_id"
        )
        assert rows == [("rote schuhe", "instagram", "Europe/Zurich", False), ("", "", "", True)]
    finally:
        s.close()


def test_ddl_database_substitution() -> None:
    statements = ddl_statements("analytics_x")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS analytics_x"
    assert all("tessera" not in s for s in statements)
    with pytest.raises(ValueError):
        ddl_statements("x; DROP TABLE y")


def test_retried_batch_with_same_token_is_dropped_at_insert(sink: ClickHouseSink) -> None:
    events = make_events(seed=7, n=120)
    batch = AnalyticsBatch.of(
        token="events:0:0-119", events=events, changes=make_changes(1), messages=make_messages()
    )
    stop_merges(sink)
    sink.write(batch)
    first = (sink.totals(), kpis(sink), sink.segment_report())
    sink.write(batch)  # the retry after a lost acknowledgement

    # Dropped at insert: no second copy on disk even before any merge (no FINAL here).
    assert count(sink, "events") == 120
    assert count(sink, "segment_changes") == len(batch.rows.changes)
    assert count(sink, "messages") == len(batch.rows.messages)
    assert (sink.totals(), kpis(sink), sink.segment_report()) == first
    assert kpis(sink) == expected_kpis(events)


def test_replay_with_other_batch_boundaries_does_not_double_count(sink: ClickHouseSink) -> None:
    events = make_events(seed=11, n=200)
    changes = make_changes(2)
    purchases = [ev for ev, _ in events if ev.event.type == "purchase"]
    revenue = sum(value_of(ev) for ev in purchases)

    def run(prefix: str, size: int, changes_per_batch: int) -> None:
        for i, start in enumerate(range(0, len(events), size)):
            sink.write(
                AnalyticsBatch.of(
                    token=f"{prefix}:{start}",
                    events=events[start : start + size],
                    changes=changes[i * changes_per_batch : (i + 1) * changes_per_batch],
                )
            )

    stop_merges(sink)
    run("first", 7, 1)
    once = (sink.totals(), kpis(sink), sink.segment_report())
    run("after-crash", 13, 2)  # the same records replayed, cut into other batches: other tokens

    assert count(sink, "events") == 400, "other tokens: both copies are on disk"
    assert count(sink, "segment_changes") == 2 * len(changes)
    totals = sink.totals()
    assert totals == once[0] | {"rows_stored": 400}
    assert totals["events"] == totals["distinct_event_ids"] == 200
    assert totals["purchases"] == len(purchases)
    assert totals["revenue"] == pytest.approx(revenue)
    assert kpis(sink) == once[1] == expected_kpis(events)
    assert sink.segment_report() == once[2]


def test_segment_report(sink: ClickHouseSink) -> None:
    events = make_events(seed=3, n=90)
    changes = make_changes(3)
    sink.write(AnalyticsBatch.of(token="a", events=events, changes=changes))
    sink.write(AnalyticsBatch.of(token="b", changes=changes[::-1]))  # replayed changes, other token
    report = {row.segment: row for row in sink.segment_report()}

    exp = expected_kpis(events)
    for seg in SEGMENTS:
        in_seg = [(ev, segs) for ev, segs in events if seg in segs]
        row = report[seg]
        assert row.events == len(in_seg)
        assert row.visitors == len({ev.event.visitor_id for ev, _ in in_seg})
        assert row.purchases == sum(v[2] for k, v in exp.items() if k[1] == seg)
        assert row.revenue == pytest.approx(sum(v[3] for k, v in exp.items() if k[1] == seg))
    assert report["high_value"].members == 7
    assert report["cart_abandoners"].members == 5
    assert report["mobile_users"].members == 0
    members = [row.members for row in sink.segment_report()]
    assert members == sorted(members, reverse=True)
    assert isinstance(next(iter(report.values())), SegmentReportRow)


def test_event_row_values_round_trip(sink: ClickHouseSink) -> None:
    events = make_events(seed=5, n=60)
    sink.write(AnalyticsBatch.of(token="rt", events=events, messages=make_messages()))
    purchase, segs = next(
        (ev, s) for ev, s in events if ev.event.type == "purchase" and ev.event.event_id != "e00000"
    )
    cols = "event_id, visitor_id, event_time, type, order_id, revenue, currency, coupon, items, segments"
    cols += ", lat, `offset`"
    ((row),) = sink.query(
        f"SELECT {cols} FROM {sink.database}.events WHERE event_id = {{id:String}}",
        parameters={"id": purchase.event.event_id},
    )
    props = purchase.event.properties
    assert row[0:2] == (purchase.event.event_id, purchase.event.visitor_id)
    assert row[2].replace(tzinfo=UTC) == purchase.event.event_time.replace(
        microsecond=purchase.event.event_time.microsecond // 1000 * 1000
    )
    assert row[3:9] == ("purchase", props.order_id, props.value, "CHF", props.coupon or "", 3)  # type: ignore[union-attr]
    assert list(row[9]) == list(segs)
    assert row[11] == purchase.offset
    no_geo = next(ev for ev, _ in events if ev.event.event_id == "e00000")
    assert event_row(no_geo, ())[23:25] == (None, None)  # unknown location stays NULL, not 0,0

    msgs = sink.query(
        f"SELECT message_id, segment, expires_at IS NULL, payload FROM {sink.database}.messages FINAL"
        " ORDER BY message_id"
    )
    assert [m[0] for m in msgs] == [f"m{n}" for n in range(6)]
    assert msgs[0][1:] == ("", 1, '{"at":"2026-03-01T11:58:00+00:00","coupon":"SAVE5"}')


def test_write_and_read_from_two_threads(sink: ClickHouseSink) -> None:
    """The worker writes via asyncio.to_thread while a web request queries: no interleaving errors."""
    events = make_events(seed=13, n=300)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for start in range(0, 300, 10):
                sink.write(AnalyticsBatch.of(token=f"w:{start}", events=events[start : start + 10]))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(30):
                sink.segment_report()
                sink.totals()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sink.totals()["events"] == 300


def test_fake_satisfies_the_protocol() -> None:
    class FakeSink:
        def __init__(self) -> None:
            self.batches: list[AnalyticsBatch] = []

        def write(self, batch: AnalyticsBatch) -> None:
            self.batches.append(batch)

    fake: AnalyticsSink = FakeSink()
    fake.write(AnalyticsBatch.of(token="t"))
    assert isinstance(fake, FakeSink) and len(fake.batches) == 1
