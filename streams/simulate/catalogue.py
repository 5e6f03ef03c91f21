"""The shop's catalogue: about 200 products in five categories, fixed (it does not change with the seed),
and the words visitors search for and the coupons they redeem."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from random import Random
from typing import Final

CATEGORIES: Final = ("electronics", "clothing", "home_decor", "books", "sports")


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
_FIXED_PRICES: Final = {"P-1001": 699.0, "P-2002": 59.9}
"""Round prices for the smartphone and the hoodie the shipped definitions name as products X and Y."""


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
BY_CATEGORY: Final[Mapping[str, tuple[Product, ...]]] = {
    c: tuple(p for p in CATALOGUE if p.category == c) for c in CATEGORIES
}


@lru_cache(maxsize=16)
def cheaper_than(max_price: float) -> tuple[Product, ...]:
    """Products priced at most `max_price`, in catalogue order."""
    return tuple(p for p in CATALOGUE if p.price <= max_price)


CATEGORY_TITLES: Final = {
    "electronics": "Electronics",
    "clothing": "Clothing",
    "home_decor": "Home & Decor",
    "books": "Books",
    "sports": "Sports",
}
SEARCHES: Final[Mapping[str, tuple[str, ...]]] = {
    "electronics": ("smartphone", "kopfhörer", "earbuds", "laptop", "usb c kabel", "powerbank", "smartwatch"),
    "clothing": ("hoodie", "jeans", "sneaker", "regenjacke", "t-shirt", "wintermantel"),
    "home_decor": ("vase", "kissen", "stehlampe", "teppich", "bilderrahmen", "duftkerze"),
    "books": ("krimi", "kochbuch", "reiseführer", "roman", "comic"),
    "sports": ("yogamatte", "laufschuhe", "hanteln", "fahrradhelm", "rucksack"),
}
BARGAIN_SEARCHES: Final = ("sale", "angebote", "gutschein", "rabatt", "outlet", "black friday")
COUPONS: Final = ("SAVE10", "WELCOME15", "SPRING20", "NEWSLETTER5", "FLASH25")
