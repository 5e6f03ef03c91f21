"""Malformed records for fault tests: one of each `MALFORMED_KINDS` reason per round, each keyed by
the visitor it pretends to come from. They go to `Simulation.malformed`, never to the events."""

from __future__ import annotations

from random import Random
from typing import Any, Final

import orjson

from streams.simulate.clock import DAY_MS, MINUTE_MS, iso
from streams.simulate.draws import uuid4
from streams.simulate.session import SHOP

MALFORMED_KINDS: Final = ("not_json", "unknown_type", "schema_violation", "future_timestamp", "too_large")
"""Values of `schemas.deadletter.DeadLetterReason` the injected malformed records exercise."""


def malformed(rng: Random, count: int, visitor_ids: list[str], end_ms: int) -> list[tuple[str, bytes, str]]:
    """`count` rounds of (reason, raw bytes, visitor key), one record of each kind per round."""
    out: list[tuple[str, bytes, str]] = []
    if count <= 0 or not visitor_ids:
        return out

    def base(vid: str, etype: str, props: dict[str, Any], at: int | None = None) -> dict[str, Any]:
        t = end_ms - rng.randint(MINUTE_MS, 5 * DAY_MS) if at is None else at
        return {
            "schema_version": 1,
            "event_id": uuid4(rng),
            "visitor_id": vid,
            "session_id": f"s-{rng.getrandbits(64):016x}",
            "event_time": iso(t),
            "type": etype,
            "context": {"page_url": f"{SHOP}/", "page_path": "/", "ip": "2.242.0.217"},
            "properties": props,
        }

    for i in range(count):
        vid = rng.choice(visitor_ids)
        event = base(vid, "page_view", {"page_type": "home"})
        whole = orjson.dumps(event)
        variant = i % 3
        if variant == 0:
            raw = whole[: rng.randint(10, len(whole) - 5)]  # truncated on the wire
        elif variant == 1:
            raw = b"visitor_id=" + vid.encode() + b"&type=page_view&ts=" + str(end_ms).encode()
        else:
            raw = b'\xff\xfe{\x00"\x00e\x00v\x00'  # UTF-16 with a BOM: not UTF-8 JSON
        out.append(("not_json", raw, vid))

        vid = rng.choice(visitor_ids)
        etype = ("video_play", "teleport", "Product Viewed")[i % 3]
        out.append(("unknown_type", orjson.dumps(base(vid, etype, {"foo": 1})), vid))

        vid = rng.choice(visitor_ids)
        broken = (
            base(vid, "add_to_cart", {"price": 10.0}),  # no product_id
            base(vid, "purchase", {"order_id": "O-1", "value": -5.0}),  # negative value
            {k: v for k, v in base(vid, "page_view", {}).items() if k != "event_time"},  # no timestamp
            base(vid, "add_to_cart", {"product_id": "P-1000", "quantity": 0}),  # quantity < 1
        )[i % 4]
        out.append(("schema_violation", orjson.dumps(broken), vid))

        vid = rng.choice(visitor_ids)
        future = end_ms + 50 * 365 * DAY_MS + rng.randint(0, DAY_MS)
        out.append(
            ("future_timestamp", orjson.dumps(base(vid, "page_view", {"page_type": "home"}, at=future)), vid)
        )

        vid = rng.choice(visitor_ids)
        blob = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(40_000))
        big = base(vid, "custom", {"name": "debug_dump", "properties": {"blob": blob}})
        out.append(("too_large", orjson.dumps(big), vid))
    return out
