"""Campaigns: generate, mutate, run in workers, keep what reaches new coverage, record failures.

`Campaign(out_dir, target, seed, jobs).run(minutes)` is what `tessel fuzz` runs. Each test case is
a seed from the corpus mutated (program / schedule with tessel/fuzz/mutate_ir.py, pipeline with
mutate_passes.py; seeds are (program, pipeline) pairs that evolve together) or, now and then, a
freshly generated program with the target's default schedule and real pipeline. A mutant the
verifier rejects is counted and not run. The others run in worker processes under coverage; a
case that reaches new coverage joins the corpus, minus the passes of its pipeline that reached
nothing new. Failures are deduplicated by signature; the first case of each is kept, and at the end
each new one is reduced (tessel/fuzz/reduce.py) and saved with its replay command.

The directory (never lost: every file is written atomically; a corrupt corpus file is reported and
skipped, never deleted; a second run on the same directory resumes from it):

    corpus/<key>.txt              cases (IR text form + JSON headers)
    failures/<sig>/case.txt       first case of a failure; reduced.txt: the reduced one;
    failures/<sig>/failure.json   signature, message, count, replay command
    state.json                    counters and the coverage-over-time history
    report.md, coverage.png       the report (written at the end and every minute)

Example (`c.run(minutes=1)` would fuzz for a minute; tests/fuzz/test_campaign.py runs one):
    >>> import tempfile
    >>> c = Campaign(tempfile.mkdtemp(), seed=1, jobs=1, quiet=True)
    >>> c.next_case().target
    'cpu'
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import sys
import time

from tessel.errors import TesselError
from tessel.fuzz.case import TARGETS, Case, FuzzError, is_gpu
from tessel.fuzz.coverage import feature_lines
from tessel.fuzz.graph_case import GraphCase, load_case, mutate_graph_case

CAMPAIGN_TARGETS = TARGETS + ("graph", "all")
CHEAP_SEED_S = 0.04  # CPU seconds of a typical case; dearer seeds are mutated proportionally less often


def _as_pipeline(p):
    from tessel.compiler.pipeline import as_pipeline

    return as_pipeline(p)


def atomic_write(path: str, text: str, durable: bool = True) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never half.
    `durable`: also fsync before the rename (against a power cut, not only a crash; a loaded disk
    makes that tens of milliseconds, so corpus files, which a campaign can regrow, skip it)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def sig_key(signature: str) -> str:
    return hashlib.sha256(signature.encode()).hexdigest()[:12]


class Campaign:
    """One fuzzing campaign writing into `out_dir` (see the module docstring).

    Options: `target` "cpu" | "cuda" | "cuda:sm_80" | "cuda:sm_90a" (GPU schedules of that
    architecture, on GPU-shaped programs (tessel/fuzz/gen_gpu.py: whole GEMMs the mma.sync and
    wgmma templates take, long-row reductions, row-wise ops) and small DSL programs, checked by the
    race-checking interpreter and printed as CUDA, and run on the GPU where `gpu_run` says so) |
    "graph" (op graphs through the graph passes: tessel/fuzz/graph_oracle.py) |
    "all" (each case's target drawn from tessel.fuzz.mix.ALL by energy: tessel/fuzz/mix.py),
    `gpu_run` "auto" | "on" | "off" (GPU cases also built and run on a GPU: tessel/fuzz/gpu_oracle.py;
    auto: where one can run them; on: FuzzError when none can), `feedback` (False: coverage is
    measured but does not steer: the ablation baseline),
    `mutate_passes` (False: pipelines stay the target's), `coverage` (False: no tracing at all),
    `tvm_rate` (share of CPU cases also built and run through TVM; graph cases go through
    tessel.compile at half that rate; default 0.1, and 0.3 for "all", whose CPU cases are a third
    of its time: the code generator is a quarter of what it checks), `timeout` (per case, s),
    `pipeline` (the pipeline fresh cases start from; default: the target's), `plugins` (modules
    imported here and in every worker, e.g. to register passes).
    """

    def __init__(self, out_dir: str, target: str = "cpu", seed: int = 0, jobs: int = 1, *, feedback: bool = True,
                 mutate_passes: bool = True, coverage: bool = True, tvm_rate: float | None = None,
                 timeout: float = 20.0,
                 quiet: bool = False, reduce: bool = True, reduce_budget_s: float = 30.0, log=None, plugins=(),
                 determinism_rate: float = 0.25, pipeline=None, gpu_run: str = "auto"):
        if target not in CAMPAIGN_TARGETS:
            raise FuzzError(f"tessel fuzz: unknown target {target!r}; targets: {', '.join(CAMPAIGN_TARGETS)}")
        if not isinstance(jobs, int) or jobs < 1:
            raise FuzzError(f"tessel fuzz: --jobs must be a positive integer, got {jobs!r}")
        self.dir, self.target, self.seed, self.jobs = out_dir, target, seed, jobs
        self.feedback, self.mutate_passes, self.coverage = feedback, mutate_passes, coverage
        from tessel.fuzz.mix import ALL, TargetMix

        self.targets = ALL if target == "all" else (target,)
        if tvm_rate is None:
            tvm_rate = 0.3 if target == "all" else 0.1
        self.tvm_rate = tvm_rate if "cpu" in self.targets or "graph" in self.targets else 0.0
        from tessel.fuzz.gpu_oracle import resolve

        self.gpu, self.gpu_why = resolve(gpu_run, self.targets)  # GPU cases also run on the GPU?
        self.timeout, self.quiet, self.reduce, self.reduce_budget_s = timeout, quiet, reduce, reduce_budget_s
        self.log = log or sys.stderr
        from tessel.fuzz.worker import import_plugins

        self.plugins = list(plugins)
        import_plugins(self.plugins)  # (they register passes the pass mutator may insert)
        self.determinism_rate = determinism_rate
        self.pipeline = None if pipeline is None else [p.to_json() for p in _as_pipeline(pipeline)]
        self.rng = random.Random(seed)
        self.mix = TargetMix(self.targets, self.rng) if len(self.targets) > 1 else None
        self.corpus: list = []  # Case / GraphCase
        self.seed_cost: dict = {}  # id(corpus case) -> CPU seconds of the run that kept it
        self.by_target: dict = {t: [] for t in self.targets}
        self.corpus_keys: set = set()
        self.features: set = set()
        self.failures: dict = {}  # signature -> record
        self.new_failures: list = []
        self.stats = {"cases": 0, "ok": 0, "rejected": 0, "rejected_before_run": 0, "fail": 0, "skipped_commands": 0,
                      "generated": 0, "mutated": 0, "corpus_added": 0, "passes_dropped": 0, "elapsed_s": 0.0,
                      "rejected_by": {}, "mutations": {}, "corrupt_files": []}
        self.history: list = []  # (seconds, cases, arcs, lines, corpus, failures)
        self._elapsed_before = 0.0
        self._digests: dict = {}
        self._pending: list = []
        self._t0 = time.monotonic()
        self._cases0 = 0
        self.run_cpu = {"parent_s": 0.0, "workers_s": 0.0}  # CPU seconds of the last run()
        self._load()

    # -- the directory ------------------------------------------------------------------------
    def _path(self, *parts) -> str:
        return os.path.join(self.dir, *parts)

    def _load(self) -> None:
        os.makedirs(self._path("corpus"), exist_ok=True)
        os.makedirs(self._path("failures"), exist_ok=True)
        for name in sorted(os.listdir(self._path("corpus"))):
            if not name.endswith(".txt"):
                continue
            path = self._path("corpus", name)
            try:
                with open(path) as f:
                    case = load_case(f.read(), where=path)
            except (OSError, UnicodeDecodeError, TesselError) as e:
                self.stats["corrupt_files"].append(path)
                self._say(f"tessel fuzz: skipping corrupt corpus file {path}: {e}")
                continue
            if case.target in self.by_target:
                self.corpus.append(case)
                self.by_target[case.target].append(case)
                self.corpus_keys.add(name[:-4])
        for name in sorted(os.listdir(self._path("failures"))):
            meta = self._path("failures", name, "failure.json")
            try:
                with open(meta) as f:
                    rec = json.load(f)
                self.failures[rec["signature"]] = rec
            except (OSError, ValueError, KeyError) as e:
                self._say(f"tessel fuzz: skipping unreadable failure record {meta}: {e}")
        try:
            with open(self._path("state.json")) as f:
                state = json.load(f)
            self._elapsed_before = float(state.get("stats", {}).get("elapsed_s", 0.0))
            self.stats["elapsed_s"] = self._elapsed_before
            for k, v in state.get("stats", {}).items():  # counters and their breakdowns carry on
                if k in self.stats and k not in ("elapsed_s", "corrupt_files") and type(v) is type(self.stats[k]):
                    self.stats[k] = v
            self.history = [tuple(h) for h in state.get("history", [])]
            if self.mix is not None:
                self.mix.load(state.get("mix"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            self._say(f"tessel fuzz: state.json unreadable ({e}); counters start again (corpus kept)")

    def _save_state(self) -> None:
        atomic_write(self._path("state.json"), json.dumps({
            "target": self.target, "seed": self.seed, "stats": self.stats, "history": self.history,
            "mix": self.mix.to_json() if self.mix is not None else None,
            "coverage": {"arcs": len(self.features), "lines": feature_lines(self.features)},
            "failures": sorted(self.failures)}, indent=1))

    def _add_corpus(self, case: Case) -> bool:
        key = case.key()
        if key in self.corpus_keys:
            return False
        self.corpus_keys.add(key)
        self.corpus.append(case)
        self.by_target.setdefault(case.target, []).append(case)
        atomic_write(self._path("corpus", f"{key}.txt"), case.to_text(), durable=False)
        return True

    def _record_failure(self, case: Case, res: dict) -> None:
        sig = res["signature"]
        rec = self.failures.get(sig)
        if rec is None:
            d = self._path("failures", sig_key(sig))
            path = os.path.join(d, "case.txt")
            atomic_write(path, case.to_text())
            rec = {"signature": sig, "kind": res["kind"], "stage": res["stage"], "message": res["message"][:4000],
                   "count": 0, "case": path, "replay": f"tessel fuzz --replay {path}",
                   "found_after_s": round(self._elapsed(), 1), "found_after_cases": self.stats["cases"]}
            self.failures[sig] = rec
            self.new_failures.append(sig)
        rec["count"] += 1
        atomic_write(self._path("failures", sig_key(sig), "failure.json"), json.dumps(rec, indent=1))

    # -- producing cases -------------------------------------------------------------------
    def fresh(self, target: str | None = None):
        """A freshly generated case for `target` (default: the campaign's only target)."""
        from tessel.fuzz.gen import program
        from tessel.fuzz.gen_gpu import gpu_program
        from tessel.fuzz.mutate_ir import default_schedule_cmds
        from tessel.fuzz.mutate_passes import base_pipeline

        rng = self.rng
        target = target or self.targets[0]
        if target == "graph":
            from tessel.fuzz.graph_case import fresh_graph_case

            self.stats["generated"] += 1
            return fresh_graph_case(rng, self.tvm_rate / 2)
        for _ in range(10):
            try:
                k = program(rng) if target == "cpu" else gpu_program(rng, target)
                sched = default_schedule_cmds(k, target, rng)
            except TesselError:
                continue
            self.stats["generated"] += 1
            pipe = self.pipeline if self.pipeline is not None and not (self.mix and is_gpu(target)) \
                else base_pipeline(target)
            return Case(k, target, sched, pipe, rng.randrange(1 << 30),
                        tvm=target == "cpu" and rng.random() < self.tvm_rate)
        return None

    def mutant(self, target: str | None = None):
        """A mutant of a corpus seed of `target`."""
        from tessel.fuzz.mutate_ir import mutate
        from tessel.fuzz.mutate_passes import mutate_pipeline

        rng = self.rng
        seeds = self.by_target.get(target or self.targets[0]) or self.corpus
        # newer seeds first, but every seed keeps a chance
        for _ in range(4):
            parent = seeds[-1 - min(int(rng.expovariate(1 / 8)), len(seeds) - 1)] \
                if rng.random() < 0.5 else rng.choice(seeds)
            # cheap seeds first (as AFL favours fast inputs): a seed costing k times a typical case
            # is taken 1/k as often, so a few slow template programs (convolutions: ~0.3 s against
            # ~10 ms) cannot take most of the workers' time
            cost = self.seed_cost.get(id(parent), 0.0)
            if cost <= CHEAP_SEED_S or rng.random() < CHEAP_SEED_S / cost:
                break
        case = parent
        for _ in range(rng.choice((1, 1, 2, 3))):
            if isinstance(case, GraphCase):
                m, how = mutate_graph_case(case, rng, self.tvm_rate / 2)
                if m is None or (not self.mutate_passes and how.startswith("graph.pass")):
                    continue
                case = m
            elif self.mutate_passes and rng.random() < 0.35:
                p, how = mutate_pipeline(case.pipeline, rng)
                case, how = case.replace(pipeline=p), f"pass.{how}"
            else:
                m, how = mutate(case, rng)
                if m is None:
                    continue
                case = m
            self.stats["mutations"][how] = self.stats["mutations"].get(how, 0) + 1
        if case is parent:
            return None
        self.stats["mutated"] += 1
        if isinstance(case, GraphCase):
            return case.replace(seed=rng.randrange(1 << 30))
        return case.replace(seed=rng.randrange(1 << 30), tvm=case.target == "cpu" and rng.random() < self.tvm_rate)

    def next_case(self):
        from tessel.fuzz.oracles import VERIFIED
        from tessel.ir.text import to_text
        from tessel.ir.verify import verify

        for _ in range(20):
            target = self.mix.pick() if self.mix is not None else self.targets[0]
            seeds = self.by_target.get(target, ())
            case = self.fresh(target) if len(seeds) < 4 or self.rng.random() < 0.15 else self.mutant(target)
            if case is None:
                continue
            if isinstance(case, GraphCase):
                return case  # (the graph oracle checks the graph itself)
            try:
                text = to_text(case.kernel)
                if VERIFIED.get(text) is None:  # (a schedule or pipeline mutant keeps its seed's program)
                    verify(case.kernel)
                    VERIFIED.put(text, True)
                case.verified = True  # (the worker need not verify it again)
            except TesselError:
                self.stats["rejected_before_run"] += 1  # counted, not run
                self.stats["rejected_by"]["verify"] = self.stats["rejected_by"].get("verify", 0) + 1
                continue
            except Exception:  # noqa: BLE001 - the verifier crashed: let the worker record it
                pass
            return case
        return self.fresh()

    # -- results ----------------------------------------------------------------------------
    def _handle(self, case: Case, res: dict, purpose: str) -> None:
        st = self.stats
        st["cases"] += 1
        st["skipped_commands"] += res.get("skipped", 0)
        new_by_phase = [(name, feats - self.features) for name, feats in res.get("phases", [])]
        new = set().union(*(f for _, f in new_by_phase)) if new_by_phase else set()
        self.features |= new
        if self.mix is not None and purpose != "confirm":
            secs = res.get("cpu_s", self.timeout if res.get("kind") == "hang" else 0.0)
            self.mix.record(case.target, secs, len(new), self._elapsed())
        status = res["status"]
        st[status] = st.get(status, 0) + 1
        if res.get("gpu"):
            st["gpu_cases"] = st.get("gpu_cases", 0) + 1
        if status == "rejected":
            st["rejected_by"][res["kind"]] = st["rejected_by"].get(res["kind"], 0) + 1
        if status == "fail":
            self._record_failure(case, res)
            return
        if purpose == "confirm":  # the same case again, maybe in another process: same code?
            old = self._digests.pop(case.key(), None)
            if old and res.get("digest") and old != res["digest"]:
                self._record_failure(case, {"signature": "nondet:process", "kind": "nondet", "stage": "process",
                                            "message": "the same case compiled to different code in two processes"})
            return
        if status == "ok" and (new or not self.feedback and self.rng.random() < 0.05):
            graph = isinstance(case, GraphCase)
            useless = {i for i, (name, feats) in enumerate(
                [x for x in new_by_phase if x[0].startswith("graph:" if graph else "pass:")]) if not feats}
            kept = case if graph else case.replace(schedule=res.get("kept_schedule", case.schedule))
            if useless and self.feedback:
                from tessel.fuzz.mutate_passes import drop_passes

                kept = kept.replace(pipeline=drop_passes(case.pipeline, useless))
                st["passes_dropped"] += len(useless)
            st["corpus_added"] += 1
            if self._add_corpus(kept):
                self.seed_cost[id(kept)] = float(res.get("cpu_s", 0.0))
            if res.get("digest"):
                self._digests[kept.key()] = res["digest"] if kept == case else ""
                self._pending.append(("confirm", kept))

    # -- the loop ----------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._t0

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.log, flush=True)

    def line(self) -> str:
        el = max(1e-9, time.monotonic() - self._t0)
        st = self.stats
        run = st["cases"] - self._cases0
        return (f"[{int(self._elapsed()) // 60:02d}:{int(self._elapsed()) % 60:02d}] {st['cases']} cases "
                f"({run / el:.1f}/s) | coverage {len(self.features)} arcs, {feature_lines(self.features)} lines | "
                f"corpus {len(self.corpus)} | failures {len(self.failures)} unique ({st['fail']}) | "
                f"rejected {st['rejected'] + st['rejected_before_run']}"
                + (f" | on GPU {st.get('gpu_cases', 0)}" if self.gpu else "") + self._mix_line())

    def _mix_line(self) -> str:
        if self.mix is None:
            return ""
        short = {"cuda:sm_90a": "sm90a", "cuda:sm_80": "sm80"}
        return " | " + " ".join(f"{short.get(t, t)} {n}" for t, n in self.mix.cases.items())

    def run(self, minutes: float | None = None, seconds: float | None = None, max_cases: int | None = None) -> dict:
        from tessel.fuzz.worker import Worker

        budget = seconds if seconds is not None else 60.0 * (minutes if minutes is not None else 1.0)
        self._t0 = time.monotonic()
        self._cases0 = self.stats["cases"]
        self._pending = [("seed", c) for c in self.corpus]  # a resumed corpus re-runs to rebuild coverage
        workers = [Worker(coverage=self.coverage, preload_tvm=self.tvm_rate > 0, plugins=self.plugins, gpu=self.gpu)
                   for _ in range(self.jobs)]
        jobs: dict = {}  # tag -> (case, purpose)
        tags = itertools.count()
        last_line = last_save = time.monotonic()
        if any(is_gpu(t) for t in self.targets):
            self._say(f"tessel fuzz: GPU execution {self.gpu_why}")
        try:
            for w in workers:
                w._wait_ready()
            self._t0 = time.monotonic()  # worker start-up is not fuzzing time
            cpu0 = time.process_time()
            stop = self._t0 + budget
            interrupted = False
            try:
                while time.monotonic() < stop and (max_cases is None or self.stats["cases"] - self._cases0 < max_cases):
                    for w in workers:
                        while w.free:  # (two in flight per worker: see Worker)
                            purpose, case = self._pending.pop(0) if self._pending else ("new", self.next_case())
                            if case is None:
                                break
                            tag = next(tags)
                            jobs[tag] = (case, purpose)
                            det = purpose != "new" or self.rng.random() < self.determinism_rate
                            # (a confirmation re-runs a corpus case: its coverage is known, no tracing)
                            w.submit(tag, case.to_text(), self.timeout, determinism=det, trace=purpose != "confirm",
                                     verified=purpose == "new" and getattr(case, "verified", False))
                    self._collect(workers, jobs, 0.05)
                    now = time.monotonic()
                    if now - last_line >= 1.0:
                        last_line = now
                        self.history.append((round(self._elapsed(), 1), self.stats["cases"], len(self.features),
                                             feature_lines(self.features), len(self.corpus), len(self.failures)))
                        if not self.quiet:
                            print("\r" + self.line(), end="", file=self.log, flush=True)
                    if now - last_save >= 30.0:
                        last_save = now
                        self.stats["elapsed_s"] = round(self._elapsed(), 1)
                        self._save_state()
            except KeyboardInterrupt:  # stopped by the user: keep everything, resume later from the directory
                interrupted = True
                self._say("\ntessel fuzz: interrupted; saving the campaign (resume with the same --out)")
                for w in workers:
                    if not w.idle:
                        w.restart()  # its cases are dropped, not recorded
                jobs.clear()
            # let running cases finish (bounded by their time limit)
            while any(not w.idle for w in workers):
                self._collect(workers, jobs, 0.1)
            self.stats["elapsed_s"] = round(self._elapsed(), 1)
            self.run_cpu = {"parent_s": round(time.process_time() - cpu0, 2),
                            "workers_s": round(sum(w.cpu_used for w in workers), 2)}
            self.history.append((self.stats["elapsed_s"], self.stats["cases"], len(self.features),
                                 feature_lines(self.features), len(self.corpus), len(self.failures)))
            if not self.quiet:
                print("\r" + self.line(), file=self.log, flush=True)
            self._save_state()
            if self.reduce and self.new_failures and not interrupted:
                self._reduce_new(workers[0])
        finally:
            for w in workers:
                w.close()
        from tessel.fuzz.report import write_report

        write_report(self)
        return self.summary()

    def _collect(self, workers, jobs: dict, wait: float) -> None:
        """Wait up to `wait` s for a result, then handle every finished case (`jobs`: tag -> (case, purpose))."""
        from tessel.fuzz.worker import wait_any

        wait_any(workers, wait)
        for w in workers:
            got = w.poll()
            if got is not None:
                case, purpose = jobs.pop(got[0])
                self._handle(case, got[1], purpose)

    def _reduce_new(self, worker) -> None:
        from tessel.fuzz.reduce import reduce_case, size
        from tessel.fuzz.worker import run_one

        for sig in list(self.new_failures):
            rec = self.failures[sig]
            if rec["kind"] in ("hang", "nondet"):
                continue  # reducing these costs a time limit per try
            with open(rec["case"]) as f:
                case = load_case(f.read(), where=rec["case"])
            small = reduce_case(case, lambda c: run_one(worker, c, self.timeout)["signature"],
                                budget_s=self.reduce_budget_s)
            path = os.path.join(os.path.dirname(rec["case"]), "reduced.txt")
            atomic_write(path, small.to_text())
            rec.update(reduced=path, replay=f"tessel fuzz --replay {path}", size_before=size(case),
                       size_after=size(small))
            atomic_write(self._path("failures", sig_key(sig), "failure.json"), json.dumps(rec, indent=1))
            self._say(f"reduced {sig}: size {size(case)} -> {size(small)}; reproduce: tessel fuzz --replay {path}")

    def summary(self) -> dict:
        el = max(1e-9, self.stats["elapsed_s"] - self._elapsed_before)
        cpu = self.run_cpu["parent_s"] + self.run_cpu["workers_s"]
        return {"cases": self.stats["cases"], "cases_per_s": round((self.stats["cases"] - self._cases0) / el, 2),
                "cpu_s": dict(self.run_cpu),
                "cases_per_cpu_s": round((self.stats["cases"] - self._cases0) / cpu, 2) if cpu > 0 else None,
                "arcs": len(self.features), "lines": feature_lines(self.features), "corpus": len(self.corpus),
                "failures": {s: r["count"] for s, r in self.failures.items()}, "dir": self.dir,
                "gpu": self.gpu, "gpu_cases": self.stats.get("gpu_cases", 0)}


__all__ = ["Campaign", "atomic_write"]
