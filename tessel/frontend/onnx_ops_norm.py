"""ONNX normalisation converters (into onnx_ops.CONVERTERS): batch, layer, RMS, instance, group, Lp.

Norms that the op set lacks (instance, group) are layer_norm over the right axes plus a per-channel
affine. Split out of onnx_ops_nn.py, which holds contractions, pooling, softmax and reductions.

Example:
    >>> from tessel.frontend.onnx_ops import CONVERTERS
    >>> all(op in CONVERTERS for op in ("BatchNormalization", "LayerNormalization", "GroupNormalization"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import cast, converter, ins, norm_axis, opt, reshape, scalar


def _per_channel(ctx, v, rank: int) -> str:
    """A (C,) operand shaped (C, 1, ..., 1) to broadcast against (N, C, *spatial)."""
    return reshape(ctx, v, ctx.shape(v) + (1,) * (rank - 2))


@converter("BatchNormalization")
def _batch_norm(ctx, node):
    x, scale, bias, mean, var = ins(ctx, node)[:5]
    if int(ctx.attr(node, "training_mode", 0)) or any(o for o in node.output[1:]):
        if ctx.version(node) < 14:
            raise ctx.unsupported("the statistics outputs of opset < 14 (saved mean and variance)")
        from tessel.frontend.onnx_ops_misc import batch_norm_training

        return batch_norm_training(ctx, node, x, scale, bias, mean, var)
    return [ctx.op("batch_norm", [x, scale, bias, mean, var], eps=float(ctx.attr(node, "epsilon", 1e-5)))]


def _stash(ctx, node, x):
    """LayerNormalization-style `stash_type`: compute half precision inputs in float32."""
    if ctx.dtype(x) in ("float16", "bfloat16") and int(ctx.attr(node, "stash_type", 1)) == 1:
        return cast(ctx, x, "float32")
    return x


def _layer_norm(ctx, x, axes, eps, weight=None, bias=None) -> str:
    """layer_norm over `axes` (trailing); weight/bias expanded to the normalised shape."""
    norm_shape = tuple(ctx.shape(x)[a] for a in axes)
    extra = []
    for v in (weight, bias):
        if v is None:
            break
        v = cast(ctx, v, ctx.dtype(x))
        if ctx.shape(v) != norm_shape:
            v = reshape(ctx, v, (1,) * (len(norm_shape) - len(ctx.shape(v))) + ctx.shape(v))
            v = ctx.op("expand", [v], shape=norm_shape)
        extra.append(v)
    return ctx.op("layer_norm", [x] + extra, axes=tuple(axes), eps=float(eps))


@converter("LayerNormalization")
def _layer_norm_conv(ctx, node):
    vals = ins(ctx, node)
    x, scale, bias = vals[0], vals[1], opt(vals, 2)
    rank = len(ctx.shape(x))
    axis = norm_axis(ctx, ctx.attr(node, "axis", -1), rank)
    axes = tuple(range(axis, rank))
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    xc = _stash(ctx, node, x)
    if not any(node.output[1:]):
        return [cast(ctx, _layer_norm(ctx, xc, axes, eps, scale, bias), ctx.dtype(x))]
    # Mean and InvStdDev are wanted too: spell the normalisation out
    dt = ctx.dtype(xc)
    mean = ctx.op("reduce_mean", [xc], axes=axes, keepdims=True)
    d = ctx.op("sub", [xc, mean])
    var = ctx.op("reduce_mean", [ctx.op("mul", [d, d])], axes=axes, keepdims=True)
    inv = ctx.op("rsqrt", [ctx.op("add", [var, scalar(ctx, eps, dt)])])
    y = ctx.op("mul", [ctx.op("mul", [d, inv]), cast(ctx, scale, dt)])
    if bias is not None:
        y = ctx.op("add", [y, cast(ctx, bias, dt)])
    return [cast(ctx, y, ctx.dtype(x)), mean, inv]


@converter("RMSNormalization")
def _rms_norm(ctx, node):
    x, scale = ins(ctx, node)[:2]
    rank = len(ctx.shape(x))
    axis = norm_axis(ctx, ctx.attr(node, "axis", -1), rank)
    axes = tuple(range(axis, rank))
    xc = _stash(ctx, node, x)
    norm_shape = ctx.shape(x)[axis:]
    w = cast(ctx, scale, ctx.dtype(xc))
    if ctx.shape(w) != norm_shape:
        w = ctx.op("expand", [reshape(ctx, w, (1,) * (len(norm_shape) - len(ctx.shape(w))) + ctx.shape(w))],
                   shape=norm_shape)
    y = ctx.op("rms_norm", [xc, w], axes=axes, eps=float(ctx.attr(node, "epsilon", 1e-5)))
    return [cast(ctx, y, ctx.dtype(x))]


@converter("InstanceNormalization")
def _instance_norm(ctx, node):
    x, scale, bias = ins(ctx, node)
    rank = len(ctx.shape(x))
    y = _layer_norm(ctx, x, tuple(range(2, rank)), ctx.attr(node, "epsilon", 1e-5))
    y = ctx.op("mul", [y, _per_channel(ctx, scale, rank)])
    return [ctx.op("add", [y, _per_channel(ctx, bias, rank)])]


@converter("GroupNormalization")
def _group_norm(ctx, node):
    x, scale, bias = ins(ctx, node)
    shape = ctx.shape(x)
    n, c, rank = shape[0], shape[1], len(shape)
    g = int(ctx.attr(node, "num_groups"))
    xc = _stash(ctx, node, x)
    y = reshape(ctx, xc, (n, g, int(np.prod(shape[1:])) // g))
    y = reshape(ctx, _layer_norm(ctx, y, (2,), ctx.attr(node, "epsilon", 1e-5)), shape)
    y = cast(ctx, y, ctx.dtype(x))
    if ctx.version(node) < 21:  # scale and bias per group: repeat each over its channels
        scale, bias = (reshape(ctx, ctx.op("expand", [reshape(ctx, v, (g, 1))], shape=(g, c // g)), (c,))
                       for v in (scale, bias))
    y = ctx.op("mul", [y, _per_channel(ctx, scale, rank)])
    return [ctx.op("add", [y, _per_channel(ctx, bias, rank)])]


@converter("LpNormalization")
def _lp_norm(ctx, node):
    (x,) = ins(ctx, node)
    axis = norm_axis(ctx, ctx.attr(node, "axis", -1), len(ctx.shape(x)))
    p = int(ctx.attr(node, "p", 2))
    if p == 1:
        norm = ctx.op("reduce_sum", [ctx.op("abs", [x])], axes=(axis,), keepdims=True)
    elif p == 2:
        norm = ctx.op("sqrt", [ctx.op("reduce_sum", [ctx.op("mul", [x, x])], axes=(axis,), keepdims=True)])
    else:
        raise ctx.unsupported(f"p={p}")
    dt = ctx.dtype(x)
    # an all-zero slice has norm 0: divide by 1 there so that it stays 0 (as onnx's reference does)
    norm = ctx.op("where", [ctx.op("eq", [norm, scalar(ctx, 0, dt)]), scalar(ctx, 1, dt), norm])
    return [ctx.op("div", [x, norm])]
