"""ONNX `RoiAlign` (onnxruntime's and onnx's reference algorithm) with a fixed `sampling_ratio`:
every region gets sampling_ratio^2 bilinear samples per output cell, at run-time coordinates from
its box; the four neighbours of each sample are gathered from the (N*H*W, C) feature rows at
flat indices and weighted; "avg" sums the weighted samples over the count, "max" takes the max
over samples of the largest weighted neighbour. A sample outside [-1, H] x [-1, W] contributes 0.
`sampling_ratio` 0 (adaptive: ceil(box size / output size) samples) makes the sample count depend
on the boxes' values and is refused.

Example:
    >>> "RoiAlign" in CONVERTERS
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, cast, converter, ins, reshape, scalar  # noqa: F401
from tessel.frontend.onnx_ops_tensor import take


@converter("RoiAlign")
def _roi_align(ctx, node):
    x, rois, batch = ins(ctx, node)
    n, c, h, w = ctx.shape(x)
    r = ctx.shape(rois)[0]
    oh, ow = int(ctx.attr(node, "output_height", 1)), int(ctx.attr(node, "output_width", 1))
    g = int(ctx.attr(node, "sampling_ratio", 0))
    if g <= 0:
        raise ctx.unsupported("sampling_ratio 0 (the number of samples would depend on the boxes' values)")
    mode = ctx.attr(node, "mode", "avg")
    half = ctx.attr(node, "coordinate_transformation_mode", "half_pixel" if ctx.version(node) >= 16 else
                    "output_half_pixel") == "half_pixel"
    scale = float(ctx.attr(node, "spatial_scale", 1.0))
    dt = ctx.dtype(x)
    f = "float32" if dt in ("float16", "bfloat16") else dt
    boxes = cast(ctx, rois, f)

    def coord(k):  # box coordinate k of every region, (R, 1)
        v = reshape(ctx, take(ctx, boxes, [k], 1), (r, 1))
        return ctx.op("sub", [ctx.op("mul", [v, scalar(ctx, scale, f)]), scalar(ctx, 0.5 if half else 0.0, f)])

    def samples(start, end, size, out):
        """Sample positions (R, out*g) along one axis: start + p*bin + (i + 0.5)*bin/g."""
        extent = ctx.op("sub", [end, start])
        if not half:
            extent = ctx.op("maximum", [extent, scalar(ctx, 1.0, f)])
        bin_ = ctx.op("div", [extent, scalar(ctx, float(out), f)])
        steps = np.array([p + (i + 0.5) / g for p in range(out) for i in range(g)], np.float64).reshape(1, -1)
        pos = ctx.op("add", [start, ctx.op("mul", [bin_, ctx.const(steps.astype(np.dtype(f)), "steps")])])
        outside = ctx.op("logical_or", [ctx.op("lt", [pos, scalar(ctx, -1.0, f)]),
                                        ctx.op("gt", [pos, scalar(ctx, float(size), f)])])
        pos = ctx.op("maximum", [pos, scalar(ctx, 0.0, f)])
        low = ctx.op("floor", [pos])
        edge = ctx.op("ge", [low, scalar(ctx, float(size - 1), f)])
        low = ctx.op("where", [edge, scalar(ctx, float(size - 1), f), low])
        pos = ctx.op("where", [edge, low, pos])
        high = ctx.op("where", [edge, low, ctx.op("add", [low, scalar(ctx, 1.0, f)])])
        frac = ctx.op("sub", [pos, low])
        return outside, cast(ctx, low, "int64"), cast(ctx, high, "int64"), frac

    ys = samples(coord(1), coord(3), h, oh)  # (R, SY)
    xs = samples(coord(0), coord(2), w, ow)  # (R, SX)
    sy, sx = oh * g, ow * g
    outside = ctx.op("logical_or", [reshape(ctx, ys[0], (r, sy, 1)), reshape(ctx, xs[0], (r, 1, sx))])
    base = ctx.op("mul", [reshape(ctx, cast(ctx, batch, "int64"), (r, 1, 1)), scalar(ctx, h * w, "int64")])
    rows = ctx.op("transpose", [reshape(ctx, x, (n, c, h * w))], perm=(0, 2, 1))
    rows = reshape(ctx, rows, (n * h * w, c))
    one = scalar(ctx, 1.0, f)
    terms = []
    for yi, wy in ((1, ctx.op("sub", [one, ys[3]])), (2, ys[3])):
        for xi, wx in ((1, ctx.op("sub", [one, xs[3]])), (2, xs[3])):
            flat = ctx.op("add", [base, ctx.op("add", [ctx.op("mul", [reshape(ctx, ys[yi], (r, sy, 1)),
                                                                      scalar(ctx, w, "int64")]),
                                                        reshape(ctx, xs[xi], (r, 1, sx))])])
            val = cast(ctx, ctx.op("gather", [rows, reshape(ctx, flat, (r * sy * sx,))], axis=0), f)
            wgt = ctx.op("mul", [reshape(ctx, wy, (r, sy, 1)), reshape(ctx, wx, (r, 1, sx))])
            wgt = ctx.op("where", [outside, scalar(ctx, 0.0, f), wgt])
            terms.append(ctx.op("mul", [reshape(ctx, val, (r, sy, sx, c)), reshape(ctx, wgt, (r, sy, sx, 1))]))
    if mode == "avg":
        total = ctx.op("add", [ctx.op("add", [terms[0], terms[1]]), ctx.op("add", [terms[2], terms[3]])])
        cells = reshape(ctx, total, (r, oh, g, ow, g, c))
        out = ctx.op("reduce_sum", [cells], axes=(2, 4), keepdims=False)
        out = ctx.op("div", [out, scalar(ctx, float(g * g), f)])
    elif mode == "max":
        best = ctx.op("maximum", [ctx.op("maximum", [terms[0], terms[1]]), ctx.op("maximum", [terms[2], terms[3]])])
        out = ctx.op("reduce_max", [reshape(ctx, best, (r, oh, g, ow, g, c))], axes=(2, 4), keepdims=False)
    else:
        raise ctx.unsupported(f"mode {mode!r}")
    return [cast(ctx, ctx.op("transpose", [out], perm=(0, 3, 1, 2)), dt)]
