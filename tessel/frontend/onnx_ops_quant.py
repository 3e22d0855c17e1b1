"""ONNX quantisation ops onto the op set, with onnx's reference arithmetic:

- `QuantizeLinear`: y = saturate(rint(x / scale) + zero_point) to the integer type of the zero
  point (uint8 when absent, or `output_dtype`); scale and zero point per tensor, per axis (1-D along
  `axis`) or blocked (`block_size` along `axis`: block j covers elements j*block_size...);
- `DequantizeLinear`: y = (x - zero_point) * scale in float32, as the scale's dtype (or `output_dtype`);
- `DynamicQuantizeLinear`: uint8 with scale (max(0, max x) - min(0, min x)) / 255 and the zero point
  that maps the minimum to 0;
- `MatMulInteger` and `ConvInteger`: (a - a_zero) (x) (b - b_zero) in int32;
- `QLinearMatMul` and `QLinearConv`: the int32 product or convolution (plus QLinearConv's int32
  bias), times a_scale * b_scale / y_scale, rounded half to even, plus y_zero_point, saturated.

rint is round half to even (`onnx_ops.round_half_even`). 4-bit and 8-bit float types have no tessel
dtype and are refused as such.

Example:
    >>> all(op in CONVERTERS for op in ("QuantizeLinear", "QLinearMatMul", "ConvInteger"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import (  # noqa: F401 - CONVERTERS: the docstring
    CONVERTERS, cast, converter, ins, norm_axis, opt, reshape, round_half_even, scalar,
)
from tessel.frontend.onnx_ops_tensor import take
from tessel.ir.dtypes import int_range, is_int


def _broadcast_param(ctx, p, x, axis: int, block: int, what: str):
    """Scale or zero point `p` shaped to broadcast against x: a scalar stays, a 1-D one lies along
    `axis`, a blocked one (same rank as x) is repeated block times along `axis`."""
    shape, ps = ctx.shape(x), ctx.shape(p)
    if len(ps) == 0 or int(np.prod(ps)) == 1 and not block:
        return reshape(ctx, p, ())
    axis = norm_axis(ctx, axis, len(shape))  # it matters only now
    if block:
        if len(ps) != len(shape):
            raise ctx.unsupported(f"blocked {what} of shape {ps} for an input of shape {shape}")
        idx = [i // block for i in range(shape[axis])]
        if idx[-1] >= ps[axis]:
            raise ctx.unsupported(f"{what} of shape {ps} has too few blocks of {block} along axis {axis}")
        return take(ctx, p, idx, axis)
    if len(ps) != 1 or ps[0] != shape[axis]:
        raise ctx.unsupported(f"{what} of shape {ps} for axis {axis} of an input of shape {shape}")
    return reshape(ctx, p, tuple(shape[axis] if d == axis else 1 for d in range(len(shape))))


def _div(ctx, a, b) -> str:
    """a / b correctly rounded to their float dtype: computed in float64 (exact enough that rounding
    it once more gives the correctly rounded quotient) so no reciprocal trick can move a tie."""
    from tessel.frontend.op_library.common import promote

    dt = promote("div", [ctx.dtype(a), ctx.dtype(b)])
    return cast(ctx, ctx.op("div", [cast(ctx, a, "float64"), cast(ctx, b, "float64")]), dt)


def _saturate(ctx, v, dt: str) -> str:
    """int32 `v` clipped to the range of integer dtype `dt` and cast to it."""
    lo, hi = int_range(dt)
    return cast(ctx, ctx.op("clip", [v], min=max(lo, -(2**31)), max=min(hi, 2**31 - 1)), dt)


def _requantize(ctx, acc, factor, zp, dt: str) -> str:
    """saturate(rint(acc * factor) + zp): acc int32, factor a float32 Graph value; the product in
    float64, as numpy computes int32 times float32."""
    r = round_half_even(ctx, ctx.op("mul", [cast(ctx, acc, "float64"), cast(ctx, factor, "float64")]))
    q = cast(ctx, r, "int32")
    if zp is not None:
        q = ctx.op("add", [q, cast(ctx, zp, "int32")])
    return _saturate(ctx, q, dt)


def _output_dtype(ctx, node, zp, default: str = "uint8") -> str:
    from tessel.frontend.onnx_import import onnx_dtype

    if zp is not None:
        return ctx.dtype(zp)
    od = ctx.attr(node, "output_dtype", 0)
    return onnx_dtype(od, f"{ctx.where()} attribute 'output_dtype'") if od else default


@converter("QuantizeLinear")
def _quantize(ctx, node):
    vals = ins(ctx, node)
    x, scale, zp = vals[0], vals[1], opt(vals, 2)
    dt = _output_dtype(ctx, node, zp)
    if not is_int(dt):
        raise ctx.unsupported(f"quantising to {dt}")
    axis = int(ctx.attr(node, "axis", 1))
    block = int(ctx.attr(node, "block_size", 0) or 0)
    s = _broadcast_param(ctx, scale, x, axis, block, "y_scale")
    precision = ctx.attr(node, "precision", 0)
    if precision:
        from tessel.frontend.onnx_import import onnx_dtype

        p = onnx_dtype(precision, f"{ctx.where()} attribute 'precision'")
        x, s = cast(ctx, x, p), cast(ctx, s, p)
    q = cast(ctx, round_half_even(ctx, _div(ctx, x, s)), "int32")
    if zp is not None:
        q = ctx.op("add", [q, cast(ctx, _broadcast_param(ctx, zp, x, axis, block, "y_zero_point"), "int32")])
    return [_saturate(ctx, q, dt)]


@converter("DequantizeLinear")
def _dequantize(ctx, node):
    vals = ins(ctx, node)
    x, scale, zp = vals[0], vals[1], opt(vals, 2)
    if not is_int(ctx.dtype(x)):
        raise ctx.unsupported(f"dequantising {ctx.dtype(x)}")
    axis = int(ctx.attr(node, "axis", 1))
    block = int(ctx.attr(node, "block_size", 0) or 0)
    dx = cast(ctx, x, "float32")
    if zp is not None:
        dx = ctx.op("sub", [dx, cast(ctx, _broadcast_param(ctx, zp, x, axis, block, "x_zero_point"), "float32")])
    y = ctx.op("mul", [dx, _broadcast_param(ctx, scale, x, axis, block, "x_scale")])
    od = ctx.attr(node, "output_dtype", 0)
    if od:
        from tessel.frontend.onnx_import import onnx_dtype

        return [cast(ctx, y, onnx_dtype(od, f"{ctx.where()} attribute 'output_dtype'"))]
    return [cast(ctx, y, ctx.dtype(scale))]


@converter("DynamicQuantizeLinear")
def _dynamic_quantize(ctx, node):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    axes = tuple(range(len(ctx.shape(x))))
    zero = scalar(ctx, 0.0, dt)
    hi = ctx.op("maximum", [ctx.op("reduce_max", [x], axes=axes, keepdims=False), zero])
    lo = ctx.op("minimum", [ctx.op("reduce_min", [x], axes=axes, keepdims=False), zero])
    span = ctx.op("sub", [hi, lo])
    span = ctx.op("where", [ctx.op("eq", [hi, lo]), scalar(ctx, 1.0, dt), span])
    y_scale = _div(ctx, span, scalar(ctx, 255.0, dt))
    zp = ctx.op("clip", [ctx.op("sub", [zero, _div(ctx, lo, y_scale)])], min=0.0, max=255.0)
    zpi = round_half_even(ctx, zp)
    y = ctx.op("clip", [ctx.op("add", [round_half_even(ctx, _div(ctx, x, y_scale)), zpi])], min=0.0, max=255.0)
    return [cast(ctx, y, "uint8"), y_scale, cast(ctx, zpi, "uint8")]


def _minus_zero(ctx, v, zp, axis_of_vector: int | None):
    """int32(v) - int32(zp); a 1-D zero point lies along `axis_of_vector` of v (None: the last)."""
    v32 = cast(ctx, v, "int32")
    if zp is None:
        return v32
    z = cast(ctx, zp, "int32")
    zs, rank = ctx.shape(z), len(ctx.shape(v))
    if len(zs) == 1 and zs[0] > 1 and axis_of_vector is not None:
        a = axis_of_vector % rank
        z = reshape(ctx, z, tuple(zs[0] if d == a else 1 for d in range(rank)))
    elif int(np.prod(zs)) == 1:
        z = reshape(ctx, z, ())
    return ctx.op("sub", [v32, z])


@converter("MatMulInteger")
def _matmul_integer(ctx, node):
    vals = ins(ctx, node)
    a, b = vals[0], vals[1]
    return [ctx.op("matmul", [_minus_zero(ctx, a, opt(vals, 2), -2), _minus_zero(ctx, b, opt(vals, 3), None)])]


@converter("QLinearMatMul")
def _qlinear_matmul(ctx, node):
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = ins(ctx, node)
    acc = ctx.op("matmul", [_minus_zero(ctx, a, a_zp, -2), _minus_zero(ctx, b, b_zp, None)])
    factor = _div(ctx, ctx.op("mul", [cast(ctx, a_s, "float32"), cast(ctx, b_s, "float32")]),
                  cast(ctx, y_s, "float32"))
    return [_requantize(ctx, acc, factor, y_zp, ctx.dtype(y_zp) if y_zp is not None else ctx.dtype(a))]


@converter("ConvInteger")
def _conv_integer(ctx, node):
    from tessel.frontend.onnx_ops_nn import conv

    vals = ins(ctx, node)
    x, w = vals[0], vals[1]
    return [conv(ctx, node, _minus_zero(ctx, x, opt(vals, 2), 1), _minus_zero(ctx, w, opt(vals, 3), 0))]


@converter("QLinearConv")
def _qlinear_conv(ctx, node):
    from tessel.frontend.onnx_ops_nn import conv

    vals = ins(ctx, node)
    x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp = vals[:8]
    bias = opt(vals, 8)
    acc = conv(ctx, node, _minus_zero(ctx, x, x_zp, 1), _minus_zero(ctx, w, w_zp, 0),
               cast(ctx, bias, "int32") if bias is not None else None)
    ws = cast(ctx, w_s, "float32")
    if int(np.prod(ctx.shape(ws))) > 1:  # per output channel: along axis 1 of the result
        ws = reshape(ctx, ws, (ctx.shape(ws)[0],) + (1,) * (len(ctx.shape(acc)) - 2))
    else:
        ws = reshape(ctx, ws, ())
    factor = _div(ctx, ctx.op("mul", [cast(ctx, x_s, "float32"), ws]), cast(ctx, y_s, "float32"))
    return [_requantize(ctx, acc, factor, y_zp, ctx.dtype(y_zp) if y_zp is not None else ctx.dtype(x))]
