"""ONNX `GridSample` (2-D and 3-D; nearest, (bi/tri)linear and (bi)cubic; zeros, border and
reflection padding; both align_corners), following onnx's reference implementation.

The op set has no sampler, so a sample is a sum over the interpolation taps (2 per spatial dim for
linear, 4 for cubic, 1 for nearest) of weight * pixel, each pixel a gather from the flattened
input at a computed flat index; a tap outside the input reads 0 (zeros padding) or is moved in
(border: clamped, reflection: reflected). Coordinates outside the borders are first clamped or
reflected, as the reference does; except that cubic sampling with border padding clamps only its
taps, as onnxruntime and torch do (the two rules agree for grids inside the borders, as in onnx's
node cases, and differ outside them).

Example:
    >>> "GridSample" in CONVERTERS
    True
"""

from __future__ import annotations

import itertools

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, cast, converter, ins, reshape, round_half_even, scalar  # noqa: F401
from tessel.frontend.onnx_ops_tensor import take

_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}
CUBIC_ALPHA = -0.75


class _Ops:
    """Shorthand for elementwise ops on graph values of one float dtype."""

    def __init__(self, ctx, dt):
        self.ctx, self.dt = ctx, dt

    def k(self, v):
        return scalar(self.ctx, float(v), self.dt)

    def __getattr__(self, op):
        return lambda *args: self.ctx.op(op, [a if isinstance(a, str) else self.k(a) for a in args])


def _reflect(o: _Ops, v, lo: float, hi: float):
    """onnx's _gs_reflect: fold v into [lo, hi] by reflecting at the near border until inside."""
    rng = hi - lo

    def fold(dx, near, far):
        n = o.floor(o.div(dx, rng))
        r = o.sub(dx, o.mul(n, rng))
        even = o.eq(o.sub(n, o.mul(o.floor(o.mul(n, 0.5)), 2.0)), 0.0)
        return o.where(even, near(r), far(r))

    below = fold(o.sub(lo, v), lambda r: o.add(r, lo), lambda r: o.sub(hi, r))
    above = fold(o.sub(v, hi), lambda r: o.sub(hi, r), lambda r: o.add(r, lo))
    return o.where(o.lt(v, lo), below, o.where(o.gt(v, hi), above, v))


def _cubic_weights(o: _Ops, t):
    a = CUBIC_ALPHA
    x1, x2, x3 = o.add(t, 1.0), o.sub(1.0, t), o.sub(2.0, t)
    w0 = o.sub(o.mul(o.add(o.mul(o.sub(o.mul(x1, a), 5 * a), x1), 8 * a), x1), 4 * a)
    w1 = o.add(o.mul(o.mul(o.sub(o.mul(t, a + 2), a + 3), t), t), 1.0)
    w2 = o.add(o.mul(o.mul(o.sub(o.mul(x2, a + 2), a + 3), x2), x2), 1.0)
    w3 = o.sub(o.mul(o.add(o.mul(o.sub(o.mul(x3, a), 5 * a), x3), 8 * a), x3), 4 * a)
    return [w0, w1, w2, w3]


@converter("GridSample")
def _grid_sample(ctx, node):
    x, grid = ins(ctx, node)
    xs, gs = ctx.shape(x), ctx.shape(grid)
    dims = xs[2:]
    r = len(dims)
    if r not in (2, 3) or gs[-1] != r:
        raise ctx.unsupported(f"{r} spatial dims with a grid of last extent {gs[-1]}")
    mode = _MODES.get(ctx.attr(node, "mode", "linear" if ctx.version(node) >= 20 else "bilinear"))
    if mode is None or (mode == "cubic" and r != 2):
        raise ctx.unsupported(f"mode '{ctx.attr(node, 'mode')}' on {r} spatial dims")
    pad = ctx.attr(node, "padding_mode", "zeros")
    align = bool(ctx.attr(node, "align_corners", 0))
    dt = "float64" if ctx.dtype(x) == "float64" else "float32"
    o = _Ops(ctx, dt)
    n, c = xs[:2]
    out_sp = gs[1:-1]
    g = cast(ctx, grid, dt)
    # per spatial dim i (grid component r-1-i), the coordinate, clamped/reflected like the reference
    coords = []
    for i, d in enumerate(dims):
        gi = reshape(ctx, take(ctx, g, [r - 1 - i], len(gs) - 1), (n, 1) + tuple(out_sp))
        v = o.mul(o.add(gi, 1.0), (d - 1) / 2.0) if align else o.div(o.sub(o.mul(o.add(gi, 1.0), d), 1.0), 2.0)
        if mode == "nearest":
            v = round_half_even(ctx, v)
        lo, hi = (0.0, d - 1.0) if align else (-0.5, d - 0.5)
        if pad == "border" and mode != "cubic":  # cubic clamps its taps only (as onnxruntime and torch do)
            v = o.where(o.logical_or(o.lt(v, lo), o.gt(v, hi)), ctx.op("clip", [v], min=0.0, max=float(d - 1)), v)
        elif pad == "reflection":
            v = _reflect(o, v, lo, hi)
        coords.append((v, d, lo, hi))
    # taps per dim: (integer position, weight)
    taps = []
    for v, *_ in coords:
        if mode == "nearest":
            taps.append([(v, None)])
            continue
        f = o.floor(v)
        t = o.sub(v, f)
        if mode == "linear":
            taps.append([(f, o.sub(1.0, t)), (o.add(f, 1.0), t)])
        else:
            taps.append([(o.add(f, float(k - 1)), w) for k, w in enumerate(_cubic_weights(o, t))])
    strides = [int(np.prod(dims[i + 1:])) for i in range(r)]
    base = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * r) * int(np.prod(dims))
    xflat = reshape(ctx, x, (int(np.prod(xs)),))
    total = None
    for combo in itertools.product(*taps):
        flat, weight, valid = None, None, None
        for (p, w), (_, d, lo, hi), st in zip(combo, coords, strides):
            if pad == "zeros":
                inside = o.logical_and(o.ge(p, 0.0), o.le(p, d - 1.0))
                valid = inside if valid is None else o.logical_and(valid, inside)
            elif pad == "reflection":
                p = _reflect(o, p, lo, hi)
                p = ctx.op("where", [o.lt(p, 0.0), o.ceil(p), o.floor(p)])  # int(): truncation toward zero
            p = ctx.op("clip", [p], min=0.0, max=float(d - 1))
            term = o.mul(p, float(st))
            flat = term if flat is None else o.add(flat, term)
            if w is not None:
                weight = w if weight is None else o.mul(weight, w)
        idx = ctx.op("add", [cast(ctx, flat, "int64"), ctx.const(base, "base")])  # (N, C, *out)
        pix = cast(ctx, ctx.op("gather", [xflat, idx], axis=0), dt)
        if valid is not None:
            pix = o.where(valid, pix, 0.0)
        if weight is not None:
            pix = o.mul(pix, weight)
        total = pix if total is None else o.add(total, pix)
    return [cast(ctx, total, ctx.dtype(x))]
