"""On an H100 / H200: the Hopper GEMM template 'gemm.wgmma' (tessel/schedules/gemm_hopper.py)
compiled for sm_90a against torch.matmul in float32 on fresh random inputs.

Run: `python -m pytest -q -s -m gpu tests/codegen/test_gemm_hopper_gpu.py` (collected by the
suite; it skips itself without a Hopper GPU and nvcc). Shapes cover both B layouts, A MN-major, edges
in every dimension (TMA zero fill + guarded stores), fp16 and bf16, f32 and cast outputs, and
both consumer counts, persistent blocks, the TMA-store epilogue and 2-CTA clusters with TMA multicast."""

from __future__ import annotations

import pytest

from tessel.schedules.gemm import GemmProblem
from tessel.schedules.gemm_hopper import HopperKnobs, default_knobs, hopper_gemm_kernel

pytestmark = pytest.mark.gpu

CASES = [
    # (m, n, k, dtype, a_kcontig, b_kcontig, out_dtype, knobs or None for the defaults)
    (4096, 4096, 4096, "bfloat16", True, False, "bfloat16", None),
    (2048, 2048, 4096, "float16", True, True, "float32", HopperKnobs(bm=128, bn=128, stages=5, consumers=2)),
    (1000, 520, 336, "bfloat16", True, False, "float32", HopperKnobs(bm=128, bn=128, stages=4, consumers=1)),
    (127, 1000, 4104, "float16", True, True, "float16", HopperKnobs(bm=64, bn=256, stages=4, consumers=1)),
    (4104, 8, 1000, "bfloat16", False, False, "float32", HopperKnobs(bm=256, bn=64, stages=4, consumers=2)),
    (512, 512, 512, "bfloat16", False, True, "bfloat16", HopperKnobs(bm=128, bn=192, stages=3, consumers=2)),
    (1, 64, 64, "float16", True, False, "float32", HopperKnobs(bm=64, bn=64, stages=2, consumers=1)),
    # persistent blocks, the stmatrix + TMA-store epilogue
    (4096, 4096, 4096, "bfloat16", True, False, "bfloat16",
     HopperKnobs(bm=128, bn=256, stages=4, consumers=2, persistent=True, epilogue="tma")),
    (1000, 520, 336, "float16", True, True, "float16",
     HopperKnobs(bm=128, bn=128, stages=3, consumers=2, persistent=True, epilogue="tma")),
    (2048, 1024, 2048, "bfloat16", False, True, "float32", HopperKnobs(bm=128, bn=128, stages=4, persistent=True)),
    # clusters of two CTAs sharing B by TMA multicast
    (4096, 4096, 4096, "bfloat16", True, False, "bfloat16",
     HopperKnobs(bm=128, bn=256, stages=4, persistent=True, epilogue="tma", cluster="2x1")),
    (1000, 520, 336, "float16", True, True, "float32", HopperKnobs(bm=128, bn=128, stages=4, cluster="2x1")),
    # pingpong consumers (whole tiles in turn)
    (2048, 2048, 2048, "bfloat16", True, False, "bfloat16",
     HopperKnobs(bm=128, bn=128, stages=5, persistent=True, epilogue="tma", pingpong=True)),
    (1000, 520, 336, "float16", True, True, "float32", HopperKnobs(bm=128, bn=128, stages=4, persistent=True,
                                                                    pingpong=True)),
]
# batched (3-D TMA boxes): (batch, m, n, k, dtype, out_dtype, knobs)
BATCHED = [
    ((3,), 1000, 520, 336, "bfloat16", "bfloat16",
     HopperKnobs(bm=128, bn=128, stages=4, persistent=True, epilogue="tma", cluster="2x1")),
    ((2, 2), 256, 384, 512, "float16", "float32", HopperKnobs(bm=128, bn=128, stages=3, consumers=1)),
]


def _gpu_ok():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs an sm_90 GPU (H100 / H200)")
    return torch


@pytest.mark.parametrize("m,n,k,dtype,a_kc,b_kc,out,kn,batch", [c + ((),) for c in CASES] + [
    (m, n, k, d, True, False, o, kn, b) for b, m, n, k, d, o, kn in BATCHED])
def test_gpu_matches_torch(m, n, k, dtype, a_kc, b_kc, out, kn, batch):
    torch = _gpu_ok()
    from tessel.codegen.cuda import build_kernel

    p = GemmProblem(m, n, k, dtype, batch=batch, a_kcontig=a_kc, b_kcontig=b_kc, out_dtype=out)
    kern = build_kernel(hopper_gemm_kernel(p, kn or default_knobs(p)), "cuda:sm_90a")
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    a_buf, b_buf, c_buf = p.buffers()
    a = torch.randn(a_buf.shape, device="cuda", dtype=tdt[dtype])
    b = torch.randn(b_buf.shape, device="cuda", dtype=tdt[dtype])
    c = torch.full(c_buf.shape, float("nan"), device="cuda", dtype=tdt[out])
    kern(a, b, c)
    torch.cuda.synchronize()
    am = a.float() if a_kc else a.float().transpose(-1, -2)
    bm = b.float().transpose(-1, -2) if b_kc else b.float()
    ref = am @ bm
    assert not torch.isnan(c).any()
    err = float((c.float() - ref).norm() / ref.norm())
    assert err <= 5e-3, f"relative error {err:.2e}"
