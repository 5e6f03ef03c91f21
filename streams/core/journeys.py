"""Journeys: multi-step flows per visitor, with waits, branches and exits (pure; values in, values out).

A journey (declared under ``journeys:`` in the definitions file, parsed by
`streams.core.definitions` into a `streams.core.journey_defs.JourneyDef`)::

    - id: cart_recovery
      entry: {enter: cart_abandoners}          # or {event: exit_intent}
      campaign: cart_recovery                  # guard rails, holdout, variants of its sends
      exit_on: [purchase, opt_out]             # events, outcomes (message_clicked …), {exit: segment}
      steps:
        - id: retarget
          send: {kind: retargeting, channel: ads, payload: {audience: cart_abandoners}}
        - id: wait_24h
          wait: 24h                            # until: [message_clicked], on_until: <step>
        - id: still_in_cart
          branch:
            - {if: "cart_items > 0", goto: coupon_10}
          else: end
        - id: coupon_10
          send: {kind: coupon_email, channel: email, payload: {discount_percent: 10}, ttl: 48h}

`advance` moves one visitor's journeys after a batch (called by `streams.core.batch` after segments
and trigger rules): exits first (an exit event of the batch, an opt-out — marketing consent turned
false —, leaving an exit segment, an outcome of one of the journey's messages), then entries (a
segment entered in this batch or an entry event seen, not already in it, and past ``reentry``),
then every active journey runs from its current step until a wait that is not over (or a send
deferred by the guard rails) or its end.

Time: a step runs at its own moment — the entry time for the first steps, a wait's end for the
steps after it (not the moment the timer happened to fire), so what a journey sends and when does
not depend on how records were batched. The next moment a journey needs (a wait's end, a deferred
send's retry) is `next_due`; the batch takes the minimum of it and the segments' `next_check_at`,
so the due queue fires the step with no new event.

Exactly one message per step: a message's id is a hash of (journey, visitor, entry time, step id,
step count) — `journey_message_id` — so a batch replayed after a crash re-creates the same ids,
and the consumers of the `messages` topic (the on-site inbox, the delivery adapters) drop what they
already have by id.

Conversions: a purchase within the attribution window (``guardrails: attribution_window``) after
a message is a `schemas.messages.Conversion` of the latest such message not yet converted (last
touch; held-out records convert too: that is the holdout group's baseline).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from schemas.messages import Conversion, Message
from streams.core.definitions import CONSENT_CHANNELS, Definitions
from streams.core.guardrails import BudgetLedger, SentRecord, Verdict, budget_day, screen, visitor_zone
from streams.core.journey_defs import END, OUTCOME_NAMES, CampaignDef, JourneyDef, SendSpec, Step
from streams.core.profile import Profile

__all__ = [
    "JourneyEvent",
    "Messenger",
    "Outcome",
    "advance",
    "journey_message_id",
    "may_advance",
    "next_due",
]

MAX_STEPS_PER_ADVANCE = 64
"""Steps one journey may run in one call (validation refuses cycles without a wait; this bounds
what is left, e.g. a long chain of sends)."""
SENT_KEEP_S = 8 * 86_400.0
"""Sent records older than this (and than the attribution window) are dropped: caps look back a week."""
SENT_MAX = 64


class JourneyEvent(NamedTuple):
    """What `advance` reads of one applied event of the batch (the batch collects purchases and
    custom events only)."""

    name: str
    """The event type, or a custom event's name (``message_clicked``)."""
    at: float
    message_id: str | None = None
    order_id: str | None = None
    value: float = 0.0
    currency: str = "EUR"


def journey_message_id(journey: str, visitor_id: str, entered_at: float, step: str, seq: int) -> str:
    """sha1 of journey, visitor, entry time, step id and step count: the same step of the same
    journey run gets the same id however often it is decided (replays)."""
    key = f"J\x1f{journey}\x1f{visitor_id}\x1f{entered_at!r}\x1f{step}\x1f{seq}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Outcome:
    """What one `advance` produced besides the state it left in the profile."""

    messages: list[Message] = field(default_factory=list)
    conversions: list[Conversion] = field(default_factory=list)
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    """(rule, reason) of every message a guard rail refused."""


def _ts(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


class Messenger:
    """Turns a decided message into what is sent for one visitor at one evaluation: the campaign's
    audience and `streams.core.guardrails.screen`, the variant's payload, the holdout flag, the
    sent record in the profile and the spend in the ledger. Shared by trigger rules and journeys."""

    def __init__(
        self,
        profile: Profile,
        defs: Definitions,
        now: float,
        ledger: BudgetLedger | None,
        condition: Callable[[Any, str | None], bool],
    ) -> None:
        self.profile, self.defs, self.now, self.ledger = profile, defs, now, ledger
        self.condition = condition
        """Runs a campaign's ``when`` (a CEL `Expr`) in the visitor's trigger context."""
        self.outcome = Outcome()
        self._sent: list[SentRecord] | None = None

    @property
    def sent(self) -> list[SentRecord]:
        if self._sent is None:
            rows = self.profile.journey_state.get("sent", ())
            self._sent = [SentRecord.of_row(row) for row in rows]
        return self._sent

    def check(self, channel: str, campaign_id: str | None, at: float) -> Verdict:
        defs = self.defs
        campaign: CampaignDef | None = defs.campaigns.get(campaign_id) if campaign_id else None
        if campaign is not None and campaign.when is not None and not self.condition(campaign.when, None):
            return Verdict(False, "audience")
        spent = 0.0
        share = 1.0
        if campaign is not None and campaign.budget is not None and self.ledger is not None:
            spent = self.ledger.spent_on(campaign.id, budget_day(at, self._budget_zone(campaign)))
            share = self.ledger.share
        return screen(
            visitor_id=self.profile.visitor_id,
            channel=channel,
            campaign=campaign,
            guardrails=defs.guardrails,
            now=at,
            visitor_zone_name=visitor_zone(self.profile.country, defs.zone),
            sent=self.sent,
            spent_today=spent,
            budget_share=share,
        )

    def _budget_zone(self, campaign: CampaignDef) -> str:
        return campaign.schedule.zone if campaign.schedule is not None else self.defs.zone

    def finish(self, message: Message, verdict: Verdict) -> Message:
        """The message as sent (variant payload, holdout flag, cost), recorded."""
        campaign = self.defs.campaigns.get(message.campaign) if message.campaign else None
        updates: dict[str, Any] = {
            "variant": verdict.variant,
            "holdout": verdict.holdout,
            "cost": verdict.cost,
        }
        if campaign is not None and verdict.variant is not None:
            for variant in campaign.variants:
                if variant.name == verdict.variant:
                    updates["payload"] = {**message.payload, **copy.deepcopy(dict(variant.payload))}
        sent = message.model_copy(update=updates)
        at = sent.event_time.timestamp()
        self.sent.append(
            SentRecord(
                at, sent.channel, sent.campaign, sent.message_id, sent.rule, sent.variant, sent.holdout,
                sent.journey, sent.step,
            )
        )  # fmt: skip
        if campaign is not None and self.ledger is not None and verdict.cost:
            self.ledger.add(campaign.id, budget_day(at, self._budget_zone(campaign)), verdict.cost)
        self.outcome.messages.append(sent)
        return sent

    def guard(self, message: Message) -> Message | None:
        """For trigger rules (`streams.core.triggers.decide`): the message as sent, or None when a
        guard rail refuses it (a one-shot rule does not wait for a schedule or quiet hours)."""
        verdict = self.check(message.channel, message.campaign, message.event_time.timestamp())
        if not verdict.ok:
            self.outcome.suppressed.append((message.rule, verdict.reason or ""))
            return None
        return self.finish(message, verdict)

    def store(self, now: float) -> None:
        """Write the sent history back to the profile (pruned by age and count)."""
        if self._sent is None:
            return
        keep_s = max(SENT_KEEP_S, self.defs.guardrails.attribution_window_s)
        rows = [r.to_row() for r in self._sent if now - r.at < keep_s][-SENT_MAX:]
        state = self.profile.journey_state
        if rows:
            state["sent"] = rows
        else:
            state.pop("sent", None)


def may_advance(
    profile: Profile, defs: Definitions, entered: Sequence[str], event_types: frozenset[str]
) -> bool:
    """Whether `advance` can do anything for this visitor now: it has journey state (active
    journeys, sent messages to attribute), or it entered a segment or saw an event a journey is
    entered on. False for most evaluations, which then skip `advance` (the hot path)."""
    if profile.journey_state:
        return True
    if not defs.journeys:
        return False
    if entered and not defs.journey_entry_segments.isdisjoint(entered):
        return True
    return not defs.journey_entry_events.isdisjoint(event_types)


def next_due(profile: Profile) -> float | None:
    """The earliest moment an active journey of `profile` needs a timer (None: none)."""
    active = profile.journey_state.get("active")
    if not active:
        return None
    dues = [state["due"] for state in active.values() if state.get("due") is not None]
    return min(dues) if dues else None


def advance(
    profile: Profile,
    defs: Definitions,
    now: float,
    events: Sequence[JourneyEvent],
    event_types: frozenset[str],
    entered: Sequence[str],
    exited: Sequence[str],
    messenger: Messenger,
    render: Callable[[SendSpec], dict[str, Any]],
    condition: Callable[[Any, str | None], bool],
) -> Outcome:
    """Move `profile`'s journeys as of `now` (see the module docstring); returns the messenger's
    `Outcome` (the messages and conversions of this evaluation, trigger rules' included).

    `events`: the batch's purchases and custom events of the visitor; `event_types`: every type
    seen; `entered`/`exited`: this evaluation's segment transitions; `render` computes a send's
    payload (its literal payload and ``compute`` fields) and `condition` runs a branch condition,
    both in the visitor's trigger context. Mutates ``profile.journey_state`` like
    `streams.core.profile.apply` mutates the profile.
    """
    state = profile.journey_state
    active: dict[str, dict[str, Any]] = state.get("active", {})
    _attribute(profile, defs, events, messenger)
    if not defs.journeys and not active:
        messenger.store(now)
        return messenger.outcome
    journeys = {journey.id: journey for journey in defs.journeys}
    outcome_ids = {e.message_id: e.name for e in events if e.name in OUTCOME_NAMES and e.message_id}
    entry_log: dict[str, float] = state.get("entered", {})
    for journey_id in list(active):
        journey = journeys.get(journey_id)
        if journey is None or _exits(journey, profile, event_types, exited, outcome_ids, messenger):
            del active[journey_id]  # a journey the definitions no longer have ends too
    for journey in defs.journeys:
        if journey.id in active or not _enters(journey, event_types, entered):
            continue
        if journey.exit_opt_out and not profile.consent_marketing:
            continue
        last = entry_log.get(journey.id)
        if last is not None and now - last < journey.reentry_s:
            continue
        active[journey.id] = {
            "entered": now,
            "step": journey.steps[0].id,
            "since": now,
            "due": None,
            "seq": 0,
        }
        entry_log[journey.id] = now
    for journey_id in list(active):
        if not _run(
            journeys[journey_id], active[journey_id], profile, now, outcome_ids, messenger, render, condition
        ):
            del active[journey_id]
    if active:
        state["active"] = active
    else:
        state.pop("active", None)
    if entry_log:
        state["entered"] = entry_log
    messenger.store(now)
    return messenger.outcome


def _enters(journey: JourneyDef, event_types: frozenset[str], entered: Sequence[str]) -> bool:
    if journey.entry == "event":
        return not journey.entry_targets.isdisjoint(event_types)
    return any(segment in journey.entry_targets for segment in entered)


def _exits(
    journey: JourneyDef,
    profile: Profile,
    event_types: frozenset[str],
    exited: Sequence[str],
    outcome_ids: Mapping[str, str],
    messenger: Messenger,
) -> bool:
    if journey.exit_opt_out and not profile.consent_marketing:
        return True
    if not journey.exit_events.isdisjoint(event_types):
        return True
    if journey.exit_segments and any(segment in journey.exit_segments for segment in exited):
        return True
    if outcome_ids and not journey.exit_events.isdisjoint(OUTCOME_NAMES):
        for record in messenger.sent:
            if record.journey == journey.id and outcome_ids.get(record.message_id) in journey.exit_events:
                return True
    return False


def _run(
    journey: JourneyDef,
    run: dict[str, Any],
    profile: Profile,
    now: float,
    outcome_ids: Mapping[str, str],
    messenger: Messenger,
    render: Callable[[SendSpec], dict[str, Any]],
    condition: Callable[[Any, str | None], bool],
) -> bool:
    """Run one journey from its current step as far as `now` allows; False when it ended."""
    index = journey.step_index
    for _ in range(MAX_STEPS_PER_ADVANCE):
        step = journey.steps[index[run["step"]]]
        since = run["since"]
        if step.action == "end":
            return False
        if step.action == "wait":
            due = since + step.wait_s
            run["due"] = due
            if (
                step.until
                and step.on_until is not None
                and _until_happened(journey, step, outcome_ids, messenger)
            ):
                target, at = step.on_until, max(since, min(now, due))
            elif now >= due:
                target, at = step.next, due
            else:
                return True
        elif step.action == "branch":
            target = next((goto for cond, goto in step.branches if condition(cond, None)), step.otherwise)
            at = since
        else:
            due = run.get("due")
            if due is not None and now < due:
                return True  # deferred by a schedule or quiet hours
            at = since if due is None else due
            retry = _send(journey, step, run, profile, at, messenger, render)
            if retry is not None:
                run["due"] = retry
                if now < retry:
                    return True
                run["since"] = retry
                continue
            target = step.next
        if target == END:
            return False
        run["step"], run["since"], run["due"], run["seq"] = target, at, None, run["seq"] + 1
    return True


def _until_happened(
    journey: JourneyDef, step: Step, outcome_ids: Mapping[str, str], messenger: Messenger
) -> bool:
    names = set(outcome_ids.values()) & step.until
    if not names:
        return False
    return any(
        record.journey == journey.id and outcome_ids.get(record.message_id) in step.until
        for record in messenger.sent
    )


def _send(
    journey: JourneyDef,
    step: Step,
    run: Mapping[str, Any],
    profile: Profile,
    at: float,
    messenger: Messenger,
    render: Callable[[SendSpec], dict[str, Any]],
) -> float | None:
    """Send `step`'s message as of `at`; the moment to try again when a schedule or quiet hours
    defer it, else None (sent, held out, or refused for good — the journey goes on)."""
    spec = step.send
    assert spec is not None
    if spec.channel in CONSENT_CHANNELS and not profile.consent_marketing:
        messenger.outcome.suppressed.append((f"{journey.id}.{step.id}", "consent"))
        return None
    campaign = step.campaign or journey.campaign
    verdict = messenger.check(spec.channel, campaign, at)
    if not verdict.ok:
        if verdict.retry_at is not None and verdict.retry_at > at:
            return verdict.retry_at
        messenger.outcome.suppressed.append((f"{journey.id}.{step.id}", verdict.reason or ""))
        return None
    message = Message(
        message_id=journey_message_id(journey.id, profile.visitor_id, run["entered"], step.id, run["seq"]),
        visitor_id=profile.visitor_id,
        kind=spec.kind,
        channel=spec.channel,  # type: ignore[arg-type]
        rule=f"{journey.id}.{step.id}",
        event_time=_ts(at),
        expires_at=None if spec.ttl_s is None else _ts(at + spec.ttl_s),
        payload=render(spec),
        campaign=campaign,
        journey=journey.id,
        step=step.id,
    )
    messenger.finish(message, verdict)
    return None


def _attribute(
    profile: Profile, defs: Definitions, events: Sequence[JourneyEvent], messenger: Messenger
) -> None:
    """Each purchase converts the latest message before it within the attribution window that has
    not converted yet (last touch)."""
    if not profile.journey_state.get("sent"):
        return
    window = defs.guardrails.attribution_window_s
    for event in events:
        if event.name != "purchase" or event.order_id is None:
            continue
        sent = messenger.sent
        for i in range(len(sent) - 1, -1, -1):
            record = sent[i]
            if record.converted or record.at > event.at or event.at - record.at > window:
                continue
            sent[i] = dataclasses.replace(record, converted=True)
            messenger.outcome.conversions.append(
                Conversion(
                    message_id=record.message_id,
                    visitor_id=profile.visitor_id,
                    campaign=record.campaign,
                    variant=record.variant,
                    holdout=record.holdout,
                    journey=record.journey,
                    step=record.step,
                    rule=record.rule,
                    message_time=_ts(record.at),
                    event_time=_ts(event.at),
                    order_id=event.order_id,
                    value=event.value,
                    currency=event.currency,
                )
            )
            break
