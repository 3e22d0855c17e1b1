"""Aten ops composed from the op set that fit no other family: mode, histc, isin, angle, ldexp,
frexp, dist, addmv, addbmm, bilinear, and batch norm with batch statistics (training mode, and
instance norm, which torch spells with it).

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(k in converters() for k in ("aten.mode.default", "aten.histc.default", "aten.bilinear.default"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import _dim, aten
from tessel.frontend.torch_aten_expr import X, fabs, floor, isnan, log, where


def _np():
    import numpy as np

    return np


def _name(cx) -> str:
    return cx.node.target._schema.name.split("::")[1]


@aten("mode.default")
def _mode(cx, a):
    """The smallest of the most frequent values along dim, at its last occurrence (as torch)."""
    np = _np()
    x = X(cx, cx.v(a["self"]))
    shape = x.shape
    if not shape:
        return [x.v, cx.const(np.zeros((), np.int64))]
    d = _dim(a["dim"], len(shape))
    keep = bool(a["keepdim"])
    n = shape[d]
    xi = X(cx, cx.reshape(x.v, shape[:d + 1] + (1,) + shape[d + 1:]))  # i on axis d
    xj = X(cx, cx.reshape(x.v, shape[:d] + (1,) + shape[d:]))  # j on axis d + 1
    count = xi.eq(xj).astype("int64").sum([d + 1])  # (.., n_i, ..)
    best = count.op("reduce_max", axes=(d,), keepdims=True)
    big = math.inf if x.dtype.startswith(("float", "bfloat")) else int(np.iinfo(x.dtype).max)
    value = where(count.eq(best), x, big).op("reduce_min", axes=(d,), keepdims=True)
    iota = X(cx, cx.const(np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (len(shape) - d - 1))))
    index = where(x.eq(value), iota, -1).op("reduce_max", axes=(d,), keepdims=True)
    if not keep:
        out = shape[:d] + shape[d + 1:]
        return [value.reshape(out).v, index.reshape(out).v]
    return [value.v, index.v]


@aten("histc.default")
def _histc(cx, a):
    """Counts in `bins` equal bins over [min, max] (the data's range when both are 0; widened by 1
    each side when it is one point); values outside are not counted, max falls in the last bin."""
    np = _np()
    x = X(cx, cx.v(a["self"]))
    dt = x.dtype
    bins = int(a["bins"])
    n = math.prod(x.shape)
    flat = x.reshape((n,))
    lo_v, hi_v = float(a["min"]), float(a["max"])
    if lo_v == hi_v and n:
        lo, hi = flat.op("reduce_min", axes=(0,), keepdims=False), flat.op("reduce_max", axes=(0,), keepdims=False)
        same = lo.eq(hi)
        lo, hi = where(same, lo - 1.0, lo), where(same, hi + 1.0, hi)
    else:
        if lo_v == hi_v:
            lo_v, hi_v = lo_v - 1, hi_v + 1
        lo, hi = X(cx, cx.scalar(lo_v, dt)), X(cx, cx.scalar(hi_v, dt))
    if n == 0:
        return cx.const(np.zeros(bins, dtype=np.float32).astype(_np_dt(dt)))
    pos = ((flat - lo) / (hi - lo) * float(bins)).astype("int64")
    pos = where(flat.eq(hi), bins - 1, pos)
    inside = flat.ge(lo) & flat.le(hi)
    places = X(cx, cx.const(np.arange(bins, dtype=np.int64).reshape(bins, 1)))
    hits = places.eq(pos.reshape((1, n))) & inside.reshape((1, n))
    return hits.astype(dt).sum([1]).v


def _np_dt(dt: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dt)


@aten("isin.Tensor_Tensor", "isin.Tensor_Scalar", "isin.Scalar_Tensor")
def _isin(cx, a):
    from tessel.frontend.torch_aten import _result_dtype

    e, t = a["elements"], a["test_elements"]
    dt = _result_dtype(e, t)
    ev, tv = X(cx, cx.operand(e, dt)), X(cx, cx.operand(t, dt))
    m = math.prod(tv.shape)
    hit = ev.reshape(ev.shape + (1,)).eq(tv.reshape((m,)))
    found = hit.astype("int32").op("reduce_max", axes=(len(ev.shape),), keepdims=False).gt(0) if m else \
        X(cx, cx.const(_np().zeros(ev.shape, bool)))
    return (~found if a["invert"] else found).v


@aten("angle.default")
def _angle(cx, a):
    x = X(cx, cx.cast(cx.v(a["self"]), cx.out_dtype))
    y = where(x.lt(0.0), math.pi, 0.0, like=x)
    return where(isnan(x), x, y).v


@aten("ldexp.Tensor", "ldexp.default")
def _ldexp(cx, a):
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), "float64"))
    e = X(cx, cx.operand(a["other"], "float64"))
    return (x * (2.0 ** e)).astype(dt).v


@aten("frexp.Tensor")
def _frexp(cx, a):
    """x = m * 2^e with 0.5 <= |m| < 1 (m = x, e = 0 for 0, inf and NaN), in float64 then rounded."""
    x = X(cx, cx.cast(cx.v(a["self"]), "float64"))
    ax = fabs(x)
    special = ax.eq(0.0) | ax.eq(math.inf) | isnan(x)
    safe = where(special, 1.0, ax)
    e = floor(log(safe) * (1 / math.log(2))) + 1.0
    m = safe / (2.0 ** e)
    e = where(m.ge(1.0), e + 1.0, where(m.lt(0.5), e - 1.0, e))  # log's last bit
    m = safe / (2.0 ** e)
    m = where(x.lt(0.0), -m, m)
    m = where(special, x, m)
    e = where(special, 0.0, e)
    return [m.astype(_tdt(cx.out_meta[0].dtype)).v, e.astype("int32").v]


def _tdt(torch_dtype) -> str:
    from tessel.frontend.torch import tessel_dtype

    return tessel_dtype(torch_dtype)


@aten("dist.default")
def _dist(cx, a):
    dt = cx.out_dtype
    d = fabs(X(cx, cx.operand(a["self"], dt)) - X(cx, cx.operand(a["other"], dt)))
    rank = len(d.shape)
    p = float(a["p"])
    axes = tuple(range(rank))
    if p == math.inf:
        r = d.op("reduce_max", axes=axes, keepdims=False)
    elif p == -math.inf:
        r = d.op("reduce_min", axes=axes, keepdims=False)
    elif p == 0:
        r = d.ne(0.0).astype(dt).sum(axes)
    else:
        r = (d ** p).sum(axes) ** (1.0 / p)
    return r.reshape(()).v


def _scaled(x: X, k) -> X:
    return x if k == 1 else x * k


@aten("addmv.default", "addbmm.default", "addr.default")
def _addmv(cx, a):
    dt = cx.out_dtype
    name = _name(cx)
    if name == "addmv":
        prod = X(cx, cx.emit("matmul", [cx.v(a["mat"]), cx.v(a["vec"])]))
    elif name == "addr":
        v1, v2 = X(cx, cx.v(a["vec1"])), X(cx, cx.v(a["vec2"]))
        prod = v1.reshape((v1.shape[0], 1)) * v2.reshape((1, v2.shape[0]))
    else:
        prod = X(cx, cx.emit("matmul", [cx.v(a["batch1"]), cx.v(a["batch2"])])).sum([0])
    prod = _scaled(prod.astype(dt), a["alpha"])
    if a["beta"] == 0:
        return X(cx, cx.reshape(prod.v, cx.out_shape)).v if prod.shape != cx.out_shape else prod.v
    out = _scaled(X(cx, cx.cast(cx.v(a["self"]), dt)), a["beta"]) + prod
    return out.v


@aten("bilinear.default")
def _bilinear(cx, a):
    """y[..., o] = sum_ij x1[..., i] W[o, i, j] x2[..., j] + b[o]."""
    x1, x2, w = X(cx, cx.v(a["input1"])), X(cx, cx.v(a["input2"])), X(cx, cx.v(a["weight"]))
    lead = x1.shape[:-1]
    o, i, j = w.shape
    z = X(cx, cx.emit("matmul", [x1.reshape(lead + (1, 1, i)).v, w.v]))  # (..., o, 1, j)
    y = (z * x2.reshape(lead + (1, 1, j))).sum([len(lead) + 1, len(lead) + 2])
    if a["bias"] is not None:
        y = y + X(cx, cx.v(a["bias"]))
    return y.v


@aten("_native_batch_norm_legit_functional.default", "_native_batch_norm_legit.default",
      "_native_batch_norm_legit.no_stats", "native_batch_norm.default", "batch_norm.default",
      "_batch_norm_with_update_functional.default", "_batch_norm_with_update.default")
def _batch_norm_train(cx, a):
    """Batch statistics over every axis but the channel (1): y = (x - mean) / sqrt(var + eps) * w + b
    with the biased variance; the running statistics move by `momentum` toward the mean and the
    unbiased variance. Outputs as torch's op: (y, mean, 1/std[, running mean, running var])."""
    from tessel.frontend.torch_aten import _batch_norm

    training = a.get("training", True)
    if not training:
        outs = _batch_norm(cx, a)
        if _name(cx) == "_native_batch_norm_legit_functional":  # the running statistics stay as they are
            outs = list(outs) + [cx.v(a["running_mean"]), cx.v(a["running_var"])]
        return _fill_empty(cx, outs)
    x = X(cx, cx.v(a["input"]))
    shape = x.shape
    axes = tuple(k for k in range(len(shape)) if k != 1)
    bshape = tuple(s if k == 1 else 1 for k, s in enumerate(shape))
    c = shape[1]
    n = math.prod(shape[k] for k in axes)
    mean = x.op("reduce_mean", axes=axes, keepdims=True)
    dev = x - mean
    var = (dev * dev).op("reduce_mean", axes=axes, keepdims=True)
    eps = float(a["eps"])
    invstd = (var + eps).op("rsqrt")
    y = dev * invstd
    if a["weight"] is not None:
        y = y * X(cx, cx.v(a["weight"])).reshape(bshape)
    if a["bias"] is not None:
        y = y + X(cx, cx.v(a["bias"])).reshape(bshape)
    name = _name(cx)
    if name in ("batch_norm",):
        return y.v
    outs = [y.v, mean.reshape((c,)).v, invstd.reshape((c,)).v]
    rm, rv = a.get("running_mean"), a.get("running_var")
    if "functional" in name or name.startswith("_batch_norm_with_update"):
        mom = float(a["momentum"])
        new_m = X(cx, cx.v(rm)) * (1.0 - mom) + mean.reshape((c,)) * mom if rm is not None else None
        unbiased = var.reshape((c,)) * (n / max(n - 1, 1))
        new_v = X(cx, cx.v(rv)) * (1.0 - mom) + unbiased * mom if rv is not None else None
        stats = [new_m.v if new_m else None, new_v.v if new_v else None]
        if name == "_batch_norm_with_update_functional":
            return outs + [None] + stats  # the reserve (a uint8 workspace) is not computed
        if name == "_batch_norm_with_update":
            return outs + [None]
        return _fill_empty(cx, outs + stats)
    return _fill_empty(cx, outs)


def _fill_empty(cx, outs):
    """Outputs the converter left out (None) that torch gives as empty tensors (the saved statistics
    in eval mode) become empty constants."""
    from tessel.frontend.torch import tessel_dtype

    if not isinstance(outs, list) or not isinstance(cx.out_meta, (list, tuple)):
        return outs
    res = list(outs)
    for k, m in enumerate(cx.out_meta):
        if k < len(res) and res[k] is None and hasattr(m, "shape") and m.numel() == 0:
            res[k] = cx.const(_np().zeros(tuple(m.shape), _np_dt(tessel_dtype(m.dtype))))
    return res


@aten("segment_reduce.default", "_segment_reduce.default")
def _segment_reduce(cx, a):
    """Reduce the segments of `data` along axis 0 given by lengths or offsets (tensors, data): a
    mask (segments x elements) from the segment bounds; `initial` joins every segment's reduction."""
    from tessel.frontend.torch_aten_scan import scan

    np = _np()
    reduce, axis, initial = a["reduce"], int(a["axis"]), a["initial"]
    if axis != 0 or a.get("indices") is not None:
        cx.unsupported("segment_reduce along an axis other than 0, or with indices")
    data = X(cx, cx.v(a["data"]))
    dt = data.dtype
    nel = data.shape[0]
    if a.get("lengths") is not None:
        lengths = X(cx, cx.cast(cx.v(a["lengths"]), "int64"))
        ends = scan([lengths], len(lengths.shape) - 1, [0], lambda e, l: [e[0] + l[0]])[0]
        starts = ends - lengths
    else:
        off = cx.cast(cx.v(a["offsets"]), "int64")
        k = cx.g.values[off].shape[-1]
        from tessel.frontend.torch_aten_layout import _slice

        starts, ends = X(cx, _slice(cx, off, 0, 0, k - 1)), X(cx, _slice(cx, off, 0, 1, k))
    if len(starts.shape) != 1:
        cx.unsupported("segment_reduce with batched lengths or offsets")
    s = starts.shape[0]
    rest = data.shape[1:]
    j = X(cx, cx.const(np.arange(nel, dtype=np.int64).reshape(1, nel)))
    mask = (j.ge(starts.reshape((s, 1))) & j.lt(ends.reshape((s, 1)))).reshape((s, nel) + (1,) * len(rest))
    d = data.reshape((1, nel) + rest)
    if reduce in ("max", "min"):
        ident = -math.inf if reduce == "max" else math.inf
        r = where(mask, d, ident).op(f"reduce_{reduce}", axes=(1,), keepdims=False)
        if initial is not None:
            r = r.op("maximum" if reduce == "max" else "minimum", float(initial))
        return r.astype(dt).v
    if reduce == "sum":
        r = where(mask, d, 0.0).sum([1])
        return (r + float(initial) if initial is not None else r).v
    if reduce == "mean" and initial is None:
        count = mask.astype(dt).sum([1])
        return (where(mask, d, 0.0).sum([1]) / count).v
    cx.unsupported(f"segment_reduce '{reduce}' with initial {initial}")
