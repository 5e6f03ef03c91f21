"""The demo shop: four kinds of page (home, category, product, cart) that load `tracker.js`.

Pure: `shop_page(path, write_key)` returns (status, HTML) for a path under `/shop/`; the worker
serves it (`streams.web.ShopView`) when `demo_shop_site` names a site. The cart lives in the
browser (localStorage `shop_cart`); every page reports itself with Segment-spec calls through
`window.tessera` (page views with `page_type`, "Product List Viewed", "Product Viewed",
"Product Added", "Cart Viewed", "Coupon Applied", "Order Completed"), so the shop exercises the same
collector routes a real site would. The exit-intent overlay's button leads back to the cart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from importlib.resources import files
from typing import Final


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float


CATALOG: Final[tuple[Product, ...]] = (
    Product("P-1001", "Noise-cancelling headphones", "electronics", 249.0),
    Product("P-1002", "4K action camera", "electronics", 329.0),
    Product("P-1003", "E-reader", "electronics", 139.0),
    Product("P-2001", "Merino jumper", "clothing", 89.0),
    Product("P-2002", "Rain jacket", "clothing", 159.0),
    Product("P-3001", "Ceramic table lamp", "home_decor", 74.0),
    Product("P-3002", "Linen cushion set", "home_decor", 45.0),
    Product("P-4001", "Trail running shoes", "sports", 129.0),
    Product("P-5001", "A history of the world in 12 maps", "books", 22.0),
)
PRODUCTS: Final = {p.product_id: p for p in CATALOG}
CATEGORIES: Final = tuple(dict.fromkeys(p.category for p in CATALOG))

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#222}
header{background:#1d3557;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none}main{padding:24px;max-width:960px;margin:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:16px}
.card{border:1px solid #ddd;border-radius:6px;padding:12px}button{padding:8px 16px;cursor:pointer}
"""

_SHOP_JS: Final = files(__package__).joinpath("shop.js").read_text(encoding="utf-8")
"""The shop's own script (the cart in localStorage, the calls each page makes); `PAGE` is set before it."""


def _title(category: str) -> str:
    return category.replace("_", " ").title()


def _layout(title: str, page: Mapping[str, object], content: str, write_key: str) -> str:
    nav = "".join(f'<a href="/shop/c/{escape(c)}">{escape(_title(c))}</a>' for c in CATEGORIES)
    # `</` inside the JSON would end the script element; escape the slash.
    page_json = json.dumps(page).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)} · Tessera demo shop</title><style>{_STYLE}</style>
<script>var PAGE = {page_json};{_SHOP_JS}</script>
<script src="/tracker.js" async data-write-key="{escape(write_key)}" data-auto-page="false"
 data-cart-url="/shop/cart"></script>
</head><body>
<header><a href="/shop/"><strong>Tessera demo shop</strong></a>{nav}
<a href="/shop/cart" id="cart-link">Cart (<span id="cart-count">0</span>)</a></header>
<main>{content}</main></body></html>
"""


def _product_data(p: Product) -> dict[str, object]:
    return {
        "product_id": p.product_id,
        "name": p.name,
        "category": p.category,
        "price": p.price,
        "currency": "EUR",
    }


def _card(p: Product) -> str:
    return (
        f'<div class="card"><a href="/shop/p/{escape(p.product_id)}" class="product-link">'
        f"{escape(p.name)}</a>"
        f"<div>{p.price:.2f} EUR</div></div>"
    )


def home_page(write_key: str) -> str:
    cards = "".join(_card(p) for p in CATALOG[::2])
    categories = "".join(
        f'<li><a class="category-link" href="/shop/c/{escape(c)}">{escape(_title(c))}</a></li>'
        for c in CATEGORIES
    )
    content = (
        f"<h1>Welcome</h1><h2>Categories</h2><ul>{categories}</ul>"
        f"<h2>Featured</h2><div class='grid'>{cards}</div>"
    )
    return _layout("Home", {"type": "home"}, content, write_key)


def category_page(category: str, write_key: str) -> str | None:
    products = [p for p in CATALOG if p.category == category]
    if not products:
        return None
    cards = "".join(_card(p) for p in products)
    name = _title(category)
    page = {"type": "category", "category": category, "products": [_product_data(p) for p in products]}
    return _layout(name, page, f"<h1>{escape(name)}</h1><div class='grid'>{cards}</div>", write_key)


def product_page(product_id: str, write_key: str) -> str | None:
    p = PRODUCTS.get(product_id)
    if p is None:
        return None
    content = (
        f"<h1>{escape(p.name)}</h1><p>{escape(_title(p.category))} · {p.price:.2f} EUR</p>"
        '<button id="add-to-cart">Add to cart</button> <span id="added"></span>'
    )
    return _layout(p.name, {"type": "product", "product": _product_data(p)}, content, write_key)


def cart_page(write_key: str) -> str:
    content = (
        '<h1>Your cart</h1><ul id="lines"></ul><p>Total: <span id="total">0.00</span> EUR</p>'
        '<p><input id="coupon" placeholder="Coupon code"> <button id="apply-coupon">Apply</button> '
        '<span id="coupon-state"></span></p>'
        '<p><button id="place-order">Place order</button> <span id="order-state"></span></p>'
    )
    return _layout("Cart", {"type": "cart"}, content, write_key)


def shop_page(path: str, write_key: str) -> tuple[int, str]:
    """(HTTP status, HTML) of the shop page at `path` (`/shop/`, `/shop/c/{category}`,
    `/shop/p/{product_id}`, `/shop/cart`); 404 with a short page for anything else."""
    parts = [part for part in path.split("/") if part]
    found: str | None = None
    if parts == ["shop"]:
        found = home_page(write_key)
    elif parts == ["shop", "cart"]:
        found = cart_page(write_key)
    elif len(parts) == 3 and parts[:2] == ["shop", "c"]:
        found = category_page(parts[2], write_key)
    elif len(parts) == 3 and parts[:2] == ["shop", "p"]:
        found = product_page(parts[2], write_key)
    if found is None:
        return 404, _layout("Not found", {"type": "other"}, "<h1>Not found</h1>", write_key)
    return 200, found
