"""Cost per event with 10, 100 and 1,000 segment definitions (the dependency index at work).

`measure_segment_scale` folds the same simulated records through `process_batch` (as the hot-path
step does: in process, no I/O, the worker's GC settings) once per definitions file of
`streams.testing.generated.generated_definitions` (realistic proportions of micro-segments, geography,
interest, top spenders, frequency, cart, traffic and segment-of-segment conditions), and reports
events/s and µs per event with ratios to the 10-segment run.
"""

from __future__ import annotations

from typing import Any

from bench.common import note
from bench.hotpath import fold, raw_records
from streams.testing.generated import generated_definitions


def measure_segment_scale(
    encoded: list[tuple[bytes, bytes]], batch_size: int, counts: tuple[int, ...] = (10, 100, 1000)
) -> dict[str, Any]:
    """Events/s and µs per event of `process_batch` over `encoded` for each definitions size."""
    import gc
    import time

    from streams.core.definitions import parse_definitions
    from streams.core.enrich import default_enricher
    from streams.settings import Settings

    records = raw_records(encoded)
    out: dict[str, Any] = {"events": len(records), "runs": {}}
    for count in counts:
        defs = parse_definitions(generated_definitions(count), f"generated-{count}.yaml")
        enricher = default_enricher(None)
        note(f"segments: {count} generated definitions over {len(records):,} records")
        previous = gc.get_threshold()
        gc.collect()
        gc.set_threshold(Settings().gc_gen0_threshold, 20, 100)
        gc.freeze()
        try:
            begun = time.perf_counter()
            _, changes, _ = fold(records, batch_size, defs, enricher)
            seconds = time.perf_counter() - begun
        finally:
            gc.unfreeze()
            gc.set_threshold(*previous)
        out["runs"][str(count)] = {
            "segments": count,
            "seconds": seconds,
            "events_per_s": len(records) / seconds,
            "us_per_event": seconds / len(records) * 1e6,
            "changes": changes,
        }
    return out
