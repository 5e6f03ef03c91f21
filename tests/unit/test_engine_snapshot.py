"""A checkpoint's snapshot is copy-on-write: it sees every profile as of when it was taken.

The engine hands a checkpoint the live profile objects and serialises them in slices between
batches; a batch about to change one serialises it first. These tests drive the engine's snapshot
methods directly (no Kafka, Redis or ClickHouse: nothing here does I/O).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.core.profile import Profile, new_profile
from streams.engine import SERIALISE_SLICE, Engine, PartitionState
from tests.helpers import offline_engine


def _engine(visitors: int) -> Engine:
    engine: Engine = offline_engine()  # no rows: the snapshot never calls a sink
    state = PartitionState()
    engine.store.partitions[0] = state
    for index in range(visitors):
        visitor_id = f"v{index}"
        profile = new_profile(visitor_id)
        profile.last_offset = index
        state.profiles[visitor_id] = profile
        engine._dirty[visitor_id] = 0
    return engine


def _take(engine: Engine) -> Any:
    snapshot = engine._take_snapshot()
    assert snapshot is not None
    engine._inflight_snapshot = snapshot  # as _checkpoint does
    return snapshot


def test_a_batch_touching_a_pending_profile_serialises_it_first() -> None:
    engine = _engine(3)
    snapshot = _take(engine)
    assert snapshot.changelog == [] and len(snapshot.unserialised) == 3  # nothing serialised yet

    held = engine._profile("v1", 0)
    assert isinstance(held, Profile)
    held.last_offset = 999  # the batch changes the live object after the snapshot was taken

    asyncio.run(engine._serialise_all(snapshot))
    by_visitor = {visitor: Profile.from_bytes(raw) for visitor, _, raw in snapshot.changelog}
    assert sorted(by_visitor) == ["v0", "v1", "v2"]
    assert by_visitor["v1"].last_offset == 1  # as of the snapshot, not the batch's 999
    assert len(snapshot.serving) == 3
    state = engine.store.partitions[0]
    assert state.profiles["v1"] is held  # the batch's object stays in the store
    assert isinstance(state.profiles["v0"], bytes)  # untouched ones are kept serialised


def test_serialisation_yields_between_slices() -> None:
    engine = _engine(SERIALISE_SLICE * 2 + 5)
    snapshot = _take(engine)
    progress: list[int] = []

    async def batches() -> None:
        while snapshot.unserialised:
            progress.append(len(snapshot.unserialised))
            await asyncio.sleep(0)

    async def both() -> None:
        await asyncio.gather(engine._serialise_all(snapshot), batches())

    asyncio.run(both())
    assert len(snapshot.changelog) == SERIALISE_SLICE * 2 + 5
    assert any(0 < left < SERIALISE_SLICE * 2 + 5 for left in progress)  # ran between slices


@pytest.mark.parametrize("visitors", [0, 1])
def test_a_snapshot_with_stored_bytes_serialises_nothing_new(visitors: int) -> None:
    engine = _engine(visitors)
    state = engine.store.partitions[0]
    for visitor_id, held in list(state.profiles.items()):
        assert isinstance(held, Profile)
        state.profiles[visitor_id] = held.to_bytes()
    engine._pending_offsets = {}  # only dirty visitors, if any
    snapshot = engine._take_snapshot()
    if visitors == 0:
        assert snapshot is None
        return
    assert snapshot is not None
    assert snapshot.unserialised == {} and len(snapshot.changelog) == visitors


def test_low_traffic_checkpoints_wait_for_records_up_to_the_max_interval() -> None:
    import time

    from aiokafka import TopicPartition

    engine = _engine(0)
    s = engine.settings
    engine._pending_offsets = {TopicPartition("events", 0): 1}

    def due_after(ms: float, records: int) -> bool:
        engine._last_checkpoint = time.monotonic() - ms / 1000
        engine._records_since_checkpoint = records
        return engine._checkpoint_due()

    between = (s.checkpoint_interval_ms + s.checkpoint_max_interval_ms) / 2
    assert not due_after(s.checkpoint_interval_ms / 2, s.checkpoint_min_records)
    assert due_after(between, s.checkpoint_min_records)  # busy: every interval
    assert not due_after(between, s.checkpoint_min_records - 1)  # quiet: waits for records…
    assert due_after(s.checkpoint_max_interval_ms + 50, 1)  # …up to the max interval
    engine._pending_offsets = {}
    assert not due_after(s.checkpoint_max_interval_ms + 50, 0)  # nothing pending: never


def test_the_batch_loop_waits_for_a_running_checkpoint_only_past_the_row_cap() -> None:
    """A due checkpoint is put off while the previous one is still being written (the next
    snapshot takes everything pending since); past `checkpoint_max_rows` the loop waits."""
    engine = _engine(1)
    assert not engine._checkpoint_running()  # nothing in flight

    async def scenario() -> tuple[bool, bool, bool]:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        engine._inflight = asyncio.ensure_future(gate)
        engine._pending_rows = [object()] * (engine.settings.checkpoint_max_rows - 1)
        below_cap = engine._checkpoint_running()
        engine._pending_rows.append(object())
        at_cap = engine._checkpoint_running()
        engine._pending_rows = []
        gate.set_result(None)
        await engine._inflight
        return below_cap, at_cap, engine._checkpoint_running()

    below_cap, at_cap, finished = asyncio.run(scenario())
    assert below_cap and not at_cap and not finished
