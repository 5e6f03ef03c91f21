"""Baselines A (bare Faust agent) and B (quixstreams per-visitor update) over the workload topic.

Each runs as its own subprocess (`bench/faust_iterate.py`, `bench/quix_update.py`) with its own
consumer group, reading the topic from the earliest offset. The child appends marks to a file:
`first` when its first record arrives and `done` when the last expected one does, each with
`time.time()` (comparable with the spawn time taken here) and `perf_counter()` (for the rate).
events/s = (N - 1) / (done - first): the consumer's steady throughput, start-up excluded;
`first_record_s` (spawn → first record) is reported separately as the start-up baseline.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, Child, Marks, Workload, note, python_env


@dataclass
class ConsumerRun:
    name: str
    events: int
    seconds: float
    events_per_s: float
    first_record_s: float
    """From spawning the process to its first record (group join, start-up)."""
    log: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_child(
    name: str, script: str, workload: Workload, bootstrap: str, workdir: Path, timeout: float
) -> ConsumerRun:
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    marks_path = run_dir / "marks.jsonl"
    env = python_env(
        {
            "BENCH_BROKER": bootstrap,
            "BENCH_TOPIC": workload.topic,
            "BENCH_GROUP": f"bench-{name}-{uuid.uuid4().hex[:8]}",
            "BENCH_EXPECT": str(workload.events),
            "BENCH_MARKS": str(marks_path),
            "BENCH_DATADIR": str(run_dir / "data"),
        }
    )
    child = Child(name, [sys.executable, str(BENCH_DIR / script)], env, run_dir / "child.log")
    marks = Marks(marks_path)
    child.start()
    try:
        first = marks.wait("first", child, timeout=min(120.0, timeout))
        note(f"{name}: first record {first['t'] - child.spawned_at:.1f}s after spawn")
        done = marks.wait("done", child, timeout=timeout)
    finally:
        code = child.stop()
        note(f"{name}: stopped (exit {code})")
    seconds = done["perf"] - first["perf"]
    return ConsumerRun(
        name=name,
        events=workload.events,
        seconds=seconds,
        events_per_s=(workload.events - 1) / seconds if seconds > 0 else float("nan"),
        first_record_s=first["t"] - child.spawned_at,
        log=str(child.log_path),
    )


def run_faust_baseline(
    workload: Workload, bootstrap: str, workdir: Path, timeout: float = 300
) -> ConsumerRun:
    """Baseline A: a Faust agent that only iterates (raw bytes, no work per record)."""
    note(f"baseline A: bare Faust agent over {workload.events:,} records")
    run = _run_child("faust_iterate", "faust_iterate.py", workload, bootstrap, workdir, timeout)
    note(f"baseline A: {run.events_per_s:,.0f} events/s")
    return run


def run_quix_baseline(workload: Workload, bootstrap: str, workdir: Path, timeout: float = 300) -> ConsumerRun:
    """Baseline B: quixstreams, JSON decode + per-visitor state update (count, purchase sum)."""
    note(f"baseline B: quixstreams per-visitor update over {workload.events:,} records")
    run = _run_child("quix_update", "quix_update.py", workload, bootstrap, workdir, timeout)
    note(f"baseline B: {run.events_per_s:,.0f} events/s")
    return run
