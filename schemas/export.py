"""Export every wire model's JSON Schema to `schemas/jsonschema/` (`python -m schemas.export`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.analytics import DashboardAnswer, ExportManifest, PersonaReport
from schemas.changes import SegmentChange
from schemas.cohorts import CohortSketchRecord
from schemas.collector import CollectorAnswer, CollectorError
from schemas.deadletter import DeadLetter
from schemas.definitions import DefinitionsRecord
from schemas.enriched import EnrichedEvent
from schemas.events import EVENT_ADAPTER
from schemas.messages import Conversion, Message
from schemas.onsite import InboxAnswer, MessageOutcome

SCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema of each versioned wire format."""
    adapters: dict[str, TypeAdapter[Any]] = {
        "event.v1.json": EVENT_ADAPTER,
        "enriched_event.v1.json": TypeAdapter(EnrichedEvent),
        "segment_change.v1.json": TypeAdapter(SegmentChange),
        "message.v2.json": TypeAdapter(Message),
        "conversion.v1.json": TypeAdapter(Conversion),
        "dead_letter.v1.json": TypeAdapter(DeadLetter),
        "definitions_record.v1.json": TypeAdapter(DefinitionsRecord),
        "cohort_sketch_record.v1.json": TypeAdapter(CohortSketchRecord),
        "collector_answer.v1.json": TypeAdapter(CollectorAnswer),
        "collector_error.v1.json": TypeAdapter(CollectorError),
        "inbox_answer.v1.json": TypeAdapter(InboxAnswer),
        "message_outcome.v1.json": TypeAdapter(MessageOutcome),
        "dashboard_answer.v2.json": TypeAdapter(DashboardAnswer),
        "persona_report.v1.json": TypeAdapter(PersonaReport),
        "export_manifest.v1.json": TypeAdapter(ExportManifest),
    }
    return {name: adapter.json_schema(mode="validation") for name, adapter in adapters.items()}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in all_schemas().items():
        (SCHEMA_DIR / name).write_text(render(schema))


if __name__ == "__main__":
    main()
