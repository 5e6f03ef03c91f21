"""A Python fast path for the plain CEL conditions most segments are written in.

Running a compiled CEL program costs ≈ 1.9 µs per condition even when every value it reads is
already computed (the Rust engine calls back into Python for each name), ≈ 34 µs for the 18
shipped segments. Most conditions are comparisons of a name with a literal joined by ``&&`` and
``||``; `compile_fast` turns such a condition into nested Python closures.

Exactness comes first. A closure decides only where Python and CEL provably agree:

* comparisons of two numbers (int or double, never bool; ints within ±2^53 so int/double
  comparisons are exact both ways; no NaN), of two strings, or equality of two bools;
* ``x in [literals]`` and ``"literal" in list`` over strings;
* ``&&``, ``||`` and ``!`` on bools, evaluated left to right with short-circuit. CEL's ``&&`` is
  false as soon as either side is false and ``||`` true as soon as either side is true, so a
  short-circuited answer is CEL's answer whatever the skipped side holds;
* calls of the definitions' custom functions with numeric literal arguments.

Anything else at run time (a null, a map, a mixed-type comparison, a string CEL could not take,
a resolver that raises, a result that is not a bool) raises `Declined`, and the caller runs the
CEL program, which gives CEL's answer and CEL's error message. Text outside the subset (macros,
arithmetic, member access, escapes in strings, ``?:``…) compiles to None: that condition always
runs in CEL. `tests/unit/test_fastcel.py` checks closures against CEL on random values.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "ENTER",
    "EXIT",
    "Bound",
    "Declined",
    "FastCondition",
    "Motion",
    "compile_fast",
    "condition_guards",
    "equality_guards",
    "time_effects",
]

Resolver = Callable[[str], Any]
Functions = Mapping[str, Callable[..., Any]]
FastCondition = Callable[[Resolver, Functions], bool]
"""``condition(resolve, functions)``: True/False as CEL would answer, or raises `Declined`."""
_Node = Callable[[Resolver, Functions], Any]

_EXACT = 2**53
"""Ints beyond this are not compared with doubles exactly by both sides: decline them."""


class Declined(Exception):
    """The fast path cannot answer this evaluation exactly; run the CEL program."""


class _Unsupported(Exception):
    """Compile time: the text is outside the subset (the condition always runs in CEL)."""


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<float>\d+\.\d+(?:[eE][+-]?\d+)?)
      | (?P<int>\d+)
      | (?P<str>"[^"\\\n]*"|'[^'\\\n]*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|\[|\]|,|-)
    )""",
    re.VERBOSE,
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_KEYWORDS = frozenset({"true", "false", "null", "in"})


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.lastgroup is None:
            if text[pos:].isspace():
                break
            raise _Unsupported(text[pos:])
        kind, value = match.lastgroup, match.group(match.lastgroup)
        pos = match.end()
        # `1.e3`, `0x1F`, `3u`, `r"…"`, `a.b`: whatever follows a number or name directly is
        # a form this subset does not read.
        if kind in ("int", "float", "name") and pos < end and (text[pos].isalnum() or text[pos] in "._\"'"):
            raise _Unsupported(text[pos:])
        out.append((kind, value))
    return out


# -- run-time guards ------------------------------------------------------------------------------


def _cel_string(value: str) -> str:
    # A lone surrogate cannot cross into CEL (it fails there): decline rather than answer.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Declined from None
    return value


def _comparable(x: Any, y: Any, ordering: bool) -> None:
    """Return if CEL and Python agree on comparing x with y; else raise `Declined`."""
    tx, ty = type(x), type(y)
    if tx in (int, float) and ty in (int, float):
        for v, t in ((x, tx), (y, ty)):
            if t is int:
                if not -_EXACT <= v <= _EXACT:
                    raise Declined
            elif v != v:  # NaN
                raise Declined
        return
    if tx is str and ty is str:
        _cel_string(x)
        _cel_string(y)
        return
    if tx is bool and ty is bool and not ordering:
        return
    raise Declined


def _truth(value: Any) -> bool:
    if type(value) is not bool:
        raise Declined
    return value


# -- parser: CEL's precedence, || < && < relations < unary < primary -------------------------------
# It builds a small tree of tuples; `_build` turns the tree into closures.

_Tree = tuple[Any, ...]


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], functions: frozenset[str]) -> None:
        self.tokens, self.at, self.functions = tokens, 0, functions

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise _Unsupported(f"expected {value!r}")
        self.at += 1
        return token

    def parse(self) -> _Tree:
        tree = self.or_expr()
        if self.peek() is not None:
            raise _Unsupported("trailing text")
        return tree

    def or_expr(self) -> _Tree:
        return self.joined("||", "or", self.and_expr)

    def and_expr(self) -> _Tree:
        return self.joined("&&", "and", self.relation)

    def joined(self, operator_text: str, kind: str, part: Callable[[], _Tree]) -> _Tree:
        parts = [part()]
        while self.peek() == ("op", operator_text):
            self.take()
            parts.append(part())
        return parts[0] if len(parts) == 1 else (kind, parts)

    def relation(self) -> _Tree:
        left = self.unary()
        token = self.peek()
        if token is None:
            return left
        if token[0] == "op" and token[1] in _COMPARE:
            self.take()
            tree: _Tree = ("cmp", token[1], left, self.unary())
        elif token == ("name", "in"):
            self.take()
            if self.peek() == ("op", "["):
                self.take()
                tree = ("in_literals", left, self.literal_list())
            else:
                tree = ("in", left, self.unary())
        else:
            return left
        nxt = self.peek()
        if nxt is not None and (nxt[1] in _COMPARE or nxt == ("name", "in")):
            raise _Unsupported("chained relation")
        return tree

    def unary(self) -> _Tree:
        token = self.peek()
        if token == ("op", "!"):
            self.take()
            return ("not", self.unary())
        if token == ("op", "-"):
            self.take()
            kind, text = self.take()
            if kind not in ("int", "float"):
                raise _Unsupported("unary minus on a non-literal")
            return ("const", _number(kind, "-" + text))
        return self.primary()

    def primary(self) -> _Tree:
        kind, text = self.take()
        if kind in ("int", "float"):
            return ("const", _number(kind, text))
        if kind == "str":
            return ("const", text[1:-1])
        if kind == "op" and text == "(":
            tree = self.or_expr()
            self.take(")")
            return tree
        if kind == "name":
            if text in ("true", "false"):
                return ("const", text == "true")
            if text in _KEYWORDS:
                raise _Unsupported(text)
            if self.peek() == ("op", "("):
                return self.call(text)
            return ("name", text)
        raise _Unsupported(text)

    def literal_list(self) -> frozenset[str]:
        items: list[str] = []
        while self.peek() != ("op", "]"):
            if items:
                self.take(",")
            kind, text = self.take()
            if kind != "str":
                raise _Unsupported("a list literal other than strings")
            items.append(text[1:-1])
        self.take("]")
        if not items:
            raise _Unsupported("empty list")
        return frozenset(items)

    def call(self, function: str) -> _Tree:
        if function not in self.functions:
            raise _Unsupported(f"function {function}")
        self.take("(")
        args: list[Any] = []
        while self.peek() != ("op", ")"):
            if args:
                self.take(",")
            arg = self.unary()  # a literal number, signed or not
            if arg[0] != "const" or type(arg[1]) not in (int, float):
                raise _Unsupported("call argument")
            args.append(arg[1])
        self.take(")")
        return ("call", function, tuple(args))


def _number(kind: str, text: str) -> int | float:
    value: int | float = int(text) if kind == "int" else float(text)
    if kind == "int" and not -_EXACT <= value <= _EXACT:
        raise _Unsupported("int literal beyond ±2^53")
    return value


# -- closures -------------------------------------------------------------------------------------
# `_build` returns (closure, always_bool). The common shape, a name against a literal, is one
# closure with its guard inline: each call level costs ≈ 0.1 µs.

_SWAPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _build(tree: _Tree) -> tuple[_Node, bool]:
    kind = tree[0]
    if kind == "const":
        value = tree[1]
        return (lambda resolve, functions: value), type(value) is bool
    if kind == "name":
        return _name(tree[1]), False
    if kind == "call":
        return _call(tree[1], tree[2]), False
    if kind == "not":
        operand, is_bool = _build(tree[1])
        if is_bool:
            return (lambda resolve, functions: not operand(resolve, functions)), True
        return (lambda resolve, functions: not _truth(operand(resolve, functions))), True
    if kind in ("and", "or"):
        parts = [part if is_bool else _truthful(part) for part, is_bool in map(_build, tree[1])]
        return _chain(parts, decisive=kind == "or"), True
    if kind == "cmp":
        _, op, left, right = tree
        if left[0] == "const" and right[0] == "name":
            op, left, right = _SWAPPED[op], right, left
        if left[0] == "name" and right[0] == "const":
            literal = right[1]
            if type(literal) in (int, float):
                return _name_vs_number(left[1], _COMPARE[op], literal), True
            if type(literal) is str and op in ("==", "!="):
                return _name_equals_string(left[1], literal, op == "=="), True
        return _compare(_build(left)[0], _COMPARE[op], _build(right)[0], op not in ("==", "!=")), True
    if kind == "in_literals":
        return _in_literals(_build(tree[1])[0], tree[2]), True
    if kind == "in":
        return _membership(_build(tree[1])[0], _build(tree[2])[0]), True
    raise _Unsupported(kind)


def _name(name: str) -> _Node:
    def run(resolve: Resolver, functions: Functions) -> Any:
        value = resolve(name)
        if value is None:  # unknown or null: CEL's own rules (registered nulls, errors) decide
            raise Declined
        return value

    return run


def _call(function: str, arguments: tuple[float | int, ...]) -> _Node:
    def run(resolve: Resolver, functions: Functions) -> Any:
        target = functions.get(function)
        if target is None:
            raise Declined
        return target(*arguments)

    return run


def _truthful(part: _Node) -> _Node:
    return lambda resolve, functions: _truth(part(resolve, functions))


def _chain(parts: list[_Node], decisive: bool) -> _Node:
    """``&&`` (decisive: False) or ``||`` (decisive: True) over parts that return bools: the first
    part giving the decisive value ends it."""
    if len(parts) == 2:
        first, second = parts
        if decisive:
            return lambda resolve, functions: first(resolve, functions) or second(resolve, functions)
        return lambda resolve, functions: first(resolve, functions) and second(resolve, functions)

    def run(resolve: Resolver, functions: Functions) -> bool:
        for part in parts:
            if part(resolve, functions) is decisive:
                return decisive
        return not decisive

    return run


def _name_vs_number(name: str, op: Callable[[Any, Any], bool], literal: float) -> _Node:
    def run(resolve: Resolver, functions: Functions) -> bool:
        x = resolve(name)
        kind = type(x)
        if kind is int:
            if -_EXACT <= x <= _EXACT:
                return op(x, literal)
        elif kind is float and x == x:
            return op(x, literal)
        raise Declined

    return run


def _name_equals_string(name: str, literal: str, equal: bool) -> _Node:
    def run(resolve: Resolver, functions: Functions) -> bool:
        x = resolve(name)
        if type(x) is not str:
            raise Declined
        return (_cel_string(x) == literal) is equal

    return run


def _compare(left: _Node, op: Callable[[Any, Any], bool], right: _Node, ordering: bool) -> _Node:
    def run(resolve: Resolver, functions: Functions) -> bool:
        x = left(resolve, functions)
        y = right(resolve, functions)
        _comparable(x, y, ordering)
        return op(x, y)

    return run


def _in_literals(item: _Node, literals: frozenset[str]) -> _Node:
    def run(resolve: Resolver, functions: Functions) -> bool:
        x = item(resolve, functions)
        if type(x) is not str:
            raise Declined
        return _cel_string(x) in literals

    return run


def _membership(item: _Node, container: _Node) -> _Node:
    def run(resolve: Resolver, functions: Functions) -> bool:
        x = item(resolve, functions)
        pool = container(resolve, functions)
        if type(x) is not str or type(pool) not in (tuple, list):
            raise Declined
        _cel_string(x)
        for element in pool:
            if type(element) is not str:
                raise Declined
            _cel_string(element)
        return x in pool

    return run


def compile_fast(source: str, functions: frozenset[str] = frozenset()) -> FastCondition | None:
    """A closure answering `source` as CEL does where it can (see the module docstring), or
    None when the text is outside the subset. `functions`: the custom functions it may call
    (passed at run time); calls of anything else stay in CEL."""
    try:
        node, is_bool = _build(_Parser(_tokens(source), functions).parse())
    except (_Unsupported, ValueError, RecursionError):
        return None
    return node if is_bool else _truthful(node)


def equality_guards(source: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """The top-level conjuncts of `source` that pin a name to string literals: ``name == "CH"`` or
    ``name in ["BY", "BW"]`` as (name, literals). When the name holds a string outside the literals,
    the whole condition is false (CEL's ``&&`` is false once any side is false, whatever the others
    hold); `streams.core.dependencies` uses this to skip conditions without running them."""
    return tuple((g[1], g[2]) for g in condition_guards(source) if g[0] == "one_of")


def condition_guards(source: str) -> tuple[tuple[Any, ...], ...]:
    """Necessary conditions read off the top-level conjuncts of `source`:
    ``("one_of", name, literals)`` for ``name == "x"`` / ``name in ["x", "y"]`` (the name must hold
    one of the strings) and ``("at_least", name, bound, strict)`` for ``name >= 3`` / ``name > 3`` /
    ``3 <= name`` (the name must hold a number at or above the bound). When a name holds a value of
    the guard's type that fails it, the whole condition is false: CEL's ``&&`` is false once any
    side is false, whatever the others hold."""
    try:
        tree = _Parser(_tokens(source), frozenset()).parse()
    except (_Unsupported, ValueError, RecursionError):
        return ()
    conjuncts = tree[1] if tree[0] == "and" else [tree]
    out: list[tuple[Any, ...]] = []
    for part in conjuncts:
        if part[0] == "in_literals" and part[1][0] == "name":
            out.append(("one_of", part[1][1], part[2]))
        if part[0] != "cmp":
            continue
        op, left, right = part[1], part[2], part[3]
        if left[0] == "const":
            op, left, right = _SWAPPED[op], right, left
        if left[0] != "name" or right[0] != "const":
            continue
        literal = right[1]
        if op == "==" and type(literal) is str:
            out.append(("one_of", left[1], frozenset({literal})))
        elif op in (">=", ">") and type(literal) in (int, float):
            out.append(("at_least", left[1], literal, op == ">"))
    return tuple(out)


# -- how a condition moves with time ----------------------------------------------------------------

Motion = str
"""How a name's value moves as time passes with no new event: ``"down"`` (a number that only falls:
a windowed count or sum), ``"up"`` (a number that only grows: minutes since something), ``"fades"``
(a bool that only turns false: ``session_active``), ``"shrinks"`` (a list that only loses items:
``viewed_products_30m``), ``"any"`` (moves, in no known direction)."""

ENTER, EXIT = "enter", "exit"
_BOTH = frozenset({ENTER, EXIT})


Bound = tuple[bool, float]
"""(inclusive, k): an atom over a moving number flips when the number falls below k (inclusive: to
k or below) — ``x >= 3`` and ``x < 3`` flip below 3, ``x > 3`` and ``x <= 3`` at 3, ``x == 0`` at 0."""


def time_effects(
    source: str, moving: Mapping[str, Motion]
) -> dict[str, list[tuple[frozenset[str], Bound | None]]] | None:
    """For each name of `moving` that `source` reads, one item per atom reading it: whether its
    moving alone can make the condition turn true (`ENTER`: a visitor outside enters), turn false
    (`EXIT`: a member leaves), or both, and for a falling number compared with a constant, the
    `Bound` at which the atom flips (else None). None when the text is outside the parsed subset
    (treat every moving name as both, at any moment).

    ``&&`` and ``||`` are monotone, so the condition changes in the direction of one of its atoms
    (``!`` flips it). An atom over a moving name only turns false (``purchases_30d >= 3``,
    ``session_active``, ``"P1" in viewed_products_30m``, ``first_seen_days_ago < 7``), only true
    (``purchases_30d == 0``, ``minutes_since_add_to_cart >= 30``), or either (anything else, two
    moving names in one atom). Counts and sums never go below zero: ``x == 0`` only turns true.
    `streams.core.timer_plan` makes a timer only for the visitors it can concern: members of a
    segment for its `EXIT` atoms, the others for its `ENTER` atoms."""
    try:
        tree = _Parser(_tokens(source), frozenset()).parse()
    except (_Unsupported, ValueError, RecursionError):
        return None
    out: dict[str, list[tuple[frozenset[str], Bound | None]]] = {}

    def moving_names(node: _Tree) -> list[str]:
        kind = node[0]
        if kind == "name":
            return [node[1]] if node[1] in moving else []
        if kind in ("and", "or"):
            return [n for part in node[1] for n in moving_names(part)]
        if kind == "not":
            return moving_names(node[1])
        if kind == "cmp":
            return moving_names(node[2]) + moving_names(node[3])
        if kind == "in":
            return moving_names(node[1]) + moving_names(node[2])
        if kind == "in_literals":
            return moving_names(node[1])
        return []

    def walk(node: _Tree, flipped: bool) -> None:
        kind = node[0]
        if kind in ("and", "or"):
            for part in node[1]:
                walk(part, flipped)
            return
        if kind == "not":
            walk(node[1], not flipped)
            return
        names = moving_names(node)
        if not names:
            return
        turns = _atom_turns(node, moving) if len(names) == 1 else None
        if turns is None:
            for name in names:
                out.setdefault(name, []).append((_BOTH, None))
            return
        # The condition turns the way the atom does, the other way under an odd number of `!`.
        effect = frozenset({EXIT if (turns[0] == "false") != flipped else ENTER})
        out.setdefault(names[0], []).append((effect, turns[1]))

    walk(tree, False)
    return out


_FALLS = {">=": True, ">": True, "<": False, "<=": False}
"""Comparison with a value on the right → whether it turns false as the left side falls."""
_INCLUSIVE = {">=": False, "<": False, ">": True, "<=": True}
"""Comparison → whether it flips when the left side falls *to* the right (``x > 3`` at 3)."""


def _atom_turns(node: _Tree, moving: Mapping[str, Motion]) -> tuple[str, Bound | None] | None:
    """(``"false"`` or ``"true"``: the only way the atom, reading exactly one moving name, can turn
    as time passes; its `Bound` when it compares a falling number with a constant), or None:
    either way, or not known."""
    kind = node[0]
    if kind == "name":
        return ("false", None) if moving[node[1]] == "fades" else None
    if kind == "in":
        container = node[2]
        if container[0] == "name" and moving.get(container[1]) == "shrinks":
            return ("false", None)
        return None
    if kind != "cmp":
        return None
    op, left, right = node[1], node[2], node[3]
    if not (left[0] == "name" and left[1] in moving):
        op, left, right = _SWAPPED[op], right, left
    if left[0] != "name" or right[0] not in ("const", "name"):
        return None
    motion = moving[left[1]]
    if motion == "fades" and right[0] == "const" and type(right[1]) is bool and op in ("==", "!="):
        return ("false", None) if right[1] == (op == "==") else ("true", None)
    if motion not in ("down", "up"):
        return None
    number = right[0] == "const" and type(right[1]) in (int, float)
    bound: Bound | None = None
    if op in _FALLS:  # `x >= k` turns false as x falls, true as x grows
        if motion == "down" and number:
            bound = (_INCLUSIVE[op], float(right[1]))
        return ("false" if _FALLS[op] == (motion == "down") else "true", bound)
    if motion == "down" and op in ("==", "!=") and number and _is_zero(right[1]):
        return ("true" if op == "==" else "false", (True, 0.0))
    return None


def _is_zero(value: Any) -> bool:
    return type(value) in (int, float) and value == 0
