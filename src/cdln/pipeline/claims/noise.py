"""How far a timing row's verdict can be trusted: its measure's spread over seeds."""

from __future__ import annotations

import ast
import math

from cdln.pipeline.claims.measures import BUILTINS, FUNCTIONS, Tables, _log10, _table
from cdln.pipeline.claims.spec import Claim, _parse, _value

Interval = tuple[float, float]
OVER_FUNCTIONS = ("first", "final", "runs", "paired", "finding", "by_seed", "robust", "robust_ratio")


def spread(claim: Claim, tables: Tables) -> Interval:
    """The range of ``claim``'s measure over seeds, by interval arithmetic: a function that combines seeds
    (``over``) gives [its min over seeds, its max over seeds], ``table`` its ``_min``/``_max`` columns where
    the table has them (the spread of a mean over seeds), anything else its value."""
    saved = tables.devices, tables.aggregations
    try:
        return _interval(_parse(claim).body, tables, claim)
    finally:
        tables.devices, tables.aggregations = saved


def _interval(node: ast.AST, tables: Tables, claim: Claim) -> Interval:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        name, args = node.func.id, [_value(arg, tables, claim) for arg in node.args]
        kwargs = {kw.arg: _value(kw.value, tables, claim) for kw in node.keywords}
        if name in OVER_FUNCTIONS:
            low, high = (float(FUNCTIONS[name](tables, *args, **(kwargs | {"over": o}))) for o in ("min", "max"))
            return low, high
        if name == "table" and f"{args[2]}_min" in tables.csv(f"{args[0]}.csv"):
            return _table(tables, args[0], args[1], f"{args[2]}_min"), _table(
                tables, args[0], args[1], f"{args[2]}_max"
            )
        value = float(_value(node, tables, claim))
        return value, value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BUILTINS:
        parts = [_interval(arg, tables, claim) for arg in node.args]
        if node.func.id == "abs":
            ((low, high),) = parts
            return (low, high) if low >= 0 else (-high, -low) if high <= 0 else (0.0, max(-low, high))
        if node.func.id == "log10":
            ((low, high),) = parts
            return _log10(low), _log10(high)
        pick = min if node.func.id == "min" else max
        return pick(p[0] for p in parts), pick(p[1] for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        low, high = _interval(node.operand, tables, claim)
        return -high, -low
    if isinstance(node, ast.BinOp):
        (a, b), (c, d) = _interval(node.left, tables, claim), _interval(node.right, tables, claim)
        if isinstance(node.op, ast.Div):
            if c <= 0 <= d:
                return math.nan, math.nan
            c, d = 1 / d, 1 / c
        if isinstance(node.op, (ast.Mult, ast.Div)):
            products = [a * c, a * d, b * c, b * d]
            return min(products), max(products)
        return (a + c, b + d) if isinstance(node.op, ast.Add) else (a - d, b - c)
    value = float(_value(node, tables, claim))
    return value, value
