"""Scatters and indexed writes as aten converters: index_put (index tensors or a boolean mask),
scatter / scatter_add / scatter_reduce, index_add / index_copy / index_fill / index_reduce,
masked_scatter, put and take.

The op set has no scatter, so a scatter is a gather turned around (as the ONNX importer does it):
the data is seen as rows (R, S), each update u has a flat target row; a mask compares every row with
every target (R x U cells, bounded by MAX_CELLS) and each row combines the updates that hit it.
Without a reduction the last update that hits a row wins (what torch's serial CPU loop leaves);
add/prod/amax/amin/mean combine them (with the row itself unless include_self is false).

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(k in converters() for k in ("aten.index_put.default", "aten.scatter.src", "aten.masked_scatter.default"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import _dim, aten
from tessel.frontend.torch_aten_expr import X, where
from tessel.frontend.torch_aten_layout import _broadcast_to, _slice

MAX_CELLS = 1 << 24


def _np():
    import numpy as np

    return np


def _is_float(dt: str) -> bool:
    return dt.startswith("float") or dt == "bfloat16"


def _extreme(dt: str, big: bool):
    np = _np()
    if _is_float(dt):
        return math.inf if big else -math.inf
    if dt == "bool":
        return 1 if big else 0
    info = np.iinfo(dt)
    return int(info.max if big else info.min)


def scatter_rows(cx, data: str, rows: str, upd: str, mode: str = "none", include_self: bool = True) -> str:
    """data (R, S) with the rows of upd (U, S) written to rows (U,) int64 (nonnegative): mode "none"
    (the last update wins), "add", "prod", "amax", "amin" or "mean"."""
    from tessel.frontend.torch_aten_scan import _prod_axis

    np = _np()
    r, s = cx.g.values[data].shape
    u = cx.g.values[rows].shape[0]
    if u == 0:
        return data
    if r * u * max(s, 1) > MAX_CELLS and mode != "none" or r * u > MAX_CELLS:
        cx.unsupported(f"a scatter of {u} updates into {r} rows of {s} (mask above {MAX_CELLS} cells)")
    d, up = X(cx, data), X(cx, upd)
    dt = d.dtype
    hit = X(cx, cx.const(np.arange(r, dtype=np.int64).reshape(r, 1))).eq(X(cx, rows).reshape((1, u)))  # (R, U)
    if mode == "none":
        last = where(hit, X(cx, cx.const(np.arange(u, dtype=np.int64))), -1).op("reduce_max", axes=(1,),
                                                                               keepdims=True)  # (R, 1)
        picked = X(cx, cx.emit("gather", [upd, cx.reshape(last.op("maximum", 0).v, (r,))], axis=0))
        return where(last.ge(0), picked, d).v
    h3 = hit.reshape((r, u, 1))
    u3 = up.reshape((1, u, s))
    anyhit = hit.astype("int32").op("reduce_max", axes=(1,), keepdims=True).gt(0)  # (R, 1)
    if mode in ("add", "mean"):
        total = where(h3, u3, 0).sum([1])
        if mode == "add":
            return (d + total).v if include_self else where(anyhit, total, d).v
        count = hit.astype(dt).sum([1], keepdims=True)
        if include_self:
            return ((d + total) / (count + 1)).v
        return where(anyhit, total / where(anyhit, count, 1), d).v
    if mode == "prod":
        p = X(cx, cx.reshape(_prod_axis(where(h3, u3, 1), 1).v, (r, s)))
        return (d * p).v if include_self else where(anyhit, p, d).v
    if mode in ("amax", "amin"):
        best = where(h3, u3, _extreme(dt, mode == "amin")).op("reduce_max" if mode == "amax" else "reduce_min",
                                                              axes=(1,), keepdims=False)
        both = d.op("maximum" if mode == "amax" else "minimum", best) if include_self else best
        return where(anyhit, both, d).v
    cx.unsupported(f"scatter reduction '{mode}'")


_REDUCE = {"sum": "add", "add": "add", "prod": "prod", "multiply": "prod", "amax": "amax", "amin": "amin",
           "mean": "mean"}


def _wrap(cx, idx: str, n: int) -> str:
    """Indices with negative ones counted from the end (n is the extent they index)."""
    i = X(cx, cx.cast(idx, "int64"))
    return where(i.lt(0), i + n, i).v


def _flat_index(cx, idx: str, n: int) -> str:
    """A 0-d or 1-d index tensor as 1-d int64 indices into an extent n, negative ones wrapped."""
    return cx.reshape(_wrap(cx, idx, n), (math.prod(cx.g.values[idx].shape),))


def _scatter_elements(cx, x: str, d: int, index: str, src: str, mode: str, include_self: bool = True) -> str:
    """torch.scatter(x, d, index, src) with src cut to index's shape (torch reads only that part)."""
    np = _np()
    shape, ishape = cx.g.values[x].shape, cx.g.values[index].shape
    if not shape:
        x, index, src = cx.reshape(x, (1,)), cx.reshape(index, (1,)), cx.reshape(src, (1,))
        return cx.reshape(_scatter_elements(cx, x, 0, index, src, mode, include_self), ())
    if 0 in ishape:
        return x
    sshape = cx.g.values[src].shape
    for k, n in enumerate(ishape):
        if sshape[k] != n:
            src = _slice(cx, src, k, 0, n)
    strides = [math.prod(shape[k + 1:]) for k in range(len(shape))]
    coords = np.indices(ishape, dtype=np.int64)
    offset = sum(coords[k] * strides[k] for k in range(len(shape)) if k != d) + np.zeros(ishape, np.int64)
    flat = X(cx, _wrap(cx, index, shape[d])) * strides[d] + X(cx, cx.const(offset))
    m = math.prod(ishape)
    out = scatter_rows(cx, cx.reshape(x, (math.prod(shape), 1)), cx.reshape(flat.v, (m,)),
                       cx.reshape(src, (m, 1)), mode, include_self)
    return cx.reshape(out, shape)


@aten("scatter.src", "scatter.value", "scatter.reduce", "scatter.value_reduce", "scatter_add.default",
      "scatter_reduce.two")
def _scatter(cx, a):
    dt = cx.out_dtype
    x = cx.cast(cx.v(a["self"]), dt)
    d = _dim(a["dim"], len(cx.g.values[x].shape))
    index = cx.v(a["index"])
    if "src" in a:
        src = cx.cast(cx.v(a["src"]), dt)
    else:  # a scalar value, as large as the index
        src = _broadcast_to(cx, cx.scalar(a["value"], dt), cx.g.values[index].shape)
    name = cx.node.target._schema.name.split("::")[1]
    mode = "add" if name == "scatter_add" else _REDUCE.get(a.get("reduce") or "", "none")
    if a.get("reduce") and a["reduce"] not in _REDUCE:
        cx.unsupported(f"scatter reduction '{a['reduce']}'")
    return _scatter_elements(cx, x, d, index, src, mode, bool(a.get("include_self", True)))


def _rows_along(cx, x: str, d: int) -> tuple:
    """x with axis d first, flattened to rows (shape[d], rest), and the function that undoes it."""
    shape = cx.g.values[x].shape
    rank = len(shape)
    perm = (d,) + tuple(k for k in range(rank) if k != d)
    moved = cx.emit("transpose", [x], perm=perm) if d else x
    mshape = tuple(shape[k] for k in perm)
    rows = cx.reshape(moved, (mshape[0], math.prod(mshape[1:])))

    def undo(v: str) -> str:
        v = cx.reshape(v, mshape)
        if not d:
            return v
        inv = tuple(perm.index(k) for k in range(rank))
        return cx.emit("transpose", [v], perm=inv)

    return rows, undo


@aten("index_add.default", "index_copy.default", "index_reduce.default")
def _index_add(cx, a):
    dt = cx.out_dtype
    x = cx.cast(cx.v(a["self"]), dt)
    shape = cx.g.values[x].shape
    src = cx.cast(cx.v(a["source"]), dt)
    if not shape:
        x, src = cx.reshape(x, (1,)), cx.reshape(src, (1,))
    d = _dim(a["dim"], len(cx.g.values[x].shape))
    name = cx.node.target._schema.name.split("::")[1]
    index = _flat_index(cx, cx.v(a["index"]), cx.g.values[x].shape[d])
    if name == "index_add" and a.get("alpha", 1) != 1:
        src = (X(cx, src) * a["alpha"]).v
    rows, undo = _rows_along(cx, x, d)
    srows, _ = _rows_along(cx, src, d)
    mode = {"index_add": "add", "index_copy": "none"}.get(name) or _REDUCE[a["reduce"]]
    out = undo(scatter_rows(cx, rows, index, srows, mode, bool(a.get("include_self", True))))
    return cx.reshape(out, cx.out_shape)


@aten("index_fill.int_Scalar", "index_fill.int_Tensor")
def _index_fill(cx, a):
    np = _np()
    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    shape = x.shape
    d = _dim(a["dim"], len(shape)) if shape else 0
    n = shape[d] if shape else 1
    idx = X(cx, _flat_index(cx, cx.v(a["index"]), n))
    hit = X(cx, cx.const(np.arange(n, dtype=np.int64).reshape(n, 1))).eq(idx.reshape((1, idx.shape[0])))
    mask = hit.astype("int32").op("reduce_max", axes=(1,), keepdims=False).gt(0)
    if shape:
        mask = mask.reshape(tuple(n if k == d else 1 for k in range(len(shape))))
    else:
        mask = mask.reshape(())
    value = X(cx, cx.operand(a["value"], dt))
    return where(mask, value, x).v


@aten("index_put.default", "_unsafe_index_put.default", "index_put_.default")
def _index_put(cx, a):
    """x[i0, i1, ...] = values (accumulate: +=) with adjacent index tensors (None for a full slice),
    or x[mask] = values for a boolean mask when values is one number (the masked count is data)."""
    dt = cx.out_dtype
    x = cx.cast(cx.v(a["self"]), dt)
    shape = cx.g.values[x].shape
    vals = cx.cast(cx.v(a["values"]), dt)
    idx = list(a["indices"])
    pos = [k for k, i in enumerate(idx) if i is not None]
    acc = bool(a["accumulate"])
    if any(cx.val(idx[k]).dtype == "bool" for k in pos):
        if len(pos) != 1:
            cx.unsupported("index_put with a boolean mask and other index tensors")
        return _index_put_mask(cx, x, X(cx, cx.v(idx[pos[0]])), pos[0], vals, acc)
    if pos != list(range(pos[0], pos[0] + len(pos))):
        cx.unsupported("index_put with non-adjacent index tensors")
    d0, dims = pos[0], shape[pos[0]:pos[0] + len(pos)]
    bshape = _bshape([cx.val(idx[k]).shape for k in pos])
    flat = None
    for k, d in enumerate(pos):
        i = X(cx, _broadcast_to(cx, _wrap(cx, cx.v(idx[d]), shape[d]), bshape))
        stride = math.prod(dims[k + 1:])
        i = i * stride if stride != 1 else i
        flat = i if flat is None else flat + i
    pre, post = shape[:d0], shape[d0 + len(pos):]
    u = math.prod(bshape)
    data = cx.reshape(x, pre + (math.prod(dims),) + post)
    rows, undo = _rows_along(cx, data, len(pre))
    full = _broadcast_to(cx, vals, pre + bshape + post)
    upd = cx.reshape(full, pre + (u,) + post)
    urows, _ = _rows_along(cx, upd, len(pre))
    out = undo(scatter_rows(cx, rows, cx.reshape(flat.v, (u,)), urows, "add" if acc else "none"))
    return cx.reshape(out, shape)


def _index_put_mask(cx, x: str, m: X, k0: int, vals: str, acc: bool) -> str:
    """x[..., mask, ...] = vals: one row of vals per true place of the mask (in row-major order: the
    k-th true place takes row k, an exclusive prefix count), or the same values everywhere when vals
    broadcasts over the masked places."""
    from tessel.frontend.torch_aten_scan import scan

    shape = cx.g.values[x].shape
    mrank = len(m.shape)
    rest = shape[k0 + mrank:]
    vshape = cx.g.values[vals].shape
    xv = X(cx, x)
    if len(vshape) <= len(rest) or vshape[0] == 1:  # the same values at every masked place
        v = X(cx, cx.reshape(vals, vshape[1:])) if len(vshape) > len(rest) else X(cx, vals)
        mm = m.reshape((1,) * k0 + m.shape + (1,) * len(rest))
        return where(mm, xv + v if acc else X(cx, _broadcast_to(cx, v.v, shape)), xv).v
    if k0:
        cx.unsupported("index_put with a boolean mask after leading dimensions and one value per place")
    n, width = math.prod(m.shape), math.prod(rest)
    flat = m.reshape((n,)).astype("int64")
    k = scan([flat], 0, [0], lambda e, l: [e[0] + l[0]])[0] - flat
    count = vshape[0]
    rows = X(cx, cx.reshape(_broadcast_to(cx, vals, (count,) + rest), (count, width)))
    picked = X(cx, cx.emit("gather", [rows.v, k.op("clip", min=0, max=max(count - 1, 0)).v], axis=0))
    data = X(cx, cx.reshape(x, (n, width)))
    out = where(m.reshape((n, 1)), data + picked if acc else picked, data)
    return cx.reshape(out.v, shape)


def _bshape(shapes) -> tuple:
    np = _np()
    return tuple(int(s) for s in np.broadcast_shapes(*[tuple(s) for s in shapes]))


@aten("masked_scatter.default")
def _masked_scatter(cx, a):
    """Where mask is true, the next element of source in row-major order: source[k] with k the
    number of true places before this one (an exclusive prefix count, from torch_aten_scan.scan)."""
    from tessel.frontend.torch_aten_scan import scan

    dt = cx.out_dtype
    x = X(cx, cx.cast(cx.v(a["self"]), dt))
    shape = cx.out_shape
    x = X(cx, _broadcast_to(cx, x.v, shape))
    m = X(cx, _broadcast_to(cx, cx.cast(cx.v(a["mask"]), "bool"), shape))
    n = math.prod(shape)
    if n == 0:
        return x.v
    flat = m.reshape((n,)).astype("int64")
    k = scan([flat], 0, [0], lambda e, l: [e[0] + l[0]])[0] - flat
    src = cx.v(a["source"])
    srcflat = cx.reshape(src, (math.prod(cx.g.values[src].shape),))
    limit = max(math.prod(cx.g.values[src].shape) - 1, 0)
    picked = X(cx, cx.emit("gather", [cx.cast(srcflat, dt), k.op("clip", min=0, max=limit).v], axis=0))
    return where(m, picked.reshape(shape), x).v


@aten("take.default")
def _take(cx, a):
    x = cx.v(a["self"])
    n = math.prod(cx.g.values[x].shape)
    return cx.emit("gather", [cx.reshape(x, (n,)), _wrap(cx, cx.v(a["index"]), n)], axis=0)


@aten("put.default")
def _put(cx, a):
    dt = cx.out_dtype
    x = cx.cast(cx.v(a["self"]), dt)
    shape = cx.g.values[x].shape
    n = math.prod(shape)
    idx = cx.v(a["index"])
    u = math.prod(cx.g.values[idx].shape)
    rows = cx.reshape(_wrap(cx, idx, n), (u,))
    src = cx.reshape(cx.cast(cx.v(a["source"]), dt), (u, 1))
    out = scatter_rows(cx, cx.reshape(x, (n, 1)), rows, src, "add" if a["accumulate"] else "none")
    return cx.reshape(out, shape)
