"""Decode and validate one raw record into an `Event`, or say why not (a typed dead-letter reason).

The hot path is a single `EVENT_ADAPTER.validate_json(raw)` call: pydantic's Rust JSON parser and
validator in one pass, measured faster than `orjson.loads` + `validate_python`. Only when it fails
is the error classified, in the order the dead-letter contract promises:

    too_large → not_json → unknown_type → schema_violation → future_timestamp → key_mismatch

`decode` never raises, whatever the bytes: the caller routes `Rejected` to `events.dlq` with
`dead_letter(...)`, which keeps the original bytes. The one reason decode never gives,
`processing_error`, is for a valid event the core failed to apply (`processing_error(exc)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import EVENT_ADAPTER, EVENT_TYPES, Event

DETAIL_MAX_CHARS: Final = 1000
"""Longest `Rejected.detail`; the schema's own cap (4000) leaves room for the DLQ writer."""

_DEAD_LETTER_DETAIL_MAX: Final = 4000
_NOT_AN_OBJECT: Final = frozenset({"dict_type", "model_type", "model_attributes_type"})
_TAG_ERRORS: Final = frozenset({"union_tag_invalid", "union_tag_not_found"})


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a record cannot become an `Event`; becomes a `DeadLetter` with the original bytes."""

    reason: DeadLetterReason
    detail: str


def decode(
    raw: bytes | None,
    key: bytes | None,
    now: float,
    max_bytes: int,
    max_future_skew_s: float,
) -> Event | Rejected:
    """Parse and validate one record value; `now` is epoch seconds. Never raises.

    `key` is the Kafka record key: when given it must equal the event's `visitor_id` (UTF-8),
    since all of one visitor's state lives in the partition the key chose.
    """
    decoded = decode_timed(raw, key, now, max_bytes, max_future_skew_s)
    return decoded if isinstance(decoded, Rejected) else decoded[0]


def decode_timed(
    raw: bytes | None,
    key: bytes | None,
    now: float,
    max_bytes: int,
    max_future_skew_s: float,
) -> tuple[Event, float] | Rejected:
    """`decode`, with the event time as epoch seconds beside the event.

    The hot path needs that number several times per event, and `datetime.timestamp()` on
    pydantic's timezone object costs ≈ 1 µs a call: computed once here, where the skew check
    needs it anyway.
    """
    if raw is None:
        return Rejected(DeadLetterReason.not_json, "empty record value (null)")
    if len(raw) > max_bytes:
        return Rejected(DeadLetterReason.too_large, f"{len(raw)} bytes > limit {max_bytes}")
    try:
        event: Event = EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        return _classify(exc)
    except Exception as exc:  # a validator that raised something else: still the input's fault
        return Rejected(DeadLetterReason.schema_violation, _exception_detail(exc))
    try:
        event_ts = event.event_time.timestamp()
    except (OverflowError, ValueError, OSError) as exc:
        return Rejected(DeadLetterReason.schema_violation, clip_detail(f"event_time: {exc}"))
    if event_ts > now + max_future_skew_s:
        return Rejected(
            DeadLetterReason.future_timestamp,
            f"event_time {event.event_time.isoformat()} is {event_ts - now:.1f} s ahead "
            f"(allowed {max_future_skew_s:g} s)",
        )
    if key is not None and key != event.visitor_id.encode("utf-8", "surrogatepass"):
        return Rejected(
            DeadLetterReason.key_mismatch,
            clip_detail(f"record key {key[:200]!r} != visitor_id {event.visitor_id[:200]!r}"),
        )
    return event, event_ts


def _classify(exc: ValidationError) -> Rejected:
    """Map a pydantic failure onto the reasons, strongest first (only runs for bad input)."""
    try:
        errors = exc.errors(include_url=False, include_context=True, include_input=False)
    except Exception as inner:  # never let error formatting escape decode
        detail = clip_detail(f"unformattable validation error: {inner}")
        return Rejected(DeadLetterReason.schema_violation, detail)
    for err in errors:
        kind = err["type"]
        if kind == "json_invalid":
            return Rejected(DeadLetterReason.not_json, clip_detail(err["msg"]))
        if not err["loc"] and kind in _NOT_AN_OBJECT:
            return Rejected(DeadLetterReason.not_json, "top-level JSON value is not an object")
    for err in errors:
        if not err["loc"] and err["type"] in _TAG_ERRORS:
            tag = (err.get("ctx") or {}).get("tag")
            if err["type"] == "union_tag_not_found" or tag is None:
                return Rejected(DeadLetterReason.unknown_type, "missing event type")
            return Rejected(DeadLetterReason.unknown_type, clip_detail(f"unknown event type {tag!r}"))
    return Rejected(DeadLetterReason.schema_violation, _format_errors(errors))


def _format_errors(errors: list[ErrorDetails]) -> str:
    """`loc: msg; loc: msg` without the discriminator tag that pydantic puts first in each loc."""
    parts: list[str] = []
    size = 0
    for index, err in enumerate(errors):
        loc = err["loc"]
        if loc and loc[0] in EVENT_TYPES:
            loc = loc[1:]
        part = f"{'.'.join(str(p) for p in loc) or '<root>'}: {err['msg']}"
        if parts and size + len(part) + 2 > DETAIL_MAX_CHARS - 20:
            parts.append(f"… (+{len(errors) - index} more)")
            break
        parts.append(part)
        size += len(part) + 2
    return clip_detail("; ".join(parts))


def clip_detail(text: str, limit: int = DETAIL_MAX_CHARS) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exception_detail(exc: BaseException) -> str:
    return clip_detail(f"{type(exc).__name__}: {exc}")


def processing_error(exc: BaseException) -> Rejected:
    """A valid event the core could not apply: the exception's type and message as the detail."""
    return Rejected(DeadLetterReason.processing_error, _exception_detail(exc))


def dead_letter(
    raw: bytes | None,
    rejected: Rejected,
    *,
    source: Literal["collector", "ingest"] = "ingest",
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | str | None = None,
    received_at: datetime,
) -> DeadLetter:
    """The `events.dlq` envelope: typed reason, where the record came from, original bytes (base64).

    A key that is not valid UTF-8 is kept readable with backslash escapes.
    """
    key_text = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key
    return DeadLetter(
        reason=rejected.reason,
        detail=clip_detail(rejected.detail, _DEAD_LETTER_DETAIL_MAX),
        source=source,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key_text,
        received_at=received_at,
        original_b64=DeadLetter.encode_original(raw or b""),
    )
