"""Websites plug in (issue 16), against a real worker on the embedded stack:

- the collector's door over HTTP: CORS preflights, 401, 403, 413, 400 per event, tracker.js;
- the official Segment Node SDK (`@segment/analytics-node`, tests/js) with only `host` and the write
  key set: identify, page, Product Viewed, Product Added, Order Completed with products and coupon;
- headless Chromium (Debian's package, driven by Playwright through its executable path) in the
  demo shop: browse, buy with a coupon, fill a cart, leave through the top of the window; the
  exit-intent overlay is decided, rendered (screenshot in test-artifacts/), and its click reported.

One worker serves the module; each test uses its own visitor ids.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from streams.browser import tracker_js
from streams.testing import (
    TEST_SITE,
    TEST_WRITE_KEY,
    WorkerConfig,
    WorkerProcess,
    basic_auth,
    read_topic,
    sites_env,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("TESSERA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOP_ORIGIN = "https://shop.example"
DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
)


@pytest.fixture(scope="module")
def site_worker(embedded_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = {**sites_env(origins=(SHOP_ORIGIN,)), "TESSERA_DEMO_SHOP_SITE": TEST_SITE}
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap,
        embedded_stack.redis_url,
        tmp_path_factory.mktemp("websites") / "w",
        extra_env=env,
    )
    worker = WorkerProcess(config).start()
    try:
        yield worker
    finally:
        worker.stop()


def exchange(
    worker: WorkerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one raw HTTP exchange with the worker."""
    address = urlsplit(worker.web)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def visitor(worker: WorkerProcess, visitor_id: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = worker.get(f"/v1/visitors/{visitor_id}")
    except OSError:  # 404 (HTTPError is one) until the first batch of the visitor is served
        return None
    return found


def events_of(worker: WorkerProcess, visitor_id: str) -> list[dict[str, Any]]:
    records = asyncio.run(read_topic(worker.config.kafka, worker.config.events_topic, deadline_s=20))
    return [orjson.loads(r.value) for r in records if r.key == visitor_id.encode()]


# -- the door over HTTP ----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_the_door_answers_each_status_over_http(site_worker: WorkerProcess) -> None:
    w = site_worker
    now = datetime.now(UTC) - timedelta(seconds=1)
    call = orjson.dumps(
        {
            "anonymousId": "door-visitor",
            "event": "Product Viewed",
            "timestamp": now.isoformat(),
            "properties": {"product_id": "P-1001", "category": "electronics"},
        }
    )
    json_type = {"Content-Type": "application/json"}

    status, headers, _ = exchange(
        w,
        "OPTIONS",
        "/v1/batch",
        headers={
            "Origin": SHOP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert status == 204 and headers["access-control-allow-origin"] == SHOP_ORIGIN
    assert "authorization" in headers["access-control-allow-headers"].lower()
    status, headers, _ = exchange(
        w,
        "OPTIONS",
        "/v1/batch",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 403 and "access-control-allow-origin" not in headers

    status, _, body = exchange(w, "POST", "/v1/track", call, json_type)
    assert (status, json.loads(body)["error"]) == (401, "missing_write_key")
    status, _, body = exchange(w, "POST", "/v1/track", call, {**json_type, **basic_auth("not-a-key-at-all")})
    assert (status, json.loads(body)["error"]) == (401, "unknown_write_key")
    status, headers, body = exchange(
        w, "POST", "/v1/track", call, {**json_type, **basic_auth(), "Origin": "https://evil.example"}
    )
    assert status == 403 and "access-control-allow-origin" not in headers

    status, headers, body = exchange(
        w, "POST", "/v1/track", call, {**json_type, **basic_auth(), "Origin": SHOP_ORIGIN}
    )
    assert status == 200 and json.loads(body) == {"accepted": 1, "rejected": []}
    assert headers["access-control-allow-origin"] == SHOP_ORIGIN

    big_call = orjson.dumps({**orjson.loads(call), "properties": {"product_id": "P-1", "x": "y" * 40_000}})
    status, _, body = exchange(w, "POST", "/v1/track", big_call, {**json_type, **basic_auth()})
    assert (status, json.loads(body)["error"]) == (413, "event_too_large")
    big_batch = orjson.dumps({"batch": [orjson.loads(call)] * 4_000})
    assert len(big_batch) > 512_000
    status, _, body = exchange(w, "POST", "/v1/batch", big_batch, {**json_type, **basic_auth()})
    assert (status, json.loads(body)["error"]) == (413, "batch_too_large")

    year_9999 = orjson.dumps({**orjson.loads(call), "timestamp": "9999-01-01T00:00:00Z"})
    status, _, body = exchange(w, "POST", "/v1/track", year_9999, {**json_type, **basic_auth()})
    assert status == 400 and json.loads(body)["rejected"][0]["reason"] == "future_timestamp"

    # analytics.js's sendBeacon: text/plain, the key in the body.
    beacon = orjson.dumps({"batch": [{**orjson.loads(call), "type": "track"}], "writeKey": TEST_WRITE_KEY})
    status, _, body = exchange(w, "POST", "/v1/batch", beacon, {"Content-Type": "text/plain"})
    assert status == 200 and json.loads(body)["accepted"] == 1

    status, headers, body = exchange(w, "GET", "/tracker.js", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-type"].startswith("application/javascript")
    assert headers.get("content-encoding") == "gzip" and gzip.decompress(body) == tracker_js()

    status, _, body = exchange(w, "GET", "/shop/")
    assert status == 200 and TEST_WRITE_KEY.encode() in body


# -- the Segment Node SDK --------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_segment_node_sdk_with_only_host_changed(site_worker: WorkerProcess) -> None:
    node = shutil.which("node")
    assert node, "node is needed (Node 18+)"
    assert (JS_DIR / "node_modules" / "@segment" / "analytics-node").is_dir(), (
        "the npm packages of tests/js are missing: `make test` installs them (npm ci --prefix tests/js)"
    )
    visitor_id = f"node-{site_worker.config.run_id}"
    env = {
        **os.environ,
        "TESSERA_HOST": site_worker.web,
        "TESSERA_WRITE_KEY": TEST_WRITE_KEY,
        "VISITOR_ID": visitor_id,
        "USER_ID": f"user-{visitor_id}",
    }
    run = subprocess.run(
        [node, "segment_node.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0, (run.stdout, run.stderr)
    answers = [line for line in lines if "status" in line]
    assert answers and all(a["status"] == 200 and a["url"].endswith("/v1/batch") for a in answers), lines

    def updated() -> dict[str, Any] | None:
        found = visitor(site_worker, visitor_id)
        if found is None or not {"coupon_users", "age_18_29"} <= set(found["segments"]):
            return None
        return found if found["profile"].get("last_purchase_at") else None

    found = wait_until(updated, 60, 0.2, "the SDK's visitor profiled and segmented")
    profile = found["profile"]
    assert profile["user_id"] == f"user-{visitor_id}"
    assert profile["geo"]["country"] == "CH"
    assert profile["cart"]["items"] == 0  # the order emptied the cart the Product Added filled
    types = [e["type"] for e in events_of(site_worker, visitor_id)]
    assert types == ["identify", "page_view", "product_view", "add_to_cart", "purchase"]
    purchase = events_of(site_worker, visitor_id)[-1]
    assert purchase["properties"]["coupon"] == "WELCOME10"
    assert purchase["properties"]["items"][0] == {
        "product_id": "P-1001",
        "category": "electronics",
        "price": 249.0,
        "quantity": 2,
        "discount": 0.0,
        "coupon": "WELCOME10",
    }
    assert purchase["context"]["site_id"] == TEST_SITE


# -- the browser -----------------------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_exit_intent_overlay_in_headless_chromium(site_worker: WorkerProcess, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is needed: `make test` installs Debian's chromium"
    w = site_worker
    visitor_id = f"browser-{w.config.run_id}"  # seeded: the tracker's anonymous id, set before it loads
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Headless Chromium says "HeadlessChrome" in its user agent, which Tessera counts as a bot
            # (no profile, no segments): the test browses as the desktop Chrome it is.
            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, locale="de-CH", user_agent=DESKTOP_CHROME
            )
            context.add_init_script(
                f"localStorage.getItem('tsr_aid') || localStorage.setItem('tsr_aid', {visitor_id!r})"
            )
            page = context.new_page()
            page.set_default_timeout(30_000)

            # A first order, with a coupon: the visitor joins coupon_users.
            page.goto(f"{w.web}/shop/")
            page.click("a.category-link[href='/shop/c/electronics']")
            page.click("a.product-link[href='/shop/p/P-1003']")
            page.click("#add-to-cart")
            page.wait_for_selector("#added:has-text('Added')")
            page.click("#cart-link")
            page.fill("#coupon", "WELCOME10")
            page.click("#apply-coupon")
            page.click("#place-order")
            page.wait_for_selector("#order-state:has-text('Thank you')")

            # Three product views and a cart: high_intent, and a cart to remind of.
            for product in ("P-1001", "P-1002", "P-2001"):
                page.goto(f"{w.web}/shop/p/{product}")
            page.click("#add-to-cart")
            page.wait_for_selector("#added:has-text('Added')")

            def segmented() -> dict[str, Any] | None:
                found = visitor(w, visitor_id)
                if found is None or not {"coupon_users", "high_intent"} <= set(found["segments"]):
                    return None
                # The summary is written at the checkpoint, the segment set per batch: until the
                # first checkpoint the served profile is {}.
                cart = found["profile"].get("cart", {})
                return found if cart.get("items", 0) > 0 else None

            wait_until(
                segmented, 60, 0.2, "the browser's visitor in coupon_users and high_intent with a cart"
            )

            # Leave through the top of the window (after the tracker's 3 s dwell on the page).
            overlay = "[data-tessera-message][data-display='overlay']"

            def left_through_the_top() -> bool:
                page.mouse.move(640, 300)
                page.mouse.move(640, 5, steps=5)
                page.mouse.move(640, -20, steps=2)
                return page.locator(overlay).count() > 0

            wait_until(left_through_the_top, 60, 0.5, "the exit-intent overlay rendered")
            shown = page.locator(overlay)
            assert "WELCOME10" not in shown.inner_text()  # the coupon offered is the overlay's own
            assert "COMEBACK10" in shown.inner_text()  # offer_coupon: the visitor is a coupon user
            shot = tmp_path / "exit_intent_overlay.png"
            page.screenshot(path=str(shot))
            shutil.copy(shot, ARTIFACTS / "exit_intent_overlay.png")
            assert shot.stat().st_size > 1000
            message_id = shown.get_attribute("data-tessera-message")

            page.click(f"{overlay} [data-tessera-action='click']")
            page.wait_for_url("**/shop/cart")
        finally:
            browser.close()

    found = visitor(w, visitor_id)
    assert found is not None
    [decided] = [m for m in found["inbox"] if m["message_id"] == message_id]
    assert decided["kind"] == "exit_intent_overlay" and decided["channel"] == "onsite"
    assert decided["payload"]["offer_coupon"] is True and decided["payload"]["cart_items"] >= 1

    def reported() -> list[dict[str, Any]] | None:
        events = events_of(w, visitor_id)
        names = {e["properties"].get("name") for e in events if e["type"] == "custom"}
        return events if {"message_shown", "message_clicked"} <= names else None

    delivered = wait_until(reported, 60, 0.5, "shown and clicked reported back")
    # A call the page sent while leaving may be delivered twice (fetch, then the beacon at pagehide):
    # the same messageId, which the worker deduplicates.
    events = list({e["event_id"]: e for e in delivered}.values())
    [exit_intent] = [e for e in events if e["type"] == "exit_intent"]
    assert exit_intent["properties"]["trigger"] == "mouse_leave"
    assert exit_intent["context"]["site_id"] == TEST_SITE
    [clicked] = [e for e in events if e["type"] == "custom" and e["properties"]["name"] == "message_clicked"]
    assert clicked["properties"]["properties"] == {
        "schema_version": 1,
        "message_id": message_id,
        "outcome": "clicked",
        "kind": "exit_intent_overlay",
        "rule": "exit_intent_overlay",
        "display": "overlay",
    }
    assert any(e["type"] == "purchase" and e["properties"].get("coupon") == "WELCOME10" for e in events)
