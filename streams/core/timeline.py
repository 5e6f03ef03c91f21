"""The exact recent history of a profile: one compact entry per event, and what each one counts.

A profile keeps two views of its events (`streams.core.profile`):

* **day buckets** (`Profile.days`): per UTC day, the sum of every metric (``purchases``,
  ``spend@electronics``) — the bulk, kept for `RETENTION_DAYS`;
* **the timeline** (`Profile.timeline`): the latest events themselves, one short list each
  (`Entry`), sorted by event time, at most `TIMELINE_MAX` of them. Whole days only: every event of a
  day from `Profile.timeline_from_day` on is in it, none older.

`contributions(entry)` is the one place that says which metrics an event counts: `apply` bumps the day
bucket with it, and a window's partial day is summed with it, so the two views always agree.

Exact windows
-------------
"In the last W" at moment ``now`` holds the events with ``t > now - W`` (``cut``): an event leaves the
window at exactly ``t + W``. With ``b`` the UTC day that contains ``cut``, the days after ``b`` are
entirely inside (their buckets are summed whole) and the events of day ``b`` come from the timeline,
each compared with ``cut``: exact to the second. A day older than ``timeline_from_day`` (a visitor with
more than `TIMELINE_MAX` events in the window) is counted as if all its events happened at its start
(midnight UTC): in the window while ``day * 86400 > cut``.

Entry layout (lists, so they serialise as short JSON arrays)::

    [t, code, flags, *fields]   t: event time (epoch s), code: `CODES`, flags: `NEW_SESSION`…
    page_view        [.., path]                      path cut to `PATH_MAX` characters
    category_view    [.., category]
    product_view     [.., product_id, category, price]
    add_to_cart      [.., product_id, category, line_value, quantity]
    remove_from_cart [.., product_id, quantity]
    purchase         [.., value, [[product_id, category, line_value, quantity], ...]]
    custom           [.., name]
    other types      [..]
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from schemas.events import (
    AddToCart,
    CategoryView,
    Custom,
    Event,
    EventType,
    PageView,
    ProductView,
    Purchase,
    RemoveFromCart,
)

__all__ = [
    "CODES",
    "COUPON",
    "DISCOUNT",
    "HOME",
    "NEW_SESSION",
    "PATH_MAX",
    "TIMELINE_MAX",
    "TYPES",
    "Entry",
    "contributions",
    "day_of",
    "entry_of",
    "metric_codes",
    "since",
]

DAY_S = 86_400
TIMELINE_MAX = 600
"""Most events a profile keeps exactly (older ones live on in the day buckets only)."""
PATH_MAX = 160
"""Longest page path kept per page view (longer ones are cut; a `startsWith` filter still works)."""

Entry = list[Any]

CODES: dict[str, int] = {
    "page_view": 0, "category_view": 1, "product_view": 2, "search": 3, "cart_view": 4, "add_to_cart": 5,
    "remove_from_cart": 6, "checkout": 7, "purchase": 8, "coupon_applied": 9, "exit_intent": 10,
    "identify": 11, "custom": 12,
}  # fmt: skip
"""Event type → the small number an entry stores (stored in profiles: never renumber)."""
assert set(CODES) == {t.value for t in EventType}
TYPES: dict[int, str] = {i: t for t, i in CODES.items()}

NEW_SESSION, HOME, COUPON, DISCOUNT = 1, 2, 4, 8
"""Entry flags: the event started a session; a page view of the home page; a purchase with a coupon;
a purchase with a discounted item."""

_PAGE_VIEW = CODES["page_view"]
_CATEGORY_VIEW = CODES["category_view"]
_PRODUCT_VIEW = CODES["product_view"]
_SEARCH = CODES["search"]
_CART_VIEW = CODES["cart_view"]
_ADD_TO_CART = CODES["add_to_cart"]
_REMOVE_FROM_CART = CODES["remove_from_cart"]
_CHECKOUT = CODES["checkout"]
_PURCHASE = CODES["purchase"]
_COUPON_APPLIED = CODES["coupon_applied"]
_EXIT_INTENT = CODES["exit_intent"]

_SIMPLE: dict[int, str] = {
    _SEARCH: "searches",
    _CART_VIEW: "cart_views",
    _CHECKOUT: "checkouts",
    _COUPON_APPLIED: "coupon_uses",
    _EXIT_INTENT: "exit_intents",
    CODES["remove_from_cart"]: "remove_from_carts",
}
_DIMENSIONED: dict[int, str] = {
    _CATEGORY_VIEW: "category_views",
    _PRODUCT_VIEW: "product_views",
    _ADD_TO_CART: "add_to_carts",
}


def entry_of(event: Event, at: float, new_session: bool) -> Entry:
    """The timeline entry of one event at event time `at`."""
    code = CODES[event.type._value_]  # `.value` is a Python property on the enum: 4 times slower
    flags = NEW_SESSION if new_session else 0
    if isinstance(event, PageView):
        path = event.context.page_path
        if event.properties.page_type == "home" or path == "/":
            flags |= HOME
        return [at, code, flags, None if path is None else path[:PATH_MAX]]
    if isinstance(event, CategoryView):
        return [at, code, flags, event.properties.category]
    if isinstance(event, ProductView):
        viewed = event.properties
        return [at, code, flags, viewed.product_id, viewed.category, viewed.price]
    if isinstance(event, AddToCart):
        added = event.properties
        line_value = added.price * added.quantity
        return [at, code, flags, added.product_id, added.category, line_value, added.quantity]
    if isinstance(event, RemoveFromCart):
        return [at, code, flags, event.properties.product_id, event.properties.quantity]
    if isinstance(event, Purchase):
        order = event.properties
        if order.coupon is not None or any(item.coupon for item in order.items):
            flags |= COUPON
        if any(item.discount > 0 for item in order.items):
            flags |= DISCOUNT
        items = [[i.product_id, i.category, i.price * i.quantity, i.quantity] for i in order.items]
        return [at, code, flags, order.value, items]
    if isinstance(event, Custom):
        return [at, code, flags, event.properties.name]
    return [at, code, flags]


def day_of(t: float) -> int:
    return int(t // DAY_S)


def contributions(entry: Entry) -> Iterator[tuple[str, float]]:
    """Every (metric key, amount) the event counts: the day-bucket increments of `apply`."""
    code, flags = entry[1], entry[2]
    yield "events", 1
    if flags & NEW_SESSION:
        yield "sessions", 1
    if code == _PAGE_VIEW:
        yield "page_views", 1
        if flags & HOME:
            yield "home_views", 1
        return
    metric = _DIMENSIONED.get(code)
    if metric is not None:
        yield metric, 1
        category = entry[3] if code == _CATEGORY_VIEW else entry[4]
        if category is not None:
            yield f"{metric}@{category}", 1
        return
    metric = _SIMPLE.get(code)
    if metric is not None:
        yield metric, 1
        return
    if code == _PURCHASE:
        yield "purchases", 1
        yield "spend", entry[3]
        coupon, discount = flags & COUPON, flags & DISCOUNT
        if coupon:
            yield "coupon_purchases", 1
        if discount:
            yield "discount_purchases", 1
        if coupon or discount:
            yield "promo_purchases", 1
        for _product, category, line_value, quantity in entry[4]:
            category = category or "uncategorised"
            yield f"spend@{category}", line_value
            yield "items_bought", quantity
            yield f"items_bought@{category}", quantity


def metric_codes(metric: str) -> frozenset[int] | None:
    """Event codes whose entries can count `metric` (the part before any ``@``); None: every event."""
    if metric in ("events", "sessions"):
        return None
    if metric in ("page_views", "home_views"):
        return frozenset({_PAGE_VIEW})
    for table in (_SIMPLE, _DIMENSIONED):
        codes = frozenset(code for code, name in table.items() if name == metric)
        if codes:
            return codes
    return frozenset({_PURCHASE})  # purchases, spend, items_bought, coupon/discount/promo_purchases


def since(timeline: list[Entry], cut: float) -> int:
    """Index of the first entry with ``t > cut`` (entries are sorted by time)."""
    return bisect_right(timeline, cut, key=_TIME)


_TIME = itemgetter(0)
"""An entry's time, read in C (a Python key function was called ≈ 10 times per bisect)."""
