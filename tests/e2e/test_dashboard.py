"""The live dashboard and the persona report on a worker of the embedded stack (issue 18):

- headless Chromium (Debian's, through Playwright's executable path) loads `/dashboard`, waits for
  data, and the size bars show the member counts Redis reports (`GET /v1/segments`), and the lines of
  sizes over time (from ClickHouse's entries and exits) end at the same counts; the screenshot is
  kept in test-artifacts/dashboard.png;
- `tessera report --worker URL` writes one HTML file with a section for every non-empty segment.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.producer import produce_records
from streams.simulate import SimParams, simulate
from streams.testing import WorkerConfig, WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("TESSERA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


@pytest.fixture(scope="module")
def loaded_worker(embedded_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker that has committed a simulated history of 300 visitors (seeded)."""
    sim = simulate(300, seed=18, end=datetime.now(UTC) - timedelta(seconds=5), params=SimParams())
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap,
        embedded_stack.redis_url,
        tmp_path_factory.mktemp("dashboard") / "w",
        extra_env={"TESSERA_IDLE_CLOCK_AFTER_S": "5"},  # the history stays a replay (test_pipeline says why)
    )
    worker = WorkerProcess(config).start()
    try:
        records = [(e["visitor_id"].encode(), orjson.dumps(e)) for e in sim.events]
        ends = asyncio.run(produce_records(config.kafka, config.events_topic, records))
        worker.wait_committed(ends)
        yield worker
    finally:
        worker.stop()


def redis_sizes(worker: WorkerProcess) -> dict[str, int]:
    return {s["id"]: s["members"] for s in worker.get("/v1/segments")["segments"]}


def clickhouse_sizes(worker: WorkerProcess) -> dict[str, int]:
    """The last size of each segment over the last 7 days, as `/v1/dashboard` answers it."""
    flows = worker.get("/v1/dashboard?minutes=10080")["flows"]
    return {segment: points[-1]["size"] for segment, points in flows.items() if points}


def settled_sizes(worker: WorkerProcess) -> dict[str, int]:
    """Redis's non-zero sizes once ClickHouse's entries and exits agree with them (timers, the
    cohort thresholds and the checkpoint may still be moving)."""

    def settled() -> dict[str, int] | None:
        live = {s: n for s, n in redis_sizes(worker).items() if n}
        stored = {s: n for s, n in clickhouse_sizes(worker).items() if n}
        return live if live and live == stored else None

    live = wait_until(settled, 90, 0.5, "ClickHouse sizes equal to Redis's")
    assert isinstance(live, dict)
    return live


@pytest.mark.timeout(300)
def test_dashboard_shows_the_sizes_redis_reports(loaded_worker: WorkerProcess, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is needed: `make test` installs Debian's chromium"
    w = loaded_worker

    live = settled_sizes(w)
    assert isinstance(live, dict) and len(live) >= 3
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(30_000)
            page.goto(f"{w.web}/dashboard")
            page.select_option("#range", "10080")
            page.wait_for_selector("#health[data-loaded='true']")
            page.wait_for_selector("#size-bars g.size-bar")
            page.wait_for_selector("#kpi-table tr.baseline")

            def drawn() -> dict[str, dict[str, int]]:
                bars = page.eval_on_selector_all(
                    "#size-bars g.size-bar",
                    "gs => gs.map(g => [g.dataset.segment, Number(g.dataset.members)])",
                )
                lines = page.eval_on_selector_all(
                    "#size-lines path.size-line",
                    "ps => ps.map(p => [p.dataset.segment, Number(p.dataset.size)])",
                )
                return {"bars": dict(bars), "lines": dict(lines)}

            def matches() -> dict[str, dict[str, int]] | None:
                shown = drawn()
                current = {s: n for s, n in redis_sizes(w).items() if n}
                bars = {s: n for s, n in shown["bars"].items() if n}
                lines_agree = all(current.get(s, 0) == n for s, n in shown["lines"].items())
                return shown if bars == current and shown["lines"] and lines_agree else None

            shown = wait_until(matches, 60, 0.5, "the dashboard's sizes equal to Redis's")
            assert isinstance(shown, dict)
            top = max(live, key=lambda s: live[s])
            assert shown["lines"].get(top) == live[top]  # the largest segment is drawn, at its size
            assert page.locator("#kpi-table tr").count() >= 2
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            (ARTIFACTS / "dashboard.png").write_bytes(shot.read_bytes())
            assert shot.stat().st_size > 5000
        finally:
            browser.close()


@pytest.mark.timeout(300)
def test_report_covers_every_non_empty_segment(loaded_worker: WorkerProcess, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    # The report reads ClickHouse's sizes, the test Redis's: it is taken between two moments at which
    # both agree and nothing moved (a cohort threshold may still move memberships after the load),
    # tried again while they differ.
    for _attempt in range(5):
        before = settled_sizes(loaded_worker)
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "report", "--worker", loaded_worker.web, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        if settled_sizes(loaded_worker) == before:
            break
    else:
        pytest.fail("the segment sizes kept moving while the report was written")
    text = out.read_text()
    nonempty = sorted(before)
    assert nonempty
    for segment in nonempty:
        assert f'data-segment="{segment}"' in text, segment
    assert "Recommended actions" in text
    assert "<script" not in text and "http://" not in text and "https://" not in text  # opens offline
    (ARTIFACTS / "persona_report.html").write_text(text)
