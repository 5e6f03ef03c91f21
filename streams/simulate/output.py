"""Files of a simulation: the events as JSON lines, the truth as one JSON object."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import orjson

from streams.logging import get_logger
from streams.simulate.results import Simulation, VisitorTruth

log = get_logger(__name__)


def write_jsonl(
    sim: Simulation, events_path: str | Path, truth_path: str | Path, *, include_malformed: bool = False
) -> int:
    """Events as JSON lines (and, if asked, the malformed records after them, one per line); the
    truth as one JSON object mapping visitor_id → `VisitorTruth` fields. Returns lines written."""
    lines = 0
    with open(events_path, "wb") as out:
        for event in sim.events:
            out.write(orjson.dumps(event))
            out.write(b"\n")
            lines += 1
        if include_malformed:
            for _, raw, _ in sim.malformed:
                out.write(raw.replace(b"\n", b" "))
                out.write(b"\n")
                lines += 1
    truth = {vid: asdict(t) for vid, t in sim.truth.items()}
    Path(truth_path).write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2))
    log.info("simulation_written", events_path=str(events_path), truth_path=str(truth_path), lines=lines)
    return lines


def read_truth(path: str | Path) -> dict[str, VisitorTruth]:
    """The truth file written by `write_jsonl`."""
    raw = orjson.loads(Path(path).read_bytes())
    return {vid: VisitorTruth(**fields) for vid, fields in raw.items()}
