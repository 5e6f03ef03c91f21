"""The latency path's Redis writes (`streams.publish.Publisher`): a visitor's first write in this
process is full, later ones only when something changed, and the memory of who was written is
bounded (long-tail traffic is mostly visitors never seen again)."""

from __future__ import annotations

from typing import Any

import pytest

from streams import publish
from streams.core.batch import BatchResult, VisitorEffect
from streams.core.profile import new_profile
from streams.publish import Publisher
from streams.settings import Settings
from streams.testing.fakes import FakeServingStore


def _batch(*visitor_ids: str) -> BatchResult:
    """A batch that touched these visitors and changed nothing of their segments."""
    return BatchResult(visitors={v: VisitorEffect(profile=new_profile(v), partition=0) for v in visitor_ids})


async def test_first_writes_are_full_and_the_served_set_starts_over_past_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publish, "SERVED_LIMIT", 3)
    serving = FakeServingStore()

    async def producer() -> Any:
        return None  # nothing is sent to a topic: no changes, messages or dead letters

    publisher = Publisher(Settings(), producer, serving)
    await publisher.publish(_batch("a", "b", "c"))  # first writes
    await publisher.publish(_batch("a"))  # written before, nothing changed: no write
    await publisher.publish(_batch("d"))  # the limit is reached: the set starts over with d
    await publisher.publish(_batch("a"))  # forgotten: a full write again

    assert [[u.visitor_id for u in updates] for updates in serving.writes] == [["a", "b", "c"], ["d"], ["a"]]
    assert len(publisher._served) <= 3
