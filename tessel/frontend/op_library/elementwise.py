"""Elementwise ops: binary arithmetic and comparisons with numpy broadcasting, where, and unary
math and activations (relu, silu, gelu, ...), cast, clip and inference batch norm.

Each op lowers to one DSL compute over the broadcast output shape; an input is read through
`bload` (size-1 dimensions at index 0). Operands of different dtypes are promoted first (see
`common.promote`). float16/bfloat16 math is computed in float32 and rounded once, as torch does on
the CPU. Integer `div` truncates toward zero (as ONNX Div and C do); `pow` on integers is computed
in float64 and rounded.

Example:
    >>> from tessel.frontend.graph import Value
    >>> get_op("add").infer([Value("a", (2, 3), "float32"), Value("b", (3,), "float32")], {})
    [((2, 3), 'float32')]
"""

from __future__ import annotations

import math

from tessel.errors import ArgumentError, DTypeError, ShapeError
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.frontend.op_library.common import (
    bload, broadcast_shapes, check_inputs, compute_dtype, f64, need_float, need_numeric, promote, to_bool, to_np,
)
from tessel.ir import dsl
from tessel.ir.dtypes import check_dtype, is_bool, is_float, is_int, numpy_dtype


def _np():
    import numpy as np

    return np


# -- binary ---------------------------------------------------------------------------------------

_ARITH = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")
_COMPARE = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}
_LOGIC = ("logical_and", "logical_or")


def _trunc_div(a, b):
    """Integer division rounding toward zero, from floordiv: bump the quotient when the signs
    differ and the division is inexact."""
    q = a // b
    fix = ((a % b).ne(0)) & ((a < 0).ne(b < 0))
    return dsl.where(fix, q + 1, q)


def _round_half_away(r):
    return dsl.where(r >= 0.0, dsl.floor(r + 0.5), dsl.ceil(r - 0.5))


def _arith_expr(op: str, a, b, dt: str):
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "maximum":
        return dsl.maximum(a, b)
    if op == "minimum":
        return dsl.minimum(a, b)
    if op == "div":
        return a / b if is_float(dt) else _trunc_div(a, b)
    # pow
    if is_float(dt):
        c = compute_dtype(dt)
        return dsl.pow(a.astype(c), b.astype(c)).astype(dt)
    # integers: exact through float64 for results below 2**53; |result| < 1 (negative
    # exponents) truncates to 0 as integer arithmetic does
    r = dsl.pow(a.astype("float64"), b.astype("float64"))
    return dsl.where(dsl.abs(r) < 1.0, 0.0, _round_half_away(r)).astype(dt)


def _arith_ref(op: str, a, b, dt: str):
    np = _np()
    if is_float(dt):
        a, b = f64(a.astype(numpy_dtype(dt))), f64(b.astype(numpy_dtype(dt)))
    else:
        a, b = a.astype(dt), b.astype(dt)
    if op == "add":
        r = a + b
    elif op == "sub":
        r = a - b
    elif op == "mul":
        r = a * b
    elif op == "maximum":
        r = np.maximum(a, b)
    elif op == "minimum":
        r = np.minimum(a, b)
    elif op == "div":
        r = a / b if is_float(dt) else np.trunc(a.astype(np.float64) / b.astype(np.float64))
    else:
        if is_float(dt):
            r = np.power(a, b)
        else:
            r = np.power(a.astype(np.float64), b.astype(np.float64))
            r = np.where(np.abs(r) < 1, 0.0, np.round(r))
    return to_np(r, dt)


def _register_binary(op: str, family: str) -> None:
    def infer(inputs, attrs):
        a, b = check_inputs(op, inputs, 2)
        shape = broadcast_shapes(op, [a.shape, b.shape])
        if family == "logic":
            return [(shape, "bool")]
        dt = promote(op, [a.dtype, b.dtype])
        if family == "arith":
            for k, v in enumerate((a, b)):
                need_numeric(op, v.dtype, k)
            return [(shape, dt)]
        return [(shape, "bool")]

    def lower(inputs, attrs, outs, names):
        a, b = inputs
        shape, out_dt = outs[0]
        dt = "bool" if family == "logic" else promote(op, [a.dtype, b.dtype])

        def body(*i):
            x, y = bload(a, shape, i), bload(b, shape, i)
            x, y = (to_bool(x), to_bool(y)) if family == "logic" else (x.astype(dt), y.astype(dt))
            if family == "arith":
                return _arith_expr(op, x, y, dt)
            if family == "logic":
                return (x & y) if op == "logical_and" else (x | y)
            return x._bin(_COMPARE[op], y)

        return [dsl.compute(shape, body, name=names[0])]

    def reference(arrays, attrs):
        np = _np()
        a, b = (np.asarray(x) for x in arrays)
        if family == "arith":
            return [_arith_ref(op, a, b, promote(op, [_dt(a), _dt(b)]))]
        if family == "logic":
            f = np.logical_and if op == "logical_and" else np.logical_or
            return [f(a.astype(bool), b.astype(bool))]
        dt = promote(op, [_dt(a), _dt(b)])
        x, y = a.astype(numpy_dtype(dt)), b.astype(numpy_dtype(dt))
        f = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
             "ge": np.greater_equal}[op]
        return [f(x, y)]

    cls = type(op, (), {"infer": staticmethod(infer), "lower": staticmethod(lower),
                        "reference": staticmethod(reference)})
    register(op, "elementwise")(cls)


def _dt(arr) -> str:
    from tessel.ir.dtypes import from_numpy_dtype

    return from_numpy_dtype(arr.dtype)


for _op in _ARITH:
    _register_binary(_op, "arith")
for _op in _COMPARE:
    _register_binary(_op, "compare")
for _op in _LOGIC:
    _register_binary(_op, "logic")


@register("where", "elementwise")
class Where:
    """where(cond, a, b): a where cond is true, else b; all three broadcast."""

    @staticmethod
    def infer(inputs, attrs):
        c, a, b = check_inputs("where", inputs, 3)
        shape = broadcast_shapes("where", [c.shape, a.shape, b.shape])
        return [(shape, promote("where", [a.dtype, b.dtype]))]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        c, a, b = inputs
        shape, dt = outs[0]
        return [dsl.compute(shape, lambda *i: dsl.where(to_bool(bload(c, shape, i)),
                                                        bload(a, shape, i).astype(dt),
                                                        bload(b, shape, i).astype(dt)), name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        c, a, b = (np.asarray(x) for x in arrays)
        dt = promote("where", [_dt(a), _dt(b)])
        return [to_np(np.where(c.astype(bool), a.astype(numpy_dtype(dt)), b.astype(numpy_dtype(dt))), dt)]


# -- unary ----------------------------------------------------------------------------------------

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu(x, attrs):
    if attrs.get("approximate", "none") == "tanh":
        inner = (x + x * x * x * 0.044715) * _SQRT_2_OVER_PI
        return x * 0.5 * (dsl.tanh(inner) + 1.0)
    return x * 0.5 * (dsl.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


def _erf_np(x):
    np = _np()
    # frompyfunc gives a Python float, not an array, for a 0-d input: asarray keeps every rank an array
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=np.float64) if x.size else x.astype(np.float64)


def _gelu_np(x, attrs):
    np = _np()
    if attrs.get("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf_np(x / math.sqrt(2.0)))


# name -> (needs a float input, lowering of one float element, numpy reference in float64)
_FLOAT_UNARY = {
    "exp": (dsl.exp, lambda x, a: _np().exp(x)),
    "log": (dsl.log, lambda x, a: _np().log(x)),
    "sqrt": (dsl.sqrt, lambda x, a: _np().sqrt(x)),
    "rsqrt": (dsl.rsqrt, lambda x, a: 1.0 / _np().sqrt(x)),
    "tanh": (dsl.tanh, lambda x, a: _np().tanh(x)),
    "sigmoid": (dsl.sigmoid, lambda x, a: 1.0 / (1.0 + _np().exp(-x))),
    "erf": (dsl.erf, lambda x, a: _erf_np(x)),
    "sin": (dsl.sin, lambda x, a: _np().sin(x)),
    "cos": (dsl.cos, lambda x, a: _np().cos(x)),
    "reciprocal": (lambda x: 1.0 / x, lambda x, a: 1.0 / x),
    "silu": (lambda x: x * dsl.sigmoid(x), lambda x, a: x / (1.0 + _np().exp(-x))),
}
_FLOAT_UNARY_ATTR = {
    "gelu": (_gelu, _gelu_np),
}


def _register_unary(op: str, infer_dt, lower_elem, ref) -> None:
    """infer_dt(dtype, attrs) -> output dtype (raising for bad inputs); lower_elem(x, dt, attrs) ->
    Expr of the output dtype; ref(array, attrs) -> array."""

    def infer(inputs, attrs):
        (x,) = check_inputs(op, inputs, 1)
        return [(x.shape, infer_dt(x.dtype, attrs))]

    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        return [dsl.compute(shape, lambda *i: lower_elem(x[i], dt, attrs), name=names[0])]

    def reference(arrays, attrs):
        return [ref(_np().asarray(arrays[0]), attrs)]

    cls = type(op, (), {"infer": staticmethod(infer), "lower": staticmethod(lower),
                        "reference": staticmethod(reference)})
    register(op, "elementwise")(cls)


def _float_unary(op: str, f, fref, with_attrs: bool) -> None:
    def infer_dt(dt, attrs):
        need_float(op, dt)
        if op == "gelu" and attrs.get("approximate", "none") not in ("none", "tanh"):
            raise ArgumentError(f"gelu: attribute 'approximate' is {attrs['approximate']!r}, expected 'none' or 'tanh'")
        return dt

    def lower_elem(x, dt, attrs):
        c = compute_dtype(dt)
        y = x.astype(c)
        return (f(y, attrs) if with_attrs else f(y)).astype(dt)

    def ref(a, attrs):
        return to_np(fref(f64(a), attrs), _dt(a))

    _register_unary(op, infer_dt, lower_elem, ref)


for _op, (_f, _r) in _FLOAT_UNARY.items():
    _float_unary(_op, _f, _r, False)
for _op, (_f, _r) in _FLOAT_UNARY_ATTR.items():
    _float_unary(_op, _f, _r, True)


def _numeric_dt(op):
    def infer_dt(dt, attrs):
        need_numeric(op, dt)
        return dt

    return infer_dt


def _same_or_float(f):
    """Lower through the compute dtype when the input is a float (floor/ceil are identities on
    integers)."""

    def lower_elem(x, dt, attrs):
        if not is_float(dt):
            return x
        return f(x.astype(compute_dtype(dt))).astype(dt)

    return lower_elem


_register_unary("neg", _numeric_dt("neg"), lambda x, dt, a: -x, lambda a, at: to_np(-f64(a), _dt(a)))
_register_unary("abs", _numeric_dt("abs"), lambda x, dt, a: dsl.abs(x),
                lambda a, at: to_np(_np().abs(f64(a)), _dt(a)))
_register_unary("floor", _numeric_dt("floor"), _same_or_float(dsl.floor),
                lambda a, at: to_np(_np().floor(f64(a)), _dt(a)))
_register_unary("ceil", _numeric_dt("ceil"), _same_or_float(dsl.ceil),
                lambda a, at: to_np(_np().ceil(f64(a)), _dt(a)))
_register_unary("relu", _numeric_dt("relu"), lambda x, dt, a: dsl.maximum(x, dsl.const(0, dt)),
                lambda a, at: to_np(_np().maximum(f64(a), 0), _dt(a)))
_register_unary("logical_not", lambda dt, a: "bool", lambda x, dt, a: ~to_bool(x),
                lambda a, at: _np().logical_not(a.astype(bool)))


def _leaky_dt(dt, attrs):
    need_float("leaky_relu", dt)
    return dt


def _leaky(x, dt, attrs):
    y = x.astype(compute_dtype(dt))
    return dsl.where(y >= 0.0, y, y * float(attrs.get("alpha", 0.01))).astype(dt)


def _leaky_ref(a, attrs):
    x = f64(a)
    return to_np(_np().where(x > 0, x, x * float(attrs.get("alpha", 0.01))), _dt(a))


_register_unary("leaky_relu", _leaky_dt, _leaky, _leaky_ref)


def _clip_dt(dt, attrs):
    need_numeric("clip", dt)
    for key in ("min", "max"):
        v = attrs.get(key)
        if v is not None and is_int(dt) and float(v) != int(v):
            raise DTypeError(f"clip: attribute '{key}' = {v!r} is not an integer but the input is {dt}")
    return dt


def _clip(x, dt, attrs):
    lo, hi = attrs.get("min"), attrs.get("max")
    conv = float if is_float(dt) else int
    if lo is not None:
        x = dsl.maximum(x, dsl.const(conv(lo), dt))
    if hi is not None:
        x = dsl.minimum(x, dsl.const(conv(hi), dt))
    return x


def _clip_ref(a, attrs):
    np = _np()
    x = f64(a)
    if attrs.get("min") is not None:
        x = np.maximum(x, attrs["min"])
    if attrs.get("max") is not None:
        x = np.minimum(x, attrs["max"])
    return to_np(x, _dt(a))


_register_unary("clip", _clip_dt, _clip, _clip_ref)


def _cast_dt(dt, attrs):
    if "dtype" not in attrs:
        raise DTypeError("cast: attribute 'dtype' is required")
    return check_dtype(attrs["dtype"], "cast: attribute 'dtype'")


def _cast(x, dt, attrs):
    return to_bool(x) if dt == "bool" else x.astype(dt)


def _cast_ref(a, attrs):
    np = _np()
    dt = check_dtype(attrs["dtype"])
    if is_int(dt) and a.dtype.kind == "f":  # truncate toward zero, saturate, NaN -> 0 (as the IR)
        info = np.iinfo(dt)
        x = np.nan_to_num(np.trunc(f64(a)), nan=0.0, posinf=info.max, neginf=info.min)
        return np.clip(x, info.min, info.max).astype(dt)
    return to_np(a, dt) if not is_bool(dt) else a != 0


_register_unary("cast", _cast_dt, _cast, _cast_ref)


# -- batch norm (inference) ------------------------------------------------------------------------


@register("batch_norm", "elementwise")
class BatchNorm:
    """(x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c] with the channel on axis 1."""

    @staticmethod
    def infer(inputs, attrs):
        x, *params = check_inputs("batch_norm", inputs, 5)
        need_float("batch_norm", x.dtype)
        if len(x.shape) < 2:
            raise ShapeError(f"batch_norm: input 0 has shape {x.shape}; expected (N, C, ...) with rank >= 2")
        c = x.shape[1]
        for k, p in enumerate(params, start=1):
            need_float("batch_norm", p.dtype, k)
            if tuple(p.shape) != (c,):
                raise ShapeError(f"batch_norm: input {k} has shape {tuple(p.shape)}, expected ({c},) "
                                 f"(the channel count, input 0 dim 1)")
        return [(tuple(x.shape), x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        x, scale, bias, mean, var = inputs
        shape, dt = outs[0]
        c = compute_dtype(dt)
        eps = float(attrs.get("eps", 1e-5))

        def body(*i):
            ch = i[1]
            inv = dsl.rsqrt(var[ch].astype(c) + eps) * scale[ch].astype(c)
            return ((x[i].astype(c) - mean[ch].astype(c)) * inv + bias[ch].astype(c)).astype(dt)

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        x, scale, bias, mean, var = (f64(a) for a in arrays)
        eps = float(attrs.get("eps", 1e-5))
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        y = (x - mean.reshape(bshape)) / _np().sqrt(var.reshape(bshape) + eps) * scale.reshape(bshape)
        return [to_np(y + bias.reshape(bshape), _dt(arrays[0]))]
