"""Pooling that the op set's max_pool / avg_pool (1-D and 2-D, fixed windows) do not cover, as aten
converters: 3-D max and average pooling, adaptive pooling of any sizes (average and max, with
indices), max pooling whose indices are used, and average pooling with a divisor override.

Every output element reads a window of input elements that depends only on the shapes, so the
windows are a constant table (output places x window places of flat spatial indices, computed with
numpy here), and the pool is one gather into (rows, outputs, window) followed by a reduction over
the window. Places outside the input read a sentinel column (-inf for max, 0 for sums); the divisor
of an average is a constant per output.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(k in converters() for k in ("aten.max_pool3d_with_indices.default", "aten.adaptive_max_pool2d.default"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import _pair, aten
from tessel.frontend.torch_aten_expr import X

REAL, PAD, BEYOND = 0, -1, -2  # window entry kinds (a real entry is its index >= 0)


def _np():
    import numpy as np

    return np


def fixed_windows(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> list:
    """Per output place, the input positions of a pooling window along one axis (PAD inside the
    padding, BEYOND past it), as torch's pooling computes the output size."""
    span = d * (k - 1) + 1
    if ceil_mode:
        out = -(-(n + 2 * p - span) // s) + 1
        if (out - 1) * s >= n + p:
            out -= 1
    else:
        out = (n + 2 * p - span) // s + 1
    rows = []
    for o in range(max(out, 0)):
        row = []
        for j in range(k):
            pos = o * s - p + j * d
            row.append(pos if 0 <= pos < n else PAD if -p <= pos < n + p else BEYOND)
        rows.append(row)
    return rows


def adaptive_windows(n: int, out: int) -> list:
    """torch's adaptive windows: [floor(o n / out), ceil((o + 1) n / out)), padded with BEYOND."""
    spans = [(o * n // out, -(-((o + 1) * n) // out)) for o in range(out)]
    k = max((e - b for b, e in spans), default=0)
    return [list(range(b, e)) + [BEYOND] * (k - (e - b)) for b, e in spans]


def _table(in_shape: tuple, axes: list):
    """The product of per-axis windows: (outputs, window) flat spatial indices, -1 outside, and the
    per-entry kinds (REAL / PAD / BEYOND)."""
    np = _np()
    grids = [np.array(w, dtype=np.int64).reshape(len(w), -1) for w in axes]
    out_shape = tuple(g.shape[0] for g in grids)
    ks = tuple(g.shape[1] for g in grids)
    idx = np.zeros(out_shape + ks, dtype=np.int64)
    kind = np.zeros(out_shape + ks, dtype=np.int64)  # the worst kind over the axes
    nd = len(axes)
    for a, g in enumerate(grids):
        shape = [1] * (2 * nd)
        shape[a], shape[nd + a] = g.shape
        v = g.reshape(shape)
        idx = idx + np.where(v >= 0, v, 0) * math.prod(in_shape[a + 1:])
        kind = np.minimum(kind, np.where(v >= 0, REAL, v))
    o, k = math.prod(out_shape), math.prod(ks)
    return idx.reshape(o, k), kind.reshape(o, k), out_shape


def window_pool(cx, x: str, axes: list, how: str, count_include_pad: bool = True, divisor: int | None = None):
    """Pool x (N, C, *spatial) over windows `axes` (one list per trailing spatial axis, from
    fixed_windows / adaptive_windows): how "max" -> (values, indices into the flat spatial plane),
    "avg" -> values."""
    np = _np()
    shape = cx.g.values[x].shape
    nsp = len(axes)
    lead, sp = shape[:-nsp], shape[-nsp:]
    idx, kind, out_sp = _table(sp, axes)
    s, (o, k) = math.prod(sp), idx.shape
    rows = math.prod(lead)
    if o * k * max(rows, 1) > (1 << 26):
        cx.unsupported(f"a pooling window table of {o} x {k} places over {rows} rows")
    dt = cx.g.values[x].dtype
    fill = -math.inf if how == "max" else 0
    if how == "max" and not dt.startswith(("float", "bfloat")):
        fill = int(np.iinfo(dt).min)
    flat = cx.reshape(x, (rows, s))
    pad_col = cx.const(np.full((rows, 1), fill, dtype=_np_dt(dt)))
    data = cx.emit("concat", [flat, pad_col], axis=1)
    table = np.where(kind == REAL, idx, s)
    win = X(cx, cx.emit("gather", [data, cx.const(table)], axis=1))  # (rows, o, k)
    if how == "max":
        vals = win.op("reduce_max", axes=(2,), keepdims=False)
        arg = win.op("argmax", axis=2, keepdims=True)  # (rows, o, 1)
        base = X(cx, cx.const((np.arange(o, dtype=np.int64) * k).reshape(o, 1)))
        where_at = (arg + base).reshape((rows, o))
        ind = X(cx, cx.emit("gather", [cx.const(idx.reshape(-1)), where_at.v], axis=0))
        return vals.reshape(lead + out_sp).v, ind.reshape(lead + out_sp).v
    total = win.sum([2])
    if divisor is None:
        counted = (kind == REAL) | ((kind == PAD) & count_include_pad)
        div = counted.sum(axis=1).astype(np.float64)
    else:
        div = np.full(o, float(divisor))
    res = total / X(cx, cx.const(div.astype(_np_dt(dt))))
    return res.reshape(lead + out_sp).v


def _np_dt(dt: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dt)


def _nsp(cx) -> int:
    name = cx.node.target._schema.name
    return 3 if "3d" in name else 1 if "1d" in name else 2


@aten("max_pool3d_with_indices.default", "max_pool3d.default")
def _max_pool3d(cx, a):
    return max_pool_windows(cx, a, 3)


def max_pool_windows(cx, a, nsp: int):
    """max_pool{1,2,3}d through the window table: [values, indices] (or the values alone)."""
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    kernel = _pair(a["kernel_size"], nsp)
    stride = _pair(a["stride"], nsp) if a["stride"] else kernel
    pad, dil = _pair(a["padding"], nsp), _pair(a["dilation"], nsp)
    axes = [fixed_windows(shape[-nsp + i], kernel[i], stride[i], pad[i], dil[i], bool(a["ceil_mode"]))
            for i in range(nsp)]
    vals, ind = window_pool(cx, x, axes, "max")
    return [vals, ind] if cx.node.target._schema.name.endswith("with_indices") else vals


@aten("avg_pool3d.default")
def _avg_pool3d(cx, a):
    return avg_pool_windows(cx, a, 3)


def avg_pool_windows(cx, a, nsp: int):
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    kernel = _pair(a["kernel_size"], nsp)
    stride = _pair(a["stride"], nsp) if a["stride"] else kernel
    pad = _pair(a["padding"], nsp)
    axes = [fixed_windows(shape[-nsp + i], kernel[i], stride[i], pad[i], 1, bool(a["ceil_mode"]))
            for i in range(nsp)]
    return window_pool(cx, cx.cast(x, cx.out_dtype), axes, "avg", bool(a.get("count_include_pad", True)),
                       a.get("divisor_override"))


@aten("adaptive_max_pool1d.default", "adaptive_max_pool2d.default", "adaptive_max_pool3d.default")
def _adaptive_max(cx, a):
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    nsp = _nsp(cx)
    outs = _pair(a["output_size"], nsp)
    axes = [adaptive_windows(shape[-nsp + i], outs[i]) for i in range(nsp)]
    return list(window_pool(cx, x, axes, "max"))


def adaptive_avg(cx, x: str, output_size, nsp: int) -> str:
    shape = cx.g.values[x].shape
    outs = _pair(output_size, nsp)
    axes = [adaptive_windows(shape[-nsp + i], outs[i]) for i in range(nsp)]
    return window_pool(cx, x, axes, "avg")


@aten("_adaptive_avg_pool3d.default", "adaptive_avg_pool3d.default")
def _adaptive_avg3d(cx, a):
    return adaptive_avg(cx, cx.v(a["self"]), a["output_size"], 3)


def conv_transpose(cx, a, x: str) -> str:
    """A transposed convolution as a plain one: the input with stride - 1 zeros between elements,
    padded by dilation (k - 1) - padding each side (plus output_padding at the end; cropped where
    negative), convolved at stride 1 with the weight flipped and its in/out channels swapped per group."""
    import numpy as np

    from tessel.frontend.torch_aten_expr import where
    from tessel.frontend.torch_aten_layout import _slice

    w = cx.v(a["weight"])
    xs, ws = cx.g.values[x].shape, cx.g.values[w].shape
    nsp = len(xs) - 2
    if nsp not in (1, 2):
        cx.unsupported(f"a {nsp}-D transposed convolution (the op set has 1-D and 2-D convolutions)")
    stride, pad = _pair(a["stride"], nsp), _pair(a["padding"], nsp)
    dil, opad, g = _pair(a["dilation"], nsp), _pair(a["output_padding"], nsp), int(a["groups"])
    for k in range(nsp):
        d, s, n = 2 + k, stride[k], cx.g.values[x].shape[2 + k]
        if s > 1 and n > 1:
            m = (n - 1) * s + 1
            pos = np.arange(m)
            g_ = cx.emit("gather", [x, cx.const((pos // s).astype(np.int64))], axis=d)
            keep = (pos % s == 0).reshape((m,) + (1,) * (nsp - 1 - k))
            x = where(X(cx, cx.const(keep)), X(cx, g_), 0.0).v
    begin, end = [0] * len(xs), [0] * len(xs)
    for k in range(nsp):
        lo = dil[k] * (ws[2 + k] - 1) - pad[k]
        begin[2 + k], end[2 + k] = lo, lo + opad[k]
    if any(v < 0 for v in begin + end):
        for k in range(nsp):
            n = cx.g.values[x].shape[2 + k]
            b0, e0 = min(begin[2 + k], 0), min(end[2 + k], 0)
            if b0 or e0:
                x = _slice(cx, x, 2 + k, -b0, n + e0)
        begin, end = [max(v, 0) for v in begin], [max(v, 0) for v in end]
    if any(begin + end):
        x = cx.emit("pad", [x], pads=tuple(begin + end), value=0)
    cin, cout_g, kern = ws[0], ws[1], ws[2:]
    wt = cx.reshape(w, (g, cin // g, cout_g) + kern)
    wt = cx.emit("transpose", [wt], perm=(0, 2, 1) + tuple(range(3, 3 + nsp)))
    wt = cx.reshape(wt, (g * cout_g, cin // g) + kern)
    axes = tuple(range(2, 2 + nsp))
    wt = cx.emit("slice", [wt], starts=tuple(k - 1 for k in kern), ends=tuple(-(2 ** 62) for _ in kern), axes=axes,
                 steps=tuple(-1 for _ in kern))
    b = a["bias"]
    return cx.emit("conv", [x, wt] + ([cx.v(b)] if b is not None else []), stride=(1,) * nsp,
                   padding=(0,) * (2 * nsp), dilation=dil, groups=g)
