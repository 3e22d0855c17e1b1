"""More ONNX ops composed from the op set: `Det` (Leibniz's sum over permutations, for matrices up to
5x5), MaxPool's `Indices` output (the window's taps as strided slices of the padded input: the
maximum, and the flat index of its first occurrence in row-major window order, written row- or
column-major by `storage_order`), `MelWeightMatrix` (a constant: its output shape depends on its
inputs, which must be known at import time) and the `ai.onnx.ml` ops `Binarizer` and
`ArrayFeatureExtractor`, and `TensorScatter` (a KV-cache write: a gather of the update where it lands).

Example:
    >>> all(op in CONVERTERS for op in ("Det", "MelWeightMatrix", "ai.onnx.ml.Binarizer"))
    True
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, cast, const_ints, converter, ins, norm_axis, reshape, scalar  # noqa: F401
from tessel.frontend.onnx_ops_tensor import slice_axis, take

MAX_DET = 5  # n! products of n entries


@converter("Det")
def _det(ctx, node):
    (x,) = ins(ctx, node)
    xs = ctx.shape(x)
    n = xs[-1]
    if len(xs) < 2 or xs[-2] != n:
        raise ctx.unsupported(f"input of shape {xs}: Det takes (..., n, n)")
    if n > MAX_DET:
        raise ctx.unsupported(f"{n}x{n} matrices (Leibniz's formula: up to {MAX_DET}x{MAX_DET})")
    dt = ctx.dtype(x)
    x64 = cast(ctx, x, "float64")
    entry = {(i, j): reshape(ctx, take(ctx, take(ctx, x64, [i], len(xs) - 2), [j], len(xs) - 1), xs[:-2])
             for i in range(n) for j in range(n)}
    total = None
    for perm in itertools.permutations(range(n)):
        inversions = sum(1 for a in range(n) for b in range(a + 1, n) if perm[a] > perm[b])
        term = entry[(0, perm[0])]
        for i in range(1, n):
            term = ctx.op("mul", [term, entry[(i, perm[i])]])
        if total is None:
            total = term if inversions % 2 == 0 else ctx.op("neg", [term])
        else:
            total = ctx.op("sub" if inversions % 2 else "add", [total, term])
    return [cast(ctx, total, dt)]


def max_pool_with_indices(ctx, node, x, kernel, strides, dilations, pads, ceil_mode: bool):
    """MaxPool's two outputs (values, int64 flat indices into x) for 1 or 2 spatial dims."""
    xs = ctx.shape(x)
    nd = len(xs) - 2
    if nd not in (1, 2):
        raise ctx.unsupported(f"the Indices output of a {nd}-D pool (1-D and 2-D only)")
    spatial = xs[2:]
    outs, ends = [], []
    for d in range(nd):
        span = (kernel[d] - 1) * dilations[d] + 1
        room = spatial[d] + pads[d] + pads[nd + d] - span
        o = (-(-room // strides[d]) if ceil_mode else room // strides[d]) + 1
        outs.append(o)
        ends.append(max(pads[nd + d], (o - 1) * strides[d] + span - spatial[d] - pads[d]))
    dt = ctx.dtype(x)
    low = -math.inf if dt.startswith(("float", "bfloat")) else int(np.iinfo(np.dtype(dt)).min)
    padded = ctx.op("pad", [x], pads=(0, 0) + tuple(pads[:nd]) + (0, 0) + tuple(ends), value=low)
    plane = int(np.prod(spatial))
    base = (np.arange(xs[0] * xs[1], dtype=np.int64) * plane).reshape(xs[0], xs[1], *([1] * nd))
    values, keys = [], []
    for tap in itertools.product(*[range(k) for k in kernel]):
        v = padded
        pos = []
        for d in range(nd):
            start = tap[d] * dilations[d]
            v = slice_axis(ctx, v, 2 + d, start, start + (outs[d] - 1) * strides[d] + 1, strides[d])
            pos.append(np.arange(outs[d]) * strides[d] + start - pads[d])  # unpadded coordinate
        grid = np.meshgrid(*pos, indexing="ij")
        inside = np.all([(g >= 0) & (g < s) for g, s in zip(grid, spatial)], axis=0)
        flat = np.ravel_multi_index([np.clip(g, 0, s - 1) for g, s in zip(grid, spatial)], spatial)
        key = np.where(inside, flat, np.iinfo(np.int64).max)  # a padding cell never wins a tie
        values.append(reshape(ctx, v, ctx.shape(v) + (1,)))
        keys.append(key.reshape(1, 1, *outs, 1) + base.reshape(xs[0], xs[1], *([1] * nd), 1))
    stacked = values[0] if len(values) == 1 else ctx.op("concat", values, axis=2 + nd)
    y = ctx.op("reduce_max", [stacked], axes=(2 + nd,), keepdims=True)
    key = ctx.const(np.concatenate(keys, axis=-1), "tap_index")
    first = ctx.op("reduce_min", [ctx.op("where", [ctx.op("eq", [stacked, y]), key,
                                                    scalar(ctx, np.iinfo(np.int64).max, "int64")])],
                   axes=(2 + nd,), keepdims=False)
    if int(ctx.attr(node, "storage_order", 0)) == 1 and nd == 2:  # column-major within each plane
        h, w = spatial
        def divmod_(a, d):  # a >= 0: integer div truncates, which is floor here
            q = ctx.op("div", [a, scalar(ctx, d, "int64")])
            return q, ctx.op("sub", [a, ctx.op("mul", [q, scalar(ctx, d, "int64")])])

        within = divmod_(first, plane)[1]
        row, col = divmod_(within, w)
        first = ctx.op("add", [ctx.op("sub", [first, within]),
                               ctx.op("add", [ctx.op("mul", [col, scalar(ctx, h, "int64")]), row])])
    return [reshape(ctx, y, ctx.shape(y)[:-1]), first]


@converter("MelWeightMatrix")
def _mel_weight_matrix(ctx, node):
    """onnx's reference definition (mel steps of (high - low) / (bins + 2), in the inputs' precision),
    evaluated in numpy at import time."""
    from tessel.frontend.onnx_import import onnx_dtype

    vals = ins(ctx, node)
    n_mel, dft, rate = (const_ints(ctx, v, what)[0] for v, what in zip(vals[:3], ("num_mel_bins", "dft_length",
                                                                                  "sample_rate")))
    lo, hi = (np.asarray(ctx.need_const(v, what)).reshape(()) for v, what in zip(vals[3:5], ("lower_edge_hertz",
                                                                                             "upper_edge_hertz")))
    dt = onnx_dtype(int(ctx.attr(node, "output_datatype", 1)), f"{ctx.where()} attribute 'output_datatype'")
    n_bins = dft // 2 + 1
    low_mel = 2595 * np.log1p(lo / 700) / np.log(10)
    high_mel = 2595 * np.log1p(hi / 700) / np.log(10)
    step = (high_mel - low_mel) / (n_mel + 2)
    hz = 700 * np.expm1((np.arange(n_mel + 2) * step + low_mel) / 2595 * np.log(10))
    bins = (((dft + 1) * hz) // rate).astype(np.int64)
    out = np.zeros((n_bins, n_mel), np.float64)
    for i in range(n_mel):
        lower, center, upper = bins[i], bins[i + 1], bins[i + 2]
        if center - lower == 0:
            out[center, i] = 1
        else:
            for j in range(lower, center + 1):
                out[j, i] = (j - lower) / (center - lower)
        if upper - center > 0:
            for j in range(center, upper):
                out[j, i] = (upper - j) / (upper - center)
    from tessel.frontend.onnx_ops import np_of

    return [ctx.const(out.astype(np_of(dt)), "mel_weights")]


# -- ai.onnx.ml -------------------------------------------------------------------------------------

def _ml(name):
    def deco(f):
        CONVERTERS[f"ai.onnx.ml.{name}"] = f
        return f

    return deco


@_ml("Binarizer")
def _binarizer(ctx, node):
    (x,) = ins(ctx, node)
    dt = ctx.dtype(x)
    hit = ctx.op("gt", [x, scalar(ctx, float(ctx.attr(node, "threshold", 0.0)), dt)])
    return [ctx.op("where", [hit, scalar(ctx, 1, dt), scalar(ctx, 0, dt)])]


@_ml("ArrayFeatureExtractor")
def _array_feature_extractor(ctx, node):
    """x's last axis gathered at the (run-time) indices; a 1-D x gives (1, n)."""
    x, idx = ins(ctx, node)
    xs = ctx.shape(x)
    idx = reshape(ctx, cast(ctx, idx, "int64"), (int(np.prod(ctx.shape(idx))),))
    y = ctx.op("gather", [x, idx], axis=len(xs) - 1)
    return [reshape(ctx, y, (1,) + ctx.shape(y)) if len(xs) == 1 else y]


@converter("TensorScatter")
def _tensor_scatter(ctx, node):
    """The cache with the update written along `axis` from each batch row's write index (circular:
    wrapping around the cache length): per cache position p of row b, offset i = p - index[b]; where
    0 <= i < update length the update's element i is gathered (flat indices), elsewhere the cache's."""
    vals = ins(ctx, node)
    past, upd = vals[0], vals[1]
    ps, us = ctx.shape(past), ctx.shape(upd)
    axis = norm_axis(ctx, ctx.attr(node, "axis", -2), len(ps))
    if axis == 0:
        raise ctx.unsupported("axis 0 (the batch axis)")
    mode = ctx.attr(node, "mode", "linear")
    if mode not in ("linear", "circular"):
        raise ctx.unsupported(f"mode {mode!r}")
    m, s = ps[axis], us[axis]
    rank = len(ps)
    wi = vals[2] if len(vals) > 2 and vals[2] is not None else ctx.const(np.zeros(ps[0], np.int64), "zeros")
    wi = reshape(ctx, cast(ctx, wi, "int64"), (ps[0],) + (1,) * (rank - 1))
    pos = ctx.const(np.arange(m, dtype=np.int64).reshape([m if d == axis else 1 for d in range(rank)]), "positions")
    off = ctx.op("sub", [pos, wi])
    if mode == "circular":  # off in (-m, m): (off + m) mod m with a truncating div of a positive number
        mm = scalar(ctx, m, "int64")
        up = ctx.op("add", [off, mm])
        off = ctx.op("sub", [up, ctx.op("mul", [ctx.op("div", [up, mm]), mm])])
    hit = ctx.op("logical_and", [ctx.op("ge", [off, scalar(ctx, 0, "int64")]),
                                 ctx.op("lt", [off, scalar(ctx, s, "int64")])])
    src = ctx.op("where", [hit, off, scalar(ctx, 0, "int64")])
    strides = [int(np.prod(us[d + 1:], dtype=np.int64)) for d in range(rank)]
    coords = np.indices(ps, dtype=np.int64)
    base = sum(coords[d] * strides[d] for d in range(rank) if d != axis) + np.zeros(ps, np.int64)
    flat = ctx.op("add", [ctx.op("mul", [src, scalar(ctx, strides[axis], "int64")]), ctx.const(base, "offsets")])
    taken = ctx.op("gather", [reshape(ctx, upd, (int(np.prod(us)),)), flat], axis=0)
    return [ctx.op("where", [hit, taken, past])]
