"""Dynamic shapes on the CPU: one program for a torch.export Dim range against per-shape programs and torch eager.

For a small transformer-style MLP block (Linear, GELU, Linear, residual, LayerNorm) with a dynamic
batch dimension, or (`--model transformer`) a `torch.nn.TransformerEncoderLayer` (batch 2) with a
dynamic sequence length, it compiles once with `dynamic_shapes` (the symbolic program serves every
size), then for several sizes compiles a per-shape model (no dynamic shapes) and times all three in
the same run:

    python bench/dynamic_shapes.py [--model mlp|transformer] [--sizes 1,7,64,200,512] [--width 256] [--runs 30]

Printed per size: median microseconds per call of the symbolic program, the per-shape program and
torch eager, and the ratios per-shape / symbolic and eager / symbolic (above 1: the symbolic program
is faster). Also the compile seconds: once for the range (the example's program and the symbolic
one, which tessel otherwise compiles on the first call with a new shape) vs once per size (a
per-shape kernel of the symbolic program compiles on the first call with its size, before timing).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _median_us(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    import torch
    from torch.export import Dim

    import tessel as ts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("mlp", "transformer"), default="mlp")
    ap.add_argument("--sizes", default=None, help="default 1,7,64,200,512 (mlp) or 2,9,33,64 (transformer)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("1,7,64,200,512" if args.model == "mlp" else "2,9,33,64")).split(",")]
    w = args.width

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down, self.norm = torch.nn.Linear(w, 2 * w), torch.nn.Linear(2 * w, w), torch.nn.LayerNorm(w)

        def forward(self, x):
            return self.norm(x + self.down(torch.nn.functional.gelu(self.up(x))))

    torch.manual_seed(0)
    if args.model == "mlp":
        m, shape, axis = Block().eval(), (8, w), 0
    else:
        m = torch.nn.TransformerEncoderLayer(w, 4, 2 * w, dropout=0.0, batch_first=True).eval()
        shape, axis = (2, 8, w), 1
    lo = min(min(sizes), 2)
    t = time.perf_counter()
    cm = ts.compile(m, (torch.randn(*shape),), target="cpu",
                    dynamic_shapes=({axis: Dim("n", min=lo, max=max(sizes))},))
    cm.symbolic  # noqa: B018 - compiled on first use: here, so that it is timed as part of the compile
    once = time.perf_counter() - t
    print(f"symbolic program: {cm.symbolic.describe() if cm.symbolic else cm.symbolic_reason}")
    print(f"compile once for [{lo}, {max(sizes)}]: {once:.2f} s")
    print(f"{'n':>6} {'symbolic us':>12} {'per-shape us':>13} {'eager us':>10} {'per-shape/sym':>14} "
          f"{'eager/sym':>10} {'compile s':>10}")
    per_shape_compile = 0.0
    for b in sizes:
        x = torch.randn(*[b if k == axis else d for k, d in enumerate(shape)])
        xn = x.numpy()
        t = time.perf_counter()
        fixed = ts.compile(m, (x,), target="cpu")
        c = time.perf_counter() - t
        per_shape_compile += c
        np.testing.assert_allclose(cm(xn), m(x).detach().numpy(), rtol=1e-4, atol=1e-4)
        sym = _median_us(lambda: cm(xn), args.runs)
        per = _median_us(lambda: fixed(xn), args.runs)
        with torch.no_grad():
            eager = _median_us(lambda: m(x), args.runs)
        print(f"{b:>6} {sym:>12.1f} {per:>13.1f} {eager:>10.1f} {per / sym:>14.2f} {eager / sym:>10.2f} {c:>10.2f}")
    print(f"compile per shape, {len(sizes)} sizes: {per_shape_compile:.2f} s in all")


if __name__ == "__main__":
    main()
