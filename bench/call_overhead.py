"""Per-call host overhead of a compiled model: a chain of N tiny elementwise ops compiled one kernel
per op (`max_group_ops=1`), timed by the calling thread's CPU time on one thread.

Prints the time of a whole call (`cm(x)`), the time of the same packed kernel calls made back to back
with nothing else (the floor: TVM's FFI call and the tiny kernels themselves), both per kernel, and the
per-kernel time of the checked path (every argument checked, what a first call and a profile run).

    python bench/call_overhead.py                 # 50 kernels of 8 elements
    python bench/call_overhead.py --kernels 200 --size 64
"""

from __future__ import annotations

import argparse
import os
import time
import timeit

os.environ.setdefault("TESSEL_NUM_THREADS", "1")  # before TVM's pool starts

import numpy as np  # noqa: E402


def chain(n: int, size: int):
    """x -> tanh -> sigmoid -> tanh -> relu -> sigmoid -> ... (n ops) as a graph builder."""
    from tessel.frontend.builder import GraphBuilder

    b = GraphBuilder("chain")
    y = b.input("x", (size,))
    ops = ("tanh", "sigmoid", "tanh", "relu", "sigmoid")
    for k in range(n):
        y = getattr(b, ops[k % len(ops)])(y)
    b.output(y)
    return b


def per_call(stmt, namespace: dict, number: int = 2000, repeat: int = 7) -> float:
    """Seconds per call: the best of `repeat` blocks of `number` calls, by thread CPU time."""
    return min(timeit.repeat(stmt, globals=namespace, number=number, repeat=repeat, timer=time.thread_time)) / number


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", type=int, default=50)
    ap.add_argument("--size", type=int, default=8, help="elements per tensor")
    args = ap.parse_args(argv)
    import tessel as ts

    cm = ts.compile(chain(args.kernels, args.size), target="cpu", max_group_ops=1)
    prog = cm._current
    n = len(prog.steps)
    x = np.random.default_rng().standard_normal(args.size).astype(np.float32)
    err = float(np.abs(cm(x) - cm.run_reference(x)).max())  # the first call binds the steps
    bound = prog._bound
    views = {k: runner.view(pos, x if k == 0 else np.empty(args.size, np.float32))
             for k, (runner, pos) in bound._makers.items()}

    def packed_calls_only():
        for function, fixed, changing in bound._calls:
            if changing:
                fixed = list(fixed)
                for pos, k in changing:
                    fixed[pos] = views[k]
            function(*fixed)

    ns = {"cm": cm, "x": x, "packed_calls_only": packed_calls_only}
    whole = per_call("cm(x)", ns)
    floor = per_call("packed_calls_only()", ns)
    prog._bound = False  # the checked path
    checked = per_call("cm(x)", ns, number=200)
    prog._bound = bound
    print(f"{n} steps ({len(cm.kernels)} distinct kernels) of {args.size} float32 elements, one thread, thread CPU "
          f"time; max error against the numpy reference {err:.1e}; load average {os.getloadavg()[0]:.1f}")
    print(f"whole call          {whole * 1e6:8.2f} us  = {whole / n * 1e6:6.3f} us per kernel")
    print(f"packed calls alone  {floor * 1e6:8.2f} us  = {floor / n * 1e6:6.3f} us per kernel")
    print(f"host overhead       {(whole - floor) * 1e6:8.2f} us per call (inputs checked, outputs allocated, views)")
    print(f"checked path        {checked * 1e6:8.2f} us  = {checked / n * 1e6:6.3f} us per kernel "
          f"(a first call, a profile)")


if __name__ == "__main__":
    main()
