"""The core's hot path, in-process and without I/O: `process_batch` over simulated records.

Records go through `streams.core.batch.process_batch` in batches of `batch_size` (the worker's
`batch_max_records`), with the profiles kept the way the engine's `ProfileStore` keeps them
(partition → visitor → serialised bytes; after each batch every touched profile is serialised
back once, as the engine does for its in-memory store). SourceRecords are built per batch, standing in
for the ConsumerRecords aiokafka builds per poll (the engine hands those to the core as they are),
and the simulated event dicts are dropped before timing: the
objects alive are roughly a worker's, which matters because Python's cyclic GC cost grows with
them. Three passes, each with a fresh store and a fresh enricher (cold caches, like a worker that
just started):

1. timed, no profiler, under the worker's GC settings (threshold, freeze) → the core's events/s
   (the ceiling of one worker process);
2. timed with the cyclic GC disabled → the share of (1) spent in garbage collection;
3. under cProfile → the top functions by cumulative and by own time;
4. the ClickHouse sink alone over the same records' rows (embedded chDB, in this process): its
   CPU per event, the part of the pipeline's cost that is not the core's.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PARTITIONS, definitions_file

RawRecord = tuple[int, int, bytes, bytes]
"""(partition, offset, key, value): atomic fields only, so the GC stops tracking the tuples."""


@dataclass
class HotpathResult:
    events: int
    batch_size: int
    seconds: float
    events_per_s: float
    us_per_event: float
    events_per_s_gc_off: float
    gc_share: float
    """Share of the timed pass spent in cyclic garbage collection (1 − gc-off time / gc-on time)."""
    profiles: int
    changes: int
    dead_letters: int
    top_cumulative: list[dict[str, Any]] = field(default_factory=list)
    top_self: list[dict[str, Any]] = field(default_factory=list)
    report: str = ""
    """The pstats text (both orderings) as printed after the table."""
    sink_cpu_us_per_event: float = float("nan")
    """CPU of `ClickHouseSink.write` (embedded chDB, this process: row building, serialisation,
    chDB's insert and the merges it runs meanwhile) per event, at `sink_rows_per_insert`."""
    sink_rows_per_insert: int = 0


def raw_records(encoded: Sequence[tuple[bytes, bytes]]) -> list[RawRecord]:
    """Per-partition offsets; partition = crc32(key) mod 6 (stable, not Kafka's murmur2)."""
    offsets = [0] * PARTITIONS
    records: list[RawRecord] = []
    for key, value in encoded:
        partition = zlib.crc32(key) % PARTITIONS
        records.append((partition, offsets[partition], key, value))
        offsets[partition] += 1
    return records


def core_parts() -> tuple[Any, Any]:
    """The bench's definitions (`bench.common.definitions_file`: the shipped ones unless
    `--segments-file`) and a fresh production enricher (empty caches)."""
    from streams.core.definitions import load_definitions
    from streams.core.enrich import default_enricher

    return load_definitions(definitions_file()), default_enricher(None)


def fold(
    records: Sequence[RawRecord],
    batch_size: int,
    defs: Any,
    enricher: Any,
    each: Callable[[int, Any], None] | None = None,
) -> tuple[dict[int, dict[str, bytes]], int, int]:
    """Run every record through `process_batch`; return the store, changes and dead letters.

    `each(start, result)`, if given, sees every batch's `BatchResult` (`start`: its first record)."""
    from streams.core.batch import IngestLimits, SourceRecord, process_batch

    limits = IngestLimits()
    store: dict[int, dict[str, bytes]] = {p: {} for p in range(PARTITIONS)}
    clocks: dict[int, float] = dict.fromkeys(range(PARTITIONS), 0.0)
    changes = dead = 0

    def get(visitor_id: str, partition: int) -> bytes | None:
        return store[partition].get(visitor_id)

    for start in range(0, len(records), batch_size):
        batch = [SourceRecord(*raw) for raw in records[start : start + batch_size]]
        result = process_batch(
            batch,
            get,
            {},
            clocks,
            defs=defs,
            enricher=enricher,
            limits=limits,
            wall_now=time.time(),
            topic="bench",
        )
        clocks.update(result.clocks)
        for visitor_id, effect in result.visitors.items():
            store[effect.partition][visitor_id] = effect.profile.to_bytes()
        changes += len(result.changes)
        dead += len(result.dead_letters)
        if each is not None:
            each(start, result)
    return store, changes, dead


def clickhouse_cost(records: Sequence[RawRecord], rows_per_insert: int, workdir: Path) -> float:
    """CPU µs per event of the worker's ClickHouse sink on embedded chDB (what the pipeline pays
    on top of the core): the core's analytics rows, changes, messages and conversions for
    `rows_per_insert` records at a time, their rows built (as the checkpoint builds them when a
    batch is added) and written as the checkpoint writes them. Process CPU, so chDB's threads
    count."""
    from sinks.clickhouse import AnalyticsBatch, ClickHouseSink

    results: list[tuple[int, Any]] = []
    fold(records, rows_per_insert, *core_parts(), each=lambda start, result: results.append((start, result)))
    sink = ClickHouseSink(f"chdb://{(workdir / 'hotpath-chdb').resolve()}")
    try:
        sink.apply_ddl()
        begun = time.process_time()
        for start, result in results:
            sink.write(
                AnalyticsBatch.of(
                    token=f"bench-{start}",
                    events=result.analytics_rows,
                    changes=result.changes,
                    messages=result.messages,
                    conversions=result.conversions,
                )
            )
        return (time.process_time() - begun) / max(len(records), 1) * 1e6
    finally:
        sink.close()


def _rows(stats: pstats.Stats, key: str, top: int) -> list[dict[str, Any]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    index = 3 if key == "cumulative" else 2
    ordered = sorted(raw.items(), key=lambda item: item[1][index], reverse=True)[:top]
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in ordered:
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 4),
                "cumulative_s": round(cumulative, 4),
            }
        )
    return rows


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _timed(
    records: Sequence[RawRecord], batch_size: int
) -> tuple[float, dict[int, dict[str, bytes]], int, int]:
    """One timed pass under the worker's GC configuration (`streams.app.run_worker`)."""
    from streams.settings import Settings

    defs, enricher = core_parts()
    previous = gc.get_threshold()
    gc.collect()
    gc.set_threshold(Settings().gc_gen0_threshold, 20, 100)
    gc.freeze()  # as the worker does once started: modules and definitions are never scanned
    try:
        begun = time.perf_counter()
        store, changes, dead = fold(records, batch_size, defs, enricher)
        seconds = time.perf_counter() - begun
    finally:
        gc.unfreeze()
        gc.set_threshold(*previous)
    return seconds, store, changes, dead


def run_hotpath(
    encoded: Sequence[tuple[bytes, bytes]],
    batch_size: int = 5000,
    top: int = 15,
    workdir: Path | None = None,
    sink_rows_per_insert: int = 2500,
) -> HotpathResult:
    """Time and profile the core over `encoded` (key, JSON value) records; pass no event dicts.

    With `workdir`, also measure the ClickHouse sink's CPU per event (`clickhouse_cost`)."""
    records = raw_records(encoded)
    seconds, store, changes, dead = _timed(records, batch_size)
    profiles = sum(len(p) for p in store.values())
    del store
    gc.disable()
    try:
        seconds_gc_off = _timed(records, batch_size)[0]
    finally:
        gc.enable()
        gc.collect()

    defs, enricher = core_parts()
    profiler = cProfile.Profile()
    profiler.enable()
    fold(records, batch_size, defs, enricher)
    profiler.disable()
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.strip_dirs()
    buffer.write(
        f"process_batch over {len(records):,} records, batches of {batch_size:,}: "
        f"top {top} by cumulative time\n"
    )
    stats.sort_stats("cumulative").print_stats(top)
    buffer.write(f"top {top} by own time\n")
    stats.sort_stats("tottime").print_stats(top)
    full = pstats.Stats(profiler)
    return HotpathResult(
        events=len(records),
        batch_size=batch_size,
        seconds=seconds,
        events_per_s=len(records) / seconds if seconds else float("nan"),
        us_per_event=seconds / max(len(records), 1) * 1e6,
        events_per_s_gc_off=len(records) / seconds_gc_off if seconds_gc_off else float("nan"),
        gc_share=1 - seconds_gc_off / seconds if seconds else float("nan"),
        profiles=profiles,
        changes=changes,
        dead_letters=dead,
        top_cumulative=_rows(full, "cumulative", top),
        top_self=_rows(full, "own", top),
        report=buffer.getvalue(),
        sink_cpu_us_per_event=(
            clickhouse_cost(records, sink_rows_per_insert, workdir) if workdir is not None else float("nan")
        ),
        sink_rows_per_insert=sink_rows_per_insert if workdir is not None else 0,
    )
