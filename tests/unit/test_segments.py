"""The definitions loader (validation with line numbers), the evaluator, diff, next_check_at, preview."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from streams.core.definitions import DefinitionError, Definitions, load_definitions, parse_definitions
from streams.core.profile import DAY_S, Profile
from streams.core.segments import diff, evaluate, next_check_at, preview

TODAY = 20_000
NOW = TODAY * DAY_S + 12 * 3600.0


def parse(text: str, **kwargs: Any) -> Definitions:
    return parse_definitions(textwrap.dedent(text).lstrip("\n"), "defs.yaml", **kwargs)


def refused(text: str, **kwargs: Any) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse(text, **kwargs)
    return info.value


MINIMAL = """
version: "7"
params:
  product_x: "P-1"
attributes:
  purchases_30d: {metric: purchases, window: 30d}
segments:
  - id: buyers
    description: bought
    when: purchases_30d >= 1
"""


def profile(**fields: Any) -> Profile:
    return Profile(visitor_id=fields.pop("visitor_id", "v"), **fields)


# -- loading --------------------------------------------------------------------------------------------


def test_minimal_definitions() -> None:
    defs = parse(MINIMAL)
    assert defs.version == "7"
    assert [s.id for s in defs.segments] == ["buyers"]
    assert defs.params == {"product_x": "P-1"}
    assert defs.triggers == ()
    assert len(defs.source_sha) == 64


def test_load_definitions_reports_the_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(MINIMAL.lstrip("\n").replace("purchases_30d >= 1", "purchses_30d >= 1"), encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        load_definitions(path)
    assert str(info.value) == (
        f"{path}:9:11: segment 'buyers': when: unknown identifier 'purchses_30d'"
        " (did you mean 'purchases_30d'?)"
    )
    assert info.value.line == 9 and info.value.path == str(path)


def test_missing_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read"):
        load_definitions(tmp_path / "nope.yaml")


def test_yaml_syntax_error_has_the_line() -> None:
    err = refused(
        """
        version: "1"
        segments:
          - id: a
            when: [x,
        """
    )
    assert err.line == 5
    assert "YAML syntax error" in err.message


def test_unknown_top_level_key() -> None:
    err = refused(MINIMAL + "segmnts: []\n")
    assert err.line == 10
    assert err.message.startswith("top level: unknown key 'segmnts' (did you mean 'segments'?)")


def test_duplicate_yaml_key() -> None:
    err = refused(MINIMAL.replace('  product_x: "P-1"\n', '  product_x: "P-1"\n  product_x: "P-2"\n'))
    assert err.line == 4
    assert "duplicate key 'product_x' (first at line 3)" in err.message


def test_version_must_be_a_string() -> None:
    err = refused(MINIMAL.replace('version: "7"', "version: 1.10"))
    assert err.line == 1 and "version" in err.message


def test_unknown_metric() -> None:
    err = refused(MINIMAL.replace("metric: purchases,", "metric: purchase,"))
    assert err.line == 5
    assert err.message.startswith("attribute 'purchases_30d': unknown metric 'purchase'")


def test_dimension_on_a_metric_without_dimensions() -> None:
    err = refused(MINIMAL.replace("{metric: purchases,", "{metric: purchases, dimension: tv,"))
    assert err.line == 5 and "has no dimension" in err.message


@pytest.mark.parametrize("window", ["30", "30days", "0d", "366d", "1w", "-3d"])
def test_bad_window(window: str) -> None:
    err = refused(MINIMAL.replace("window: 30d", f"window: {window}"))
    assert err.line == 5
    assert err.message.startswith("attribute 'purchases_30d': bad window")
    assert window in err.message


def test_cel_syntax_error_has_the_line_of_the_condition_and_cels_column() -> None:
    err = refused(MINIMAL.replace("purchases_30d >= 1", "purchases_30d >= "))
    assert err.line == 9
    assert err.message.startswith("segment 'buyers': when: CEL syntax error at 1:17:")


def test_cel_syntax_error_in_a_block_condition_points_at_its_line() -> None:
    err = refused(
        """
        version: "1"
        segments:
          - id: multi
            description: two lines
            when: |
              country == "CH"
              && os == == "Android"
              && city == "Zurich"
        """
    )
    assert err.line == 7
    assert "CEL syntax error at 2:" in err.message


def test_unknown_identifier_in_a_block_points_at_its_line() -> None:
    err = refused(
        """
        version: "1"
        segments:
          - id: multi
            description: two lines
            when: |
              country == "CH"
              && os == "Android"
              && devise_category == "mobile"
        """
    )
    assert err.line == 8
    assert err.message == (
        "segment 'multi': when: unknown identifier 'devise_category' (did you mean 'device_category'?)"
    )
    assert str(err) == f"defs.yaml:8:10: {err.message}"


def test_unknown_function() -> None:
    err = refused(MINIMAL.replace("purchases_30d >= 1", "distnace_km(1.0, 2.0) < 3.0"))
    assert err.line == 9 and "unknown function 'distnace_km'" in err.message


def test_macro_variables_are_not_unknown_identifiers() -> None:
    defs = parse(MINIMAL.replace("purchases_30d >= 1", 'viewed_products_30m.exists(p, p.startsWith("P-"))'))
    seg = defs.segments[0]
    assert seg.when.variables == {"viewed_products_30m"}


def test_duplicate_segment_ids() -> None:
    err = refused(MINIMAL + "  - id: buyers\n    description: again\n    when: true\n")
    assert err.line == 10
    assert err.message == "duplicate segment id 'buyers' (first at line 7)"


def test_for_each_expansions_must_have_distinct_ids() -> None:
    err = refused(
        MINIMAL
        + textwrap.indent(
            textwrap.dedent(
                """
                - id: same
                  description: x
                  for_each: {category: [a, b]}
                  when: category == "a"
                """
            ),
            "  ",
        )
    )
    assert "duplicate segment id 'same'" in err.message


def test_time_based_condition_needs_a_recheck() -> None:
    err = refused(MINIMAL.replace("purchases_30d >= 1", "minutes_since_purchase < 60"))
    assert err.line == 9
    assert "reads minutes_since_purchase" in err.message and "after: last_purchase_at" in err.message


def test_bad_recheck() -> None:
    err = refused(MINIMAL + "    recheck: {after: last_cart, delay: 30m}\n")
    assert err.line == 10 and "recheck after 'last_cart' is not a profile time" in err.message
    err = refused(MINIMAL + "    recheck: {after: last_seen, delay: 30 minutes}\n")
    assert err.line == 10 and "bad duration" in err.message


def test_unknown_segment_key() -> None:
    err = refused(MINIMAL + "    wehn: true\n")
    assert err.line == 10 and "unknown key 'wehn'" in err.message


def test_name_clash_with_a_fact() -> None:
    err = refused(
        MINIMAL.replace(
            "  purchases_30d: {", "  country: {metric: purchases, window: 1d}\n  purchases_30d: {"
        )
    )
    assert err.line == 5 and "clashes with the built-in fact" in err.message


def test_params_override() -> None:
    defs = parse(
        MINIMAL.replace("purchases_30d >= 1", "product_x in viewed_products_30m"),
        params_override={"product_x": "P-9"},
    )
    assert defs.params["product_x"] == "P-9"
    assert defs.segments[0].when.source == '"P-9" in viewed_products_30m'
    assert defs.source_sha != parse(MINIMAL).source_sha
    err = refused(MINIMAL, params_override={"product_z": "x"})
    assert err.line is None and "unknown param 'product_z'" in err.message
    err = refused(MINIMAL, params_override={"product_x": 3})
    assert err.line == 3 and "must be str" in err.message


TRIGGERS = (
    MINIMAL
    + """
triggers:
  - id: welcome
    on: {enter: buyers}
    send: {kind: coupon_email, channel: email}
"""
)


def test_trigger_on_a_known_segment() -> None:
    defs = parse(TRIGGERS)
    (rule,) = defs.triggers
    assert rule.on == "enter" and rule.targets == {"buyers"} and rule.channel == "email"


def test_trigger_on_an_unknown_segment() -> None:
    err = refused(TRIGGERS.replace("enter: buyers", "enter: buyer"))
    assert err.line == 13
    assert err.message == "trigger 'welcome': unknown segment 'buyer' (did you mean 'buyers'?)"


def test_trigger_glob_must_match() -> None:
    err = refused(TRIGGERS.replace("enter: buyers", "enter: vip_*"))
    assert err.line == 13 and "unknown pattern 'vip_*'" in err.message


def test_trigger_unknown_kind_channel_and_event() -> None:
    err = refused(TRIGGERS.replace("kind: coupon_email", "kind: sms"))
    assert err.line == 14 and "unknown message kind 'sms'" in err.message
    err = refused(TRIGGERS.replace("channel: email", "channel: fax"))
    assert err.line == 14 and "unknown channel 'fax'" in err.message
    err = refused(TRIGGERS.replace("enter: buyers", "event: exit"))
    assert err.line == 13 and "unknown event type 'exit'" in err.message


def test_trigger_when_identifiers_are_checked() -> None:
    err = refused(TRIGGERS + "    when: '\"buyers\" in segmnts'\n")
    assert err.line == 15 and "unknown identifier 'segmnts'" in err.message


def test_trigger_cap_must_be_a_duration() -> None:
    err = refused(TRIGGERS + "    cap: daily\n")
    assert err.line == 15 and "cap: bad duration 'daily'" in err.message


# -- evaluation -----------------------------------------------------------------------------------------

WINDOWS = """
version: "w"
attributes:
  purchases_30d: {metric: purchases, window: 30d}
  purchases_1d: {metric: purchases, window: 1d}
  spend_7d: {metric: spend, window: 7d}
  tv_spend_7d: {metric: spend, dimension: tv, window: 7d}
  spend_by_cat_7d: {metric: spend, by: category, window: 7d}
  visit_days_7d: {metric: sessions, agg: days, window: 7d}
  coupon_share_7d: {ratio: [coupon_purchases, purchases], window: 7d}
segments:
  - id: buyer_30d
    description: x
    when: purchases_30d >= 1
  - id: buyer_today
    description: x
    when: purchases_1d >= 1
  - id: no_purchase_30d
    description: x
    when: purchases_30d == 0
"""


def test_window_boundaries() -> None:
    defs = parse(WINDOWS)
    day = TODAY - 29  # the oldest day inside a 30-day window today
    p = profile(days={day: {"purchases": 1.0}})
    assert evaluate(p, defs, NOW).members == {"buyer_30d"}
    slide_out = (day + 30) * DAY_S
    assert evaluate(p, defs, slide_out - 0.001).members == {"buyer_30d"}
    assert evaluate(p, defs, slide_out).members == {"no_purchase_30d"}
    # a 1-day window is today (UTC) only
    p = profile(days={TODAY: {"purchases": 1.0}})
    assert {"buyer_today", "buyer_30d"} <= evaluate(p, defs, TODAY * DAY_S).members
    assert "buyer_today" not in evaluate(p, defs, (TODAY + 1) * DAY_S).members


def test_next_check_at_is_the_next_slide_out() -> None:
    defs = parse(WINDOWS)
    p = profile(
        days={TODAY - 29: {"purchases": 1.0}, TODAY - 3: {"purchases": 1.0}, TODAY - 40: {"purchases": 2.0}}
    )
    p.segments = sorted(evaluate(p, defs, NOW).members)
    assert p.segments == ["buyer_30d"]
    # `purchases_30d >= 1` (and `== 0`) can change only when the last purchase in the window
    # leaves it (3 days ago + 30 days), not when the oldest one does
    assert next_check_at(p, defs, NOW) == (TODAY - 3 + 30) * DAY_S
    assert next_check_at(profile(), defs, NOW) is None


def test_next_check_at_ignores_zero_buckets_and_past_moments() -> None:
    defs = parse(WINDOWS)
    p = profile(days={TODAY - 5: {"purchases": 0.0, "events": 3.0}})
    assert next_check_at(p, defs, NOW) is None


def test_attribute_kinds_are_reported_as_read() -> None:
    text = WINDOWS + (
        "  - id: all_kinds\n"
        "    description: reads everything\n"
        "    when: >-\n"
        '      spend_7d >= 10.0 && tv_spend_7d >= 5.0 && spend_by_cat_7d["tv"] >= 5.0\n'
        "      && spend_by_cat_7d.garden == 0.0 && visit_days_7d == 2 && coupon_share_7d == 0.5\n"
    )
    defs = parse(text)
    p = profile(
        days={
            TODAY: {
                "spend": 6.0,
                "spend@tv": 6.0,
                "sessions": 1.0,
                "purchases": 1.0,
                "coupon_purchases": 1.0,
            },
            TODAY - 6: {"spend": 5.0, "spend@books": 5.0, "sessions": 2.0, "purchases": 1.0},
            TODAY - 7: {"spend": 100.0, "spend@tv": 100.0, "sessions": 1.0},
        }
    )
    evaluation = evaluate(p, defs, NOW)
    assert "all_kinds" in evaluation.members, evaluation.errors
    assert evaluation.deciding["all_kinds"] == {
        "coupon_share_7d": 0.5,
        "spend_7d": 11.0,
        "spend_by_cat_7d.garden": 0.0,
        "spend_by_cat_7d.tv": 6.0,
        "tv_spend_7d": 6.0,
        "visit_days_7d": 2,
    }


def test_a_failing_condition_is_not_a_member_and_is_reported() -> None:
    defs = parse(
        MINIMAL
        + "  - id: adults\n    description: x\n    when: age >= 18\n"
        + "  - id: guarded\n    description: x\n    when: has_age && age >= 18\n"
        + "  - id: not_bool\n    description: x\n    when: purchases_30d\n"
    )
    evaluation = evaluate(profile(), defs, NOW)
    assert evaluation.members == frozenset()
    assert set(evaluation.errors) == {"adults", "not_bool"}
    assert evaluate(profile(age=30), defs, NOW).members == {"adults", "guarded"}


def test_unknown_strings_compare_as_empty() -> None:
    defs = parse(MINIMAL.replace("purchases_30d >= 1", 'country == "" && city != "Munich"'))
    assert evaluate(profile(), defs, NOW).members == {"buyers"}


def test_deciding_covers_members_and_previous_members_only() -> None:
    defs = parse(MINIMAL + "  - id: others\n    description: x\n    when: purchases_30d == 0\n")
    p = profile(days={TODAY: {"purchases": 2.0}}, segments=["others"])
    evaluation = evaluate(p, defs, NOW)
    assert evaluation.members == {"buyers"}
    assert evaluation.deciding == {"buyers": {"purchases_30d": 2}, "others": {"purchases_30d": 2}}


def test_explain_after_the_fact_equals_deciding() -> None:
    defs = parse(MINIMAL + "  - id: others\n    description: x\n    when: purchases_30d == 0\n")
    p = profile(days={TODAY: {"purchases": 2.0}}, segments=["others"])
    full = evaluate(p, defs, NOW)
    lean = evaluate(p, defs, NOW, explain=False)
    assert lean.members == full.members and lean.deciding == {}
    assert lean.explain(defs, ["buyers", "others"]) == full.deciding
    assert full.explain(defs, ["others"]) == {"others": full.deciding["others"]}
    assert lean.explain(defs, ["removed_from_definitions"]) == {}


def test_evaluate_does_not_change_the_profile() -> None:
    defs = parse(WINDOWS)
    p = profile(days={TODAY: {"purchases": 1.0}}, segments=["x"])
    before = p.to_bytes()
    evaluate(p, defs, NOW)
    next_check_at(p, defs, NOW)
    assert p.to_bytes() == before


def test_diff() -> None:
    assert diff(["b", "a", "c"], frozenset({"c", "d", "a"})) == (["d"], ["b"])
    assert diff([], frozenset()) == ([], [])


def test_preview_counts_every_segment() -> None:
    defs = parse(WINDOWS)
    profiles = [
        profile(visitor_id="1", days={TODAY: {"purchases": 1.0}}),
        profile(visitor_id="2", days={TODAY - 3: {"purchases": 1.0}}),
        profile(visitor_id="3"),
    ]
    assert preview(profiles, defs, NOW).sizes() == {"buyer_30d": 2, "buyer_today": 1, "no_purchase_30d": 1}


def test_distance_km_and_location_guard() -> None:
    defs = parse(
        MINIMAL.replace("purchases_30d >= 1", "has_location && distance_km(52.52, 13.405) < 1.0")
        + "  - id: unguarded\n    description: x\n    when: distance_km(52.52, 13.405) < 1.0\n"
    )
    berlin = profile(lat=52.5205, lon=13.4049)
    assert evaluate(berlin, defs, NOW).members == {"buyers", "unguarded"}
    nowhere = evaluate(profile(), defs, NOW)
    assert nowhere.members == frozenset() and set(nowhere.errors) == {"unguarded"}


def test_params_and_for_each_constants_are_inlined() -> None:
    defs = parse(
        """
        version: "1"
        params: {min_views: 3}
        attributes:
          views_7d: {metric: product_views, by: category, window: 7d}
        segments:
          - id: fan_{category}
            description: "{category} fan (≥ {factor}× the minimum)"
            for_each:
              category:
                books: {factor: 1}
                "tv": {factor: 2}
            when: views_7d[category] >= min_views * factor
        """
    )
    books, tv = defs.segments
    assert (books.id, tv.id) == ("fan_books", "fan_tv")
    assert tv.description == "tv fan (≥ 2× the minimum)"
    assert tv.bindings == {"category": "tv", "factor": 2}
    assert "min_views" not in tv.when.variables and "factor" not in tv.when.variables
    p = profile(days={TODAY: {"product_views": 6.0, "product_views@tv": 6.0}})
    evaluation = evaluate(p, defs, NOW)
    assert evaluation.members == {"fan_tv"}
    assert evaluation.deciding["fan_tv"] == {"views_7d.tv": 6}


def test_cel_extension_functions_are_available() -> None:
    defs = parse(
        MINIMAL.replace(
            "purchases_30d >= 1",
            'lowerAscii(city) == "munich" && math.abs(-2) == 2 && city.contains("uni")',
        )
    )
    assert evaluate(profile(city="Munich"), defs, NOW).members == {"buyers"}


def test_trigger_on_forms() -> None:
    defs = parse(
        MINIMAL
        + "  - {id: buyers_two, description: x, when: purchases_30d >= 2}\n"
        + "triggers:\n"
        + "  - {id: bye, on: {exit: [buyers, buyers_two]}, send: {kind: retargeting, channel: ads}}\n"
        + "  - {id: any_buyer, on: {enter: 'buyers*'}, send: {kind: retargeting, channel: ads}}\n"
        + "  - id: leaving\n"
        + "    on: {event: [exit_intent, checkout]}\n"
        + "    send: {kind: exit_intent_overlay, channel: onsite}\n"
    )
    bye, any_buyer, leaving = defs.triggers
    assert (bye.on, bye.targets) == ("exit", {"buyers", "buyers_two"})
    assert (any_buyer.on, any_buyer.targets) == ("enter", {"buyers", "buyers_two"})
    assert (leaving.on, leaving.targets) == ("event", {"exit_intent", "checkout"})


def test_a_refused_node_is_reported_with_its_line_and_column() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_definitions('version: "1"\nparams:\n  threshold: !!int abc\nsegments: []\n', path="defs.yaml")
    err = info.value
    assert (err.line, err.column) == (3, 14)
    assert str(err) == "defs.yaml:3:14: invalid value: invalid literal for int() with base 10: 'abc'"


def test_a_yaml_syntax_error_is_reported_with_its_line_and_column() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_definitions('version: "1"\nsegments: [\n', path="defs.yaml")
    assert info.value.line is not None and info.value.column is not None
    assert str(info.value).startswith(f"defs.yaml:{info.value.line}:{info.value.column}: YAML syntax error")
