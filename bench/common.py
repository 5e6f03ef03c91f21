"""Shared pieces of the benchmark: progress lines, waiting on conditions, child processes, the workload.

Nothing here sleeps to synchronise: every wait polls a condition until a deadline
(`wait_until`, `streams.testing`'s with the bench's error), and every child process is stopped by
its own PID (`Child.stop`, a `streams.testing.ChildProcess`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from streams import testing

if TYPE_CHECKING:
    from streams.simulate import SimParams

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PARTITIONS = 6
WORKLOADS = ("default", "longtail")
"""The simulated traffic a workload is drawn from: `default` the shipped persona mix (≈ 75 events per
visitor), `longtail` `streams.simulate.LONG_TAIL_MIX` (≈ 1.9 events per visitor)."""
EVENTS_PER_VISITOR_GUESS = {"default": 60.0, "longtail": 1.8}
"""Per workload, a little under its events per visitor: ask for a few more visitors than needed, then
cut."""

T = TypeVar("T")
_STARTED = time.monotonic()


def note(message: str) -> None:
    """One progress line on stderr, stamped with the seconds since the bench started."""
    sys.stderr.write(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}\n")
    sys.stderr.flush()


class BenchError(RuntimeError):
    """A step could not be measured (the message says why; logs are named in it)."""


def wait_until(
    predicate: Callable[[], T | None], timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """`streams.testing.wait_until`, past `timeout` seconds a BenchError.

    Exceptions other than BenchError count as "not yet" (a web server may not listen yet); a
    BenchError raised by the predicate (a child died) ends the wait at once.
    """
    try:
        return testing.wait_until(
            predicate, timeout, interval, what or repr(predicate), ignore=(Exception,), fatal=(BenchError,)
        )
    except testing.WaitTimeout as exc:
        raise BenchError(str(exc)) from exc


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# -- child processes ------------------------------------------------------------------------------


class BenchProcess(testing.ChildProcess):
    """What every child process of the bench shares: one that exited raises BenchError (with the
    tail of its log), and one that ignores SIGTERM is noted before its SIGKILL."""

    exited_error = BenchError
    log_tail_lines = 40

    def stop(self, timeout: float = 20.0, kill_timeout: float | None = None) -> int | None:
        """SIGTERM this child's PID, wait up to `timeout`, then SIGKILL (and wait as long again)."""
        return super().stop(timeout, timeout if kill_timeout is None else kill_timeout)

    def on_sigterm_ignored(self, timeout: float) -> None:
        note(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout:.0f}s: SIGKILL")


SEGMENTS_FILE_ENV = "TESSERA_SEGMENTS_FILE"


def definitions_file() -> Path:
    """The definitions the bench's workers and core steps run: the worker's own setting
    (`Settings.segments_file`: `TESSERA_SEGMENTS_FILE`, which `--segments-file` sets and the workers
    inherit, else the shipped defaults). The latency step runs its own one-segment file."""
    from streams.settings import Settings

    return Settings().segments_file


class Child(BenchProcess):
    """A measured child (a baseline, the bare relay), run in the repository's folder; `start()`
    spawns it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(name, argv, env, log_path, cwd=ROOT)


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a Python child: this one, the repo on the path, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra or {})
    return env


class Marks:
    """Reads the JSON lines a measured child appends to its marks file (`first`, `progress`, `done`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        """The latest record of each mark."""
        return {record["mark"]: record for record in self.history()}

    def history(self) -> list[dict[str, Any]]:
        """Every complete mark line, in the order written."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def wait(self, mark: str, child: Child, timeout: float) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            child.check_alive()
            return self.read().get(mark)

        return wait_until(seen, timeout, 0.05, f"{child.name} to report {mark!r}")


def write_mark(path: Path, mark: str, **values: Any) -> None:
    """Append one mark line (used by the measured children; one write call per line)."""
    with open(path, "a") as out:
        out.write(json.dumps({"mark": mark, "t": time.time(), **values}) + "\n")


# -- workload -------------------------------------------------------------------------------------


@dataclass
class Workload:
    """The N events every throughput step consumes, produced once to `topic`."""

    topic: str
    events: int
    visitors: int
    mean_bytes: float
    ends: dict[int, int] = field(default_factory=dict)
    """partition → last offset + 1, from the producer's RecordMetadata (never ListOffsets)."""
    produce_seconds: float = 0.0
    simulate_seconds: float = 0.0
    kind: str = "default"
    """Which of `WORKLOADS` the events were drawn from."""

    @property
    def produce_eps(self) -> float:
        return self.events / self.produce_seconds if self.produce_seconds else math.nan


def simulation_params(kind: str) -> SimParams | None:
    """The `SimParams` of a workload in `WORKLOADS` (None: the simulator's defaults)."""
    from streams.simulate import LONG_TAIL_MIX, SimParams

    if kind not in WORKLOADS:
        raise ValueError(f"unknown workload {kind!r}; choose from {', '.join(WORKLOADS)}")
    return SimParams(mix=LONG_TAIL_MIX) if kind == "longtail" else None


def simulated_events(n: int, seed: int, kind: str = "default") -> list[dict[str, Any]]:
    """The first `n` events (by event time) of a simulation of workload `kind` with enough visitors
    to have `n`."""
    from streams.simulate import simulate

    params = simulation_params(kind)
    visitors = max(10, math.ceil(n / EVENTS_PER_VISITOR_GUESS[kind]))
    end = datetime.now(UTC)
    while True:
        sim = simulate(visitors, seed, end, params=params)
        if len(sim.events) >= n:
            return sim.events[:n]
        visitors = math.ceil(visitors * 1.3 * n / max(len(sim.events), 1))


def encode_events(events: Iterable[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(e["visitor_id"].encode(), orjson.dumps(e)) for e in events]


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = PARTITIONS) -> None:
    """Create topics with an explicit `retention.ms` (Tessera's events retention).

    The embedded broker's DescribeConfigs returns only the configs a topic was created with, no
    broker defaults; quixstreams derives its changelog config from the source topic's
    `retention.ms` and fails with KeyError('retention.ms') when it is missing.
    """
    from infra.topics import EVENTS_RETENTION_MS, TopicSpec, ensure_topics

    config = {"retention.ms": str(EVENTS_RETENTION_MS)}
    await ensure_topics(bootstrap, [TopicSpec(name, partitions, 1, dict(config)) for name in names])


async def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]], linger_ms: int = 5
) -> dict[int, int]:
    """Send every (key, value); return partition → last offset + 1 from the RecordMetadata."""
    from streams.producer import produce_records

    return await produce_records(bootstrap, topic, records, linger_ms=linger_ms)


def build_workload(
    bootstrap: str, topic: str, n: int, seed: int, kind: str = "default"
) -> tuple[Workload, list[dict[str, Any]]]:
    """Simulate `n` events of workload `kind`, produce them once to a fresh `topic` (6 partitions,
    key = visitor_id)."""
    begun = time.perf_counter()
    events = simulated_events(n, seed, kind)
    simulate_s = time.perf_counter() - begun
    records = encode_events(events)
    mean_bytes = sum(len(v) for _, v in records) / max(len(records), 1)
    asyncio.run(create_topics(bootstrap, [topic]))
    begun = time.perf_counter()
    ends = asyncio.run(produce(bootstrap, topic, records))
    produce_s = time.perf_counter() - begun
    workload = Workload(
        topic=topic,
        events=len(records),
        visitors=len({e["visitor_id"] for e in events}),
        mean_bytes=mean_bytes,
        ends=ends,
        produce_seconds=produce_s,
        simulate_seconds=simulate_s,
        kind=kind,
    )
    if sum(ends.values()) != len(records):
        raise BenchError(
            f"produced {len(records)} records but the offsets add up to {sum(ends.values())}: {ends}"
        )
    return workload, events


# -- load from other processes ----------------------------------------------------------------------


def own_cpu_seconds() -> float:
    """CPU seconds of this process and all its descendants (live ones and those already reaped)."""
    import psutil

    me = psutil.Process()
    times = me.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in me.children(recursive=True):
        try:
            ct = child.cpu_times()
        except psutil.Error:
            continue
        total += ct.user + ct.system
    return float(total)


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    import psutil

    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times) - idle)


@dataclass
class LoadMeter:
    """How much CPU processes outside this bench used while a step ran (other sessions' tests...)."""

    wall: float = field(default_factory=time.monotonic)
    busy: float = field(default_factory=busy_cpu_seconds)
    own: float = field(default_factory=own_cpu_seconds)

    def foreign_cores(self) -> float:
        """Average number of cores used by other processes since this meter was created."""
        wall = time.monotonic() - self.wall
        if wall <= 0:
            return 0.0
        foreign = (busy_cpu_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        return max(0.0, foreign / wall)
