"""Evaluate tessel's fuzzer: throughput, coverage overhead, ablation, and bug-finding power.

    python bench/fuzz_eval.py throughput --seconds 60 --jobs 2
    python bench/fuzz_eval.py ablation --seconds 60 --jobs 2
    python bench/fuzz_eval.py bugs --sites 60 --seconds 30 --jobs 1 --parallel 2

throughput: a campaign's test cases per second (with the CPU oracles: interpreter before/after,
verifier after each pass, race checker, TVM on a share of cases), with and without coverage
tracing, and the in-process cost of one case with and without coverage (the overhead).

ablation: equal-time campaigns: coverage feedback on (full) vs off, and IR + pass mutation vs IR
mutation only; coverage reached (arcs of tessel's compiler code).

bugs: plants one bug at a time by mechanical mutation of tessel's source (tessel/fuzz/mutant.py:
flipped comparisons, swapped operators, off-by-one constants, dropped statements) in the passes,
schedules, templates and the CPU code generator, on lines that a reference suite executes. A
mutant is kept when it miscompiles at least one program of that suite, judged against an
independent reference: random op graphs compiled by `tessel.compile` (graph passes, fusion,
lowering, default schedules, CPU pipeline, TVM) against the op registry's numpy references. Each
kept mutant then gets a campaign of --seconds;
it is detected when the campaign reports a failure signature that the same campaign without the
mutant does not. Reported: the share detected.

Results are printed and written as JSON to --out (default bench/fuzz_eval_<mode>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

MODULES = ("tessel.passes.simplify", "tessel.passes.dce", "tessel.passes.hoist", "tessel.passes.unroll",
           "tessel.schedules.loops", "tessel.schedules.caching", "tessel.schedules.location",
           "tessel.schedules.reduction", "tessel.schedules.generic", "tessel.codegen.tvm_tir")


def campaign(seconds, jobs, seed=0, env=None, **kw) -> dict:
    """Run one campaign in a fresh directory (in a child process when `env` is given)."""
    d = tempfile.mkdtemp(prefix="fuzz_eval_")
    if env is None:
        from tessel.fuzz.campaign import Campaign

        c = Campaign(d, seed=seed, jobs=jobs, quiet=True, reduce=False, **kw)
        s = c.run(seconds=seconds)
        return {**s, "stats": {k: c.stats[k] for k in ("ok", "rejected", "rejected_before_run", "fail")}}
    code = ("import json,sys; from tessel.fuzz.campaign import Campaign; "
            f"c=Campaign({d!r}, seed={seed}, jobs={jobs}, quiet=True, reduce=False, **{kw!r}); "
            f"s=c.run(seconds={seconds}); print(json.dumps(s))")
    try:
        r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=seconds * 3 + 240)
    except subprocess.TimeoutExpired:
        return {"error": "campaign timed out"}
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def in_process_cost(n=60) -> dict:
    """ms per case in this process, with and without the coverage probe, on generated cases."""
    from tessel.fuzz.campaign import Campaign
    from tessel.fuzz.coverage import Probe
    from tessel.fuzz.oracles import run_case

    os.environ["TESSEL_CACHE_DIR"] = ""
    c = Campaign(tempfile.mkdtemp(), seed=1, quiet=True, tvm_rate=0.0)
    cases = [c.fresh() for _ in range(n)]
    for x in cases:
        run_case(x)
    out = {}
    for label, probe in (("plain", None), ("coverage", Probe())):
        t = time.perf_counter()
        for x in cases:
            if probe:
                probe.start()
            run_case(x, probe, determinism=False)
            if probe:
                probe.stop()
        out[label + "_ms"] = round((time.perf_counter() - t) / n * 1000, 2)
    out["overhead"] = round(out["coverage_ms"] / out["plain_ms"], 2)
    return out


def throughput(args) -> dict:
    full = campaign(args.seconds, args.jobs, args.seed)
    blind = campaign(args.seconds, args.jobs, args.seed, coverage=False, feedback=False)
    return {"jobs": args.jobs, "seconds": args.seconds, "with_coverage": full, "without_coverage": blind,
            "per_core_with_coverage": round(full["cases_per_s"] / args.jobs, 2),
            "per_core_without_coverage": round(blind["cases_per_s"] / args.jobs, 2),
            "in_process": in_process_cost(), "load_average": os.getloadavg()}


def ablation(args) -> dict:
    out = {}
    for name, kw in (("full", {}), ("no_feedback", {"feedback": False}), ("ir_only", {"mutate_passes": False})):
        out[name] = campaign(args.seconds, args.jobs, args.seed, **kw)
        print(name, out[name].get("arcs"), out[name].get("cases"), flush=True)
    out["load_average"] = os.getloadavg()
    return out


# -- bug-finding power -------------------------------------------------------------------------

JUDGE = r"""
import json, os, sys, random, warnings
warnings.simplefilter("ignore")
os.environ["TESSEL_CACHE_DIR"] = ""
import numpy as np
result = {"miscompiled": 0, "crashed": 0, "programs": 0}
cov = None
if os.environ.get("JUDGE_COVERAGE"):
    import coverage
    cov = coverage.Coverage(data_file=None, config_file=False, include=[os.environ["JUDGE_COVERAGE"] + "/*"])
    cov.start()
try:
    import tessel.fuzz.mutant  # applies TESSEL_FUZZ_MUTANT
    import tessel
    from tessel.frontend.reference import run_graph
    from tessel.fuzz.gen import random_graph
except Exception as e:
    print(json.dumps({"import_error": repr(e)})); sys.exit(0)
for seed in range(int(os.environ.get("JUDGE_N", "25"))):
    try:
        g = random_graph(random.Random(1000 + seed))
    except Exception:
        continue
    if not g.nodes:
        continue
    result["programs"] += 1
    rng = np.random.default_rng(seed)
    ins = [rng.standard_normal(g.values[v].shape).astype("float32") for v in g.inputs]
    want = run_graph(g, ins)
    try:  # the whole compiler: graph passes, fusion, lowering, schedules, pipeline, TVM
        got = tessel.compile(random_graph(random.Random(1000 + seed)), ins, target="cpu")(*ins)
        got = got if isinstance(got, (list, tuple)) else [got]
        if any(not np.allclose(np.asarray(a), w, rtol=1e-3, atol=1e-4, equal_nan=True) for a, w in zip(got, want)):
            result["miscompiled"] += 1
    except Exception:
        result["crashed"] += 1
if cov is not None:
    cov.stop()
    data = cov.get_data()
    result["lines"] = {f: sorted(data.lines(f) or []) for f in data.measured_files()}
print(json.dumps(result))
"""


def judge(env: dict, timeout=90) -> dict:
    try:
        r = subprocess.run([sys.executable, "-c", JUDGE], env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}  # a mutant that hangs the compiler: not a miscompilation
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"died": r.returncode, "stderr": r.stderr[-500:]}


def bugs(args) -> dict:
    from tessel.fuzz.coverage import tessel_root
    from tessel.fuzz.mutant import sites

    root = tessel_root()
    base = judge({"JUDGE_COVERAGE": root, "JUDGE_N": str(args.judge_n)})
    assert base.get("miscompiled") == 0, f"the unmutated compiler fails its reference suite: {base}"
    covered = {os.path.relpath(f, root): set(v) for f, v in base["lines"].items()}
    pool = []
    for m in MODULES:
        rel = m.replace("tessel.", "", 1).replace(".", "/") + ".py"
        pool += [s for s in sites(m) if s.line in covered.get(rel, ())]
    rng = random.Random(args.seed)
    chosen = rng.sample(pool, min(args.sites, len(pool)))
    print(f"{len(pool)} mutation sites on executed lines; judging {len(chosen)}", flush=True)
    from concurrent.futures import ThreadPoolExecutor

    kept = []
    with ThreadPoolExecutor(args.parallel) as ex:  # each judge is its own process
        verdicts = ex.map(lambda s: judge({"TESSEL_FUZZ_MUTANT": s.name, "JUDGE_N": str(args.judge_n)}), chosen)
        for s, r in zip(chosen, verdicts):
            if r.get("miscompiled", 0) > 0:
                kept.append(s)
            print(f"  {s.name:34s} {s.kind:8s} {r.get('miscompiled', '-')}/{r.get('programs', '-')} wrong "
                  f"{'KEPT' if r.get('miscompiled', 0) else ''}  {s.text[:60]}", flush=True)
    print(f"{len(kept)} mutants miscompile; baseline campaign ...", flush=True)
    kw = {"tvm_rate": args.tvm_rate, "plugins": ["tessel.fuzz.mutant"]}
    baseline = campaign(args.seconds, args.jobs, args.seed, env={"TESSEL_FUZZ_MUTANT": ""}, **kw)
    known = set(baseline.get("failures", {}))
    results = []
    for i in range(0, len(kept), args.parallel):
        batch = kept[i:i + args.parallel]
        with ThreadPoolExecutor(len(batch)) as ex:  # a few campaigns side by side, each its own process
            outs = list(ex.map(lambda s: campaign(args.seconds, args.jobs, args.seed,
                                                  env={"TESSEL_FUZZ_MUTANT": s.name}, **kw), batch))
        for s, out in zip(batch, outs):
            new = sorted(set(out.get("failures", {})) - known)
            results.append({"site": s.name, "kind": s.kind, "line": s.line, "text": s.text, "detected": bool(new),
                            "signatures": new[:5], "cases": out.get("cases"), "error": out.get("error", "")[:300]})
            print(f"  {s.name:34s} {'DETECTED' if new else 'missed  '} {new[:2]}", flush=True)
    detected = sum(r["detected"] for r in results)
    return {"sites_on_executed_lines": len(pool), "judged": len(chosen), "kept": len(kept), "detected": detected,
            "share": round(detected / max(1, len(kept)), 3), "campaign_seconds": args.seconds, "jobs": args.jobs,
            "baseline_failures": sorted(known), "mutants": results, "load_average": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("throughput", "ablation", "bugs"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sites", type=int, default=60)
    ap.add_argument("--judge-n", type=int, default=25)
    ap.add_argument("--tvm-rate", type=float, default=0.2)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = {"throughput": throughput, "ablation": ablation, "bugs": bugs}[args.mode](args)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), f"fuzz_eval_{args.mode}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(json.dumps({k: v for k, v in res.items() if k != "mutants"}, indent=1, default=str))


if __name__ == "__main__":
    main()
