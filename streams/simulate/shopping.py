"""Shopping: carts, checkouts, coupons and purchases, kept under the top-spender thresholds unless meant
to cross them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from random import Random
from typing import Any

from streams.simulate.browsing import Browsing
from streams.simulate.catalogue import BARGAIN_SEARCHES, BY_CATEGORY, COUPONS, Product, cheaper_than
from streams.simulate.session import SessionRecorder
from streams.simulate.targets import SegmentTargets

Line = tuple[Product, float, int, float]
"""One line of an order: (product, unit price paid, quantity, discount per unit)."""


class Shopping:
    """What one visitor buys; `spent` tracks the spend per category, `age` what identify revealed."""

    def __init__(
        self, session: SessionRecorder, pages: Browsing, rng: Random, targets: SegmentTargets
    ) -> None:
        self.session = session
        self.pages = pages
        self.rng = rng
        self.thresholds: Mapping[str, float] = targets.top_spender_thresholds
        self.product_x = targets.product_x
        self.product_y = targets.product_y
        self.spent: dict[str, float] = {}
        self.age: int | None = None

    def buyable(
        self, max_price: float, cap_share: float, discount: float = 0.0, exclude: Iterable[Product] = ()
    ) -> list[Product]:
        """Products up to `max_price` that keep each category's spend under `cap_share` x threshold."""
        skip = {p.product_id for p in exclude}
        if self.session.no_x:
            skip.add(self.product_x)
        if self.session.no_y:
            skip.add(self.product_y)
        room = {c: cap_share * threshold - self.spent.get(c, 0.0) for c, threshold in self.thresholds.items()}
        factor = 1 - discount
        return [
            p
            for p in cheaper_than(max_price)
            if p.product_id not in skip and p.price * factor <= room.get(p.category, math.inf)
        ]

    def add(self, product: Product, price: float, quantity: int = 1) -> None:
        self.session.emit(
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

    def cart_page(self, cart_value: float, items: int, already_there: bool = False) -> None:
        if not already_there:
            self.session.nav("/cart", "cart", "Cart")
        self.session.emit("cart_view", {"cart_value": cart_value, "items": items}, gap_s=(0.2, 1.0))

    def checkout_page(self, cart_value: float) -> None:
        self.session.nav("/checkout", "checkout", "Checkout")
        self.session.emit(
            "checkout", {"cart_value": cart_value, "currency": "EUR", "step": 1}, gap_s=(0.2, 1.0)
        )

    def identify(self) -> None:
        """Log in (once per visitor); sometimes with an age."""
        if self.session.user_id is not None:
            return
        self.session.user_id = f"U-{self.rng.randint(100000, 999999)}"
        props: dict[str, Any] = {"traits": {"newsletter": self.rng.random() < 0.5, "plan": "registered"}}
        if self.rng.random() < 0.45:
            self.age = self.rng.randint(18, 72)
            props["age"] = self.age
        self.session.emit("identify", props, gap_s=(5, 30))

    def checkout_and_buy(
        self,
        lines: list[Line],
        coupon: tuple[str, float] | None = None,
        identify: bool = False,
        on_cart_page: bool = False,
    ) -> None:
        """Cart page, checkout, optional coupon (code, amount off), purchase."""
        subtotal = round(sum(price * qty for _, price, qty, _ in lines), 2)
        self.cart_page(subtotal, sum(qty for _, _, qty, _ in lines), already_there=on_cart_page)
        self.checkout_page(subtotal)
        if identify:
            self.identify()
        value = subtotal
        if coupon is not None:
            code, off = coupon
            value = round(max(0.0, subtotal - off), 2)
            self.session.emit("coupon_applied", {"coupon": code, "discount_value": off}, gap_s=(10, 60))
        self.session.nav("/checkout/confirmation", "checkout", "Thank you for your order")
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
            "order_id": f"O-{self.rng.getrandbits(40):010x}",
            "value": value,
            "currency": "EUR",
            "items": purchase_items,
        }
        if coupon is not None:
            props["coupon"] = coupon[0]
        self.session.emit("purchase", props, gap_s=(0.2, 2.0))

    def plain(self, max_price: float, cap_share: float, n_items: int, force: Product | None = None) -> None:
        """A full-price purchase session: land, browse, add items (maybe remove one), buy."""
        rng, pages = self.rng, self.pages
        pages.landing_page()
        pages.wander(rng.randint(0, 3))
        lines: list[Line] = []
        wanted: list[Product] = [force] if force is not None else []
        for _ in range(n_items - len(wanted)):
            pool = self.buyable(max_price, cap_share, exclude=wanted)
            if not pool:
                break
            wanted.append(rng.choice(pool))
        if not wanted:
            wanted.append(rng.choice(BY_CATEGORY["books"]))
        for product in wanted:
            qty = 2 if product.price < 30 and rng.random() < 0.2 else 1
            pages.product(product)
            self.add(product, product.price, qty)
            lines.append((product, product.price, qty, 0.0))
        on_cart_page = rng.random() < 0.15
        if on_cart_page:  # an extra item, added and taken out again on the cart page
            extra = pages.any_product()
            pages.product(extra)
            self.add(extra, extra.price)
            self.session.nav("/cart", "cart", "Cart")
            self.session.emit(
                "remove_from_cart", {"product_id": extra.product_id, "quantity": 1}, gap_s=(3, 20)
            )
        self.checkout_and_buy(lines, identify=rng.random() < 0.7, on_cart_page=on_cart_page)

    def bargain(self) -> None:
        """A purchase session of cheap, discounted items with a coupon."""
        rng, pages = self.rng, self.pages
        pages.landing_page()
        pages.search(rng.choice(BARGAIN_SEARCHES))
        pages.wander(rng.randint(1, 4), bargain=True)
        lines: list[Line] = []
        for _ in range(rng.randint(1, 2)):
            share = rng.choice((0.15, 0.2, 0.25, 0.3, 0.4))
            pool = self.buyable(60.0, 0.3, discount=share, exclude=[line[0] for line in lines])
            product = rng.choice(pool or list(BY_CATEGORY["books"]))
            price = round(product.price * (1 - share), 2)
            discount = round(product.price - price, 2)
            pages.product(product, price=price)
            self.add(product, price)
            lines.append((product, price, 1, discount))
        subtotal = sum(price for _, price, _, _ in lines)
        code = rng.choice(COUPONS)
        off = round(min(subtotal * 0.5, rng.choice((5.0, 10.0)) if code != "FLASH25" else subtotal * 0.25), 2)
        self.checkout_and_buy(lines, coupon=(code, off), identify=rng.random() < 0.5)

    def big(self, lines: list[Line]) -> None:
        """A purchase session of `lines`, all of one category, browsed in that category first."""
        category = lines[0][0].category
        self.pages.landing_page(category)
        self.pages.category(category)
        self.pages.wander(self.rng.randint(1, 3), category=category)
        for product, price, qty, _ in lines:
            self.pages.product(product)
            self.add(product, price, qty)
        self.checkout_and_buy(lines, identify=self.rng.random() < 0.6)
