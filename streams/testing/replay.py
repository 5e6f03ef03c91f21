"""Profiles as the pure core builds them from a stream: the expected state tests compare against.

    from streams.testing import replay_events, replay_records

    profiles = replay_events(sim.events, defs, wall_now=end.timestamp())   # event dicts
    expected = replay_records(kafka_records, defs, wall_now=time.time())   # partition/offset/key/value

Records are folded by `streams.core.batch.process_batch` in the order given, BATCH_SIZE at a time,
each batch reading the profiles the earlier ones stored (serialised, as the changelog holds them);
how records are batched does not change what the core decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from streams.core.batch import IngestLimits, Record, SourceRecord, process_batch
from streams.core.definitions import Definitions
from streams.core.enrich import default_enricher
from streams.core.profile import Profile

BATCH_SIZE = 5000
"""Records per `process_batch` call (the worker's default `batch_max_records`)."""


def replay_records(records: Sequence[Record], defs: Definitions, *, wall_now: float) -> dict[str, Profile]:
    """Every visitor's profile once `records` (each visitor's in offset order) are folded under
    `defs` by the pure core, with no timers and `wall_now` as the wall clock."""
    store: dict[str, bytes] = {}
    enricher = default_enricher(None)
    for start in range(0, len(records), BATCH_SIZE):
        result = process_batch(
            records[start : start + BATCH_SIZE],
            lambda visitor_id, _partition: store.get(visitor_id),
            {},
            {},
            defs=defs,
            enricher=enricher,
            limits=IngestLimits(),
            wall_now=wall_now,
            topic="replay",
        )
        for visitor_id, effect in result.visitors.items():
            store[visitor_id] = effect.profile.to_bytes()
    return {visitor_id: Profile.from_bytes(raw) for visitor_id, raw in store.items()}


def replay_events(
    events: Iterable[Mapping[str, Any]], defs: Definitions, *, wall_now: float
) -> dict[str, Profile]:
    """`replay_records` of `events` (JSON-ready dicts) as one partition's records, keyed by visitor,
    in the order given."""
    records = [
        SourceRecord(0, offset, event["visitor_id"].encode(), orjson.dumps(event))
        for offset, event in enumerate(events)
    ]
    return replay_records(records, defs, wall_now=wall_now)


__all__ = ["BATCH_SIZE", "replay_events", "replay_records"]
