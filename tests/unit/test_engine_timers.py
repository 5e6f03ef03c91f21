"""Due timers are evaluated in bounded slices, earliest first, none lost and none twice.

After a restart (or a jump of a partition's clock) tens of thousands of timers can be due at once;
one batch evaluating all of them blocked the event loop for seconds, past the consumer group's
session timeout. `Engine._pop_due` hands out at most `timers_per_batch` per batch and flags the
backlog so the next poll does not wait. Driven directly: no Kafka, Redis or ClickHouse here.
"""

from __future__ import annotations

from streams.engine import Engine, PartitionState
from streams.settings import Settings
from tests.helpers import offline_engine


def _engine(timers_per_batch: int, due_per_partition: int, partitions: int = 3) -> Engine:
    engine: Engine = offline_engine(Settings(timers_per_batch=timers_per_batch))
    for partition in range(partitions):
        state = PartitionState()
        for index in range(due_per_partition):
            Engine._schedule(state, f"p{partition}-v{index}", float(due_per_partition - index))
        engine.store.partitions[partition] = state
    return engine


def test_due_timers_come_in_slices_earliest_first_until_none_is_left() -> None:
    engine = _engine(timers_per_batch=100, due_per_partition=250)
    clocks = dict.fromkeys(engine.store.partitions, 1e9)
    seen: list[tuple[int, float]] = []
    names: set[str] = set()
    slices = 0
    while True:
        due = engine._pop_due(clocks)
        if not due:
            break
        slices += 1
        assert len(due) <= 3 * 34  # ceil(100 / 3) per partition
        for visitor_id, (partition, at) in due.items():
            assert visitor_id not in names
            names.add(visitor_id)
            seen.append((partition, at))
        assert engine._timers_backlog == (len(names) < 750)
        assert engine.timers() == {"queued": 750 - len(names), "backlog": len(names) < 750}
    assert len(names) == 750 and slices == 8
    for partition in range(3):
        times = [at for p, at in seen if p == partition]
        assert times == sorted(times)  # each partition's timers fire in due order
    assert not engine._timers_backlog


def test_a_rescheduled_visitor_is_handed_out_once_at_its_new_time() -> None:
    engine = _engine(timers_per_batch=10, due_per_partition=0, partitions=1)
    state = engine.store.partitions[0]
    Engine._schedule(state, "v", 5.0)
    Engine._schedule(state, "v", 7.0)  # the 5.0 entry is stale now
    assert engine._pop_due({0: 6.0}) == {}
    assert engine._pop_due({0: 8.0}) == {"v": (0, 7.0)}
    assert not engine._timers_backlog


def test_below_the_cap_every_due_timer_goes_in_one_batch() -> None:
    engine = _engine(timers_per_batch=1000, due_per_partition=300)
    assert len(engine._pop_due(dict.fromkeys(engine.store.partitions, 1e9))) == 900
    assert not engine._timers_backlog
