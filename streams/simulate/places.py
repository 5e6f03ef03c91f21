"""Where visitors are: the places of `streams/data/places.csv` (IPs the bundled geo database resolves),
how often each occurs, and the locales its browsers send."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Final


@dataclass(frozen=True, slots=True)
class Place:
    """One row of `streams/data/places.csv`: an IP the bundled DB-IP City Lite maps to `city`."""

    place: str
    country: str
    region: str
    region_code: str
    """ISO 3166-2 subdivision code (the DB-IP Lite records carry none; added to the CSV by hand)."""
    city: str
    lat: float
    lon: float
    ip: str


@lru_cache(maxsize=1)
def load_places() -> tuple[Place, ...]:
    """Rows of `streams/data/places.csv` (several IPs per place)."""
    text = resources.files("streams.data").joinpath("places.csv").read_text(encoding="utf-8")
    return tuple(
        Place(
            place=row["place"],
            country=row["country"],
            region=row["region"],
            region_code=row["region_code"],
            city=row["city"],
            lat=float(row["lat"]),
            lon=float(row["lon"]),
            ip=row["ip"],
        )
        for row in csv.DictReader(io.StringIO(text))
    )


PLACE_WEIGHTS: Final[Mapping[str, float]] = {
    "zurich": 8, "geneva": 4, "basel": 3,
    "cologne": 7, "duesseldorf": 6, "dortmund": 4, "essen": 4,
    "munich": 9, "berlin": 9, "berlin_neukoelln": 2, "hamburg": 7, "stuttgart": 5,
    "vienna": 7, "amsterdam": 5, "paris": 3, "london": 3,
}  # fmt: skip
LOCALES: Final[Mapping[str, tuple[str, ...]]] = {
    "CH": ("de-CH", "de-CH", "de-CH", "fr-CH", "en-US"),
    "DE": ("de-DE", "de-DE", "de-DE", "de-DE", "en-US"),
    "AT": ("de-AT", "de-AT", "de-AT", "en-US"),
    "NL": ("nl-NL", "nl-NL", "en-US"),
    "FR": ("fr-FR", "fr-FR", "en-US"),
    "GB": ("en-GB",),
}
