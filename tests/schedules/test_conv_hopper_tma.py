"""The TMA-store epilogue of the Hopper implicit-GEMM convolution (tessel/schedules/conv_hopper.py,
epilogue="tma", NHWC, 16-bit Y): stmatrix into 64 x 64 staging tiles, one 4-D TMA store each,
clipped at the image's edges. In the race-checked interpreter against numpy on fresh random
inputs (edges, two consumers, persistent blocks reusing the staging tile, a fused bias + ReLU),
with the staging tile's waits deleted (must race), its refusals, and nvcc for sm_90a (UTMASTG.4D)."""

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
from tessel.ir.nodes import Buffer
from tessel.schedules.conv_gemm import ConvProblem
from tessel.schedules.conv_hopper import check, hopper_conv_kernel
from tessel.schedules.epilogue import Epilogue
from tessel.schedules.gemm_hopper import HopperKnobs
from tests.schedules.test_conv_hopper import _reference, _run
from tests.schedules.test_gemm_hopper import _cuobjdump, sass_of

TMA = HopperKnobs(bm=64, bn=64, stages=2, consumers=1, epilogue="tma")


@pytest.mark.parametrize("p,kn", [
    # one 8 x 8 pixel tile per image, 2 images
    (ConvProblem(2, 16, 64, 8, 8, 3, 3, pad=1, out_dtype="float16"), TMA),
    # image edges: 6 x 10 pixels in 8 x 8 tiles, K = 72 channels (a partial channel tile): the store clips
    (ConvProblem(1, 72, 72, 6, 10, 1, 1, out_dtype="float16"), TMA),
    # 128-pixel tiles (bw <= 64: each staging tile is 64 / bw pixel rows) split between 2 consumers, bf16
    (ConvProblem(1, 64, 64, 12, 12, 3, 3, pad=0, dilation=2, dtype="bfloat16", out_dtype="bfloat16"),
     HopperKnobs(bm=128, bn=64, stages=3, consumers=2, epilogue="tma")),
    # persistent: blocks store several tiles through the same staging tile; 2 channel tiles of 64
    (ConvProblem(2, 32, 128, 8, 16, 1, 1, out_dtype="bfloat16", dtype="bfloat16"),
     HopperKnobs(bm=64, bn=128, stages=2, consumers=1, persistent=True, epilogue="tma")),
])
def test_tma_store_epilogue_matches_numpy(p, kn):
    seed, x, w, y = _run(p, kn)
    want = _reference(p, x, w)
    err = np.abs(y.astype(np.float64) - want).max() / np.abs(want).max()
    assert err <= 8e-3, f"input seed {seed}: relative error {err}"


def test_tma_store_epilogue_with_bias_relu_at_the_edges():
    # 6 x 6 pixels in an 8 x 8 tile: the epilogue reads bias at clamped indices where the store clips
    p = ConvProblem(1, 16, 64, 6, 6, 3, 3, pad=1, out_dtype="float16")
    bias = Buffer("bias", (64,), "float16")
    b = np.random.default_rng().standard_normal(64).astype(np.float16)
    seed, x, w, y = _run(p, TMA, Epilogue.of(("bias", bias, -1), "relu"), (b,))
    want = np.maximum(_reference(p, x, w) + b.astype(np.float64).reshape(1, 1, 1, 64), 0)
    assert np.abs(y.astype(np.float64) - want).max() <= 8e-3 * np.abs(want).max(), f"seed {seed}"
    assert (y == 0).mean() > 0.3


@pytest.mark.parametrize("drop", ["store_wait", "store_barrier"])
def test_tma_store_epilogue_without_its_waits_races(drop):
    # persistent, 2 tiles per block, 2 channel chunks per tile: the staging tile is rewritten while
    # (store_wait) or before (store_barrier) a TMA store reads it
    p = ConvProblem(2, 16, 128, 8, 8, 1, 1, out_dtype="float16")
    kn = HopperKnobs(bm=64, bn=128, stages=2, consumers=1, persistent=True, epilogue="tma")
    seed, x, w, y0 = _run(p, kn)
    want = _reference(p, x, w)
    ok = np.full(y0.shape, 7e3, y0.dtype)
    interp.run(hopper_conv_kernel(p, kn, sms=1), x, w.reshape(p.k, -1), ok, seed=seed)  # one block, both tiles
    assert np.abs(ok.astype(np.float64) - want).max() <= 8e-3 * np.abs(want).max()
    for s in range(3):
        with pytest.raises(interp.RaceError):
            y = np.full(ok.shape, 7e3, ok.dtype)
            interp.run(hopper_conv_kernel(p, kn, drop=(drop,), sms=1), x, w.reshape(p.k, -1), y, seed=seed + s)


@pytest.mark.parametrize("p,what", [
    (ConvProblem(1, 16, 64, 8, 8, 3, 3, pad=1, layout="NHWC:NCHW", out_dtype="float16"), "NHWC:NCHW"),
    (ConvProblem(1, 16, 64, 8, 8, 3, 3, pad=1), "16-bit"),  # float32 Y
    (ConvProblem(1, 16, 68, 8, 8, 3, 3, pad=1, out_dtype="float16"), "multiple of 16 bytes"),
])
def test_tma_store_refusals_name_the_knob(p, what):
    with pytest.raises(ScheduleError, match=f"knob epilogue='tma'.*{what}"):
        check(p, TMA)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_nvcc_compiles_the_tma_store_conv_for_sm90a_without_spills(tmp_path):
    from tessel.codegen.cuda_printer import print_kernel
    from tessel.schedules.conv_hopper import default_conv_knobs
    import dataclasses

    p = ConvProblem(32, 256, 256, 56, 56, 3, 3, pad=1, dtype="bfloat16", out_dtype="bfloat16")
    kn = dataclasses.replace(default_conv_knobs(p), epilogue="tma")
    src = tmp_path / "k.cu"
    src.write_text(print_kernel(hopper_conv_kernel(p, kn)).source)
    inc = os.path.join(os.path.dirname(ts.__file__), "codegen", "include")
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-std=c++17", f"-I{inc}", "-Xptxas", "-v",
                        str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"0 bytes spill stores, 0 bytes spill loads", r.stderr), r.stderr
    dump = _cuobjdump()
    sass = sass_of(dump, tmp_path / "k.cubin") if dump is not None else None
    if sass is not None:
        assert "UTMASTG.4D" in sass and "STSM" in sass and "UTMALDG.4D" in sass
        assert re.search(r"HGMMA\.64x\d+x16", sass) and "LDL" not in sass and "STL" not in sass
