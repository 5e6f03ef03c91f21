"""The ClickHouse sink's row builders for the funnel's tables: `messages` rows carry Message v2's
fields, `conversions` rows the engine's attribution, and `message_outcomes` rows are picked from a
batch's events (outcome events naming a message, nothing else; `event_rows` sets the custom events
aside as it builds the `events` rows). Pure: no ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import EVENT_ADAPTER, Conversion, Device, EnrichedEvent, Geo, Message, Traffic
from sinks.clickhouse import (
    CONVERSION_COLUMNS,
    MESSAGE_COLUMNS,
    OUTCOME_COLUMNS,
    conversion_row,
    event_rows,
    message_row,
    outcome_rows,
)

AT = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)


def enriched(event_id: str, kind: str, properties: dict[str, Any], visitor: str = "v1") -> EnrichedEvent:
    event = EVENT_ADAPTER.validate_python(
        {
            "event_id": event_id,
            "visitor_id": visitor,
            "event_time": AT,
            "type": kind,
            "properties": properties,
        }
    )
    return EnrichedEvent(
        event=event, device=Device(), geo=Geo(), traffic=Traffic(), received_at=AT, partition=0, offset=1
    )


def test_message_row_carries_the_v2_fields() -> None:
    message = Message(
        message_id="m1",
        visitor_id="v1",
        kind="exit_intent_overlay",  # type: ignore[arg-type]
        channel="onsite",
        rule="cart_recovery.remind",
        event_time=AT,
        campaign="spring",
        variant="b",
        holdout=True,
        journey="cart_recovery",
        step="remind",
        cost=0.25,
    )
    row = dict(zip(MESSAGE_COLUMNS, message_row(message), strict=True))
    assert row["event_time"] == AT_MS and row["expires_at"] is None
    assert {k: row[k] for k in ("campaign", "variant", "holdout", "journey", "step", "cost")} == {
        "campaign": "spring",
        "variant": "b",
        "holdout": True,
        "journey": "cart_recovery",
        "step": "remind",
        "cost": 0.25,
    }
    v1 = Message.model_validate(
        {
            "schema_version": 1,
            "message_id": "m2",
            "visitor_id": "v1",
            "kind": "coupon_email",
            "channel": "email",
            "rule": "cart_abandoned_30m",
            "event_time": AT,
        }
    )
    old = dict(zip(MESSAGE_COLUMNS, message_row(v1), strict=True))
    assert [old[k] for k in ("campaign", "variant", "holdout", "journey", "step", "cost")] == [
        "",
        "",
        False,
        "",
        "",
        0.0,
    ]


def test_conversion_row() -> None:
    conversion = Conversion(
        message_id="m1",
        visitor_id="v1",
        campaign=None,
        variant=None,
        rule="exit_intent_overlay",
        message_time=AT,
        event_time=AT + timedelta(hours=2),
        order_id="o-7",
        value=42.5,
        currency="CHF",
    )
    assert dict(zip(CONVERSION_COLUMNS, conversion_row(conversion), strict=True)) == {
        "message_id": "m1",
        "order_id": "o-7",
        "visitor_id": "v1",
        "campaign": "",
        "variant": "",
        "holdout": False,
        "journey": "",
        "step": "",
        "rule": "exit_intent_overlay",
        "message_time": AT_MS,
        "event_time": AT_MS + 2 * 3_600_000,
        "value": 42.5,
        "currency": "CHF",
    }


def test_outcome_rows_pick_outcome_events_naming_a_message() -> None:
    def outcome(event_id: str, name: str, **props: Any) -> tuple[EnrichedEvent, tuple[str, ...]]:
        return enriched(event_id, "custom", {"name": name, "properties": props}), ("a",)

    events = [
        (enriched("e1", "page_view", {}), ("a",)),
        outcome("e2", "message_shown", message_id="m1", outcome="shown", display="overlay"),
        outcome("e3", "message_clicked", message_id="m1", outcome="clicked"),
        outcome("e4", "message_dismissed", message_id="m2"),
        outcome("e5", "message_shown"),  # no message id: an event only
        outcome("e6", "message_shown", message_id=7),  # not a string
        outcome("e7", "message_shown", message_id=""),
        outcome("e8", "wishlist_add", message_id="m1"),  # not an outcome
    ]
    custom: list[EnrichedEvent] = []
    assert len(event_rows(events, custom)) == len(events)  # every event is still an `events` row
    assert [e.event.event_id for e in custom] == [f"e{i}" for i in range(2, 9)]  # set aside as written
    assert outcome_rows(custom) == outcome_rows(e for e, _ in events)
    rows = [dict(zip(OUTCOME_COLUMNS, row, strict=True)) for row in outcome_rows(custom)]
    assert rows == [
        {
            "event_id": "e2",
            "message_id": "m1",
            "visitor_id": "v1",
            "outcome": "shown",
            "event_time": AT_MS,
            "display": "overlay",
        },
        {
            "event_id": "e3",
            "message_id": "m1",
            "visitor_id": "v1",
            "outcome": "clicked",
            "event_time": AT_MS,
            "display": "",
        },
        {
            "event_id": "e4",
            "message_id": "m2",
            "visitor_id": "v1",
            "outcome": "dismissed",
            "event_time": AT_MS,
            "display": "",
        },
    ]
    assert outcome_rows([]) == []
