"""`streams.intake.Door`: write keys, CORS, size limits and the Segment routes, apart from HTTP."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.collector import CollectorAnswer, CollectorError
from schemas.deadletter import DeadLetter
from schemas.messages import Message
from schemas.onsite import InboxAnswer
from streams.browser import tracker_js
from streams.browser.shop import CATALOG, shop_page
from streams.intake import CALL_ROUTES, Door, DoorAnswer, DoorRequest, write_key_of_authorization
from streams.settings import Settings, Site

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
SHOP_KEY = "shop-write-key-1"
APP_KEY = "app-write-key-22"
SHOP_ORIGIN = "https://shop.example"
SITES = {
    "shop": Site(write_key=SHOP_KEY, origins=(SHOP_ORIGIN, "https://www.shop.example")),
    "app": Site(write_key=APP_KEY, origins=()),
    "open-site": Site(write_key="anything-goes-key", origins=("*",)),
}
OWN = "http://127.0.0.1:6066"


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def door(**kw: Any) -> Door:
    sites = kw.pop("sites", {k: v for k, v in SITES.items() if k != "open-site"})
    return Door(sites, events_topic="ev", dlq_topic="ev.dlq", **kw)


def request(route: str = "batch", key: str | None = SHOP_KEY, **kw: Any) -> DoorRequest:
    return DoorRequest(route=route, authorization=basic(key) if key else None, own_origin=OWN, **kw)


def track(event: str = "Product Viewed", **over: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": "track",
        "event": event,
        "anonymousId": "anon-1",
        "messageId": f"m-{event}",
        "timestamp": (NOW - timedelta(seconds=5)).isoformat(),
        "properties": {"product_id": "P-1001", "category": "electronics", "price": 249.0},
    }
    call.update(over)
    return call


def collect(req: DoorRequest, body: Any, d: Door | None = None) -> DoorAnswer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return (d or door()).collect(req, raw, NOW)


def events(answer: DoorAnswer, topic: str = "ev") -> list[dict[str, Any]]:
    return [orjson.loads(value) for t, _, value in answer.records if t == topic]


# -- write keys: 401 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (basic("k-1"), "k-1"),
        ("Basic " + base64.b64encode(b"k-1").decode(), "k-1"),  # no colon
        ("basic " + base64.b64encode(b"k-1:secret").decode(), "k-1"),
        ("Bearer k-1", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        (None, None),
        ("", None),
    ],
)
def test_write_key_is_the_basic_user_name(header: str | None, key: str | None) -> None:
    assert write_key_of_authorization(header) == key


def test_missing_write_key_is_401_and_nothing_is_sent() -> None:
    answer = collect(request(key=None), {"batch": [track()]})
    assert answer.status == 401 and answer.records == []
    error = CollectorError.model_validate(answer.body)
    assert error.error == "missing_write_key" and error.accepted == 0
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


def test_unknown_write_key_is_401_before_the_body_is_read() -> None:
    refused = door().before_body(request(key="not-a-site-key", content_length=10))
    assert refused is not None and refused.status == 401
    assert refused.body["error"] == "unknown_write_key"
    answer = collect(request(key="not-a-site-key"), {"batch": [track()]})
    assert (answer.status, answer.records) == (401, [])


def test_unknown_write_key_in_the_body_is_401() -> None:
    answer = collect(request(key=None), {"batch": [track()], "writeKey": "nope-nope"})
    assert (answer.status, answer.body["error"], answer.records) == (401, "unknown_write_key", [])


def test_write_key_in_the_body_is_accepted_as_analytics_js_sends_it() -> None:
    answer = collect(request(key=None), {"batch": [track()], "writeKey": SHOP_KEY})
    assert answer.status == 200 and answer.site_id == "shop"
    assert [e["context"]["site_id"] for e in events(answer)] == ["shop"]


def test_no_sites_configured_refuses_everything_and_says_how_to_configure() -> None:
    answer = collect(request(key=None), {"batch": [track()]}, door(sites={}))
    assert answer.status == 401 and "TESSERA_SITES" in answer.body["detail"]


def test_open_mode_accepts_calls_without_a_key_and_names_no_site() -> None:
    d = door(open_mode=True)
    answer = collect(request(key=None, origin="https://anywhere.example"), {"batch": [track()]}, d)
    assert answer.status == 200 and answer.site_id is None
    assert "site_id" not in events(answer)[0]["context"]
    assert answer.headers["Access-Control-Allow-Origin"] == "https://anywhere.example"
    # A known key still names its site.
    assert collect(request(), {"batch": [track()]}, d).site_id == "shop"


def test_a_client_cannot_name_its_own_site() -> None:
    call = track(context={"site_id": "app"})
    assert events(collect(request(), {"batch": [call]}))[0]["context"]["site_id"] == "shop"


# -- size limits: 413 ------------------------------------------------------------------------------


def test_batch_over_the_limit_is_413_from_content_length_before_reading() -> None:
    d = door(max_batch_bytes=1000)
    refused = d.before_body(request(content_length=1001))
    assert refused is not None and refused.status == 413
    assert CollectorError.model_validate(refused.body).error == "batch_too_large"
    assert d.before_body(request(content_length=1000)) is None


def test_batch_over_the_limit_is_413_from_the_body() -> None:
    d = door(max_batch_bytes=2000)
    body = {"batch": [track(messageId=f"m-{i}") for i in range(20)]}
    answer = collect(request(origin=SHOP_ORIGIN), body, d)
    assert answer.status == 413 and answer.records == []
    assert answer.body["error"] == "batch_too_large" and "limit 2000" in answer.body["detail"]
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP_ORIGIN  # the browser can read why


def test_single_call_over_the_event_limit_is_413() -> None:
    d = door(max_event_bytes=500)
    call = track(properties={"product_id": "P-1", "note": "x" * 600})
    answer = collect(request("track"), call, d)
    assert answer.status == 413 and answer.body["error"] == "event_too_large"
    refused = d.before_body(request("track", content_length=501))
    assert refused is not None and refused.body["error"] == "event_too_large"


def test_event_over_the_limit_inside_a_batch_is_refused_alone() -> None:
    d = door(max_event_bytes=600)
    big = track(messageId="big", properties={"product_id": "P-1", "note": "x" * 700})
    answer = collect(request(), {"batch": [track(), big]}, d)
    assert answer.status == 200
    parsed = CollectorAnswer.model_validate(answer.body)
    assert parsed.accepted == 1 and [(r.index, r.reason) for r in parsed.rejected] == [(1, "too_large")]
    [letter] = [DeadLetter.model_validate_json(v) for t, _, v in answer.records if t == "ev.dlq"]
    assert letter.reason == "too_large" and letter.source == "collector"


def test_gzip_bodies_are_inflated_within_the_limit() -> None:
    body = gzip.compress(orjson.dumps({"batch": [track()]}))
    answer = collect(request(content_encoding="gzip"), body)
    assert answer.status == 200 and len(events(answer)) == 1
    bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
    answer = collect(request(content_encoding="gzip"), bomb, door(max_batch_bytes=50_000))
    assert answer.status == 413 and answer.records == []


# -- per event: 400 --------------------------------------------------------------------------------


def test_every_event_refused_is_400_with_a_typed_reason_each() -> None:
    future = track(timestamp=(NOW + timedelta(days=3)).isoformat(), messageId="f")
    body = {
        "batch": [{"type": "teleport", "anonymousId": "a"}, future, track("Product Added", properties={})]
    }
    answer = collect(request(), body)
    assert answer.status == 400
    reasons = [(r["index"], r["reason"]) for r in answer.body["rejected"]]
    assert reasons == [(0, "unknown_type"), (1, "future_timestamp"), (2, "schema_violation")]
    assert {t for t, _, _ in answer.records} == {"ev.dlq"}


def test_year_9999_is_refused_at_the_door() -> None:
    answer = collect(request("track"), track(timestamp="9999-01-01T00:00:00Z"))
    assert answer.status == 400 and answer.body["rejected"][0]["reason"] == "future_timestamp"


def test_not_json_with_a_key_is_400_not_json() -> None:
    answer = collect(request(), b"{oops")
    assert answer.status == 400 and answer.body["rejected"][0]["reason"] == "not_json"
    # Without a key in the header, an unreadable body cannot carry one: 401.
    assert collect(request(key=None), b"{oops").status == 401


# -- CORS ------------------------------------------------------------------------------------------


def test_allowed_origin_gets_cors_headers_on_the_answer() -> None:
    answer = collect(request(origin=SHOP_ORIGIN), {"batch": [track()]})
    assert answer.status == 200
    assert answer.headers == {"Access-Control-Allow-Origin": SHOP_ORIGIN, "Vary": "Origin"}


def test_origin_of_another_site_is_403_without_cors_headers() -> None:
    answer = collect(request(key=APP_KEY, origin=SHOP_ORIGIN), {"batch": [track()]})
    assert (answer.status, answer.body["error"], answer.records) == (403, "origin_not_allowed", [])
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_unknown_origin_is_403_without_cors_headers() -> None:
    answer = collect(request(origin="https://evil.example"), {"batch": [track()]})
    assert answer.status == 403 and answer.headers == {}


def test_same_origin_and_star_and_no_origin_are_allowed() -> None:
    assert collect(request(origin=OWN), {"batch": [track()]}).status == 200  # the demo shop
    assert collect(request(key=APP_KEY), {"batch": [track()]}).status == 200  # a server, no Origin
    d = door(sites=SITES)
    star = request(key="anything-goes-key", origin="https://elsewhere.example")
    assert collect(star, {"batch": [track()]}, d).status == 200


def test_preflight_of_an_allowed_origin_is_204_with_the_allow_headers() -> None:
    status, headers = door().preflight(
        request(key=None, origin=SHOP_ORIGIN), "POST", "content-type, authorization"
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == SHOP_ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert int(headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize(
    ("origin", "method", "asked"),
    [
        ("https://evil.example", "POST", "content-type"),
        (None, "POST", None),
        (SHOP_ORIGIN, "DELETE", None),
        (SHOP_ORIGIN, "POST", "x-something-else"),
    ],
)
def test_preflight_refused_is_403_without_cors_headers(
    origin: str | None, method: str, asked: str | None
) -> None:
    assert door().preflight(request(key=None, origin=origin), method, asked) == (403, {})


# -- the Segment routes ----------------------------------------------------------------------------


def test_each_single_call_route_maps_a_body_without_type() -> None:
    ts = (NOW - timedelta(seconds=1)).isoformat()
    base = {"anonymousId": "anon-7", "timestamp": ts}
    bodies = {
        "track": {**base, "event": "Product Added", "properties": {"product_id": "P-1", "price": 3}},
        "page": {**base, "name": "Home", "properties": {"page_type": "home", "url": "https://s.example/"}},
        "screen": {**base, "name": "Cart"},
        "identify": {**base, "userId": "u-7", "traits": {"age": 33, "plan": "pro"}},
        "alias": {"previousId": "anon-7", "userId": "u-7", "timestamp": ts},
        "group": {**base, "groupId": "g-1", "traits": {"name": "ACME"}},
    }
    assert set(bodies) == CALL_ROUTES
    expected = {
        "track": "add_to_cart",
        "page": "page_view",
        "screen": "page_view",
        "identify": "identify",
        "alias": "identify",
        "group": "custom",
    }
    for route, body in bodies.items():
        answer = collect(request(route), body)
        assert answer.status == 200, (route, answer.body)
        [event] = events(answer)
        assert (event["type"], event["visitor_id"]) == (expected[route], "anon-7"), route
        assert event["context"]["site_id"] == "shop"
    identify = events(collect(request("identify"), bodies["identify"]))[0]
    assert identify["properties"]["age"] == 33 and identify["user_id"] == "u-7"
    alias = events(collect(request("alias"), bodies["alias"]))[0]
    assert alias["user_id"] == "u-7" and alias["properties"]["traits"] == {"previous_id": "anon-7"}


def test_batch_route_takes_each_item_type_and_sent_at() -> None:
    sent_at = (NOW - timedelta(minutes=60)).isoformat()  # the client's clock is an hour late
    body = {
        "batch": [
            track(
                "Order Completed",
                properties={
                    "order_id": "o-1",
                    "total": 40,
                    "coupon": "SAVE",
                    "products": [{"product_id": "P-1", "price": 20, "quantity": 2, "category": "books"}],
                },
                timestamp=(NOW - timedelta(minutes=61)).isoformat(),
            ),
            {"type": "page", "anonymousId": "anon-1", "properties": {"page_type": "cart"}},
        ],
        "sentAt": sent_at,
        "writeKey": SHOP_KEY,
    }
    answer = collect(request("batch", key=None), body)
    assert answer.status == 200 and answer.body == {"accepted": 2, "rejected": []}
    purchase, page = events(answer)
    assert purchase["type"] == "purchase" and purchase["properties"]["coupon"] == "SAVE"
    assert purchase["properties"]["items"][0]["quantity"] == 2
    assert datetime.fromisoformat(purchase["event_time"]) == NOW - timedelta(minutes=1)
    assert page["type"] == "page_view" and page["properties"]["page_type"] == "cart"


def test_client_ip_fills_in_a_segment_call_without_one() -> None:
    body = {"batch": [track(), track(messageId="m-2", context={"ip": "2.242.0.217"})]}
    first, second = events(collect(request(client_ip="178.197.224.1"), body))
    assert (first["context"]["ip"], second["context"]["ip"]) == ("178.197.224.1", "2.242.0.217")


def test_tracker_events_exit_intent_and_message_outcomes() -> None:
    body = {
        "batch": [
            track("Exit Intent", properties={"trigger": "mouse_leave"}),
            track("Exit Intent", messageId="m-2", properties={"trigger": "teleported"}),
            track(
                "Message Clicked",
                properties={
                    "message_id": "abc",
                    "kind": "exit_intent_overlay",
                    "rule": "exit_intent_overlay",
                    "display": "overlay",
                },
            ),
            track("Message Dismissed", messageId="m-4", properties={}),
        ]
    }
    answer = collect(request(), body)
    exit1, exit2, clicked = events(answer)
    assert (exit1["type"], exit1["properties"]["trigger"]) == ("exit_intent", "mouse_leave")
    assert exit2["properties"]["trigger"] == "other"
    assert clicked["type"] == "custom" and clicked["properties"]["name"] == "message_clicked"
    assert clicked["properties"]["properties"]["message_id"] == "abc"
    assert clicked["properties"]["properties"]["outcome"] == "clicked"
    assert [(r["index"], r["reason"]) for r in answer.body["rejected"]] == [(3, "schema_violation")]


# -- the inbox -------------------------------------------------------------------------------------


def message(message_id: str, channel: str, expires: datetime | None) -> dict[str, Any]:
    return Message(
        message_id=message_id,
        visitor_id="v-1",
        kind="exit_intent_overlay" if channel == "onsite" else "coupon_email",
        channel=channel,  # type: ignore[arg-type]
        rule="r",
        event_time=NOW - timedelta(minutes=1),
        expires_at=expires,
        payload={"template": "cart_reminder"},
    ).model_dump(mode="json")


def test_inbox_answers_unexpired_onsite_messages_only() -> None:
    found = {
        "inbox": [
            message("m-onsite", "onsite", NOW + timedelta(minutes=5)),
            message("m-old", "onsite", NOW - timedelta(seconds=1)),
            message("m-email", "email", None),
        ]
    }
    req = request("inbox", key=None, query_write_key=SHOP_KEY, origin=SHOP_ORIGIN)
    assert door().inbox_refusal(req) is None
    answer = door().inbox(req, "v-1", found, NOW)
    parsed = InboxAnswer.model_validate(answer.body)
    assert [m.message_id for m in parsed.messages] == ["m-onsite"]
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP_ORIGIN
    assert answer.headers["Cache-Control"] == "no-store"
    assert door().inbox(req, "nobody", None, NOW).body["messages"] == []


def test_inbox_needs_a_write_key_and_an_allowed_origin() -> None:
    refused = door().inbox_refusal(request("inbox", key=None))
    assert refused is not None and refused.status == 401
    refused = door().inbox_refusal(
        request("inbox", key=None, query_write_key=SHOP_KEY, origin="https://x.example")
    )
    assert refused is not None and refused.status == 403


# -- settings, tracker, shop -----------------------------------------------------------------------


def test_sites_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TESSERA_SITES", orjson.dumps({"shop": {"write_key": SHOP_KEY, "origins": [SHOP_ORIGIN]}}).decode()
    )
    monkeypatch.setenv("TESSERA_DEMO_SHOP_SITE", "shop")
    settings = Settings()
    assert settings.sites["shop"].write_key.get_secret_value() == SHOP_KEY
    assert settings.sites["shop"].origins == (SHOP_ORIGIN,)
    assert settings.collector_open is False and settings.max_batch_bytes == 512_000
    assert Door.from_settings(settings).site_of(SHOP_KEY) == ("shop", None)
    assert "write-key" not in repr(settings)  # the keys are secrets in logs


def test_tracker_is_shipped_and_small() -> None:
    source = tracker_js()
    assert b"sendBeacon" in source and b"/v1/inbox/" in source and b"Exit Intent" in source
    assert len(gzip.compress(source, 9)) < 6_000


def test_shop_pages_embed_the_tracker_and_the_write_key() -> None:
    product = CATALOG[0]
    for path in ("/shop/", "/shop/cart", f"/shop/c/{product.category}", f"/shop/p/{product.product_id}"):
        status, html = shop_page(path, "key<&>")
        assert status == 200, path
        assert 'src="/tracker.js"' in html and 'data-write-key="key&lt;&amp;&gt;"' in html
    assert shop_page("/shop/p/nope", "k")[0] == 404
    assert shop_page("/shop/c/nope", "k")[0] == 404


def test_tessera_up_without_sites_configures_the_demo_site_and_shop() -> None:
    from streams.cli import DEMO_WRITE_KEY, with_demo_site

    settings = with_demo_site(Settings(web_port=7001))
    assert settings.demo_shop_site == "demo"
    assert settings.sites["demo"].write_key.get_secret_value() == DEMO_WRITE_KEY
    assert "http://127.0.0.1:7001" in settings.sites["demo"].origins
    configured = Settings(sites={"shop": SITES["shop"]})
    assert with_demo_site(configured) is configured  # configured sites are never widened
    opened = Settings(collector_open=True)
    assert with_demo_site(opened) is opened
