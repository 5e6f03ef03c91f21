"""Baseline C: the fixed stack's floor, aiokafka consume (+ the event contract's validation).

No profile, no segments, no sinks: the worker's consumer options, `getmany` batches, and per
record either nothing (BENCH_FLOOR=consume) or `ingest.decode_timed` (BENCH_FLOOR=validate: the
pydantic validation every event must pass). What one Python process on aiokafka and pydantic
spends before Tessera does any of its own work. Settings from the environment like the other
baselines (BENCH_BROKER, BENCH_TOPIC, BENCH_GROUP, BENCH_EXPECT, BENCH_MARKS).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.common import write_mark
from streams.core.ingest import decode_timed
from streams.kafka import consumer_options
from streams.settings import Settings

BROKER = os.environ["BENCH_BROKER"]
TOPIC = os.environ["BENCH_TOPIC"]
EXPECT = int(os.environ["BENCH_EXPECT"])
MARKS = Path(os.environ["BENCH_MARKS"])
VALIDATE = os.environ.get("BENCH_FLOOR", "validate") == "validate"


async def main() -> None:
    settings = Settings(group_id=os.environ["BENCH_GROUP"], kafka_broker=BROKER)
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=BROKER, **consumer_options(settings))
    await consumer.start()
    count = 0
    rejected = 0
    try:
        while count < EXPECT:
            polled = await consumer.getmany(timeout_ms=100, max_records=settings.batch_max_records)
            for batch in polled.values():
                if not batch:
                    continue
                if count == 0:
                    write_mark(MARKS, "first", count=1, perf=time.perf_counter(), cpu=time.process_time())
                if VALIDATE:
                    now = time.time()  # the worker's clock for the future-timestamp check, per batch
                    for record in batch:
                        decoded = decode_timed(
                            record.value,
                            record.key,
                            now,
                            settings.max_event_bytes,
                            settings.max_future_skew_s,
                        )
                        if not isinstance(decoded, tuple):
                            rejected += 1
                count += len(batch)
        write_mark(MARKS, "done", count=count, perf=time.perf_counter(), cpu=time.process_time())
    finally:
        await consumer.stop()
    write_mark(MARKS, "stopped", count=count, rejected=rejected)


if __name__ == "__main__":
    asyncio.run(main())
