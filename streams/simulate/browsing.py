"""Browsing: the pages of a session (home, categories, products, searches) and how visitors move
between them."""

from __future__ import annotations

from random import Random
from urllib.parse import quote

from streams.simulate.catalogue import (
    BARGAIN_SEARCHES,
    BY_CATEGORY,
    CATALOGUE,
    CATEGORIES,
    CATEGORY_TITLES,
    SEARCHES,
    Product,
)
from streams.simulate.session import SessionRecorder


class Browsing:
    """Page views of one visitor's sessions, recorded into `session`."""

    def __init__(self, session: SessionRecorder, rng: Random, device_category: str, product_x: str) -> None:
        self.session = session
        self.rng = rng
        self.device_category = device_category
        self.product_x = product_x

    def product(self, product: Product, quick: bool = False, price: float | None = None) -> None:
        """The product page and its product_view (at `price`, default the catalogue's)."""
        self.session.nav(f"/p/{product.product_id}", "product", product.name, quick)
        self.session.emit(
            "product_view",
            {
                "product_id": product.product_id,
                "category": product.category,
                "price": product.price if price is None else price,
                "currency": "EUR",
            },
            gap_s=(0.2, 1.5),
        )

    def category(self, category: str, quick: bool = False) -> None:
        self.session.nav(f"/c/{category}", "category", CATEGORY_TITLES[category], quick)
        self.session.emit("category_view", {"category": category}, gap_s=(0.2, 1.5))

    def search(self, query: str) -> None:
        self.session.nav(f"/search?q={quote(query)}", "search", f"Search: {query}")
        self.session.emit("search", {"query": query, "results": self.rng.randint(0, 60)}, gap_s=(0.2, 1.5))

    def home(self) -> None:
        self.session.nav("/", "home", "Shop Example — Home")

    def any_product(self, category: str | None = None) -> Product:
        """A random product (of `category`), never product X where the session keeps it out."""
        pool = BY_CATEGORY[category] if category else CATALOGUE
        product = self.rng.choice(pool)
        while self.session.no_x and product.product_id == self.product_x:
            product = self.rng.choice(pool)
        return product

    def landing_page(self, category: str | None = None) -> None:
        """First page of a session, shaped by where the visitor came from."""
        referrer, utm = self.session.landing
        rng = self.rng
        if utm is not None and utm.get("medium") in ("email", "cpc") and rng.random() < 0.6:
            self.category(category or rng.choice(CATEGORIES))
        elif (
            referrer is not None
            and "google" not in referrer
            and "bing" not in referrer
            and rng.random() < 0.6
        ):
            self.product(self.any_product(category))
        elif referrer is not None and rng.random() < 0.35:
            self.product(self.any_product(category))
        else:
            self.home()

    def wander(self, steps: int, category: str | None = None, bargain: bool = False) -> None:
        """Browse category pages, product pages and searches (mostly in `category`, when given)."""
        rng = self.rng
        for _ in range(steps):
            cat = category if category and rng.random() < 0.75 else rng.choice(CATEGORIES)
            roll = rng.random()
            if roll < 0.3:
                self.category(cat)
            elif roll < 0.8:
                self.product(self.any_product(cat))
            elif bargain and rng.random() < 0.6:
                self.search(rng.choice(BARGAIN_SEARCHES))
            else:
                self.search(rng.choice(SEARCHES[cat]))

    def maybe_exit_intent(self, p: float) -> None:
        if self.rng.random() < p:
            trigger = "back_button" if self.device_category != "desktop" else "mouse_leave"
            self.session.emit("exit_intent", {"trigger": trigger}, gap_s=(2, 20))

    def browse(self, steps: int, category: str | None = None, bargain: bool = False) -> None:
        """A session without a purchase: land, wander `steps` pages, sometimes show exit intent."""
        self.landing_page(category)
        self.wander(steps, category=category, bargain=bargain)
        self.maybe_exit_intent(0.08)
