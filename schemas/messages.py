"""Trigger output on the `messages` topic: what to show or send to one visitor."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class MessageKind(StrEnum):
    exit_intent_overlay = "exit_intent_overlay"
    retargeting = "retargeting"
    coupon_email = "coupon_email"
    escalation = "escalation"


class Message(BaseModel):
    """Version 1. `message_id` is deterministic so redelivery can be dropped downstream."""

    schema_version: Literal[1] = 1
    message_id: str
    visitor_id: str
    kind: MessageKind
    channel: Literal["onsite", "ads", "email", "crm"]
    rule: str
    """Id of the trigger rule that decided to send it."""
    segment: str | None = None
    event_time: datetime
    expires_at: datetime | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
