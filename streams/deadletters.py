"""Dead letters on the dead-letter topic: one encoding for every path that rejects an event.

Every rejected event becomes a `schemas.deadletter.DeadLetter` built by
`streams.core.ingest.dead_letter`: in the core for a record of the events topic
(`streams.core.batch`), in the collector for an item of an HTTP body
(`streams.collector.dead_letter_of`). This module turns it into the Kafka record both paths send:
keyed by the visitor id where one could be read (so a visitor's dead letters share a partition
with its events), the envelope as JSON.
"""

from __future__ import annotations

import orjson

from schemas.deadletter import DeadLetter


def dead_letter_record(letter: DeadLetter) -> tuple[bytes | None, bytes]:
    """The (key, value) of `letter` on the dead-letter topic."""
    key = letter.key.encode() if letter.key is not None else None
    return key, orjson.dumps(letter.model_dump(mode="json"))
