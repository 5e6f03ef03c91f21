"""The collector over HTTP: per-event answers, bad events in the DLQ, good ones served from Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.testing import WorkerConfig, WorkerProcess, basic_auth, read_topic, sites_env, wait_until


@pytest.mark.timeout(300)
def test_collector_answers_per_event_and_serves_the_visitor(embedded_stack: Any, tmp_path: Path) -> None:
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap, embedded_stack.redis_url, tmp_path / "w", extra_env=sites_env()
    )
    worker = WorkerProcess(config).start()
    try:
        now = datetime.now(UTC) - timedelta(seconds=1)
        good = {
            "event_id": "c-1",
            "visitor_id": "web-visitor",
            "event_time": now.isoformat(),
            "type": "purchase",
            "context": {"ip": "178.197.224.1", "coupon": None},
            "properties": {
                "order_id": "o-1",
                "value": 30.0,
                "coupon": "WELCOME10",
                "items": [{"product_id": "P-1", "category": "books", "price": 30.0}],
            },
        }
        segment_style = {
            "type": "track",
            "event": "Product Viewed",
            "messageId": "c-2",
            "anonymousId": "web-visitor",
            "timestamp": now.isoformat(),
            "properties": {"product_id": "P-1001", "category": "electronics"},
            "context": {
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
            },
        }
        bad_type = {
            "event_id": "c-3",
            "visitor_id": "web-visitor",
            "event_time": now.isoformat(),
            "type": "nope",
        }
        bad_schema = {
            "event_id": "c-4",
            "visitor_id": "web-visitor",
            "event_time": now.isoformat(),
            "type": "purchase",
            "properties": {"value": -5},
        }
        body = orjson.dumps({"batch": [good, segment_style, bad_type, bad_schema]})
        status, answer = worker.post("/v1/events", body)
        assert (status, answer["error"]) == (401, "missing_write_key")  # nothing accepted
        status, answer = worker.post("/v1/events", body, headers=basic_auth())
        assert status == 200
        assert answer["accepted"] == 2
        assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [
            (2, "unknown_type"),
            (3, "schema_violation"),
        ]

        status, answer = worker.post("/v1/events", b"{oops", headers=basic_auth())
        assert status == 400 and answer["rejected"][0]["reason"] == "not_json"

        def served() -> dict[str, Any] | None:
            try:
                found = worker.get("/v1/visitors/web-visitor")
            except Exception:
                return None
            return found if "coupon_users" in found["segments"] and found.get("profile") else None

        found = wait_until(served, 60, 0.1, "visitor served with coupon_users")
        assert found["profile"]["device"]["os"] == "Android"

        # Dead letters keyed by the visitor id where the collector could read one.
        letters = asyncio.run(read_topic(config.kafka, config.dlq_topic))
        reasons = sorted((orjson.loads(r.value)["reason"], r.key) for r in letters)
        assert reasons == [
            ("not_json", None),
            ("schema_violation", b"web-visitor"),
            ("unknown_type", b"web-visitor"),
        ]
        assert {orjson.loads(r.value)["source"] for r in letters} == {"collector"}

        # `tessera visitor ID --json` prints one JSON object from Redis.
        env = dict(os.environ, **config.env(worker.port))
        out = subprocess.run(
            [sys.executable, "-m", "streams.cli", "visitor", "web-visitor", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        printed = json.loads(out.stdout)
        assert printed["visitor_id"] == "web-visitor"
        assert "coupon_users" in printed["segments"] and "profile" in printed
    finally:
        worker.stop()
