"""Pooling over the trailing 1, 2 or 3 dimensions: max_pool and avg_pool with kernel, stride,
per-side padding, dilation and ceil_mode (torch's output-size rule: a window may not start in the
end padding).

Max pooling reads padding as -inf (a where() guard, no padded copy). Average pooling divides by
the number of window taps that lie in the padded input (count_include_pad, torch's default) or in
the input itself; when that count varies over the output, it is a compute of its own
(`<name>_cnt`) over the output's spatial positions.

Example:
    >>> from tessel.frontend.graph import Value
    >>> get_op("max_pool").infer([Value("x", (1, 2, 5, 5), "float32")], {"kernel": [2, 2]})
    [((1, 2, 2, 2), 'float32')]
"""

from __future__ import annotations

import math

from tessel.errors import ArgumentError, DTypeError, ShapeError
from tessel.frontend.op_library.common import check_inputs, compute_dtype, f64, int_list, need_numeric, to_np
from tessel.frontend.op_library.contraction import window_out
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.ir import dsl
from tessel.ir.dtypes import is_float


def _np():
    import numpy as np

    return np


def pool_params(op: str, attrs: dict, x_shape: tuple):
    """(kernel, stride, pad_begin, pad_end, dilation, ceil_mode, out_spatial) of a pool over the
    trailing len(kernel) dims of an input of shape `x_shape`."""
    kernel = int_list(op, attrs, "kernel")
    nsp = len(kernel)
    if not 1 <= nsp <= 3:
        raise ArgumentError(f"{op}: attribute 'kernel' {kernel} must have 1 to 3 values")
    if len(x_shape) < nsp:
        raise ShapeError(f"{op}: input 0 has shape {tuple(x_shape)}, fewer dims than the kernel {kernel}")
    stride = int_list(op, attrs, "stride", nsp, default=kernel) if attrs.get("stride") is not None else kernel
    dil = int_list(op, attrs, "dilation", nsp, default=1)
    p = attrs.get("padding", 0)
    pads = (int(p),) * (2 * nsp) if isinstance(p, int) else int_list(op, attrs, "padding")
    if len(pads) == nsp:
        pads = pads + pads
    if len(pads) != 2 * nsp:
        raise ArgumentError(f"{op}: attribute 'padding' {pads} needs {nsp} or {2 * nsp} values")
    if any(v <= 0 for v in kernel + stride + dil) or any(v < 0 for v in pads):
        raise ArgumentError(f"{op}: kernel {kernel}, stride {stride} and dilation {dil} must be positive, "
                            f"padding {pads} non-negative")
    pb, pe = pads[:nsp], pads[nsp:]
    ceil_mode = bool(attrs.get("ceil_mode", False))
    sp = tuple(x_shape[len(x_shape) - nsp:])
    off = len(x_shape) - nsp
    out = tuple(window_out(op, sp[d], kernel[d], stride[d], pb[d], pe[d], dil[d], ceil_mode, off + d)
                for d in range(nsp))
    return kernel, stride, pb, pe, dil, ceil_mode, out


def _infer(op):
    def infer(inputs, attrs):
        (x,) = check_inputs(op, inputs, 1)
        need_numeric(op, x.dtype)
        if op == "avg_pool" and not is_float(x.dtype):
            raise DTypeError(f"avg_pool: input 0 has dtype {x.dtype}, expected a float dtype")
        *_, out = pool_params(op, attrs, tuple(x.shape))
        return [(tuple(x.shape[:len(x.shape) - len(out)]) + out, x.dtype)]

    return infer


def _window(op, x, attrs):
    """Reduce axes, and per output index the input positions and validity guard of the window."""
    kernel, stride, pb, _, dil, _, out = pool_params(op, attrs, x.shape)
    nsp, lead = len(kernel), x.ndim - len(kernel)
    rk = [dsl.reduce_axis(kernel[d], name=f"rk{d}") for d in range(nsp)]
    sp = x.shape[lead:]

    def positions(o):
        pos = [o[lead + d] * stride[d] + rk[d] * dil[d] - pb[d] for d in range(nsp)]
        guard = None
        for d in range(nsp):
            hi = (out[d] - 1) * stride[d] - pb[d] + (kernel[d] - 1) * dil[d] >= sp[d]
            for cond in ([pos[d] >= 0] if pb[d] > 0 else []) + ([pos[d] < sp[d]] if hi else []):
                guard = cond if guard is None else guard & cond
        return pos, guard

    return rk, positions


@register("max_pool", "reduction")
class MaxPool:
    """Maximum over each window; padding never wins (it reads as -inf, or the type's minimum)."""

    infer = staticmethod(_infer("max_pool"))

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        rk, positions = _window("max_pool", x, attrs)
        lead = x.ndim - len(rk)
        low = float("-inf") if is_float(dt) else int(_np().iinfo(dt).min)

        def body(*o):
            pos, guard = positions(o)
            v = x[tuple(o[:lead]) + tuple(pos)]
            if guard is not None:
                v = dsl.where(guard, v, dsl.const(low, dt))
            return dsl.max(v, axis=rk)

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x = np.asarray(arrays[0])
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        return [to_np(_pool_np("max_pool", x, attrs, lambda w, valid, padded: np.max(np.where(valid, w, low), axis=-1)),
                      x.dtype.name)]


@register("avg_pool", "reduction")
class AvgPool:
    """Mean over each window (see the module docstring for the divisor)."""

    infer = staticmethod(_infer("avg_pool"))

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        c = compute_dtype(dt)
        kernel, stride, pb, pe, dil, _, out = pool_params("avg_pool", attrs, x.shape)
        rk, positions = _window("avg_pool", x, attrs)
        nsp, lead = len(kernel), x.ndim - len(kernel)

        def body(*o):
            pos, guard = positions(o)
            v = x[tuple(o[:lead]) + tuple(pos)].astype(c)
            return dsl.sum(dsl.where(guard, v, 0.0) if guard is not None else v, axis=rk)

        s = dsl.compute(shape, body, name=f"{names[0]}_sum")
        counts = _tap_counts(x.shape[lead:], kernel, stride, pb, pe, dil, out,
                             bool(attrs.get("count_include_pad", True)))
        if all(len(set(cd)) == 1 for cd in counts):  # one divisor everywhere: a constant
            inv = 1.0 / math.prod(cd[0] for cd in counts)
            return [dsl.compute(shape, lambda *i: (s[i] * inv).astype(dt), name=names[0])]
        include = bool(attrs.get("count_include_pad", True))
        rc = [dsl.reduce_axis(kernel[d], name=f"rc{d}") for d in range(nsp)]

        def count(*o):
            inside = None
            for d in range(nsp):
                p = o[d] * stride[d] + rc[d] * dil[d] - pb[d]
                lo, hi = (-pb[d], x.shape[lead + d] + pe[d]) if include else (0, x.shape[lead + d])
                cond = (p >= lo) & (p < hi)
                inside = cond if inside is None else inside & cond
            return dsl.sum(dsl.where(inside, dsl.const(1.0, c), dsl.const(0.0, c)), axis=rc)

        cnt = dsl.compute(out, count, name=f"{names[0]}_cnt")
        return [dsl.compute(shape, lambda *i: (s[i] / cnt[i[lead:]]).astype(dt), name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x = f64(arrays[0])
        include = bool(attrs.get("count_include_pad", True))

        def mean(w, valid, in_padded):
            n = (in_padded if include else valid).sum(axis=-1)
            return np.where(valid, w, 0.0).sum(axis=-1) / n

        return [to_np(_pool_np("avg_pool", x, attrs, mean), np.asarray(arrays[0]).dtype.name)]


def _tap_counts(sp, kernel, stride, pb, pe, dil, out, include: bool) -> list:
    """Per spatial dim, for each output position, how many taps count toward the divisor."""
    res = []
    for d in range(len(kernel)):
        lo, hi = (-pb[d], sp[d] + pe[d]) if include else (0, sp[d])
        res.append([sum(1 for k in range(kernel[d]) if lo <= o * stride[d] + k * dil[d] - pb[d] < hi)
                    for o in range(out[d])])
    return res


def _pool_np(op: str, x, attrs, reduce_fn):
    """Gather every window into a trailing axis (with masks of real and padded-input taps) and
    reduce it: reduce_fn(windows, valid, in_padded) over the last axis."""
    np = _np()
    kernel, stride, pb, pe, dil, _, out = pool_params(op, attrs, x.shape)
    nsp, lead = len(kernel), x.ndim - len(kernel)
    sp = x.shape[lead:]
    # window tap positions per dim: (out_d, k_d)
    pos = [np.arange(out[d])[:, None] * stride[d] + np.arange(kernel[d])[None, :] * dil[d] - pb[d]
           for d in range(nsp)]
    grids = np.meshgrid(*[p.reshape(-1) for p in pos], indexing="ij")  # each of shape prod(out_d * k_d)
    valid = np.ones(grids[0].shape, bool)
    padded = np.ones(grids[0].shape, bool)
    for d in range(nsp):
        valid &= (grids[d] >= 0) & (grids[d] < sp[d])
        padded &= (grids[d] >= -pb[d]) & (grids[d] < sp[d] + pe[d])
    idx = tuple(np.clip(g, 0, s - 1) for g, s in zip(grids, sp))
    w = x[(Ellipsis,) + idx]  # lead dims + flattened (o0, k0, o1, k1, ...)
    split = []
    for d in range(nsp):
        split += [out[d], kernel[d]]
    w = w.reshape(x.shape[:lead] + tuple(split))
    valid, padded = valid.reshape(split), padded.reshape(split)
    # move the kernel axes to the end and flatten them
    perm_tail = [2 * d for d in range(nsp)] + [2 * d + 1 for d in range(nsp)]
    w = w.transpose(tuple(range(lead)) + tuple(lead + p for p in perm_tail)).reshape(x.shape[:lead] + out + (-1,))
    valid = valid.transpose(perm_tail).reshape(out + (-1,))
    padded = padded.transpose(perm_tail).reshape(out + (-1,))
    return reduce_fn(w, valid, padded)
