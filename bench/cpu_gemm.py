"""CPU GEMM: tessel's default schedule (untuned) against numpy (its BLAS), in one run.

Prints, per size, both times (median of interleaved repeats), GFLOP/s, and the speed ratio
numpy time / tessel time (above 1 means tessel is faster), plus the machine.

    python bench/cpu_gemm.py              # 256, 512, 1024, float32
    python bench/cpu_gemm.py --sizes 512 --repeat 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

import tessel as ts


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def gemm_kernel(n: int):
    A = ts.placeholder((n, n), "float32", name="A")
    B = ts.placeholder((n, n), "float32", name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    return ts.build([A, B, C], target="cpu")


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def compare(fn_a, fn_b, repeat: int, rounds: int = 3) -> tuple[list[float], list[float]]:
    """Time two functions in alternating blocks (a pause between blocks lets the other library's
    worker threads go idle, so neither pays for the other's spinning pool)."""
    ta, tb = [], []
    for _ in range(rounds):
        fn_a()
        ta += timed(fn_a, repeat)
        time.sleep(0.05)
        fn_b()
        tb += timed(fn_b, repeat)
        time.sleep(0.05)
    return ta, tb


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--repeat", type=int, default=10, help="calls per timing block (3 blocks each)")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"{'size':>6} {'tessel ms':>10} {'numpy ms':>10} {'tessel GFLOP/s':>15} {'numpy GFLOP/s':>14} "
          f"{'ratio':>7} {'ratio(min)':>9}  build s  max rel err")
    print("(medians of 3 alternating blocks; ratio = numpy time / tessel time, above 1: tessel faster)")
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(n)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        t0 = time.perf_counter()
        kern = gemm_kernel(n)
        build_s = time.perf_counter() - t0
        kern(a, b, c)
        ref = a @ b
        err = float(np.abs(c - ref).max() / np.abs(ref).max())
        tt, tn = compare(lambda k=kern, a=a, b=b, c=c: k(a, b, c), lambda a=a, b=b: a @ b, args.repeat)
        mt, mn = statistics.median(tt), statistics.median(tn)
        flop = 2.0 * n**3
        print(f"{n:>6} {mt * 1e3:>10.3f} {mn * 1e3:>10.3f} {flop / mt / 1e9:>15.1f} {flop / mn / 1e9:>14.1f} "
              f"{mn / mt:>7.2f} {min(tn) / min(tt):>9.2f}  {build_s:7.2f}  {err:.1e}")


if __name__ == "__main__":
    main()
