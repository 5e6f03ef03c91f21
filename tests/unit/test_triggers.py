"""Trigger rules: event and transition rules, `when`, computed payloads, caps, consent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.messages import MessageKind
from streams.core.definitions import Definitions, parse_definitions
from streams.core.profile import DAY_S, Profile
from streams.core.segments import diff, evaluate
from streams.core.triggers import decide, message_id

ROOT = Path(__file__).resolve().parents[2]
NOW = 20_000 * DAY_S + 12 * 3600.0
HOUR = 3600.0
NO_EVENTS: frozenset[str] = frozenset()


CART_RULES = """\
  - id: cart_abandoners_retargeting
    description: Abandoned cart — retargeting ads.
    on: {enter: cart_abandoners}
    send:
      kind: retargeting
      channel: ads
      payload: {audience: cart_abandoners}
      compute: {products: cart_products, cart_value: cart_value}
      ttl: 7d

  - id: cart_abandoners_coupon_email
    description: Abandoned cart — a time-limited coupon by e-mail, at most one per day.
    on: {enter: cart_abandoners}
    send:
      kind: coupon_email
      channel: email
      payload: {template: cart_coupon, coupon_valid_for: 48h}
      compute: {cart_value: cart_value}
      ttl: 48h
    cap: 24h

"""
"""The two one-shot cart rules the default file had before the `cart_recovery` journey replaced
them: the rule mechanics (caps, consent, payloads) are tested with them."""


@pytest.fixture(scope="module")
def defs() -> Definitions:
    text = (ROOT / "segments" / "default.yaml").read_text(encoding="utf-8")
    text = text.replace("\ntriggers:\n", "\ntriggers:\n" + CART_RULES, 1)
    return parse_definitions(text)


def shopper(**fields: Any) -> Profile:
    base: dict[str, Any] = {
        "visitor_id": "v-42",
        "first_seen": NOW - 30 * DAY_S,
        "last_seen": NOW - 60,
        "cart": {"P-1": 1, "P-2": 2},
        "cart_value": 80.0,
        "last_add_to_cart_at": NOW - HOUR,
    }
    base.update(fields)
    return Profile(**base)


def kinds(messages: list[Any]) -> list[tuple[str, str]]:
    return [(m.rule, m.kind.value) for m in messages]


# -- exit intent ----------------------------------------------------------------------------------------


def test_exit_intent_with_a_cart_shows_the_overlay(defs: Definitions) -> None:
    profile = shopper()
    (message,) = decide(profile, [], [], frozenset({"exit_intent"}), defs, NOW, {"segments": []})
    assert message.kind is MessageKind.exit_intent_overlay and message.channel == "onsite"
    assert message.segment is None
    assert message.payload == {
        "template": "cart_reminder",
        "offer_coupon": False,
        "cart_value": 80.0,
        "cart_items": 3,
    }
    assert message.event_time == datetime.fromtimestamp(NOW, tz=UTC)
    assert message.expires_at == datetime.fromtimestamp(NOW + 30 * 60, tz=UTC)
    assert message.message_id == message_id("v-42", "exit_intent_overlay", NOW)
    assert profile.trigger_last_sent == {"exit_intent_overlay": NOW}


@pytest.mark.parametrize("segment", ["coupon_users", "discount_lovers"])
def test_exit_intent_offers_a_coupon_to_coupon_fans(defs: Definitions, segment: str) -> None:
    (message,) = decide(shopper(), [], [], frozenset({"exit_intent"}), defs, NOW, {"segments": [segment]})
    assert message.payload["offer_coupon"] is True


def test_exit_intent_without_a_cart_or_without_the_event_sends_nothing(defs: Definitions) -> None:
    empty = shopper(cart={}, cart_value=0.0)
    assert decide(empty, [], [], frozenset({"exit_intent"}), defs, NOW, {}) == []
    assert empty.trigger_last_sent == {}
    assert decide(shopper(), [], [], frozenset({"page_view"}), defs, NOW, {}) == []


def test_exit_intent_overlay_is_capped(defs: Definitions) -> None:
    profile = shopper()
    events = frozenset({"exit_intent"})
    assert len(decide(profile, [], [], events, defs, NOW, {})) == 1
    assert decide(profile, [], [], events, defs, NOW + 29 * 60, {}) == []
    assert len(decide(profile, [], [], events, defs, NOW + 30 * 60, {})) == 1


def test_onsite_needs_no_marketing_consent(defs: Definitions) -> None:
    profile = shopper(consent_marketing=False)
    assert len(decide(profile, [], [], frozenset({"exit_intent"}), defs, NOW, {})) == 1


# -- cart abandoners ------------------------------------------------------------------------------------


def test_entering_cart_abandoners_sends_retargeting_and_a_coupon_email(defs: Definitions) -> None:
    profile = shopper()
    messages = decide(profile, ["cart_abandoners"], [], NO_EVENTS, defs, NOW, {})
    assert kinds(messages) == [
        ("cart_abandoners_retargeting", "retargeting"),
        ("cart_abandoners_coupon_email", "coupon_email"),
    ]
    ads, email = messages
    assert (ads.channel, email.channel) == ("ads", "email")
    assert ads.segment == email.segment == "cart_abandoners"
    assert ads.payload == {"audience": "cart_abandoners", "products": ["P-1", "P-2"], "cart_value": 80.0}
    assert email.expires_at == datetime.fromtimestamp(NOW + 48 * HOUR, tz=UTC)


def test_coupon_email_at_most_once_per_24_hours(defs: Definitions) -> None:
    profile = shopper()
    decide(profile, ["cart_abandoners"], [], NO_EVENTS, defs, NOW, {})
    again = decide(profile, ["cart_abandoners"], [], NO_EVENTS, defs, NOW + 23 * HOUR, {})
    assert kinds(again) == [("cart_abandoners_retargeting", "retargeting")]
    assert profile.trigger_last_sent["cart_abandoners_coupon_email"] == NOW
    later = decide(profile, ["cart_abandoners"], [], NO_EVENTS, defs, NOW + 24 * HOUR, {})
    assert [rule for rule, _ in kinds(later)] == [
        "cart_abandoners_retargeting",
        "cart_abandoners_coupon_email",
    ]


def test_no_ads_or_email_without_marketing_consent(defs: Definitions) -> None:
    profile = shopper(consent_marketing=False)
    assert decide(profile, ["cart_abandoners"], [], NO_EVENTS, defs, NOW, {}) == []
    assert profile.trigger_last_sent == {}, "a blocked message does not start the cap"


def test_exiting_does_not_fire_enter_rules(defs: Definitions) -> None:
    assert decide(shopper(), [], ["cart_abandoners"], NO_EVENTS, defs, NOW, {}) == []


# -- top spenders ---------------------------------------------------------------------------------------


def test_entering_top_spender_escalates_to_crm(defs: Definitions) -> None:
    profile = shopper(days={20_000: {"spend": 2000.0, "spend@electronics": 2000.0}})
    (message,) = decide(profile, ["top_spender_electronics"], [], NO_EVENTS, defs, NOW, {})
    assert message.kind is MessageKind.escalation and message.channel == "crm"
    assert message.segment == "top_spender_electronics"
    assert message.payload["note"] == "VIP: hand to account manager"
    assert message.payload["category_spend"] == {"clothing": 0.0, "electronics": 2000.0, "home_decor": 0.0}


def test_two_categories_at_once_give_two_distinct_messages(defs: Definitions) -> None:
    entered = ["top_spender_clothing", "top_spender_electronics"]
    messages = decide(shopper(), entered, [], NO_EVENTS, defs, NOW, {})
    assert [m.segment for m in messages] == entered
    assert len({m.message_id for m in messages}) == 2


# -- mechanics ------------------------------------------------------------------------------------------


def test_message_ids_are_deterministic(defs: Definitions) -> None:
    first = decide(shopper(), ["cart_abandoners"], [], NO_EVENTS, defs, NOW, {})
    second = decide(shopper(), ["cart_abandoners"], [], NO_EVENTS, defs, NOW, {})
    assert [m.message_id for m in first] == [m.message_id for m in second]
    assert message_id("v", "r", NOW) != message_id("v", "r", NOW + 1)


def test_segments_default_to_profile_segments_after_the_transitions() -> None:
    defs = parse_definitions(
        """
version: "t"
segments:
  - {id: a, description: a, when: "true"}
  - {id: b, description: b, when: "true"}
  - {id: c, description: c, when: "true"}
triggers:
  - id: only_a_and_c
    on: {event: page_view}
    when: '"a" in segments && !("b" in segments) && "c" in segments && "page_view" in event_types'
    send: {kind: retargeting, channel: onsite, compute: {count: size(segments), seg: segment}}
"""
    )
    profile = Profile(visitor_id="v", segments=["a", "b"])
    (message,) = decide(profile, ["c"], ["b"], frozenset({"page_view"}), defs, NOW, {})
    assert message.payload == {"count": 2, "seg": ""}


def test_decide_uses_values_from_the_evaluation(defs: Definitions) -> None:
    profile = shopper()
    evaluation = evaluate(profile, defs, NOW)
    entered, exited = diff(profile.segments, evaluation.members)
    assert "cart_abandoners" in entered
    profile.segments = sorted(evaluation.members)
    context = {**evaluation.context, "segments": profile.segments, "cart_value": 999.0}
    messages = decide(profile, entered, exited, NO_EVENTS, defs, NOW, context)
    assert {m.payload.get("cart_value") for m in messages} == {999.0}
