"""Journeys and guard rails with a controllable clock: the cart escalation step by step, exits on
purchase, opt-out and outcomes, conversions, caps, quiet hours, schedules, the café campaign (radius,
age, weekdays 7–13 h, 15 EUR a day), holdouts, A/B shares and deterministic ids. Pure functions only:
no sleeps, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.messages import Message
from streams.core.definitions import DefinitionError, Definitions, load_definitions, parse_definitions
from streams.core.definitions_diff import diff_definitions
from streams.core.guardrails import (
    BudgetLedger,
    SentRecord,
    assignment,
    caps_allow,
    in_schedule,
    next_opening,
    quiet_end,
    screen,
)
from streams.core.journey_defs import OUTCOME_NAMES, Caps, Guardrails, QuietHours
from streams.core.journeys import JourneyEvent, Messenger, Outcome, advance, journey_message_id, next_due
from streams.core.profile import Profile
from streams.core.triggers import TriggerEnv, decide
from streams.settings import DEFAULT_SEGMENTS_FILE

HOUR = 3600.0
DAY = 86_400.0
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp()
"""Friday 11:00 in Zurich and Berlin."""
MONDAY_9_BERLIN = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def defs() -> Definitions:
    return load_definitions(DEFAULT_SEGMENTS_FILE)


def visitor_not_held_out(defs: Definitions, campaign: str, prefix: str = "v") -> str:
    for i in range(100):
        visitor = f"{prefix}{i}"
        if not assignment(visitor, defs.campaigns[campaign])[0]:
            return visitor
    raise AssertionError("no visitor outside the holdout")


def visitor_held_out(defs: Definitions, campaign: str) -> str:
    for i in range(1000):
        visitor = f"h{i}"
        if assignment(visitor, defs.campaigns[campaign])[0]:
            return visitor
    raise AssertionError("no held-out visitor")


def shopper(visitor_id: str, **fields: Any) -> Profile:
    base: dict[str, Any] = {
        "visitor_id": visitor_id,
        "first_seen": T0 - 30 * DAY,
        "last_seen": T0 - 60,
        "country": "CH",
        "cart": {"P-1": 1, "P-2": 2},
        "cart_value": 80.0,
        "last_add_to_cart_at": T0 - HOUR,
        "segments": [],
    }
    base.update(fields)
    return Profile(**base)


def evaluate_at(
    defs: Definitions,
    profile: Profile,
    now: float,
    *,
    entered: Sequence[str] = (),
    exited: Sequence[str] = (),
    events: Sequence[JourneyEvent] = (),
    ledger: BudgetLedger | None = None,
) -> Outcome:
    """What `streams.core.batch` runs after segments: trigger rules, then journeys."""
    types = frozenset("custom" if e.name in OUTCOME_NAMES else e.name for e in events)
    env = TriggerEnv(profile, entered, exited, types, defs, now, {})
    messenger = Messenger(profile, defs, now, ledger, env.holds)
    decide(profile, entered, exited, types, defs, now, {}, messenger.guard, env)
    profile.segments = sorted((set(profile.segments) - set(exited)) | set(entered))
    return advance(profile, defs, now, events, types, entered, exited, messenger, env.render, env.holds)


def steps(messages: list[Message]) -> list[tuple[str | None, str, Any]]:
    return [(m.step, m.channel, m.payload.get("discount_percent")) for m in messages]


# -- the cart escalation ------------------------------------------------------------------------------


def test_every_escalation_step_fires_at_its_moment(defs: Definitions) -> None:
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    entered = evaluate_at(defs, profile, T0, entered=["cart_abandoners"])
    assert steps(entered.messages) == [("retarget", "ads", None)]
    retarget = entered.messages[0]
    assert retarget.payload == {"audience": "cart_abandoners", "products": ["P-1", "P-2"], "cart_value": 80.0}
    assert (retarget.campaign, retarget.journey, retarget.holdout) == (
        "cart_recovery",
        "cart_recovery",
        False,
    )
    assert next_due(profile) == T0 + 24 * HOUR
    assert evaluate_at(defs, profile, T0 + 23 * HOUR).messages == []
    first = evaluate_at(defs, profile, T0 + 24 * HOUR)
    assert steps(first.messages) == [("coupon_10", "email", 10)]
    assert first.messages[0].expires_at == datetime.fromtimestamp(T0 + 72 * HOUR, UTC)
    assert next_due(profile) == T0 + 72 * HOUR
    assert evaluate_at(defs, profile, T0 + 71 * HOUR).messages == []
    second = evaluate_at(defs, profile, T0 + 72 * HOUR)
    assert steps(second.messages) == [("coupon_15", "email", 15)]
    assert "cart_recovery" not in profile.journey_state.get("active", {}), "the last step ends it"
    assert next_due(profile) is None


def test_a_late_timer_runs_the_steps_at_their_own_moments(defs: Definitions) -> None:
    """A timer that fires long after the due moment sends what was due, stamped when it was due."""
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    evaluate_at(defs, profile, T0, entered=["cart_abandoners"])
    late = evaluate_at(defs, profile, T0 + 100 * HOUR)
    assert steps(late.messages) == [("coupon_10", "email", 10), ("coupon_15", "email", 15)]
    assert [m.event_time.timestamp() for m in late.messages] == [T0 + 24 * HOUR, T0 + 72 * HOUR]


def test_a_purchase_ends_the_journey_at_once_and_converts_the_last_message(defs: Definitions) -> None:
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    retarget = evaluate_at(defs, profile, T0, entered=["cart_abandoners"]).messages[0]
    purchase = JourneyEvent("purchase", T0 + 2 * HOUR, order_id="o-1", value=79.5)
    bought = evaluate_at(defs, profile, T0 + 2 * HOUR, events=[purchase])
    assert bought.messages == []
    assert [(c.message_id, c.order_id, c.value, c.holdout) for c in bought.conversions] == [
        (retarget.message_id, "o-1", 79.5, False)
    ]
    assert "active" not in profile.journey_state and next_due(profile) is None
    assert evaluate_at(defs, profile, T0 + 24 * HOUR).messages == []
    again = evaluate_at(
        defs, profile, T0 + 3 * HOUR, events=[JourneyEvent("purchase", T0 + 3 * HOUR, order_id="o-2")]
    )
    assert again.conversions == [], "a message converts once"


def test_an_opt_out_ends_the_journey_at_once(defs: Definitions) -> None:
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    evaluate_at(defs, profile, T0, entered=["cart_abandoners"])
    profile.consent_marketing = False
    assert evaluate_at(defs, profile, T0 + HOUR).messages == []
    assert "active" not in profile.journey_state
    assert evaluate_at(defs, profile, T0 + 24 * HOUR).messages == []


def test_no_entry_without_marketing_consent(defs: Definitions) -> None:
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"), consent_marketing=False)
    assert evaluate_at(defs, profile, T0, entered=["cart_abandoners"]).messages == []
    assert "active" not in profile.journey_state


def test_an_emptied_cart_ends_the_journey_at_the_branch(defs: Definitions) -> None:
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    evaluate_at(defs, profile, T0, entered=["cart_abandoners"])
    profile.cart, profile.cart_value = {}, 0.0
    assert evaluate_at(defs, profile, T0 + 24 * HOUR).messages == []
    assert "active" not in profile.journey_state


def test_reentry_waits_for_the_reentry_period(defs: Definitions) -> None:
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    evaluate_at(defs, profile, T0, entered=["cart_abandoners"])
    evaluate_at(defs, profile, T0 + HOUR, events=[JourneyEvent("purchase", T0 + HOUR, order_id="o")])
    assert evaluate_at(defs, profile, T0 + 2 * DAY, entered=["cart_abandoners"]).messages == []
    assert len(evaluate_at(defs, profile, T0 + 8 * DAY, entered=["cart_abandoners"]).messages) == 1


def test_message_ids_are_deterministic_per_journey_run_and_step(defs: Definitions) -> None:
    visitor = visitor_not_held_out(defs, "cart_recovery")
    runs = []
    for _ in range(2):
        profile = shopper(visitor)
        out = evaluate_at(defs, profile, T0, entered=["cart_abandoners"]).messages
        out += evaluate_at(defs, profile, T0 + 30 * HOUR).messages  # another cut of the same time
        out += evaluate_at(defs, profile, T0 + 80 * HOUR).messages
        runs.append([m.message_id for m in out])
    assert runs[0] == runs[1] and len(set(runs[0])) == 3
    assert runs[0][0] == journey_message_id("cart_recovery", visitor, T0, "retarget", 0)


def test_a_held_out_visitor_is_recorded_but_never_messaged(defs: Definitions) -> None:
    profile = shopper(visitor_held_out(defs, "cart_recovery"))
    out = evaluate_at(defs, profile, T0, entered=["cart_abandoners"]).messages
    out += evaluate_at(defs, profile, T0 + 24 * HOUR).messages
    out += evaluate_at(defs, profile, T0 + 72 * HOUR).messages
    assert [m.step for m in out] == ["retarget", "coupon_10", "coupon_15"]
    assert all(m.holdout and not m.deliverable and m.cost == 0 for m in out)
    bought = evaluate_at(
        defs, profile, T0 + 73 * HOUR, events=[JourneyEvent("purchase", T0 + 73 * HOUR, order_id="o")]
    )
    assert [c.holdout for c in bought.conversions] == [True], "the holdout's purchases are the baseline"


def test_holdout_share_over_10000_visitors(defs: Definitions) -> None:
    campaign = defs.campaigns["cart_recovery"]
    held = sum(assignment(f"visitor-{i}", campaign)[0] for i in range(10_000))
    assert abs(held / 10_000 - campaign.holdout) <= 0.03


def test_ab_split_within_3_percent_over_10000_visitors(defs: Definitions) -> None:
    campaign = defs.campaigns["cafe_breakfast"]
    counts: dict[str | None, int] = {}
    for i in range(10_000):
        variant = assignment(f"visitor-{i}", campaign)[1]
        counts[variant] = counts.get(variant, 0) + 1
    assert set(counts) == {"coffee", "croissant"}
    for option in campaign.variants:
        assert abs(counts[option.name] / 10_000 - option.share) <= 0.03
    assert assignment("visitor-7", campaign) == assignment("visitor-7", campaign)


# -- outcomes ------------------------------------------------------------------------------------------

OUTCOME_FILE = """\
version: "t1"
segments:
  - id: anyone
    description: everyone
    when: "true"
journeys:
  - id: nudge
    entry: {event: exit_intent}
    exit_on: [message_dismissed]
    steps:
      - id: overlay
        send: {kind: exit_intent_overlay, channel: onsite}
      - id: wait_click
        wait: 1h
        until: [message_clicked]
        on_until: thanks
      - id: reminder
        send: {kind: exit_intent_overlay, channel: onsite, payload: {template: reminder}}
        next: end
      - id: thanks
        send: {kind: exit_intent_overlay, channel: onsite, payload: {template: thanks}}
"""


def test_a_click_ends_the_wait_early_and_a_dismissal_exits() -> None:
    defs = parse_definitions(OUTCOME_FILE)
    profile = shopper("v1")
    overlay = evaluate_at(defs, profile, T0, events=[JourneyEvent("exit_intent", T0)]).messages[0]
    click = JourneyEvent("message_clicked", T0 + 60, message_id=overlay.message_id)
    thanks = evaluate_at(defs, profile, T0 + 60, events=[click])
    assert [m.payload.get("template") for m in thanks.messages] == ["thanks"]

    other = shopper("v2")
    overlay = evaluate_at(defs, other, T0, events=[JourneyEvent("exit_intent", T0)]).messages[0]
    stray = JourneyEvent("message_dismissed", T0 + 60, message_id="someone-elses")
    assert evaluate_at(defs, other, T0 + 60, events=[stray]).messages == []
    assert "nudge" in other.journey_state["active"], "an outcome of another message changes nothing"
    dismissed = JourneyEvent("message_dismissed", T0 + 90, message_id=overlay.message_id)
    evaluate_at(defs, other, T0 + 90, events=[dismissed])
    assert "active" not in other.journey_state
    assert evaluate_at(defs, other, T0 + 2 * HOUR).messages == []


# -- guard rails -------------------------------------------------------------------------------------


def test_quiet_hours_defer_a_journey_step_to_their_end(defs: Definitions) -> None:
    late_evening = datetime(2026, 11, 20, 22, 30, tzinfo=UTC).timestamp()  # 23:30 in Zurich
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    assert steps(evaluate_at(defs, profile, late_evening, entered=["cart_abandoners"]).messages) == [
        ("retarget", "ads", None)
    ], "ads are not quiet"
    due = late_evening + 24 * HOUR
    assert evaluate_at(defs, profile, due).messages == []
    morning = datetime(2026, 11, 22, 7, 0, tzinfo=UTC).timestamp()  # 08:00 in Zurich
    assert next_due(profile) == morning
    sent = evaluate_at(defs, profile, morning).messages
    assert steps(sent) == [("coupon_10", "email", 10)]
    assert sent[0].message_id == journey_message_id(
        "cart_recovery", profile.visitor_id, late_evening, "coupon_10", 3
    ), "a deferred step keeps its id"


def test_quiet_hours_in_the_visitors_zone() -> None:
    quiet = QuietHours(22 * 60, 8 * 60, frozenset({"email"}))
    at = datetime(2026, 11, 20, 21, 30, tzinfo=UTC).timestamp()  # 22:30 Berlin, 21:30 London
    assert (
        quiet_end(quiet, "email", at, "Europe/Berlin") == datetime(2026, 11, 21, 7, 0, tzinfo=UTC).timestamp()
    )
    assert quiet_end(quiet, "email", at, "Europe/London") is None
    assert quiet_end(quiet, "onsite", at, "Europe/Berlin") is None


def test_caps_per_channel_and_per_campaign() -> None:
    now = T0
    sent = [
        SentRecord(now - 2 * HOUR, "email", "a", "m1", "r"),
        SentRecord(now - 20 * HOUR, "email", "b", "m2", "r"),
    ]
    assert not caps_allow(sent, Caps(day=2), now, channel="email")
    assert caps_allow(sent, Caps(day=2), now + 5 * HOUR, channel="email"), "the day slides"
    assert caps_allow(sent, Caps(hour=1), now, channel="email")
    assert not caps_allow(sent, Caps(week=1), now, campaign="a")
    assert caps_allow(sent, Caps(week=1), now, campaign="c")
    held = [SentRecord(now - HOUR, "email", "a", "m3", "r", holdout=True)] * 5
    assert caps_allow(held, Caps(hour=1), now, channel="email"), "held-out records are not sends"
    rails = Guardrails(channel_caps={"email": Caps(day=2)})
    verdict = screen(
        visitor_id="v", channel="email", campaign=None, guardrails=rails, now=now, visitor_zone_name="UTC",
        sent=sent, spent_today=0.0,
    )  # fmt: skip
    assert (verdict.ok, verdict.reason, verdict.retry_at) == (False, "channel_cap", None)


def test_the_campaign_cap_stops_the_escalation_but_not_the_journey(defs: Definitions) -> None:
    profile = shopper(visitor_not_held_out(defs, "cart_recovery"))
    profile.journey_state["sent"] = [
        SentRecord(T0 + 20 * HOUR, "ads", "cart_recovery", f"x{i}", "r").to_row() for i in range(2)
    ]
    evaluate_at(defs, profile, T0, entered=["cart_abandoners"])  # cap day 2: the retarget is refused
    out = evaluate_at(defs, profile, T0 + 24 * HOUR)
    assert out.messages == [] and ("cart_recovery.coupon_10", "campaign_cap") in out.suppressed
    assert steps(evaluate_at(defs, profile, T0 + 72 * HOUR).messages) == [("coupon_15", "email", 15)]


# -- the café campaign (seed 000): 18–40, within 4 km, weekdays 7–13 h, 15 EUR a day --------------------

NEAR = {"lat": 52.4850, "lon": 13.4400}
"""About 0.9 km from the café on Sonnenallee."""
FAR = {"lat": 52.5200, "lon": 13.4050}
"""About 5 km away (Alexanderplatz)."""


def cafe_guest(visitor_id: str, age: int | None = 30, where: dict[str, float] | None = None) -> Profile:
    return shopper(visitor_id, country="DE", city="Berlin", age=age, **(where or NEAR))


def cafe_offer(
    defs: Definitions, profile: Profile, now: float, ledger: BudgetLedger | None = None
) -> list[Message]:
    return evaluate_at(defs, profile, now, entered=["cafe_radius_4km"], ledger=ledger).messages


def test_cafe_radius_and_age(defs: Definitions) -> None:
    sent = cafe_offer(defs, cafe_guest("c1"), MONDAY_9_BERLIN)
    assert [(m.rule, m.campaign) for m in sent] == [("cafe_breakfast_offer", "cafe_breakfast")]
    assert sent[0].variant in {"coffee", "croissant"} and sent[0].payload["offer"]
    assert sent[0].cost == 0.25
    assert cafe_offer(defs, cafe_guest("c2", age=17), MONDAY_9_BERLIN) == []
    assert cafe_offer(defs, cafe_guest("c3", age=41), MONDAY_9_BERLIN) == []
    assert cafe_offer(defs, cafe_guest("c4", age=None), MONDAY_9_BERLIN) == [], "the campaign needs an age"
    assert cafe_offer(defs, cafe_guest("c5", where=FAR), MONDAY_9_BERLIN) == []
    assert len(cafe_offer(defs, cafe_guest("c6", age=40), MONDAY_9_BERLIN)) == 1
    assert len(cafe_offer(defs, cafe_guest("c7", age=18), MONDAY_9_BERLIN)) == 1


def test_cafe_schedule_weekdays_7_to_13_berlin(defs: Definitions) -> None:
    schedule = defs.campaigns["cafe_breakfast"].schedule
    assert schedule is not None

    def berlin(day: int, hour: int, minute: int = 0) -> float:  # November 2026: UTC+1
        return datetime(2026, 11, day, hour - 1, minute, tzinfo=UTC).timestamp()

    assert in_schedule(schedule, berlin(23, 7)) and in_schedule(schedule, berlin(27, 12, 59))
    assert not in_schedule(schedule, berlin(23, 6, 59)) and not in_schedule(schedule, berlin(23, 13))
    assert not in_schedule(schedule, berlin(21, 9)), "Saturday"
    assert next_opening(schedule, berlin(21, 9)) == berlin(23, 7)
    assert next_opening(schedule, berlin(23, 14)) == berlin(24, 7)
    assert cafe_offer(defs, cafe_guest("c8"), berlin(23, 14)) == []
    assert cafe_offer(defs, cafe_guest("c9"), berlin(21, 9)) == []


def test_cafe_budget_of_15_eur_a_day(defs: Definitions) -> None:
    ledger = BudgetLedger()
    sent = [cafe_offer(defs, cafe_guest(f"guest-{i}"), MONDAY_9_BERLIN + i, ledger) for i in range(70)]
    assert sum(len(s) for s in sent) == 60, "15 EUR / 0.25 EUR a message"
    assert ledger.spent_on("cafe_breakfast", "2026-11-23") == 15.0
    tuesday = MONDAY_9_BERLIN + DAY
    assert len(cafe_offer(defs, cafe_guest("tuesday-guest"), tuesday, ledger)) == 1, "a new day, a new budget"


def test_budget_share_splits_the_daily_budget_between_workers(defs: Definitions) -> None:
    ledger = BudgetLedger(share=0.5)
    sent = [cafe_offer(defs, cafe_guest(f"guest-{i}"), MONDAY_9_BERLIN + i, ledger) for i in range(40)]
    assert sum(len(s) for s in sent) == 30


# -- validation ----------------------------------------------------------------------------------------

BASE = """\
version: "t1"
segments:
  - id: cart_abandoners
    description: a full cart
    when: cart_items > 0
journeys:
  - id: j
    entry: {enter: cart_abandoners}
    steps:
"""


@pytest.mark.parametrize(
    ("steps_text", "line", "column", "reason"),
    [
        ("      - {id: a, wait: 30 minutes}\n", 10, 23, "bad duration '30 minutes'"),
        ("      - {id: a, wait: 30m, next: b}\n", 10, 34, "unknown step 'b'"),
        (
            "      - {id: a, send: {kind: retargeting, channel: ads}, next: b}\n"
            "      - {id: b, branch: [{if: 'cart_items > 0', goto: a}]}\n",
            10,
            9,
            "steps a → b → a form a cycle without a wait",
        ),
        (
            "      - {id: a, branch: [{if: 'cart_itemz > 0', goto: end}]}\n",
            10,
            32,
            "unknown identifier 'cart_itemz'",
        ),
        ("      - {id: a, branch: [{if: 'cart_items >', goto: end}]}\n", 10, 44, "CEL syntax error"),
        ("      - {id: a, send: {kind: sms, channel: ads}}\n", 10, 30, "unknown message kind 'sms'"),
        ("      - {id: a, wait: 1h, send: {kind: retargeting, channel: ads}}\n", 10, 9, "exactly one of"),
    ],
)
def test_bad_journeys_are_refused_with_line_column_and_reason(
    steps_text: str, line: int, column: int, reason: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(BASE + steps_text, "j.yaml")
    error = caught.value
    assert reason in error.message, error.message
    assert (error.line, error.column) == (line, column), str(error)


def test_a_cycle_through_a_wait_is_allowed() -> None:
    defs = parse_definitions(
        BASE
        + "      - {id: a, send: {kind: retargeting, channel: ads}}\n      - {id: b, wait: 1d, next: a}\n"
    )
    assert [s.id for s in defs.journeys[0].steps] == ["a", "b"]


def test_an_unknown_entry_segment_is_refused() -> None:
    text = BASE.replace("{enter: cart_abandoners}", "{enter: cart_abandoner}") + "      - {id: a, wait: 1h}\n"
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(text, "j.yaml")
    assert "unknown segment 'cart_abandoner' (did you mean 'cart_abandoners'?)" in caught.value.message
    assert (caught.value.line, caught.value.column) == (8, 20)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("campaigns:\n  - {id: c, schedule: {hours: '13:00-07:00'}}\n", "the end must be after the start"),
        ("campaigns:\n  - {id: c, schedule: {weekdays: [0, 8]}}\n", "weekdays must be a list"),
        ("campaigns:\n  - {id: c, variants: {a: {share: 0.6}, b: {share: 0.6}}}\n", "add up to 1.0"),
        ("campaigns:\n  - {id: c, holdout: 1.5}\n", "between 0.0 and 1.0"),
        ("campaigns:\n  - {id: c, budget: {daily: 15}}\n", "budget needs 'cost_per_message'"),
        ("guardrails:\n  quiet_hours: {from: '25:00', to: '08:00'}\n", "bad time of day"),
        ("guardrails:\n  caps: {sms: {day: 1}}\n", "unknown channel 'sms'"),
    ],
)
def test_bad_campaigns_and_guardrails_are_refused(extra: str, reason: str) -> None:
    text = 'version: "t1"\nsegments:\n  - {id: s, description: s, when: "true"}\n' + extra
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(text, "c.yaml")
    assert (
        reason in caught.value.message and caught.value.line is not None and caught.value.column is not None
    )


def test_an_unknown_campaign_is_refused(defs: Definitions) -> None:
    text = DEFAULT_SEGMENTS_FILE.read_text(encoding="utf-8").replace(
        "campaign: cafe_breakfast\n    send:", "campaign: cafe_brekfast\n    send:"
    )
    with pytest.raises(
        DefinitionError, match="unknown campaign 'cafe_brekfast' \\(did you mean 'cafe_breakfast'"
    ):
        parse_definitions(text)


def test_a_changed_journey_shows_in_the_definitions_diff(defs: Definitions) -> None:
    text = DEFAULT_SEGMENTS_FILE.read_text(encoding="utf-8")
    changed = parse_definitions(
        text.replace("wait: 24h\n", "wait: 12h\n").replace("holdout: 0.1\n", "holdout: 0.2\n")
    )
    lines = diff_definitions(defs, changed)
    assert any(
        "step wait_first_coupon: wait 86400s → cart_still_full → wait 43200s → cart_still_full" in line
        for line in lines
    ), lines
    assert any("holdout" in line and "0.2" in line for line in lines), lines
