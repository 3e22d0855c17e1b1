"""ONNX Resize as gathers with constant taps (registered into onnx_ops.CONVERTERS on import).

Resize is separable and linear in its input: along each resized axis, output element o is a
weighted sum of a few input elements (1-2 for nearest, 2 for linear, 4 for cubic, more with
antialias). Shapes are static, so the taps (indices and weights) are computed here with numpy,
following the coordinate transformations and coefficient formulas of the ONNX specification (and
its reference implementation: `onnx/reference/ops/op_resize.py`), and the op becomes, per axis,
gathers, multiplies and adds of the op set. Out-of-range positions of tf_crop_and_resize take the
extrapolation value through one `where`.

Example:
    >>> idx, w, outside = axis_taps(2, 4, 2.0, "nearest", "asymmetric", "floor", -0.75, False, False, None)
    >>> idx.shape, (idx * w).sum(axis=1).tolist()  # two taps per output, one of weight 1
    ((4, 2), [0.0, 0.0, 1.0, 1.0])
"""

from __future__ import annotations

import math

import numpy as np

from tessel.frontend.onnx_ops import cast, converter, ins, norm_axis, opt, scalar
from tessel.frontend.onnx_ops_tensor import take


def _coordinates(mode: str, n_in: int, n_out: int, scale: float, roi) -> np.ndarray:
    """The input coordinate of each output index (ONNX's coordinate_transformation_mode)."""
    y = np.arange(n_out, dtype=np.float64)
    # the output width is scale * n_in unrounded, as onnx's specification and reference take it (and
    # its conformance tests check); onnxruntime takes the rounded length, which differs only when
    # scale * n_in is not an integer
    width = scale * n_in
    if mode == "align_corners":
        return np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        x = np.full(n_out, (hi - lo) * (n_in - 1) / 2) if width == 1 else y * (hi - lo) * (n_in - 1) / (width - 1)
        return x + lo * (n_in - 1)
    if mode == "pytorch_half_pixel":
        return np.full(n_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / width)
        return offset + (y + 0.5) / scale - 0.5
    raise ValueError(mode)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _coeffs(mode: str, ratio: float, scale: float, nearest_mode: str, a: float, antialias: bool) -> np.ndarray:
    """Weights of the taps base - n/2 + 1 ... base + n/2 for a position `ratio` in (0, 1] past base."""
    if mode == "nearest":
        if ratio == 1:
            return np.array([0.0, 1.0])
        pick = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False,
                "ceil": True}[nearest_mode]
        return np.array([0.0, 1.0]) if pick else np.array([1.0, 0.0])
    s = min(scale, 1.0) if antialias else 1.0
    if mode == "linear":
        start = int(np.floor(-1 / s) + 1)
        args = (np.arange(start, 2 - start) - ratio) * s
        c = np.clip(1 - np.abs(args), 0, 1)
    else:
        start = int(np.floor(-2 / s) + 1)
        c = _cubic((np.arange(start, 2 - start) - ratio) * s, a)
    return c / c.sum() if antialias else c


def axis_taps(n_in, n_out, scale, mode, coord_mode, nearest_mode, a, exclude_outside, antialias, roi):
    """(indices (n_out, taps), weights (n_out, taps), outside mask (n_out,) or None) for one axis."""
    x = _coordinates(coord_mode, n_in, n_out, scale, roi)
    rows_i, rows_w = [], []
    for xo in x:
        base = math.ceil(xo) - 1  # ratio in (0, 1]: the tap left of an integer position is base
        c = _coeffs(mode, xo - base, scale, nearest_mode, a, antialias)
        n = len(c)
        pad = -(-n // 2)
        first = min(max(base - n // 2 + 1, -pad), n_in + pad - n)  # onnx picks n neighbours in the padded axis
        idx = np.arange(first, first + n)
        if exclude_outside:
            c = np.where((idx < 0) | (idx >= n_in), 0.0, c)
            c = c / c.sum()
        rows_i.append(np.clip(idx, 0, n_in - 1))
        rows_w.append(c)
    outside = (x < 0) | (x > n_in - 1) if coord_mode == "tf_crop_and_resize" else None
    return np.array(rows_i, np.int64), np.array(rows_w), outside


def _resize_axis(ctx, y, axis, taps, outside, extrapolation):
    idx, w = taps
    rank = len(ctx.shape(y))
    dt = ctx.dtype(y)
    acc = None
    for t in range(idx.shape[1]):
        col = w[:, t]
        if not col.any():
            continue
        g = take(ctx, y, idx[:, t], axis)
        if not np.all(col == 1.0):
            shape = [len(col) if d == axis else 1 for d in range(rank)]
            g = ctx.op("mul", [g, ctx.const(col.reshape(shape).astype(np.dtype(_np(dt))), "weights")])
        acc = g if acc is None else ctx.op("add", [acc, g])
    if acc is None:
        acc = ctx.op("mul", [take(ctx, y, idx[:, 0], axis), scalar(ctx, 0, dt)])
    if outside is not None and outside.any():
        shape = [len(outside) if d == axis else 1 for d in range(rank)]
        acc = ctx.op("where", [ctx.const(outside.reshape(shape), "outside"), scalar(ctx, extrapolation, dt), acc])
    return acc


def _np(dtype: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)


@converter("Resize")
def _resize(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    shape = ctx.shape(x)
    rank = len(shape)
    if ctx.version(node) < 11:
        roi_v, scales_v, sizes_v = None, opt(vals, 1), None
    else:
        roi_v, scales_v, sizes_v = opt(vals, 1), opt(vals, 2), opt(vals, 3)
    axes = ctx.attr(node, "axes")
    axes = list(range(rank)) if axes is None else [norm_axis(ctx, a, rank) for a in axes]
    mode = ctx.attr(node, "mode", "nearest")
    coord = ctx.attr(node, "coordinate_transformation_mode", "half_pixel" if ctx.version(node) >= 11 else "asymmetric")
    if mode not in ("nearest", "linear", "cubic") or not ctx.dtype(x).startswith("float"):
        raise ctx.unsupported(f"mode '{mode}' on {ctx.dtype(x)}")
    sizes = None if sizes_v is None or 0 in ctx.shape(sizes_v) else \
        [int(s) for s in np.asarray(ctx.need_const(sizes_v, "sizes")).reshape(-1)]
    if sizes is not None:
        ratios = [sizes[k] / shape[a] for k, a in enumerate(axes)]
        policy = ctx.attr(node, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            common = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [common] * len(axes)
            sizes = [int(math.floor(common * shape[a] + 0.5)) for a in axes]
    else:
        ratios = [float(r) for r in np.asarray(ctx.need_const(scales_v, "scales")).reshape(-1)]
        sizes = [int(math.floor(shape[a] * r)) for a, r in zip(axes, ratios)]
    roi = None
    if coord == "tf_crop_and_resize":
        r = [float(v) for v in np.asarray(ctx.need_const(roi_v, "roi")).reshape(-1)]
        roi = list(zip(r[:len(r) // 2], r[len(r) // 2:]))
        if len(roi) == rank and len(axes) != rank:
            roi = [roi[a] for a in axes]
    nearest_mode = ctx.attr(node, "nearest_mode", "round_prefer_floor")
    a = float(ctx.attr(node, "cubic_coeff_a", -0.75))
    exclude = bool(ctx.attr(node, "exclude_outside", 0))
    antialias = bool(ctx.attr(node, "antialias", 0))
    extrapolation = float(ctx.attr(node, "extrapolation_value", 0.0))
    y = x
    for k, (axis, n_out, ratio) in enumerate(zip(axes, sizes, ratios)):
        if n_out == shape[axis] and ratio == 1.0 and coord != "tf_crop_and_resize":
            continue
        idx, w, outside = axis_taps(shape[axis], n_out, ratio, mode, coord, nearest_mode, a, exclude, antialias,
                                    None if roi is None else roi[k])
        y = _resize_axis(ctx, y, axis, (idx, w), outside, extrapolation)
    return [cast(ctx, y, ctx.dtype(x))]


@converter("Upsample")
def _upsample(ctx, node):
    """Upsample (opsets 7-9): nearest with integer scales repeats each element (a gather per axis)."""
    vals = ins(ctx, node)
    x = vals[0]
    scales = ctx.attr(node, "scales") if len(vals) < 2 else \
        [float(s) for s in np.asarray(ctx.need_const(vals[1], "scales")).reshape(-1)]
    if ctx.attr(node, "mode", "nearest") != "nearest" or any(s != int(s) for s in scales):
        raise ctx.unsupported("only nearest mode with integer scales")
    y = x
    for axis, s in enumerate(int(s) for s in scales):
        if s != 1:
            y = take(ctx, y, np.arange(ctx.shape(x)[axis] * s) // s, axis)
    return [y]
