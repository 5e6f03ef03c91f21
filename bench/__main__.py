"""`python -m bench` (`make bench`): Tessera against baselines run in the same run, one table.

Steps (all by default; `--steps` picks some): baselines A (bare Faust agent), B (quixstreams
per-visitor update) and C (aiokafka consume, and with the event contract's validation: the fixed
stack's floor), the Tessera pipeline (throughput), start-up (restart on the existing group,
changelog recovery), latency (produce → segment change at fixed rates, and the aiokafka floor),
timers (due moment → time-driven segment change consumed, on an idle worker),
memory per profile (dict vs RocksDB), hot path (cProfile of `process_batch`). Every workload of
`--workloads` besides the default (`longtail`: one-time visitors of 1-5 events) gets B, the pipeline
and memory per profile too, in rows of its own section. One `EmbeddedStack`
in a temporary folder serves the whole run and is stopped by PID at the end. Progress goes to
stderr; the table to stdout; a JSON copy to `bench/results/<commit>-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    ROOT,
    SEGMENTS_FILE_ENV,
    WORKLOADS,
    LoadMeter,
    Workload,
    build_workload,
    create_topics,
    definitions_file,
    encode_events,
    note,
    simulated_events,
)

WORKLOAD_STEPS = ("quix", "pipeline", "memory")
"""The steps that also run on every workload of `--workloads` besides `default` (the others run on the
default workload only)."""
STEPS = (
    "faust",
    "quix",
    "floor",
    "pipeline",
    "startup",
    "recovery",
    "scale",
    "latency",
    "timers",
    "memory",
    "hotpath",
    "segments",
)
KAFKA_STEPS = {"faust", "quix", "floor", "pipeline", "startup", "recovery", "scale", "latency", "timers"}
DEFAULTS = {
    "events": 100_000,
    "latency_seconds": 10.0,
    "latency_repeats": 3,
    "throughput_repeats": 3,
    "profiles": 100_000,
    "hotpath_events": 50_000,
    "template_visitors": 300,
}
QUICK = {
    "events": 20_000,
    "latency_seconds": 5.0,
    "latency_repeats": 1,
    "throughput_repeats": 1,
    "profiles": 20_000,
    "hotpath_events": 10_000,
    "template_visitors": 100,
}


@dataclass
class Row:
    section: str
    what: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    note: str = ""


@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    foreign_cores: dict[str, float] = field(default_factory=dict)
    """Per step: average cores other processes on the machine used meanwhile (noise indicator)."""

    def step(self, name: str, action: Callable[[], Any], enabled: bool | None = None) -> Any:
        """Run one measured step; a failure is recorded (and shown in the table), not fatal."""
        if not (name in self.args.steps if enabled is None else enabled):
            return None
        begun = time.monotonic()
        meter = LoadMeter()
        try:
            value = action()
        except Exception as exc:  # a failed step is reported; the others still run
            self.foreign_cores[name] = meter.foreign_cores()
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            note(f"{name}: FAILED after {time.monotonic() - begun:.0f}s: {str(exc).splitlines()[0][:300]}")
            if self.args.verbose:
                traceback.print_exc()
            return None
        self.foreign_cores[name] = meter.foreign_cores()
        if self.foreign_cores[name] >= 0.25:
            note(f"{name}: other processes used {self.foreign_cores[name]:.2f} cores meanwhile (noise)")
        self.results[name] = value
        return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: about 2 minutes on 2 cores")
    parser.add_argument("--events", type=int, help="workload events (default 100k; quick 20k)")
    parser.add_argument("--latency-seconds", type=float, help="seconds per latency run (default 10; quick 5)")
    parser.add_argument(
        "--latency-repeats",
        type=int,
        help="runs per latency rate, each on fresh topics with a fresh worker; the table shows the "
        "median (default 3; quick 1)",
    )
    parser.add_argument(
        "--throughput-repeats",
        type=int,
        help="quixstreams and pipeline runs over the workload topic, alternating, each with a fresh "
        "group; the table shows each one's median and lists every run (default 3; quick 1)",
    )
    parser.add_argument("--rates", default="500,2000", help="latency rates in events/s, comma-separated")
    parser.add_argument("--profiles", type=int, help="profiles for the memory step (default 100k; quick 20k)")
    parser.add_argument(
        "--template-visitors",
        type=int,
        help="simulated visitors whose full profiles are cloned (default 300; quick 100)",
    )
    parser.add_argument(
        "--hotpath-events", type=int, help="records for the hot path (default 50k; quick 10k)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=5000, help="hot path batch size (the worker's default)"
    )
    parser.add_argument(
        "--scale-workers", type=int, default=2, help="workers in one group for the scale step (default 2)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--workloads",
        default="default",
        help="comma-separated workloads, 'default' first; each other one (longtail: one-time visitors, "
        f"≈ 1.9 events each) also gets the {', '.join(WORKLOAD_STEPS)} steps, rows labelled with its name "
        f"(default: default only; {','.join(WORKLOADS)} adds ≈ 3 min to a full run)",
    )
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}"
    )
    parser.add_argument(
        "--segments-file",
        type=Path,
        default=None,
        help="definitions the workers and the core steps run (default: TESSERA_SEGMENTS_FILE, else the "
        "shipped segments/default.yaml); e.g. an older commit's defaults, to compare engines on the "
        "same definitions",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here (default: temp)")
    parser.add_argument(
        "--no-live-fallback",
        dest="live_fallback",
        action="store_false",
        help="if the pipeline run over the pre-filled topic fails, do not re-run it with live produce",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed steps")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(args.steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workloads or args.workloads[0] != "default" or set(args.workloads) - set(WORKLOADS):
        parser.error(f"--workloads: 'default' first, then any of {', '.join(WORKLOADS[1:])}")
    from streams.core.definitions import DefinitionError

    if args.segments_file is not None:
        # The workers inherit it (`streams.testing.worker.WorkerConfig.segments_file` is None).
        os.environ[SEGMENTS_FILE_ENV] = str(args.segments_file.resolve())
    try:
        args.definitions = definitions_label()
    except (OSError, DefinitionError) as exc:
        parser.error(f"--segments-file: {exc}")
    return args


def definitions_label() -> str:
    """Which definitions the run's workers use: file, version and segment count (for the header)."""
    from streams.core.definitions import load_definitions

    path = definitions_file()
    defs = load_definitions(path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown} (version {defs.version}, {len(defs.segments)} segments)"


def git_commit() -> tuple[str, bool]:
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "nogit"
    dirty = bool(git("status", "--porcelain", "--untracked-files=normal"))
    return commit, dirty


@contextlib.contextmanager
def workspace(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the run ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> Run:
    from infra.stack import EmbeddedStack

    state = Run(args, workdir)
    if KAFKA_STEPS & set(args.steps):
        stack = EmbeddedStack(workdir / "stack")
        note(f"starting the embedded stack in {workdir / 'stack'}")
        endpoints = stack.start()
        try:
            note(f"stack: kafka {endpoints.kafka_bootstrap}, redis {endpoints.redis_url} (pids {stack.pids})")
            kafka_steps(state, endpoints.kafka_bootstrap, endpoints.redis_url)
        finally:
            stack.stop()
            note("stack stopped")
    from bench.hotpath import run_hotpath
    from bench.memory import measure_memory

    state.step("memory", lambda: measure_memory(args.profiles, args.template_visitors, args.seed, workdir))
    for kind in args.workloads[1:]:
        state.step(
            f"memory_{kind}",
            functools.partial(
                measure_memory, args.profiles, args.template_visitors, args.seed, workdir, kind=kind
            ),
            enabled="memory" in args.steps,
        )

    def hotpath() -> Any:
        note(f"hot path: process_batch over {args.hotpath_events:,} simulated records (timed, then cProfile)")
        result = run_hotpath(
            encode_events(simulated_events(args.hotpath_events, args.seed)), args.batch_size, workdir=workdir
        )
        note(f"hot path: {result.events_per_s:,.0f} events/s in-process, {result.gc_share:.0%} in cyclic GC")
        return result

    state.step("hotpath", hotpath)

    def segments() -> Any:
        from bench.segment_scale import measure_segment_scale

        return measure_segment_scale(
            encode_events(simulated_events(args.hotpath_events, args.seed)), args.batch_size
        )

    state.step("segments", segments)
    return state


def kafka_steps(state: Run, kafka: str, redis_url: str) -> None:
    from bench.baselines import (
        run_faust_baseline,
        run_floor_baseline,
        run_quix_baseline,
        run_quix_scaled,
    )
    from bench.latency import measure_floor, measure_relay, measure_tessera
    from bench.pipeline import WorkerSpec, run_large_recovery, run_pipeline, run_restart, run_scaled
    from bench.timers import measure_timers

    args, workdir = state.args, state.workdir
    workload: Workload | None = None
    events: list[dict[str, Any]] = []
    needs_workload = {"faust", "quix", "floor", "pipeline", "startup", "scale"} & set(args.steps)

    if needs_workload:
        topic = f"bench-events-{uuid.uuid4().hex[:8]}"
        note(f"workload: simulating {args.events:,} events, producing them to {topic} (6 partitions)")
        try:
            workload, events = build_workload(kafka, topic, args.events, args.seed)
        except Exception as exc:  # reported like a failed step
            state.errors["workload"] = f"{type(exc).__name__}: {exc}"
            note(f"workload: FAILED: {exc}")
        else:
            state.results["workload"] = workload
            note(
                f"workload: {workload.events:,} events from {workload.visitors:,} visitors, "
                f"{workload.mean_bytes:.0f} B mean, produced at {workload.produce_eps:,.0f} events/s"
            )
    timeout = max(300.0, args.events / 200)
    if workload is not None:
        wl = workload
        state.step("faust", lambda: run_faust_baseline(wl, kafka, workdir, timeout))
        state.step("quix", lambda: run_quix_baseline(wl, kafka, workdir, timeout))
        state.step("floor", lambda: run_floor_baseline(wl, kafka, workdir, timeout))
        spec = WorkerSpec(kafka, redis_url, workdir / "tessera", wl.topic)
        restart_spec = spec
        pipe = state.step("pipeline", lambda: run_pipeline(wl, spec, timeout))
        throughput_repeats(state, wl, kafka, redis_url, timeout)
        if pipe is None and "pipeline" in args.steps and args.live_fallback:
            live_topic = f"{wl.topic}-live"
            note(f"pipeline: re-running with the events produced after the worker is ready ({live_topic})")
            asyncio.run(create_topics(kafka, [live_topic]))
            live_spec = WorkerSpec(kafka, redis_url, workdir / "tessera-live", live_topic)
            records = encode_events(events)
            live = state.step(
                "pipeline_live", lambda: run_pipeline(wl, live_spec, timeout, records), enabled=True
            )
            if live is not None:
                restart_spec = live_spec
        state.step("startup", lambda: run_restart(restart_spec, timeout))
        scale_id = uuid.uuid4().hex[:10]
        scale_specs = [
            WorkerSpec(kafka, redis_url, workdir / f"tessera-scale-{i + 1}", wl.topic, run_id=scale_id)
            for i in range(args.scale_workers)
        ]
        state.step("scale", lambda: run_scaled(wl, scale_specs, timeout))
        if "scale" in args.steps:
            # The same shape for the peer: as many quixstreams processes in one group.
            state.step(
                "quix_scaled",
                lambda: run_quix_scaled(wl, kafka, workdir, args.scale_workers, timeout),
                enabled=True,
            )
    state.step(
        "recovery",
        lambda: run_large_recovery(
            kafka, redis_url, workdir, args.profiles, args.template_visitors, args.seed, max(300.0, timeout)
        ),
    )
    if "latency" in args.steps:
        sample = next((e for e in events if e.get("type") == "page_view"), None)
        if sample is None:
            sample = next(e for e in simulated_events(500, args.seed) if e.get("type") == "page_view")
        template = sample

        def latency() -> dict[str, Any]:
            # Repeats alternate floor, relay and worker runs, so all see the machine in the same state.
            floor: list[Any] = []
            relay: list[Any] = []
            tessera: list[Any] = []
            for repeat in range(args.latency_repeats):
                if args.latency_repeats > 1:
                    note(f"latency: run {repeat + 1} of {args.latency_repeats}")
                floor += measure_floor(kafka, args.rates, args.latency_seconds, template)
                relay += measure_relay(kafka, workdir, args.rates, args.latency_seconds, template)
                tessera += measure_tessera(
                    kafka, redis_url, workdir, args.rates, args.latency_seconds, template
                )
            return {"floor": floor, "relay": relay, "tessera": tessera}

        state.step("latency", latency)
    state.step("timers", lambda: measure_timers(kafka, redis_url, workdir))
    for kind in args.workloads[1:]:
        workload_throughput(state, kind, kafka, redis_url)


def workload_throughput(state: Run, kind: str, kafka: str, redis_url: str) -> None:
    """B (quixstreams) and the Tessera pipeline over a topic of workload `kind`, as for the default
    workload (`--throughput-repeats` alternating runs); results and steps are named `…_<kind>`."""
    from bench.baselines import run_quix_baseline
    from bench.pipeline import WorkerSpec, run_pipeline

    args, workdir = state.args, state.workdir
    if not {"quix", "pipeline"} & set(args.steps):
        return
    topic = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    note(f"workload {kind}: simulating {args.events:,} events, producing them to {topic} (6 partitions)")
    try:
        wl, _ = build_workload(kafka, topic, args.events, args.seed, kind)
    except Exception as exc:  # reported like a failed step
        state.errors[f"workload_{kind}"] = f"{type(exc).__name__}: {exc}"
        note(f"workload {kind}: FAILED: {exc}")
        return
    state.results[f"workload_{kind}"] = wl
    note(
        f"workload {kind}: {wl.events:,} events from {wl.visitors:,} visitors, "
        f"{wl.mean_bytes:.0f} B mean, produced at {wl.produce_eps:,.0f} events/s"
    )
    timeout = max(300.0, args.events / 200)
    state.step(
        f"quix_{kind}",
        functools.partial(run_quix_baseline, wl, kafka, workdir, timeout, name=f"quix_update_{kind}"),
        enabled="quix" in args.steps,
    )
    spec = WorkerSpec(kafka, redis_url, workdir / f"tessera-{kind}", wl.topic)
    state.step(
        f"pipeline_{kind}",
        functools.partial(run_pipeline, wl, spec, timeout),
        enabled="pipeline" in args.steps,
    )
    throughput_repeats(state, wl, kafka, redis_url, timeout, f"_{kind}")


def throughput_repeats(
    state: Run, wl: Workload, kafka: str, redis_url: str, timeout: float, suffix: str = ""
) -> None:
    """More quixstreams and pipeline runs over the same topic, alternating with fresh groups, so
    both see the machine in the same state; `quix<suffix>` and `pipeline<suffix>` become the median
    runs (by events/s) and `quix<suffix>_runs` / `pipeline<suffix>_runs` keep every run. A single
    pipeline run moved by ± 20 % between runs of one commit on this VM."""
    from bench.baselines import run_quix_baseline
    from bench.pipeline import WorkerSpec, run_pipeline

    args, workdir = state.args, state.workdir
    quix_key, pipeline_key = f"quix{suffix}", f"pipeline{suffix}"
    quix_runs = [state.results[quix_key]] if quix_key in state.results else []
    pipeline_runs = [state.results[pipeline_key]] if pipeline_key in state.results else []
    for repeat in range(2, args.throughput_repeats + 1):
        note(f"throughput{suffix}: run {repeat} of {args.throughput_repeats}")
        if quix_runs:
            name = f"quix_update{suffix}_{repeat}"
            quix = state.step(
                f"{quix_key}_{repeat}",
                functools.partial(run_quix_baseline, wl, kafka, workdir, timeout, name=name),
                enabled=True,
            )
            if quix is not None:
                quix_runs.append(quix)
        if pipeline_runs:
            spec = WorkerSpec(kafka, redis_url, workdir / f"tessera{suffix}-{repeat}", wl.topic)
            pipe = state.step(
                f"{pipeline_key}_{repeat}",
                functools.partial(run_pipeline, wl, spec, timeout),
                enabled=True,
            )
            if pipe is not None:
                pipeline_runs.append(pipe)
    for name, runs in ((quix_key, quix_runs), (pipeline_key, pipeline_runs)):
        if runs:
            state.results[f"{name}_runs"] = runs
            state.results[name] = median_run(runs)


def median_run(runs: list[Any]) -> Any:
    """The run with the median events/s (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.events_per_s)
    return ordered[(len(ordered) - 1) // 2]


def _median_cpu(state: Run, name: str) -> float:
    """Median CPU µs per event over a step's runs (NaN when it was not measured)."""
    runs = state.results.get(f"{name}_runs") or ([state.results[name]] if name in state.results else [])
    values = [r.cpu_us_per_event for r in runs if not math.isnan(r.cpu_us_per_event)]
    return statistics.median(values) if values else float("nan")


def _runs_note(state: Run, name: str) -> str:
    runs = state.results.get(f"{name}_runs") or []
    if len(runs) < 2:
        return ""
    return "median of " + ", ".join(f"{r.events_per_s:,.0f}" for r in runs) + " ev/s; "


# -- the table --------------------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or not base or math.isnan(value) or math.isnan(base):
        return None
    return value / base


def _n(value: float | None, unit: str, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f} {unit}".strip()


def build_rows(state: Run) -> list[Row]:
    r, err = state.results, state.errors
    rows: list[Row] = []

    def failed(section: str, what: str, step: str) -> None:
        message = err.get(step, "")
        first = message.splitlines()[0] if message else ""
        rows.append(Row(section, what, "FAILED", note=(first[:90] + "…") if len(first) > 90 else first))

    wl: Workload | None = r.get("workload")
    if wl is not None:
        rows.append(
            Row(
                "workload",
                f"{wl.events:,} events, {wl.visitors:,} visitors, 6 partitions",
                _n(wl.mean_bytes, "B/event"),
                note="simulate() events as JSON",
            )
        )
        rows.append(Row("workload", "aiokafka produce (batched, acks=all)", _n(wl.produce_eps, "ev/s")))
    elif "workload" in err:
        failed("workload", "simulate + produce", "workload")

    faust, quix, pipe, hot = r.get("faust"), r.get("quix"), r.get("pipeline"), r.get("hotpath")
    a = faust.events_per_s if faust else None
    b = quix.events_per_s if quix else None
    if faust:
        rows.append(Row("throughput", "A  Faust agent, iterate only", _n(a, "ev/s")))
    elif "faust" in state.args.steps:
        failed("throughput", "A  Faust agent, iterate only", "faust")
    if quix:
        rows.append(
            Row(
                "throughput",
                "B  quixstreams, JSON + per-visitor state",
                _n(b, "ev/s"),
                f"A {_n(a, 'ev/s')}" if a else "",
                _ratio(b, a),
                _runs_note(state, "quix")
                + ("" if math.isnan(quix.cpu_us_per_event) else f"{quix.cpu_us_per_event:,.1f} µs CPU/event"),
            )
        )
    elif "quix" in state.args.steps:
        failed("throughput", "B  quixstreams, JSON + per-visitor state", "quix")
    stack_floor: dict[str, Any] | None = r.get("floor")
    if stack_floor:
        for mode, label in (
            ("consume", "C  aiokafka consume only (the worker's options)"),
            ("validate", "C' aiokafka + the event contract's validation"),
        ):
            run = stack_floor[mode]
            share = (
                f" = {run.cpu_us_per_event / quix.cpu_us_per_event:.0%} of B's"
                if quix and not math.isnan(quix.cpu_us_per_event)
                else ""
            )
            rows.append(
                Row(
                    "throughput",
                    label,
                    _n(run.events_per_s, "ev/s"),
                    f"B {_n(b, 'ev/s')}" if b else "",
                    _ratio(run.events_per_s, b),
                    f"{run.cpu_us_per_event:,.1f} µs CPU/event{share}"
                    + ("; no profile, segments or sinks" if mode == "validate" else ""),
                )
            )
    elif "floor" in state.args.steps:
        failed("throughput", "C  aiokafka floor (consume, validate)", "floor")
    if "pipeline" in err:
        failed("throughput", "Tessera pipeline, ready → all committed", "pipeline")
    live = r.get("pipeline_live")
    if pipe is None and live is not None:
        pipe = live
    if pipe:
        z = pipe.events_per_s
        floor_cpu = stack_floor["validate"].cpu_us_per_event if stack_floor else None
        rows += _pipeline_rows(state, "throughput", "", pipe, b, floor_cpu)
        if a:
            rows.append(
                Row("throughput", "Tessera pipeline vs A", _n(z, "ev/s"), f"A {_n(a, 'ev/s')}", _ratio(z, a))
            )
    if "pipeline_live" in err:
        failed("throughput", "Tessera pipeline, live produce → all committed", "pipeline_live")
    scaled = r.get("scale")
    quix_scaled = r.get("quix_scaled")
    if quix_scaled:
        rows.append(
            Row(
                "throughput",
                f"B×{scaled.workers if scaled else '?'}  quixstreams, processes in one group",
                _n(quix_scaled.events_per_s, "ev/s"),
                f"B {_n(b, 'ev/s')}" if b else "",
                _ratio(quix_scaled.events_per_s, b),
            )
        )
    elif "quix_scaled" in err:
        failed("throughput", "quixstreams, several processes in one group", "quix_scaled")
    if scaled:
        one = pipe.events_per_s if pipe else None
        peer = quix_scaled.events_per_s if quix_scaled else b
        rows.append(
            Row(
                "throughput",
                f"Tessera pipeline, {scaled.workers} workers in one group",
                _n(scaled.events_per_s, "ev/s"),
                (f"B×{scaled.workers} " if quix_scaled else "B ") + _n(peer, "ev/s") if peer else "",
                _ratio(scaled.events_per_s, peer),
                (f"{scaled.events_per_s / one:.2f}× one worker's; " if one else "")
                + f"{scaled.cpu_us_per_event:,.0f} µs CPU/event in all workers; "
                f"{scaled.processed - scaled.events:,} records replayed after rebalances",
            )
        )
    elif "scale" in state.args.steps:
        failed("throughput", "Tessera pipeline, several workers in one group", "scale")
    if hot:
        base = pipe.events_per_s if pipe else None
        rows.append(
            Row(
                "throughput",
                "Tessera core alone (process_batch, no I/O)",
                _n(hot.events_per_s, "ev/s"),
                f"pipeline {_n(base, 'ev/s')}" if base else "",
                _ratio(hot.events_per_s, base),
                f"{hot.us_per_event:,.0f} µs/event; {hot.gc_share:.0%} of it cyclic GC "
                f"({hot.events_per_s_gc_off:,.0f} ev/s with gc off)",
            )
        )
        if hot.sink_rows_per_insert:
            rows.append(
                Row(
                    "throughput",
                    f"ClickHouse sink alone (chDB in-process, {hot.sink_rows_per_insert:,} rows/insert)",
                    f"{hot.sink_cpu_us_per_event:,.0f} µs/event",
                    f"pipeline {pipe.cpu_us_per_event:,.0f} µs/event" if pipe else "",
                    _ratio(hot.sink_cpu_us_per_event, pipe.cpu_us_per_event if pipe else None),
                    "CPU of row building, serialisation, chDB's insert and its merges meanwhile",
                )
            )
    elif "hotpath" in state.args.steps:
        failed("throughput", "Tessera core alone (process_batch, no I/O)", "hotpath")

    scale = r.get("segments")
    if scale:
        runs = scale["runs"]
        base = runs.get("10")
        for count, run in runs.items():
            rows.append(
                Row(
                    "segments",
                    f"core per event with {int(count):,} generated segments",
                    f"{run['us_per_event']:,.1f} µs/event",
                    f"10 segments {base['us_per_event']:,.1f} µs/event" if base else "",
                    _ratio(run["us_per_event"], base["us_per_event"] if base else None),
                    f"{run['events_per_s']:,.0f} events/s over {scale['events']:,} records, "
                    f"{run['changes']:,} changes (goal for 1,000: < 2×)",
                )
            )
    elif "segments" in state.args.steps:
        failed("segments", "core per event with 10/100/1,000 generated segments", "segments")

    lat = r.get("latency")
    if lat:
        for rate in sorted({run.rate for run in lat["tessera"]}):
            runs = [run for run in lat["tessera"] if run.rate == rate]
            floors = [run for run in lat["floor"] if run.rate == rate]
            relays = [run for run in lat.get("relay", []) if run.rate == rate]

            def median(of: list[Any], q: str) -> float | None:
                return statistics.median(getattr(run, f"{q}_ms") for run in of) if of else None

            for q in ("p50", "p99"):
                value = median(runs, q)
                # Baseline: the bare relay (the same two broker hops); the one-hop floor is noted.
                base = median(relays, q)
                floor = median(floors, q)
                each = ", ".join(f"{getattr(run, f'{q}_ms'):,.1f}" for run in runs)
                label = "median of " if len(runs) > 1 else ""
                if q == "p50":
                    matched, sent = sum(run.matched for run in runs), sum(run.sent for run in runs)
                    note_text = f"{matched:,}/{sent:,} matched" + (f"; runs {each}" if len(runs) > 1 else "")
                else:
                    worst = max(run.max_ms for run in runs)
                    note_text = (f"runs {each}; " if len(runs) > 1 else "") + f"max {worst:,.0f} ms"
                if relays and len(relays) > 1:
                    note_text += "; relay runs " + ", ".join(f"{getattr(r, f'{q}_ms'):,.1f}" for r in relays)
                if floor is not None:
                    note_text += f"; one hop (produce→consume) {_n(floor, 'ms', 1)}"
                rows.append(
                    Row(
                        "latency",
                        f"produce → segment change {q} @{rate:,}/s"
                        + (f" ({label}{len(runs)} runs)" if len(runs) > 1 else ""),
                        _n(value, "ms", 1),
                        f"bare relay, two hops {_n(base, 'ms', 1)}" if base is not None else "",
                        _ratio(value, base),
                        note_text,
                    )
                )
    elif "latency" in state.args.steps:
        failed("latency", "produce → segment change", "latency")
    timers = r.get("timers")
    if timers:
        for q in ("p50", "p99"):
            rows.append(
                Row(
                    "latency",
                    f"due moment → time-driven change consumed {q}, idle worker",
                    _n(getattr(timers, f"{q}_ms"), "ms", 1),
                    note=(
                        f"{timers.matched:,}/{timers.visitors:,} carts abandoned; due → worker batch start "
                        f"{_n(getattr(timers, f'fired_{q}_ms'), 'ms', 1)}"
                        + (f"; max {timers.max_ms:,.0f} ms" if q == "p99" else "")
                    ),
                )
            )
    elif "timers" in state.args.steps:
        failed("latency", "due moment → time-driven change", "timers")

    mem = r.get("memory")
    if mem:
        d, k = mem["dict"], mem["rocksdb"]
        rows.append(
            Row(
                "memory",
                "in-memory store (dict of bytes): RSS/profile",
                _n(d["rss_per_profile"], "B"),
                f"serialised profile {_n(d['mean_serialized_bytes'], 'B')}",
                _ratio(d["rss_per_profile"], d["mean_serialized_bytes"]),
                f"{d['profiles']:,} profiles cloned from {d['template_profiles']} full histories",
            )
        )
        rows.append(
            Row(
                "memory",
                "RocksDB (rocksdict): RSS/profile",
                _n(k["rss_per_profile"], "B"),
                f"dict {_n(d['rss_per_profile'], 'B')}",
                _ratio(k["rss_per_profile"], d["rss_per_profile"]),
                f"{k['disk_bytes_per_profile']:,.0f} B/profile on disk",
            )
        )
        rows.append(
            Row(
                "memory",
                "RocksDB write per profile",
                _n(k["write_us"], "µs", 1),
                f"dict {_n(d['write_us'], 'µs', 1)}",
                _ratio(k["write_us"], d["write_us"]),
            )
        )
        rows.append(
            Row(
                "memory",
                "RocksDB read per profile (shuffled)",
                _n(k["read_us"], "µs", 1),
                f"dict {_n(d['read_us'], 'µs', 2)}",
                _ratio(k["read_us"], d["read_us"]),
            )
        )
    elif "memory" in state.args.steps:
        failed("memory", "memory per profile", "memory")

    start = r.get("startup")
    first = faust.first_record_s if faust else None
    if pipe:
        rows.append(
            Row(
                "start-up",
                "fresh group: spawn → /healthz ready",
                _n(pipe.ready_s, "s", 1),
                f"A spawn → first record {_n(first, 's', 1)}" if first else "",
                _ratio(pipe.ready_s, first),
            )
        )
    if start:
        rows += _startup_rows(
            start,
            "restart, existing group: spawn → /healthz ready",
            "changelog recovery",
            first,
            f", {start.profiles:,} profiles",
        )
    elif "startup" in state.args.steps:
        failed("start-up", "restart on the existing group", "startup")
    big = r.get("recovery")
    if big:
        rows += _startup_rows(
            big,
            f"restart with {big.profiles:,} profiles in the changelog: spawn → ready",
            f"changelog recovery, {big.profiles:,} profiles",
            first,
        )
    elif "recovery" in state.args.steps:
        failed("start-up", "restart with a large changelog", "recovery")
    for kind in state.args.workloads[1:]:
        rows += _workload_rows(state, kind)
    return rows


def _pipeline_rows(
    state: Run, section: str, suffix: str, pipe: Any, b: float | None, floor_cpu: float | None = None
) -> list[Row]:
    """The pipeline's events/s row against B over the same topic, and its CPU per event against B's
    (results `pipeline<suffix>`, `quix<suffix>`; `floor_cpu`: C's CPU per event, when measured)."""
    rows = [
        Row(
            section,
            "Tessera pipeline, ready → all committed"
            if pipe.mode == "prefilled"
            else "Tessera pipeline, live produce → all committed",
            _n(pipe.events_per_s, "ev/s"),
            f"B {_n(b, 'ev/s')}" if b else "",
            _ratio(pipe.events_per_s, b),
            _runs_note(state, f"pipeline{suffix}")
            + f"{pipe.cpu_us_per_event:,.0f} µs CPU/event in the worker, {pipe.gc_share:.0%} of it GC; "
            f"worker {pipe.cores:.2f} cores, its main thread {pipe.main_thread_cores:.2f}",
        )
    ]
    peer_cpu = _median_cpu(state, f"quix{suffix}")
    if not math.isnan(peer_cpu):
        own_cpu = _median_cpu(state, f"pipeline{suffix}")
        rows.append(
            Row(
                section,
                "Tessera pipeline, CPU per event vs B's",
                f"{own_cpu:,.0f} µs/event",
                f"B {peer_cpu:,.1f} µs/event",
                _ratio(own_cpu, peer_cpu),
                (
                    "medians over the runs; "
                    if len(state.results.get(f"pipeline{suffix}_runs") or []) > 1
                    else ""
                )
                + (f"of it {floor_cpu:,.1f} µs the floor C'; " if floor_cpu is not None else "")
                + "lower is better; steal time on a VM slows events/s but is not CPU, so this "
                "ratio moves less between runs",
            )
        )
    return rows


def _workload_rows(state: Run, kind: str) -> list[Row]:
    """Rows of a workload besides the default (`--workloads`), section `kind`: the workload, B and
    the pipeline over its topic, and memory per profile of its visitors."""
    r, err, steps = state.results, state.errors, state.args.steps
    rows: list[Row] = []

    def failed(what: str, step: str) -> None:
        first = (err.get(step) or "").splitlines()[0] if err.get(step) else ""
        rows.append(Row(kind, what, "FAILED", note=(first[:90] + "…") if len(first) > 90 else first))

    wl: Workload | None = r.get(f"workload_{kind}")
    if wl is not None:
        rows.append(
            Row(
                kind,
                f"{wl.events:,} events, {wl.visitors:,} visitors "
                f"({wl.events / max(wl.visitors, 1):.1f} events/visitor), 6 partitions",
                _n(wl.mean_bytes, "B/event"),
                note="simulate() with LONG_TAIL_MIX: one-time visitors of 1-5 events"
                if kind == "longtail"
                else "",
            )
        )
    elif f"workload_{kind}" in err:
        failed("simulate + produce", f"workload_{kind}")
    quix, pipe = r.get(f"quix_{kind}"), r.get(f"pipeline_{kind}")
    default_quix, default_pipe = r.get("quix"), r.get("pipeline") or r.get("pipeline_live")
    b = quix.events_per_s if quix else None
    if quix:
        rows.append(
            Row(
                kind,
                "B  quixstreams, JSON + per-visitor state",
                _n(b, "ev/s"),
                f"B default {_n(default_quix.events_per_s, 'ev/s')}" if default_quix else "",
                _ratio(b, default_quix.events_per_s if default_quix else None),
                _runs_note(state, f"quix_{kind}")
                + ("" if math.isnan(quix.cpu_us_per_event) else f"{quix.cpu_us_per_event:,.1f} µs CPU/event"),
            )
        )
    elif "quix" in steps and wl is not None:
        failed("B  quixstreams, JSON + per-visitor state", f"quix_{kind}")
    if pipe:
        pipe_rows = _pipeline_rows(state, kind, f"_{kind}", pipe, b)
        if default_pipe:
            pipe_rows[0].note += f"; default workload {_n(default_pipe.events_per_s, 'ev/s')}"
        rows += pipe_rows
    elif "pipeline" in steps and wl is not None:
        failed("Tessera pipeline, ready → all committed", f"pipeline_{kind}")
    mem, default_mem = r.get(f"memory_{kind}"), r.get("memory")
    if mem:
        d, k = mem["dict"], mem["rocksdb"]
        rows.append(
            Row(
                kind,
                "in-memory store (dict of bytes): RSS/profile",
                _n(d["rss_per_profile"], "B"),
                f"serialised profile {_n(d['mean_serialized_bytes'], 'B')}",
                _ratio(d["rss_per_profile"], d["mean_serialized_bytes"]),
                f"{d['profiles']:,} profiles cloned from {d['template_profiles']} full histories; "
                + (
                    f"default workload {_n(default_mem['dict']['rss_per_profile'], 'B')}; "
                    if default_mem
                    else ""
                )
                + f"RocksDB {_n(k['rss_per_profile'], 'B')} RSS, "
                f"{k['disk_bytes_per_profile']:,.0f} B on disk",
            )
        )
    elif "memory" in steps:
        failed("memory per profile", f"memory_{kind}")
    return rows


def _startup_rows(
    start: Any, ready_label: str, recovery_label: str, first: float | None, recovered_note: str = ""
) -> list[Row]:
    """A restart's two rows (a `bench.pipeline.StartupResult`): spawn → ready, recovery rate."""
    return [
        Row(
            "start-up",
            ready_label,
            _n(start.spawn_to_ready_s, "s", 1),
            f"A spawn → first record {_n(first, 's', 1)}" if first else "",
            _ratio(start.spawn_to_ready_s, first),
            f"worker ready_after_s {start.ready_after_s}",
        ),
        Row(
            "start-up",
            recovery_label,
            _n(start.recovery_records_per_s, "rec/s"),
            f"aiokafka read of it {_n(start.floor_records_per_s, 'rec/s')}",
            _ratio(start.recovery_records_per_s, start.floor_records_per_s),
            f"{start.recovered_records:,} records in {start.recovery_seconds:.2f} s{recovered_note}"
            if start.recovered_records == start.floor_records
            else f"MISMATCH: recovered {start.recovered_records:,} of {start.floor_records:,} records",
        ),
    ]


def render(rows: list[Row], header: str) -> str:
    cols = [
        ("", [row.section for row in rows]),
        ("measurement", [row.what for row in rows]),
        ("value", [row.value for row in rows]),
        ("baseline (same run)", [row.baseline for row in rows]),
        ("ratio", ["" if row.ratio is None else f"{row.ratio:,.2f}×" for row in rows]),
        ("note", [row.note for row in rows]),
    ]
    widths = [max(len(title), *(len(v) for v in values)) if values else len(title) for title, values in cols]
    right = {2, 4}

    def line(values: list[str]) -> str:
        cells = [
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    out = [header, line([title for title, _ in cols]), line(["-" * w for w in widths])]
    previous = None
    for i, row in enumerate(rows):
        values = [values[i] for _, values in cols]
        if row.section == previous:
            values[0] = ""
        previous = row.section
        out.append(line(values))
    return "\n".join(out)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return _jsonable(value.as_dict())
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def main(argv: list[str] | None = None) -> int:
    from streams.logging import configure_logging

    args = parse_args(argv)
    configure_logging("WARNING")  # structlog to stderr; stdout carries the table only
    commit, dirty = git_commit()
    started = datetime.now(UTC)
    begun = time.monotonic()
    note(f"commit {commit}{' (dirty tree)' if dirty else ''}; steps {','.join(args.steps)}")
    meter = LoadMeter()
    with workspace(args.workdir) as workdir:
        state = run(args, workdir)
    foreign = meter.foreign_cores()
    elapsed = time.monotonic() - begun
    rows = build_rows(state)
    label = f"{commit}{'+dirty' if dirty else ''}"
    header = (
        f"Tessera bench  commit {label}  {started:%Y-%m-%d %H:%M} UTC  {os.cpu_count()} CPUs  "
        f"python {platform.python_version()}  took {elapsed:.0f}s"
        f"{'  (--quick)' if args.quick else ''}\n"
        "ratio = value / baseline; baselines ran in this run on the same embedded stack\n"
        f"definitions: {args.definitions}\n"
        f"other processes on this machine used {foreign:.2f} cores on average during the run"
        + (
            " (per step: " + ", ".join(f"{k} {v:.2f}" for k, v in state.foreign_cores.items()) + ")"
            if state.foreign_cores
            else ""
        )
    )
    table = render(rows, header)
    if state.errors:
        lines = ["", "failed steps:"]
        for name, message in state.errors.items():
            # The first line says what failed; a child's log tail ends with the reason.
            parts = message.splitlines()
            shown = parts if len(parts) <= 8 else [*parts[:2], "…", *parts[-5:]]
            lines.append(f"  {name}: " + "\n    ".join(shown))
        table += "\n".join(lines)
    print(table)
    hot = state.results.get("hotpath")
    if hot is not None:
        print()
        print(hot.report.rstrip())
    print(file=sys.stdout, flush=True)
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{label}-{stamp}.json"
        document = {
            "commit": commit,
            "dirty": dirty,
            "started": started.isoformat(),
            "seconds": round(elapsed, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": _jsonable(state.results),
            "errors": state.errors,
            "foreign_cores": {
                "run": round(foreign, 3),
                **{k: round(v, 3) for k, v in state.foreign_cores.items()},
            },
            "table": [_jsonable(row) for row in rows],
            "text": table,
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        if hot is not None:
            (RESULTS_DIR / f"{label}-{stamp}-hotpath.txt").write_text(hot.report)
        note(f"saved {path.relative_to(ROOT)}")
    if state.errors:
        note(f"failed steps: {', '.join(sorted(state.errors))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
