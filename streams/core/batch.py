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

A bad event does not stop its batch. A record that is not a valid event is dead-lettered with the
reason `streams.core.ingest` gives it; a valid event whose enrichment or `apply` raises is
dead-lettered as `processing_error` (the exception's type and message), and the rest of the batch
goes on. That visitor's profile stays as it was before the event: enrichment runs before anything
is changed, and after a failed `apply` the profile is rebuilt (`_Batch.restore`, a rare slow path)
from its state before the batch, which `profiles` still returns, and the visitor's earlier events
of the batch. One case cannot be rebuilt: `profiles` handed over its own `Profile` object, which
the batch has changed in place (copying every such profile up front would cost every batch). Then
the batch fails with `UnprocessableRecord`; the engine restarts from its committed state and
passes the record in `unprocessable`, so the replay dead-letters it before folding anything of it.
A valid event pays nothing for this: a `try` block costs nothing in Python 3.11 until it raises,
and the `unprocessable` check is one test of an empty mapping.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from schemas.changes import ChangeReason, SegmentChange, Transition
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.enriched import EnrichedEvent
from schemas.events import Event, EventType
from schemas.messages import Conversion, Message
from streams.core.definitions import Definitions
from streams.core.dependencies import Changes
from streams.core.enrich import Enricher
from streams.core.guardrails import BudgetLedger
from streams.core.ingest import Rejected, dead_letter, decode_timed, processing_error
from streams.core.journeys import JourneyEvent, Messenger, advance, may_advance, next_due
from streams.core.profile import Profile, apply, event_id_hash, new_profile
from streams.core.segments import Evaluation, diff, evaluate, new_visitor_start, timer_check
from streams.core.sketch import CohortMove
from streams.core.timeline import CODES
from streams.core.triggers import TriggerEnv, decide


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
    exclude_bots: bool = True
    """Bot events (device category "bot") build no profile and join no segment (`BatchResult.bots`)."""


@dataclass(slots=True)
class VisitorEffect:
    """What one touched visitor needs written: the new profile and what changed."""

    profile: Profile
    partition: int
    entered: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    before: tuple[Any, ...] = ()
    """The profile fields state facts read, as loaded (`DependencyIndex.snapshot`)."""
    from_day: int = 0
    """The profile's `timeline_from_day` as loaded: when its events trim the timeline, windows
    reaching past the trimmed days change too, and every segment is evaluated."""
    events_before: float = 0
    """The profile's `totals["events"]` as loaded: its timer moments kept from before are reused
    for the sources this batch's events do not count in (`streams.core.segments.timer_check`)."""
    new: bool = False
    """No profile was stored: its changes count from the empty profile
    (`streams.core.segments.NewVisitorStart`)."""


CohortDeltas = dict[int, dict[str, list[CohortMove]]]
"""Partition → cohort name → the moves of recorded cohort values (`BatchResult.cohort_deltas`)."""


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
    bots: int = 0
    """Bot events kept out of profiles (`IngestLimits.exclude_bots`); their analytics rows stay."""
    timer_evaluations: int = 0
    clocks: dict[int, float] = field(default_factory=dict)
    cohort_deltas: CohortDeltas = field(default_factory=dict)
    """Partition → cohort → the moves of its profiles' recorded values (`Profile.cohort_values`):
    (visitor id, old value, new value), None for none. The partition's sketches apply them
    (`streams.core.sketch.PartitionCohorts.apply`)."""
    conversions: list[Conversion] = field(default_factory=list)
    """Purchases attributed to a message (last touch within ``guardrails: attribution_window``,
    `streams.core.journeys`), held-out records included: the rows uplift is computed from. Ids
    are deterministic (message id + order id), so a replayed batch yields the same rows; a writer
    (ClickHouse, a topic) stores them idempotently by (message_id, order_id)."""
    suppressed: dict[str, int] = field(default_factory=dict)
    """Messages a guard rail refused, by reason (``schedule``, ``quiet_hours``, ``channel_cap``,
    ``campaign_cap``, ``budget``, ``audience``, ``consent``)."""


class UnprocessableRecord(Exception):
    """A valid event's fold raised after its visitor's profile, handed over as a live object, was
    changed in place: the batch cannot go on. The caller restarts from its committed state and
    passes `(partition, offset) → detail` in `process_batch(unprocessable=...)`, so the replay
    dead-letters this record as `processing_error` before folding anything of it."""

    def __init__(self, partition: int, offset: int, visitor_id: str, detail: str) -> None:
        super().__init__(f"record {partition}:{offset} of visitor {visitor_id!r} cannot be folded: {detail}")
        self.partition, self.offset, self.visitor_id, self.detail = partition, offset, visitor_id, detail


def change_id(visitor_id: str, segment: str, transition: str, at: float, version: str) -> str:
    raw = f"{visitor_id}\x1f{segment}\x1f{transition}\x1f{at:.3f}\x1f{version}".encode()
    return hashlib.sha1(raw).hexdigest()[:24]


def _ts(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


_APPLIED, _REPLAYED, _DUPLICATE = 0, 1, 2
"""What `_fold` did with an event."""


def _fold(
    profile: Profile,
    partition: int,
    record: Record,
    event: Event,
    enriched: EnrichedEvent,
    at: float,
    dedupe_window: int,
) -> int:
    """Fold one event into `profile` (held for `partition`) unless the profile already holds its
    offset (a replay) or its id (a client retry); says which of the three happened."""
    if record.offset <= profile.last_offset and record.partition == partition:
        return _REPLAYED
    id_hash = event_id_hash(event.event_id)
    recent = profile.recent_event_ids
    if id_hash in recent:
        profile.last_offset = max(profile.last_offset, record.offset)
        return _DUPLICATE
    apply(profile, enriched, at)
    profile.last_offset = max(profile.last_offset, record.offset)
    recent.append(id_hash)
    if len(recent) > dedupe_window:
        del recent[: len(recent) - dedupe_window]
    return _APPLIED


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
    unprocessable: Mapping[tuple[int, int], str] | None = None,
    cohorts: Mapping[str, float] | None = None,
    budget: BudgetLedger | None = None,
) -> BatchResult:
    """Fold `records` into profiles, fire `due_visitors`' timers, return every effect.

    After segments, each evaluated visitor's trigger rules and journeys decide its messages, each
    screened by the guard rails (`streams.core.guardrails`); `budget` is the worker's spend
    ledger that campaign budgets read and add to (None: budgets are not enforced).

    `unprocessable` maps (partition, offset) → detail of records whose fold raised in an earlier
    attempt (`UnprocessableRecord`): they are dead-lettered as `processing_error` without folding.
    `cohorts` maps a cohort name to its threshold (`streams.cohorts`); conditions read a cohort
    missing from it as +infinity. Every evaluated visitor's cohort values are recorded in its
    profile and their moves returned in `BatchResult.cohort_deltas`.

    `profiles(visitor_id, partition)` returns the stored profile, serialised or as a `Profile` the
    caller hands over for mutation (None ⇒ new visitor); the caller stores the returned profiles
    only after the batch, so `profiles` answers the same throughout it;
    `due_visitors` maps visitor id → (partition, due time) for timers that are due; `clocks` is
    each partition's event-time clock before this batch (see `streams.engine`), advanced here to
    the newest event time in the batch (never past `wall_now`) and returned in `BatchResult.clocks`.

    Event time throughout: a visitor touched by events is evaluated as of its newest event in the
    batch; a visitor woken by its timer is evaluated as of the due time. So a replay of old
    traffic decides exactly what live traffic would have decided, and a cart abandoned at 10:00
    enters `cart_abandoners` at 10:30 by timer, however the records were batched. A visitor is
    never evaluated as of a moment before its profile's `evaluated_at`: an event stamped before
    it arrived late, and the visitor is evaluated again as of `evaluated_at` with the event
    folded in; what changes carries reason `correction` (a purchase stamped 10:29:59 arriving
    after the 10:30 timer takes the visitor out of `cart_abandoners` again). The membership then
    is what the same events in event-time order give as of that moment, as far as their fold does
    not depend on the order they arrived in.
    """
    batch = _Batch(profiles, load, defs, enricher, limits, wall_now, topic, unprocessable or {}, cohorts)
    batch.budget = budget
    batch.decode(records, clocks)
    batch.fold_events()
    batch.wake_due(due_visitors)
    batch.evaluate(due_visitors)
    return batch.result


class _Batch:
    """The working state of one `process_batch` call, shared by its phases in this order:
    `decode` → `fold_events` → `wake_due` → `evaluate`."""

    __slots__ = (
        "accepted",
        "budget",
        "defs",
        "enricher",
        "failed",
        "journey_events",
        "known",
        "last_event_at",
        "last_event_id",
        "late",
        "limits",
        "load",
        "profiles",
        "received_at",
        "result",
        "rows_by_visitor",
        "seen_types",
        "topic",
        "unprocessable",
        "wall_now",
        "working",
    )

    def __init__(
        self,
        profiles: Callable[[str, int], bytes | Profile | None],
        load: Callable[[bytes], Profile],
        defs: Definitions,
        enricher: Enricher,
        limits: IngestLimits,
        wall_now: float,
        topic: str,
        unprocessable: Mapping[tuple[int, int], str],
        cohorts: Mapping[str, float] | None = None,
    ) -> None:
        self.profiles = profiles
        self.known = defs.cohort_thresholds(cohorts)
        """What conditions read for the cohorts (None without cohorts)."""
        self.unprocessable = unprocessable
        self.load = load
        self.defs = defs
        self.enricher = enricher
        self.limits = limits
        self.wall_now = wall_now
        self.topic = topic
        self.received_at = _ts(wall_now)
        self.result = BatchResult()
        self.accepted: list[tuple[Record, Event, float]] = []
        """The valid records with their events and event times (epoch seconds), in order."""
        self.failed: set[tuple[int, int]] = set()
        """(partition, offset) of the valid records dead-lettered as `processing_error`."""
        self.working: dict[str, VisitorEffect] = {}
        """Every visitor whose profile the batch has loaded."""
        # What each visitor's applied events of the batch were: their types, the newest event
        # time, the last event id, and the analytics rows that wait for the new segment set.
        self.seen_types: dict[str, set[str]] = {}
        self.last_event_at: dict[str, float] = {}
        self.last_event_id: dict[str, str] = {}
        self.rows_by_visitor: dict[str, list[EnrichedEvent]] = {}
        self.late: set[str] = set()
        """Visitors with an applied event stamped before their profile's `evaluated_at` (late)."""
        self.journey_events: dict[str, list[JourneyEvent]] = {}
        """Each visitor's applied purchases and custom events (outcomes): what journeys and
        attribution read."""
        self.budget: BudgetLedger | None = None

    def effect_for(self, visitor_id: str, partition: int) -> VisitorEffect:
        current = self.working.get(visitor_id)
        if current is None:
            stored = self.profiles(visitor_id, partition)
            if stored is None:
                profile = new_profile(visitor_id)
            elif isinstance(stored, Profile):
                profile = stored
            else:
                profile = self.load(stored)
            current = VisitorEffect(
                profile,
                partition,
                from_day=profile.timeline_from_day,
                events_before=profile.totals.get("events", 0),
                new=stored is None,
            )
            index = self.defs.dependencies
            if index is not None and index.fields and profile.definitions_sha == self.defs.source_sha:
                # Only a profile evaluated under these definitions has segments its events cannot
                # affect; a new visitor's changes count from the empty profile (`NewVisitorStart`), and
                # any other profile has every segment evaluated.
                current.before = index.snapshot(profile)
            self.working[visitor_id] = current
        return current

    def reject(self, record: Record, rejected: Rejected) -> None:
        self.result.dead_letters.append(
            dead_letter(
                record.value,
                rejected,
                source="ingest",
                topic=self.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                received_at=self.received_at,
            )
        )

    def decode(self, records: Iterable[Record], clocks: Mapping[int, float]) -> None:
        """Valid records to `accepted`, the others to the dead letters; the partitions' clocks."""
        limits, wall_now, accepted = self.limits, self.wall_now, self.accepted
        new_clocks = dict(clocks)
        for record in records:
            decoded = decode_timed(
                record.value, record.key, wall_now, limits.max_event_bytes, limits.max_future_skew_s
            )
            if isinstance(decoded, Rejected):
                self.reject(record, decoded)
                continue
            accepted.append((record, *decoded))
            at = min(decoded[1], wall_now)
            if at > new_clocks.get(record.partition, 0.0):
                new_clocks[record.partition] = at
        self.result.clocks = new_clocks

    def fold_events(self) -> None:
        """Enrich every accepted event and fold it into its visitor's profile (`_fold`)."""
        result, enricher, received_at = self.result, self.enricher, self.received_at
        dedupe_window = self.limits.dedupe_window
        seen_types, last_event_at = self.seen_types, self.last_event_at
        last_event_id, rows_by_visitor = self.last_event_id, self.rows_by_visitor
        unprocessable, exclude_bots, late = self.unprocessable, self.limits.exclude_bots, self.late
        for record, event, event_at in self.accepted:
            if unprocessable and (record.partition, record.offset) in unprocessable:
                detail = unprocessable[(record.partition, record.offset)]
                self.reject(record, Rejected(DeadLetterReason.processing_error, detail))
                self.failed.add((record.partition, record.offset))
                continue
            try:
                enriched = enricher.enrich(event, received_at, record.partition, record.offset)
            except Exception as exc:  # nothing is changed yet
                self.reject_unprocessable(record, exc)
                continue
            bot = exclude_bots and enriched.device.category == "bot"
            if bot or not event.context.consent.personalization:
                # No profile without consent, none for a bot; analytics still counts the event if
                # allowed (a bot's row says so in its device category).
                if bot:
                    result.bots += 1
                else:
                    result.no_consent += 1
                if event.context.consent.analytics:
                    result.analytics_rows.append((enriched, ()))
                continue
            effect = self.effect_for(event.visitor_id, record.partition)
            try:
                folded = _fold(
                    effect.profile, effect.partition, record, event, enriched, event_at, dedupe_window
                )
            except Exception as exc:
                self.restore(effect, event.visitor_id, record, exc)
                self.reject_unprocessable(record, exc)
                continue
            if folded == _REPLAYED:
                result.replayed += 1
                continue
            if folded == _DUPLICATE:
                result.duplicates += 1
                continue
            result.events_applied += 1
            if event_at < effect.profile.evaluated_at:  # the batch's evaluation comes after the folds
                late.add(event.visitor_id)
            seen_types.setdefault(event.visitor_id, set()).add(event.type.value)
            if event.type is EventType.purchase or event.type is EventType.custom:
                self.journey_events.setdefault(event.visitor_id, []).append(_journey_event(event, event_at))
            last_event_at[event.visitor_id] = max(last_event_at.get(event.visitor_id, event_at), event_at)
            last_event_id[event.visitor_id] = event.event_id
            if event.context.consent.analytics:
                rows_by_visitor.setdefault(event.visitor_id, []).append(enriched)

    def reject_unprocessable(self, record: Record, exc: Exception) -> None:
        self.reject(record, processing_error(exc))
        self.failed.add((record.partition, record.offset))

    def restore(self, effect: VisitorEffect, visitor_id: str, failing: Record, exc: Exception) -> None:
        """Put back the visitor's profile as it was before `failing`, whose fold raised `exc`;
        re-raise `exc` when that state is gone (see the module docstring). A rare slow path.

        Its state before the batch is what `profiles` returns (the caller stores a batch's profiles
        only after the batch); its events of the batch before `failing` are folded again, except
        those already dead-lettered. Folding is deterministic: they give what they gave before.
        """
        stored = self.profiles(visitor_id, effect.partition)
        if stored is effect.profile:  # the caller's own object, changed in place by this batch
            raise UnprocessableRecord(
                failing.partition, failing.offset, visitor_id, processing_error(exc).detail
            ) from exc
        if stored is None:
            profile = new_profile(visitor_id)
        else:
            profile = stored if isinstance(stored, Profile) else self.load(stored)
        for record, event, at in self.accepted:
            if record is failing:
                break
            if (
                event.visitor_id == visitor_id
                and event.context.consent.personalization
                and (record.partition, record.offset) not in self.failed
            ):
                enriched = self.enricher.enrich(event, self.received_at, record.partition, record.offset)
                _fold(profile, effect.partition, record, event, enriched, at, self.limits.dedupe_window)
        effect.profile = profile

    def wake_due(self, due_visitors: Mapping[str, tuple[int, float]]) -> None:
        """Load the profiles of the visitors whose timers are due and who had no event here."""
        for visitor_id, (partition, _) in due_visitors.items():
            if visitor_id in self.last_event_at:
                continue  # its events in this batch supersede the timer; a new one is set below
            if visitor_id not in self.working and self.profiles(visitor_id, partition) is None:
                continue
            self.effect_for(visitor_id, partition)
            self.result.timer_evaluations += 1

    def evaluate(self, due_visitors: Mapping[str, tuple[int, float]]) -> None:
        """Evaluate every visitor with an applied event (as of its newest) or a due timer (as of
        the due time), never as of a moment before its latest evaluation: a late event corrects
        the membership as of that moment (reason `correction`) instead of turning the clock back."""
        last_event_at, wall_now, late = self.last_event_at, self.wall_now, self.late
        for visitor_id, effect in self.working.items():
            by_event = visitor_id in last_event_at
            if by_event:
                now = min(last_event_at[visitor_id], wall_now)
                reason: ChangeReason = "correction" if visitor_id in late else "event"
            elif visitor_id in due_visitors:
                now = due_visitors[visitor_id][1]
                reason = "timer"
            else:
                continue  # only replayed, duplicate or dead-lettered records: nothing changed
            self.evaluate_visitor(visitor_id, effect, max(now, effect.profile.evaluated_at), reason)
            if by_event or effect.entered or effect.exited or effect.messages or visitor_id in due_visitors:
                self.result.visitors[visitor_id] = effect

    def evaluate_visitor(
        self, visitor_id: str, effect: VisitorEffect, now: float, reason: ChangeReason
    ) -> None:
        """Segments as of `now`: the changes (for `reason`), the messages, the next check; the
        visitor's rows. `now` becomes the profile's `evaluated_at` unless that is later."""
        result, defs, profile = self.result, self.defs, effect.profile
        changes: Changes | None = None
        trimmed = profile.timeline_from_day != effect.from_day
        codes = frozenset(CODES[t] for t in self.seen_types.get(visitor_id, ()))
        if defs.dependencies is not None and not trimmed and profile.definitions_sha == defs.source_sha:
            # A timer (or an event after the profile's next check) adds what time can change.
            index = defs.dependencies
            fields = index.changed_fields(effect.before, profile) if index.fields else frozenset()
            changes = Changes(codes, fields)
        elif effect.new and not trimmed and (start := new_visitor_start(defs)) is not None:
            changes = start.changes(defs, codes, profile)
        evaluation, entered, exited = _evaluate_membership(
            profile,
            defs,
            now,
            self.received_at,
            reason,
            self.last_event_id.get(visitor_id),
            result.changes,
            changes,
            self.known,
        )
        _record_cohort_values(profile, defs, evaluation, changes, effect.partition, result.cohort_deltas)
        context: dict[str, Any] = {**evaluation.context, "segments": profile.segments}
        event_types = frozenset(self.seen_types.get(visitor_id, ()))
        # Every message goes through the messenger (guard rails, sent records for caps and
        # attribution), built on first use: most evaluations send nothing. Journeys advance only
        # where they can act (`may_advance`).
        env = TriggerEnv(profile, entered, exited, event_types, defs, now, context)
        messenger: Messenger | None = None

        def guard(message: Message) -> Message | None:
            nonlocal messenger
            if messenger is None:
                messenger = Messenger(profile, defs, now, self.budget, env.holds)
            return messenger.guard(message)

        decide(profile, entered, exited, event_types, defs, now, context, guard, env)
        if may_advance(profile, defs, entered, event_types):
            if messenger is None:
                messenger = Messenger(profile, defs, now, self.budget, env.holds)
            journey_events = self.journey_events.get(visitor_id, ())
            advance(
                profile,
                defs,
                now,
                journey_events,
                event_types,
                entered,
                exited,
                messenger,
                env.render,
                env.holds,
            )
        elif messenger is not None:
            messenger.store(now)
        messages: list[Message] = []
        if messenger is not None:
            outcome = messenger.outcome
            messages = outcome.messages
            result.conversions.extend(outcome.conversions)
            for _, why in outcome.suppressed:
                result.suppressed[why] = result.suppressed.get(why, 0) + 1
        next_check, profile.timer_moments = timer_check(profile, defs, now, (effect.events_before, codes))
        profile.next_check_at = _earliest(next_check, next_due(profile))
        effect.entered, effect.exited, effect.messages = entered, exited, messages
        result.messages.extend(messages)
        members = tuple(profile.segments)
        for row in self.rows_by_visitor.get(visitor_id, ()):
            result.analytics_rows.append((row, members))


def reevaluate(
    visitors: Iterable[tuple[str, int]],
    profiles: Callable[[str, int], bytes | Profile | None],
    defs: Definitions,
    clocks: Mapping[int, float],
    *,
    wall_now: float,
    load: Callable[[bytes], Profile] = Profile.from_bytes,
    reason: ChangeReason = "definition_change",
    cohorts: Mapping[str, float] | None = None,
    moved: frozenset[str] = frozenset(),
) -> BatchResult:
    """Evaluate stored profiles again with no event of theirs: each of `visitors` (visitor id,
    partition) as of its partition's clock in `clocks` (capped at `wall_now`; never before the
    profile's latest evaluation) — after a cohort move, as of the profile's latest evaluation.

    Two occasions, told by `reason`: ``definition_change``, the switch to new definitions `defs`
    (every segment is evaluated); ``cohort``, the thresholds of the cohorts in `moved` (by
    `CohortDef.name`) moved: the segments reading them are evaluated. Both run with the thresholds
    `cohorts` as `process_batch` takes them; a visitor whose timer is due is left to it. The changes
    carry `reason` and `defs.version`. No
    trigger rule runs (a mass re-evaluation must not message visitors) and no analytics row is made.
    `profiles` is read like `process_batch`'s (a `Profile` it returns is changed in place). A visitor
    is in `BatchResult.visitors` when its membership, its next check or its recorded cohort values
    changed: the caller stores, publishes and checkpoints those like a batch's.
    """
    result = BatchResult()
    processed_at = _ts(wall_now)
    known = defs.cohort_thresholds(cohorts)
    changes: Changes | None = None
    if reason == "cohort":  # the segments reading a moved cohort (by the name conditions read)
        groups = frozenset(defs.cohorts[name].group for name in moved if name in defs.cohorts)
        changes = Changes(frozenset(), frozenset(), groups)
    for visitor_id, partition in visitors:
        stored = profiles(visitor_id, partition)
        if stored is None:
            continue
        profile = stored if isinstance(stored, Profile) else load(stored)
        now = max(min(clocks.get(partition, wall_now), wall_now), profile.evaluated_at)
        next_before = profile.next_check_at
        if reason == "cohort":
            if next_before is not None and now >= next_before:
                # Its timer is due: that evaluation (every segment, the new thresholds) comes next
                # and keeps time-driven changes at their own second, with their own reason.
                continue
            # A threshold moved, not time: decide as of the visitor's own latest evaluation. The
            # partition's clock may run far ahead of a visitor still being replayed, whose next
            # events would then all arrive "late".
            now = profile.evaluated_at or now
        evaluation, entered, exited = _evaluate_membership(
            profile, defs, now, processed_at, reason, None, result.changes, changes, known
        )
        recorded = _record_cohort_values(profile, defs, evaluation, changes, partition, result.cohort_deltas)
        # Journeys do not advance here (a mass re-evaluation messages nobody), but their next
        # moments stay timers.
        next_check, profile.timer_moments = timer_check(profile, defs, now)
        profile.next_check_at = _earliest(next_check, next_due(profile))
        if entered or exited or recorded or profile.next_check_at != next_before:
            result.visitors[visitor_id] = VisitorEffect(profile, partition, entered, exited)
    return result


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


def _journey_event(event: Event, at: float) -> JourneyEvent:
    """What journeys and attribution read of a purchase or a custom event."""
    props: Any = event.properties
    if event.type is EventType.purchase:
        return JourneyEvent("purchase", at, None, props.order_id, float(props.value), props.currency)
    return JourneyEvent(props.name, at, props.message_id)


def _evaluate_membership(
    profile: Profile,
    defs: Definitions,
    now: float,
    processed_at: datetime,
    reason: ChangeReason,
    trigger_event_id: str | None,
    changes: list[SegmentChange],
    changed: Changes | None = None,
    known: Mapping[str, float] | None = None,
) -> tuple[Evaluation, list[str], list[str]]:
    """Evaluate the profile's segments as of `now` and diff them with its stored membership: one
    `SegmentChange` per entry and exit (with the values that decided it) appended to `changes`, and
    the profile moved to the new membership (`segments`, `segment_since`; `now` becomes its
    `evaluated_at` unless that is later). `changed`: what the visitor's events changed, so only the
    segments they can affect are evaluated (None: all); `known`: the cohort thresholds
    (`Definitions.cohort_thresholds`). Returns the evaluation, entered and exited."""
    evaluation = evaluate(profile, defs, now, explain=False, changes=changed, known=known)
    profile.evaluated_at = max(profile.evaluated_at, now)
    profile.definitions_sha = defs.source_sha
    entered, exited = diff(profile.segments, evaluation.members)
    # The values behind a transition, computed only for the segments that changed.
    deciding = evaluation.explain(defs, entered + exited) if entered or exited else {}
    visitor_id = profile.visitor_id
    for segment, transition in [(s, Transition.entered) for s in entered] + [
        (s, Transition.exited) for s in exited
    ]:
        changes.append(
            SegmentChange(
                change_id=change_id(visitor_id, segment, transition.value, now, defs.version),
                visitor_id=visitor_id,
                segment=segment,
                transition=transition,
                event_time=_ts(now),
                processed_at=processed_at,
                definition_version=defs.version,
                reason=reason,
                trigger_event_id=trigger_event_id,
                attributes=_jsonable(deciding.get(segment, {})),
            )
        )
        if transition is Transition.entered:
            profile.segment_since[segment] = now
        else:
            profile.segment_since.pop(segment, None)
    profile.segments = sorted(evaluation.members)
    return evaluation, entered, exited


def _record_cohort_values(
    profile: Profile,
    defs: Definitions,
    evaluation: Evaluation,
    changed: Changes | None,
    partition: int,
    deltas: CohortDeltas,
) -> bool:
    """Record the profile's value of each cohort of `defs` in `profile.cohort_values` — its
    attribute's value when > 0 (the population), else none — and append each move to
    `deltas[partition]`; whether any moved. A value is computed again when the evaluation was
    complete, time passed the visitor's next check (`Evaluation.timed`: windows slid), or the
    visitor's events can change the cohort's attribute (else it is what it was).
    Values of cohorts `defs` no longer has move out."""
    recorded = profile.cohort_values
    if not defs.cohorts and not recorded:
        return False
    values = evaluation.values
    moves: list[tuple[str, float | None, float | None]] = []
    for name, cohort in defs.cohorts.items():
        if (
            not evaluation.complete
            and not evaluation.timed
            and changed is not None
            and cohort.codes is not None
            and cohort.codes.isdisjoint(changed.codes)
        ):
            continue
        new = _population_value(values.get(cohort.value_var) if values is not None else None)
        old = recorded.get(name)
        if new != old:
            moves.append((name, old, new))
    moves += [(name, value, None) for name, value in recorded.items() if name not in defs.cohorts]
    if not moves:
        return False
    by_cohort = deltas.setdefault(partition, {})
    for name, old, new in moves:
        if new is None:
            del recorded[name]
        else:
            recorded[name] = new
        by_cohort.setdefault(name, []).append((profile.visitor_id, old, new))
    return True


def _population_value(value: Any) -> float | None:
    """A cohort attribute's value as the population counts it: a finite number > 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if 0.0 < number < math.inf else None


def _jsonable(values: Mapping[str, Any]) -> dict[str, str | int | float | bool | None]:
    out: dict[str, str | int | float | bool | None] = {}
    for name, value in values.items():
        if value is None or isinstance(value, str | int | float | bool):
            out[name] = value
        else:
            out[name] = str(value)
    return out
