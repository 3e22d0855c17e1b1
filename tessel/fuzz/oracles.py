"""Oracles: run one test case through tessel and judge it.

`run_case(case)` compiles and runs a Case (tessel/fuzz/case.py) in this process and returns an
Outcome: "ok", "rejected" (the input was invalid: counted, not a bug) or "fail" with a kind, the
stage it happened at, and a signature that deduplicates failures. It is called inside worker
processes (tessel/fuzz/worker.py), so a crash of TVM or of generated code kills a child, not the
campaign, and a hang meets the parent's time limit.

Stages, in order, and what each oracle checks:

- program: the verifier accepts the unscheduled kernel (else rejected: "verify"), and the
  interpreter runs it on seeded random inputs (else rejected: "exec"); its outputs are the reference,
  unless they depend on memory read before it is written (rejected: "uninit"; see
  `_reads_uninitialized`).
- schedule: each schedule command applies or raises ScheduleError (skipped, counted); any other
  exception is a **crash**; the scheduled kernel must verify (**verify**), run without a data race
  (**race**: the interpreter's race checker, on GPU schedules) or an out-of-bounds access (**exec**),
  and give the reference's results (**diff**).
- pass:NAME: each pass of the pipeline; a non-TesselError exception is a **crash**, an
  ill-formed result a **verify** failure (the pass that broke it is named). After the last pass
  the interpreter must agree with the reference; on a mismatch each pass prefix is re-run to name
  the first pass after which results differ (**diff** at pass:NAME).
- tvm: for CPU cases marked `tvm`, the kernel is compiled by the CPU backend (TVM -> LLVM) and
  run; results must match the interpreter (**diff** at tvm), and any non-TesselError is a
  **crash** at tvm. cuda: GPU cases are printed as CUDA C++ (no GPU needed); a non-TesselError
  of the printer is a **crash** at cuda.
- gpu: where GPU execution is on (`tessel fuzz --gpu-run`, tessel/fuzz/gpu_oracle.py), the printed
  kernel is built and run on the GPU on the same inputs: **diff** / **crash** at gpu; a refusal
  (an architecture this GPU cannot run) is rejected. Outcome.gpu says the case ran there.
- determinism: the same case compiled twice must give the same IR and code text
  (**nondet**); the Outcome's digest lets the parent compare across processes too.

Deterministic steps are remembered per process by their input's text (explicit bounded caches,
`clear_caches()`): programs the verifier accepted, scheduled kernels by (program, schedule), TVM
modules by TVMScript text; a mutant that changed only its seed's pipeline skips the scheduling its
seed did (it reaches nothing new there); the determinism check always compiles afresh.

A TesselError from a pass or a backend on a valid kernel is recorded as rejected ("refused"),
not as a failure: tessel documents those refusals (e.g. unroll refuses bodies with allocations).

Example:
    >>> from tessel.ir.text import parse_kernel
    >>> from tessel.fuzz.case import Case
    >>> k = parse_kernel("kernel f(A: float32[4] global, B: float32[4] global) target cpu "
    ...                  "{ for i in 4 { B[i] = (A[i] * 2.0f32) } }")
    >>> run_case(Case(k, "cpu", [], [{"name": "simplify"}], seed=1)).status
    'ok'
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from tessel.errors import TesselError, VerifyError
from tessel.fuzz.case import Case, is_gpu
from tessel.fuzz.signature import _detail, message_form  # noqa: F401 - (message_form: re-exported)


@dataclass
class Outcome:
    status: str  # "ok" | "rejected" | "fail"
    kind: str = ""  # rejected: why; fail: crash / verify / race / exec / diff / nondet / hang / died
    stage: str = ""  # program, schedule, pass:NAME, tvm, cuda, worker
    message: str = ""
    skipped: int = 0  # schedule commands the schedule refused
    phases: list = field(default_factory=list)  # [(phase, features)]
    digest: str = ""
    kept_schedule: list = field(default_factory=list)  # the commands that applied
    gpu: bool = False  # the final kernel ran on a GPU (tessel/fuzz/gpu_oracle.py) and matched

    @property
    def signature(self) -> str:
        if self.status != "fail":
            return ""
        return ":".join(x for x in (self.kind, self.stage, _detail(self.kind, self.message)) if x)

    def to_dict(self) -> dict:
        return {"status": self.status, "kind": self.kind, "stage": self.stage, "message": self.message,
                "signature": self.signature, "skipped": self.skipped, "gpu": self.gpu}


class _Stop(Exception):
    def __init__(self, outcome: Outcome):
        self.outcome = outcome


def _crash(stage: str, e: BaseException) -> Outcome:
    tb = traceback.extract_tb(e.__traceback__)
    root = os.sep + "tessel" + os.sep
    where = "?"
    for fr in reversed(tb):
        if root in fr.filename and os.sep + "fuzz" + os.sep not in fr.filename:
            where = f"{fr.filename.rsplit(root, 1)[1]}:{fr.name}"
            break
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
    return Outcome("fail", "crash", stage, f"{type(e).__name__}@{where}\n{e}\n{text}")


# ---------------------------------------------------------------------------------------------
# inputs and comparison
# ---------------------------------------------------------------------------------------------


def make_inputs(kernel, seed: int) -> list:
    """Seeded random arrays for every buffer parameter (never zeros: values in about [-3, 3])."""
    from tessel.ir.dtypes import numpy_dtype

    rng = np.random.default_rng(seed)
    out = []
    for p in kernel.params:
        shape = tuple(p.shape)
        dt = numpy_dtype(p.dtype)
        if p.dtype == "bool":
            a = rng.random(shape) < 0.5
        elif p.dtype.startswith(("int", "uint")):
            a = rng.integers(-8, 9, size=shape)
        else:
            a = rng.standard_normal(shape) * 1.5
        out.append(np.asarray(a).astype(dt))
    return out


TOLERANCE = {"float64": 1e-9, "float32": 2e-5, "float16": 2e-2, "bfloat16": 4e-2}


def work_dtype(kernel) -> str | None:
    """The float dtype of least precision a kernel computes in (buffers, casts, constants): a float64
    output computed through float32 arithmetic is only as exact as float32 (TVM's fused multiply-add
    rounds once where the interpreter rounds twice: fuzz case tvm_f64_output_of_f32_arithmetic)."""
    from tessel.ir.nodes import Buffer, Cast, Const, walk

    seen = {n.dtype for n in walk(kernel) if isinstance(n, (Buffer, Cast, Const)) and n.dtype in TOLERANCE}
    return max(seen, key=TOLERANCE.get) if seen else None


def compare(got: list, want: list, params, loose: float = 1.0, nan_is_any: bool = False,
            work: str | None = None) -> str | None:
    """None when `got` matches `want` (NaN where NaN; floats within a dtype tolerance scaled by
    the output's magnitude, at least `work`'s: the dtype computed in), else a message naming the
    first buffer that differs. `nan_is_any`:
    a NaN in `want` accepts any value (for compiled code, where the interpreter's NaN may be the
    poison of memory read before it was written, which real memory does not reproduce)."""
    for p, g, w in zip(params, got, want):
        if p.dtype.startswith(("float", "bfloat")):
            g64, w64 = g.astype(np.float64), w.astype(np.float64)
            nan_g, nan_w = np.isnan(g64), np.isnan(w64)
            if nan_is_any:
                g64 = np.where(nan_w, w64, g64)
                nan_g = np.isnan(g64)
            if (nan_g != nan_w).any():
                i = np.argwhere(nan_g != nan_w)[0]
                return f"buffer '{p.name}' at {tuple(int(x) for x in i)}: got {g64[tuple(i)]}, want {w64[tuple(i)]}"
            fin = np.isfinite(w64) & ~nan_w
            inf_bad = ~fin & ~nan_w & (g64 != w64)
            if inf_bad.any():
                i = np.argwhere(inf_bad)[0]
                return f"buffer '{p.name}' at {tuple(int(x) for x in i)}: got {g64[tuple(i)]}, want {w64[tuple(i)]}"
            if fin.any():
                tol = max(TOLERANCE.get(p.dtype, 1e-5), TOLERANCE.get(work, 0.0)) * loose
                scale = max(1.0, float(np.abs(w64[fin]).max()))
                err = np.where(fin, np.abs(g64 - w64), 0.0)
                if (err > tol * scale).any():
                    i = np.unravel_index(int(err.argmax()), err.shape)
                    return (f"buffer '{p.name}' at {tuple(int(x) for x in i)}: got {g64[i]}, want {w64[i]} "
                            f"(tolerance {tol * scale:.3g})")
        elif not np.array_equal(g, w):
            i = np.argwhere(g != w)[0]
            return f"buffer '{p.name}' at {tuple(int(x) for x in i)}: got {g[tuple(i)]}, want {w[tuple(i)]}"
    return None


def _interp(kernel, inputs: list, seed: int) -> list:
    from tessel.ir.interp import run

    arrays = [a.copy() for a in inputs]
    run(kernel, *arrays, seed=seed, race_check=True)
    return arrays


def _other_poison(dtype: str):
    from tessel.ir.dtypes import is_bool, is_float

    return 7.25 if is_float(dtype) else (False if is_bool(dtype) else 77)


def _reads_uninitialized(kernel, inputs, seed, ref) -> bool:
    """Whether the program's results depend on allocated memory read before it is written: run it
    again with another fill value for fresh allocations. Such a program is invalid input (real memory
    holds anything there), so it is rejected, not compiled (mutations make these: a deleted init).
    The fill value is the interpreter's `runtime.poison_value`, swapped for the second run only."""
    from tessel.ir.interp import runtime
    from tessel.ir.nodes import Allocate, walk

    if not any(isinstance(n, Allocate) for n in walk(kernel.body)):
        return False
    original = runtime.poison_value
    runtime.poison_value = _other_poison
    try:
        alt = _interp(kernel, inputs, seed)
    except Exception:  # noqa: BLE001 - e.g. an index computed from that memory went out of bounds
        return True
    finally:
        runtime.poison_value = original
    return compare(alt, ref, kernel.params) is not None


# ---------------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------------


def schedule_case(case: Case, on_skip=None):
    """Apply the case's schedule commands; returns (Schedule, kept commands). A command raising a
    TesselError is skipped (`on_skip(command, error)` is told)."""
    from tessel.schedules.schedule import Schedule

    sch = Schedule(case.kernel)
    kept = []
    for cmd in case.schedule:
        try:
            sch.apply(cmd["primitive"], **cmd.get("args", {}))
            kept.append(cmd)
        except TesselError as e:
            if on_skip is not None:
                on_skip(cmd, e)
        except Exception as e:  # noqa: BLE001 - a crash of a primitive: the caller records it
            raise _Stop(_crash(f"schedule:{cmd.get('primitive')}", e)) from e
    return sch, kept


def _passes(case: Case):
    from tessel.compiler.pipeline import as_pipeline

    return as_pipeline(case.pipeline)


def _run_pass(p, kernel, quiet=nullcontext):
    from tessel.ir.verify import verify

    try:
        out = p(kernel)
    except TesselError as e:
        raise _Stop(Outcome("rejected", "refused", f"pass:{p.name}", str(e)[:500])) from e
    except Exception as e:  # noqa: BLE001
        raise _Stop(_crash(f"pass:{p.name}", e)) from e
    with quiet():
        if out is kernel or out == kernel:  # the pass changed nothing: verified already
            return out
        try:
            verify(out)
        except VerifyError as e:
            raise _Stop(Outcome("fail", "verify", f"pass:{p.name}", str(e)[:2000])) from e
        except Exception as e:  # noqa: BLE001 - the verifier itself crashed
            raise _Stop(_crash("verify", e)) from e
    return out


def _run_checked(kernel, inputs, seed, stage):
    from tessel.ir.interp import ExecutionError, RaceError

    try:
        return _interp(kernel, inputs, seed)
    except RaceError as e:
        raise _Stop(Outcome("fail", "race", stage, str(e)[:2000])) from e
    except ExecutionError as e:
        raise _Stop(Outcome("fail", "exec", stage, str(e)[:2000])) from e
    except TesselError as e:
        raise _Stop(Outcome("rejected", "refused", stage, str(e)[:500])) from e
    except Exception as e:  # noqa: BLE001 - the interpreter crashed on a verified kernel
        raise _Stop(_crash(f"interp:{stage}", e)) from e


def _judge(k, inputs, ref, params, seed, stage) -> Outcome | None:
    """None when kernel `k` runs (no race, nothing out of bounds) and matches `ref`, else the Outcome."""
    try:
        r = _run_checked(k, inputs, seed, stage)
    except _Stop as s:
        return s.outcome
    why = compare(r, ref, params)
    return Outcome("fail", "diff", stage, why) if why is not None else None


def _fails_verify(k) -> bool:
    from tessel.ir.verify import verify

    try:
        verify(k)
    except VerifyError:
        return True
    return False


def _culprit(kernel, commands: list, fails) -> str:
    """The schedule command (primitive, or template by name) after which `fails(scheduled kernel)`
    first holds: a binary search over prefixes of `commands` (the full list fails, none does not),
    so a GPU case costs a few interpreter runs. The stage of schedule failures names it, so one
    broken primitive or template is one signature, whatever else the case's schedule did."""
    from tessel.schedules.schedule import Schedule

    def prefix(n):
        sch = Schedule(kernel)
        for cmd in commands[:n]:
            try:
                sch.apply(cmd["primitive"], **cmd.get("args", {}))
            except Exception:  # noqa: BLE001 - (it applied a moment ago; a crash is not the culprit)
                pass
        return sch.kernel

    lo, hi = 0, len(commands)
    try:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fails(prefix(mid)):
                hi = mid
            else:
                lo = mid
    except Exception:  # noqa: BLE001 - a re-run of the oracle crashed: name what we have
        pass
    if not commands:
        return "none"
    cmd = commands[hi - 1]
    return cmd["args"].get("name", "template") if cmd["primitive"] == "template" else cmd["primitive"]


def compile_case(case: Case):
    """Schedule + pipeline, no oracle: (final kernel, code text). For the determinism check."""
    sch, _ = schedule_case(case)
    k = sch.kernel
    for p in _passes(case):
        k = p(k)
    return k, _code_text(case, k)


def _code_text(case: Case, kernel) -> str:
    if is_gpu(case.target) and kernel.target == "cuda":
        from tessel.codegen.cuda import cuda_source

        return cuda_source(kernel)
    if case.tvm and kernel.target == "cpu":
        from tessel.codegen.tvm import tvm_script

        return tvm_script(kernel)
    return ""


def run_case(case: Case, probe=None, determinism: bool = True) -> Outcome:
    """Compile and run `case`; see the module docstring. `probe`: a coverage Probe (started) whose
    features are harvested per phase into Outcome.phases."""
    phases: list = []
    skipped = [0]

    def phase(name):
        if probe is not None:
            phases.append((name, probe.harvest()))

    from tessel.fuzz.coverage import paused

    try:
        out = _run(case, phase, skipped, determinism, lambda: paused(probe))
    except _Stop as s:
        out = s.outcome
    except TesselError as e:  # e.g. a pipeline naming a pass this process does not know
        out = Outcome("rejected", "invalid", "case", str(e)[:500])
    phase("end")
    out.phases = phases
    out.skipped = skipped[0]
    return out


def _run(case: Case, phase, skipped, determinism: bool, quiet) -> Outcome:
    """`quiet()`: a context in which coverage tracing is paused (around code that is not the
    compiler's: the interpreter, the verifier, numpy, the determinism re-compilation)."""
    from tessel.ir.interp import ExecutionError
    from tessel.ir.text import to_text
    from tessel.ir.verify import verify

    kernel = case.kernel
    ktext = to_text(kernel)
    with quiet():
        if VERIFIED.get(ktext) is None:
            try:
                verify(kernel)
            except VerifyError as e:
                return Outcome("rejected", "verify", "program", str(e)[:500])
            VERIFIED.put(ktext, True)
        inputs = make_inputs(kernel, case.seed)
        try:
            ref = _interp(kernel, inputs, case.seed)
        except (ExecutionError, TesselError) as e:
            return Outcome("rejected", "exec", "program", str(e)[:500])
        except Exception as e:  # noqa: BLE001
            return _crash("interp:program", e)
        if _reads_uninitialized(kernel, inputs, case.seed, ref):
            return Outcome("rejected", "uninit", "program", "the outputs depend on memory read before it is written")
    phase("program")

    skey = (ktext, json.dumps(case.schedule, sort_keys=True))
    hit = SCHEDULED.get(skey)
    if hit is None:
        before = skipped[0]
        sch, kept = schedule_case(case, on_skip=lambda c, e: skipped.__setitem__(0, skipped[0] + 1))
        k = sch.kernel
        with quiet():
            try:
                verify(k)
            except VerifyError as e:
                return Outcome("fail", "verify", f"schedule:{_culprit(kernel, kept, _fails_verify)}", str(e)[:2000])
        SCHEDULED.put(skey, (k, kept, skipped[0] - before))
    else:  # scheduled (and verified) before in this process: the same kernel, no new coverage
        k, kept, n = hit
        skipped[0] += n
    phase("schedule")
    stages = [("schedule", k)]
    for p in _passes(case):
        k = _run_pass(p, k, quiet)
        stages.append((f"pass:{p.name}", k))
        phase(f"pass:{p.name}")

    with quiet():
        try:
            got = _run_checked(k, inputs, case.seed, stages[-1][0])
            bad = compare(got, ref, kernel.params)
        except _Stop:
            bad = "failed"
    if bad is not None:  # name the first stage that fails or whose results differ
        for stage, sk in stages:
            with quiet():
                failed = _judge(sk, inputs, ref, kernel.params, case.seed, stage)
                if failed is not None and failed.status != "fail":
                    raise _Stop(failed)
                if failed is not None and stage == "schedule":  # which schedule command broke it
                    failed.stage += ":" + _culprit(kernel, kept, lambda sk_: _judge(
                        sk_, inputs, ref, kernel.params, case.seed, stage) is not None)
            if failed is not None:
                return failed
        return Outcome("fail", "flaky", stages[-1][0], f"the final kernel failed ({bad}) but no stage did on a re-run")
    phase("interp")

    code, ran_gpu = "", False
    if case.target == "cpu" and case.tvm and k.target == "cpu":
        code = _tvm_check(k, inputs, ref, kernel.params, quiet)
        phase("tvm")
    elif is_gpu(case.target) and k.target == "cuda":
        printed = _cuda_print(k)
        code = printed.source
        phase("cuda")
        from tessel.fuzz import gpu_oracle

        ran_gpu = gpu_oracle.check(case, k, printed, inputs, ref, kernel.params, quiet)
    digest = hashlib.sha256((to_text(k) + "\n" + code).encode()).hexdigest()[:16]

    if determinism:
        try:
            with quiet():  # (the same code again: no new coverage to see)
                k2, code2 = compile_case(case)
        except Exception as e:  # noqa: BLE001 - it compiled a moment ago
            return Outcome("fail", "nondet", "compile", f"the second compilation raised {type(e).__name__}: {e}")
        if k2 != k:
            return Outcome("fail", "nondet", "ir", "compiling the case twice gave different IR:\n" + to_text(k2)[:1500])
        if code and code2 != code:
            return Outcome("fail", "nondet", "code", "compiling the case twice gave different code text")
    return Outcome("ok", digest=digest, kept_schedule=kept, gpu=ran_gpu)


class ModuleLRU:
    """Compiled TVM modules of this worker process by their TVMScript text (what LLVM gets), so a
    case whose kernel translates to the same TIR as an earlier one is not built again: the
    translation (tessel's code generator) still runs every time, only TVM's build is skipped.
    An explicit, bounded cache (`size` modules, least recently used dropped first).

    >>> c = ModuleLRU(size=2); c.put("a", 1); c.put("b", 2); c.get("a"); c.put("c", 3)
    1
    >>> c.get("b") is None, c.get("a"), c.hits
    (True, 1, 2)
    """

    def __init__(self, size: int = 256):
        from collections import OrderedDict

        self.size, self.items, self.hits = size, OrderedDict(), 0

    def get(self, key):
        m = self.items.get(key)
        if m is not None:
            self.items.move_to_end(key)
            self.hits += 1
        return m

    def put(self, key, module) -> None:
        self.items[key] = module
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


TVM_MODULES = ModuleLRU()
# Results of deterministic steps this process has taken, by their input's text, so a case that
# repeats one (a mutant that changed only its seed's pipeline, or only its schedule) skips it: what
# it reaches is already known. Programs the verifier accepted, by kernel text:
VERIFIED = ModuleLRU(1024)
# (kernel text, schedule commands) -> (scheduled kernel, commands kept, commands skipped), verified:
SCHEDULED = ModuleLRU(256)


def clear_caches() -> None:
    """Forget every cached step (after changing tessel's code in this process: a planted mutant)."""
    from tessel.fuzz import gpu_oracle

    for c in (TVM_MODULES, VERIFIED, SCHEDULED):
        c.items.clear()
    gpu_oracle.clear()


def _script(prim) -> str:
    """TVMScript of a PrimFunc (the module cache's key and the code text), or "" where TVM's printer
    fails on a function its compiler builds (it constant-folds `x / (floor(-1.34 / 1.87) + 1.0)` and
    aborts on the division by zero): the oracle's own use of the printer is not the compile path."""
    try:
        return prim.script()
    except Exception:  # noqa: BLE001 - TVM's InternalError
        return ""


def _tvm_check(k, inputs, ref, params, quiet=nullcontext) -> str:
    try:
        from tessel.codegen import tvm_runtime, tvm_tir
        from tessel.codegen.tvm import build_module

        prim = tvm_tir.to_tvm(k)  # tessel's translation: traced
        with quiet():  # TVM's printer and LLVM build: not tessel's code
            text = _script(prim)
            module = TVM_MODULES.get(text) if text else None
            if module is None:
                module = build_module(k, prim, strided=False)
                if text:
                    TVM_MODULES.put(text, module)
        runner = tvm_runtime.Runner(module, tvm_tir.symbol_name(k), k.params)
    except TesselError as e:
        raise _Stop(Outcome("rejected", "refused", "tvm", str(e)[:500])) from e
    except Exception as e:  # noqa: BLE001
        raise _Stop(_crash("tvm", e)) from e
    arrays = [a.copy() for a in inputs]
    with quiet():
        try:
            runner(*arrays)
        except TesselError as e:
            raise _Stop(Outcome("rejected", "refused", "tvm", str(e)[:500])) from e
        except Exception as e:  # noqa: BLE001
            raise _Stop(_crash("tvm", e)) from e
        bad = compare(arrays, ref, params, loose=4.0, nan_is_any=True, work=work_dtype(k))
    if bad is not None:
        raise _Stop(Outcome("fail", "diff", "tvm", bad))
    return text


def _cuda_print(k):
    """The PrintedKernel of `k` (its `.source` is the CUDA C++), or _Stop."""
    try:
        from tessel.codegen.cuda_printer import print_kernel

        return print_kernel(k)
    except TesselError as e:
        raise _Stop(Outcome("rejected", "refused", "cuda", str(e)[:500])) from e
    except Exception as e:  # noqa: BLE001
        raise _Stop(_crash("cuda", e)) from e


__all__ = ["Outcome", "clear_caches", "compare", "compile_case", "make_inputs", "run_case", "schedule_case"]
