"""Parsing of collector bodies: Tessera events and Segment-spec calls → canonical events.

Pure: bytes in, `CollectorItem`s out (`parse_body`, or `parse_payload` for a body already decoded),
then the Kafka records and the answer of those items (`route_items`). What comes before (write key,
origin, size limits) is `streams.intake`; the web views that send the records are in `streams.web`.

Accepted bodies
---------------
- one event object, a JSON array of them, or Segment's batch envelope `{"batch": [...]}` (its
  top-level `context` is merged under each call's own, and its `sentAt` applies to calls without one);
- each item either a Tessera event (`type` is one of `schemas.events.EventType`; Segment's field
  names `anonymousId`/`messageId`/`userId`/`timestamp` are accepted by the schema itself) or a
  Segment call: `track`, `page`, `screen`, `identify`, `alias`, `group`. `identify` is both: an
  item with `visitor_id`, `event_id`, or `properties` without top-level `traits` is read as
  Tessera's, anything else as Segment's. The single-call routes (`/v1/track`, …) pass their call as
  `default_type`, for bodies without a `type`;
- a top-level `writeKey` is the request's write key (`body_write_key`), read by `streams.intake`.

Segment mapping
---------------
Envelope: `anonymousId` → visitor_id (falling back to `userId` when a call carries only that),
`userId` → user_id, `messageId` → event_id (a call without one gets `h-` + a hash of its content,
so identical retries still deduplicate), `timestamp` (else `originalTimestamp`, else the receive
time) → event_time, `sessionId` (top level or in `context`) → session_id.
Context: `page.url/path/referrer` (page calls also read them from `properties`; a missing path is
taken from the URL) → page_url/page_path/referrer, `userAgent` → user_agent, `ip`, `locale`,
`campaign {name, source, medium, term, content}` → utm (name → campaign), `screen {width, height}`,
`consent` (Tessera's `{analytics, personalization, marketing}` booleans, or Segment's
`categoryPreferences`: Analytics → analytics, Personalization/Functional → personalization,
Advertising/Marketing → marketing), `location {latitude, longitude, city, region, country}` →
geo (a country only when it is an ISO alpha-2 code).
Calls: `page`/`screen` → page_view (title from `properties.title` or `name`); `identify` → identify
(`traits.age`, `traits.gender`, other scalar traits, at most 64); `alias` → identify of the visitor
`previousId` (unless the call has an `anonymousId`) with `user_id` = `userId` and the trait
`previous_id`: Tessera does not merge profiles, it records which user the visitor is; `group` →
custom `group` with `{group_id, traits}`; `track` by event name, as in Segment's e-commerce spec v2:

| Segment event                      | Tessera        | properties                                        |
|------------------------------------|----------------|---------------------------------------------------|
| Product Viewed                     | product_view   | product_id (else sku), category, price, currency  |
| Product Added                      | add_to_cart    | + quantity                                        |
| Product Removed                    | remove_from_cart | product_id, quantity                            |
| Cart Viewed                        | cart_view      | products → items (sum of quantities), cart_value  |
| Checkout Started / Step Viewed /   | checkout       | value (else revenue, total) → cart_value, step    |
| Step Completed                     |                |                                                   |
| Coupon Applied                     | coupon_applied | coupon_name (else coupon_id, coupon), discount    |
| Order Completed                    | purchase       | order_id, total (else revenue, value, sum of      |
|                                    |                | products) → value, coupon, products → items       |
| Products Searched                  | search         | query                                             |
| Product List / Category Viewed     | category_view  | category (without one: custom)                    |
| Exit Intent (Tessera's tracker)    | exit_intent    | trigger (mouse_leave, back_button, tab_hidden,    |
|                                    |                | else other)                                       |
| Message Shown / Clicked / Dismissed | custom        | name message_shown / _clicked / _dismissed,       |
|                                    |                | properties `schemas.onsite.MessageOutcome`        |
| anything else                      | custom         | name = event, properties as sent                  |

A call's `currency` is taken as sent; without one the schema's default (EUR) applies, not
Segment's USD.

Clock skew (as Segment does it): when an item, or the batch, carries `sentAt`, the event time is
shifted by `received_at - sentAt`, so a device whose clock is off by an hour still lands at the
right time: `event_time = timestamp + (received_at - sentAt)`. Without `sentAt` the timestamp is
taken as sent. This applies to Tessera events as well.

Output: a valid item's `raw` is the canonical Tessera JSON (orjson of the validated model dumped in
JSON mode by field names, None fields left out; it re-validates to the same event) and its `key`
the visitor_id. An invalid item keeps its original bytes in `raw` (the body itself for a single
object, the re-serialised item for an element of an array or batch) with `error` set to a
`DeadLetterReason` and `detail` saying why; `key` is the visitor id if one can be read. Sizes are
checked per item against `max_event_bytes` (input bytes and canonical bytes). Future timestamps are
the ingest's job unless `max_future_skew_s` is given (the HTTP routes give it: refused at the door).
Every event's `context.site_id` is the `site_id` given (the site of the request's write key); a
client's own `site_id` is dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
import structlog
from pydantic import ValidationError

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import EVENT_ADAPTER, EVENT_TYPES
from schemas.onsite import OUTCOME_EVENTS, MessageOutcome, outcome_event_name
from streams.core.ingest import Rejected, clip_detail, dead_letter
from streams.deadletters import dead_letter_record

__all__ = [
    "SEGMENT_CALLS",
    "TRACK_EVENTS",
    "CollectorItem",
    "Routed",
    "body_write_key",
    "dead_letter_of",
    "parse_body",
    "parse_payload",
    "route_items",
]

log = structlog.get_logger(__name__)

SEGMENT_CALLS: Final = frozenset({"track", "page", "screen", "identify", "group", "alias"})
_EXIT_TRIGGERS: Final = frozenset({"mouse_leave", "back_button", "tab_hidden", "other"})
_PAGE_TYPES: Final = frozenset(
    {"home", "category", "product", "cart", "checkout", "search", "content", "other"}
)
_MAX_TRAITS: Final = 64


@dataclass(frozen=True, slots=True)
class CollectorItem:
    """One event of a request body, ready for the events topic or the dead-letter topic."""

    index: int
    """Position in the body (0 for a single object)."""
    raw: bytes
    """Canonical Tessera JSON when valid; the original bytes of the item when not."""
    key: str | None
    """visitor_id: the Kafka key."""
    error: DeadLetterReason | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Rejected(Exception):
    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- helpers ------------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _skew_corrected(timestamp: Any, sent_at: Any, received_at: datetime) -> Any:
    """`timestamp + (received_at - sentAt)` as ISO text; `timestamp` unchanged if either is unreadable."""
    ts, sent = _parse_time(timestamp), _parse_time(sent_at)
    if ts is None or sent is None:
        return timestamp
    try:
        return (ts + (received_at - sent)).isoformat()
    except OverflowError:
        return timestamp


def _key_of(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    for name in ("visitor_id", "anonymousId", "anonymous_id", "userId", "user_id"):
        value = item.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:6]:
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"(+{more} more)")
    return clip_detail("; ".join(parts))


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _first(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = mapping.get(name)
        if value is not None and value != "":
            return value
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- Segment → Tessera -------------------------------------------------------------------------------


def _product_id(p: Mapping[str, Any]) -> Any:
    value = _first(p, "product_id", "sku", "id")
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _product_view(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "product_view", _drop_none(
        {
            "product_id": _product_id(props),
            "category": props.get("category"),
            "price": props.get("price"),
            "currency": props.get("currency"),
        }
    )


def _add_to_cart(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "add_to_cart", _drop_none(
        {
            "product_id": _product_id(props),
            "category": props.get("category"),
            "price": props.get("price"),
            "quantity": props.get("quantity"),
            "currency": props.get("currency"),
        }
    )


def _remove_from_cart(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "remove_from_cart", _drop_none(
        {"product_id": _product_id(props), "quantity": props.get("quantity")}
    )


def _products(props: Mapping[str, Any]) -> list[dict[str, Any]]:
    products = props.get("products")
    return [p for p in products if isinstance(p, dict)] if isinstance(products, list) else []


def _line_total(p: Mapping[str, Any]) -> float:
    price, qty = p.get("price"), p.get("quantity", 1)
    if isinstance(price, int | float) and isinstance(qty, int | float):
        return float(price) * float(qty)
    return 0.0


def _cart_view(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    products = _products(props)
    if not products:
        return "cart_view", _drop_none({"cart_value": _first(props, "value", "cart_value")})
    items = sum(int(p.get("quantity", 1)) for p in products if isinstance(p.get("quantity", 1), int | float))
    return "cart_view", {"cart_value": round(sum(_line_total(p) for p in products), 2), "items": items}


def _checkout(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "checkout", _drop_none(
        {
            "cart_value": _first(props, "value", "revenue", "total"),
            "currency": props.get("currency"),
            "step": props.get("step"),
        }
    )


def _coupon_applied(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "coupon_applied", _drop_none(
        {
            "coupon": _first(props, "coupon_name", "coupon_id", "coupon"),
            "discount_value": props.get("discount"),
        }
    )


def _purchase(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    products = _products(props)
    items = [
        _drop_none(
            {
                "product_id": _product_id(p),
                "category": p.get("category"),
                "price": p.get("price"),
                "quantity": p.get("quantity"),
                "discount": p.get("discount"),
                "coupon": p.get("coupon") or None,
            }
        )
        for p in products
    ]
    value = _first(props, "total", "revenue", "value")
    if value is None and products:
        value = round(sum(_line_total(p) for p in products), 2)
    return "purchase", _drop_none(
        {
            "order_id": _first(props, "order_id", "checkout_id"),
            "value": value,
            "currency": props.get("currency"),
            "items": items,
            "coupon": props.get("coupon") or None,
        }
    )


def _search(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "search", _drop_none({"query": props.get("query"), "results": props.get("results")})


def _category_view(props: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    category = props.get("category")
    if not isinstance(category, str) or not category:
        return None  # a list without a category (search results, a promo list): kept as custom
    return "category_view", {"category": category}


def _exit_intent(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    trigger = props.get("trigger")
    return "exit_intent", {"trigger": trigger if trigger in _EXIT_TRIGGERS else "other"}


def _message_outcome(event_name: str) -> Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]:
    outcome = OUTCOME_EVENTS[event_name]

    def mapped(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            report = MessageOutcome.model_validate({**props, "outcome": outcome})
        except ValidationError as exc:
            raise _Rejected(DeadLetterReason.schema_violation, _format_errors(exc)) from None
        return "custom", {
            "name": outcome_event_name(outcome),
            "properties": report.model_dump(mode="json", exclude_none=True),
        }

    return mapped


TRACK_EVENTS: Final[Mapping[str, Callable[[dict[str, Any]], tuple[str, dict[str, Any]] | None]]] = {
    "Product Viewed": _product_view,
    "Product Added": _add_to_cart,
    "Product Removed": _remove_from_cart,
    "Cart Viewed": _cart_view,
    "Checkout Started": _checkout,
    "Checkout Step Viewed": _checkout,
    "Checkout Step Completed": _checkout,
    "Coupon Applied": _coupon_applied,
    "Order Completed": _purchase,
    "Products Searched": _search,
    "Product List Viewed": _category_view,
    "Product Category Viewed": _category_view,
    "Exit Intent": _exit_intent,
    **{name: _message_outcome(name) for name in OUTCOME_EVENTS},
}
"""Segment e-commerce event name (and Tessera's own "Exit Intent" and message outcomes) → mapper to
(Tessera type, properties); names are case-sensitive."""


def _consent(value: Any) -> dict[str, bool] | None:
    if not isinstance(value, dict):
        return None
    prefs = value.get("categoryPreferences")
    if isinstance(prefs, dict):
        folded = {str(k).lower(): v for k, v in prefs.items() if isinstance(v, bool)}
        out: dict[str, bool] = {}
        for target, names in (
            ("analytics", ("analytics",)),
            ("personalization", ("personalization", "functional")),
            ("marketing", ("advertising", "marketing")),
        ):
            for name in names:
                if name in folded:
                    out[target] = folded[name]
                    break
        return out
    return {k: v for k, v in value.items() if k in ("analytics", "personalization", "marketing")}


def _segment_context(ctx: dict[str, Any], props: dict[str, Any], call: str) -> dict[str, Any]:
    page = _dict(ctx.get("page"))
    if call == "page":
        page = {**{k: props[k] for k in ("url", "path", "referrer") if k in props}, **page}
    url = page.get("url")
    path = page.get("path")
    if path is None and isinstance(url, str) and url:
        try:
            path = urlsplit(url).path or "/"
        except ValueError:
            path = None
    out: dict[str, Any] = {
        "page_url": url,
        "page_path": path,
        "referrer": page.get("referrer") or None,
        "user_agent": ctx.get("userAgent"),
        "ip": ctx.get("ip"),
        "locale": ctx.get("locale"),
    }
    campaign = ctx.get("campaign")
    if isinstance(campaign, dict):
        out["utm"] = _drop_none(
            {
                "source": campaign.get("source"),
                "medium": campaign.get("medium"),
                "campaign": _first(campaign, "name", "campaign"),
                "term": campaign.get("term"),
                "content": campaign.get("content"),
            }
        )
    screen = ctx.get("screen")
    if isinstance(screen, dict) and "width" in screen and "height" in screen:
        out["screen"] = {"width": screen["width"], "height": screen["height"]}
    consent = _consent(ctx.get("consent"))
    if consent:
        out["consent"] = consent
    location = ctx.get("location")
    if isinstance(location, dict):
        country = location.get("country")
        out["geo"] = (
            _drop_none(
                {
                    "country": country
                    if isinstance(country, str) and len(country) == 2 and country.isupper()
                    else None,
                    "region": location.get("region"),
                    "city": location.get("city"),
                    "lat": location.get("latitude"),
                    "lon": location.get("longitude"),
                }
            )
            or None
        )
    return _drop_none(out)


def _identify_props(item: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    traits = {**_dict(ctx.get("traits")), **_dict(item.get("traits"))}
    age = traits.pop("age", None)
    gender = traits.pop("gender", None)
    scalars = {str(k): v for k, v in traits.items() if v is None or isinstance(v, str | int | float | bool)}
    out: dict[str, Any] = {"traits": dict(list(scalars.items())[:_MAX_TRAITS])}
    if isinstance(age, int | float) and not isinstance(age, bool):
        out["age"] = int(age)
    elif isinstance(age, str) and age.strip().isdigit():
        out["age"] = int(age.strip())
    if isinstance(gender, str):
        out["gender"] = gender
    return out


def _message_id(item: dict[str, Any]) -> str:
    digest = hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    return f"h-{digest}"


def _from_segment(item: dict[str, Any], shared_ctx: dict[str, Any], received_at: datetime) -> dict[str, Any]:
    call = item["type"]
    ctx = {**shared_ctx, **_dict(item.get("context"))}
    props = _dict(item.get("properties"))
    etype: str
    properties: dict[str, Any]
    if call in ("page", "screen"):
        etype = "page_view"
        page_type = props.get("page_type")
        properties = _drop_none(
            {
                "title": _first(props, "title", "name") or item.get("name"),
                "page_type": page_type
                if page_type in _PAGE_TYPES
                else ("other" if call == "screen" else None),
            }
        )
    elif call == "identify":
        etype, properties = "identify", _identify_props(item, ctx)
    elif call == "alias":
        # Profiles are not merged: the alias says that the visitor `previousId` (usually the
        # anonymous id) is the user `userId`, which an identify of that visitor records.
        previous = _first(item, "previousId", "previous_id")
        if previous is not None and _first(item, "anonymousId", "anonymous_id") is None:
            item = {**item, "anonymousId": previous}
        traits = {"previous_id": str(previous)} if previous is not None else {}
        etype, properties = "identify", {"traits": traits}
    elif call == "group":
        group = _drop_none({"group_id": _first(item, "groupId", "group_id"), "traits": item.get("traits")})
        etype, properties = "custom", {"name": "group", "properties": group}
    else:  # track
        name = item.get("event")
        mapper = TRACK_EVENTS.get(name) if isinstance(name, str) else None
        mapped = mapper(props) if mapper is not None else None
        if mapped is None:
            etype, properties = "custom", _drop_none({"name": name, "properties": props})
        else:
            etype, properties = mapped
    visitor = _first(item, "anonymousId", "anonymous_id", "userId", "user_id")
    timestamp = _first(item, "timestamp", "originalTimestamp")
    return _drop_none(
        {
            "event_id": _first(item, "messageId", "message_id") or _message_id(item),
            "visitor_id": visitor if visitor is None else str(visitor),
            "user_id": _first(item, "userId", "user_id"),
            "session_id": _first(item, "sessionId", "session_id") or _first(ctx, "sessionId", "session_id"),
            "event_time": timestamp if timestamp is not None else received_at.isoformat(),
            "type": etype,
            "context": _segment_context(ctx, props, call),
            "properties": properties,
        }
    )


# -- the body -----------------------------------------------------------------------------------------


def _is_tessera_identify(item: dict[str, Any]) -> bool:
    """`identify` is both a Tessera type and a Segment call: Tessera's has its own field names or
    a `properties` object; Segment's carries `traits` at the top level."""
    return "visitor_id" in item or "event_id" in item or ("properties" in item and "traits" not in item)


def _items(payload: Any) -> tuple[list[Any], dict[str, Any], Any, bool]:
    """(items, shared Segment context, shared sentAt, single) of a decoded body."""
    if isinstance(payload, list):
        return payload, {}, None, False
    if isinstance(payload, dict) and "batch" in payload:
        batch = payload["batch"]
        if not isinstance(batch, list):
            raise _Rejected(DeadLetterReason.schema_violation, "`batch` must be a JSON array")
        return batch, _dict(payload.get("context")), payload.get("sentAt"), False
    return [payload], {}, None, True


def _with_site(event: dict[str, Any], site_id: str | None) -> dict[str, Any]:
    """`event` with `context.site_id` set to the site the collector accepted it for: a client never
    names its own site (any `site_id` it sent is dropped)."""
    context = event.get("context")
    if context is not None and not isinstance(context, dict):
        return event  # the schema refuses it
    context = {k: v for k, v in (context or {}).items() if k != "site_id"}
    if site_id is not None:
        context["site_id"] = site_id
    return {**event, "context": context}


def _one(
    item: Any,
    shared_ctx: dict[str, Any],
    shared_sent_at: Any,
    received_at: datetime,
    max_future_skew_s: float | None,
    default_type: str | None = None,
    site_id: str | None = None,
) -> tuple[bytes, str]:
    """Canonical bytes and key of one item, or `_Rejected`."""
    if not isinstance(item, dict):
        raise _Rejected(
            DeadLetterReason.schema_violation, f"an event must be a JSON object, not {type(item).__name__}"
        )
    if default_type is not None and "type" not in item:
        item = {**item, "type": default_type}
    kind = item.get("type")
    if not isinstance(kind, str):
        raise _Rejected(DeadLetterReason.schema_violation, "type: Field required (a string)")
    sent_at = item.get("sentAt", shared_sent_at)
    if kind in SEGMENT_CALLS and not (kind == "identify" and _is_tessera_identify(item)):
        event = _from_segment(item, shared_ctx, received_at)
        time_field = "event_time"
        if _first(item, "timestamp", "originalTimestamp") is None:
            sent_at = None  # stamped with the receive time: already on the server's clock
    elif kind in EVENT_TYPES:
        event = item
        time_field = "event_time" if "event_time" in item else "timestamp"
    else:
        raise _Rejected(DeadLetterReason.unknown_type, clip_detail(f"unknown event type {kind!r}", 200))
    if sent_at is not None and event.get(time_field) is not None:
        event = {**event, time_field: _skew_corrected(event[time_field], sent_at, received_at)}
    event = _with_site(event, site_id)
    try:
        model = EVENT_ADAPTER.validate_python(event)
    except ValidationError as exc:
        raise _Rejected(DeadLetterReason.schema_violation, _format_errors(exc)) from None
    if max_future_skew_s is not None:
        ahead = (model.event_time - received_at).total_seconds()
        if ahead > max_future_skew_s:
            raise _Rejected(
                DeadLetterReason.future_timestamp,
                f"event_time {model.event_time.isoformat()} is {ahead:.1f} s ahead "
                f"(allowed {max_future_skew_s:g} s)",
            )
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True)), model.visitor_id


def body_write_key(payload: Any) -> str | None:
    """The `writeKey` a decoded body carries at its top level (analytics.js puts it there when it
    sends with `navigator.sendBeacon`, which cannot set headers; the Node SDK sends it too)."""
    if isinstance(payload, dict):
        key = payload.get("writeKey")
        if isinstance(key, str) and key:
            return key
    return None


def parse_body(
    body: bytes,
    received_at: datetime,
    max_event_bytes: int,
    *,
    max_future_skew_s: float | None = None,
    default_type: str | None = None,
    site_id: str | None = None,
) -> list[CollectorItem]:
    """The events of one request body, in order, each valid (canonical bytes) or with its reason."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = clip_detail(f"body is not JSON: {exc}")
        return [CollectorItem(0, body, None, DeadLetterReason.not_json, detail)]
    return parse_payload(
        payload,
        body,
        received_at,
        max_event_bytes,
        max_future_skew_s=max_future_skew_s,
        default_type=default_type,
        site_id=site_id,
    )


def parse_payload(
    payload: Any,
    body: bytes,
    received_at: datetime,
    max_event_bytes: int,
    *,
    max_future_skew_s: float | None = None,
    default_type: str | None = None,
    site_id: str | None = None,
    client_ip: str | None = None,
) -> list[CollectorItem]:
    """`parse_body` of a body already decoded to `payload` (`body`: its bytes, kept for dead letters).

    `default_type`: the Segment call of a single-call route (`/v1/track` → "track"), for items
    without a `type`. `site_id`: the site the request's write key names, set as `context.site_id`
    of every event (None: removed). `client_ip`: the address the request came from, the `ip` of
    Segment calls whose context has none (as Segment's API does)."""
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    try:
        items, shared_ctx, shared_sent_at, single = _items(payload)
    except _Rejected as rejected:
        return [CollectorItem(0, body, None, rejected.reason, rejected.detail)]
    if client_ip is not None:
        shared_ctx = {"ip": client_ip, **shared_ctx}
    out: list[CollectorItem] = []
    for index, item in enumerate(items):
        original = body if single else orjson.dumps(item)
        key = _key_of(item)
        if len(original) > max_event_bytes:
            detail = f"{len(original)} bytes > limit {max_event_bytes}"
            out.append(CollectorItem(index, original, key, DeadLetterReason.too_large, detail))
            continue
        try:
            raw, key = _one(
                item, shared_ctx, shared_sent_at, received_at, max_future_skew_s, default_type, site_id
            )
        except _Rejected as rejected:
            out.append(CollectorItem(index, original, key, rejected.reason, rejected.detail))
            continue
        if len(raw) > max_event_bytes:
            detail = f"{len(raw)} bytes as a Tessera event > limit {max_event_bytes}"
            out.append(CollectorItem(index, original, key, DeadLetterReason.too_large, detail))
            continue
        out.append(CollectorItem(index, raw, key))
    rejected_count = sum(1 for item in out if item.error is not None)
    if rejected_count:
        log.debug("collector_rejected", items=len(out), rejected=rejected_count)
    return out


# -- the items on Kafka -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Routed:
    """What the collector does with the items of one body: the records it sends, and its answer."""

    records: list[tuple[str, bytes | None, bytes]]
    """(topic, key, value) of every item, in body order."""
    accepted: int
    rejected: list[dict[str, Any]]
    """The answer's entry for each rejected item: its index, reason and detail."""

    @property
    def status(self) -> int:
        """200 when an event was accepted or the body held none, 400 when every event was rejected."""
        return 200 if self.accepted or not self.rejected else 400

    @property
    def answer(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected}


def dead_letter_of(item: CollectorItem, *, topic: str, received_at: datetime) -> DeadLetter:
    """The dead letter of a rejected item, as the Kafka path makes them (`source="collector"`);
    `topic` is the one the event was meant for."""
    if item.error is None:
        raise ValueError(f"item {item.index} was accepted: it has no dead letter")
    return dead_letter(
        item.raw,
        Rejected(item.error, item.detail or ""),
        source="collector",
        topic=topic,
        key=item.key,
        received_at=received_at,
    )


def route_items(
    items: list[CollectorItem], *, events_topic: str, dlq_topic: str, received_at: datetime
) -> Routed:
    """Each accepted item to `events_topic` keyed by its visitor id, each rejected one as a dead
    letter to `dlq_topic`, keyed by the visitor id where one could be read."""
    records: list[tuple[str, bytes | None, bytes]] = []
    rejected: list[dict[str, Any]] = []
    for item in items:
        if item.error is None:
            records.append((events_topic, item.key.encode() if item.key else None, item.raw))
            continue
        rejected.append({"index": item.index, "reason": item.error, "detail": item.detail})
        key, value = dead_letter_record(dead_letter_of(item, topic=events_topic, received_at=received_at))
        records.append((dlq_topic, key, value))
    return Routed(records, len(items) - len(rejected), rejected)
