"""Every segment and trigger shipped in segments/default.yaml, on hand-made profiles.

The thresholds here are the contract the traffic simulator is written against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.core.definitions import Definitions, load_definitions, parse_definitions
from streams.core.profile import DAY_S, Profile
from streams.core.segments import evaluate, next_check_at

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "segments" / "default.yaml"
TODAY = 20_000
NOW = TODAY * DAY_S + 12 * 3600.0
MIN = 60.0


@pytest.fixture(scope="module")
def defs() -> Definitions:
    return load_definitions(DEFAULT)


def visitor(**fields: Any) -> Profile:
    """A desktop visitor from Paris, first seen 30 days ago, last seen 5 minutes ago, no history."""
    base: dict[str, Any] = {
        "visitor_id": "v-1",
        "first_seen": NOW - 30 * DAY_S,
        "last_seen": NOW - 5 * MIN,
        "session_started": NOW - 10 * MIN,
        "device_category": "desktop",
        "os": "Linux",
        "os_version": "",
        "browser": "Firefox",
        "country": "FR",
        "region": "Île-de-France",
        "region_code": "IDF",
        "city": "Paris",
        "lat": 48.8566,
        "lon": 2.3522,
        "session_source": "direct",
        "session_landing_path": "/products",
    }
    base.update(fields)
    return Profile(**base)


def days_ago(n: int, **metrics: float) -> dict[int, dict[str, float]]:
    return {TODAY - n: {key.replace("__", "@"): float(v) for key, v in metrics.items()}}


def merge(*parts: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for part in parts:
        for day, bucket in part.items():
            target = out.setdefault(day, {})
            for key, value in bucket.items():
                target[key] = target.get(key, 0.0) + value
    return out


def members(defs: Definitions, profile: Profile, now: float = NOW) -> frozenset[str]:
    """The segments `profile` is in at `now`, stored in it as the worker stores them (its timers
    follow its membership: `next_check_at`)."""
    evaluation = evaluate(profile, defs, now)
    assert evaluation.errors == {}, evaluation.errors
    profile.segments = sorted(evaluation.members)
    return evaluation.members


def test_default_file_loads_with_the_promised_segments(defs: Definitions) -> None:
    ids = {seg.id for seg in defs.segments}
    assert {
        "frequent_buyers",
        "coupon_users",
        "discount_lovers",
        "top_spender_electronics",
        "top_spender_clothing",
        "top_spender_home_decor",
        "cart_abandoners",
        "new_visitors",
        "ch_android_viewing_x",
        "nrw_iphone_bought_y",
        "munich_windows10_google_home",
        "high_intent",
        "tablet_south_germany",
        "cafe_radius_4km",
    } <= ids
    assert all(seg.description for seg in defs.segments)
    assert defs.params["product_x"] == "P-1001" and defs.params["product_y"] == "P-2002"
    assert {t.id for t in defs.triggers} == {
        "exit_intent_overlay",
        "top_spender_escalation",
        "cafe_breakfast_offer",
    }
    assert [j.id for j in defs.journeys] == ["cart_recovery"]


def test_an_empty_visitor_is_in_nothing(defs: Definitions) -> None:
    assert members(defs, visitor()) == frozenset()


# -- the brief's four -----------------------------------------------------------------------------------


def test_frequent_buyers(defs: Definitions) -> None:
    three = merge(days_ago(0, purchases=1), days_ago(10, purchases=1), days_ago(29, purchases=1))
    assert "frequent_buyers" in members(defs, visitor(days=three))
    two_in_window = merge(days_ago(0, purchases=1), days_ago(10, purchases=1), days_ago(30, purchases=1))
    assert "frequent_buyers" not in members(defs, visitor(days=two_in_window))


def test_coupon_users(defs: Definitions) -> None:
    used = days_ago(89, purchases=1, coupon_purchases=1)
    assert "coupon_users" in members(defs, visitor(days=used))
    too_old = days_ago(90, purchases=1, coupon_purchases=1)
    assert "coupon_users" not in members(defs, visitor(days=too_old))
    no_coupon = days_ago(1, purchases=5, coupon_uses=1)
    assert "coupon_users" not in members(defs, visitor(days=no_coupon))


def test_discount_lovers(defs: Definitions) -> None:
    half = merge(days_ago(1, purchases=1, promo_purchases=1), days_ago(50, purchases=1))
    assert "discount_lovers" in members(defs, visitor(days=half))
    one_in_three = merge(days_ago(1, purchases=2, promo_purchases=1), days_ago(50, purchases=1))
    assert "discount_lovers" not in members(defs, visitor(days=one_in_three))
    single = days_ago(1, purchases=1, promo_purchases=1)
    assert "discount_lovers" not in members(defs, visitor(days=single))


@pytest.mark.parametrize(
    ("category", "threshold"), [("electronics", 1500.0), ("clothing", 600.0), ("home_decor", 800.0)]
)
def test_top_spenders_per_category(defs: Definitions, category: str, threshold: float) -> None:
    key = f"spend__{category}"
    at_threshold = merge(days_ago(364, **{key: threshold / 2}), days_ago(3, **{key: threshold / 2}))
    got = members(defs, visitor(days=at_threshold))
    assert f"top_spender_{category}" in got
    assert {s for s in got if s.startswith("top_spender_")} == {f"top_spender_{category}"}
    below = days_ago(3, **{key: threshold - 0.01})
    assert f"top_spender_{category}" not in members(defs, visitor(days=below))
    slid_out = merge(days_ago(365, **{key: threshold / 2}), days_ago(3, **{key: threshold / 2}))
    assert f"top_spender_{category}" not in members(defs, visitor(days=slid_out))


def test_top_spender_reports_the_category_spend(defs: Definitions) -> None:
    profile = visitor(days=days_ago(3, spend=2000, spend__electronics=2000))
    evaluation = evaluate(profile, defs, NOW)
    assert evaluation.deciding["top_spender_electronics"] == {"spend_365d.electronics": 2000.0}


# -- behaviour ------------------------------------------------------------------------------------------


def test_cart_abandoners_enter_30_minutes_after_the_last_add_with_no_new_event(defs: Definitions) -> None:
    added = NOW - 10 * MIN
    profile = visitor(cart={"P-1": 1}, cart_value=20.0, last_add_to_cart_at=added, last_seen=added)
    assert "cart_abandoners" not in members(defs, profile)
    due = next_check_at(profile, defs, NOW)
    assert due == added + 30 * MIN
    assert "cart_abandoners" in members(defs, profile, due)
    assert "cart_abandoners" not in members(defs, profile, due - 0.01)


def test_cart_abandoners_need_a_cart(defs: Definitions) -> None:
    bought = visitor(cart={}, last_add_to_cart_at=NOW - 2 * 3600, last_purchase_at=NOW - 3600)
    assert "cart_abandoners" not in members(defs, bought)


def test_new_visitors(defs: Definitions) -> None:
    first = NOW - 6 * DAY_S
    profile = visitor(first_seen=first, last_seen=first + 60, session_started=first)
    assert "new_visitors" in members(defs, profile)
    assert next_check_at(profile, defs, NOW) == first + 7 * DAY_S
    assert "new_visitors" not in members(defs, profile, first + 7 * DAY_S)
    assert "new_visitors" not in members(defs, visitor(first_seen=NOW - 8 * DAY_S))


def test_high_intent(defs: Definitions) -> None:
    today = days_ago(0, product_views=3, add_to_carts=1)
    assert "high_intent" in members(defs, visitor(days=today))
    yesterday = merge(days_ago(0, product_views=3), days_ago(1, add_to_carts=1))
    assert "high_intent" not in members(defs, visitor(days=yesterday))


def test_cart_page_visitors(defs: Definitions) -> None:
    assert "cart_page_visitors" in members(defs, visitor(days=days_ago(6, cart_views=2)))
    bought = days_ago(6, cart_views=2, purchases=1)
    assert "cart_page_visitors" not in members(defs, visitor(days=bought))


def test_category_browsers_electronics(defs: Definitions) -> None:
    three = days_ago(2, category_views=3, category_views__electronics=3)
    assert "category_browsers_electronics" in members(defs, visitor(days=three))
    other = days_ago(2, category_views=3, category_views__garden=3)
    assert "category_browsers_electronics" not in members(defs, visitor(days=other))


def test_engaged_readers_and_loyal_visitors(defs: Definitions) -> None:
    assert "engaged_readers" in members(defs, visitor(days=days_ago(0, page_views=10)))
    assert "engaged_readers" not in members(defs, visitor(days=days_ago(1, page_views=50)))
    four = merge(*(days_ago(n, sessions=1) for n in (0, 3, 9, 29)))
    assert "loyal_visitors" in members(defs, visitor(days=four))
    three = merge(*(days_ago(n, sessions=2) for n in (0, 3, 30, 31)))
    assert "loyal_visitors" not in members(defs, visitor(days=three))


# -- micro-segments -------------------------------------------------------------------------------------


def swiss_android(**fields: Any) -> Profile:
    base: dict[str, Any] = {"country": "CH", "region_code": "ZH", "city": "Zurich"}
    return visitor(**{**base, "device_category": "mobile", "os": "Android", **fields})


def test_ch_android_viewing_x(defs: Definitions) -> None:
    viewed = NOW - 5 * MIN
    profile = swiss_android(recent_views=[("P-1001", viewed), ("P-7", NOW - MIN)])
    assert "ch_android_viewing_x" in members(defs, profile)
    assert "ch_android_viewing_x" not in members(defs, swiss_android(recent_views=[("P-7", NOW - MIN)]))
    ios = visitor(country="CH", os="iOS", recent_views=[("P-1001", viewed)])
    assert "ch_android_viewing_x" not in members(defs, ios)
    german = visitor(country="DE", os="Android", recent_views=[("P-1001", viewed)])
    assert "ch_android_viewing_x" not in members(defs, german)


def test_ch_android_viewing_x_slides_out_30_minutes_after_the_view(defs: Definitions) -> None:
    viewed = NOW - 5 * MIN
    profile = swiss_android(recent_views=[("P-1001", viewed)], last_seen=viewed)
    assert "ch_android_viewing_x" in members(defs, profile)
    assert next_check_at(profile, defs, NOW) == viewed + 30 * MIN
    assert "ch_android_viewing_x" not in members(defs, profile, viewed + 30 * MIN)


def test_ch_android_viewing_x_follows_params_override() -> None:
    defs = load_definitions(DEFAULT, params_override={"product_x": "P-7"})
    profile = swiss_android(recent_views=[("P-7", NOW - MIN)])
    assert "ch_android_viewing_x" in members(defs, profile)


def nrw_iphone(**fields: Any) -> Profile:
    base: dict[str, Any] = {"country": "DE", "region_code": "NW", "city": "Cologne"}
    return visitor(**{**base, "device_category": "mobile", "os": "iOS", **fields})


def test_nrw_iphone_bought_y(defs: Definitions) -> None:
    bought = [("P-2002", NOW - 3600)]
    assert "nrw_iphone_bought_y" in members(defs, nrw_iphone(recent_purchases=bought))
    assert "nrw_iphone_bought_y" not in members(defs, nrw_iphone(recent_purchases=[("P-1", NOW)]))
    old = [("P-2002", NOW - 24 * 3600)]
    assert "nrw_iphone_bought_y" not in members(defs, nrw_iphone(recent_purchases=old))
    bavaria = nrw_iphone(region_code="BY", recent_purchases=bought)
    assert "nrw_iphone_bought_y" not in members(defs, bavaria)
    ipad = nrw_iphone(device_category="tablet", recent_purchases=bought)
    assert "nrw_iphone_bought_y" not in members(defs, ipad)


def munich_windows(**fields: Any) -> Profile:
    base: dict[str, Any] = {
        "country": "DE",
        "region_code": "BY",
        "city": "Munich",
        "os": "Windows",
        "os_version": "10",
        "session_source": "search",
        "session_source_name": "google",
        "session_landing_path": "/",
    }
    base.update(fields)
    return visitor(**base)


def test_munich_windows10_google_home(defs: Definitions) -> None:
    assert "munich_windows10_google_home" in members(defs, munich_windows())
    for change in (
        {"os_version": "11"},
        {"city": "Berlin"},
        {"session_source_name": "bing"},
        {"session_landing_path": "/sale"},
        {"os": "Mac OS X"},
    ):
        assert "munich_windows10_google_home" not in members(defs, munich_windows(**change)), change


def test_munich_windows10_google_home_ends_with_the_session(defs: Definitions) -> None:
    seen = NOW - 5 * MIN
    profile = munich_windows(last_seen=seen)
    assert "munich_windows10_google_home" in members(defs, profile)
    assert next_check_at(profile, defs, NOW) == seen + 30 * MIN
    assert "munich_windows10_google_home" not in members(defs, profile, seen + 30 * MIN)


def test_tablet_south_germany(defs: Definitions) -> None:
    for region in ("BY", "BW"):
        profile = visitor(country="DE", region_code=region, device_category="tablet")
        assert "tablet_south_germany" in members(defs, profile)
    assert "tablet_south_germany" not in members(
        defs, visitor(country="DE", region_code="NW", device_category="tablet")
    )
    assert "tablet_south_germany" not in members(
        defs, visitor(country="DE", region_code="BY", device_category="mobile")
    )


def test_cafe_radius_4km(defs: Definitions) -> None:
    near = {"country": "DE", "city": "Berlin", "lat": 52.4870, "lon": 13.4250}  # ~1.1 km away
    assert "cafe_radius_4km" in members(defs, visitor(**near))
    assert "cafe_radius_4km" in members(defs, visitor(**near, age=25))
    assert "cafe_radius_4km" not in members(defs, visitor(**near, age=41))
    assert "cafe_radius_4km" not in members(defs, visitor(**near, age=17))
    far = {"country": "DE", "city": "Berlin", "lat": 52.5200, "lon": 13.4050}  # Mitte, ~5 km
    assert "cafe_radius_4km" not in members(defs, visitor(**far))
    assert "cafe_radius_4km" not in members(defs, visitor(lat=None, lon=None))


# -- the four kinds of segmentation and the brief's macro-segments -----------------------------------


def test_demographic_and_geographic_segments(defs: Definitions) -> None:
    assert "age_18_29" in members(defs, visitor(age=24))
    assert "age_18_29" not in members(defs, visitor(age=30)) | members(defs, visitor())
    assert "age_50_plus" in members(defs, visitor(age=50))
    assert "swiss_visitors" in members(defs, visitor(country="CH"))
    assert "swiss_visitors" not in members(defs, visitor(country="DE")) | members(defs, visitor())


def test_interest_groups_count_product_and_category_pages_per_category(defs: Definitions) -> None:
    views = merge(*(days_ago(i + 1, product_views=1, product_views__sports=1) for i in range(3)))
    pages = days_ago(0, category_views=2, category_views__sports=2)
    fan = visitor(days=merge(views, pages))
    assert {"interest_sports"} <= members(defs, fan)
    assert "interest_electronics" not in members(defs, fan)
    two_views = merge(*(days_ago(i + 1, product_views__sports=1) for i in range(2)))
    assert "interest_sports" not in members(defs, visitor(days=merge(two_views, pages)))
    assert "interest_sports" in members(defs, visitor(days=merge(two_views, pages, pages)))
    old = merge(*(days_ago(31 + i, product_views__sports=1) for i in range(3)), pages)
    assert "interest_sports" not in members(defs, visitor(days=old))


def test_purchase_history_segments(defs: Definitions) -> None:
    a_year_ago = visitor(days=days_ago(330, purchases=1))
    assert {"seasonal_buyers", "lapsed_customers"} <= members(defs, a_year_ago)
    half_a_year = visitor(days=days_ago(180, purchases=1))
    assert "lapsed_customers" in members(defs, half_a_year)
    assert "seasonal_buyers" not in members(defs, half_a_year)
    recent = visitor(days=merge(days_ago(330, purchases=1), days_ago(10, purchases=1)))
    assert not {"seasonal_buyers", "lapsed_customers"} & members(defs, recent)


def test_big_ticket_buyers_read_the_order_value(defs: Definitions) -> None:
    order = [NOW - 5 * DAY_S, 8, 0, 260.0, [["P-1", "electronics", 260.0, 1]]]
    assert "big_ticket_buyers" in members(defs, visitor(timeline=[order]))
    small = [NOW - 5 * DAY_S, 8, 0, 240.0, [["P-1", "electronics", 240.0, 1]]]
    assert "big_ticket_buyers" not in members(defs, visitor(timeline=[small]))


def test_the_opening_hours_example_of_the_header_in_berlin_time() -> None:
    """The header's local-time example (not a shipped segment: see its comment), in the default zone."""
    text = "\n".join(
        [
            'version: "hours"',
            "segments:",
            "  - id: weekday_morning_visitors",
            "    description: d",
            "    when: session_active && local_weekday <= 5 && local_hour >= 7 && local_hour < 13",
        ]
    )
    defs = parse_definitions(text + "\n", "hours.yaml")
    assert defs.zone == "Europe/Berlin"
    # Day 20000 is Friday 2024-10-04; 08:00 UTC is 10:00 in Berlin (summer time).
    morning = TODAY * DAY_S + 8 * 3600.0
    active = visitor(last_seen=morning - 5 * MIN)
    assert "weekday_morning_visitors" in members(defs, active, morning)
    assert "weekday_morning_visitors" not in members(defs, visitor(last_seen=NOW - 5 * MIN))  # 14:00
    saturday = morning + DAY_S
    assert "weekday_morning_visitors" not in members(defs, visitor(last_seen=saturday - MIN), saturday)


def test_high_potential_prospects(defs: Definitions) -> None:
    browsing = days_ago(1, product_views=5)
    prospect = visitor(days=browsing, cart={"P-1": 1}, cart_value=120.0)
    assert "high_potential_prospects" in members(defs, prospect)
    buyer = visitor(days=merge(browsing, days_ago(100, purchases=1)), cart={"P-1": 1}, cart_value=120.0)
    assert "high_potential_prospects" not in members(defs, buyer)
