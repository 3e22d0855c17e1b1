"""Linear, bilinear, trilinear and bicubic upsampling (torch.nn.functional.interpolate) as aten
converters: separable, one spatial axis at a time, each a gather of the source taps (constant
indices) times constant weights summed over the taps. Source positions and weights follow torch's
area_pixel_compute_source_index (align_corners, scale factors given or from the sizes; linear
clamps negative positions to 0, cubic clamps its four taps to the edge, A = -0.75).

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> "aten.upsample_bilinear2d.vec" in converters() and "aten.upsample_bicubic2d.vec" in converters()
    True
"""

from __future__ import annotations

from tessel.frontend.torch_aten import aten
from tessel.frontend.torch_aten_expr import X

CUBIC_A = -0.75


def _np():
    import numpy as np

    return np


def _source(n_in: int, n_out: int, align: bool, scale, cubic: bool):
    np = _np()
    dst = np.arange(n_out, dtype=np.float64)
    if align:
        s = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        return dst * s
    s = 1.0 / scale if scale is not None and scale > 0 else n_in / n_out
    src = s * (dst + 0.5) - 0.5
    return src if cubic else np.maximum(src, 0.0)


def taps(n_in: int, n_out: int, align: bool, scale, cubic: bool):
    """(indices (out, taps), weights (out, taps)) of one axis."""
    np = _np()
    src = _source(n_in, n_out, align, scale, cubic)
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    if not cubic:
        i0 = np.minimum(i0, n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return np.stack([i0, i1], 1), np.stack([1.0 - t, t], 1)
    a = CUBIC_A

    def cc1(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def cc2(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    idx = np.stack([np.clip(i0 + k, 0, n_in - 1) for k in (-1, 0, 1, 2)], 1)
    w = np.stack([cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)], 1)
    return idx, w


def _resize_axis(cx, x: str, d: int, n_out: int, align: bool, scale, cubic: bool) -> str:
    np = _np()
    from tessel.ir.dtypes import numpy_dtype

    shape = cx.g.values[x].shape
    n_in = shape[d]
    idx, w = taps(n_in, n_out, align, scale, cubic)
    if not cubic and n_in == n_out and (idx[:, 0] == np.arange(n_out)).all() and (w[:, 1] == 0).all():
        return x
    k = idx.shape[1]
    g = cx.emit("gather", [x, cx.const(idx.reshape(-1))], axis=d)  # (..., out * taps, ...)
    g = X(cx, cx.reshape(g, shape[:d] + (n_out, k) + shape[d + 1:]))
    dt = cx.g.values[x].dtype
    wv = X(cx, cx.const(w.reshape((n_out, k) + (1,) * (len(shape) - d - 1)).astype(numpy_dtype(dt))))
    return (g * wv).sum([d + 1]).v


@aten("upsample_linear1d.vec", "upsample_bilinear2d.vec", "upsample_trilinear3d.vec", "upsample_bicubic2d.vec",
      "upsample_linear1d.default", "upsample_bilinear2d.default", "upsample_trilinear3d.default",
      "upsample_bicubic2d.default")
def _upsample(cx, a):
    name = cx.node.target._schema.name
    x = cx.v(a["input"] if "input" in a else a["self"])
    shape, out = cx.g.values[x].shape, cx.out_shape
    nsp = len(shape) - 2
    cubic = "bicubic" in name
    factors = a.get("scale_factors")
    if factors is None:
        factors = [a.get(k) for k in ("scales_d", "scales_h", "scales_w", "scales") if k in a]
        factors = factors[-nsp:] if len(factors) >= nsp else None
    wide = cx.cast(x, "float64") if cx.g.values[x].dtype != "float64" else x
    for k in range(nsp):
        scale = factors[k] if factors else None
        wide = _resize_axis(cx, wide, 2 + k, out[2 + k], bool(a["align_corners"]), scale, cubic)
    return cx.cast(wide, cx.out_dtype)


@aten("grid_sampler_2d.default", "grid_sampler.default")
def _grid_sample(cx, a):
    """torch.nn.functional.grid_sample for bilinear (0) and nearest (1) interpolation with zeros (0)
    or border (1) padding: source positions unnormalised as torch does, each corner gathered from the
    flattened plane (taken where it lies inside, else 0)."""
    from tessel.frontend.torch_aten_expr import floor, where
    from tessel.frontend.torch_aten_layout import take_along
    from tessel.frontend.torch_aten_math import _round_half_even

    mode, pad, align = int(a["interpolation_mode"]), int(a["padding_mode"]), bool(a["align_corners"])
    x, grid = X(cx, cx.v(a["input"])), X(cx, cx.v(a["grid"]))
    if len(x.shape) != 4 or mode not in (0, 1) or pad not in (0, 1):
        cx.unsupported(f"grid_sample with interpolation mode {mode}, padding mode {pad} on rank {len(x.shape)}")
    n, c, h, w = x.shape
    _, ho, wo, _ = grid.shape
    dt = cx.out_dtype
    g = grid.astype("float64")
    gx = X(cx, _slice_last(cx, g.v, 0)).reshape((n, ho * wo))
    gy = X(cx, _slice_last(cx, g.v, 1)).reshape((n, ho * wo))

    def unnorm(v: X, size: int) -> X:
        u = (v + 1.0) * 0.5 * (size - 1) if align else ((v + 1.0) * size - 1.0) * 0.5
        return u.op("clip", min=0.0, max=float(size - 1)) if pad == 1 else u

    ix, iy = unnorm(gx, w), unnorm(gy, h)
    plane = x.astype("float64").reshape((n, c, h * w))

    def tap(px: X, py: X) -> X:
        inside = px.ge(0.0) & px.le(float(w - 1)) & py.ge(0.0) & py.le(float(h - 1))
        flat = (py.op("clip", min=0.0, max=float(h - 1)) * float(w) + px.op("clip", min=0.0, max=float(w - 1)))
        idx = cx.emit("expand", [flat.astype("int64").reshape((n, 1, ho * wo)).v], shape=(n, c, ho * wo))
        val = X(cx, take_along(cx, plane.v, idx, 2))
        return where(inside.reshape((n, 1, ho * wo)), val, 0.0)

    if mode == 1:
        out = tap(_round_half_even(ix), _round_half_even(iy))
    else:
        x0, y0 = floor(ix), floor(iy)
        x1, y1 = x0 + 1.0, y0 + 1.0
        wx1, wy1 = ix - x0, iy - y0
        wx0, wy0 = x1 - ix, y1 - iy

        def wgt(u: X, v: X) -> X:
            return (u * v).reshape((n, 1, ho * wo))

        out = tap(x0, y0) * wgt(wx0, wy0) + tap(x1, y0) * wgt(wx1, wy0) + tap(x0, y1) * wgt(wx0, wy1) \
            + tap(x1, y1) * wgt(wx1, wy1)
    return out.reshape((n, c, ho, wo)).astype(dt).v


def _slice_last(cx, v: str, k: int) -> str:
    from tessel.frontend.torch_aten_layout import _slice

    rank = len(cx.g.values[v].shape)
    return cx.reshape(_slice(cx, v, rank - 1, k, k + 1), cx.g.values[v].shape[:-1])
