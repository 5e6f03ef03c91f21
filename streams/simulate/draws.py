"""Draws from a seeded `random.Random`: weighted choices and UUID-shaped ids (never `uuid4()`)."""

from __future__ import annotations

from collections.abc import Iterable
from random import Random
from typing import Any


def weighted(rng: Random, items: Iterable[tuple[Any, float]]) -> Any:
    """One item of (item, weight) pairs, drawn in proportion to its weight."""
    pairs = list(items)
    total = sum(w for _, w in pairs)
    x = rng.random() * total
    for item, w in pairs:
        x -= w
        if x < 0:
            return item
    return pairs[-1][0]


def uuid4(rng: Random) -> str:
    """A version-4 UUID string drawn from `rng` (what `uuid.UUID(int=..., version=4)` gives)."""
    n = (rng.getrandbits(128) & ~(0xC000 << 48) | (0x8000 << 48)) & ~(0xF000 << 64) | (4 << 76)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
