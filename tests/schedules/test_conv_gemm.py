"""Implicit-GEMM convolution on tensor cores (tessel/schedules/conv_gemm.py): the race-checked
interpreter against a numpy convolution on fresh random inputs, NHWC and NCHW, padding, stride,
dilation, 1x1, edges of every GEMM dimension, a fused bias + ReLU epilogue; a deleted barrier caught;
nvcc compiles the ResNet layer for sm_80 and sm_90a; bad problems raise naming the culprit; (`gpu`)
against torch.nn.functional.conv2d."""

from __future__ import annotations

import shutil

import ml_dtypes
import numpy as np
import pytest

from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.interp.race import RaceError
from tessel.ir.nodes import Barrier, Buffer, Seq, rewrite
from tessel.schedules.conv_gemm import ConvProblem, conv_kernel, default_conv_knobs
from tessel.schedules.epilogue import Epilogue
from tessel.schedules.gemm import GemmKnobs
from tessel.codegen.cuda_build import available_compilers

needs_cuda_compiler = pytest.mark.skipif(not available_compilers(), reason="no CUDA compiler (nvcc or NVRTC)")

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
SMALL = GemmKnobs(bm=32, bn=16, bk=32, warps_m=2, warps_n=1, stages=3, group_m=2)


def _reference_nchw(p: ConvProblem, x, w):
    """x [N, C, H, W], w [K, C, R, S] (float64) -> [N, K, P, Q]."""
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad, p.pad), (p.pad, p.pad)))
    y = np.zeros((p.n, p.k, p.p, p.q))
    for r in range(p.r):
        for s in range(p.s):
            h0, w0 = r * p.dilation, s * p.dilation
            win = xp[:, :, h0:h0 + p.stride * (p.p - 1) + 1:p.stride, w0:w0 + p.stride * (p.q - 1) + 1:p.stride]
            y += np.einsum("ncpq,kc->nkpq", win, w[:, :, r, s])
    return y


def _run(p: ConvProblem, kn=SMALL, epilogue=None, kernel=None):
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh inputs every run; the seed is in messages
    rng = np.random.default_rng(seed)
    xb, wb, yb = p.buffers()
    x4 = (p.n, p.c, p.h, p.w) if p.layout == "NCHW" else (p.n, p.h, p.w, p.c)
    w4 = (p.k, p.c, p.r, p.s) if p.layout == "NCHW" else (p.k, p.r, p.s, p.c)
    x = rng.standard_normal(x4).astype(NP[p.dtype])
    w = rng.standard_normal(w4).astype(NP[p.dtype])
    extra = [rng.standard_normal(b.shape).astype(NP[b.dtype]) for b in (epilogue.buffers if epilogue else ())]
    y = np.full(yb.shape, 7e3, NP[p.out_dtype])  # garbage: every element must be written
    interp.run(kernel or conv_kernel(p, kn, epilogue=epilogue), x.reshape(xb.shape), w.reshape(wb.shape), y, *extra)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    if p.layout != "NCHW":
        x64, w64 = x64.transpose(0, 3, 1, 2), w64.transpose(0, 3, 1, 2)
    want = _reference_nchw(p, x64, w64)
    if epilogue is not None:
        want = np.maximum(want + extra[0].astype(np.float64)[None, :, None, None], 0)
    got = y.astype(np.float64)
    if p.layout == "NHWC":
        got = got.transpose(0, 3, 1, 2)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-9)
    return seed, err


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHWC:NCHW"])
@pytest.mark.parametrize("shape", [
    dict(n=2, c=16, k=24, h=5, w=6, r=3, s=3, pad=1),  # ResNet-like 3x3, edges in M and N
    dict(n=1, c=8, k=16, h=7, w=7, r=3, s=3, pad=1, stride=2),
    dict(n=1, c=8, k=8, h=6, w=6, r=3, s=3, pad=2, dilation=2, dtype="bfloat16"),
    dict(n=2, c=24, k=16, h=4, w=4, r=1, s=1),  # pointwise
    dict(n=1, c=4, k=8, h=5, w=5, r=3, s=3, pad=0, dtype="bfloat16", out_dtype="bfloat16"),  # C=4: 8-byte copies
])
def test_interpreter_matches_numpy(layout, shape):
    p = ConvProblem(layout=layout, **{"dtype": "float16", **shape})
    seed, err = _run(p)
    assert err <= 1e-2, f"seed {seed}: {p} relative error {err}"


@pytest.mark.parametrize("layout,axis", [("NHWC", -1), ("NCHW", 1)])
def test_fused_bias_relu(layout, axis):
    p = ConvProblem(1, 8, 16, 5, 5, 3, 3, pad=1, layout=layout, out_dtype="float16")
    epi = Epilogue.of(("bias", Buffer("bias", (16,), "float16"), axis), "relu")
    seed, err = _run(p, epilogue=epi)
    assert err <= 1e-2, f"seed {seed}: relative error {err}"


def test_deleted_barrier_fails():
    p = ConvProblem(1, 16, 16, 6, 6, 3, 3, pad=1)
    kern = conv_kernel(p, GemmKnobs(bm=32, bn=16, bk=32, warps_m=2, warps_n=1, stages=2))
    broken = rewrite(kern, lambda n: Seq(()) if isinstance(n, Barrier) else None, fixpoint=False)
    with pytest.raises(RaceError):
        _run(p, kernel=broken)


def test_bad_problems_raise_naming_the_culprit():
    with pytest.raises(ScheduleError, match="layout"):
        ConvProblem(1, 8, 8, 4, 4, 3, 3, layout="NCWH")
    with pytest.raises(ScheduleError, match="float32"):
        ConvProblem(1, 8, 8, 4, 4, 3, 3, dtype="float32")
    with pytest.raises(ScheduleError, match="does not fit"):
        ConvProblem(1, 8, 8, 2, 2, 3, 3)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHWC:NCHW"])
def test_nvcc_compiles_the_resnet_layer(arch, layout):
    from tessel.codegen.cuda import cuda_source
    from tessel.codegen.cuda_build import compile_cuda

    p = ConvProblem(32, 256, 256, 56, 56, 3, 3, pad=1, layout=layout, dtype="bfloat16", out_dtype="bfloat16")
    assert compile_cuda(cuda_source(conv_kernel(p, default_conv_knobs(p))), arch, name="conv_gemm",
                        compiler="nvcc").code


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHWC:NCHW"])
@pytest.mark.parametrize("n,c,k,h,r,pad,stride", [(2, 64, 64, 14, 3, 1, 1), (1, 32, 48, 15, 3, 1, 2),
                                                    (2, 64, 128, 7, 1, 0, 1)])
def test_gpu_matches_torch(layout, n, c, k, h, r, pad, stride):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from tessel.codegen.cuda import build_kernel

    p = ConvProblem(n, c, k, h, h, r, r, stride=stride, pad=pad, layout=layout, dtype="bfloat16")
    kern = build_kernel(conv_kernel(p), "cuda")
    x = torch.randn(n, c, h, h, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(k, c, r, r, device="cuda", dtype=torch.bfloat16)
    ref = torch.nn.functional.conv2d(x.float(), w.float(), stride=stride, padding=pad)
    if layout == "NHWC":
        y = torch.full((n, p.p, p.q, k), float("nan"), device="cuda")
        kern(x.permute(0, 2, 3, 1).contiguous(), w.permute(0, 2, 3, 1).reshape(k, -1).contiguous(), y)
        y = y.permute(0, 3, 1, 2)
    elif layout == "NHWC:NCHW":
        y = torch.full((n, k, p.p, p.q), float("nan"), device="cuda")
        kern(x.permute(0, 2, 3, 1).contiguous(), w.permute(0, 2, 3, 1).reshape(k, -1).contiguous(), y)
    else:
        y = torch.full((n, k, p.p, p.q), float("nan"), device="cuda")
        kern(x, w.reshape(k, -1), y)
    err = float((y - ref).norm() / ref.norm())
    assert err <= 5e-3 and not torch.isnan(y).any()


# -- compiled models: float16 / bfloat16 convolutions map to the implicit GEMM on cuda --------------

def _mma_in(kernel, wgmma: bool = False) -> bool:
    """Whether `kernel` runs mma.sync (or, with `wgmma`, Hopper's wgmma) tensor-core instructions."""
    from tessel.ir.nodes import Intrinsic, walk

    prefix = "wgmma.mma_async" if wgmma else "mma"
    return any(isinstance(n, Intrinsic) and n.name.startswith(prefix) for n in walk(kernel.ir))


@needs_cuda_compiler
@pytest.mark.parametrize("c,k,r,pad,stride,dtype", [(16, 24, 3, 1, 1, "float16"), (16, 16, 1, 0, 1, "float16"),
                                                    (8, 16, 3, 1, 2, "bfloat16")])
def test_graph_conv_bias_relu_is_the_implicit_gemm_on_cuda(c, k, r, pad, stride, dtype):
    torch = pytest.importorskip("torch")
    from tessel.compiler.model import compile_graph
    from tessel.frontend.builder import GraphBuilder

    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, c, r, r)) / (c * r * r) ** 0.5).astype(NP[dtype])
    bias = rng.standard_normal(k).astype(NP[dtype])
    x = rng.standard_normal((2, c, 9, 9)).astype(NP[dtype])
    b = GraphBuilder("conv")
    b.output(b.relu(b.conv2d(b.input("x", x.shape, dtype), w, bias, padding=pad, stride=stride)))
    cm = compile_graph(b.graph, target="cuda:sm_90a")
    # the weights as a matrix (and X as NHWC unless 1x1), then ONE conv + bias + ReLU kernel on tensor cores
    names = ["in1_weights", "conv_relu"] if r == 1 else ["in1_weights", "in0_to_nhwc", "conv_relu"]
    # on sm_90a the Hopper implicit GEMM (TMA boxes + wgmma) takes stride 1 over an NHWC copy; the rest mma.sync
    assert [kk.name for kk in cm.kernels] == names and _mma_in(cm.kernels[-1], wgmma=stride == 1 and r > 1)
    assert not cm.report.get("gpu_splits")
    got = np.asarray(cm.run_interpreted(x), np.float64)
    t = lambda a: torch.tensor(np.asarray(a, np.float64))  # noqa: E731
    want = torch.relu(torch.nn.functional.conv2d(t(x), t(w), t(bias), padding=pad, stride=stride)).numpy()
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= 1e-2, f"seed {seed}: relative error {err}"


@needs_cuda_compiler
def test_torch_half_pointwise_conv_maps_to_the_implicit_gemm():
    torch = pytest.importorskip("torch")
    from tessel.compiler.compile_api import compile as ts_compile

    g = torch.Generator().manual_seed(int(np.random.SeedSequence().entropy % 2**31))
    module = torch.nn.Conv2d(16, 32, 1).half()
    x = torch.randn(2, 16, 8, 8, generator=g).half()
    cm = ts_compile(module, (x,), target="cuda:sm_90a")
    assert any(_mma_in(kk) for kk in cm.kernels) and len(cm.kernels) == 2
    with torch.no_grad():
        want = torch.nn.functional.conv2d(x.double(), module.weight.double(), module.bias.double())
    got = torch.as_tensor(np.asarray(cm.run_interpreted(x.numpy()), np.float64))
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-2
