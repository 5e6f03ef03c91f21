"""Facts, windowed attributes, windows at their boundaries, and the CEL helpers."""

from __future__ import annotations

import math

import pytest

from streams.core.attributes import (
    FACTS,
    NEVER,
    AttributeDef,
    CelSyntaxError,
    LazyValues,
    ValuePlan,
    cel_literal,
    compile_expr,
    compute_values,
    dimension_var,
    inline_constants,
    parse_duration,
    parse_metric_ref,
    scalarize,
    sliding_fact_times,
    window_exit_at,
)
from streams.core.profile import DAY_S, Profile
from streams.core.windows import Window, parse_window

TODAY = 20_000
NOW = TODAY * DAY_S + 12 * 3600.0


def facts(profile: Profile, now: float = NOW) -> dict[str, object]:
    return compute_values(profile, ValuePlan.build(FACTS, {}), now)


# -- parsing --------------------------------------------------------------------------------------------


def test_parse_window() -> None:
    assert parse_window("1d") == Window("1d", "sliding", 86_400.0)
    assert parse_window("365d").seconds == 365 * 86_400
    assert parse_window("15m").seconds == 900 and parse_window("2h").seconds == 7200
    assert parse_window("8760h").seconds == 365 * 86_400
    assert parse_window("today") == Window("today", "calendar", unit="day")
    assert parse_window("this_week").unit == "week" and parse_window("this_month").unit == "month"
    assert parse_window("lifetime").kind == "lifetime"
    for bad in ("0d", "366d", "8761h", "30", "1w", "d", "30D", "0m", "yesterday", 30, None):
        with pytest.raises(ValueError, match="bad window"):
            parse_window(bad)


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800
    assert parse_duration("24h") == 86_400 and parse_duration("7d") == 7 * 86_400
    for bad in ("30", "1w", "0m", "-5m", 5, "5 m"):
        with pytest.raises(ValueError, match="bad duration"):
            parse_duration(bad)


def test_parse_metric_ref() -> None:
    assert parse_metric_ref("purchases") == "purchases"
    assert parse_metric_ref("spend@electronics") == "spend@electronics"
    with pytest.raises(ValueError, match="unknown metric 'purchase'"):
        parse_metric_ref("purchase")
    with pytest.raises(ValueError, match="has no dimension"):
        parse_metric_ref("purchases@tv")
    with pytest.raises(ValueError, match="empty dimension"):
        parse_metric_ref("spend@")


# -- facts ----------------------------------------------------------------------------------------------


def test_unknown_facts_have_safe_defaults() -> None:
    got = facts(Profile(visitor_id="v"))
    for name in ("country", "os", "city", "region_code", "session_landing_path", "last_page_type"):
        assert got[name] == ""
    assert got["age"] is None and got["has_age"] is False
    assert got["lat"] is None and got["has_location"] is False
    assert got["minutes_since_add_to_cart"] == NEVER
    assert got["minutes_since_purchase"] == NEVER
    assert got["first_seen_days_ago"] == NEVER
    assert got["session_active"] is False
    assert got["cart_items"] == 0 and got["cart_value"] == 0.0
    assert got["viewed_products_30m"] == [] and got["purchased_products_24h"] == []
    assert got["consent_marketing"] is True


def test_time_facts_flip_exactly_at_their_due_time_despite_float_noise() -> None:
    at = NOW + 0.1234567  # not representable exactly: (at + 1800) - at != 1800 in floats
    profile = Profile(visitor_id="v", last_seen=at, last_add_to_cart_at=at, recent_views=[("P-1", at)])
    due = at + 30 * 60
    assert facts(profile, due)["minutes_since_add_to_cart"] == 30.0
    assert facts(profile, due)["session_active"] is False
    assert facts(profile, due - 0.01)["session_active"] is True
    assert facts(profile, due)["viewed_products_30m"] == []
    assert facts(profile, due - 0.01)["viewed_products_30m"] == ["P-1"]
    assert sorted(sliding_fact_times(profile, ["session_active", "viewed_products_30m"])) == [due, due]


def test_recent_lists_are_deduplicated() -> None:
    profile = Profile(
        visitor_id="v",
        recent_views=[("P-1", NOW - 3000), ("P-2", NOW - 60), ("P-1", NOW - 30), ("P-2", NOW - 10)],
        recent_purchases=[("P-9", NOW - 25 * 3600), ("P-8", NOW - 3600)],
    )
    got = facts(profile)
    assert got["viewed_products_30m"] == ["P-2", "P-1"]
    assert got["purchased_products_24h"] == ["P-8"]


def test_cart_and_session_facts() -> None:
    profile = Profile(
        visitor_id="v",
        cart={"A": 2, "B": 1},
        cart_value=42.5,
        first_seen=NOW - 1.5 * DAY_S,
        session_started=NOW - 600,
        last_seen=NOW - 60,
    )
    got = facts(profile)
    assert got["cart_items"] == 3 and got["cart_products"] == ["A", "B"] and got["cart_value"] == 42.5
    assert got["first_seen_days_ago"] == 1.5
    assert got["session_minutes"] == 10.0 and got["minutes_since_last_seen"] == 1.0
    assert got["session_active"] is True


# -- attributes and windows -----------------------------------------------------------------------------


ATTRS = {
    "p30": AttributeDef("p30", "sum", parse_window("30d"), "purchases"),
    "s7": AttributeDef("s7", "sum", parse_window("7d"), "spend"),
    "tv7": AttributeDef("tv7", "sum", parse_window("7d"), "spend@tv"),
    "by7": AttributeDef("by7", "by", parse_window("7d"), "spend", dimensions=frozenset({"garden"})),
    "d7": AttributeDef("d7", "days", parse_window("7d"), "sessions"),
    "r7": AttributeDef("r7", "ratio", parse_window("7d"), "coupon_purchases", "purchases"),
}


def attrs(days: dict[int, dict[str, float]], now: float = NOW) -> dict[str, object]:
    return compute_values(Profile(visitor_id="v", days=days), ValuePlan.build(ATTRS, ATTRS), now)


def test_window_holds_today_and_the_days_before() -> None:
    # day d is inside a W-day window at `now` iff d > floor(now / 86400) - W
    assert attrs({TODAY - 29: {"purchases": 1.0}})["p30"] == 1
    assert attrs({TODAY - 30: {"purchases": 1.0}})["p30"] == 0
    assert attrs({TODAY: {"purchases": 2.0}})["p30"] == 2
    midnight = (TODAY - 29 + 30) * DAY_S
    assert attrs({TODAY - 29: {"purchases": 1.0}}, midnight - 0.001)["p30"] == 1
    assert attrs({TODAY - 29: {"purchases": 1.0}}, midnight)["p30"] == 0


def test_attribute_kinds_and_types() -> None:
    got = attrs(
        {
            TODAY: {
                "spend": 10.5,
                "spend@tv": 10.5,
                "sessions": 2.0,
                "purchases": 2.0,
                "coupon_purchases": 1.0,
            },
            TODAY - 6: {"spend": 4.0, "spend@books": 4.0, "sessions": 0.0, "purchases": 2.0},
            TODAY - 7: {"spend": 99.0, "spend@tv": 99.0, "sessions": 1.0},
        }
    )
    assert got["s7"] == 14.5 and isinstance(got["s7"], float)
    assert got["tv7"] == 10.5
    assert got["by7"] == {"books": 4.0, "garden": 0.0, "tv": 10.5}
    assert got["d7"] == 1 and isinstance(got["d7"], int)
    assert got["r7"] == 0.25
    assert attrs({})["r7"] == 0.0


def test_counts_are_ints() -> None:
    got = attrs({TODAY: {"purchases": 3.0}})
    assert got["p30"] == 3 and isinstance(got["p30"], int)


def test_dimension_variables_read_one_key_and_default_to_zero() -> None:
    profile = Profile(visitor_id="v", days={TODAY: {"spend@tv": 5.0}})
    values = LazyValues(profile, ValuePlan.build(["by7"], ATTRS), NOW)
    assert values.get(dimension_var("by7", "tv")) == 5.0
    assert values.get(dimension_var("by7", "home & garden")) == 0.0
    assert values.get("not_a_name") is None


def test_window_exit_at() -> None:
    profile = Profile(
        visitor_id="v",
        days={TODAY - 40: {"purchases": 1.0}, TODAY - 20: {"purchases": 1.0}, TODAY - 2: {"spend@tv": 3.0}},
    )
    assert window_exit_at(profile, [ATTRS["p30"]], NOW) == (TODAY - 20 + 30) * DAY_S
    assert window_exit_at(profile, [ATTRS["by7"]], NOW) == (TODAY - 2 + 7) * DAY_S
    assert window_exit_at(profile, [ATTRS["p30"], ATTRS["by7"]], NOW) == (TODAY + 5) * DAY_S
    assert window_exit_at(profile, [ATTRS["s7"]], NOW) is None
    assert window_exit_at(Profile(visitor_id="v"), list(ATTRS.values()), NOW) is None


def test_scalarize() -> None:
    out: dict[str, object] = {}
    scalarize("m", {"b": 2, "a": 1}, out)
    scalarize("l", ["x", "y"], out)
    scalarize("n", None, out)
    assert out == {"m.a": 1, "m.b": 2, "l": "x,y", "n": None}


# -- CEL helpers ----------------------------------------------------------------------------------------


def test_compile_expr_reports_line_and_column() -> None:
    with pytest.raises(CelSyntaxError) as info:
        compile_expr("a &&\n  (b ||")
    assert (info.value.line, info.value.column) == (2, 8)


def test_compile_expr_names() -> None:
    expr = compile_expr('size(l) > 0 && l.all(x, x.startsWith("P")) && math.abs(n) < 2 && type(n) == int')
    assert expr.variables == {"l", "n"}
    assert expr.functions == {"size", "startsWith", "abs", "type"}
    assert expr.unknown_functions == frozenset()
    assert set(expr.stdlib_functions) == {"math.abs"}
    assert compile_expr("nope(1)").unknown_functions == {"nope"}


def test_inline_constants_leaves_strings_fields_and_comments_alone() -> None:
    source = "x == p && a.p == \"p\" && 'p' in l // p\n|| [p] == q"
    assert inline_constants(source, {"p": "P-1", "q": [1, 2.5, True]}) == (
        'x == "P-1" && a.p == "p" && \'p\' in l // p\n|| ["P-1"] == [1, 2.5, true]'
    )


def test_inline_constants_rewrites_literal_map_keys() -> None:
    out = inline_constants('m[c] > 1 && m.tv > 2 && m["a b"] > 3 && m[k] > 4', {"c": "x"}, ["m"])
    assert out == (
        f"{dimension_var('m', 'x')} > 1 && {dimension_var('m', 'tv')} > 2 && "
        f"{dimension_var('m', 'a b')} > 3 && m[k] > 4"
    )


def test_cel_literal() -> None:
    assert cel_literal('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert cel_literal(False) == "false" and cel_literal(3) == "3" and cel_literal(0.5) == "0.5"
    with pytest.raises(ValueError):
        cel_literal(math.inf)
    with pytest.raises(ValueError):
        cel_literal({"a": 1})
    expr = compile_expr("s == v", {"v": 'a"b\\c ü'})
    assert expr.program.execute({"s": 'a"b\\c ü'}) is True
