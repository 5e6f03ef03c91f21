"""Following a topic (`streams.kafka.poll_paused`, `streams.kafka.FollowedPartition`,
`streams.kafka.follow`): a followed partition is paused between polls, fetched only when
ListOffsets says it moved, and still loses nothing; a failed step closes and restarts the follower."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition

from streams.kafka import FOLLOW_FULL_POLL_S, FollowedPartition, follow, poll_paused
from streams.testing.fakes import FakeConsumer, FakeTopicProducer

TP = TopicPartition("followed", 0)


async def test_poll_paused_reads_what_arrived_while_paused_and_pauses_again() -> None:
    consumer = FakeConsumer(topics={TP: []})
    consumer.assign([TP])
    consumer.pause(TP)
    producer = FakeTopicProducer(consumer)
    await producer.send_and_wait(TP.topic, b"first")
    assert await consumer.getmany(TP) == {}  # paused: not fetched

    polled = await poll_paused(consumer, TP, timeout_ms=0)

    assert [r.value for r in polled[TP]] == [b"first"]
    assert TP in consumer.paused
    await producer.send_and_wait(TP.topic, b"second")
    assert [r.value for r in (await poll_paused(consumer, TP, timeout_ms=0))[TP]] == [b"second"]
    assert await poll_paused(consumer, TP, timeout_ms=0) == {}
    assert TP in consumer.paused


def _followed(consumer: FakeConsumer, clock: list[float]) -> FollowedPartition:
    consumer.assign([TP])
    consumer.pause(TP)
    return FollowedPartition(consumer, TP, clock=lambda: clock[0])


@pytest.mark.parametrize(
    "list_offsets",
    [lambda end: end, lambda end: max(end - 1, 0)],
    ids=["kafka: the end", "embedded broker: short of the end"],
)
async def test_followed_partition_fetches_only_when_list_offsets_moved(
    list_offsets: Callable[[int], int],
) -> None:
    consumer = FakeConsumer(topics={TP: []}, list_offsets=list_offsets)
    producer = FakeTopicProducer(consumer)
    clock = [0.0]
    followed = _followed(consumer, clock)
    await producer.send_and_wait(TP.topic, b"first")

    assert [r.value for r in (await followed.poll(timeout_ms=0))[TP]] == [b"first"]
    fetches = consumer.calls.count("consumer.getmany")
    for _ in range(5):  # nothing new: ListOffsets only
        assert await followed.poll(timeout_ms=0) == {}
    assert consumer.calls.count("consumer.getmany") == fetches
    assert consumer.calls.count("consumer.end_offsets") == 6

    await producer.send_and_wait(TP.topic, b"second")
    assert [r.value for r in (await followed.poll(timeout_ms=0))[TP]] == [b"second"]
    assert TP in consumer.paused


async def test_followed_partition_fetches_again_until_it_reached_the_high_watermark() -> None:
    consumer = FakeConsumer(topics={TP: []}, max_per_fetch=1)
    producer = FakeTopicProducer(consumer)
    followed = _followed(consumer, [0.0])
    for value in (b"a", b"b", b"c"):
        await producer.send_and_wait(TP.topic, value)

    read = [r.value for _ in range(4) for r in (await followed.poll(timeout_ms=0)).get(TP, [])]

    assert read == [b"a", b"b", b"c"]  # ListOffsets unchanged, but each poll left some unread


async def test_followed_partition_fetches_at_least_every_full_poll_interval() -> None:
    consumer = FakeConsumer(topics={TP: []}, list_offsets=lambda end: 0)  # an answer that never moves
    producer = FakeTopicProducer(consumer)
    clock = [0.0]
    followed = _followed(consumer, clock)
    assert await followed.poll(timeout_ms=0) == {}
    await producer.send_and_wait(TP.topic, b"late")
    assert await followed.poll(timeout_ms=0) == {}  # the answer did not move: not fetched

    clock[0] += FOLLOW_FULL_POLL_S

    assert [r.value for r in (await followed.poll(timeout_ms=0))[TP]] == [b"late"]


class _Follower:
    """Counts its calls; its second step fails once."""

    def __init__(self, steps_wanted: int) -> None:
        self.starts = self.steps = self.closes = 0
        self.steps_wanted = steps_wanted
        self.done = asyncio.Event()
        self._open = False

    @property
    def started(self) -> bool:
        return self._open

    async def start(self) -> None:
        self.starts += 1
        self._open = True

    async def step(self) -> object:
        self.steps += 1
        if self.steps == 2:
            raise RuntimeError("broker gone")
        if self.steps >= self.steps_wanted:
            self.done.set()
        return None

    async def close(self) -> None:
        self.closes += 1
        self._open = False


@pytest.mark.timeout(10)
async def test_follow_steps_until_cancelled_and_restarts_after_a_failed_step() -> None:
    follower = _Follower(steps_wanted=4)
    task = asyncio.ensure_future(follow(follower, "test_follow_failed", backoff_s=(0.0, 0.0), interval_s=0.0))
    await asyncio.wait_for(follower.done.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert follower.steps >= 4
    assert follower.starts == 2  # the failed step closed it; the next round started it again
    assert follower.closes == 2  # after the failure, and when cancelled
    assert not follower.started
