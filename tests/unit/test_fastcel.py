"""The Python fast path for plain CEL conditions answers exactly as CEL does, or declines."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime
from typing import Any

import cel
import pytest

from streams.core.attributes import CUSTOM_FUNCTIONS, compile_expr
from streams.core.definitions import Definitions, load_definitions
from streams.core.fastcel import Declined, compile_fast
from streams.core.profile import Profile
from streams.core.segments import evaluate
from streams.settings import DEFAULT_SEGMENTS_FILE
from streams.simulate import simulate
from streams.testing import replay_events

NAMES = ("a", "b", "c", "s", "t", "flag", "items")

CORPUS = (
    "a >= 3",
    "a > 1.5",
    "a == 0",
    "a != 2",
    "a < -1",
    "3 <= a",
    "0.5 > a",
    "a == b",
    "a <= b",
    's == "CH"',
    's != "CH"',
    '"CH" == s',
    "s == t",
    "s < t",
    's >= "M"',
    "flag",
    "!flag",
    "!(a > 1)",
    "flag == true",
    "flag != b",
    "a > 1 && b < 2",
    "a > 1 || b < 2",
    "a > 1 && b < 2 && c == 0",
    'a > 1 || b < 2 || s == "x"',
    '(a > 1 || flag) && !(s == "DE")',
    'flag && s in ["BY", "BW"]',
    's in ["Zürich", "Genève"]',
    '"P-1" in items',
    "s in items",
    "a in items",
    "true",
    "false || flag",
    "a",
    "s",
    "distance_km(52.5, -13.4) <= 4.0",
    "flag && distance_km(1, 2) > c",
    "a >= 9007199254740992",
    "a >= 1.0e3",
)

OUTSIDE = (
    "a + 1 > 2",
    "a * 2 >= b",
    "size(items) > 2",
    'items.exists(i, i == "x")',
    "m.key == 1",
    'm["key"] == 1',
    "a > 1 ? flag : false",
    's == "a\\"b"',
    's == r"raw"',
    's == b"bytes"',
    "a == 3u",
    "a == 0x1F",
    "a < b < c",
    "a == null",
    "[1, 2] == items",
    "a in [1, 2]",
    "a >= 99999999999999999999",
    "int(a) > 1",
    "distance_km(lat, 2.0) < 1.0",
    "a > 1 // comment",
    "",
)

VALUES: tuple[Any, ...] = (
    0, 1, 2, 3, -1, -5, 1000, 2**53, 2**53 + 1, 2**60, -(2**62),
    0.0, -0.0, 0.5, 1.5, 2.0, 3.0, 1e3, math.inf, -math.inf, math.nan,
    True, False,
    "", "CH", "DE", "BY", "M", "x", "P-1", "Zürich", "\ud800", "a\ud800b",
    None,
    [], ["P-1", "P-2"], ["x"], [1, "P-1"], ["\ud800", "P-1"], ("P-1",),
    {"k": 1},
)  # fmt: skip


def _distance_km(lat: Any, lon: Any) -> float | None:
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    return abs(float(lat)) + abs(float(lon))


FUNCTIONS = {"distance_km": _distance_km}


def _cel(program: cel.Program, env: dict[str, Any]) -> tuple[bool, Any]:
    context = cel.Context(None, dict(FUNCTIONS))
    context.set_variable_resolver(env.get)
    for name, value in env.items():
        if value is None:
            context.add_variable(name, None)
    try:
        return True, program.execute(context)
    except Exception:
        return False, None


def test_outside_the_subset_stays_in_cel() -> None:
    for text in OUTSIDE:
        assert compile_fast(text, frozenset({"distance_km"})) is None, text
    assert compile_fast("distance_km(1, 2) < 3") is None  # not a function it may call


def test_agrees_with_cel_on_random_values() -> None:
    rng = random.Random(20261123)
    answered = declined = 0
    for text in CORPUS:
        fast = compile_fast(text, frozenset({"distance_km"}))
        assert fast is not None, text
        program = cel.compile(text)
        for _ in range(1000):
            env = {name: rng.choice(VALUES) for name in NAMES}
            try:
                got = fast(env.get, FUNCTIONS)
            except Declined:
                declined += 1
                continue
            ok, expected = _cel(program, env)
            assert ok and expected is got, (text, env, got, expected)
            answered += 1
    # Both sides are exercised: most evaluations answer, the odd values decline.
    assert answered > 8_000 and declined > 8_000, (answered, declined)


def test_the_shipped_conditions_run_in_python() -> None:
    defs = load_definitions(DEFAULT_SEGMENTS_FILE)
    assert all(seg.when.fast is not None for seg in defs.segments)
    assert compile_expr("purchases_30d >= 3").fast is not None
    assert CUSTOM_FUNCTIONS == frozenset(FUNCTIONS)


def _profiles(defs: Definitions) -> list[Profile]:
    end = datetime(2026, 11, 2, 12, tzinfo=UTC)
    return list(replay_events(simulate(60, 11, end).events, defs, wall_now=end.timestamp()).values())


@pytest.mark.parametrize("seed", [1, 2])
def test_evaluate_answers_the_same_with_and_without_the_fast_path(seed: int) -> None:
    defs = load_definitions(DEFAULT_SEGMENTS_FILE)
    cel_only = dataclasses.replace(
        defs,
        segments=tuple(
            dataclasses.replace(seg, when=dataclasses.replace(seg.when, fast=None)) for seg in defs.segments
        ),
    )
    rng = random.Random(seed)
    members = 0
    for profile in _profiles(defs):
        for _ in range(10):
            at = profile.first_seen + rng.random() * (profile.last_seen + 40 * 86_400 - profile.first_seen)
            fast, slow = evaluate(profile, defs, at), evaluate(profile, cel_only, at)
            assert (fast.members, fast.errors, fast.deciding) == (slow.members, slow.errors, slow.deciding)
            members += len(fast.members)
    assert members > 100
