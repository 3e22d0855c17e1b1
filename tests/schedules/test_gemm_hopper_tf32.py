"""float32 GEMMs on tf32 wgmma ('gemm.wgmma_tf32', tessel/schedules/gemm_hopper.py), only where the
user allows tf32: the race-checked interpreter against numpy on fresh random inputs within a
bound that reflects tf32's 10-bit mantissa, a check that the result is really tf32 (it differs
from float32-exact and matches the tf32-truncated operands' product), deleted synchronisation
(must fail), refusals without the permission or with MN-major operands, the template's
selection (never by default, never found by `applicable`), and nvcc for sm_90a (HGMMA .TF32)."""

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
from tessel.ir.nodes import Intrinsic, walk
from tessel.schedules.gemm import GemmProblem
from tessel.schedules.gemm_hopper import GEMM_WGMMA_TF32, HopperKnobs, check_knobs, default_knobs, hopper_gemm_kernel
from tessel.schedules.schedule import Schedule
from tests.schedules.test_gemm_hopper import _cuobjdump, assert_broken_gemm_fails, sass_of


def _tf32(x: np.ndarray) -> np.ndarray:
    """x with tf32's 13 dropped mantissa bits cleared (what the tensor cores read of a float32)."""
    return (np.asarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def _inputs(p: GemmProblem, seed=None):
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    rng = np.random.default_rng(seed)
    a_buf, b_buf, c_buf = p.buffers()
    a = rng.standard_normal(a_buf.shape).astype(np.float32)
    b = rng.standard_normal(b_buf.shape).astype(np.float32)
    return seed, a, b, np.full(c_buf.shape, 7e3, np.float32)


def _matmul(p, a, b):  # A [.., M, K], B [.., N, K] (both K-major) in float64
    return np.asarray(a, np.float64) @ np.swapaxes(np.asarray(b, np.float64), -1, -2)


def _run(p, kn, seed=None):
    seed, a, b, c = _inputs(p, seed)
    interp.run(hopper_gemm_kernel(p, kn, allow_tf32=True), a, b, c, seed=seed)
    return seed, a, b, c


def _check_tf32_bound(p, a, b, c, seed):
    # each operand loses < 2^-10 of itself, so each product < 2^-9 of |a||b|; float32 sums add ~K 2^-24
    bound = 2.0 ** -9 * _matmul(p, np.abs(a), np.abs(b)) + 1e-5 * np.sqrt(p.k)
    err = np.abs(c.astype(np.float64) - _matmul(p, a, b))
    assert (err <= bound).all(), f"input seed {seed}: tf32 error {err.max()} above its bound"


@pytest.mark.parametrize("p,kn", [
    # one consumer, 4 k-tiles of 32 through 2 stages
    (GemmProblem(64, 64, 128, "float32", b_kcontig=True), HopperKnobs(bm=64, bn=64, bk=32, stages=2, consumers=1)),
    # two consumers, edges in M, N and K (K = 200: the last k-tile is zero-filled by TMA)
    (GemmProblem(128, 72, 200, "float32", b_kcontig=True), HopperKnobs(bm=128, bn=128, bk=32, stages=3, consumers=2)),
    # persistent blocks over a batch of 2 (4 tiles on 3 blocks)
    (GemmProblem(64, 128, 96, "float32", batch=(2,), b_kcontig=True),
     HopperKnobs(bm=64, bn=64, bk=32, stages=2, consumers=1, persistent=True)),
    # split-K: 2 CTAs of a cluster, 8 k-tiles
    (GemmProblem(64, 64, 256, "float32", b_kcontig=True),
     HopperKnobs(bm=64, bn=64, bk=32, stages=2, consumers=1, split_k=2)),
])
def test_tf32_gemm_within_tf32_error(p, kn):
    seed, a, b, c = _run(p, kn)
    _check_tf32_bound(p, a, b, c, seed)


def test_tf32_result_is_tf32_not_float32():
    p = GemmProblem(64, 64, 256, "float32", b_kcontig=True)
    seed, a, b, c = _run(p, HopperKnobs(bm=64, bn=64, bk=32, stages=2, consumers=1))
    exact = _matmul(p, a, b)
    # float32 arithmetic would be within ~1e-5 here; tf32 products are off by ~1e-3 of their size
    assert np.abs(c - exact).max() > 1e-3, f"input seed {seed}: the result looks float32-exact"
    np.testing.assert_allclose(c, _matmul(p, _tf32(a), _tf32(b)), rtol=1e-5, atol=1e-4,
                               err_msg=f"input seed {seed}: not the product of the tf32-truncated operands")


@pytest.mark.parametrize("drop,allowed", [("full_wait", {"race", "poison", "deadlock"}), ("wgmma_wait", {"race"})])
def test_tf32_without_its_waits_fails(drop, allowed):
    p = GemmProblem(64, 64, 128, "float32", b_kcontig=True)
    kn = HopperKnobs(bm=64, bn=64, bk=32, stages=2, consumers=1)
    seed, a, b, c = _inputs(p)
    broken = hopper_gemm_kernel(p, kn, drop=(drop,), allow_tf32=True)
    want = _matmul(p, _tf32(a), _tf32(b))
    assert_broken_gemm_fails(broken, (a, b, c), want, allowed, seed, {"rtol": 1e-5, "atol": 1e-4}, f"drop {drop}")


def test_float32_needs_the_permission_and_k_major_operands():
    p = GemmProblem(128, 128, 128, "float32", b_kcontig=True)
    kn = HopperKnobs(bm=64, bn=64, bk=32, consumers=1)
    with pytest.raises(ScheduleError, match="allow_tf32"):
        hopper_gemm_kernel(p, kn)
    with pytest.raises(ScheduleError, match="K-major"):
        check_knobs(GemmProblem(128, 128, 128, "float32"), kn, allow_tf32=True)  # B stored [K][N]
    with pytest.raises(ScheduleError, match="knob bk="):
        check_knobs(p, HopperKnobs(bm=64, bn=64, consumers=1), allow_tf32=True)  # bk 64: two atoms of float32
    assert default_knobs(p).bk == 32


def _dsl_f32_matmul(M, N, K):
    A = ts.placeholder((M, K), "float32", name="A")
    B = ts.placeholder((N, K), "float32", name="B")
    k = ts.reduce_axis(K, name="k")
    return ts.lower([A, B, ts.compute((M, N), lambda i, j: ts.sum(A[i, k] * B[j, k], axis=k), name="C")])


def test_tf32_template_only_with_the_permission():
    from tessel.schedules.generic_gpu import default_gpu_schedule
    from tessel.schedules.template import applicable

    kernel = _dsl_f32_matmul(64, 128, 128)
    assert default_gpu_schedule(kernel, "cuda:sm_90a").trace[0].args["name"] != "gemm.wgmma_tf32"
    assert "gemm.wgmma_tf32" not in [t.name for t in applicable(kernel, "cuda:sm_90a")]
    assert "gemm.wgmma_tf32" in [t.name for t in applicable(kernel, "cuda:sm_90a", permissions=("allow_tf32",))]
    sch = default_gpu_schedule(kernel, "cuda:sm_90a", allow_tf32=True)
    assert sch.trace[0].args["name"] == "gemm.wgmma_tf32" and sch.trace[0].args["knobs"]["bk"] == 32
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    p = GemmProblem(64, 128, 128, "float32", b_kcontig=True)
    seed, a, b, c = _inputs(p)
    interp.run(sch.kernel, a, b, c, seed=seed)
    _check_tf32_bound(p, a, b, c, seed)
    assert "float32 operands" in (GEMM_WGMMA_TF32.applies(_bf16_matmul(), "cuda:sm_90a") or "")


def _bf16_matmul():
    A = ts.placeholder((64, 64), "bfloat16", name="A")
    B = ts.placeholder((64, 64), "bfloat16", name="B")
    k = ts.reduce_axis(64, name="k")
    return ts.lower([A, B, ts.compute((64, 64), lambda i, j: ts.sum(A[i, k].astype("float32") *
                                                                    B[k, j].astype("float32"), axis=k), name="C")])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_nvcc_compiles_tf32_for_sm90a_without_spills(tmp_path):
    from tessel.codegen.cuda_printer import print_kernel

    p = GemmProblem(4096, 4096, 4096, "float32", b_kcontig=True)
    src = tmp_path / "k.cu"
    src.write_text(print_kernel(hopper_gemm_kernel(p, default_knobs(p), allow_tf32=True)).source)
    inc = os.path.join(os.path.dirname(ts.__file__), "codegen", "include")
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-std=c++17", f"-I{inc}", "-Xptxas", "-v",
                        str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"0 bytes spill stores, 0 bytes spill loads", r.stderr), r.stderr
    dump = _cuobjdump()
    sass = sass_of(dump, tmp_path / "k.cubin") if dump is not None else None
    if sass is not None:
        assert len(re.findall(r"HGMMA\.64x256x8\.F32\.TF32", sass)) == 4  # 4 k-steps of one m64 tile per consumer
        assert "UTMALDG.2D" in sass and "LDL" not in sass and "STL" not in sass


def test_compiled_model_pieces_use_tf32_only_when_allowed():
    # what compile(..., allow_tf32=True) hands to the CUDA build (model_cuda.build_gpu_program's parameter)
    from tessel.compiler.model_cuda import gpu_pieces
    from tessel.frontend.graph import Graph
    from tessel.passes.graph.fusion import fuse

    g = Graph()
    x = g.add_input("x", (64, 128), "float32")
    w = g.add_input("w", (96, 128), "float32")
    (y,) = g.add_node("linear", [x, w])  # x @ w.T: both operands K-major
    g.mark_outputs([y])
    names = {}
    for allow in (False, True):
        (piece,) = gpu_pieces(g, fuse(g)[0], "cuda:sm_90a", {}, [], allow_tf32=allow)
        names[allow] = {n.name for n in walk(piece.scheduled.body) if isinstance(n, Intrinsic)}
    assert not any("tf32" in n for n in names[False])  # exact float32 by default
    assert any("k8.f32.tf32.tf32" in n for n in names[True])
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal((64, 128)).astype(np.float32),
              "w": rng.standard_normal((96, 128)).astype(np.float32)}
    out = np.full((64, 96), 7e3, np.float32)
    kern = piece.scheduled
    interp.run(kern, *[arrays.get(v, out) for v in piece.args], seed=seed)
    p = GemmProblem(64, 96, 128, "float32", b_kcontig=True)
    _check_tf32_bound(p, arrays["x"], arrays["w"], out, seed)
