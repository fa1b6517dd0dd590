"""Safe arithmetic for `$p` and `${...}`: a whitelist walk over Python's `ast`, never `eval`.

Allowed: numbers, param names, `+ - * / // % **`, unary `+ -`, parentheses and the calls
`min max abs round floor ceil sqrt int`. Attributes, subscripts, strings, comparisons and every
other construct are errors. Results are bounded so `10**10**10` cannot hang the compiler.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any, Mapping

from .errors import Loc, SpecError, did_you_mean

MAX_EXPR_LEN = 500
MAX_MAGNITUDE = 2**63

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_FUNCS = {
    "min": min, "max": max, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
    "sqrt": math.sqrt, "int": int,
}
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_TEMPLATE = re.compile(r"\$\{([^{}]*)\}")


class ExprError(Exception):
    """Raised inside the walk; turned into a located `SpecError` by `evaluate`."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check(x: Any) -> Any:
    if _number(x) and (abs(x) >= MAX_MAGNITUDE or (isinstance(x, float) and math.isnan(x))):
        raise ExprError("expression result is out of range", "keep values within ±2**63")
    return x


def _walk(node: ast.AST, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _walk(node.body, scope)
    if isinstance(node, ast.Constant) and _number(node.value):
        return _check(node.value)
    if isinstance(node, ast.Name):
        if node.id not in scope:
            raise ExprError(f"unknown param '{node.id}' in expression", did_you_mean(node.id, scope, "param"))
        value = scope[node.id]
        if not _number(value):
            raise ExprError(f"param '{node.id}' is {type(value).__name__}, not a number",
                            "only numeric params can be used in ${...}")
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _walk(node.operand, scope)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _walk(node.left, scope), _walk(node.right, scope)
        if isinstance(node.op, ast.Pow) and (abs(b) > 256 or (abs(a) > 1 and abs(b) * math.log2(abs(a)) > 64)):
            raise ExprError("expression result is out of range", "keep values within ±2**63")
        try:
            return _check(_BINOPS[type(node.op)](a, b))
        except ZeroDivisionError:
            raise ExprError("division by zero in expression", "check the divisor") from None
        except (OverflowError, ValueError, TypeError) as e:
            raise ExprError(f"cannot compute expression: {e}") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name = node.func.id
        if name not in _FUNCS:
            raise ExprError(f"unknown function '{name}' in expression", did_you_mean(name, _FUNCS, "function"))
        args = [_walk(a, scope) for a in node.args]
        try:
            return _check(_FUNCS[name](*args))
        except (TypeError, ValueError, OverflowError) as e:
            raise ExprError(f"cannot compute {name}(): {e}") from None
    what = type(node).__name__.lower()
    raise ExprError(f"'{what}' is not allowed in expressions",
                    "use numbers, params, + - * / // % ** and min max abs round floor ceil sqrt int")


def eval_expr(text: str, scope: Mapping[str, Any], loc: Loc) -> Any:
    """Evaluate the inside of `${...}`."""
    if len(text) > MAX_EXPR_LEN:
        raise SpecError.at(loc, f"expression is longer than {MAX_EXPR_LEN} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise SpecError.at(loc, f"invalid expression '${{{text}}}'", "write arithmetic such as ${dim * 4}") from None
    try:
        return _walk(tree, scope)
    except ExprError as e:
        raise SpecError.at(loc, e.message, e.hint) from None
    except RecursionError:
        raise SpecError.at(loc, "expression nests too deeply") from None


def is_expr(value: Any) -> bool:
    return isinstance(value, str) and "$" in value


def eval_string(text: str, scope: Mapping[str, Any], loc: Loc) -> Any:
    """`$p` alone is the param with its type; `${...}` alone is a number; text around makes a string."""
    whole = _PARAM.fullmatch(text)
    if whole:
        name = whole.group(1)
        if name not in scope:
            raise SpecError.at(loc, f"unknown param '{name}'", did_you_mean(name, scope, "param"))
        return scope[name]
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
