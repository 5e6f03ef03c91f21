"""Definitions as data: the YAML loader/validator and what it builds (segments, attributes, triggers, params).

The definitions file (``segments/default.yaml`` is the shipped one, and its comments are the
user-facing reference) has these top-level keys:

``version``     string, required; stamped as ``definition_version`` on every segment change.
``description`` free text.
``params``      named constants readable by name in every expression (``product_x: "P-1001"``);
                `params_override` of the loader replaces values (same type, known names only).
``attributes``  windowed aggregates, declared once. Sums over the day buckets (``metric``/``ratio``;
                windows sliding, calendar or lifetime: `streams.core.windows`)::

                    purchases_30d:    {metric: purchases, window: 30d}
                    spend_365d_tv:    {metric: spend, dimension: tv, window: 365d}  # or metric: spend@tv
                    spend_365d:       {metric: spend, by: category, window: 365d}   # map: spend_365d["tv"]
                    visit_days_30d:   {metric: sessions, agg: days, window: 30d}    # days with ≥ 1
                    promo_share_90d:  {ratio: [promo_purchases, purchases], window: 90d}

                and aggregates over the events themselves (``event``: a type, a list, or ``any``;
                `streams.core.aggregates` defines rows, fields and results exactly; sliding or
                calendar windows of at most 365d, over the profile's retained timeline)::

                    big_orders_30d:   {event: purchase, where: "value >= 100", window: 30d}  # count
                    max_order_365d:   {event: purchase, agg: max, field: value, window: 365d}
                    products_7d:      {event: product_view, agg: distinct, field: product_id, window: 7d}
                    sessions_30d:     {event: any, agg: distinct, field: session, window: 30d}
                    top_category_90d: {event: [product_view, category_view], agg: top, field: category,
                                       window: 90d}
                    sale_share_30d:   {event: page_view, agg: share, where: 'path.startsWith("/sale/")',
                                       window: 30d}
                    spend_by_product: {event: purchase, agg: sum, field: value, by: product, window: 365d}

                ``agg``: count (default), sum, min, max, avg, distinct, first, last, top, share;
                ``field``: value, category, product_id, quantity, path, coupon, discount, name,
                session, day, hour, weekday; ``where``: a CEL condition over those fields (params
                readable); ``by``: category or product (a map).

``cohorts``     thresholds relative to everyone else: a quantile of a numeric attribute (of one key
                of a map attribute) over the population of profiles whose value is > 0, shared by
                every partition and worker (`streams.cohorts`)::

                    electronics_spend_p95: {attribute: spend_365d, key: electronics, quantile: 0.95}
                    orders_p90:            {attribute: purchases_365d, quantile: 0.90}
                    spend_p95:  {attribute: spend_365d, key: [electronics, clothing], quantile: 0.95}

                A condition reads a cohort as a double, like an attribute; one with a list of keys
                is a map, one threshold per key (``spend_p95["clothing"]``, ``spend_p95[category]``
                in a ``for_each``). "Top 5 % of electronics spenders" is ``spend_365d["electronics"]
                > 0 && spend_365d["electronics"] >= electronics_spend_p95``: the population is the
                spenders, not every visitor. Until a threshold is known (no data yet) it reads
                +infinity: nobody is "top". A threshold is within the sketch's relative accuracy
                (`settings.cohort_alpha`, 1 %: `streams.core.sketch`) of the exact quantile; when
                it moves, the population's profiles are re-evaluated (reason ``cohort``), so
                entries and exits follow.
``segments``    a list; each item has ``id``, ``description``, ``when`` (a CEL condition over
                facts, attributes and params), optionally ``recheck`` (``{after: <profile time>,
                delay: 30m}`` or a list of them: when a condition can flip with no new event) and
                ``for_each`` (one segment per item; the loop variable and per-item constants are
                readable in ``when`` and substituted as ``{name}`` in ``id`` and ``description``).
``triggers``    a list of message rules: ``id``, ``on`` (``{event: exit_intent}``,
                ``{enter: cart_abandoners}``, ``{exit: …}``; segment names may be globs like
                ``top_spender_*``), optional ``when``, ``send: {kind, channel, payload, compute, ttl}``
                and ``cap`` (frequency cap per visitor and rule). See `streams.core.triggers`.

Anything else is refused with the file's line, column and the reason (`DefinitionError`).

`streams.core.segments` evaluates the segments (and describes how conditions run);
`streams.core.triggers` decides the messages of the trigger rules. Both import this module; it
imports neither.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from schemas.events import EventType
from schemas.messages import MessageKind
from streams.core.aggregates import AGGS, BY_AGGS, BY_FIELDS, FIELDS, NUMBER_AGGS, Aggregate, Filter
from streams.core.attributes import (
    FACTS,
    LOCAL_TIME_FACTS,
    NULLABLE_FACTS,
    RECHECK_ANCHORS,
    RELATIVE_FACTS,
    AttributeDef,
    CelSyntaxError,
    Expr,
    ValuePlan,
    base_name,
    compile_expr,
    dimension_var,
    display_name,
    parse_duration,
    parse_metric_ref,
    rewrite_segment_refs,
    split_dimension_var,
    split_segment_ref,
)
from streams.core.dependencies import DependencyIndex
from streams.core.fastcel import condition_guards
from streams.core.journey_defs import (
    DEFAULT_ATTRIBUTION_S,
    END,
    OPT_OUT,
    OUTCOME_NAMES,
    Budget,
    CampaignDef,
    Caps,
    Guardrails,
    JourneyDef,
    QuietHours,
    Schedule,
    SendSpec,
    Step,
    Variant,
)
from streams.core.profile import DIMENSIONED_METRICS
from streams.core.timeline import CODES, TYPES
from streams.core.timer_plan import (
    Source,
    SourceTable,
    TimedSegment,
    TimerPlan,
    base_plan,
    plan_for,
    source_index,
    source_segments,
    timed_segment,
)
from streams.core.windows import DEFAULT_ZONE, Window, parse_window, zone_of

__all__ = [
    "CHANNELS",
    "CONSENT_CHANNELS",
    "TRIGGER_CONTEXT",
    "Channel",
    "CohortDef",
    "DefinitionError",
    "Definitions",
    "Recheck",
    "SegmentDef",
    "TriggerRule",
    "load_definitions",
    "parse_definitions",
    "read_definitions_text",
]

Channel = Literal["onsite", "ads", "email", "crm"]
CHANNELS: tuple[str, ...] = ("onsite", "ads", "email", "crm")
CONSENT_CHANNELS: frozenset[str] = frozenset({"ads", "email", "crm"})
"""Channels that need marketing consent."""
TRIGGER_CONTEXT: frozenset[str] = frozenset({"segments", "event_types", "segment"})
"""Names only trigger expressions can read (reserved: no param/attribute may use them)."""


@dataclass(frozen=True)
class TriggerRule:
    id: str
    on: Literal["event", "enter", "exit"]
    targets: frozenset[str]
    """Event types (``on: event``) or segment ids, globs already expanded (``on: enter/exit``)."""
    kind: MessageKind
    channel: Channel
    when: Expr | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    compute: Mapping[str, Expr] = field(default_factory=dict)
    cap_s: float | None = None
    ttl_s: float | None = None
    description: str = ""
    line: int | None = None
    campaign: str | None = None
    """The campaign whose guard rails, holdout and variants apply (`streams.core.guardrails`)."""

    @property
    def needs_consent(self) -> bool:
        return self.channel in CONSENT_CHANNELS


class DefinitionError(ValueError):
    """A refused definitions file: ``str()`` is ``path:line:column: reason`` (1-based: where the refused
    node starts or, inside an expression, the offending identifier or token); ``path: reason`` for what
    has no place in the file (an unreadable file, an unknown `params_override` name)."""

    def __init__(
        self, message: str, line: int | None = None, path: str | None = None, column: int | None = None
    ) -> None:
        self.message, self.line, self.path, self.column = message, line, path, column
        where = path or "<string>"
        if line is not None and column is not None:
            where = f"{where}:{line}:{column}"
        elif line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Recheck:
    """Re-evaluate `delay_s` after each time the profile's `after` field names (the due queue)."""

    after: str
    delay_s: float


@dataclass(frozen=True)
class SegmentDef:
    id: str
    description: str
    when: Expr
    rechecks: tuple[Recheck, ...] = ()
    bindings: Mapping[str, Any] = field(default_factory=dict)
    """`for_each` constants of this expansion (e.g. ``{"category": "clothing", "threshold": 600}``)."""
    reads: tuple[str, ...] = ()
    """Facts, attributes, attribute dimensions and cohorts the condition reads (what a change reports)."""
    line: int | None = None
    template: str | None = None
    """The `for_each` id template this segment was expanded from."""
    read_labels: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(runtime variable, reported name) per entry of `reads`."""
    segment_refs: frozenset[str] = frozenset()
    """Segments the condition reads with ``segment("x")`` (evaluated before this one)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_labels", tuple((name, display_name(name)) for name in self.reads))


@dataclass(frozen=True, slots=True)
class CohortDef:
    """A threshold: the `quantile` of `attribute` (its `key`, for a map attribute) over the profiles
    whose value is > 0 (module docstring, ``cohorts``). A map cohort (``key: [a, b]``) is one
    `CohortDef` per key."""

    name: str
    """``orders_p90``, or ``spend_p95[electronics]`` for a key of a map cohort: what the sketches,
    the cohorts topic and `Profile.cohort_values` are keyed by."""
    group: str
    """The name conditions read (``spend_p95``, as ``spend_p95["electronics"]`` for a map cohort)."""
    attribute: str
    key: str | None
    quantile: float
    var: str
    """The runtime variable conditions read the threshold as (`dimension_var` for a map cohort)."""
    value_var: str
    """The runtime variable of a profile's value (`dimension_var` of a map attribute's key)."""
    codes: frozenset[int] | None
    """Event codes whose events can change the value (None: any event)."""
    description: str = ""
    line: int | None = None

    @property
    def of(self) -> str:
        """What it is a quantile of: ``spend_365d[electronics]`` or ``purchases_365d``. Sketches of
        another ``of`` under the same name (a changed definition) are not merged with these."""
        return self.attribute if self.key is None else f"{self.attribute}[{self.key}]"


@dataclass(frozen=True, eq=False)
class Definitions:
    """A validated definitions file. Compare two by `source_sha` (text + effective params)."""

    version: str
    params: Mapping[str, Any]
    attributes: Mapping[str, AttributeDef]
    segments: tuple[SegmentDef, ...]
    triggers: tuple[TriggerRule, ...]
    source_sha: str
    path: str = "<string>"
    description: str = ""
    zone: str = DEFAULT_ZONE
    """IANA time zone of calendar windows and local-time facts (``timezone:``)."""
    # Prepared once, used per visitor:
    plan: ValuePlan = field(default_factory=lambda: ValuePlan.build((), {}), repr=False)
    """Every fact and attribute any segment or trigger reads."""
    segment_vars: frozenset[str] = frozenset()
    segment_nullable: frozenset[str] = frozenset()
    segment_functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    segment_function_names: frozenset[str] = frozenset()
    timed: Mapping[str, TimedSegment] = field(default_factory=dict)
    """Segment id → its sources of time-driven change, split by whom they concern
    (`streams.core.timer_plan`); segments time cannot change are not in it."""
    timer_always: frozenset[str] = frozenset()
    """Attributes whose window exits are timers for every visitor (the cohorts')."""
    trigger_plan: ValuePlan = field(default_factory=lambda: ValuePlan.build((), {}), repr=False)
    trigger_vars: frozenset[str] = frozenset()
    trigger_nullable: frozenset[str] = frozenset()
    trigger_functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    trigger_function_names: frozenset[str] = frozenset()
    dependencies: DependencyIndex | None = field(default=None, repr=False)
    """Which segments an event can change (`streams.core.dependencies`); its `order` is the
    evaluation order (a segment after the segments it reads)."""
    local_time_segments: frozenset[str] = frozenset()
    """Segments reading `local_hour`/`local_weekday`: members are rechecked at every full hour."""
    cohorts: Mapping[str, CohortDef] = field(default_factory=dict)
    """Cohort thresholds by `CohortDef.name` (``cohorts:``)."""
    journeys: tuple[JourneyDef, ...] = ()
    """Multi-step flows (``journeys:``, `streams.core.journeys`)."""
    campaigns: Mapping[str, CampaignDef] = field(default_factory=dict)
    """Campaigns by id (``campaigns:``, `streams.core.guardrails`)."""
    guardrails: Guardrails = field(default_factory=Guardrails)
    """The house rules of every message (``guardrails:``, `streams.core.guardrails`)."""

    @functools.cached_property
    def journey_entry_segments(self) -> frozenset[str]:
        """Segments whose entry starts a journey."""
        return frozenset(s for j in self.journeys if j.entry == "enter" for s in j.entry_targets)

    @functools.cached_property
    def journey_entry_events(self) -> frozenset[str]:
        """Event types that start a journey."""
        return frozenset(e for j in self.journeys if j.entry == "event" for e in j.entry_targets)

    def timer_plan(self, members: Iterable[str]) -> TimerPlan:
        """What `next_check_at` scans for a visitor in `members`, and what its timer evaluates
        (`streams.core.timer_plan`)."""
        return _timer_plan(self, frozenset(m for m in members if m in self._timed_ids))

    @functools.cached_property
    def _timed_ids(self) -> frozenset[str]:
        """Segments whose membership decides a visitor's timer plan (those with moments for
        members, and those rechecked hourly)."""
        return frozenset(sid for sid, seg in self.timed.items() if seg.exit) | self.local_time_segments

    @functools.cached_property
    def base_timer_plan(self) -> TimerPlan:
        """The timer plan of a visitor in no segment (`streams.core.timer_plan.base_plan`)."""
        return base_plan(self.timed, self.timer_always, self.attributes, _indices(self), self.timer_sources)

    @functools.cached_property
    def timer_sources(self) -> SourceTable:
        """Every source of the timer plans, numbered, and the segments each can change."""
        return SourceTable(self.timer_source_index, source_segments(self.timed, _indices(self)))

    @functools.cached_property
    def timer_marker(self) -> int:
        """48 bits of `source_sha`: tells the moments a profile kept under these definitions from
        those of others (`Profile.timer_moments`)."""
        return int(self.source_sha[:12], 16)

    @functools.cached_property
    def timer_source_index(self) -> Mapping[Source, int]:
        """Every attribute and drop source of the timer plans, numbered (`source_index`): the keys
        a profile keeps its sources' next moments under (`Profile.timer_moments`)."""
        return source_index(self.timed, self.timer_always)

    @functools.cached_property
    def segment_ids(self) -> frozenset[str]:
        return frozenset(seg.id for seg in self.segments)

    @functools.cached_property
    def segment_id_list(self) -> tuple[str, ...]:
        """Segment ids by index (`segments` order)."""
        return tuple(seg.id for seg in self.segments)

    @functools.cached_property
    def segments_by_id(self) -> Mapping[str, SegmentDef]:
        return MappingProxyType({seg.id: seg for seg in self.segments})

    def segment(self, segment_id: str) -> SegmentDef:
        return self.segments_by_id[segment_id]

    def cohort_thresholds(self, thresholds: Mapping[str, float] | None) -> dict[str, float] | None:
        """What conditions read for each cohort (by `CohortDef.var`): its threshold in `thresholds`
        (by `CohortDef.name`), +infinity where it is not known yet; None without cohorts."""
        if not self.cohorts:
            return None
        known = thresholds or {}
        return {cohort.var: float(known.get(name, math.inf)) for name, cohort in self.cohorts.items()}


# -- loading ----------------------------------------------------------------------------------------------

_TOP_KEYS = (
    "version", "description", "timezone", "params", "attributes", "cohorts", "segments", "campaigns",
    "guardrails", "triggers", "journeys",
)  # fmt: skip
_COHORT_KEYS = ("attribute", "key", "quantile", "description")
_ATTRIBUTE_KEYS = (
    "metric", "dimension", "by", "agg", "ratio", "event", "field", "where", "window", "description"
)  # fmt: skip
_SEGMENT_KEYS = ("id", "description", "when", "recheck", "for_each")
_RECHECK_KEYS = ("after", "delay")
_TRIGGER_KEYS = ("id", "description", "on", "when", "send", "cap", "campaign")
_JOURNEY_KEYS = ("id", "description", "entry", "exit_on", "steps", "campaign", "reentry")
_STEP_KEYS = ("id", "send", "campaign", "wait", "until", "on_until", "branch", "else", "end", "next")
_BRANCH_KEYS = ("if", "goto")
_CAMPAIGN_KEYS = ("id", "description", "when", "schedule", "budget", "cap", "holdout", "variants")
_SCHEDULE_KEYS = ("weekdays", "hours", "from", "until", "timezone")
_BUDGET_KEYS = ("daily", "cost_per_message", "currency")
_CAPS_KEYS = ("hour", "day", "week")
_VARIANT_KEYS = ("share", "payload")
_GUARDRAIL_KEYS = ("caps", "quiet_hours", "attribution_window")
_QUIET_KEYS = ("from", "to", "channels")
_HOURS_RE = re.compile(r"^([01]?[0-9]|2[0-4]):([0-5][0-9])$")
_ON_KEYS = ("event", "enter", "exit")
_SEND_KEYS = ("kind", "channel", "payload", "compute", "ttl")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CEL_STRING_RE = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")
_CEL_RESERVED = frozenset(
    "true false null in as break const continue else for function if import let loop package "
    "namespace return var void while".split()
)
_BY_DIMENSIONS = ("category",)
_PARAM_TYPES: tuple[tuple[type, ...], ...] = ((bool,), (int, float), (str,), (list,))


def load_definitions(path: Path, params_override: Mapping[str, Any] | None = None) -> Definitions:
    """Read and validate a definitions file; raises `DefinitionError` (path:line:column: reason)."""
    return parse_definitions(read_definitions_text(path), str(path), params_override)


def read_definitions_text(path: Path) -> str:
    """A definitions file's text; an unreadable file raises `DefinitionError` (path: reason)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read the file: {exc}", None, str(path)) from None


def parse_definitions(
    text: str, path: str = "<string>", params_override: Mapping[str, Any] | None = None
) -> Definitions:
    """Validate definitions given as YAML text; raises `DefinitionError` (path:line:column: reason)."""
    return _load(text, path, params_override)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _YamlReader:
    """The definitions text as YAML nodes, each read with its line and column.

    Every refusal goes through `fail` (a `DefinitionError` at the node's line and column, or at the
    place of a name or CEL error inside an expression), so the loaders below only say what is wrong,
    never where.
    """

    def __init__(self, text: str, path: str) -> None:
        self.text, self.path = text, path
        self.constructor = SafeConstructor()
        self.maps: frozenset[str] = frozenset()
        """Names of map attributes (`by: category`) and map cohorts, set once they are read: CEL
        compiles ``name[key]`` of these as map reads."""
        self.cohort_keys: dict[str, frozenset[str]] = {}
        """The keys of each map cohort (an expression may read no other)."""

    def fail(self, message: str, at: Node | tuple[int, int] | None) -> NoReturn:
        """Refuse the file at `at`: a node (where it starts), a (line, column) place, or None for what
        has no place in the file (an unknown `params_override` name)."""
        place = _start(at) if isinstance(at, Node) else at
        line, column = place if place is not None else (None, None)
        raise DefinitionError(message, line, self.path, column)

    def compose(self) -> Node:
        """The document's root node (not yet constructed, so every node keeps its line)."""
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
            if mark is None:
                self.fail(f"YAML syntax error: {reason}", (1, 1))
            self.fail(f"YAML syntax error: {reason}", (mark.line + 1, mark.column + 1))
        except ReaderError as exc:  # a character YAML does not allow (a control character)
            self.fail(f"YAML error: {exc.reason}", self.text_place(exc.position))
        except yaml.YAMLError as exc:
            self.fail(f"YAML error: {exc}", (1, 1))
        if root is None:
            self.fail("empty file: expected version, segments, …", (1, 1))
        return root

    def mapping(
        self, node: Node, where: str, allowed: Iterable[str] | None = None
    ) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            self.fail(f"{where}: expected a mapping (key: value)", node)
        out: dict[str, tuple[Node, Node]] = {}
        allowed_keys = tuple(allowed) if allowed is not None else None
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.fail(f"{where}: keys must be plain names", key_node)
            key = key_node.value  # raw text: `on` stays "on", not YAML 1.1's True
            if key in out:
                self.fail(
                    f"{where}: duplicate key '{key}' (first at line {out[key][0].start_mark.line + 1})",
                    key_node,
                )
            if allowed_keys is not None and key not in allowed_keys:
                self.fail(
                    f"{where}: unknown key '{key}'{_suggest(key, allowed_keys)}; expected one of: "
                    f"{', '.join(allowed_keys)}",
                    key_node,
                )
            out[key] = (key_node, value_node)
        return out

    def value(self, node: Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            self.fail(f"invalid value: {exc.problem}", node)
        except ValueError as exc:  # an explicit tag whose text does not parse (`!!int abc`)
            self.fail(f"invalid value: {exc}", node)

    def string(self, node: Node, where: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            self.fail(f"{where} must be a string", node)
        return str(node.value)

    def sequence(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.fail(f"{where}: expected a list (items starting with '-')", node)
        return list(node.value)

    def text_place(self, index: int) -> tuple[int, int]:
        """Line and column (1-based) of character `index` of the whole text."""
        return self.text.count("\n", 0, index) + 1, index - self.text.rfind("\n", 0, index)

    def value_place(self, node: ScalarNode, index: int) -> tuple[int, int]:
        """Line and column in the file of character `index` of the scalar's value (its length: just
        after its last character).

        Plain scalars (folded onto one line by YAML), block scalars (``|`` and ``>``, whose header line
        is skipped) and quoted scalars without escapes map exactly. A quoted scalar with an escape
        (``\\"``, ``\\n``, ``''``) has no character-by-character mapping: its places are the node's
        start.
        """
        start = node.start_mark.index
        offsets = _value_offsets(self.text[start : node.end_mark.index], str(node.value), node.style)
        if not offsets:
            return _start(node)
        return self.text_place(start + (offsets[index] if index < len(offsets) else offsets[-1] + 1))

    def name_place(self, node: Node, pattern: re.Pattern[str]) -> tuple[int, int]:
        """Line and column of the first match of `pattern` (an identifier or a call) in the expression
        at `node`, outside its string literals; the node's start when it does not occur as written."""
        if not isinstance(node, ScalarNode):
            return _start(node)
        code = _CEL_STRING_RE.sub(lambda literal: " " * len(literal.group()), str(node.value))
        match = pattern.search(code)
        raw = self.text[node.start_mark.index : node.end_mark.index]
        if match and _value_offsets(raw, str(node.value), node.style) is not None:
            return self.value_place(node, match.start())
        raw_match = pattern.search(raw)  # a quoted scalar with escapes: the name as written
        return self.text_place(node.start_mark.index + (raw_match.start() if raw_match else 0))

    def expression_place(self, node: ScalarNode, line: int, column: int) -> tuple[int, int]:
        """Line and column in the file of CEL's `line`:`column` (1-based) in the expression at `node`;
        a place in the trailing whitespace (CEL's end of input) is just after the last token."""
        value = str(node.value)
        index = sum(len(text) + 1 for text in value.split("\n")[: line - 1]) + column - 1
        return self.value_place(node, min(index, len(value.rstrip())))

    def expression(
        self,
        node: Node,
        where: str,
        known: Iterable[str],
        constants: Mapping[str, Any],
        segment_refs: bool = False,
    ) -> Expr:
        """Compile a CEL field; `segment_refs`: ``segment("x")`` may be read (segment conditions)."""
        if not isinstance(node, ScalarNode):
            self.fail(f"{where} must be a CEL expression (a string)", node)
        source = str(node.value)
        if not source.strip():
            self.fail(f"{where} is empty", node)
        try:
            expr = compile_expr(source, constants, self.maps)
            if segment_refs and "segment" in source and (rewritten := rewrite_segment_refs(source)) != source:
                expr = compile_expr(rewritten, constants, self.maps)
        except CelSyntaxError as exc:
            self.fail(
                f"{where}: CEL syntax error at {exc.line}:{exc.column}: {exc.reason}",
                self.expression_place(node, exc.line, exc.column),
            )
        known_set = set(known) | set(constants)
        for name in sorted({base_name(v) for v in expr.variables}):
            if split_segment_ref(name) is not None:
                continue  # checked once every segment id is known (`_SegmentLoader.check_refs`)
            if name not in known_set:
                self.fail(
                    f"{where}: unknown identifier '{name}'{_suggest(name, known_set)}",
                    self.name_place(node, _identifier_re(name)),
                )
        for var in sorted(expr.variables):
            split = split_dimension_var(var)
            keys = self.cohort_keys.get(split[0]) if split is not None else None
            if split is not None and keys is not None and split[1] not in keys:
                self.fail(
                    f"{where}: cohort '{split[0]}' has no key '{split[1]}' (keys: {', '.join(sorted(keys))})",
                    self.name_place(node, _identifier_re(split[0])),
                )
        for name in sorted(expr.unknown_functions):
            hint = ': write segment("segment_id") with the id in quotes' if name == "segment" else ""
            self.fail(f"{where}: unknown function '{name}'{hint}", self.name_place(node, _call_re(name)))
        return expr


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """A cycle in `graph` (node → nodes it depends on) as [a, b, …, a], or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return []


def evaluation_order(segments: Iterable[SegmentDef]) -> tuple[int, ...]:
    """Indices of `segments` with every segment after the ones it reads (file order otherwise)."""
    items = list(segments)
    index = {seg.id: i for i, seg in enumerate(items)}
    done: set[int] = set()
    order: list[int] = []

    def place(i: int) -> None:
        if i in done:
            return
        done.add(i)
        for ref in sorted(items[i].segment_refs):
            if ref in index:
                place(index[ref])
        order.append(i)

    for i in range(len(items)):
        place(i)
    return tuple(order)


def _start(node: Node) -> tuple[int, int]:
    """Line and column (1-based) where `node` starts."""
    return node.start_mark.line + 1, node.start_mark.column + 1


def _identifier_re(name: str) -> re.Pattern[str]:
    """`name` read as a variable (not a field after a dot, not part of a longer name)."""
    return re.compile(rf"(?<![\w.]){re.escape(name)}\b")


def _call_re(name: str) -> re.Pattern[str]:
    """A call of the function `name`, as a global (``f(x)``) or a method (``x.f()``)."""
    return re.compile(rf"(?<!\w){re.escape(name.rpartition('.')[2])}\s*\(")


def _value_offsets(raw: str, value: str, style: str | None) -> list[int] | None:
    """Index in `raw` (a scalar's text in the file) of each character of `value` (what YAML read),
    or None where they do not align.

    YAML only drops or folds whitespace of plain and block scalars (indentation, line breaks that
    become spaces, a block's header line) and the quotes of quoted ones, so every other character
    of `value` is the next one of `raw` past whitespace; an escape breaks that (None).
    """
    start = raw.find("\n") + 1 if style in ("|", ">") else 1 if style in ("'", '"') else 0
    offsets: list[int] = []
    j = start
    for char in value:
        while j < len(raw) and raw[j] != char and not (char.isspace() and raw[j].isspace()):
            if not raw[j].isspace():
                return None
            j += 1
        if j == len(raw):
            return None
        offsets.append(j)
        j += 1
    return offsets


# -- the document -----------------------------------------------------------------------------------------


def _load(text: str, path: str, params_override: Mapping[str, Any] | None) -> Definitions:
    """Read the top-level keys in dependency order: params, attributes, cohorts, segments, triggers."""
    reader = _YamlReader(text, path)
    override = dict(params_override or {})
    top = reader.mapping(reader.compose(), "top level", _TOP_KEYS)
    for required in ("version", "segments"):
        if required not in top:
            reader.fail(f"missing top-level key '{required}'", (1, 1))
    version = reader.string(top["version"][1], 'version (quote it: version: "1")')
    if not version.strip():
        reader.fail("version is empty", top["version"][1])
    description = reader.string(top["description"][1], "description") if "description" in top else ""
    zone = DEFAULT_ZONE
    if "timezone" in top:
        zone = reader.string(top["timezone"][1], "timezone")
        try:
            zone_of(zone)
        except ValueError as exc:
            reader.fail(str(exc), top["timezone"][1])
    params = _load_params(reader, top["params"][1] if "params" in top else None, override)
    attributes = _load_attributes(reader, top["attributes"][1] if "attributes" in top else None, params)
    reader.maps = frozenset(name for name, attr in attributes.items() if attr.is_map)
    cohorts = _load_cohorts(reader, top["cohorts"][1] if "cohorts" in top else None, attributes, params)
    for cohort in cohorts.values():
        if cohort.var != cohort.group:  # a map cohort: read as name["key"]
            keys = reader.cohort_keys.get(cohort.group, frozenset())
            reader.cohort_keys[cohort.group] = keys | {cohort.key or ""}
    reader.maps |= frozenset(reader.cohort_keys)
    segments = _SegmentLoader(reader, attributes, params, cohorts).load(top["segments"][1])
    trigger_loader = _TriggerLoader(reader, segments, attributes, params, cohorts)
    campaigns = _CampaignLoader(trigger_loader, zone).load(
        top["campaigns"][1] if "campaigns" in top else None
    )
    trigger_loader.campaigns = frozenset(campaigns)
    guardrails = _load_guardrails(reader, top["guardrails"][1] if "guardrails" in top else None)
    triggers = trigger_loader.load(top["triggers"][1] if "triggers" in top else None)
    journeys = _JourneyLoader(trigger_loader).load(top["journeys"][1] if "journeys" in top else None)
    return _prepare(
        version,
        description,
        params,
        attributes,
        segments,
        triggers,
        path=path,
        source_sha=_source_sha(text, override),
        zone=zone,
        cohorts=cohorts,
        journeys=journeys,
        campaigns=campaigns,
        guardrails=guardrails,
    )


# -- params and attributes --------------------------------------------------------------------------------


def _load_params(reader: _YamlReader, node: Node | None, override: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    lines: dict[str, Node] = {}
    if node is not None and not (isinstance(node, ScalarNode) and node.value in ("", "~", "null")):
        for name, (key_node, value_node) in reader.mapping(node, "params").items():
            _check_name(reader, name, "param", key_node)
            value = reader.value(value_node)
            if not _param_ok(value):
                reader.fail(f"param '{name}': must be a string, number, bool or a list of them", value_node)
            params[name], lines[name] = value, value_node
    for name, value in override.items():
        if name not in params:
            reader.fail(f"params_override: unknown param '{name}'{_suggest(name, params)}", None)
        if not _param_ok(value) or _param_kind(value) != _param_kind(params[name]):
            reader.fail(
                f"params_override: param '{name}' must be {type(params[name]).__name__}, got {value!r}",
                lines[name],
            )
        params[name] = value
    return params


def _param_kind(value: Any) -> int:
    for index, kinds in enumerate(_PARAM_TYPES):
        if isinstance(value, kinds):
            return index
    return -1


def _param_ok(value: Any) -> bool:
    if isinstance(value, list):
        return all(_param_kind(v) in (0, 1, 2) and _param_ok(v) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return _param_kind(value) in (0, 1, 2)


def _check_name(reader: _YamlReader, name: str, what: str, node: Node) -> None:
    if not _NAME_RE.match(name) or name in _CEL_RESERVED:
        reader.fail(f"{what} '{name}': not a valid name (letters, digits, _; not a CEL keyword)", node)
    if name in FACTS:
        reader.fail(f"{what} '{name}': clashes with the built-in fact of that name", node)
    if name in TRIGGER_CONTEXT:
        reader.fail(f"{what} '{name}': '{name}' is reserved for triggers", node)


def _load_attributes(
    reader: _YamlReader, node: Node | None, params: Mapping[str, Any]
) -> dict[str, AttributeDef]:
    out: dict[str, AttributeDef] = {}
    if node is None:
        return out
    for name, (key_node, spec_node) in reader.mapping(node, "attributes").items():
        where = f"attribute '{name}'"
        _check_name(reader, name, "attribute", key_node)
        if name in params:
            reader.fail(f"{where}: clashes with the param of that name", key_node)
        spec = reader.mapping(spec_node, where, _ATTRIBUTE_KEYS)
        if "window" not in spec:
            reader.fail(f"{where}: missing 'window' (e.g. window: 30d)", spec_node)
        try:
            window = parse_window(reader.value(spec["window"][1]))
        except ValueError as exc:
            reader.fail(f"{where}: {exc}", spec["window"][1])
        if sum(kind in spec for kind in ("metric", "ratio", "event")) != 1:
            reader.fail(
                f"{where}: give one of 'metric' (day-bucket sums), 'ratio: [numerator, denominator]' "
                "or 'event' (aggregates over the events themselves)",
                spec_node,
            )
        line = key_node.start_mark.line + 1
        if "event" in spec:
            out[name] = _event_attribute(reader, name, spec, window, where, line, params)
        elif "ratio" in spec:
            out[name] = _ratio_attribute(reader, name, spec, window, where, line)
        else:
            out[name] = _metric_attribute(reader, name, spec, window, where, line)
    return out


def _ratio_attribute(
    reader: _YamlReader,
    name: str,
    spec: Mapping[str, tuple[Node, Node]],
    window: Window,
    where: str,
    line: int,
) -> AttributeDef:
    for extra in ("dimension", "by", "agg", "field", "where"):
        if extra in spec:
            reader.fail(f"{where}: '{extra}' does not go with 'ratio'", spec[extra][0])
    parts = reader.sequence(spec["ratio"][1], f"{where}: ratio")
    if len(parts) != 2:
        reader.fail(f"{where}: ratio needs [numerator, denominator]", spec["ratio"][1])
    keys = [_metric(reader, part, where) for part in parts]
    return AttributeDef(name, "ratio", window, keys[0], keys[1], line=line)


def _metric_attribute(
    reader: _YamlReader,
    name: str,
    spec: Mapping[str, tuple[Node, Node]],
    window: Window,
    where: str,
    line: int,
) -> AttributeDef:
    for extra in ("field", "where"):
        if extra in spec:
            reader.fail(f"{where}: '{extra}' goes with 'event', not 'metric'", spec[extra][0])
    key = _metric(reader, spec["metric"][1], where)
    if "dimension" in spec:
        if "@" in key:
            reader.fail(f"{where}: dimension given twice", spec["dimension"][1])
        if key not in DIMENSIONED_METRICS:
            reader.fail(
                f"{where}: metric '{key}' has no dimension (per category: "
                f"{', '.join(sorted(DIMENSIONED_METRICS))})",
                spec["dimension"][1],
            )
        key = f"{key}@{reader.string(spec['dimension'][1], f'{where}: dimension')}"
    agg = reader.string(spec["agg"][1], f"{where}: agg") if "agg" in spec else "sum"
    if agg not in ("sum", "days"):
        reader.fail(f"{where}: agg must be sum or days, not '{agg}'", spec["agg"][1])
    if agg == "days" and window.kind == "lifetime":
        reader.fail(f"{where}: agg: days needs a window (day buckets are kept 400 days)", spec["window"][1])
    if "by" in spec:
        by = reader.string(spec["by"][1], f"{where}: by")
        if by not in _BY_DIMENSIONS:
            reader.fail(f"{where}: by must be one of {', '.join(_BY_DIMENSIONS)}, not '{by}'", spec["by"][1])
        if "@" in key or key not in DIMENSIONED_METRICS:
            reader.fail(f"{where}: by: {by} needs a metric counted per {by}", spec["metric"][1])
        if agg != "sum":
            reader.fail(f"{where}: by: {by} only sums (agg: sum)", spec["agg"][1])
        return AttributeDef(name, "by", window, key, line=line)
    return AttributeDef(name, "days" if agg == "days" else "sum", window, key, line=line)


def _metric(reader: _YamlReader, node: Node, where: str) -> str:
    text = reader.string(node, f"{where}: metric")
    try:
        return parse_metric_ref(text)
    except ValueError as exc:
        reader.fail(f"{where}: {exc}", node)


def _event_attribute(
    reader: _YamlReader,
    name: str,
    spec: Mapping[str, tuple[Node, Node]],
    window: Window,
    where: str,
    line: int,
    params: Mapping[str, Any],
) -> AttributeDef:
    """A kind ``timeline`` attribute: `agg` over the window's events of the types `event` names,
    accepted by `where`, optionally grouped `by` (`streams.core.aggregates`)."""
    if "dimension" in spec:
        reader.fail(
            f"{where}: 'dimension' goes with 'metric' (filter events with where)", spec["dimension"][0]
        )
    if window.kind == "lifetime":
        reader.fail(
            f"{where}: timeline attributes cover at most 365d; use a metric sum for lifetime",
            spec["window"][1],
        )
    codes = _event_codes(reader, spec["event"][1], where)
    agg_node = spec["agg"][1] if "agg" in spec else spec["event"][1]
    written = reader.string(agg_node, f"{where}: agg") if "agg" in spec else "count"
    if written not in AGGS:
        hint = " (days with an event: agg: distinct, field: day)" if written == "days" else ""
        reader.fail(f"{where}: agg must be one of {', '.join(AGGS)}, not '{written}'{hint}", agg_node)
    agg = AGGS[AGGS.index(written)]
    field_name = _event_field(reader, spec, agg, codes, where, agg_node)
    by = _event_by(reader, spec, agg, codes, where)
    condition = _event_where(reader, spec["where"][1], codes, where, params) if "where" in spec else None
    if agg == "share" and condition is None:
        reader.fail(f"{where}: agg: share needs a where (the share of the events it accepts)", agg_node)
    aggregate = Aggregate(agg, codes, field_name, condition, by)
    return AttributeDef(name, "timeline", window, aggregate.describe(), line=line, aggregate=aggregate)


def _event_codes(reader: _YamlReader, node: Node, where: str) -> frozenset[int] | None:
    """``event:`` — one type, a list of them, or ``any`` (None)."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    if not items:
        reader.fail(f"{where}: event: name at least one event type (or any)", node)
    codes: set[int] = set()
    for item in items:
        event = reader.string(item, f"{where}: event")
        if event == "any":
            if len(items) > 1:
                reader.fail(f"{where}: event: 'any' stands alone (it means every type)", item)
            return None
        if event not in CODES:
            reader.fail(f"{where}: unknown event type '{event}'{_suggest(event, CODES)}", item)
        codes.add(CODES[event])
    return frozenset(codes)


def _lacking(field_name: str, codes: frozenset[int] | None) -> str | None:
    """The first event type among `codes` (None: every type) that does not carry `field_name`."""
    carriers = FIELDS[field_name].codes
    if carriers is None:
        return None
    for code in sorted(codes if codes is not None else TYPES):
        if code not in carriers:
            return TYPES[code]
    return None


def _check_carried(
    reader: _YamlReader, field_name: str, codes: frozenset[int] | None, where: str, node: Node
) -> None:
    lacking = _lacking(field_name, codes)
    if lacking is not None:
        hint = "; with event: any only session, day, hour, weekday: list the types" if codes is None else ""
        reader.fail(f"{where}: {lacking} events have no '{field_name}'{hint}", node)


def _event_field(
    reader: _YamlReader,
    spec: Mapping[str, tuple[Node, Node]],
    agg: str,
    codes: frozenset[int] | None,
    where: str,
    agg_node: Node,
) -> str | None:
    """``field:`` — none for count and share, a field every named event type carries otherwise."""
    if agg in ("count", "share"):
        if "field" in spec:
            reader.fail(
                f"{where}: agg: {agg} counts events and takes no field (filter with where)", spec["field"][0]
            )
        return None
    if "field" not in spec:
        reader.fail(f"{where}: agg: {agg} needs a field (e.g. field: value)", agg_node)
    node = spec["field"][1]
    field_name = reader.string(node, f"{where}: field")
    if field_name not in FIELDS:
        reader.fail(
            f"{where}: unknown field '{field_name}'{_suggest(field_name, FIELDS)}; "
            f"known: {', '.join(FIELDS)}",
            node,
        )
    _check_carried(reader, field_name, codes, where, node)
    if field_name == "session" and agg != "distinct":
        reader.fail(f"{where}: field session is a session number: only agg: distinct reads it", node)
    if agg in NUMBER_AGGS and FIELDS[field_name].type not in ("int", "double"):
        numbers = ", ".join(n for n, f in FIELDS.items() if f.type in ("int", "double") and n != "session")
        reader.fail(f"{where}: agg: {agg} needs a number field ({numbers}), not '{field_name}'", node)
    return field_name


def _event_by(
    reader: _YamlReader,
    spec: Mapping[str, tuple[Node, Node]],
    agg: str,
    codes: frozenset[int] | None,
    where: str,
) -> str | None:
    """``by: category | product`` — the field that groups, or None."""
    if "by" not in spec:
        return None
    node = spec["by"][1]
    by = reader.string(node, f"{where}: by")
    if by == "brand":
        reader.fail(
            f"{where}: by: brand needs a 'brand' field, which the events do not carry "
            f"(by: {' or '.join(BY_FIELDS)})",
            node,
        )
    if by not in BY_FIELDS:
        reader.fail(f"{where}: by must be {' or '.join(BY_FIELDS)}, not '{by}'", node)
    if agg not in BY_AGGS:
        reader.fail(f"{where}: by goes with agg: {', '.join(sorted(BY_AGGS))}, not {agg}", node)
    _check_carried(reader, BY_FIELDS[by], codes, where, node)
    return BY_FIELDS[by]


def _event_where(
    reader: _YamlReader, node: Node, codes: frozenset[int] | None, where: str, params: Mapping[str, Any]
) -> Filter:
    """``where:`` — a CEL condition over the row's fields (params inlined; a field shadows a param)."""
    constants = {name: value for name, value in params.items() if name not in FIELDS}
    expr = reader.expression(node, f"{where}: where", FIELDS, constants)
    if "distance_km" in expr.functions:
        reader.fail(
            f"{where}: where reads event fields only; distance_km is for conditions",
            reader.name_place(node, _call_re("distance_km")),
        )
    for name in sorted(expr.variables):
        place = reader.name_place(node, _identifier_re(name))
        if name == "session":
            reader.fail(f"{where}: where: session numbers only count (agg: distinct, field: session)", place)
        carriers = FIELDS[name].codes
        if carriers is not None and codes is not None and not carriers & codes:
            types = ", ".join(TYPES[code] for code in sorted(codes))
            reader.fail(f"{where}: where: {types} events have no '{name}'", place)
    return Filter(
        expr.source, tuple(sorted(expr.variables)), expr.program, expr.fast, dict(expr.stdlib_functions)
    )


# -- cohorts ----------------------------------------------------------------------------------------------


def _load_cohorts(
    reader: _YamlReader,
    node: Node | None,
    attributes: Mapping[str, AttributeDef],
    params: Mapping[str, Any],
) -> dict[str, CohortDef]:
    """``cohorts:`` — name → ``{attribute, key (map attributes only: one, or a list), quantile in
    (0, 1)}``; by `CohortDef.name`, a map cohort once per key."""
    out: dict[str, CohortDef] = {}
    if node is None or (isinstance(node, ScalarNode) and node.value in ("", "~", "null")):
        return out
    for name, (key_node, spec_node) in reader.mapping(node, "cohorts").items():
        where = f"cohort '{name}'"
        _check_name(reader, name, "cohort", key_node)
        for other, what in ((params, "param"), (attributes, "attribute")):
            if name in other:
                reader.fail(f"{where}: clashes with the {what} of that name", key_node)
        spec = reader.mapping(spec_node, where, _COHORT_KEYS)
        for required in ("attribute", "quantile"):
            if required not in spec:
                example = "{attribute: spend_365d, key: electronics, quantile: 0.95}"
                reader.fail(f"{where}: missing '{required}' (e.g. {example})", spec_node)
        attribute, attr = _cohort_attribute(reader, spec["attribute"][1], attributes, where)
        keys = _cohort_keys(reader, spec, attr, where, spec_node)
        quantile_node = spec["quantile"][1]
        quantile = reader.value(quantile_node)
        if isinstance(quantile, bool) or not isinstance(quantile, int | float) or not 0.0 < quantile < 1.0:
            reader.fail(
                f"{where}: quantile must be a number between 0 and 1, exclusive (0.95: the top 5 %), "
                f"not {quantile!r}",
                quantile_node,
            )
        description = (
            reader.string(spec["description"][1], f"{where}: description") if "description" in spec else ""
        )
        keyed = isinstance(spec["key"][1], SequenceNode) if "key" in spec else False
        for key in keys:
            cohort = CohortDef(
                name=f"{name}[{key}]" if keyed else name,
                group=name,
                attribute=attribute,
                key=key,
                quantile=float(quantile),
                var=dimension_var(name, key) if keyed and key is not None else name,
                value_var=attribute if key is None else dimension_var(attribute, key),
                codes=attr.event_codes(),
                description=description,
                line=key_node.start_mark.line + 1,
            )
            out[cohort.name] = cohort
    return out


def _cohort_attribute(
    reader: _YamlReader, node: Node, attributes: Mapping[str, AttributeDef], where: str
) -> tuple[str, AttributeDef]:
    """A cohort's ``attribute``: declared, and numeric."""
    attribute = reader.string(node, f"{where}: attribute")
    attr = attributes.get(attribute)
    if attr is None:
        reader.fail(f"{where}: unknown attribute '{attribute}'{_suggest(attribute, attributes)}", node)
    if attr.aggregate is not None and attr.aggregate.result not in ("int", "double"):
        reader.fail(f"{where}: attribute '{attribute}' gives a {attr.aggregate.result}, not a number", node)
    return attribute, attr


def _cohort_keys(
    reader: _YamlReader,
    spec: Mapping[str, tuple[Node, Node]],
    attr: AttributeDef,
    where: str,
    spec_node: Node,
) -> list[str | None]:
    """A cohort's ``key``: one (a scalar cohort) or a list (a map cohort: one threshold per key) for
    a map attribute; none for any other."""
    if not attr.is_map:
        if "key" in spec:
            reader.fail(f"{where}: attribute '{attr.name}' is not a map: it takes no key", spec["key"][0])
        return [None]
    if "key" not in spec:
        reader.fail(
            f"{where}: attribute '{attr.name}' is a map: name its key (key: electronics) or keys "
            "(key: [electronics, clothing])",
            spec_node,
        )
    node = spec["key"][1]
    items = reader.sequence(node, f"{where}: key") if isinstance(node, SequenceNode) else [node]
    if not items:
        reader.fail(f"{where}: key: name at least one", node)
    keys: list[str | None] = []
    for item in items:
        key = reader.string(item, f"{where}: key")
        if not key or key in keys:
            reader.fail(f"{where}: key '{key}' is empty or given twice", item)
        keys.append(key)
    return keys


# -- segments ---------------------------------------------------------------------------------------------


class _SegmentLoader:
    """The ``segments`` list: one `SegmentDef` per item, or per `for_each` item of a template."""

    def __init__(
        self,
        reader: _YamlReader,
        attributes: Mapping[str, AttributeDef],
        params: Mapping[str, Any],
        cohorts: Mapping[str, CohortDef] | None = None,
    ) -> None:
        self.reader, self.attributes, self.params = reader, attributes, params
        self.base_known = set(FACTS) | set(attributes) | {c.group for c in (cohorts or {}).values()}
        self.first_line: dict[str, int] = {}
        """Line of each segment id read so far (duplicates are refused)."""
        self.when_nodes: dict[str, Node] = {}
        """Each segment id's `when` node (a reference check points into it)."""

    def load(self, node: Node) -> list[SegmentDef]:
        out: list[SegmentDef] = []
        for item in self.reader.sequence(node, "segments"):
            out.extend(self.item(item))
        self.check_refs(out)
        return out

    def check_refs(self, segments: list[SegmentDef]) -> None:
        """Every ``segment("x")`` names a segment, and no segment depends on itself."""
        ids = {seg.id for seg in segments}
        for seg in segments:
            for ref in sorted(seg.segment_refs):
                if ref not in ids:
                    node = self.when_nodes[seg.id]
                    self.reader.fail(
                        f"segment '{seg.id}': unknown segment '{ref}'{_suggest(ref, ids)}",
                        self.reader.name_place(node, re.compile(r"segment\(\s*[\"']" + re.escape(ref))),
                    )
        cycle = find_cycle({seg.id: seg.segment_refs for seg in segments})
        if cycle:
            first = next(seg for seg in segments if seg.id == cycle[0])
            self.reader.fail(
                f"segment '{first.id}': segments depend on each other in a cycle: {' → '.join(cycle)}",
                self.when_nodes[first.id],
            )

    def item(self, item: Node) -> list[SegmentDef]:
        reader = self.reader
        spec = reader.mapping(item, "segment", _SEGMENT_KEYS)
        if "id" not in spec:
            reader.fail("segment: missing 'id'", item)
        id_node = spec["id"][1]
        raw_id = reader.string(id_node, "segment id")
        where = f"segment '{raw_id}'"
        for required in ("description", "when"):
            if required not in spec:
                reader.fail(f"{where}: missing '{required}'", item)
        description = reader.string(spec["description"][1], f"{where}: description")
        expansions: list[dict[str, Any]] = [{}]
        if "for_each" in spec:
            for_each_node = spec["for_each"][1]
            _, expansions = self.for_each(for_each_node, where)
            for const in expansions[0]:
                if const in self.base_known or const in self.params:
                    reader.fail(
                        f"{where}: for_each name '{const}' clashes with a fact, attribute or param",
                        for_each_node,
                    )
        elif "{" in raw_id:
            reader.fail(f"{where}: an id with {{…}} needs for_each", id_node)
        when_node = spec["when"][1]
        rechecks = self.recheck(spec["recheck"][1], where) if "recheck" in spec else ()
        return [
            self.expand(item, id_node, raw_id, description, when_node, rechecks, binding, where)
            for binding in expansions
        ]

    def expand(
        self,
        item: Node,
        id_node: Node,
        raw_id: str,
        description: str,
        when_node: Node,
        rechecks: tuple[Recheck, ...],
        binding: dict[str, Any],
        where: str,
    ) -> SegmentDef:
        """The segment of one `for_each` binding (``{}`` for a segment without `for_each`)."""
        reader = self.reader
        when = reader.expression(
            when_node, f"{where}: when", self.base_known, {**self.params, **binding}, segment_refs=True
        )
        for fact, anchor in sorted(RELATIVE_FACTS.items()):
            if fact in when.variables and not any(r.after == anchor for r in rechecks):
                reader.fail(
                    f"{where}: reads {fact}, which changes as time passes: add "
                    f"recheck: {{after: {anchor}, delay: …}} (when it can next flip)",
                    reader.name_place(when_node, _identifier_re(fact)),
                )
        reads = tuple(sorted(v for v in when.variables if base_name(v) in self.base_known))
        refs = frozenset(r for v in when.variables if (r := split_segment_ref(v)) is not None)
        try:
            seg_id = raw_id.format_map(binding) if binding else raw_id
            seg_description = description.format_map(binding) if binding else description
        except (KeyError, ValueError, IndexError) as exc:
            reader.fail(f"{where}: bad {{…}} template: {exc}", id_node)
        if not _ID_RE.match(seg_id):
            reader.fail(f"segment id '{seg_id}': use lowercase letters, digits and _ (≤ 64)", id_node)
        if seg_id in self.first_line:
            reader.fail(f"duplicate segment id '{seg_id}' (first at line {self.first_line[seg_id]})", id_node)
        self.first_line[seg_id] = id_node.start_mark.line + 1
        self.when_nodes[seg_id] = when_node
        return SegmentDef(
            id=seg_id,
            description=seg_description,
            when=when,
            rechecks=rechecks,
            bindings=MappingProxyType(dict(binding)),
            reads=reads,
            line=item.start_mark.line + 1,
            template=raw_id if binding else None,
            segment_refs=refs,
        )

    def recheck(self, node: Node, where: str) -> tuple[Recheck, ...]:
        reader = self.reader
        items = node.value if isinstance(node, SequenceNode) else [node]
        out: list[Recheck] = []
        for item in items:
            spec = reader.mapping(item, f"{where}: recheck", _RECHECK_KEYS)
            for required in _RECHECK_KEYS:
                if required not in spec:
                    reader.fail(f"{where}: recheck needs '{required}'", item)
            after = reader.string(spec["after"][1], f"{where}: recheck after")
            if after not in RECHECK_ANCHORS:
                reader.fail(
                    f"{where}: recheck after '{after}' is not a profile time"
                    f"{_suggest(after, RECHECK_ANCHORS)}; "
                    f"known: {', '.join(RECHECK_ANCHORS)}",
                    spec["after"][1],
                )
            try:
                delay = parse_duration(reader.value(spec["delay"][1]))
            except ValueError as exc:
                reader.fail(f"{where}: recheck {exc}", spec["delay"][1])
            out.append(Recheck(after, delay))
        return tuple(out)

    def for_each(self, node: Node, where: str) -> tuple[str, list[dict[str, Any]]]:
        reader = self.reader
        loop = reader.mapping(node, f"{where}: for_each")
        if len(loop) != 1:
            reader.fail(f"{where}: for_each takes exactly one loop variable (e.g. category: {{…}})", node)
        ((var, (key_node, items_node)),) = loop.items()
        _check_name(reader, var, f"{where}: for_each variable", key_node)
        expansions: list[dict[str, Any]] = []
        if isinstance(items_node, SequenceNode):
            for item in items_node.value:
                expansions.append({var: reader.string(item, f"{where}: for_each item")})
        else:
            for item, (_, consts_node) in reader.mapping(items_node, f"{where}: for_each {var}").items():
                expansions.append(self.for_each_constants(var, item, consts_node, where))
        if not expansions:
            reader.fail(f"{where}: for_each has no items", items_node)
        names = set(expansions[0])
        for binding in expansions:
            if set(binding) != names:
                reader.fail(
                    f"{where}: every for_each item needs the same constants ({', '.join(sorted(names))})",
                    node,
                )
        return var, expansions

    def for_each_constants(self, var: str, item: str, consts_node: Node, where: str) -> dict[str, Any]:
        """The binding of one `for_each` item given as ``item: {constant: value, …}`` (or ``item:``)."""
        reader = self.reader
        binding: dict[str, Any] = {var: item}
        if not (isinstance(consts_node, ScalarNode) and consts_node.value in ("", "~", "null")):
            consts = reader.mapping(consts_node, f"{where}: {var} {item}")
            for const, (const_key, value_node) in consts.items():
                _check_name(reader, const, f"{where}: for_each constant", const_key)
                value = reader.value(value_node)
                if not _param_ok(value) or const == var:
                    reader.fail(f"{where}: for_each constant '{const}' must be a scalar", value_node)
                binding[const] = value
        return binding


# -- triggers ---------------------------------------------------------------------------------------------


class _TriggerLoader:
    """The ``triggers`` list: one `TriggerRule` per item, read part by part (on, when, send, cap)."""

    def __init__(
        self,
        reader: _YamlReader,
        segments: list[SegmentDef],
        attributes: Mapping[str, AttributeDef],
        params: Mapping[str, Any],
        cohorts: Mapping[str, CohortDef] | None = None,
    ) -> None:
        self.reader, self.params = reader, params
        self.segment_ids = [seg.id for seg in segments]
        self.known = (
            set(FACTS) | set(attributes) | set(TRIGGER_CONTEXT) | {c.group for c in (cohorts or {}).values()}
        )
        self.seen: dict[str, int] = {}
        """Line of each trigger id read so far (duplicates are refused)."""
        self.campaigns: frozenset[str] = frozenset()
        """Ids of the campaigns (``campaigns:``), once read."""

    def load(self, node: Node | None) -> list[TriggerRule]:
        out: list[TriggerRule] = []
        if node is None:
            return out
        for item in self.reader.sequence(node, "triggers"):
            out.append(self.rule(item))
        return out

    def rule(self, item: Node) -> TriggerRule:
        reader = self.reader
        spec = reader.mapping(item, "trigger", _TRIGGER_KEYS)
        for required in ("id", "on", "send"):
            if required not in spec:
                reader.fail(f"trigger: missing '{required}'", item)
        rule_id, where = self.rule_id(spec["id"][1])
        on_kind, targets = self.on(spec["on"][1], where)
        when = (
            reader.expression(spec["when"][1], f"{where}: when", self.known, self.params)
            if "when" in spec
            else None
        )
        send = reader.mapping(spec["send"][1], f"{where}: send", _SEND_KEYS)
        for required in ("kind", "channel"):
            if required not in send:
                reader.fail(f"{where}: send needs '{required}'", spec["send"][1])
        kind = self.kind(send["kind"][1], where)
        channel = self.channel(send["channel"][1], where)
        payload = self.payload(send["payload"][1], where) if "payload" in send else {}
        compute = self.compute(send["compute"][1], where) if "compute" in send else {}
        cap_s = self.duration(spec, "cap", where)
        ttl_s = self.duration(send, "ttl", where)
        return TriggerRule(
            id=rule_id,
            on=on_kind,  # type: ignore[arg-type]
            targets=targets,
            kind=MessageKind(kind),
            channel=channel,  # type: ignore[arg-type]
            when=when,
            payload=MappingProxyType(payload),
            compute=MappingProxyType(compute),
            cap_s=cap_s,
            ttl_s=ttl_s,
            description=reader.string(spec["description"][1], f"{where}: description")
            if "description" in spec
            else "",
            line=item.start_mark.line + 1,
            campaign=self.campaign(spec["campaign"][1], where) if "campaign" in spec else None,
        )

    def campaign(self, node: Node, where: str) -> str:
        name = self.reader.string(node, f"{where}: campaign")
        if name not in self.campaigns:
            self.reader.fail(f"{where}: unknown campaign '{name}'{_suggest(name, self.campaigns)}", node)
        return name

    def send_spec(self, node: Node, where: str) -> SendSpec:
        """A ``send:`` mapping (kind, channel, payload, compute, ttl) as a `SendSpec`."""
        reader = self.reader
        send = reader.mapping(node, f"{where}: send", _SEND_KEYS)
        for required in ("kind", "channel"):
            if required not in send:
                reader.fail(f"{where}: send needs '{required}'", node)
        return SendSpec(
            kind=MessageKind(self.kind(send["kind"][1], where)),
            channel=self.channel(send["channel"][1], where),
            payload=MappingProxyType(self.payload(send["payload"][1], where) if "payload" in send else {}),
            compute=MappingProxyType(self.compute(send["compute"][1], where) if "compute" in send else {}),
            ttl_s=self.duration(send, "ttl", where),
        )

    def segment_names(self, node: Node, where: str) -> frozenset[str]:
        """Segment ids or globs (one or a list), each matching at least one segment."""
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        found: set[str] = set()
        for t_node in nodes:
            target = self.reader.string(t_node, where)
            matched = fnmatch.filter(self.segment_ids, target)
            if not matched:
                what = "pattern" if any(c in target for c in "*?[") else "segment"
                self.reader.fail(
                    f"{where}: unknown {what} '{target}'{_suggest(target, self.segment_ids)}", t_node
                )
            found.update(matched)
        return frozenset(found)

    def rule_id(self, id_node: Node) -> tuple[str, str]:
        """The rule's id and the ``trigger '<id>'`` prefix of its messages."""
        reader = self.reader
        rule_id = reader.string(id_node, "trigger id")
        where = f"trigger '{rule_id}'"
        if not _ID_RE.match(rule_id):
            reader.fail(f"{where}: use lowercase letters, digits and _ (≤ 64)", id_node)
        if rule_id in self.seen:
            reader.fail(f"duplicate trigger id '{rule_id}' (first at line {self.seen[rule_id]})", id_node)
        self.seen[rule_id] = id_node.start_mark.line + 1
        return rule_id, where

    def on(self, node: Node, where: str) -> tuple[str, frozenset[str]]:
        """``on: {event|enter|exit: name or list}``: the kind and its targets, segment globs expanded."""
        reader = self.reader
        on = reader.mapping(node, f"{where}: on", _ON_KEYS)
        if len(on) != 1:
            reader.fail(f"{where}: 'on' takes one of event, enter, exit", node)
        ((on_kind, (_, target_node)),) = on.items()
        target_nodes = target_node.value if isinstance(target_node, SequenceNode) else [target_node]
        targets: set[str] = set()
        for t_node in target_nodes:
            target = reader.string(t_node, f"{where}: on {on_kind}")
            if on_kind == "event":
                if target not in EventType.__members__:
                    reader.fail(
                        f"{where}: unknown event type '{target}'{_suggest(target, list(EventType))}",
                        t_node,
                    )
                targets.add(target)
            else:
                matched = fnmatch.filter(self.segment_ids, target)
                if not matched:
                    what = "pattern" if any(c in target for c in "*?[") else "segment"
                    reader.fail(
                        f"{where}: unknown {what} '{target}'{_suggest(target, self.segment_ids)}", t_node
                    )
                targets.update(matched)
        return on_kind, frozenset(targets)

    def kind(self, node: Node, where: str) -> str:
        kind = self.reader.string(node, f"{where}: kind")
        if kind not in MessageKind.__members__:
            self.reader.fail(
                f"{where}: unknown message kind '{kind}' (known: {', '.join(MessageKind.__members__)})", node
            )
        return kind

    def channel(self, node: Node, where: str) -> str:
        channel = self.reader.string(node, f"{where}: channel")
        if channel not in CHANNELS:
            self.reader.fail(f"{where}: unknown channel '{channel}' (known: {', '.join(CHANNELS)})", node)
        return channel

    def payload(self, node: Node, where: str) -> dict[str, Any]:
        reader = self.reader
        reader.mapping(node, f"{where}: payload")
        payload: dict[str, Any] = reader.value(node)
        try:
            json.dumps(payload)
        except (TypeError, ValueError):
            reader.fail(f"{where}: payload must be plain JSON values (no dates, no non-string keys)", node)
        return payload

    def compute(self, node: Node, where: str) -> dict[str, Expr]:
        compute: dict[str, Expr] = {}
        for field_name, (_, expr_node) in self.reader.mapping(node, f"{where}: compute").items():
            compute[field_name] = self.reader.expression(
                expr_node, f"{where}: compute {field_name}", self.known, self.params
            )
        return compute

    def duration(self, holder: Mapping[str, tuple[Node, Node]], key: str, where: str) -> float | None:
        """``cap`` (of the rule) or ``ttl`` (of its send) in seconds; None when not given."""
        if key not in holder:
            return None
        try:
            return parse_duration(self.reader.value(holder[key][1]))
        except ValueError as exc:
            self.reader.fail(f"{where}: {key}: {exc}", holder[key][1])


# -- campaigns, guard rails and journeys -----------------------------------------------------------------


def _minute_of_day(reader: _YamlReader, node: Node, where: str) -> int:
    """``"07:30"`` → 450 (``"24:00"`` is the end of the day)."""
    text = str(reader.value(node)) if isinstance(node, ScalarNode) else ""
    match = _HOURS_RE.match(text)
    if match is None or (int(match.group(1)) == 24 and match.group(2) != "00"):
        reader.fail(f"{where}: bad time of day {text!r}: write it like 07:00 or 13:30", node)
    return int(match.group(1)) * 60 + int(match.group(2))


def _caps(reader: _YamlReader, node: Node, where: str) -> Caps:
    spec = reader.mapping(node, where, _CAPS_KEYS)
    values: dict[str, int] = {}
    for key, (_, value_node) in spec.items():
        value = reader.value(value_node)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            reader.fail(f"{where}: {key} must be a whole number ≥ 0 (messages per {key})", value_node)
        values[key] = value
    return Caps(**values)


def _share(reader: _YamlReader, node: Node, where: str) -> float:
    value = reader.value(node)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        reader.fail(f"{where} must be a share between 0.0 and 1.0", node)
    return float(value)


class _CampaignLoader:
    """The ``campaigns`` list: who (``when``), when (``schedule``), how often (``cap``), at what
    cost (``budget``), the experiment (``holdout``, ``variants``)."""

    def __init__(self, triggers: _TriggerLoader, zone: str) -> None:
        self.triggers, self.reader, self.zone = triggers, triggers.reader, zone

    def load(self, node: Node | None) -> dict[str, CampaignDef]:
        out: dict[str, CampaignDef] = {}
        if node is None:
            return out
        for item in self.reader.sequence(node, "campaigns"):
            campaign = self.campaign(item, out)
            out[campaign.id] = campaign
        return out

    def campaign(self, item: Node, seen: Mapping[str, CampaignDef]) -> CampaignDef:
        reader = self.reader
        spec = reader.mapping(item, "campaign", _CAMPAIGN_KEYS)
        if "id" not in spec:
            reader.fail("campaign: missing 'id'", item)
        campaign_id = reader.string(spec["id"][1], "campaign id")
        where = f"campaign '{campaign_id}'"
        if not _ID_RE.match(campaign_id):
            reader.fail(f"{where}: use lowercase letters, digits and _ (≤ 64)", spec["id"][1])
        if campaign_id in seen:
            reader.fail(
                f"duplicate campaign id '{campaign_id}' (first at line {seen[campaign_id].line})",
                spec["id"][1],
            )
        when = (
            reader.expression(spec["when"][1], f"{where}: when", self.triggers.known, self.triggers.params)
            if "when" in spec
            else None
        )
        schedule = self.schedule(spec["schedule"][1], where) if "schedule" in spec else None
        budget = self.budget(spec["budget"][1], where) if "budget" in spec else None
        cap = _caps(reader, spec["cap"][1], f"{where}: cap") if "cap" in spec else None
        holdout = _share(reader, spec["holdout"][1], f"{where}: holdout") if "holdout" in spec else 0.0
        variants = self.variants(spec["variants"][1], where) if "variants" in spec else ()
        return CampaignDef(
            id=campaign_id,
            description=reader.string(spec["description"][1], f"{where}: description")
            if "description" in spec
            else "",
            when=when,
            schedule=schedule,
            budget=budget,
            cap=cap,
            holdout=holdout,
            variants=variants,
            line=item.start_mark.line + 1,
        )

    def schedule(self, node: Node, where: str) -> Schedule:
        reader = self.reader
        spec = reader.mapping(node, f"{where}: schedule", _SCHEDULE_KEYS)
        weekdays = frozenset(range(1, 8))
        if "weekdays" in spec:
            days = reader.value(spec["weekdays"][1])
            if (
                not isinstance(days, list)
                or not days
                or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 7 for d in days)
            ):
                reader.fail(
                    f"{where}: weekdays must be a list of 1 (Monday) … 7 (Sunday)", spec["weekdays"][1]
                )
            weekdays = frozenset(days)
        hours: list[tuple[int, int]] = []
        if "hours" in spec:
            hours_node = spec["hours"][1]
            for range_node in hours_node.value if isinstance(hours_node, SequenceNode) else [hours_node]:
                text = reader.string(range_node, f"{where}: hours")
                start_text, dash, end_text = text.partition("-")
                if not dash:
                    reader.fail(f"{where}: hours {text!r}: write a range like 07:00-13:00", range_node)
                start = _minute_of_day(
                    reader,
                    ScalarNode(
                        "tag:yaml.org,2002:str",
                        start_text.strip(),
                        range_node.start_mark,
                        range_node.end_mark,
                    ),
                    f"{where}: hours",
                )
                end = _minute_of_day(
                    reader,
                    ScalarNode(
                        "tag:yaml.org,2002:str", end_text.strip(), range_node.start_mark, range_node.end_mark
                    ),
                    f"{where}: hours",
                )
                if end <= start:
                    reader.fail(f"{where}: hours {text!r}: the end must be after the start", range_node)
                hours.append((start, end))
        dates: dict[str, date | None] = {"from": None, "until": None}
        for key in dates:
            if key in spec:
                value = reader.value(spec[key][1])
                if not isinstance(value, date):
                    reader.fail(f"{where}: {key} must be a date like 2026-12-01", spec[key][1])
                dates[key] = value
        if dates["from"] and dates["until"] and dates["until"] < dates["from"]:
            reader.fail(f"{where}: until is before from", spec["until"][1])
        zone = self.zone
        if "timezone" in spec:
            zone = reader.string(spec["timezone"][1], f"{where}: timezone")
            try:
                zone_of(zone)
            except ValueError as exc:
                reader.fail(f"{where}: {exc}", spec["timezone"][1])
        return Schedule(weekdays, tuple(hours) or ((0, 1440),), dates["from"], dates["until"], zone)

    def budget(self, node: Node, where: str) -> Budget:
        reader = self.reader
        spec = reader.mapping(node, f"{where}: budget", _BUDGET_KEYS)
        numbers: dict[str, float] = {}
        for key in ("daily", "cost_per_message"):
            if key not in spec:
                reader.fail(f"{where}: budget needs '{key}'", node)
            value = reader.value(spec[key][1])
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < 0
                or not math.isfinite(value)
            ):
                reader.fail(f"{where}: budget {key} must be a number ≥ 0", spec[key][1])
            numbers[key] = float(value)
        currency = reader.string(spec["currency"][1], f"{where}: currency") if "currency" in spec else "EUR"
        return Budget(numbers["daily"], numbers["cost_per_message"], currency)

    def variants(self, node: Node, where: str) -> tuple[Variant, ...]:
        reader = self.reader
        out: list[Variant] = []
        for name, (key_node, value_node) in reader.mapping(node, f"{where}: variants").items():
            if not _ID_RE.match(name):
                reader.fail(f"{where}: variant '{name}': use lowercase letters, digits and _", key_node)
            spec = reader.mapping(value_node, f"{where}: variant '{name}'", _VARIANT_KEYS)
            if "share" not in spec:
                reader.fail(f"{where}: variant '{name}' needs 'share'", value_node)
            share = _share(reader, spec["share"][1], f"{where}: variant '{name}': share")
            payload = (
                self.triggers.payload(spec["payload"][1], f"{where}: variant '{name}'")
                if "payload" in spec
                else {}
            )
            out.append(Variant(name, share, MappingProxyType(payload)))
        if out and abs(sum(v.share for v in out) - 1.0) > 1e-9:
            reader.fail(
                f"{where}: variant shares must add up to 1.0 (they add up to {sum(v.share for v in out):g})",
                node,
            )
        return tuple(out)


def _load_guardrails(reader: _YamlReader, node: Node | None) -> Guardrails:
    """``guardrails: {caps: {email: {day: 1}}, quiet_hours: {from, to, channels}, attribution_window}``."""
    if node is None:
        return Guardrails()
    spec = reader.mapping(node, "guardrails", _GUARDRAIL_KEYS)
    caps: dict[str, Caps] = {}
    if "caps" in spec:
        for channel, (key_node, caps_node) in reader.mapping(spec["caps"][1], "guardrails: caps").items():
            if channel not in CHANNELS:
                reader.fail(
                    f"guardrails: caps: unknown channel '{channel}' (known: {', '.join(CHANNELS)})", key_node
                )
            caps[channel] = _caps(reader, caps_node, f"guardrails: caps {channel}")
    quiet: QuietHours | None = None
    if "quiet_hours" in spec:
        quiet_node = spec["quiet_hours"][1]
        q = reader.mapping(quiet_node, "guardrails: quiet_hours", _QUIET_KEYS)
        for required in ("from", "to"):
            if required not in q:
                reader.fail(f"guardrails: quiet_hours needs '{required}'", quiet_node)
        channels = frozenset(CONSENT_CHANNELS)
        if "channels" in q:
            listed = reader.value(q["channels"][1])
            if not isinstance(listed, list) or any(c not in CHANNELS for c in listed):
                reader.fail(
                    f"guardrails: quiet_hours channels must be a list of {', '.join(CHANNELS)}",
                    q["channels"][1],
                )
            channels = frozenset(listed)
        quiet = QuietHours(
            _minute_of_day(reader, q["from"][1], "guardrails: quiet_hours from"),
            _minute_of_day(reader, q["to"][1], "guardrails: quiet_hours to"),
            channels,
        )
    window = DEFAULT_ATTRIBUTION_S
    if "attribution_window" in spec:
        try:
            window = parse_duration(reader.value(spec["attribution_window"][1]))
        except ValueError as exc:
            reader.fail(f"guardrails: attribution_window: {exc}", spec["attribution_window"][1])
    return Guardrails(MappingProxyType(caps), quiet, window)


class _JourneyLoader:
    """The ``journeys`` list: entry, exits and steps, each step's references checked, and no cycle
    of steps without a wait (it would run forever at one moment)."""

    def __init__(self, triggers: _TriggerLoader) -> None:
        self.triggers, self.reader = triggers, triggers.reader
        self.seen: dict[str, int] = {}

    def load(self, node: Node | None) -> list[JourneyDef]:
        if node is None:
            return []
        return [self.journey(item) for item in self.reader.sequence(node, "journeys")]

    def journey(self, item: Node) -> JourneyDef:
        reader, triggers = self.reader, self.triggers
        spec = reader.mapping(item, "journey", _JOURNEY_KEYS)
        for required in ("id", "entry", "steps"):
            if required not in spec:
                reader.fail(f"journey: missing '{required}'", item)
        id_node = spec["id"][1]
        journey_id = reader.string(id_node, "journey id")
        where = f"journey '{journey_id}'"
        if not _ID_RE.match(journey_id):
            reader.fail(f"{where}: use lowercase letters, digits and _ (≤ 64)", id_node)
        if journey_id in self.seen:
            reader.fail(
                f"duplicate journey id '{journey_id}' (first at line {self.seen[journey_id]})", id_node
            )
        self.seen[journey_id] = id_node.start_mark.line + 1
        entry_node = spec["entry"][1]
        entry = reader.mapping(entry_node, f"{where}: entry", ("enter", "event"))
        if len(entry) != 1:
            reader.fail(f"{where}: 'entry' takes one of enter, event", entry_node)
        ((entry_kind, (_, target_node)),) = entry.items()
        if entry_kind == "enter":
            targets = triggers.segment_names(target_node, f"{where}: entry enter")
        else:
            targets = frozenset(self.event_names(target_node, f"{where}: entry event", outcomes=False))
        campaign = triggers.campaign(spec["campaign"][1], where) if "campaign" in spec else None
        exit_events, opt_out, exit_segments = (
            self.exits(spec["exit_on"][1], where) if "exit_on" in spec else (frozenset(), False, frozenset())
        )
        reentry = triggers.duration(spec, "reentry", where) or 0.0
        steps = self.steps(spec["steps"][1], where)
        return JourneyDef(
            id=journey_id,
            entry=entry_kind,  # type: ignore[arg-type]
            entry_targets=targets,
            steps=steps,
            exit_events=exit_events,
            exit_opt_out=opt_out,
            exit_segments=exit_segments,
            campaign=campaign,
            reentry_s=reentry,
            description=reader.string(spec["description"][1], f"{where}: description")
            if "description" in spec
            else "",
            line=item.start_mark.line + 1,
        )

    def event_names(self, node: Node, where: str, outcomes: bool = True) -> list[str]:
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        known = list(EventType.__members__) + (sorted(OUTCOME_NAMES) if outcomes else [])
        names: list[str] = []
        for n in nodes:
            name = self.reader.string(n, where)
            if name not in known:
                self.reader.fail(f"{where}: unknown event '{name}'{_suggest(name, known)}", n)
            names.append(name)
        return names

    def exits(self, node: Node, where: str) -> tuple[frozenset[str], bool, frozenset[str]]:
        """``exit_on: [purchase, opt_out, message_clicked, {exit: segment}]``."""
        reader = self.reader
        known = [*EventType.__members__, *sorted(OUTCOME_NAMES), OPT_OUT]
        events: set[str] = set()
        segments: set[str] = set()
        opt_out = False
        for n in reader.sequence(node, f"{where}: exit_on"):
            if isinstance(n, MappingNode):
                spec = reader.mapping(n, f"{where}: exit_on", ("exit",))
                if "exit" not in spec:
                    reader.fail(f"{where}: exit_on: write {{exit: segment}}", n)
                segments |= self.triggers.segment_names(spec["exit"][1], f"{where}: exit_on exit")
                continue
            name = reader.string(n, f"{where}: exit_on")
            if name == OPT_OUT:
                opt_out = True
            elif name in known:
                events.add(name)
            else:
                reader.fail(f"{where}: exit_on: unknown event '{name}'{_suggest(name, known)}", n)
        return frozenset(events), opt_out, frozenset(segments)

    def steps(self, node: Node, where: str) -> tuple[Step, ...]:
        reader = self.reader
        items = reader.sequence(node, f"{where}: steps")
        if not items:
            reader.fail(f"{where}: steps is empty", node)
        ids: dict[str, Node] = {}
        specs: list[tuple[Node, dict[str, tuple[Node, Node]], str]] = []
        for item in items:
            spec = reader.mapping(item, f"{where}: step", _STEP_KEYS)
            if "id" not in spec:
                reader.fail(f"{where}: step: missing 'id'", item)
            step_id = reader.string(spec["id"][1], f"{where}: step id")
            if not _ID_RE.match(step_id) or step_id == END:
                reader.fail(
                    f"{where}: step '{step_id}': use lowercase letters, digits and _ (not '{END}')",
                    spec["id"][1],
                )
            if step_id in ids:
                reader.fail(
                    f"{where}: duplicate step id '{step_id}' "
                    f"(first at line {ids[step_id].start_mark.line + 1})",
                    spec["id"][1],
                )
            ids[step_id] = item
            specs.append((item, spec, step_id))
        refs: list[tuple[str, Node]] = []

        def ref(ref_node: Node, what: str) -> str:
            target = reader.string(ref_node, what)
            refs.append((target, ref_node))
            return target

        steps: list[Step] = []
        for i, (item, spec, step_id) in enumerate(specs):
            at = f"{where}: step '{step_id}'"
            actions = [key for key in ("send", "wait", "branch", "end") if key in spec]
            if len(actions) != 1:
                reader.fail(f"{at}: needs exactly one of send, wait, branch, end", item)
            action = actions[0]
            following = specs[i + 1][2] if i + 1 < len(specs) else END
            nxt = ref(spec["next"][1], f"{at}: next") if "next" in spec else following
            if action == "send":
                campaign = self.triggers.campaign(spec["campaign"][1], at) if "campaign" in spec else None
                steps.append(
                    Step(
                        step_id,
                        "send",
                        nxt,
                        send=self.triggers.send_spec(spec["send"][1], at),
                        campaign=campaign,
                        line=item.start_mark.line + 1,
                    )
                )
            elif action == "wait":
                try:
                    wait_s = parse_duration(reader.value(spec["wait"][1]))
                except ValueError as exc:
                    reader.fail(f"{at}: wait: {exc}", spec["wait"][1])
                if wait_s <= 0:
                    reader.fail(f"{at}: wait must be longer than 0s", spec["wait"][1])
                until = (
                    frozenset(self.event_names(spec["until"][1], f"{at}: until"))
                    if "until" in spec
                    else frozenset()
                )
                on_until = ref(spec["on_until"][1], f"{at}: on_until") if "on_until" in spec else None
                if on_until is not None and not until:
                    reader.fail(f"{at}: on_until needs until", spec["on_until"][1])
                steps.append(
                    Step(
                        step_id,
                        "wait",
                        nxt,
                        wait_s=wait_s,
                        until=until,
                        on_until=on_until,
                        line=item.start_mark.line + 1,
                    )
                )
            elif action == "branch":
                branches: list[tuple[Expr, str]] = []
                for b_node in reader.sequence(spec["branch"][1], f"{at}: branch"):
                    b = reader.mapping(b_node, f"{at}: branch", _BRANCH_KEYS)
                    if "if" not in b or "goto" not in b:
                        reader.fail(f"{at}: each branch needs 'if' and 'goto'", b_node)
                    cond = reader.expression(
                        b["if"][1], f"{at}: if", self.triggers.known, self.triggers.params
                    )
                    branches.append((cond, ref(b["goto"][1], f"{at}: goto")))
                if not branches:
                    reader.fail(f"{at}: branch is empty", spec["branch"][1])
                otherwise = ref(spec["else"][1], f"{at}: else") if "else" in spec else nxt
                steps.append(
                    Step(
                        step_id,
                        "branch",
                        nxt,
                        branches=tuple(branches),
                        otherwise=otherwise,
                        line=item.start_mark.line + 1,
                    )
                )
            else:
                steps.append(Step(step_id, "end", END, line=item.start_mark.line + 1))
            if action not in ("send", "wait", "branch") and "next" in spec:
                reader.fail(f"{at}: an end step has no next", spec["next"][1])
        for target, ref_node in refs:
            if target != END and target not in ids:
                reader.fail(f"{where}: unknown step '{target}'{_suggest(target, [*ids, END])}", ref_node)
        # A cycle that never passes a wait would run forever at one moment.
        graph = {s.id: [t for t in s.targets() if t != END] for s in steps if s.action != "wait"}
        cycle = find_cycle({k: [t for t in v if t in graph] for k, v in graph.items()})
        if cycle:
            reader.fail(f"{where}: steps {' → '.join(cycle)} form a cycle without a wait", ids[cycle[0]])
        return tuple(steps)


# -- derived, prepared once -------------------------------------------------------------------------------


def _source_sha(text: str, override: Mapping[str, Any]) -> str:
    sha = hashlib.sha256(text.encode("utf-8"))
    if override:
        sha.update(b"\0" + json.dumps(override, sort_keys=True, default=str).encode("utf-8"))
    return sha.hexdigest()


def _add_named_dimensions(attributes: dict[str, AttributeDef], exprs: list[Expr]) -> None:
    # Map attributes always hold the dimensions a definition names (so a dynamic key like
    # `spend_365d[segment_category]` reads 0, not a missing key, for a visitor who never bought there).
    named: dict[str, set[str]] = {}
    for expr in exprs:
        for var in expr.variables:
            split_var = split_dimension_var(var)
            if split_var is not None:
                named.setdefault(split_var[0], set()).add(split_var[1])
    for name, dims in named.items():
        if name in attributes:  # not a map cohort
            attributes[name] = attributes[name].with_dimensions(dims)


def _reads_and_functions(
    exprs: list[Expr], attributes: Mapping[str, AttributeDef]
) -> tuple[frozenset[str], dict[str, Callable[..., Any]], frozenset[str]]:
    """Facts and attributes the expressions read, their stdlib functions, and their custom ones."""
    names = frozenset(base_name(v) for e in exprs for v in e.variables)
    functions: dict[str, Callable[..., Any]] = {}
    for e in exprs:
        functions.update(e.stdlib_functions)
    custom = frozenset(f for e in exprs for f in e.functions if f == "distance_km")
    return frozenset(n for n in names if n in FACTS or n in attributes), functions, custom


@functools.lru_cache(maxsize=4096)
def _timer_plan(defs: Definitions, members: frozenset[str]) -> TimerPlan:
    """`Definitions.timer_plan`, once per distinct membership of the timed segments."""
    return plan_for(
        members,
        defs.base_timer_plan,
        defs.timed,
        defs.attributes,
        defs.local_time_segments,
        _indices(defs),
        table=defs.timer_sources,
    )


def _indices(defs: Definitions) -> Callable[[Iterable[str]], frozenset[int]]:
    index = defs.dependencies
    return index.with_readers if index is not None else lambda ids: frozenset()


def _prepare(
    version: str,
    description: str,
    params: dict[str, Any],
    attributes: dict[str, AttributeDef],
    segments: list[SegmentDef],
    triggers: list[TriggerRule],
    *,
    path: str,
    source_sha: str,
    zone: str = DEFAULT_ZONE,
    cohorts: Mapping[str, CohortDef] | None = None,
    journeys: list[JourneyDef] | None = None,
    campaigns: Mapping[str, CampaignDef] | None = None,
    guardrails: Guardrails | None = None,
) -> Definitions:
    cohorts = cohorts or {}
    journeys = journeys or []
    campaigns = campaigns or {}
    # A cohort's attribute is computed at every evaluation (the profile's recorded value), and its
    # window's exits are timers like those of the attributes segments read.
    cohort_attributes = frozenset(cohort.attribute for cohort in cohorts.values())
    trigger_exprs = [
        e for rule in triggers for e in ([rule.when] if rule.when else []) + list(rule.compute.values())
    ]
    # Journey conditions and payloads and campaign conditions read what triggers read.
    for journey in journeys:
        for step in journey.steps:
            trigger_exprs += [cond for cond, _ in step.branches]
            if step.send is not None:
                trigger_exprs += list(step.send.compute.values())
    trigger_exprs += [c.when for c in campaigns.values() if c.when is not None]
    _add_named_dimensions(attributes, [seg.when for seg in segments] + trigger_exprs)
    seg_vars, seg_functions, seg_custom = _reads_and_functions([seg.when for seg in segments], attributes)
    trig_vars, trig_functions, trig_custom = _reads_and_functions(trigger_exprs, attributes)
    timed = {
        seg.id: found
        for seg in segments
        if (
            found := timed_segment(
                seg.when.source, seg.when.variables, [(r.after, r.delay_s) for r in seg.rechecks], attributes
            )
        )
        is not None
    }
    return Definitions(
        version=version,
        params=MappingProxyType(params),
        attributes=MappingProxyType(attributes),
        segments=tuple(segments),
        triggers=tuple(triggers),
        source_sha=source_sha,
        path=path,
        description=description,
        zone=zone,
        plan=ValuePlan.build(seg_vars | trig_vars | cohort_attributes, attributes, zone),
        segment_vars=seg_vars,
        segment_nullable=seg_vars & NULLABLE_FACTS,
        segment_functions=MappingProxyType(seg_functions),
        segment_function_names=seg_custom,
        timed=MappingProxyType(timed),
        timer_always=frozenset(n for n in cohort_attributes if attributes[n].window.kind != "lifetime"),
        trigger_plan=ValuePlan.build(trig_vars, attributes, zone),
        trigger_vars=trig_vars,
        trigger_nullable=trig_vars & NULLABLE_FACTS,
        trigger_functions=MappingProxyType(trig_functions),
        trigger_function_names=trig_custom,
        dependencies=DependencyIndex(
            [seg.when.variables for seg in segments],
            [seg.id for seg in segments],
            attributes,
            evaluation_order(segments),
            [condition_guards(seg.when.source) for seg in segments],
            cohorts=frozenset(cohort.group for cohort in cohorts.values()),
        ),
        local_time_segments=frozenset(seg.id for seg in segments if seg.when.variables & LOCAL_TIME_FACTS),
        cohorts=MappingProxyType(dict(cohorts)),
        journeys=tuple(journeys),
        campaigns=MappingProxyType(dict(campaigns)),
        guardrails=guardrails or Guardrails(),
    )
