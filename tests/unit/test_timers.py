"""Due timers come out in bounded slices, earliest first, none lost and none twice (`streams.timers`).

After a restart (or a jump of a partition's clock) tens of thousands of timers can be due at once;
one batch evaluating all of them blocked the event loop for seconds, past the consumer group's
session timeout. `DueTimers.pop` hands out at most `per_batch` per batch and flags the backlog so
the next poll does not wait.
"""

from __future__ import annotations

from streams.timers import DueTimers, TimerQueue


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
