"""Dense linear algebra on small matrices as aten converters, unrolled over the (static) matrix
size in float64: LU with partial pivoting (LAPACK getrf's choice: the first largest |a| of the
column), det / slogdet, solve, inv, lu_factor / linalg_lu / lu_unpack / lu_solve, Cholesky, and
triangular solves.

Each elimination step is elementwise work on the whole batch: the pivot row is found with argmax
and swapped in with where() over constant row masks, so the graph has O(n) steps of O(1) ops
(O(n^2) for the substitutions); matrices above MAX_N refuse with the op named. Decompositions
with sign freedom (QR, SVD, eigenvectors) are not here: their outputs would match LAPACK's only by
copying its every convention.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(k in converters() for k in ("aten.linalg_inv_ex.default", "aten._linalg_det.default"))
    True
"""

from __future__ import annotations

from tessel.frontend.torch_aten import aten
from tessel.frontend.torch_aten_expr import X, fabs, log, sqrt, where
from tessel.frontend.torch_aten_layout import _slice, take_along

MAX_N = 16


def _np():
    import numpy as np

    return np


def _name(cx) -> str:
    return cx.node.target._schema.name.split("::")[1]


def _col(m: X, j: int) -> X:
    return X(m.cx, _slice(m.cx, m.v, len(m.shape) - 1, j, j + 1))


def _row(m: X, i: int) -> X:
    return X(m.cx, _slice(m.cx, m.v, len(m.shape) - 2, i, i + 1))


def _at(m: X, i: int, j: int) -> X:
    return _col(_row(m, i), j)


def _cat(parts: list, axis: int) -> X:
    cx = parts[0].cx
    if len(parts) == 1:
        return parts[0]
    rank = len(parts[0].shape)
    return X(cx, cx.emit("concat", [p.v for p in parts], axis=axis % rank))


def _mask(cx, n: int, m: int, f) -> X:
    np = _np()
    i, j = np.indices((n, m))
    return X(cx, cx.const(f(i, j)))


def _size(cx, m: X) -> int:
    n = m.shape[-1]
    if n > MAX_N:
        cx.unsupported(f"a {n}x{n} matrix (the unrolled elimination stops at {MAX_N})")
    return n


def lu(a: X) -> tuple:
    """(LU packed, perm (..., n) int64: row k of LU is row perm[k] of a, number of swaps (int64),
    LAPACK's 1-based pivots (..., n) int32: the row swapped with row k at step k)."""
    np = _np()
    cx = a.cx
    m, n = a.shape[-2], a.shape[-1]
    lead = a.shape[:-2]
    rows = X(cx, cx.const(np.arange(m, dtype=np.int64).reshape(m, 1)))
    perm = X(cx, cx.const(np.broadcast_to(np.arange(m, dtype=np.int64), lead + (m,)).copy()))
    swaps, piv = None, []
    for k in range(min(m, n)):
        col = _col(a, k)  # (..., m, 1)
        cand = where(rows.ge(k), fabs(col), -1.0)
        p = cand.op("argmax", axis=len(a.shape) - 2, keepdims=True)  # (..., 1, 1)
        prow = X(cx, take_along(cx, a.v, cx.emit("expand", [p.v], shape=lead + (1, n)), len(a.shape) - 2))
        krow = _row(a, k)
        a = where(rows.eq(k), prow, where(rows.eq(p), krow, a))
        pv = p.reshape(lead + (1,))
        piv.append(pv)
        pk = X(cx, _slice(cx, perm.v, len(lead), k, k + 1))
        pp = X(cx, take_along(cx, perm.v, pv.v, len(lead)))
        idx = X(cx, cx.const(np.arange(m, dtype=np.int64)))
        perm = where(idx.eq(k), pp, where(idx.eq(pv), pk, perm))
        s = pv.ne(k).astype("int64")
        swaps = s if swaps is None else swaps + s
        pivot = _at(a, k, k)
        safe = where(pivot.eq(0.0), 1.0, pivot)
        below = rows.gt(k)
        lcol = where(below, _col(a, k) / safe, 0.0)  # (..., n, 1)
        right = _mask(cx, 1, n, lambda i, j: j > k)
        a = a - lcol * where(right, _row(a, k), 0.0)
        a = where(below & _mask(cx, 1, n, lambda i, j: j == k), lcol, a)
    return a, perm, swaps.reshape(lead), (_cat(piv, -1) + 1).astype("int32")


def _diag(a: X) -> list:
    return [_at(a, k, k) for k in range(a.shape[-1])]


def _unit_lower(lu_: X) -> X:
    """L of a packed (m, n) LU: (m, min(m, n)), unit diagonal."""
    m, n = lu_.shape[-2:]
    k = min(m, n)
    cx = lu_.cx
    part = X(cx, _slice(cx, lu_.v, len(lu_.shape) - 1, 0, k))
    return where(_mask(cx, m, k, lambda i, j: i > j), part, 0.0) + X(cx, cx.const(_np().eye(m, k)))


def _upper(lu_: X) -> X:
    """U of a packed (m, n) LU: (min(m, n), n)."""
    m, n = lu_.shape[-2:]
    k = min(m, n)
    cx = lu_.cx
    part = X(cx, _slice(cx, lu_.v, len(lu_.shape) - 2, 0, k))
    return where(_mask(cx, k, n, lambda i, j: i <= j), part, 0.0)


def _perm_matrix(cx, perm: X) -> X:
    """P with P[perm[k], k] = 1 (A = P L U when row k of L U is row perm[k] of A)."""
    m = perm.shape[-1]
    return perm.reshape(perm.shape[:-1] + (1, m)).eq(X(cx, cx.const(_np().arange(m).reshape(m, 1)))).astype(
        "float64")


def solve_lower(l_: X, b: X, unit: bool) -> X:
    """Y with l_ Y = b (l_ lower triangular), b (..., n, m)."""
    n = l_.shape[-1]
    ys = []
    for i in range(n):
        acc = _row(b, i)
        for k in range(i):
            acc = acc - _at(l_, i, k) * ys[k]
        ys.append(acc if unit else acc / _at(l_, i, i))
    return _cat(ys, -2)


def solve_upper(u: X, b: X, unit: bool) -> X:
    n = u.shape[-1]
    ys = [None] * n
    for i in range(n - 1, -1, -1):
        acc = _row(b, i)
        for k in range(i + 1, n):
            acc = acc - _at(u, i, k) * ys[k]
        ys[i] = acc if unit else acc / _at(u, i, i)
    return _cat(ys, -2)


def _permute_rows(cx, b: X, perm: X) -> X:
    """Row k of the result is row perm[k] of b."""
    lead = perm.shape[:-1]
    n, m = b.shape[-2], b.shape[-1]
    idx = cx.emit("expand", [perm.reshape(lead + (n, 1)).v], shape=lead + (n, m))
    return X(cx, take_along(cx, b.v, idx, len(b.shape) - 2))


def _f64(cx, a, key: str) -> X:
    return X(cx, cx.cast(cx.v(a[key]), "float64"))


def _back(cx, y: X, k: int = 0) -> str:
    meta = cx.out_meta[k] if isinstance(cx.out_meta, (list, tuple)) else cx.out_meta
    from tessel.frontend.torch import tessel_dtype

    return y.astype(tessel_dtype(meta.dtype)).v


def _info(cx, k: int) -> str:
    np = _np()
    return cx.const(np.zeros(tuple(cx.out_meta[k].shape), np.int32))


def _empty_outs(cx):
    """Constants for every output when the matrices are empty (0 x 0): det 1, the rest empty."""
    import torch

    from tessel.frontend.torch import to_numpy

    metas = cx.out_meta if isinstance(cx.out_meta, (list, tuple)) else [cx.out_meta]
    outs = []
    for m in metas:
        if m.numel() == 0:
            outs.append(cx.const(to_numpy(torch.zeros(tuple(m.shape), dtype=m.dtype))))
        else:  # of a 0 x 0 matrix: det 1, slogdet's sign 1 (its log 0), logdet 0, info 0
            name = _name(cx)
            val = 1 if ("det" in name and name != "logdet" and m.dtype.is_floating_point and not outs) else 0
            outs.append(cx.const(to_numpy(torch.full(tuple(m.shape), val, dtype=m.dtype))))
    return outs if isinstance(cx.out_meta, (list, tuple)) else outs[0]


def _matrix_arg(cx, a) -> str:
    for k in ("A", "LU", "LU_data", "self", "input"):
        if k in a and hasattr(a[k], "meta"):
            return k
    raise KeyError("matrix")


def _guard(fn):
    def conv(cx, a):
        m = X(cx, cx.v(a[_matrix_arg(cx, a)]))
        if m.shape[-1] == 0 or 0 in m.shape:
            return _empty_outs(cx)
        _size(cx, m)
        return fn(cx, a)

    conv.__name__ = fn.__name__
    return conv


@aten("_linalg_det.default", "linalg_det.default", "det.default", "_linalg_slogdet.default",
      "linalg_slogdet.default", "slogdet.default", "logdet.default")
@_guard
def _det(cx, a):
    name = _name(cx)
    lu_, _, swaps, piv = lu(_f64(cx, a, _matrix_arg(cx, a)))
    diag = _diag(lu_)
    sign = where((swaps - (swaps.op("div", 2) * 2)).eq(1), -1.0, 1.0, like=lu_)
    if "slogdet" in name or name == "logdet":
        logabs, neg = None, None
        for d in diag:
            lg = log(fabs(d))
            logabs = lg if logabs is None else logabs + lg
            n_ = d.lt(0.0).astype("int64")
            neg = n_ if neg is None else neg + n_
        lead = lu_.shape[:-2]
        logabs = logabs.reshape(lead)
        s = sign * where((neg - neg.op("div", 2) * 2).eq(1), -1.0, 1.0, like=lu_).reshape(lead)
        zero = None
        for d in diag:
            z = d.eq(0.0)
            zero = z if zero is None else zero | z
        s = where(zero.reshape(lead), 0.0, s)
        if name == "logdet":  # log(det): NaN for a negative determinant
            return _back(cx, where(s.lt(0.0), float("nan"), logabs))
        outs = [_back(cx, s, 0), _back(cx, logabs, 1)]
        return outs + [lu_.astype(_tdt(cx.out_meta[2].dtype)).v, piv.v] if len(cx.out_meta) == 4 else outs
    det = None
    for d in diag:
        det = d if det is None else det * d
    det = det.reshape(lu_.shape[:-2]) * sign
    if name == "_linalg_det":  # (det, LU, pivots)
        return [_back(cx, det, 0), lu_.astype(_tdt(cx.out_meta[1].dtype)).v, piv.v]
    return _back(cx, det)


def _tdt(dtype) -> str:
    from tessel.frontend.torch import tessel_dtype

    return tessel_dtype(dtype)


@aten("linalg_inv_ex.default", "linalg_inv.default", "inverse.default")
@_guard
def _inv(cx, a):
    m = _f64(cx, a, _matrix_arg(cx, a))
    n = m.shape[-1]
    eye = X(cx, cx.const(_np().broadcast_to(_np().eye(n), m.shape).copy()))
    x = _solve_lu(cx, m, eye)
    if _name(cx) == "linalg_inv_ex":
        return [_back(cx, x, 0), _info(cx, 1)]
    return _back(cx, x)


def _solve_lu(cx, m: X, b: X) -> X:
    lu_, perm, _, _ = lu(m)
    y = solve_lower(_unit_lower(lu_), _permute_rows(cx, b, perm), unit=True)
    return solve_upper(lu_, y, unit=False)


@aten("_linalg_solve_ex.default", "linalg_solve.default", "linalg_solve_ex.default")
@_guard
def _solve(cx, a):
    m = _f64(cx, a, "A")
    b = _f64(cx, a, "B")
    left = a.get("left", True)
    if not left:
        cx.unsupported("linalg.solve with left=False")
    vec = len(b.shape) == len(m.shape) - 1 or (len(b.shape) == 1)
    bb = b.reshape(b.shape + (1,)) if vec else b
    lead = m.shape[:-2]
    if bb.shape[:-2] != lead:
        bb = X(cx, cx.emit("expand", [bb.v], shape=lead + bb.shape[-2:])) if len(bb.shape) == len(m.shape) else bb
    x = _solve_lu(cx, m, bb)
    if vec:
        x = x.reshape(x.shape[:-1])
    name = _name(cx)
    if name == "linalg_solve":
        return _back(cx, x)
    lu_, _, _, piv = lu(m)  # _linalg_solve_ex: (result, LU, pivots, info); linalg_solve_ex: (result, info)
    if name == "_linalg_solve_ex":
        return [_back(cx, x, 0), lu_.astype(_tdt(cx.out_meta[1].dtype)).v, piv.v, _info(cx, 3)]
    return [_back(cx, x, 0), _info(cx, 1)]


def _transpose(m: X) -> X:
    rank = len(m.shape)
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    return X(m.cx, m.cx.emit("transpose", [m.v], perm=perm))


def cholesky(m: X) -> X:
    """Lower L with L L^T = m, column by column; a non-positive pivot gives NaN (torch raises)."""
    n = m.shape[-1]
    cols = []
    for j in range(n):
        c = _col(m, j)  # (..., n, 1)
        for k in range(j):
            c = c - cols[k] * _at_col(cols[k], j)
        d = sqrt(_row(c, j))
        rows = X(m.cx, m.cx.const(_np().arange(n).reshape(n, 1)))
        cols.append(where(rows.lt(j), 0.0, where(rows.eq(j), d, c / d)))
    return _cat(cols, -1)


def _at_col(col: X, i: int) -> X:
    return _row(col, i)


@aten("linalg_cholesky_ex.default", "linalg_cholesky.default", "cholesky.default")
@_guard
def _cholesky(cx, a):
    m = _f64(cx, a, _matrix_arg(cx, a))
    low = cholesky(m)
    out = _transpose(low) if a.get("upper") else low
    if _name(cx) == "linalg_cholesky_ex":
        return [_back(cx, out, 0), _info(cx, 1)]
    return _back(cx, out)


def _tri_solve(a_: X, b: X, upper: bool, unit: bool) -> X:
    return solve_upper(a_, b, unit) if upper else solve_lower(a_, b, unit)


def _bcast(cx, m: X, b: X) -> tuple:
    """m (..., n, n) and b (..., n, k) broadcast over their batch dims."""
    np = _np()
    lead = tuple(np.broadcast_shapes(m.shape[:-2], b.shape[:-2]))
    if m.shape[:-2] != lead:
        m = X(cx, cx.emit("expand", [m.v], shape=lead + m.shape[-2:]))
    if b.shape[:-2] != lead:
        b = X(cx, cx.emit("expand", [b.v], shape=lead + b.shape[-2:]))
    return m, b


@aten("linalg_solve_triangular.default")
@_guard
def _solve_triangular(cx, a):
    m, b = _f64(cx, a, "self"), _f64(cx, a, "B")
    upper, left, unit = bool(a["upper"]), bool(a["left"]), bool(a["unitriangular"])
    if not left:  # X A = B  <=>  A^T X^T = B^T
        m, b, upper = _transpose(m), _transpose(b), not upper
    m, b = _bcast(cx, m, b)
    x = _tri_solve(m, b, upper, unit)
    return _back(cx, x if left else _transpose(x))


@aten("triangular_solve.default")
@_guard
def _triangular_solve(cx, a):
    b, m = _f64(cx, a, "self"), _f64(cx, a, "A")
    upper = bool(a["upper"])
    if a["transpose"]:
        m, upper = _transpose(m), not upper
    m2, b = _bcast(cx, m, b)
    x = _tri_solve(m2, b, upper, bool(a["unitriangular"]))
    return [_back(cx, x, 0), cx.cast(cx.v(a["A"]), _tdt(cx.out_meta[1].dtype))]


@aten("cholesky_solve.default", "cholesky_inverse.default")
@_guard
def _cholesky_solve(cx, a):
    lower = _f64(cx, a, "input2" if "input2" in a else "self")
    if a.get("upper"):
        lower = _transpose(lower)
    if _name(cx) == "cholesky_inverse":
        n = lower.shape[-1]
        b = X(cx, cx.const(_np().broadcast_to(_np().eye(n), lower.shape).copy()))
    else:
        b = _f64(cx, a, "self")
    lower, b = _bcast(cx, lower, b)
    y = solve_lower(lower, b, unit=False)
    return _back(cx, solve_upper(_transpose(lower), y, unit=False))


@aten("linalg_lu_factor_ex.default", "linalg_lu_factor.default", "linalg_lu.default")
@_guard
def _lu_factor(cx, a):
    m = _f64(cx, a, "A")
    lu_, perm, _, piv = lu(m)
    name = _name(cx)
    if name == "linalg_lu":  # (P, L, U) with A = P L U
        return [_back(cx, _perm_matrix(cx, perm), 0), _back(cx, _unit_lower(lu_), 1), _back(cx, _upper(lu_), 2)]
    outs = [_back(cx, lu_, 0), piv.v]
    return outs + [_info(cx, 2)] if name == "linalg_lu_factor_ex" else outs


def _perm_from_pivots(cx, piv: X, n: int) -> X:
    """The row order (row k of P^T A is row perm[k] of A) from LAPACK's sequence of swaps."""
    np = _np()
    lead = piv.shape[:-1]
    perm = X(cx, cx.const(np.broadcast_to(np.arange(n, dtype=np.int64), lead + (n,)).copy()))
    idx = X(cx, cx.const(np.arange(n, dtype=np.int64)))
    p0 = piv.astype("int64") - 1
    for k in range(min(n, piv.shape[-1])):
        p = X(cx, _slice(cx, p0.v, len(lead), k, k + 1))
        pk = X(cx, _slice(cx, perm.v, len(lead), k, k + 1))
        pp = X(cx, take_along(cx, perm.v, p.v, len(lead)))
        perm = where(idx.eq(k), pp, where(idx.eq(p), pk, perm))
    return perm


@aten("lu_unpack.default")
@_guard
def _lu_unpack(cx, a):
    lu_ = _f64(cx, a, "LU_data")
    perm = _perm_from_pivots(cx, X(cx, cx.v(a["LU_pivots"])), lu_.shape[-2])
    return [_back(cx, _perm_matrix(cx, perm), 0), _back(cx, _unit_lower(lu_), 1), _back(cx, _upper(lu_), 2)]


@aten("linalg_lu_solve.default", "lu_solve.default")
@_guard
def _lu_solve(cx, a):
    lu_ = _f64(cx, a, "LU" if "LU" in a else "LU_data")
    b = _f64(cx, a, "B" if "B" in a else "self")
    piv = X(cx, cx.v(a["pivots"] if "pivots" in a else a["LU_pivots"]))
    left, adjoint = bool(a.get("left", True)), bool(a.get("adjoint", False))
    n = lu_.shape[-1]
    perm = _perm_from_pivots(cx, piv, n)
    if not left:  # X A = B  <=>  A^T X^T = B^T;  X A^T = B  <=>  A X^T = B^T
        b, adjoint = _transpose(b), not adjoint
    lu_, b = _bcast(cx, lu_, b)
    lead = b.shape[:-2]
    if perm.shape[:-1] != lead:
        perm = X(cx, cx.emit("expand", [perm.v], shape=lead + (n,)))
    if adjoint:  # A^T = U^T L^T P^T: solve U^T y = b, L^T z = y, x = P z
        y = solve_lower(_transpose(lu_), b, unit=False)
        z = solve_upper(_transpose(_unit_lower(lu_)), y, unit=True)
        x = X(cx, cx.emit("matmul", [_perm_matrix(cx, perm).v, z.v]))
    else:
        y = solve_lower(_unit_lower(lu_), _permute_rows(cx, b, perm), unit=True)
        x = solve_upper(lu_, y, unit=False)
    return _back(cx, x if left else _transpose(x))


# -- Householder QR (LAPACK's geqr2 / org2r / orm2r conventions) --------------------------------------

def _reflector_vec(cx, a: X, i: int) -> X:
    """v of reflector i from packed reflectors a (m, n): 0 above row i, 1 at i, a[i+1:, i] below."""
    m = a.shape[-2]
    rows = X(cx, cx.const(_np().arange(m).reshape(m, 1)))
    return where(rows.lt(i), 0.0, where(rows.eq(i), 1.0, _col(a, i)))


def geqrf(cx, a: X) -> tuple:
    """(packed R and reflectors, tau): dlarfg's beta = -sign(alpha) |(alpha, x)|, tau = (beta - alpha)
    / beta, v = x / (alpha - beta), and tau = 0 when x is zero."""
    m, n = a.shape[-2:]
    lead = a.shape[:-2]
    rows = X(cx, cx.const(_np().arange(m).reshape(m, 1)))
    taus = []
    for i in range(min(m, n)):
        col = _col(a, i)  # (..., m, 1)
        alpha = _row(col, i)  # (..., 1, 1)
        below = rows.gt(i)
        xnorm2 = where(below, col * col, 0.0).sum([len(a.shape) - 2], keepdims=True)
        zero = xnorm2.eq(0.0)
        norm = sqrt(alpha * alpha + xnorm2)
        beta = where(alpha.lt(0.0), norm, -norm)
        tau = where(zero, 0.0, (beta - alpha) / where(zero, 1.0, beta))
        scale = where(zero, 1.0, 1.0 / where(zero, 1.0, alpha - beta))
        newcol = where(below, col * scale, where(rows.eq(i), where(zero, alpha, beta), col))
        v = where(rows.lt(i), 0.0, where(rows.eq(i), 1.0, newcol))
        right = _mask(cx, 1, n, lambda r, c: c > i)
        w = (v * a).sum([len(a.shape) - 2], keepdims=True)  # v^T A: (..., 1, n)
        a = a - where(right, v * (w * tau), 0.0)
        a = where(_mask(cx, 1, n, lambda r, c: c == i), newcol, a)
        taus.append(tau.reshape(lead + (1,)))
    tau = _cat(taus, -1) if taus else X(cx, cx.const(_np().zeros(lead + (0,))))
    return a, tau


def _apply_reflectors(cx, refl: X, tau: X, c: X, order, left: bool) -> X:
    """c with the reflectors H_i = I - tau_i v_i v_i^T applied in `order` (left: H c; right: c H)."""
    lead = tau.shape[:-1]
    rank = len(c.shape)
    for i in order:
        v = _reflector_vec(cx, refl, i)  # (..., m, 1)
        t = X(cx, _slice(cx, tau.v, len(lead), i, i + 1)).reshape(lead + (1, 1))
        if left:
            c = c - v * ((v * c).sum([rank - 2], keepdims=True) * t)
        else:
            vt = v.reshape(v.shape[:-2] + (1, v.shape[-2]))
            c = c - (c * vt).sum([rank - 1], keepdims=True) * vt * t
    return c


@aten("geqrf.default")
@_guard
def _geqrf(cx, a):
    packed, tau = geqrf(cx, _f64(cx, a, "self"))
    return [_back(cx, packed, 0), _back(cx, tau, 1)]


def householder_product(cx, refl: X, tau: X, cols: int) -> X:
    np = _np()
    m = refl.shape[-2]
    lead = tau.shape[:-1]
    q = X(cx, cx.const(np.broadcast_to(np.eye(m, cols), lead + (m, cols)).copy()))
    return _apply_reflectors(cx, refl, tau, q, range(tau.shape[-1] - 1, -1, -1), left=True)


@aten("linalg_householder_product.default")
@_guard
def _householder_product(cx, a):
    refl, tau = _f64(cx, a, "input"), _f64(cx, a, "tau")
    return _back(cx, householder_product(cx, refl, tau, refl.shape[-1]))


@aten("linalg_qr.default")
@_guard
def _qr(cx, a):
    m0 = _f64(cx, a, "A")
    m, n = m0.shape[-2:]
    k = min(m, n)
    mode = a["mode"]
    packed, tau = geqrf(cx, m0)
    rrows = m if mode == "complete" else k
    r = X(cx, _slice(cx, packed.v, len(m0.shape) - 2, 0, rrows)) if rrows < m else packed
    r = where(_mask(cx, rrows, n, lambda i, j: i <= j), r, 0.0)
    if mode == "r":
        from tessel.ir.dtypes import numpy_dtype

        meta = cx.out_meta[0]  # torch gives an empty Q
        return [cx.const(_np().zeros(tuple(meta.shape), numpy_dtype(_tdt(meta.dtype)))), _back(cx, r, 1)]
    q = householder_product(cx, packed, tau, m if mode == "complete" else k)
    return [_back(cx, q, 0), _back(cx, r, 1)]


@aten("ormqr.default")
@_guard
def _ormqr(cx, a):
    refl, tau, c = _f64(cx, a, "self"), _f64(cx, a, "input2"), _f64(cx, a, "input3")
    left, trans = bool(a["left"]), bool(a["transpose"])
    k = tau.shape[-1]
    up, down = range(k), range(k - 1, -1, -1)
    order = (up if trans else down) if left else (down if trans else up)
    return _back(cx, _apply_reflectors(cx, refl, tau, c, order, left))
