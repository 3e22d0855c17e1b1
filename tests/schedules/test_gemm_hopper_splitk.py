"""Split-K of 'gemm.wgmma' (tessel/schedules/hopper_splitk.py): the CTAs of a cluster share a tile's
k-tiles and rank 0 reduces their float32 partials from a global workspace. Checked in the
race-checked interpreter against numpy on fresh random inputs (uneven k-tile shares, edges, the
TMA-store epilogue, a fused bias + ReLU), with the reduction's synchronisation deleted (must fail),
the knob's limits, the default rule, the template on a DSL contraction (replays), and nvcc for
sm_90a (SASS: HGMMA, the remote arrive, no spills)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.nodes import Allocate, walk
from tessel.ir.verify import verify
from tessel.schedules.gemm import GemmProblem
from tessel.schedules.gemm_hopper import GEMM_WGMMA, HopperKnobs, check_knobs, default_knobs, default_split_k
from tessel.schedules.gemm_hopper import hopper_gemm_kernel
from tessel.schedules.schedule import Schedule
from tests.schedules.test_gemm_hopper import (
    _check, _cuobjdump, _dsl_matmul, _inputs, _reference, assert_broken_gemm_fails, sass_of,
)
from tests.tolerances import matmul_tol


@pytest.mark.parametrize("p,kn", [
    # 2 CTAs, 5 k-tiles: shares of 2 and 3 (K does not divide), float32 output
    (GemmProblem(64, 64, 320, "bfloat16"), HopperKnobs(bm=64, bn=64, stages=2, consumers=1, split_k=2)),
    # 3 CTAs over 4 k-tiles (1, 1, 2), edges in M, N and K (TMA zero fill), bf16 out, 2 x 2 tiles
    (GemmProblem(100, 72, 200, "bfloat16", out_dtype="bfloat16"),
     HopperKnobs(bm=64, bn=64, stages=2, consumers=1, split_k=3)),
    # two consumer warpgroups, the stmatrix + TMA-store epilogue, fp16, B K-major
    (GemmProblem(128, 128, 256, "float16", b_kcontig=True, out_dtype="float16"),
     HopperKnobs(bm=128, bn=128, stages=2, consumers=2, split_k=2, epilogue="tma")),
    # batched (tiles of both batches are clusters), A MN-major
    (GemmProblem(64, 64, 192, "bfloat16", batch=(2,), a_kcontig=False),
     HopperKnobs(bm=64, bn=64, stages=2, consumers=1, split_k=3)),
])
def test_split_k_matches_numpy(p, kn):
    k = hopper_gemm_kernel(p, kn)
    tiles = -(-p.m // kn.bm) * -(-p.n // kn.bn) * int(np.prod(p.batch or (1,)))
    assert k.launch.grid == (tiles * kn.split_k, 1, 1) and k.launch.cluster == (kn.split_k, 1, 1)
    assert any(isinstance(n, Allocate) and n.buffer.scope == "global" for n in walk(k.body))
    verify(k)  # well-formed IR (unique loop names among others)
    _check(p, kn)


def test_split_k_with_a_fused_bias_and_relu():
    from tessel.ir.nodes import Buffer, Const, Select

    p = GemmProblem(64, 120, 256, "bfloat16", out_dtype="bfloat16")
    bias = Buffer("bias", (120,), "float32")

    def hook(v, row, col):
        x = v + bias[col]
        return Select(x > Const(0.0, "float32"), x, Const(0.0, "float32"))

    k = hopper_gemm_kernel(p, HopperKnobs(bm=64, bn=64, stages=2, consumers=1, split_k=2), epilogue=(hook, [bias]))
    seed, a, b, c = _inputs(p)
    bv = np.random.default_rng(seed + 1).standard_normal(120).astype(np.float32)
    interp.run(k, a, b, c, bv, seed=seed)
    # the bias and the ReLU apply once, to the reduced sum (not to each partial)
    ref = np.maximum(_reference(p, a, b) + bv, 0.0)
    np.testing.assert_allclose(c.astype(np.float64), ref, **matmul_tol(p.dtype, p.k, out_dtype="bfloat16"),
                               err_msg=f"input seed {seed}")
    assert (c.astype(np.float32) == 0).mean() > 0.3


@pytest.mark.parametrize("drop,allowed", [
    ("split_wait", {"race", "poison"}),  # rank 0 reads the workspace before its peers wrote it
    ("split_barrier", {"race"}),  # thread 0 arrives before the other 127 threads' partial stores are ordered
    ("split_arrive", {"deadlock"}),  # rank 0 waits forever
])
def test_split_k_without_its_synchronisation_fails(drop, allowed):
    p = GemmProblem(64, 64, 256, "bfloat16")
    kn = HopperKnobs(bm=64, bn=64, stages=2, consumers=1, split_k=2)
    seed, a, b, c = _inputs(p)
    broken = hopper_gemm_kernel(p, kn, drop=(drop,))
    assert broken != hopper_gemm_kernel(p, kn)
    want = _reference(p, a, b)
    assert_broken_gemm_fails(broken, (a, b, c), want, allowed, seed, matmul_tol(p.dtype, p.k), f"drop {drop}")


@pytest.mark.parametrize("knobs", [
    dict(split_k=9), dict(split_k=0), dict(split_k=2, persistent=True), dict(split_k=2, cluster="2x1"),
    dict(split_k=8, bm=64, bn=64, consumers=1),  # 512 / 64 = 8 k-tiles is fine; 9 CTAs is not (above)
])
def test_split_k_limits_name_the_knob(knobs):
    p = GemmProblem(512, 512, 448, "bfloat16")  # 7 k-tiles: split_k=8 leaves a CTA without one
    with pytest.raises(ScheduleError, match="knob split_k="):
        check_knobs(p, HopperKnobs(**knobs))


def test_default_split_rule():
    sms = 132
    for shape, want in [((128, 8192, 8192), 2), ((8192, 128, 8192), 2), ((512, 512, 16384), 8),
                        ((4096, 4096, 4096), 1), ((2048, 2048, 2048), 1), ((1000, 520, 336), 1),
                        ((128, 128, 512), 1)]:  # 8 k-tiles: too short to split
        p = GemmProblem(*shape, "bfloat16", out_dtype="bfloat16")
        assert default_split_k(p, sms) == want, shape
        kn = default_knobs(p, sms)
        assert kn.split_k == want
        check_knobs(p, kn)
    assert default_split_k(GemmProblem(128, 8192, 8192, "bfloat16"), sms=64) == 1  # fills half a 64-SM GPU


def test_template_on_a_dsl_contraction_with_split_k():
    kernel = _dsl_matmul(64, 128, 256, "bfloat16")
    knobs = {"bm": 64, "bn": 64, "stages": 2, "consumers": 1, "split_k": 2, "persistent": False}
    sch = GEMM_WGMMA.apply(kernel, knobs, "cuda:sm_90a")
    assert sch.trace[0].args["knobs"]["split_k"] == 2
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    assert sch.kernel.launch.cluster == (2, 1, 1)
    p = GemmProblem(64, 128, 256, "bfloat16")
    seed, a, b, c = _inputs(p)
    interp.run(sch.kernel, a, b, c, seed=seed)
    np.testing.assert_allclose(c, _reference(p, a, b), **matmul_tol("bfloat16", 256), err_msg=f"seed {seed}")
    space = GEMM_WGMMA.space(kernel, "cuda:sm_90a")
    assert space.check(dict(space.default, split_k=2, persistent=False, pingpong=False, cluster="1x1")) is None
    assert "split_k" in (space.check(dict(space.default, split_k=2, persistent=True)) or "")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("shape,split,tiles", [((128, 8192, 8192), 2, 64), ((512, 512, 16384), 8, 16)])
def test_nvcc_compiles_split_k_for_sm90a_without_spills(shape, split, tiles, tmp_path):
    # (split 8 spilled 16 bytes while the peers' loop was unrolled: nvcc hoisted all 7 x 64 loads)
    from tessel.codegen.cuda_printer import print_kernel

    p = GemmProblem(*shape, "bfloat16", out_dtype="bfloat16")
    kn = default_knobs(p)
    assert kn.split_k == split
    printed = print_kernel(hopper_gemm_kernel(p, kn))
    # (split - 1) x tiles x 2 consumers x 64 values x 128 lanes floats
    assert printed.workspace_bytes == (split - 1) * tiles * 2 * 64 * 128 * 4
    src = tmp_path / "k.cu"
    src.write_text(printed.source)
    inc = os.path.join(os.path.dirname(ts.__file__), "codegen", "include")
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-std=c++17", f"-I{inc}", "-Xptxas", "-v",
                        str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"0 bytes spill stores, 0 bytes spill loads", r.stderr), r.stderr
    dump = _cuobjdump()
    if dump is not None:
        sass = sass_of(dump, tmp_path / "k.cubin")
        if sass is None:
            return  # cuobjdump without nvdisasm prints no SASS
        assert len(re.findall(r"HGMMA\.64x128x16", sass)) == 4
        assert "SYNCS.ARRIVE.TRANS64.RED" in sass  # the remote arrive on rank 0's reduce barrier
        # the workspace as 16-byte accesses: 64 values per thread = 16 stores by a peer, 16 loads per peer by rank 0
        assert len(re.findall(r"STG\.E\.128", sass)) == 16 and len(re.findall(r"LDG\.E\.128", sass)) == 16
        assert "UTMASTG.2D" in sass and "LDL" not in sass and "STL" not in sass
