"""The Hopper GEMM template 'gemm.wgmma' (tessel/schedules/gemm_hopper.py) and its pieces
(hopper_pieces.py) in the race-checked interpreter against numpy on fresh random inputs, with its
synchronisation deleted (must fail), impossible knobs (must name the knob), the template on a DSL
contraction (replays), and nvcc for sm_90a (SASS: HGMMA, no spills). GPU runs against torch are
in tests/codegen/test_gemm_hopper_gpu.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.intrinsics import mbarrier, wgmma
from tessel.ir.nodes import Intrinsic, walk
from tessel.schedules.gemm import GemmProblem
from tessel.schedules.gemm_hopper import GEMM_WGMMA, HopperKnobs, check_knobs, default_knobs, hopper_gemm_kernel
from tessel.schedules.schedule import Schedule
from tests.tolerances import matmul_tol

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _inputs(p: GemmProblem, seed=None):
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    rng = np.random.default_rng(seed)
    a_buf, b_buf, c_buf = p.buffers()
    a = rng.standard_normal(a_buf.shape).astype(NP[p.dtype])
    b = rng.standard_normal(b_buf.shape).astype(NP[p.dtype])
    c = np.full(c_buf.shape, 7e3, np.float32 if p.out_dtype == "float32" else NP[p.out_dtype])
    return seed, a, b, c


def _reference(p: GemmProblem, a, b):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    am = a64 if p.a_kcontig else a64.swapaxes(-1, -2)
    bm = b64.swapaxes(-1, -2) if p.b_kcontig else b64
    return am @ bm


def _check(p, kn, seed=None, sms=132):
    seed, a, b, c = _inputs(p, seed)
    interp.run(hopper_gemm_kernel(p, kn, sms=sms), a, b, c, seed=seed)
    np.testing.assert_allclose(c.astype(np.float64), _reference(p, a, b),
                               **matmul_tol(p.dtype, p.k, out_dtype=p.out_dtype), err_msg=f"input seed {seed}")


@pytest.mark.parametrize("p,kn", [
    # the brief's small case: 2 x 2 blocks of 64 x 64, one consumer, 2 stages
    (GemmProblem(128, 128, 128, "bfloat16"), HopperKnobs(bm=64, bn=64, stages=2, consumers=1)),
    # two consumer warpgroups, the ring wraps (4 k-tiles through 2 stages), B K-major
    (GemmProblem(128, 64, 256, "bfloat16", b_kcontig=True), HopperKnobs(bm=128, bn=64, stages=2, consumers=2)),
    # two m64 tiles per consumer, 3 stages, fp16, A MN-major
    (GemmProblem(128, 128, 192, "float16", a_kcontig=False), HopperKnobs(bm=128, bn=128, stages=3, consumers=1)),
    # edges everywhere: TMA zero fill of M, N, K and guarded stores; bf16 output
    (GemmProblem(100, 72, 136, "bfloat16", out_dtype="bfloat16"), HopperKnobs(bm=64, bn=64, stages=2, consumers=1)),
    # the stmatrix + TMA-store epilogue (edges clipped by the TMA store), one and two consumers, persistent
    (GemmProblem(128, 128, 128, "bfloat16", out_dtype="bfloat16"),
     HopperKnobs(bm=64, bn=64, stages=2, consumers=1, epilogue="tma")),
    (GemmProblem(200, 136, 128, "float16", out_dtype="float16"),
     HopperKnobs(bm=128, bn=128, stages=2, consumers=2, epilogue="tma", persistent=True)),
    # clusters of 2 CTAs along M sharing B by TMA multicast (B MN-major: 64-column atoms split; K-major:
    # rows split), with persistent blocks and the TMA-store epilogue too
    (GemmProblem(128, 128, 256, "bfloat16"), HopperKnobs(bm=64, bn=128, stages=2, consumers=1, cluster="2x1")),
    (GemmProblem(128, 128, 256, "bfloat16", b_kcontig=True),
     HopperKnobs(bm=64, bn=64, stages=2, consumers=1, cluster="2x1")),
    # batched: 3-D / 4-D TMA boxes, batches along the grid
    (GemmProblem(64, 128, 128, "bfloat16", batch=(3,)), HopperKnobs(bm=64, bn=64, stages=2, consumers=1)),
    (GemmProblem(72, 64, 64, "float16", batch=(2, 2), a_kcontig=False, b_kcontig=True, out_dtype="float16"),
     HopperKnobs(bm=64, bn=64, stages=2, consumers=1, epilogue="tma")),
    # wide N, block order groups
    (GemmProblem(192, 192, 64, "float16", b_kcontig=True), HopperKnobs(bm=64, bn=192, stages=2, consumers=1,
                                                                        group_m=2)),
])
def test_interpreter_matches_numpy(p, kn):
    _check(p, kn)


@pytest.mark.parametrize("p,kn,sms", [
    # a persistent cluster pair (2 tiles each) with the TMA-store epilogue, two consumers
    (GemmProblem(256, 136, 192, "float16", out_dtype="float16"),
     HopperKnobs(bm=128, bn=128, stages=2, consumers=2, epilogue="tma", persistent=True, cluster="2x1"), 2),
    # batched and persistent: 2 batches x 2 tiles on 3 blocks (tiles cross batch boundaries), a cluster pair
    (GemmProblem(128, 64, 128, "bfloat16", batch=(2,)),
     HopperKnobs(bm=64, bn=64, stages=2, consumers=1, persistent=True), 3),
    (GemmProblem(128, 128, 128, "bfloat16", batch=(2,)),
     HopperKnobs(bm=64, bn=128, stages=2, consumers=1, persistent=True, cluster="2x1"), 2),
    # pingpong: the two consumers take a block's tiles in turn (3 tiles per block: 2 + 1), with clusters, TMA store
    (GemmProblem(192, 128, 192, "bfloat16"),
     HopperKnobs(bm=64, bn=64, stages=2, consumers=2, persistent=True, pingpong=True), 2),
    (GemmProblem(256, 136, 192, "float16", out_dtype="float16"),
     HopperKnobs(bm=128, bn=128, stages=3, consumers=2, epilogue="tma", persistent=True, pingpong=True, cluster="2x1"),
     2),
    # 6 tiles on 4 blocks: blocks 0, 1 take two tiles (the ring runs on across tiles), 2, 3 one (guarded)
    (GemmProblem(192, 128, 128, "bfloat16"), HopperKnobs(bm=64, bn=64, stages=3, consumers=1, persistent=True), 4),
    # two consumers sharing each tile, 3 tiles per block, k-tiles not a multiple of the stages
    (GemmProblem(256, 192, 192, "float16", b_kcontig=True),
     HopperKnobs(bm=128, bn=64, stages=2, consumers=2, persistent=True, group_m=2), 4),
])
def test_persistent_blocks_run_several_tiles(p, kn, sms):
    k = hopper_gemm_kernel(p, kn, sms=sms)
    assert k.launch.grid == (sms, 1, 1)
    _check(p, kn, sms=sms)


def test_epilogue_hook_adds_bias_and_relu():
    from tessel.ir.nodes import Buffer, Const, Select

    p = GemmProblem(128, 120, 128, "bfloat16", out_dtype="bfloat16")
    bias = Buffer("bias", (120,), "float32")

    def hook(v, row, col):
        x = v + bias[col]
        return Select(x > Const(0.0, "float32"), x, Const(0.0, "float32"))

    k = hopper_gemm_kernel(p, HopperKnobs(bm=64, bn=64, stages=2, consumers=1), epilogue=(hook, [bias]))
    seed, a, b, c = _inputs(p)
    bv = np.random.default_rng(seed + 1).standard_normal(120).astype(np.float32)
    interp.run(k, a, b, c, bv, seed=seed)
    ref = np.maximum(_reference(p, a, b) + bv, 0.0)
    np.testing.assert_allclose(c.astype(np.float64), ref, **matmul_tol(p.dtype, p.k, out_dtype="bfloat16"),
                               err_msg=f"input seed {seed}")
    assert (c.astype(np.float32) == 0).mean() > 0.3  # the relu took effect


def test_xor3_is_xor_for_3_bit_values():
    from tessel.ir.interp import interpret_expr
    from tessel.ir.nodes import Var
    from tessel.schedules.hopper_pieces import xor3

    x, y = Var("x"), Var("y")
    e = xor3(x, y)
    assert all(int(interpret_expr(e, {"x": a, "y": b})) == a ^ b for a in range(8) for b in range(8))


def test_default_knobs_are_valid_for_the_benchmark_shapes():
    for m, n, k in [(2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192), (16384, 4096, 4096),
                    (4096, 4096, 16384), (128, 8192, 8192), (8192, 128, 8192), (1000, 520, 336)]:
        p = GemmProblem(m, n, k, "bfloat16")
        check_knobs(p, default_knobs(p))


def test_kernel_shape_is_warp_specialised():
    p = GemmProblem(256, 256, 512, "bfloat16")
    k = hopper_gemm_kernel(p, HopperKnobs(bm=128, bn=256, stages=4, consumers=2))
    names = [n.name for n in walk(k.body) if isinstance(n, Intrinsic)]
    assert k.launch.block == (384, 1, 1) and k.launch.grid == (2, 1, 1)
    assert names.count("setmaxnreg.dec.sync.aligned.u32") == 1 and names.count("setmaxnreg.inc.sync.aligned.u32") == 1
    assert names.count(wgmma.wgmma_name(256, "bfloat16")) == 4  # 4 k-steps of one m64 tile per consumer
    assert names.count(mbarrier.WAIT) == 2  # the producer's empty wait and the consumers' full wait
    assert k.launch.shared_bytes >= 4 * (128 + 256) * 128


# -- deleting synchronisation must be caught -------------------------------------------------------

@pytest.mark.parametrize("drop,allowed", [
    # consumers read a stage before its TMA bytes landed (NaN poison / race), or run ahead and
    # complete empty phases the producer then waits past (a deadlock, as on the GPU; what the
    # interpreter shows here: the poison read alone is the next test)
    ("full_wait", {"race", "poison", "deadlock"}),
    # the producer overwrites a stage wgmma may still read (race), or arrives twice on a full
    # barrier's phase before the consumers waited on it (their wait then never passes)
    ("empty_wait", {"race", "deadlock"}),
    ("wgmma_wait", {"race"}),  # a stage is released while its wgmma group is in flight
    ("release", {"deadlock"}),  # the producer waits forever for a stage nobody releases
])
def test_deleted_synchronisation_fails_in_the_interpreter(drop, allowed):
    # 4 k-tiles through 2 stages: every stage is refilled, so each wait guards a real reuse
    p = GemmProblem(64, 64, 256, "bfloat16")
    kn = HopperKnobs(bm=64, bn=64, stages=2, consumers=1)
    seed, a, b, c = _inputs(p)
    good = c.copy()
    interp.run(hopper_gemm_kernel(p, kn), a, b, good, seed=seed)  # the intact kernel passes on these inputs
    np.testing.assert_allclose(good, _reference(p, a, b), **matmul_tol(p.dtype, p.k, out_dtype="float32"))
    broken = hopper_gemm_kernel(p, kn, drop=(drop,))
    assert broken != hopper_gemm_kernel(p, kn)
    want = _reference(p, a, b)
    assert_broken_gemm_fails(broken, (a, b, c), want, allowed, seed, matmul_tol(p.dtype, p.k), f"drop {drop}")


def assert_broken_gemm_fails(broken, arrays, want, allowed, seed, tol: dict, what: str) -> None:
    """Run the `broken` GEMM kernel on `arrays` (A, B, C) under three interleavings: each must fail
    in one of the `allowed` ways (failure_kind), never run clean."""
    a, b, c = arrays
    for s in range(3):
        def run_once(s=s):
            out = c.copy()
            interp.run(broken, a, b, out, seed=seed + s)
            return np.isnan(out).any() or not np.allclose(out, want, **tol)
        got = failure_kind(run_once)
        assert got in allowed, f"{what}: {got} (input seed {seed}, schedule seed {seed + s})"


def failure_kind(run_once) -> str:
    """How a broken kernel's run went: "race" (RaceError), "deadlock", "poison" (`run_once()`
    returned True: a wrong or NaN result), "clean run", or "error: ..." for anything else."""
    try:
        return "poison" if run_once() else "clean run"
    except interp.RaceError:
        return "race"
    except interp.ExecutionError as e:
        return "deadlock" if "deadlock" in str(e).lower() else f"error: {e}"


@pytest.mark.parametrize("drop", ["store_wait", "store_barrier"])
def test_tma_store_epilogue_without_its_waits_races(drop):
    # persistent, 2 tiles per block and 2 column chunks per tile: the staging tile is rewritten
    # while (store_wait) or before (store_barrier) a TMA store reads it
    p = GemmProblem(128, 128, 64, "bfloat16", out_dtype="bfloat16")
    kn = HopperKnobs(bm=64, bn=128, stages=2, consumers=1, epilogue="tma", persistent=True)
    seed, a, b, c = _inputs(p)
    ok = c.copy()
    interp.run(hopper_gemm_kernel(p, kn, sms=1), a, b, ok, seed=seed)
    np.testing.assert_allclose(ok.astype(np.float64), _reference(p, a, b),
                               **matmul_tol(p.dtype, p.k, out_dtype=p.out_dtype))
    for s in range(3):
        with pytest.raises(interp.RaceError):
            interp.run(hopper_gemm_kernel(p, kn, sms=1, drop=(drop,)), a, b, c.copy(), seed=seed + s)


@pytest.mark.parametrize("drop", ["peer_release", "wgmma_wait"])
def test_cluster_without_its_releases_races(drop):
    # peer_release: each consumer releases only its own CTA's stage, so the peer's producer multicasts
    # its half of B into a stage this CTA's wgmma may still read
    p = GemmProblem(128, 128, 256, "bfloat16")
    kn = HopperKnobs(bm=64, bn=128, stages=2, consumers=1, cluster="2x1")
    seed, a, b, c = _inputs(p)
    for s in range(3):
        with pytest.raises(interp.RaceError):
            interp.run(hopper_gemm_kernel(p, kn, drop=(drop,)), a, b, c.copy(), seed=seed + s)


def test_pingpong_without_its_turns_races():
    # consumer 1 starts on tile 1 while consumer 0 is still on tile 0: its full-barrier waits are two
    # phases ahead of the ring, where the parity cannot tell them apart, so it reads a stage too early
    p = GemmProblem(192, 128, 192, "bfloat16")
    kn = HopperKnobs(bm=64, bn=64, stages=2, consumers=2, persistent=True, pingpong=True)
    seed, a, b, c = _inputs(p)
    for s in range(3):
        with pytest.raises(interp.RaceError):
            interp.run(hopper_gemm_kernel(p, kn, sms=2, drop=("turn",)), a, b, c.copy(), seed=seed + s)


def test_without_the_full_wait_consumers_read_poison():
    # 2 k-tiles in 2 stages, releases left out: the producer never waits, so the only thing
    # between the TMA loads and the wgmma reads is the consumers' full-barrier wait
    p = GemmProblem(64, 64, 128, "bfloat16")
    kn = HopperKnobs(bm=64, bn=64, stages=2, consumers=1)
    seed, a, b, c = _inputs(p)
    ok = c.copy()
    interp.run(hopper_gemm_kernel(p, kn, drop=("release",)), a, b, ok, seed=seed)
    np.testing.assert_allclose(ok, _reference(p, a, b), **matmul_tol(p.dtype, p.k, out_dtype="float32"))
    for s in range(3):
        out = c.copy()
        try:
            interp.run(hopper_gemm_kernel(p, kn, drop=("release", "full_wait")), a, b, out, seed=seed + s)
        except interp.RaceError:
            continue
        assert np.isnan(out).all(), f"schedule seed {seed + s}: the unguarded reads gave numbers"


# -- knobs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("knobs,culprit", [
    (dict(bk=32), "bk"), (dict(bm=64, consumers=2), "bm"), (dict(bn=96), "bn"), (dict(stages=1), "stages"),
    (dict(bm=256, bn=256, stages=4), "stages"), (dict(bm=128, bn=256, consumers=1, stages=2), "bn"),
    (dict(consumers=3), "consumers"), (dict(cluster="2x2"), "cluster"),
    (dict(bm=192, consumers=1, cluster="2x1"), "cluster"), (dict(bn=64, consumers=1, bm=64, cluster="2x1"), "cluster"),
    (dict(persistent=1), "persistent"), (dict(pingpong=True), "pingpong"),
    (dict(pingpong=True, persistent=True, bm=128, bn=256), "bn"),
    (dict(group_m=3), "group_m"), (dict(epilogue="tma"), "epilogue"),
])
def test_impossible_knobs_raise_naming_the_knob(knobs, culprit):
    p = GemmProblem(512, 512, 512, "bfloat16")
    with pytest.raises(ScheduleError, match=f"knob {culprit}="):
        check_knobs(p, HopperKnobs(**knobs))
    with pytest.raises(ScheduleError, match=f"knob {culprit}="):
        hopper_gemm_kernel(p, HopperKnobs(**knobs))


@pytest.mark.parametrize("p,arch,what", [
    (GemmProblem(128, 128, 100, "bfloat16"), "sm_90a", "K .* not a multiple of 8"),
    (GemmProblem(128, 100, 128, "bfloat16"), "sm_90a", "N .* not a multiple of 8"),
    (GemmProblem(128, 128, 128, "bfloat16"), "sm_80", "need sm_90a"),
    (GemmProblem(128, 128, 128, "bfloat16", batch=(2, 1, 1, 2)), "sm_90a", "at most 5 dimensions"),
])
def test_problems_off_the_template_say_why(p, arch, what):
    with pytest.raises(ScheduleError, match=what):
        check_knobs(p, HopperKnobs(bm=64, bn=64, consumers=1), arch)


def _dsl_matmul(M, N, K, dtype, b_t=False, batch=None):
    pre = (batch,) if batch else ()
    A = ts.placeholder(pre + (M, K), dtype, name="A")
    B = ts.placeholder(pre + ((N, K) if b_t else (K, N)), dtype, name="B")
    k = ts.reduce_axis(K, name="k")

    def body(*idx):
        b, (i, j) = idx[:-2], idx[-2:]
        return ts.sum(A[b + (i, k)].astype("float32") * B[b + ((j, k) if b_t else (k, j))].astype("float32"), axis=k)

    return ts.lower([A, B, ts.compute(pre + (M, N), body, name="C")])


@pytest.mark.parametrize("b_t,batch", [(False, None), (True, None), (False, 2)])
def test_template_on_a_dsl_contraction(b_t, batch):
    kernel = _dsl_matmul(64, 128, 128, "bfloat16", b_t, batch)
    knobs = {"bm": 64, "bn": 64, "stages": 2, "consumers": 1}
    sch = GEMM_WGMMA.apply(kernel, knobs, "cuda:sm_90a")
    step = sch.trace[0]
    assert step.primitive == "template" and step.args["name"] == "gemm.wgmma"
    assert set(step.args["knobs"]) == set(HopperKnobs().as_dict())
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    p = GemmProblem(64, 128, 128, "bfloat16", b_kcontig=b_t, batch=(batch,) if batch else ())
    seed, a, b, c = _inputs(p)
    interp.run(sch.kernel, a, b, c, seed=seed)
    np.testing.assert_allclose(c, _reference(p, a, b), **matmul_tol("bfloat16", 128), err_msg=f"seed {seed}")


def test_template_space_and_refusals():
    kernel = _dsl_matmul(256, 256, 256, "bfloat16")
    assert "no wgmma" in GEMM_WGMMA.applies(kernel, "cuda:sm_80")
    space = GEMM_WGMMA.space(kernel, "cuda:sm_90a")
    pts = space.valid_points()
    assert pts and all(HopperKnobs.from_dict(q) for q in pts)
    assert space.check(dict(space.default, bm=64, consumers=2)) is not None
    with pytest.raises(ScheduleError, match="'stages'=8"):
        GEMM_WGMMA.apply(kernel, {"bm": 128, "bn": 256, "stages": 8, "consumers": 2}, "cuda:sm_90a")


# -- the printed source compiles for sm_90a --------------------------------------------------------

def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import nvidia.cu13 as cu  # the pip wheel's binaries, where the toolkit lacks them (a namespace package)
        for root in list(getattr(cu, "__path__", [])):
            path = os.path.join(root, "bin", "cuobjdump")
            if os.path.exists(path):
                return path
        return None
    except ImportError:
        return None


def sass_of(dump: str, cubin) -> str | None:
    """`cuobjdump -sass` of `cubin` (nvdisasm looked up beside cuobjdump too); None when it
    printed no SASS because nvdisasm is missing."""
    env = dict(os.environ, PATH=os.path.dirname(dump) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run([dump, "-sass", str(cubin)], capture_output=True, text=True, env=env)
    if "nvdisasm" in r.stderr and "Function" not in r.stdout:
        return None
    return r.stdout


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("p,kn,hgmma", [
    (GemmProblem(4096, 4096, 4096, "bfloat16", out_dtype="bfloat16"), HopperKnobs(bm=128, bn=256, stages=4), 4),
    (GemmProblem(1000, 520, 336, "float16", b_kcontig=True), HopperKnobs(bm=128, bn=128, stages=5, consumers=1), 8),
    (GemmProblem(4096, 4096, 4096, "bfloat16", out_dtype="bfloat16"),
     HopperKnobs(bm=128, bn=256, stages=4, persistent=True, epilogue="tma", cluster="2x1"), 4),
])
def test_nvcc_compiles_for_sm90a_without_spills(p, kn, hgmma, tmp_path):
    from tessel.codegen.cuda_printer import print_kernel

    src = tmp_path / "k.cu"
    src.write_text(print_kernel(hopper_gemm_kernel(p, kn)).source)
    inc = os.path.join(os.path.dirname(ts.__file__), "codegen", "include")
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-std=c++17", f"-I{inc}", "-Xptxas", "-v",
                        str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"0 bytes spill stores, 0 bytes spill loads", r.stderr), r.stderr
    dump = _cuobjdump()
    if dump is not None:  # the SASS has the tensor-core and TMA instructions (counted per k-tile loop body)
        sass = sass_of(dump, tmp_path / "k.cubin")
        if sass is None:
            return  # cuobjdump without nvdisasm prints no SASS
        assert len(re.findall(r"HGMMA\.64x\d+x16", sass)) == hgmma
        assert "UTMALDG.2D" in sass and "SYNCS.PHASECHK" in sass and "USETMAXREG" in sass
        assert ("UTMALDG.2D.MULTICAST" in sass) == (kn.cluster == "2x1")
        assert ("UTMASTG.2D" in sass and "STSM" in sass) == (kn.epilogue == "tma")
