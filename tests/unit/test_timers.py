"""Due timers come out in bounded slices, earliest first, none lost and none twice; a partition's
clock follows the wall clock only once it is caught up; the poll waits until the next timer fires
(`streams.timers`).

After a restart (or a jump of a partition's clock) tens of thousands of timers can be due at once;
one batch evaluating all of them blocked the event loop for seconds, past the consumer group's
session timeout. `DueTimers.pop` hands out at most `per_batch` per batch and flags the backlog so
the next poll does not wait.
"""

from __future__ import annotations

from typing import Any, cast

from aiokafka import TopicPartition

from streams.core.batch import SourceRecord
from streams.engine import _caught_up
from streams.testing.fakes import FakeConsumer
from streams.timers import DueTimers, TimerQueue, WallClock


def _queues(due_per_partition: int, partitions: int = 3) -> dict[int, TimerQueue]:
    """Each partition's queue with `due_per_partition` timers, scheduled latest first."""
    queues: dict[int, TimerQueue] = {}
    for partition in range(partitions):
        queue = TimerQueue()
        for index in range(due_per_partition):
            queue.schedule(f"p{partition}-v{index}", float(due_per_partition - index))
        queues[partition] = queue
    return queues


def test_due_timers_come_in_slices_earliest_first_until_none_is_left() -> None:
    queues = _queues(due_per_partition=250)
    timers = DueTimers(per_batch=100)
    clocks = dict.fromkeys(queues, 1e9)
    seen: list[tuple[int, float]] = []
    names: set[str] = set()
    slices = 0
    while True:
        due = timers.pop(queues, clocks)
        if not due:
            break
        slices += 1
        assert len(due) <= 3 * 34  # ceil(100 / 3) per partition
        for visitor_id, (partition, at) in due.items():
            assert visitor_id not in names
            names.add(visitor_id)
            seen.append((partition, at))
        assert timers.backlog == (len(names) < 750)
        assert timers.status(queues) == {"queued": 750 - len(names), "backlog": len(names) < 750}
    assert len(names) == 750 and slices == 8
    for partition in range(3):
        times = [at for p, at in seen if p == partition]
        assert times == sorted(times)  # each partition's timers fire in due order
    assert not timers.backlog


def test_a_rescheduled_visitor_is_handed_out_once_at_its_new_time() -> None:
    queue = TimerQueue()
    queue.schedule("v", 5.0)
    queue.schedule("v", 7.0)  # the 5.0 entry is stale now
    assert len(queue) == 1 and queue.due_at("v") == 7.0
    timers = DueTimers(per_batch=10)
    assert timers.pop({0: queue}, {0: 6.0}) == {}
    assert timers.pop({0: queue}, {0: 8.0}) == {"v": (0, 7.0)}
    assert timers.pop({0: queue}, {0: 8.0}) == {}
    assert not timers.backlog and len(queue) == 0


def test_a_cancelled_timer_never_fires() -> None:
    queue = TimerQueue()
    queue.schedule("kept", 3.0)
    queue.schedule("cancelled", 2.0)
    queue.schedule("cancelled", None)
    assert queue.due_at("cancelled") is None and len(queue) == 1
    assert DueTimers(per_batch=10).pop({4: queue}, {4: 10.0}) == {"kept": (4, 3.0)}


def test_timers_scheduled_at_once_fire_like_timers_scheduled_one_by_one() -> None:
    """Recovery schedules a partition's timers in one call; later schedules still win."""
    queue = TimerQueue()
    queue.schedule_all({"a": 30.0, "b": 10.0, "c": 20.0})
    queue.schedule("c", 40.0)  # rescheduled after recovery: its 20.0 entry is stale
    timers = DueTimers(per_batch=10)
    assert list(timers.pop({0: queue}, {0: 35.0}).items()) == [("b", (0, 10.0)), ("a", (0, 30.0))]
    assert timers.pop({0: queue}, {0: 40.0}) == {"c": (0, 40.0)}


def test_each_partition_is_popped_by_its_own_clock() -> None:
    queues = {0: TimerQueue(), 1: TimerQueue()}
    queues[0].schedule("early", 5.0)
    queues[1].schedule("late", 5.0)
    assert DueTimers(per_batch=10).pop(queues, {0: 6.0, 1: 4.0}) == {"early": (0, 5.0)}


def test_below_the_cap_every_due_timer_goes_in_one_batch() -> None:
    queues = _queues(due_per_partition=300)
    timers = DueTimers(per_batch=1000)
    assert len(timers.pop(queues, dict.fromkeys(queues, 1e9))) == 900
    assert not timers.backlog


def test_the_next_due_time_skips_rescheduled_and_cancelled_timers() -> None:
    queue = TimerQueue()
    assert queue.next_due() is None
    queue.schedule("moved", 1.0)
    queue.schedule("cancelled", 2.0)
    queue.schedule("kept", 3.0)
    queue.schedule("moved", 4.0)
    queue.schedule("cancelled", None)
    assert queue.next_due() == 3.0
    assert DueTimers(per_batch=10).pop({0: queue}, {0: 3.0}) == {"kept": (0, 3.0)}
    assert queue.next_due() == 4.0


WALL = 1_800_000_000.0
"""A fixed wall time: the clock rule is a pure function of it."""
RULE = WallClock(idle_after_s=0.0, lateness_s=0.03)


def test_a_caught_up_partition_follows_the_wall_clock_less_the_lateness() -> None:
    newest_event = WALL - 5.0
    assert RULE.clock(newest_event, WALL, last_record_wall=WALL, caught_up=True) == WALL - 0.03
    # Events stamped ahead of that (a client clock a little fast) keep the clock where they put it.
    assert RULE.clock(WALL - 0.01, WALL, last_record_wall=WALL, caught_up=True) == WALL - 0.01


def test_a_partition_behind_its_high_watermark_follows_event_time_alone() -> None:
    """A replay of yesterday's traffic: its timers fire by the records' own times, not the wall's."""
    yesterday = WALL - 86_400
    assert RULE.clock(yesterday, WALL, last_record_wall=WALL - 60, caught_up=False) == yesterday
    queue = TimerQueue()
    queue.schedule("v", yesterday + 1800)  # due in the replayed traffic's future
    timers = DueTimers(per_batch=10)
    behind = RULE.clock(yesterday, WALL, WALL, caught_up=False)
    assert timers.pop({0: queue}, {0: behind}) == {}
    caught_up = RULE.clock(yesterday, WALL, WALL, caught_up=True)
    assert timers.pop({0: queue}, {0: caught_up}) == {"v": (0, yesterday + 1800)}


def test_the_wall_clock_waits_for_idle_after_s_without_records() -> None:
    rule = WallClock(idle_after_s=2.0, lateness_s=1.0)
    newest_event = WALL - 10.0
    assert rule.clock(newest_event, WALL, last_record_wall=WALL - 1.5, caught_up=True) == newest_event
    assert rule.clock(newest_event, WALL, last_record_wall=WALL - 2.0, caught_up=True) == WALL - 1.0
    assert rule.fires_at(WALL, last_record_wall=WALL - 1.5) == WALL + 1.0  # due + lateness
    assert rule.fires_at(WALL - 5.0, last_record_wall=WALL - 1.5) == WALL + 0.5  # idle at last


def _partitions(*due: float | None) -> list[tuple[TimerQueue, float]]:
    """One partition per due time (None: no timer), each with its last records long ago."""
    out = []
    for index, at in enumerate(due):
        queue = TimerQueue()
        queue.schedule(f"v{index}", at)
        out.append((queue, WALL - 60))
    return out


def test_the_poll_waits_until_the_earliest_timer_fires_at_most_100_ms() -> None:
    assert RULE.poll_wait_ms([], WALL) == 100
    assert RULE.poll_wait_ms(_partitions(None), WALL) == 100
    assert RULE.poll_wait_ms(_partitions(WALL + 5.0), WALL) == 100
    # Fires at due + lateness: 0.04 + 0.03 s from now, on the earliest partition.
    assert RULE.poll_wait_ms(_partitions(WALL + 1.0, WALL + 0.04, None), WALL) == 70
    assert RULE.poll_wait_ms(_partitions(WALL - 3.0), WALL) == 0  # overdue: never negative
    # Rounded up: a poll returning before the timer fires would only spin.
    assert RULE.poll_wait_ms(_partitions(WALL - 0.0295), WALL) == 1
    assert RULE.poll_wait_ms(_partitions(WALL + 0.02), WALL, longest_ms=30) == 30


def records_of(count: int) -> list[SourceRecord]:
    return [SourceRecord(0, offset, b"v", b"{}") for offset in range(count)]


async def test_a_partition_is_caught_up_once_fetched_to_its_high_watermark() -> None:
    tp = TopicPartition("events", 0)
    consumer = FakeConsumer(topics={tp: records_of(3)}, max_per_fetch=2)
    consumer.assign([tp])
    engine_consumer = cast(Any, consumer)  # the fake has what `_caught_up` reads of aiokafka's
    assert not await _caught_up(engine_consumer, tp)  # not fetched yet: high watermark unknown
    await consumer.getmany()
    assert not await _caught_up(engine_consumer, tp)  # 2 of 3 records
    await consumer.getmany()
    assert await _caught_up(engine_consumer, tp)
    assert not await _caught_up(engine_consumer, TopicPartition("events", 1))  # not assigned

