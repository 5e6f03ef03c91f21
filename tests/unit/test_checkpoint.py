"""The checkpoint writes by the commit protocol: sinks → state → offsets, nothing after a failed step.

Run against in-memory fakes sharing one call log (`streams.testing.fakes`), so the order in which
the checkpoint reaches ClickHouse, Redis, the broker's acks, the changelog and the offset commit is
what the tests assert. Also: a snapshot is copy-on-write (it sees every touched profile as of when
it was taken, though the profiles are serialised in slices between batches), and when a checkpoint
is due or makes the batch loop wait.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition

from schemas import EVENT_ADAPTER, Conversion, Device, EnrichedEvent, Geo, SegmentChange, Traffic, Transition
from sinks.clickhouse import conversion_row, event_row
from streams.checkpoint import SERIALISE_SLICE, Checkpoint
from streams.core.batch import BatchResult
from streams.core.profile import Profile, new_profile
from streams.profile_store import PartitionState, ProfileStore
from streams.settings import Settings
from streams.stats import EngineStats
from streams.testing import async_wait_until
from streams.testing.fakes import CallLog, FakeAnalyticsSink, FakeConsumer, FakeProducer, FakeServingStore

TP = TopicPartition("events", 0)
AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
EVENT = EnrichedEvent(
    event=EVENT_ADAPTER.validate_python(
        {"event_id": "e1", "visitor_id": "v0", "event_time": AT, "type": "page_view"}
    ),
    device=Device(),
    geo=Geo(),
    traffic=Traffic(),
    received_at=AT,
    partition=0,
    offset=4,
)
ROW: tuple[EnrichedEvent, tuple[str, ...]] = (EVENT, ("s1",))
"""A batch's analytics row: an event and its visitor's segments right after it."""
EVENT_ROW = event_row(*ROW)
"""The `events` row the checkpoint builds of it when the batch is added."""

PROTOCOL = ["analytics.write", "serving.write", "producer.ack", "changelog.write", "consumer.commit"]
"""The commit protocol as the fakes see it: 1. sinks (ClickHouse, Redis, acks), 2. state, 3. offsets."""


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    checkpoint: Checkpoint
    calls: CallLog
    analytics: FakeAnalyticsSink
    serving: FakeServingStore
    producer: FakeProducer
    consumer: FakeConsumer
    store: ProfileStore
    stats: EngineStats
    clock: ManualClock


def _rig(visitors: int = 0, settings: Settings | None = None) -> Rig:
    """A checkpoint over one partition whose `visitors` profiles a batch touched (live objects,
    visitor `v<i>` at offset i)."""
    calls = CallLog()
    analytics, serving = FakeAnalyticsSink(calls), FakeServingStore(calls)
    producer, consumer = FakeProducer(calls), FakeConsumer(calls)
    store, stats, clock = ProfileStore(), EngineStats(), ManualClock()
    checkpoint = Checkpoint(
        settings or Settings(), store, analytics, serving, producer, lambda: consumer, stats, clock=clock
    )
    state = PartitionState()
    store.partitions[0] = state
    for index in range(visitors):
        visitor_id = f"v{index}"
        profile = new_profile(visitor_id)
        profile.last_offset = index
        state.profiles[visitor_id] = profile
        checkpoint.touched[visitor_id] = 0
    return Rig(checkpoint, calls, analytics, serving, producer, consumer, store, stats, clock)


def _add_batch(rig: Rig, next_offset: int = 5) -> None:
    """A processed batch: its offsets, an analytics row and a segment change sent to a topic."""
    rig.checkpoint.processed(TP, next_offset)
    rig.checkpoint.add(
        BatchResult(analytics_rows=[ROW]), records=next_offset, sends=[rig.producer.send("changes", [])]
    )


# -- the commit protocol ------------------------------------------------------------------------


async def test_sinks_then_state_then_offsets() -> None:
    rig = _rig(visitors=2)
    _add_batch(rig)

    await rig.checkpoint.take(wait=True)

    assert rig.calls.calls == PROTOCOL
    assert [batch.rows.events for batch in rig.analytics.batches] == [[EVENT_ROW]]
    assert sorted(update.visitor_id for update in rig.serving.writes[0]) == ["v0", "v1"]  # summaries
    assert sorted(visitor for visitor, _, _ in rig.producer.changelog) == ["v0", "v1"]
    assert rig.consumer.commits == [{TP: 5}]
    assert rig.stats.committed == {0: 5} and rig.stats.checkpoints == 1 and rig.stats.changelog_writes == 2


async def test_a_failed_clickhouse_insert_writes_no_state_and_commits_no_offsets() -> None:
    rig = _rig(visitors=2)
    _add_batch(rig)
    rig.calls.fail_on("analytics.write", OSError("ClickHouse is down"))

    with pytest.raises(OSError, match="ClickHouse is down"):
        await rig.checkpoint.take(wait=True)

    assert rig.calls.calls == ["analytics.write"]
    assert rig.producer.changelog == [] and rig.consumer.commits == []
    assert rig.stats.checkpoints == 0 and rig.stats.committed == {}


async def test_a_failed_changelog_write_commits_no_offsets() -> None:
    rig = _rig(visitors=2)
    _add_batch(rig)
    rig.calls.fail_on("changelog.write", OSError("broker unavailable"))

    with pytest.raises(OSError, match="broker unavailable"):
        await rig.checkpoint.take(wait=True)

    assert rig.calls.calls == PROTOCOL[:4]
    assert rig.consumer.commits == [] and rig.stats.committed == {}


@pytest.mark.parametrize("failing", PROTOCOL)
async def test_nothing_after_a_failed_step_happens(failing: str) -> None:
    rig = _rig(visitors=1)
    _add_batch(rig)
    rig.calls.fail_on(failing, RuntimeError(f"{failing} failed"))

    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        await rig.checkpoint.take(wait=True)

    assert rig.calls.calls == PROTOCOL[: PROTOCOL.index(failing) + 1]
    assert rig.stats.checkpoints == 0


async def test_a_background_checkpoint_fails_at_the_next_batch_once() -> None:
    rig = _rig(visitors=1)
    _add_batch(rig)
    rig.calls.fail_on("changelog.write", OSError("broker unavailable"))

    await rig.checkpoint.take(wait=False)  # the batch loop goes on meanwhile
    await async_wait_until(lambda: not rig.checkpoint.running(), timeout=5, message="write finished")

    with pytest.raises(OSError, match="broker unavailable"):
        await rig.checkpoint.raise_if_failed()
    await rig.checkpoint.raise_if_failed()  # the outcome was taken: the loop restarts once
    assert rig.consumer.commits == []


async def test_consecutive_checkpoints_carry_their_offset_ranges_as_insert_tokens() -> None:
    """A replay of the same records gives the same token, so ClickHouse drops the second insert."""
    rig = _rig()
    _add_batch(rig, next_offset=5)
    await rig.checkpoint.take(wait=True)
    _add_batch(rig, next_offset=9)
    await rig.checkpoint.take(wait=True)

    assert [batch.token for batch in rig.analytics.batches] == ["0:-5", "0:5-9"]
    assert rig.consumer.commits == [{TP: 5}, {TP: 9}]


async def test_conversions_go_with_the_rows_in_step_1() -> None:
    """The core's conversions ride in the same analytics batch (same token) as the rows, messages and
    changes of their checkpoint; a checkpoint with only conversions still writes them first."""
    conversion = Conversion(
        message_id="m1",
        visitor_id="v0",
        rule="exit_intent_overlay",
        message_time=AT,
        event_time=AT,
        order_id="o1",
        value=9.5,
    )
    rig = _rig()
    rig.checkpoint.processed(TP, 4)
    rig.checkpoint.add(BatchResult(analytics_rows=[ROW], conversions=[conversion]), records=4, sends=[])
    await rig.checkpoint.take(wait=True)
    rig.checkpoint.processed(TP, 6)  # a purchase without analytics consent: no row, still a conversion
    rig.checkpoint.add(BatchResult(conversions=[conversion, conversion]), records=2, sends=[])
    await rig.checkpoint.take(wait=True)

    row = conversion_row(conversion)
    assert [(b.token, b.rows.events, b.rows.conversions) for b in rig.analytics.batches] == [
        ("0:-4", [EVENT_ROW], [row]),
        ("0:4-6", [], [row, row]),
    ]
    assert rig.calls.calls == ["analytics.write", "changelog.write", "consumer.commit"] * 2


async def test_without_a_consumer_nothing_is_committed() -> None:
    """Between restarts there is no consumer: the offsets stay uncommitted and are replayed."""
    rig = _rig(visitors=1)
    checkpoint = Checkpoint(
        Settings(), rig.store, rig.analytics, rig.serving, rig.producer, lambda: None, rig.stats
    )
    checkpoint.touched["v0"] = 0
    checkpoint.processed(TP, 3)

    await checkpoint.take(wait=True)

    assert rig.calls.calls == ["serving.write", "changelog.write"] and rig.consumer.commits == []


async def test_an_abandoned_checkpoint_leaves_nothing_pending() -> None:
    rig = _rig(visitors=2)
    _add_batch(rig)

    rig.checkpoint.abandon()

    assert rig.checkpoint.snapshot() is None and not rig.checkpoint.due()


# -- copy-on-write snapshots --------------------------------------------------------------------


async def test_a_batch_touching_a_pending_profile_serialises_it_first() -> None:
    rig = _rig(visitors=3)
    snapshot = rig.checkpoint.snapshot()
    assert snapshot is not None
    assert snapshot.changelog == [] and len(snapshot.unserialised) == 3  # nothing serialised yet

    held = rig.checkpoint.profile("v1", 0)
    assert isinstance(held, Profile)
    held.last_offset = 999  # the batch changes the live object after the snapshot was taken

    await rig.checkpoint.commit(snapshot)
    by_visitor = {visitor: Profile.from_bytes(raw) for visitor, _, raw in rig.producer.changelog}
    assert sorted(by_visitor) == ["v0", "v1", "v2"]
    assert by_visitor["v1"].last_offset == 1  # as of the snapshot, not the batch's 999
    assert len(rig.serving.writes[0]) == 3
    state = rig.store.partitions[0]
    assert state.profiles["v1"] is held  # the batch's object stays in the store
    assert isinstance(state.profiles["v0"], bytes)  # untouched ones are kept serialised


async def test_serialisation_yields_between_slices() -> None:
    visitors = SERIALISE_SLICE * 2 + 5
    rig = _rig(visitors)
    snapshot = rig.checkpoint.snapshot()
    assert snapshot is not None
    progress: list[int] = []

    async def batches() -> None:
        while snapshot.unserialised:
            progress.append(len(snapshot.unserialised))
            await asyncio.sleep(0)  # a batch's turn on the loop, not a synchronisation

    await asyncio.gather(rig.checkpoint.commit(snapshot), batches())

    assert len(rig.producer.changelog) == visitors
    assert any(0 < left < visitors for left in progress)  # batches ran between slices


@pytest.mark.parametrize("visitors", [0, 1])
def test_a_snapshot_with_stored_bytes_serialises_nothing_new(visitors: int) -> None:
    rig = _rig(visitors)
    state = rig.store.partitions[0]
    for visitor_id, held in list(state.profiles.items()):
        assert isinstance(held, Profile)
        state.profiles[visitor_id] = held.to_bytes()
    snapshot = rig.checkpoint.snapshot()  # only touched visitors pending, if any
    if visitors == 0:
        assert snapshot is None
        return
    assert snapshot is not None
    assert snapshot.unserialised == {} and len(snapshot.changelog) == visitors


# -- when a checkpoint is taken -----------------------------------------------------------------


def test_low_traffic_checkpoints_wait_for_records_up_to_the_max_interval() -> None:
    s = Settings()

    def due_after(ms: float, records: int, pending: bool = True) -> bool:
        rig = _rig(settings=s)
        if pending:
            rig.checkpoint.processed(TP, 1)
        rig.checkpoint.add(BatchResult(), records=records, sends=[])
        rig.clock.now += ms / 1000
        return rig.checkpoint.due()

    between = (s.checkpoint_interval_ms + s.checkpoint_max_interval_ms) / 2
    assert not due_after(s.checkpoint_interval_ms / 2, s.checkpoint_min_records)
    assert due_after(between, s.checkpoint_min_records)  # busy: every interval
    assert not due_after(between, s.checkpoint_min_records - 1)  # quiet: waits for records…
    assert due_after(s.checkpoint_max_interval_ms + 50, 1)  # …up to the max interval
    assert not due_after(s.checkpoint_max_interval_ms + 50, 0, pending=False)  # nothing pending: never


def test_the_row_cap_makes_a_checkpoint_due_at_once() -> None:
    rig = _rig(settings=Settings(checkpoint_max_rows=10))
    rig.checkpoint.add(BatchResult(analytics_rows=[ROW] * 9), records=0, sends=[])
    assert not rig.checkpoint.due()
    rig.checkpoint.add(BatchResult(analytics_rows=[ROW]), records=0, sends=[])
    assert rig.checkpoint.due()


async def test_the_batch_loop_waits_for_a_running_checkpoint_only_past_the_row_cap() -> None:
    """A due checkpoint is put off while the previous one is still being written (the next
    snapshot takes everything pending since); past `checkpoint_max_rows` the loop waits."""
    rig = _rig(visitors=1, settings=Settings(checkpoint_max_rows=10))
    checkpoint = rig.checkpoint
    assert not checkpoint.running()  # nothing in flight
    ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    checkpoint.processed(TP, 1)
    checkpoint.add(BatchResult(), records=1, sends=[ack])  # the broker has not acknowledged yet

    await checkpoint.take(wait=False)
    checkpoint.add(BatchResult(analytics_rows=[ROW] * 9), records=0, sends=[])
    below_cap = checkpoint.running()
    checkpoint.add(BatchResult(analytics_rows=[ROW]), records=0, sends=[])
    at_cap = checkpoint.running()
    ack.set_result(None)
    await checkpoint.take(wait=True)  # waits for the one in flight, then writes the 10 rows

    assert below_cap and not at_cap and not checkpoint.running()
    assert [len(batch.rows.events) for batch in rig.analytics.batches] == [10]
    assert rig.stats.checkpoints == 2


async def test_a_checkpoint_of_timer_changes_only_is_named_by_its_changes() -> None:
    """No offsets to name it (timers fired, no record read): the token is its changes' ids, sorted,
    so a retry of the same changes is deduplicated."""
    rig = _rig()
    changes = [
        SegmentChange(
            change_id=change_id,
            visitor_id="v0",
            segment="cart_abandoners",
            transition=Transition.entered,
            event_time=AT,
            processed_at=AT,
            definition_version="1",
        )
        for change_id in ("c2", "c1")
    ]
    rig.checkpoint.add(BatchResult(changes=changes), records=0, sends=[])
    await rig.checkpoint.take(wait=True)

    assert [batch.token for batch in rig.analytics.batches] == ["timers:c1,c2"]
