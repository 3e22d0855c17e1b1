"""Real FFTs: rfft and irfft along one axis, with complex numbers as (real, imag) pairs in a
trailing dimension of 2 (the layout of torch.view_as_real).

rfft(n, axis): x (..., N, ...) real -> (..., n//2+1, ..., 2); x is cut or zero-padded to n along
`axis` (numpy's rule). irfft(n, axis): X (..., m, ..., 2) -> (..., n, ...) real, n defaulting to
2*(m-1); `axis` counts the dims of X without its trailing pair dim. As numpy, irfft uses the first
n//2+1 coefficients (zero beyond m) and ignores the imaginary parts of X[0] and, for even n, of
X[n/2].

This lowering is the DFT by definition, one sum over cos/sin twiddles per output (O(n^2)): it is
the correct baseline; the fast tensor-core FFT (Monarch decomposition) comes as a rewrite later.
The twiddle angle is 2*pi*((k*t) mod n)/n, reduced exactly (in float64) first so that float32 never
sees a large angle.

Example:
    >>> from tessel.frontend.graph import Value
    >>> get_op("rfft").infer([Value("x", (3, 16), "float32")], {})
    [((3, 9, 2), 'float32')]
"""

from __future__ import annotations

import math

from tessel.errors import ArgumentError, ShapeError
from tessel.frontend.op_library.common import check_inputs, compute_dtype, f64, need_float, norm_axis, to_np
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.ir import dsl

_MAX_N = 46340  # k * t stays exact in float64 and below 2**31


def _np():
    import numpy as np

    return np


def _angle(k, t, n: int, w: float, c: str):
    """2*pi/n * ((k*t) mod n) in dtype c. The product and the modulo run in float64, where they
    are exact for n <= _MAX_N (an int32 product of two index variables sends the simplifier's
    interval analysis into endless recursion)."""
    kt = k.astype("float64") * t.astype("float64")
    return (kt % float(n)).astype(c) * dsl.const(w, c)


def _check_n(op: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ArgumentError(f"{op}: n = {n!r} must be a positive integer")
    if n > _MAX_N:
        raise ShapeError(f"{op}: n = {n} is too large for the DFT-by-definition lowering (at most {_MAX_N})")
    return n


def _rfft_params(x_shape: tuple, attrs: dict):
    if not x_shape:
        raise ShapeError("rfft: input 0 is a scalar; expected rank >= 1")
    axis = norm_axis("rfft", attrs.get("axis", -1), len(x_shape))
    n = attrs.get("n")
    n = _check_n("rfft", x_shape[axis] if n is None else n)
    return axis, n


@register("rfft", "opaque")
class RFFT:
    """X[k] = sum_t x[t] exp(-2 pi i k t / n), k < n//2+1, as (real, imag) pairs."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("rfft", inputs, 1)
        need_float("rfft", x.dtype)
        axis, n = _rfft_params(tuple(x.shape), attrs)
        shape = list(x.shape)
        shape[axis] = n // 2 + 1
        return [(tuple(shape) + (2,), x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        c = compute_dtype(dt)
        axis, n = _rfft_params(x.shape, attrs)
        rt = dsl.reduce_axis(min(n, x.shape[axis]), name="rt")
        w = 2.0 * math.pi / n

        def body(*o):
            kk, part = o[axis], o[-1]
            phase = _angle(kk, rt, n, w, c)
            tw = dsl.where(part.eq(0), dsl.cos(phase), -dsl.sin(phase))
            return dsl.sum(x[tuple(o[:axis]) + (rt,) + tuple(o[axis + 1:-1])].astype(c) * tw, axis=rt)

        acc = dsl.compute(shape, body, name=names[0] if c == dt else f"{names[0]}_acc")
        return [acc if c == dt else dsl.compute(shape, lambda *i: acc[i].astype(dt), name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x = np.asarray(arrays[0])
        axis, n = _rfft_params(x.shape, attrs)
        y = np.fft.rfft(f64(x), n=n, axis=axis)
        return [to_np(np.stack([y.real, y.imag], axis=-1), x.dtype.name)]


def _irfft_params(x_shape: tuple, attrs: dict):
    if len(x_shape) < 2 or x_shape[-1] != 2:
        raise ShapeError(f"irfft: input 0 has shape {x_shape}; expected (..., m, ..., 2) with (real, imag) pairs "
                         f"in the last dim")
    axis = norm_axis("irfft", attrs.get("axis", -1), len(x_shape) - 1)
    n = attrs.get("n")
    n = _check_n("irfft", 2 * (x_shape[axis] - 1) if n is None else n)
    return axis, n


@register("irfft", "opaque")
class IRFFT:
    """x[t] = (1/n) sum_k Y[k] exp(2 pi i k t / n), Y the Hermitian extension of X[:n//2+1]."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("irfft", inputs, 1)
        need_float("irfft", x.dtype)
        axis, n = _irfft_params(tuple(x.shape), attrs)
        shape = list(x.shape[:-1])
        shape[axis] = n
        return [(tuple(shape), x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        c = compute_dtype(dt)
        axis, n = _irfft_params(x.shape, attrs)
        rk = dsl.reduce_axis(min(x.shape[axis], n // 2 + 1), name="rk")
        rc = dsl.reduce_axis(2, name="rc")
        w = 2.0 * math.pi / n

        def body(*o):
            phase = _angle(rk, o[axis], n, w, c)
            # k = 0 and k = n/2 appear once in the Hermitian sum, every other k twice
            once = rk.eq(0) | (rk * 2).eq(n)
            weight = dsl.where(once, dsl.const(1.0 / n, c), dsl.const(2.0 / n, c))
            tw = dsl.where(rc.eq(0), dsl.cos(phase), -dsl.sin(phase)) * weight
            return dsl.sum(x[tuple(o[:axis]) + (rk,) + tuple(o[axis + 1:]) + (rc,)].astype(c) * tw, axis=[rk, rc])

        acc = dsl.compute(shape, body, name=names[0] if c == dt else f"{names[0]}_acc")
        return [acc if c == dt else dsl.compute(shape, lambda *i: acc[i].astype(dt), name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x = np.asarray(arrays[0])
        axis, n = _irfft_params(x.shape, attrs)
        z = f64(x[..., 0]) + 1j * f64(x[..., 1])
        return [to_np(np.fft.irfft(z, n=n, axis=axis), x.dtype.name)]
