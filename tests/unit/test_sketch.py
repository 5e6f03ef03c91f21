"""The quantile sketch: every quantile within α of the exact one of the same rank, after inserts,
deletes and merges in any order; compact serialisation; a partition's cohort sketches."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.sketch import DEFAULT_ALPHA, PartitionCohorts, QuantileSketch
from tests.unit.test_exact_windows import PROPERTY_SETTINGS

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)
values_st = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False)


def exact(values: list[float], q: float) -> float:
    """The value of rank ⌊q·(n − 1)⌋ of `values` sorted ascending (the sketch's rank convention)."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_within_bound(sketch: QuantileSketch, values: list[float]) -> None:
    assert sketch.count == len(values)
    for q in QUANTILES:
        got = sketch.quantile(q)
        if not values:
            assert got is None
            continue
        want = exact(values, q)
        assert got is not None
        # |v − x| ≤ α·x; the factor allows for the float rounding of log() at a bucket's edge.
        assert abs(got - want) <= sketch.alpha * want * (1 + 1e-9), (q, got, want)


@PROPERTY_SETTINGS
@given(
    values=st.lists(values_st, max_size=300),
    alpha=st.sampled_from([0.001, 0.01, 0.05, 0.2]),
)
def test_quantiles_are_within_the_relative_bound(values: list[float], alpha: float) -> None:
    sketch = QuantileSketch(alpha)
    for value in values:
        sketch.add(value)
    assert_within_bound(sketch, values)


@PROPERTY_SETTINGS
@given(data=st.data(), initial=st.lists(values_st, min_size=1, max_size=120))
def test_inserts_deletes_and_moves_in_any_order(data: st.DataObject, initial: list[float]) -> None:
    """A profile whose value moves is a delete and an insert: the sketch answers as if built anew."""
    sketch = QuantileSketch()
    held = list(initial)
    for value in initial:
        sketch.add(value)
    steps = data.draw(st.lists(st.tuples(st.sampled_from(["add", "remove", "move"]), values_st), max_size=80))
    for kind, value in steps:
        if kind == "add":
            sketch.add(value)
            held.append(value)
        elif held:
            index = data.draw(st.integers(0, len(held) - 1))
            old = held.pop(index)
            if kind == "remove":
                sketch.move(old, None)
            else:
                sketch.move(old, value)
                held.append(value)
    assert_within_bound(sketch, held)
    rebuilt = QuantileSketch()
    for value in held:
        rebuilt.add(value)
    assert sketch == rebuilt


@PROPERTY_SETTINGS
@given(parts=st.lists(st.lists(values_st, max_size=60), min_size=1, max_size=6), order=st.randoms())
def test_merge_is_exact_in_any_order(parts: list[list[float]], order: random.Random) -> None:
    """Per-partition sketches merged in any order are the sketch of all their values."""
    sketches = []
    for part in parts:
        sketch = QuantileSketch()
        for value in part:
            sketch.add(value)
        sketches.append(sketch)
    order.shuffle(sketches)
    merged = QuantileSketch()
    for sketch in sketches:
        merged.merge(sketch)
    everything = [v for part in parts for v in part]
    assert_within_bound(merged, everything)
    single = QuantileSketch()
    for value in everything:
        single.add(value)
    assert merged == single


@PROPERTY_SETTINGS
@given(values=st.lists(values_st, max_size=200))
def test_dense_form_round_trips(values: list[float]) -> None:
    sketch = QuantileSketch()
    for value in values:
        sketch.add(value)
    offset, counts = sketch.dense()
    assert QuantileSketch.from_dense(sketch.alpha, offset, counts) == sketch
    assert len(counts) == (max(sketch.counts) - min(sketch.counts) + 1 if values else 0)


def test_error_bound_at_the_default_accuracy() -> None:
    """A 95th percentile of 1,000 is answered within 1 %; ranks are exact, only values approximated."""
    sketch = QuantileSketch()
    assert sketch.alpha == DEFAULT_ALPHA == 0.01
    for value in range(1, 1001):
        sketch.add(float(value))
    p95 = sketch.quantile(0.95)
    assert p95 is not None and abs(p95 - 950.0) <= 9.5
    assert sketch.quantile(0.0) == pytest.approx(1.0, rel=0.01)
    # One bucket per factor γ of range: 1 to 1000 at 1 % is ⌈ln 1000 / ln γ⌉ + 1 buckets at most.
    assert len(sketch.counts) <= math.ceil(math.log(1000) / math.log(sketch.gamma)) + 1


def test_refusals() -> None:
    sketch = QuantileSketch()
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite values > 0"):
            sketch.add(bad)
    with pytest.raises(ValueError, match="relative accuracy"):
        QuantileSketch(0.0)
    with pytest.raises(ValueError, match="cannot merge"):
        sketch.merge(QuantileSketch(0.02))
    with pytest.raises(ValueError, match="quantile"):
        sketch.quantile(1.5)
    assert sketch.quantile(0.5) is None and sketch.dense() == (0, [])


def test_partition_cohorts_follow_moves_and_report_changed_sketches() -> None:
    state = PartitionCohorts()
    state.record("a", {"p95": 10.0, "p90": 3.0})
    state.record("b", {"p95": 20.0})
    assert state.readers(["p95"]) == {"a", "b"} and state.readers(["p90"]) == {"a"}
    changed = state.take_changed()
    assert sorted(changed) == ["p90", "p95"] and changed["p95"].count == 2
    assert state.take_changed() == {}
    state.apply({"p95": [("a", 10.0, 30.0), ("b", 20.0, None)]})
    assert state.readers(["p95"]) == {"a"}
    changed = state.take_changed()
    assert list(changed) == ["p95"] and changed["p95"].count == 1
    assert changed["p95"].quantile(0.5) == pytest.approx(30.0, rel=0.01)
    changed["p95"].add(1.0)  # a copy: the state's own sketch is not changed
    assert state.sketches["p95"].count == 1
