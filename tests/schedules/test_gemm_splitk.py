"""Split-K of gemm.mma_sync on sm_90 (tessel/schedules/gemm.py with hopper_splitk's cluster
reduction): the split_k CTAs of a cluster share a tile's k-tiles, ranks 1.. publish float32
partials to a workspace and arrive on rank 0's mbarrier, rank 0 adds them and stores. In the
race-checked interpreter against numpy on fresh random inputs (uneven shares, edges, batches),
with the reduction's synchronisation deleted (must fail), its refusals (no clusters on sm_80), and
nvcc for sm_90a (HMMA, the remote arrive, 16-byte workspace accesses, no spills)."""

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
from tessel.schedules.gemm import GemmKnobs, GemmProblem, check_knobs, gemm_kernel
from tests.schedules.test_gemm_hopper import _cuobjdump, _reference, assert_broken_gemm_fails, sass_of
from tests.tolerances import matmul_tol

SMALL = dict(bm=32, bn=32, bk=32, warps_m=1, warps_n=1)


def _inputs(p, seed=None):
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    rng = np.random.default_rng(seed)
    a_buf, b_buf, c_buf = p.buffers()
    a = rng.standard_normal(a_buf.shape).astype(np.float16)
    b = rng.standard_normal(b_buf.shape).astype(np.float16)
    return seed, a, b, np.full(c_buf.shape, 7e3, np.float32)


@pytest.mark.parametrize("p,kn", [
    (GemmProblem(32, 32, 200, "float16", b_kcontig=True), GemmKnobs(**SMALL, stages=3, split_k=3)),  # 7 k-tiles: 2+2+3
    (GemmProblem(40, 48, 160, "float16"), GemmKnobs(**SMALL, stages=2, split_k=2)),  # edges in M and N, B [K][N]
    (GemmProblem(16, 64, 256, "float16", b_kcontig=True),  # two warps, four CTAs per tile
     GemmKnobs(bm=16, bn=64, bk=32, warps_m=1, warps_n=2, stages=2, split_k=4)),
    (GemmProblem(32, 32, 128, "float16", batch=(2,)), GemmKnobs(**SMALL, stages=2, split_k=2)),  # batched B
])
def test_mma_split_k_matches_numpy(p, kn):
    k = gemm_kernel(p, kn)
    assert k.launch.cluster == (kn.split_k, 1, 1)
    seed, a, b, c = _inputs(p)
    interp.run(k, a, b, c, seed=seed)
    np.testing.assert_allclose(c, _reference(p, a, b), **matmul_tol(p.dtype, p.k), err_msg=f"input seed {seed}")


@pytest.mark.parametrize("drop,allowed", [
    ("split_wait", {"race", "poison"}), ("split_barrier", {"race"}), ("split_arrive", {"deadlock"}),
])
def test_mma_split_k_without_its_synchronisation_fails(drop, allowed):
    p = GemmProblem(32, 32, 128, "float16", b_kcontig=True)
    kn = GemmKnobs(**SMALL, stages=2, split_k=2)
    seed, a, b, c = _inputs(p)
    broken = gemm_kernel(p, kn, drop=(drop,))
    assert broken != gemm_kernel(p, kn)
    want = _reference(p, a, b)
    assert_broken_gemm_fails(broken, (a, b, c), want, allowed, seed, matmul_tol(p.dtype, p.k), f"drop {drop}")


def test_mma_split_k_refusals():
    p = GemmProblem(64, 64, 96, "float16")  # 3 k-tiles of 32
    with pytest.raises(ScheduleError, match="knob split_k="):
        check_knobs(p, GemmKnobs(**SMALL, stages=2, split_k=4))
    with pytest.raises(ScheduleError, match="knob split_k=.*cluster"):
        check_knobs(p, GemmKnobs(**SMALL, stages=2, split_k=2), "sm_80")
    A = ts.placeholder((64, 96), "float16", name="A")
    B = ts.placeholder((96, 64), "float16", name="B")
    k = ts.reduce_axis(96, name="k")
    kernel = ts.lower([A, B, ts.compute((64, 64), lambda i, j: ts.sum(
        A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k), name="C")])
    from tessel.schedules.template import get_template

    tpl = get_template("gemm.mma_sync")
    knobs = dict(SMALL, stages=2, split_k=2)
    with pytest.raises(ScheduleError, match="cluster"):
        tpl.apply(kernel, knobs, "cuda:sm_80")
    assert tpl.apply(kernel, knobs, "cuda:sm_90a").kernel.launch.cluster == (2, 1, 1)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_nvcc_compiles_mma_split_k_for_sm90a_without_spills(tmp_path):
    from tessel.codegen.cuda_printer import print_kernel

    p = GemmProblem(16, 4096, 4096, "bfloat16", b_kcontig=True, out_dtype="bfloat16")  # decode-like: few tiles
    kn = GemmKnobs(bm=16, bn=128, bk=64, warps_m=1, warps_n=4, stages=4, split_k=4)
    src = tmp_path / "k.cu"
    src.write_text(print_kernel(gemm_kernel(p, kn)).source)
    inc = os.path.join(os.path.dirname(ts.__file__), "codegen", "include")
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-std=c++17", f"-I{inc}", "-Xptxas", "-v",
                        str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"0 bytes spill stores, 0 bytes spill loads", r.stderr), r.stderr
    dump = _cuobjdump()
    sass = sass_of(dump, tmp_path / "k.cubin") if dump is not None else None
    if sass is not None:
        assert "HMMA.16816.F32.BF16" in sass and "SYNCS.ARRIVE.TRANS64.RED" in sass
        # the partials leave as 16-byte stores (rank 0's loads stay 4-byte: a [mt][nt][4] register array's
        # adds are not vectorised; coalesced across the lanes all the same)
        assert "STG.E.128" in sass and "LDL" not in sass and "STL" not in sass
