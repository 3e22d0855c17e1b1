"""ONNX ops composed from the op set that fit nowhere else: `TopK` (by ranking: every element's
rank is the number of elements before it in the order, ties by index, and output j gathers the
element of rank j), `LRN` (a channel-window sum of squares by padded slices), and
`BatchNormalization` in training mode (batch statistics and the running-statistics outputs),
`Col2Im` (a product with the constant 0/1 matrix that sends each column entry to its pixel) and
`MaxUnpool` (a scatter of the values to their recorded flat positions), `ReverseSequence` (a gather at
flat indices computed from the lengths).

Example:
    >>> all(op in CONVERTERS for op in ("TopK", "LRN", "Col2Im", "MaxUnpool"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, cast, const_ints, converter, ins, norm_axis, reshape, scalar  # noqa: F401
from tessel.frontend.onnx_ops_tensor import slice_axis

MAX_PAIRS = 1 << 24  # elements x axis extent: the ranking compares every pair along the axis


def _move_last(ctx, v, axis):
    rank = len(ctx.shape(v))
    perm = [d for d in range(rank) if d != axis] + [axis]
    return v if perm == list(range(rank)) else ctx.op("transpose", [v], perm=tuple(perm))


def _move_back(ctx, v, axis):
    rank = len(ctx.shape(v))
    perm = list(range(rank - 1))
    perm.insert(axis, rank - 1)
    return v if perm == list(range(rank)) else ctx.op("transpose", [v], perm=tuple(perm))


@converter("TopK")
def _top_k(ctx, node):
    x, kv = ins(ctx, node)
    shape = ctx.shape(x)
    axis = norm_axis(ctx, ctx.attr(node, "axis", -1), len(shape))
    k = const_ints(ctx, kv, "K")[0]
    n = shape[axis]
    if int(np.prod(shape)) * n > MAX_PAIRS:
        raise ctx.unsupported(f"TopK over an axis of {n} on {int(np.prod(shape))} elements (pairwise ranking)")
    largest = bool(ctx.attr(node, "largest", 1))
    xl = _move_last(ctx, x, axis)  # (..., n)
    lead = ctx.shape(xl)[:-1]
    xi = reshape(ctx, xl, lead + (n, 1))  # element i
    xm = reshape(ctx, xl, lead + (1, n))  # against element m
    before = ctx.op("gt" if largest else "lt", [xm, xi])
    earlier = ctx.const(np.arange(n)[None, :] < np.arange(n)[:, None], "earlier")  # [i, m]: m < i
    before = ctx.op("logical_or", [before, ctx.op("logical_and", [ctx.op("eq", [xm, xi]), earlier])])
    rank = ctx.op("reduce_sum", [cast(ctx, before, "int64")], axes=(len(lead) + 1,), keepdims=True)  # (..., n, 1)
    hit = ctx.op("eq", [rank, ctx.const(np.arange(k, dtype=np.int64).reshape(1, k), "ranks")])  # (..., n, k)
    dt = ctx.dtype(x)
    values = ctx.op("reduce_sum", [ctx.op("where", [hit, xi, scalar(ctx, 0, dt)])], axes=(len(lead),),
                    keepdims=False)
    iota = ctx.const(np.arange(n, dtype=np.int64).reshape(n, 1), "iota")
    indices = ctx.op("reduce_sum", [ctx.op("where", [hit, iota, scalar(ctx, 0, "int64")])], axes=(len(lead),),
                     keepdims=False)
    return [_move_back(ctx, values, axis), _move_back(ctx, indices, axis)]


@converter("LRN")
def _lrn(ctx, node):
    """y = x / (bias + alpha / size * sum of x^2 over the channel window) ^ beta."""
    (x,) = ins(ctx, node)
    shape = ctx.shape(x)
    size = int(ctx.attr(node, "size"))
    alpha, beta = float(ctx.attr(node, "alpha", 1e-4)), float(ctx.attr(node, "beta", 0.75))
    bias = float(ctx.attr(node, "bias", 1.0))
    dt = ctx.dtype(x)
    c = shape[1]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    pads = [0] * (2 * len(shape))
    pads[1], pads[len(shape) + 1] = lo, hi
    sq = ctx.op("pad", [ctx.op("mul", [x, x])], pads=tuple(pads), value=0.0)
    total = None
    for s in range(size):
        part = slice_axis(ctx, sq, 1, s, s + c)
        total = part if total is None else ctx.op("add", [total, part])
    base = ctx.op("add", [scalar(ctx, bias, dt), ctx.op("mul", [total, scalar(ctx, alpha / size, dt)])])
    return [ctx.op("div", [x, ctx.op("pow", [base, scalar(ctx, beta, dt)])])]


def batch_norm_training(ctx, node, x, scale, bias, mean, var) -> list:
    """training_mode=1: normalise with the batch's mean and (population) variance over every axis
    but the channel's; outputs Y and the running statistics mean * momentum + batch * (1 - momentum)."""
    shape = ctx.shape(x)
    axes = tuple(d for d in range(len(shape)) if d != 1)
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    momentum = float(ctx.attr(node, "momentum", 0.9))
    dt = ctx.dtype(x)
    bmean = ctx.op("reduce_mean", [x], axes=axes, keepdims=True)
    dev = ctx.op("sub", [x, bmean])
    bvar = ctx.op("reduce_mean", [ctx.op("mul", [dev, dev])], axes=axes, keepdims=True)
    per = (1, shape[1]) + (1,) * (len(shape) - 2)
    inv = ctx.op("rsqrt", [ctx.op("add", [bvar, scalar(ctx, eps, dt)])])
    y = ctx.op("add", [ctx.op("mul", [ctx.op("mul", [dev, inv]), reshape(ctx, scale, per)]), reshape(ctx, bias, per)])
    outs = [y]
    for running, batch in ((mean, bmean), (var, bvar)):
        b = reshape(ctx, batch, (shape[1],))
        outs.append(ctx.op("add", [ctx.op("mul", [running, scalar(ctx, momentum, dt)]),
                                   ctx.op("mul", [b, scalar(ctx, 1.0 - momentum, dt)])]))
    return outs[:len(node.output)]


@converter("Col2Im")
def _col2im(ctx, node):
    x, image, block = ins(ctx, node)
    image, block = const_ints(ctx, image, "image_shape"), const_ints(ctx, block, "block_shape")
    nd = len(image)
    dil = ctx.attr(node, "dilations") or [1] * nd
    pads = ctx.attr(node, "pads") or [0] * (2 * nd)
    strides = ctx.attr(node, "strides") or [1] * nd
    n, ck, length = ctx.shape(x)
    k = int(np.prod(block))
    c = ck // k
    counts = [(image[d] + pads[d] + pads[nd + d] - (dil[d] * (block[d] - 1) + 1)) // strides[d] + 1 for d in range(nd)]
    pixels = int(np.prod(image))
    if int(np.prod(counts)) != length or k * length * pixels > MAX_PAIRS:
        raise ctx.unsupported(f"{length} columns for {counts} blocks (or a map above {MAX_PAIRS} cells)")
    m = np.zeros((k, length, pixels), np.dtype(ctx.dtype(x)))
    for kk, off in enumerate(np.ndindex(*block)):
        for ll, pos in enumerate(np.ndindex(*counts)):
            at = [pos[d] * strides[d] + off[d] * dil[d] - pads[d] for d in range(nd)]
            if all(0 <= at[d] < image[d] for d in range(nd)):
                m[kk, ll, np.ravel_multi_index(at, image)] = 1.0
    cols = reshape(ctx, x, (n, c, k * length))
    out = ctx.op("matmul", [cols, ctx.const(m.reshape(k * length, pixels), "col2im")])
    return [reshape(ctx, out, (n, c) + tuple(image))]


@converter("MaxUnpool")
def _max_unpool(ctx, node):
    """Zeros of the inferred shape with X's values at the flat positions I records (MaxPool's
    indices count over the whole tensor), zero-padded at the end to output_shape when given."""
    from tessel.frontend.onnx_ops_scatter import _scatter_rows

    vals = ins(ctx, node)
    x, idx = vals[0], vals[1]
    xs = ctx.shape(x)
    nd = len(xs) - 2
    kernel = ctx.attr(node, "kernel_shape")
    strides = ctx.attr(node, "strides") or [1] * nd
    pads = ctx.attr(node, "pads") or [0] * (2 * nd)
    inferred = xs[:2] + tuple((xs[2 + d] - 1) * strides[d] + kernel[d] - pads[d] - pads[nd + d] for d in range(nd))
    m, total = int(np.prod(xs)), int(np.prod(inferred))
    zeros = ctx.const(np.zeros((total, 1), np.dtype(ctx.dtype(x))), "unpooled")
    y = reshape(ctx, _scatter_rows(ctx, zeros, reshape(ctx, cast(ctx, idx, "int64"), (m,)), reshape(ctx, x, (m, 1)),
                                   "none"), inferred)
    if len(vals) > 2 and vals[2] is not None:
        out = const_ints(ctx, vals[2], "output_shape")
        extra = [o - i for o, i in zip(out, inferred)]
        if any(e < 0 for e in extra):
            raise ctx.unsupported(f"output_shape {tuple(out)} smaller than the inferred {inferred}")
        if any(extra):
            y = ctx.op("pad", [y], pads=tuple([0] * len(out) + extra), value=0.0)
    return [y]


@converter("ReverseSequence")
def _reverse_sequence(ctx, node):
    """Along the time axis, batch row b's first sequence_lens[b] elements reversed, the rest kept: a
    gather from the flattened x at flat indices computed from the lengths (at run time)."""
    x, lens = ins(ctx, node)
    xs = ctx.shape(x)
    t_ax = norm_axis(ctx, ctx.attr(node, "time_axis", 0), len(xs))
    b_ax = norm_axis(ctx, ctx.attr(node, "batch_axis", 1), len(xs))
    if t_ax == b_ax or len(xs) < 2:
        raise ctx.unsupported(f"time_axis {t_ax} and batch_axis {b_ax} of a rank-{len(xs)} input")
    t_shape = [xs[t_ax] if d == t_ax else 1 for d in range(len(xs))]
    b_shape = [xs[b_ax] if d == b_ax else 1 for d in range(len(xs))]
    t = ctx.const(np.arange(xs[t_ax], dtype=np.int64).reshape(t_shape), "time")
    n = reshape(ctx, cast(ctx, lens, "int64"), tuple(b_shape))
    rev = ctx.op("sub", [ctx.op("sub", [n, scalar(ctx, 1, "int64")]), t])
    src = ctx.op("where", [ctx.op("lt", [t, n]), rev, t])  # time index read, per (time, batch)
    strides = [int(np.prod(xs[d + 1:], dtype=np.int64)) for d in range(len(xs))]
    coords = np.indices(xs, dtype=np.int64)
    offset = sum(coords[d] * strides[d] for d in range(len(xs)) if d != t_ax) + np.zeros(xs, np.int64)
    flat = ctx.op("add", [ctx.op("mul", [src, scalar(ctx, strides[t_ax], "int64")]), ctx.const(offset, "offsets")])
    return [ctx.op("gather", [reshape(ctx, x, (int(np.prod(xs)),)), flat], axis=0)]
