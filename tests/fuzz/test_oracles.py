"""Each oracle fires on a planted bug (tessel/fuzz/planted.py registers deliberately wrong passes),
and the reducer shrinks a failing case to a small one failing the same way."""

import numpy as np
import pytest

import tessel as ts
import tessel.fuzz.planted  # noqa: F401 - registers the planted passes
from tessel.fuzz.case import Case, FuzzError
from tessel.fuzz.mutate_ir import default_schedule_cmds
from tessel.fuzz.mutate_passes import base_pipeline
from tessel.fuzz.oracles import compare, run_case
from tessel.fuzz.reduce import reduce_case, size
from tessel.fuzz.worker import Worker, run_one
from tessel.ir.text import parse_kernel


def _reduction_case(**kw) -> Case:
    A = ts.placeholder((6, 16), name="A")
    B = ts.placeholder((16,), name="B")
    k = ts.reduce_axis(16, name="k")
    T = ts.compute((6, 16), lambda i, j: ts.tanh(A[i, j]) + B[j] * 2.0, name="T")
    S = ts.compute((6,), lambda i: ts.sum(T[i, k] + 1.0, axis=k), name="S")
    kern = ts.lower([A, B, S])
    return Case(kern, "cpu", default_schedule_cmds(kern, "cpu"), base_pipeline("cpu"), 3, **kw)


def _with(case: Case, *passes) -> Case:
    return case.replace(pipeline=case.pipeline + [{"name": p} for p in passes])


def test_a_correct_case_passes():
    assert run_case(_reduction_case()).status == "ok"


def test_differential_oracle_catches_a_wrong_pass_and_the_reducer_shrinks_it():
    case = _with(_reduction_case(), "hoist", "planted_flip", "unroll")
    out = run_case(case)
    assert (out.status, out.kind, out.stage) == ("fail", "diff", "pass:planted_flip")
    small = reduce_case(case, lambda c: run_case(c).signature, budget_s=60)
    assert run_case(small).signature == out.signature
    assert size(small) < size(case) / 2
    assert [p["name"] for p in small.pipeline] == ["planted_flip"]
    again = Case.from_text(small.to_text())  # saved in the IR text form, replays the same way
    assert run_case(again).signature == out.signature


def test_crash_oracle():
    # (unscheduled: planted_crash fires on a reduction guard, which cpu.generic's vector reductions hoist)
    out = run_case(_with(_reduction_case().replace(schedule=[]), "planted_crash"))
    assert (out.kind, out.stage) == ("crash", "pass:planted_crash")
    assert out.signature.startswith("crash:pass:planted_crash:KeyError@")


def test_verifier_after_each_pass():
    out = run_case(_with(_reduction_case(), "simplify", "planted_bad_ir", "simplify"))
    assert (out.kind, out.stage) == ("verify", "pass:planted_bad_ir")
    assert "nowhere" in out.message


def test_nondeterminism_oracle():
    out = run_case(_with(_reduction_case(), "planted_nondet"))
    assert out.signature == "nondet:ir"


def _gpu_reduction() -> Case:
    A = ts.placeholder((2, 512), name="A")
    k = ts.reduce_axis(512, name="k")
    kern = ts.lower([A, ts.compute((2,), lambda i: ts.sum(A[i, k], axis=k), name="S")])
    cmd = {"primitive": "template", "args": {"name": "gpu.reduce_inner", "knobs": {"threads": 128, "rows": 1},
                                             "target": "cuda"}}
    return Case(kern, "cuda", [cmd], base_pipeline("cuda"), 5)


def test_race_oracle_on_a_gpu_schedule_without_its_barriers():
    assert run_case(_gpu_reduction()).status == "ok"
    out = run_case(_with(_gpu_reduction(), "planted_drop_barrier"))
    assert (out.kind, out.stage) == ("race", "pass:planted_drop_barrier")


def test_tvm_differential_oracle(monkeypatch):
    case = _reduction_case(tvm=True)
    assert run_case(case).status == "ok"  # the real CPU backend agrees with the interpreter
    from tessel.codegen import tvm_runtime

    class Wrong(tvm_runtime.Runner):  # a planted code generator bug: the last output off by one
        def __call__(self, *arrays):
            super().__call__(*arrays)
            arrays[-1][...] += 1

    monkeypatch.setattr(tvm_runtime, "Runner", Wrong)
    out = run_case(case)
    assert (out.kind, out.stage) == ("diff", "tvm")


def test_schedule_commands_refused_are_skipped_and_counted():
    case = _reduction_case()
    bad = {"primitive": "split", "args": {"loop": "nope", "factors": [2, None]}}
    case = case.replace(schedule=case.schedule + [bad])
    out = run_case(case)
    assert out.status == "ok" and out.skipped == 1


def test_invalid_programs_are_rejected_not_failed():
    k = parse_kernel("kernel f(A: float32[4] global) target cpu { for i in 5 { A[i] = 1.0f32 } }")
    assert run_case(Case(k)).status == "rejected"


def test_compare_nan_and_tolerance():
    p = [ts.placeholder((3,), "float32", name="X").buffer]
    a = np.array([1.0, np.nan, 3.0], "float32")
    assert compare([a.copy()], [a], p) is None
    b = a.copy()
    b[0] = 1.0 + 1e-7
    assert compare([b], [a], p) is None
    b[0] = 1.1
    assert "buffer 'X' at (0,)" in compare([b], [a], p)
    b = a.copy()
    b[1] = 0.0
    assert compare([b], [a], p) is not None


def test_hang_and_a_dying_worker_are_caught():
    """A pass that never returns meets the time limit; one that segfaults kills its child: both
    recorded, and the worker replaced."""
    k = parse_kernel("kernel f(A: int32[4] global, B: int32[4] global) target cpu "
                     "{ for i in 4 { B[i] = (A[i] % 3) } }")
    w = Worker(coverage=False, plugins=["tessel.fuzz.planted"])
    try:
        res = run_one(w, Case(k, pipeline=[{"name": "planted_hang"}]), timeout=3)
        assert res["signature"] == "hang:worker"
        res = run_one(w, Case(k, pipeline=[{"name": "planted_segfault"}]), timeout=30)
        assert res["signature"] == "died:worker:SIGSEGV"
        assert run_one(w, Case(k, pipeline=[{"name": "simplify"}]), timeout=30)["status"] == "ok"
    finally:
        w.close()


def test_bad_case_text_is_a_clear_error():
    with pytest.raises(FuzzError, match="not a tessel fuzz case"):
        Case.from_text("kernel f() {}")
    with pytest.raises(FuzzError, match="unknown target 'gpu'"):
        Case(parse_kernel("kernel f(A: float32[1] global) target cpu { A[0] = 1.0f32 }"), "gpu")


def test_compare_nan_is_any_for_compiled_code():
    """The interpreter's poison (NaN) for memory read before written is no promise about real memory."""
    p = [ts.placeholder((2,), "float32", name="X").buffer]
    want = np.array([np.nan, 1.0], "float32")
    assert compare([np.array([5.0, 1.0], "float32")], [want], p, nan_is_any=True) is None
    assert compare([np.array([5.0, 1.0], "float32")], [want], p) is not None
    assert compare([np.array([5.0, 2.0], "float32")], [want], p, nan_is_any=True) is not None


def test_programs_reading_uninitialized_memory_are_rejected():
    """A deleted init makes the result depend on what memory held: invalid input, not a compiler bug."""
    k = parse_kernel("kernel f(A: float32[4] global, B: float32[4] global) target cpu { alloc T: float32[4] global "
                     "{ for i in 4 { T[i] = (T[i] + A[i]) } for j in 4 { B[j] = T[j] } } }")
    out = run_case(Case(k, pipeline=[{"name": "simplify"}]))
    assert (out.status, out.kind) == ("rejected", "uninit")
    good = parse_kernel("kernel f(A: float32[4] global, B: float32[4] global) target cpu { alloc T: float32[4] global "
                        "{ for i in 4 { T[i] = A[i] } for j in 4 { B[j] = T[j] } } }")
    assert run_case(Case(good, pipeline=[{"name": "simplify"}])).status == "ok"


def test_a_repeated_schedule_comes_from_the_cache_and_judges_alike():
    """A second case with the same program and schedule (a pipeline-only mutant) reuses the scheduled
    kernel: same verdict, same skipped count, no schedule coverage the second time; a wrong pass
    after it is still caught; clear_caches() makes it schedule again."""
    from tessel.fuzz import oracles
    from tessel.fuzz.coverage import Probe

    seed = int(np.random.default_rng().integers(1 << 20))
    case = _reduction_case().replace(seed=seed,
                                     schedule=_reduction_case().schedule + [{"primitive": "split", "args": {
                                         "loop": "no_such_loop", "factors": [None, 2]}}])
    oracles.clear_caches()
    probe = Probe()
    outs = []
    for c in (case, case.replace(seed=seed + 1), _with(case, "planted_flip")):
        probe.start()
        try:
            outs.append(run_case(c, probe))
        finally:
            probe.stop()
    first, again, wrong = outs
    assert first.status == again.status == "ok" and first.skipped == again.skipped == 1
    sched = [dict(o.phases)["schedule"] for o in (first, again)]
    assert sched[0] and not sched[1]
    assert wrong.status == "fail" and wrong.kind == "diff", wrong.signature
    oracles.clear_caches()
    probe.start()
    try:
        assert dict(run_case(case, probe).phases)["schedule"]
    finally:
        probe.stop()


def test_compare_takes_the_tolerance_of_the_dtype_computed_in():
    """A float64 output computed through float32 arithmetic matches within float32's tolerance (TVM's
    fused multiply-add rounds once where the interpreter rounds twice), and only then."""
    from tessel.fuzz.oracles import work_dtype

    x = ts.placeholder((4,), name="x")
    y = ts.compute((4,), lambda i: (x[i] * x[i] + 1.0).astype("float64"), name="y")
    kernel = ts.lower([x, y])
    assert work_dtype(kernel) == "float32"
    want = np.random.default_rng().standard_normal(4)
    got = want + 1e-7 * np.abs(want)  # about one float32 ulp: far beyond float64's tolerance
    out = [p for p in kernel.params if p.name == "y"]
    assert compare([got], [want], out) is not None
    assert compare([got], [want], out, work=work_dtype(kernel)) is None
    assert compare([want + 1e-3], [want], out, work="float32") is not None


def test_fresh_convolutions_start_from_winograd_knobs_half_the_time():
    """With the campaign's rng, default_schedule_cmds gives a Winograd-eligible 3x3 convolution cpu.conv's
    Winograd knobs about half the time (compile() would never pick Winograd at this size), and such a
    case passes the oracles; without an rng it is compile()'s default."""
    import random

    from tessel.fuzz import suite

    k = suite.conv(1, 8, 16, 8, 10)
    assert default_schedule_cmds(k, "cpu")[0]["args"]["knobs"] is None
    rng = random.Random(int(np.random.SeedSequence().entropy % 2**32))
    cmds = [default_schedule_cmds(k, "cpu", rng)[0]["args"] for _ in range(40)]
    wino = [c for c in cmds if c["knobs"] and c["knobs"]["algorithm"] == "winograd"]
    assert all(c["name"] == "cpu.conv" for c in cmds) and 8 <= len(wino) <= 32
    case = Case(k, "cpu", [{"primitive": "template", "args": wino[0]}], [], seed=3)
    assert run_case(case).status == "ok"
