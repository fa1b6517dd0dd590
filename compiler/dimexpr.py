"""Run-time sizes: a size argument may be an int, a symbolic dim (`time`) or an expression of
symbolic dims (`time - 1`, `2 * (height // 8)`), written as plain text.

Params enter with `${...}` before this stage (`time - ${pad}` is `time - 2` once resolved), so
what is left here is dims, integers, `+ - * //`, unary minus and parentheses. The text is parsed
with a whitelist walk over Python's `ast` (never `eval`) into a small tree that each backend
evaluates with its own leaves and arithmetic: ints on meta samples, fx nodes, or source text.
Torch-free.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Union

MAX_LEN = 200
OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//"}


class DimExprError(ValueError):
    """A size text that is not a dim expression; its message says what is wrong."""


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * //
    left: "Tree"
    right: "Tree"


Tree = Union[int, str, BinOp]  # an int, a dim name, or an operation


@lru_cache(maxsize=512)
def parse(text: str) -> Tree:
    """`'time - 1'` -> BinOp('-', 'time', 1); raises DimExprError."""
    if len(text) > MAX_LEN:
        raise DimExprError(f"size expression is longer than {MAX_LEN} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise DimExprError(f"invalid size expression {text!r}") from None
    return _walk(tree, text)


def _walk(node: ast.AST, text: str) -> Tree:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _walk(node.operand, text)
        return -inner if isinstance(inner, int) else BinOp("-", 0, inner)
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        return BinOp(OPS[type(node.op)], _walk(node.left, text), _walk(node.right, text))
    raise DimExprError(f"invalid size expression {text!r}: only dim names, integers, + - * // and parentheses")


def names(tree: Tree) -> list[str]:
    """The dim names an expression reads, in order."""
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, BinOp):
        return list(dict.fromkeys(names(tree.left) + names(tree.right)))
    return []


def symbols_in(value: Any) -> list[str]:
    """Every dim name in an argument value (a size text, or a list holding some); bad text reads none."""
    if isinstance(value, list):
        return [s for v in value for s in symbols_in(v)]
    if isinstance(value, str):
        try:
            return names(parse(value))
        except DimExprError:
            return []
    return []


def evaluate(tree: Tree, leaf: Callable[[str], Any], arith: Callable[[str, Any, Any], Any]) -> Any:
    """The tree's value: dim names through `leaf`, operations through `arith(op, a, b)`."""
    if isinstance(tree, int):
        return tree
    if isinstance(tree, str):
        return leaf(tree)
    return arith(tree.op, evaluate(tree.left, leaf, arith), evaluate(tree.right, leaf, arith))


def compute(op: str, a: int, b: int) -> int:
    """Integer arithmetic as the run time does it (`//` floors, as torch's sizes do)."""
    if op == "//" and b == 0:
        raise DimExprError("division by zero in a size expression")
    return {"+": a + b, "-": a - b, "*": a * b}[op] if op != "//" else a // b
