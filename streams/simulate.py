"""Seeded, reproducible synthetic shop traffic with a ground truth of who belongs to which segment.

`simulate(visitors, seed, end)` builds the clickstream of `visitors` visitors up to `end` and, for each
visitor, the segments Tessera must show for them at `end` (`Simulation.truth`). Every visitor has a
persona whose behaviour is generated to sit clearly inside (or clearly outside) the shipped segment
thresholds of `segments/default.yaml`:

- `loyal_buyer` (15 %) → frequent_buyers: 4-7 purchases in the last 25 days (+ older ones), no
  coupons or discounts, spend per category far below the top-spender thresholds.
- `bargain_hunter` (15 %) → coupon_users, discount_lovers: 2-3 purchases in 80 days (at most 2 in
  the last 30), each with a coupon and discounted items; low spend.
- `window_shopper` (25 %) → nothing: views and searches only.
- `cart_abandoner` (12 %) → cart_abandoners: the last session fills the cart and leaves (last
  add_to_cart at least 45 minutes before `end`).
- `big_spender` (10 %) → top_spender_<category>: 1-2 purchases in one category totalling 1.5-3x
  its threshold.
- `casual_visitor` (23 %) → new_visitors: first seen in the last 5 days, a few page views.

Every persona but `casual_visitor` is first seen more than 10 days before `end`; nobody but a cart
abandoner ends with a non-empty cart. Time margins keep every fact at least a day away from a
window edge (windows are UTC day buckets in Tessera's core), so the truth does not depend on the
time of day `end` falls on.

Micro-segments of the brief are planted on top (`MICRO_SEGMENTS`): Swiss Android visitors viewing
product X (`P-1001`) in the last minutes before `end`; NRW iPhone users who bought product Y
(`P-2002`) in the last hours (drawn from loyal buyers); Munich Windows 10 visitors who landed on `/`
from Google in a session still active at `end` (window shoppers or casual visitors). Unmarked
visitors are kept out of them (no view of X in the last 2 hours, no purchase of Y in the last 26
hours, no Google visits for Munich Windows users). Two static micro-segments follow from place and
device alone and are in the truth too: `tablet_south_germany` (iPads in Munich/Stuttgart) and
`cafe_radius_4km` (the `berlin_neukoelln` place, within 4 km of the café; age 18-40 when known).
`COVERED_SEGMENTS` lists every segment the truth speaks for; other segments of the default file
(high_intent, engaged_readers, ...) emerge from the traffic and are not predicted.

Determinism: one `random.Random(seed)` draws the plan (personas, ids, places, devices, one seed per
visitor); each visitor's events come from its own `random.Random(visitor_seed)`. No global random,
no uuid4, no wall clock: the same arguments give byte-identical `write_jsonl` output. Event ids are
UUID-shaped strings built from the visitor's generator.

Faults for tests: `SimParams.duplicate_rate` re-sends events with the same `event_id` (a client
retry, right after the original, identical bytes); `SimParams.malformed` adds N records of each
`MALFORMED_KINDS` reason to `Simulation.malformed` (never to `events`). `SimParams.no_consent_share`
gives visitors `personalization: false` consent; their expected segments are empty.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from random import Random
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson
import structlog

__all__ = [
    "CATALOGUE",
    "CATEGORIES",
    "COVERED_SEGMENTS",
    "DEFAULT_MIX",
    "DEVICES",
    "MALFORMED_KINDS",
    "MICRO_SEGMENTS",
    "PERSONAS",
    "PERSONA_SEGMENTS",
    "PRODUCTS",
    "PRODUCT_X",
    "PRODUCT_Y",
    "TOP_SPENDER_THRESHOLDS",
    "DeviceProfile",
    "Place",
    "Product",
    "SimParams",
    "Simulation",
    "VisitorTruth",
    "iter_events",
    "load_places",
    "read_truth",
    "simulate",
    "write_jsonl",
]

log = structlog.get_logger(__name__)

SHOP: Final = "https://shop.example"
SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
SESSION_GAP_MS: Final = 2 * HOUR_MS
"""Minimum distance between two planned session starts (sessions last < 35 minutes)."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# -- segments the truth speaks for ------------------------------------------------------------------

TOP_SPENDER_THRESHOLDS: Final[Mapping[str, float]] = {
    "electronics": 1500.0,
    "clothing": 600.0,
    "home_decor": 800.0,
}
PERSONAS: Final = (
    "loyal_buyer",
    "bargain_hunter",
    "window_shopper",
    "cart_abandoner",
    "big_spender",
    "casual_visitor",
)
PERSONA_SEGMENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "loyal_buyer": ("frequent_buyers",),
    "bargain_hunter": ("coupon_users", "discount_lovers"),
    "window_shopper": (),
    "cart_abandoner": ("cart_abandoners",),
    "big_spender": (),  # plus top_spender_<category>, per visitor
    "casual_visitor": ("new_visitors",),
}
DEFAULT_MIX: Final[Mapping[str, float]] = {
    "loyal_buyer": 0.15,
    "bargain_hunter": 0.15,
    "window_shopper": 0.25,
    "cart_abandoner": 0.12,
    "big_spender": 0.10,
    "casual_visitor": 0.23,
}
MICRO_SEGMENTS: Final = ("ch_android_viewing_x", "nrw_iphone_bought_y", "munich_windows10_google_home")
STATIC_SEGMENTS: Final = ("tablet_south_germany", "cafe_radius_4km")
COVERED_SEGMENTS: Final[frozenset[str]] = frozenset(
    {seg for segs in PERSONA_SEGMENTS.values() for seg in segs}
    | {f"top_spender_{c}" for c in TOP_SPENDER_THRESHOLDS}
    | set(MICRO_SEGMENTS)
    | set(STATIC_SEGMENTS)
)
"""Segment ids whose membership `VisitorTruth.expected_segments` predicts exactly."""
CAFE: Final = (52.4786, 13.4330, 4.0)
"""lat, lon, radius km of `cafe_radius_4km` in segments/default.yaml."""
CAFE_PLACE: Final = "berlin_neukoelln"
SOUTH_GERMANY_PLACES: Final = frozenset({"munich", "stuttgart"})

MALFORMED_KINDS: Final = ("not_json", "unknown_type", "schema_violation", "future_timestamp", "too_large")
"""Values of `schemas.deadletter.DeadLetterReason` the injected malformed records exercise."""

# -- catalogue ----------------------------------------------------------------------------------------

CATEGORIES: Final = ("electronics", "clothing", "home_decor", "books", "sports")
PRODUCT_X: Final = "P-1001"
"""Product X of the brief: a smartphone (electronics)."""
PRODUCT_Y: Final = "P-2002"
"""Product Y of the brief: a hoodie (clothing)."""


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float


_CATALOGUE_SPEC: Final[Mapping[str, tuple[int, tuple[str, ...], tuple[tuple[str, int, int], ...]]]] = {
    "electronics": (
        1000,
        ("Nova", "Volt", "Kite", "Orbit"),
        (
            ("Smartphone", 329, 1099),
            ("Wireless Earbuds", 39, 249),
            ("USB-C Cable", 9, 25),
            ("Power Bank", 19, 59),
            ("Bluetooth Speaker", 29, 219),
            ("Smartwatch", 149, 449),
            ("Tablet", 249, 899),
            ("Laptop", 699, 1299),
            ("4K Monitor", 279, 699),
            ("Mechanical Keyboard", 59, 179),
        ),
    ),
    "clothing": (
        2000,
        ("Alpine", "Urban", "Fjord", "Riviera"),
        (
            ("Hoodie", 39, 89),
            ("T-Shirt", 12, 35),
            ("Jeans", 49, 119),
            ("Sneakers", 59, 159),
            ("Rain Jacket", 79, 229),
            ("Wool Sweater", 49, 139),
            ("Winter Coat", 129, 299),
            ("Socks 5-Pack", 9, 19),
            ("Chinos", 39, 99),
            ("Summer Dress", 39, 149),
        ),
    ),
    "home_decor": (
        3000,
        ("Lumen", "Terra", "Nordic", "Casa"),
        (
            ("Vase", 15, 79),
            ("Cushion", 12, 45),
            ("Floor Lamp", 59, 249),
            ("Rug", 49, 399),
            ("Picture Frame", 9, 39),
            ("Scented Candle", 8, 29),
            ("Wall Mirror", 39, 199),
            ("Armchair", 199, 599),
            ("Plant Pot", 9, 49),
            ("Throw Blanket", 19, 89),
        ),
    ),
    "books": (
        4000,
        ("Quill", "Atlas", "Ember", "Harbor"),
        (
            ("Crime Novel", 9, 24),
            ("Cookbook", 14, 39),
            ("Travel Guide", 12, 29),
            ("Biography", 12, 32),
            ("Science Fiction Novel", 9, 22),
            ("Children's Book", 7, 19),
            ("Poetry Collection", 8, 21),
            ("History Book", 14, 45),
            ("Self-Help Book", 10, 25),
            ("Graphic Novel", 12, 35),
        ),
    ),
    "sports": (
        5000,
        ("Peak", "Stride", "Summit", "Pulse"),
        (
            ("Yoga Mat", 15, 59),
            ("Running Shoes", 59, 179),
            ("Dumbbell Set", 29, 149),
            ("Bike Helmet", 39, 129),
            ("Water Bottle", 8, 29),
            ("Tennis Racket", 39, 199),
            ("Football", 15, 39),
            ("Hiking Backpack", 49, 159),
            ("Fitness Tracker", 39, 129),
            ("Swim Goggles", 9, 29),
        ),
    ),
}
_FIXED_PRICES: Final = {PRODUCT_X: 699.0, PRODUCT_Y: 59.9}


def _build_catalogue() -> tuple[Product, ...]:
    rng = Random("tessera-catalogue-v1")  # fixed: the catalogue does not change with the seed
    products: list[Product] = []
    for category, (base, brands, kinds) in _CATALOGUE_SPEC.items():
        for k, (kind, lo, hi) in enumerate(kinds):
            for b, brand in enumerate(brands):
                pid = f"P-{base + k * len(brands) + b}"
                price = _FIXED_PRICES.get(pid) or max(lo, round(rng.uniform(lo, hi))) - 0.01
                products.append(Product(pid, f"{brand} {kind}", category, round(price, 2)))
    return tuple(products)


CATALOGUE: Final[tuple[Product, ...]] = _build_catalogue()
PRODUCTS: Final[Mapping[str, Product]] = {p.product_id: p for p in CATALOGUE}
_BY_CATEGORY: Final[Mapping[str, tuple[Product, ...]]] = {
    c: tuple(p for p in CATALOGUE if p.category == c) for c in CATEGORIES
}


@lru_cache(maxsize=16)
def _cheaper_than(max_price: float) -> tuple[Product, ...]:
    return tuple(p for p in CATALOGUE if p.price <= max_price)


_CATEGORY_TITLES: Final = {
    "electronics": "Electronics",
    "clothing": "Clothing",
    "home_decor": "Home & Decor",
    "books": "Books",
    "sports": "Sports",
}
_SEARCHES: Final[Mapping[str, tuple[str, ...]]] = {
    "electronics": ("smartphone", "kopfhörer", "earbuds", "laptop", "usb c kabel", "powerbank", "smartwatch"),
    "clothing": ("hoodie", "jeans", "sneaker", "regenjacke", "t-shirt", "wintermantel"),
    "home_decor": ("vase", "kissen", "stehlampe", "teppich", "bilderrahmen", "duftkerze"),
    "books": ("krimi", "kochbuch", "reiseführer", "roman", "comic"),
    "sports": ("yogamatte", "laufschuhe", "hanteln", "fahrradhelm", "rucksack"),
}
_BARGAIN_SEARCHES: Final = ("sale", "angebote", "gutschein", "rabatt", "outlet", "black friday")
_COUPONS: Final = ("SAVE10", "WELCOME15", "SPRING20", "NEWSLETTER5", "FLASH25")

# -- devices, places, sources ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    key: str
    user_agent: str
    category: str
    """What a user-agent parser should report: mobile, tablet, desktop."""
    os: str
    browser: str
    screens: tuple[tuple[int, int], ...]
    weight: float


DEVICES: Final[tuple[DeviceProfile, ...]] = (
    DeviceProfile(
        "android_samsung",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.113 Mobile Safari/537.36",
        "mobile",
        "Android",
        "Chrome Mobile",
        ((384, 854), (412, 915)),
        14,
    ),
    DeviceProfile(
        "android_pixel",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        "mobile",
        "Android",
        "Chrome Mobile",
        ((412, 915),),
        7,
    ),
    DeviceProfile(
        "android_xiaomi",
        "Mozilla/5.0 (Linux; Android 13; 2201116SG) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.6312.118 Mobile Safari/537.36",
        "mobile",
        "Android",
        "Chrome Mobile",
        ((393, 873),),
        6,
    ),
    DeviceProfile(
        "iphone_15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Mobile/15E148 Safari/604.1",
        "mobile",
        "iOS",
        "Mobile Safari",
        ((393, 852), (430, 932)),
        14,
    ),
    DeviceProfile(
        "iphone_13",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1",
        "mobile",
        "iOS",
        "Mobile Safari",
        ((390, 844),),
        8,
    ),
    DeviceProfile(
        "ipad",
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
        "tablet",
        "iOS",
        "Mobile Safari",
        ((820, 1180), (1024, 1366)),
        5,
    ),
    DeviceProfile(
        "windows10_chrome",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        "Windows",
        "Chrome",
        ((1920, 1080), (1366, 768), (1536, 864)),
        17,
    ),
    DeviceProfile(
        "windows10_edge",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
        "desktop",
        "Windows",
        "Edge",
        ((1920, 1080), (1280, 720)),
        8,
    ),
    DeviceProfile(
        "windows10_firefox",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Windows",
        "Firefox",
        ((1920, 1080),),
        3,
    ),
    DeviceProfile(
        "macos_safari",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15",
        "desktop",
        "Mac OS X",
        "Safari",
        ((1440, 900), (1512, 982), (2560, 1440)),
        9,
    ),
    DeviceProfile(
        "macos_chrome",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        "Mac OS X",
        "Chrome",
        ((1440, 900), (1728, 1117)),
        4,
    ),
    DeviceProfile(
        "linux_firefox",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Linux",
        "Firefox",
        ((1920, 1080), (2560, 1440)),
        3,
    ),
)
_DEVICE_BY_KEY: Final = {d.key: d for d in DEVICES}


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


_PLACE_WEIGHTS: Final[Mapping[str, float]] = {
    "zurich": 8, "geneva": 4, "basel": 3,
    "cologne": 7, "duesseldorf": 6, "dortmund": 4, "essen": 4,
    "munich": 9, "berlin": 9, "berlin_neukoelln": 2, "hamburg": 7, "stuttgart": 5,
    "vienna": 7, "amsterdam": 5, "paris": 3, "london": 3,
}  # fmt: skip
_LOCALES: Final[Mapping[str, tuple[str, ...]]] = {
    "CH": ("de-CH", "de-CH", "de-CH", "fr-CH", "en-US"),
    "DE": ("de-DE", "de-DE", "de-DE", "de-DE", "en-US"),
    "AT": ("de-AT", "de-AT", "de-AT", "en-US"),
    "NL": ("nl-NL", "nl-NL", "en-US"),
    "FR": ("fr-FR", "fr-FR", "en-US"),
    "GB": ("en-GB",),
}

# Traffic sources of a session: (key, weight).
_SOURCES: Final = (
    ("direct", 28),
    ("google", 24),
    ("bing", 4),
    ("facebook", 6),
    ("instagram", 5),
    ("newsletter", 10),
    ("cpc", 14),
    ("referral", 9),
)
_GOOGLE_SOURCES: Final = frozenset({"google", "cpc"})
_REFERRAL_SITES: Final = (
    "https://www.idealo.de/",
    "https://www.reddit.com/",
    "https://www.chip.de/",
    "https://www.galaxus.ch/",
)
_CPC_CAMPAIGNS: Final = ("brand-search", "spring-sale", "generic-electronics", "retargeting-cart")
_SOCIAL_CAMPAIGNS: Final = ("summer-drop", "influencer-q2", "new-arrivals")

# -- public result types ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimParams:
    """Knobs of the simulation; the defaults are the shipped mix with clean traffic."""

    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    """Persona → share (normalised); counts are exact (largest remainder), order is shuffled."""
    duplicate_rate: float = 0.0
    """Share of events sent twice with the same event_id (client retries)."""
    malformed: int = 0
    """Malformed records of each `MALFORMED_KINDS` kind in `Simulation.malformed`."""
    micro_share: float = 0.01
    """Visitors per planted micro-segment, as a share of `visitors` ..."""
    micro_min: int = 2
    """... but at least this many (when the persona pool allows)."""
    no_consent_share: float = 0.0
    """Share of visitors whose events deny personalization consent (their truth: no segments)."""


@dataclass(frozen=True, slots=True)
class VisitorTruth:
    visitor_id: str
    persona: str
    expected_segments: list[str]
    """Sorted; members of `COVERED_SEGMENTS` only."""
    micro_segments: list[str]
    """The micro/static segments among `expected_segments`."""
    category: str | None
    """The big spender's category."""
    place: str
    country: str
    region: str
    region_code: str
    city: str
    lat: float
    lon: float
    ip: str
    device: str
    device_category: str
    os: str
    browser: str
    user_agent: str
    locale: str
    consent: bool
    age: int | None
    first_seen: str
    last_seen: str
    events: int
    """Events generated for the visitor, duplicates included."""
    duplicates: int


@dataclass(slots=True)
class Simulation:
    events: list[dict[str, Any]]
    """JSON-ready events, sorted by event_time (ties: visitor, then generation order)."""
    truth: dict[str, VisitorTruth]
    malformed: list[tuple[str, bytes, str]] = field(default_factory=list)
    """(reason, raw bytes, visitor key): records the pipeline must dead-letter."""
    seed: int = 0
    end: str = ""


# -- plan ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Spec:
    index: int
    visitor_id: str
    seed: int
    persona: str
    place: Place
    device: DeviceProfile
    screen: tuple[int, int]
    locale: str
    consent: bool
    category: str | None = None
    micro: str | None = None


def _weighted(rng: Random, items: Iterable[tuple[Any, float]]) -> Any:
    pairs = list(items)
    total = sum(w for _, w in pairs)
    x = rng.random() * total
    for item, w in pairs:
        x -= w
        if x < 0:
            return item
    return pairs[-1][0]


def _counts(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    unknown = set(mix) - set(PERSONAS)
    if unknown:
        raise ValueError(f"unknown personas in mix: {sorted(unknown)}")
    total = sum(max(0.0, mix.get(p, 0.0)) for p in PERSONAS)
    if total <= 0:
        raise ValueError("the persona mix is empty")
    exact = {p: n * max(0.0, mix.get(p, 0.0)) / total for p in PERSONAS}
    counts = {p: int(v) for p, v in exact.items()}
    rest = n - sum(counts.values())
    for p in sorted(PERSONAS, key=lambda p: (-(exact[p] - counts[p]), PERSONAS.index(p)))[:rest]:
        counts[p] += 1
    return counts


def _plan(visitors: int, master: Random, params: SimParams) -> list[_Spec]:
    counts = _counts(visitors, params.mix)
    personas = [p for p in PERSONAS for _ in range(counts[p])]
    master.shuffle(personas)
    places = load_places()
    place_names = sorted({p.place for p in places}, key=list(_PLACE_WEIGHTS).index)
    by_place = {name: [p for p in places if p.place == name] for name in place_names}
    specs: list[_Spec] = []
    for i, persona in enumerate(personas):
        visitor_id = str(uuid.UUID(int=master.getrandbits(128), version=4))
        seed = master.getrandbits(64)
        place = master.choice(by_place[_weighted(master, ((n, _PLACE_WEIGHTS[n]) for n in place_names))])
        device = _weighted(master, ((d, d.weight) for d in DEVICES))
        consent = master.random() >= params.no_consent_share
        spec = _Spec(
            index=i,
            visitor_id=visitor_id,
            seed=seed,
            persona=persona,
            place=place,
            device=device,
            screen=master.choice(device.screens),
            locale=master.choice(_LOCALES.get(place.country, ("en-US",))),
            consent=consent,
            category=master.choice(list(TOP_SPENDER_THRESHOLDS)) if persona == "big_spender" else None,
        )
        specs.append(spec)

    # Plant the micro-segments on consenting visitors whose persona segments they cannot disturb.
    per_segment = max(params.micro_min, round(visitors * params.micro_share))
    micro_places = {
        "ch_android_viewing_x": ("zurich", "geneva", "basel"),
        "nrw_iphone_bought_y": ("cologne", "duesseldorf", "dortmund", "essen"),
        "munich_windows10_google_home": ("munich",),
    }
    micro_devices = {
        "ch_android_viewing_x": ("android_samsung", "android_pixel", "android_xiaomi"),
        "nrw_iphone_bought_y": ("iphone_15", "iphone_13"),
        "munich_windows10_google_home": ("windows10_chrome", "windows10_edge", "windows10_firefox"),
    }
    micro_personas = {
        "ch_android_viewing_x": ("window_shopper", "casual_visitor"),
        "nrw_iphone_bought_y": ("loyal_buyer",),
        "munich_windows10_google_home": ("window_shopper", "casual_visitor"),
    }
    for micro in MICRO_SEGMENTS:
        pool = [s for s in specs if s.persona in micro_personas[micro] and s.consent and s.micro is None]
        for spec in master.sample(pool, min(per_segment, len(pool))):
            spec.micro = micro
            spec.place = master.choice([p for p in places if p.place in micro_places[micro]])
            spec.device = _DEVICE_BY_KEY[master.choice(micro_devices[micro])]
            spec.screen = master.choice(spec.device.screens)
            spec.locale = master.choice(_LOCALES[spec.place.country])
    return specs


# -- one visitor ------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _day_prefix(day: int) -> str:
    return f"{_EPOCH + timedelta(days=day):%Y-%m-%d}T"


def _iso(ms: int) -> str:
    """ISO-8601 UTC with milliseconds: `2026-11-20T15:37:12.345Z`."""
    day, rest = divmod(ms, DAY_MS)
    seconds, millis = divmod(rest, SECOND_MS)
    minutes, sec = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_day_prefix(day)}{hour:02d}:{minute:02d}:{sec:02d}.{millis:03d}Z"


def _uuid4(rng: Random) -> str:
    """A version-4 UUID string drawn from `rng` (what `uuid.UUID(int=..., version=4)` gives)."""
    n = (rng.getrandbits(128) & ~(0xC000 << 48) | (0x8000 << 48)) & ~(0xF000 << 64) | (4 << 76)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _hour_weight(ms: int) -> float:
    hour = (ms // HOUR_MS) % 24  # UTC; the shop's visitors are in UTC+0..+2
    if hour < 5:
        return 0.12
    if hour < 8:
        return 0.5
    if hour < 16:
        return 0.8
    if hour < 21:
        return 1.0
    return 0.55


@dataclass(slots=True)
class _Page:
    url: str
    path: str
    referrer: str | None
    utm: dict[str, str] | None


@dataclass(slots=True)
class _Generated:
    events: list[tuple[int, int, dict[str, Any]]]
    """(time ms, sequence, event) in time order."""
    truth: VisitorTruth


class _VisitorBuilder:
    """Generates one visitor's sessions, in time order, with its own random generator."""

    def __init__(self, spec: _Spec, end_ms: int, history_days: int, params: SimParams) -> None:
        self.spec = spec
        self.rng = Random(spec.seed)
        self.end = end_ms
        self.history_ms = history_days * DAY_MS
        self.params = params
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.user_id: str | None = None
        self.age: int | None = None
        self.spent: dict[str, float] = {}
        self.consent = {"analytics": True, "personalization": spec.consent, "marketing": spec.consent}
        self.screen = {"width": spec.screen[0], "height": spec.screen[1]}
        self.no_google = (
            spec.micro != "munich_windows10_google_home"
            and spec.place.place == "munich"
            and spec.device.os == "Windows"
        )
        # per-session state
        self._buf: list[tuple[int, dict[str, Any]]] = []
        self._rel = 0
        self._sid = ""
        self._page: _Page | None = None
        self._landing: tuple[str | None, dict[str, str] | None] = (None, None)
        self._no_x = False
        self._no_y = False

    # -- ids and time ---------------------------------------------------------------------------

    def _uuid(self) -> str:
        return _uuid4(self.rng)

    def _pick_time(self, lo: int, hi: int, taken: list[int]) -> int | None:
        """A start in [lo, hi], biased to daytime, at least SESSION_GAP_MS from every taken start."""
        if hi < lo:
            return None
        candidate = None
        for _ in range(60):
            candidate = self.rng.randint(lo, hi)
            if all(abs(candidate - t) >= SESSION_GAP_MS for t in taken) and self.rng.random() < _hour_weight(
                candidate
            ):
                return candidate
        if candidate is not None and all(abs(candidate - t) >= SESSION_GAP_MS for t in taken):
            return candidate
        return None

    def _schedule(
        self, plan: list[tuple[int, int, str, bool]], fixed: list[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        """Start times for (lo, hi, kind, required) sessions; required ones are placed first."""
        taken = [t for t, _ in fixed]
        out = list(fixed)
        for lo, hi, kind, required in sorted(plan, key=lambda p: not p[3]):
            start = self._pick_time(lo, hi, taken)
            if start is None and required:
                # Crowded range: relax the gap rather than lose a session the persona needs.
                start = self.rng.randint(lo, max(lo, hi))
            if start is not None:
                taken.append(start)
                out.append((start, kind))
        out.sort()
        return out

    # -- sessions -------------------------------------------------------------------------------

    def _begin(self, desired_start: int, source: str | None = None) -> None:
        self._buf = []
        self._rel = 0
        self._sid = f"s-{self.rng.getrandbits(64):016x}"
        self._page = None
        micro = self.spec.micro
        self._no_x = micro != "ch_android_viewing_x" and desired_start > self.end - 2 * HOUR_MS
        self._no_y = micro != "nrw_iphone_bought_y" and desired_start > self.end - 26 * HOUR_MS
        if source is None:
            choices = [(s, w) for s, w in _SOURCES if not (self.no_google and s in _GOOGLE_SOURCES)]
            source = _weighted(self.rng, choices)
        self._landing = self._source(source)

    def _source(self, source: str) -> tuple[str | None, dict[str, str] | None]:
        rng = self.rng
        if source == "google":
            tld = rng.choice(("com", "com", "com", "de", "ch" if self.spec.place.country == "CH" else "at"))
            return f"https://www.google.{tld}/", None
        if source == "google_home":
            return "https://www.google.com/", None
        if source == "bing":
            return "https://www.bing.com/", None
        if source == "facebook":
            ref = rng.choice(("https://m.facebook.com/", "https://l.facebook.com/"))
            if rng.random() < 0.4:
                return ref, {
                    "source": "facebook",
                    "medium": "paid_social",
                    "campaign": rng.choice(_SOCIAL_CAMPAIGNS),
                }
            return ref, None
        if source == "instagram":
            return "https://l.instagram.com/", (
                {"source": "instagram", "medium": "social", "campaign": rng.choice(_SOCIAL_CAMPAIGNS)}
                if rng.random() < 0.5
                else None
            )
        if source == "newsletter":
            week = rng.randint(1, 52)
            return None, {"source": "newsletter", "medium": "email", "campaign": f"weekly-2026-{week:02d}"}
        if source == "cpc":
            return "https://www.google.com/", {
                "source": "google",
                "medium": "cpc",
                "campaign": rng.choice(_CPC_CAMPAIGNS),
                "term": rng.choice(("shop", "angebote", "online kaufen")),
            }
        if source == "referral":
            return rng.choice(_REFERRAL_SITES), None
        return None, None  # direct

    def _gap(self, lo_s: float, hi_s: float) -> None:
        self._rel += self.rng.randint(int(lo_s * SECOND_MS), int(hi_s * SECOND_MS))

    def _nav(self, path: str, page_type: str, title: str, quick: bool = False) -> None:
        """Load a page: advance the clock (think time), emit page_view."""
        if self._page is None:
            referrer, utm = self._landing
            url = SHOP + path
            if utm:
                url += ("&" if "?" in url else "?") + urlencode({f"utm_{k}": v for k, v in utm.items()})
        else:
            if quick:
                self._gap(5, 40)
            else:
                self._gap(8, 95)
            referrer, utm = self._page.url, None
            url = SHOP + path
        self._page = _Page(url=url, path=path.split("?", 1)[0], referrer=referrer, utm=utm)
        self._emit("page_view", {"page_type": page_type, "title": title})

    def _emit(self, etype: str, props: dict[str, Any], gap_s: tuple[float, float] | None = None) -> None:
        if gap_s is not None:
            self._gap(*gap_s)
        page = self._page
        ctx: dict[str, Any] = {}
        if page is not None:
            ctx["page_url"] = page.url
            ctx["page_path"] = page.path
            if page.referrer:
                ctx["referrer"] = page.referrer
            if page.utm:
                ctx["utm"] = dict(page.utm)
        ctx["user_agent"] = self.spec.device.user_agent
        ctx["screen"] = dict(self.screen)
        ctx["ip"] = self.spec.place.ip
        ctx["locale"] = self.spec.locale
        ctx["consent"] = dict(self.consent)
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": self._uuid(),
            "visitor_id": self.spec.visitor_id,
        }
        if self.user_id is not None:
            event["user_id"] = self.user_id
        event["session_id"] = self._sid
        event["event_time"] = ""
        event["type"] = etype
        event["context"] = ctx
        event["properties"] = props
        self._buf.append((self._rel, event))

    def _commit(self, start: int) -> None:
        for rel, event in self._buf:
            t = start + rel
            event["event_time"] = _iso(t)
            self.events.append((t, event))
        self._buf = []

    def _duration(self) -> int:
        return self._buf[-1][0] if self._buf else 0

    def _place(self, desired: int, latest_end: int | None = None) -> None:
        """Commit the buffered session at `desired`, moved earlier if it would run past `end`."""
        limit = self.end if latest_end is None else latest_end
        self._commit(min(desired, limit - self._duration() - SECOND_MS))

    # -- page kinds -------------------------------------------------------------------------------

    def _browse_product(self, product: Product, quick: bool = False) -> None:
        self._nav(f"/p/{product.product_id}", "product", product.name, quick)
        self._emit(
            "product_view",
            {
                "product_id": product.product_id,
                "category": product.category,
                "price": product.price,
                "currency": "EUR",
            },
            gap_s=(0.2, 1.5),
        )

    def _browse_category(self, category: str, quick: bool = False) -> None:
        self._nav(f"/c/{category}", "category", _CATEGORY_TITLES[category], quick)
        self._emit("category_view", {"category": category}, gap_s=(0.2, 1.5))

    def _search(self, query: str) -> None:
        self._nav(f"/search?q={quote(query)}", "search", f"Search: {query}")
        self._emit("search", {"query": query, "results": self.rng.randint(0, 60)}, gap_s=(0.2, 1.5))

    def _home(self) -> None:
        self._nav("/", "home", "Shop Example — Home")

    def _any_product(self, category: str | None = None) -> Product:
        pool = _BY_CATEGORY[category] if category else CATALOGUE
        product = self.rng.choice(pool)
        while self._no_x and product.product_id == PRODUCT_X:
            product = self.rng.choice(pool)
        return product

    def _landing_page(self, category: str | None = None) -> None:
        """First page of a session, shaped by where the visitor came from."""
        referrer, utm = self._landing
        rng = self.rng
        if utm is not None and utm.get("medium") in ("email", "cpc") and rng.random() < 0.6:
            self._browse_category(category or rng.choice(CATEGORIES))
        elif (
            referrer is not None
            and "google" not in referrer
            and "bing" not in referrer
            and rng.random() < 0.6
        ):
            self._browse_product(self._any_product(category))
        elif referrer is not None and rng.random() < 0.35:
            self._browse_product(self._any_product(category))
        else:
            self._home()

    def _wander(self, steps: int, category: str | None = None, bargain: bool = False) -> None:
        """Browse category pages, product pages and searches."""
        rng = self.rng
        for _ in range(steps):
            cat = category if category and rng.random() < 0.75 else rng.choice(CATEGORIES)
            roll = rng.random()
            if roll < 0.3:
                self._browse_category(cat)
            elif roll < 0.8:
                self._browse_product(self._any_product(cat))
            elif bargain and rng.random() < 0.6:
                self._search(rng.choice(_BARGAIN_SEARCHES))
            else:
                self._search(rng.choice(_SEARCHES[cat]))

    def _maybe_exit_intent(self, p: float) -> None:
        if self.rng.random() < p:
            trigger = "back_button" if self.spec.device.category != "desktop" else "mouse_leave"
            self._emit("exit_intent", {"trigger": trigger}, gap_s=(2, 20))

    # -- buying ---------------------------------------------------------------------------------

    def _buyable(
        self, max_price: float, cap_share: float, discount: float = 0.0, exclude: Iterable[Product] = ()
    ) -> list[Product]:
        """Products up to `max_price` that keep each category's spend under `cap_share` x threshold."""
        skip = {p.product_id for p in exclude}
        if self._no_x:
            skip.add(PRODUCT_X)
        if self._no_y:
            skip.add(PRODUCT_Y)
        room = {
            c: cap_share * threshold - self.spent.get(c, 0.0)
            for c, threshold in TOP_SPENDER_THRESHOLDS.items()
        }
        factor = 1 - discount
        return [
            p
            for p in _cheaper_than(max_price)
            if p.product_id not in skip and p.price * factor <= room.get(p.category, math.inf)
        ]

    def _add(self, product: Product, price: float, quantity: int = 1) -> None:
        self._emit(
            "add_to_cart",
            {
                "product_id": product.product_id,
                "category": product.category,
                "price": price,
                "quantity": quantity,
                "currency": "EUR",
            },
            gap_s=(3, 40),
        )

    def _identify(self) -> None:
        if self.user_id is not None:
            return
        self.user_id = f"U-{self.rng.randint(100000, 999999)}"
        props: dict[str, Any] = {"traits": {"newsletter": self.rng.random() < 0.5, "plan": "registered"}}
        if self.rng.random() < 0.45:
            self.age = self.rng.randint(18, 72)
            props["age"] = self.age
        self._emit("identify", props, gap_s=(5, 30))

    def _checkout_and_buy(
        self,
        lines: list[tuple[Product, float, int, float]],
        coupon: tuple[str, float] | None = None,
        identify: bool = False,
        on_cart_page: bool = False,
    ) -> None:
        """Cart page, checkout, optional coupon, purchase. lines: (product, price, quantity, discount)."""
        rng = self.rng
        subtotal = round(sum(price * qty for _, price, qty, _ in lines), 2)
        items = sum(qty for _, _, qty, _ in lines)
        if not on_cart_page:
            self._nav("/cart", "cart", "Cart")
        self._emit("cart_view", {"cart_value": subtotal, "items": items}, gap_s=(0.2, 1.0))
        self._nav("/checkout", "checkout", "Checkout")
        self._emit("checkout", {"cart_value": subtotal, "currency": "EUR", "step": 1}, gap_s=(0.2, 1.0))
        if identify:
            self._identify()
        value = subtotal
        if coupon is not None:
            code, off = coupon
            value = round(max(0.0, subtotal - off), 2)
            self._emit("coupon_applied", {"coupon": code, "discount_value": off}, gap_s=(10, 60))
        self._nav("/checkout/confirmation", "checkout", "Thank you for your order")
        purchase_items = []
        for product, price, qty, discount in lines:
            item: dict[str, Any] = {
                "product_id": product.product_id,
                "category": product.category,
                "price": price,
                "quantity": qty,
            }
            if discount > 0:
                item["discount"] = discount
            purchase_items.append(item)
            self.spent[product.category] = round(self.spent.get(product.category, 0.0) + price * qty, 2)
        props: dict[str, Any] = {
            "order_id": f"O-{rng.getrandbits(40):010x}",
            "value": value,
            "currency": "EUR",
            "items": purchase_items,
        }
        if coupon is not None:
            props["coupon"] = coupon[0]
        self._emit("purchase", props, gap_s=(0.2, 2.0))

    def _shop_plain(
        self, max_price: float, cap_share: float, n_items: int, force: Product | None = None
    ) -> None:
        """A full-price purchase session: land, browse, add items (maybe remove one), buy."""
        rng = self.rng
        self._landing_page()
        self._wander(rng.randint(0, 3))
        lines: list[tuple[Product, float, int, float]] = []
        wanted: list[Product] = [force] if force is not None else []
        for _ in range(n_items - len(wanted)):
            pool = self._buyable(max_price, cap_share, exclude=wanted)
            if not pool:
                break
            wanted.append(rng.choice(pool))
        if not wanted:
            wanted.append(rng.choice(_BY_CATEGORY["books"]))
        for product in wanted:
            qty = 2 if product.price < 30 and rng.random() < 0.2 else 1
            self._browse_product(product)
            self._add(product, product.price, qty)
            lines.append((product, product.price, qty, 0.0))
        on_cart_page = rng.random() < 0.15
        if on_cart_page:  # an extra item, added and taken out again on the cart page
            extra = self._any_product()
            self._browse_product(extra)
            self._add(extra, extra.price)
            self._nav("/cart", "cart", "Cart")
            self._emit("remove_from_cart", {"product_id": extra.product_id, "quantity": 1}, gap_s=(3, 20))
        self._checkout_and_buy(lines, identify=rng.random() < 0.7, on_cart_page=on_cart_page)

    def _shop_bargain(self) -> None:
        rng = self.rng
        self._landing_page()
        self._search(rng.choice(_BARGAIN_SEARCHES))
        self._wander(rng.randint(1, 4), bargain=True)
        lines: list[tuple[Product, float, int, float]] = []
        for _ in range(rng.randint(1, 2)):
            share = rng.choice((0.15, 0.2, 0.25, 0.3, 0.4))
            pool = self._buyable(60.0, 0.3, discount=share, exclude=[line[0] for line in lines])
            product = rng.choice(pool or list(_BY_CATEGORY["books"]))
            price = round(product.price * (1 - share), 2)
            discount = round(product.price - price, 2)
            self._nav(f"/p/{product.product_id}", "product", product.name)
            self._emit(
                "product_view",
                {
                    "product_id": product.product_id,
                    "category": product.category,
                    "price": price,
                    "currency": "EUR",
                },
                gap_s=(0.2, 1.5),
            )
            self._add(product, price)
            lines.append((product, price, 1, discount))
        subtotal = sum(price for _, price, _, _ in lines)
        code = rng.choice(_COUPONS)
        off = round(min(subtotal * 0.5, rng.choice((5.0, 10.0)) if code != "FLASH25" else subtotal * 0.25), 2)
        self._checkout_and_buy(lines, coupon=(code, off), identify=rng.random() < 0.5)

    def _shop_big(self, lines: list[tuple[Product, float, int, float]]) -> None:
        category = lines[0][0].category
        self._landing_page(category)
        self._browse_category(category)
        self._wander(self.rng.randint(1, 3), category=category)
        for product, price, qty, _ in lines:
            self._browse_product(product)
            self._add(product, price, qty)
        self._checkout_and_buy(lines, identify=self.rng.random() < 0.6)

    def _browse_session(self, steps: int, category: str | None = None, bargain: bool = False) -> None:
        self._landing_page(category)
        self._wander(steps, category=category, bargain=bargain)
        self._maybe_exit_intent(0.08)

    # -- micro sessions ---------------------------------------------------------------------------

    def _micro_session(self) -> None:
        """The final, short session in the last minutes before `end` that plants the micro-segment."""
        rng = self.rng
        desired = self.end - rng.randint(3 * MINUTE_MS, 8 * MINUTE_MS)
        if self.spec.micro == "ch_android_viewing_x":
            self._begin(desired, source=rng.choice(("direct", "facebook", "instagram", "google")))
            self._browse_product(PRODUCTS[PRODUCT_X])
            for _ in range(rng.randint(0, 2)):
                self._browse_product(self._any_product("electronics"), quick=True)
        else:  # munich_windows10_google_home
            self._begin(desired, source="google_home")
            self._home()
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.5:
                    self._browse_category(rng.choice(CATEGORIES), quick=True)
                else:
                    self._browse_product(self._any_product(), quick=True)
        self._place(desired)

    # -- personas ---------------------------------------------------------------------------------

    def _first_seen(self) -> int:
        oldest = self.end - self.history_ms + HOUR_MS
        return self.rng.randint(oldest, self.end - int(10.5 * DAY_MS))

    def _run_plain_sessions(self, sessions: list[tuple[int, str]], runners: Mapping[str, Any]) -> None:
        for start, kind in sessions:
            runners[kind](start)

    def _browse_runner(self, lo: int, hi: int, category: str | None = None, bargain: bool = False) -> Any:
        def run(start: int) -> None:
            self._begin(start)
            self._browse_session(self.rng.randint(lo, hi), category=category, bargain=bargain)
            self._place(start)

        return run

    def loyal_buyer(self) -> None:
        rng, end = self.rng, self.end
        fs = self._first_seen()
        plan: list[tuple[int, int, str, bool]] = []
        n_recent = rng.randint(4, 7)
        y_buy = self.spec.micro == "nrw_iphone_bought_y"
        if y_buy:
            plan.append((end - 10 * HOUR_MS, end - HOUR_MS, "buy_y", True))
            n_recent -= 1
        recent_lo = max(fs + SESSION_GAP_MS, end - 25 * DAY_MS)
        plan += [(recent_lo, end - 40 * MINUTE_MS, "buy", True)] * n_recent
        if fs < end - 27 * DAY_MS:
            plan += [(fs + SESSION_GAP_MS, end - 26 * DAY_MS, "buy", False)] * rng.randint(0, 3)
        plan += [(fs + SESSION_GAP_MS, end - 30 * MINUTE_MS, "browse", False)] * rng.randint(1, 4)
        sessions = self._schedule(plan, [(fs, "first")])

        def buy(start: int, force: Product | None = None) -> None:
            self._begin(start)
            self._shop_plain(80.0, 0.4, rng.randint(1, 3), force=force)
            self._place(start)

        self._run_plain_sessions(
            sessions,
            {
                "first": self._browse_runner(2, 6),
                "browse": self._browse_runner(2, 8),
                "buy": buy,
                "buy_y": lambda start: buy(start, PRODUCTS[PRODUCT_Y]),
            },
        )

    def bargain_hunter(self) -> None:
        rng, end = self.rng, self.end
        fs = self._first_seen()
        n = rng.randint(2, 3)
        recent = (max(fs + SESSION_GAP_MS, end - 29 * DAY_MS), end - 40 * MINUTE_MS)
        older = (max(fs + SESSION_GAP_MS, end - 80 * DAY_MS), end - 32 * DAY_MS)
        if older[1] < older[0]:
            n_recent, n_older = 2, 0
        else:
            n_recent = rng.randint(0, min(2, n))
            n_older = n - n_recent
        plan = [(*recent, "buy", True)] * n_recent + [(*older, "buy", True)] * n_older
        plan += [(fs + SESSION_GAP_MS, end - 30 * MINUTE_MS, "browse", False)] * rng.randint(1, 5)
        sessions = self._schedule(plan, [(fs, "first")])

        def buy(start: int) -> None:
            self._begin(start)
            self._shop_bargain()
            self._place(start)

        self._run_plain_sessions(
            sessions,
            {
                "first": self._browse_runner(2, 6, bargain=True),
                "browse": self._browse_runner(2, 8, bargain=True),
                "buy": buy,
            },
        )

    def window_shopper(self) -> None:
        rng, end = self.rng, self.end
        fs = self._first_seen()
        plan = [(fs + SESSION_GAP_MS, end - 20 * MINUTE_MS, "browse", False)] * rng.randint(2, 7)
        if self.spec.micro is not None:
            plan = [(lo, min(hi, end - 3 * HOUR_MS), kind, req) for lo, hi, kind, req in plan]
        sessions = self._schedule(plan, [(fs, "first")])
        self._run_plain_sessions(
            sessions, {"first": self._browse_runner(3, 8), "browse": self._browse_runner(3, 10)}
        )
        if self.spec.micro is not None:
            self._micro_session()

    def casual_visitor(self) -> None:
        rng, end = self.rng, self.end
        micro = self.spec.micro is not None
        latest = end - (3 * HOUR_MS if micro else 20 * MINUTE_MS)
        fs = rng.randint(end - 5 * DAY_MS + HOUR_MS, latest)
        plan: list[tuple[int, int, str, bool]] = []
        if rng.random() < 0.5:
            plan.append((fs + SESSION_GAP_MS, latest, "browse", False))
        sessions = [] if micro and rng.random() < 0.4 else self._schedule(plan, [(fs, "first")])

        def short(start: int) -> None:
            self._begin(start)
            self._landing_page()
            for _ in range(rng.randint(0, 3)):
                roll = rng.random()
                if roll < 0.4:
                    self._browse_category(rng.choice(CATEGORIES))
                elif roll < 0.8:
                    self._browse_product(self._any_product())
                else:
                    self._home()
            self._place(start)

        self._run_plain_sessions(sessions, {"first": short, "browse": short})
        if micro:
            self._micro_session()

    def cart_abandoner(self) -> None:
        rng, end = self.rng, self.end
        fs = self._first_seen()
        final = rng.randint(end - 2 * DAY_MS, end - 50 * MINUTE_MS)
        plan = [(fs + SESSION_GAP_MS, final - 3 * HOUR_MS, "buy", False)] * rng.randint(0, 2)
        plan += [(fs + SESSION_GAP_MS, final - 3 * HOUR_MS, "browse", False)] * rng.randint(1, 3)
        sessions = self._schedule(plan, [(fs, "first")])

        def buy(start: int) -> None:
            self._begin(start)
            self._shop_plain(120.0, 0.4, rng.randint(1, 2))
            self._place(start)

        self._run_plain_sessions(
            sessions,
            {"first": self._browse_runner(2, 6), "browse": self._browse_runner(2, 8), "buy": buy},
        )
        # The final session: fill the cart and leave.
        self._begin(final)
        self._landing_page()
        self._wander(rng.randint(1, 4))
        last_add = 0
        for _ in range(rng.randint(1, 3)):
            product = self._any_product()
            self._browse_product(product)
            self._add(product, product.price, 2 if product.price < 20 and rng.random() < 0.3 else 1)
            last_add = self._rel
        if rng.random() < 0.6:
            self._nav("/cart", "cart", "Cart")
            cart_value = round(
                sum(
                    e["properties"]["price"] * e["properties"]["quantity"]
                    for _, e in self._buf
                    if e["type"] == "add_to_cart"
                ),
                2,
            )
            adds = sum(e["properties"]["quantity"] for _, e in self._buf if e["type"] == "add_to_cart")
            self._emit("cart_view", {"cart_value": cart_value, "items": adds}, gap_s=(0.2, 1.0))
            if rng.random() < 0.4:
                self._nav("/checkout", "checkout", "Checkout")
                self._emit(
                    "checkout", {"cart_value": cart_value, "currency": "EUR", "step": 1}, gap_s=(0.2, 1.0)
                )
        self._maybe_exit_intent(0.5)
        start = min(final, end - 46 * MINUTE_MS - last_add, end - self._duration() - SECOND_MS)
        self._commit(start)

    def big_spender(self) -> None:
        rng, end = self.rng, self.end
        category = self.spec.category or "electronics"
        threshold = TOP_SPENDER_THRESHOLDS[category]
        fs = self._first_seen()
        # The pricier half of the category; never X or Y (the micro-segments are planted elsewhere).
        ranked = sorted(_BY_CATEGORY[category], key=lambda p: (p.price, p.product_id))
        pool = [p for p in ranked[len(ranked) // 2 :] if p.product_id not in (PRODUCT_X, PRODUCT_Y)]
        basket: list[Product] = []
        total = 0.0
        while total < 1.5 * threshold:  # every price < 1.5 x threshold: the total ends below 3 x
            product = rng.choice(pool)
            basket.append(product)
            total += product.price
        orders = 2 if len(basket) >= 2 and rng.random() < 0.5 else 1
        cut = rng.randint(1, len(basket) - 1) if orders == 2 else len(basket)
        groups = [basket[:cut], basket[cut:]] if orders == 2 else [basket]
        lo = max(fs + SESSION_GAP_MS, end - 300 * DAY_MS)
        plan = [(lo, end - HOUR_MS, f"buy{i}", True) for i in range(len(groups))]
        plan += [(fs + SESSION_GAP_MS, end - 30 * MINUTE_MS, "browse", False)] * rng.randint(1, 4)
        sessions = self._schedule(plan, [(fs, "first")])

        def buy_runner(group: list[Product]) -> Any:
            def run(start: int) -> None:
                self._begin(start)
                merged: dict[str, list[Any]] = {}
                for product in group:
                    if product.product_id in merged:
                        merged[product.product_id][2] += 1
                    else:
                        merged[product.product_id] = [product, product.price, 1, 0.0]
                self._shop_big([(p, price, q, d) for p, price, q, d in merged.values()])
                self._place(start)

            return run

        runners: dict[str, Any] = {
            "first": self._browse_runner(2, 6, category=category),
            "browse": self._browse_runner(2, 8, category=category),
        }
        for i, group in enumerate(groups):
            runners[f"buy{i}"] = buy_runner(group)
        self._run_plain_sessions(sessions, runners)

    # -- result ---------------------------------------------------------------------------------

    def build(self) -> _Generated:
        getattr(self, self.spec.persona)()
        self.events.sort(key=lambda te: te[0])
        out: list[tuple[int, int, dict[str, Any]]] = []
        duplicates = 0
        rate = self.params.duplicate_rate
        for seq, (t, event) in enumerate(self.events):
            out.append((t, 2 * seq, event))
            if rate > 0 and self.rng.random() < rate:
                out.append((t, 2 * seq + 1, dict(event)))
                duplicates += 1
        return _Generated(out, self._truth(len(out), duplicates))

    def _expected(self) -> tuple[list[str], list[str]]:
        spec = self.spec
        if not spec.consent:
            return [], []
        segments = set(PERSONA_SEGMENTS[spec.persona])
        if spec.persona == "big_spender" and spec.category:
            segments.add(f"top_spender_{spec.category}")
        micro = set()
        if spec.micro:
            micro.add(spec.micro)
        if spec.device.category == "tablet" and spec.place.place in SOUTH_GERMANY_PLACES:
            micro.add("tablet_south_germany")
        if spec.place.place == CAFE_PLACE and (self.age is None or 18 <= self.age <= 40):
            micro.add("cafe_radius_4km")
        return sorted(segments | micro), sorted(micro)

    def _truth(self, n_events: int, duplicates: int) -> VisitorTruth:
        spec = self.spec
        expected, micro = self._expected()
        place = spec.place
        return VisitorTruth(
            visitor_id=spec.visitor_id,
            persona=spec.persona,
            expected_segments=expected,
            micro_segments=micro,
            category=spec.category,
            place=place.place,
            country=place.country,
            region=place.region,
            region_code=place.region_code,
            city=place.city,
            lat=place.lat,
            lon=place.lon,
            ip=place.ip,
            device=spec.device.key,
            device_category=spec.device.category,
            os=spec.device.os,
            browser=spec.device.browser,
            user_agent=spec.device.user_agent,
            locale=spec.locale,
            consent=spec.consent,
            age=self.age,
            first_seen=_iso(self.events[0][0]) if self.events else "",
            last_seen=_iso(self.events[-1][0]) if self.events else "",
            events=n_events,
            duplicates=duplicates,
        )


# -- malformed records ------------------------------------------------------------------------------


def _malformed(rng: Random, count: int, visitor_ids: list[str], end_ms: int) -> list[tuple[str, bytes, str]]:
    out: list[tuple[str, bytes, str]] = []
    if count <= 0 or not visitor_ids:
        return out

    def base(vid: str, etype: str, props: dict[str, Any], at: int | None = None) -> dict[str, Any]:
        t = end_ms - rng.randint(MINUTE_MS, 5 * DAY_MS) if at is None else at
        return {
            "schema_version": 1,
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "visitor_id": vid,
            "session_id": f"s-{rng.getrandbits(64):016x}",
            "event_time": _iso(t),
            "type": etype,
            "context": {"page_url": f"{SHOP}/", "page_path": "/", "ip": "2.242.0.217"},
            "properties": props,
        }

    for i in range(count):
        vid = rng.choice(visitor_ids)
        event = base(vid, "page_view", {"page_type": "home"})
        whole = orjson.dumps(event)
        variant = i % 3
        if variant == 0:
            raw = whole[: rng.randint(10, len(whole) - 5)]  # truncated on the wire
        elif variant == 1:
            raw = b"visitor_id=" + vid.encode() + b"&type=page_view&ts=" + str(end_ms).encode()
        else:
            raw = b'\xff\xfe{\x00"\x00e\x00v\x00'  # UTF-16 with a BOM: not UTF-8 JSON
        out.append(("not_json", raw, vid))

        vid = rng.choice(visitor_ids)
        etype = ("video_play", "teleport", "Product Viewed")[i % 3]
        out.append(("unknown_type", orjson.dumps(base(vid, etype, {"foo": 1})), vid))

        vid = rng.choice(visitor_ids)
        broken = (
            base(vid, "add_to_cart", {"price": 10.0}),  # no product_id
            base(vid, "purchase", {"order_id": "O-1", "value": -5.0}),  # negative value
            {k: v for k, v in base(vid, "page_view", {}).items() if k != "event_time"},  # no timestamp
            base(vid, "add_to_cart", {"product_id": "P-1000", "quantity": 0}),  # quantity < 1
        )[i % 4]
        out.append(("schema_violation", orjson.dumps(broken), vid))

        vid = rng.choice(visitor_ids)
        future = end_ms + 50 * 365 * DAY_MS + rng.randint(0, DAY_MS)
        out.append(
            ("future_timestamp", orjson.dumps(base(vid, "page_view", {"page_type": "home"}, at=future)), vid)
        )

        vid = rng.choice(visitor_ids)
        blob = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(40_000))
        big = base(vid, "custom", {"name": "debug_dump", "properties": {"blob": blob}})
        out.append(("too_large", orjson.dumps(big), vid))
    return out


# -- public API ---------------------------------------------------------------------------------------


def _end_ms(end: datetime) -> int:
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return (end - _EPOCH) // timedelta(milliseconds=1)


def _prepare(
    visitors: int, seed: int, end: datetime, history_days: int, params: SimParams | None
) -> tuple[SimParams, int, Random, list[_Spec]]:
    if visitors < 0:
        raise ValueError("visitors must be >= 0")
    if history_days < 14:
        raise ValueError("history_days must be >= 14 (personas are first seen more than 10 days before end)")
    params = params or SimParams()
    master = Random(seed)
    specs = _plan(visitors, master, params)
    return params, _end_ms(end), master, specs


def _generate(spec: _Spec, end_ms: int, history_days: int, params: SimParams) -> _Generated:
    return _VisitorBuilder(spec, end_ms, history_days, params).build()


def simulate(
    visitors: int,
    seed: int,
    end: datetime,
    history_days: int = 60,
    params: SimParams | None = None,
) -> Simulation:
    """`visitors` visitors' traffic up to `end` (a naive `end` is taken as UTC) and its ground truth."""
    params, end_ms, master, specs = _prepare(visitors, seed, end, history_days, params)
    keyed: list[tuple[int, int, int, dict[str, Any]]] = []
    truth: dict[str, VisitorTruth] = {}
    for spec in specs:
        generated = _generate(spec, end_ms, history_days, params)
        truth[spec.visitor_id] = generated.truth
        keyed.extend((t, spec.index, seq, event) for t, seq, event in generated.events)
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    malformed = _malformed(
        Random(master.getrandbits(64)), params.malformed, [s.visitor_id for s in specs], end_ms
    )
    log.info(
        "simulation_built",
        visitors=visitors,
        seed=seed,
        events=len(keyed),
        malformed=len(malformed),
        end=_iso(end_ms),
    )
    return Simulation(
        events=[k[3] for k in keyed], truth=truth, malformed=malformed, seed=seed, end=_iso(end_ms)
    )


def iter_events(
    visitors: int,
    seed: int,
    end: datetime,
    history_days: int = 60,
    params: SimParams | None = None,
    *,
    ordered: bool = True,
) -> Iterator[dict[str, Any]]:
    """The events of `simulate(...)` as an iterator.

    `ordered=True` yields exactly `simulate(...).events` (each visitor is generated up front, then
    merged by time). `ordered=False` yields visitor after visitor (each in time order) and holds one
    visitor at a time: constant memory for load tests that need volume, not global time order.
    """
    params, end_ms, _, specs = _prepare(visitors, seed, end, history_days, params)
    if not ordered:
        for spec in specs:
            for _, _, event in _generate(spec, end_ms, history_days, params).events:
                yield event
        return
    streams = [
        [
            (t, spec.index, seq, event)
            for t, seq, event in _generate(spec, end_ms, history_days, params).events
        ]
        for spec in specs
    ]
    for item in heapq.merge(*streams, key=lambda k: (k[0], k[1], k[2])):
        yield item[3]


def write_jsonl(
    sim: Simulation, events_path: str | Path, truth_path: str | Path, *, include_malformed: bool = False
) -> int:
    """Events as JSON lines (and, if asked, the malformed records after them, one per line); the
    truth as one JSON object mapping visitor_id → `VisitorTruth` fields. Returns lines written."""
    lines = 0
    with open(events_path, "wb") as out:
        for event in sim.events:
            out.write(orjson.dumps(event))
            out.write(b"\n")
            lines += 1
        if include_malformed:
            for _, raw, _ in sim.malformed:
                out.write(raw.replace(b"\n", b" "))
                out.write(b"\n")
                lines += 1
    truth = {vid: asdict(t) for vid, t in sim.truth.items()}
    Path(truth_path).write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2))
    log.info("simulation_written", events_path=str(events_path), truth_path=str(truth_path), lines=lines)
    return lines


def read_truth(path: str | Path) -> dict[str, VisitorTruth]:
    """The truth file written by `write_jsonl`."""
    raw = orjson.loads(Path(path).read_bytes())
    return {vid: VisitorTruth(**fields) for vid, fields in raw.items()}
