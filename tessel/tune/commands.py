"""The `tessel tune` and `tessel log` commands (registered into `tessel.cli`'s parser).

    tessel tune gemm:256x256x256 --trials 16 --log tune.jsonl      a DSL GEMM (M x N x K, float32)
    tessel tune model.onnx --target cpu --trials 64 --log tune.jsonl [--compare-random] [--plot curve.png]
    tessel log show tune.jsonl | best tune.jsonl | merge a.jsonl b.jsonl --into all.jsonl | prune tune.jsonl --keep 1

Building the parser imports nothing heavy; the tuner loads when a command runs.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
    >>> add_commands(sub, argparse.ArgumentParser(add_help=False))
    >>> p.parse_args(["log", "best", "t.jsonl"]).log_command
    'best'
"""

from __future__ import annotations

import argparse
import os
import re

from tessel.errors import TesselError


def add_commands(sub, parent) -> None:
    """Add `tune` and `log` to the subparsers `sub` (`parent` carries the shared --debug)."""
    p = sub.add_parser("tune", parents=[parent], help="tune kernels or a model and append to a tuning log",
                       description="Tune the kernels of a model (.onnx) or of a DSL GEMM (gemm:MxNxK) and append "
                                   "every measurement to a tuning log; shows a progress bar and writes a PNG of "
                                   "the tuning curve.")
    p.add_argument("model", help="an .onnx file, or gemm:MxNxK (float32 DSL GEMM)")
    p.add_argument("--target", default="cpu", help="target (default: cpu)")
    p.add_argument("--trials", type=int, default=64, help="measurements in all (default: 64)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds in all (stops between batches)")
    p.add_argument("--log", required=True, help="tuning log (JSON lines; appended, resumed)")
    p.add_argument("--batch", type=int, default=8, help="candidates per batch (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="xgb", choices=("xgb", "random"))
    p.add_argument("--compare-random", action="store_true",
                   help="also run random search with the same trials (into LOG.random.jsonl) for the plot")
    p.add_argument("--plot", default=None, help="tuning-curve PNG (default: LOG with .png)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...", help="shape of a dynamic input")
    p.add_argument("--early-stopping", type=int, default=None, metavar="K",
                   help="stop a workload when K trials in a row did not improve its best time")
    p.add_argument("--confirm", type=int, default=3, metavar="R",
                   help="measure the default and the fastest candidates again, R rounds each, and keep a "
                        "candidate only when it beats the default beyond the spread (default: 3; 0: off)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("log", parents=[parent], help="show, merge, prune, or pick the best records of tuning logs",
                       description="Read tuning logs: show every record, the best per workload, merge logs, prune.")
    logs = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    q = logs.add_parser("show", parents=[parent], help="every record, and the lines skipped")
    q.add_argument("log")
    q.set_defaults(func=cmd_log_show)
    q = logs.add_parser("best", parents=[parent], help="the best record of each workload and target")
    q.add_argument("log")
    q.set_defaults(func=cmd_log_best)
    q = logs.add_parser("merge", parents=[parent], help="append the records of logs into one (no duplicates)")
    q.add_argument("sources", nargs="+")
    q.add_argument("--into", required=True, help="destination log")
    q.set_defaults(func=cmd_log_merge)
    q = logs.add_parser("prune", parents=[parent], help="keep the K best records per workload (bad lines kept)")
    q.add_argument("log")
    q.add_argument("--keep", type=int, default=1)
    q.add_argument("--keep-errors", action="store_true", help="keep error records too")
    q.set_defaults(func=cmd_log_prune)


def _workload(spec: str, shapes: dict):
    m = re.fullmatch(r"gemm:(\d+)x(\d+)x(\d+)", spec.strip().lower())
    if m:
        import tessel as ts

        M, N, K = (int(x) for x in m.groups())
        A = ts.placeholder((M, K), name="A")
        B = ts.placeholder((K, N), name="B")
        k = ts.reduce_axis(K, name="k")
        C = ts.compute((M, N), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
        return [A, B, C], (lambda a, b: a.astype("float64") @ b)
    if os.path.isfile(spec) and spec.lower().endswith(".onnx"):
        from tessel.frontend.onnx import import_onnx

        return import_onnx(spec, shapes or None), None
    raise TesselError(f"tune: {spec!r} is neither an existing .onnx file nor gemm:MxNxK (e.g. gemm:256x256x256)")


def _shapes(specs) -> dict:
    out = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        try:
            out[name] = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            sep = ""
        if not sep or not name:
            raise TesselError(f"tune: --input-shape {spec!r}: expected NAME=D0,D1,... (e.g. x=1,3,224,224)")
    return out


def cmd_tune(args: argparse.Namespace) -> int:
    from tessel.tune.api import tune

    obj, ref = _workload(args.model, _shapes(args.input_shape))
    common = dict(target=args.target, trials=args.trials, time_budget=args.time_budget, batch=args.batch,
                  seed=args.seed, progress=not args.no_progress, reference=ref, early_stopping=args.early_stopping,
                  confirm=args.confirm)
    res = tune(obj, log=args.log, strategy=args.strategy, **common)
    print(res.summary())
    curves = {f"tuned ({args.strategy})": _total_curve(res)}
    if args.compare_random and args.strategy != "random":
        base = os.path.splitext(args.log)[0] + ".random.jsonl"
        rnd = tune(obj, log=base, strategy="random", **common)
        print(rnd.summary().replace("tuned", "random search:", 1))
        curves["random search"] = _total_curve(rnd)
    png = args.plot or os.path.splitext(args.log)[0] + ".png"
    try:
        from tessel.tune.plot import plot_curves

        print(f"tuning curve: {plot_curves(curves, png, title=f'tessel tune {args.model}')}")
    except TesselError as e:
        print(f"tessel tune: no plot: {e}")
    return 0 if all(w.best is not None for w in res.workloads) else 1


def _total_curve(res) -> list:
    """Best time per workload, summed, after each trial of the run (workloads tuned one after the other)."""
    out, done = [], 0.0
    for w in res.workloads:
        for v in w.curve:
            out.append(None if v is None else done + v)
        done += w.curve[-1] if w.curve and w.curve[-1] is not None else 0.0
    return out


def _fmt(r) -> str:
    res = f"{r.time * 1e3:.4f} ms" if r.ok else f"error: {r.error}"
    if r.verdict is not None:
        res += f"  (verdict: {r.verdict.get('kept')} kept; {r.verdict.get('reason', '')})"
    return f"{r.workload.desc or r.workload.key[:12]}  [{r.target.kind}:{r.target.arch}]  {r.template} {r.knobs}  {res}"


def cmd_log_show(args: argparse.Namespace) -> int:
    from tessel.tune.records import TuningLog

    contents = TuningLog(args.log).read()
    for r in contents.records:
        print(_fmt(r))
    for p in contents.problems:
        print(f"skipped {p}")
    print(f"{len(contents.records)} record(s), {len(contents.problems)} line(s) skipped")
    return 0


def cmd_log_best(args: argparse.Namespace) -> int:
    from tessel.tune.records import TuningLog, best_records

    contents = TuningLog(args.log).read()
    targets = {(r.target.kind, r.target.arch): r.target for r in contents.records}
    for t in targets.values():  # per target: its latest verdict, else its fastest record (what compile applies)
        for r in best_records(contents.records, t).values():
            print(_fmt(r))
    for p in contents.problems:
        print(f"skipped {p}")
    return 0


def cmd_log_merge(args: argparse.Namespace) -> int:
    from tessel.tune.records import merge

    added, problems = merge(args.sources, args.into)
    for p in problems:
        print(f"skipped {p}")
    print(f"merged {added} record(s) into {args.into}")
    return 0


def cmd_log_prune(args: argparse.Namespace) -> int:
    from tessel.tune.records import prune

    kept, removed = prune(args.log, keep=args.keep, drop_errors=not args.keep_errors)
    print(f"{args.log}: kept {kept} record(s), removed {removed}")
    return 0
