"""The batch core with fake lookups: DLQ routing, dedupe, exact replays, timers in event time,
and events that fail to apply (dead-lettered, their visitor left as before)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

import streams.core.batch
from schemas.changes import SegmentChange
from schemas.deadletter import DELIVERY_REASONS, DeadLetterReason
from schemas.enriched import Device, EnrichedEvent, Geo
from schemas.events import Event
from schemas.messages import Message
from streams.core.batch import (
    BatchResult,
    IngestLimits,
    SourceRecord,
    UnprocessableRecord,
    process_batch,
    reevaluate,
)
from streams.core.definitions import Definitions, load_definitions
from streams.core.enrich import Enricher
from streams.core.profile import Profile, apply
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
        key = str(value["visitor_id"]).encode() if isinstance(value, dict) else b"v1"
        out.append(SourceRecord(partition, offset, key, raw))
    return out


def run(
    defs: Definitions,
    recs: list[SourceRecord],
    store: dict[str, bytes],
    wall: datetime,
    due: dict[str, tuple[int, float]] | None = None,
    enricher: Enricher | None = None,
) -> BatchResult:
    result = process_batch(
        recs,
        lambda visitor_id, partition: store.get(visitor_id),
        due or {},
        {},
        defs=defs,
        enricher=enricher or Enricher(FakeUa(), FakeGeo()),
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


def fire_timers(
    defs: Definitions, store: dict[str, bytes], until: datetime, visitor: str = "v1"
) -> list[SegmentChange]:
    """Fire the visitor's timers one by one in due order up to `until`, as the engine would once its
    partition's clock passes them; every change they made."""
    changes: list[SegmentChange] = []
    for _ in range(20):
        due_at = Profile.from_bytes(store[visitor]).next_check_at
        if due_at is None or due_at > until.timestamp():
            return changes
        changes += run(defs, [], store, until, due={visitor: (0, due_at)}).changes
    raise AssertionError(f"more than 20 timers of {visitor} due by {until}")


def test_cart_abandonment_fires_from_the_timer_at_the_due_time(defs: Definitions) -> None:
    store: dict[str, bytes] = {}
    add = event("e1", "add_to_cart", T0, product_id="P-1", price=5.0)
    first = run(defs, records(add), store, T0)
    assert "cart_abandoners" not in first.visitors["v1"].entered
    due_at = Profile.from_bytes(store["v1"]).next_check_at
    assert due_at is not None and due_at <= (T0 + timedelta(minutes=30)).timestamp()
    due = T0 + timedelta(minutes=30)
    assert cart_changes(fire_timers(defs, store, T0 + timedelta(hours=2)))[0] == ("entered", "timer", due)


def cart_changes(changes: list[SegmentChange]) -> list[tuple[str, str, datetime]]:
    """(transition, reason, event time) of each `cart_abandoners` change."""
    return [(c.transition.value, c.reason, c.event_time) for c in changes if c.segment == "cart_abandoners"]


ADD = event("e1", "add_to_cart", T0, product_id="P-1", price=5.0)
LATE_PURCHASE = event("e2", "purchase", T0 + timedelta(minutes=29, seconds=59), order_id="o1", value=5.0)
"""Stamped a second before the cart's abandonment falls due, arriving after the timer fired."""


def test_a_late_purchase_corrects_the_timers_entry(defs: Definitions) -> None:
    store: dict[str, bytes] = {}
    first = run(defs, records(ADD), store, T0)
    assert {c.reason for c in first.changes} == {"event"}
    due = T0 + timedelta(minutes=30)
    assert cart_changes(fire_timers(defs, store, due)) == [("entered", "timer", due)]
    assert Profile.from_bytes(store["v1"]).evaluated_at == due.timestamp()

    late = run(defs, records(LATE_PURCHASE, start=1), store, due + timedelta(seconds=5))
    # Evaluated as of 10:30 (not 10:29:59, which would undo the timer's decision by turning the
    # visitor's clock back), with the purchase folded in: the cart is empty.
    assert cart_changes(late.changes) == [("exited", "correction", due)]
    assert {c.reason for c in late.changes} == {"correction"}  # every change of the late batch
    assert {c.trigger_event_id for c in late.changes} == {"e2"}
    profile = Profile.from_bytes(store["v1"])
    assert "cart_abandoners" not in profile.segments
    assert profile.evaluated_at == due.timestamp()  # a late event never moves it back
    assert profile.next_check_at is None or profile.next_check_at > due.timestamp()


def test_an_event_after_the_timers_entry_exits_by_event(defs: Definitions) -> None:
    store: dict[str, bytes] = {}
    run(defs, records(ADD), store, T0)
    fire_timers(defs, store, T0 + timedelta(minutes=30))
    at = T0 + timedelta(minutes=31)
    purchase = event("e2", "purchase", at, order_id="o1", value=5.0)
    later = run(defs, records(purchase, start=1), store, at)
    assert cart_changes(later.changes) == [("exited", "event", at)]
    assert Profile.from_bytes(store["v1"]).evaluated_at == at.timestamp()


def test_late_events_end_in_the_membership_of_a_replay_in_event_time_order(defs: Definitions) -> None:
    """Live: the add, the timer at 10:30, then the purchase stamped 10:29:59. Replay: the add and
    the purchase in event-time order, the timers after both, or none at all."""
    due = T0 + timedelta(minutes=30)
    live: dict[str, bytes] = {}
    run(defs, records(ADD), live, T0)
    fire_timers(defs, live, due)
    run(defs, records(LATE_PURCHASE, start=1), live, due + timedelta(seconds=5))

    replayed: dict[str, bytes] = {}
    run(defs, records(ADD, LATE_PURCHASE), replayed, due + timedelta(seconds=5))
    assert Profile.from_bytes(replayed["v1"]).segments == Profile.from_bytes(live["v1"]).segments

    later = T0 + timedelta(days=2)
    fire_timers(defs, live, later)
    fire_timers(defs, replayed, later)
    live_profile, replayed_profile = Profile.from_bytes(live["v1"]), Profile.from_bytes(replayed["v1"])
    assert replayed_profile.segments == live_profile.segments
    assert replayed_profile.evaluated_at == live_profile.evaluated_at


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


def keyed(*values: dict[str, object], start: int = 0) -> list[SourceRecord]:
    """Records of partition 0 from `start`, each keyed by its event's visitor."""
    return [
        SourceRecord(0, offset, str(value["visitor_id"]).encode(), orjson.dumps(value))
        for offset, value in enumerate(values, start)
    ]


def fail_apply_of(monkeypatch: pytest.MonkeyPatch, event_id: str) -> None:
    """`apply` raises for one event, after changing the profile as far as it gets."""

    def apply_or_fail(profile: Profile, enriched: EnrichedEvent, at: float | None = None) -> Profile:
        apply(profile, enriched, at)
        if enriched.event.event_id == event_id:
            raise ZeroDivisionError("division by zero")
        return profile

    monkeypatch.setattr(streams.core.batch, "apply", apply_or_fail)


def test_an_event_whose_apply_raises_is_dead_lettered_and_its_visitor_left_as_before(
    defs: Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: dict[str, bytes] = {}
    run(defs, keyed(event("e0", "page_view", T0)), store, T0)
    before = dict(store)
    at = T0 + timedelta(minutes=1)
    poison = event("e3", "purchase", at, order_id="o1", value=20.0)
    batch = keyed(
        event("e1", "product_view", at, product_id="P-1", category="books", price=5.0),
        event("e2", "page_view", at, visitor="v2"),
        poison,
        event("e4", "add_to_cart", at, product_id="P-1", price=5.0),
        event("n1", "page_view", at, visitor="new"),
        event("n2", "page_view", at, visitor="new"),
        start=1,
    )
    # The same batch without the failing event, as it must come out.
    expected = dict(before)
    run(defs, [r for r in batch if r.offset != 3], expected, at)

    fail_apply_of(monkeypatch, "e3")
    result = run(defs, batch, store, at)

    assert [(d.reason, d.offset, d.key) for d in result.dead_letters] == [
        (DeadLetterReason.processing_error, 3, "v1")
    ]
    letter = result.dead_letters[0]
    assert letter.original == orjson.dumps(poison) and letter.source == "ingest"
    assert letter.detail == "ZeroDivisionError: division by zero"
    assert result.events_applied == 5
    assert {v: Profile.from_bytes(raw) for v, raw in store.items()} == {
        v: Profile.from_bytes(raw) for v, raw in expected.items()
    }


def test_a_failed_event_alone_leaves_the_stored_profile_untouched(
    defs: Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: dict[str, bytes] = {}
    run(defs, keyed(event("e0", "page_view", T0)), store, T0)
    before = dict(store)
    fail_apply_of(monkeypatch, "e1")
    at = T0 + timedelta(minutes=1)
    result = run(defs, keyed(event("e1", "purchase", at, order_id="o1", value=9.0), start=1), store, at)
    assert [d.reason for d in result.dead_letters] == [DeadLetterReason.processing_error]
    assert not result.visitors and not result.changes and store == before


def test_an_event_whose_enrichment_raises_is_dead_lettered(defs: Definitions) -> None:
    class FailingEnricher(Enricher):
        def enrich(
            self, event: Event, received_at: datetime, partition: int = -1, offset: int = -1
        ) -> EnrichedEvent:
            if event.event_id == "e2":
                raise ValueError("no such place")
            return super().enrich(event, received_at, partition, offset)

    store: dict[str, bytes] = {}
    enricher = FailingEnricher(FakeUa(), FakeGeo())
    views = keyed(*(event(f"e{i}", "page_view", T0) for i in range(3)))
    result = run(defs, views, store, T0, enricher=enricher)
    assert [(d.reason, d.offset, d.detail) for d in result.dead_letters] == [
        (DeadLetterReason.processing_error, 2, "ValueError: no such place")
    ]
    assert result.events_applied == 2 and Profile.from_bytes(store["v1"]).last_offset == 1


def test_a_profile_handed_over_as_an_object_fails_the_batch_and_the_retry_dead_letters_the_record(
    defs: Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object is changed in place, its state before the batch is gone: the batch fails with
    `UnprocessableRecord`; the retry with that record in `unprocessable` dead-letters it without
    folding it and applies the rest."""
    live: dict[str, Profile] = {}

    def run(records: list[Any], unprocessable: dict[tuple[int, int], str] | None = None) -> BatchResult:
        return process_batch(
            records,
            lambda visitor_id, partition: live.get(visitor_id),
            {},
            {},
            defs=defs,
            enricher=Enricher(FakeUa(), FakeGeo()),
            limits=IngestLimits(),
            wall_now=T0.timestamp(),
            topic="events",
            unprocessable=unprocessable,
        )

    live["v1"] = run(keyed(event("e0", "page_view", T0))).visitors["v1"].profile
    before = live["v1"].to_bytes()
    fail_apply_of(monkeypatch, "e1")
    second = keyed(event("e1", "page_view", T0), event("e2", "page_view", T0), start=1)
    with pytest.raises(UnprocessableRecord) as info:
        run(second)
    failed = info.value
    assert (failed.partition, failed.offset, failed.visitor_id) == (second[0].partition, 1, "v1")
    assert "ZeroDivisionError" in failed.detail

    live["v1"] = Profile.from_bytes(before)  # the restart restores the committed state
    retried = run(second, {(failed.partition, failed.offset): failed.detail})
    assert [(d.reason, d.offset) for d in retried.dead_letters] == [(DeadLetterReason.processing_error, 1)]
    assert retried.dead_letters[0].original == second[0].value
    assert retried.events_applied == 1  # e2


def test_every_dead_letter_reason_is_produced(defs: Definitions, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_apply_of(monkeypatch, "e-fails")
    good = orjson.dumps(event("e-other-key", "page_view", T0))
    recs = [
        *records(b"x" * (IngestLimits().max_event_bytes + 1), b"not json", event("e1", "bogus", T0)),
        *records(event("e2", "purchase", T0), event("e3", "page_view", T0 + timedelta(days=1)), start=3),
        SourceRecord(0, 5, b"someone-else", good),
        *records(event("e-fails", "page_view", T0), start=6),
    ]
    result = run(defs, recs, {}, T0)
    assert [d.reason for d in result.dead_letters] == [
        DeadLetterReason.too_large,
        DeadLetterReason.not_json,
        DeadLetterReason.unknown_type,
        DeadLetterReason.schema_violation,
        DeadLetterReason.future_timestamp,
        DeadLetterReason.key_mismatch,
        DeadLetterReason.processing_error,
    ]
    # Every reason an event can be rejected for (the delivery runner's own are tested with it).
    assert {d.reason for d in result.dead_letters} == set(DeadLetterReason) - DELIVERY_REASONS


# -- journeys through the batch core ---------------------------------------------------------------


def _journey_visitor(defs: Definitions) -> str:
    from streams.core.guardrails import assignment

    return next(
        v for v in (f"j{i}" for i in range(100)) if not assignment(v, defs.campaigns["cart_recovery"])[0]
    )


def _fire_all(defs: Definitions, store: dict[str, bytes], visitor: str, until: datetime) -> list[Message]:
    """Fire the visitor's timers one by one up to `until`; every message they sent."""
    sent: list[Message] = []
    for _ in range(60):
        due_at = Profile.from_bytes(store[visitor]).next_check_at
        if due_at is None or due_at > until.timestamp():
            return sent
        sent += run(defs, [], store, until, due={visitor: (0, due_at)}).messages
    raise AssertionError(f"more than 60 timers of {visitor} due by {until}")


def test_a_journey_fires_every_step_from_the_timer_and_a_replay_with_another_cut_has_the_same_ids(
    defs: Definitions,
) -> None:
    visitor = _journey_visitor(defs)
    add = event("a1", "add_to_cart", T0, visitor, product_id="P-1", price=40.0, quantity=2)
    view = event("p1", "page_view", T0 + timedelta(minutes=5), visitor, page_type="home")
    later_view = event("p2", "page_view", T0 + timedelta(hours=25), visitor, page_type="home")

    # Cut 1: both first events in one batch; every step from the timer; then a later page view.
    live: dict[str, bytes] = {}
    first = run(defs, records(add, view), live, T0 + timedelta(minutes=6)).messages
    first += _fire_all(defs, live, visitor, T0 + timedelta(hours=24, minutes=40))
    first += run(defs, records(later_view, start=2), live, T0 + timedelta(hours=25)).messages
    first += _fire_all(defs, live, visitor, T0 + timedelta(days=5))

    # Cut 2: one record per batch, and the later page view arrives before the coupon's timer fired:
    # that evaluation runs the step due at 24 h 30 min (stamped at its own moment).
    replay: dict[str, bytes] = {}
    second = run(defs, records(add), replay, T0 + timedelta(minutes=1)).messages
    second += run(defs, records(view, start=1), replay, T0 + timedelta(minutes=6)).messages
    second += _fire_all(defs, replay, visitor, T0 + timedelta(hours=1))
    second += run(defs, records(later_view, start=2), replay, T0 + timedelta(hours=25)).messages
    second += _fire_all(defs, replay, visitor, T0 + timedelta(days=5))

    for sent in (first, second):
        journey = [m for m in sent if m.journey == "cart_recovery"]
        assert [m.step for m in journey] == ["retarget", "coupon_10", "coupon_15"]
        assert [m.event_time for m in journey] == [
            T0 + timedelta(minutes=30),
            T0 + timedelta(hours=24, minutes=30),
            T0 + timedelta(hours=72, minutes=30),
        ]
    assert [m.message_id for m in first] == [m.message_id for m in second]
    assert len({m.message_id for m in first}) == len(first)
    assert (
        Profile.from_bytes(live[visitor]).next_check_at is None
        or "active" not in Profile.from_bytes(live[visitor]).journey_state
    )


def test_a_purchase_ends_the_journey_in_the_batch_and_is_a_conversion(defs: Definitions) -> None:
    visitor = _journey_visitor(defs)
    store: dict[str, bytes] = {}
    run(defs, records(event("a1", "add_to_cart", T0, visitor, product_id="P-1", price=40.0)), store, T0)
    retarget = _fire_all(defs, store, visitor, T0 + timedelta(hours=1))
    assert [m.step for m in retarget] == ["retarget"]
    buy = event("b1", "purchase", T0 + timedelta(hours=2), visitor, order_id="o-9", value=40.0)
    bought = run(defs, records(buy, start=1), store, T0 + timedelta(hours=2))
    assert [(c.message_id, c.order_id, c.value) for c in bought.conversions] == [
        (retarget[0].message_id, "o-9", 40.0)
    ]
    assert _fire_all(defs, store, visitor, T0 + timedelta(days=5)) == []


def test_reevaluation_keeps_the_journeys_timer_and_sends_nothing(defs: Definitions) -> None:
    visitor = _journey_visitor(defs)
    store: dict[str, bytes] = {}
    run(defs, records(event("a1", "add_to_cart", T0, visitor, product_id="P-1", price=40.0)), store, T0)
    _fire_all(defs, store, visitor, T0 + timedelta(hours=1))
    before = Profile.from_bytes(store[visitor])
    due = T0 + timedelta(hours=24, minutes=30)
    assert before.next_check_at is not None and before.next_check_at <= due.timestamp()
    result = reevaluate(
        [(visitor, 0)],
        lambda v, p: store.get(v),
        defs,
        {0: (T0 + timedelta(hours=30)).timestamp()},
        wall_now=(T0 + timedelta(hours=30)).timestamp(),
    )
    assert result.messages == []
    profile = result.visitors[visitor].profile if visitor in result.visitors else before
    assert profile.journey_state["active"] == before.journey_state["active"], "no journey advanced"
    assert profile.next_check_at is not None and profile.next_check_at <= due.timestamp()
