"""Following a topic (`streams.kafka.poll_paused`, `streams.kafka.follow`): a followed partition is
paused between polls and still loses nothing; a failed step closes and restarts the follower."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from streams.kafka import follow, poll_paused
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
