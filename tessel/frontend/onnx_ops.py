"""ONNX op converters: each maps one ONNX node onto ops of tessel's op set (tessel/frontend/ops.py).

A converter is `f(ctx, node) -> [graph value per ONNX output]`, registered with `@converter(*op_types)`.
`ctx` is the importer (`onnx_import._Importer`): `ctx.value(name)` gives the Graph value of an ONNX
input, `ctx.op(op, inputs, **attrs)` adds a tessel op (folded when its inputs are constants),
`ctx.const(array)` adds a constant, `ctx.need_const(v, what)` reads an operand that must be known
at import time, `ctx.attr(node, name, default)` reads an attribute, `ctx.version(node)` is the
since_version of the op's schema under the model's opset (converters branch on it where ONNX
changed an op: attributes that became inputs, Softmax's axis semantics ...).

This module holds the registry, shared helpers and the elementwise ops; `onnx_ops_tensor.py` holds
layout and shape ops, `onnx_ops_nn.py` contractions, pooling, reductions and attention,
`onnx_ops_norm.py` normalisation, `onnx_ops_resize.py` Resize and Upsample.

Example:
    >>> "Relu" in CONVERTERS and "Reshape" in CONVERTERS and "Conv" in CONVERTERS
    True
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tessel.errors import ShapeError

CONVERTERS: dict[str, Callable] = {}


def converter(*op_types: str):
    """Register a converter for the ONNX op types given."""

    def deco(f):
        for t in op_types:
            CONVERTERS[t] = f
        return f

    return deco


# -- helpers shared by the converter modules ---------------------------------------------------------

def ins(ctx, node) -> list:
    """The Graph values of the node's inputs (None for absent optional ones)."""
    return [ctx.value(i) for i in node.input]


def opt(values: list, k: int):
    return values[k] if k < len(values) else None


def scalar(ctx, value, dtype: str) -> str:
    """A rank-0 constant of `dtype`."""
    from tessel.ir.dtypes import numpy_dtype

    return ctx.const(np.array(value).astype(numpy_dtype(dtype)), "scalar")


def np_of(dtype: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)


def norm_axis(ctx, axis: int, rank: int, what: str = "axis") -> int:
    """`axis` made non-negative; ShapeError naming the node when out of range."""
    axis = int(axis)
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{ctx.where()}: {what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def reshape(ctx, x: str, shape) -> str:
    shape = tuple(int(s) for s in shape)
    if ctx.shape(x) == shape:
        return x
    return empty(ctx, shape, ctx.dtype(x)) or ctx.op("reshape", [x], shape=shape)


def empty(ctx, shape, dtype: str) -> str | None:
    """A constant for a result with no elements (the op set has no empty tensors; an empty
    tensor has no data, so a constant is exact), or None when `shape` is not empty."""
    if 0 not in tuple(shape):
        return None
    return ctx.const(np.zeros(tuple(shape), np_of(dtype)), "empty")


def cast(ctx, x: str, dtype: str) -> str:
    return x if ctx.dtype(x) == dtype else ctx.op("cast", [x], dtype=dtype)


def const_ints(ctx, v, what: str) -> list:
    return [int(i) for i in np.asarray(ctx.need_const(v, what)).reshape(-1)]


def const_float(ctx, v, what: str) -> float:
    return np.asarray(ctx.need_const(v, what)).reshape(-1)[0].item()


# -- elementwise -----------------------------------------------------------------------------------

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "eq", "Less": "lt",
           "LessOrEqual": "le", "Greater": "gt", "GreaterOrEqual": "ge", "And": "logical_and",
           "Or": "logical_or", "Xor": "ne"}
_UNARY = {"Neg": "neg", "Abs": "abs", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Tanh": "tanh",
          "Sigmoid": "sigmoid", "Erf": "erf", "Sin": "sin", "Cos": "cos", "Floor": "floor", "Ceil": "ceil",
          "Reciprocal": "reciprocal", "Not": "logical_not", "Relu": "relu"}


@converter(*_BINARY)
def _binary(ctx, node):
    a, b = ins(ctx, node)
    if node.op_type == "Div" and ctx.dtype(a).startswith("int"):
        return [_int_div(ctx, a, b)]
    return [ctx.op(_BINARY[node.op_type], [a, b])]


def _int_div(ctx, a, b):
    """ONNX integer Div truncates toward zero (C-style), whatever rounding the op library's integer div
    uses: computed in float64, whose quotient truncates to the exact result for |a| < 2**53."""
    q = ctx.op("div", [cast(ctx, a, "float64"), cast(ctx, b, "float64")])
    return cast(ctx, q, ctx.dtype(a))  # cast truncates toward zero


@converter(*_UNARY)
def _unary(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op(_UNARY[node.op_type], [x])]


# -- inverse trigonometric and hyperbolic functions, composed in float64 (the op set has none) ---------

def _f64_unary(ctx, node, f):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    return [cast(ctx, f(ctx, cast(ctx, x, "float64")), dt)]


def _k(ctx, value):
    return scalar(ctx, value, "float64")


def _atan(ctx, x):
    """atan for any x: |x| > 1 through pi/2 - atan(1/x); then three argument halvings
    (atan t = 2 atan(t / (1 + sqrt(1 + t^2)))) bring |t| below tan(pi/16) ~ 0.2, where ten terms of the
    Taylor series leave an error below 1e-16."""
    big = ctx.op("gt", [ctx.op("abs", [x]), _k(ctx, 1.0)])
    t = ctx.op("where", [big, ctx.op("reciprocal", [x]), x])
    for _ in range(3):
        root = ctx.op("sqrt", [ctx.op("add", [_k(ctx, 1.0), ctx.op("mul", [t, t])])])
        t = ctx.op("div", [t, ctx.op("add", [_k(ctx, 1.0), root])])
    t2 = ctx.op("mul", [t, t])
    acc = _k(ctx, (-1) ** 10 / 21)
    for k in range(9, -1, -1):  # sum_k (-1)^k t^(2k+1) / (2k+1), by Horner in t^2
        acc = ctx.op("add", [ctx.op("mul", [acc, t2]), _k(ctx, (-1) ** k / (2 * k + 1))])
    a = ctx.op("mul", [ctx.op("mul", [acc, t]), _k(ctx, 8.0)])
    half_pi = ctx.op("where", [ctx.op("lt", [x, _k(ctx, 0.0)]), _k(ctx, -np.pi / 2), _k(ctx, np.pi / 2)])
    return ctx.op("where", [big, ctx.op("sub", [half_pi, a]), a])


def _asin(ctx, x):
    """asin x = 2 atan(x / (1 + sqrt(1 - x^2))): finite at |x| = 1, NaN outside [-1, 1] (sqrt)."""
    root = ctx.op("sqrt", [ctx.op("sub", [_k(ctx, 1.0), ctx.op("mul", [x, x])])])
    return ctx.op("mul", [_atan(ctx, ctx.op("div", [x, ctx.op("add", [_k(ctx, 1.0), root])])), _k(ctx, 2.0)])


def _asinh(ctx, x):
    """asinh x = sign(x) log(|x| + sqrt(x^2 + 1)) (odd, so no cancellation for negative x)."""
    ax = ctx.op("abs", [x])
    y = ctx.op("log", [ctx.op("add", [ax, ctx.op("sqrt", [ctx.op("add", [ctx.op("mul", [x, x]), _k(ctx, 1.0)])])])])
    return ctx.op("where", [ctx.op("lt", [x, _k(ctx, 0.0)]), ctx.op("neg", [y]), y])


_INVERSE = {
    "Atan": _atan,
    "Asin": _asin,
    "Acos": lambda ctx, x: ctx.op("sub", [_k(ctx, np.pi / 2), _asin(ctx, x)]),
    "Asinh": _asinh,
    "Acosh": lambda ctx, x: ctx.op("log", [ctx.op("add", [x, ctx.op("sqrt", [
        ctx.op("sub", [ctx.op("mul", [x, x]), _k(ctx, 1.0)])])])]),
    "Atanh": lambda ctx, x: ctx.op("mul", [ctx.op("log", [ctx.op("div", [
        ctx.op("add", [_k(ctx, 1.0), x]), ctx.op("sub", [_k(ctx, 1.0), x])])]), _k(ctx, 0.5)]),
}


@converter(*_INVERSE)
def _inverse_trig(ctx, node):
    return _f64_unary(ctx, node, _INVERSE[node.op_type])


@converter("Pow")
def _pow(ctx, node):
    a, b = ins(ctx, node)
    ta, tb = ctx.dtype(a), ctx.dtype(b)
    if ta == tb:
        return [ctx.op("pow", [a, b])]
    if ta.startswith("int") and tb.startswith("float"):  # compute in float, the result keeps a's type
        return [cast(ctx, ctx.op("pow", [cast(ctx, a, tb), b]), ta)]
    return [ctx.op("pow", [a, cast(ctx, b, ta)])]


@converter("Max", "Min", "Sum", "Mean")
def _variadic(ctx, node):
    xs = [x for x in ins(ctx, node)]
    op = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}[node.op_type]
    acc = xs[0]
    for x in xs[1:]:
        acc = ctx.op(op, [acc, x])
    if node.op_type == "Mean" and len(xs) > 1:
        acc = ctx.op("div", [acc, scalar(ctx, len(xs), ctx.dtype(acc))])
    return [acc]


@converter("Where")
def _where(ctx, node):
    c, a, b = ins(ctx, node)
    return [ctx.op("where", [c, a, b])]


@converter("Identity")
def _identity(ctx, node):
    return ins(ctx, node)[:1]


@converter("Cast")
def _cast(ctx, node):
    from tessel.frontend.onnx_import import onnx_dtype

    (x,) = ins(ctx, node)
    return [cast(ctx, x, onnx_dtype(ctx.attr(node, "to"), f"{ctx.where()} attribute 'to'"))]


@converter("CastLike")
def _cast_like(ctx, node):
    x, like = ins(ctx, node)
    return [cast(ctx, x, ctx.dtype(like))]


@converter("Clip")
def _clip(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    if ctx.version(node) < 11:
        lo, hi = ctx.attr(node, "min"), ctx.attr(node, "max")
        return [ctx.op("clip", [x], min=lo, max=hi)]
    lo_v, hi_v = opt(vals, 1), opt(vals, 2)
    lo_c, hi_c = ctx.try_const(lo_v), ctx.try_const(hi_v)
    if (lo_v is None or lo_c is not None) and (hi_v is None or hi_c is not None):
        lo = None if lo_c is None else lo_c.reshape(-1)[0].item()
        hi = None if hi_c is None else hi_c.reshape(-1)[0].item()
        return [x if lo is None and hi is None else ctx.op("clip", [x], min=lo, max=hi)]
    y = x if lo_v is None else ctx.op("maximum", [x, lo_v])
    return [y if hi_v is None else ctx.op("minimum", [y, hi_v])]


# -- activations that are compositions -------------------------------------------------------------

@converter("LeakyRelu")
def _leaky_relu(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("leaky_relu", [x], alpha=float(ctx.attr(node, "alpha", 0.01)))]


@converter("Gelu")
def _gelu(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("gelu", [x], approximate=ctx.attr(node, "approximate", "none"))]


def _affine(ctx, x, mul: float, add: float) -> str:
    dt = ctx.dtype(x)
    y = x if mul == 1.0 else ctx.op("mul", [x, scalar(ctx, mul, dt)])
    return y if add == 0.0 else ctx.op("add", [y, scalar(ctx, add, dt)])


@converter("HardSigmoid")
def _hard_sigmoid(ctx, node):
    (x,) = ins(ctx, node)
    y = _affine(ctx, x, float(ctx.attr(node, "alpha", 0.2)), float(ctx.attr(node, "beta", 0.5)))
    return [ctx.op("clip", [y], min=0.0, max=1.0)]


@converter("HardSwish")
def _hard_swish(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("mul", [x, ctx.op("clip", [_affine(ctx, x, 1 / 6, 0.5)], min=0.0, max=1.0)])]


def _elu_neg(ctx, x, alpha: float) -> str:
    """alpha * (exp(x) - 1), the negative branch of Elu/Selu/Celu."""
    dt = ctx.dtype(x)
    return ctx.op("mul", [ctx.op("sub", [ctx.op("exp", [x]), scalar(ctx, 1.0, dt)]), scalar(ctx, alpha, dt)])


def _pos_where(ctx, x, neg: str) -> str:
    return ctx.op("where", [ctx.op("gt", [x, scalar(ctx, 0, ctx.dtype(x))]), x, neg])


@converter("Elu")
def _elu(ctx, node):
    (x,) = ins(ctx, node)
    return [_pos_where(ctx, x, _elu_neg(ctx, x, float(ctx.attr(node, "alpha", 1.0))))]


@converter("Selu")
def _selu(ctx, node):
    (x,) = ins(ctx, node)
    alpha = float(ctx.attr(node, "alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr(node, "gamma", 1.05070102214813232421875))
    y = _pos_where(ctx, x, _elu_neg(ctx, x, alpha))
    return [ctx.op("mul", [y, scalar(ctx, gamma, ctx.dtype(x))])]


@converter("Celu")
def _celu(ctx, node):
    (x,) = ins(ctx, node)
    alpha = float(ctx.attr(node, "alpha", 1.0))
    dt = ctx.dtype(x)
    neg = _elu_neg(ctx, ctx.op("div", [x, scalar(ctx, alpha, dt)]), alpha)
    return [_pos_where(ctx, x, neg)]


def _softplus(ctx, x) -> str:
    """log(1 + exp(x)) as relu(x) + log1p(exp(-|x|)), which does not overflow; log1p(y) for y below
    1e-3 is its series y - y^2/2 + y^3/3 (log(1 + y) would lose the digits of a small y)."""
    dt = ctx.dtype(x)
    y = ctx.op("exp", [ctx.op("neg", [ctx.op("abs", [x])])])
    logp = ctx.op("log", [ctx.op("add", [y, scalar(ctx, 1.0, dt)])])
    series = ctx.op("mul", [y, ctx.op("sub", [scalar(ctx, 1.0, dt), ctx.op("mul", [y, ctx.op(
        "sub", [scalar(ctx, 0.5, dt), ctx.op("div", [y, scalar(ctx, 3.0, dt)])])])])])
    tail = ctx.op("where", [ctx.op("lt", [y, scalar(ctx, 1e-3, dt)]), series, logp])
    return ctx.op("add", [ctx.op("relu", [x]), tail])


@converter("Softplus")
def _softplus_conv(ctx, node):
    return [_softplus(ctx, ins(ctx, node)[0])]


@converter("Softsign")
def _softsign(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("div", [x, ctx.op("add", [ctx.op("abs", [x]), scalar(ctx, 1.0, ctx.dtype(x))])])]


@converter("Mish")
def _mish(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("mul", [x, ctx.op("tanh", [_softplus(ctx, x)])])]


@converter("Swish")
def _swish(ctx, node):
    (x,) = ins(ctx, node)
    alpha = float(ctx.attr(node, "alpha", 1.0))
    if alpha == 1.0:
        return [ctx.op("silu", [x])]
    return [ctx.op("mul", [x, ctx.op("sigmoid", [_affine(ctx, x, alpha, 0.0)])])]


@converter("ThresholdedRelu")
def _thresholded_relu(ctx, node):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    keep = ctx.op("gt", [x, scalar(ctx, float(ctx.attr(node, "alpha", 1.0)), dt)])
    return [ctx.op("where", [keep, x, scalar(ctx, 0, dt)])]


@converter("PRelu")
def _prelu(ctx, node):
    x, slope = ins(ctx, node)
    neg = ctx.op("mul", [x, slope])
    return [ctx.op("where", [ctx.op("lt", [x, scalar(ctx, 0, ctx.dtype(x))]), neg, x])]


@converter("Shrink")
def _shrink(ctx, node):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    bias, lambd = float(ctx.attr(node, "bias", 0.0)), float(ctx.attr(node, "lambd", 0.5))
    low = ctx.op("lt", [x, scalar(ctx, -lambd, dt)])
    high = ctx.op("gt", [x, scalar(ctx, lambd, dt)])
    return [ctx.op("where", [low, ctx.op("add", [x, scalar(ctx, bias, dt)]),
                             ctx.op("where", [high, ctx.op("sub", [x, scalar(ctx, bias, dt)]), scalar(ctx, 0, dt)])])]


@converter("Sign")
def _sign(ctx, node):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    zero = scalar(ctx, 0, dt)
    neg = ctx.op("where", [ctx.op("lt", [x, zero]), scalar(ctx, -1, dt), zero])
    return [ctx.op("where", [ctx.op("gt", [x, zero]), scalar(ctx, 1, dt), neg])]


@converter("Tan")
def _tan(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("div", [ctx.op("sin", [x]), ctx.op("cos", [x])])]


@converter("Sinh", "Cosh")
def _sinh_cosh(ctx, node):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    a, b = ctx.op("exp", [x]), ctx.op("exp", [ctx.op("neg", [x])])
    s = ctx.op("sub" if node.op_type == "Sinh" else "add", [a, b])
    return [ctx.op("mul", [s, scalar(ctx, 0.5, dt)])]


@converter("IsNaN")
def _isnan(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("ne", [x, x])]


@converter("IsInf")
def _isinf(ctx, node):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    pos, neg = int(ctx.attr(node, "detect_positive", 1)), int(ctx.attr(node, "detect_negative", 1))
    if pos and neg:
        return [ctx.op("eq", [ctx.op("abs", [x]), scalar(ctx, np.inf, dt)])]
    if pos:
        return [ctx.op("eq", [x, scalar(ctx, np.inf, dt)])]
    if neg:
        return [ctx.op("eq", [x, scalar(ctx, -np.inf, dt)])]
    return [ctx.const(np.zeros(ctx.shape(x), bool), "isinf")]


@converter("Mod")
def _mod(ctx, node):
    """a - round(a / b) * b, rounding toward zero (fmod=1, C) or down (fmod=0, Python: the sign of b),
    computed in float64: exact for integers below 2**53."""
    a, b = ins(ctx, node)
    dt = ctx.dtype(a)
    fmod = int(ctx.attr(node, "fmod", 0))
    ca, cb = ctx.try_const(a), ctx.try_const(b)
    if ca is not None and cb is not None:  # shape arithmetic: numpy
        with np.errstate(all="ignore"):
            return [ctx.const((np.fmod(ca, cb) if fmod else np.mod(ca, cb)).astype(ca.dtype), "mod")]
    wide = "float64" if dt != "float16" else "float32"
    a64, b64 = cast(ctx, a, wide), cast(ctx, b, wide)
    q = ctx.op("div", [a64, b64])
    if fmod:
        zero = scalar(ctx, 0, wide)
        q = ctx.op("where", [ctx.op("lt", [q, zero]), ctx.op("ceil", [q]), ctx.op("floor", [q])])
    else:
        q = ctx.op("floor", [q])
    r = ctx.op("sub", [a64, ctx.op("mul", [q, b64])])
    if dt.startswith("float"):  # a finite a modulo an infinite b: a, or b when the signs differ (Python)
        inf, zero = scalar(ctx, np.inf, wide), scalar(ctx, 0, wide)
        special = ctx.op("logical_and", [ctx.op("eq", [ctx.op("abs", [b64]), inf]),
                                         ctx.op("lt", [ctx.op("abs", [a64]), inf])])
        keep_a = a64 if fmod else ctx.op("where", [ctx.op("lt", [ctx.op("mul", [a64, b64]), zero]), b64, a64])
        r = ctx.op("where", [special, keep_a, r])
    return [cast(ctx, r, dt)]


@converter("Round")
def _round(ctx, node):
    """Round half to even: floor(x), plus 1 above a half, plus (floor(x) mod 2) at exactly a half."""
    (x,) = ins(ctx, node)
    return [round_half_even(ctx, x)]


def round_half_even(ctx, x: str) -> str:
    """x rounded to the nearest integer, ties to even (numpy's rint), in x's float dtype."""
    dt = ctx.dtype(x)
    f = ctx.op("floor", [x])
    d = ctx.op("sub", [x, f])
    half, one, two = (scalar(ctx, v, dt) for v in (0.5, 1.0, 2.0))
    odd = ctx.op("sub", [f, ctx.op("mul", [ctx.op("floor", [ctx.op("div", [f, two])]), two])])
    at_half = ctx.op("add", [f, odd])
    up = ctx.op("where", [ctx.op("gt", [d, half]), ctx.op("add", [f, one]), f])
    return ctx.op("where", [ctx.op("eq", [d, half]), at_half, up])


from tessel.frontend import (  # noqa: E402,F401  (their converters)
    onnx_ops_bits, onnx_ops_control, onnx_ops_dft, onnx_ops_extra, onnx_ops_gridsample, onnx_ops_misc, onnx_ops_nn,
    onnx_ops_norm, onnx_ops_quant, onnx_ops_resize, onnx_ops_rnn, onnx_ops_roialign, onnx_ops_scatter,
    onnx_ops_sequence, onnx_ops_tensor, onnx_ops_training,
)
