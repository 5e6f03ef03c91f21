"""Attributes computed from the timeline entries themselves: count, sum, min, max, avg, distinct,
first, last, top and share over the events of some types, filtered (``where``) and grouped (``by``).

Where the metric attributes (`streams.core.attributes`) sum day-bucket keys, these read the profile's
exact recent history (`streams.core.timeline`): every event with ``t > cut`` of the window is one
entry. The timeline keeps whole days only, at most `TIMELINE_MAX` events: entries older than
`Profile.timeline_from_day` are gone, so for a visitor with more events than that in the window the
value covers the retained (most recent) part. Lifetime windows are refused for this family.

Rows
----
Each in-window entry of the attribute's event types is one **row** of fields (`FIELDS`), except a
purchase when the attribute reads an item field (`ITEM_FIELDS`: category, product_id, quantity) in
its ``field``, ``where`` or ``by``: then each item of the order is a row, its ``value`` being the
item's price × quantity and the order's own fields (coupon, discount, session, day, hour, weekday)
repeated on every item. A row lacking any field the attribute reads (a product view without a price,
an item without a category, a field its event type does not carry) is left out; so is a row the
``where`` condition does not accept.

Aggregations (`AGGS`), over the rows in time order (equal times: the order they were applied in):

* ``count`` — events with at least one row (an order counts once, per group for ``by``);
* ``share`` — events with a row / every event of the attribute's types in the window (0.0 if none);
* ``sum``, ``min``, ``max``, ``avg`` — of a number field;
* ``distinct`` — different values of the field;
* ``first``, ``last`` — the field of the first / last row;
* ``top`` — the most frequent value; a tie goes to the value seen latest.

Results: ``count``/``distinct`` are CEL ints, ``share``/``avg`` doubles, the others have the field's
type. With no row a result is its type's empty value: 0, 0.0, "" or false (a ``max`` of nothing is
0.0: read it together with a count). ``by: category`` / ``by: product`` gives a map
group → result; named dimensions are always present (with the empty value).

Sessions: an entry carries `NEW_SESSION` when its event started a session; the session of a row is
counted from the window's first entry (0: a session that started before the window), so ``distinct``
of ``session`` is the number of sessions the matching rows fall in.

`Filter.test` runs the ``where`` condition through its `streams.core.fastcel` closure when it has
one, else through CEL; CEL answers are remembered per field values (the condition reads only the
row), so a repeated path or category costs one look-up.

Cost: one pass over the window's entries per attribute and evaluation that reaches it, about
0.3 µs per entry plus 1-3 µs per row read (a visitor with 600 events in the window: 0.2-1 ms), where
a metric attribute sums a few buckets. The exit moment (`timeline_exit_at`) stops at the first entry
of its types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cel

from streams.core.fastcel import FastCondition
from streams.core.timeline import CODES, COUPON, DISCOUNT, NEW_SESSION, Entry, day_of, since
from streams.core.windows import Window, calendar_next, local_time

__all__ = [
    "AGGS",
    "BY_AGGS",
    "BY_FIELDS",
    "FIELDS",
    "ITEM_FIELDS",
    "NUMBER_AGGS",
    "Aggregate",
    "FieldSpec",
    "Filter",
    "aggregate_value",
    "timeline_exit_at",
]

AggName = Literal["count", "sum", "min", "max", "avg", "distinct", "first", "last", "top", "share"]
AGGS: tuple[AggName, ...] = ("count", "sum", "min", "max", "avg", "distinct", "first", "last", "top", "share")
NUMBER_AGGS: frozenset[str] = frozenset({"sum", "min", "max", "avg"})
"""Aggregations that need a number field."""
BY_AGGS: frozenset[str] = frozenset({"count", "sum", "min", "max", "avg", "distinct"})
"""Aggregations that may be grouped with ``by``."""
ValueType = Literal["int", "double", "string", "bool"]
_EMPTY: dict[str, Any] = {"int": 0, "double": 0.0, "string": "", "bool": False}

_PAGE_VIEW, _CATEGORY_VIEW, _PRODUCT_VIEW = CODES["page_view"], CODES["category_view"], CODES["product_view"]
_ADD_TO_CART, _REMOVE_FROM_CART = CODES["add_to_cart"], CODES["remove_from_cart"]
_PURCHASE, _CUSTOM = CODES["purchase"], CODES["custom"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of the rows: its type, which event types carry it, and what it is."""

    name: str
    type: ValueType
    codes: frozenset[int] | None
    """Event codes carrying it; None: every event."""
    doc: str


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(
            "value",
            "double",
            frozenset({_PRODUCT_VIEW, _ADD_TO_CART, _PURCHASE}),
            "purchase: order value (an item's price × quantity when read per item); add_to_cart: "
            "price × quantity; product_view: price",
        ),
        FieldSpec(
            "category",
            "string",
            frozenset({_CATEGORY_VIEW, _PRODUCT_VIEW, _ADD_TO_CART, _PURCHASE}),
            "product category (purchases: per item)",
        ),
        FieldSpec(
            "product_id",
            "string",
            frozenset({_PRODUCT_VIEW, _ADD_TO_CART, _REMOVE_FROM_CART, _PURCHASE}),
            "product id (purchases: per item)",
        ),
        FieldSpec(
            "quantity",
            "int",
            frozenset({_ADD_TO_CART, _REMOVE_FROM_CART, _PURCHASE}),
            "units (purchases: per item)",
        ),
        FieldSpec("path", "string", frozenset({_PAGE_VIEW}), "page path (cut to 160 characters)"),
        FieldSpec("coupon", "bool", frozenset({_PURCHASE}), "the order used a coupon"),
        FieldSpec("discount", "bool", frozenset({_PURCHASE}), "the order has a discounted item"),
        FieldSpec("name", "string", frozenset({_CUSTOM}), "custom event name"),
        FieldSpec("session", "int", None, "session number (distinct only)"),
        FieldSpec("day", "int", None, "UTC epoch day"),
        FieldSpec("hour", "int", None, "local hour 0-23 (the definitions' timezone)"),
        FieldSpec("weekday", "int", None, "local weekday, 1 = Monday … 7 = Sunday"),
    )
}
"""The vocabulary of ``field``, ``where`` and ``by``."""
ITEM_FIELDS: frozenset[str] = frozenset({"category", "product_id", "quantity"})
"""Fields a purchase carries per item: reading one makes each item of an order a row."""
BY_FIELDS: dict[str, str] = {"category": "category", "product": "product_id"}
"""``by:`` word → the field that groups."""

Row = dict[str, Any]
Getter = Callable[[Entry, Any, int, str], Any]
"""``getter(entry, item, session, zone)``: one field of a row (`item`: the purchase item or None)."""


def _entry_at(index: int) -> Getter:
    return lambda entry, item, session, zone: entry[index]


def _item_at(index: int) -> Getter:
    return lambda entry, item, session, zone: item[index]


def _flag(bit: int) -> Getter:
    return lambda entry, item, session, zone: bool(entry[2] & bit)


_COMMON: dict[str, Getter] = {
    "session": lambda entry, item, session, zone: session,
    "day": lambda entry, item, session, zone: day_of(entry[0]),
    "hour": lambda entry, item, session, zone: local_time(entry[0], zone)[0],
    "weekday": lambda entry, item, session, zone: local_time(entry[0], zone)[1],
}
_LAYOUT: dict[int, dict[str, Getter]] = {
    _PAGE_VIEW: {"path": _entry_at(3)},
    _CATEGORY_VIEW: {"category": _entry_at(3)},
    _PRODUCT_VIEW: {"product_id": _entry_at(3), "category": _entry_at(4), "value": _entry_at(5)},
    _ADD_TO_CART: {
        "product_id": _entry_at(3),
        "category": _entry_at(4),
        "value": _entry_at(5),
        "quantity": _entry_at(6),
    },
    _REMOVE_FROM_CART: {"product_id": _entry_at(3), "quantity": _entry_at(4)},
    _PURCHASE: {"value": _entry_at(3), "coupon": _flag(COUPON), "discount": _flag(DISCOUNT)},
    _CUSTOM: {"name": _entry_at(3)},
}
"""Where each event type keeps its fields in an entry (`streams.core.timeline`'s layout)."""
_ITEM_LAYOUT: dict[str, Getter] = {
    "product_id": _item_at(0),
    "category": _item_at(1),
    "value": _item_at(2),
    "quantity": _item_at(3),
    "coupon": _flag(COUPON),
    "discount": _flag(DISCOUNT),
}
"""A purchase read per item: ``[product_id, category, line_value, quantity]`` and the order's flags."""
_MEMO_MAX = 4096


@dataclass(frozen=True, eq=False)
class Filter:
    """A compiled ``where`` condition over the fields of one row."""

    text: str
    """The condition as it runs (params inlined as literals)."""
    fields: tuple[str, ...]
    """Fields it reads."""
    program: cel.Program = field(repr=False)
    fast: FastCondition | None = field(default=None, repr=False)
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    """CEL extension functions it calls (``lowerAscii``…)."""
    memo: dict[tuple[Any, ...], bool] = field(default_factory=dict, repr=False)
    """CEL answers by field values (the condition reads nothing else)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and (self.text, self.fields) == (other.text, other.fields)

    def __hash__(self) -> int:
        return hash((self.text, self.fields))

    def test(self, row: Row) -> bool:
        """Whether `row` (holding every field in `fields`, none of them None) passes; a condition that
        fails at run time (a type error) does not."""
        if self.fast is not None:
            try:
                return self.fast(row.get, self.functions)
            except Exception:  # Declined, or a value that raised in Python: CEL gives the answer
                pass
        key = tuple(row[name] for name in self.fields)
        known = self.memo.get(key)
        if known is not None:
            return known
        try:
            passed = self.program.execute(cel.Context(row, dict(self.functions) or None)) is True
        except Exception:  # CEL raises RuntimeError/TypeError/… for a condition it cannot answer
            passed = False
        if len(self.memo) >= _MEMO_MAX:
            self.memo.clear()
        self.memo[key] = passed
        return passed


@dataclass(frozen=True, slots=True)
class Aggregate:
    """What a timeline attribute computes (see the module docstring); built by the definitions loader."""

    agg: AggName
    codes: frozenset[int] | None
    """Event codes whose entries are read; None: every event."""
    field: str | None = None
    """The field aggregated (None for count and share)."""
    where: Filter | None = None
    by: str | None = None
    """The field that groups (``category`` or ``product_id``), or None for a single value."""
    # `dataclasses.field`: `field` is one of this class's fields.
    result: ValueType = dataclasses.field(init=False, default="int")
    per_item: bool = dataclasses.field(init=False, default=False)
    names: tuple[str, ...] = dataclasses.field(init=False, default=())
    """Every field a row holds (`reads`, sorted): a row is their values in this order."""
    at: int = dataclasses.field(init=False, default=-1)
    """Position of `field` in `names` (-1: none)."""
    by_at: int = dataclasses.field(init=False, default=-1)
    """Position of `by` in `names` (-1: none)."""
    readers: Mapping[int, tuple[Getter, ...]] = dataclasses.field(
        init=False, default_factory=dict, repr=False, compare=False
    )
    """Event code → the getter of each of `names`."""

    def __post_init__(self) -> None:
        if self.agg in ("count", "distinct"):
            result: ValueType = "int"
        elif self.agg in ("share", "avg"):
            result = "double"
        else:
            assert self.field is not None
            result = FIELDS[self.field].type
        object.__setattr__(self, "result", result)
        reads = self.reads()
        per_item = bool(reads & ITEM_FIELDS) and (self.codes is None or _PURCHASE in self.codes)
        object.__setattr__(self, "per_item", per_item)
        names = tuple(sorted(reads))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "at", names.index(self.field) if self.field is not None else -1)
        object.__setattr__(self, "by_at", names.index(self.by) if self.by is not None else -1)
        readers: dict[int, tuple[Getter, ...]] = {}
        for code in self.codes if self.codes is not None else CODES.values():
            layout = _ITEM_LAYOUT if per_item and code == _PURCHASE else _LAYOUT.get(code, {})
            readers[code] = tuple(_COMMON.get(name) or layout.get(name) or _absent for name in names)
        object.__setattr__(self, "readers", readers)

    def reads(self) -> frozenset[str]:
        """Every field a row must hold: the aggregated one, the grouping one, those `where` reads."""
        names = set(self.where.fields) if self.where is not None else set()
        names.update(n for n in (self.field, self.by) if n is not None)
        return frozenset(names)

    @property
    def empty(self) -> Any:
        """The result over no rows."""
        return _EMPTY[self.result]

    def event_codes(self) -> frozenset[int] | None:
        """Event codes whose events can change the value (None: any event). A session number depends
        on the session starts of every event type, so ``distinct session`` depends on any event."""
        return None if "session" in self.reads() else self.codes

    def describe(self) -> str:
        """One line: ``max value of purchase where value >= 100 by product_id``."""
        types = "any event" if self.codes is None else ", ".join(_NAMES[c] for c in sorted(self.codes))
        text = self.agg + (f" {self.field}" if self.field else "") + f" of {types}"
        if self.where is not None:
            text += f" where {self.where.text}"
        return text + (f" by {self.by}" if self.by else "")


_NAMES: dict[int, str] = {code: name for name, code in CODES.items()}


def _absent(entry: Entry, item: Any, session: int, zone: str) -> None:
    return None


# -- rows ------------------------------------------------------------------------------------------


Rows = list[tuple[int, tuple[Any, ...]]]
"""(entry index, the row's values in `Aggregate.names` order), in time order."""
_ONE_ROW = (None,)


def _rows(agg: Aggregate, timeline: list[Entry], start: int, zone: str) -> Rows:
    """Every row from `timeline[start:]` that holds all the fields the attribute reads and passes
    its `where`. One loop with no call per entry beyond the getters: it runs over every in-window
    entry, up to `TIMELINE_MAX` of them."""
    readers, where, per_item, names = agg.readers, agg.where, agg.per_item, agg.names
    rows: Rows = []
    session = 0
    for index in range(start, len(timeline)):
        entry = timeline[index]
        if entry[2] & NEW_SESSION:
            session += 1
        getters = readers.get(entry[1])
        if getters is None:
            continue
        for item in entry[4] if per_item and entry[1] == _PURCHASE else _ONE_ROW:
            values = tuple([get(entry, item, session, zone) for get in getters])
            if None in values:
                continue
            if where is not None and not where.test(dict(zip(names, values, strict=True))):
                continue
            rows.append((index, values))
    return rows


def _events_of(codes: frozenset[int] | None, timeline: list[Entry], start: int) -> int:
    if codes is None:
        return len(timeline) - start
    return sum(1 for index in range(start, len(timeline)) if timeline[index][1] in codes)


# -- one function per aggregation ------------------------------------------------------------------------
# Each reads the field at `agg.at` of the rows (count reads none).


def count(rows: Rows, agg: Aggregate) -> int:
    """Events with at least one row."""
    return len({index for index, _ in rows})


def total(rows: Rows, agg: Aggregate) -> Any:
    at = agg.at
    summed = sum(row[at] for _, row in rows)
    return float(summed) if agg.result == "double" else int(summed)


def minimum(rows: Rows, agg: Aggregate) -> Any:
    at = agg.at
    return _typed(min(row[at] for _, row in rows), agg) if rows else agg.empty


def maximum(rows: Rows, agg: Aggregate) -> Any:
    at = agg.at
    return _typed(max(row[at] for _, row in rows), agg) if rows else agg.empty


def average(rows: Rows, agg: Aggregate) -> float:
    at = agg.at
    return float(sum(row[at] for _, row in rows)) / len(rows) if rows else 0.0


def distinct(rows: Rows, agg: Aggregate) -> int:
    at = agg.at
    return len({row[at] for _, row in rows})


def first(rows: Rows, agg: Aggregate) -> Any:
    return _typed(rows[0][1][agg.at], agg) if rows else agg.empty


def last(rows: Rows, agg: Aggregate) -> Any:
    return _typed(rows[-1][1][agg.at], agg) if rows else agg.empty


def top(rows: Rows, agg: Aggregate) -> Any:
    """The most frequent value; on a tie the one whose latest row is the latest."""
    at = agg.at
    counts: dict[Any, int] = {}
    best, best_count = agg.empty, 0
    for _, row in rows:
        value = row[at]
        seen = counts[value] = counts.get(value, 0) + 1
        if seen >= best_count:  # this row is the latest of `value`: it wins a tie
            best, best_count = value, seen
    return _typed(best, agg) if best_count else agg.empty


def _typed(value: Any, agg: Aggregate) -> Any:
    if agg.result == "double":
        return float(value)
    if agg.result == "int":
        return int(value)
    return value


_AGGREGATORS: dict[str, Callable[[Rows, Aggregate], Any]] = {
    "count": count,
    "sum": total,
    "min": minimum,
    "max": maximum,
    "avg": average,
    "distinct": distinct,
    "first": first,
    "last": last,
    "top": top,
}


def aggregate_value(
    agg: Aggregate, timeline: list[Entry], start: int, zone: str, dimensions: frozenset[str] = frozenset()
) -> Any:
    """The attribute's value over ``timeline[start:]`` (the window's entries: `since` of its cut).
    `zone`: of the local hour/weekday fields; `dimensions`: groups a ``by`` map always holds."""
    rows = _rows(agg, timeline, start, zone)
    if agg.by is None:
        if agg.agg == "share":
            events = _events_of(agg.codes, timeline, start)
            return count(rows, agg) / events if events else 0.0
        return _AGGREGATORS[agg.agg](rows, agg)
    groups: dict[str, Rows] = {dim: [] for dim in dimensions}
    by_at = agg.by_at
    for index, row in rows:
        groups.setdefault(row[by_at], []).append((index, row))
    aggregate = _AGGREGATORS[agg.agg]
    return {group: aggregate(groups[group], agg) for group in sorted(groups)}


def timeline_exit_at(
    window: Window, codes: frozenset[int] | None, now: float, zone: str, timeline: list[Entry]
) -> float | None:
    """The next moment after `now` at which an entry of `codes` (None: any) leaves `window`: when a
    timeline attribute over it can change with no new event (the earliest in-window entry + W; for a
    calendar window, the next period's start). None when no such entry is inside."""
    if window.kind == "lifetime":
        return None
    for index in range(since(timeline, window.cut(now, zone)), len(timeline)):
        entry = timeline[index]
        if codes is None or entry[1] in codes:
            if window.kind == "calendar":
                return calendar_next(now, window.unit, zone)
            return float(entry[0]) + window.seconds
    return None
