"""Small GPU kernels for the pass tests: one per default GPU schedule, each scheduled with
`default_gpu_schedule` (and the GEMM template with a 3-stage ring), with random inputs and an
independent numpy reference.

`case(name)` returns a `Case`: the scheduled kernel, one random array per input, the expected
output (numpy, float64) and its tolerance. `run_case(kernel, case)` runs a kernel (before or after
passes) in the interpreter on the case's inputs, its output starting from garbage, and returns the
output. `equal_bits(a, b)` compares two outputs bit for bit (NaN included).
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

import tessel as ts
from tessel.fuzz import suite
from tessel.ir import interp
from tessel.ir.nodes import Kernel
from tessel.schedules.generic_gpu import default_gpu_schedule

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "int32": np.int32}


@dataclass
class Case:
    name: str
    kernel: Kernel  # scheduled for the GPU, before any pass
    inputs: list
    want: np.ndarray
    tol: float


def rand(shape, dtype, rng):
    return rng.standard_normal(shape).astype(NP[dtype])


def _rowwise_reference(op, arrays):
    x = arrays[0].astype(np.float64)
    if op == "softmax":
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    if op == "layer_norm":
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * arrays[1].astype(np.float64) + arrays[2].astype(np.float64)
    ms = (x * x).mean(axis=-1, keepdims=True)
    return x / np.sqrt(ms + 1e-6) * arrays[1].astype(np.float64)


def _matmul(M, N, K, dtype, rng, a_t=False, b_t=False):
    """(unscheduled GEMM from the fuzzer's suite, inputs, float64 numpy product)."""
    a, b = rand((K, M) if a_t else (M, K), dtype, rng), rand((N, K) if b_t else (K, N), dtype, rng)
    at, bt = (a.T if a_t else a).astype(np.float64), (b.T if b_t else b).astype(np.float64)
    return suite.matmul(M, N, K, dtype, a_t, b_t), [a, b], at @ bt


def _unscheduled(name, rng):
    """(lowered kernel, inputs, expected output, tolerance)."""
    if name in ("elementwise", "elementwise_f16"):
        shape, dtype = ((37, 19), "float32") if name == "elementwise" else ((64, 48), "float16")
        A = ts.placeholder(shape, dtype, name="A")
        a = rand(shape, dtype, rng)
        if dtype == "float32":
            B = ts.compute(shape, lambda i, j: ts.exp(A[i, j]) * 2.0, name="B")
            return ts.lower([A, B]), [a], np.exp(a.astype(np.float64)) * 2, 1e-5
        B = ts.compute(shape, lambda i, j: A[i, j] * A[i, j], name="B")
        return ts.lower([A, B]), [a], a.astype(np.float64) ** 2, 1e-2
    if name in ("row_sum", "row_max_block"):
        rows, cols = (6, 100) if name == "row_sum" else (3, 1000)
        X = ts.placeholder((rows, cols), name="X")
        k = ts.reduce_axis(cols, name="k")
        red = ts.sum if name == "row_sum" else ts.max
        x = rand((rows, cols), "float32", rng)
        want = x.astype(np.float64).sum(axis=1) if name == "row_sum" else x.max(axis=1)
        return ts.lower([X, ts.compute((rows,), lambda i: red(X[i, k], axis=k), name="S")]), [x], want, 1e-4
    if name == "column_sum":
        X = ts.placeholder((50, 7), name="X")
        k = ts.reduce_axis(50, name="k")
        x = rand((50, 7), "float32", rng)
        return ts.lower([X, ts.compute((7,), lambda j: ts.sum(X[k, j], axis=k), name="S")]), [x], x.sum(axis=0), 1e-4
    if name == "transpose":
        A = ts.placeholder((40, 70), name="A")
        a = rand((40, 70), "float32", rng)
        return ts.lower([A, ts.compute((70, 40), lambda i, j: A[j, i], name="B")]), [a], a.T, 0.0
    if name in ("softmax", "softmax_block", "layer_norm", "rms_norm"):
        shapes, dtype = {"softmax": ([(6, 40)], "float32"), "softmax_block": ([(3, 700)], "float32"),
                         "layer_norm": ([(5, 64), (64,), (64,)], "float16"),
                         "rms_norm": ([(4, 600), (600,)], "bfloat16")}[name]
        op = "softmax" if name.startswith("softmax") else name
        arrays = [rand(s, dtype, rng) for s in shapes]
        tol = 1e-4 if dtype == "float32" else 3e-2
        return suite.lowered(op, shapes, dtype), arrays, _rowwise_reference(op, arrays), tol
    M, N, K, dtype, a_t, b_t = {"matmul_mma": (64, 64, 64, "float16", False, False),
                                "matmul_mma_bf16_t": (32, 32, 32, "bfloat16", True, True),
                                "matmul_simt": (33, 40, 17, "float32", False, False),
                                "gemm_default": (128, 128, 64, "float16", False, False),
                                "gemm_3stage": (128, 128, 96, "float16", False, False)}[name]
    kernel, inputs, want = _matmul(M, N, K, dtype, rng, a_t, b_t)
    return kernel, inputs, want, 1e-3


CASES = ["elementwise", "elementwise_f16", "row_sum", "row_max_block", "column_sum", "transpose", "softmax",
         "softmax_block", "layer_norm", "rms_norm", "matmul_mma", "matmul_mma_bf16_t", "matmul_simt", "gemm_default",
         "gemm_3stage"]

# gemm_3stage: the gemm.mma_sync template with 4 warps of 64x64 and a 3-stage cp.async ring (K = 3 tiles)
_TEMPLATE_KNOBS = {"gemm_3stage": {"bm": 128, "bn": 128, "bk": 32, "warps_m": 2, "warps_n": 2, "stages": 3}}


def case(name: str, seed: int | None = None) -> Case:
    """The case `name`, scheduled by the default GPU schedule; fresh random inputs (seed None)."""
    rng = np.random.default_rng(seed)
    kernel, inputs, want, tol = _unscheduled(name, rng)
    if name in _TEMPLATE_KNOBS:
        from tessel.schedules.template import get_template

        scheduled = get_template("gemm.mma_sync").apply(kernel, _TEMPLATE_KNOBS[name], "cuda:sm_80").kernel
        return Case(name, scheduled, inputs, want, tol)
    return Case(name, default_gpu_schedule(kernel, "cuda:sm_80").kernel, inputs, want, tol)


def run_case(kernel: Kernel, c: Case) -> np.ndarray:
    out = kernel.params[-1]
    y = np.full(out.shape, 7e3, NP[out.dtype])  # garbage: what the kernel leaves unwritten shows
    interp.run(kernel, *c.inputs, y)
    return y


def equal_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
