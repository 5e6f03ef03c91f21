"""Cohort-relative segments on the embedded stack: a worker over two partitions publishes each
partition's spend sketch to the cohorts topic, takes the 95th percentile of their merge as the
threshold, and puts the visitors at or above it in `top_5pct_spender_electronics`; more big spenders
push the threshold up, and an earlier member exits with reason `cohort`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.cohorts import CohortSketchRecord
from streams.cli import build_parser, cmd_segments
from streams.core.sketch import QuantileSketch
from streams.producer import produce_records
from streams.settings import DEFAULT_SEGMENTS_FILE, Settings
from streams.testing import WorkerConfig, WorkerProcess, read_topic, wait_until

COHORT = "spend_p95_365d[electronics]"
SEGMENT = "top_5pct_spender_electronics"
FIRST = {f"v-{i:02d}": 10.0 * (i + 1) for i in range(40)}
"""40 electronics spenders, 10 to 400."""
BIG = {f"big-{i}": 1000.0 for i in range(5)} | {f"big-{5 + i}": 6000.0 + 100 * i for i in range(5)}
"""Ten more: five at 1,000 and five from 6,000 to 6,400."""


def purchases(spends: dict[str, float], order: str = "1") -> list[tuple[bytes, bytes]]:
    """One purchase of electronics per visitor (its `order` makes the event id)."""
    at = datetime.now(UTC) - timedelta(seconds=5)
    return [
        (
            visitor.encode(),
            orjson.dumps(
                {
                    "event_id": f"e-{visitor}-{order}",
                    "visitor_id": visitor,
                    "event_time": at.isoformat(),
                    "type": "purchase",
                    "context": {"ip": "178.197.224.1", "user_agent": "x"},
                    "properties": {
                        "order_id": f"o-{visitor}-{order}",
                        "value": value,
                        "items": [{"product_id": "P-1", "category": "electronics", "price": value}],
                    },
                }
            ),
        )
        for visitor, value in spends.items()
    ]


def expected_members(spends: dict[str, float]) -> tuple[float, set[str]]:
    """The threshold the merged sketch gives (α 1 %) and the visitors at or above it."""
    sketch = QuantileSketch()
    for value in spends.values():
        sketch.add(value)
    threshold = sketch.quantile(0.95)
    assert threshold is not None
    return threshold, {visitor for visitor, value in spends.items() if value >= threshold}


def published(config: WorkerConfig) -> dict[int, CohortSketchRecord]:
    """The latest sketch of each partition for the electronics cohort on the cohorts topic."""
    latest: dict[int, CohortSketchRecord] = {}
    for record in asyncio.run(read_topic(config.kafka, config.cohorts_topic, deadline_s=10)):
        if record.key.decode().startswith(COHORT + ":"):
            sketch = CohortSketchRecord.model_validate_json(record.value)
            latest[sketch.partition] = sketch
    return latest


def changes(config: WorkerConfig) -> list[dict[str, Any]]:
    """The segment's changes on `segment-changes`, in topic order per visitor."""
    records = asyncio.run(read_topic(config.kafka, config.changes_topic, deadline_s=10))
    found = [orjson.loads(record.value) for record in records]
    return [change for change in found if change["segment"] == SEGMENT]


def members(found: list[dict[str, Any]]) -> set[str]:
    """Who is in the segment after `found` (each visitor's changes are in order: one partition)."""
    inside: set[str] = set()
    for change in found:
        if change["transition"] == "entered":
            inside.add(change["visitor_id"])
        else:
            inside.discard(change["visitor_id"])
    return inside


@pytest.mark.timeout(300)
def test_top_spenders_follow_the_shared_threshold(
    embedded_stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap,
        embedded_stack.redis_url,
        tmp_path / "w",
        partitions=2,
        segments_file=DEFAULT_SEGMENTS_FILE,
        extra_env={"TESSERA_COHORT_RECHECK_S": "0.5"},
    )
    worker = WorkerProcess(config).start()
    try:
        ends = asyncio.run(produce_records(config.kafka, config.events_topic, purchases(FIRST)))
        assert sorted(ends) == [0, 1], ends  # the spenders are spread over both partitions
        worker.wait_committed(ends)

        # Each partition's sketch is on the topic; together they count the 40 spenders.
        worker.wait(
            lambda: sum(r.count for r in published(config).values()) == 40 and len(published(config)) == 2,
            30,
            0.2,
            "both partitions' sketches published",
        )
        threshold, top = expected_members(FIRST)
        assert top == {"v-38", "v-39"} or top == {"v-37", "v-38", "v-39"}, (threshold, top)
        worker.wait(lambda: members(changes(config)) == top, 30, 0.2, f"{SEGMENT} = {sorted(top)}")
        entries = [c for c in changes(config) if c["transition"] == "entered"]
        assert {c["reason"] for c in entries} <= {"cohort", "event"}, entries
        assert entries[0]["attributes"]["spend_p95_365d.electronics"] == pytest.approx(threshold)

        # Ten more spenders, five of them far above: the threshold moves up and v-39 exits by it.
        ends = asyncio.run(produce_records(config.kafka, config.events_topic, purchases(BIG)))
        worker.wait_committed(ends)
        higher, top_after = expected_members(FIRST | BIG)
        assert higher > 6000.0 and top_after and top_after <= {f"big-{i}" for i in range(5, 10)}
        worker.wait(lambda: members(changes(config)) == top_after, 30, 0.2, f"{SEGMENT} after")
        exits = [(c["visitor_id"], c["reason"]) for c in changes(config) if c["transition"] == "exited"]
        assert ("v-39", "cohort") in exits, exits
        assert worker.get("/v1/visitors/v-39")["segments"].count(SEGMENT) == 0
        assert worker.status()["restarts"] == 0
    finally:
        worker.stop()

    # A restarted worker runs with the thresholds on the topic: a member's purchase made while no
    # worker ran is compared with them, not with "unknown" (+infinity), and the member stays.
    before = len(changes(config))
    ends = asyncio.run(produce_records(config.kafka, config.events_topic, purchases({"big-9": 10.0}, "2")))
    worker = WorkerProcess(config).start()
    try:
        worker.wait_committed(ends)
        assert SEGMENT in worker.get("/v1/visitors/big-9")["segments"]
        assert len(changes(config)) == before  # no entry or exit
        assert "cohort_thresholds_read" in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()

    # `tessera segments preview` of a changed quantile takes the new threshold from the same
    # sketches: the members now are the stored ones, after are the spenders at or above the median
    # of the sketches on the topic (every spender counted in them: they lag the profiles by up to a
    # checkpoint, and the last worker stopped after its own).
    final = FIRST | BIG | {"big-9": BIG["big-9"] + 10.0}
    _, top_now = expected_members(final)

    def counting_everyone() -> dict[int, CohortSketchRecord] | None:
        found = published(config)
        return found if sum(r.count for r in found.values()) == len(final) else None

    median = QuantileSketch()
    for record in wait_until(counting_everyone, 30, 0.2, "every spender in the published sketches").values():
        median.merge(QuantileSketch.from_dense(record.alpha, record.offset, record.counts))
    median_value = median.quantile(0.5)
    assert median_value is not None
    top_median = {visitor for visitor, value in final.items() if value >= median_value}
    changed = tmp_path / "median.yaml"
    text = DEFAULT_SEGMENTS_FILE.read_text(encoding="utf-8")
    assert text.count("quantile: 0.95}") == 1
    changed.write_text(text.replace("quantile: 0.95}", "quantile: 0.5}"), encoding="utf-8")
    for name, value in config.tessera_env(0).items():  # for `tessera segments` run in this process
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert cmd_segments(Settings(), build_parser().parse_args(["segments", "preview", str(changed)])) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    now, after, entering, leaving = (int(n.replace(",", "")) for n in rows[SEGMENT][1:])
    assert (now, after) == (len(top_now), len(top_median)), rows[SEGMENT]
    assert (entering, leaving) == (len(top_median - top_now), 0)
