"""The demo's sample models, built with the graph builder: a pre-norm transformer block and a
long-convolution block (FFT convolution, as in H3/Hyena/FlashFFTConv).

Each is compiled with `tessel.compile`, checked against the graph run with each op's numpy
reference (independent of lowering and code generation), and timed next to that numpy run.

Example (skipped in the doctest run: it compiles both models, about 5 s; tests/test_cli.py runs it):
    >>> rows = run_model_demo(sizes="tiny", out=None, runs=1)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

MODEL_SIZES = {
    "tiny": {"block": (1, 16, 32, 2), "longconv": (1, 4, 64)},
    "small": {"block": (2, 128, 256, 4), "longconv": (4, 32, 512)},
}


def transformer_block(batch: int, seq: int, dim: int, heads: int, rng: np.random.Generator):
    """x + attn(ln(x)), then + mlp(ln(.)) with causal sdpa and a tanh-GELU MLP of width 4*dim."""
    from tessel.frontend.builder import GraphBuilder

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    hd = dim // heads
    b = GraphBuilder("transformer_block")
    x = b.input("x", (batch, seq, dim))
    h = b.layer_norm(x, b.const(np.ones(dim, np.float32)), b.const(np.zeros(dim, np.float32)), axes=[2], eps=1e-5)
    qkv = b.matmul(h, b.const(w(dim, 3 * dim)))

    def heads_of(t):  # (B, S, D) -> (B, H, S, hd)
        return b.transpose(b.reshape(t, shape=[batch, seq, heads, hd]), perm=[0, 2, 1, 3])

    q, k, v = (heads_of(b.slice(qkv, [i * dim], [(i + 1) * dim], [2])) for i in range(3))
    a = b.sdpa(q, k, v, is_causal=True, scale=1.0 / np.sqrt(hd))
    a = b.reshape(b.transpose(a, perm=[0, 2, 1, 3]), shape=[batch, seq, dim])
    x = b.add(x, b.matmul(a, b.const(w(dim, dim))))
    h = b.layer_norm(x, b.const(np.ones(dim, np.float32)), b.const(np.zeros(dim, np.float32)), axes=[2], eps=1e-5)
    h = b.gelu(b.matmul(h, b.const(w(dim, 4 * dim))), approximate="tanh")
    b.output(b.add(x, b.matmul(h, b.const(w(4 * dim, dim)))))
    return b, (batch, seq, dim)


def long_conv_block(batch: int, channels: int, length: int, rng: np.random.Generator):
    """y = irfft(rfft(x, 2L) * rfft(k, 2L))[:L] + x: a causal per-channel convolution whose kernel
    is as long as the sequence, through FFTs (the product spelled out on real/imag pairs)."""
    from tessel.frontend.builder import GraphBuilder

    k = (rng.standard_normal((channels, length)) / length).astype(np.float32)
    kf = np.fft.rfft(k.astype(np.float64), n=2 * length, axis=1)
    b = GraphBuilder("long_conv_block")
    x = b.input("x", (batch, channels, length))
    xf = b.rfft(b.pad(x, (0, 0, 0, 0, 0, length)), n=2 * length, axis=2)  # (B, C, L+1, 2)
    re, im = b.slice(xf, [0], [1], [3]), b.slice(xf, [1], [2], [3])
    kre = b.const(kf.real.astype(np.float32)[None, :, :, None])
    kim = b.const(kf.imag.astype(np.float32)[None, :, :, None])
    yf = b.concat([b.sub(b.mul(re, kre), b.mul(im, kim)), b.add(b.mul(re, kim), b.mul(im, kre))], axis=3)
    y = b.slice(b.irfft(yf, n=2 * length, axis=2), [0], [length], [2])
    b.output(b.add(y, x))
    return b, (batch, channels, length)


def _median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def run_model_demo(sizes: str = "small", out: TextIO | None = None, runs: int = 3, seed: int = 0) -> list[dict]:
    """Compile, check and time the sample models; print a table; return one dict per model."""
    import tessel as ts

    out = sys.stdout if out is None else out
    rng = np.random.default_rng(seed)
    p = MODEL_SIZES[sizes]
    rows = []
    for make, args in ((transformer_block, p["block"]), (long_conv_block, p["longconv"])):
        builder, in_shape = make(*args, rng)
        t0 = time.perf_counter()
        cm = ts.compile(builder, target="cpu")
        build_s = time.perf_counter() - t0
        x = rng.standard_normal(in_shape).astype(np.float32)
        got, want = cm(x), cm.run_reference(x)
        err = float(np.abs(got - want).max() / (np.abs(want).max() or 1.0))
        row = {"model": builder.graph.name, "shape": "x".join(map(str, in_shape)), "max rel err": err,
               "check": "PASS" if err <= 1e-4 else "FAIL", "build s": build_s, "kernels": len(cm.kernels),
               "tessel ms": _median_ms(lambda cm=cm, x=x: cm(x), runs),
               "numpy ms": _median_ms(lambda cm=cm, x=x: cm.run_reference(x), runs)}
        rows.append(row)
    print(f"{'model':<18} {'input':<12} {'max rel err':>11} {'check':>5} {'build s':>7} {'kernels':>7} "
          f"{'tessel ms':>9} {'numpy ms':>9} {'numpy/tessel':>12}", file=out)
    for r in rows:
        print(f"{r['model']:<18} {r['shape']:<12} {r['max rel err']:>11.2e} {r['check']:>5} {r['build s']:>7.2f} "
              f"{r['kernels']:>7} {r['tessel ms']:>9.3f} {r['numpy ms']:>9.3f} "
              f"{r['numpy ms'] / r['tessel ms']:>12.2f}", file=out)
    print("(tessel lowers rfft/irfft to a direct O(n^2) DFT until the Monarch tensor-core FFT lands; "
          "numpy's reference uses an FFT)", file=out)
    return rows
