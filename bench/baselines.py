"""Baselines over the workload topic: A (bare Faust agent), B (quixstreams per-visitor update) and
C (the fixed stack's floor: aiokafka consume alone, and with the event contract's validation).

Each runs as its own subprocess (`bench/faust_iterate.py`, `bench/quix_update.py`) with its own
consumer group, reading the topic from the earliest offset. The child appends marks to a file:
`first` when its first record arrives and `done` when the last expected one does, each with
`time.time()` (comparable with the spawn time taken here), `perf_counter()` (for the rate) and
`process_time()` (the process's CPU, all its threads: librdkafka's too).
events/s = (N - 1) / (done - first): the consumer's steady throughput, start-up excluded;
`first_record_s` (spawn → first record) is reported separately as the start-up baseline.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, BenchError, Child, Marks, Workload, note, python_env, wait_until


@dataclass
class ConsumerRun:
    name: str
    events: int
    seconds: float
    events_per_s: float
    first_record_s: float
    """From spawning the process to its first record (group join, start-up)."""
    log: str
    cpu_us_per_event: float = float("nan")
    """The process's CPU between its first and last record, per record (steal time on a VM
    slows the rate but is not CPU, so ratios of this move less from run to run)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _child(
    name: str,
    script: str,
    workload: Workload,
    bootstrap: str,
    workdir: Path,
    group: str,
    extra_env: dict[str, str] | None = None,
) -> tuple[Child, Marks]:
    """A measured child (not started yet) with its own folder and marks file."""
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    marks_path = run_dir / "marks.jsonl"
    env = python_env(
        {
            "BENCH_BROKER": bootstrap,
            "BENCH_TOPIC": workload.topic,
            "BENCH_GROUP": group,
            "BENCH_EXPECT": str(workload.events),
            "BENCH_MARKS": str(marks_path),
            "BENCH_DATADIR": str(run_dir / "data"),
            **(extra_env or {}),
        }
    )
    child = Child(name, [sys.executable, str(BENCH_DIR / script)], env, run_dir / "child.log")
    return child, Marks(marks_path)


def _run_child(
    name: str,
    script: str,
    workload: Workload,
    bootstrap: str,
    workdir: Path,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> ConsumerRun:
    group = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    child, marks = _child(name, script, workload, bootstrap, workdir, group, extra_env)
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
        cpu_us_per_event=(done["cpu"] - first["cpu"]) / (workload.events - 1) * 1e6
        if "cpu" in done and workload.events > 1
        else float("nan"),
    )


def run_faust_baseline(
    workload: Workload, bootstrap: str, workdir: Path, timeout: float = 300
) -> ConsumerRun:
    """Baseline A: a Faust agent that only iterates (raw bytes, no work per record)."""
    note(f"baseline A: bare Faust agent over {workload.events:,} records")
    run = _run_child("faust_iterate", "faust_iterate.py", workload, bootstrap, workdir, timeout)
    note(f"baseline A: {run.events_per_s:,.0f} events/s")
    return run


def run_quix_baseline(
    workload: Workload, bootstrap: str, workdir: Path, timeout: float = 300, name: str = "quix_update"
) -> ConsumerRun:
    """Baseline B: quixstreams, JSON decode + per-visitor state update (count, purchase sum).

    `name` names the run's folder and group: each repeat needs its own."""
    note(f"baseline B: quixstreams per-visitor update over {workload.events:,} records ({name})")
    run = _run_child(name, "quix_update.py", workload, bootstrap, workdir, timeout)
    note(f"baseline B: {run.events_per_s:,.0f} events/s ({run.cpu_us_per_event:,.1f} µs CPU per event)")
    return run


FLOOR_MODES = ("consume", "validate")


def run_floor_baseline(
    workload: Workload, bootstrap: str, workdir: Path, timeout: float = 300
) -> dict[str, ConsumerRun]:
    """Baseline C, both modes (`bench/aiokafka_floor.py`): aiokafka with the worker's consumer
    options, `consume` (records only) and `validate` (plus `ingest.decode_timed` per record, the
    pydantic validation every event must pass). What Python on the fixed stack spends per event
    before any of Tessera's own work: the floor under the pipeline's CPU per event."""
    runs: dict[str, ConsumerRun] = {}
    for mode in FLOOR_MODES:
        note(f"baseline C: aiokafka floor ({mode}) over {workload.events:,} records")
        run = _run_child(
            f"aiokafka_{mode}",
            "aiokafka_floor.py",
            workload,
            bootstrap,
            workdir,
            timeout,
            {"BENCH_FLOOR": mode},
        )
        note(
            f"baseline C ({mode}): {run.events_per_s:,.0f} events/s, {run.cpu_us_per_event:,.1f} µs CPU/event"
        )
        runs[mode] = run
    return runs


QUIX_TICK = 500


def run_quix_scaled(
    workload: Workload, bootstrap: str, workdir: Path, processes: int, timeout: float = 300
) -> ConsumerRun:
    """Baseline B with `processes` quixstreams processes in one consumer group (spawned together).

    No process sees every record, so each marks its count every `QUIX_TICK` records; the run ends
    when the marked counts add up to all but less than one tick per process. Like B's, the rate
    leaves start-up out: it runs from the moment every process has its first record (a process
    that joined late made the group rebalance before that) to the last mark, and counts the
    records marked after that moment.
    """
    note(f"baseline B×{processes}: {processes} quixstreams processes in one group")
    group = f"bench-quix-scaled-{uuid.uuid4().hex[:8]}"
    children = [
        _child(
            f"quix_scaled_{i + 1}",
            "quix_update.py",
            workload,
            bootstrap,
            workdir,
            group,
            {"BENCH_TICK": str(QUIX_TICK)},
        )
        for i in range(processes)
    ]
    for child, _ in children:
        child.start()
    try:

        def all_marked() -> list[list[dict[str, Any]]] | None:
            histories, total = [], 0
            for child, marks in children:
                history = [m for m in marks.history() if m["mark"] in ("first", "tick", "done")]
                if not any(m["mark"] == "done" for m in history):
                    child.check_alive()
                total += int(history[-1]["count"]) if history else 0
                histories.append(history)
            return histories if total >= workload.events - QUIX_TICK * processes else None

        histories = wait_until(all_marked, timeout, 0.05, f"{processes} quixstreams processes")
    finally:
        for child, _ in children:
            code = child.stop()
            note(f"{child.name}: stopped (exit {code})")
    if not all(histories):
        raise BenchError(f"quixstreams ×{processes}: a process got no record; logs in {workdir}")
    begun = max(float(h[0]["perf"]) for h in histories)
    ended = max(float(h[-1]["perf"]) for h in histories)
    counted = 0
    for history in histories:
        before = [int(m["count"]) for m in history if float(m["perf"]) <= begun]
        counted += int(history[-1]["count"]) - (max(before) if before else 0)
    if ended <= begun or counted <= 0:
        raise BenchError(f"quixstreams ×{processes}: no span with every process consuming")
    run = ConsumerRun(
        name=f"quix_scaled_{processes}",
        events=counted,
        seconds=ended - begun,
        events_per_s=counted / (ended - begun),
        first_record_s=float("nan"),
        log=str(children[0][0].log_path),
    )
    note(
        f"baseline B×{processes}: {run.events_per_s:,.0f} events/s over {counted:,} records marked "
        f"after every process had its first ({begun - min(float(h[0]['perf']) for h in histories):.2f} s "
        "after the first process's)"
    )
    return run
