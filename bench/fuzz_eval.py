"""Evaluate tessel's fuzzer: throughput, coverage overhead, ablation, and bug-finding power.

    python bench/fuzz_eval.py throughput --seconds 60 --jobs 2
    python bench/fuzz_eval.py ablation --seconds 60 --jobs 2
    python bench/fuzz_eval.py bugs --sites 60 --seconds 30 --jobs 1 --parallel 2

throughput: a campaign's test cases per second (with the CPU oracles: interpreter before/after,
verifier after each pass, race checker, TVM on a share of cases), with and without coverage
tracing, and the in-process cost of one case with and without coverage (the overhead). On a shared
machine the wall-clock rate is what the other jobs leave; cases per CPU second (campaign process
and workers, start-up excluded) is the figure that does not depend on them.

ablation: equal-time campaigns: coverage feedback on (full) vs off, and IR + pass mutation vs IR
mutation only; coverage reached (arcs of tessel's compiler code).

bugs: plants one bug at a time by mechanical mutation of tessel's source (tessel/fuzz/mutant.py:
flipped comparisons, swapped operators, off-by-one constants, dropped statements) in four areas:
tensor-IR and graph passes (+ lowering), CPU schedules and primitives, GPU templates, the CPU code
generator; --sites mutants per area, on lines the reference suite executes (bench/fuzz_judge.py).
A mutant is kept when it miscompiles at least one suite program, judged against a reference the
mutated code cannot touch (numpy op references; the interpreter on the unscheduled kernel).
Detection: the cases a campaign kept (corpus, first failure cases) of the directories given with
--corpus are replayed under each kept mutant, those that execute the mutated line; detected when
one fails with a signature its unmutated run did not have. Reported: the share detected, by area.

    tessel fuzz --minutes 10 --jobs 2 --out /tmp/fz10
    python bench/fuzz_eval.py bugs --sites 60 --corpus /tmp/fz10

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
    """CPU ms per case in this process (process time, so other jobs on the machine do not count),
    with and without the coverage probe, on generated cases (TVM on a tenth, as in a campaign);
    the oracles' schedule and verification caches are emptied before each pass (TVM modules, built
    by the warm-up pass, stay cached)."""
    from tessel.fuzz.campaign import Campaign
    from tessel.fuzz.coverage import Probe
    from tessel.fuzz.oracles import run_case

    os.environ["TESSEL_CACHE_DIR"] = ""
    c = Campaign(tempfile.mkdtemp(), seed=1, quiet=True, tvm_rate=0.1)
    cases = [c.fresh() for _ in range(n)]
    for x in cases:
        run_case(x)
    from tessel.fuzz.oracles import SCHEDULED, VERIFIED

    out = {}
    for label, probe in (("plain", None), ("coverage", Probe())):
        for c in (SCHEDULED, VERIFIED):  # (the same cases again: no schedule may come from the run before;
            c.items.clear()  # TVM modules stay built, as in earlier measurements: LLVM is not what is measured)
        t = time.process_time()
        for x in cases:
            if probe:
                probe.start()
            run_case(x, probe, determinism=False)
            if probe:
                probe.stop()
        out[label + "_cpu_ms"] = round((time.process_time() - t) / n * 1000, 2)
    out["overhead"] = round(out["coverage_cpu_ms"] / out["plain_cpu_ms"], 2)
    return out


def throughput(args) -> dict:
    full = campaign(args.seconds, args.jobs, args.seed)
    blind = campaign(args.seconds, args.jobs, args.seed, coverage=False, feedback=False)
    return {"jobs": args.jobs, "seconds": args.seconds, "with_coverage": full, "without_coverage": blind,
            "per_core_with_coverage": round(full["cases_per_s"] / args.jobs, 2),
            "per_core_without_coverage": round(blind["cases_per_s"] / args.jobs, 2),
            # load-independent: cases per CPU second of the campaign process and its workers together
            "per_cpu_s_with_coverage": full.get("cases_per_cpu_s"),
            "per_cpu_s_without_coverage": blind.get("cases_per_cpu_s"),
            "in_process": in_process_cost(), "load_average": os.getloadavg()}


def ablation(args) -> dict:
    out = {}
    for name, kw in (("full", {}), ("no_feedback", {"feedback": False}), ("ir_only", {"mutate_passes": False})):
        out[name] = campaign(args.seconds, args.jobs, args.seed, **kw)
        print(name, out[name].get("arcs"), out[name].get("cases"), flush=True)
    out["load_average"] = os.getloadavg()
    return out


# -- bug-finding power -------------------------------------------------------------------------


def bugs(args) -> dict:
    """Plant mutants (tessel/fuzz/mutant.py) in passes, schedules, GPU templates and the CPU code
    generator; keep those that miscompile a program of the reference suite (bench/fuzz_judge.py);
    replay the corpus and failure cases of campaign directories (`--corpus DIR ...`, e.g. the
    10-minute `tessel fuzz --minutes 10 --jobs 2` campaign) under each kept mutant, on the cases
    that execute its line; detected: a case fails with a signature its unmutated run did not have."""
    import fuzz_judge as J
    from concurrent.futures import ThreadPoolExecutor

    from tessel.fuzz.mutant import sites

    t0 = time.monotonic()
    import tessel  # noqa: F401 - imported once here, so every forked child starts warm
    import tvm  # noqa: F401

    modules = [m for ms in J.AREAS.values() for m in ms]
    from tessel.fuzz.mutant import freeze

    freeze(modules)  # (other people's edits during the run change neither the sites nor the mutants)
    names = J.programs(args.judge_n, args.judge_n, extra=args.extra, cpu=args.cpu_programs)
    base = J.program_lines(names, modules)
    if "error" in base or "timeout" in base:
        raise SystemExit(f"the reference suite did not run: {base}")
    bad = {n: r["verdict"] for n, r in base.items() if r["verdict"] is not None}
    names = [n for n in names if n not in bad]  # (a program the unmutated compiler fails judges nothing)
    # --extra: the extra GPU programs judge mutants too, but sites are drawn from the lines the
    # base suite executes (so the sample is the one the base suite draws)
    extra = [n for n in names if n.startswith("gpu.x.")]
    names = [n for n in names if n not in extra]
    if args.pool_extra:  # --pool-extra: the extra GPU programs also decide which lines sites are drawn from
        names, extra = names + extra, []
    print(f"reference suite: {len(names)} programs (+{len(extra)} extra judges; {len(bad)} dropped: {bad})",
          flush=True)
    chosen, pool_sizes = [], {}
    quota = _quotas(args.area_sites)
    for area, mods in J.AREAS.items():
        if args.areas and area not in args.areas:
            continue
        pool = []
        for m in mods:
            rel = J.relpath(m)
            top = J.module_level_lines(m)
            for s in sites(m):
                covering = [n for n in names if s.line in base[n]["lines"].get(rel, ())]
                more = [n for n in extra if s.line in base[n]["lines"].get(rel, ())]
                if s.line in top:
                    covering, more = list(names), list(extra)
                if covering:
                    random.Random(f"{args.seed}:{s.name}").shuffle(covering)
                    pool.append((area, s, covering[:args.judge_max] + sorted(more)[:args.judge_max]))
        pool_sizes[area] = len(pool)
        # one generator per area, so a change of one area's code leaves the other areas' samples alone
        area_rng = random.Random(f"{args.seed}:{area}")
        chosen += area_rng.sample(pool, min(quota.get(area, args.sites), len(pool)))
    print(f"mutation sites on executed lines: {pool_sizes}; judging {len(chosen)}", flush=True)

    def judge_one(item):
        area, s, covering = item
        return J.judge_mutant(s, covering, 2 * args.judge_max, timeout=args.judge_timeout)

    kept, verdict_counts = [], {}
    earlier = _earlier_verdicts(args.kept) if args.kept else None
    if earlier is not None:  # --kept: the verdicts of an earlier run on the same sample (same source line)
        judged = [earlier.get((s.module, s.index, s.text), {"unjudged": True}) for _a, s, _c in chosen]
        print(f"verdicts from {args.kept}: {sum('unjudged' not in r for r in judged)} of {len(chosen)} sites "
              f"(the others, whose source line changed, are judged again)", flush=True)
        todo = [i for i, r in enumerate(judged) if "unjudged" in r]
        with ThreadPoolExecutor(args.parallel) as ex:
            for i, r in zip(todo, ex.map(judge_one, [chosen[i] for i in todo])):
                judged[i] = r
    else:
        with ThreadPoolExecutor(args.parallel) as ex:
            judged = list(ex.map(judge_one, chosen))
    verdicts = []
    for (area, s, _covering), r in zip(chosen, judged):
        verdicts.append({"module": s.module, "index": s.index, "text": s.text, "result": r})
        v = ("miscompiles" if r.get("miscompiled") else "timeout" if "timeout" in r else
             "died" if "died" in r else "crashes only" if r.get("crashed") else "no effect")
        verdict_counts.setdefault(area, {}).setdefault(v, 0)
        verdict_counts[area][v] += 1
        if r.get("miscompiled"):
            kept.append((area, s, r["miscompiled"]))
            if r["miscompiled"].startswith("gpu.x."):
                verdict_counts[area]["kept only by an extra program"] = \
                    verdict_counts[area].get("kept only by an extra program", 0) + 1
        print(f"  {area:9s} {s.name:42s} {s.kind:7s} {v:12s} {s.text[:50]}", flush=True)
    if args.out_path:  # the verdicts first, so a replay that fails leaves them for --kept
        with open(args.out_path + ".verdicts.json", "w") as f:
            json.dump({"judged_sites": verdicts}, f)
    print(f"{len(kept)} mutants miscompile ({time.monotonic() - t0:.0f} s); replaying "
          f"{', '.join(args.corpus) or 'no corpus'} ...", flush=True)
    results = []
    if args.corpus:
        cases = J.load_cases(args.corpus)
        cbase = _case_lines(J, cases, modules, args.case_lines)
        if "error" in cbase or "timeout" in cbase:
            raise SystemExit(f"the corpus replay did not run: {cbase}")
        died = [lb for lb, _ in cases if cbase.get(lb, {}).get("status", "died") == "died"]
        if died:  # a case that kills its process unmutated can detect nothing (and would end the replay)
            print(f"left out of the replay: {len(died)} cases whose unmutated run killed the process: "
                  f"{', '.join(died[:4])}", flush=True)
            cases = [(lb, t) for lb, t in cases if lb not in set(died)]

        def replay_one(item):
            area, s, _ = item
            rel = J.relpath(s.module)
            top = s.line in J.module_level_lines(s.module)
            mine = [(lb, t) for lb, t in cases if top or s.line in cbase[lb]["lines"].get(rel, ())]
            return len(mine), J.replay_mutant(s, mine, cbase, timeout=args.replay_timeout)

        with ThreadPoolExecutor(args.parallel) as ex:
            for (area, s, prog), (n, r) in zip(kept, ex.map(replay_one, kept)):
                results.append({"area": area, "site": s.name, "kind": s.kind, "line": s.line, "text": s.text,
                                "miscompiles": prog, "kept_by_extra": prog.startswith("gpu.x."),
                                "cases_executing_line": n, "detected": r.get("detected", False),
                                "signature": r.get("signature", ""), "by_case": r.get("case", ""),
                                "replayed": r.get("ran"), "error": r.get("error", "")})
                print(f"  {area:9s} {s.name:42s} {'DETECTED' if r.get('detected') else 'missed  '} "
                      f"({n} cases run its line) {r.get('signature', '')[:70]}", flush=True)
    by_area = {}
    for r in results:
        a = by_area.setdefault(r["area"], {"kept": 0, "detected": 0, "kept_by_base": 0, "detected_of_base": 0})
        a["kept"] += 1
        a["detected"] += r["detected"]
        if not r["kept_by_extra"]:
            a["kept_by_base"] += 1
            a["detected_of_base"] += r["detected"]
    detected = sum(r["detected"] for r in results)
    base_kept = [r for r in results if not r["kept_by_extra"]]
    return {"suite_programs": len(names), "sites_on_executed_lines": pool_sizes, "judged": len(chosen),
            "verdicts": verdict_counts, "kept": len(kept), "corpus": args.corpus,
            "corpus_cases": len(J.load_cases(args.corpus)) if args.corpus else 0,
            "detected": detected, "share": round(detected / max(1, len(results)), 3) if results else None,
            "base_suite": {"kept": len(base_kept), "detected": sum(r["detected"] for r in base_kept)},
            "by_area": by_area, "mutants": results, "judged_sites": verdicts, "elapsed_s": round(time.monotonic() - t0),
            "load_average": os.getloadavg()}


def _case_lines(J, cases, modules, path):
    """The corpus cases' unmutated runs (J.case_lines), saved at `path` (--case-lines) and read back
    by a later run on the same corpus, labels and texts unchanged (an evaluation split by --areas
    replays the corpus once)."""
    import hashlib

    key = hashlib.sha256(json.dumps([cases, sorted(modules)]).encode()).hexdigest()
    if path and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            return saved["lines"]
    out = J.case_lines(cases, modules)
    if path and "error" not in out and "timeout" not in out:
        with open(path, "w") as f:
            json.dump({"key": key, "lines": out}, f)
    return out


def _quotas(spec: str) -> dict:
    """--area-sites "schedules=120,templates=90" -> {"schedules": 120, "templates": 90}.

    >>> _quotas("schedules=120, templates=90")
    {'schedules': 120, 'templates': 90}
    """
    out = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        area, _, n = part.partition("=")
        if not n.strip().isdigit():
            raise SystemExit(f"--area-sites: expected AREA=N, got {part!r}")
        out[area.strip()] = int(n)
    return out


def _earlier_verdicts(path: str) -> dict:
    """(module, index, source line) -> the judge's result, from an earlier `bugs` JSON (--kept)."""
    with open(path) as f:
        res = json.load(f)
    return {(v["module"], v["index"], v["text"]): v["result"] for v in res.get("judged_sites", [])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("throughput", "ablation", "bugs"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sites", type=int, default=60, help="bugs: mutants judged per area")
    ap.add_argument("--judge-n", type=int, default=24, help="bugs: random graphs and DSL kernels in the suite")
    ap.add_argument("--judge-max", type=int, default=8, help="bugs: suite programs run per mutant at most")
    ap.add_argument("--judge-timeout", type=float, default=90)
    ap.add_argument("--replay-timeout", type=float, default=300)
    ap.add_argument("--corpus", nargs="*", default=[], help="bugs: campaign directories whose cases are replayed")
    ap.add_argument("--extra", action="store_true",
                    help="bugs: the extra GPU programs (tessel/fuzz/suite.py EXTRA_GPU_PROGRAMS) judge mutants too")
    ap.add_argument("--cpu-programs", action="store_true",
                    help="bugs: the CPU template programs (tessel/fuzz/suite.py CPU_PROGRAMS) join the reference suite")
    ap.add_argument("--pool-extra", action="store_true",
                    help="bugs: sites are drawn from the lines the extra GPU programs execute too")
    ap.add_argument("--area-sites", default="", help="bugs: per-area quotas, e.g. schedules=120,templates=90 "
                                                      "(the other areas: --sites)")
    ap.add_argument("--areas", nargs="*", default=[],
                    help="bugs: only these areas (passes schedules templates codegen)")
    ap.add_argument("--case-lines", default=None,
                    help="bugs: save the corpus cases' unmutated runs here, or reuse them (same corpus)")
    ap.add_argument("--kept", default=None,
                    help="bugs: reuse the judge's verdicts of an earlier run's JSON (sites whose line is unchanged)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.out_path = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), f"fuzz_eval_{args.mode}.json")
    res = {"throughput": throughput, "ablation": ablation, "bugs": bugs}[args.mode](args)
    with open(args.out_path, "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(json.dumps({k: v for k, v in res.items() if k != "mutants"}, indent=1, default=str))


if __name__ == "__main__":
    main()
