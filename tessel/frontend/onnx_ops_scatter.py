"""ONNX scatters: `ScatterElements` (and the old `Scatter`) and `ScatterND`, with every reduction.

The op set has no scatter, so a scatter is a gather turned around: each update's flat target row
is computed, a mask compares every data row with every target (rows x updates, bounded by
MAX_MASK), and each row combines the updates that hit it (reduction none: the update replaces
the row; add/mul/max/min: combined with the row). ONNX leaves duplicate targets undefined for
reduction none; here they would add up.

Example:
    >>> all(op in CONVERTERS for op in ("ScatterElements", "ScatterND", "Scatter"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, cast, converter, ins, norm_axis, reshape, scalar  # noqa: F401
from tessel.frontend.onnx_ops_tensor import _nonneg_indices, _nonneg_indices_per_dim, _numel

MAX_MASK = 1 << 24  # rows x updates: past this a scatter would need a real scatter kernel


def _scatter_rows(ctx, data, rows, upd, reduction: str) -> str:
    """data (R, S), rows (U,) int64 targets, upd (U, S) -> data with upd's rows combined into it."""
    r, s = ctx.shape(data)
    u = ctx.shape(rows)[0]
    if r * u > MAX_MASK:
        raise ctx.unsupported(f"a scatter of {u} updates into {r} rows (mask above {MAX_MASK} cells)")
    dt = ctx.dtype(data)
    iota = ctx.const(np.arange(r, dtype=np.int64).reshape(r, 1, 1), "rows")
    hit = ctx.op("eq", [iota, reshape(ctx, rows, (1, u, 1))])  # (R, U, 1)
    any_hit = ctx.op("reduce_max", [cast(ctx, hit, "int32")], axes=(1,), keepdims=False)  # (R, 1)
    any_hit = ctx.op("ne", [any_hit, scalar(ctx, 0, "int32")])
    u3 = reshape(ctx, upd, (1, u, s))

    def combined(ident, op):
        return ctx.op(op, [ctx.op("where", [hit, u3, scalar(ctx, ident, dt)])], axes=(1,), keepdims=False)

    if reduction in ("none", "add"):
        total = combined(0, "reduce_sum")
        if reduction == "add":
            return ctx.op("add", [data, total])
        return ctx.op("where", [any_hit, total, data])
    if reduction == "mul":
        from tessel.frontend.onnx_ops_nn import log_domain_product

        picked = ctx.op("where", [hit, u3, scalar(ctx, 1, dt)])
        prod = log_domain_product(ctx, picked, lambda v: ctx.op("reduce_sum", [v], axes=(1,), keepdims=False))
        return ctx.op("mul", [data, prod])
    if reduction in ("max", "min"):
        big = np.inf if dt.startswith("float") else np.iinfo(np.dtype(dt)).max
        ident = -big if reduction == "max" else big
        best = combined(ident, "reduce_" + reduction)
        both = ctx.op("maximum" if reduction == "max" else "minimum", [data, best])
        return ctx.op("where", [any_hit, both, data])
    raise ctx.unsupported(f"reduction '{reduction}'")


@converter("ScatterElements", "Scatter")
def _scatter_elements(ctx, node):
    data, idx, upd = ins(ctx, node)
    ds, us = ctx.shape(data), ctx.shape(idx)
    axis = norm_axis(ctx, ctx.attr(node, "axis", 0), len(ds))
    idx = cast(ctx, _nonneg_indices(ctx, idx, ds[axis]), "int64")
    strides = np.array([_numel(ds[d + 1:]) for d in range(len(ds))], np.int64)
    coords = np.indices(us, dtype=np.int64)
    offset = sum(coords[d] * strides[d] for d in range(len(ds)) if d != axis) + np.zeros(us, np.int64)
    flat = ctx.op("add", [ctx.op("mul", [idx, scalar(ctx, strides[axis], "int64")]), ctx.const(offset, "offsets")])
    n, m = _numel(ds), _numel(us)
    out = _scatter_rows(ctx, reshape(ctx, data, (n, 1)), reshape(ctx, flat, (m,)), reshape(ctx, upd, (m, 1)),
                        ctx.attr(node, "reduction", "none"))
    return [reshape(ctx, out, ds)]


@converter("ScatterND")
def _scatter_nd(ctx, node):
    data, idx, upd = ins(ctx, node)
    ds, ishape = ctx.shape(data), ctx.shape(idx)
    k = ishape[-1]
    idx = cast(ctx, _nonneg_indices_per_dim(ctx, idx, ds[:k]), "int64")
    strides = np.array([_numel(ds[d + 1:k]) for d in range(k)], np.int64)
    flat = ctx.op("reduce_sum", [ctx.op("mul", [idx, ctx.const(strides, "strides")])], axes=(len(ishape) - 1,),
                  keepdims=False)
    rows, width, m = _numel(ds[:k]), _numel(ds[k:]), _numel(ishape[:-1])
    out = _scatter_rows(ctx, reshape(ctx, data, (rows, width)), reshape(ctx, flat, (m,)),
                        reshape(ctx, upd, (m, width)), ctx.attr(node, "reduction", "none"))
    return [reshape(ctx, out, ds)]
