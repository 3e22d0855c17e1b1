"""The planted-bug evaluation's machinery (bench/fuzz_eval.py bugs): a reference suite that judges
mutants of tessel's source, forked runners, and corpus replay.

- `programs()`: the reference suite, each program judged against a reference that the mutated
  code cannot touch: random op graphs compiled by `tessel.compile` for the CPU (graph passes,
  fusion, lowering, default schedules, CPU pipeline, TVM) against the op registry's numpy
  references; random DSL kernels built by `tessel.build` for the CPU against the reference
  interpreter on the unscheduled kernel; and GPU kernels (GEMMs on the mma.sync and wgmma
  templates, SIMT matmul, reductions, softmax, norms, transposes) scheduled by the default CUDA
  templates and the CUDA pipeline, run by the interpreter (no GPU needed) against numpy or the
  interpreter on the unscheduled kernel. (Mutants live in passes/, schedules/, codegen/ and
  compiler/lowering.py; the interpreter in ir/interp and the references in frontend/ are never
  mutated.)
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
import os
import pickle
import random
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
                  "tessel.schedules.cpu_host", "tessel.schedules.nest", "tessel.schedules.region"),
    "templates": ("tessel.schedules.generic_gpu", "tessel.schedules.generic_gpu_matmul", "tessel.schedules.gpu",
                  "tessel.schedules.gpu_reduce", "tessel.schedules.gemm", "tessel.schedules.gemm_plan",
                  "tessel.schedules.gemm_hopper", "tessel.schedules.hopper_pieces", "tessel.schedules.epilogue",
                  "tessel.schedules.tensorize", "tessel.schedules.pipeline"),
    "codegen": ("tessel.codegen.tvm_tir", "tessel.codegen.tvm_fastmath"),
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


# -- the reference suite -------------------------------------------------------------------------


def _gpu_kernels() -> dict:
    """name -> (naive kernel, target) of the GPU part of the suite."""
    import tessel as ts

    def matmul(M, N, K, dtype, a_t=False, b_t=False):
        A = ts.placeholder((K, M) if a_t else (M, K), dtype, name="A")
        B = ts.placeholder((N, K) if b_t else (K, N), dtype, name="B")
        k = ts.reduce_axis(K, name="k")
        acc = "float32" if dtype in ("float16", "bfloat16") else dtype
        return ts.lower([A, B, ts.compute((M, N), lambda i, j: ts.sum(
            (A[k, i] if a_t else A[i, k]).astype(acc) * (B[j, k] if b_t else B[k, j]).astype(acc), axis=k),
            name="C")])

    def row_reduce(rows, cols, op):
        X = ts.placeholder((rows, cols), name="X")
        k = ts.reduce_axis(cols, name="k")
        red = {"sum": ts.sum, "max": ts.max}[op]
        return ts.lower([X, ts.compute((rows,), lambda i: red(X[i, k], axis=k), name="S")])

    def column_sum(rows, cols):
        X = ts.placeholder((rows, cols), name="X")
        k = ts.reduce_axis(rows, name="k")
        return ts.lower([X, ts.compute((cols,), lambda j: ts.sum(X[k, j], axis=k), name="S")])

    def transpose(rows, cols):
        A = ts.placeholder((rows, cols), name="A")
        return ts.lower([A, ts.compute((cols, rows), lambda i, j: A[j, i], name="B")])

    def elementwise(shape, dtype="float32"):
        A = ts.placeholder(shape, dtype, name="A")
        return ts.lower([A, ts.compute(shape, lambda *i: ts.exp(A[i].astype("float32")).astype(dtype) * A[i],
                                       name="B")])

    def one_op(op, shapes, dtype):
        from tessel.compiler.lowering import lower_group
        from tessel.frontend.graph import Graph
        from tessel.passes.graph.fusion import fuse

        g = Graph()
        ins = [g.add_input(f"x{i}", s, dtype) for i, s in enumerate(shapes)]
        (y,) = g.add_node(op, ins, {})
        g.mark_outputs([y])
        (group,) = fuse(g)
        return lower_group(g, group).ir

    return {
        "gpu.gemm_mma_f16_64": (lambda: matmul(64, 64, 64, "float16"), "cuda"),
        "gpu.gemm_mma_bf16_tt_32": (lambda: matmul(32, 32, 32, "bfloat16", True, True), "cuda"),
        "gpu.gemm_wgmma_f16_64": (lambda: matmul(64, 64, 64, "float16"), "cuda:sm_90a"),
        "gpu.matmul_simt_33x40x17": (lambda: matmul(33, 40, 17, "float32"), "cuda"),
        "gpu.row_sum_6x100": (lambda: row_reduce(6, 100, "sum"), "cuda"),
        "gpu.row_max_3x1000": (lambda: row_reduce(3, 1000, "max"), "cuda"),
        "gpu.column_sum_50x7": (lambda: column_sum(50, 7), "cuda"),
        "gpu.transpose_40x70": (lambda: transpose(40, 70), "cuda"),
        "gpu.elementwise_37x19": (lambda: elementwise((37, 19)), "cuda"),
        "gpu.elementwise_f16_64x48": (lambda: elementwise((64, 48), "float16"), "cuda"),
        "gpu.softmax_6x40": (lambda: one_op("softmax", [(6, 40)], "float32"), "cuda"),
        "gpu.layer_norm_f16_5x64": (lambda: one_op("layer_norm", [(5, 64), (64,), (64,)], "float16"), "cuda"),
    }


def programs(n_graph: int = 24, n_dsl: int = 24, gpu: bool = True) -> list:
    """The suite's program names: graph.<seed>, dsl.<seed>, gpu.<name>."""
    out = [f"graph.{s}" for s in range(n_graph)] + [f"dsl.{s}" for s in range(n_dsl)]
    if gpu:
        out += sorted(_gpu_kernels())
    return out


def run_program(name: str):
    """Compile and run one suite program; None when it matches its reference, else a message
    (a miscompilation). Exceptions propagate (the caller counts them as crashes)."""
    import numpy as np

    kind, _, key = name.partition(".")
    if kind == "graph":
        import tessel
        from tessel.frontend.reference import run_graph
        from tessel.fuzz.gen import random_graph

        g = random_graph(random.Random(1000 + int(key)))
        if not g.nodes:
            return None
        rng = np.random.default_rng(int(key))
        ins = [rng.standard_normal(g.values[v].shape).astype("float32") for v in g.inputs]
        want = run_graph(g, ins)
        got = tessel.compile(random_graph(random.Random(1000 + int(key))), ins, target="cpu")(*ins)
        got = got if isinstance(got, (list, tuple)) else [got]
        for i, (a, w) in enumerate(zip(got, want)):
            if not np.allclose(np.asarray(a), w, rtol=1e-3, atol=1e-4, equal_nan=True):
                return f"output {i} differs from numpy"
        return None
    from tessel.fuzz.oracles import _interp, _reads_uninitialized, compare, make_inputs

    if kind == "dsl":
        import tessel
        from tessel.fuzz.gen import dsl_kernel

        k = dsl_kernel(random.Random(2000 + int(key)))
        ins = make_inputs(k, int(key))
        want = _interp(k, ins, 0)
        if _reads_uninitialized(k, ins, 0, want):
            return None
        built = tessel.build(k, target="cpu")
        got = [a.copy() for a in ins]
        built(*got)
        return compare(got, want, k.params, loose=4.0, nan_is_any=True)
    if kind == "gpu":
        from tessel.compiler.pipeline import as_pipeline, cuda_pipeline
        from tessel.schedules.generic_gpu import default_gpu_schedule

        make, target = _gpu_kernels()[name]
        k = make()
        ins = make_inputs(k, 3)
        want = _interp(k, ins, 0)
        sk = default_gpu_schedule(k, target).kernel
        for p in as_pipeline(cuda_pipeline()):
            sk = p(sk)
        got = _interp(sk, ins, 1)
        return compare(got, want, k.params, loose=2.0)
    raise ValueError(f"unknown suite program {name!r}")


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
    """{label: {"signature", "status", "lines"}} of each case, unmutated (in a fork)."""

    def go():
        from tessel.fuzz.case import Case
        from tessel.fuzz.coverage import Probe
        from tessel.fuzz.oracles import run_case

        probe = Probe()
        out = {}
        for label, text in cases:
            probe.start()
            probe.harvest()
            try:
                o = run_case(Case.from_text(text), probe)
                feats = set().union(*(f for _, f in o.phases)) if o.phases else set()
                out[label] = {"status": o.status, "signature": o.signature, "lines": _lines(probe, feats, modules)}
            except Exception as e:  # noqa: BLE001
                out[label] = {"status": "error", "signature": repr(e)[:200], "lines": {}}
            finally:
                probe.stop()
        return out

    return forked(go, timeout=3600)


class _Alarm(Exception):
    pass


def replay_mutant(site, cases, baseline: dict, timeout: float, case_timeout: int = 20) -> dict:
    """Replay `cases` [(label, text)] under mutant `site`; detected at the first case that fails
    with a signature its unmutated run did not have (a hang or a dead process counts: a campaign
    records those too)."""

    def go():
        from tessel.fuzz import mutant
        from tessel.fuzz.case import Case
        from tessel.fuzz.oracles import run_case

        try:
            mutant.apply(site.module, site.index)
        except Exception as e:  # noqa: BLE001
            return {"detected": True, "signature": f"import:{type(e).__name__}", "ran": 0}

        def alarm(*_):
            raise _Alarm

        signal.signal(signal.SIGALRM, alarm)
        ran = 0
        for label, text in cases:
            ran += 1
            signal.alarm(case_timeout)
            try:
                o = run_case(Case.from_text(text))
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
