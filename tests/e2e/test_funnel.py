"""The message funnel through a real worker on the embedded stack (issues 17 §4 and 18 §1).

Test-only definitions: a trigger rule of campaign `e2e` (variants a and b, half held out) fires when
a visitor puts something in the cart. Visitors are chosen by the campaign's deterministic assignment:
two messaged ones (one per variant) and one held out. The messaged visitors report outcomes of their
message (shown and clicked; shown twice and dismissed, as the tracker's custom events), and one
messaged and the held-out visitor buy. The worker's checkpoint writes the messages, the engine's
conversions and the outcome rows to its embedded ClickHouse; `/v1/dashboard`'s funnel
(`sinks.kpis.message_funnel`) then shows every column, uplift included.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.messages import Message
from streams.core.definitions import Definitions, load_definitions
from streams.core.guardrails import assignment
from streams.producer import produce_records
from streams.testing import WorkerConfig, WorkerProcess, read_topic

FUNNEL_DEFINITIONS = """\
version: "e2e-funnel-1"
description: One campaign with two variants and a holdout, messaged on a cart (test only).
segments:
  - id: carted
    description: Something in the cart.
    when: cart_items > 0
triggers:
  - id: cart_offer
    description: An on-site offer when the cart fills.
    on: {enter: carted}
    campaign: e2e
    send: {kind: exit_intent_overlay, channel: onsite, payload: {template: cart_offer}}
campaigns:
  - id: e2e
    description: Half held out, two variants.
    holdout: 0.5
    variants:
      a: {share: 0.5, payload: {offer: A}}
      b: {share: 0.5, payload: {offer: B}}
"""


def pick_visitors(defs: Definitions) -> dict[str, str]:
    """Role → visitor id: `a` and `b` (messaged, in that variant) and `held` (held out); the same ids
    every run (the worker's topics and Redis keys are its own)."""
    campaign = defs.campaigns["e2e"]
    chosen: dict[str, str] = {}
    for i in range(200):
        visitor = f"funnel-visitor-{i}"
        held, variant = assignment(visitor, campaign)
        role = "held" if held else str(variant)
        chosen.setdefault(role, visitor)
        if len(chosen) == 3:
            return chosen
    raise AssertionError(f"no visitor for every role among 200: {chosen}")


def event(visitor: str, event_id: str, kind: str, properties: dict[str, Any]) -> tuple[bytes, bytes]:
    body = {
        "event_id": event_id,
        "visitor_id": visitor,
        "event_time": datetime.now(UTC).isoformat(),
        "type": kind,
        "context": {"ip": "178.197.224.1", "user_agent": "e2e"},
        "properties": properties,
    }
    return visitor.encode(), orjson.dumps(body)


def outcome(visitor: str, event_id: str, name: str, message_id: str) -> tuple[bytes, bytes]:
    props = {"message_id": message_id, "outcome": name.removeprefix("message_"), "display": "overlay"}
    return event(visitor, event_id, "custom", {"name": name, "properties": props})


@pytest.mark.timeout(300)
def test_outcomes_and_conversions_reach_the_funnel(embedded_stack: Any, tmp_path: Path) -> None:
    definitions = tmp_path / "funnel.yaml"
    definitions.write_text(FUNNEL_DEFINITIONS, encoding="utf-8")
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap, embedded_stack.redis_url, tmp_path / "w", segments_file=definitions
    )
    who = pick_visitors(load_definitions(definitions))
    worker = WorkerProcess(config).start()
    try:
        carts = [
            event(visitor, f"{visitor}-add", "add_to_cart", {"product_id": "P-1", "price": 20.0})
            for visitor in who.values()
        ]
        asyncio.run(produce_records(config.kafka, config.events_topic, carts))

        def decided() -> dict[str, Message] | None:
            records = asyncio.run(read_topic(config.kafka, config.messages_topic, deadline_s=5))
            messages = [Message.model_validate_json(r.value) for r in records]
            by_visitor = {m.visitor_id: m for m in messages if m.campaign == "e2e"}
            return by_visitor if set(by_visitor) == set(who.values()) else None

        message = worker.wait(decided, 120, 0.5, "a message or holdout record for each visitor")
        assert message[who["held"]].holdout and not message[who["a"]].holdout
        assert (message[who["a"]].variant, message[who["b"]].variant) == ("a", "b")

        a, b, held = who["a"], who["b"], who["held"]
        reports = [
            outcome(a, f"{a}-shown", "message_shown", message[a].message_id),
            outcome(a, f"{a}-clicked", "message_clicked", message[a].message_id),
            outcome(b, f"{b}-shown-1", "message_shown", message[b].message_id),
            outcome(b, f"{b}-shown-2", "message_shown", message[b].message_id),  # shown again: one message
            outcome(b, f"{b}-dismissed", "message_dismissed", message[b].message_id),
            event(a, f"{a}-buy", "purchase", {"order_id": f"{a}-o", "value": 30.0, "items": []}),
            event(held, f"{held}-buy", "purchase", {"order_id": f"{held}-o", "value": 45.5, "items": []}),
        ]
        asyncio.run(produce_records(config.kafka, config.events_topic, reports))

        expected: dict[tuple[str, bool], dict[str, Any]] = {
            ("a", False): {"sent": 1, "holdout_records": 0, "shown": 1, "clicked": 1, "dismissed": 0}
            | {"converted": 1, "revenue": 30.0, "conversion_rate": 1.0, "uplift": 0.0},
            ("b", False): {"sent": 1, "holdout_records": 0, "shown": 1, "clicked": 0, "dismissed": 1}
            | {"converted": 0, "revenue": 0.0, "conversion_rate": 0.0, "uplift": -1.0},
            ("holdout", True): {"sent": 0, "holdout_records": 1, "shown": 0, "clicked": 0, "dismissed": 0}
            | {"converted": 1, "revenue": 45.5, "conversion_rate": 1.0, "uplift": None},
        }

        def funnel() -> dict[tuple[str, bool], dict[str, Any]] | None:
            rows = worker.get("/v1/dashboard?minutes=60")["funnel"]
            got = {(r["variant"], r["holdout"]): r for r in rows if r["campaign"] == "e2e"}
            seen = {
                key: {name: row[name] for name in expected[key]}
                for key, row in got.items()
                if key in expected
            }
            return got if seen == expected else None

        rows = worker.wait(funnel, 120, 0.5, "the funnel's outcomes and conversions in ClickHouse")
        assert all(row["visitors"] == 1 for row in rows.values())
        assert rows[("a", False)]["uplift_relative"] == 0.0
        assert rows[("b", False)]["uplift_relative"] == -1.0
    finally:
        worker.stop()
