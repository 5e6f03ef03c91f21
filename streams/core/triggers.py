"""Trigger rules: which messages a visitor gets after a batch (pure; values in, values out).

A rule (declared under ``triggers:`` in the definitions file, parsed by `streams.core.definitions`)::

    - id: cart_abandoned_email
      on: {enter: cart_abandoners}        # or {exit: …}, or {event: exit_intent}; globs: top_spender_*
      when: cart_value >= 20.0            # optional CEL over the segment context plus the names below
      send:
        kind: coupon_email                # exit_intent_overlay | retargeting | coupon_email | escalation
        channel: email                    # onsite | ads | email | crm
        payload: {template: cart_reminder}        # literal JSON
        compute: {cart_value: cart_value}         # payload fields computed by CEL at send time
        ttl: 7d                           # optional: the message's expires_at
      cap: 24h                            # at most one message per visitor and rule per 24 h

Besides facts, attributes and params, a trigger's expressions can read the names of
`streams.core.definitions.TRIGGER_CONTEXT`: ``segments`` (the visitor's segments after this
evaluation), ``event_types`` (event types seen for the visitor in this batch) and ``segment`` (the
segment that was entered/exited, "" for event rules).

Rules of the house, enforced here and not configurable per rule:

* consent: channels ``ads``, ``email`` and ``crm`` need the visitor's marketing consent
  (`profile.consent_marketing`); ``onsite`` does not (it is the site talking to its own visitor).
* frequency cap: a rule with ``cap`` sends at most once per cap per visitor, measured in event time
  against `profile.trigger_last_sent[rule]`; a message blocked by consent, cap or ``when`` does not
  count as sent.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import cel

from schemas.messages import Message
from streams.core.attributes import Expr, LazyValues, cel_functions
from streams.core.definitions import Definitions
from streams.core.journey_defs import SendSpec
from streams.core.profile import Profile

__all__ = [
    "TriggerEnv",
    "decide",
    "message_id",
]


def message_id(visitor_id: str, rule: str, now: float, segment: str | None = None) -> str:
    """sha1 of visitor, rule, (segment,) event time: a redelivered batch yields the same id.

    The segment is part of it so one rule entering two segments at once (``top_spender_*``)
    yields two distinct messages.
    """
    key = f"{visitor_id}\x1f{rule}\x1f{segment or ''}\x1f{now!r}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


class _Env:
    """The CEL context for one visitor's triggers (and journeys), built on first use."""

    def __init__(
        self,
        profile: Profile,
        entered: Sequence[str],
        exited: Sequence[str],
        event_types: frozenset[str],
        defs: Definitions,
        now: float,
        context: Mapping[str, Any],
    ) -> None:
        self.args = (profile, entered, exited, event_types, defs, now, context)
        self._context: cel.Context | None = None

    def get(self) -> cel.Context:
        if self._context is None:
            profile, entered, exited, event_types, defs, now, context = self.args
            known = {k: v for k, v in context.items() if k not in ("segment", "event_types")}
            if "segments" in known:
                known["segments"] = list(known["segments"])
            else:
                known["segments"] = sorted((set(profile.segments) - set(exited)) | set(entered))
            known["event_types"] = sorted(event_types)
            values = LazyValues(profile, defs.trigger_plan, now, known)
            functions = dict(defs.trigger_functions)
            functions.update(cel_functions(profile, defs.trigger_function_names))
            env = cel.Context(None, functions or None)
            env.set_variable_resolver(values.get)
            for name in defs.trigger_nullable:  # the resolver's None means "not mine"
                env.add_variable(name, None)
            self._context = env
        return self._context

    def holds(self, expr: Expr, segment: str | None) -> bool:
        """Whether a condition is true (a failing one is not)."""
        ok, result = self.run(expr, segment)
        return ok and result is True

    def render(self, spec: SendSpec) -> dict[str, Any]:
        """A journey send's payload: its literal payload and its ``compute`` fields."""
        payload = copy.deepcopy(dict(spec.payload))
        for name, expr in spec.compute.items():
            payload[name] = _jsonable(self.run(expr, None)[1])
        return payload

    def run(self, expr: Expr, segment: str | None) -> tuple[bool, Any]:
        env = self.get()
        env.add_variable("segment", segment or "")  # registered, not resolved: it changes per message
        try:
            return True, expr.program.execute(env)
        except Exception:  # a failing expression: the rule does not fire / the field is null
            return False, None


TriggerEnv = _Env
"""The CEL context of trigger rules, journeys and campaigns for one visitor's evaluation."""


def decide(
    profile: Profile,
    entered: Sequence[str],
    exited: Sequence[str],
    event_types: frozenset[str],
    defs: Definitions,
    now: float,
    context: Mapping[str, Any],
    guard: Callable[[Message], Message | None] | None = None,
    env: _Env | None = None,
) -> list[Message]:
    """The messages to send for this visitor after a batch, in rule order.

    `entered`/`exited` are this batch's transitions, `event_types` the event types seen for the
    visitor in the batch, `now` the event time of the decision. `context` may carry values already
    computed (`Evaluation.context`, and ``segments``: the members after this evaluation); names a
    rule reads that it lacks are computed from the profile, and without ``segments`` the members
    are ``profile.segments - exited + entered``.

    `guard` (`streams.core.journeys.Messenger.guard`: campaigns and guard rails) returns the
    message as sent, or None when a guard rail refuses it (then it does not count as sent); `env`
    is the CEL context to use (one is built from the other arguments without it).

    Mutates `profile`, like `streams.core.profile.apply`: ``profile.trigger_last_sent[rule] = now``
    for every rule that sent a message (the frequency-cap state travels with the profile).
    """
    messages: list[Message] = []
    if env is None:
        env = _Env(profile, entered, exited, event_types, defs, now, context)
    for rule in defs.triggers:
        if rule.on == "event":
            fired: list[str | None] = [None] if not rule.targets.isdisjoint(event_types) else []
        else:
            fired = [s for s in (entered if rule.on == "enter" else exited) if s in rule.targets]
        for segment in fired:
            if rule.needs_consent and not profile.consent_marketing:
                break
            last = profile.trigger_last_sent.get(rule.id)
            if rule.cap_s is not None and last is not None and now - last < rule.cap_s:
                break
            if rule.when is not None:
                ok, result = env.run(rule.when, segment)
                if not ok or result is not True:
                    continue
            payload = copy.deepcopy(dict(rule.payload))  # the message owns its payload
            for name, expr in rule.compute.items():
                payload[name] = _jsonable(env.run(expr, segment)[1])
            at = datetime.fromtimestamp(now, tz=UTC)
            message = Message(
                message_id=message_id(profile.visitor_id, rule.id, now, segment),
                visitor_id=profile.visitor_id,
                kind=rule.kind,
                channel=rule.channel,
                rule=rule.id,
                segment=segment,
                event_time=at,
                expires_at=None if rule.ttl_s is None else datetime.fromtimestamp(now + rule.ttl_s, tz=UTC),
                payload=payload,
                campaign=rule.campaign,
            )
            if guard is not None:
                guarded = guard(message)
                if guarded is None:
                    continue
                message = guarded
            messages.append(message)
            profile.trigger_last_sent[rule.id] = now
    return messages
