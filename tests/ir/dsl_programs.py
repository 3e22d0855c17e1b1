"""DSL programs with independent numpy references, for tests across the project to reuse.

Each program function takes small sizes and returns `(tensors, reference)`:

- `tensors`: the kernel's parameters in call order, placeholders first, then the computed
  outputs; pass them to `tessel.ir.dsl.lower` or `tessel.build`. Intermediate computes (softmax's
  row maximum, layer norm's mean, ...) are not among them, so they lower to temporaries.
- `reference(*inputs)`: takes one numpy array per placeholder of `tensors`, in order, and returns
  a tuple with one array per computed tensor of `tensors`, in order. It is written with numpy
  alone (not from the DSL expression), computes in float64 and casts to the output's dtype at the
  end.

`random_inputs(tensors, rng)` draws inputs (standard normal, never all zeros) and `PROGRAMS` maps a
name to a zero-argument factory with default small sizes, for `pytest.mark.parametrize`.

Example:
    >>> import numpy as np
    >>> from tessel.ir.dsl import lower
    >>> tensors, ref = gemm(2, 3, 4, in_dtype="float16")
    >>> [t.name for t in tensors], lower(tensors).name
    (['A', 'B', 'C'], 'C')
    >>> (c,) = ref(*random_inputs(tensors, np.random.default_rng(0)))
    >>> c.shape, c.dtype
    ((2, 3), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import tessel as ts
from tessel.ir.dsl import Tensor
from tessel.ir.dtypes import numpy_dtype

Program = tuple[list[Tensor], Callable]


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _out(t: Tensor, value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).astype(numpy_dtype(t.dtype))


def elementwise_broadcast(m: int = 3, n: int = 5, dtype: str = "float32") -> Program:
    """C[i, j] = (A[i, j] - D[i, 0]) * B[j] + 0.5 with A (m, n), B (n,), D (m, 1): a row vector
    and a column vector broadcast against a matrix."""
    A = ts.placeholder((m, n), dtype, name="A")
    B = ts.placeholder((n,), dtype, name="B")
    D = ts.placeholder((m, 1), dtype, name="D")
    C = ts.compute((m, n), lambda i, j: (A[i, j] - D[i, 0]) * B[j] + 0.5, name="C")

    def reference(a, b, d):
        a, b, d = _f64(a, b, d)
        return (_out(C, (a - d) * b[None, :] + 0.5),)

    return [A, B, D, C], reference


def _row_reduction(kind: str, m: int, n: int, dtype: str) -> Program:
    A = ts.placeholder((m, n), dtype, name="A")
    k = ts.reduce_axis(n, name="k")
    combine = {"sum": ts.sum, "max": ts.max, "min": ts.min}[kind]
    R = ts.compute((m,), lambda i: combine(A[i, k], axis=k), name="R")
    numpy_fn = {"sum": np.sum, "max": np.max, "min": np.min}[kind]

    def reference(a):
        return (_out(R, numpy_fn(_f64(a)[0], axis=1)),)

    return [A, R], reference


def reduction_sum(m: int = 3, n: int = 7, dtype: str = "float32") -> Program:
    """R[i] = sum over k of A[i, k]."""
    return _row_reduction("sum", m, n, dtype)


def reduction_max(m: int = 3, n: int = 7, dtype: str = "float32") -> Program:
    """R[i] = max over k of A[i, k]."""
    return _row_reduction("max", m, n, dtype)


def reduction_min(m: int = 3, n: int = 7, dtype: str = "float32") -> Program:
    """R[i] = min over k of A[i, k]."""
    return _row_reduction("min", m, n, dtype)


def gemm(m: int = 4, n: int = 5, k: int = 6, in_dtype: str = "float32") -> Program:
    """C = A @ B with A (m, k), B (k, n) of `in_dtype`, each product cast to float32 and summed in
    float32 (the tensor-core shape when in_dtype is float16)."""
    A = ts.placeholder((m, k), in_dtype, name="A")
    B = ts.placeholder((k, n), in_dtype, name="B")
    r = ts.reduce_axis(k, name="k")
    C = ts.compute((m, n), lambda i, j: ts.sum(A[i, r].astype("float32") * B[r, j].astype("float32"), axis=r),
                   name="C")

    def reference(a, b):
        a, b = _f64(a, b)
        return (_out(C, np.einsum("ik,kj->ij", a, b)),)

    return [A, B, C], reference


def softmax(m: int = 3, n: int = 6) -> Program:
    """Row softmax of A (m, n), the numerically stable way: exp(A - rowmax) / rowsum."""
    A = ts.placeholder((m, n), "float32", name="A")
    k1, k2 = ts.reduce_axis(n, name="k1"), ts.reduce_axis(n, name="k2")
    mx = ts.compute((m,), lambda i: ts.max(A[i, k1], axis=k1), name="rowmax")
    e = ts.compute((m, n), lambda i, j: ts.exp(A[i, j] - mx[i]), name="expd")
    s = ts.compute((m,), lambda i: ts.sum(e[i, k2], axis=k2), name="rowsum")
    Y = ts.compute((m, n), lambda i, j: e[i, j] / s[i], name="Y")

    def reference(a):
        (a,) = _f64(a)
        z = np.exp(a - a.max(axis=1, keepdims=True))
        return (_out(Y, z / z.sum(axis=1, keepdims=True)),)

    return [A, Y], reference


def layernorm(m: int = 3, n: int = 8, eps: float = 1e-5) -> Program:
    """Layer norm over the last axis of X (m, n) with scale gamma (n,) and shift beta (n,):
    (X - mean) / sqrt(var + eps) * gamma + beta, var being the biased (population) variance."""
    X = ts.placeholder((m, n), "float32", name="X")
    gamma = ts.placeholder((n,), "float32", name="gamma")
    beta = ts.placeholder((n,), "float32", name="beta")
    k1, k2 = ts.reduce_axis(n, name="k1"), ts.reduce_axis(n, name="k2")
    mean = ts.compute((m,), lambda i: ts.sum(X[i, k1] * (1.0 / n), axis=k1), name="mean")
    var = ts.compute((m,), lambda i: ts.sum((X[i, k2] - mean[i]) * (X[i, k2] - mean[i]) * (1.0 / n), axis=k2),
                     name="var")
    Y = ts.compute((m, n), lambda i, j: (X[i, j] - mean[i]) * ts.rsqrt(var[i] + eps) * gamma[j] + beta[j], name="Y")

    def reference(x, g, b):
        x, g, b = _f64(x, g, b)
        mu = x.mean(axis=1, keepdims=True)
        sigma2 = ((x - mu) ** 2).mean(axis=1, keepdims=True)
        return (_out(Y, (x - mu) / np.sqrt(sigma2 + eps) * g + b),)

    return [X, gamma, beta, Y], reference


def conv2d(batch: int = 1, cin: int = 2, h: int = 5, w: int = 4, cout: int = 3, kh: int = 3, kw: int = 3) -> Program:
    """2-D convolution, NCHW, stride 1, zero padding 1 (written with where(), no padded tensor):
    X (batch, cin, h, w), W (cout, cin, kh, kw) -> Y (batch, cout, h + 3 - kh, w + 3 - kw)."""
    oh, ow = h + 2 - kh + 1, w + 2 - kw + 1
    X = ts.placeholder((batch, cin, h, w), "float32", name="X")
    W = ts.placeholder((cout, cin, kh, kw), "float32", name="W")
    rc, ry, rx = ts.reduce_axis(cin, name="rc"), ts.reduce_axis(kh, name="ry"), ts.reduce_axis(kw, name="rx")

    def body(b, f, y, x):
        iy, ix = y + ry - 1, x + rx - 1
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        return ts.sum(ts.where(inside, X[b, rc, iy, ix], 0.0) * W[f, rc, ry, rx], axis=[rc, ry, rx])

    Y = ts.compute((batch, cout, oh, ow), body, name="Y")

    def reference(x, wt):
        x, wt = _f64(x, wt)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((batch, cout, oh, ow))
        for dy in range(kh):
            for dx in range(kw):
                out += np.einsum("bchw,fc->bfhw", xp[:, :, dy:dy + oh, dx:dx + ow], wt[:, :, dy, dx])
        return (_out(Y, out),)

    return [X, W, Y], reference


def random_inputs(tensors: list[Tensor], rng: np.random.Generator) -> list[np.ndarray]:
    """One random array per placeholder of `tensors`: standard normal, in the placeholder's dtype
    (integers in [-5, 5], bools random)."""
    out = []
    for t in tensors:
        if not t.is_placeholder:
            continue
        if t.dtype == "bool":
            out.append(rng.random(t.shape) < 0.5)
        elif t.dtype.startswith("int"):
            out.append(rng.integers(-5, 6, size=t.shape).astype(t.dtype))
        else:
            out.append(rng.standard_normal(t.shape).astype(numpy_dtype(t.dtype)))
    return out


PROGRAMS: dict[str, Callable[[], Program]] = {
    "elementwise_broadcast": elementwise_broadcast,
    "reduction_sum": reduction_sum,
    "reduction_max": reduction_max,
    "reduction_min": reduction_min,
    "gemm_fp32": gemm,
    "gemm_fp16_fp32": lambda: gemm(in_dtype="float16"),
    "softmax": softmax,
    "layernorm": layernorm,
    "conv2d": conv2d,
}
