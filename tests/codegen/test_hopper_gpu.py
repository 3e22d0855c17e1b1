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


def _gpu_vs_interp(kernel, arrays, exact=True, tol=0.0):
    interp = [a.copy() for a in arrays]
    run(kernel, *interp, seed=0)
    gpu = run_on_gpu(kernel, arrays)
    for g, i in zip(gpu, interp):
        if exact:
            assert np.array_equal(g.view(np.uint8), i.view(np.uint8))
        else:
            np.testing.assert_allclose(g.astype(np.float64), i.astype(np.float64), rtol=tol, atol=tol)


_NP = {"bfloat16": H.BF16, "float16": np.float16, "float32": np.float32, "int32": np.int32}


@pytest.mark.parametrize("shape,dtype,start,box,swizzle", [
    ((9, 72), "float32", (5, 40), (8, 32), 128),
    ((3, 20, 16), "float16", (1, 15, 0), (2, 8, 16), 32),
    ((2, 3, 4, 5, 32), "float16", (1, 2, 1, 3, 0), (1, 2, 4, 2, 32), 64),
])
def test_tma_load_boxes_of_ranks_2_to_5_match_the_interpreter(shape, dtype, start, box, swizzle):
    rng = np.random.default_rng(len(shape))
    a = (rng.standard_normal(shape) + 3).astype(_NP[dtype])
    o = np.full(int(np.prod(box)), 7, _NP[dtype])
    _gpu_vs_interp(H.tma_box_kernel(shape, dtype, start, box, swizzle), [a, o])


def test_rank_1_tensor_maps_are_refused_before_the_launch():
    # On the H200 (2026-12-03) a rank-1 map failed to encode, and a padded-stride encode made the kernel fault,
    # which poisons the CUDA context for everything after it: the runtime refuses rank 1 until it is verified.
    from tessel.errors import ArgumentError

    a = np.random.default_rng(1).standard_normal(100).astype(np.float32) + 3
    o = np.full(32, 7, np.float32)
    with pytest.raises(ArgumentError, match="rank-1 TMA tensor maps are not supported"):
        run_on_gpu(H.tma_box_kernel((100,), "float32", (90,), (32,), 0), [a, o])


@pytest.mark.parametrize("swizzle", [0, 128])
def test_tma_store_clips_the_box_like_the_interpreter(swizzle):
    rng = np.random.default_rng(swizzle)
    a = rng.standard_normal((20, 64)).astype(H.BF16)
    _gpu_vs_interp(H.tma_box_kernel((20, 64), "bfloat16", (4, 0), (8, 64), swizzle, store_at=(15, 0)),
                   [a, np.full((20, 64), 7, H.BF16)])


@pytest.mark.parametrize("name,dtype,pair,tol", [("red.add.s32", "int32", False, 0), ("red.max.s32", "int32", False, 0),
                                                 ("red.add.noftz.f16x2", "float16", True, 2e-2),
                                                 ("red.add.noftz.bf16x2", "bfloat16", True, 1e-1)])
def test_atomics_match_the_interpreter(name, dtype, pair, tol):
    rng = np.random.default_rng(1)
    shape = (96, 2) if pair else (96,)
    a = (rng.integers(-50, 50, shape) if dtype == "int32" else rng.standard_normal(shape)).astype(_NP[dtype])
    y = (rng.integers(-50, 50, 10 if pair else 5) if dtype == "int32" else rng.standard_normal(10)).astype(_NP[dtype])
    _gpu_vs_interp(H.atomic_kernel(name, dtype, 5, pair=pair), [a, y], exact=(tol == 0), tol=tol)


def test_d_cluster_with_remote_mbarrier_arrives():
    expect, interp, gpu = _both(H.cluster_multicast, remote_arrive=True)
    assert np.array_equal(gpu[1].view(np.int16), expect[1].view(np.int16))


@pytest.mark.parametrize("n,dtype,a,b", [
    (64, "bfloat16", "k128", "k128"), (128, "float16", "k64", "mn128"), (8, "bfloat16", "k32", "k_none"),
    (256, "float16", "k_none", "mn64"), (136, "bfloat16", "mn128", "k32"), (64, "float16", "mn64", "k64"),
])
def test_wgmma_descriptor_layouts_match_the_interpreter(n, dtype, a, b):
    """Shared images built by the canonical layouts (written in gpu_hopper_kernels from CUTLASS's
    definitions), read through descriptors of every swizzle mode and both majors."""
    rng = np.random.default_rng(n)
    npd = _NP[dtype]
    am, bm = rng.standard_normal((64, 16)).astype(npd), rng.standard_normal((16, n)).astype(npd)
    a_mode, b_mode = H.MODES[a](64), H.MODES[b](n)
    ia = H.place(am, (H.mn_major_offsets if a_mode[3] else H.k_major_offsets)(64, *a_mode[:3]), 4096)
    ib = H.place(bm.T, (H.mn_major_offsets if b_mode[3] else H.k_major_offsets)(n, *b_mode[:3]), 8192)
    arrays = [ia, ib, np.zeros((128, 8), npd), np.full((64, n), 7, np.float32)]
    gpu = run_on_gpu(H.wgmma_image_kernel(n, dtype, a_mode, b_mode), arrays)
    _close(gpu[3], am.astype(np.float64) @ bm.astype(np.float64), 2e-3)


def test_wgmma_with_a_from_registers_on_the_gpu():
    rng = np.random.default_rng(3)
    am, bm = rng.standard_normal((64, 16)).astype(H.BF16), rng.standard_normal((16, 64)).astype(H.BF16)
    fa = np.zeros((128, 8), H.BF16)
    for lane in range(128):  # PTX ISA: warp w rows 16w.., the m16n8k16 A layout per warp
        w, g, t = lane // 32, (lane % 32) // 4, lane % 4
        for i in range(8):
            fa[lane, i] = am[16 * w + g + 8 * ((i // 2) % 2), 2 * t + i % 2 + 8 * (i // 4)]
    b_mode = H.MODES["k128"](64)
    ib = H.place(bm.T, H.k_major_offsets(64, *b_mode[:3]), 8192)
    arrays = [np.zeros(4096, H.BF16), ib, fa, np.full((64, 64), 7, np.float32)]
    gpu = run_on_gpu(H.wgmma_image_kernel(64, "bfloat16", H.MODES["k128"](64), b_mode, a_regs=True), arrays)
    _close(gpu[3], am.astype(np.float64) @ bm.astype(np.float64), 2e-3)


@pytest.mark.parametrize("kw", [{}, {"n": 64, "stages": 2, "k_tiles": 5}])
def test_warp_specialised_gemm_tile_on_the_gpu(kw):
    expect, interp, gpu = _both(H.ws_gemm_tile, **kw)
    _close(gpu[2].astype(np.float32), expect[2].astype(np.float32), 1e-2)
    _close(gpu[2].astype(np.float32), interp[2].astype(np.float32), 1e-2)


def test_attention_tile_on_the_gpu():
    expect, interp, gpu = _both(H.attention_tile, n_kv=128)
    _close(gpu[3], expect[3], 2e-2)
    _close(gpu[3], interp[3], 2e-2)


def test_cp_async_zfill_matches_the_interpreter():
    rng = np.random.default_rng(2)
    g = (rng.standard_normal((6, 8)) + 5).astype(np.float16)
    sizes = np.array([16, 8, 0, 2, 16, 4, 0, 0], np.int32)
    _gpu_vs_interp(H.zfill_kernel(), [g, sizes, np.full((8, 8), 7, np.float16)])


def test_bulk_copy_matches_the_interpreter():
    g = np.random.default_rng(4).standard_normal(352).astype(np.float32)
    _gpu_vs_interp(H.bulk_load_kernel(), [g, np.full(256, 7, np.float32)])
