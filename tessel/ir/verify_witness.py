"""The verifier's reasoning about indices: ranges narrowed by the conditions that guard an access
(`tighten`) and a concrete point of the iteration space where an index leaves its buffer
(`witness`), which the out-of-bounds message then shows.

Example:
    >>> from tessel.ir.nodes import Const, Var
    >>> i = Var("i")
    >>> tighten(i < Const(10), True, {i: (0, 15)})[i]
    (0, 9)
"""

from __future__ import annotations

import itertools
import random

from tessel.ir.bounds import interval
from tessel.ir.dtypes import is_bool, is_float, is_int
from tessel.ir.nodes import Binary, Cast, Const, Expr, For, LetStmt, Not, Select, Var, walk

_MAX_WITNESS_TRIES = 4096  # assignments tried when looking for an out-of-bounds witness


class _NoValue(Exception):
    """The concrete evaluator met something it cannot evaluate (a load, a float, a free var)."""


_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq"}
_NEGATE = {"lt": "ge", "le": "gt", "gt": "le", "ge": "lt"}


def tighten(cond: Expr, holds: bool, ranges: dict) -> dict:
    """Ranges narrowed by a condition of the form `x <op> const` (or a conjunction of such, when
    it holds; the negation of one such comparison when it does not). When x is an expression, not
    a variable, its range is kept under the expression itself: an index equal to it (a split's
    `io*4 + ii` guarded by `io*4 + ii < 10`) then needs no witness search."""
    if holds and isinstance(cond, Binary) and cond.op == "and":
        return tighten(cond.b, True, tighten(cond.a, True, ranges))
    if isinstance(cond, Not):
        return tighten(cond.a, not holds, ranges)
    if not isinstance(cond, Binary) or cond.op not in _FLIP:
        return ranges
    var, c, op = cond.a, cond.b, cond.op
    if isinstance(var, Const) and not isinstance(c, Const):
        var, c, op = c, var, _FLIP[op]
    if not (isinstance(c, Const) and is_int(c.dtype) and is_int(var.dtype)):
        return ranges
    if not holds:
        if op == "eq":
            return ranges
        op = _NEGATE[op]
    current = ranges.get(var) or (None if isinstance(var, Var) else interval(var, ranges))
    if current is None:
        return ranges
    lo, hi = current
    v = c.value
    lo, hi = {"lt": (lo, min(hi, v - 1)), "le": (lo, min(hi, v)), "gt": (max(lo, v + 1), hi),
              "ge": (max(lo, v), hi), "eq": (max(lo, v), min(hi, v))}[op]
    if lo > hi:  # the branch never runs; keep the old ranges rather than an empty one
        return ranges
    return {**ranges, var: (lo, hi)}


def witness(idx: Expr, extent: int, scope):
    """A point of the enclosing iteration space (as {var name: value}) where `idx` is outside
    [0, extent), and the index there; None if none was found."""
    loops = [b for b in scope.binders if isinstance(b, For) and b.var in scope.ranges]
    rng = random.Random(0)  # deterministic: the same kernel always gives the same message
    corners = [(scope.ranges[f.var][0], scope.ranges[f.var][1]) for f in loops]
    if 2 ** len(loops) <= _MAX_WITNESS_TRIES // 2:
        points = list(itertools.product(*corners))
    else:
        points = [tuple(rng.choice(c) for c in corners) for _ in range(_MAX_WITNESS_TRIES // 2)]
    points += [tuple(rng.randint(lo, hi) for lo, hi in corners) for _ in range(256)]
    for point in points:
        env = dict(zip((f.var for f in loops), point))
        try:
            if not _feasible(env, scope):
                continue
            value = _eval(idx, env)
        except _NoValue:
            continue
        if value < 0 or value >= extent:
            return {v.name: x for v, x in env.items() if v.name in _relevant(idx, scope)}, value
    return None


def _relevant(idx: Expr, scope) -> set[str]:
    """Names of the variables `idx` depends on, directly or through let values."""
    names = {n.name for n in walk(idx) if isinstance(n, Var)}
    for b in reversed(scope.binders):
        if isinstance(b, LetStmt) and b.var.name in names:
            names |= {n.name for n in walk(b.value) if isinstance(n, Var)}
    return names


def _feasible(env: dict, scope) -> bool:
    """Whether an assignment of the loop variables is a point the code really reaches: every loop
    value below its extent and every enclosing condition true (let values are computed)."""
    for b in scope.binders:
        if isinstance(b, LetStmt):
            env[b.var] = _eval(b.value, env)
        elif b.var not in env:  # a loop of unknown range: its trip count is unknown too
            raise _NoValue
        elif not 0 <= env[b.var] < _eval(b.extent, env):
            return False
    return all(_eval(g, env) for g in scope.guards)


def _eval(e: Expr, env: dict):
    """The value of an integer/bool expression at `env`, with Python (unbounded) integers."""
    if isinstance(e, Const):
        if is_float(e.dtype):
            raise _NoValue
        return e.value
    if isinstance(e, Var):
        if e not in env:
            raise _NoValue
        return env[e]
    if isinstance(e, Binary):
        a = _eval(e.a, env)
        if e.op == "and" and not a:
            return False
        if e.op == "or" and a:
            return True
        b = _eval(e.b, env)
        if e.op in ("floordiv", "floormod", "div") and b == 0:
            raise _NoValue
        return _OPS[e.op](a, b)
    if isinstance(e, Not):
        return not _eval(e.a, env)
    if isinstance(e, Select):
        return _eval(e.t, env) if _eval(e.cond, env) else _eval(e.f, env)
    if isinstance(e, Cast) and (is_int(e.dtype) or is_bool(e.dtype)):
        v = _eval(e.value, env)
        return bool(v) if is_bool(e.dtype) else int(v)
    raise _NoValue


_OPS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "floordiv": lambda a, b: a // b, "floormod": lambda a, b: a % b, "min": min, "max": max,
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "and": lambda a, b: bool(b), "or": lambda a, b: bool(b),
    "div": lambda a, b: _no_value(),
}


def _no_value():
    raise _NoValue


def evaluate(e: Expr, env: dict):
    """The value of an integer / bool expression at `env` ({Var: int}), or None where it has
    none (a load, a float, a free variable, a division by zero).

    >>> from tessel.ir.nodes import Var
    >>> evaluate(Var("i") // 2, {Var("i"): 7})
    3
    """
    try:
        return _eval(e, dict(env))
    except _NoValue:
        return None


__all__ = ["evaluate", "tighten", "witness"]
