"""Recovery rebuilds assigned partitions from their changelog (`streams.recovery`).

Driven with an in-memory consumer (`streams.testing.fakes.FakeConsumer`) that answers Fetch as
aiokafka does: a partition's high watermark is unknown until a fetch answered for it.
"""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from streams.core.profile import Profile, new_profile
from streams.recovery import ChangelogConsumer, ConsumerFactory, recover_partitions
from streams.testing.fakes import CallLog, FakeConsumer, changelog_records
from streams.timers import DueTimers

TOPIC = "changelog"
BASE = 1_700_000_000.0


def _profile(visitor_id: str, last_seen: float, next_check_at: float | None = None) -> bytes:
    profile = new_profile(visitor_id)
    profile.last_seen = last_seen
    profile.next_check_at = next_check_at
    return profile.to_bytes()


def _opener(consumer: FakeConsumer) -> tuple[list[int], ConsumerFactory]:
    """A consumer factory handing out `consumer`, and how often it was called."""
    opened: list[int] = []

    async def open_consumer() -> ChangelogConsumer:
        opened.append(1)
        return consumer

    return opened, open_consumer


async def test_reads_to_the_high_watermark_even_when_the_first_fetches_answer_nothing() -> None:
    entries = [(f"v{i}", _profile(f"v{i}", BASE + i)) for i in range(7)]
    calls = CallLog()
    consumer = FakeConsumer(
        calls, {TopicPartition(TOPIC, 0): changelog_records(0, entries)}, empty_fetches=2, max_per_fetch=3
    )
    opened, open_consumer = _opener(consumer)

    recovered = await recover_partitions([0], TOPIC, open_consumer)

    assert recovered.records == 7
    assert sorted(recovered.states[0].profiles) == [f"v{i}" for i in range(7)]
    assert recovered.states[0].profiles["v3"] == entries[3][1]  # kept serialised, as read
    assert calls.count("consumer.getmany") == 2 + 3  # two empty answers, then 3 + 3 + 1 records
    assert opened == [1] and consumer.stopped


async def test_a_tombstone_deletes_the_visitor() -> None:
    entries: list[tuple[str, bytes | None]] = [
        ("gone", _profile("gone", BASE)),
        ("kept", _profile("kept", BASE)),
        ("gone", None),
        ("back", _profile("back", BASE)),
        ("back", None),
        ("back", _profile("back", BASE + 5)),
    ]
    consumer = FakeConsumer(topics={TopicPartition(TOPIC, 0): changelog_records(0, entries)})
    _, open_consumer = _opener(consumer)

    recovered = await recover_partitions([0], TOPIC, open_consumer)

    profiles = recovered.states[0].profiles
    assert sorted(profiles) == ["back", "kept"]
    assert recovered.records == 6
    restored = profiles["back"]
    assert isinstance(restored, bytes) and Profile.from_bytes(restored).last_seen == BASE + 5


async def test_timers_and_clock_are_rebuilt_from_the_profiles_headers() -> None:
    entries: list[tuple[str, bytes | None]] = [
        ("cart", _profile("cart", BASE + 10, next_check_at=BASE + 1800)),
        ("idle", _profile("idle", BASE + 30)),
        ("lapsing", _profile("lapsing", BASE + 20, next_check_at=BASE + 900)),
        ("cart", _profile("cart", BASE + 40, next_check_at=BASE + 2400)),  # its newer record wins
    ]
    consumer = FakeConsumer(topics={TopicPartition(TOPIC, 0): changelog_records(0, entries)})
    _, open_consumer = _opener(consumer)
    before = time.time()

    recovered = await recover_partitions([0], TOPIC, open_consumer)

    state = recovered.states[0]
    assert state.clock == BASE + 40  # the newest last_seen
    assert before <= state.last_record_wall <= time.time()
    assert len(state.timers) == 2 and state.timers.due_at("idle") is None
    assert state.timers.due_at("cart") == BASE + 2400 and state.timers.due_at("lapsing") == BASE + 900
    due = DueTimers(per_batch=10).pop({0: state.timers}, {0: BASE + 3000})
    assert list(due.items()) == [("lapsing", (0, BASE + 900)), ("cart", (0, BASE + 2400))]


async def test_the_clock_never_starts_past_the_wall_clock() -> None:
    future = time.time() + 3600
    consumer = FakeConsumer(
        topics={TopicPartition(TOPIC, 0): changelog_records(0, [("ahead", _profile("ahead", future))])}
    )
    _, open_consumer = _opener(consumer)

    recovered = await recover_partitions([0], TOPIC, open_consumer)

    assert recovered.states[0].clock <= time.time() < future


async def test_several_partitions_each_get_their_own_visitors() -> None:
    topics = {
        TopicPartition(TOPIC, 0): changelog_records(0, [("a", _profile("a", BASE + 1))]),
        TopicPartition(TOPIC, 2): changelog_records(
            2, [("b", _profile("b", BASE + 2, next_check_at=BASE + 60)), ("c", _profile("c", BASE + 3))]
        ),
        TopicPartition(TOPIC, 1): changelog_records(1, [("not-assigned", _profile("x", BASE))]),
    }
    consumer = FakeConsumer(topics=topics, max_per_fetch=1)
    _, open_consumer = _opener(consumer)
    made: list[int] = []

    def new_profiles(partition: int) -> dict[str, bytes | Profile]:
        made.append(partition)
        return {}

    recovered = await recover_partitions([0, 2], TOPIC, open_consumer, new_profiles)

    assert sorted(recovered.states) == [0, 2] and sorted(made) == [0, 2]
    assert sorted(consumer.assigned) == [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 2)]
    assert sorted(recovered.states[0].profiles) == ["a"]
    assert sorted(recovered.states[2].profiles) == ["b", "c"]
    assert recovered.records == 3
    assert recovered.states[0].clock == BASE + 1 and recovered.states[2].clock == BASE + 3
    assert len(recovered.states[0].timers) == 0 and recovered.states[2].timers.due_at("b") == BASE + 60


async def test_an_empty_changelog_partition_is_done_after_one_fetch() -> None:
    calls = CallLog()
    consumer = FakeConsumer(calls)
    _, open_consumer = _opener(consumer)

    recovered = await recover_partitions([5], TOPIC, open_consumer)

    assert recovered.records == 0 and len(recovered.states[5].profiles) == 0
    assert calls.count("consumer.getmany") == 1 and consumer.stopped


async def test_no_partition_opens_no_consumer() -> None:
    opened, open_consumer = _opener(FakeConsumer())

    recovered = await recover_partitions([], TOPIC, open_consumer)

    assert recovered.states == {} and recovered.records == 0 and opened == []
