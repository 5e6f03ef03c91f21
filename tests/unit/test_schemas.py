"""The exported JSON Schema files are exactly what the models produce (run `make schemas`)."""

from __future__ import annotations

import json

import pytest

from schemas.export import SCHEMA_DIR, all_schemas, render


@pytest.mark.parametrize("name", sorted(all_schemas()))
def test_exported_schema_matches_model(name: str) -> None:
    path = SCHEMA_DIR / name
    assert path.exists(), f"{path} missing: run `make schemas`"
    assert path.read_text() == render(all_schemas()[name]), f"{name} is stale: run `make schemas`"


def test_every_event_type_is_in_the_event_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "event.v1.json").read_text())
    from schemas.events import EventType

    text = json.dumps(schema)
    for event_type in EventType:
        assert f'"{event_type.value}"' in text
