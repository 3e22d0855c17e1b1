"""Tune the CPU 512^3 float32 GEMM with tessel's autotuner; report default vs tuned vs numpy.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/tuner_eval.py --n 512 --trials 32

numpy's time is measured in the same run (unset the two OpenBLAS variables in that command only,
see shared/FACTS.md). The tuning log and the tuning-curve PNG go to --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--strategy", default="xgb", choices=("xgb", "random"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/tessel_tuner_eval")
    args = ap.parse_args()

    import tessel as ts
    from tessel.tune.api import tune

    n = args.n
    A = ts.placeholder((n, n), name="A")
    B = ts.placeholder((n, n), name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, f"gemm{n}_{args.strategy}_s{args.seed}.jsonl")
    start = time.monotonic()
    res = tune([A, B, C], target="cpu", trials=args.trials, log=log, batch=args.batch, seed=args.seed,
               strategy=args.strategy, reference=lambda a, b: a @ b, progress=True)
    took = time.monotonic() - start
    print(res.summary())
    print(f"tuning took {took:.1f} s; log {log}")

    # Re-time default and tuned builds here, next to numpy, in one process (medians of 20 calls).
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    default = ts.build([A, B, C], target="cpu")
    tuned = ts.build([A, B, C], target="cpu", tuning_log=log)

    def med(fn, runs=20):
        fn()
        ts_ = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            ts_.append(time.perf_counter() - t)
        return statistics.median(ts_)

    t_np = med(lambda: a @ b)
    t_def = med(lambda: default(a, b, c))
    t_tun = med(lambda: tuned(a, b, c))
    assert np.allclose(c, a @ b, rtol=1e-3, atol=1e-3)
    flops = 2 * n ** 3
    print(f"GEMM {n}^3 float32, {os.cpu_count()} cores: numpy {t_np * 1e3:.3f} ms ({flops / t_np / 1e9:.1f} GFLOP/s), "
          f"tessel default {t_def * 1e3:.3f} ms ({flops / t_def / 1e9:.1f}), tuned {t_tun * 1e3:.3f} ms "
          f"({flops / t_tun / 1e9:.1f}); ratio numpy/tuned {t_np / t_tun:.2f}, default/tuned {t_def / t_tun:.2f}")
    try:
        from tessel.tune.plot import plot_curves

        png = plot_curves({args.strategy: res.workloads[0].curve}, os.path.join(args.out, f"gemm{n}.png"))
        print(f"tuning curve: {png}")
    except Exception as e:  # noqa: BLE001 - the plot is optional (matplotlib)
        print(f"no plot: {e}")


if __name__ == "__main__":
    main()
