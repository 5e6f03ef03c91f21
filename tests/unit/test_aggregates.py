"""Timeline attributes (`streams.core.aggregates`): each aggregation on hand-made timelines, every
refusal of the loader with its line and column, and a brute-force reference that recomputes every
attribute from the raw events (random events through the batch core, random attributes; values at
random instants, every time-driven change at its exact second, `AttributeDef.event_codes`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.attributes import AttributeDef, LazyValues
from streams.core.definitions import DefinitionError, Definitions, parse_definitions
from streams.core.profile import DAY_S, SESSION_GAP_S, Profile
from streams.core.segments import evaluate, next_check_at
from streams.core.timeline import CODES, COUPON, NEW_SESSION, Entry
from tests.unit.test_exact_windows import BASE, GAPS, PROPERTY_SETTINGS, RawEvent, as_parsed, fold, unique

ZONE = "Europe/Berlin"
NOW = BASE + 400 * DAY_S + 12_345.5
PV, CV, PRV, PUR = (CODES[t] for t in ("page_view", "category_view", "product_view", "purchase"))


def load(attributes: dict[str, str], zone: str = ZONE) -> Definitions:
    """Definitions with `attributes` (name → flow mapping) and one segment reading each of them."""
    lines = ['version: "t"', f"timezone: {zone}", "attributes:"]
    lines += [f"  {name}: {spec}" for name, spec in attributes.items()]
    lines.append("segments:")
    lines += [f"  - {{id: s_{name}, description: d, when: '{name} == {name}'}}" for name in attributes]
    return parse_definitions("\n".join(lines) + "\n", "t.yaml")


def values(defs: Definitions, timeline: list[Entry], now: float = NOW) -> dict[str, Any]:
    profile = Profile(
        visitor_id="v", timeline=timeline, days={int(e[0] // DAY_S): {"events": 1} for e in timeline}
    )
    lazy = LazyValues(profile, defs.plan, now)
    return {name: lazy.get(name) for name in defs.attributes}


def ago(seconds: float) -> float:
    return NOW - seconds


# -- each aggregation ----------------------------------------------------------------------------------

ORDERS: list[Entry] = [
    [ago(40 * DAY_S), PUR, 0, 500.0, [["P9", "tv", 500.0, 1]]],  # outside 30d
    [ago(20 * DAY_S), PUR, COUPON, 150.0, [["P1", "tv", 100.0, 1], ["P2", "books", 50.0, 2]]],
    [ago(10 * DAY_S), PUR, 0, 80.0, [["P2", "books", 80.0, 4]]],
    [ago(5 * DAY_S), PUR, 0, 120.0, [["P1", "tv", 120.0, 1]]],
]


def test_count_sum_min_max_avg_over_orders() -> None:
    defs = load(
        {
            "big": "{event: purchase, where: 'value >= 100', window: 30d}",
            "orders": "{event: purchase, window: 30d}",
            "spend_big": "{event: purchase, agg: sum, field: value, where: 'value >= 100', window: 30d}",
            "largest": "{event: purchase, agg: max, field: value, window: 30d}",
            "smallest": "{event: purchase, agg: min, field: value, window: 30d}",
            "mean": "{event: purchase, agg: avg, field: value, window: 30d}",
            "none_max": "{event: purchase, agg: max, field: value, where: 'value > 1000', window: 30d}",
            "coupon_orders": "{event: purchase, where: coupon, window: 30d}",
        }
    )
    got = values(defs, ORDERS)
    assert got == {
        "big": 2,
        "orders": 3,
        "spend_big": 270.0,
        "largest": 150.0,
        "smallest": 80.0,
        "mean": 350.0 / 3,
        "none_max": 0.0,
        "coupon_orders": 1,
    }
    assert type(got["big"]) is int and type(got["largest"]) is float


def test_purchases_are_read_per_item_when_an_item_field_is_read() -> None:
    defs = load(
        {
            "tv_orders": "{event: purchase, where: 'category == \"tv\"', window: 30d}",
            "tv_spend": "{event: purchase, agg: sum, field: value, where: 'category == \"tv\"', window: 30d}",
            "units": "{event: purchase, agg: sum, field: quantity, window: 30d}",
            "categories": "{event: purchase, agg: distinct, field: category, window: 30d}",
            "by_category": "{event: purchase, by: category, window: 30d}",
            "spend_by_product": "{event: purchase, agg: sum, field: value, by: product, window: 365d}",
            "largest_item": "{event: purchase, agg: max, field: value, where: 'quantity >= 1', window: 30d}",
        }
    )
    got = values(defs, ORDERS)
    assert got["tv_orders"] == 2  # the order of a tv and two books counts once
    assert got["tv_spend"] == 220.0  # item values: price × quantity, not the order value
    assert got["units"] == 8
    assert got["categories"] == 2
    assert got["by_category"] == {"books": 2, "tv": 2}  # the mixed order counts in both
    assert got["spend_by_product"] == {"P1": 220.0, "P2": 130.0, "P9": 500.0}
    assert got["largest_item"] == 120.0


def test_distinct_first_last_top_and_share() -> None:
    timeline: list[Entry] = [
        [ago(3 * DAY_S), PV, NEW_SESSION, "/sale/shoes"],
        [ago(3 * DAY_S - 60), PRV, 0, "P1", "tv", 300.0],
        [ago(3 * DAY_S - 50), CV, 0, "books"],
        [ago(2 * DAY_S), PV, NEW_SESSION, "/"],
        [ago(2 * DAY_S - 60), PRV, 0, "P2", "books", None],  # no price: left out of value aggregates
        [ago(DAY_S), PRV, NEW_SESSION, "P1", "tv", 100.0],
        [ago(DAY_S - 60), PV, 0, "/sale/hats"],
        [ago(DAY_S - 30), PV, 0, "/about"],
    ]
    defs = load(
        {
            "products": "{event: product_view, agg: distinct, field: product_id, window: 7d}",
            "cats": "{event: [product_view, category_view], agg: distinct, field: category, window: 7d}",
            "first_product": "{event: product_view, agg: first, field: product_id, window: 7d}",
            "last_product": "{event: product_view, agg: last, field: product_id, window: 7d}",
            "top_category": "{event: [product_view, category_view], agg: top, field: category, window: 7d}",
            "sale_share": "{event: page_view, agg: share, where: 'path.startsWith(\"/sale/\")', window: 7d}",
            "no_share": "{event: page_view, agg: share, where: 'path == \"/x\"', window: 1h}",
            "top_none": "{event: page_view, agg: top, field: path, window: 1h}",
            "avg_price": "{event: product_view, agg: avg, field: value, window: 7d}",
            "sessions": "{event: any, agg: distinct, field: session, window: 7d}",
            "view_sessions": "{event: product_view, agg: distinct, field: session, window: 7d}",
            "days": "{event: any, agg: distinct, field: day, window: 7d}",
        }
    )
    got = values(defs, timeline)
    assert got["products"] == 2
    assert got["cats"] == 2
    assert (got["first_product"], got["last_product"]) == ("P1", "P1")
    assert got["top_category"] == "tv"  # tv 2, books 2: tv was seen latest
    assert got["sale_share"] == 2 / 4
    assert (got["no_share"], got["top_none"]) == (0.0, "")
    assert got["avg_price"] == 200.0
    assert (got["sessions"], got["view_sessions"]) == (3, 3)
    assert got["days"] == len({int(e[0] // DAY_S) for e in timeline})


def test_a_session_that_started_before_the_window_counts_once() -> None:
    timeline: list[Entry] = [
        [ago(7200), PV, NEW_SESSION, "/"],
        [ago(600), PV, 0, "/a"],  # same session, the window (1h) starts after its start
        [ago(300), PV, 0, "/b"],
        [ago(100), PV, NEW_SESSION, "/c"],
    ]
    defs = load({"sessions": "{event: any, agg: distinct, field: session, window: 1h}"})
    assert values(defs, timeline)["sessions"] == 2


def test_local_hour_and_weekday_in_the_definitions_zone() -> None:
    # 2026-11-20 23:30 UTC is Saturday 2026-11-21 00:30 in Berlin.
    at = datetime(2026, 11, 20, 23, 30, tzinfo=UTC).timestamp()
    timeline: list[Entry] = [[at, PV, NEW_SESSION, "/"]]
    attributes = {
        "hour": "{event: page_view, agg: last, field: hour, window: 1d}",
        "weekday": "{event: page_view, agg: last, field: weekday, window: 1d}",
        "night": "{event: any, where: 'hour < 6', window: 1d}",
    }
    assert values(load(attributes), timeline, at + 60) == {"hour": 0, "weekday": 6, "night": 1}
    assert values(load(attributes, "UTC"), timeline, at + 60) == {"hour": 23, "weekday": 5, "night": 0}


def test_named_dimensions_are_always_in_a_map_and_read_as_scalars() -> None:
    text = """\
version: "t"
attributes:
  spend_by_category: {event: purchase, agg: sum, field: value, by: category, window: 30d}
segments:
  - {id: garden, description: d, when: 'spend_by_category["garden"] >= 0.0'}
  - {id: tv, description: d, when: 'spend_by_category.tv >= 200.0'}
"""
    defs = parse_definitions(text, "t.yaml")
    assert defs.attributes["spend_by_category"].dimensions == {"garden", "tv"}
    profile = Profile(
        visitor_id="v", timeline=ORDERS, days={int(e[0] // DAY_S): {"events": 1} for e in ORDERS}
    )
    lazy = LazyValues(profile, defs.plan, NOW)
    assert lazy.get("spend_by_category") == {"books": 130.0, "garden": 0.0, "tv": 220.0}
    assert evaluate(profile, defs, NOW).members == {"garden", "tv"}


def test_next_check_names_the_earliest_in_window_entry_of_the_types_read() -> None:
    timeline: list[Entry] = [
        [ago(3600), PV, NEW_SESSION, "/"],
        [ago(1800), PRV, 0, "P1", "tv", 10.0],
        [ago(60), PRV, 0, "P2", "tv", 10.0],
    ]
    defs = load({"viewed": "{event: product_view, agg: distinct, field: product_id, window: 2h}"})
    profile = Profile(visitor_id="v", timeline=timeline, days={int(NOW // DAY_S): {"events": 3}})
    assert next_check_at(profile, defs, NOW) == ago(1800) + 7200
    today = load({"viewed": "{event: product_view, window: today}"})
    midnight = datetime.fromtimestamp(NOW, ZoneInfo(ZONE)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert next_check_at(profile, today, NOW) == (midnight + timedelta(days=1)).timestamp()


def test_event_codes_of_every_kind() -> None:
    text = """\
version: "t"
attributes:
  purchases_30d: {metric: purchases, window: 30d}
  spend_tv: {metric: spend@tv, window: 30d}
  views_by: {metric: product_views, by: category, window: 7d}
  visit_days: {metric: sessions, agg: days, window: 30d}
  promo: {ratio: [coupon_purchases, page_views], window: 30d}
  events_30d: {metric: events, window: 30d}
  viewed: {event: [product_view, category_view], agg: distinct, field: category, window: 7d}
  anything: {event: any, window: 7d}
  sessions: {event: purchase, agg: distinct, field: session, window: 7d}
segments:
  - {id: s, description: d, when: 'purchases_30d >= 0'}
"""
    attrs: dict[str, AttributeDef] = dict(parse_definitions(text, "t.yaml").attributes)
    assert attrs["purchases_30d"].event_codes() == {PUR}
    assert attrs["spend_tv"].event_codes() == {PUR}
    assert attrs["views_by"].event_codes() == {PRV}
    assert attrs["visit_days"].event_codes() is None
    assert attrs["promo"].event_codes() == {PUR, PV}
    assert attrs["events_30d"].event_codes() is None
    assert attrs["viewed"].event_codes() == {PRV, CV}
    assert attrs["anything"].event_codes() is None
    assert attrs["sessions"].event_codes() is None  # session starts of any type renumber sessions


def test_existing_attribute_forms_still_load() -> None:
    text = """\
version: "t"
attributes:
  a: {metric: spend, by: category, window: 365d}
  b: {ratio: [promo_purchases, purchases], window: 90d}
  c: {metric: sessions, agg: days, window: 30d}
  d: {metric: spend, dimension: tv, window: lifetime}
segments:
  - {id: s, description: d, when: 'a["tv"] >= 1.0 && b >= 0.5 && c >= 1 && d >= 0.0'}
"""
    defs = parse_definitions(text, "t.yaml")
    assert [a.kind for a in defs.attributes.values()] == ["by", "ratio", "days", "sum"]
    assert all(a.aggregate is None for a in defs.attributes.values())


# -- refusals ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    spec: str
    """The attribute's flow mapping (line 4 of the file)."""
    at: str
    """The text the column points at (its first occurrence in the line, after `after`)."""
    reason: str
    after: str = ""


REFUSALS = [
    Refusal("{event: purchase, agg: sum, field: colour, window: 30d}", "colour", "unknown field 'colour'"),
    Refusal(
        "{event: page_view, agg: sum, field: value, window: 30d}", "value", "page_view events have no 'value'"
    ),
    Refusal(
        "{event: any, agg: distinct, field: category, window: 30d}",
        "category",
        "page_view events have no 'category'; with event: any only session, day, hour, weekday",
    ),
    Refusal(
        "{event: product_view, agg: sum, field: category, window: 30d}",
        "category",
        "agg: sum needs a number field (value, quantity, day, hour, weekday), not 'category'",
    ),
    Refusal("{event: purchase, agg: max, window: 30d}", "max", "agg: max needs a field (e.g. field: value)"),
    Refusal(
        "{event: purchase, field: value, window: 30d}",
        "field",
        "agg: count counts events and takes no field (filter with where)",
    ),
    Refusal(
        "{event: purchase, agg: median, field: value, window: 30d}", "median", "agg must be one of count"
    ),
    Refusal(
        "{event: purchase, agg: days, window: 30d}", "days", "(days with an event: agg: distinct, field: day)"
    ),
    Refusal(
        "{event: purchse, window: 30d}", "purchse", "unknown event type 'purchse' (did you mean 'purchase'?)"
    ),
    Refusal("{event: [purchase, any], window: 30d}", "any", "event: 'any' stands alone"),
    Refusal(
        "{event: purchase, where: 'value >= 100 &&', window: 30d}", "'", "where: CEL syntax error at 1:", "&&"
    ),
    Refusal(
        "{event: purchase, where: 'colour == 1', window: 30d}", "colour", "where: unknown identifier 'colour'"
    ),
    Refusal(
        "{event: page_view, where: 'value >= 1', window: 30d}",
        "value",
        "where: page_view events have no 'value'",
    ),
    Refusal(
        "{event: purchase, where: 'session == 1', window: 30d}",
        "session",
        "where: session numbers only count",
    ),
    Refusal(
        "{event: purchase, window: lifetime}",
        "lifetime",
        "timeline attributes cover at most 365d; use a metric sum for lifetime",
    ),
    Refusal(
        "{event: purchase, agg: sum, field: value, by: brand, window: 30d}",
        "brand",
        "by: brand needs a 'brand' field, which the events do not carry (by: category or product)",
    ),
    Refusal(
        "{event: purchase, agg: top, field: category, by: product, window: 30d}",
        "product",
        "by goes with agg",
    ),
    Refusal(
        "{event: category_view, by: product, window: 30d}",
        "product",
        "category_view events have no 'product_id'",
    ),
    Refusal("{event: page_view, agg: share, window: 30d}", "share", "agg: share needs a where"),
    Refusal(
        "{event: purchase, agg: max, field: session, window: 30d}", "session", "only agg: distinct reads it"
    ),
    Refusal("{event: purchase, agg: min, field: coupon, window: 30d}", "coupon", "needs a number field"),
    Refusal("{event: purchase, dimension: tv, window: 30d}", "dimension", "'dimension' goes with 'metric'"),
    Refusal("{metric: purchases, where: 'value > 1', window: 30d}", "where", "'where' goes with 'event'"),
    Refusal("{metric: purchases, event: purchase, window: 30d}", "{", "give one of 'metric'"),
    Refusal(
        "{event: purchase, where: 'distance_km(1.0, 2.0) < 3.0', window: 30d}",
        "distance_km",
        "where reads event fields only",
    ),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: r.reason[:40])
def test_a_bad_timeline_attribute_is_refused_with_line_column_and_reason(refusal: Refusal) -> None:
    line = f"  bad: {refusal.spec}"
    segment = '  - {id: s, description: d, when: "true"}'
    text = f'version: "t"\nparams:\n  limit: 3\nattributes:\n{line}\nsegments:\n{segment}\n'
    with pytest.raises(DefinitionError) as info:
        parse_definitions(text, "t.yaml")
    err = info.value
    start = line.index(refusal.after) if refusal.after else 0
    assert (err.line, err.column) == (5, line.index(refusal.at, start) + 1), err
    assert refusal.reason in err.message, err.message
    assert err.message.startswith("attribute 'bad': ")


def test_a_where_reads_params_but_a_field_shadows_a_param() -> None:
    text = """\
version: "t"
params:
  big: 100
  value: 1
attributes:
  big_orders: {event: purchase, where: 'value >= big', window: 30d}
segments:
  - {id: s, description: d, when: 'big_orders >= 1'}
"""
    defs = parse_definitions(text, "t.yaml")
    assert defs.attributes["big_orders"].key == "count of purchase where value >= 100"
    assert values(defs, ORDERS)["big_orders"] == 2


# -- the brute-force reference ---------------------------------------------------------------------------

KINDS = ("purchase", "purchase", "add_to_cart", "page_view", "product_view", "category_view", "search")
CATEGORIES = ("tv", "books", "garden", "")  # "": none given
PRODUCTS = ("P1", "P2", "P3")
PATHS = ("/", "/sale/a", "/sale/b", "/about")
ITEM_FIELDS = {"category", "product_id", "quantity"}
CARRIED: dict[str, set[str]] = {
    "purchase": {"value", "coupon", "category", "product_id", "quantity"},
    "add_to_cart": {"value", "category", "product_id", "quantity"},
    "product_view": {"value", "category", "product_id"},
    "category_view": {"category"},
    "page_view": {"path"},
    "search": set(),
}
"""What each raw event kind carries (besides session, day, hour, weekday), written from the schema."""
COMMON = {"session", "day", "hour", "weekday"}


@dataclass(frozen=True)
class Event(RawEvent):
    """A raw event with the fields timeline attributes read (`value`: order value, price of a view
    or of one unit added to the cart, 0 = no price given on a view)."""

    product: str = "P1"
    path: str = "/"
    quantity: int = 1
    items: tuple[tuple[str, str, int, int], ...] = ()
    """(product, category, price, quantity) of a purchase."""

    def payload(self) -> dict[str, Any]:
        category = {"category": self.category} if self.category else {}
        if self.kind == "purchase":
            items = [
                {"product_id": p, "price": price, "quantity": q, **({"category": c} if c else {})}
                for p, c, price, q in self.items
            ]
            props: dict[str, Any] = {"order_id": self.event_id, "value": self.value, "items": items}
            if self.coupon:
                props["coupon"] = "SAVE10"
        elif self.kind == "add_to_cart":
            props = {"product_id": self.product, "price": self.value, "quantity": self.quantity, **category}
        elif self.kind == "product_view":
            props = {"product_id": self.product, **category, **({"price": self.value} if self.value else {})}
        elif self.kind == "category_view":
            props = {"category": self.category or "tv"}
        elif self.kind == "search":
            props = {"query": "x"}
        else:
            props = {}
        return {
            "event_id": self.event_id,
            "visitor_id": "v1",
            "event_time": datetime.fromtimestamp(self.at, UTC).isoformat(),
            "type": self.kind,
            "context": {"ip": "178.197.224.1", "user_agent": "x", "page_path": self.path},
            "properties": props,
        }


@dataclass(frozen=True)
class Where:
    text: str
    reads: frozenset[str]
    test: Any = field(compare=False)


WHERES = [
    Where("value >= 100", frozenset({"value"}), lambda r: r["value"] >= 100),
    Where('category == "tv"', frozenset({"category"}), lambda r: r["category"] == "tv"),
    Where(
        'category in ["tv", "books"] && value < 200',
        frozenset({"category", "value"}),
        lambda r: r["category"] in ("tv", "books") and r["value"] < 200,
    ),
    Where('path.startsWith("/sale/")', frozenset({"path"}), lambda r: r["path"].startswith("/sale/")),
    Where("quantity >= 2", frozenset({"quantity"}), lambda r: r["quantity"] >= 2),
    Where("coupon", frozenset({"coupon"}), lambda r: r["coupon"]),
    Where("hour < 12", frozenset({"hour"}), lambda r: r["hour"] < 12),
    Where('!(product_id == "P2")', frozenset({"product_id"}), lambda r: r["product_id"] != "P2"),
]
TEMPLATES: list[tuple[tuple[str, ...], str, str | None, str | None]] = [
    (("purchase",), "count", None, None),
    (("purchase",), "sum", "value", None),
    (("purchase",), "max", "value", None),
    (("purchase",), "min", "value", None),
    (("purchase",), "avg", "value", None),
    (("purchase",), "sum", "quantity", None),
    (("purchase",), "distinct", "category", None),
    (("purchase",), "sum", "value", "category"),
    (("purchase",), "count", None, "product_id"),
    (("product_view", "category_view"), "distinct", "category", None),
    (("product_view", "category_view"), "top", "category", None),
    (("product_view",), "last", "product_id", None),
    (("product_view",), "first", "product_id", None),
    (("product_view",), "max", "value", None),
    (("add_to_cart",), "avg", "quantity", None),
    (("add_to_cart", "purchase"), "distinct", "product_id", None),
    (("add_to_cart", "purchase"), "count", None, "category"),
    (("page_view",), "share", None, None),
    (("page_view",), "top", "path", None),
    (("any",), "distinct", "session", None),
    (("any",), "distinct", "day", None),
    (("any",), "count", None, None),
    (("any",), "distinct", "hour", None),
    (("product_view", "purchase"), "distinct", "session", None),
]
WINDOWS: dict[str, float] = {"1m": 60, "1h": 3600, "6h": 21_600, "1d": DAY_S, "7d": 7 * DAY_S}
WINDOWS |= {"30d": 30 * DAY_S, "90d": 90 * DAY_S, "365d": 365 * DAY_S, "today": 0.0, "this_week": 0.0}
RESULT = {"count": "int", "distinct": "int", "share": "double", "avg": "double"}
FIELD_TYPE = {
    "value": "double",
    "quantity": "int",
    "category": "string",
    "product_id": "string",
    "path": "string",
}
FIELD_TYPE |= {"day": "int", "hour": "int", "session": "int"}


@dataclass(frozen=True)
class Attr:
    name: str
    events: tuple[str, ...]
    agg: str
    field: str | None
    by: str | None
    where: Where | None
    window: str

    def yaml(self) -> str:
        events = self.events[0] if len(self.events) == 1 else f"[{', '.join(self.events)}]"
        parts = [f"event: {events}", f"agg: {self.agg}"]
        if self.field:
            parts.append(f"field: {self.field}")
        if self.by:
            parts.append(f"by: {'product' if self.by == 'product_id' else self.by}")
        if self.where:
            parts.append(f"where: '{self.where.text}'")
        return "{" + ", ".join([*parts, f"window: {self.window}"]) + "}"

    @property
    def reads(self) -> set[str]:
        names = set(self.where.reads) if self.where else set()
        return names | {n for n in (self.field, self.by) if n}

    @property
    def result(self) -> str:
        return RESULT.get(self.agg) or FIELD_TYPE[self.field or ""]

    def codes(self) -> frozenset[int] | None:
        return None if self.events == ("any",) else frozenset(CODES[e] for e in self.events)


def sessions(events: list[Event]) -> dict[str, int]:
    """Event id → session number, from the rule of `apply` (a session starts after 30 minutes of
    silence, in the order the events were applied) and counted in time order."""
    starts: dict[str, bool] = {}
    last_seen = 0.0
    for e in events:
        starts[e.event_id] = last_seen == 0.0 or e.at - last_seen > SESSION_GAP_S
        last_seen = max(last_seen, e.at)
    number, out = 0, {}
    for e in sorted(events, key=lambda e: e.at):  # stable: equal times stay in applied order
        number += starts[e.event_id]
        out[e.event_id] = number
    return out


def rows_of(e: Event, attr: Attr, session: int) -> list[dict[str, Any]]:
    local = datetime.fromtimestamp(e.at, ZoneInfo(ZONE))
    common = {
        "session": session,
        "day": int(e.at // DAY_S),
        "hour": local.hour,
        "weekday": local.isoweekday(),
    }
    if e.kind == "purchase" and attr.reads & ITEM_FIELDS:
        rows = [
            {"value": price * q, "category": c or None, "product_id": p, "quantity": q, "coupon": e.coupon}
            for p, c, price, q in e.items
        ]
    elif e.kind == "purchase":
        rows = [{"value": e.value, "coupon": e.coupon}]
    elif e.kind == "add_to_cart":
        rows = [
            {
                "value": e.value * e.quantity,
                "category": e.category or None,
                "product_id": e.product,
                "quantity": e.quantity,
            }
        ]
    elif e.kind == "product_view":
        rows = [{"value": e.value or None, "category": e.category or None, "product_id": e.product}]
    elif e.kind == "category_view":
        rows = [{"category": e.category or "tv"}]
    elif e.kind == "page_view":
        rows = [{"path": e.path}]
    else:
        rows = [{}]
    out = []
    for row in rows:
        row |= common
        if all(row.get(name) is not None for name in attr.reads) and (
            attr.where is None or attr.where.test(row)
        ):
            out.append(row)
    return out


def period_start(now: float, window: str) -> float:
    """Local midnight starting today (``today``) or this week's Monday (``this_week``)."""
    day = datetime.fromtimestamp(now, ZoneInfo(ZONE)).date()
    if window == "this_week":
        day -= timedelta(days=day.weekday())
    return datetime.combine(day, datetime.min.time(), ZoneInfo(ZONE)).timestamp()


def next_period(at: float, window: str) -> float:
    local = datetime.fromtimestamp(at, ZoneInfo(ZONE)).date()
    days = 7 - local.weekday() if window == "this_week" else 1
    return datetime.combine(local + timedelta(days=days), datetime.min.time(), ZoneInfo(ZONE)).timestamp()


def inside(e: Event, attr: Attr, now: float) -> bool:
    if attr.window in ("today", "this_week"):
        return e.at >= period_start(now, attr.window)
    return e.at > now - WINDOWS[attr.window]


def reference(attr: Attr, events: list[Event], numbers: dict[str, int], now: float) -> Any:
    """The attribute from the raw events: the rows of the in-window events of its types, aggregated."""
    ordered = sorted(events, key=lambda e: e.at)
    chosen = [
        e for e in ordered if inside(e, attr, now) and (attr.events == ("any",) or e.kind in attr.events)
    ]
    rows = [(e.event_id, row) for e in chosen for row in rows_of(e, attr, numbers[e.event_id])]
    if attr.agg == "share":
        return len({i for i, _ in rows}) / len(chosen) if chosen else 0.0
    if attr.by is None:
        return aggregate(attr, rows)
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for event_id, row in rows:
        groups.setdefault(row[attr.by], []).append((event_id, row))
    return {group: aggregate(attr, members) for group, members in groups.items()}


def aggregate(attr: Attr, rows: list[tuple[str, dict[str, Any]]]) -> Any:
    """One group's rows aggregated, as the attribute's result type (CEL int, double or string)."""
    typed = {"int": int, "double": float, "string": str}[attr.result]
    if attr.agg == "count":
        return len({event_id for event_id, _ in rows})
    seen = [row[attr.field or ""] for _, row in rows]
    if attr.agg == "distinct":
        return len(set(seen))
    if not seen:
        return typed()
    if attr.agg == "sum":
        return typed(sum(seen))
    if attr.agg == "avg":
        return sum(seen) / len(seen)
    if attr.agg in ("min", "max"):
        return typed(min(seen) if attr.agg == "min" else max(seen))
    if attr.agg in ("first", "last"):
        return typed(seen[0] if attr.agg == "first" else seen[-1])
    latest = {value: i for i, value in enumerate(seen)}
    return typed(max(latest, key=lambda value: (seen.count(value), latest[value])))  # top


def same(got: Any, expected: Any) -> bool:
    """Equal values of the same type (doubles to 1e-9: sums may add in another order)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same(got[k], v) for k, v in expected.items())
    if isinstance(expected, float):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    return bool(got == expected)


@st.composite
def attrs_strategy(draw: st.DrawFn) -> list[Attr]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        events, agg, field_name, by = draw(st.sampled_from(TEMPLATES))
        carried = (
            set.union(*(CARRIED[e] for e in events)) if events != ("any",) else set.union(*CARRIED.values())
        )
        wheres = [w for w in WHERES if w.reads <= carried | COMMON]
        where = draw(st.sampled_from(wheres)) if agg == "share" or draw(st.booleans()) else None
        out.append(Attr(f"a{i}", events, agg, field_name, by, where, draw(st.sampled_from(sorted(WINDOWS)))))
    return out


@st.composite
def events_strategy(draw: st.DrawFn) -> list[Event]:
    """Bursts separated by gaps of seconds to months, a few neighbours swapped, a few client retries."""
    events: list[Event] = []
    at = BASE
    for i in range(draw(st.integers(0, 30))):
        at = as_parsed(at + draw(st.sampled_from(GAPS)) + draw(st.integers(0, 999)) / 1000)
        kind = draw(st.sampled_from(KINDS))
        items = tuple(
            (
                draw(st.sampled_from(PRODUCTS)),
                draw(st.sampled_from(CATEGORIES)),
                draw(st.integers(1, 200)),
                draw(st.integers(1, 3)),
            )
            for _ in range(draw(st.integers(0, 2)) if kind == "purchase" else 0)
        )
        events.append(
            Event(
                f"e{i}",
                kind,
                at,
                draw(st.sampled_from(CATEGORIES)),
                draw(st.integers(0, 300)),
                draw(st.booleans()),
                product=draw(st.sampled_from(PRODUCTS)),
                path=draw(st.sampled_from(PATHS)),
                quantity=draw(st.integers(1, 3)),
                items=items,
            )
        )
    arrival = list(events)
    for _ in range(draw(st.integers(0, 4)) if arrival else 0):
        i = draw(st.integers(0, len(arrival) - 1))
        j = min(len(arrival) - 1, i + draw(st.integers(1, 3)))
        arrival[i], arrival[j] = arrival[j], arrival[i]
    for _ in range(draw(st.integers(0, 2)) if arrival else 0):
        i = draw(st.integers(0, len(arrival) - 1))
        arrival.insert(min(len(arrival), i + draw(st.integers(1, 5))), arrival[i])
    return arrival


def setup(
    attrs: list[Attr], arrival: list[Event]
) -> tuple[Definitions, Profile, list[Event], dict[str, int]]:
    defs = load({a.name: a.yaml() for a in attrs})
    raw: list[RawEvent] = list(arrival)
    events = [e for e in unique(raw) if isinstance(e, Event)]
    return defs, fold(raw, defs), events, sessions(events)


def check_values(
    attrs: list[Attr],
    defs: Definitions,
    profile: Profile,
    events: list[Event],
    numbers: dict[str, int],
    now: float,
) -> None:
    lazy = LazyValues(profile, defs.plan, now)
    for attr in attrs:
        expected = reference(attr, events, numbers, now)
        got = lazy.get(attr.name)
        assert same(got, expected), (attr, now, got, expected)


@PROPERTY_SETTINGS
@given(attrs=attrs_strategy(), arrival=events_strategy(), probes=st.lists(st.floats(0, 1), max_size=6))
def test_values_at_random_instants_match_the_reference(
    attrs: list[Attr], arrival: list[Event], probes: list[float]
) -> None:
    defs, profile, events, numbers = setup(attrs, arrival)
    last = max((e.at for e in events), default=BASE)
    for fraction in [0.0, *probes]:  # from the newest event up to 400 days later
        check_values(attrs, defs, profile, events, numbers, last + fraction * 400 * DAY_S)


@PROPERTY_SETTINGS
@given(attrs=attrs_strategy(), arrival=events_strategy())
def test_every_time_driven_change_happens_at_its_exact_second(
    attrs: list[Attr], arrival: list[Event]
) -> None:
    defs, profile, events, numbers = setup(attrs, arrival)
    now = max((e.at for e in events), default=BASE)

    def state(t: float) -> list[Any]:
        return [reference(a, events, numbers, t) for a in attrs]

    moments = sorted(
        {
            next_period(e.at, a.window) if a.window in ("today", "this_week") else e.at + WINDOWS[a.window]
            for e in events
            for a in attrs
        }
    )
    changes = [t for t in moments if t > now and state(t) != state(t - 0.001)]
    checks: list[float] = []
    while (due := next_check_at(profile, defs, now)) is not None:
        assert due > now
        assert len(checks) < 2_000
        checks.append(due)
        check_values(attrs, defs, profile, events, numbers, due)
        check_values(attrs, defs, profile, events, numbers, due - 0.001)
        now = due
    missed = [t for t in changes if not any(abs(t - c) < 1e-6 for c in checks)]
    assert not missed


@PROPERTY_SETTINGS
@given(attrs=attrs_strategy(), arrival=events_strategy(), kind=st.sampled_from(KINDS))
def test_an_event_outside_event_codes_leaves_the_value_alone(
    attrs: list[Attr], arrival: list[Event], kind: str
) -> None:
    defs, profile, events, _ = setup(attrs, arrival)
    at = as_parsed(max((e.at for e in events), default=BASE) + 1)
    extra = Event(
        "extra",
        kind,
        at,
        "tv",
        150,
        True,
        product="P1",
        path="/sale/x",
        quantity=2,
        items=(("P1", "tv", 150, 1),),
    )
    after = fold([*arrival, extra], defs)
    before_values, after_values = LazyValues(profile, defs.plan, at), LazyValues(after, defs.plan, at)
    for attr in attrs:
        codes = defs.attributes[attr.name].event_codes()
        assert codes == (None if attr.codes() is None or "session" in attr.reads else attr.codes())
        if codes is not None and CODES[kind] not in codes:
            assert before_values.get(attr.name) == after_values.get(attr.name), attr
