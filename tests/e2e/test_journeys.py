"""A journey on the embedded stack survives a SIGKILL with exactly one message per step.

A visitor enters a three-step journey (test-only definitions with waits of seconds); the worker is
SIGKILLed right after a step's message reached the `messages` topic, before or after its checkpoint
(whichever comes first), and a new worker takes over from the changelog. The topic is at-least-once
(`streams.checkpoint`): a step decided again after the crash is published again with the same
deterministic id, which the consumers (the inbox, the delivery adapters) drop by id. So: every step
is there, each with exactly one distinct id.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.messages import Message
from streams.producer import produce_records
from streams.testing import WorkerConfig, WorkerProcess, read_topic

JOURNEY_DEFINITIONS = """\
version: "e2e-journey-1"
description: A three-step journey with waits of seconds (test only).
segments:
  - id: carted
    description: Something in the cart.
    when: cart_items > 0
journeys:
  - id: quick
    entry: {enter: carted}
    exit_on: [purchase]
    steps:
      - id: s1
        send: {kind: exit_intent_overlay, channel: onsite, payload: {n: 1}}
      - id: w1
        wait: 3s
      - id: s2
        send: {kind: exit_intent_overlay, channel: onsite, payload: {n: 2}}
      - id: w2
        wait: 3s
      - id: s3
        send: {kind: exit_intent_overlay, channel: onsite, payload: {n: 3}}
"""


def journey_messages(config: WorkerConfig) -> tuple[dict[str, set[str]], int]:
    """Step → the distinct message ids of journey `quick` on the messages topic; records read."""
    records = asyncio.run(read_topic(config.kafka, config.messages_topic, deadline_s=5))
    by_step: dict[str, set[str]] = {}
    for record in records:
        message = Message.model_validate_json(record.value)
        if message.journey == "quick" and message.step is not None:
            by_step.setdefault(message.step, set()).add(message.message_id)
    return by_step, len(records)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kill_after", ["s1", "s2"])
def test_sigkill_after_a_step_leaves_exactly_one_message_per_step(
    embedded_stack: Any, tmp_path: Path, kill_after: str
) -> None:
    definitions = tmp_path / "journeys.yaml"
    definitions.write_text(JOURNEY_DEFINITIONS, encoding="utf-8")
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap, embedded_stack.redis_url, tmp_path / "w", segments_file=definitions
    )
    visitor = "journey-visitor-1"
    add = {
        "event_id": "journey-add-1",
        "visitor_id": visitor,
        "event_time": datetime.now(UTC).isoformat(),
        "type": "add_to_cart",
        "context": {"ip": "178.197.224.1", "user_agent": "e2e"},
        "properties": {"product_id": "P-1", "price": 20.0},
    }
    first = WorkerProcess(config).start()
    try:
        asyncio.run(
            produce_records(config.kafka, config.events_topic, [(visitor.encode(), orjson.dumps(add))])
        )
        first.wait(
            lambda: kill_after in journey_messages(config)[0] or None,
            120,
            0.2,
            f"step {kill_after} published",
        )
        first.kill9()
    except BaseException:
        first.stop()
        raise

    second = WorkerProcess(config).start()
    try:
        second.wait(lambda: "s3" in journey_messages(config)[0] or None, 180, 0.5, "the last step published")
        by_step, _ = journey_messages(config)
        assert sorted(by_step) == ["s1", "s2", "s3"], "a step is missing"
        assert {step: len(ids) for step, ids in by_step.items()} == {"s1": 1, "s2": 1, "s3": 1}
        assert len(set().union(*by_step.values())) == 3
    finally:
        second.stop()
