"""Contractions: matmul (numpy semantics), linear (x @ w.T + b) and convolution (1-, 2- or 3-D,
stride / per-side padding / dilation / groups).

Each lowers to one sum-reduction compute (the anchor that fusion later gives epilogues), plus a
second compute for the bias or for rounding a float32 accumulator back to float16/bfloat16.
Convolution padding is a zero-padded copy of the input (a data-movement stage the lowering keeps,
since the contraction re-reads it), so the contraction itself has no guards and vectorizes.

Example:
    >>> from tessel.frontend.graph import Value
    >>> get_op("matmul").infer([Value("a", (5, 2, 3), "float32"), Value("b", (3,), "float32")], {})
    [((5, 2), 'float32')]
"""

from __future__ import annotations

from tessel.errors import ArgumentError, ShapeError
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.frontend.op_library.common import (
    broadcast_shapes, check_inputs, compute_dtype, f64, int_list, need_numeric, promote, to_np,
)
from tessel.ir import dsl


def _np():
    import numpy as np

    return np


def _finish(acc, dt: str, name: str, bias=None, bias_index=None):
    """The output: the accumulator (plus bias) rounded to the output dtype; when neither is
    needed the accumulator is the output and carries the name."""
    if bias is None and acc.dtype == dt:
        return acc
    if bias is None:
        return dsl.compute(acc.shape, lambda *i: acc[i].astype(dt), name=name)
    c = acc.dtype
    return dsl.compute(acc.shape, lambda *i: (acc[i] + bias[bias_index(i)].astype(c)).astype(dt), name=name)


def _acc_name(names, needs_more: bool) -> str:
    return f"{names[0]}_acc" if needs_more else names[0]


# -- matmul ---------------------------------------------------------------------------------------


def _matmul_shapes(op: str, a_shape: tuple, b_shape: tuple, ia: int = 0, ib: int = 1):
    """(batch shape, M or None, N or None, K) of numpy matmul; None marks a 1-D operand's missing
    dimension."""
    if not a_shape or not b_shape:
        k = ia if not a_shape else ib
        raise ShapeError(f"{op}: input {k} is a scalar; matmul needs operands of rank >= 1")
    m = a_shape[-2] if len(a_shape) >= 2 else None
    n = b_shape[-1] if len(b_shape) >= 2 else None
    ka = a_shape[-1]
    kb = b_shape[-2] if len(b_shape) >= 2 else b_shape[0]
    if ka != kb:
        raise ShapeError(f"{op}: contracted dims differ: input {ia} dim {len(a_shape) - 1} is {ka}, "
                         f"input {ib} dim {max(len(b_shape) - 2, 0)} is {kb}")
    batch = broadcast_shapes(op, [a_shape[:-2], b_shape[:-2]], [ia, ib])
    return batch, m, n, ka


@register("matmul", "contraction")
class MatMul:
    """numpy.matmul: batch dimensions broadcast; a 1-D operand gains and then loses a dimension."""

    @staticmethod
    def infer(inputs, attrs):
        a, b = check_inputs("matmul", inputs, 2)
        for k, v in enumerate((a, b)):
            need_numeric("matmul", v.dtype, k)
        batch, m, n, _ = _matmul_shapes("matmul", tuple(a.shape), tuple(b.shape))
        shape = batch + ((m,) if m is not None else ()) + ((n,) if n is not None else ())
        return [(shape, promote("matmul", [a.dtype, b.dtype]))]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        a, b = inputs
        shape, dt = outs[0]
        c = compute_dtype(dt)
        batch, m, n, kdim = _matmul_shapes("matmul", a.shape, b.shape)
        nb = len(batch)
        r = dsl.reduce_axis(kdim, name="k")

        def body(*o):
            bi, rest = o[:nb], list(o[nb:])
            i = rest.pop(0) if m is not None else None
            j = rest.pop(0) if n is not None else None
            ai = bload_batch(a, batch, bi) + ((i,) if m is not None else ()) + (r,)
            bj = bload_batch(b, batch, bi) + ((r, j) if n is not None else (r,))
            return dsl.sum(a[ai].astype(c) * b[bj].astype(c), axis=r)

        acc = dsl.compute(shape, body, name=_acc_name(names, c != dt))
        return [_finish(acc, dt, names[0])]

    @staticmethod
    def reference(arrays, attrs):
        a, b = (_np().asarray(x) for x in arrays)
        dt = promote("matmul", [a.dtype.name, b.dtype.name])
        return [to_np(_np().matmul(f64(a), f64(b)), dt)]


def bload_batch(t, batch: tuple, bi: tuple) -> tuple:
    """The batch part of an index into matmul operand `t` (its dims before the last two, or
    none for a 1-D/2-D operand), broadcast against the output batch `batch`."""
    nbt = max(t.ndim - 2, 0)
    off = len(batch) - nbt
    return tuple(0 if t.shape[d] == 1 else bi[off + d] for d in range(nbt))


# -- linear ---------------------------------------------------------------------------------------


@register("linear", "contraction")
class Linear:
    """y = x @ w.T + b with w of shape (out, in) and optional b of shape (out,)."""

    @staticmethod
    def infer(inputs, attrs):
        x, w, b = check_inputs("linear", inputs, 2, 1)
        for k, v in enumerate((x, w, b)):
            if v is not None:
                need_numeric("linear", v.dtype, k)
        if len(w.shape) != 2:
            raise ShapeError(f"linear: input 1 (weight) has shape {tuple(w.shape)}; expected (out, in)")
        if not x.shape or x.shape[-1] != w.shape[1]:
            raise ShapeError(f"linear: input 0 dim {len(x.shape) - 1} is {x.shape[-1] if x.shape else None} but "
                             f"input 1 dim 1 (in features) is {w.shape[1]}")
        if b is not None:
            broadcast_shapes("linear", [(w.shape[0],), b.shape], [1, 2])
            if len(b.shape) > 1:
                raise ShapeError(f"linear: input 2 (bias) has shape {tuple(b.shape)}; expected ({w.shape[0]},)")
        dts = [v.dtype for v in (x, w, b) if v is not None]
        return [(tuple(x.shape[:-1]) + (w.shape[0],), promote("linear", dts))]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        x, w, b = check_inputs("linear", inputs, 2, 1)
        shape, dt = outs[0]
        c = compute_dtype(dt)
        r = dsl.reduce_axis(w.shape[1], name="k")
        acc = dsl.compute(shape, lambda *o: dsl.sum(x[o[:-1] + (r,)].astype(c) * w[o[-1], r].astype(c), axis=r),
                          name=_acc_name(names, c != dt or b is not None))
        bias_index = (lambda i: (0 if b.shape[0] == 1 else i[-1],)) if b is not None and b.ndim == 1 else (lambda i: ())
        return [_finish(acc, dt, names[0], b, bias_index)]

    @staticmethod
    def reference(arrays, attrs):
        x, w = f64(arrays[0]), f64(arrays[1])
        b = arrays[2] if len(arrays) > 2 else None
        y = x @ w.T
        if b is not None:
            y = y + f64(b)
        dts = [_np().asarray(a).dtype.name for a in arrays if a is not None]
        return [to_np(y, promote("linear", dts))]


# -- convolution ------------------------------------------------------------------------------------


def conv_params(op: str, attrs: dict, nsp: int) -> tuple:
    """(stride, (pad_begin, pad_end), dilation, groups) with per-dimension tuples; padding may be
    given per side (begin..., end...) or once per dimension (both sides)."""
    stride = int_list(op, attrs, "stride", nsp, default=1)
    dilation = int_list(op, attrs, "dilation", nsp, default=1)
    p = attrs.get("padding", 0)
    pads = (int(p),) * (2 * nsp) if isinstance(p, int) else int_list(op, attrs, "padding")
    if len(pads) == nsp:
        pads = pads + pads
    if len(pads) != 2 * nsp:
        raise ArgumentError(f"{op}: attribute 'padding' {pads} needs {nsp} or {2 * nsp} values")
    groups = int(attrs.get("groups", 1))
    if any(s <= 0 for s in stride) or any(d <= 0 for d in dilation) or groups <= 0:
        raise ArgumentError(f"{op}: stride {stride}, dilation {dilation} and groups {groups} must be positive")
    if any(p < 0 for p in pads):
        raise ArgumentError(f"{op}: padding {pads} must not be negative")
    return stride, (pads[:nsp], pads[nsp:]), dilation, groups


def window_out(op: str, size: int, k: int, s: int, pb: int, pe: int, d: int, ceil_mode: bool = False,
               dim: int = 0) -> int:
    """Output extent of a sliding window (torch's rule, ceil_mode included)."""
    span = size + pb + pe - d * (k - 1) - 1
    if span < 0:
        raise ShapeError(f"{op}: input dim {dim} ({size}, padded {size + pb + pe}) is smaller than the "
                         f"dilated kernel ({d * (k - 1) + 1})")
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


def _weight_shape(shape: tuple, attrs: dict) -> tuple:
    """The weight's logical (F, C/groups, *kernel) shape; attribute weight_layout="CKF" stores it as
    (C/groups, *kernel, F) (canonicalisation's pre-transposed constant weight, see channels_last)."""
    layout = attrs.get("weight_layout", "FCK")
    if layout == "FCK":
        return tuple(shape)
    if layout == "CKF":
        return (shape[-1], shape[0]) + tuple(shape[1:-1])
    raise ArgumentError(f"conv: attribute weight_layout={layout!r}; expected 'FCK' or 'CKF'")


def channels_last(groups: int, filters: int, stride, shape) -> bool:
    """Public name of `_channels_last` (canonicalisation pre-transposes constant weights for it)."""
    return _channels_last(groups, filters, stride, shape)


def _channels_last(groups: int, filters: int, stride, shape) -> bool:
    """Whether a convolution accumulates channels-last (output channels innermost). Its inner loop
    then runs along the output channels (contiguous in a transposed weight copy), whatever the
    stride and however narrow the output rows; the NCHW result is a transposed read that the
    epilogue absorbs. Measured (2-core AVX-512 VM): a stride-2 3x3 conv 16->32 at 32x32 took 750 us
    in the NCHW form (strided vector loads). Wide stride-1 rows keep the NCHW form, which
    vectorizes along them when they are whole vectors (3x3 32->64 at 48x48: 121 GFLOP/s on one core)."""
    return groups == 1 and filters % 8 == 0 and len(shape) > 2 and (any(s > 1 for s in stride) or shape[-1] % 16 != 0
                                                                     or shape[-1] < 32)


def _conv_channels_last(x, w, shape, c, stride, dil, rc, rk, names, name, layout="FCK"):
    nsp = len(shape) - 2
    if layout == "CKF":  # already (C, *kernel, F): canonicalisation transposed a constant weight
        wt = w
    else:
        ksz = tuple(w.shape[2:])
        wt = dsl.compute((w.shape[1],) + ksz + (w.shape[0],), lambda *i: w[(i[-1], i[0]) + tuple(i[1:-1])],
                         name=f"{names[0]}_wt")

    def body(*idx):
        n, o, f = idx[0], idx[1:-1], idx[-1]
        pos = [o[d] * stride[d] + rk[d] * dil[d] for d in range(nsp)]
        return dsl.sum(x[(n, rc) + tuple(pos)].astype(c) * wt[(rc,) + tuple(rk) + (f,)].astype(c), axis=[rc, *rk])

    acl = dsl.compute((shape[0],) + tuple(shape[2:]) + (shape[1],), body, name=f"{names[0]}_cl")
    return dsl.compute(shape, lambda *i: acl[(i[0],) + tuple(i[2:]) + (i[1],)], name=name)


@register("conv", "contraction")
class Conv:
    """Convolution (cross-correlation, as torch and ONNX) of x (N, C, *spatial) with
    w (F, C/groups, *kernel), optional bias b (F,)."""

    @staticmethod
    def infer(inputs, attrs):
        x, w, b = check_inputs("conv", inputs, 2, 1)
        for k, v in enumerate((x, w, b)):
            if v is not None:
                need_numeric("conv", v.dtype, k)
        nsp = len(x.shape) - 2
        if nsp < 1 or nsp > 3:
            raise ShapeError(f"conv: input 0 has shape {tuple(x.shape)}; expected (N, C, *spatial) with 1 to 3 "
                             f"spatial dims")
        if len(w.shape) != len(x.shape):
            raise ShapeError(f"conv: input 1 (weight) has rank {len(w.shape)} but input 0 has rank {len(x.shape)}")
        stride, (pb, pe), dil, groups = conv_params("conv", attrs, nsp)
        wshape = _weight_shape(w.shape, attrs)
        f, cg = wshape[0], wshape[1]
        if x.shape[1] != cg * groups:
            raise ShapeError(f"conv: input 0 dim 1 (channels) is {x.shape[1]} but input 1 dim 1 is {cg} with "
                             f"groups={groups} (expected {x.shape[1]} = {cg} * {groups})")
        if f % groups:
            raise ShapeError(f"conv: input 1 dim 0 (filters) is {f}, not divisible by groups={groups}")
        if b is not None and tuple(b.shape) != (f,):
            raise ShapeError(f"conv: input 2 (bias) has shape {tuple(b.shape)}, expected ({f},)")
        spatial = tuple(window_out("conv", x.shape[2 + d], wshape[2 + d], stride[d], pb[d], pe[d], dil[d], dim=2 + d)
                        for d in range(nsp))
        dts = [v.dtype for v in (x, w, b) if v is not None]
        return [((x.shape[0], f) + spatial, promote("conv", dts))]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        x, w, b = check_inputs("conv", inputs, 2, 1)
        shape, dt = outs[0]
        c = compute_dtype(dt)
        nsp = x.ndim - 2
        stride, (pb, pe), dil, groups = conv_params("conv", attrs, nsp)
        wshape = _weight_shape(w.shape, attrs)
        cg, fg = wshape[1], wshape[0] // groups
        rc = dsl.reduce_axis(cg, name="rc")
        rk = [dsl.reduce_axis(wshape[2 + d], name=f"rk{d}") for d in range(nsp)]
        padded = any(pb) or any(pe)
        if padded:  # a zero-padded copy: the contraction then reads it without guards (so it vectorizes)
            xs = x.shape
            pshape = tuple(xs[:2]) + tuple(xs[2 + d] + pb[d] + pe[d] for d in range(nsp))

            def pad(*idx):
                pos = [idx[2 + d] - pb[d] for d in range(nsp)]
                guard = None
                for d in range(nsp):
                    for cond in ([pos[d] >= 0] if pb[d] > 0 else []) + ([pos[d] < xs[2 + d]] if pe[d] > 0 else []):
                        guard = cond if guard is None else guard & cond
                v = x[tuple(idx[:2]) + tuple(pos)]
                return dsl.where(guard, v, dsl.const(0, x.dtype)) if guard is not None else v

            x = dsl.compute(pshape, pad, name=f"{names[0]}_pad")

        def body(*idx):
            n, f, o = idx[0], idx[1], idx[2:]
            pos = [o[d] * stride[d] + rk[d] * dil[d] for d in range(nsp)]
            ch = rc if groups == 1 else (f // fg) * cg + rc
            v = x[(n, ch) + tuple(pos)].astype(c)
            return dsl.sum(v * w[(f, rc) + tuple(rk)].astype(c), axis=[rc, *rk])

        if attrs.get("weight_layout", "FCK") == "CKF" or _channels_last(groups, fg, stride, shape):
            acc = _conv_channels_last(x, w, shape, c, stride, dil, rc, rk, names,
                                      _acc_name(names, c != dt or b is not None), attrs.get("weight_layout", "FCK"))
        else:
            acc = dsl.compute(shape, body, name=_acc_name(names, c != dt or b is not None))
        return [_finish(acc, dt, names[0], b, lambda i: (i[1],))]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x, w = f64(arrays[0]), f64(arrays[1])
        if attrs.get("weight_layout", "FCK") == "CKF":
            w = np.moveaxis(w, -1, 0)
        b = arrays[2] if len(arrays) > 2 else None
        nsp = x.ndim - 2
        stride, (pb, pe), dil, groups = conv_params("conv", attrs, nsp)
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pb[d], pe[d]) for d in range(nsp)])
        n, f = x.shape[0], w.shape[0]
        cg, fg = w.shape[1], f // groups
        ksz = w.shape[2:]
        osz = tuple((xp.shape[2 + d] - dil[d] * (ksz[d] - 1) - 1) // stride[d] + 1 for d in range(nsp))
        out = np.zeros((n, f) + osz)
        for kidx in np.ndindex(*ksz):  # one shifted, strided view of the input per kernel tap
            sl = tuple(slice(kidx[d] * dil[d], kidx[d] * dil[d] + (osz[d] - 1) * stride[d] + 1, stride[d])
                       for d in range(nsp))
            for g in range(groups):
                xs = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + sl]
                ws = w[(slice(g * fg, (g + 1) * fg), slice(None)) + kidx]
                out[:, g * fg:(g + 1) * fg] += np.einsum("nc...,fc->nf...", xs, ws)
        if b is not None:
            out += f64(b).reshape((1, f) + (1,) * nsp)
        dts = [np.asarray(a).dtype.name for a in arrays if a is not None]
        return [to_np(out, promote("conv", dts))]
