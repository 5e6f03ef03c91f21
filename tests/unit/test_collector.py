"""`streams.collector.parse_body`: Tessera events, arrays, Segment batches and Segment-spec calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import EVENT_ADAPTER
from streams.collector import CollectorItem, dead_letter_of, parse_body, route_items
from streams.simulate import simulate

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
LIMIT = 32_768


def parse(body: Any, limit: int = LIMIT, **kw: Any) -> list[CollectorItem]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_body(raw, NOW, limit, **kw)


def one(body: Any, **kw: Any) -> dict[str, Any]:
    """The canonical event of a body holding one valid item, as a dict."""
    items = parse(body, **kw)
    assert len(items) == 1
    assert items[0].error is None, items[0].detail
    event = orjson.loads(items[0].raw)
    assert items[0].key == event["visitor_id"]
    return event


def tessera_event(**over: Any) -> dict[str, Any]:
    event = {
        "event_id": "e-1",
        "visitor_id": "v-1",
        "session_id": "s-1",
        "event_time": "2026-11-20T11:59:00.123Z",
        "type": "product_view",
        "context": {
            "page_url": "https://shop.example/p/P-1001",
            "page_path": "/p/P-1001",
            "ip": "2.242.0.217",
        },
        "properties": {"product_id": "P-1001", "category": "electronics", "price": 699.0},
    }
    event.update(over)
    return event


def track(event: str, properties: dict[str, Any], **over: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": "track",
        "event": event,
        "anonymousId": "anon-1",
        "messageId": "msg-1",
        "timestamp": "2026-11-20T11:58:00.000Z",
        "properties": properties,
        "context": {
            "page": {
                "url": "https://shop.example/p/P-1?x=1",
                "path": "/p/P-1",
                "referrer": "https://www.google.com/",
            },
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
            "ip": "176.0.0.217",
            "locale": "de-DE",
        },
    }
    call.update(over)
    return call


# -- Tessera events ---------------------------------------------------------------------------------


def test_one_tessera_event_becomes_canonical_bytes() -> None:
    items = parse(tessera_event())
    assert [(i.index, i.key, i.error) for i in items] == [(0, "v-1", None)]
    reparsed = EVENT_ADAPTER.validate_json(items[0].raw)
    assert reparsed == EVENT_ADAPTER.validate_python(tessera_event())
    # canonical is a fixed point
    assert parse(items[0].raw)[0].raw == items[0].raw
    assert items[0].ok


def test_segment_names_on_a_tessera_event_are_accepted() -> None:
    event = tessera_event()
    del event["event_id"], event["visitor_id"], event["event_time"]
    event |= {
        "messageId": "m-9",
        "anonymousId": "anon-9",
        "timestamp": "2026-11-20T10:00:00Z",
        "userId": "u-9",
    }
    out = one(event)
    assert (out["event_id"], out["visitor_id"], out["user_id"]) == ("m-9", "anon-9", "u-9")
    assert out["event_time"].startswith("2026-11-20T10:00:00")


def test_array_of_events() -> None:
    events = [tessera_event(event_id=f"e-{i}", visitor_id=f"v-{i % 2}") for i in range(5)]
    items = parse(events)
    assert [i.index for i in items] == list(range(5))
    assert [i.key for i in items] == ["v-0", "v-1", "v-0", "v-1", "v-0"]
    assert all(i.error is None for i in items)


def test_simulated_events_pass_unchanged() -> None:
    sim = simulate(40, 1, NOW)
    items = parse(sim.events)
    assert len(items) == len(sim.events)
    for item, event in zip(items, sim.events, strict=True):
        assert item.error is None and item.key == event["visitor_id"]
        assert EVENT_ADAPTER.validate_json(item.raw) == EVENT_ADAPTER.validate_python(event)


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"not json", b'{"event_id": "e-1", "visitor_id"', b"\xff\xfe{\x00"])
def test_body_that_is_not_json(body: bytes) -> None:
    items = parse_body(body, NOW, LIMIT)
    assert len(items) == 1
    assert items[0].error == DeadLetterReason.not_json and items[0].error == "not_json"
    assert items[0].raw == body and items[0].key is None and items[0].detail


def test_empty_array_and_empty_batch() -> None:
    assert parse([]) == []
    assert parse({"batch": []}) == []


def test_batch_that_is_not_an_array() -> None:
    items = parse({"batch": {"type": "track"}})
    assert [(i.error, i.index) for i in items] == [(DeadLetterReason.schema_violation, 0)]


def test_batch_mixing_good_and_bad() -> None:
    big = tessera_event(
        event_id="e-big", type="custom", properties={"name": "dump", "properties": {"x": "y" * 40_000}}
    )
    body = {
        "batch": [
            track("Product Viewed", {"product_id": "P-1", "price": 10}),  # 0 ok
            {"type": "teleport", "anonymousId": "anon-2", "messageId": "m-2"},  # 1 unknown type
            track("Product Added", {"price": 5}, messageId="m-3"),  # 2 no product id
            tessera_event(event_id="e-4", properties={"category": "books"}),  # 3 schema violation
            big,  # 4 too large
            7,  # 5 not an object
            {"anonymousId": "anon-6"},  # 6 no type
            tessera_event(event_id="e-7", visitor_id="v-7"),  # 7 ok
            {"type": "alias", "userId": "u-8", "previousId": "anon-8"},  # 8 ok: identify of anon-8
        ]
    }
    items = parse(body)
    assert [i.index for i in items] == list(range(9))
    assert [i.error for i in items] == [
        None,
        DeadLetterReason.unknown_type,
        DeadLetterReason.schema_violation,
        DeadLetterReason.schema_violation,
        DeadLetterReason.too_large,
        DeadLetterReason.schema_violation,
        DeadLetterReason.schema_violation,
        None,
        None,
    ]
    assert [i.key for i in items] == [
        "anon-1",
        "anon-2",
        "anon-1",
        "v-1",
        "v-1",
        None,
        "anon-6",
        "v-7",
        "anon-8",
    ]
    assert "product_id" in (items[2].detail or "")
    assert "product_id" in (items[3].detail or "")
    # a rejected element keeps its own bytes (re-serialised), for the dead-letter topic
    assert orjson.loads(items[1].raw)["type"] == "teleport"
    assert items[5].raw == b"7"
    for item in items:
        if item.error is None:
            EVENT_ADAPTER.validate_json(item.raw)
        assert item.error is None or item.detail


def test_too_large_single_body_keeps_the_body() -> None:
    event = tessera_event(type="custom", properties={"name": "dump", "properties": {"x": "y" * 2000}})
    body = orjson.dumps(event)
    items = parse_body(body, NOW, 1000)
    assert items[0].error == DeadLetterReason.too_large and items[0].raw == body and items[0].key == "v-1"


def test_future_timestamp_only_when_asked() -> None:
    event = tessera_event(event_time="2099-01-01T00:00:00Z")
    assert parse(event)[0].error is None
    items = parse(event, max_future_skew_s=300)
    assert items[0].error == DeadLetterReason.future_timestamp


# -- Segment calls ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "properties", "kind", "expected"),
    [
        (
            "Product Viewed",
            {"product_id": "P-1001", "sku": "S-1", "category": "electronics", "price": 699, "name": "X"},
            "product_view",
            {"product_id": "P-1001", "category": "electronics", "price": 699.0, "currency": "EUR"},
        ),
        (
            "Product Viewed",
            {"sku": "SKU-7", "price": 5},
            "product_view",
            {"product_id": "SKU-7", "price": 5.0},
        ),
        (
            "Product Added",
            {"product_id": 42, "category": "books", "price": 12.5, "quantity": 2, "currency": "CHF"},
            "add_to_cart",
            {"product_id": "42", "category": "books", "price": 12.5, "quantity": 2, "currency": "CHF"},
        ),
        (
            "Product Removed",
            {"product_id": "P-1", "quantity": 1},
            "remove_from_cart",
            {"product_id": "P-1", "quantity": 1},
        ),
        (
            "Cart Viewed",
            {
                "cart_id": "c",
                "products": [
                    {"product_id": "P-1", "price": 10, "quantity": 2},
                    {"product_id": "P-2", "price": 5},
                ],
            },
            "cart_view",
            {"cart_value": 25.0, "items": 3},
        ),
        ("Checkout Started", {"order_id": "o", "value": 30, "revenue": 25}, "checkout", {"cart_value": 30.0}),
        ("Checkout Step Viewed", {"step": 2}, "checkout", {"step": 2}),
        (
            "Coupon Applied",
            {"order_id": "o", "coupon_id": "c-1", "coupon_name": "SPRING20", "discount": 8.5},
            "coupon_applied",
            {"coupon": "SPRING20", "discount_value": 8.5},
        ),
        ("Coupon Applied", {"coupon_id": "C-ID"}, "coupon_applied", {"coupon": "C-ID"}),
        ("Products Searched", {"query": "laufschuhe"}, "search", {"query": "laufschuhe"}),
        (
            "Product List Viewed",
            {"list_id": "l", "category": "sports"},
            "category_view",
            {"category": "sports"},
        ),
        ("Product Category Viewed", {"category": "home_decor"}, "category_view", {"category": "home_decor"}),
        (
            "Product List Viewed",
            {"list_id": "search-results"},
            "custom",
            {"name": "Product List Viewed", "properties": {"list_id": "search-results"}},
        ),
        (
            "Video Played",
            {"video": "intro", "seconds": 12},
            "custom",
            {"name": "Video Played", "properties": {"video": "intro", "seconds": 12}},
        ),
    ],
)
def test_track_mapping(name: str, properties: dict[str, Any], kind: str, expected: dict[str, Any]) -> None:
    out = one(track(name, properties))
    assert out["type"] == kind
    assert {k: out["properties"].get(k) for k in expected} == expected
    assert (out["event_id"], out["visitor_id"]) == ("msg-1", "anon-1")


def test_order_completed_maps_to_purchase() -> None:
    products = [
        {
            "product_id": "P-2002",
            "sku": "Y",
            "category": "clothing",
            "price": 59.9,
            "quantity": 2,
            "coupon": "ITEM5",
        },
        {"sku": "P-4000", "category": "books", "price": 10, "discount": 2},
    ]
    props = {
        "order_id": "O-1",
        "total": 131.8,
        "revenue": 120,
        "coupon": "SAVE10",
        "currency": "EUR",
        "products": products,
    }
    out = one(track("Order Completed", props))
    assert out["type"] == "purchase"
    p = out["properties"]
    assert (p["order_id"], p["value"], p["coupon"], p["currency"]) == ("O-1", 131.8, "SAVE10", "EUR")
    assert p["items"] == [
        {
            "product_id": "P-2002",
            "category": "clothing",
            "price": 59.9,
            "quantity": 2,
            "discount": 0.0,
            "coupon": "ITEM5",
        },
        {"product_id": "P-4000", "category": "books", "price": 10.0, "quantity": 1, "discount": 2.0},
    ]
    # value precedence: total, else revenue, else value, else the sum of the products
    assert (
        one(track("Order Completed", {"order_id": "o", "revenue": 120, "value": 99}))["properties"]["value"]
        == 120
    )
    assert one(track("Order Completed", {"order_id": "o", "value": 99}))["properties"]["value"] == 99
    summed = one(track("Order Completed", {"checkout_id": "c-1", "products": products}))["properties"]
    assert summed["value"] == pytest.approx(129.8) and summed["order_id"] == "c-1"
    assert "coupon" not in summed


def test_segment_context_is_mapped() -> None:
    context = {
        "page": {"url": "https://shop.example/c/sports?utm_source=nl", "referrer": "https://l.facebook.com/"},
        "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8)",
        "ip": "169.32.0.217",
        "locale": "de-CH",
        "campaign": {
            "name": "spring",
            "source": "newsletter",
            "medium": "email",
            "term": "t",
            "content": "c",
        },
        "screen": {"width": 412, "height": 915, "density": 3},
        "location": {"latitude": 47.37, "longitude": 8.54, "city": "Zurich", "country": "Switzerland"},
        "library": {"name": "analytics.js", "version": "5.0"},
    }
    out = one(track("Product Viewed", {"product_id": "P-1"}, context=context))
    ctx = out["context"]
    assert ctx["page_url"] == "https://shop.example/c/sports?utm_source=nl"
    assert ctx["page_path"] == "/c/sports"  # taken from the URL
    assert ctx["referrer"] == "https://l.facebook.com/"
    assert ctx["user_agent"].startswith("Mozilla/5.0 (Linux; Android 14")
    assert (ctx["ip"], ctx["locale"]) == ("169.32.0.217", "de-CH")
    assert ctx["utm"] == {
        "source": "newsletter",
        "medium": "email",
        "campaign": "spring",
        "term": "t",
        "content": "c",
    }
    assert ctx["screen"] == {"width": 412, "height": 915}
    assert ctx["geo"] == {"city": "Zurich", "lat": 47.37, "lon": 8.54}  # "Switzerland" is no ISO code
    assert ctx["consent"] == {"analytics": True, "personalization": True, "marketing": True}


@pytest.mark.parametrize(
    ("consent", "expected"),
    [
        ({"personalization": False}, {"analytics": True, "personalization": False, "marketing": True}),
        (
            {"categoryPreferences": {"Advertising": False, "Analytics": True, "Functional": False}},
            {"analytics": True, "personalization": False, "marketing": False},
        ),
    ],
)
def test_consent_forms(consent: dict[str, Any], expected: dict[str, bool]) -> None:
    call = track("Product Viewed", {"product_id": "P-1"})
    call["context"]["consent"] = consent
    assert one(call)["context"]["consent"] == expected


def test_page_and_screen_calls() -> None:
    page: dict[str, Any] = {
        "type": "page",
        "name": "Home",
        "anonymousId": "anon-1",
        "messageId": "m-p",
        "timestamp": "2026-11-20T11:00:00Z",
        "properties": {
            "title": "Shop — Home",
            "url": "https://shop.example/",
            "path": "/",
            "referrer": "https://www.bing.com/",
        },
        "context": {"userAgent": "UA"},
    }
    out = one(page)
    assert out["type"] == "page_view"
    assert out["properties"] == {"title": "Shop — Home"}
    assert (out["context"]["page_url"], out["context"]["page_path"]) == ("https://shop.example/", "/")
    assert out["context"]["referrer"] == "https://www.bing.com/"
    # context.page wins over properties
    page["context"]["page"] = {"path": "/landing", "url": "https://shop.example/landing"}
    page["properties"]["page_type"] = "content"
    out = one(page)
    assert out["context"]["page_path"] == "/landing"
    assert out["properties"]["page_type"] == "content"
    screen = {"type": "screen", "name": "Checkout", "anonymousId": "app-1", "messageId": "m-s"}
    out = one(screen)
    assert out["type"] == "page_view" and out["properties"] == {"title": "Checkout", "page_type": "other"}


def test_identify_call() -> None:
    traits = {
        "age": "34",
        "gender": "f",
        "plan": "gold",
        "logins": 12,
        "address": {"city": "Köln"},
        "tags": ["a"],
    }
    call = {
        "type": "identify",
        "userId": "u-1",
        "anonymousId": "anon-1",
        "messageId": "m-i",
        "traits": traits,
    }
    out = one(call)
    assert out["type"] == "identify" and out["user_id"] == "u-1" and out["visitor_id"] == "anon-1"
    assert out["properties"] == {"age": 34, "gender": "f", "traits": {"plan": "gold", "logins": 12}}
    many = {"type": "identify", "userId": "u-2", "traits": {f"t{i}": i for i in range(100)}}
    out = one(many)
    assert len(out["properties"]["traits"]) == 64
    assert out["visitor_id"] == "u-2"  # no anonymousId: the userId is the visitor


def test_missing_message_id_gets_a_content_hash() -> None:
    call = track("Product Viewed", {"product_id": "P-1"})
    del call["messageId"]
    first, again = one(call)["event_id"], one(dict(call))["event_id"]
    assert first == again and first.startswith("h-")
    call["properties"] = {"product_id": "P-2"}
    assert one(call)["event_id"] != first


def test_missing_timestamp_is_the_receive_time() -> None:
    call = track("Product Viewed", {"product_id": "P-1"})
    del call["timestamp"]
    assert EVENT_ADAPTER.validate_python(one(call)).event_time == NOW
    call["originalTimestamp"] = "2026-11-20T09:00:00Z"
    assert EVENT_ADAPTER.validate_python(one(call)).event_time == datetime(2026, 11, 20, 9, tzinfo=UTC)


def test_missing_visitor_is_a_schema_violation() -> None:
    call = track("Product Viewed", {"product_id": "P-1"})
    del call["anonymousId"]
    items = parse(call)
    assert items[0].error == DeadLetterReason.schema_violation and "visitor_id" in (items[0].detail or "")


def test_group_call_is_a_custom_group_event() -> None:
    event = one({"type": "group", "groupId": "g", "anonymousId": "a", "traits": {"plan": "pro"}})
    assert event["type"] == "custom"
    group = {"group_id": "g", "traits": {"plan": "pro"}}
    assert event["properties"] == {"name": "group", "properties": group}


def test_alias_is_an_identify_of_the_previous_id() -> None:
    event = one({"type": "alias", "previousId": "anon-9", "userId": "u-9", "messageId": "m-9"})
    assert (event["type"], event["visitor_id"], event["user_id"]) == ("identify", "anon-9", "u-9")
    assert event["properties"]["traits"] == {"previous_id": "anon-9"}
    # An anonymousId, when the call has one, stays the visitor.
    event = one({"type": "alias", "anonymousId": "anon-1", "previousId": "old", "userId": "u-9"})
    assert event["visitor_id"] == "anon-1"


# -- clock skew ----------------------------------------------------------------------------------------


def _time(event: dict[str, Any]) -> datetime:
    return EVENT_ADAPTER.validate_python(event).event_time


def test_sent_at_corrects_a_device_clock() -> None:
    # The device clock is 1 h ahead: it stamped 12:59:00 and sent at 13:00:00; we received at 12:00:00.
    call = track(
        "Product Viewed",
        {"product_id": "P-1"},
        timestamp="2026-11-20T12:59:00Z",
        sentAt="2026-11-20T13:00:00Z",
    )
    assert _time(one(call)) == NOW - timedelta(minutes=1)


def test_batch_sent_at_applies_to_items_without_their_own() -> None:
    own = track(
        "Product Viewed",
        {"product_id": "P-1"},
        timestamp="2026-11-20T11:00:00Z",
        sentAt="2026-11-20T12:00:00Z",
    )
    shared = track("Product Viewed", {"product_id": "P-2"}, messageId="m-2", timestamp="2026-11-20T10:00:00Z")
    body = {
        "batch": [own, shared],
        "sentAt": "2026-11-20T11:00:00Z",
        "context": {"ip": "9.9.9.9", "locale": "fr-CH"},
    }
    items = parse(body)
    events = [orjson.loads(i.raw) for i in items]
    assert _time(events[0]) == datetime(2026, 11, 20, 11, tzinfo=UTC)  # own sentAt: no skew
    assert _time(events[1]) == datetime(2026, 11, 20, 11, tzinfo=UTC)  # batch sentAt: +1 h
    # the call's own context wins over the batch's; the batch fills what the call lacks
    assert events[0]["context"]["ip"] == "176.0.0.217" and events[0]["context"]["locale"] == "de-DE"
    del shared["context"]["ip"]
    assert (
        orjson.loads(parse({"batch": [shared], "context": {"ip": "9.9.9.9"}})[0].raw)["context"]["ip"]
        == "9.9.9.9"
    )


def test_sent_at_on_a_tessera_event_and_unreadable_sent_at() -> None:
    event = tessera_event(event_time="2026-11-20T11:30:00Z", sentAt="2026-11-20T11:40:00Z")
    assert _time(one(event)) == datetime(2026, 11, 20, 11, 50, tzinfo=UTC)
    event["sentAt"] = "yesterday-ish"
    assert _time(one(event)) == datetime(2026, 11, 20, 11, 30, tzinfo=UTC)
    naive = parse_body(
        orjson.dumps(tessera_event(sentAt="2026-11-20T11:59:00")), NOW.replace(tzinfo=None), LIMIT
    )
    assert _time(orjson.loads(naive[0].raw)) == datetime(2026, 11, 20, 12, 0, 0, 123000, tzinfo=UTC)


def test_identify_is_read_as_tessera_or_segment_by_its_fields() -> None:
    tessera = {
        "event_id": "e-i",
        "visitor_id": "v-i",
        "event_time": "2026-11-20T11:00:00Z",
        "type": "identify",
        "properties": {"age": 30, "traits": {"plan": "gold"}},
    }
    out = one(tessera)
    assert (out["event_id"], out["visitor_id"], out["properties"]["age"]) == ("e-i", "v-i", 30)
    aliased = {
        "messageId": "m-i",
        "anonymousId": "a-i",
        "timestamp": "2026-11-20T11:00:00Z",
        "type": "identify",
    }
    out = one({**aliased, "properties": {"age": 41}})
    assert out["properties"]["age"] == 41  # Tessera's shape with Segment's names
    out = one({**aliased, "traits": {"age": 52}})
    assert out["properties"]["age"] == 52  # Segment's identify


# -- the items on Kafka -------------------------------------------------------------------------------


def route(body: Any) -> Any:
    return route_items(parse(body), events_topic="events", dlq_topic="events.dlq", received_at=NOW)


def test_accepted_items_go_to_the_events_topic_and_rejected_ones_to_the_dlq_keyed_by_visitor() -> None:
    teleport = {"type": "teleport", "anonymousId": "anon-2", "messageId": "m-2"}
    routed = route([tessera_event(), teleport, 7, tessera_event(event_id="e-3", visitor_id="v-3")])
    assert [(topic, key) for topic, key, _ in routed.records] == [
        ("events", b"v-1"),
        ("events.dlq", b"anon-2"),
        ("events.dlq", None),  # no visitor id to read
        ("events", b"v-3"),
    ]
    assert EVENT_ADAPTER.validate_json(routed.records[0][2]).event_id == "e-1"
    letter = DeadLetter.model_validate_json(routed.records[1][2])
    assert (letter.reason, letter.source, letter.topic, letter.key) == (
        DeadLetterReason.unknown_type,
        "collector",
        "events",
        "anon-2",
    )
    assert orjson.loads(letter.original) == teleport and letter.received_at == NOW
    assert routed.status == 200
    assert orjson.loads(orjson.dumps(routed.answer)) == {
        "accepted": 2,
        "rejected": [
            {"index": 1, "reason": "unknown_type", "detail": "unknown event type 'teleport'"},
            {"index": 2, "reason": "schema_violation", "detail": "an event must be a JSON object, not int"},
        ],
    }


def test_a_body_with_every_event_rejected_answers_400_and_an_empty_one_200() -> None:
    routed = route(b"{oops")
    assert routed.status == 400 and routed.answer["accepted"] == 0
    assert [(topic, key) for topic, key, _ in routed.records] == [("events.dlq", None)]
    assert DeadLetter.model_validate_json(routed.records[0][2]).original == b"{oops"
    empty = route([])
    assert (empty.status, empty.answer, empty.records) == (200, {"accepted": 0, "rejected": []}, [])


def test_an_accepted_item_has_no_dead_letter() -> None:
    with pytest.raises(ValueError):
        dead_letter_of(parse(tessera_event())[0], topic="events", received_at=NOW)
