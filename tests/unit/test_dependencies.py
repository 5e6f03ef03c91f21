"""The dependency index: evaluating only the segments an event can change gives exactly the
membership a full evaluation gives; segments reading segments (order, cycles, unknown ids)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import cel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.attributes import LazyValues, cel_functions
from streams.core.definitions import DefinitionError, Definitions, load_definitions, parse_definitions
from streams.core.dependencies import Changes
from streams.core.profile import Profile
from streams.core.segments import evaluate, new_visitor_start
from streams.core.timeline import CODES
from streams.settings import DEFAULT_SEGMENTS_FILE
from streams.testing.fakes import fixed_enricher
from streams.testing.generated import generated_definitions
from streams.testing.replay import event_records, replay_batches
from tests.unit.test_exact_windows import PROPERTY_SETTINGS

BASE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp()
ENRICHER = fixed_enricher()
DEFAULTS = load_definitions(DEFAULT_SEGMENTS_FILE)

EXTRA = """
version: "deps"
params:
  product_x: "P-1001"
attributes:
  purchases_30d: {metric: purchases, window: 30d}
  spend_365d: {metric: spend, by: category, window: 365d}
  views_1h: {metric: product_views, window: 1h}
segments:
  - {id: buyer, description: d, when: purchases_30d >= 1}
  - {id: swiss_buyer, description: d, when: 'segment("buyer") && country == "CH"'}
  - {id: not_swiss_buyer, description: d, when: '!segment("swiss_buyer") && cart_items > 0'}
  - {id: german, description: d, when: country == "DE"}
  - {id: browsing_x, description: d, when: 'product_x in viewed_products_30m && views_1h >= 2'}
  - {id: tv_fan, description: d, when: 'spend_365d["tv"] >= 100.0 || segment("german")'}
  - {id: evening, description: d, when: local_hour >= 18 && session_active}
"""


def payload(n: int, kind: str, at: float, country: str, pick: int = 0) -> dict[str, Any]:
    product, category = PICKS[pick % len(PICKS)]
    props: dict[str, Any] = {}
    if kind == "purchase":
        item = {"product_id": product, "category": category, "price": 120 + 200 * pick}
        props = {"order_id": f"o{n}", "value": 120 + 200 * pick, "items": [item]}
    elif kind in ("add_to_cart", "product_view"):
        props = {"product_id": product, "category": category, "price": 60 + 10 * pick}
    elif kind == "category_view":
        props = {"category": category}
    return {
        "event_id": f"e{n}",
        "visitor_id": "v1",
        "event_time": datetime.fromtimestamp(at, UTC).isoformat(),
        "type": kind,
        "context": {"ip": "178.197.224.1", "user_agent": "x", "page_path": "/", "geo": {"country": country}},
        "properties": props,
    }


def run_batches(defs: Definitions, batches: list[list[dict[str, Any]]]) -> list[Profile]:
    """Each list of events as one batch; the profile after each."""
    records, offset = [], 0
    for events in batches:
        records.append(event_records(events, offset))
        offset += len(events)
    wall = BASE + 3 * 365 * 86_400.0  # after every event: each batch is evaluated at its newest
    return [touched["v1"] for touched in replay_batches(records, defs, wall_now=wall, enricher=ENRICHER)]


KINDS = ["page_view", "product_view", "add_to_cart", "purchase", "cart_view", "exit_intent", "category_view"]
PICKS = [("P-1001", "tv"), ("P-2002", "electronics"), ("P-3003", "clothing"), ("P-4004", "sports")]


@st.composite
def batches_strategy(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    at, n, out = BASE, 0, []
    for _ in range(draw(st.integers(1, 12))):
        batch = []
        for _ in range(draw(st.integers(1, 3))):
            at += draw(st.sampled_from([5, 60, 1800, 4 * 3600, 2 * 86_400, 40 * 86_400]))
            kind = draw(st.sampled_from(KINDS))
            batch.append(
                payload(n, kind, at, draw(st.sampled_from(["CH", "CH", "DE", "AT"])), draw(st.integers(0, 9)))
            )
            n += 1
        out.append(batch)
    return out


@pytest.mark.parametrize("defs", [DEFAULTS, parse_definitions(EXTRA, "deps.yaml")], ids=["default", "deps"])
@PROPERTY_SETTINGS
@given(batches=batches_strategy())
def test_evaluating_only_affected_segments_equals_a_full_evaluation(
    defs: Definitions, batches: list[list[dict[str, Any]]]
) -> None:
    for profile in run_batches(defs, batches):
        full = evaluate(profile, defs, profile.evaluated_at, explain=False).members
        assert set(profile.segments) == full


def test_an_event_evaluates_only_the_segments_it_can_change() -> None:
    defs = parse_definitions(EXTRA, "deps.yaml")
    index = defs.dependencies
    assert index is not None
    ids = [seg.id for seg in defs.segments]

    def affected(kind: str, *fields: str) -> set[str]:
        return {ids[i] for i in index.affected(Changes(frozenset({CODES[kind]}), frozenset(fields)))}

    # local_hour and session_active move with any event
    assert affected("page_view") == {"evening"}
    assert affected("purchase") == {"buyer", "swiss_buyer", "not_swiss_buyer", "tv_fan", "evening"}
    assert affected("page_view", "country") == {
        "swiss_buyer",
        "not_swiss_buyer",
        "german",
        "tv_fan",
        "evening",
    }
    assert affected("product_view") == {"browsing_x", "evening"}


def test_a_new_visitor_is_evaluated_from_the_empty_profile() -> None:
    """Long-tail traffic: a first page view evaluates only what it changes from the empty profile;
    a segment the empty profile is in is entered without its condition being run."""
    defs = parse_definitions(
        EXTRA + "  - {id: no_purchase, description: d, when: purchases_30d == 0}\n", "deps.yaml"
    )
    start = new_visitor_start(defs)
    assert start is not None and start.members == {"no_purchase"}
    (profile,) = run_batches(defs, [[payload(0, "page_view", BASE + 60, "DE")]])
    changes = start.changes(defs, frozenset({CODES["page_view"]}), Profile(visitor_id="v1"))
    assert changes.fields == frozenset()
    index = defs.dependencies
    assert index is not None
    ids = [seg.id for seg in defs.segments]
    moved = start.changes(defs, frozenset({CODES["page_view"]}), profile)
    assert "country" in moved.fields
    assert {ids[i] for i in index.affected(moved)} == {
        "swiss_buyer",
        "not_swiss_buyer",
        "german",
        "tv_fan",
        "evening",
    }
    assert set(profile.segments) == {"no_purchase", "german", "tv_fan"}


def test_segments_are_evaluated_after_the_segments_they_read() -> None:
    text = EXTRA.replace(
        "  - {id: buyer,", "  - {id: first, description: d, when: 'segment(\"buyer\")'}\n  - {id: buyer,"
    )
    defs = parse_definitions(text, "deps.yaml")
    assert defs.dependencies is not None
    order = [defs.segments[i].id for i in defs.dependencies.order]
    assert order.index("buyer") < order.index("first")
    assert order.index("swiss_buyer") < order.index("not_swiss_buyer")
    assert [seg.id for seg in defs.segments][:2] == ["first", "buyer"]  # listed as written


@pytest.mark.parametrize(
    ("when", "message", "column"),
    [
        ('segment("buyr")', "unknown segment 'buyr' (did you mean 'buyer'?)", 12),
        ('true && segment("b")', "segments depend on each other in a cycle: a → b → a", 11),
        (
            "segment(country)",
            "unknown function 'segment': write segment(\"segment_id\") with the id in quotes",
            12,
        ),
    ],
)
def test_segment_references_are_checked(when: str, message: str, column: int) -> None:
    text = (
        'version: "x"\nsegments:\n'
        f"  - id: a\n    description: d\n    when: '{when}'\n"
        "  - id: b\n    description: d\n    when: 'segment(\"a\")'\n"
        "  - id: buyer\n    description: d\n    when: 'true'\n"
    )
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(text, "x.yaml")
    assert caught.value.message.endswith(message)
    assert (caught.value.line, caught.value.column) == (5, column)


GENERATED = parse_definitions(generated_definitions(300, seed=3), "generated.yaml")


def plain_members(profile: Profile, defs: Definitions, now: float) -> frozenset[str]:
    """Every condition run, no index, no guards: the reference."""
    values = LazyValues(profile, defs.plan, now)
    values.members.clear()
    assert defs.dependencies is not None
    for i in defs.dependencies.order:
        seg = defs.segments[i]
        env = cel.Context(None, cel_functions(profile, defs.segment_function_names) or None)
        env.set_variable_resolver(values.get)
        for name in defs.segment_nullable:
            env.add_variable(name, None)
        try:
            if seg.when.program.execute(env) is True:
                values.members.add(seg.id)
        except Exception:
            pass
    return frozenset(values.members)


@PROPERTY_SETTINGS
@given(batches=batches_strategy())
def test_guards_and_the_index_match_running_every_condition(batches: list[list[dict[str, Any]]]) -> None:
    for profile in run_batches(GENERATED, batches):
        assert set(profile.segments) == plain_members(profile, GENERATED, profile.evaluated_at)
        later = profile.evaluated_at + 2 * 3600
        assert evaluate(profile, GENERATED, later).members == plain_members(profile, GENERATED, later)
