"""Batch folding in gemm.mma_sync (tessel/schedules/gemm_plan.batch_fold): a batch of GEMMs that
share B (a linear layer over [batch.., rows, features]) runs as one GEMM of batch x M rows. In the
race-checked interpreter against numpy on fresh random inputs (M = 1 and 7 per batch element, two
batch dimensions, fused bias + ReLU and a residual indexed by the full output index), the launch
shape (one grid row, tiles over the folded rows), where it does not apply, and nvcc for sm_80."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import tessel as ts
from tessel.ir import interp
from tessel.schedules.gemm_plan import batch_fold, gemm_plan
from tessel.schedules.template import get_template
from tests.schedules.test_gemm_hopper import _cuobjdump, sass_of


def _linear(batch: tuple, m: int, n: int, k: int, w_t: bool, residual: bool):
    X = ts.placeholder(batch + (m, k), "float16", name="X")
    W = ts.placeholder((n, k) if w_t else (k, n), "float16", name="W")
    bias = ts.placeholder((n,), "float32", name="bias")
    R = ts.placeholder(batch + (m, n), "float32", name="R")
    r = ts.reduce_axis(k, name="k")

    def y(*idx):
        b, (i, j) = idx[:-2], idx[-2:]
        w = W[j, r] if w_t else W[r, j]
        return ts.sum(X[b + (i, r)].astype("float32") * w.astype("float32"), axis=r)

    Y = ts.compute(batch + (m, n), y, name="Y")
    Z = ts.compute(batch + (m, n), lambda *idx: ts.maximum(Y[idx] + bias[idx[-1]], 0.0) + (R[idx] if residual else 0.0),
                   name="Z")
    return ts.lower([X, W, bias] + ([R] if residual else []) + [Z])


@pytest.mark.parametrize("batch,m,n,k,w_t,residual", [
    ((4,), 7, 48, 64, False, False),  # 28 rows in tiles that cross batch elements
    ((3,), 1, 32, 96, True, True),  # one row per element (decode-like), W [N][K], a residual R[b, i, j]
    ((2, 3), 5, 40, 72, False, True),  # two batch dimensions, K and N off the tile
])
def test_folded_batch_matches_numpy(batch, m, n, k, w_t, residual):
    kernel = _linear(batch, m, n, k, w_t, residual)
    fold = batch_fold(gemm_plan(kernel, allow_epilogue=True))
    assert fold is not None and fold[0].m == int(np.prod(batch)) * m and fold[0].batch == ()
    sch = get_template("gemm.mma_sync").apply(kernel, None, "cuda:sm_80")
    bm = sch.trace[0].args["knobs"]["bm"]
    assert sch.kernel.launch.grid[1] == 1  # no grid row per batch element
    assert sch.kernel.launch.grid[0] % -(-(int(np.prod(batch)) * m) // bm) == 0
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch + (m, k)).astype(np.float16)
    w = rng.standard_normal((n, k) if w_t else (k, n)).astype(np.float16)
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal(batch + (m, n)).astype(np.float32)
    z = np.full(batch + (m, n), 7e3, np.float32)
    interp.run(sch.kernel, x, w, bias, *([res] if residual else []), z, seed=seed)
    wm = w.astype(np.float64).T if w_t else w.astype(np.float64)
    want = np.maximum(x.astype(np.float64) @ wm + bias, 0) + (res if residual else 0)
    np.testing.assert_allclose(z, want, rtol=1e-3, atol=1e-3, err_msg=f"input seed {seed}")


def test_no_fold_where_b_is_batched_or_a_is_m_major():
    A = ts.placeholder((2, 8, 32), "float16", name="A")
    B = ts.placeholder((2, 32, 16), "float16", name="B")
    k = ts.reduce_axis(32, name="k")
    bmm = ts.lower([A, B, ts.compute((2, 8, 16), lambda b, i, j: ts.sum(
        A[b, i, k].astype("float32") * B[b, k, j].astype("float32"), axis=k), name="C")])
    assert batch_fold(gemm_plan(bmm)) is None  # each element has its own B: a grid row per element
    assert get_template("gemm.mma_sync").apply(bmm, None, "cuda:sm_80").kernel.launch.grid[1] == 2
    At = ts.placeholder((2, 32, 8), "float16", name="At")
    W = ts.placeholder((32, 16), "float16", name="W")
    mn = ts.lower([At, W, ts.compute((2, 8, 16), lambda b, i, j: ts.sum(
        At[b, k, i].astype("float32") * W[k, j].astype("float32"), axis=k), name="C")])
    assert batch_fold(gemm_plan(mn)) is None  # A's rows are strided: 8-element copies would cross them


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_nvcc_compiles_a_folded_gemm_for_sm80_without_spills(tmp_path):
    from tessel.codegen.cuda_printer import print_kernel

    kernel = _linear((64,), 7, 1024, 1024, True, False)  # 448 rows
    sch = get_template("gemm.mma_sync").apply(kernel, None, "cuda:sm_80")
    src = tmp_path / "k.cu"
    src.write_text(print_kernel(sch.kernel).source)
    inc = os.path.join(os.path.dirname(ts.__file__), "codegen", "include")
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_80", "-O3", "-std=c++17", f"-I{inc}", "-Xptxas", "-v",
                        str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"0 bytes spill stores, 0 bytes spill loads", r.stderr), r.stderr
    dump = _cuobjdump()
    sass = sass_of(dump, tmp_path / "k.cubin") if dump is not None else None
    if sass is not None:
        assert "HMMA.16816.F32" in sass and "LDGSTS" in sass and "LDL" not in sass and "STL" not in sass
