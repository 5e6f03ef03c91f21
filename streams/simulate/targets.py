"""What the simulated traffic aims at: the segments the ground truth speaks for, and the values their
conditions compare against, read from the definitions the simulation is for.

The simulator knows segments by id (its personas are built for `PERSONA_SEGMENTS`, `MICRO_SEGMENTS`,
`STATIC_SEGMENTS` and the `top_spender_{category}` expansions) and reads every value from the
definitions: the top-spender thresholds from the `for_each` bindings, the rest from `params`
(`frequent_buyer_purchases`, `product_x`, `product_y`, `cafe_lat`, `cafe_lon`, `cafe_radius_km`,
`cafe_min_age`, `cafe_max_age`, `south_germany_regions`). Definitions that lack one of them, or
values the personas cannot serve, are refused with a `ValueError` that names it.

Not read: the windows and durations of the conditions (30/90/365-day windows, 30 idle minutes
before a cart counts as abandoned, 7 days of being new) and the micro-segments' countries, regions,
cities and operating systems. The personas keep days (or, for the cart, a quarter of an hour) of
margin around the shipped windows and plant the micro-segments in the shipped places.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final

from haversine import haversine

from streams.core.definitions import Definitions, load_definitions
from streams.settings import DEFAULT_SEGMENTS_FILE
from streams.simulate.catalogue import CATEGORIES, PRODUCTS
from streams.simulate.places import Place

PERSONAS: Final = (
    "loyal_buyer",
    "bargain_hunter",
    "window_shopper",
    "cart_abandoner",
    "big_spender",
    "casual_visitor",
    "one_time_visitor",
)
PERSONA_SEGMENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "loyal_buyer": ("frequent_buyers",),
    "bargain_hunter": ("coupon_users", "discount_lovers"),
    "window_shopper": (),
    "cart_abandoner": ("cart_abandoners",),
    "big_spender": (),  # plus the top-spender segment of its category, per visitor
    "casual_visitor": ("new_visitors",),
    "one_time_visitor": (),  # plus new_visitors / cart_abandoners when its one session earns them
}
MICRO_SEGMENTS: Final = ("ch_android_viewing_x", "nrw_iphone_bought_y", "munich_windows10_google_home")
STATIC_SEGMENTS: Final = ("tablet_south_germany", "cafe_radius_4km")
"""Micro-segments that follow from place, device and age alone."""
TOP_SPENDER_TEMPLATE: Final = "top_spender_{category}"
"""The `for_each` id whose expansions (bindings `category`, `threshold`) are the top-spender segments."""
MIN_FREQUENT_BUYER_PURCHASES: Final = 3
"""Bargain hunters, cart abandoners and big spenders buy up to twice in 30 days: a lower
`frequent_buyer_purchases` would make them frequent buyers too."""


@lru_cache(maxsize=1)
def default_definitions() -> Definitions:
    """The shipped `segments/default.yaml`, loaded once."""
    return load_definitions(DEFAULT_SEGMENTS_FILE)


@dataclass(frozen=True, slots=True)
class Cafe:
    """`cafe_radius_4km`: within `radius_km` of (`lat`, `lon`), aged `min_age`..`max_age` when known."""

    lat: float
    lon: float
    radius_km: float
    min_age: int
    max_age: int

    def admits(self, place: Place, age: int | None) -> bool:
        # The core measures from the visitor to the café, in this argument order.
        near = haversine((place.lat, place.lon), (self.lat, self.lon)) <= self.radius_km
        return near and (age is None or self.min_age <= age <= self.max_age)


@dataclass(frozen=True, slots=True)
class SegmentTargets:
    """The segment values the personas are generated against (see the module docstring)."""

    top_spender_thresholds: Mapping[str, float]
    """Category → spend in 365 days that makes a top spender, in the definitions' order."""
    top_spender_segments: Mapping[str, str]
    """Category → id of its top-spender segment."""
    frequent_buyer_purchases: int
    """Purchases in 30 days that make a frequent buyer."""
    product_x: str
    """Viewed by `ch_android_viewing_x`, kept out of everyone else's last two hours."""
    product_y: str
    """Bought by `nrw_iphone_bought_y`, kept out of everyone else's last 26 hours."""
    cafe: Cafe
    south_germany_regions: frozenset[str]
    """Region codes of `tablet_south_germany` (the places in them are German)."""
    covered: frozenset[str]
    """Segment ids whose membership `VisitorTruth.expected_segments` predicts exactly."""

    @classmethod
    def from_definitions(cls, defs: Definitions) -> SegmentTargets:
        """Read the targets; `ValueError` names what `defs` lack or the personas cannot serve."""
        ids = {seg.id for seg in defs.segments}
        thresholds: dict[str, float] = {}
        segments: dict[str, str] = {}
        for seg in defs.segments:
            if seg.template == TOP_SPENDER_TEMPLATE:
                category: Any = seg.bindings.get("category")
                threshold: Any = seg.bindings.get("threshold")
                if category not in CATEGORIES or not _is_number(threshold) or float(threshold) <= 0:
                    raise _refused(defs, f"{seg.id}: needs a catalogue category and a threshold > 0")
                thresholds[category] = float(threshold)
                segments[category] = seg.id
        if not thresholds:
            raise _refused(defs, f"no segments expanded from '{TOP_SPENDER_TEMPLATE}'")
        named = {s for segs in PERSONA_SEGMENTS.values() for s in segs} | {*MICRO_SEGMENTS, *STATIC_SEGMENTS}
        missing = sorted(named - ids)
        if missing:
            raise _refused(defs, f"no segment(s) {', '.join(missing)}")
        frequent = _integer(defs, "frequent_buyer_purchases")
        if frequent < MIN_FREQUENT_BUYER_PURCHASES:
            raise _refused(defs, f"frequent_buyer_purchases must be >= {MIN_FREQUENT_BUYER_PURCHASES}")
        product_x, product_y = _text(defs, "product_x"), _text(defs, "product_y")
        for name, product in (("product_x", product_x), ("product_y", product_y)):
            if product not in PRODUCTS:
                raise _refused(defs, f"{name} '{product}' is not in the simulated catalogue")
        cafe = Cafe(
            lat=_number(defs, "cafe_lat"),
            lon=_number(defs, "cafe_lon"),
            radius_km=_number(defs, "cafe_radius_km"),
            min_age=_integer(defs, "cafe_min_age"),
            max_age=_integer(defs, "cafe_max_age"),
        )
        regions = _texts(defs, "south_germany_regions")
        return cls(
            top_spender_thresholds=MappingProxyType(thresholds),
            top_spender_segments=MappingProxyType(segments),
            frequent_buyer_purchases=frequent,
            product_x=product_x,
            product_y=product_y,
            cafe=cafe,
            south_germany_regions=frozenset(regions),
            covered=frozenset(named | set(segments.values())),
        )


@lru_cache(maxsize=1)
def default_targets() -> SegmentTargets:
    """The targets of the shipped definitions."""
    return SegmentTargets.from_definitions(default_definitions())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _param(defs: Definitions, name: str, what: str, ok: Callable[[Any], bool]) -> Any:
    value = defs.params.get(name)
    if not ok(value):
        raise _refused(defs, f"param '{name}' must be {what}")
    return value


def _number(defs: Definitions, name: str) -> float:
    return float(_param(defs, name, "a number", _is_number))


def _integer(defs: Definitions, name: str) -> int:
    return int(_param(defs, name, "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)))


def _text(defs: Definitions, name: str) -> str:
    return str(_param(defs, name, "a string", lambda v: isinstance(v, str)))


def _texts(defs: Definitions, name: str) -> list[str]:
    return list(_param(defs, name, "a list of strings", _is_texts))


def _refused(defs: Definitions, reason: str) -> ValueError:
    return ValueError(f"{defs.path}: the simulator cannot serve these definitions: {reason}")
