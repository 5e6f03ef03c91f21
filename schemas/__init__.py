"""Every wire format of Tessera as versioned pydantic v2 models, with JSON Schema export.

Imports nothing of Tessera's own: producers and consumers can depend on this package alone.
"""

from schemas.changes import SegmentChange, Transition
from schemas.cohorts import CohortSketchRecord
from schemas.collector import CollectorAnswer, CollectorError, CollectorRejection
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.definitions import DefinitionsRecord
from schemas.enriched import Device, EnrichedEvent, Geo, Traffic
from schemas.events import (
    EVENT_ADAPTER,
    EVENT_SCHEMA_VERSION,
    Context,
    Event,
    EventType,
)
from schemas.messages import Conversion, Message, MessageKind
from schemas.onsite import InboxAnswer, MessageOutcome, Outcome

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_SCHEMA_VERSION",
    "CohortSketchRecord",
    "CollectorAnswer",
    "CollectorError",
    "CollectorRejection",
    "Context",
    "Conversion",
    "DeadLetter",
    "DeadLetterReason",
    "DefinitionsRecord",
    "Device",
    "EnrichedEvent",
    "Event",
    "EventType",
    "Geo",
    "InboxAnswer",
    "Message",
    "MessageKind",
    "MessageOutcome",
    "Outcome",
    "SegmentChange",
    "Traffic",
    "Transition",
]
