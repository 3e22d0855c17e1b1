"""Tune the GPU GEMM template on the H200: default knobs vs tuned vs torch.matmul, fp16 in, f32 out.

    python bench/tuner_gpu.py --shapes 1024,2048 --trials 24

Each shape is tuned into a log (the tuner measures on the GPU, CUDA events, reference-checked
against numpy), then the default and the tuned kernels are built and timed next to torch.matmul
(fp16 in and out, cuBLAS) in this process with the same event timer (median of 100 calls).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1024,2048")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--out", default="/tmp/tessel_tuner_gpu")
    args = ap.parse_args()

    import torch

    import tessel as ts
    from tessel.tune.measure import gpu_time_calls

    os.makedirs(args.out, exist_ok=True)
    for n in (int(s) for s in args.shapes.split(",")):
        A = ts.placeholder((n, n), "float16", name="A")
        B = ts.placeholder((n, n), "float16", name="B")
        k = ts.reduce_axis(n, name="k")
        C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                       name="C")
        log = os.path.join(args.out, f"gemm{n}.jsonl")
        start = time.monotonic()
        res = ts.tune([A, B, C], target="cuda", trials=args.trials, batch=args.batch, log=log,
                      reference=lambda a, b: a.astype(np.float32) @ b.astype(np.float32))
        print(res.summary())
        print(f"tuning {n}^3 took {time.monotonic() - start:.1f} s")
        default = ts.build([A, B, C], target="cuda")
        tuned = ts.build([A, B, C], target="cuda", tuning_log=log)
        sets = [[torch.randn(n, n, device="cuda", dtype=torch.float16) for _ in range(2)]
                + [torch.empty(n, n, device="cuda", dtype=torch.float32)] for _ in range(3)]
        tuned(*sets[0])
        torch.cuda.synchronize()
        want = sets[0][0].float() @ sets[0][1].float()
        err = float((sets[0][2] - want).abs().max() / want.abs().max())
        t_def = float(np.median(gpu_time_calls(default, sets, repeats=100)))
        t_tun = float(np.median(gpu_time_calls(tuned, sets, repeats=100)))
        t_torch = float(np.median(gpu_time_calls(lambda a, b, c: a @ b, sets, repeats=100)))
        fl = 2 * n ** 3 / 1e12
        print(f"GEMM {n}^3 fp16->f32 on {torch.cuda.get_device_name()}: default {t_def * 1e3:.4f} ms "
              f"({fl / t_def:.1f} TFLOP/s), tuned {t_tun * 1e3:.4f} ms ({fl / t_tun:.1f}), torch.matmul fp16 "
              f"{t_torch * 1e3:.4f} ms ({fl / t_torch:.1f}); torch/tuned {t_torch / t_tun:.2f}, default/tuned "
              f"{t_def / t_tun:.2f}; tuned rel. error {err:.2e}")


if __name__ == "__main__":
    main()
