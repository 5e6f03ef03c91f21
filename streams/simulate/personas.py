"""The personas' behaviour: which sessions each one has, when, and what happens in them.

Every function takes a `Visitor` and records its sessions; `BEHAVIOURS` maps persona → function.
What each persona aims at is described in the package docstring (`streams.simulate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from streams.simulate.catalogue import BY_CATEGORY, CATEGORIES, PRODUCTS, Product
from streams.simulate.clock import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, SESSION_GAP_MS
from streams.simulate.draws import weighted
from streams.simulate.shopping import Line
from streams.simulate.visitor import PlannedSession, SessionRunner, Visitor


def loyal_buyer(v: Visitor) -> None:
    """More purchases in the last 25 days than `frequent_buyer_purchases` (1 to 4 more), full price."""
    rng, end = v.rng, v.end
    fs = v.first_seen()
    plan: list[PlannedSession] = []
    frequent = v.targets.frequent_buyer_purchases
    n_recent = rng.randint(frequent + 1, frequent + 4)
    if v.spec.micro == "nrw_iphone_bought_y":
        plan.append((end - 10 * HOUR_MS, end - HOUR_MS, "buy_y", True))
        n_recent -= 1
    recent_lo = max(fs + SESSION_GAP_MS, end - 25 * DAY_MS)
    plan += [(recent_lo, end - 40 * MINUTE_MS, "buy", True)] * n_recent
    if fs < end - 27 * DAY_MS:
        plan += [(fs + SESSION_GAP_MS, end - 26 * DAY_MS, "buy", False)] * rng.randint(0, 3)
    plan += [(fs + SESSION_GAP_MS, end - 30 * MINUTE_MS, "browse", False)] * rng.randint(1, 4)
    sessions = v.schedule(plan, [(fs, "first")])

    def buy(start: int, force: Product | None = None) -> None:
        v.session.begin(start)
        v.shop.plain(80.0, 0.4, rng.randint(1, 3), force=force)
        v.session.place(start)

    v.run_sessions(
        sessions,
        {
            "first": v.browse_runner(2, 6),
            "browse": v.browse_runner(2, 8),
            "buy": buy,
            "buy_y": lambda start: buy(start, PRODUCTS[v.targets.product_y]),
        },
    )


def bargain_hunter(v: Visitor) -> None:
    """2-3 purchases in 80 days, at most 2 in the last 30, each discounted and with a coupon."""
    rng, end = v.rng, v.end
    fs = v.first_seen()
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
    sessions = v.schedule(plan, [(fs, "first")])

    def buy(start: int) -> None:
        v.session.begin(start)
        v.shop.bargain()
        v.session.place(start)

    v.run_sessions(
        sessions,
        {
            "first": v.browse_runner(2, 6, bargain=True),
            "browse": v.browse_runner(2, 8, bargain=True),
            "buy": buy,
        },
    )


def window_shopper(v: Visitor) -> None:
    """Views and searches only; planted micro-segments get a last session before `end`."""
    rng, end = v.rng, v.end
    fs = v.first_seen()
    plan = [(fs + SESSION_GAP_MS, end - 20 * MINUTE_MS, "browse", False)] * rng.randint(2, 7)
    if v.spec.micro is not None:
        plan = [(lo, min(hi, end - 3 * HOUR_MS), kind, req) for lo, hi, kind, req in plan]
    sessions = v.schedule(plan, [(fs, "first")])
    v.run_sessions(sessions, {"first": v.browse_runner(3, 8), "browse": v.browse_runner(3, 10)})
    if v.spec.micro is not None:
        micro_session(v)


def casual_visitor(v: Visitor) -> None:
    """First seen in the last 5 days, a few page views; planted micro-segments as for window shoppers."""
    rng, end = v.rng, v.end
    micro = v.spec.micro is not None
    latest = end - (3 * HOUR_MS if micro else 20 * MINUTE_MS)
    fs = rng.randint(end - 5 * DAY_MS + HOUR_MS, latest)
    plan: list[PlannedSession] = []
    if rng.random() < 0.5:
        plan.append((fs + SESSION_GAP_MS, latest, "browse", False))
    sessions = [] if micro and rng.random() < 0.4 else v.schedule(plan, [(fs, "first")])

    def short(start: int) -> None:
        v.session.begin(start)
        v.pages.landing_page()
        for _ in range(rng.randint(0, 3)):
            roll = rng.random()
            if roll < 0.4:
                v.pages.category(rng.choice(CATEGORIES))
            elif roll < 0.8:
                v.pages.product(v.pages.any_product())
            else:
                v.pages.home()
        v.session.place(start)

    v.run_sessions(sessions, {"first": short, "browse": short})
    if micro:
        micro_session(v)


def cart_abandoner(v: Visitor) -> None:
    """A few earlier sessions (0-2 purchases); the last one fills the cart and leaves at least 45
    minutes before `end`."""
    rng, end = v.rng, v.end
    fs = v.first_seen()
    final = rng.randint(end - 2 * DAY_MS, end - 50 * MINUTE_MS)
    plan = [(fs + SESSION_GAP_MS, final - 3 * HOUR_MS, "buy", False)] * rng.randint(0, 2)
    plan += [(fs + SESSION_GAP_MS, final - 3 * HOUR_MS, "browse", False)] * rng.randint(1, 3)
    sessions = v.schedule(plan, [(fs, "first")])

    def buy(start: int) -> None:
        v.session.begin(start)
        v.shop.plain(120.0, 0.4, rng.randint(1, 2))
        v.session.place(start)

    v.run_sessions(sessions, {"first": v.browse_runner(2, 6), "browse": v.browse_runner(2, 8), "buy": buy})
    # The final session: fill the cart and leave.
    v.session.begin(final)
    v.pages.landing_page()
    v.pages.wander(rng.randint(1, 4))
    last_add = 0
    for _ in range(rng.randint(1, 3)):
        product = v.pages.any_product()
        v.pages.product(product)
        v.shop.add(product, product.price, 2 if product.price < 20 and rng.random() < 0.3 else 1)
        last_add = v.session.elapsed
    if rng.random() < 0.6:
        adds = list(v.session.buffered("add_to_cart"))
        cart_value = round(sum(e["properties"]["price"] * e["properties"]["quantity"] for e in adds), 2)
        v.shop.cart_page(cart_value, sum(e["properties"]["quantity"] for e in adds))
        if rng.random() < 0.4:
            v.shop.checkout_page(cart_value)
    v.pages.maybe_exit_intent(0.5)
    start = min(final, end - 46 * MINUTE_MS - last_add, end - v.session.duration - SECOND_MS)
    v.session.commit(start)


def big_spender(v: Visitor) -> None:
    """1-2 purchases in its category within 300 days, totalling 1.5-3x the category's threshold."""
    rng, end = v.rng, v.end
    category = v.spec.category or next(iter(v.targets.top_spender_thresholds))
    threshold = v.targets.top_spender_thresholds[category]
    fs = v.first_seen()
    # The pricier half of the category; never X or Y (the micro-segments are planted elsewhere).
    ranked = sorted(BY_CATEGORY[category], key=lambda p: (p.price, p.product_id))
    kept_out = (v.targets.product_x, v.targets.product_y)
    pool = [p for p in ranked[len(ranked) // 2 :] if p.product_id not in kept_out]
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
    sessions = v.schedule(plan, [(fs, "first")])

    def buy_runner(group: list[Product]) -> SessionRunner:
        def run(start: int) -> None:
            v.session.begin(start)
            v.shop.big(_order_lines(group))
            v.session.place(start)

        return run

    runners: dict[str, SessionRunner] = {
        "first": v.browse_runner(2, 6, category=category),
        "browse": v.browse_runner(2, 8, category=category),
    }
    for i, group in enumerate(groups):
        runners[f"buy{i}"] = buy_runner(group)
    v.run_sessions(sessions, runners)


def _order_lines(products: list[Product]) -> list[Line]:
    """One line per product at catalogue price, a repeated product as a higher quantity."""
    quantities: dict[str, int] = {}
    for product in products:
        quantities[product.product_id] = quantities.get(product.product_id, 0) + 1
    return [(PRODUCTS[pid], PRODUCTS[pid].price, qty, 0.0) for pid, qty in quantities.items()]


ONE_TIME_EVENTS: Final = ((1, 0.55), (2, 0.22), (3, 0.11), (4, 0.07), (5, 0.05))
"""(events, share) of a one-time visitor's single session: most send one or two (mean 1.85)."""
ONE_TIME_ADD_TO_CART: Final = 0.15
"""Chance that a one-time visitor with a spare event after a product view adds it to the cart."""
ONE_TIME_LATEST_MS: Final = 2 * HOUR_MS
"""One-time sessions start at least this long before `end`: an abandoned cart is 30 idle minutes
old by then, with margin."""


def one_time_visitor(v: Visitor) -> None:
    """One session of 1-5 events (`ONE_TIME_EVENTS`): page views, a product view, rarely an
    add-to-cart never bought. First seen in the last 5 days (a new visitor) or more than 10.5 days
    before `end`, never in between, so the truth keeps a day of margin from the 7-day window."""
    rng, end = v.rng, v.end
    oldest = end - v.history_ms + HOUR_MS
    start = rng.randint(oldest, end - ONE_TIME_LATEST_MS)
    while end - int(10.5 * DAY_MS) < start < end - 5 * DAY_MS + HOUR_MS:
        start = rng.randint(oldest, end - ONE_TIME_LATEST_MS)
    budget = weighted(rng, ONE_TIME_EVENTS)
    v.session.begin(start)
    while budget > 0:
        roll = rng.random()
        if budget >= 2 and roll < 0.45:
            product = v.pages.any_product()
            v.pages.product(product)
            budget -= 2
            if budget >= 1 and rng.random() < ONE_TIME_ADD_TO_CART:
                v.shop.add(product, product.price)
                v.extra_segments.add("cart_abandoners")
                budget -= 1
        elif budget >= 2 and roll < 0.7:
            v.pages.category(rng.choice(CATEGORIES))
            budget -= 2
        else:
            v.pages.home()
            budget -= 1
    v.session.place(start)
    if start > end - 5 * DAY_MS:
        v.extra_segments.add("new_visitors")


def micro_session(v: Visitor) -> None:
    """The final, short session in the last minutes before `end` that plants the visitor's micro-segment
    (`ch_android_viewing_x` or `munich_windows10_google_home`; see `streams.simulate.micro`)."""
    rng, pages = v.rng, v.pages
    desired = v.end - rng.randint(3 * MINUTE_MS, 8 * MINUTE_MS)
    if v.spec.micro == "ch_android_viewing_x":
        v.session.begin(desired, source=rng.choice(("direct", "facebook", "instagram", "google")))
        pages.product(PRODUCTS[v.targets.product_x])
        for _ in range(rng.randint(0, 2)):
            pages.product(pages.any_product("electronics"), quick=True)
    else:  # munich_windows10_google_home
        v.session.begin(desired, source="google_home")
        pages.home()
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                pages.category(rng.choice(CATEGORIES), quick=True)
            else:
                pages.product(pages.any_product(), quick=True)
    v.session.place(desired)


BEHAVIOURS: Final[Mapping[str, Callable[[Visitor], None]]] = {
    "loyal_buyer": loyal_buyer,
    "bargain_hunter": bargain_hunter,
    "window_shopper": window_shopper,
    "cart_abandoner": cart_abandoner,
    "big_spender": big_spender,
    "casual_visitor": casual_visitor,
    "one_time_visitor": one_time_visitor,
}
