"""Baseline B: quixstreams doing Tessera's per-visitor update, the peer a Python user might pick.

Per record: JSON decode (quixstreams' `json` deserializer) and a stateful per-visitor update in
RocksDB-backed state with a changelog topic: count events, sum purchase value. Run as a subprocess;
settings from the environment (set by `bench.baselines`): BENCH_BROKER, BENCH_TOPIC, BENCH_GROUP,
BENCH_EXPECT, BENCH_MARKS, BENCH_DATADIR (quixstreams' state folder), BENCH_TICK (optional).

quixstreams talks to Kafka through confluent-kafka (librdkafka); against the embedded Tansu broker
it works with two adjustments: the source topic must carry an explicit `retention.ms` (the broker's
DescribeConfigs returns only configs set at creation, and quixstreams derives its changelog config
from that value; `bench.common.create_topics` sets it), and the group session timeout is lowered
like everywhere else on the embedded stack.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from quixstreams import Application, State

from bench.common import write_mark

BROKER = os.environ["BENCH_BROKER"]
TOPIC = os.environ["BENCH_TOPIC"]
EXPECT = int(os.environ["BENCH_EXPECT"])
MARKS = Path(os.environ["BENCH_MARKS"])
PROGRESS_EVERY = max(EXPECT // 10, 1)
TICK = int(os.environ.get("BENCH_TICK", "0"))
"""With several processes in one group (`bench.baselines.run_quix_scaled`) none sees every record:
each then marks its count every TICK records, and the parent adds them up."""


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def update(self, event: dict[str, Any], state: State) -> None:
        seen = state.get("events", 0) + 1
        state.set("events", seen)
        if event.get("type") == "purchase":
            value = float(event.get("properties", {}).get("value") or 0.0)
            state.set("purchase_value", state.get("purchase_value", 0.0) + value)
        self.count += 1
        count = self.count
        if count == 1:
            write_mark(MARKS, "first", count=count, perf=time.perf_counter(), cpu=time.process_time())
        elif TICK and count % TICK == 0:
            write_mark(MARKS, "tick", count=count, perf=time.perf_counter())
        elif count % PROGRESS_EVERY == 0 and count < EXPECT:
            write_mark(MARKS, "progress", count=count)
        if count == EXPECT:
            write_mark(MARKS, "done", count=count, perf=time.perf_counter(), cpu=time.process_time())


def main() -> None:
    app = Application(
        broker_address=BROKER,
        consumer_group=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        state_dir=os.environ["BENCH_DATADIR"],
        loglevel="INFO",
        # Same group timing as the Faust baseline (docs/ARCHITECTURE.md, "The embedded stack and its
        # known limits"): librdkafka's default 45 s session timeout makes the first join on the
        # embedded broker wait ≈ 25 s.
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 2000},
    )
    topic = app.topic(TOPIC, value_deserializer="json", key_deserializer="bytes")
    sdf = app.dataframe(topic)
    counter = Counter()
    sdf.update(counter.update, stateful=True)
    app.run(count=EXPECT, collect=False)
    write_mark(MARKS, "stopped", count=counter.count)


if __name__ == "__main__":
    main()
