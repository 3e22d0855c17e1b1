"""ONNX `DFT` (opsets 17 and 20: forward, inverse, one-sided, dft_length, any signal axis) and `STFT` as
matrix products with constant cosine and sine tables along the signal axis: exact in float64 up to
rounding, O(n^2) per signal (the op set's rfft is for real input along one axis only).

With C[j, k] = cos(2 pi j k / n) and S[j, k] = sin(2 pi j k / n), the forward transform is
Re = xr C + xi S, Im = xi C - xr S; the inverse flips the sign of S and divides by n; a one-sided
inverse (irfft) rebuilds the missing bins from Hermitian symmetry (weight 2 on bins 1..n/2-1).

Example:
    >>> "DFT" in CONVERTERS
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, const_ints, converter, ins, norm_axis, opt, reshape  # noqa: F401
from tessel.frontend.onnx_ops_tensor import slice_axis, take


def _last(ctx, v, axis: int):
    """`v` with `axis` moved last."""
    rank = len(ctx.shape(v))
    perm = [d for d in range(rank) if d != axis] + [axis]
    return v if perm == list(range(rank)) else ctx.op("transpose", [v], perm=tuple(perm))


def _back(ctx, v, axis: int):
    rank = len(ctx.shape(v))
    perm = list(range(rank - 1))
    perm.insert(axis, rank - 1)
    return v if perm == list(range(rank)) else ctx.op("transpose", [v], perm=tuple(perm))


def _fit(ctx, v, axis: int, length: int):
    """`v` zero-padded or truncated to `length` along `axis` (dft_length)."""
    n = ctx.shape(v)[axis]
    if length < n:
        return slice_axis(ctx, v, axis, 0, length)
    if length > n:
        pads = [0] * (2 * len(ctx.shape(v)))
        pads[len(ctx.shape(v)) + axis] = length - n
        return ctx.op("pad", [v], pads=tuple(pads), value=0.0)
    return v


@converter("DFT")
def _dft(ctx, node):
    vals = ins(ctx, node)
    x, length_v = vals[0], opt(vals, 1)
    shape = ctx.shape(x)
    rank = len(shape)
    if ctx.version(node) >= 20:
        axis = const_ints(ctx, vals[2], "axis")[0] if opt(vals, 2) is not None else -2
    else:
        axis = int(ctx.attr(node, "axis", 1))
    axis = norm_axis(ctx, axis, rank)
    if axis == rank - 1:
        raise ctx.unsupported("the signal axis is the real/imaginary axis")
    inverse, onesided = bool(ctx.attr(node, "inverse", 0)), bool(ctx.attr(node, "onesided", 0))
    dt = ctx.dtype(x)
    parts = [reshape(ctx, take(ctx, x, [p], rank - 1), shape[:-1]) for p in range(shape[-1])]
    xr, xi = parts[0], (parts[1] if len(parts) > 1 else None)
    n_in = shape[axis]
    if inverse and onesided:
        n = const_ints(ctx, length_v, "dft_length")[0] if length_v is not None else 2 * (n_in - 1)
        k = np.arange(n_in)[:, None]
        j = np.arange(n)[None, :]
        wgt = np.where((k == 0) | (2 * k == n), 1.0, 2.0) / n
        ang = 2 * np.pi * k * j / n
        cr, ci = wgt * np.cos(ang), -wgt * np.sin(ang)  # (K, n): y = Xr cr + Xi ci
        y = ctx.op("matmul", [_last(ctx, xr, axis), ctx.const(cr.astype(np.dtype(dt)), "dft_cos")])
        if xi is not None:
            sin_table = ctx.const(ci.astype(np.dtype(dt)), "dft_sin")
            y = ctx.op("add", [y, ctx.op("matmul", [_last(ctx, xi, axis), sin_table])])
        y = _back(ctx, y, axis)
        return [reshape(ctx, y, ctx.shape(y) + (1,))]
    n = const_ints(ctx, length_v, "dft_length")[0] if length_v is not None else n_in
    xr = _last(ctx, _fit(ctx, xr, axis, n), axis)
    xi = None if xi is None else _last(ctx, _fit(ctx, xi, axis, n), axis)
    bins = n // 2 + 1 if onesided else n
    ang = 2 * np.pi * np.arange(n)[:, None] * np.arange(bins)[None, :] / n
    scale = 1.0 / n if inverse else 1.0
    c = ctx.const((np.cos(ang) * scale).astype(np.dtype(dt)), "dft_cos")
    s = ctx.const((np.sin(ang) * scale * (-1.0 if inverse else 1.0)).astype(np.dtype(dt)), "dft_sin")
    re = ctx.op("matmul", [xr, c])
    im = ctx.op("neg", [ctx.op("matmul", [xr, s])])
    if xi is not None:
        re = ctx.op("add", [re, ctx.op("matmul", [xi, s])])
        im = ctx.op("add", [im, ctx.op("matmul", [xi, c])])
    re, im = _back(ctx, re, axis), _back(ctx, im, axis)
    out = ctx.shape(re) + (1,)
    return [ctx.op("concat", [reshape(ctx, re, out), reshape(ctx, im, out)], axis=rank - 1)]


@converter("STFT")
def _stft(ctx, node):
    """Frames gathered at constant indices (frame f: samples f*step ... f*step + length - 1), times
    the window, then the DFT of each frame as products with cosine and sine tables."""
    vals = ins(ctx, node)
    x, step_v, window, length_v = vals[0], vals[1], opt(vals, 2), opt(vals, 3)
    shape = ctx.shape(x)
    if len(shape) != 3:
        raise ctx.unsupported(f"signal of shape {shape}, expected (batch, length, 1 or 2)")
    step = const_ints(ctx, step_v, "frame_step")[0]
    if length_v is not None:
        n = const_ints(ctx, length_v, "frame_length")[0]
    elif window is not None:
        n = ctx.shape(window)[0]
    else:
        raise ctx.unsupported("neither a window nor a frame_length")
    frames = (shape[1] - n) // step + 1
    if frames < 1 or step < 1:
        raise ctx.unsupported(f"frames of {n} every {step} samples in a signal of {shape[1]}")
    onesided = bool(ctx.attr(node, "onesided", 1))
    dt = ctx.dtype(x)
    idx = ctx.const((np.arange(frames)[:, None] * step + np.arange(n)[None, :]).reshape(-1).astype(np.int64), "frames")
    parts = []
    for p in range(shape[2]):
        sig = reshape(ctx, take(ctx, x, [p], 2), shape[:2])
        framed = reshape(ctx, ctx.op("gather", [sig, idx], axis=1), (shape[0], frames, n))
        parts.append(ctx.op("mul", [framed, window]) if window is not None else framed)
    xr, xi = parts[0], (parts[1] if len(parts) > 1 else None)
    bins = n // 2 + 1 if onesided else n
    ang = 2 * np.pi * np.arange(n)[:, None] * np.arange(bins)[None, :] / n
    c = ctx.const(np.cos(ang).astype(np.dtype(dt)), "dft_cos")
    s = ctx.const(np.sin(ang).astype(np.dtype(dt)), "dft_sin")
    re = ctx.op("matmul", [xr, c])
    im = ctx.op("neg", [ctx.op("matmul", [xr, s])])
    if xi is not None:
        re = ctx.op("add", [re, ctx.op("matmul", [xi, s])])
        im = ctx.op("add", [im, ctx.op("matmul", [xi, c])])
    out = (shape[0], frames, bins, 1)
    return [ctx.op("concat", [reshape(ctx, re, out), reshape(ctx, im, out)], axis=3)]
