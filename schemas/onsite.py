"""What the browser and the collector exchange about on-site messages (version 1).

- `InboxAnswer`: the answer of `GET /v1/inbox/{visitor_id}`: the visitor's unexpired on-site
  messages (channel ``onsite`` only: ads, e-mail and CRM messages never reach the browser).
- `MessageOutcome`: what a tracker reports about one rendered message. It travels as a Segment
  ``track`` call named "Message Shown", "Message Clicked" or "Message Dismissed" whose properties are
  this model; the collector turns it into a ``custom`` event named ``message_shown``,
  ``message_clicked`` or ``message_dismissed`` (`OUTCOME_EVENTS`), so outcomes reach the events
  topic, ClickHouse and the profile like any event.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import Message


class Outcome(StrEnum):
    shown = "shown"
    clicked = "clicked"
    dismissed = "dismissed"


OUTCOME_EVENTS: Final[dict[str, Outcome]] = {
    "Message Shown": Outcome.shown,
    "Message Clicked": Outcome.clicked,
    "Message Dismissed": Outcome.dismissed,
}
"""Segment track event name → the outcome it reports."""


def outcome_event_name(outcome: Outcome) -> str:
    """The ``custom`` event name the collector gives an outcome report."""
    return f"message_{outcome.value}"


OUTCOME_NAMES: Final[dict[str, Outcome]] = {outcome_event_name(outcome): outcome for outcome in Outcome}
"""Each outcome's ``custom`` event name → the outcome (``message_shown``,
``message_clicked``, ``message_dismissed``): what journeys' ``exit_on``/``until`` and the
`message_outcomes` table (`sinks.clickhouse.outcome_rows`) read."""


class MessageOutcome(BaseModel):
    """Version 1: the properties of an outcome event (see the module's docstring)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1
    message_id: str = Field(min_length=1, max_length=128)
    outcome: Outcome
    kind: str | None = Field(None, max_length=64)
    """The message's `MessageKind` as the tracker received it."""
    rule: str | None = Field(None, max_length=128)
    display: Literal["overlay", "bar"] | None = None
    """How the tracker rendered it."""


class InboxAnswer(BaseModel):
    """Version 1: `GET /v1/inbox/{visitor_id}`, oldest message first."""

    schema_version: Literal[1] = 1
    visitor_id: str
    messages: list[Message] = Field(default_factory=list)
