"""`tessel demo`: four kernels written in the DSL, built for the CPU, checked and timed against numpy.

The demo is the shortest honest answer to "does it work, and how fast is it?": GEMM, row softmax,
layer norm and a 3x3 NCHW convolution are written in the DSL, built with `tessel.build(...,
target="cpu")`, run on fresh random inputs, compared with a float64 numpy reference, and timed
(median of several runs after a warm-up) next to numpy doing the same work in float32. The table
shows the ratio numpy/tessel: above 1 means tessel is faster.

The kernel definitions (`demo_cases`) are separate from the running (`run_demo`) so tests can check
them on other back ends (the reference interpreter) and at tiny sizes.

Example:
    >>> [c.name for c in demo_cases("tiny")]
    ['gemm', 'softmax', 'layernorm', 'conv2d']
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import numpy as np

import tessel as ts
from tessel.errors import TesselError

# Problem sizes per preset. "small" is the demo proper; "tiny" is for tests (interpreter-friendly).
SIZES = {
    "tiny": {"gemm": (8, 12, 16), "softmax": (6, 10), "layernorm": (6, 10), "conv2d": (1, 3, 6, 6, 4, 3, 3, 1)},
    "small": {"gemm": (512, 512, 512), "softmax": (4096, 1024), "layernorm": (4096, 1024),
              "conv2d": (1, 64, 56, 56, 64, 3, 3, 1)},
}
# Timed runs after one warm-up, per preset.
RUNS = {"tiny": 3, "small": 5}
LAYERNORM_EPS = 1e-5


@dataclass
class Case:
    """One demo kernel: its DSL tensors (the kernel's parameters in call order), how to make inputs,
    and numpy functions computing the outputs (used in float64 for the check, float32 for timing)."""

    name: str
    shape: str
    tensors: list
    inputs: dict  # input name -> shape
    outputs: list  # output names, in call order after the inputs
    numpy_fn: Callable  # (*input arrays) -> tuple of output arrays, in the inputs' dtype
    rtol: float = 1e-4

    def make_inputs(self, rng: np.random.Generator) -> dict:
        """Fresh random float32 inputs (standard normal: never all zeros)."""
        return {n: rng.standard_normal(s, dtype=np.float32) for n, s in self.inputs.items()}

    def reference(self, inputs: dict) -> dict:
        """The expected outputs, computed by numpy in float64."""
        outs = self.numpy_fn(*(inputs[n].astype(np.float64) for n in self.inputs))
        return dict(zip(self.outputs, outs))

    def output_shapes(self) -> dict:
        return {t.name: t.shape for t in self.tensors if t.name in self.outputs}


@dataclass
class Row:
    """One line of the demo's table."""

    kernel: str
    shape: str
    max_error: float = float("nan")  # max |tessel - reference| / max |reference|
    passed: bool = False
    tessel_ms: float = float("nan")
    numpy_ms: float = float("nan")
    build_s: float = float("nan")
    error: str = ""  # why the kernel could not be built or run, if it could not

    @property
    def ratio(self) -> float:
        """numpy time / tessel time: above 1 means tessel is faster."""
        return self.numpy_ms / self.tessel_ms if self.tessel_ms > 0 else float("nan")

    @property
    def status(self) -> str:
        return "PASS" if self.passed else ("ERROR" if self.error else "FAIL")


# ---------------------------------------------------------------------------------------------
# The kernels, in the DSL, and their numpy counterparts
# ---------------------------------------------------------------------------------------------


def gemm_case(m: int, n: int, k: int) -> Case:
    """C[i, j] = sum_k A[i, k] * B[k, j], float32."""
    A = ts.placeholder((m, k), "float32", name="A")
    B = ts.placeholder((k, n), "float32", name="B")
    r = ts.reduce_axis(k, name="k")
    C = ts.compute((m, n), lambda i, j: ts.sum(A[i, r] * B[r, j], axis=r), name="C")
    return Case("gemm", f"{m}x{n}x{k}", [A, B, C], {"A": (m, k), "B": (k, n)}, ["C"], lambda a, b: (a @ b,))


def softmax_case(rows: int, cols: int) -> Case:
    """Y[i, :] = softmax(X[i, :]), stabilised by the row maximum."""
    X = ts.placeholder((rows, cols), "float32", name="X")
    k1, k2 = ts.reduce_axis(cols, name="k1"), ts.reduce_axis(cols, name="k2")
    mx = ts.compute((rows,), lambda i: ts.max(X[i, k1], axis=k1), name="row_max")
    e = ts.compute((rows, cols), lambda i, j: ts.exp(X[i, j] - mx[i]), name="e")
    s = ts.compute((rows,), lambda i: ts.sum(e[i, k2], axis=k2), name="row_sum")
    Y = ts.compute((rows, cols), lambda i, j: e[i, j] / s[i], name="Y")
    return Case("softmax", f"{rows}x{cols}", [X, Y], {"X": (rows, cols)}, ["Y"], _np_softmax)


def _np_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True),)


def layernorm_case(rows: int, cols: int) -> Case:
    """Y[i, j] = (X[i, j] - mean_i) / sqrt(var_i + eps) * gamma[j] + beta[j]."""
    X = ts.placeholder((rows, cols), "float32", name="X")
    gamma = ts.placeholder((cols,), "float32", name="gamma")
    beta = ts.placeholder((cols,), "float32", name="beta")
    k1, k2 = ts.reduce_axis(cols, name="k1"), ts.reduce_axis(cols, name="k2")
    inv = 1.0 / cols
    mean = ts.compute((rows,), lambda i: ts.sum(X[i, k1] * inv, axis=k1), name="mean")
    var = ts.compute((rows,), lambda i: ts.sum((X[i, k2] - mean[i]) * (X[i, k2] - mean[i]) * inv, axis=k2),
                     name="var")
    Y = ts.compute((rows, cols),
                   lambda i, j: (X[i, j] - mean[i]) * ts.rsqrt(var[i] + LAYERNORM_EPS) * gamma[j] + beta[j], name="Y")
    shapes = {"X": (rows, cols), "gamma": (cols,), "beta": (cols,)}
    return Case("layernorm", f"{rows}x{cols}", [X, gamma, beta, Y], shapes, ["Y"], _np_layernorm)


def _np_layernorm(x, g, b):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return ((x - mu) / np.sqrt(var + LAYERNORM_EPS) * g + b,)


def conv2d_case(n: int, c: int, h: int, w: int, k: int, r: int, s: int, pad: int) -> Case:
    """NCHW convolution, stride 1, zero padding `pad`:
    Y[n, k, y, x] = sum over c, r, s of P[n, c, y + r, x + s] * W[k, c, r, s], P being X padded."""
    X = ts.placeholder((n, c, h, w), "float32", name="X")
    W = ts.placeholder((k, c, r, s), "float32", name="W")
    hp, wp = h + 2 * pad, w + 2 * pad
    ho, wo = hp - r + 1, wp - s + 1
    P = ts.compute((n, c, hp, wp), lambda b, ch, y, x: ts.where(
        (y >= pad) & (y < h + pad) & (x >= pad) & (x < w + pad), X[b, ch, y - pad, x - pad], 0.0), name="padded")
    rc, rr, rs = ts.reduce_axis(c, name="rc"), ts.reduce_axis(r, name="rr"), ts.reduce_axis(s, name="rs")
    Y = ts.compute((n, k, ho, wo), lambda b, f, y, x: ts.sum(P[b, rc, y + rr, x + rs] * W[f, rc, rr, rs],
                                                             axis=[rc, rr, rs]), name="Y")
    return Case("conv2d", f"N{n} C{c} {h}x{w} K{k} {r}x{s} pad{pad}", [X, W, Y],
                {"X": (n, c, h, w), "W": (k, c, r, s)}, ["Y"], lambda x, wt: (np_conv2d(x, wt, pad),))


def np_conv2d(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """NCHW convolution, stride 1, by explicit im2col and one matrix multiply (numpy's BLAS).

    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 3, 3))
    >>> np_conv2d(x, w, 1)[0, 0].tolist()
    [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]
    """
    n, c, _, _ = x.shape
    k, _, r, s = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (r, s), axis=(2, 3))  # n, c, ho, wo, r, s
    ho, wo = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * r * s)
    out = cols @ w.reshape(k, c * r * s).T  # (n*ho*wo, k)
    return out.reshape(n, ho, wo, k).transpose(0, 3, 1, 2)


def demo_cases(sizes: str = "small") -> list[Case]:
    """The demo's kernels at a size preset ("tiny" or "small").

    >>> demo_cases("tiny")[0].shape
    '8x12x16'
    """
    if sizes not in SIZES:
        raise TesselError(f"demo: unknown sizes {sizes!r}; choose one of {', '.join(SIZES)}")
    p = SIZES[sizes]
    return [gemm_case(*p["gemm"]), softmax_case(*p["softmax"]), layernorm_case(*p["layernorm"]),
            conv2d_case(*p["conv2d"])]


# ---------------------------------------------------------------------------------------------
# Checking and timing
# ---------------------------------------------------------------------------------------------


def max_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref|: an error relative to the result's scale (inf if out has NaNs).

    >>> max_error(np.array([1.0, 2.0]), np.array([1.0, 2.2]))  # doctest: +ELLIPSIS
    0.0909...
    """
    if not np.all(np.isfinite(out)):
        return float("inf")
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(out.astype(np.float64) - ref))) / scale


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `fn()` in milliseconds over `runs` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def check_case(case: Case, kernel: Callable, rng: np.random.Generator, runs: int) -> Row:
    """Run `kernel` (called with all parameters in order, outputs written in place) on fresh inputs,
    compare with the float64 reference, and time it next to numpy in float32."""
    row = Row(case.name, case.shape)
    inputs = case.make_inputs(rng)
    # NaN-filled outputs: an element the kernel forgets to write fails the check.
    outputs = {n: np.full(s, np.nan, dtype=np.float32) for n, s in case.output_shapes().items()}
    args = [inputs[n] if n in inputs else outputs[n] for n in (t.name for t in case.tensors)]
    kernel(*args)
    ref = case.reference(inputs)
    row.max_error = max(max_error(outputs[n], ref[n]) for n in case.outputs)
    row.passed = all(np.allclose(outputs[n], ref[n], rtol=case.rtol, atol=case.rtol * (np.max(np.abs(ref[n])) or 1.0))
                     for n in case.outputs)
    row.tessel_ms = median_ms(lambda: kernel(*args), runs)
    arrays = [inputs[n] for n in case.inputs]
    row.numpy_ms = median_ms(lambda: case.numpy_fn(*arrays), runs)
    return row


def machine_description() -> str:
    """CPU model and core count, e.g. 'AMD EPYC (2 cores available)'."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores available)"


def format_table(rows: list[Row]) -> str:
    """The demo's table as text, one row per kernel, followed by any build/run errors."""
    head = ("kernel", "shape", "max rel err", "check", "build s", "tessel ms", "numpy ms", "numpy/tessel")
    lines = [[r.kernel, r.shape, f"{r.max_error:.2e}", r.status, f"{r.build_s:.2f}", f"{r.tessel_ms:.3f}",
              f"{r.numpy_ms:.3f}", format_ratio(r.ratio)] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in lines]
    out += [f"{r.kernel}: {r.error}" for r in rows if r.error]
    return "\n".join(out)


def format_ratio(ratio: float) -> str:
    """A speed ratio with three significant digits, so a large slowdown does not read "0.00".

    >>> format_ratio(2.5), format_ratio(1 / 300), format_ratio(float("nan"))
    ('2.50', '0.00333', 'nan')
    """
    return f"{ratio:.2f}" if not ratio < 1 else f"{ratio:.3g}"


def check_runs(runs: int | None) -> int | None:
    """`runs` if it is None (the preset's default) or a positive count; else a TesselError.

    >>> check_runs(3)
    3
    """
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise TesselError(f"demo: runs must be a positive number of timed runs, got {runs!r}")
    return runs


def _builder(target: str) -> Callable:
    if target != "cpu":
        raise TesselError(f"demo: target {target!r} is not supported yet; the demo runs on 'cpu' (numpy arrays)")
    try:
        return ts.build
    except ImportError as e:  # the driver is not there yet, or a back end failed to import
        raise TesselError(f"demo: tessel.build is not available ({e})") from e


def run_demo(target: str = "cpu", sizes: str = "small", runs: int | None = None, seed: int | None = None,
             out: TextIO | None = None, progress: bool = True, build: Callable | None = None) -> list[Row]:
    """Build, check and time the demo kernels; print the table to `out` (default: sys.stdout).

    A kernel that fails to build or run with a TesselError gets an ERROR row and the demo goes on.
    Returns the rows; the demo passed when every row's `passed` is true. `build` replaces
    `tessel.build` (same signature), e.g. to run the kernels on another back end.

    Example (needs the CPU back end):
        rows = run_demo(sizes="tiny", out=io.StringIO(), progress=False)
        assert all(r.passed for r in rows)
    """
    check_runs(runs)
    build = build or _builder(target)
    out = sys.stdout if out is None else out  # looked up now, so redirections of sys.stdout apply
    cases = demo_cases(sizes)
    runs = runs or RUNS[sizes]
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    rng = np.random.default_rng(seed)
    print(f"tessel {ts.__version__} demo: target {target}, sizes {sizes!r}, seed {seed}, "
          f"median of {runs} runs after a warm-up", file=out)
    print(f"machine: {machine_description()}", file=out)
    kernels: dict[str, Callable] = {}
    rows: dict[str, Row] = {c.name: Row(c.name, c.shape) for c in cases}
    from tqdm import tqdm  # a dependency, imported only when the demo runs

    for case in tqdm(cases, desc="building", unit="kernel", disable=not progress, leave=False, file=sys.stderr):
        t0 = time.perf_counter()
        try:
            kernels[case.name] = build(case.tensors, target=target)
        except TesselError as e:
            rows[case.name].error = f"build failed: {e}"
        rows[case.name].build_s = time.perf_counter() - t0
    for case in cases:
        if case.name not in kernels:
            continue
        build_s = rows[case.name].build_s
        try:
            rows[case.name] = check_case(case, kernels[case.name], rng, runs)
        except TesselError as e:
            rows[case.name].error = f"run failed: {e}"
        rows[case.name].build_s = build_s
    result = list(rows.values())
    print(format_table(result), file=out)
    bad = [r.kernel for r in result if not r.passed]
    print("all kernels match numpy" if not bad else f"FAILED: {', '.join(bad)}", file=out)
    return result
