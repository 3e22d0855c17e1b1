"""CPU GEMM: tessel's default schedule (untuned) against numpy (its BLAS), in one run.

Prints, per size, both times (median of interleaved repeats), GFLOP/s, and the speed ratio
numpy time / tessel time (above 1 means tessel is faster), plus the machine.

    python bench/cpu_gemm.py              # 256, 512, 1024, float32
    python bench/cpu_gemm.py --sizes 512 --repeat 20
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/cpu_gemm.py --sizes 512,1024 --tune 48

numpy must run without the environment's OpenBLAS overrides (FACTS.md: they slow it 1.6x), hence
the `env -u`. TESSEL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 compares one core with one core, which
is steadier on a loaded machine.
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


def gemm_tensors(n: int):
    A = ts.placeholder((n, n), "float32", name="A")
    B = ts.placeholder((n, n), "float32", name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    return [A, B, C]


def gemm_kernel(n: int, tuning_log=None):
    return ts.build(gemm_tensors(n), target="cpu", tuning_log=tuning_log)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def spread(times: list[float], repeat: int) -> float:
    """max / min - 1 of the per-block medians (blocks of `repeat` calls): the run-to-run swing."""
    meds = [statistics.median(times[i:i + repeat]) for i in range(0, len(times), repeat)]
    return max(meds) / min(meds) - 1


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
    ap.add_argument("--repeat", type=int, default=10, help="calls per timing block")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing blocks per library")
    ap.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                    help="also tune each size with the autotuner (ts.tune, this many trials) and time the tuned kernel")
    ap.add_argument("--log", default="cpu_gemm_tune.jsonl", help="tuning log for --tune (reused if it has records)")
    args = ap.parse_args(argv)
    from tessel.codegen.tvm_runtime import num_threads

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; tessel threads {num_threads()}; "
          f"OPENBLAS_CORETYPE {'set' if os.environ.get('OPENBLAS_CORETYPE') else 'unset'}")
    print(f"{'size':>6} {'tessel ms':>10} {'numpy ms':>10} {'tessel GFLOP/s':>15} {'numpy GFLOP/s':>14} "
          f"{'ratio':>7} {'ratio(min)':>9}  build s  max rel err  spread ts/np")
    print(f"(medians of {args.rounds} alternating blocks; ratio = numpy time / tessel time, above 1: tessel faster; "
          f"spread = max/min - 1 of the block medians)")
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
        tt, tn = compare(lambda k=kern, a=a, b=b, c=c: k(a, b, c), lambda a=a, b=b: a @ b, args.repeat, args.rounds)
        mt, mn = statistics.median(tt), statistics.median(tn)
        flop = 2.0 * n**3
        if args.tune:
            ts.tune(gemm_tensors(n), target="cpu", trials=args.tune, log=args.log)
            tuned = gemm_kernel(n, tuning_log=args.log)
            tu, tn2 = compare(lambda k=tuned, a=a, b=b, c=c: k(a, b, c), lambda a=a, b=b: a @ b, args.repeat,
                              args.rounds)
            mu, mn2 = statistics.median(tu), statistics.median(tn2)
            print(f"{n:>6} tuned: {mu * 1e3:.3f} ms vs numpy {mn2 * 1e3:.3f} ms, ratio {mn2 / mu:.2f} "
                  f"(min {min(tn2) / min(tu):.2f}), spread {spread(tu, args.repeat):.0%}/"
                  f"{spread(tn2, args.repeat):.0%}")
        print(f"{n:>6} {mt * 1e3:>10.3f} {mn * 1e3:>10.3f} {flop / mt / 1e9:>15.1f} {flop / mn / 1e9:>14.1f} "
              f"{mn / mt:>7.2f} {min(tn) / min(tt):>9.2f}  {build_s:7.2f}  {err:.1e}      "
              f"{spread(tt, args.repeat):.0%}/{spread(tn, args.repeat):.0%}")


if __name__ == "__main__":
    main()
