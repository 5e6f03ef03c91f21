"""Dead letters: the original bytes of a rejected record and a typed reason.

On `events.dlq` for events the collector or the worker rejects; on `messages.dlq` for messages the
delivery runner (`tessera deliver`) could not deliver (`source` "delivery")."""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class DeadLetterReason(StrEnum):
    not_json = "not_json"
    schema_violation = "schema_violation"
    unknown_type = "unknown_type"
    future_timestamp = "future_timestamp"
    too_large = "too_large"
    key_mismatch = "key_mismatch"
    processing_error = "processing_error"
    delivery_failed = "delivery_failed"
    """A message's channel refused it or kept failing until the attempts ran out."""
    undeliverable = "undeliverable"
    """A message no adapter can take: no route for its channel, no webhook target, no recipient."""


DELIVERY_REASONS = frozenset({DeadLetterReason.delivery_failed, DeadLetterReason.undeliverable})
"""The reasons only the delivery runner gives (on `messages.dlq`); every other one is an event's."""


class DeadLetter(BaseModel):
    """Version 1. `original_b64` holds the rejected bytes exactly as they arrived.

    The delivery reasons (`delivery_failed`, `undeliverable`), the source `delivery` and `attempts`
    were added in place to version 1: readers of `events.dlq` never see them."""

    schema_version: Literal[1] = 1
    reason: DeadLetterReason
    detail: str = Field(max_length=4000)
    source: Literal["collector", "ingest", "delivery"] = "ingest"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    received_at: datetime
    original_b64: str
    attempts: int | None = None
    """Delivery attempts made before the message was dead-lettered (delivery only)."""

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    @staticmethod
    def encode_original(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")
