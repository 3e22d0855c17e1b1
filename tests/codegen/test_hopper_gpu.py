"""The Hopper hello-world kernels and per-intrinsic register checks on the H200: each kernel is
printed, compiled for sm_90a, launched (tensor maps encoded by the runtime), and its outputs must
equal the interpreter's outputs for the same inputs, and the independent numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.codegen import gpu_hopper_kernels as H
from tessel.ir.interp import run

pytestmark = pytest.mark.gpu


def _torch(a):
    import torch

    if a.dtype == H.BF16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16).cuda()
    return torch.from_numpy(a.copy()).cuda()


def _numpy(t, like):
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).cpu().numpy().view(H.BF16).reshape(like.shape)
    return t.cpu().numpy().reshape(like.shape)


def run_on_gpu(kernel, arrays):
    """Print, compile (sm_90a) and launch `kernel` on copies of `arrays`; returns the outputs."""

    from tessel.codegen.cuda_build import compile_cuda
    from tessel.codegen.cuda_printer import print_kernel

    printed = print_kernel(kernel)
    binary = compile_cuda(printed.source, "sm_90a", name=kernel.name)
    return launch_printed(kernel, printed, binary, arrays)


def launch_printed(kernel, printed, binary, arrays):
    """Launch a compiled kernel: numpy integer scalars go to scalar parameters by value."""
    import torch

    from tessel.codegen import cuda_runtime as rt

    tens = [a if isinstance(a, np.integer) else _torch(a) for a in arrays]
    ptrs = [t if isinstance(t, np.integer) else t.data_ptr() for t in tens]
    names = [p.name for p in kernel.params]
    scalars = {n: int(a) for n, a in zip(names, arrays) if isinstance(a, np.integer)}
    maps = [(spec.bind(scalars), ptrs[names.index(spec.buffer)]) for spec in printed.tensor_maps]
    if printed.workspace_bytes:
        ws = torch.empty(printed.workspace_bytes, dtype=torch.uint8, device="cuda")
        ptrs.append(ws.data_ptr())
    stream = torch.cuda.current_stream().cuda_stream
    rt.launch(binary.code, binary.key, printed.symbol, kernel.name, printed.grid, printed.block, printed.shared_bytes,
              ptrs, 0, stream, tensor_maps=maps)
    torch.cuda.synchronize()
    return [a if isinstance(a, np.integer) else _numpy(t, a) for t, a in zip(tens, arrays)]


def _both(maker, seed=0, **kw):
    kernel, inputs, reference = maker(**kw)
    arrays = inputs(np.random.default_rng(seed))
    expect = reference([a.copy() for a in arrays])
    interp = [a.copy() for a in arrays]
    run(kernel, *interp, seed=seed)
    gpu = run_on_gpu(kernel, arrays)
    return expect, interp, gpu


def _close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert not np.isnan(b).any()
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_a_tma_load_into_128b_swizzled_shared_memory():
    expect, interp, gpu = _both(H.tma_swizzle, row0=60, total_rows=100)  # 24 rows out of bounds: zeros
    assert np.array_equal(gpu[1].view(np.int16), interp[1].view(np.int16))
    assert np.array_equal(gpu[1].view(np.int16), expect[1].view(np.int16))


@pytest.mark.parametrize("b_major", ["k", "mn"])
def test_b_wgmma_m64n128_from_descriptors(b_major):
    expect, interp, gpu = _both(H.wgmma_tile, n=128, k=64, b_major=b_major)
    _close(gpu[2], expect[2], 2e-3)
    _close(gpu[2], interp[2], 2e-3)


def test_b_one_wgmma_m64n128k16():
    expect, interp, gpu = _both(H.wgmma_tile, n=128, k=64, b_major="k")
    _close(gpu[2], interp[2], 2e-3)


@pytest.mark.parametrize("n,dtype", [(8, "bfloat16"), (64, "float16"), (136, "bfloat16"), (256, "float16")])
def test_wgmma_accumulator_registers_per_lane_match_the_interpreter(n, dtype):
    expect, interp, gpu = _both(H.wgmma_tile, n=n, k=64, b_major="mn" if n % 64 == 0 else "k", dtype=dtype,
                                raw=True)
    _close(gpu[2], interp[2], 2e-3)


def test_c_producer_consumer_two_stage_mbarrier_ring():
    expect, interp, gpu = _both(H.pipeline_ring, tiles=6, n=64)
    _close(gpu[2], expect[2], 2e-3)
    _close(gpu[2], interp[2], 2e-3)


def test_d_cluster_of_two_sharing_a_multicast_tma_load():
    expect, interp, gpu = _both(H.cluster_multicast)
    assert np.array_equal(gpu[1].view(np.int16), interp[1].view(np.int16))
    assert np.array_equal(gpu[1].view(np.int16), expect[1].view(np.int16))


def test_e_atomic_split_k_reduction():
    expect, interp, gpu = _both(H.atomic_splitk)
    _close(gpu[2], expect[2], 1e-4)
    _close(gpu[2], interp[2], 1e-4)


@pytest.mark.parametrize("num,trans", [(1, False), (2, True), (4, False), (4, True)])
def test_stmatrix_lanes_match_the_interpreter(num, trans):
    expect, interp, gpu = _both(H.stmatrix_warp, num=num, trans=trans)
    assert np.array_equal(gpu[1], interp[1])
    assert np.array_equal(gpu[1], expect[1])


def test_one_binary_serves_every_length_of_a_symbolic_dimension():
    """Scalar parameter n: the TMA tensor map is encoded per launch from n (rows past n read 0)."""
    from tessel.codegen.cuda_build import compile_cuda
    from tessel.codegen.cuda_printer import print_kernel

    kernel = H.tma_swizzle(symbolic=True, row0=30)[0]
    printed = print_kernel(kernel)
    binary = compile_cuda(printed.source, "sm_90a", name=kernel.name)
    for n in (40, 70, 130):
        _, inputs, reference = H.tma_swizzle(symbolic=True, row0=30, total_rows=n)
        arrays = inputs(np.random.default_rng(n))
        expect = reference([a.copy() for a in arrays])
        gpu = launch_printed(kernel, printed, binary, arrays)
        assert np.array_equal(gpu[2].view(np.int16), expect[2].view(np.int16))


def test_gpu_kernel_launches_tma_kernels():
    """The compiled-kernel object (GpuKernel) passes the tensor maps too."""
    from tessel.codegen.cuda import build_kernel

    kernel, inputs, reference = H.tma_swizzle(row0=50)
    kern = build_kernel(kernel, "cuda:sm_90a")
    arrays = inputs(np.random.default_rng(9))
    expect = reference([a.copy() for a in arrays])
    tens = [_torch(a) for a in arrays]
    kern(*tens)
    import torch

    torch.cuda.synchronize()
    assert np.array_equal(_numpy(tens[1], arrays[1]).view(np.int16), expect[1].view(np.int16))


def test_named_barriers_hand_a_shared_tile_between_warp_pairs():
    expect, interp, gpu = _both(H.named_barrier_handoff, rounds=4)
    assert np.array_equal(gpu[1], expect[1]) and np.array_equal(gpu[1], interp[1])


def test_ring_with_setmaxnreg_register_split():
    expect, interp, gpu = _both(H.pipeline_ring, tiles=4, n=128, regs=(40, 232))
    _close(gpu[2], expect[2], 2e-3)
    _close(gpu[2], interp[2], 2e-3)


@pytest.mark.parametrize("n,b_major", [(64, "k"), (192, "mn")])
def test_hopper_ir_builder_gemm_tile(n, b_major):
    expect, interp, gpu = _both(H.builder_gemm_tile, n=n, b_major=b_major)
    _close(gpu[2], expect[2], 2e-3)
    _close(gpu[2], interp[2], 2e-3)
