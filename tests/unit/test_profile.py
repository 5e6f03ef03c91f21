"""The serialised profile: exact round trips, the clock-field header, profiles of the legacy format."""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

import lz4.block
import orjson
import pytest

from streams.core.profile import (
    _BODY_LENGTHS,
    FORMAT_TAG,
    Profile,
    profile_clock_fields,
    profile_cohort_values,
)


def full_profile() -> Profile:
    """Every field set, none to its default (checked below, so a new field must be added here)."""
    return Profile(
        visitor_id="6457abab-af9b-478b-9488-b0a475c1bd36",
        user_id="U-900488",
        first_seen=1790433851.791,
        last_seen=1795206526.066,
        last_offset=3447,
        recent_event_ids=[668021956633725317, -3921319795906532722, 2**63 - 1, -(2**63)],
        session_id="s-fcfcd0b02eca6154",
        session_started=1795206273.892,
        session_landing_path="/c/clothing",
        session_source="campaign",
        session_source_name="google",
        device_category="desktop",
        os="Windows",
        os_version="10",
        browser="Chrome",
        country="GB",
        region="England",
        region_code="ENG",
        city="London",
        lat=51.5074,
        lon=-0.12775799999999998,
        traffic_source="campaign",
        traffic_name="google",
        last_page_path="/checkout/confirmation",
        last_page_type="checkout",
        locale="en-GB",
        age=61,
        traits={"newsletter": True, "plan": "registered", "score": 0.1, "tags": ["a", "ü"], "none": None},
        days={
            20722: {"sessions": 1, "events": 13, "category_views@sports": 1},
            20758: {"purchases": 1, "spend": 113.94999999999999, "spend@books": 31.99, "items_bought": 2.0},
        },
        cart={"P-1": 2, "P-2": 1},
        cart_value=59.97,
        last_add_to_cart_at=1795206400.5,
        last_purchase_at=1795206500.25,
        last_exit_intent_at=1795206510.125,
        recent_views=[("P-1", 1795206300.0), ("P-2", 1795206310.5)],
        recent_purchases=[("P-9", 1795206500.25)],
        segments=["buyers", "frequent_buyers"],
        segment_since={"buyers": 1795206500.25, "frequent_buyers": 1795206500.25},
        next_check_at=1795208300.066,
        consent_marketing=False,
        trigger_last_sent={"welcome": 1795206273.892},
        evaluated_at=1795206526.066,
        timeline=[
            [1795206273.892, 0, 3, "/"],
            [1795206300.5, 2, 0, "P-1001", "electronics", 499.0],
            [1795206526.066, 8, 4, 99.5, [["P-7", "clothing", 99.5, 1]]],
        ],
        timeline_from_day=20770,
        totals={"events": 3, "purchases": 1, "spend": 99.5, "spend@clothing": 99.5},
        definitions_sha="5d41402abc4b2a76",
        cohort_values={"electronics_spend_p95": 2319.9, "orders_p90": 4.0},
        timer_moments=[42, 20_400, 123_456_789, 0, 1_790_000_000.5, 3, None],
        journey_state={
            "active": {
                "cart_recovery": {"entered": 1795206400.5, "step": "wait_1", "due": 1795292800.5, "seq": 2}
            },
            "entered": {"cart_recovery": 1795206400.5},
            "sent": [
                [
                    1795206400.5,
                    "ads",
                    "cart_recovery",
                    "ab12",
                    "cart_recovery.retarget",
                    None,
                    False,
                    "cart_recovery",
                    "retarget",
                    False,
                ]
            ],
        },
    )


def shape(value: Any) -> Any:
    """A value with its types spelled out: 1 and 1.0, tuples and lists compare equal otherwise."""
    if isinstance(value, dict):
        return {(type(k).__name__, k): shape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [shape(v) for v in value])
    return (type(value).__name__, value)


def assert_same(got: Profile, want: Profile) -> None:
    for f in fields(Profile):
        assert shape(getattr(got, f.name)) == shape(getattr(want, f.name)), f.name


def test_full_profile_sets_every_field() -> None:
    default = Profile(visitor_id="")
    profile = full_profile()
    unset = [f.name for f in fields(Profile) if getattr(profile, f.name) == getattr(default, f.name)]
    assert unset == []


@pytest.mark.parametrize("profile", [full_profile(), Profile(visitor_id="v")], ids=["full", "default"])
def test_round_trip_is_exact(profile: Profile) -> None:
    raw = profile.to_bytes()
    assert raw.startswith(FORMAT_TAG)
    back = Profile.from_bytes(raw)
    assert back == profile
    assert_same(back, profile)
    assert back.to_bytes() == raw


def test_clock_fields_come_from_the_header() -> None:
    profile = full_profile()
    assert profile_clock_fields(profile.to_bytes()) == (1795206526.066, 1795208300.066)
    profile.next_check_at = None
    assert profile_clock_fields(profile.to_bytes()) == (1795206526.066, None)
    profile.next_check_at = 0.0
    assert profile_clock_fields(profile.to_bytes()) == (1795206526.066, 0.0)
    assert profile_clock_fields(Profile(visitor_id="v").to_bytes()) == (0.0, None)


def test_clock_fields_do_not_touch_the_body() -> None:
    raw = full_profile().to_bytes()
    header_and_ids = len(FORMAT_TAG) + 8 + 8 + 2 + 8 * 4
    broken = raw[:header_and_ids] + b"\x00" * (len(raw) - header_and_ids)
    assert profile_clock_fields(broken) == (1795206526.066, 1795208300.066)


def legacy_bytes(profile: Profile) -> bytes:
    """The format before the header: LZ4 block of orjson of the dataclass."""
    return lz4.block.compress(orjson.dumps(profile, option=orjson.OPT_NON_STR_KEYS))


@pytest.mark.parametrize("profile", [full_profile(), Profile(visitor_id="v")], ids=["full", "default"])
def test_legacy_profiles_still_decode(profile: Profile) -> None:
    raw = legacy_bytes(profile)
    assert_same(Profile.from_bytes(raw), profile)
    assert profile_clock_fields(raw) == (profile.last_seen, profile.next_check_at)
    assert Profile.from_bytes(raw).to_bytes() == profile.to_bytes()


def test_serialised_form_is_smaller_than_legacy() -> None:
    profile = full_profile()
    assert len(profile.to_bytes()) < len(legacy_bytes(profile))


def older_format_bytes(profile: Profile, number: int) -> bytes:
    """Format `number` (1–6) of `profile`: the same header and event ids, no cohorts segment before
    format 5 (which moved `cohort_values` there; format 4's body ends with it), and a body without
    the fields appended since."""
    raw = profile.to_bytes()
    ids_end = len(FORMAT_TAG) + 8 + 8 + 2 + 8 * len(profile.recent_event_ids)
    cohorts_end = ids_end + 4 + struct.unpack_from("<I", raw, ids_end)[0]
    body = orjson.loads(lz4.block.decompress(raw[cohorts_end:]))
    tag = b"TP" + bytes([number]) + b"\xff"
    if number in (5, 6):
        return (
            tag
            + raw[len(FORMAT_TAG) : cohorts_end]
            + lz4.block.compress(orjson.dumps(body[: _BODY_LENGTHS[number]]))
        )
    body = (
        [*body[: _BODY_LENGTHS[5]], profile.cohort_values] if number == 4 else body[: _BODY_LENGTHS[number]]
    )
    return tag + raw[len(FORMAT_TAG) : ids_end] + lz4.block.compress(orjson.dumps(body))


@pytest.mark.parametrize(
    ("number", "added"),
    [
        (
            1,
            [
                *("evaluated_at", "timeline", "timeline_from_day", "totals", "definitions_sha"),
                *("cohort_values", "timer_moments", "journey_state"),
            ],
        ),
        (
            2,
            [
                *("timeline", "timeline_from_day", "totals", "definitions_sha", "cohort_values"),
                *("timer_moments", "journey_state"),
            ],
        ),
        (3, ["cohort_values", "timer_moments", "journey_state"]),
        (4, ["timer_moments", "journey_state"]),
        (5, ["timer_moments", "journey_state"]),
        (6, ["journey_state"]),
    ],
)
def test_older_formats_decode_with_defaults_for_new_fields(number: int, added: list[str]) -> None:
    profile = full_profile()
    raw = older_format_bytes(profile, number)
    back = Profile.from_bytes(raw)
    default = Profile(visitor_id="")
    for name in added:
        assert getattr(back, name) == getattr(default, name)
        setattr(back, name, getattr(profile, name))
    assert_same(back, profile)
    assert profile_cohort_values(raw) == Profile.from_bytes(raw).cohort_values
    assert profile_clock_fields(raw) == (profile.last_seen, profile.next_check_at)
