"""`tessera segments validate`: every kind of mistake in a definitions file is refused with its line,
its column (1-based) and a reason; inside an expression the place is the offending name or token."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.cli import build_parser, cmd_segments
from streams.core.definitions import DefinitionError, parse_definitions
from streams.settings import Settings

HEAD = """\
version: "1"
params:
  threshold: 3
attributes:
  purchases_30d: {metric: purchases, window: 30d}
segments:
  - id: buyers
    description: bought
    when: purchases_30d >= threshold
"""
"""Nine valid lines every case below starts from (or replaces a line of)."""


@dataclass(frozen=True)
class Mistake:
    kind: str
    text: str
    line: int
    column: int
    reason: str
    override: dict[str, Any] = field(default_factory=dict)


def after_head(items: str) -> str:
    """`HEAD` and more `segments` items (written at any indentation)."""
    return HEAD + textwrap.indent(textwrap.dedent(items).lstrip("\n"), "  ")


MISTAKES = [
    Mistake(
        "YAML syntax error",
        after_head(
            """
              - id: colon
                description: ratio: high
                when: true
            """
        ),
        11,
        23,
        "YAML syntax error: mapping values are not allowed here",
    ),
    Mistake(
        "control character",
        HEAD.replace("description: bought", "description: bou\x07ght"),
        8,
        21,
        "YAML error: special characters are not allowed",
    ),
    Mistake("empty file", "# nothing yet\n", 1, 1, "empty file"),
    Mistake(
        "unknown top-level key",
        HEAD + "segmnts: []\n",
        10,
        1,
        "top level: unknown key 'segmnts' (did you mean 'segments'?)",
    ),
    Mistake("missing version", HEAD.replace('version: "1"\n', ""), 1, 1, "missing top-level key 'version'"),
    Mistake(
        "version not a string",
        HEAD.replace('version: "1"', "version: 1.10"),
        1,
        10,
        'version (quote it: version: "1") must be a string',
    ),
    Mistake(
        "duplicate YAML key",
        HEAD.replace("  threshold: 3\n", "  threshold: 3\n  threshold: 4\n"),
        4,
        3,
        "params: duplicate key 'threshold' (first at line 3)",
    ),
    Mistake(
        "tagged value that does not parse",
        HEAD.replace("threshold: 3", "threshold: !!int three"),
        3,
        14,
        "invalid value: invalid literal for int()",
    ),
    Mistake(
        "param of a wrong type",
        HEAD.replace("threshold: 3", "threshold: {min: 3}"),
        3,
        14,
        "param 'threshold': must be a string, number, bool or a list of them",
    ),
    Mistake(
        "param override of a wrong type",
        HEAD,
        3,
        14,
        "params_override: param 'threshold' must be int, got 'three'",
        {"threshold": "three"},
    ),
    Mistake(
        "name clashing with a fact",
        HEAD.replace("  purchases_30d: {", "  country: {metric: purchases, window: 1d}\n  purchases_30d: {"),
        5,
        3,
        "attribute 'country': clashes with the built-in fact of that name",
    ),
    Mistake(
        "unknown metric",
        HEAD.replace("metric: purchases,", "metric: purchase,"),
        5,
        27,
        "attribute 'purchases_30d': unknown metric 'purchase'",
    ),
    Mistake(
        "bad window",
        HEAD.replace("window: 30d", "window: 30x"),
        5,
        46,
        "attribute 'purchases_30d': bad window '30x'",
    ),
    Mistake(
        "attribute without window",
        HEAD.replace(", window: 30d}", "}"),
        5,
        18,
        "attribute 'purchases_30d': missing 'window'",
    ),
    Mistake(
        "unknown segment key",
        HEAD + "    wehn: true\n",
        10,
        5,
        "segment: unknown key 'wehn' (did you mean 'when'?)",
    ),
    Mistake(
        "segment without when",
        HEAD.replace("    when: purchases_30d >= threshold\n", ""),
        7,
        5,
        "segment 'buyers': missing 'when'",
    ),
    Mistake(
        "duplicate segment id",
        HEAD + "  - id: buyers\n    description: again\n    when: true\n",
        10,
        9,
        "duplicate segment id 'buyers' (first at line 7)",
    ),
    Mistake(
        "bad segment id",
        HEAD.replace("id: buyers", "id: Big-Buyers"),
        7,
        9,
        "segment id 'Big-Buyers': use lowercase letters, digits and _",
    ),
    Mistake(
        "unknown identifier in a condition",
        HEAD.replace(">= threshold", ">= treshold"),
        9,
        28,
        "segment 'buyers': when: unknown identifier 'treshold' (did you mean 'threshold'?)",
    ),
    Mistake(
        "unknown identifier in a multi-line condition",
        after_head(
            """
              - id: swiss_android
                description: two lines
                when: |
                  country == "CH"
                  && devise_category == "mobile"
            """
        ),
        14,
        10,
        "when: unknown identifier 'devise_category' (did you mean 'device_category'?)",
    ),
    Mistake(
        "unknown identifier in a quoted condition with escapes",
        HEAD + '  - id: quoted\n    description: d\n    when: "country == \\"CH\\" && devise == 1"\n',
        12,
        33,
        "segment 'quoted': when: unknown identifier 'devise'",
    ),
    Mistake(
        "unknown identifier also written in a string literal",
        HEAD.replace("purchases_30d >= threshold", 'country == "devise" || devise == 1'),
        9,
        34,
        "segment 'buyers': when: unknown identifier 'devise'",
    ),
    Mistake(
        "unknown function",
        HEAD.replace("purchases_30d >= threshold", 'country.lowerAsci() == "ch"'),
        9,
        19,
        "segment 'buyers': when: unknown function 'lowerAsci'",
    ),
    Mistake(
        "CEL syntax error in a condition",
        HEAD.replace("purchases_30d >= threshold", "purchases_30d >= "),
        9,
        27,
        "segment 'buyers': when: CEL syntax error at 1:17: Syntax error: mismatched input '<EOF>'",
    ),
    Mistake(
        "CEL syntax error in a multi-line literal condition",
        after_head(
            """
              - id: swiss_android
                description: two lines
                when: |  # Swiss Android visitors
                  country == "CH"
                  && os == == "Android"
            """
        ),
        14,
        16,
        "segment 'swiss_android': when: CEL syntax error at 2:10: Syntax error: extraneous input '=='",
    ),
    Mistake(
        "CEL syntax error in a multi-line folded condition",
        after_head(
            """
              - id: swiss_android
                description: two lines
                when: >-
                  country == "CH" &&
                  (os == "Android"
            """
        ),
        14,
        23,
        "CEL syntax error at 1:36: Syntax error: missing ')' at '<EOF>'",
    ),
    Mistake(
        "CEL syntax error in a multi-line plain condition",
        after_head(
            """
              - id: swiss_android
                description: two lines
                when: country == "CH"
                  && os $ "Android"
            """
        ),
        13,
        13,
        "CEL syntax error at 1:23: Syntax error: token recognition error at: '$'",
    ),
    Mistake(
        "time-relative fact without recheck",
        HEAD.replace("purchases_30d >= threshold", "purchases_30d >= 1 && minutes_since_purchase < 60"),
        9,
        33,
        "segment 'buyers': reads minutes_since_purchase, which changes as time passes",
    ),
    Mistake(
        "recheck after an unknown time",
        HEAD + "    recheck: {after: last_cart, delay: 30m}\n",
        10,
        22,
        "segment 'buyers': recheck after 'last_cart' is not a profile time",
    ),
    Mistake(
        "recheck delay malformed",
        HEAD + "    recheck: {after: last_seen, delay: 30 minutes}\n",
        10,
        40,
        "segment 'buyers': recheck bad duration '30 minutes'",
    ),
    Mistake(
        "for_each placeholder unknown",
        after_head(
            """
              - id: fans_{categry}
                description: fans of {category}
                for_each: {category: [tv, books]}
                when: category == "tv"
            """
        ),
        10,
        9,
        "segment 'fans_{categry}': bad {…} template: 'categry'",
    ),
    Mistake(
        "id placeholder without for_each",
        HEAD.replace("id: buyers", "id: buyers_{category}"),
        7,
        9,
        "an id with {…} needs for_each",
    ),
]

TRIGGER = """\
triggers:
  - id: welcome
    on: {enter: buyers}
    send: {kind: coupon_email, channel: email, ttl: 1h}
    cap: 7d
"""
"""Lines 10–14 after `HEAD`."""

MISTAKES += [
    Mistake(
        "trigger on an unknown segment",
        HEAD + TRIGGER.replace("enter: buyers", "enter: buyer"),
        12,
        17,
        "trigger 'welcome': unknown segment 'buyer' (did you mean 'buyers'?)",
    ),
    Mistake(
        "trigger on an unknown event type",
        HEAD + TRIGGER.replace("enter: buyers", "event: exit"),
        12,
        17,
        "trigger 'welcome': unknown event type 'exit'",
    ),
    Mistake(
        "trigger channel unknown",
        HEAD + TRIGGER.replace("channel: email", "channel: fax"),
        13,
        41,
        "trigger 'welcome': unknown channel 'fax' (known: onsite, ads, email, crm)",
    ),
    Mistake(
        "trigger message kind unknown",
        HEAD + TRIGGER.replace("kind: coupon_email", "kind: sms"),
        13,
        18,
        "trigger 'welcome': unknown message kind 'sms'",
    ),
    Mistake(
        "trigger cap malformed",
        HEAD + TRIGGER.replace("cap: 7d", "cap: daily"),
        14,
        10,
        "trigger 'welcome': cap: bad duration 'daily'",
    ),
    Mistake(
        "trigger ttl malformed",
        HEAD + TRIGGER.replace("ttl: 1h", "ttl: 1 hour"),
        13,
        53,
        "trigger 'welcome': ttl: bad duration '1 hour'",
    ),
    Mistake(
        "trigger without send",
        HEAD + TRIGGER.replace("    send: {kind: coupon_email, channel: email, ttl: 1h}\n", ""),
        11,
        5,
        "trigger: missing 'send'",
    ),
    Mistake(
        "unknown identifier in a trigger condition",
        HEAD + TRIGGER + "    when: '\"buyers\" in segmnts'\n",
        15,
        24,
        "trigger 'welcome': when: unknown identifier 'segmnts' (did you mean 'segments'?)",
    ),
]


def validate(path: Path) -> int:
    """`tessera segments validate PATH` in-process (without `main`, which configures logging globally)."""
    return cmd_segments(Settings(), build_parser().parse_args(["segments", "validate", str(path)]))


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.kind for m in MISTAKES])
def test_a_mistake_is_refused_with_its_line_column_and_reason(mistake: Mistake) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_definitions(mistake.text, "defs.yaml", mistake.override)
    err = info.value
    assert (err.line, err.column) == (mistake.line, mistake.column), err
    assert mistake.reason in err.message
    assert str(err) == f"defs.yaml:{mistake.line}:{mistake.column}: {err.message}"


def test_the_table_covers_at_least_twelve_kinds_of_mistake() -> None:
    assert len({m.kind for m in MISTAKES}) == len(MISTAKES) >= 12


def test_the_valid_starting_points_load() -> None:
    defs = parse_definitions(HEAD + TRIGGER, "defs.yaml")
    assert [s.id for s in defs.segments] == ["buyers"] and [t.id for t in defs.triggers] == ["welcome"]


def test_an_unknown_param_override_has_no_place_in_the_file() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_definitions(HEAD, "defs.yaml", {"treshold": 4})
    assert (info.value.line, info.value.column) == (None, None)
    assert str(info.value) == (
        "defs.yaml: params_override: unknown param 'treshold' (did you mean 'threshold'?)"
    )


def test_validate_prints_the_refusal_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(HEAD.replace("window: 30d", "window: 30x"), encoding="utf-8")
    assert validate(path) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"refused: {path}:5:46: attribute 'purchases_30d': bad window '30x'")


def test_validate_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(HEAD + TRIGGER, encoding="utf-8")
    assert validate(path) == 0
    assert capsys.readouterr().out.startswith(f"ok: {path} version 1: 1 segments, 1 triggers")
