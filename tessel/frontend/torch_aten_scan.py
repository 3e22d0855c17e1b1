"""Scans and the reductions the op set lacks, as aten converters: cumsum, cumprod, cummax/cummin
(with indices), logcumsumexp, prod, logsumexp, aminmax, nansum/nanmean, count_nonzero and the
vector norms of order 0, -inf and below zero.

Scans are Hillis-Steele prefix scans: log2(n) steps, each combining every element with the one
`shift` places before it (a slice padded with the identity), so the whole scan is elementwise ops
and no element is added to more than log2(n) partial results. prod halves the axis the same way
(padded with ones to a power of two) until one element is left.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(k in converters() for k in ("aten.cumsum.default", "aten.prod.dim_int", "aten.logsumexp.default"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import _dim, _dims, aten
from tessel.frontend.torch_aten_expr import X, exp, fabs, isnan, log, where
from tessel.frontend.torch_aten_layout import _slice


def _name(cx) -> str:
    return cx.node.target._schema.name.split("::")[1]


def _shift(x: X, d: int, s: int, fill) -> X:
    """y[i] = x[i - s] along axis d (fill for i < s)."""
    cx = x.cx
    n = x.shape[d]
    part = _slice(cx, x.v, d, 0, n - s)
    pads = [0] * (2 * len(x.shape))
    pads[d] = s
    return X(cx, cx.emit("pad", [part], pads=tuple(pads), value=fill))


def scan(xs: list, d: int, fills: list, combine) -> list:
    """Inclusive prefix scan of the tuple of values `xs` along axis d: combine(earlier, later) -> tuple,
    an associative operation whose identity is `fills`."""
    n = xs[0].shape[d]
    s = 1
    while s < n:
        earlier = [_shift(x, d, s, f) for x, f in zip(xs, fills)]
        xs = list(combine(earlier, xs))
        s *= 2
    return xs


def _min_value(dt: str):
    import numpy as np

    return -math.inf if dt.startswith(("float", "bfloat")) else int(np.iinfo(dt).min) if dt != "bool" else 0


@aten("cumsum.default", "cumprod.default", "logcumsumexp.default")
def _cumulative(cx, a):
    name = _name(cx)
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    if not x.shape:
        return x.v if name != "logcumsumexp" else x.v
    d = _dim(a["dim"], len(x.shape))
    if x.shape[d] == 0:
        return x.v
    if name == "cumsum":
        return scan([x], d, [0], lambda e, l: [e[0] + l[0]])[0].v
    if name == "cumprod":
        return scan([x], d, [1], lambda e, l: [e[0] * l[0]])[0].v
    wide = x.astype("float64")

    def lse(e, l):
        a_, b_ = e[0], l[0]
        m = a_.op("maximum", b_)
        both_inf = a_.eq(b_) & fabs(a_).eq(math.inf)
        r = m + log(exp(-fabs(a_ - b_)) + 1.0)
        return [where(both_inf, a_, r)]

    return scan([wide], d, [-math.inf], lse)[0].astype(dt).v


@aten("cummax.default", "cummin.default")
def _cummax(cx, a):
    """Values and indices: a later element wins when it is NaN, or when neither is NaN and it is at
    least as large (cummin: as small), as torch's loop does."""
    is_max = _name(cx) == "cummax"
    x = X(cx, cx.v(a["self"]))
    shape = x.shape
    if not shape:
        return [x.v, cx.const(_zeros_i64(()))]
    d = _dim(a["dim"], len(shape))
    import numpy as np

    idx = X(cx, cx.const(np.broadcast_to(np.arange(shape[d], dtype=np.int64).reshape(
        [-1 if k == d else 1 for k in range(len(shape))]), shape).copy()))
    if shape[d] == 0:
        return [x.v, idx.v]
    dt = x.dtype
    is_float = dt.startswith(("float", "bfloat"))
    fill = _min_value(dt) if is_max else (math.inf if is_float else int(np.iinfo(dt).max) if dt != "bool" else 1)

    def combine(e, l):
        ev, ei = e
        lv, li = l
        better = lv.ge(ev) if is_max else lv.le(ev)
        if is_float:
            better = isnan(lv) | (~isnan(ev) & better)
        return [where(better, lv, ev), where(better, li, ei)]

    vals, inds = scan([x, idx], d, [fill, -1], combine)
    return [vals.v, inds.v]


def _zeros_i64(shape):
    import numpy as np

    return np.zeros(shape, np.int64)


@aten("prod.default", "prod.dim_int")
def _prod(cx, a):
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    rank = len(x.shape)
    axes = _dims(a.get("dim"), rank) if "dim" in a else tuple(range(rank))
    keep = bool(a.get("keepdim", False))
    for d in axes:
        x = _prod_axis(x, d)
    if not keep:
        x = x.reshape(cx.out_shape)
    return x.v


def _prod_axis(x: X, d: int) -> X:
    """x with axis d reduced to extent 1 by the product: padded with ones to a power of two, halved."""
    cx = x.cx
    n = x.shape[d]
    p = 1 << max(0, (n - 1).bit_length())
    if p != n:
        pads = [0] * (2 * len(x.shape))
        pads[len(x.shape) + d] = p - n
        x = X(cx, cx.emit("pad", [x.v], pads=tuple(pads), value=1))
    while p > 1:
        p //= 2
        x = X(cx, _slice(cx, x.v, d, 0, p)) * X(cx, _slice(cx, x.v, d, p, 2 * p))
    return x


@aten("logsumexp.default")
def _logsumexp(cx, a):
    """max + log(sum(exp(x - max))); a max of +-inf gives itself (no inf - inf)."""
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    if not x.shape:
        return x.v
    axes = _dims(a["dim"], len(x.shape))
    keep = bool(a["keepdim"])
    wide = x.astype("float64")
    m = wide.op("reduce_max", axes=axes, keepdims=True)
    safe = where(fabs(m).eq(math.inf), 0.0, m)
    s = log(exp(wide - safe).sum(axes, keepdims=True)) + safe
    s = where(m.eq(math.inf), math.inf, s)
    if not keep:
        s = s.reshape(cx.out_shape)
    return s.astype(dt).v


@aten("aminmax.default")
def _aminmax(cx, a):
    x = X(cx, cx.v(a["self"]))
    rank = len(x.shape)
    axes = _dims(a["dim"], rank) if a["dim"] is not None else tuple(range(rank))
    keep = bool(a["keepdim"])
    lo = x.op("reduce_min", axes=axes, keepdims=keep)
    hi = x.op("reduce_max", axes=axes, keepdims=keep)
    return [lo.reshape(cx.out_meta[0].shape).v, hi.reshape(cx.out_meta[1].shape).v]


@aten("nansum.default", "nanmean.default")
def _nansum(cx, a):
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    rank = len(x.shape)
    axes = _dims(a["dim"], rank)
    keep = bool(a["keepdim"])
    if not dt.startswith(("float", "bfloat")):
        return x.sum(axes, keep).v
    ok = ~isnan(x)
    s = where(ok, x, 0.0).sum(axes, keep)
    if _name(cx) == "nansum":
        return s.v
    return (s / ok.astype(dt).sum(axes, keep)).v


@aten("count_nonzero.dim_IntList", "count_nonzero.default")
def _count_nonzero(cx, a):
    x = X(cx, cx.v(a["self"]))
    rank = len(x.shape)
    dim = a.get("dim")
    axes = _dims(dim, rank) if dim is not None else tuple(range(rank))
    nz = x.ne(0) if x.dtype != "bool" else x
    return nz.astype("int64").sum(axes).reshape(cx.out_shape).v


@aten("linalg_vector_norm.default")
def _vector_norm(cx, a):
    """sum(|x|^p)^(1/p) for every order: 0 counts the nonzeros, +-inf are the max/min of |x|."""
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    axes, keep, p = _dims(a["dim"], len(x.shape)), bool(a["keepdim"]), float(a["ord"])
    ax = fabs(x)
    if p == math.inf:
        return ax.op("reduce_max", axes=axes, keepdims=keep).v
    if p == -math.inf:
        return ax.op("reduce_min", axes=axes, keepdims=keep).v
    if p == 0:
        return ax.ne(0.0).astype(dt).sum(axes, keep).v
    if p == 1:
        return ax.sum(axes, keep).v
    if p == 2:
        return (x * x).sum(axes, keep).op("sqrt").v
    return ((ax ** p).sum(axes, keep) ** (1.0 / p)).v
