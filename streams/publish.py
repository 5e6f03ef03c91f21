"""The latency path: what downstream waits for, sent as soon as a batch is processed.

Segment changes, messages and dead letters go to their topics at once; the broker's acks are
awaited by the checkpoint, before any offset is committed (`streams.checkpoint`). Segment sets,
member sets and inboxes go to Redis at once too (they are what a website reacts to); profile
summaries, most of Redis' cost, wait for the checkpoint, which writes the latest per visitor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from sinks.redis_serving import ServingStore, VisitorUpdate
from streams.core.batch import BatchResult
from streams.deadletters import dead_letter_record
from streams.kafka import send_all
from streams.settings import Settings

SERVED_LIMIT = 200_000
"""Visitor ids `Publisher` remembers as written (≈ 20 MB): on long-tail traffic nearly every
visitor is new, and an unbounded set would grow with every visitor the process ever saw. Forgetting
costs one more full (idempotent) Redis write for a visitor seen again."""


class Publisher:
    """Sends a batch's segment changes, messages and dead letters, and its urgent Redis writes."""

    def __init__(
        self,
        settings: Settings,
        producer: Callable[[], Awaitable[AIOKafkaProducer]],
        serving: ServingStore,
    ) -> None:
        self.settings = settings
        self.producer = producer
        """Returns the started producer (the engine starts it on first use)."""
        self.serving = serving
        self.serving_s = 0.0
        """How long the last batch's Redis write took (the slow-batch log reports it)."""
        self._served: set[str] = set()
        """Visitors whose segment set this process has written (a first write is always full).
        Bounded: past `SERVED_LIMIT` it starts over (those visitors' next writes are full again)."""

    async def publish(self, result: BatchResult) -> list[asyncio.Future[Any]]:
        """Send what downstream waits for; the futures of the topic sends (for the checkpoint)."""
        s = self.settings
        producer = await self.producer()
        sends: list[asyncio.Future[Any]] = []
        if result.dead_letters:
            sends += await send_all(
                producer, s.dlq_topic, [dead_letter_record(d) for d in result.dead_letters]
            )
        if result.changes:
            sends += await send_all(
                producer,
                s.changes_topic,
                [(c.visitor_id.encode(), c.model_dump_json().encode()) for c in result.changes],
            )
        if result.messages:
            sends += await send_all(
                producer,
                s.messages_topic,
                [(m.visitor_id.encode(), m.model_dump_json().encode()) for m in result.messages],
            )
        urgent = []
        for visitor_id, effect in result.visitors.items():
            profile = effect.profile
            if effect.entered or effect.exited or effect.messages or visitor_id not in self._served:
                urgent.append(
                    VisitorUpdate(
                        visitor_id=visitor_id,
                        summary=None,
                        segments=list(profile.segments),
                        entered=effect.entered,
                        exited=effect.exited,
                        # A holdout record goes to the messages topic (uplift), never to an inbox.
                        messages=[m for m in effect.messages if not m.holdout],
                    )
                )
                if len(self._served) >= SERVED_LIMIT:
                    self._served.clear()
                self._served.add(visitor_id)
        if urgent:
            serving_begun = time.perf_counter()
            await self.serving.write(urgent)
            self.serving_s = time.perf_counter() - serving_begun
        else:
            self.serving_s = 0.0
        return sends

    def forget_served(self) -> None:
        """Forget which visitors were written (a restart: their next write is a full one again)."""
        self._served.clear()
