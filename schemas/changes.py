"""A visitor entering or leaving a segment, as published on the `segment-changes` topic."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

AttributeValue = str | int | float | bool | None


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
    """Event time at which membership changed (the deciding event's time, or the timer's due time)."""
    processed_at: datetime
    definition_version: str
    reason: Literal["event", "timer", "definition_change"] = "event"
    trigger_event_id: str | None = None
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    """The attribute values the segment's condition read when it decided."""
