"""The knobs of a simulation (`SimParams`) and the shipped persona mix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

DEFAULT_MIX: Final[Mapping[str, float]] = {
    "loyal_buyer": 0.15,
    "bargain_hunter": 0.15,
    "window_shopper": 0.25,
    "cart_abandoner": 0.12,
    "big_spender": 0.10,
    "casual_visitor": 0.23,
}

LONG_TAIL_MIX: Final[Mapping[str, float]] = {
    "one_time_visitor": 0.999,
    **{persona: 0.001 * share for persona, share in DEFAULT_MIX.items()},
}
"""Long-tail traffic: one-time visitors (1-5 events, mean 1.85) and a few of the shipped personas
(≈ 75 events each, ≈ 4 % of the events), so about 52 distinct visitors per 100 events."""


@dataclass(frozen=True, slots=True)
class SimParams:
    """Knobs of the simulation; the defaults are the shipped mix with clean traffic."""

    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    """Persona → share (normalised); counts are exact (largest remainder), order is shuffled."""
    duplicate_rate: float = 0.0
    """Share of events sent twice with the same event_id (client retries)."""
    malformed: int = 0
    """Malformed records of each `MALFORMED_KINDS` kind in `Simulation.malformed`."""
    micro_share: float = 0.01
    """Visitors per planted micro-segment, as a share of `visitors` ..."""
    micro_min: int = 2
    """... but at least this many (when the persona pool allows)."""
    no_consent_share: float = 0.0
    """Share of visitors whose events deny personalization consent (their truth: no segments)."""
