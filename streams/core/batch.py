"""One batch of source records → every effect it has, as values (the pure heart of the worker).

`process_batch` takes the records a poll returned (any partitions), the current profiles of the
visitors they touch, and the visitors whose timers are due, and returns what must be written:
dead letters, enriched rows for analytics, segment changes, messages and the new profiles. It
reads and writes nothing itself; `streams.engine` does the I/O in commit-protocol order.

Per visitor and batch: events are folded one by one (`apply`), then segments are evaluated ONCE
against the folded profile and diffed with the membership stored in the profile. This is what makes
per-batch work cheap (one evaluation and one state write per touched visitor per batch); the cost
is that a visitor who enters and leaves a segment within one batch (a few milliseconds of traffic)
produces no change for it.

Duplicate handling, both exact:
- client retries: an event id already in the visitor's `recent_event_ids` is dropped;
- redelivery after a crash: a record whose offset is ≤ the profile's `last_offset` was already
  folded into the state the changelog restored, so it is skipped (a visitor's events all live in
  one partition, in offset order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from schemas.changes import SegmentChange, Transition
from schemas.deadletter import DeadLetter
from schemas.enriched import EnrichedEvent
from schemas.events import Event
from schemas.messages import Message
from streams.core.enrich import Enricher
from streams.core.ingest import Rejected, dead_letter, decode_timed
from streams.core.profile import Profile, apply, event_id_hash, new_profile
from streams.core.segments import Definitions, diff, evaluate, next_check_at
from streams.core.triggers import decide


class Record(Protocol):
    """What `process_batch` reads of a source record: aiokafka's `ConsumerRecord` has it, so the
    engine hands polled records over as they are (no copy per event)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A `Record` built by hand (tests, the bench, replays)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_event_bytes: int = 32_768
    max_future_skew_s: float = 300.0
    dedupe_window: int = 32


@dataclass(slots=True)
class VisitorEffect:
    """What one touched visitor needs written: the new profile and what changed."""

    profile: Profile
    partition: int
    entered: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


@dataclass(slots=True)
class BatchResult:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    analytics_rows: list[tuple[EnrichedEvent, tuple[str, ...]]] = field(default_factory=list)
    changes: list[SegmentChange] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    visitors: dict[str, VisitorEffect] = field(default_factory=dict)
    events_applied: int = 0
    duplicates: int = 0
    replayed: int = 0
    no_consent: int = 0
    timer_evaluations: int = 0
    clocks: dict[int, float] = field(default_factory=dict)


def change_id(visitor_id: str, segment: str, transition: str, at: float, version: str) -> str:
    raw = f"{visitor_id}\x1f{segment}\x1f{transition}\x1f{at:.3f}\x1f{version}".encode()
    return hashlib.sha1(raw).hexdigest()[:24]


def _ts(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def process_batch(
    records: Iterable[Record],
    profiles: Callable[[str, int], bytes | Profile | None],
    due_visitors: Mapping[str, tuple[int, float]],
    clocks: Mapping[int, float],
    *,
    defs: Definitions,
    enricher: Enricher,
    limits: IngestLimits,
    wall_now: float,
    topic: str,
    load: Callable[[bytes], Profile] = Profile.from_bytes,
) -> BatchResult:
    """Fold `records` into profiles, fire `due_visitors`' timers, return every effect.

    `profiles(visitor_id, partition)` returns the stored profile, serialised or as a `Profile` the
    caller hands over for mutation (None ⇒ new visitor);
    `due_visitors` maps visitor id → (partition, due time) for timers that are due; `clocks` is
    each partition's event-time clock before this batch (see `streams.engine`), advanced here to
    the newest event time in the batch (never past `wall_now`) and returned in `BatchResult.clocks`.

    Event time throughout: a visitor touched by events is evaluated as of its newest event in the
    batch; a visitor woken by its timer is evaluated as of the due time. So a replay of old
    traffic decides exactly what live traffic would have decided, and a cart abandoned at 10:00
    enters `cart_abandoners` at 10:30 by timer, however the records were batched.
    """
    result = BatchResult()
    received_at = _ts(wall_now)
    working: dict[str, VisitorEffect] = {}
    seen_types: dict[str, set[str]] = {}
    last_event_at: dict[str, float] = {}
    last_event_id: dict[str, str] = {}
    rows_by_visitor: dict[str, list[EnrichedEvent]] = {}

    def effect_for(visitor_id: str, partition: int) -> VisitorEffect:
        current = working.get(visitor_id)
        if current is None:
            stored = profiles(visitor_id, partition)
            if stored is None:
                profile = new_profile(visitor_id)
            elif isinstance(stored, Profile):
                profile = stored
            else:
                profile = load(stored)
            current = VisitorEffect(profile=profile, partition=partition)
            working[visitor_id] = current
        return current

    new_clocks = dict(clocks)
    accepted: list[tuple[Record, Event, float]] = []
    for record in records:
        decoded = decode_timed(
            record.value, record.key, wall_now, limits.max_event_bytes, limits.max_future_skew_s
        )
        if isinstance(decoded, Rejected):
            result.dead_letters.append(
                dead_letter(
                    record.value or b"",
                    decoded,
                    source="ingest",
                    topic=topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key.decode("utf-8", "replace") if record.key is not None else None,
                    received_at=received_at,
                )
            )
            continue
        accepted.append((record, *decoded))
        at = min(decoded[1], wall_now)
        if at > new_clocks.get(record.partition, 0.0):
            new_clocks[record.partition] = at
    result.clocks = new_clocks

    for record, event, event_at in accepted:
        enriched = enricher.enrich(event, received_at, record.partition, record.offset)
        if not event.context.consent.personalization:
            # No profile without consent; analytics still counts the event if allowed.
            result.no_consent += 1
            if event.context.consent.analytics:
                result.analytics_rows.append((enriched, ()))
            continue
        effect = effect_for(event.visitor_id, record.partition)
        profile = effect.profile
        if record.offset <= profile.last_offset and record.partition == effect.partition:
            result.replayed += 1
            continue
        id_hash = event_id_hash(event.event_id)
        if id_hash in profile.recent_event_ids:
            result.duplicates += 1
            profile.last_offset = max(profile.last_offset, record.offset)
            continue
        apply(profile, enriched, event_at)
        profile.last_offset = max(profile.last_offset, record.offset)
        profile.recent_event_ids.append(id_hash)
        if len(profile.recent_event_ids) > limits.dedupe_window:
            del profile.recent_event_ids[: len(profile.recent_event_ids) - limits.dedupe_window]
        result.events_applied += 1
        seen_types.setdefault(event.visitor_id, set()).add(event.type.value)
        last_event_at[event.visitor_id] = max(last_event_at.get(event.visitor_id, event_at), event_at)
        last_event_id[event.visitor_id] = event.event_id
        if event.context.consent.analytics:
            rows_by_visitor.setdefault(event.visitor_id, []).append(enriched)

    for visitor_id, (partition, _) in due_visitors.items():
        if visitor_id in last_event_at:
            continue  # its events in this batch supersede the timer; a new one is set below
        if visitor_id not in working and profiles(visitor_id, partition) is None:
            continue
        effect_for(visitor_id, partition)
        result.timer_evaluations += 1

    for visitor_id, effect in working.items():
        profile = effect.profile
        by_event = visitor_id in last_event_at
        if by_event:
            now = min(last_event_at[visitor_id], wall_now)
        elif visitor_id in due_visitors:
            now = due_visitors[visitor_id][1]
        else:
            continue  # only replayed or duplicate records: nothing changed
        evaluation = evaluate(profile, defs, now, explain=False)
        entered, exited = diff(profile.segments, evaluation.members)
        # The values behind a transition, computed only for the segments that changed.
        deciding = evaluation.explain(defs, entered + exited) if entered or exited else {}
        at = now
        for segment, transition in [(s, Transition.entered) for s in entered] + [
            (s, Transition.exited) for s in exited
        ]:
            result.changes.append(
                SegmentChange(
                    change_id=change_id(visitor_id, segment, transition.value, at, defs.version),
                    visitor_id=visitor_id,
                    segment=segment,
                    transition=transition,
                    event_time=_ts(at),
                    processed_at=received_at,
                    definition_version=defs.version,
                    reason="event" if by_event else "timer",
                    trigger_event_id=last_event_id.get(visitor_id),
                    attributes=_jsonable(deciding.get(segment, {})),
                )
            )
            if transition is Transition.entered:
                profile.segment_since[segment] = at
            else:
                profile.segment_since.pop(segment, None)
        profile.segments = sorted(evaluation.members)
        context: dict[str, Any] = {**evaluation.context, "segments": profile.segments}
        messages = decide(
            profile,
            entered,
            exited,
            frozenset(seen_types.get(visitor_id, ())),
            defs,
            now,
            context,
        )
        profile.next_check_at = next_check_at(profile, defs, now)
        effect.entered, effect.exited, effect.messages = entered, exited, messages
        result.messages.extend(messages)
        members = tuple(profile.segments)
        for row in rows_by_visitor.get(visitor_id, ()):
            result.analytics_rows.append((row, members))
        if by_event or entered or exited or messages or visitor_id in due_visitors:
            result.visitors[visitor_id] = effect
    return result


def _jsonable(values: Mapping[str, Any]) -> dict[str, str | int | float | bool | None]:
    out: dict[str, str | int | float | bool | None] = {}
    for name, value in values.items():
        if value is None or isinstance(value, str | int | float | bool):
            out[name] = value
        else:
            out[name] = str(value)
    return out
