"""How the micro-segments are planted, and how everyone else is kept out of them.

Planted (`plant`): Swiss Android window shoppers or casual visitors who view product X in a last
short session before `end` (`ch_android_viewing_x`); NRW iPhone loyal buyers who bought product Y in
the last hours (`nrw_iphone_bought_y`); Munich Windows 10 window shoppers or casual visitors who land
on `/` from Google in a session still active at `end` (`munich_windows10_google_home`). The
sessions themselves are `streams.simulate.personas.micro_session` and the loyal buyer's Y purchase.

Kept out (`exclusions`, `avoids_google`): no one else views X in the last 2 hours or buys Y in the
last 26 hours, and Munich Windows users who are not planted never arrive from Google.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from random import Random
from typing import Final

from streams.simulate.clock import HOUR_MS
from streams.simulate.devices import DEVICE_BY_KEY
from streams.simulate.places import LOCALES, Place
from streams.simulate.spec import VisitorSpec
from streams.simulate.targets import MICRO_SEGMENTS

PLACES: Final[Mapping[str, tuple[str, ...]]] = {
    "ch_android_viewing_x": ("zurich", "geneva", "basel"),
    "nrw_iphone_bought_y": ("cologne", "duesseldorf", "dortmund", "essen"),
    "munich_windows10_google_home": ("munich",),
}
DEVICES: Final[Mapping[str, tuple[str, ...]]] = {
    "ch_android_viewing_x": ("android_samsung", "android_pixel", "android_xiaomi"),
    "nrw_iphone_bought_y": ("iphone_15", "iphone_13"),
    "munich_windows10_google_home": ("windows10_chrome", "windows10_edge", "windows10_firefox"),
}
PERSONAS: Final[Mapping[str, tuple[str, ...]]] = {
    "ch_android_viewing_x": ("window_shopper", "casual_visitor"),
    "nrw_iphone_bought_y": ("loyal_buyer",),
    "munich_windows10_google_home": ("window_shopper", "casual_visitor"),
}
"""Personas a micro-segment is planted on: ones whose own segments it cannot disturb."""


def plant(specs: Sequence[VisitorSpec], master: Random, places: Sequence[Place], per_segment: int) -> None:
    """Mark up to `per_segment` consenting visitors per micro-segment; move them to its place and device."""
    for micro in MICRO_SEGMENTS:
        pool = [s for s in specs if s.persona in PERSONAS[micro] and s.consent and s.micro is None]
        for spec in master.sample(pool, min(per_segment, len(pool))):
            spec.micro = micro
            spec.place = master.choice([p for p in places if p.place in PLACES[micro]])
            spec.device = DEVICE_BY_KEY[master.choice(DEVICES[micro])]
            spec.screen = master.choice(spec.device.screens)
            spec.locale = master.choice(LOCALES[spec.place.country])


def avoids_google(spec: VisitorSpec) -> bool:
    """A Munich Windows visitor not planted in `munich_windows10_google_home` never comes from Google."""
    return (
        spec.micro != "munich_windows10_google_home"
        and spec.place.place == "munich"
        and spec.device.os == "Windows"
    )


def exclusions(micro: str | None, session_start: int, end: int) -> tuple[bool, bool]:
    """(no product X, no product Y) in a session starting at `session_start`, for a visitor planted in
    `micro`: only the planted see X in the last 2 hours or buy Y in the last 26 hours before `end`."""
    no_x = micro != "ch_android_viewing_x" and session_start > end - 2 * HOUR_MS
    no_y = micro != "nrw_iphone_bought_y" and session_start > end - 26 * HOUR_MS
    return no_x, no_y
