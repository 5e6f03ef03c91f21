"""The batch core with fake lookups: DLQ routing, dedupe, exact replays, timers in event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.enriched import Device, Geo
from streams.core.batch import BatchResult, IngestLimits, SourceRecord, process_batch
from streams.core.enrich import Enricher
from streams.core.profile import Profile
from streams.core.segments import Definitions, load_definitions
from streams.settings import DEFAULT_SEGMENTS_FILE

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


class FakeUa:
    def parse(self, ua: str) -> Device:
        return Device(category="mobile", os="Android", browser="Chrome")


class FakeGeo:
    def lookup(self, ip: str) -> Geo | None:
        return Geo(country="CH", city="Zurich", source="ip")


@pytest.fixture(scope="module")
def defs() -> Definitions:
    return load_definitions(DEFAULT_SEGMENTS_FILE)


def event(event_id: str, kind: str, at: datetime, visitor: str = "v1", **props: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "visitor_id": visitor,
        "event_time": at.isoformat(),
        "type": kind,
        "context": {"ip": "178.197.224.1", "user_agent": "x"},
        "properties": props,
    }


def records(*values: dict[str, object] | bytes, partition: int = 0, start: int = 0) -> list[SourceRecord]:
    out = []
    for offset, value in enumerate(values, start):
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        out.append(SourceRecord(partition, offset, b"v1", raw))
    return out


def run(
    defs: Definitions,
    recs: list[SourceRecord],
    store: dict[str, bytes],
    wall: datetime,
    due: dict[str, tuple[int, float]] | None = None,
) -> BatchResult:
    result = process_batch(
        recs,
        lambda visitor_id, partition: store.get(visitor_id),
        due or {},
        {},
        defs=defs,
        enricher=Enricher(FakeUa(), FakeGeo()),
        limits=IngestLimits(),
        wall_now=wall.timestamp(),
        topic="events",
    )
    for visitor_id, effect in result.visitors.items():
        store[visitor_id] = effect.profile.to_bytes()
    return result


def test_bad_records_go_to_the_dlq_and_duplicates_are_dropped(defs: Definitions) -> None:
    store: dict[str, bytes] = {}
    purchase = event("e1", "purchase", T0, order_id="o1", value=20.0)
    result = run(defs, records(purchase, b"not json", purchase, event("e2", "bogus", T0)), store, T0)
    assert [d.reason.value for d in result.dead_letters] == ["not_json", "unknown_type"]
    assert result.dead_letters[0].original == b"not json"
    assert result.events_applied == 1
    assert result.duplicates == 1
    assert len(result.analytics_rows) == 1


def test_replayed_offsets_are_skipped_exactly(defs: Definitions) -> None:
    store: dict[str, bytes] = {}
    batch = records(
        *(
            event(f"e{i}", "purchase", T0 + timedelta(minutes=i), order_id=f"o{i}", value=10.0)
            for i in range(4)
        )
    )
    first = run(defs, batch, store, T0 + timedelta(hours=1))
    assert "frequent_buyers" in first.visitors["v1"].entered
    again = run(defs, batch, store, T0 + timedelta(hours=1))
    assert again.replayed == 4 and again.events_applied == 0 and not again.changes
    profile = Profile.from_bytes(store["v1"])
    assert sum(bucket.get("purchases", 0) for bucket in profile.days.values()) == 4


def test_cart_abandonment_fires_from_the_timer_at_the_due_time(defs: Definitions) -> None:
    store: dict[str, bytes] = {}
    add = event("e1", "add_to_cart", T0, product_id="P-1", price=5.0)
    first = run(defs, records(add), store, T0)
    assert "cart_abandoners" not in first.visitors["v1"].entered
    due_at = Profile.from_bytes(store["v1"]).next_check_at
    assert due_at is not None and due_at <= (T0 + timedelta(minutes=30)).timestamp()
    # Walk the timer forward until it decides (earlier rechecks may exist, e.g. session end).
    for _ in range(5):
        result = run(defs, [], store, T0 + timedelta(hours=2), due={"v1": (0, due_at)})
        entered = [c for c in result.changes if c.segment == "cart_abandoners"]
        if entered:
            break
        due_at = Profile.from_bytes(store["v1"]).next_check_at
        assert due_at is not None
    assert entered[0].reason == "timer"
    assert entered[0].event_time == T0 + timedelta(minutes=30)


def test_no_personalisation_consent_keeps_no_profile(defs: Definitions) -> None:
    store: dict[str, bytes] = {}
    raw = event("e1", "page_view", T0)
    raw["context"] = {"consent": {"personalization": False, "analytics": True}}
    result = run(defs, records(raw), store, T0)
    assert result.no_consent == 1 and not result.visitors and len(result.analytics_rows) == 1


def test_a_segment_removed_from_the_definitions_exits_with_no_attributes(defs: Definitions) -> None:
    from streams.core.profile import new_profile

    ghost = new_profile("v1")
    ghost.segments = ["ghost_segment"]
    store = {"v1": ghost.to_bytes()}
    result = run(defs, records(event("e1", "page_view", T0)), store, T0 + timedelta(minutes=1))
    exits = [c for c in result.changes if c.segment == "ghost_segment"]
    assert len(exits) == 1 and exits[0].transition.value == "exited"
    assert exits[0].attributes == {}
