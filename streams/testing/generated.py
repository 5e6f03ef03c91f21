"""Generated segment definitions in realistic proportions, for the bench and the tests.

`generated_definitions(n)` writes a definitions file of `n` segments over the simulator's catalogue,
places and devices, in the proportions a shop's marketers would have them:

* 30 % micro-segments — a country, an OS and a product viewed in the last 30 minutes;
* 15 % geography and technology — region or city with a device category or browser;
* 15 % interest — at least k views of a category in 7 days;
* 10 % top spenders — spend in a category over 365 days above a threshold;
* 10 % purchase frequency — k purchases in 7, 30 or 90 days (exact sliding windows);
*  8 % cart — cart value above v and nothing added for m minutes (a recheck);
*  7 % traffic — landed from a search engine or a social network on a page kind;
*  5 % segment of segment — another generated segment and a country.
"""

from __future__ import annotations

import random

__all__ = ["generated_definitions"]

COUNTRIES = ("CH", "DE", "AT", "FR", "IT", "NL")
REGIONS = (("DE", "BY"), ("DE", "NW"), ("DE", "BW"), ("CH", "ZH"), ("AT", "9"))
CITIES = ("Munich", "Zurich", "Berlin", "Vienna", "Hamburg", "Cologne")
OSES = ("Android", "iOS", "Windows", "Mac OS X", "Linux")
BROWSERS = ("Chrome", "Safari", "Firefox", "Edge", "Samsung Internet")
DEVICES = ("mobile", "desktop", "tablet")
SOURCES = (("search", "google"), ("search", "bing"), ("social", "instagram"), ("social", "facebook"))
PAGES = ("home", "category", "product", "search", "content")

ATTRIBUTES = """attributes:
  purchases_7d:       {metric: purchases, window: 7d}
  purchases_30d:      {metric: purchases, window: 30d}
  purchases_90d:      {metric: purchases, window: 90d}
  spend_365d:         {metric: spend, by: category, window: 365d}
  category_views_7d:  {metric: category_views, by: category, window: 7d}
  product_views_1h:   {metric: product_views, window: 1h}
"""


def generated_definitions(count: int, seed: int = 7) -> str:
    """A definitions file of `count` realistic segments (deterministic for a seed)."""
    from streams.simulate import CATEGORIES, PRODUCTS

    rng = random.Random(seed)
    products = sorted(PRODUCTS)
    lines = [f'version: "generated-{count}"', f"description: {count} generated segments", ATTRIBUTES.rstrip()]
    lines.append("segments:")
    for i in range(count):
        kind = _kind_of(i)
        when, recheck = _condition(kind, i, rng, products, CATEGORIES)
        lines += [f"  - id: g{i:04d}_{kind}", f"    description: generated {kind}", f"    when: '{when}'"]
        if recheck:
            lines.append(f"    recheck: {recheck}")
    return "\n".join(lines) + "\n"


def _condition(
    kind: str, i: int, rng: random.Random, products: list[str], categories: tuple[str, ...]
) -> tuple[str, str]:
    if kind == "micro":
        return (
            f'country == "{rng.choice(COUNTRIES)}" && os == "{rng.choice(OSES)}" '
            f'&& "{rng.choice(products)}" in viewed_products_30m'
        ), ""
    if kind == "geo_tech":
        if rng.random() < 0.5:
            country, region = rng.choice(REGIONS)
            place = f'country == "{country}" && region_code == "{region}"'
        else:
            place = f'city == "{rng.choice(CITIES)}"'
        tech = (
            f'device_category == "{rng.choice(DEVICES)}"'
            if rng.random() < 0.5
            else f'browser == "{rng.choice(BROWSERS)}"'
        )
        return f"{place} && {tech}", ""
    if kind == "interest":
        return f'category_views_7d["{rng.choice(categories)}"] >= {rng.randint(2, 6)}', ""
    if kind == "top_spender":
        return f'spend_365d["{rng.choice(categories)}"] >= {rng.choice([200, 500, 1000, 2000])}', ""
    if kind == "frequency":
        return f"purchases_{rng.choice([7, 30, 90])}d >= {rng.randint(1, 4)}", ""
    if kind == "cart":
        minutes = rng.choice([15, 30, 60])
        return (
            f"cart_items > 0 && cart_value >= {rng.choice([50, 100, 250])} "
            f"&& minutes_since_add_to_cart >= {minutes}"
        ), f"{{after: last_add_to_cart_at, delay: {minutes}m}}"
    if kind == "traffic":
        source, name = rng.choice(SOURCES)
        return (
            f'session_source == "{source}" && session_source_name == "{name}" '
            f'&& last_page_type == "{rng.choice(PAGES)}"'
        ), ""
    # nested: an earlier generated segment (never itself: no cycles) and a country
    earlier = rng.randrange(0, i)
    return f'segment("g{earlier:04d}_{_kind_of(earlier)}") && country == "{rng.choice(COUNTRIES)}"', ""


KINDS = (
    ("micro",) * 30
    + ("geo_tech",) * 15
    + ("interest",) * 15
    + ("top_spender",) * 10
    + ("frequency",) * 10
    + ("cart",) * 8
    + ("traffic",) * 7
    + ("nested",) * 5
)
"""The mix of 100 generated segments, repeated."""


def _kind_of(i: int) -> str:
    return KINDS[i % len(KINDS)]
