"""End to end: simulated personas through the real broker, worker, Redis and chDB."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from sinks.redis_serving import RedisServing
from streams.producer import produce_records
from streams.simulate import MICRO_SEGMENTS, SimParams, simulate
from streams.testing import WorkerConfig, WorkerProcess, read_topic

PERSONA_SEGMENTS = (
    "frequent_buyers",
    "coupon_users",
    "discount_lovers",
    "top_spender_electronics",
    "top_spender_clothing",
    "top_spender_home_decor",
    "cart_abandoners",
    "new_visitors",
)


def precision_recall(
    expected: dict[str, set[str]], actual: dict[str, set[str]], segment: str
) -> tuple[float, float, int]:
    truth = {v for v, segs in expected.items() if segment in segs}
    got = {v for v, segs in actual.items() if segment in segs}
    tp = len(truth & got)
    precision = tp / len(got) if got else (1.0 if not truth else 0.0)
    recall = tp / len(truth) if truth else 1.0
    return precision, recall, len(truth)


async def visitor_segments(redis_url: str, prefix: str, visitors: list[str]) -> dict[str, set[str]]:
    serving = RedisServing(redis_url, prefix=prefix)
    try:
        out: dict[str, set[str]] = {}
        for visitor_id in visitors:
            found = await serving.get_visitor(visitor_id)
            out[visitor_id] = set(found["segments"]) if found else set()
        return out
    finally:
        await serving.close()


@pytest.mark.timeout(600)
def test_personas_reach_their_segments(embedded_stack: Any, tmp_path: Path) -> None:
    end = datetime.now(UTC) - timedelta(seconds=5)
    sim = simulate(600, seed=11, end=end, params=SimParams(duplicate_rate=0.02, malformed=3))
    # History is produced after the worker is up. An idle partition's clock follows the wall clock at
    # once (`TESSERA_IDLE_CLOCK_AFTER_S` 0), which would make all of this history late events
    # (corrections); a few idle seconds first keep it a replay decided in event time.
    idle = {"TESSERA_IDLE_CLOCK_AFTER_S": "5"}
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap, embedded_stack.redis_url, tmp_path / "w1", extra_env=idle
    )
    worker = WorkerProcess(config).start()
    try:
        records: list[tuple[bytes | None, bytes]] = [
            (e["visitor_id"].encode(), orjson.dumps(e)) for e in sim.events
        ]
        records += [(key.encode() if key else None, raw) for _, raw, key in sim.malformed]
        ends = asyncio.run(produce_records(config.kafka, config.events_topic, records))
        worker.wait_committed(ends)

        expected = {v: set(t.expected_segments) for v, t in sim.truth.items()}
        n_abandoners = sum("cart_abandoners" in s for s in expected.values())

        def abandoners_in() -> bool:
            counts = worker.get("/v1/segments")
            members = {s["id"]: s["members"] for s in counts["segments"]}
            return members.get("cart_abandoners", 0) >= n_abandoners

        worker.wait(abandoners_in, 60, 0.2, "cart abandoners entered by timer")
        actual = asyncio.run(visitor_segments(config.redis_url, config.redis_prefix, list(expected)))

        lines = []
        failures = []
        for segment in PERSONA_SEGMENTS + MICRO_SEGMENTS:
            precision, recall, support = precision_recall(expected, actual, segment)
            lines.append(f"{segment:32} precision {precision:.3f} recall {recall:.3f} (n={support})")
            if support and (precision < 0.9 or recall < 0.9):
                failures.append(segment)
        print("\n" + "\n".join(lines))
        assert not failures, "\n".join(lines)

        # cart_abandoners fired from the timer, with no later event of the visitor.
        changes = [orjson.loads(r.value) for r in asyncio.run(read_topic(config.kafka, config.changes_topic))]
        last_entry: dict[str, dict[str, Any]] = {}
        for change in changes:
            if change["segment"] == "cart_abandoners" and change["transition"] == "entered":
                last_entry[change["visitor_id"]] = change
        last_event_at = {e["visitor_id"]: e["event_time"] for e in sim.events}
        abandoners = [v for v, segs in expected.items() if "cart_abandoners" in segs]
        by_timer = [
            v
            for v in abandoners
            if v in last_entry
            and last_entry[v]["reason"] == "timer"
            and datetime.fromisoformat(last_entry[v]["event_time"]) > datetime.fromisoformat(last_event_at[v])
        ]
        sample = [
            (last_entry[v]["reason"], last_entry[v]["event_time"], last_event_at[v]) if v in last_entry else v
            for v in abandoners
            if v not in by_timer
        ][:5]
        assert abandoners and len(by_timer) == len(abandoners), sample

        # The DLQ holds every malformed record, with its typed reason.
        letters = [orjson.loads(r.value) for r in asyncio.run(read_topic(config.kafka, config.dlq_topic))]
        assert Counter(letter["reason"] for letter in letters) == Counter(
            reason for reason, _, _ in sim.malformed
        )

        # ClickHouse: every unique valid event once, revenue equal to what was sent.
        unique = {e["event_id"]: e for e in sim.events}
        revenue = sum(e["properties"]["value"] for e in unique.values() if e["type"] == "purchase")
        purchases = sum(1 for e in unique.values() if e["type"] == "purchase")
        totals = worker.get("/v1/report")["totals"]
        assert totals["events"] == len(unique)
        assert totals["purchases"] == purchases
        assert math.isclose(totals["revenue"], revenue, rel_tol=1e-9, abs_tol=1e-6)
        status = worker.status()
        assert status["duplicates"] == len(sim.events) - len(unique)
        assert status["restarts"] == 0
    finally:
        worker.stop()
