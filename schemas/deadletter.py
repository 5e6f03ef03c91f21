"""Dead letters on `events.dlq`: the original bytes of a rejected event and a typed reason."""

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


class DeadLetter(BaseModel):
    """Version 1. `original_b64` holds the rejected bytes exactly as they arrived."""

    schema_version: Literal[1] = 1
    reason: DeadLetterReason
    detail: str = Field(max_length=4000)
    source: Literal["collector", "ingest"] = "ingest"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    received_at: datetime
    original_b64: str

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    @staticmethod
    def encode_original(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")
