"""The answers of the collector's HTTP routes (version 1).

- `CollectorAnswer`: a request that passed the door (write key, origin, size): how many events were
  accepted and, per refused event, its index in the body, typed reason and detail. 200 when any
  event was accepted (or the body held none), 400 when every event was refused.
- `CollectorError`: a request refused whole (401, 403, 413, 400 for an unreadable body): nothing
  was accepted and nothing was written to any topic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.deadletter import DeadLetterReason


class CollectorRejection(BaseModel):
    """One event the collector refused, by its position in the request body."""

    index: int = Field(ge=0)
    reason: DeadLetterReason
    detail: str | None = None


class CollectorAnswer(BaseModel):
    """Version 1: the answer of the collector routes (`/v1/batch`, `/v1/track`, …, `/v1/events`)
    when the request passed the door (write key, origin, size): per-event acceptance."""

    accepted: int = Field(ge=0)
    rejected: list[CollectorRejection] = Field(default_factory=list)


class CollectorError(BaseModel):
    """Version 1: the answer of a request refused whole: nothing was accepted."""

    error: Literal[
        "missing_write_key",
        "unknown_write_key",
        "origin_not_allowed",
        "batch_too_large",
        "event_too_large",
        "body_unreadable",
    ]
    detail: str
    accepted: Literal[0] = 0
