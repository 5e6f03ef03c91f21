"""A visitor entering or leaving a segment, as published on the `segment-changes` topic."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

AttributeValue = str | int | float | bool | None
ChangeReason = Literal["event", "timer", "correction", "definition_change", "cohort"]


class Transition(StrEnum):
    entered = "entered"
    exited = "exited"


class SegmentChange(BaseModel):
    """Version 1. `change_id` is deterministic, so a consumer can drop redelivered duplicates."""

    schema_version: Literal[1] = 1
    change_id: str
    visitor_id: str
    segment: str
    transition: Transition
    event_time: datetime
    """Event time at which membership changed: the deciding event's time, the timer's due time, or
    for a `correction` the visitor's latest evaluation moment (later than the late event)."""
    processed_at: datetime
    definition_version: str
    reason: ChangeReason = "event"
    """What decided the change: `event` the visitor's newest event; `timer` a time-driven recheck
    with no new event (a cart left alone for 30 minutes); `correction` an event that arrived after
    the visitor was evaluated at a later moment (a purchase stamped 10:29:59 arriving after the
    10:30 timer put the visitor in `cart_abandoners`); `definition_change` a new definitions
    version; `cohort` a cohort threshold the condition reads moved (more big spenders raised the
    95th percentile of spend: a visitor below it now exits "top 5 % spenders")."""
    trigger_event_id: str | None = None
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    """The attribute values the segment's condition read when it decided."""
