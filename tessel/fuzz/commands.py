"""`tessel fuzz`: run a campaign, or replay one saved case.

    tessel fuzz --minutes N --out DIR [--seed S] [--target cpu|cuda|cuda:sm_80|cuda:sm_90a|graph|all] [--jobs J]
                [--gpu-run auto|on|off]
    tessel fuzz --replay DIR/failures/<sig>/reduced.txt [--gpu-run auto|on|off]

Example:
    >>> import argparse
    >>> sub = argparse.ArgumentParser().add_subparsers()
    >>> add_commands(sub, argparse.ArgumentParser(add_help=False))
"""

from __future__ import annotations

import argparse
import json
import sys

from tessel.fuzz.case import FuzzError


def add_commands(sub, debug) -> None:
    p = sub.add_parser("fuzz", parents=[debug], help="run a fuzzing campaign against the compiler",
                       description="Fuzz tessel's compiler: random programs and mutants, schedules and pass "
                                   "pipelines, judged by the interpreter, the verifier, the race checker and TVM; "
                                   "failures are deduplicated, reduced and saved with a replay command.")
    p.add_argument("--minutes", type=float, default=None, help="how long to fuzz (default: 1)")
    p.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, metavar="DIR", help="campaign directory (resumed when it exists)")
    p.add_argument("--seed", type=int, default=0, help="seed of the campaign (default: 0)")
    p.add_argument("--target", default="cpu", help="cpu (TVM), cuda, cuda:sm_80 or cuda:sm_90a (GPU schedules of "
                   "that architecture, run by the race-checking interpreter), graph (the graph passes), or all (each "
                   "case's target drawn from cpu, cuda:sm_90a, cuda:sm_80 and graph by energy; default: cpu)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--gpu-run", default="auto", choices=("auto", "on", "off"),
                   help="also build and run GPU cases on the GPU and compare with the interpreter (auto: where a "
                   "GPU and a CUDA compiler are present; on: an error when they are not; default: auto)")
    p.add_argument("--no-feedback", action="store_true", help="coverage does not steer (ablation)")
    p.add_argument("--no-pass-mutation", action="store_true", help="pipelines stay the target's (ablation)")
    p.add_argument("--no-coverage", action="store_true", help="no coverage tracing at all (faster, blind)")
    p.add_argument("--tvm-rate", type=float, default=None,
                   help="share of CPU cases also run through TVM (default 0.1; 0.3 with --target all)")
    p.add_argument("--timeout", type=float, default=20.0, help="time limit per test case, seconds")
    p.add_argument("--no-reduce", action="store_true", help="do not reduce new failures at the end")
    p.add_argument("--replay", default=None, metavar="CASE", help="run one saved case and print the verdict")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE in the campaign and its workers (e.g. to register extra passes)")
    p.set_defaults(func=_cmd_fuzz)


def _cmd_fuzz(args) -> int:
    if args.replay:
        return replay(args.replay, args.timeout, args.plugin, gpu_run=args.gpu_run)
    if not args.out:
        raise FuzzError("tessel fuzz: --out DIR is required (the corpus, failures and report go there)")
    from tessel.fuzz.campaign import Campaign

    c = Campaign(args.out, target=args.target, seed=args.seed, jobs=args.jobs, feedback=not args.no_feedback,
                 mutate_passes=not args.no_pass_mutation, coverage=not args.no_coverage, tvm_rate=args.tvm_rate,
                 timeout=args.timeout, reduce=not args.no_reduce, plugins=args.plugin, gpu_run=args.gpu_run)
    s = c.run(minutes=args.minutes, seconds=args.seconds)
    print(f"{s['cases']} test cases ({s['cases_per_s']}/s), coverage {s['arcs']} arcs / {s['lines']} lines, "
          f"corpus {s['corpus']}, unique failures {len(s['failures'])}; GPU execution {c.gpu_why}, "
          f"{s['gpu_cases']} cases ran on the GPU; report: {args.out}/report.md")
    for sig, rec in c.failures.items():
        print(f"  {sig}  x{rec['count']}  reproduce: {rec['replay']}")
    return 0


def replay(path: str, timeout: float = 60.0, plugins=(), gpu_run: str = "auto") -> int:
    """Run the case in `path` in a worker; print the verdict; 1 when it fails, else 0. A GPU case
    also runs on the GPU where one is (`gpu_run`, as in a campaign)."""
    from tessel.fuzz.worker import Worker, load_case, run_one

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise FuzzError(f"tessel fuzz --replay: cannot read {path}: {e}") from None
    from tessel.fuzz.worker import import_plugins

    import_plugins(plugins)
    case = load_case(text, where=path)
    from tessel.fuzz.gpu_oracle import resolve

    gpu, _ = resolve(gpu_run, [getattr(case, "target", "graph")])
    w = Worker(coverage=False, preload_tvm=getattr(case, "tvm", False) or getattr(case, "compile", False),
               plugins=plugins, gpu=gpu)
    try:
        res = run_one(w, case, timeout)
    finally:
        w.close()
    verdict = {k: res[k] for k in ("status", "kind", "stage", "signature")}
    print(json.dumps(verdict))
    if res["status"] != "ok":
        print(res["message"], file=sys.stderr)
    return 1 if res["status"] == "fail" else 0


__all__ = ["add_commands", "replay"]
