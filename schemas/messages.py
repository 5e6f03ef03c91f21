"""Trigger and journey output on the `messages` topic: what to show or send to one visitor, and the
conversions attributed to messages.

Version 2 added the campaign experiment fields (`campaign`, `variant`, `holdout`), the journey
fields (`journey`, `step`) and `cost`; version-1 messages (without them) still validate.

A message with ``holdout: true`` records that a visitor of a campaign's holdout group WOULD have
got this message: no channel delivers it (the on-site inbox and every delivery adapter skip it),
it exists so conversions of the holdout group can be counted against the messaged group (uplift).
"""

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
    """Version 2. `message_id` is deterministic so redelivery can be dropped downstream."""

    schema_version: Literal[1, 2] = 2
    message_id: str
    visitor_id: str
    kind: MessageKind
    channel: Literal["onsite", "ads", "email", "crm"]
    rule: str
    """Id of the trigger rule that decided to send it (for a journey: ``<journey>.<step>``)."""
    segment: str | None = None
    event_time: datetime
    expires_at: datetime | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    campaign: str | None = None
    """The campaign whose guard rails and experiment applied (None: none named)."""
    variant: str | None = None
    """The A/B variant the visitor is assigned to (deterministic per visitor and campaign)."""
    holdout: bool = False
    """The visitor is in the campaign's holdout group: recorded, never delivered."""
    journey: str | None = None
    step: str | None = None
    cost: float = 0.0
    """What sending it costs the campaign's budget (0 for a holdout record)."""

    @property
    def deliverable(self) -> bool:
        """Whether a channel may deliver it (a holdout record is never delivered)."""
        return not self.holdout


class Conversion(BaseModel):
    """Version 1: a purchase attributed to the latest message the visitor got (or, in a holdout
    group, would have got) within the attribution window (`BatchResult.conversions`)."""

    schema_version: Literal[1] = 1
    message_id: str
    visitor_id: str
    campaign: str | None = None
    variant: str | None = None
    holdout: bool = False
    journey: str | None = None
    step: str | None = None
    rule: str
    message_time: datetime
    event_time: datetime
    """When the purchase happened."""
    order_id: str
    value: float
    currency: str = "EUR"
