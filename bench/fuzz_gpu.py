"""A short GPU fuzzing campaign, and a check that the GPU oracle catches planted CUDA-printer bugs.

    python3 bench/fuzz_gpu.py campaign --seconds 170 --jobs 8 --seed 5 --target cuda
    python3 bench/fuzz_gpu.py mutants --cases 24

campaign: `tessel fuzz` with GPU execution on (`--gpu-run on`: an error where no GPU can run the
cases): every GPU case's final kernel is printed, built and run on the GPU and compared with the
interpreter (tessel/fuzz/gpu_oracle.py). Prints test cases/s (wall clock), how many cases ran on
the GPU, and the failures by signature with their replay commands; the campaign directory (--out,
default a fresh temporary one) keeps report.md and the reduced cases.

mutants: plants one bug at a time in the CUDA printer (tessel/codegen/cuda_printer.py), each an
operator swapped in the C++ text of floating-point arithmetic (the interpreter never sees it),
and runs --cases seeded GPU cases (fresh generator programs, sm_80 and sm_90a schedules, and a
few fixed elementwise programs that use every swapped operator) in this process with GPU
execution on. A mutant is detected when some case fails at stage gpu (diff or crash) while the
unmutated printer passes that case. Prints detected / planted.

Results are printed and written as JSON to --json (default: bench/fuzz_gpu_<mode>.json).
Needs a GPU, torch with CUDA and a CUDA compiler (NVRTC or nvcc).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def campaign(args) -> dict:
    from tessel.fuzz.campaign import Campaign

    out = args.out or tempfile.mkdtemp(prefix="tessel-fuzz-gpu-")
    t0 = time.monotonic()
    c = Campaign(out, target=args.target, seed=args.seed, jobs=args.jobs, gpu_run=args.gpu_run, timeout=args.timeout,
                 reduce_budget_s=args.reduce_s, coverage=not args.no_coverage)
    s = c.run(seconds=args.seconds)
    wall = time.monotonic() - t0
    print(f"\n{s['cases']} cases in {args.seconds:.0f} s of fuzzing ({s['cases_per_s']}/s; {wall:.0f} s wall with "
          f"start-up and reduction), jobs {args.jobs}, seed {args.seed}, target {args.target}")
    print(f"GPU execution {c.gpu_why}; cases run on the GPU and matching: {s['gpu_cases']}")
    print(f"rejected by kind: {json.dumps(c.stats['rejected_by'], sort_keys=True)}")
    print(f"unique failures: {len(c.failures)}")
    for sig, rec in sorted(c.failures.items(), key=lambda x: -x[1]["count"]):
        print(f"  {sig}  x{rec['count']}  reproduce: {rec['replay']}")
    print(f"report: {out}/report.md")
    return {"summary": s, "gpu_why": c.gpu_why, "rejected_by": c.stats["rejected_by"], "wall_s": round(wall, 1),
            "failures": {sig: {"count": r["count"], "replay": r["replay"]} for sig, r in c.failures.items()}}


# -- planted printer bugs ----------------------------------------------------------------------------

MUTANTS = {  # name -> (op printed wrongly, the op printed instead), float operands only
    "mul_as_add": ("mul", "add"), "sub_as_add": ("sub", "add"), "add_as_sub": ("add", "sub"),
    "div_as_mul": ("div", "mul"), "max_as_min": ("max", "min"), "lt_as_gt": ("lt", "gt"),
}

FIXED = [  # elementwise programs that use each swapped operator on float32 and float16
    "kernel ew{n}(A: {t}[8, 256] global, B: {t}[8, 256] global, C: {t}[8, 256] global) target cpu "
    "{{ for i in 8 {{ for j in 256 {{ C[i, j] = {e} }} }} }}".format(n=n, t=t, e=e)
    for n, (t, e) in enumerate([
        ("float32", "((A[i, j] * B[i, j]) - (A[i, j] / (B[i, j] + 9.0f32)))"),
        ("float32", "select((A[i, j] < B[i, j]), max(A[i, j], 0.5f32), (A[i, j] + B[i, j]))"),
        ("float16", "((A[i, j] * B[i, j]) + (A[i, j] - B[i, j]))"),
    ])]


def _cases(n: int) -> list:
    from tessel.fuzz.case import Case
    from tessel.fuzz.gen_gpu import gpu_program
    from tessel.fuzz.mutate_ir import default_schedule_cmds
    from tessel.fuzz.mutate_passes import base_pipeline
    from tessel.ir.text import parse_kernel

    out = []
    for i, text in enumerate(FIXED):
        for target in ("cuda:sm_80", "cuda:sm_90a"):
            k = parse_kernel(text)
            out.append(Case(k, target, default_schedule_cmds(k, target), base_pipeline(target), 100 + i))
    for seed in range(n):
        target = "cuda:sm_80" if seed % 2 else "cuda:sm_90a"
        k = gpu_program(random.Random(seed), target)
        out.append(Case(k, target, default_schedule_cmds(k, target), base_pipeline(target), seed))
    return out


def mutants(args) -> dict:
    os.environ["TESSEL_FUZZ_GPU"] = "1"
    from tessel.codegen import cuda_printer
    from tessel.fuzz import gpu_oracle
    from tessel.fuzz.oracles import run_case

    ok, why = gpu_oracle.gpu_status()
    if not ok:
        raise SystemExit(f"fuzz_gpu mutants: needs a GPU ({why})")
    cases = _cases(args.cases)
    t0 = time.monotonic()
    base = [run_case(c, determinism=False) for c in cases]
    good = [i for i, o in enumerate(base) if o.status == "ok" and o.gpu]
    print(f"{len(cases)} cases, {len(good)} ok on the GPU unmutated ({time.monotonic() - t0:.1f} s); "
          f"unmutated failures: {sorted({o.signature for o in base if o.status == 'fail'})}")
    original = cuda_printer._Printer.binary
    results = {}
    for name, (frm, to) in MUTANTS.items():
        def planted(self, e, frm=frm, to=to):
            if e.op == frm and e.a.dtype.startswith(("float", "bfloat")):
                e = dataclasses.replace(e, op=to)
            return original(self, e)

        cuda_printer._Printer.binary = planted
        t1 = time.monotonic()
        try:
            caught = None
            for i in good:
                o = run_case(cases[i], determinism=False)
                if o.status == "fail" and o.stage == "gpu":
                    caught = (i, o.signature)
                    break
        finally:
            cuda_printer._Printer.binary = original
            gpu_oracle.clear()
        results[name] = {"detected": caught is not None, "by": caught and caught[1], "case": caught and caught[0],
                         "seconds": round(time.monotonic() - t1, 1)}
        print(f"  {name:12s} {'detected' if caught else 'MISSED':8s} {results[name]['by'] or ''} "
              f"({results[name]['seconds']} s)")
    n = sum(r["detected"] for r in results.values())
    print(f"planted CUDA printer bugs detected at stage gpu: {n}/{len(results)}")
    return {"cases": len(cases), "ok_on_gpu": len(good), "mutants": results, "detected": n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("campaign")
    c.add_argument("--seconds", type=float, default=120.0)
    c.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1))
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--target", default="cuda")
    c.add_argument("--timeout", type=float, default=20.0)
    c.add_argument("--out", default=None, help="campaign directory (default: a fresh temporary one)")
    c.add_argument("--gpu-run", default="on", choices=("on", "off", "auto"), help="(default on: fail without a GPU)")
    c.add_argument("--reduce-s", type=float, default=15.0, help="reduction budget per new failure, seconds")
    c.add_argument("--no-coverage", action="store_true", help="no coverage tracing (where coverage.py is missing)")
    m = sub.add_parser("mutants")
    m.add_argument("--cases", type=int, default=24, help="generated GPU cases (beside the fixed ones)")
    for p in (c, m):
        p.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = campaign(args) if args.mode == "campaign" else mutants(args)
    path = args.json or str(Path(__file__).resolve().parent / f"fuzz_gpu_{args.mode}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
