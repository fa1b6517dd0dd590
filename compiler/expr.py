"""Safe expressions for `$p` and `${...}`: a whitelist walk over Python's `ast`, never `eval`.

Allowed: numbers, booleans, quoted strings, list literals, param names (and `i`, the repeat
index), `+ - * / // % **`, unary `+ - not`, comparisons (`== != < <= > >=`, chained),
`and`/`or`, `a if c else b`, indexing a list (`layers[1]`, `layers[-1]`) and the calls
`min max abs round floor ceil sqrt int float len`, a mapping indexed by a key (`scales[scale]`), the
spec's own `functions:` (see `Function`) and, in a node's values, `shape(x)` (an input's static sizes).
Attributes, slices, lambdas, comprehensions and every other construct are errors. Results are
bounded so `10**10**10` cannot hang the compiler, and so is the work: at most `MAX_STEPS` steps per
expression, functions included.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from collections import ChainMap
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import Collector, Loc, SpecError, did_you_mean
from .source import Node
from .types import is_number

MAX_EXPR_LEN = 500
MAX_MAGNITUDE = 2**63
MAX_LIST = 10_000
MAX_STEPS = 100_000  # AST nodes walked per expression, through every function it calls
MAX_FUNCTIONS = 100
SHAPE_READER = "^shape"  # the scope key of `shape()`'s reader: not a name an expression can write

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FUNCS = {
    "min": min, "max": max, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
    "sqrt": math.sqrt, "int": int, "float": float, "len": len,
}
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_TEMPLATE = re.compile(r"\$\{([^{}]*)\}")
_ALLOWED = "numbers, params, + - * / // % **, comparisons, and/or/not, a if c else b, list[i], mapping['key'], " \
           "min max abs round floor ceil sqrt int float len, shape(x) and the spec's functions"
_SIGNATURE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(\s*((?:[A-Za-z_][A-Za-z0-9_]*\s*(?:,\s*)?)*)\)")


class Symbolic(str):
    """A size that `shape()` cannot give as a number (`height/8`): any use of it is an error."""


@dataclass(frozen=True, eq=False)
class Function:
    """`functions: {"ch(c)": "${make_divisible(min(c, max_channels) * width, 8)}"}`.

    Its body reads its arguments, the spec's params and the functions defined above it: a function
    can never reach itself, so there is no recursion, and `MAX_STEPS` bounds the work of any call.
    """

    name: str
    args: tuple[str, ...]
    body: ast.Expression
    loc: Loc
    scope: Mapping[str, Any]  # the spec's params (filled in as they are evaluated) and earlier functions

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(self.args)})"


_NAMES = {"ListComp": "list comprehension", "DictComp": "dict comprehension", "SetComp": "set comprehension",
          "GeneratorExp": "generator", "Lambda": "lambda", "Attribute": "attribute", "Dict": "dict", "Set": "set",
          "Tuple": "tuple", "Starred": "starred", "NamedExpr": "walrus"}


class ExprError(Exception):
    """Raised inside the walk; turned into a located `SpecError` by `eval_expr`."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


def _check(x: Any) -> Any:
    if is_number(x) and (abs(x) >= MAX_MAGNITUDE or (isinstance(x, float) and math.isnan(x))):
        raise ExprError("expression result is out of range", "keep values within ±2**63")
    if isinstance(x, Function):
        raise ExprError(f"'{x.name}' is a function", f"call it: {x!r}")
    if isinstance(x, (list, str)) and len(x) > MAX_LIST:
        raise ExprError("expression result is too long", f"keep lists and strings under {MAX_LIST} items")
    return x


def _kind(x: Any) -> str:
    if isinstance(x, Symbolic):
        return f"the symbolic size '{x}'"
    return "a boolean" if isinstance(x, bool) else "a number" if is_number(x) else "a string" if isinstance(x, str) \
        else "a list" if isinstance(x, list) else "null" if x is None else type(x).__name__


def _symbolic(x: Any) -> ExprError:
    return ExprError(f"size '{x}' is symbolic: shape() gives static sizes only",
                     "read a size the spec fixes (such as the channels), or pass the value as a param")


class _Walker:
    def __init__(self, scope: Mapping[str, Any], steps: list[int] | None = None):
        self.scope = scope
        self.steps = steps if steps is not None else [0]  # shared with the functions it calls

    def walk(self, node: ast.AST) -> Any:
        self.steps[0] += 1
        if self.steps[0] > MAX_STEPS:
            raise ExprError(f"expression takes more than {MAX_STEPS:,} steps to evaluate",
                            "functions may call earlier functions, but not this often: simplify them")
        method = getattr(self, type(node).__name__.lower(), None)
        if method is None:
            what = _NAMES.get(type(node).__name__, type(node).__name__.lower())
            raise ExprError(f"'{what}' is not allowed in expressions", f"use {_ALLOWED}")
        return method(node)

    def expression(self, node: ast.Expression) -> Any:
        return self.walk(node.body)

    def constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, (bool, int, float, str)) and not isinstance(node.value, complex):
            return _check(node.value)
        raise ExprError(f"constant {node.value!r} is not allowed in expressions", f"use {_ALLOWED}")

    def name(self, node: ast.Name) -> Any:
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        if node.id not in self.scope:
            hint = "i is the repeat index: it exists in the values of a node with repeat:" if node.id == "i" else \
                did_you_mean(node.id, param_names(self.scope), "param") or \
                "params are declared under params: (or a block's params:)"
            raise ExprError(f"unknown param '{node.id}' in expression", hint)
        return _check(self.scope[node.id])

    def list(self, node: ast.List) -> Any:
        return _check([self.walk(e) for e in node.elts])

    def unaryop(self, node: ast.UnaryOp) -> Any:
        v = self.walk(node.operand)
        if isinstance(node.op, ast.Not):
            return not v
        if not is_number(v):
            raise ExprError(f"cannot negate {_kind(v)}", "unary + and - take numbers")
        return -v if isinstance(node.op, ast.USub) else +v

    def binop(self, node: ast.BinOp) -> Any:
        if type(node.op) not in _BINOPS:
            raise ExprError(f"operator '{type(node.op).__name__}' is not allowed in expressions", f"use {_ALLOWED}")
        a, b = self.walk(node.left), self.walk(node.right)
        for v in (a, b):
            if isinstance(v, Symbolic):
                raise _symbolic(v)
        numbers = (is_number(a) or isinstance(a, bool)) and (is_number(b) or isinstance(b, bool))
        lists = isinstance(node.op, ast.Add) and isinstance(a, list) and isinstance(b, list)
        if not numbers and not lists:
            bad = a if not (is_number(a) or isinstance(a, bool)) else b
            raise ExprError(f"{_kind(bad)} is not a number in arithmetic", "only numbers take + - * / // % **")
        if isinstance(node.op, ast.Pow) and (abs(b) > 256 or (abs(a) > 1 and abs(b) * math.log2(abs(a)) > 64)):
            raise ExprError("expression result is out of range", "keep values within ±2**63")
        try:
            return _check(_BINOPS[type(node.op)](a, b))
        except ZeroDivisionError:
            raise ExprError("division by zero in expression", "check the divisor") from None
        except (OverflowError, ValueError, TypeError) as e:
            raise ExprError(f"cannot compute expression: {e}", f"the operands are {_kind(a)} and {_kind(b)}") from None

    def compare(self, node: ast.Compare) -> Any:
        left = self.walk(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                raise ExprError(f"'{type(op).__name__.lower()}' is not allowed in expressions", f"use {_ALLOWED}")
            right = self.walk(right_node)
            for v in (left, right):
                if isinstance(v, Symbolic):
                    raise _symbolic(v)
            try:
                ok = _COMPARE[type(op)](left, right)
            except TypeError:
                raise ExprError(f"cannot compare {_kind(left)} with {_kind(right)}",
                                "compare numbers with numbers and strings with strings ('wide' in quotes)") from None
            if not ok:
                return False
            left = right
        return True

    def boolop(self, node: ast.BoolOp) -> Any:
        value: Any = None
        for v in node.values:
            value = self.walk(v)
            if isinstance(node.op, ast.And) and not value or isinstance(node.op, ast.Or) and value:
                return value
        return value

    def ifexp(self, node: ast.IfExp) -> Any:
        return self.walk(node.body) if self.walk(node.test) else self.walk(node.orelse)

    def subscript(self, node: ast.Subscript) -> Any:
        seq = self.walk(node.value)
        if isinstance(node.slice, ast.Slice):
            raise ExprError("slices are not allowed in expressions", "index one element: layers[1]")
        index = self.walk(node.slice)
        if isinstance(seq, dict):
            if not isinstance(index, str) or index not in seq:
                raise ExprError(f"{_kind(index)} {index!r} is not a key of the mapping",
                                did_you_mean(str(index), seq, "key") or f"its keys: {', '.join(map(str, seq))}")
            return seq[index]
        if not isinstance(seq, list):
            raise ExprError(f"cannot index {_kind(seq)}", "only lists and mappings can be indexed: ${layers[1]}")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ExprError(f"a list index must be an integer, not {_kind(index)}", "write ${layers[1]}")
        if not -len(seq) <= index < len(seq):
            raise ExprError(f"index {index} is out of range for a list of {len(seq)}",
                            f"use 0 … {len(seq) - 1}" if seq else "the list is empty")
        return seq[index]

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.keywords:
            shown = ast.unparse(node.func)[:40]
            raise ExprError(f"calling '{shown}' is not allowed in expressions", f"use {_ALLOWED}")
        name = node.func.id
        if name == "shape":
            return self.shape(node)
        own = self.scope.get(name) if name not in _FUNCS else None
        if isinstance(own, Function):
            return self.user(own, [self.walk(a) for a in node.args])
        if name not in _FUNCS:
            known = list(_FUNCS) + [k for k, v in self.scope.items() if isinstance(v, Function)]
            raise ExprError(f"unknown function '{name}' in expression", did_you_mean(name, known, "function")
                            or "a function of functions: calls only the functions defined above it")
        args = [self.walk(a) for a in node.args]
        try:
            return _check(_FUNCS[name](*args))
        except (TypeError, ValueError, OverflowError) as e:
            given = ", ".join(_kind(a) for a in args) or "no arguments"
            raise ExprError(f"cannot compute {name}(): {e}", f"{name}() was given {given}") from None


    def user(self, fn: Function, args: list) -> Any:
        if len(args) != len(fn.args):
            raise ExprError(f"{fn.name}() takes {len(fn.args)} argument{'s' if len(fn.args) != 1 else ''}, got "
                            f"{len(args)}", f"call it as {fn!r} (defined at {fn.loc})")
        try:
            return _Walker(ChainMap(dict(zip(fn.args, args)), fn.scope), self.steps).walk(fn.body)
        except ExprError as e:
            if e.message.startswith("expression takes more than"):
                raise
            raise ExprError(f"in {fn.name}(): {e.message}", e.hint) from None

    def shape(self, node: ast.Call) -> Any:
        """`shape(x)`: the sizes of `x` (an input or an earlier node), read from shape inference."""
        if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Name):
            raise ExprError("shape() takes one name: the input or node whose sizes it reads", "write shape(x)[1]")
        reader = self.scope.get(SHAPE_READER)
        if reader is None:
            raise ExprError("shape() reads the sizes of a node's inputs; it works in node and block values, not here",
                            "move the expression into the block that receives the tensor")
        return reader(node.args[0].id)


def param_names(scope: Mapping[str, Any]) -> list[str]:
    """The names in a scope that are params (not functions, not the shape reader)."""
    return [k for k, v in scope.items() if not k.startswith("^") and not isinstance(v, Function)]


def calls(fn: Function) -> list[str]:
    """The names a function's body calls."""
    return [n.func.id for n in ast.walk(fn.body) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]


def define(signature: str, body: Node, loc: Loc, scope: Mapping[str, Any]) -> Function:
    """A `functions:` entry: `"name(a, b)": "${expression}"`."""
    m = _SIGNATURE.fullmatch(signature.strip())
    if m is None:
        raise SpecError.at(loc, f"invalid function signature {signature!r}", "write name(arg, ...): \"${expression}\"")
    args = tuple(a.strip() for a in m.group(2).split(",") if a.strip())
    if len(set(args)) != len(args):
        raise SpecError.at(loc, f"function '{m.group(1)}' names an argument twice", "give each argument its own name")
    text = body.value if isinstance(body.value, str) else None
    inner = _TEMPLATE.fullmatch(text) if text is not None else None
    if inner is None or len(inner.group(1)) > MAX_EXPR_LEN:
        raise SpecError.at(body.loc, f"the body of function '{m.group(1)}' must be one expression ${{...}}",
                           f"\"{signature}\": \"${{{' + '.join(args) or '1'}}}\"")
    try:
        tree = ast.parse(inner.group(1).strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise SpecError.at(body.loc, f"invalid expression '{text}'", "write arithmetic such as ${dim * 4}") from None
    return Function(m.group(1), args, tree, loc, scope)


def eval_expr(text: str, scope: Mapping[str, Any], loc: Loc) -> Any:
    """Evaluate the inside of `${...}`."""
    if len(text) > MAX_EXPR_LEN:
        raise SpecError.at(loc, f"expression is longer than {MAX_EXPR_LEN} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise SpecError.at(loc, f"invalid expression '${{{text}}}'", "write arithmetic such as ${dim * 4}") from None
    try:
        value = _Walker(scope).walk(tree)
        if isinstance(value, Symbolic) or isinstance(value, list) and any(isinstance(v, Symbolic) for v in value):
            raise _symbolic(next(v for v in ([value] if isinstance(value, Symbolic) else value)
                                 if isinstance(v, Symbolic)))
        return value
    except ExprError as e:
        raise SpecError.at(loc, e.message, e.hint) from None
    except RecursionError:
        raise SpecError.at(loc, "expression nests too deeply") from None


def is_expr(value: Any) -> bool:
    return isinstance(value, str) and "$" in value


def eval_string(text: str, scope: Mapping[str, Any], loc: Loc) -> Any:
    """`$p` alone is the param with its type; `${...}` alone is its value; text around makes a string."""
    whole = _PARAM.fullmatch(text)
    if whole:
        name = whole.group(1)
        if name not in scope:
            hint = "i is the repeat index: it exists in the values of a node with repeat:" if name == "i" else \
                did_you_mean(name, param_names(scope), "param") or \
                "params are declared under params: (or a block's params:)"
            raise SpecError.at(loc, f"unknown param '{name}'", hint)
        try:
            return _check(scope[name])
        except ExprError as e:
            raise SpecError.at(loc, e.message, e.hint) from None
    whole = _TEMPLATE.fullmatch(text)
    if whole:
        return eval_expr(whole.group(1), scope, loc)
    parts, pos = [], 0
    for m in _TEMPLATE.finditer(text):
        parts.append(text[pos:m.start()])
        parts.append(_fmt(eval_expr(m.group(1), scope, loc)))
        pos = m.end()
    rest = text[pos:]
    if "$" in rest:
        m = _PARAM.search(rest)
        hint = f"write ${{{m.group(1)}}} inside text" if m else "write $name or ${expression}"
        raise SpecError.at(loc, f"cannot read '{text}': '$' must start $name (a whole value) or ${{...}}", hint)
    return "".join(parts) + rest


def _fmt(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


# --- located values -------------------------------------------------------------------------

FAILED = object()  # what `try_evaluate` returns when the value's error went to the collector


def evaluate(node: Node, scope: Mapping[str, Any]) -> Any:
    """A located value with `$p` / `${...}` evaluated in `scope`, recursively."""
    if node.is_map:
        return {k: evaluate(v, scope) for k, v in node.value.items()}
    if node.is_seq:
        return [evaluate(v, scope) for v in node.value]
    if isinstance(node.value, str) and "$" in node.value:
        return eval_string(node.value, scope, node.loc)
    return node.value


def try_evaluate(node: Node, scope: Mapping[str, Any], c: Collector) -> Any:
    """`evaluate`, with its error recorded in `c`; returns `FAILED` when it failed."""
    try:
        return evaluate(node, scope)
    except SpecError as e:
        c.extend(e)
        return FAILED
