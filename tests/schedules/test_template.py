"""Templates (tessel/schedules/template.py): knob declaration and validation, constraints against
the target checked before applying (each impossible knob names the knob, its value and the limit),
deterministic application, trace replay through the "template" step, declared fallbacks, the
registry, and the knob space the autotuner uses."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.text import to_text
from tessel.schedules.schedule import Schedule
from tessel.schedules.target_limits import limits_of, resource_violations, resources
from tessel.schedules.template import (
    Bool, Choice, IntRange, Pow2, Template, applicable, at_most, constraint, divides, get_template, max_registers,
    max_shared_memory, max_threads, register, templates, unregister,
)
from tests.schedules.template_cases import elementwise, matmul, row_reduce, transpose


# -- knobs ----------------------------------------------------------------------------------------

def test_knob_domains():
    assert Choice("bk", (16, 32, 64)).values() == (16, 32, 64) and Choice("bk", (16, 32, 64)).default == 16
    assert IntRange("r", 2, 10, step=4).values() == (2, 6, 10)
    assert Pow2("t", 32, 1024).values() == (32, 64, 128, 256, 512, 1024)
    assert Bool("p", default=True).values() == (False, True) and Bool("p", default=True).default is True
    assert Choice("s", ("a", "b"), default="b").default == "b"
    assert Pow2("t", 1, 8).reason(3) == "is not a power of two"
    assert "outside the range 2..10 step 4" in IntRange("r", 2, 10, step=4).reason(4)
    assert IntRange("r", 1, 4).reason(True) is not None  # a bool is not an int knob value
    assert Choice("bk", (16, 32)).reason(48) == "is not one of 16, 32"
    assert Bool("p").reason(1) == "is not a bool"
    j = Pow2("t", 32, 128, default=64, doc="threads").to_json()
    assert j == {"name": "t", "kind": "pow2", "values": [32, 64, 128], "default": 64}
    json.dumps(IntRange("r", 1, 3).to_json())


@pytest.mark.parametrize("make,match", [
    (lambda: Choice("bk", ()), "no values"),
    (lambda: Choice("bk", (16, 32), default=48), "default 48 is not one of"),
    (lambda: Choice("bk", (1.5,)), "not an int, str or bool"),
    (lambda: IntRange("r", 5, 1), "lo <= hi"),
    (lambda: Pow2("t", 3, 16), "powers of two"),
    (lambda: Pow2("t", 4, 16, default=2), "outside the range"),
    (lambda: Choice("not a name", (1,)), "identifier"),
])
def test_bad_knob_declarations(make, match):
    with pytest.raises(ScheduleError, match=match):
        make()


# -- a small template used below: a tiled copy with staged shared memory ----------------------------

def _copy_analyze(kernel, target):
    if len(kernel.params[0].shape) != 1:
        raise ScheduleError("test.copy copies 1-D tensors")
    return kernel.params[0].shape[0]


def _copy_schedule(sch, knobs, ctx):
    outer, inner = sch.split("i", [None, knobs["tile"]])
    sch.bind(outer, "blockIdx.x")
    sch.bind(inner, "threadIdx.x")
    if knobs["stage"]:
        sch.cache_shared("A", outer)
    if knobs["extra"]:
        ctx.attempt("no_extra", outer, lambda: sch.vectorize(outer))  # a block-bound loop: falls back


COPY = Template(
    "test.copy",
    [Pow2("tile", 32, 2048, default=128), Bool("stage", default=False), Bool("extra", default=False),
     Choice("bytes", (4, 8), default=4)],
    _copy_schedule, analyze=_copy_analyze, targets=("cuda",),
    constraints=[
        divides("tile", lambda ctx: ctx.info, "the tensor's length"),
        max_threads("tile", lambda ctx: ctx["tile"]),
        max_shared_memory(("tile", "bytes"), lambda ctx: ctx["tile"] * ctx["bytes"] * 48),
        max_registers("tile", lambda ctx: ctx["tile"] // 4),
    ],
    fallbacks={"no_extra": "the extra vectorisation is skipped where the loop cannot take it"})


@pytest.fixture
def registered():
    """COPY in the registry for the test only (other tests enumerate the registry)."""
    register(COPY)
    yield COPY
    unregister(COPY.name)


def copy_kernel(n=2048):
    A = ts.placeholder((n,), name="A")
    return ts.lower([A, ts.compute((n,), lambda i: A[i] * 2.0, name="B")])


@pytest.mark.parametrize("knobs,target,message", [
    ({"tile": 2048}, "cuda:sm_80", "knob 'tile'=2048: 2048 threads per block exceed the target's 1024"),
    ({"tile": 1024, "bytes": 4}, "cuda:sm_90a",
     "knob 'tile'=1024: needs 256 registers per thread, the target has 255"),
    ({"tile": 512, "bytes": 8}, "cuda:sm_80",
     "knobs 'tile'=512, 'bytes'=8: shared memory 192 KiB exceeds the target's 163 KiB"),
    ({"tile": 512, "bytes": 8}, "cuda:sm_86", "shared memory 192 KiB exceeds the target's 99 KiB"),
    ({"tile": 96}, "cuda:sm_90a", "knob 'tile'=96: is not a power of two"),
    ({"tile": 16}, "cuda:sm_90a", "knob 'tile'=16: is outside the range 32..2048"),
    ({"stage": 1}, "cuda:sm_90a", "knob 'stage'=1: is not a bool"),
    ({"bytes": 2}, "cuda:sm_90a", "knob 'bytes'=2: is not one of 4, 8"),
    ({"tiles": 64}, "cuda:sm_90a", "template 'test.copy' has no knob(s) 'tiles'"),
])
def test_impossible_knobs_name_knob_value_and_limit(knobs, target, message):
    kernel = copy_kernel()
    with pytest.raises(ScheduleError) as e:
        COPY.apply(kernel, knobs, target)
    assert message in str(e.value) and "test.copy" in str(e.value)


def test_divisibility_is_checked_not_shrunk():
    with pytest.raises(ScheduleError, match=r"knob 'tile'=256: does not divide the tensor's length 640"):
        COPY.apply(copy_kernel(640), {"tile": 256}, "cuda")
    sch = COPY.apply(copy_kernel(640), {"tile": 128}, "cuda")
    assert sch.kernel.launch.block == (128, 1, 1)  # exactly the knob: never silently changed


def test_nothing_is_applied_when_a_knob_is_refused():
    sch = Schedule(copy_kernel())
    with pytest.raises(ScheduleError):
        COPY.apply(sch, {"tile": 2048}, "cuda")
    assert sch.trace == [] and sch.kernel == sch.original


def test_a_failure_while_applying_restores_the_schedule_and_names_the_template():
    def bad(sch, knobs, ctx):
        sch.split("i", [None, 32])
        sch.reorder("nope", "i_1")
    tpl = Template("test.bad", [], bad, targets=("cuda",))
    sch = Schedule(copy_kernel())
    with pytest.raises(ScheduleError, match="template 'test.bad' with knobs {}: no loop named 'nope'"):
        tpl.apply(sch, {}, "cuda")
    assert sch.trace == [] and sch.kernel == sch.original


def test_resource_check_after_applying_catches_what_constraints_missed():
    # declares no shared-memory constraint, then stages 512 x 128 floats (256 KiB) per block
    def big(sch, knobs, ctx):
        outer, inner = sch.split("i", [None, 512])
        sch.reorder(outer, "j", inner)
        sch.bind(outer, "blockIdx.x")
        sch.bind("j", "threadIdx.x")
        sch.cache_shared("A", outer)
    A = ts.placeholder((4096, 128), name="A")
    kernel = ts.lower([A, ts.compute((4096, 128), lambda i, j: A[i, j] + 1.0, name="B")])
    tpl = Template("test.big", [], big, targets=("cuda",))
    with pytest.raises(ScheduleError, match="no constraint caught: shared memory 256 KiB exceeds the target's 227 KiB"):
        tpl.apply(kernel, {}, "cuda:sm_90a")


def test_template_rejects_other_targets_and_non_kernels():
    with pytest.raises(ScheduleError, match="schedules for cuda, not cpu"):
        COPY.apply(copy_kernel(), {}, "cpu")
    with pytest.raises(ScheduleError, match="unknown target"):
        COPY.apply(copy_kernel(), {}, "tpu")
    with pytest.raises(ScheduleError, match="needs a tessel.ir.nodes.Kernel"):
        COPY.space("not a kernel", "cuda")


# -- determinism, trace, replay -------------------------------------------------------------------

def test_apply_is_deterministic_and_recorded():
    kernel = copy_kernel()
    knobs = {"tile": 256, "stage": True}
    a, b = COPY.apply(kernel, knobs, "cuda:sm_80"), COPY.apply(kernel, dict(knobs), "cuda:sm_80")
    assert to_text(a.kernel) == to_text(b.kernel) and a.trace == b.trace
    head = a.trace[0]
    assert head.primitive == "template"
    assert head.args == {"name": "test.copy", "knobs": {"tile": 256, "stage": True, "extra": False, "bytes": 4},
                         "target": "cuda:sm_80", "steps": len(a.trace) - 1}
    assert [s.primitive for s in a.trace[1:]] == ["split", "bind", "bind", "cache_shared"]


def test_replay_runs_the_template_from_its_knobs(registered):
    kernel = copy_kernel()
    sch = COPY.apply(kernel, {"tile": 64, "stage": True}, "cuda")
    replayed = Schedule.replay(kernel, sch.trace_json())
    assert replayed == sch.kernel
    # the replayed kernel computes the same as the naive one
    a = np.random.default_rng(1).standard_normal(2048).astype(np.float32)
    out = np.full(2048, 9e9, np.float32)
    interp.run(replayed, a, out)
    np.testing.assert_allclose(out, a * 2.0, rtol=1e-6)
    # the trace alone, with the template step only (as a tuning log would store it), also replays
    only = [sch.trace[0].to_json()]
    only[0]["args"]["steps"] = 0
    with pytest.raises(ScheduleError, match="differ from the 0 the trace recorded"):
        Schedule.replay(kernel, only)
    s2 = Schedule(kernel)
    s2.template("test.copy", {"tile": 64, "stage": True}, "cuda")
    assert s2.kernel == sch.kernel


def test_a_template_that_builds_ir_directly_replays_from_its_knobs():
    import dataclasses

    from tessel.ir.nodes import Const, Load, Store, rewrite, walk

    def build(sch, knobs, ctx):  # builds the kernel itself (B = A * 2 * scale), no primitives
        scale = Const(float(knobs["scale"]), "float32")
        body = rewrite(sch.kernel.body, lambda n: Store(n.buffer, n.indices, n.value.a * scale)
                       if isinstance(n, Store) and isinstance(n.value.a, Load) else None, fixpoint=False)
        sch.kernel = dataclasses.replace(sch.kernel, body=body)

    tpl = register(Template("test.direct", [Choice("scale", (2, 3))], build, targets=("cpu",)))
    try:
        kernel = copy_kernel(8)
        sch = tpl.apply(kernel, {"scale": 3}, "cpu")
        assert [s.primitive for s in sch.trace] == ["template"] and sch.trace[0].args["steps"] == 0
        assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel != kernel
        assert any(isinstance(n, Const) and n.value == 3.0 for n in walk(sch.kernel.body))
    finally:
        unregister("test.direct")


def test_replay_notices_a_template_that_changed(registered):
    kernel = copy_kernel()
    trace = json.loads(COPY.apply(kernel, {"tile": 64}, "cuda").trace_json())
    trace[1]["args"]["factors"] = [None, 32]  # as if an older version had split by 32
    with pytest.raises(ScheduleError, match="template 'test.copy'.*differ"):
        Schedule.replay(kernel, trace)


def test_declared_fallback_is_recorded_and_can_be_refused(registered):
    kernel = copy_kernel()
    sch = COPY.apply(kernel, {"extra": True}, "cuda")
    fb = [s for s in sch.trace if s.primitive == "fallback"]
    assert len(fb) == 1 and fb[0].args["kind"] == "no_extra" and fb[0].args["template"] == "test.copy"
    # the vectorize refusal's reason (the loop is bound to blockIdx.x since 5d9e623; before, "not innermost")
    assert "i_0" in fb[0].args["reason"] and ("bound" in fb[0].args["reason"] or "innermost" in fb[0].args["reason"])
    assert Schedule.replay(kernel, sch.trace) == sch.kernel
    with pytest.raises(ScheduleError, match="fallback 'no_extra' at 'i_0'"):
        COPY.apply(kernel, {"extra": True}, "cuda", allow_fallbacks=False)


def test_undeclared_fallback_is_an_error():
    def sneaky(sch, knobs, ctx):
        ctx.attempt("whatever", "i", lambda: sch.vectorize("i"))
    tpl = Template("test.sneaky", [], sneaky, targets=("cpu",))
    with pytest.raises(ScheduleError, match="fallback 'whatever' is not declared"):
        tpl.apply(row_reduce(4, 8), {}, "cpu")


# -- the registry -----------------------------------------------------------------------------------

def test_registry_has_the_default_templates():
    names = set(templates())
    assert {"cpu.generic", "gpu.elementwise", "gpu.transpose", "gpu.reduce_inner", "gpu.reduce_outer",
            "gpu.rowwise", "gpu.matmul_simt", "gemm.mma_sync"} <= names
    with pytest.raises(ScheduleError, match="unknown template 'nope'; known: .*cpu.generic"):
        get_template("nope")
    def names(kernel, target):
        return [t.name for t in applicable(kernel, target)]

    assert names(transpose(40, 70), "cuda") == ["gpu.elementwise", "gpu.transpose"]
    assert names(row_reduce(6, 100), "cuda") == ["gpu.reduce_inner", "gpu.reduce_outer"]
    # a GEMM is also a reduction: the tuner may try the reduction templates on it
    assert set(names(matmul(32, 16, 16, "float16"), "cuda")) >= {"gemm.mma_sync", "gpu.matmul_simt",
                                                                "gpu.reduce_inner", "gpu.reduce_outer"}
    assert "gemm.mma_sync" not in names(matmul(32, 16, 16, "float32"), "cuda")
    assert names(elementwise((8, 8)), "cpu") == ["cpu.generic"]


def test_templates_refuse_kernels_they_do_not_fit():
    assert "not a transpose" in get_template("gpu.transpose").applies(elementwise((8, 8)), "cuda")
    assert "not a reduction" in get_template("gpu.reduce_outer").applies(elementwise((8, 8)), "cuda")
    assert "float32 or int32" in get_template("gpu.reduce_inner").applies(
        ts.lower([X := ts.placeholder((4, 64), "float16", name="X"),
                  ts.compute((4,), lambda i: ts.sum(X[i, k := ts.reduce_axis(64, name="k")], axis=k), name="S")]),
        "cuda")


# -- spaces -----------------------------------------------------------------------------------------

def test_space_iterates_indexes_and_checks_points():
    space = COPY.space(copy_kernel(640), "cuda:sm_80")
    assert len(space) == 7 * 2 * 2 * 2 == space.size
    points = list(space)
    assert len(points) == len(space) and all(set(p) == {"tile", "stage", "extra", "bytes"} for p in points)
    assert all(space.point(i) == p and space.index(p) == i for i, p in enumerate(points))
    json.dumps(points)
    valid = list(space.valid_points())
    assert {p["tile"] for p in valid} == {32, 64, 128}  # 640 = 5 * 128
    assert space.check({"tile": 256}) == "knob 'tile'=256: does not divide the tensor's length 640"
    assert space.check({"tile": 64}) is None and space.is_valid({"tile": 64})
    assert space.default == {"tile": 128, "stage": False, "extra": False, "bytes": 4}
    with pytest.raises(ScheduleError, match="outside the space"):
        space.point(len(space))
    rep = space.report()
    assert rep == {"template": "test.copy", "target": "cuda:sm_80", "size": 56, "valid": 24, "pruned": 32,
                   "pruned_by": {"divisibility": 32}, "exact": True}
    j = space.to_json()
    assert [k["name"] for k in j["knobs"]] == ["tile", "stage", "extra", "bytes"]
    json.dumps(j)


def test_space_sampling_is_seeded_distinct_and_valid():
    space = COPY.space(copy_kernel(640), "cuda:sm_80")
    a, b = space.sample(10, seed=3), space.sample(10, seed=3)
    assert a == b and len(a) == 10
    assert len({json.dumps(p, sort_keys=True) for p in a}) == 10
    assert all(space.is_valid(p) for p in a)
    assert space.sample(10, seed=4) != a
    assert len(space.sample(1000, seed=0)) == 24  # every valid point, no more
    assert len(space.sample(1000, seed=0, valid=False)) == 56


def test_space_neighbors_move_one_knob_one_step():
    space = COPY.space(copy_kernel(640), "cuda:sm_80")
    near = space.neighbors({"tile": 64, "stage": False, "extra": True, "bytes": 4})
    assert {"tile": 32, "stage": False, "extra": True, "bytes": 4} in near
    assert {"tile": 128, "stage": False, "extra": True, "bytes": 4} in near
    assert {"tile": 64, "stage": True, "extra": True, "bytes": 4} in near
    assert {"tile": 64, "stage": False, "extra": False, "bytes": 4} in near
    assert {"tile": 64, "stage": False, "extra": True, "bytes": 8} in near
    assert len(near) == 5
    # at the edge of the valid region: 256 does not divide 640, so only the smaller tile is a neighbour
    edge = space.neighbors({"tile": 128})
    assert [p["tile"] for p in edge if p["tile"] != 128] == [64]
    assert len(space.neighbors({"tile": 128}, valid=False)) == len(edge) + 1


def test_space_fixes_irrelevant_knobs():
    cpu = get_template("cpu.generic")
    ew = cpu.space(elementwise((64, 64)), "cpu")
    assert [k.name for k in ew.knobs] == ["vector_lanes", "min_parallel_work"]
    assert ew.fixed == {"tile_rows": 6, "tile_cols": 16, "pack": True, "reduce_vector": True, "reduce_accumulators": 0,
                        "row_fuse": True}
    mm = cpu.space(matmul(64, 64, 32, "float32"), "cpu")
    assert {k.name for k in mm.knobs} == {"vector_lanes", "min_parallel_work", "tile_rows", "tile_cols", "pack"}
    # the largest divisor of 64 rows not above min(8, (host registers - 4) // column vectors): 8 on AVX-512
    from tessel.schedules.cpu_host import host_vector

    hv = host_vector()
    vecs = mm.default["tile_cols"] // hv.lanes("float32")
    assert mm.default["tile_rows"] == max(d for d in range(1, min(8, (hv.registers - 4) // vecs) + 1) if 64 % d == 0)


def test_custom_constraint_decorator_and_at_most():
    @constraint("tile", "even")
    def even(ctx):
        return None if ctx["tile"] % 2 == 0 else "is odd"

    tpl = Template("test.c", [IntRange("tile", 1, 9, default=4)], lambda sch, k, ctx: None,
                   constraints=[even, at_most("tile", lambda ctx: 6, "the row extent")], targets=("cpu",))
    space = tpl.space(row_reduce(4, 8), "cpu")
    assert [p["tile"] for p in space.valid_points()] == [2, 4, 6]
    assert space.check({"tile": 8}) == "knob 'tile'=8: exceeds the row extent 6"
    assert space.report()["pruned_by"] == {"even": 5, "extent": 1}


# -- target limits ----------------------------------------------------------------------------------

def test_target_limits():
    h = limits_of("cuda:sm_90a")
    assert (h.shared_bytes, h.sm_count, h.threads_per_block, h.registers_per_thread) == (227 * 1024, 132, 1024, 255)
    assert {"wgmma", "tma", "mbarrier"} <= h.features
    assert "wgmma" not in limits_of("cuda:sm_90").features and "wgmma" not in limits_of("cuda:sm_80").features
    assert limits_of("cuda").arch == "sm_90a" and limits_of("CUDA:SM_80").sm_count == 108
    assert limits_of("cpu").kind == "cpu" and limits_of("cpu").vector_registers == 16
    assert limits_of("cuda:sm_100a").shared_bytes == 227 * 1024  # newest known row
    json.dumps(h.to_json())
    from tessel.ir.target import parse_target

    assert limits_of(parse_target("cuda:sm_80")).target == "cuda:sm_80"


def test_resources_of_a_scheduled_kernel():
    sch = COPY.apply(copy_kernel(), {"tile": 256, "stage": True}, "cuda")
    r = resources(sch.kernel)
    assert r.threads_per_block == 256 and r.shared_bytes == 256 * 4
    assert resource_violations(sch.kernel, "cuda") == []
