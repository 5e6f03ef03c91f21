"""`streams.partitioning` picks the partition aiokafka's default partitioner (Java's) picks."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streams.partitioning import murmur2, partition_for


def test_murmur2_equals_aiokafka_for_every_tail_length() -> None:
    rnd = random.Random(7)
    for length in range(0, 70):
        for _ in range(20):
            data = bytes(rnd.randrange(256) for _ in range(length))
            assert murmur2(data) == aiokafka_murmur2(data)


def test_partition_for_equals_default_partitioner() -> None:
    rnd = random.Random(11)
    partitioner = DefaultPartitioner()
    for count in (1, 3, 6, 12):
        partitions = list(range(count))
        for _ in range(300):
            key = f"v-{rnd.getrandbits(64):x}-ü".encode()
            assert partition_for(key, count) == partitioner(key, partitions, partitions)
