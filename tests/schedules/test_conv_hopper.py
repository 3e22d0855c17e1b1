"""The Hopper implicit-GEMM convolution (tessel/schedules/conv_hopper.py) in the race-checked
interpreter against a numpy convolution on fresh random inputs (both layouts; padding, dilation,
partial channel blocks, image edges, partial channel tiles, two consumers, persistent blocks, a
fused epilogue), with its synchronisation deleted (must fail), the problems it refuses (must say
why), and nvcc for sm_90a (SASS: HGMMA and 4-D TMA loads, no spills)."""

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
from tessel.ir.nodes import Buffer
from tessel.schedules.conv_gemm import ConvProblem
from tessel.schedules.conv_hopper import check, hopper_conv_kernel, pixel_tile
from tessel.schedules.epilogue import Epilogue
from tessel.schedules.gemm_hopper import HopperKnobs
from tests.schedules.test_gemm_hopper import _cuobjdump, failure_kind, sass_of

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
SMALL = HopperKnobs(bm=64, bn=64, stages=2, consumers=1)


def _inputs(p: ConvProblem, seed=None):
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((p.n, p.h, p.w, p.c)).astype(NP[p.dtype])
    w = (rng.standard_normal((p.k, p.r, p.s, p.c)) / np.sqrt(p.r * p.s * p.c)).astype(NP[p.dtype])
    return seed, rng, x, w


def _reference(p: ConvProblem, x, w):
    """float64 NHWC convolution (stride 1), Y in the problem's layout."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (p.pad, p.pad), (p.pad, p.pad), (0, 0)))
    d = p.dilation
    y = sum(np.einsum("npqc,kc->npqk", xp[:, r * d:r * d + p.p, s * d:s * d + p.q], w[:, r, s].astype(np.float64))
            for r in range(p.r) for s in range(p.s))
    return y if p.layout == "NHWC" else y.transpose(0, 3, 1, 2)


def _run(p, kn, epilogue=None, arrays=(), seed=None, drop=()):
    seed, rng, x, w = _inputs(p, seed)
    _, _, y_buf = p.buffers()
    y = np.full(y_buf.shape, 7e3, NP[p.out_dtype])  # garbage: every element must be written
    kern = hopper_conv_kernel(p, kn, epilogue=epilogue, drop=drop)
    interp.run(kern, x, w.reshape(p.k, -1), y, *arrays, seed=seed)
    return seed, x, w, y


@pytest.mark.parametrize("p,kn", [
    # 3x3, pad 1, an 8x8 image: one 8x8 pixel tile per image, 2 images, C = 16 (a partial channel block)
    (ConvProblem(2, 16, 64, 8, 8, 3, 3, pad=1), SMALL),
    # image edges: 6 x 10 output pixels in 8 x 8 tiles; K = 72: a partial channel tile; 2 channel blocks
    (ConvProblem(1, 72, 72, 6, 10, 3, 3, pad=1), SMALL),
    # dilation 2, no padding, bf16 out; 128-pixel tiles split between 2 consumer warpgroups
    (ConvProblem(1, 64, 64, 12, 12, 3, 3, pad=0, dilation=2, dtype="bfloat16", out_dtype="bfloat16"),
     HopperKnobs(bm=128, bn=64, stages=3, consumers=2)),
    # 1x1, persistent blocks over several tiles
    (ConvProblem(2, 32, 128, 8, 16, 1, 1), HopperKnobs(bm=64, bn=64, stages=2, consumers=1, persistent=True)),
    # the models' layout: rows = output channels, columns = pixels, the image as the GEMM's batch
    (ConvProblem(2, 24, 64, 7, 9, 3, 3, pad=1, layout="NHWC:NCHW"), SMALL),
    (ConvProblem(1, 64, 128, 8, 8, 3, 3, pad=1, layout="NHWC:NCHW", out_dtype="float16"),
     HopperKnobs(bm=128, bn=64, stages=2, consumers=2, persistent=True)),
])
def test_interpreter_matches_numpy(p, kn):
    seed, x, w, y = _run(p, kn)
    want = _reference(p, x, w)
    err = np.abs(y.astype(np.float64) - want).max() / np.abs(want).max()
    assert err <= (1e-3 if p.out_dtype == "float32" else 8e-3), f"input seed {seed}: relative error {err}"


def test_fused_epilogue_bias_relu_in_both_layouts():
    for layout, axis in (("NHWC", -1), ("NHWC:NCHW", 1)):
        p = ConvProblem(1, 16, 64, 6, 6, 3, 3, pad=1, layout=layout, out_dtype="float16")
        bias = Buffer("bias", (64,), "float16")
        epi = Epilogue.of(("bias", bias, axis), "relu")
        b = np.random.default_rng().standard_normal(64).astype(np.float16)
        seed, x, w, y = _run(p, SMALL, epi, (b,))
        shape = (1, 1, 1, 64) if layout == "NHWC" else (1, 64, 1, 1)
        want = np.maximum(_reference(p, x, w) + b.astype(np.float64).reshape(shape), 0)
        assert np.abs(y.astype(np.float64) - want).max() <= 8e-3 * np.abs(want).max(), f"{layout}, seed {seed}"


@pytest.mark.parametrize("drop,allowed", [
    ("full_wait", {"race", "poison", "deadlock"}),
    ("empty_wait", {"race", "deadlock"}),
    ("wgmma_wait", {"race"}),
    ("release", {"deadlock"}),
])
def test_deleted_synchronisation_fails_in_the_interpreter(drop, allowed):
    # 9 taps x 1 channel block = 9 k-tiles through 2 stages: every stage is refilled
    p = ConvProblem(1, 16, 64, 8, 8, 3, 3, pad=1)
    seed, x, w, ok = _run(p, SMALL)
    want = _reference(p, x, w)
    assert np.abs(ok - want).max() <= 1e-3 * np.abs(want).max()
    for s in range(3):
        def run_once(s=s):
            _, _, _, y = _run(p, SMALL, seed=seed + s, drop=(drop,))
            return np.isnan(y).any() or np.abs(y - want).max() > 1e-3 * np.abs(want).max()
        got = failure_kind(run_once)
        assert got in allowed, f"drop {drop}: {got} (seed {seed + s})"


@pytest.mark.parametrize("p,kn,arch,what", [
    (ConvProblem(1, 16, 64, 8, 8, 3, 3, stride=2, pad=1), SMALL, "sm_90a", "stride 2"),
    (ConvProblem(1, 4, 64, 8, 8, 3, 3, pad=1), SMALL, "sm_90a", "C = 4"),
    (ConvProblem(1, 16, 64, 8, 8, 3, 3, pad=1), SMALL, "sm_80", "sm_90a"),
    (ConvProblem(1, 16, 64, 8, 8, 3, 3, pad=1, layout="NCHW"), SMALL, "sm_90a", "NHWC input"),
    (ConvProblem(1, 16, 64, 8, 8, 3, 3, pad=1), HopperKnobs(bm=64, bn=64, stages=2, consumers=1, epilogue="tma"),
     "sm_90a", "knob epilogue"),
])
def test_refusals_say_why(p, kn, arch, what):
    with pytest.raises(ScheduleError, match=what):
        check(p, kn, arch)


def test_pixel_tile_wastes_least():
    assert pixel_tile(ConvProblem(1, 64, 64, 56, 56, 3, 3, pad=1), 128) in ((16, 8), (8, 16), (4, 32), (2, 64))
    assert pixel_tile(ConvProblem(1, 64, 64, 8, 8, 3, 3, pad=1), 64) == (8, 8)
    assert pixel_tile(ConvProblem(1, 64, 64, 4, 32, 3, 3, pad=1), 128) == (4, 32)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("layout", ["NHWC", "NHWC:NCHW"])
def test_nvcc_compiles_for_sm90a_without_spills(layout, tmp_path):
    from tessel.codegen.cuda_printer import print_kernel

    p = ConvProblem(32, 256, 256, 56, 56, 3, 3, pad=1, layout=layout, dtype="bfloat16", out_dtype="bfloat16")
    src = tmp_path / "k.cu"
    src.write_text(print_kernel(hopper_conv_kernel(p)).source)
    inc = os.path.join(os.path.dirname(ts.__file__), "codegen", "include")
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-std=c++17", f"-I{inc}", "-Xptxas", "-v",
                        str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"0 bytes spill stores, 0 bytes spill loads", r.stderr), r.stderr
    dump = _cuobjdump()
    sass = sass_of(dump, tmp_path / "k.cubin") if dump is not None else None
    if sass is not None:
        assert re.search(r"HGMMA\.64x\d+x16", sass) and "UTMALDG.4D" in sass and "UTMALDG.2D" in sass
