"""A bare consume → produce relay: the two-hop floor of the latency step.

Tessera's latency path has two broker hops: the producer's event to the worker, and the worker's
segment change to its consumer. The one-hop floor (produce → consume) leaves out the second hop
and the worker's own fetch and produce, so it cannot say how much of a p99 the worker adds. This
relay does what the worker does with the broker and nothing else: it consumes the events topic in
a consumer group with the worker's fetch settings, forwards every record unchanged as closed
batches per partition (`streams.kafka.send_all`, as the worker sends segment changes), and
commits offsets after the sends are acknowledged, every `checkpoint_interval_ms`, as the worker's
checkpoint does.

Run as a child process by `bench.latency.measure_relay` (its own process and CPU, like the worker):

    python -m bench.relay BOOTSTRAP SOURCE_TOPIC TARGET_TOPIC GROUP

It prints one line `relay_ready` once the group has assigned it partitions, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka import consumer_options, producer_options, send_all
from streams.settings import Settings

READY_LINE = "relay_ready"


async def relay(bootstrap: str, source: str, target: str, group: str) -> None:
    s = Settings().for_embedded_broker()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # The worker's own consumer and producer options (streams.kafka), with the relay's group.
    options = {**consumer_options(s), "group_id": group}
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, **options)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options(s))
    await producer.start()
    await consumer.start()
    try:
        ready = False
        sends: list[asyncio.Future[Any]] = []
        last_commit = time.monotonic()
        while not stopping.is_set():
            # One loop from the start: records polled in the same call that completes the
            # assignment are forwarded like any other, not dropped while waiting to be ready.
            polled = await consumer.getmany(timeout_ms=100, max_records=s.batch_max_records)
            if not ready and consumer.assignment():
                ready = True
                print(READY_LINE, flush=True)
            records = [(r.key, r.value) for batch in polled.values() for r in batch if r.value is not None]
            sends += await send_all(producer, target, records)
            if time.monotonic() - last_commit >= s.checkpoint_interval_ms / 1000:
                # Sends acknowledged, then offsets: the worker's checkpoint order, without its sinks.
                await asyncio.gather(*sends)
                sends = []
                await consumer.commit()
                last_commit = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("bootstrap")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("group")
    args = parser.parse_args(argv)
    asyncio.run(relay(args.bootstrap, args.source, args.target, args.group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
