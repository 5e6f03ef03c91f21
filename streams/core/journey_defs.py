"""What the ``journeys:``, ``campaigns:`` and ``guardrails:`` sections of a definitions file build.

Plain frozen values, read by `streams.core.definitions` (which validates them with line and column)
and used by `streams.core.journeys` (the journey steps) and `streams.core.guardrails` (caps, quiet
hours, schedules, budgets, holdouts and A/B variants). This module imports nothing of the loader.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from schemas.messages import MessageKind
from schemas.onsite import OUTCOME_NAMES
from streams.core.attributes import Expr

__all__ = [
    "END",
    "OPT_OUT",
    "OUTCOME_NAMES",
    "Budget",
    "CampaignDef",
    "Caps",
    "Guardrails",
    "JourneyDef",
    "QuietHours",
    "Schedule",
    "SendSpec",
    "Step",
    "Variant",
]

END = "end"
"""The step id that ends a journey (``next: end``, ``else: end``); no step may use it."""
OPT_OUT = "opt_out"
"""``exit_on: [opt_out]``: the visitor's marketing consent turned false."""
# OUTCOME_NAMES (re-exported from `schemas.onsite`): the custom events the collector makes of
# message outcomes; in ``exit_on`` and ``until`` they count only for a message of the same journey.

DEFAULT_ATTRIBUTION_S = 7 * 86_400.0


@dataclass(frozen=True, slots=True)
class Caps:
    """At most this many messages per hour / day / week (sliding, event time); None: no limit."""

    hour: int | None = None
    day: int | None = None
    week: int | None = None

    def limits(self) -> tuple[tuple[float, int], ...]:
        """(window in seconds, limit) of each limit set."""
        out: list[tuple[float, int]] = []
        for window_s, limit in ((3_600.0, self.hour), (86_400.0, self.day), (604_800.0, self.week)):
            if limit is not None:
                out.append((window_s, limit))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """No message on `channels` between `start_min` and `end_min` (minutes of the local day; the
    range wraps past midnight when start > end), in the visitor's time zone."""

    start_min: int
    end_min: int
    channels: frozenset[str]


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a campaign may send: ISO weekdays (1 = Monday), hour ranges as minutes of the day
    ([start, end)), an inclusive date range, all in `zone` (the campaign's, not the visitor's)."""

    weekdays: frozenset[int] = frozenset(range(1, 8))
    hours: tuple[tuple[int, int], ...] = ((0, 1440),)
    start_date: date | None = None
    end_date: date | None = None
    zone: str = "Europe/Berlin"


@dataclass(frozen=True, slots=True)
class Budget:
    daily: float
    """Spend per local day (of the campaign's schedule zone, else the definitions' zone)."""
    cost_per_message: float
    currency: str = "EUR"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    share: float
    payload: Mapping[str, Any] = field(default_factory=dict)
    """Merged over the message's payload for visitors of this variant."""


@dataclass(frozen=True)
class CampaignDef:
    """A campaign: who may get its messages (`when`), when (`schedule`), how often (`cap`), at what
    cost (`budget`), and the experiment (`holdout` share, A/B `variants`). Triggers and journey
    send steps name it with ``campaign:``."""

    id: str
    description: str = ""
    when: Expr | None = None
    schedule: Schedule | None = None
    budget: Budget | None = None
    cap: Caps | None = None
    holdout: float = 0.0
    variants: tuple[Variant, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Guardrails:
    """The house rules for every message of triggers and journeys (``guardrails:``)."""

    channel_caps: Mapping[str, Caps] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    attribution_window_s: float = DEFAULT_ATTRIBUTION_S
    """A purchase this long after a message converts it (last touch)."""

    @property
    def screens(self) -> bool:
        """Whether any rule here can refuse a message (caps or quiet hours)."""
        return bool(self.channel_caps) or self.quiet_hours is not None


@dataclass(frozen=True)
class SendSpec:
    """A message as triggers send it (``send:`` of a trigger or a journey step)."""

    kind: MessageKind
    channel: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    compute: Mapping[str, Expr] = field(default_factory=dict)
    ttl_s: float | None = None


StepAction = Literal["send", "wait", "branch", "end"]


@dataclass(frozen=True)
class Step:
    """One journey step. ``send`` emits a message and goes on; ``wait`` stops until `wait_s` has
    passed since the step started (or one of `until` happens: then `on_until`); ``branch`` goes to
    the first target whose condition holds, else `otherwise`; ``end`` ends the journey. `next` is
    where ``send`` and ``wait`` go on (the following step by default; `END` after the last)."""

    id: str
    action: StepAction
    next: str = END
    send: SendSpec | None = None
    campaign: str | None = None
    wait_s: float = 0.0
    until: frozenset[str] = frozenset()
    on_until: str | None = None
    branches: tuple[tuple[Expr, str], ...] = ()
    otherwise: str = END
    line: int | None = None

    def targets(self) -> tuple[str, ...]:
        """Every step this one can go to."""
        if self.action == "branch":
            return (*(target for _, target in self.branches), self.otherwise)
        if self.action == "wait" and self.on_until is not None:
            return (self.next, self.on_until)
        return () if self.action == "end" else (self.next,)


@dataclass(frozen=True)
class JourneyDef:
    """A multi-step flow: entered on a segment entry or an event, its steps run from the first one;
    any of `exit_on` ends it at once."""

    id: str
    entry: Literal["enter", "event"]
    entry_targets: frozenset[str]
    steps: tuple[Step, ...]
    exit_events: frozenset[str] = frozenset()
    """Event types and outcome names (`OUTCOME_NAMES`) that end the journey."""
    exit_opt_out: bool = False
    exit_segments: frozenset[str] = frozenset()
    """Leaving one of these segments ends the journey."""
    campaign: str | None = None
    """The default campaign of its send steps."""
    reentry_s: float = 0.0
    """How long after the journey's last entry the visitor may enter it again."""
    description: str = ""
    line: int | None = None

    @functools.cached_property
    def step_index(self) -> Mapping[str, int]:
        return {step.id: i for i, step in enumerate(self.steps)}
