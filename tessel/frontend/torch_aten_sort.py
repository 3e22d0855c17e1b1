"""Sorting and selection aten ops with static shapes: sort, argsort, msort, topk, kthvalue,
median/nanmedian, searchsorted and bucketize.

There is no sort kernel in the op set, so a sort is a ranking: along the sorted axis (moved last),
element i's place is the number of elements that sort before it plus the number of equal ones
before it (a stable sort; NaN sorts after every number, and first when descending, as torch),
computed with one n x n comparison per row. The index at each place is the sum of the one-hot
match of places and ranks, and the values are gathered with it. So the cost is n^2 per row, bounded
by MAX_CELLS; past it the converter refuses with the op named.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(k in converters() for k in ("aten.sort.default", "aten.topk.default", "aten.searchsorted.Tensor"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import _dim, aten
from tessel.frontend.torch_aten_expr import X, isnan, where
from tessel.frontend.torch_aten_layout import _slice, take_along

MAX_CELLS = 1 << 27  # rows x n x n comparisons


def _name(cx) -> str:
    return cx.node.target._schema.name.split("::")[1]


def _is_float(dt: str) -> bool:
    return dt.startswith("float") or dt == "bfloat16"


def _before(p: X, q: X, descending: bool) -> X:
    """Whether p sorts strictly before q (NaN last ascending, first descending)."""
    if not _is_float(p.dtype):
        return q.gt(p) if not descending else p.gt(q)
    if descending:
        return p.gt(q) | (isnan(p) & ~isnan(q))
    return p.lt(q) | (isnan(q) & ~isnan(p))


def _same(p: X, q: X) -> X:
    if not _is_float(p.dtype):
        return p.eq(q)
    return p.eq(q) | (isnan(p) & isnan(q))


def _to_last(cx, x: str, d: int) -> str:
    rank = len(cx.g.values[x].shape)
    if d == rank - 1:
        return x
    perm = [k for k in range(rank) if k != d] + [d]
    return cx.emit("transpose", [x], perm=tuple(perm))


def _from_last(cx, x: str, d: int) -> str:
    rank = len(cx.g.values[x].shape)
    if d == rank - 1:
        return x
    perm = list(range(rank - 1))
    perm.insert(d, rank - 1)
    return cx.emit("transpose", [x], perm=tuple(perm))


def sort_last(cx, x: str, descending: bool) -> tuple:
    """(values, int64 indices) of x sorted stably along its last axis."""
    import numpy as np

    shape = cx.g.values[x].shape
    n = shape[-1]
    if math.prod(shape) * n > MAX_CELLS:
        cx.unsupported(f"a sort of {math.prod(shape) // n} rows of {n} (pairwise ranking above {MAX_CELLS} cells)")
    xv = X(cx, x)
    if xv.dtype == "bool":
        xv = xv.astype("int32")
    xi = xv.reshape(shape + (1,))  # element i on axis -2
    xj = xv.reshape(shape[:-1] + (1, n))  # element j on axis -1
    earlier = X(cx, cx.const(np.tri(n, n, -1, dtype=bool)))  # [i, j]: j < i
    count = _before(xj, xi, descending) | (_same(xj, xi) & earlier)
    rank = count.astype("int64").sum([len(shape)])  # (..., n): the place of element i
    places = X(cx, cx.const(np.arange(n, dtype=np.int64)))
    onehot = rank.reshape(shape + (1,)).eq(places)  # [..., i, p]
    iota = X(cx, cx.const(np.arange(n, dtype=np.int64).reshape(n, 1)))
    idx = where(onehot, iota, 0).sum([len(shape) - 1])  # (..., p): the element at place p
    return take_along(cx, x, idx.v, len(shape) - 1), idx.v


def _sorted(cx, x: str, d: int, descending: bool) -> tuple:
    """(values, indices) of x sorted along axis d."""
    import numpy as np

    shape = cx.g.values[x].shape
    if not shape:
        return x, cx.const(np.zeros((), np.int64))
    if shape[d] <= 1 or 0 in shape:
        return x, cx.const(np.zeros(shape, np.int64))
    vals, idx = sort_last(cx, _to_last(cx, x, d), descending)
    return _from_last(cx, vals, d), _from_last(cx, idx, d)


@aten("sort.default", "sort.stable")
def _sort(cx, a):
    x = cx.v(a["self"])
    d = _dim(a["dim"], len(cx.g.values[x].shape))
    return list(_sorted(cx, x, d, bool(a["descending"])))


@aten("argsort.default", "argsort.stable")
def _argsort(cx, a):
    x = cx.v(a["self"])
    d = _dim(a["dim"], len(cx.g.values[x].shape))
    return _sorted(cx, x, d, bool(a["descending"]))[1]


@aten("msort.default")
def _msort(cx, a):
    return _sorted(cx, cx.v(a["self"]), 0, False)[0]


def _zero_index(cx) -> str:
    import numpy as np

    return cx.const(np.zeros((), np.int64))


def _pick(cx, vals: str, idx: str, d: int, start: int, end: int, keepdim: bool = True) -> list:
    v, i = _slice(cx, vals, d, start, end), _slice(cx, idx, d, start, end)
    if not keepdim:
        shape = cx.g.values[v].shape
        out = shape[:d] + shape[d + 1:]
        v, i = cx.reshape(v, out), cx.reshape(i, out)
    return [v, i]


@aten("topk.default")
def _topk(cx, a):
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    d = _dim(a["dim"], len(shape))
    k = int(a["k"])
    if not shape:
        return [x, _zero_index(cx)]
    vals, idx = _sorted(cx, x, d, bool(a["largest"]))
    return _pick(cx, vals, idx, d, 0, k)


@aten("kthvalue.default")
def _kthvalue(cx, a):
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    if not shape:
        return [x, _zero_index(cx)]
    d = _dim(a["dim"], len(shape))
    vals, idx = _sorted(cx, x, d, False)
    k = int(a["k"]) - 1
    return _pick(cx, vals, idx, d, k, k + 1, bool(a["keepdim"]))


@aten("median.default", "median.dim", "nanmedian.default", "nanmedian.dim")
def _median(cx, a):
    """The lower median ((n - 1) // 2-th smallest); median gives NaN (at the first NaN's index) when a
    row holds one, nanmedian the lower median of the row's numbers."""
    import numpy as np

    x = cx.v(a["self"])
    whole = "dim" not in a
    if whole:
        x = cx.reshape(x, (math.prod(cx.g.values[x].shape),))
    shape = cx.g.values[x].shape
    if not shape:
        return x if whole else [x, cx.const(np.zeros((), np.int64))]
    d = _dim(a["dim"], len(shape)) if not whole else 0
    keep = bool(a.get("keepdim", False))
    vals, idx = _sorted(cx, x, d, False)
    n = shape[d]
    nan_aware = _is_float(cx.g.values[x].dtype)
    if _name(cx) == "median" or not nan_aware:
        v, i = _pick(cx, vals, idx, d, (n - 1) // 2, (n - 1) // 2 + 1)
        if nan_aware:  # NaNs sort last: a row with one has it in its last place
            last_v = X(cx, _slice(cx, vals, d, n - 1, n))
            has_nan = isnan(last_v)
            first_nan = X(cx, cx.emit("argmax", [isnan(X(cx, x)).astype("int32").v], axis=d, keepdims=True))
            v, i = where(has_nan, last_v, X(cx, v)).v, where(has_nan, first_nan, X(cx, i)).v
    else:
        count = (~isnan(X(cx, x))).astype("int64").sum([d], keepdims=True)
        pos = where(count.gt(0), (count - 1).op("div", 2), 0)  # integer division truncates: count >= 1
        v, i = take_along(cx, vals, pos.v, d), take_along(cx, idx, pos.v, d)
    if whole:
        return cx.reshape(v, ())
    if not keep:
        out = shape[:d] + shape[d + 1:]
        v, i = cx.reshape(v, out), cx.reshape(i, out)
    return [v, i]


@aten("searchsorted.Tensor", "searchsorted.Scalar", "bucketize.Tensor", "bucketize.Scalar")
def _searchsorted(cx, a):
    """The number of sequence elements before each value: < it (left side) or <= it (right side)."""
    is_bucket = _name(cx) == "bucketize"
    seq = cx.v(a["boundaries"] if is_bucket else a["sorted_sequence"])
    right = bool(a.get("right")) or a.get("side") == "right"
    if not is_bucket and a.get("sorter") is not None:
        seq = take_along(cx, seq, cx.v(a["sorter"]), len(cx.g.values[seq].shape) - 1)
    sdt = cx.g.values[seq].dtype
    vals = a["self"] if "self" in a else a["input"]
    v = X(cx, cx.operand(vals, sdt))
    s = X(cx, seq)
    if len(s.shape) <= 1:  # one sequence for every value
        sq = s.reshape((1,) * len(v.shape) + s.shape)
    else:  # one sequence per leading index
        sq = s.reshape(s.shape[:-1] + (1, s.shape[-1]))
    vv = v.reshape(v.shape + (1,))
    hit = sq.le(vv) if right else sq.lt(vv)
    out = hit.astype(cx.out_dtype).sum([len(v.shape)])
    return out.reshape(cx.out_shape).v
