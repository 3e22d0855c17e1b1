"""The planted-bug evaluation's machinery (bench/fuzz_eval.py bugs): a reference suite that judges
mutants of tessel's source, forked runners, and corpus replay.

- `programs()` / `run_program(name)`: the reference suite (tessel/fuzz/suite.py), each program
  judged against a reference that the mutated code cannot touch: random op graphs compiled by
  `tessel.compile` for the CPU against the op registry's numpy references; random DSL kernels built
  by `tessel.build` for the CPU against the reference interpreter on the unscheduled kernel; and GPU
  kernels (GEMMs on the mma.sync and wgmma templates, SIMT matmul, reductions, softmax, norms,
  transposes) scheduled by their default CUDA templates and the CUDA pipeline, run by the
  interpreter (no GPU needed) against the interpreter on the unscheduled kernel. (Mutants live in
  passes/, schedules/, codegen/ and compiler/lowering.py; the interpreter in ir/interp and the
  references in frontend/ are never mutated.)
- `forked(fn, timeout)`: runs `fn` in a forked child of an already-imported parent (imports cost
  about 10 s per process here; a fork costs milliseconds), so every mutant starts from the same
  clean state: nothing compiled yet, no cache warm. Importing this module turns tessel's disk
  cache of compiled kernels off for the process and its children (TESSEL_CACHE_DIR=""): a module
  that a mutant miscompiled must never be saved where another mutant, or a user, would load it.
- `program_lines()` / `case_lines()`: which source lines of the mutable modules each program or
  fuzz case executes (coverage.py, via tessel.fuzz.coverage.Probe), so a mutant is only judged by
  the programs, and only replayed on the cases, that execute its line (or all of them when the
  line is module-level code, which runs at import).

Example (bench/fuzz_eval.py drives it):
    >>> forked(lambda: 6 * 7, timeout=30)
    42
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import select
import signal
import time

os.environ["TESSEL_CACHE_DIR"] = ""  # (see the module docstring: never share compiled kernels)

AREAS = {
    "passes": ("tessel.passes.simplify", "tessel.passes.dce", "tessel.passes.hoist", "tessel.passes.unroll",
               "tessel.passes.storage", "tessel.passes.graph.canonicalize", "tessel.passes.graph.fusion",
               "tessel.passes.graph.fold", "tessel.passes.graph.pattern", "tessel.compiler.lowering"),
    "schedules": ("tessel.schedules.loops", "tessel.schedules.caching", "tessel.schedules.location",
                  "tessel.schedules.reduction", "tessel.schedules.generic", "tessel.schedules.cpu_epilogue",
                  "tessel.schedules.cpu_host", "tessel.schedules.nest", "tessel.schedules.region",
                  # the CPU templates (suite.py CPU_PROGRAMS apply them: convolutions direct and Winograd,
                  # NCHW pointwise / stem, depthwise, attention, vector row reductions, padding copies, row
                  # pipelines)
                  "tessel.schedules.cpu_conv", "tessel.schedules.cpu_winograd", "tessel.schedules.cpu_conv_nchw",
                  "tessel.schedules.cpu_depthwise", "tessel.schedules.cpu_attention", "tessel.schedules.cpu_reduce",
                  "tessel.schedules.cpu_pad", "tessel.schedules.accumulate", "tessel.schedules.layout",
                  "tessel.schedules.cpu_rows"),
    "templates": ("tessel.schedules.generic_gpu", "tessel.schedules.generic_gpu_matmul", "tessel.schedules.gpu",
                  "tessel.schedules.gpu_reduce", "tessel.schedules.gemm", "tessel.schedules.gemm_plan",
                  "tessel.schedules.gemm_hopper", "tessel.schedules.hopper_pieces", "tessel.schedules.epilogue",
                  "tessel.schedules.tensorize", "tessel.schedules.pipeline", "tessel.schedules.hopper_skeleton",
                  "tessel.schedules.hopper_splitk"),
    # tvm_minmax: the float min/max translation, moved out of tvm_tir (2026-12-08)
    "codegen": ("tessel.codegen.tvm_tir", "tessel.codegen.tvm_fastmath", "tessel.codegen.tvm_minmax"),
}


def relpath(module: str) -> str:
    """tessel.passes.dce -> passes/dce.py (the key coverage data uses here)."""
    return module.replace("tessel.", "", 1).replace(".", "/") + ".py"


# -- forked runs ---------------------------------------------------------------------------------


def forked(fn, timeout: float):
    """`fn()` in a forked child; its (picklable) result, or {"timeout": s} / {"died": signal}.
    The child's stdout and stderr go to /dev/null (TVM and LLVM print)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        os.environ["TESSEL_CACHE_DIR"] = ""
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        try:
            res = fn()
        except BaseException as e:  # noqa: BLE001 - reported, never raised across the fork
            res = {"error": f"{type(e).__name__}: {e}"[:500]}
        try:
            data = pickle.dumps(res)
        except Exception as e:  # noqa: BLE001
            data = pickle.dumps({"error": f"unpicklable result: {e}"})
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([f], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"timeout": timeout}
            b = f.read(1 << 20)
            if not b:
                break
            chunks.append(b)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"died": os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)}
    return pickle.loads(b"".join(chunks))


# -- the reference suite: tessel/fuzz/suite.py -------------------------------------------------

from tessel.fuzz.suite import programs, run_program  # noqa: E402  (after the cache switch above)


def program_lines(names, modules) -> dict:
    """{program: {relpath: sorted lines}} over `modules`, and each program's unmutated verdict
    (run in a fork: nothing stays compiled or cached in the parent)."""

    def go():
        from tessel.fuzz.coverage import Probe

        probe = Probe()
        probe.start()
        out = {}
        try:
            for n in names:
                probe.harvest()
                try:
                    verdict = run_program(n)
                except Exception as e:  # noqa: BLE001
                    verdict = f"crash: {type(e).__name__}: {e}"[:300]
                out[n] = {"verdict": verdict, "lines": _lines(probe, probe.harvest(), modules)}
        finally:
            probe.stop()
        return out

    return forked(go, timeout=3600)


def _lines(probe, feats, modules) -> dict:
    from tessel.fuzz.coverage import tessel_root

    root = tessel_root()
    want = {relpath(m) for m in modules}
    by_id = {fid: os.path.relpath(f, root) for f, fid in probe.files.items()}
    out: dict = {}
    for f in feats:
        rel = by_id.get(f >> 60)
        if rel not in want:
            continue
        packed = f & ((1 << 60) - 1)
        s = out.setdefault(rel, set())
        for ln in (packed & 0xFFFFFFF, (packed >> 28) & 0xFFFFFFF):
            if ln:
                s.add(ln)
    return {k: sorted(v) for k, v in out.items()}


def module_level_lines(module: str) -> set:
    """Lines of `module` outside every function body (they run at import, so a mutation there
    acts on every program whatever lines the program executes)."""
    from tessel.fuzz.mutant import _source

    path, src = _source(module)
    inside = set()
    for node in ast.walk(ast.parse(src, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return set(range(1, src.count("\n") + 2)) - inside


def judge_mutant(site, names, max_programs: int, timeout: float) -> dict:
    """Does mutant `site` miscompile one of the suite programs `names` (those executing its line)?"""

    def go():
        from tessel.fuzz import mutant

        try:
            mutant.apply(site.module, site.index)
        except Exception as e:  # noqa: BLE001 - the mutant does not even import
            return {"import_error": f"{type(e).__name__}: {e}"[:200]}
        res = {"ran": 0, "crashed": 0, "miscompiled": None}
        for n in names[:max_programs]:
            res["ran"] += 1
            try:
                bad = run_program(n)
            except Exception:  # noqa: BLE001 - a crash is not a miscompilation
                res["crashed"] += 1
                continue
            if bad is not None:
                res["miscompiled"] = n
                res["why"] = str(bad)[:200]
                return res
        return res

    return forked(go, timeout)


# -- corpus replay -------------------------------------------------------------------------------


def load_cases(dirs) -> list:
    """(label, case text) of every corpus file and first failure case of campaign directories."""
    out = []
    for d in dirs:
        for sub in ("corpus",):
            folder = os.path.join(d, sub)
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
                if name.endswith(".txt"):
                    with open(os.path.join(folder, name)) as f:
                        out.append((f"{os.path.basename(d.rstrip('/'))}/{sub}/{name}", f.read()))
        fdir = os.path.join(d, "failures")
        for name in sorted(os.listdir(fdir)) if os.path.isdir(fdir) else ():
            p = os.path.join(fdir, name, "case.txt")
            if os.path.exists(p):
                with open(p) as f:
                    out.append((f"{os.path.basename(d.rstrip('/'))}/failures/{name}", f.read()))
    return out


def case_lines(cases, modules) -> dict:
    """{label: {"signature", "status", "lines"}} of each case, unmutated (in a fork). A case that kills
    the fork (a campaign's died:worker failure replayed) is recorded with status "died" and the
    rest go on in a new fork."""
    import tempfile

    def go(start, progress):
        from tessel.fuzz.coverage import Probe
        from tessel.fuzz.worker import load_case, run_any

        probe = Probe()
        for label, text in cases[start:]:
            probe.start()
            probe.harvest()
            try:
                o = run_any(load_case(text), probe)
                feats = set().union(*(f for _, f in o.phases)) if o.phases else set()
                rec = {"status": o.status, "signature": o.signature, "lines": _lines(probe, feats, modules)}
            except Exception as e:  # noqa: BLE001
                rec = {"status": "error", "signature": repr(e)[:200], "lines": {}}
            finally:
                probe.stop()
            with open(progress, "a") as f:  # written as each case ends: what a dying fork finished survives
                f.write(json.dumps([label, rec]) + "\n")
        return {"done": True}

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        progress = os.path.join(tmp, "progress.jsonl")
        start = 0
        while start < len(cases):
            res = forked(lambda: go(start, progress), timeout=3600)
            if os.path.exists(progress):
                with open(progress) as f:
                    for line in f:
                        label, rec = json.loads(line)
                        out[label] = rec
                os.unlink(progress)
            start = len(out)
            if "done" in res:
                break
            if "died" not in res:
                return res  # a timeout or an error of the harness itself
            label = cases[start][0]  # the case the fork was running when it died
            out[label] = {"status": "died", "signature": f"died:{res['died']}", "lines": {}}
            start += 1
    return out


class _Alarm(Exception):
    pass


def replay_mutant(site, cases, baseline: dict, timeout: float, case_timeout: int = 20) -> dict:
    """Replay `cases` [(label, text)] under mutant `site`; detected at the first case that fails
    with a signature its unmutated run did not have (a hang or a dead process counts: a campaign
    records those too)."""

    def go():
        from tessel.fuzz import mutant
        from tessel.fuzz.worker import load_case, run_any

        try:
            mutant.apply(site.module, site.index)
        except Exception as e:  # noqa: BLE001
            return {"detected": True, "signature": f"import:{type(e).__name__}", "ran": 0}
        from tessel.fuzz.oracles import clear_caches

        clear_caches()  # (nothing the unmutated code computed may answer for the mutant)

        def alarm(*_):
            raise _Alarm

        signal.signal(signal.SIGALRM, alarm)
        ran = 0
        for label, text in cases:
            ran += 1
            signal.alarm(case_timeout)
            try:
                o = run_any(load_case(text))
                sig = o.signature if o.status == "fail" else ""
            except _Alarm:
                sig = "hang"
            except Exception as e:  # noqa: BLE001 - outside the oracles' own nets: a crash all the same
                sig = f"crash:{type(e).__name__}"
            finally:
                signal.alarm(0)
            base = baseline[label]
            if sig and sig != (base["signature"] if base["status"] == "fail" else ""):
                return {"detected": True, "signature": sig, "case": label, "ran": ran}
        return {"detected": False, "ran": ran}

    res = forked(go, timeout)
    if "timeout" in res:
        return {"detected": True, "signature": "hang:replay", "ran": None}
    if "died" in res:
        return {"detected": True, "signature": f"died:{res['died']}", "ran": None}
    return res


__all__ = ["AREAS", "case_lines", "forked", "judge_mutant", "load_cases", "module_level_lines", "program_lines",
           "programs", "replay_mutant", "run_program"]
