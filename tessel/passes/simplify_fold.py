"""Constant folding for the simplifier (`tessel.passes.simplify`): every operator, cast and exact math
call of constants, with the interpreter's meaning. Integers wrap at their width (two's complement for
signed types, modulo 2**bits for unsigned ones), floordiv/floormod round toward minus infinity, floats
are rounded once, correctly, to their dtype (computed in float64, which is exact or innocuous for
+ - * / sqrt on float16/bfloat16/float32 inputs, then rounded by `round_float`); nothing that
depends on a library's accuracy (exp, tanh, ...) or on NaN conventions (float min/max) folds.

Example:
    >>> fold_binary("add", Const(250, "uint8"), Const(10, "uint8"))
    Const(value=4, dtype='uint8')
"""

from __future__ import annotations

import math

from tessel.ir.dtypes import bits, int_range, is_bool, is_float, is_int, wrap
from tessel.ir.nodes import COMPARE_OPS, Const

def _coef(v: int, dtype: str) -> int:
    """`v` as the residue modulo 2**bits of an integer dtype nearest zero (two's complement), for
    the coefficients and constants of linear forms: `x - 1` keeps -1 on uint8 too (not 255), so
    the forms of unsigned expressions stay small and their intervals mean something."""
    b = bits(dtype)
    return ((v + (1 << (b - 1))) & ((1 << b) - 1)) - (1 << (b - 1))


# float dtype -> (significand bits, exponent of the smallest normal, largest finite value)
_FLOAT_FORMAT = {
    "float16": (11, -14, 65504.0),
    "bfloat16": (8, -126, 3.3895313892515355e38),
    "float32": (24, -126, 3.4028234663852886e38),
}


def round_float(v: float, dtype: str) -> float:
    """`v` rounded to the nearest value of a float dtype (ties to even), as one IEEE rounding.

    Written out because ml_dtypes rounds float64 -> bfloat16 through float32 (twice).

    >>> round_float(1 + 2**-8 + 2**-40, "bfloat16") == 1 + 2**-7
    True
    """
    if dtype == "float64" or v == 0 or not math.isfinite(v):
        return v
    p, emin, fmax = _FLOAT_FORMAT[dtype]
    exp = max(math.frexp(v)[1] - 1, emin)  # exponent of the leading bit, clamped for subnormals
    ulp = math.ldexp(1.0, exp - p + 1)
    r = round(v / ulp) * ulp  # v / ulp is exact (a power of two); round() ties to even
    if abs(r) > fmax:
        return math.copysign(math.inf, v)
    return math.copysign(r, v) if r == 0 else r


def _fvalue(c: Const) -> float:
    """The value a float constant has in its dtype (Const keeps the Python float it was given)."""
    return round_float(float(c.value), c.dtype)


def _fdiv(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


_INT_FOLD = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "floordiv": lambda a, b: a // b if b else None, "floormod": lambda a, b: a % b if b else None,
    "min": min, "max": max,
}
_FLOAT_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": _fdiv}
_COMPARE = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
}
_NEGATED = {"eq": "ne", "ne": "eq", "lt": "ge", "le": "gt", "gt": "le", "ge": "lt"}

# Casts a -> b -> a that give back every value of a: b holds all of a's values exactly.
_HOLDS = {
    "int8": {"int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"},
    "uint8": {"int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "bfloat16", "float32", "float64"},
    "int16": {"int32", "int64", "float32", "float64"},
    "uint16": {"int32", "uint32", "int64", "uint64", "float32", "float64"},
    "int32": {"int64", "float64"},
    "uint32": {"int64", "uint64", "float64"},
    "float16": {"float32", "float64"},
    "bfloat16": {"float32", "float64"},
    "float32": {"float64"},
    "bool": {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"},
}


def fold_cast(dtype: str, c: Const) -> Const | None:
    """`c` converted to `dtype` as the interpreter converts it, or None where that is not
    well defined (NaN/inf/out-of-range float to int) or not exactly computable here."""
    v, src = c.value, c.dtype
    if is_bool(dtype):
        return Const(bool(_fvalue(c) if is_float(src) else v), dtype)
    if is_int(dtype):
        if is_float(src):
            f = _fvalue(c)
            if not math.isfinite(f):
                return None
            lo, hi = int_range(dtype)
            t = int(f)  # truncation toward zero, as C
            return Const(t, dtype) if lo <= t <= hi else None
        return Const(wrap(int(v), dtype), dtype)
    if is_float(src):
        return Const(round_float(_fvalue(c), dtype), dtype)
    if abs(int(v)) > 2**53:  # float(v) would round once already: no double rounding
        return None
    return Const(round_float(float(int(v)), dtype), dtype)


def fold_binary(op: str, a: Const, b: Const) -> Const | None:
    """`a op b` for two constants of one dtype, or None when it must not fold."""
    dt = a.dtype
    if b.dtype != dt:  # ill-typed (the verifier says so): leave it
        return None
    if op in COMPARE_OPS:
        x, y = (_fvalue(a), _fvalue(b)) if is_float(dt) else (a.value, b.value)
        return Const(_COMPARE[op](x, y), "bool")
    if op in ("and", "or"):
        if not is_bool(dt):
            return None
        return Const(a.value and b.value if op == "and" else a.value or b.value, "bool")
    if is_int(dt):
        f = _INT_FOLD.get(op)
        r = f(a.value, b.value) if f else None
        return None if r is None else Const(wrap(r, dt), dt)
    if is_float(dt) and op in _FLOAT_FOLD:
        return Const(round_float(_FLOAT_FOLD[op](_fvalue(a), _fvalue(b)), dt), dt)
    if is_float(dt) and op in ("min", "max"):
        x, y = _fvalue(a), _fvalue(b)
        # NaN and signed-zero conventions differ between min functions (even between numpy's loops)
        if math.isnan(x) or math.isnan(y) or (x == y == 0 and math.copysign(1, x) != math.copysign(1, y)):
            return None
        return Const(min(x, y) if op == "min" else max(x, y), dt)
    return None


def fold_call(func: str, c: Const) -> Const | None:
    """Exact math calls of a constant: abs, floor, ceil, sqrt (correctly rounded by IEEE)."""
    if is_int(c.dtype):
        return Const(wrap(abs(c.value), c.dtype), c.dtype) if func == "abs" else None
    if not is_float(c.dtype):
        return None
    x = _fvalue(c)
    if func == "abs":
        r = abs(x)
    elif func in ("floor", "ceil"):
        r = float(math.floor(x) if func == "floor" else math.ceil(x)) if math.isfinite(x) else x
        r = math.copysign(0.0, x) if r == 0 else r  # ceil(-0.5) is -0.0
    elif func == "sqrt":
        r = math.sqrt(x) if x >= 0 else math.nan  # sqrt(-0.0) is -0.0
    else:
        return None
    return Const(round_float(r, c.dtype), c.dtype)
