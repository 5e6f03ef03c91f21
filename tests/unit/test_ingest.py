"""decode(): typed reasons in contract order, never an exception; dead_letter(): the DLQ envelope;
processing_error(): the reason of a valid event the core failed to apply."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import AddToCart, PageView, ProductView, Purchase
from streams.core.ingest import (
    DETAIL_MAX_CHARS,
    Rejected,
    clip_detail,
    dead_letter,
    decode,
    decode_timed,
    processing_error,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
MAX_BYTES = 32_768
SKEW = 300.0
RECEIVED = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "product_view",
        "event_id": "e-1",
        "visitor_id": "v-1",
        "event_time": "2026-03-01T11:59:00Z",
        "context": {
            "page_url": "https://shop.example.de/p/1",
            "referrer": "https://www.google.de/",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0 Safari/537.36",
            "ip": "178.197.224.1",
        },
        "properties": {"product_id": "p-1", "category": "shoes", "price": 89.9},
    }
    base.update(overrides)
    return base


def raw(**overrides: Any) -> bytes:
    return orjson.dumps(event(**overrides))


def run(data: bytes | None, key: bytes | None = None, max_bytes: int = MAX_BYTES) -> Any:
    return decode(data, key, NOW, max_bytes, SKEW)


def rejected(data: bytes | None, key: bytes | None = None, max_bytes: int = MAX_BYTES) -> Rejected:
    result = run(data, key, max_bytes)
    assert isinstance(result, Rejected), result
    return result


# -- valid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_time",
    ["2026-03-01T11:59:00Z", "2026-03-01T12:59:00.123456+01:00", "2026-03-01T11:59:00.5", 1772366340],
)
def test_decode_timed_gives_the_event_time_as_epoch_seconds(event_time: Any) -> None:
    result = decode_timed(raw(event_time=event_time), b"v-1", NOW, MAX_BYTES, SKEW)
    assert not isinstance(result, Rejected), result
    decoded, at = result
    assert at == decoded.event_time.timestamp()
    assert decode(raw(event_time=event_time), b"v-1", NOW, MAX_BYTES, SKEW) == decoded
    future = raw(event_time="2027-01-01T00:00:00Z")
    assert isinstance(decode_timed(future, None, NOW, MAX_BYTES, SKEW), Rejected)


def test_valid_event_is_typed() -> None:
    result = run(raw(), key=b"v-1")
    assert isinstance(result, ProductView)
    assert result.properties.product_id == "p-1"
    assert result.event_time == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)


def test_segment_spec_names_are_accepted() -> None:
    data = orjson.dumps(
        {
            "type": "page_view",
            "messageId": "m-1",
            "anonymousId": "anon-1",
            "timestamp": "2026-03-01T11:00:00",
            "context": {"userAgent": "x", "url": "https://a.de/"},
        }
    )
    result = run(data, key=b"anon-1")
    assert isinstance(result, PageView)
    assert (result.event_id, result.visitor_id) == ("m-1", "anon-1")
    assert result.event_time.tzinfo is not None  # naive is taken as UTC


def test_key_none_skips_the_key_check() -> None:
    assert isinstance(run(raw(), key=None), ProductView)


def test_non_ascii_visitor_id_matches_utf8_key() -> None:
    assert isinstance(run(raw(visitor_id="bésucher-ü"), key="bésucher-ü".encode()), ProductView)


# -- each reason -----------------------------------------------------------------------------------


def test_too_large_boundary() -> None:
    data = raw()
    assert isinstance(run(data, max_bytes=len(data)), ProductView)
    rej = rejected(data, max_bytes=len(data) - 1)
    assert rej.reason is DeadLetterReason.too_large
    assert str(len(data)) in rej.detail


def test_too_large_wins_over_everything() -> None:
    assert rejected(b"\xff" * 100, max_bytes=10).reason is DeadLetterReason.too_large


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"{",
        b"not json",
        b"\xff\xfe\x00",
        b'{"type": "page_view",}',
        b"[1, 2]",
        b'"text"',
        b"null",
        b"42",
        b"true",
        raw() + b" trailing",
    ],
)
def test_not_json(data: bytes | None) -> None:
    assert rejected(data).reason is DeadLetterReason.not_json


def test_not_json_detail_says_what() -> None:
    assert "not an object" in rejected(b"[1]").detail
    assert rejected(b"{").detail.startswith("Invalid JSON")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{}", "missing"),
        (orjson.dumps({"event_id": "e", "visitor_id": "v"}), "missing"),
        (orjson.dumps({"type": "teleport"}), "'teleport'"),
        (orjson.dumps({"type": 5}), "'5'"),
        (orjson.dumps({"type": None}), ""),
        (orjson.dumps({"type": "PAGE_VIEW"}), "PAGE_VIEW"),
        (raw(type="nope"), "nope"),
    ],
)
def test_unknown_type(data: bytes, needle: str) -> None:
    rej = rejected(data)
    assert rej.reason is DeadLetterReason.unknown_type
    assert needle in rej.detail


def test_schema_violation_detail_is_loc_colon_msg() -> None:
    data = raw(properties={"price": -1})
    rej = rejected(data)
    assert rej.reason is DeadLetterReason.schema_violation
    assert "properties.product_id: Field required" in rej.detail
    assert "properties.price: Input should be greater than or equal to 0" in rej.detail
    assert not rej.detail.startswith("product_view")  # the discriminator tag is dropped from loc


def test_schema_violation_detail_is_bounded() -> None:
    items = [{"product_id": "", "price": -1, "quantity": 0}] * 400
    rej = rejected(raw(type="purchase", properties={"order_id": "o", "value": 1, "items": items}))
    assert rej.reason is DeadLetterReason.schema_violation
    assert len(rej.detail) <= DETAIL_MAX_CHARS
    assert rej.detail.endswith("more)")


@pytest.mark.parametrize(
    "event_time",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "yesterday", 1e300, "2026-02-30T00:00:00Z"],
)
def test_unrepresentable_timestamps_are_schema_violations(event_time: object) -> None:
    assert rejected(raw(event_time=event_time)).reason is DeadLetterReason.schema_violation


def test_future_timestamp_boundary() -> None:
    at_limit = datetime.fromtimestamp(NOW + SKEW, tz=UTC).isoformat()
    beyond = datetime.fromtimestamp(NOW + SKEW + 1, tz=UTC).isoformat()
    assert isinstance(run(raw(event_time=at_limit)), ProductView)
    rej = rejected(raw(event_time=beyond))
    assert rej.reason is DeadLetterReason.future_timestamp
    assert "301.0 s ahead" in rej.detail


def test_key_mismatch() -> None:
    rej = rejected(raw(), key=b"someone-else")
    assert rej.reason is DeadLetterReason.key_mismatch
    assert "someone-else" in rej.detail and "v-1" in rej.detail


def test_empty_key_is_a_given_key() -> None:
    assert rejected(raw(), key=b"").reason is DeadLetterReason.key_mismatch


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        (b"x" * 100, b"k", DeadLetterReason.too_large),  # too_large before not_json
        (b"[", b"k", DeadLetterReason.not_json),
        (
            orjson.dumps({"type": "zzz", "event_time": "3000-01-01T00:00:00Z"}),
            b"k",
            DeadLetterReason.unknown_type,
        ),
        (raw(properties={}, event_time="3000-01-01T00:00:00Z"), b"k", DeadLetterReason.schema_violation),
        (raw(event_time="3000-01-01T00:00:00Z"), b"k", DeadLetterReason.future_timestamp),
    ],
)
def test_reason_order(data: bytes, key: bytes, reason: DeadLetterReason) -> None:
    assert (
        rejected(data, key=key, max_bytes=99 if reason is DeadLetterReason.too_large else MAX_BYTES).reason
        is reason
    )


def test_lone_surrogate_visitor_id_does_not_raise() -> None:
    data = b'{"type":"page_view","event_id":"e","visitor_id":"\\ud800","event_time":"2026-01-01T00:00:00Z"}'
    result = run(data, b"k")
    assert isinstance(result, Rejected | PageView)


# -- dead_letter ---------------------------------------------------------------------------------


def test_dead_letter_keeps_original_bytes() -> None:
    data = b"\x00\xffnot json"
    rej = rejected(data)
    letter = dead_letter(
        data, rej, source="ingest", topic="events", partition=3, offset=42, key=b"v-1", received_at=RECEIVED
    )
    assert isinstance(letter, DeadLetter)
    assert letter.original == data
    assert (letter.reason, letter.topic, letter.partition, letter.offset, letter.key) == (
        DeadLetterReason.not_json,
        "events",
        3,
        42,
        "v-1",
    )
    again = DeadLetter.model_validate_json(letter.model_dump_json())
    assert again.original == data


def test_dead_letter_odd_inputs() -> None:
    letter = dead_letter(
        None, Rejected(DeadLetterReason.not_json, "x" * 5000), key=b"\xff\xfe", received_at=RECEIVED
    )
    assert letter.original == b""
    assert letter.key == "\\xff\\xfe"
    assert len(letter.detail) <= 4000
    assert letter.source == "ingest"
    assert (
        dead_letter(
            b"{}",
            Rejected(DeadLetterReason.unknown_type, "x"),
            key="txt",
            source="collector",
            received_at=RECEIVED,
        ).key
        == "txt"
    )


def test_processing_error_names_the_exception_within_the_detail_limit() -> None:
    rejected = processing_error(KeyError("cart"))
    assert rejected == Rejected(DeadLetterReason.processing_error, "KeyError: 'cart'")
    long = processing_error(ValueError("x" * 5000)).detail
    assert len(long) == DETAIL_MAX_CHARS and long.startswith("ValueError: xxx") and long.endswith("…")
    assert clip_detail("abc", 3) == "abc" and clip_detail("abcd", 3) == "ab…"


# -- fuzz: nothing escapes decode ----------------------------------------------------------------

_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"null",
    b"true",
    b"-",
    b"1e999",
    b"-0",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b'"\\u0000"',
    b'"type"',
    b'"page_view"',
    b'"purchase"',
    b"\xff",
    b"\xc3",
    b'"0001-01-01T00:00:00+14:00"',
    b'"9999-12-31T23:59:59-14:00"',
    b"123456789012345678901234567890",
    b"[[[[[[[[[[",
    b'{"a":' * 20,
    b"\x00",
    b" ",
    b"\n",
]
_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    2**63 - 1,
    1e300,
    "",
    "x" * 300,
    [],
    {},
    [1, "a"],
    {"k": "v"},
    "2026-03-01T11:59:00Z",
    "0001-01-01T00:00:00+14:00",
    "3000-01-01T00:00:00Z",
    "page_view",
    "purchase",
    "custom",
    "\u0000",
    "é",
]
_SEEDS = [
    event(),
    event(type="page_view", properties={"page_type": "home"}),
    event(
        type="purchase",
        properties={
            "order_id": "o-1",
            "value": 120.5,
            "items": [{"product_id": "p", "price": 60.25, "quantity": 2, "coupon": "SPRING"}],
            "coupon": "SPRING",
        },
    ),
    event(type="add_to_cart", properties={"product_id": "p-2", "price": 10, "quantity": 3}),
    event(type="identify", properties={"age": 33, "traits": {"vip": True}}),
    event(type="custom", properties={"name": "video_play", "properties": {"s": 12}}),
    {"type": "page_view", "messageId": "m", "anonymousId": "a", "timestamp": "2026-03-01T11:00:00Z"},
]


def _mutate_structure(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, dict) and obj:
        obj = dict(obj)
        key = rng.choice(list(obj))
        roll = rng.random()
        if roll < 0.3:
            del obj[key]
        elif roll < 0.6 or depth > 3:
            obj[key] = rng.choice(_VALUES)
        else:
            obj[key] = _mutate_structure(rng, obj[key], depth + 1)
        if rng.random() < 0.1:
            obj[rng.choice(["type", "event_time", "visitor_id", "zzz"])] = rng.choice(_VALUES)
        return obj
    if isinstance(obj, list) and obj:
        return [_mutate_structure(rng, x, depth + 1) for x in obj]
    return rng.choice(_VALUES)


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:  # insert a token
            buf[pos:pos] = rng.choice(_TOKENS)
        elif op == 2:  # delete a run
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 3:  # truncate
            del buf[pos:]
        else:  # duplicate a slice
            start = rng.randrange(len(buf) + 1)
            buf[pos:pos] = buf[start : start + rng.randint(1, 30)]
    return bytes(buf)


def _fuzz_case(rng: random.Random) -> tuple[bytes | None, bytes | None, int]:
    roll = rng.random()
    if roll < 0.25:
        data: bytes | None = rng.randbytes(rng.randint(0, 400))
    elif roll < 0.55:
        data = _mutate_bytes(rng, orjson.dumps(rng.choice(_SEEDS)))
    elif roll < 0.9:
        data = orjson.dumps(_mutate_structure(rng, rng.choice(_SEEDS)))
    elif roll < 0.95:
        data = b"".join(rng.choice(_TOKENS) for _ in range(rng.randint(0, 40)))
    else:
        data = None
    key = rng.choice([None, b"v-1", b"a", b"", b"\xff"])
    return data, key, rng.choice([MAX_BYTES] * 19 + [300])


def test_fuzz_decode_never_raises() -> None:
    rng = random.Random(20260301)
    seen: dict[str, int] = {}
    for _ in range(5000):
        data, key, max_bytes = _fuzz_case(rng)
        result = decode(data, key, NOW, max_bytes, SKEW)
        if isinstance(result, Rejected):
            assert isinstance(result.reason, DeadLetterReason)
            assert isinstance(result.detail, str) and len(result.detail) <= DETAIL_MAX_CHARS
            letter = dead_letter(data, result, key=key, received_at=RECEIVED)
            assert letter.original == (data or b"")
            seen[result.reason.value] = seen.get(result.reason.value, 0) + 1
        else:
            assert result.visitor_id and result.event_id
            seen["ok"] = seen.get("ok", 0) + 1
    # the generator reaches every branch, so the test means something
    for reason in (
        "ok",
        "not_json",
        "unknown_type",
        "schema_violation",
        "future_timestamp",
        "key_mismatch",
        "too_large",
    ):
        assert seen.get(reason, 0) > 0, seen


def test_decode_types_line_up() -> None:
    assert isinstance(run(raw(type="add_to_cart", properties={"product_id": "p"})), AddToCart)
    assert isinstance(run(raw(type="purchase", properties={"order_id": "o", "value": 1})), Purchase)
