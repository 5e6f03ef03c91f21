"""A worker told to stop while it is still starting stops in order instead of dying mid-join."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from streams.testing import WorkerConfig, WorkerProcess, wait_until


@pytest.mark.timeout(180)
def test_sigterm_during_start_up_stops_the_worker_in_order(embedded_stack: Any, tmp_path: Path) -> None:
    config = WorkerConfig(embedded_stack.kafka_bootstrap, embedded_stack.redis_url, tmp_path / "w")
    worker = WorkerProcess(config).spawn()
    assert worker.proc is not None
    try:
        # `consumer_group` is logged before the engine starts and Faust is imported: a SIGTERM now
        # used to kill the process by the default action (exit -15), leaving its group member.
        wait_until(
            lambda: "consumer_group" in worker.log_path.read_text(errors="replace"),
            90,
            0.01,
            "start-up under way",
        )
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.proc.wait(timeout=90)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert code == 0, log[-4000:]
    assert "early_signal_redelivered" in log, log[-4000:]
