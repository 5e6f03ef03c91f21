"""A mergeable quantile sketch with a relative error bound (DDSketch's log buckets), and a partition's
cohort sketches. Pure: no I/O.

`QuantileSketch` holds positive values in log-spaced buckets. With relative accuracy α and
γ = (1 + α) / (1 − α), bucket i holds the values in (γ^(i−1), γ^i], and its count is an integer:

* **insert and delete** are +1 and −1 at the value's bucket, so a profile whose value moves from a
  to b is `move(a, b)` (a value leaving the population is `move(a, None)`);
* **merge** adds counts bucket by bucket: merging the sketches of every partition gives exactly the
  sketch of all their values, in any order;
* **quantile(q)** finds the bucket holding the value of rank ⌊q·(n − 1)⌋ (0-based, ascending; ranks
  are exact) and answers its representative 2·γ^i / (γ + 1).

Error bound: the answer v and the exact value x of that rank satisfy |v − x| ≤ α·x, for every q and
any history of inserts, deletes and merges (x ∈ (γ^(i−1), γ^i] gives v / x ∈ [1 − α, 1 + α)). At the
default α = 1 %, a 95th percentile of 1,000.00 is answered within [990, 1010]. A sketch holds one
bucket per factor γ of the values' range: 0.01 to 10^6 at α = 1 % is at most 922 buckets, however
many values it counts.

`PartitionCohorts` is what one partition holds per cohort (`streams.core.definitions.CohortDef`):
the sketch of its profiles' recorded values (`Profile.cohort_values`), who is in each population,
and which sketches changed since they were last published.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_ALPHA", "CohortMove", "PartitionCohorts", "QuantileSketch"]

DEFAULT_ALPHA = 0.01
"""Relative accuracy of a sketch's quantiles (1 %)."""

CohortMove = tuple[str, float | None, float | None]
"""(visitor id, old value, new value) of one profile's recorded cohort value; None: not in the
population (no value > 0) before or after."""


class QuantileSketch:
    """Counts of positive values in log buckets (module docstring: the scheme and its error bound).

    `counts` maps a bucket index to its count; a bucket whose count returns to 0 is dropped. Counts
    may be negative only in a delta that is merged into a sketch holding those values.
    """

    __slots__ = ("_log_gamma", "alpha", "counts", "gamma")

    def __init__(self, alpha: float = DEFAULT_ALPHA, counts: Mapping[int, int] | None = None) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"relative accuracy must be in (0, 1), not {alpha!r}")
        self.alpha = alpha
        self.gamma = (1.0 + alpha) / (1.0 - alpha)
        self._log_gamma = math.log(self.gamma)
        self.counts: dict[int, int] = {i: c for i, c in (counts or {}).items() if c}

    def index(self, value: float) -> int:
        """The bucket of `value` (> 0 and finite): the i with γ^(i−1) < value ≤ γ^i."""
        if not (value > 0.0 and math.isfinite(value)):
            raise ValueError(f"a sketch counts finite values > 0, not {value!r}")
        return math.ceil(math.log(value) / self._log_gamma)

    def representative(self, index: int) -> float:
        """The value bucket `index` answers: within α of every value the bucket holds."""
        return 2.0 * self.gamma**index / (self.gamma + 1.0)

    def add(self, value: float, count: int = 1) -> None:
        """Count `value` `count` times (negative: delete)."""
        i = self.index(value)
        total = self.counts.get(i, 0) + count
        if total:
            self.counts[i] = total
        else:
            del self.counts[i]

    def move(self, old: float | None, new: float | None) -> None:
        """One value moved from `old` to `new` (None: absent before or after)."""
        if old is not None:
            self.add(old, -1)
        if new is not None:
            self.add(new, 1)

    def merge(self, other: QuantileSketch) -> None:
        """Add `other`'s counts (same α only: their buckets would not line up)."""
        if other.alpha != self.alpha:
            raise ValueError(f"cannot merge sketches of relative accuracy {other.alpha} into {self.alpha}")
        counts = self.counts
        for i, c in other.counts.items():
            total = counts.get(i, 0) + c
            if total:
                counts[i] = total
            else:
                counts.pop(i, None)

    @property
    def count(self) -> int:
        """Values counted (buckets with a positive count)."""
        return sum(c for c in self.counts.values() if c > 0)

    def quantile(self, q: float) -> float | None:
        """The value of rank ⌊q·(n − 1)⌋ within α (module docstring); None when the sketch is empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], not {q!r}")
        n = self.count
        if n == 0:
            return None
        rank = math.floor(q * (n - 1))
        seen = 0
        for i in sorted(self.counts):
            c = self.counts[i]
            if c <= 0:
                continue
            seen += c
            if seen > rank:
                return self.representative(i)
        raise AssertionError("unreachable: rank < n")  # pragma: no cover

    def dense(self) -> tuple[int, list[int]]:
        """(lowest index, counts from it to the highest, 0 in gaps): the compact serialised form
        (neighbouring buckets of real data are mostly all non-empty). (0, []) when empty."""
        if not self.counts:
            return 0, []
        low, high = min(self.counts), max(self.counts)
        return low, [self.counts.get(i, 0) for i in range(low, high + 1)]

    @classmethod
    def from_dense(cls, alpha: float, offset: int, counts: Iterable[int]) -> QuantileSketch:
        """`dense` reversed."""
        return cls(alpha, {offset + k: c for k, c in enumerate(counts) if c})

    def copy(self) -> QuantileSketch:
        return QuantileSketch(self.alpha, self.counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantileSketch) and (self.alpha, self.counts) == (other.alpha, other.counts)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"QuantileSketch(alpha={self.alpha}, count={self.count}, buckets={len(self.counts)})"


@dataclass(slots=True)
class PartitionCohorts:
    """One partition's cohort state: per cohort name, the sketch of its profiles' recorded values,
    the visitors in the population (a recorded value: re-evaluated when the threshold moves), and
    which sketches changed since `take_changed`.

    Each sketch counts exactly the recorded values (`Profile.cohort_values`) of the visitors in its
    population. A move out of a value it never counted (a partition rebuilt while the definitions
    had no cohorts, `streams.cohorts.rebuild`) only takes the new value in.
    """

    alpha: float = DEFAULT_ALPHA
    sketches: dict[str, QuantileSketch] = field(default_factory=dict)
    population: dict[str, set[str]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    """Cohorts whose sketch changed since the last `take_changed` (published at the checkpoint)."""

    def move(self, cohort: str, visitor_id: str, old: float | None, new: float | None) -> None:
        """One profile's recorded value of `cohort` moved from `old` to `new`."""
        sketch = self.sketches.get(cohort)
        if sketch is None:
            sketch = self.sketches[cohort] = QuantileSketch(self.alpha)
        members = self.population.setdefault(cohort, set())
        sketch.move(old if visitor_id in members else None, new)
        if new is None:
            members.discard(visitor_id)
        else:
            members.add(visitor_id)
        self.changed.add(cohort)

    def apply(self, deltas: Mapping[str, Iterable[CohortMove]]) -> None:
        """A batch's moves of this partition (`streams.core.batch.BatchResult.cohort_deltas`)."""
        for cohort, moves in deltas.items():
            for visitor_id, old, new in moves:
                self.move(cohort, visitor_id, old, new)

    def record(self, visitor_id: str, values: Mapping[str, float]) -> None:
        """Count a restored profile's recorded values (recovery)."""
        for cohort, value in values.items():
            self.move(cohort, visitor_id, None, value)

    def take_changed(self) -> dict[str, QuantileSketch]:
        """Copies of the sketches changed since the last call, and nothing is changed any more."""
        out = {name: self.sketches[name].copy() for name in sorted(self.changed) if name in self.sketches}
        self.changed = set()
        return out

    def readers(self, cohorts: Iterable[str]) -> set[str]:
        """Visitors in the population of any of `cohorts`."""
        out: set[str] = set()
        for cohort in cohorts:
            out |= self.population.get(cohort, set())
        return out
