"""Segment definitions as data: the YAML loader/validator, the evaluator, the due-queue clock.

The definitions file (``segments/default.yaml`` is the shipped one, and its comments are the
user-facing reference) has six top-level keys:

``version``     string, required; stamped as ``definition_version`` on every segment change.
``description`` free text.
``params``      named constants readable by name in every expression (``product_x: "P-1001"``);
                `params_override` of the loader replaces values (same type, known names only).
``attributes``  windowed aggregates over the day buckets, declared once::

                    purchases_30d:    {metric: purchases, window: 30d}
                    spend_365d_tv:    {metric: spend, dimension: tv, window: 365d}  # or metric: spend@tv
                    spend_365d:       {metric: spend, by: category, window: 365d}   # map: spend_365d["tv"]
                    visit_days_30d:   {metric: sessions, agg: days, window: 30d}    # days with ≥ 1
                    promo_share_90d:  {ratio: [promo_purchases, purchases], window: 90d}

``segments``    a list; each item has ``id``, ``description``, ``when`` (a CEL condition over
                facts, attributes and params), optionally ``recheck`` (``{after: <profile time>,
                delay: 30m}`` or a list of them: when a condition can flip with no new event) and
                ``for_each`` (one segment per item; the loop variable and per-item constants are
                readable in ``when`` and substituted as ``{name}`` in ``id`` and ``description``).
``triggers``    a list of message rules: ``id``, ``on`` (``{event: exit_intent}``,
                ``{enter: cart_abandoners}``, ``{exit: …}``; segment names may be globs like
                ``top_spender_*``), optional ``when``, ``send: {kind, channel, payload, compute, ttl}``
                and ``cap`` (frequency cap per visitor and rule). See `streams.core.triggers`.

Anything else is refused with the file's line and the reason (`DefinitionError`).

How it runs (once per touched visitor per batch). At load time every expression is compiled once;
params and ``for_each`` constants are inlined as CEL literals and a literal key into a map attribute
(``spend_365d["clothing"]``) becomes a scalar variable of its own, so none of them costs anything
per evaluation. Plain conditions (comparisons, ``&&``, ``||``, ``!``, ``in`` over strings; every
shipped one) also compile to Python closures (`streams.core.fastcel`), which answer exactly as CEL
does or decline; a declined or non-plain condition runs its CEL program. Per visitor, names
resolve lazily (`LazyValues`), for the closures and for one CEL context built only when a
condition needs it: ``&&``/``||`` short-circuit left to right, so a condition only computes the
facts and attributes it actually reaches. Handing CEL a value costs ≈0.5 µs for an int, ≈2 µs for
a string, far more for lists and maps, which is why nothing is converted up front. Write cheap,
selective tests first (``country == "CH" && …``).
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import cel
import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from schemas.changes import AttributeValue
from schemas.events import EventType
from schemas.messages import MessageKind
from streams.core.attributes import (
    FACTS,
    NULLABLE_FACTS,
    RECHECK_ANCHORS,
    RELATIVE_FACTS,
    AttributeDef,
    CelSyntaxError,
    Expr,
    LazyValues,
    ValuePlan,
    WindowGroup,
    base_name,
    cel_functions,
    compile_expr,
    display_name,
    groups_exit_at,
    parse_duration,
    parse_metric_ref,
    parse_window,
    scalarize,
    sliding_fact_anchors,
    split_dimension_var,
    window_groups,
)
from streams.core.profile import DIMENSIONED_METRICS, Profile
from streams.core.triggers import CHANNELS, TRIGGER_CONTEXT, TriggerRule

__all__ = [
    "DefinitionError",
    "Definitions",
    "Evaluation",
    "Recheck",
    "SegmentDef",
    "diff",
    "evaluate",
    "load_definitions",
    "next_check_at",
    "parse_definitions",
    "preview",
]


class DefinitionError(ValueError):
    """A refused definitions file: ``str()`` is ``path:line: reason``."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None) -> None:
        self.message, self.line, self.path = message, line, path
        where = path or "<string>"
        super().__init__(f"{where}:{line}: {message}" if line is not None else f"{where}: {message}")


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
    """Facts, attributes and attribute dimensions the condition reads (what a change reports)."""
    line: int | None = None
    template: str | None = None
    read_labels: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(runtime variable, reported name) per entry of `reads`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_labels", tuple((name, display_name(name)) for name in self.reads))

    """The `for_each` id template this segment was expanded from."""


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
    # Prepared once, used per visitor:
    plan: ValuePlan = field(default_factory=lambda: ValuePlan.build((), {}), repr=False)
    """Every fact and attribute any segment or trigger reads."""
    segment_vars: frozenset[str] = frozenset()
    segment_nullable: frozenset[str] = frozenset()
    segment_functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    segment_function_names: frozenset[str] = frozenset()
    window_attributes: tuple[AttributeDef, ...] = ()
    window_groups: tuple[WindowGroup, ...] = ()
    sliding_facts: frozenset[str] = frozenset()
    rechecks: tuple[Recheck, ...] = ()
    time_anchors: tuple[tuple[str, float], ...] = ()
    """(anchor, delay) pairs of `sliding_facts` and `rechecks` together, duplicates dropped:
    every candidate time `next_check_at` considers besides the windows."""
    trigger_plan: ValuePlan = field(default_factory=lambda: ValuePlan.build((), {}), repr=False)
    trigger_vars: frozenset[str] = frozenset()
    trigger_nullable: frozenset[str] = frozenset()
    trigger_functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    trigger_function_names: frozenset[str] = frozenset()

    def segment(self, segment_id: str) -> SegmentDef:
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise KeyError(segment_id)


@dataclass(frozen=True)
class Evaluation:
    members: frozenset[str]
    deciding: dict[str, dict[str, AttributeValue]]
    """Per segment that is a member now or was one before (`profile.segments`) — every segment that
    can appear in a transition — the fact/attribute values its condition read (maps flattened to
    ``name.key``, lists comma-joined)."""
    context: dict[str, Any] = field(default_factory=dict)
    """The fact/attribute values computed while evaluating (conditions short-circuit, so not every
    name); pass it on to `streams.core.triggers.decide`, which computes only what is missing."""
    errors: dict[str, str] = field(default_factory=dict)
    """Segments whose condition failed at run time (counted as not a member), with the reason."""
    values: LazyValues | None = field(default=None, repr=False, compare=False)
    """The values the conditions were evaluated on (for `explain` after the fact)."""

    def explain(self, defs: Definitions, segment_ids: Iterable[str]) -> dict[str, dict[str, AttributeValue]]:
        """The values each of `segment_ids`' conditions read, as `deciding` holds them: from
        `deciding` when it has them, else computed now (an evaluation with `explain=False` skips
        them, since only a transition needs them and most evaluations have none)."""
        out: dict[str, dict[str, AttributeValue]] = {}
        wanted = set(segment_ids)
        for segment_id in wanted & self.deciding.keys():
            out[segment_id] = self.deciding[segment_id]
        if self.values is not None:
            # A segment no longer defined (definitions reloaded) has nothing to explain.
            for seg in defs.segments:
                if seg.id in wanted and seg.id not in out:
                    out[seg.id] = _read_values(seg, self.values)
        return out


# -- evaluation -----------------------------------------------------------------------------------------


def _context(
    values: LazyValues, functions: Mapping[str, Callable[..., Any]], nullable: Iterable[str]
) -> cel.Context:
    """A CEL context resolving names lazily from `values`.

    Measured: handing CEL a value costs ~0.5 µs (int) to ~2 µs (string) and lists/maps far more,
    so putting every fact on the context up front costs more than resolving, only if a
    condition gets that far (conditions short-circuit left to right), the names it reads.
    """
    env = cel.Context(None, dict(functions) if functions else None)
    env.set_variable_resolver(values.get)
    for name in nullable:  # the resolver's None means "not mine": a null must be registered
        env.add_variable(name, None)
    return env


def _evaluate(profile: Profile, defs: Definitions, now: float, explain: bool) -> Evaluation:
    values = LazyValues(profile, defs.plan, now)
    functions = defs.segment_functions
    if defs.segment_function_names:
        functions = {**functions, **cel_functions(profile, defs.segment_function_names)}
    resolve = values.get
    env: cel.Context | None = None  # built when a condition needs CEL (most run in Python)
    members: set[str] = set()
    errors: dict[str, str] = {}
    for seg in defs.segments:
        fast = seg.when.fast
        if fast is not None:
            try:
                if fast(resolve, functions):
                    members.add(seg.id)
                continue
            except Exception:  # Declined, or a value that raised: CEL gives the answer and the error
                pass
        if env is None:
            env = _context(values, functions, defs.segment_nullable)
        try:
            result = seg.when.program.execute(env)
        except Exception as exc:  # CEL raises RuntimeError/TypeError/KeyError/ZeroDivisionError…
            errors[seg.id] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        if result is True:
            members.add(seg.id)
        elif result is not False:
            errors[seg.id] = f"condition gave {result!r}, not true/false"
    deciding: dict[str, dict[str, AttributeValue]] = {}
    if explain:
        previous = profile.segments
        for seg in defs.segments:
            if seg.id in members or seg.id in previous:
                deciding[seg.id] = _read_values(seg, values)
    return Evaluation(frozenset(members), deciding, values.cache, errors, values)


def _read_values(seg: SegmentDef, values: LazyValues) -> dict[str, AttributeValue]:
    """The fact/attribute values `seg`'s condition reads (maps flattened, lists joined)."""
    read: dict[str, Any] = {}
    for name, label in seg.read_labels:
        scalarize(label, values.get(name), read)
    return read


def evaluate(profile: Profile, defs: Definitions, now: float, *, explain: bool = True) -> Evaluation:
    """Which segments the profile is in at `now`. Pure: the profile is not changed.

    A condition that fails at run time (e.g. ``age >= 18`` with an unknown age and no `has_age`
    guard) counts as false and is reported in `Evaluation.errors`. With `explain=False`,
    `deciding` stays empty; `Evaluation.explain` computes it for the segments that need it.
    """
    return _evaluate(profile, defs, now, explain=explain)


def diff(previous: Iterable[str], current: frozenset[str]) -> tuple[list[str], list[str]]:
    """(entered, exited), each sorted."""
    before = set(previous)
    return sorted(current - before), sorted(before - current)


def next_check_at(profile: Profile, defs: Definitions, now: float) -> float | None:
    """The earliest moment after `now` at which a membership can change with no new event.

    Candidates: every declared ``recheck`` (each time the anchor names, plus the delay); the
    self-sliding facts segments read (``session_active``: last_seen + 30 min; each
    ``viewed_products_30m`` view + 30 min; each ``purchased_products_24h`` purchase + 24 h); and
    for windowed attributes, the moment the oldest in-window non-zero bucket slides out of each
    window a segment reads (``(day + W) * 86400``). `None` when nothing is pending.
    """
    best: float | None = groups_exit_at(profile, defs.window_groups, now)
    for anchor, delay in defs.time_anchors:
        for t in RECHECK_ANCHORS[anchor](profile):
            t += delay
            if t > now and (best is None or t < best):
                best = t
    return best


def preview(profiles: Iterable[Profile], defs: Definitions, now: float) -> dict[str, int]:
    """Segment sizes under `defs` (e.g. a changed file, before it goes live): id → members."""
    counts = dict.fromkeys((seg.id for seg in defs.segments), 0)
    for profile in profiles:
        for segment_id in _evaluate(profile, defs, now, explain=False).members:
            counts[segment_id] += 1
    return counts


# -- loading ----------------------------------------------------------------------------------------------

_TOP_KEYS = ("version", "description", "params", "attributes", "segments", "triggers")
_ATTRIBUTE_KEYS = ("metric", "dimension", "by", "agg", "ratio", "window", "description")
_SEGMENT_KEYS = ("id", "description", "when", "recheck", "for_each")
_RECHECK_KEYS = ("after", "delay")
_TRIGGER_KEYS = ("id", "description", "on", "when", "send", "cap")
_ON_KEYS = ("event", "enter", "exit")
_SEND_KEYS = ("kind", "channel", "payload", "compute", "ttl")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CEL_RESERVED = frozenset(
    "true false null in as break const continue else for function if import let loop package "
    "namespace return var void while".split()
)
_BY_DIMENSIONS = ("category",)
_PARAM_TYPES: tuple[tuple[type, ...], ...] = ((bool,), (int, float), (str,), (list,))


def load_definitions(path: Path, params_override: Mapping[str, Any] | None = None) -> Definitions:
    """Read and validate a definitions file; raises `DefinitionError` (path:line: reason)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read the file: {exc}", None, str(path)) from None
    return parse_definitions(text, str(path), params_override)


def parse_definitions(
    text: str, path: str = "<string>", params_override: Mapping[str, Any] | None = None
) -> Definitions:
    """Validate definitions given as YAML text; raises `DefinitionError` (path:line: reason)."""
    return _Loader(text, path, params_override).load()


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Loader:
    def __init__(self, text: str, path: str, params_override: Mapping[str, Any] | None) -> None:
        self.text, self.path = text, path
        self.override = dict(params_override or {})
        self.constructor = SafeConstructor()
        self.maps: frozenset[str] = frozenset()
        """Names of map attributes (`by: category`), set once attributes are read."""

    # -- node helpers -------------------------------------------------------------------------------

    def fail(self, message: str, node: Node | int | None) -> NoReturn:
        line = node if isinstance(node, int) or node is None else node.start_mark.line + 1
        raise DefinitionError(message, line, self.path)

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

    def string(self, node: Node, where: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            self.fail(f"{where} must be a string", node)
        return str(node.value)

    def sequence(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.fail(f"{where}: expected a list (items starting with '-')", node)
        return list(node.value)

    def identifier_line(self, node: Node, name: str) -> int:
        raw = self.text[node.start_mark.index : node.end_mark.index]
        match = re.search(rf"(?<![\w.]){re.escape(name)}\b", raw)
        offset = raw[: match.start()].count("\n") if match else 0
        return node.start_mark.line + 1 + offset

    def expression(self, node: Node, where: str, known: Iterable[str], constants: Mapping[str, Any]) -> Expr:
        if not isinstance(node, ScalarNode):
            self.fail(f"{where} must be a CEL expression (a string)", node)
        source = str(node.value)
        if not source.strip():
            self.fail(f"{where} is empty", node)
        try:
            expr = compile_expr(source, constants, self.maps)
        except CelSyntaxError as exc:
            block = 1 if node.style in ("|", ">") else 0
            line = node.start_mark.line + 1 + block + (exc.line - 1 if node.style == "|" else 0)
            self.fail(f"{where}: CEL syntax error at {exc.line}:{exc.column}: {exc.reason}", line)
        known_set = set(known) | set(constants)
        for name in sorted({base_name(v) for v in expr.variables}):
            if name not in known_set:
                self.fail(
                    f"{where}: unknown identifier '{name}'{_suggest(name, known_set)}",
                    self.identifier_line(node, name),
                )
        for name in sorted(expr.unknown_functions):
            self.fail(f"{where}: unknown function '{name}'", self.identifier_line(node, name))
        return expr

    # -- the document ---------------------------------------------------------------------------

    def load(self) -> Definitions:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
            self.fail(f"YAML syntax error: {reason}", None if mark is None else mark.line + 1)
        except yaml.YAMLError as exc:
            self.fail(f"YAML error: {exc}", None)
        if root is None:
            self.fail("empty file: expected version, segments, …", None)
        top = self.mapping(root, "top level", _TOP_KEYS)
        for required in ("version", "segments"):
            if required not in top:
                self.fail(f"missing top-level key '{required}'", 1)
        version = self.string(top["version"][1], 'version (quote it: version: "1")')
        if not version.strip():
            self.fail("version is empty", top["version"][1])
        description = self.string(top["description"][1], "description") if "description" in top else ""
        params = self.params(top["params"][1] if "params" in top else None)
        attributes = self.attributes(top["attributes"][1] if "attributes" in top else None, params)
        self.maps = frozenset(name for name, attr in attributes.items() if attr.kind == "by")
        segments = self.segments(top["segments"][1], attributes, params)
        triggers = self.triggers(
            top["triggers"][1] if "triggers" in top else None, segments, attributes, params
        )
        return self.finish(version, description, params, attributes, segments, triggers)

    def params(self, node: Node | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        lines: dict[str, Node] = {}
        if node is not None and not (isinstance(node, ScalarNode) and node.value in ("", "~", "null")):
            for name, (key_node, value_node) in self.mapping(node, "params").items():
                self.check_name(name, "param", key_node)
                value = self.value(value_node)
                if not self.param_ok(value):
                    self.fail(f"param '{name}': must be a string, number, bool or a list of them", value_node)
                params[name], lines[name] = value, value_node
        for name, value in self.override.items():
            if name not in params:
                self.fail(f"params_override: unknown param '{name}'{_suggest(name, params)}", None)
            if not self.param_ok(value) or self.param_kind(value) != self.param_kind(params[name]):
                self.fail(
                    f"params_override: param '{name}' must be {type(params[name]).__name__}, got {value!r}",
                    lines[name],
                )
            params[name] = value
        return params

    @staticmethod
    def param_kind(value: Any) -> int:
        for index, kinds in enumerate(_PARAM_TYPES):
            if isinstance(value, kinds):
                return index
        return -1

    def param_ok(self, value: Any) -> bool:
        if isinstance(value, list):
            return all(self.param_kind(v) in (0, 1, 2) and self.param_ok(v) for v in value)
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return self.param_kind(value) in (0, 1, 2)

    def check_name(self, name: str, what: str, node: Node) -> None:
        if not _NAME_RE.match(name) or name in _CEL_RESERVED:
            self.fail(f"{what} '{name}': not a valid name (letters, digits, _; not a CEL keyword)", node)
        if name in FACTS:
            self.fail(f"{what} '{name}': clashes with the built-in fact of that name", node)
        if name in TRIGGER_CONTEXT:
            self.fail(f"{what} '{name}': '{name}' is reserved for triggers", node)

    def attributes(self, node: Node | None, params: Mapping[str, Any]) -> dict[str, AttributeDef]:
        out: dict[str, AttributeDef] = {}
        if node is None:
            return out
        for name, (key_node, spec_node) in self.mapping(node, "attributes").items():
            where = f"attribute '{name}'"
            self.check_name(name, "attribute", key_node)
            if name in params:
                self.fail(f"{where}: clashes with the param of that name", key_node)
            spec = self.mapping(spec_node, where, _ATTRIBUTE_KEYS)
            if "window" not in spec:
                self.fail(f"{where}: missing 'window' (e.g. window: 30d)", spec_node)
            try:
                window = parse_window(self.value(spec["window"][1]))
            except ValueError as exc:
                self.fail(f"{where}: {exc}", spec["window"][1])
            if ("metric" in spec) == ("ratio" in spec):
                self.fail(f"{where}: give either 'metric' or 'ratio: [numerator, denominator]'", spec_node)
            line = key_node.start_mark.line + 1
            if "ratio" in spec:
                for extra in ("dimension", "by", "agg"):
                    if extra in spec:
                        self.fail(f"{where}: '{extra}' does not go with 'ratio'", spec[extra][0])
                parts = self.sequence(spec["ratio"][1], f"{where}: ratio")
                if len(parts) != 2:
                    self.fail(f"{where}: ratio needs [numerator, denominator]", spec["ratio"][1])
                keys = [self.metric(part, where) for part in parts]
                out[name] = AttributeDef(name, "ratio", window, keys[0], keys[1], line=line)
                continue
            key = self.metric(spec["metric"][1], where)
            if "dimension" in spec:
                if "@" in key:
                    self.fail(f"{where}: dimension given twice", spec["dimension"][1])
                if key not in DIMENSIONED_METRICS:
                    self.fail(
                        f"{where}: metric '{key}' has no dimension (per category: "
                        f"{', '.join(sorted(DIMENSIONED_METRICS))})",
                        spec["dimension"][1],
                    )
                key = f"{key}@{self.string(spec['dimension'][1], f'{where}: dimension')}"
            agg = self.string(spec["agg"][1], f"{where}: agg") if "agg" in spec else "sum"
            if agg not in ("sum", "days"):
                self.fail(f"{where}: agg must be sum or days, not '{agg}'", spec["agg"][1])
            if "by" in spec:
                by = self.string(spec["by"][1], f"{where}: by")
                if by not in _BY_DIMENSIONS:
                    self.fail(
                        f"{where}: by must be one of {', '.join(_BY_DIMENSIONS)}, not '{by}'", spec["by"][1]
                    )
                if "@" in key or key not in DIMENSIONED_METRICS:
                    self.fail(f"{where}: by: {by} needs a metric counted per {by}", spec["metric"][1])
                if agg != "sum":
                    self.fail(f"{where}: by: {by} only sums (agg: sum)", spec["agg"][1])
                out[name] = AttributeDef(name, "by", window, key, line=line)
            else:
                out[name] = AttributeDef(name, "days" if agg == "days" else "sum", window, key, line=line)
        return out

    def metric(self, node: Node, where: str) -> str:
        text = self.string(node, f"{where}: metric")
        try:
            return parse_metric_ref(text)
        except ValueError as exc:
            self.fail(f"{where}: {exc}", node)

    def recheck(self, node: Node, where: str) -> tuple[Recheck, ...]:
        items = node.value if isinstance(node, SequenceNode) else [node]
        out: list[Recheck] = []
        for item in items:
            spec = self.mapping(item, f"{where}: recheck", _RECHECK_KEYS)
            for required in _RECHECK_KEYS:
                if required not in spec:
                    self.fail(f"{where}: recheck needs '{required}'", item)
            after = self.string(spec["after"][1], f"{where}: recheck after")
            if after not in RECHECK_ANCHORS:
                self.fail(
                    f"{where}: recheck after '{after}' is not a profile time"
                    f"{_suggest(after, RECHECK_ANCHORS)}; "
                    f"known: {', '.join(RECHECK_ANCHORS)}",
                    spec["after"][1],
                )
            try:
                delay = parse_duration(self.value(spec["delay"][1]))
            except ValueError as exc:
                self.fail(f"{where}: recheck {exc}", spec["delay"][1])
            out.append(Recheck(after, delay))
        return tuple(out)

    def for_each(self, node: Node, where: str) -> tuple[str, list[dict[str, Any]]]:
        loop = self.mapping(node, f"{where}: for_each")
        if len(loop) != 1:
            self.fail(f"{where}: for_each takes exactly one loop variable (e.g. category: {{…}})", node)
        ((var, (key_node, items_node)),) = loop.items()
        self.check_name(var, f"{where}: for_each variable", key_node)
        expansions: list[dict[str, Any]] = []
        if isinstance(items_node, SequenceNode):
            for item in items_node.value:
                expansions.append({var: self.string(item, f"{where}: for_each item")})
        else:
            for item, (_, consts_node) in self.mapping(items_node, f"{where}: for_each {var}").items():
                binding: dict[str, Any] = {var: item}
                if not (isinstance(consts_node, ScalarNode) and consts_node.value in ("", "~", "null")):
                    for const, (const_key, value_node) in self.mapping(
                        consts_node, f"{where}: {var} {item}"
                    ).items():
                        self.check_name(const, f"{where}: for_each constant", const_key)
                        value = self.value(value_node)
                        if not self.param_ok(value) or const == var:
                            self.fail(f"{where}: for_each constant '{const}' must be a scalar", value_node)
                        binding[const] = value
                expansions.append(binding)
        if not expansions:
            self.fail(f"{where}: for_each has no items", items_node)
        names = set(expansions[0])
        for binding in expansions:
            if set(binding) != names:
                self.fail(
                    f"{where}: every for_each item needs the same constants ({', '.join(sorted(names))})",
                    node,
                )
        return var, expansions

    def segments(
        self, node: Node, attributes: Mapping[str, AttributeDef], params: Mapping[str, Any]
    ) -> list[SegmentDef]:
        out: list[SegmentDef] = []
        first_line: dict[str, int] = {}
        base_known = set(FACTS) | set(attributes)
        for item in self.sequence(node, "segments"):
            where = "segment"
            spec = self.mapping(item, "segment", _SEGMENT_KEYS)
            if "id" not in spec:
                self.fail("segment: missing 'id'", item)
            id_node = spec["id"][1]
            raw_id = self.string(id_node, "segment id")
            where = f"segment '{raw_id}'"
            for required in ("description", "when"):
                if required not in spec:
                    self.fail(f"{where}: missing '{required}'", item)
            description = self.string(spec["description"][1], f"{where}: description")
            expansions: list[dict[str, Any]] = [{}]
            if "for_each" in spec:
                for_each_node = spec["for_each"][1]
                _, expansions = self.for_each(for_each_node, where)
                for const in expansions[0]:
                    if const in base_known or const in params:
                        self.fail(
                            f"{where}: for_each name '{const}' clashes with a fact, attribute or param",
                            for_each_node,
                        )
            elif "{" in raw_id:
                self.fail(f"{where}: an id with {{…}} needs for_each", id_node)
            when_node = spec["when"][1]
            rechecks = self.recheck(spec["recheck"][1], where) if "recheck" in spec else ()
            for binding in expansions:
                when = self.expression(when_node, f"{where}: when", base_known, {**params, **binding})
                for fact, anchor in sorted(RELATIVE_FACTS.items()):
                    if fact in when.variables and not any(r.after == anchor for r in rechecks):
                        self.fail(
                            f"{where}: reads {fact}, which changes as time passes: add "
                            f"recheck: {{after: {anchor}, delay: …}} (when it can next flip)",
                            when_node,
                        )
                reads = tuple(
                    sorted(v for v in when.variables if base_name(v) in FACTS or base_name(v) in attributes)
                )
                try:
                    seg_id = raw_id.format_map(binding) if binding else raw_id
                    seg_description = description.format_map(binding) if binding else description
                except (KeyError, ValueError, IndexError) as exc:
                    self.fail(f"{where}: bad {{…}} template: {exc}", id_node)
                if not _ID_RE.match(seg_id):
                    self.fail(f"segment id '{seg_id}': use lowercase letters, digits and _ (≤ 64)", id_node)
                if seg_id in first_line:
                    self.fail(
                        f"duplicate segment id '{seg_id}' (first at line {first_line[seg_id]})", id_node
                    )
                first_line[seg_id] = id_node.start_mark.line + 1
                out.append(
                    SegmentDef(
                        id=seg_id,
                        description=seg_description,
                        when=when,
                        rechecks=rechecks,
                        bindings=MappingProxyType(dict(binding)),
                        reads=reads,
                        line=item.start_mark.line + 1,
                        template=raw_id if binding else None,
                    )
                )
        return out

    def triggers(
        self,
        node: Node | None,
        segments: list[SegmentDef],
        attributes: Mapping[str, AttributeDef],
        params: Mapping[str, Any],
    ) -> list[TriggerRule]:
        out: list[TriggerRule] = []
        if node is None:
            return out
        segment_ids = [seg.id for seg in segments]
        known = set(FACTS) | set(attributes) | set(TRIGGER_CONTEXT)
        seen: dict[str, int] = {}
        for item in self.sequence(node, "triggers"):
            spec = self.mapping(item, "trigger", _TRIGGER_KEYS)
            for required in ("id", "on", "send"):
                if required not in spec:
                    self.fail(f"trigger: missing '{required}'", item)
            id_node = spec["id"][1]
            rule_id = self.string(id_node, "trigger id")
            where = f"trigger '{rule_id}'"
            if not _ID_RE.match(rule_id):
                self.fail(f"{where}: use lowercase letters, digits and _ (≤ 64)", id_node)
            if rule_id in seen:
                self.fail(f"duplicate trigger id '{rule_id}' (first at line {seen[rule_id]})", id_node)
            seen[rule_id] = id_node.start_mark.line + 1
            on = self.mapping(spec["on"][1], f"{where}: on", _ON_KEYS)
            if len(on) != 1:
                self.fail(f"{where}: 'on' takes one of event, enter, exit", spec["on"][1])
            ((on_kind, (_, target_node)),) = on.items()
            target_nodes = target_node.value if isinstance(target_node, SequenceNode) else [target_node]
            targets: set[str] = set()
            for t_node in target_nodes:
                target = self.string(t_node, f"{where}: on {on_kind}")
                if on_kind == "event":
                    if target not in EventType.__members__:
                        self.fail(
                            f"{where}: unknown event type '{target}'{_suggest(target, list(EventType))}",
                            t_node,
                        )
                    targets.add(target)
                else:
                    matched = fnmatch.filter(segment_ids, target)
                    if not matched:
                        what = "pattern" if any(c in target for c in "*?[") else "segment"
                        self.fail(
                            f"{where}: unknown {what} '{target}'{_suggest(target, segment_ids)}", t_node
                        )
                    targets.update(matched)
            when = (
                self.expression(spec["when"][1], f"{where}: when", known, params) if "when" in spec else None
            )
            send = self.mapping(spec["send"][1], f"{where}: send", _SEND_KEYS)
            for required in ("kind", "channel"):
                if required not in send:
                    self.fail(f"{where}: send needs '{required}'", spec["send"][1])
            kind = self.string(send["kind"][1], f"{where}: kind")
            if kind not in MessageKind.__members__:
                self.fail(
                    f"{where}: unknown message kind '{kind}' (known: {', '.join(MessageKind.__members__)})",
                    send["kind"][1],
                )
            channel = self.string(send["channel"][1], f"{where}: channel")
            if channel not in CHANNELS:
                self.fail(
                    f"{where}: unknown channel '{channel}' (known: {', '.join(CHANNELS)})", send["channel"][1]
                )
            payload: dict[str, Any] = {}
            if "payload" in send:
                payload_node = send["payload"][1]
                self.mapping(payload_node, f"{where}: payload")
                payload = self.value(payload_node)
                try:
                    json.dumps(payload)
                except (TypeError, ValueError):
                    self.fail(
                        f"{where}: payload must be plain JSON values (no dates, no non-string keys)",
                        payload_node,
                    )
            compute: dict[str, Expr] = {}
            if "compute" in send:
                for field_name, (_, expr_node) in self.mapping(
                    send["compute"][1], f"{where}: compute"
                ).items():
                    compute[field_name] = self.expression(
                        expr_node, f"{where}: compute {field_name}", known, params
                    )
            durations: dict[str, float | None] = {"cap": None, "ttl": None}
            for key, holder in (("cap", spec), ("ttl", send)):
                if key in holder:
                    try:
                        durations[key] = parse_duration(self.value(holder[key][1]))
                    except ValueError as exc:
                        self.fail(f"{where}: {key}: {exc}", holder[key][1])
            out.append(
                TriggerRule(
                    id=rule_id,
                    on=on_kind,  # type: ignore[arg-type]
                    targets=frozenset(targets),
                    kind=MessageKind(kind),
                    channel=channel,  # type: ignore[arg-type]
                    when=when,
                    payload=MappingProxyType(payload),
                    compute=MappingProxyType(compute),
                    cap_s=durations["cap"],
                    ttl_s=durations["ttl"],
                    description=self.string(spec["description"][1], f"{where}: description")
                    if "description" in spec
                    else "",
                    line=item.start_mark.line + 1,
                )
            )
        return out

    # -- derived, prepared once --------------------------------------------------------------------

    def finish(
        self,
        version: str,
        description: str,
        params: dict[str, Any],
        attributes: dict[str, AttributeDef],
        segments: list[SegmentDef],
        triggers: list[TriggerRule],
    ) -> Definitions:
        trigger_exprs = [
            e for rule in triggers for e in ([rule.when] if rule.when else []) + list(rule.compute.values())
        ]
        all_exprs = [seg.when for seg in segments] + trigger_exprs
        # Map attributes always hold the dimensions a definition names (so a dynamic key like
        # `spend_365d[segment_category]` reads 0, not a missing key, for a visitor who never bought there).
        named: dict[str, set[str]] = {}
        for expr in all_exprs:
            for var in expr.variables:
                split_var = split_dimension_var(var)
                if split_var is not None:
                    named.setdefault(split_var[0], set()).add(split_var[1])
        for name, dims in named.items():
            attributes[name] = attributes[name].with_dimensions(dims)

        def split(exprs: list[Expr]) -> tuple[frozenset[str], dict[str, Callable[..., Any]], frozenset[str]]:
            names = frozenset(base_name(v) for e in exprs for v in e.variables)
            functions: dict[str, Callable[..., Any]] = {}
            for e in exprs:
                functions.update(e.stdlib_functions)
            custom = frozenset(f for e in exprs for f in e.functions if f == "distance_km")
            return frozenset(n for n in names if n in FACTS or n in attributes), functions, custom

        seg_vars, seg_functions, seg_custom = split([seg.when for seg in segments])
        trig_vars, trig_functions, trig_custom = split(trigger_exprs)
        rechecks = tuple(dict.fromkeys(r for seg in segments for r in seg.rechecks))
        window_attributes = tuple(attributes[n] for n in sorted(seg_vars) if n in attributes)
        sliding = frozenset(seg_vars & {"session_active", "viewed_products_30m", "purchased_products_24h"})
        sha = hashlib.sha256(self.text.encode("utf-8"))
        if self.override:
            sha.update(b"\0" + json.dumps(self.override, sort_keys=True, default=str).encode("utf-8"))
        return Definitions(
            version=version,
            params=MappingProxyType(params),
            attributes=MappingProxyType(attributes),
            segments=tuple(segments),
            triggers=tuple(triggers),
            source_sha=sha.hexdigest(),
            path=self.path,
            description=description,
            plan=ValuePlan.build(seg_vars | trig_vars, attributes),
            segment_vars=seg_vars,
            segment_nullable=seg_vars & NULLABLE_FACTS,
            segment_functions=MappingProxyType(seg_functions),
            segment_function_names=seg_custom,
            window_attributes=window_attributes,
            window_groups=window_groups(window_attributes),
            sliding_facts=sliding,
            rechecks=rechecks,
            time_anchors=tuple(
                dict.fromkeys([*sliding_fact_anchors(sliding), *((r.after, r.delay_s) for r in rechecks)])
            ),
            trigger_plan=ValuePlan.build(trig_vars, attributes),
            trigger_vars=trig_vars,
            trigger_nullable=trig_vars & NULLABLE_FACTS,
            trigger_functions=MappingProxyType(trig_functions),
            trigger_function_names=trig_custom,
        )
