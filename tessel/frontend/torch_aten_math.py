"""Elementwise aten ops that the op set spells with several ops: NaN/infinity tests, rounding,
inverse trigonometric and hyperbolic functions, atan2/fmod/remainder/hypot/copysign/logaddexp,
xlogy, lerp/addcmul/addcdiv and the composed activations (hardswish, softplus, mish, shrinks, glu,
prelu ...). Registered into torch_aten's table; `converters()` imports this module.

Functions whose composition loses digits (the inverse trigonometric ones, logaddexp, hypot ...) are
computed in float64 and rounded once to the dtype torch gives; rounding and the NaN tests stay in
the input's dtype, as torch computes them.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(f"aten.{n}.default" in converters() for n in ("isnan", "atan2", "round", "hardswish"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import CONVERTERS, aten
from tessel.frontend.torch_aten_expr import (
    X, atan, cos, exp, expm1, fabs, floor, isnan, log, log1p, maximum, minimum, relu, sigmoid, sin, sqrt,
    tanh, trunc, where,
)


def _name(cx) -> str:
    return cx.node.target._schema.name.split("::")[1]


def _arg(cx, a, key: str, dtype: str) -> X:
    """Argument `key` (an fx node or a Python number) as an X of `dtype`."""
    return X(cx, cx.operand(a[key], dtype))


def _is_float(dt: str) -> bool:
    return dt.startswith("float") or dt == "bfloat16"


def _const(cx, value, shape, dtype: str) -> str:
    import numpy as np

    from tessel.ir.dtypes import numpy_dtype

    return cx.const(np.full(shape, value, dtype=numpy_dtype(dtype)))


# -- NaN and infinity tests --------------------------------------------------------------------------

@aten("isnan.default", "isinf.default", "isfinite.default", "isposinf.default", "isneginf.default")
def _isnan(cx, a):
    name = _name(cx)
    x = X(cx, cx.v(a["self"]))
    if not _is_float(x.dtype):  # integers and bools are finite numbers
        return _const(cx, name == "isfinite", cx.out_shape, "bool")
    if name == "isnan":
        return isnan(x).v
    if name == "isinf":
        return fabs(x).eq(math.inf).v
    if name == "isfinite":
        return fabs(x).lt(math.inf).v
    return x.eq(math.inf if name == "isposinf" else -math.inf).v


@aten("nan_to_num.default")
def _nan_to_num(cx, a):
    import ml_dtypes

    from tessel.ir.dtypes import numpy_dtype

    x = X(cx, cx.v(a["self"]))
    if not _is_float(x.dtype):
        return x.v
    big = float(ml_dtypes.finfo(numpy_dtype(x.dtype)).max)  # the dtype's largest finite value (torch's default)
    hi = big if a["posinf"] is None else float(a["posinf"])
    lo = -big if a["neginf"] is None else float(a["neginf"])
    y = where(isnan(x), float(a["nan"] or 0.0), x)
    y = where(x.eq(math.inf), hi, y)
    return where(x.eq(-math.inf), lo, y).v


@aten("signbit.default")
def _signbit(cx, a):
    x = X(cx, cx.v(a["self"]))
    if not _is_float(x.dtype):
        return x.lt(0).v
    # -0.0 has its sign bit set: 1 / -0.0 is -inf
    return (x.lt(0.0) | (x.eq(0.0) & (1.0 / x).lt(0.0))).v


# -- rounding ----------------------------------------------------------------------------------------

def _round_half_even(x: X) -> X:
    """x rounded to the nearest integer, ties to even (torch.round, numpy.rint)."""
    f = floor(x)
    d = x - f
    odd = f - floor(f / 2.0) * 2.0
    up = where(d.gt(0.5), f + 1.0, f)
    return where(d.eq(0.5), f + odd, up)


@aten("round.default", "round.decimals", "trunc.default", "fix.default", "frac.default")
def _round(cx, a):
    name = _name(cx)
    x = X(cx, cx.v(a["self"]))
    if not _is_float(x.dtype):
        return x.v
    if name in ("trunc", "fix"):
        return trunc(x).v
    if name == "frac":
        return (x - trunc(x)).v
    d = int(a.get("decimals") or 0)
    if d == 0:
        return _round_half_even(x).v
    # torch: nearbyint(x * 10^d) / 10^d, or nearbyint(x / 10^-d) * 10^-d for negative d
    p = 10.0 ** abs(d)
    return (_round_half_even(x * p) / p).v if d > 0 else (_round_half_even(x / p) * p).v


@aten("sgn.default")
def _sgn(cx, a):
    x = X(cx, cx.v(a["self"]))
    return (x.gt(0).astype(x.dtype) - x.lt(0).astype(x.dtype)).v


# -- functions computed in float64 ---------------------------------------------------------------------

def _asin(x: X) -> X:
    """asin x = 2 atan(x / (1 + sqrt(1 - x^2))): finite at |x| = 1, NaN outside [-1, 1] (sqrt)."""
    return atan(x / (sqrt(1.0 - x * x) + 1.0)) * 2.0


def _acosh(x: X) -> X:
    return log(x + sqrt(x * x - 1.0))


def _asinh(x: X) -> X:
    ax = fabs(x)
    y = log1p(ax + ax * ax / (sqrt(ax * ax + 1.0) + 1.0))
    return where(x.lt(0.0), -y, y)


def _atanh(x: X) -> X:
    return (log1p(x) - log1p(-x)) * 0.5


def _sinh(x: X) -> X:
    e = expm1(fabs(x))
    y = (e + e / (e + 1.0)) * 0.5
    return where(x.lt(0.0), -y, y)


def _cosh(x: X) -> X:
    e = exp(fabs(x) * 0.5)  # (e^x + e^-x) / 2 = (e^(x/2))^2 / 2 + ..., overflow-safe to the last bit
    return e * e * 0.5 + 0.5 / (e * e)


_F64_UNARY = {
    "asin": _asin,
    "arcsin": _asin,
    "acos": lambda x: (math.pi / 2) - _asin(x),
    "arccos": lambda x: (math.pi / 2) - _asin(x),
    "atan": atan,
    "arctan": atan,
    "asinh": _asinh,
    "arcsinh": _asinh,
    "acosh": _acosh,
    "arccosh": _acosh,
    "atanh": _atanh,
    "arctanh": _atanh,
    "tan": lambda x: sin(x) / cos(x),
    "sinh": _sinh,
    "cosh": _cosh,
    "log1p": log1p,
    "expm1": expm1,
    "erfc": lambda x: 1.0 - x.op("erf"),
    "sinc": lambda x: where(x.eq(0.0), 1.0, sin(x * math.pi) / (x * math.pi)),
    "deg2rad": lambda x: x * (math.pi / 180),
    "rad2deg": lambda x: x * (180 / math.pi),
    "logit": None,  # needs eps: below
    "special_expit": sigmoid,
    "special_erfcx": None,
}


def _f64_unary(cx, a):
    name = _name(cx)
    x = X(cx, cx.v(a["self"])).astype("float64")
    if name == "logit":
        eps = a.get("eps")
        if eps is not None:
            x = x.op("clip", min=float(eps), max=1.0 - float(eps))
        y = log(x / (1.0 - x))
    else:
        y = _F64_UNARY[name](x)
    return y.astype(cx.out_dtype).v


for _n, _f in _F64_UNARY.items():
    if _f is not None or _n == "logit":
        CONVERTERS[f"aten.{_n}.default"] = _f64_unary


# -- binary functions --------------------------------------------------------------------------------

def _pair(cx, a, k1: str = "self", k2: str = "other", dtype: str = "float64") -> tuple:
    return _arg(cx, a, k1, dtype), _arg(cx, a, k2, dtype)


def _atan2(y: X, x: X) -> X:
    """The angle of (x, y): atan(y / x) moved to the right quadrant; the signs of zeros as in C."""
    base = atan(y / x)
    neg_y = y.lt(0.0) | (y.eq(0.0) & (1.0 / y).lt(0.0))
    shift = where(neg_y, -math.pi, math.pi, like=y)
    r = where(x.lt(0.0) | (x.eq(0.0) & (1.0 / x).lt(0.0)), base + shift, base)
    # x == 0 (either sign) with y != 0: +-pi/2; atan(y / x) already gives that for x = +-0, y finite
    both_inf = fabs(x).eq(math.inf) & fabs(y).eq(math.inf)
    quarter = where(x.gt(0.0), math.pi / 4, 3 * math.pi / 4, like=x)
    return where(both_inf, where(neg_y, -quarter, quarter), r)


@aten("atan2.default", "arctan2.default")
def _atan2_conv(cx, a):
    y, x = _pair(cx, a)
    return _atan2(y, x).astype(cx.out_dtype).v


@aten("hypot.default")
def _hypot(cx, a):
    x, y = _pair(cx, a)
    r = sqrt(x * x + y * y)
    inf = fabs(x).eq(math.inf) | fabs(y).eq(math.inf)
    return where(inf, math.inf, r).astype(cx.out_dtype).v


def _mod(cx, a, floor_mode: bool):
    """a - q * b with q = floor(a / b) (remainder: the sign of b) or trunc(a / b) (fmod: the sign of a),
    in float64 (exact for integers below 2**53); integer division by zero is refused by torch."""
    out = cx.out_dtype
    x, y = _pair(cx, a)
    q = x / y
    q = floor(q) if floor_mode else trunc(q)
    r = x - q * y
    if _is_float(out):
        # the quotient of huge or tiny operands loses the remainder's digits: fall back on the
        # definition r = x - b * trunc(x / b) rounded, fine for the samples' magnitudes; b = inf keeps x
        keep = fabs(y).eq(math.inf) & fabs(x).lt(math.inf)
        kept = x if not floor_mode else where((x * y).lt(0.0), y, x)
        r = where(keep, kept, r)
        if floor_mode:  # a nonzero remainder takes the sign of b; a zero one too (-0.0 for b < 0)
            r = where(r.ne(0.0) & (r.lt(0.0).ne(y.lt(0.0))), r + y, r)
    return r.astype(out).v


@aten("fmod.Tensor", "fmod.Scalar")
def _fmod(cx, a):
    return _mod(cx, a, floor_mode=False)


@aten("remainder.Tensor", "remainder.Scalar", "remainder.Scalar_Tensor")
def _remainder(cx, a):
    return _mod(cx, a, floor_mode=True)


@aten("copysign.Tensor", "copysign.Scalar")
def _copysign(cx, a):
    x, y = _pair(cx, a, dtype=cx.out_dtype)
    neg = y.lt(0.0) | (y.eq(0.0) & (1.0 / y).lt(0.0))
    ax = fabs(x)
    return where(neg, -ax, ax).v


@aten("logaddexp.default", "logaddexp2.default")
def _logaddexp(cx, a):
    """max + log1p(exp(-|a - b|)) (base 2: in units of ln 2); equal infinities give themselves."""
    x, y = _pair(cx, a)
    if _name(cx) == "logaddexp2":
        x, y = x * math.log(2), y * math.log(2)
    m = maximum(x, y)
    r = m + log1p(exp(-fabs(x - y)))
    r = where(x.eq(y) & fabs(x).eq(math.inf), x, r)
    if _name(cx) == "logaddexp2":
        r = r * (1 / math.log(2))
    return r.astype(cx.out_dtype).v


@aten("xlogy.Tensor", "xlogy.Scalar_Self", "xlogy.Scalar_Other", "special_xlogy.default",
      "special_xlog1py.default", "special_xlog1py.self_scalar", "special_xlog1py.other_scalar",
      "special_xlogy.self_scalar", "special_xlogy.other_scalar")
def _xlogy(cx, a):
    """x * log(y) (xlog1py: log1p(y)), 0 where x == 0 unless y is NaN."""
    x, y = _pair(cx, a)
    ly = log1p(y) if "xlog1py" in _name(cx) else log(y)
    return where(x.eq(0.0) & ~isnan(y), 0.0, x * ly).astype(cx.out_dtype).v


@aten("heaviside.default")
def _heaviside(cx, a):
    dt = cx.out_dtype
    x, v = _pair(cx, a, "self", "values", dt)
    return where(x.eq(0), v, x.gt(0).astype(dt)).v


@aten("fmax.default", "fmin.default")
def _fmax(cx, a):
    x, y = _pair(cx, a, dtype=cx.out_dtype)
    m = (maximum if _name(cx) == "fmax" else minimum)(x, y)
    if not _is_float(x.dtype):
        return m.v
    return where(isnan(x), y, where(isnan(y), x, m)).v


@aten("float_power.Tensor_Tensor", "float_power.Tensor_Scalar", "float_power.Scalar")
def _float_power(cx, a):
    x, y = _pair(cx, a, "self", "exponent", cx.out_dtype)
    return (x ** y).v


@aten("logical_xor.default", "bitwise_xor.Tensor", "__xor__.Tensor")
def _xor(cx, a):
    if _name(cx) != "logical_xor" and cx.out_dtype != "bool":
        cx.unsupported(f"{_name(cx)} on integers")
    x, y = _pair(cx, a, dtype="bool")
    return x.ne(y).v


@aten("lerp.Scalar", "lerp.Tensor")
def _lerp(cx, a):
    """torch's form: start + w (end - start) for |w| < 0.5, end - (end - start)(1 - w) otherwise."""
    dt = cx.out_dtype
    s, e = _pair(cx, a, "self", "end", dt)
    w = _arg(cx, a, "weight", dt)
    d = e - s
    return where(fabs(w).lt(0.5), s + w * d, e - d * (1.0 - w)).v


@aten("addcmul.default", "addcdiv.default")
def _addcmul(cx, a):
    dt = cx.out_dtype
    s, t1, t2 = (_arg(cx, a, k, dt) for k in ("self", "tensor1", "tensor2"))
    t = t1 * t2 if _name(cx) == "addcmul" else t1 / t2
    value = a.get("value", 1)
    return (s + (t if value == 1 else t * value)).v


# -- activations --------------------------------------------------------------------------------------

@aten("hardsigmoid.default", "hardswish.default")
def _hardsigmoid(cx, a):
    x = X(cx, cx.v(a["self"]))
    h = (x + 3.0).op("clip", min=0.0, max=6.0) / 6.0
    return (h if _name(cx) == "hardsigmoid" else x * h).v


@aten("softplus.default")
def _softplus(cx, a):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (torch)."""
    x = X(cx, cx.v(a["self"]))
    beta, th = float(a["beta"]), float(a["threshold"])
    bx = x.astype("float64") * beta
    sp = (relu(bx) + log1p(exp(-fabs(bx)))) * (1.0 / beta)
    return where(bx.gt(th), x.astype("float64"), sp).astype(cx.out_dtype).v


@aten("mish.default")
def _mish(cx, a):
    x = X(cx, cx.v(a["self"])).astype("float64")
    return (x * tanh(relu(x) + log1p(exp(-fabs(x))))).astype(cx.out_dtype).v


@aten("log_sigmoid_forward.default", "log_sigmoid.default")
def _log_sigmoid(cx, a):
    """-softplus(-x) = min(x, 0) - log1p(exp(-|x|))."""
    x = X(cx, cx.v(a["self"])).astype("float64")
    y = (minimum(x, 0.0) - log1p(exp(-fabs(x)))).astype(cx.out_dtype).v
    return [y, None] if _name(cx) == "log_sigmoid_forward" else y


@aten("hardshrink.default", "softshrink.default")
def _shrink(cx, a):
    x = X(cx, cx.v(a["self"]))
    lam = float(a["lambd"])
    if _name(cx) == "hardshrink":
        return where(fabs(x).gt(lam), x, 0.0).v
    return where(x.gt(lam), x - lam, where(x.lt(-lam), x + lam, 0.0)).v


@aten("threshold.default")
def _threshold(cx, a):
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    return where(x.gt(float(a["threshold"]) if _is_float(dt) else a["threshold"]), x, a["value"]).v


@aten("tanhshrink.default", "softsign.default")
def _tanhshrink(cx, a):
    x = X(cx, cx.v(a["self"]))
    return (x - tanh(x) if _name(cx) == "tanhshrink" else x / (fabs(x) + 1.0)).v


@aten("glu.default")
def _glu(cx, a):
    from tessel.frontend.torch_aten import _dim
    from tessel.frontend.torch_aten_layout import _slice

    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    d = _dim(a["dim"], len(shape))
    h = shape[d] // 2
    first, second = X(cx, _slice(cx, x, d, 0, h)), X(cx, _slice(cx, x, d, h, 2 * h))
    return (first * sigmoid(second)).v


@aten("_prelu_kernel.default", "prelu.default")
def _prelu(cx, a):
    x = X(cx, cx.v(a["self"]))
    w = X(cx, cx.v(a["weight"]))
    if _name(cx) == "prelu" and len(w.shape) == 1 and len(x.shape) >= 2:  # one slope per channel (dim 1)
        w = w.reshape((w.shape[0],) + (1,) * (len(x.shape) - 2))
    return where(x.gt(0.0), x, x * w).v


@aten("rrelu_with_noise.default", "rrelu.default")
def _rrelu(cx, a):
    if a.get("training"):
        cx.unsupported("rrelu in training mode (random slopes; call module.eval() first)")
    x = X(cx, cx.v(a["self"]))
    slope = (float(a["lower"]) + float(a["upper"])) / 2
    return where(x.ge(0.0), x, x * slope).v


@aten("celu.default", "selu.default")
def _celu(cx, a):
    x = X(cx, cx.v(a["self"]))
    if _name(cx) == "selu":
        alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
        return (where(x.gt(0.0), x, (exp(x) - 1.0) * alpha) * scale).v
    alpha = float(a["alpha"])
    return where(x.gt(0.0), x, (exp(x / alpha) - 1.0) * alpha).v

