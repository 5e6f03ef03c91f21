"""What a simulation returns: the events, and per visitor the ground truth (`VisitorTruth`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.simulate.places import Place


@dataclass(frozen=True, slots=True)
class VisitorTruth(Place):
    """Where the visitor is (the `Place` fields, flat, as the truth file holds them) and what Tessera
    must show for it."""

    visitor_id: str
    persona: str
    expected_segments: list[str]
    """Sorted; members of `SegmentTargets.covered` only."""
    micro_segments: list[str]
    """The micro/static segments among `expected_segments`."""
    category: str | None
    """The big spender's category."""
    device: str
    device_category: str
    os: str
    browser: str
    user_agent: str
    locale: str
    consent: bool
    age: int | None
    first_seen: str
    last_seen: str
    events: int
    """Events generated for the visitor, duplicates included."""
    duplicates: int


@dataclass(slots=True)
class Simulation:
    events: list[dict[str, Any]]
    """JSON-ready events, sorted by event_time (ties: visitor, then generation order)."""
    truth: dict[str, VisitorTruth]
    malformed: list[tuple[str, bytes, str]] = field(default_factory=list)
    """(reason, raw bytes, visitor key): records the pipeline must dead-letter."""
    seed: int = 0
    end: str = ""
