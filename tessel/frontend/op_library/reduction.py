"""Reductions: reduce_sum/mean/max/min over axes (keepdims), argmax/argmin (first occurrence,
int64), softmax and log_softmax, layer norm and RMS norm.

The numerically careful forms: softmax subtracts the maximum along the axis before exp; layer
norm computes the mean first and then the variance as the mean of squared deviations (never
E[x^2] - E[x]^2); means are sums of x * (1/n). float16/bfloat16 inputs accumulate in float32.
Statistics (row maximum, mean, ...) are computes named after the output (`<name>_max`, ...) with
size-1 dimensions along the reduced axes, which the later computes read at index 0.

Axes are non-negative after import (negative ones are normalised here too); `axes=None` means
every axis and an empty list no axis at all (numpy's meaning).

Example:
    >>> from tessel.frontend.graph import Value
    >>> get_op("reduce_sum").infer([Value("x", (2, 3, 4), "float32")], {"axes": [1], "keepdims": True})
    [((2, 1, 4), 'float32')]
"""

from __future__ import annotations

from tessel.errors import ShapeError
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.frontend.op_library.common import (
    broadcast_shapes, check_inputs, compute_dtype, f64, need_float, norm_axes, norm_axis, reduce_over,
    reduced_shape, size_of, stat_index, to_np,
)
from tessel.ir import dsl
from tessel.ir.dtypes import is_bool


def _np():
    import numpy as np

    return np


# -- reduce_* ---------------------------------------------------------------------------------------

_COMBINERS = {"reduce_sum": dsl.sum, "reduce_mean": dsl.sum, "reduce_max": dsl.max, "reduce_min": dsl.min}


def _reduce_out_dtype(op: str, dt: str) -> str:
    if op == "reduce_mean":
        need_float(op, dt)
        return dt
    if op == "reduce_sum" and is_bool(dt):
        return "int64"  # counting, as numpy and torch do
    return dt


def _register_reduce(op: str) -> None:
    def infer(inputs, attrs):
        (x,) = check_inputs(op, inputs, 1)
        axes = norm_axes(op, attrs.get("axes"), len(x.shape))
        return [(reduced_shape(tuple(x.shape), axes, bool(attrs.get("keepdims", False))),
                 _reduce_out_dtype(op, x.dtype))]

    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        axes = norm_axes(op, attrs.get("axes"), x.ndim)
        keep = bool(attrs.get("keepdims", False))
        # accumulate floats in float32 at least; bools count as int64, or reduce as int8 (max = any)
        if is_bool(x.dtype):
            c = "int64" if op == "reduce_sum" else "int8"
        else:
            c = compute_dtype(dt)
        scale = 1.0 / size_of([x.shape[a] for a in axes]) if op == "reduce_mean" else None

        def value(idx):
            v = x[idx].astype(c)
            return v * scale if scale is not None else v

        name = names[0] if c == dt else f"{names[0]}_acc"
        acc = reduce_over(x.shape, axes, keep, _COMBINERS[op], value, name)
        if c == dt:
            return [acc]
        return [dsl.compute(shape, lambda *i: acc[i].astype(dt), name=names[0])]

    def reference(arrays, attrs):
        np = _np()
        x = np.asarray(arrays[0])
        axes = norm_axes(op, attrs.get("axes"), x.ndim)
        keep = bool(attrs.get("keepdims", False))
        f = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min}[op]
        return [to_np(f(f64(x), axis=axes, keepdims=keep), _reduce_out_dtype(op, x.dtype.name))]

    cls = type(op, (), {"infer": staticmethod(infer), "lower": staticmethod(lower),
                        "reference": staticmethod(reference)})
    register(op, "reduction")(cls)


for _op in _COMBINERS:
    _register_reduce(_op)


# -- argmax / argmin --------------------------------------------------------------------------------


def _register_arg(op: str) -> None:
    def infer(inputs, attrs):
        (x,) = check_inputs(op, inputs, 1)
        if not x.shape:
            raise ShapeError(f"{op}: input 0 is a scalar; expected rank >= 1")
        axis = norm_axis(op, attrs.get("axis", 0), len(x.shape))
        return [(reduced_shape(tuple(x.shape), (axis,), bool(attrs.get("keepdims", False))), "int64")]

    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        axis = norm_axis(op, attrs.get("axis", 0), x.ndim)
        keep = bool(attrs.get("keepdims", False))
        n = x.shape[axis]
        c = "int8" if is_bool(x.dtype) else x.dtype
        best = reduce_over(x.shape, (axis,), True, dsl.max if op == "argmax" else dsl.min,
                           lambda idx: x[idx].astype(c), f"{names[0]}_{op[3:]}")
        # the smallest index holding the extreme value: first occurrence, as numpy and torch
        k = dsl.reduce_axis(n, name="r")

        def body(*o):
            idx = tuple(o[:axis]) + (k,) + tuple(o[axis + (1 if keep else 0):])
            hit = x[idx].astype(c).eq(best[stat_index(idx, (axis,))])
            return dsl.min(dsl.where(hit, k.astype("int64"), dsl.const(n, "int64")), axis=k)

        return [dsl.compute(reduced_shape(x.shape, (axis,), keep), body, name=names[0])]

    def reference(arrays, attrs):
        np = _np()
        x = np.asarray(arrays[0])
        axis = norm_axis(op, attrs.get("axis", 0), x.ndim)
        f = np.argmax if op == "argmax" else np.argmin
        return [f(x, axis=axis, keepdims=bool(attrs.get("keepdims", False))).astype(np.int64)]

    cls = type(op, (), {"infer": staticmethod(infer), "lower": staticmethod(lower),
                        "reference": staticmethod(reference)})
    register(op, "reduction")(cls)


_register_arg("argmax")
_register_arg("argmin")


# -- softmax ----------------------------------------------------------------------------------------


def _register_softmax(op: str) -> None:
    def infer(inputs, attrs):
        (x,) = check_inputs(op, inputs, 1)
        need_float(op, x.dtype)
        if not x.shape:
            raise ShapeError(f"{op}: input 0 is a scalar; expected rank >= 1")
        norm_axis(op, attrs.get("axis", -1), len(x.shape))
        return [(tuple(x.shape), x.dtype)]

    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        c = compute_dtype(dt)
        ax = (norm_axis(op, attrs.get("axis", -1), x.ndim),)
        mx = reduce_over(shape, ax, True, dsl.max, lambda i: x[i].astype(c), f"{names[0]}_max")
        if op == "softmax":
            e = dsl.compute(shape, lambda *i: dsl.exp(x[i].astype(c) - mx[stat_index(i, ax)]), name=f"{names[0]}_exp")
            s = reduce_over(shape, ax, True, dsl.sum, lambda i: e[i], f"{names[0]}_sum")
            return [dsl.compute(shape, lambda *i: (e[i] / s[stat_index(i, ax)]).astype(dt), name=names[0])]
        s = reduce_over(shape, ax, True, dsl.sum, lambda i: dsl.exp(x[i].astype(c) - mx[stat_index(i, ax)]),
                        f"{names[0]}_sum")
        return [dsl.compute(shape, lambda *i: (x[i].astype(c) - mx[stat_index(i, ax)] - dsl.log(s[stat_index(i, ax)]))
                            .astype(dt), name=names[0])]

    def reference(arrays, attrs):
        np = _np()
        x = f64(arrays[0])
        axis = norm_axis(op, attrs.get("axis", -1), x.ndim)
        z = x - x.max(axis=axis, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=axis, keepdims=True))
        y = np.exp(z - lse) if op == "softmax" else z - lse
        return [to_np(y, np.asarray(arrays[0]).dtype.name)]

    cls = type(op, (), {"infer": staticmethod(infer), "lower": staticmethod(lower),
                        "reference": staticmethod(reference)})
    register(op, "reduction")(cls)


_register_softmax("softmax")
_register_softmax("log_softmax")


# -- layer norm and RMS norm ------------------------------------------------------------------------


def _norm_infer(op: str, inputs, attrs, n_params: int):
    x, *params = check_inputs(op, inputs, 1, n_params)
    need_float(op, x.dtype)
    axes = norm_axes(op, attrs.get("axes", [-1]), len(x.shape))
    if not axes:
        raise ShapeError(f"{op}: no axes to normalise over")
    sub = tuple(x.shape[a] for a in axes)
    for k, p in enumerate(params, start=1):
        if p is None:
            continue
        need_float(op, p.dtype, k)
        if broadcast_shapes(op, [sub, p.shape], [0, k]) != sub:
            raise ShapeError(f"{op}: input {k} has shape {tuple(p.shape)}, which does not broadcast to the "
                             f"normalised shape {sub} (input 0 dims {list(axes)})")
    return [(tuple(x.shape), x.dtype)]


def _param_load(p, axes: tuple, idx: tuple, c: str):
    """Element of a weight/bias indexed by the normalised axes (right-aligned broadcasting)."""
    sub = tuple(idx[a] for a in axes)
    off = len(sub) - p.ndim
    return p[tuple(0 if s == 1 else sub[off + d] for d, s in enumerate(p.shape))].astype(c)


def _param_np(p, x_ndim: int, axes: tuple):
    """A weight/bias reshaped so that it broadcasts against x along `axes`."""
    p = f64(p)
    p = p.reshape((1,) * (len(axes) - p.ndim) + p.shape)
    shape = [1] * x_ndim
    for a, s in zip(axes, p.shape):
        shape[a] = s
    return p.reshape(shape)


@register("layer_norm", "reduction")
class LayerNorm:
    """(x - mean) / sqrt(var + eps) * weight + bias over `axes` (population variance)."""

    @staticmethod
    def infer(inputs, attrs):
        return _norm_infer("layer_norm", inputs, attrs, 2)

    @staticmethod
    def lower(inputs, attrs, outs, names):
        x, w, b = check_inputs("layer_norm", inputs, 1, 2)
        shape, dt = outs[0]
        c = compute_dtype(dt)
        axes = norm_axes("layer_norm", attrs.get("axes", [-1]), x.ndim)
        eps = float(attrs.get("eps", 1e-5))
        inv_n = 1.0 / size_of([shape[a] for a in axes])
        mean = reduce_over(shape, axes, True, dsl.sum, lambda i: x[i].astype(c) * inv_n, f"{names[0]}_mean")

        def dev(i):
            return x[i].astype(c) - mean[stat_index(i, axes)]

        var = reduce_over(shape, axes, True, dsl.sum, lambda i: dev(i) * dev(i) * inv_n, f"{names[0]}_var")

        def body(*i):
            y = dev(i) * dsl.rsqrt(var[stat_index(i, axes)] + eps)
            if w is not None:
                y = y * _param_load(w, axes, i, c)
            if b is not None:
                y = y + _param_load(b, axes, i, c)
            return y.astype(dt)

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        arrays = list(arrays) + [None] * (3 - len(arrays))
        x = f64(arrays[0])
        axes = norm_axes("layer_norm", attrs.get("axes", [-1]), x.ndim)
        mu = x.mean(axis=axes, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mu) / np.sqrt(var + float(attrs.get("eps", 1e-5)))
        if arrays[1] is not None:
            y = y * _param_np(arrays[1], x.ndim, axes)
        if arrays[2] is not None:
            y = y + _param_np(arrays[2], x.ndim, axes)
        return [to_np(y, np.asarray(arrays[0]).dtype.name)]


@register("rms_norm", "reduction")
class RMSNorm:
    """x / sqrt(mean(x^2) + eps) * weight over `axes`."""

    @staticmethod
    def infer(inputs, attrs):
        return _norm_infer("rms_norm", inputs, attrs, 1)

    @staticmethod
    def lower(inputs, attrs, outs, names):
        x, w = check_inputs("rms_norm", inputs, 1, 1)
        shape, dt = outs[0]
        c = compute_dtype(dt)
        axes = norm_axes("rms_norm", attrs.get("axes", [-1]), x.ndim)
        eps = float(attrs.get("eps", 1e-6))
        inv_n = 1.0 / size_of([shape[a] for a in axes])
        ms = reduce_over(shape, axes, True, dsl.sum, lambda i: x[i].astype(c) * x[i].astype(c) * inv_n,
                         f"{names[0]}_ms")

        def body(*i):
            y = x[i].astype(c) * dsl.rsqrt(ms[stat_index(i, axes)] + eps)
            if w is not None:
                y = y * _param_load(w, axes, i, c)
            return y.astype(dt)

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x = f64(arrays[0])
        axes = norm_axes("rms_norm", attrs.get("axes", [-1]), x.ndim)
        y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + float(attrs.get("eps", 1e-6)))
        if len(arrays) > 1 and arrays[1] is not None:
            y = y * _param_np(arrays[1], x.ndim, axes)
        return [to_np(y, np.asarray(arrays[0]).dtype.name)]
