"""Definitions versions as published on the compacted definitions topic (`tessera.definitions`).

The topic has one partition. Its keys:

- ``version:<version>`` → the `DefinitionsRecord` of that version as first applied (the history: one
  record per version, never overwritten with other content);
- ``rollback:<n>`` → the record a rollback made current (n = 1, 2, … in the order of the rollbacks);
- ``head`` → the record that is current: what every worker runs.

Compaction keeps the latest record of each key, so the topic holds every version, every rollback
and the current head.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

HEAD_KEY = "head"
VERSION_KEY_PREFIX = "version:"
ROLLBACK_KEY_PREFIX = "rollback:"


def text_sha256(text: str) -> str:
    """The hex SHA-256 of a definitions text as UTF-8 (`DefinitionsRecord.sha256`)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DefinitionsRecord(BaseModel):
    """Version 1. One definitions version as applied, or as made current again by a rollback."""

    schema_version: Literal[1] = 1
    version: str
    """The file's own ``version:``, stamped as `definition_version` on every segment change."""
    text: str
    """The YAML exactly as written."""
    sha256: str
    """Hex SHA-256 of `text` as UTF-8."""
    applied_at: datetime
    """When this record was published (for a rollback: when the rollback was made)."""
    applied_by: str = ""
    """Who published it (free text: a user, "cli", "http")."""
    comment: str = ""
    action: Literal["apply", "rollback"] = "apply"
    rolled_back_to: str | None = None
    """For a rollback, the version it made current again (equal to `version`); None for an apply."""
    previous: str | None = None
    """The version that was current before this record (None for the first)."""
