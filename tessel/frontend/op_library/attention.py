"""Scaled dot-product attention as one op: softmax(q k^T * scale + mask) v, as torch's
`scaled_dot_product_attention` defines it (layout (batch..., L, E) for q, (batch..., S, E) for k
and (batch..., S, Ev) for v; batch dims broadcast).

It stays one op in the graph so that a later pass can map it onto one fused tensor-core kernel;
this lowering is the plain one: scores, row max, exp, row sum, and the weighted sum of v divided
by the row sum, all in float32 for half inputs. `scale` defaults to 1/sqrt(E). `is_causal` keeps
key j for query i when j <= i (torch's top-left alignment). The optional mask broadcasts to
(batch..., L, S): a bool mask keeps where True, a float mask is added to the scores. A row with
every key masked gives NaN, as in torch.

Example:
    >>> from tessel.frontend.graph import Value
    >>> q = Value("q", (2, 4, 8), "float32"); k = Value("k", (2, 6, 8), "float32")
    >>> get_op("sdpa").infer([q, k, Value("v", (2, 6, 3), "float32")], {})
    [((2, 4, 3), 'float32')]
"""

from __future__ import annotations

import math

from tessel.errors import DTypeError, ShapeError
from tessel.frontend.op_library.common import (
    bload, broadcast_shapes, check_inputs, compute_dtype, f64, need_float, promote, to_np,
)
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.ir import dsl
from tessel.ir.dtypes import is_bool, is_float


def _np():
    import numpy as np

    return np


def _shapes(q, k, v, mask):
    """(batch shape, L, S, E, Ev) with every input checked."""
    for i, t in enumerate((q, k, v)):
        if len(t.shape) < 2:
            raise ShapeError(f"sdpa: input {i} has shape {tuple(t.shape)}; expected (batch..., seq, features)")
    L, E = q.shape[-2:]
    S, Ek = k.shape[-2:]
    Sv, Ev = v.shape[-2:]
    if Ek != E:
        raise ShapeError(f"sdpa: input 1 (key) dim {len(k.shape) - 1} is {Ek} but input 0 (query) dim "
                         f"{len(q.shape) - 1} is {E}")
    if Sv != S:
        raise ShapeError(f"sdpa: input 2 (value) dim {len(v.shape) - 2} is {Sv} but input 1 (key) dim "
                         f"{len(k.shape) - 2} is {S}")
    batch = broadcast_shapes("sdpa", [tuple(q.shape[:-2]), tuple(k.shape[:-2]), tuple(v.shape[:-2])], [0, 1, 2])
    if mask is not None:
        want = batch + (L, S)
        if broadcast_shapes("sdpa", [want, tuple(mask.shape)], [0, 3]) != want:
            raise ShapeError(f"sdpa: input 3 (mask) shape {tuple(mask.shape)} does not broadcast to the score "
                             f"shape {want}")
    return batch, L, S, E, Ev


def _scale(attrs: dict, E: int) -> float:
    s = attrs.get("scale")
    return 1.0 / math.sqrt(E) if s is None else float(s)


@register("sdpa", "opaque")
class SDPA:
    """softmax(q k^T * scale + mask) v (see the module docstring)."""

    @staticmethod
    def infer(inputs, attrs):
        q, k, v, mask = check_inputs("sdpa", inputs, 3, 1)
        for i, t in enumerate((q, k, v)):
            need_float("sdpa", t.dtype, i)
        if mask is not None and not (is_bool(mask.dtype) or is_float(mask.dtype)):
            raise DTypeError(f"sdpa: input 3 (mask) has dtype {mask.dtype}; expected bool or a float")
        batch, L, _, _, Ev = _shapes(q, k, v, mask)
        return [(batch + (L, Ev), promote("sdpa", [q.dtype, k.dtype, v.dtype]))]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        q, k, v, mask = check_inputs("sdpa", inputs, 3, 1)
        shape, dt = outs[0]
        c = compute_dtype(dt)
        batch, L, S, E, Ev = _shapes(q, k, v, mask)
        nb = len(batch)
        sshape = batch + (L, S)
        scale = _scale(attrs, E)
        causal = bool(attrs.get("is_causal", False))
        n = names[0]

        def rd(t, b, *rest):  # read q/k/v at batch index b (broadcast) and trailing indices
            return t[tuple(0 if t.shape[d] == 1 else b[nb - (t.ndim - 2) + d] for d in range(t.ndim - 2)) + rest]

        re = dsl.reduce_axis(E, name="re")
        qk = dsl.compute(sshape, lambda *o: dsl.sum(rd(q, o[:nb], o[nb], re).astype(c) *
                                                    rd(k, o[:nb], o[nb + 1], re).astype(c), axis=re),
                         name=f"{n}_qk")

        def score(*o):
            s = qk[o] * scale
            keep = None
            if mask is not None and is_bool(mask.dtype):
                keep = bload(mask, sshape, o)
            elif mask is not None:
                s = s + bload(mask, sshape, o).astype(c)
            if causal:
                keep = o[nb + 1] <= o[nb] if keep is None else keep & (o[nb + 1] <= o[nb])
            return dsl.where(keep, s, float("-inf")) if keep is not None else s

        s = dsl.compute(sshape, score, name=f"{n}_score")
        rm = dsl.reduce_axis(S, name="rm")
        mx = dsl.compute(batch + (L,), lambda *o: dsl.max(s[o + (rm,)], axis=rm), name=f"{n}_max")
        e = dsl.compute(sshape, lambda *o: dsl.exp(s[o] - mx[o[:-1]]), name=f"{n}_exp")
        rs = dsl.reduce_axis(S, name="rs")
        den = dsl.compute(batch + (L,), lambda *o: dsl.sum(e[o + (rs,)], axis=rs), name=f"{n}_sum")
        rv = dsl.reduce_axis(S, name="rv")
        num = dsl.compute(shape, lambda *o: dsl.sum(e[o[:-1] + (rv,)] * rd(v, o[:nb], rv, o[-1]).astype(c), axis=rv),
                          name=f"{n}_pv")
        return [dsl.compute(shape, lambda *o: (num[o] / den[o[:-1]]).astype(dt), name=n)]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        q, k, v = (f64(a) for a in arrays[:3])
        mask = arrays[3] if len(arrays) > 3 else None
        L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
        scores = np.matmul(q, np.swapaxes(k, -1, -2)) * _scale(attrs, E)
        if mask is not None:
            mask = np.asarray(mask)
            scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + f64(mask)
        if attrs.get("is_causal", False):
            scores = np.where(np.tril(np.ones((L, S), bool)), scores, -np.inf)
        with np.errstate(invalid="ignore"):
            z = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p = z / z.sum(axis=-1, keepdims=True)
        dt = promote("sdpa", [np.asarray(a).dtype.name for a in arrays[:3]])
        return [to_np(np.matmul(p, v), dt)]
