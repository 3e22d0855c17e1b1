"""The default schedules as templates.

- With default knobs they apply exactly the primitives the default schedules applied before they
  became templates (template_golden.json, captured from the old code), so the printed IR is
  identical.
- Random valid points of each default template's space give kernels that compute what the naive
  kernel computes (reference interpreter, fresh random inputs, outputs starting from garbage).
- Each space's size and what its constraints prune are reported (run with -s to see them).
- GPU templates with their barriers removed fail in the interpreter (a race or poison).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessel.ir import interp
from tessel.ir.nodes import Barrier, Seq, rewrite
from tessel.ir.text import to_text
from tessel.ir.verify import verify
from tessel.schedules.cpu_host import host_vector
from tessel.schedules.generic import default_schedule
from tessel.schedules.generic_gpu import default_gpu_schedule, default_gpu_template
from tessel.schedules.schedule import Schedule
from tessel.schedules.template import get_template
from tests.schedules.template_cases import (
    CPU_CASES, GOLDEN, GPU_CASES, NP, elementwise, lowered, matmul, primitive_steps, row_reduce, transpose, transpose3,
)

GOLD = json.loads(GOLDEN.read_text())
# The default tensor-core GEMM changed on purpose: it is the GEMM template "gemm.mma_sync"
# (tessel/schedules/gemm.py, d6c0c9e), which builds its IR directly, and on sm_90a the Hopper
# template "gemm.wgmma" where it applies; tests/schedules/test_gemm*.py
# and test_generic_gpu.py check it. Every other default is unchanged.
NEW_GEMM = {"matmul_mma_64", "matmul_mma_bf16_t_32"}
# cpu.generic's elementwise stages changed on purpose (6042137): a non-divisible innermost extent is
# vectorized as whole vectors plus a remainder ('peel') instead of staying serial. Checked below
# against the naive kernel in the interpreter.
NEW_CPU = {"elementwise_37x19"}
# cpu.generic's row pipelines changed on purpose (cpu_rows.py): softmax's max, sum and output share one
# loop over the rows, built directly; tests/schedules/test_cpu_rows.py checks them against numpy, and
# below against the naive kernel in the interpreter.
NEW_ROWS = {"softmax_6x40"}
# cpu.generic's reductions along contiguous rows changed on purpose (cpu_reduce.py): vector
# accumulators and a tree combine, built directly (no primitive steps). Checked below against the naive
# kernel in the interpreter; tests/schedules/test_cpu_reduce.py checks them against numpy.
NEW_REDUCE = {"gemm_bt_32x48x20", "row_sum_8x100", "row_max_300x64", "layer_norm_5x64"}


def _default(target, kernel, case=None):
    return default_schedule(kernel, "cpu", _old_cpu_knobs(case)) if target == "cpu" else \
        default_gpu_schedule(kernel, "cuda")


def _old_cpu_knobs(case):
    """The knobs the golden CPU contraction schedules were captured with. cpu.generic's defaults
    changed on purpose (host-sized register tiles, small contractions on one thread, cpuspeed's
    f8aeb13 / 3e1cccf); with these knobs the template still applies exactly the old primitives."""
    splits = [s for s in GOLD["cpu"].get(case, []) if s["primitive"] == "split"]
    if case is None or not any(s["primitive"] == "cache_write" for s in GOLD["cpu"][case]) or len(splits) < 2:
        return None
    return {"tile_rows": splits[0]["args"]["factors"][1], "tile_cols": splits[1]["args"]["factors"][1],
            "min_parallel_work": 0}


def test_the_default_gemm_is_the_gemm_template():
    # sm_90a takes the Hopper template (TMA + wgmma) where a 64-wide tile fits, sm_80 the mma.sync one
    for case in NEW_GEMM:
        kernel = GPU_CASES[case]()
        for target, want in (("cuda:sm_80", "gemm.mma_sync"),
                             ("cuda:sm_90a", "gemm.wgmma" if case == "matmul_mma_64" else "gemm.mma_sync")):
            sch = default_gpu_schedule(kernel, target)
            assert [s.primitive for s in sch.trace] == ["template"] and sch.trace[0].args["name"] == want, target
            assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel


@pytest.mark.parametrize("case", sorted(NEW_CPU))
def test_changed_cpu_defaults_peel_and_compute_what_the_naive_kernel_computes(case):
    kernel = CPU_CASES[case]()
    sch = default_schedule(kernel, "cpu")
    assert any(s["primitive"] == "peel" for s in primitive_steps(sch.trace))
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    seed = int(np.random.SeedSequence().entropy % 2**32)
    for name, want, got in _run_against_naive(kernel, sch.kernel, seed):
        np.testing.assert_allclose(got, want, rtol=_tol(kernel), atol=_tol(kernel), err_msg=f"{name}, seed {seed}")


@pytest.mark.parametrize("case", sorted(NEW_ROWS))
def test_row_pipelines_share_one_row_loop_and_compute_what_the_naive_kernel_computes(case):
    kernel = CPU_CASES[case]()
    sch = default_schedule(kernel, "cpu")
    assert "_row[" in to_text(sch.kernel)
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    seed = int(np.random.SeedSequence().entropy % 2**32)
    for name, want, got in _run_against_naive(kernel, sch.kernel, seed):
        np.testing.assert_allclose(got, want, rtol=_tol(kernel), atol=_tol(kernel), err_msg=f"{name}, seed {seed}")


@pytest.mark.parametrize("case", sorted(NEW_REDUCE))
def test_row_reductions_take_vector_accumulators_and_compute_what_the_naive_kernel_computes(case):
    kernel = CPU_CASES[case]()
    sch = default_schedule(kernel, "cpu", _old_cpu_knobs(case))
    assert "_vacc" in to_text(sch.kernel)
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    seed = int(np.random.SeedSequence().entropy % 2**32)
    for name, want, got in _run_against_naive(kernel, sch.kernel, seed):
        np.testing.assert_allclose(got, want, rtol=_tol(kernel), atol=_tol(kernel), err_msg=f"{name}, seed {seed}")


@pytest.mark.parametrize("target,case", [("cpu", c) for c in CPU_CASES if c not in NEW_CPU | NEW_REDUCE | NEW_ROWS] +
                         [("cuda", c) for c in GPU_CASES if c not in NEW_GEMM])
def test_default_knobs_reproduce_the_old_schedules(target, case):
    kernel = (CPU_CASES if target == "cpu" else GPU_CASES)[case]()
    sch = _default(target, kernel, case)
    assert sch.trace[0].primitive == "template"
    assert primitive_steps(sch.trace) == GOLD[target][case]
    old = Schedule(kernel)
    for step in GOLD[target][case]:
        old.apply(step["primitive"], **step["args"])
    assert to_text(sch.kernel) == to_text(old.kernel)  # identical printed IR
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel


def _run_against_naive(naive, scheduled, seed):
    """Run both kernels on the same fresh random inputs; the scheduled one's outputs start from
    garbage. Returns [(name, want, got)] for the outputs."""
    rng = np.random.default_rng(seed)
    written = {p.name for p in naive.params} - _inputs(naive)
    a = [rng.standard_normal(p.shape).astype(NP[p.dtype]) if p.dtype in NP else
         rng.standard_normal(p.shape).astype(p.dtype) for p in naive.params]
    b = [(x * 0 + 1234.5).astype(x.dtype) if p.name in written else x.copy() for p, x in zip(naive.params, a)]
    interp.run(naive, *a)
    interp.run(scheduled, *b)
    return [(p.name, a[i], b[i]) for i, p in enumerate(naive.params) if p.name in written]


def _inputs(kernel):
    from tessel.ir.nodes import Store, walk

    stored = {n.buffer.name for n in walk(kernel.body) if isinstance(n, Store)}
    return {p.name for p in kernel.params if p.name not in stored}


def _tol(kernel):
    dts = {p.dtype for p in kernel.params}
    return 3e-2 if dts & {"float16", "bfloat16"} else 1e-4


# small kernels for each template (the interpreter runs every thread)
SPACE_CASES = {
    "cpu.generic": [("gemm", lambda: matmul(12, 20, 8, "float32")),
                    ("bmm", lambda: matmul(6, 16, 5, "float32", batch=2)),
                    ("ew", lambda: elementwise((6, 32))),
                    ("softmax", lambda: lowered("softmax", [(4, 24)], "float32"))],
    "gpu.elementwise": [("ew", lambda: elementwise((12, 16))), ("ew_f16", lambda: elementwise((8, 16), "float16"))],
    "gpu.transpose": [("t2", lambda: transpose(20, 12)), ("t3", lambda: transpose3(2, 8, 12))],
    "gpu.reduce_inner": [("rows", lambda: row_reduce(4, 80)), ("max", lambda: row_reduce(6, 40, "max"))],
    "gpu.reduce_outer": [("rows", lambda: row_reduce(40, 6))],
    "gpu.rowwise": [("softmax", lambda: lowered("softmax", [(4, 40)], "float32")),
                    ("rms", lambda: lowered("rms_norm", [(2, 72), (72,)], "float32"))],
}
TARGET = {"cpu.generic": "cpu"}
SAMPLES = 3


@pytest.mark.parametrize("template,case", [(t, c) for t, cases in SPACE_CASES.items() for c, _ in cases])
def test_random_valid_points_compute_what_the_naive_kernel_computes(template, case):
    tpl = get_template(template)
    kernel = dict(SPACE_CASES[template])[case]()
    target = TARGET.get(template, "cuda:sm_80")
    space = tpl.space(kernel, target)
    points = space.sample(SAMPLES, seed=sum(map(ord, template + case)))  # stable across processes
    assert points, f"{template} on {case}: no valid point"
    assert space.is_valid(space.default)
    for i, knobs in enumerate(points):
        sch = tpl.apply(kernel, knobs, target)
        verify(sch.kernel)
        assert tpl.apply(kernel, knobs, target).kernel == sch.kernel  # deterministic
        assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
        for name, want, got in _run_against_naive(kernel, sch.kernel, seed=100 + i):
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=_tol(kernel),
                                       atol=_tol(kernel), err_msg=f"{template} {case} {knobs} output {name}")


REPORT_CASES = [
    ("cpu.generic", "cpu", lambda: matmul(64, 64, 32, "float32")),
    ("cpu.generic", "cpu", lambda: elementwise((64, 64))),
    ("gpu.elementwise", "cuda:sm_80", lambda: elementwise((64, 48), "float16")),
    ("gpu.transpose", "cuda:sm_80", lambda: transpose(40, 70)),
    ("gpu.reduce_inner", "cuda:sm_80", lambda: row_reduce(6, 100)),
    ("gpu.reduce_outer", "cuda:sm_80", lambda: row_reduce(300, 7)),
    ("gpu.rowwise", "cuda:sm_90a", lambda: lowered("softmax", [(6, 40)], "float32")),
]


@pytest.mark.parametrize("template,target,make", REPORT_CASES, ids=[f"{t}-{i}" for i, (t, _, _) in
                                                                    enumerate(REPORT_CASES)])
def test_space_size_and_pruning_are_reported(template, target, make):
    space = get_template(template).space(make(), target)
    rep = space.report()
    print(json.dumps(rep))
    assert rep["size"] == len(space) > 1 and rep["exact"]
    assert rep["valid"] + rep["pruned"] == rep["size"] and sum(rep["pruned_by"].values()) == rep["pruned"]
    assert rep["valid"] == sum(1 for _ in space.valid_points()) >= 1
    assert space.is_valid(space.default)
    invalid = [p for p in space if not space.is_valid(p)]
    for p in invalid[:5]:
        with pytest.raises(Exception) as e:
            get_template(template).apply(make(), p, target)
        assert space.check(p) in str(e.value)  # apply refuses it with the reason the space gives


def test_impossible_knobs_of_default_templates_name_knob_and_limit():
    from tessel.errors import ScheduleError

    cases = [
        ("gpu.elementwise", elementwise((37, 19)), {"vector": 2},
         "knob 'vector'=2: does not divide the element count 703"),
        ("gpu.elementwise", elementwise((64, 64)), {"vector": 8},
         "knob 'vector'=8: 32-byte accesses exceed the target's widest 16-byte access"),
        ("gpu.transpose", transpose(40, 70), {"tile": 64, "block_rows": 32},
         "knobs 'tile'=64, 'block_rows'=32: 2048 threads per block exceed the target's 1024"),
        ("gpu.reduce_inner", row_reduce(6, 100), {"threads": 256, "rows": 6},
         "knobs 'threads'=256, 'rows'=6: 1536 threads per block exceed the target's 1024"),
        ("gpu.reduce_inner", row_reduce(6, 100), {"rows": 4}, "knob 'rows'=4: does not divide the row count 6"),
        ("cpu.generic", matmul(64, 64, 64, "float32"), {"tile_rows": 16, "tile_cols": 64},
         f"knobs 'tile_rows'=16, 'tile_cols'=64: needs {16 * 64 * 4 // host_vector().bytes} vector registers, "
         f"the host has {host_vector().registers}"),
        ("cpu.generic", matmul(4, 64, 32, "float32"), {"tile_rows": 6},
         "knob 'tile_rows'=6: exceeds the contraction's row extent 4"),
    ]
    for name, kernel, knobs, message in cases:
        target = "cpu" if name.startswith("cpu") else "cuda:sm_80"
        with pytest.raises(ScheduleError) as e:
            get_template(name).apply(kernel, knobs, target)
        assert message in str(e.value), (name, str(e.value))


@pytest.mark.parametrize("template,make,knobs", [
    ("gpu.transpose", lambda: transpose(20, 12), {}),
    ("gpu.reduce_inner", lambda: row_reduce(2, 200), {"threads": 64, "rows": 1}),
    ("gpu.rowwise", lambda: lowered("softmax", [(2, 80)], "float32"), {"threads": 64, "rows": 1}),
])
def test_gpu_templates_without_barriers_fail_in_the_interpreter(template, make, knobs):
    kernel = make()
    sch = get_template(template).apply(kernel, knobs, "cuda")
    assert any(isinstance(n, Barrier) for n in _walk(sch.kernel))
    broken = rewrite(sch.kernel, lambda n: Seq(()) if isinstance(n, Barrier) else None, fixpoint=False)
    try:
        outs = _run_against_naive(kernel, broken, seed=7)
    except interp.RaceError as e:
        assert "race" in str(e)
        return
    assert any(not np.allclose(got, want, rtol=1e-4, atol=1e-4) for _, want, got in outs)


def _walk(kernel):
    from tessel.ir.nodes import walk

    return walk(kernel.body)


def test_default_gpu_template_follows_the_old_rules():
    assert default_gpu_template(elementwise((8, 8))).name == "gpu.elementwise"
    assert default_gpu_template(transpose(8, 16)).name == "gpu.transpose"
    assert default_gpu_template(row_reduce(4, 64)).name == "gpu.reduce_inner"
    assert default_gpu_template(matmul(16, 8, 16, "float16")).name == "gemm.mma_sync"
    assert default_gpu_template(matmul(16, 8, 16, "float32")).name == "gpu.matmul_simt"
    assert default_gpu_template(lowered("layer_norm", [(5, 64), (64,), (64,)], "float32")).name == "gpu.rowwise"


@pytest.mark.parametrize("case", ["gemm", "bmm", "ew"])
def test_random_cpu_points_compile_through_tvm_and_match_numpy(case):
    """The CPU template's knobs reach LLVM: random valid points build with TVM and compute what
    numpy computes on fresh inputs."""
    import tessel as ts

    tpl = get_template("cpu.generic")
    make = dict(SPACE_CASES["cpu.generic"])[case]
    kernel = make()
    rng = np.random.default_rng(11)
    for knobs in tpl.space(kernel, "cpu").sample(2, seed=5):
        sch = tpl.apply(kernel, knobs, "cpu")
        built = ts.build(kernel, target="cpu", schedule=sch)
        ins = [rng.standard_normal(p.shape).astype(p.dtype) for p in kernel.params[:-1]]
        out = np.full(kernel.params[-1].shape, 77.0, kernel.params[-1].dtype)
        built(*ins, out)
        want = np.exp(ins[0]) * ins[0] if case == "ew" else np.matmul(ins[0], ins[1])
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=f"{case} {knobs}")
