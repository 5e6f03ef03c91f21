"""Baseline A: a bare Faust agent that only iterates the workload topic (run as a subprocess).

Settings come from the environment (set by `bench.baselines`):
BENCH_BROKER, BENCH_TOPIC, BENCH_GROUP (the app id, hence the consumer group), BENCH_EXPECT
(records to count), BENCH_MARKS (file the `first` / `progress` / `done` marks are appended to),
BENCH_DATADIR (Faust's data folder).

Embedded-stack settings (docs/ARCHITECTURE.md, "The embedded stack and its known limits"): session
timeout 6 s, heartbeat 2 s, log level INFO (at WARNING Faust's spinner turns the root logger to
DEBUG). The topic is read as raw bytes: no deserialisation cost, only Faust's per-record machinery.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import faust

from bench.common import write_mark

BROKER = os.environ["BENCH_BROKER"]
TOPIC = os.environ["BENCH_TOPIC"]
EXPECT = int(os.environ["BENCH_EXPECT"])
MARKS = Path(os.environ["BENCH_MARKS"])
PROGRESS_EVERY = max(EXPECT // 10, 1)

app = faust.App(
    os.environ["BENCH_GROUP"],
    broker=f"kafka://{BROKER}",
    broker_session_timeout=6,
    broker_heartbeat_interval=2,
    consumer_auto_offset_reset="earliest",
    topic_partitions=6,
    web_enabled=False,
    autodiscover=False,
    store="memory://",
    datadir=os.environ["BENCH_DATADIR"],
)
topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(topic)
async def iterate(stream: Any) -> None:
    count = 0
    async for _value in stream:
        count += 1
        if count == 1:
            write_mark(MARKS, "first", count=count, perf=time.perf_counter(), cpu=time.process_time())
        elif count % PROGRESS_EVERY == 0 and count < EXPECT:
            write_mark(MARKS, "progress", count=count)
        if count == EXPECT:
            write_mark(MARKS, "done", count=count, perf=time.perf_counter(), cpu=time.process_time())


def main() -> None:
    worker = faust.Worker(app, loglevel="INFO", redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
