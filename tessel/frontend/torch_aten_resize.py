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
