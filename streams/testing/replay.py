"""Profiles as the pure core builds them from a stream: the expected state tests compare against.

    from streams.testing import replay_events, replay_records

    profiles = replay_events(sim.events, defs, wall_now=end.timestamp())   # event dicts
    expected = replay_records(kafka_records, defs, wall_now=time.time())   # partition/offset/key/value

Records are folded by `streams.core.batch.process_batch` in the order given, BATCH_SIZE at a time,
each batch reading the profiles the earlier ones stored (serialised, as the changelog holds them);
how records are batched does not change what the core decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from streams.core.batch import IngestLimits, Record, SourceRecord, process_batch
from streams.core.definitions import Definitions
from streams.core.enrich import Enricher, default_enricher
from streams.core.profile import Profile

BATCH_SIZE = 5000
"""Records per `process_batch` call (the worker's default `batch_max_records`)."""


def replay_batches(
    batches: Iterable[Sequence[Record]],
    defs: Definitions,
    *,
    wall_now: float,
    enricher: Enricher | None = None,
) -> Iterator[dict[str, Profile]]:
    """Fold each of `batches` with one `process_batch` call, each reading the profiles the earlier
    ones stored (serialised, as the changelog holds them); yields after each batch the profiles it
    touched. No timers; `wall_now` is the wall clock; `enricher` defaults to the production one."""
    store: dict[str, bytes] = {}
    enricher = enricher or default_enricher(None)
    for batch in batches:
        result = process_batch(
            batch,
            lambda visitor_id, _partition: store.get(visitor_id),
            {},
            {},
            defs=defs,
            enricher=enricher,
            limits=IngestLimits(),
            wall_now=wall_now,
            topic="replay",
        )
        touched: dict[str, Profile] = {}
        for visitor_id, effect in result.visitors.items():
            store[visitor_id] = effect.profile.to_bytes()
            touched[visitor_id] = Profile.from_bytes(store[visitor_id])
        yield touched


def replay_records(
    records: Sequence[Record], defs: Definitions, *, wall_now: float, enricher: Enricher | None = None
) -> dict[str, Profile]:
    """Every visitor's profile once `records` (each visitor's in offset order) are folded under
    `defs` by the pure core, `BATCH_SIZE` at a time (`replay_batches`)."""
    profiles: dict[str, Profile] = {}
    chunks = (records[start : start + BATCH_SIZE] for start in range(0, len(records), BATCH_SIZE))
    for touched in replay_batches(chunks, defs, wall_now=wall_now, enricher=enricher):
        profiles.update(touched)
    return profiles


def event_records(events: Iterable[Mapping[str, Any]], start: int = 0) -> list[SourceRecord]:
    """JSON-ready event dicts as records of partition 0 from offset `start`, keyed by visitor."""
    return [
        SourceRecord(0, offset, str(event["visitor_id"]).encode(), orjson.dumps(event))
        for offset, event in enumerate(events, start)
    ]


def replay_events(
    events: Iterable[Mapping[str, Any]],
    defs: Definitions,
    *,
    wall_now: float,
    enricher: Enricher | None = None,
) -> dict[str, Profile]:
    """`replay_records` of `events` (JSON-ready dicts) as one partition's records, keyed by visitor,
    in the order given."""
    return replay_records(event_records(events), defs, wall_now=wall_now, enricher=enricher)


__all__ = ["BATCH_SIZE", "replay_events", "replay_records"]
