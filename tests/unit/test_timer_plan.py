"""The timer plan: which moments can change a segment with no new event, and for whom.

Exactness against a brute-force reference is `tests/unit/test_exact_windows.py`'s job (compound
conditions, members and non-members, at every time-driven change); these pin the reading of
conditions and the sources each shipped kind of segment gets.
"""

from __future__ import annotations

from streams.core.definitions import load_definitions, parse_definitions
from streams.core.fastcel import ENTER, EXIT, time_effects
from streams.core.profile import DAY_S, Profile
from streams.core.segments import evaluate, next_check_at
from streams.core.timer_plan import Drop
from streams.settings import DEFAULT_SEGMENTS_FILE

MOVING = {"p30": "down", "active": "fades", "viewed": "shrinks", "mins": "up", "share": "any"}


def effects(source: str) -> dict[str, set[str]]:
    found = time_effects(source, MOVING)
    assert found is not None
    return {name: {e for effects, _ in atoms for e in effects} for name, atoms in found.items()}


def test_conditions_time_can_only_end() -> None:
    assert effects("p30 >= 3") == {"p30": {EXIT}}
    assert effects('active && country == "CH"') == {"active": {EXIT}}
    assert effects('"P-1" in viewed') == {"viewed": {EXIT}}
    assert effects("mins < 30") == {"mins": {EXIT}}
    assert effects("p30 >= 3 || p30 != 0") == {"p30": {EXIT}}


def test_conditions_time_can_only_start() -> None:
    assert effects("mins >= 30 && cart_items > 0") == {"mins": {ENTER}}
    assert effects("p30 == 0") == {"p30": {ENTER}}
    assert effects("!(p30 >= 3)") == {"p30": {ENTER}}
    assert effects("active == false") == {"active": {ENTER}}


def test_conditions_time_can_move_either_way() -> None:
    assert effects("p30 >= 1 && p30 == 0 || x") == {"p30": {ENTER, EXIT}}
    assert effects("share >= 0.5") == {"share": {ENTER, EXIT}}
    assert effects("p30 == 2") == {"p30": {ENTER, EXIT}}
    assert effects("p30 > mins") == {"p30": {ENTER, EXIT}, "mins": {ENTER, EXIT}}
    assert time_effects("size(viewed) > 0", MOVING) is None  # outside the parsed subset


def test_bounds_name_where_a_falling_count_flips() -> None:
    found = time_effects("p30 >= 3 && p30 < 10 || 0 == p30", MOVING)
    assert found is not None
    assert found["p30"] == [
        (frozenset({EXIT}), (False, 3.0)),
        (frozenset({ENTER}), (False, 10.0)),
        (frozenset({ENTER}), (True, 0.0)),
    ]


def test_shipped_segments_wait_only_for_what_concerns_them() -> None:
    defs = load_definitions(DEFAULT_SEGMENTS_FILE)
    frequent = defs.timed["frequent_buyers"]
    assert frequent.enter == frozenset()  # nobody becomes a frequent buyer by waiting
    assert frequent.exit == {Drop("purchases_30d", "purchases", False, 3.0)}
    cart = defs.timed["cart_abandoners"]
    assert cart.enter == {("last_add_to_cart_at", 1800.0)} and cart.exit == frozenset()
    assert "swiss_visitors" not in defs.timed  # time never changes a country
    assert defs.timed["engaged_readers"].exit and not defs.timed["engaged_readers"].enter
    outside = defs.timer_plan([])
    member = defs.timer_plan(["engaged_readers"])
    ids = {defs.segments[i].id for i in member.segments}
    assert "engaged_readers" in ids and "frequent_buyers" not in ids
    assert "engaged_readers" not in {defs.segments[i].id for i in outside.segments}


def test_a_session_ending_concerns_members_only() -> None:
    defs = parse_definitions(
        'version: "s"\nsegments:\n  - id: browsing_now\n    description: d\n    when: session_active\n',
        "s.yaml",
    )
    assert defs.timed["browsing_now"].exit == {("last_seen", 1800.0)}
    assert ("last_seen", 1800.0) not in defs.timer_plan([]).anchors
    assert ("last_seen", 1800.0) in defs.timer_plan(["browsing_now"]).anchors


def test_a_member_leaves_when_the_count_falls_below_the_bound_not_at_each_exit() -> None:
    defs = parse_definitions(
        """
version: "t"
attributes:
  views_1d: {metric: page_views, window: 1d}
segments:
  - {id: reader, description: d, when: views_1d >= 3}
""",
        "t.yaml",
    )
    base = 1_790_000_000.0  # 2026-09-21 14:13 UTC: the five minutes are one UTC day
    times = [base + 60 * i for i in range(5)]  # five page views, one a minute
    day = int(base // DAY_S)
    assert int(times[-1] // DAY_S) == day
    profile = Profile(
        visitor_id="v",
        days={day: {"page_views": 5, "events": 5}},
        timeline=[[t, 0, 0, "/"] for t in times],
        timeline_from_day=day,
    )
    now = times[-1]
    profile.segments = sorted(evaluate(profile, defs, now).members)
    assert profile.segments == ["reader"]
    # Five views, three needed: the third-oldest leaving (not the oldest) takes the visitor out.
    leaves = next_check_at(profile, defs, now)
    assert leaves == times[2] + DAY_S
    assert evaluate(profile, defs, leaves - 0.001).members == {"reader"}
    assert evaluate(profile, defs, leaves).members == frozenset()
