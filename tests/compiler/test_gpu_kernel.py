"""GpuKernel: the public surface shared with CPU kernels, argument checks that name the argument
(host arrays, dtype, shape, layout, devices, overlap, read-only outputs) before anything needs a
GPU, a TesselError (not a crash, not at build time) when a kernel is called without a GPU or
without the CUDA bindings, and `run_reference` on numpy / torch arrays.

The tests marked `gpu` run the compiled kernels on the device against the interpreter and torch
(elementwise in three dtypes, shared-memory and warp-shuffle reductions, every math call and
cast, the operators, workspace, dynamic shared memory, misaligned pointers, streams, CUDA
graphs, cupy arrays) and, once they exist, the generic GPU schedules; they skip elsewhere.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

import tessel as ts
from tessel.codegen.cuda_build import nvcc_path, nvrtc_version
from tessel.errors import ArgumentError, TesselError
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.interp import Interpreter
from tests.codegen import gpu_kernels as gk
from tests.tolerances import elementwise_tol, reduction_tol

pytestmark = pytest.mark.skipif(nvcc_path() is None and nvrtc_version() is None,
                                reason="no CUDA compiler (nvcc or NVRTC) to build kernels with")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cuda-cache"))


def _build(kernel, target="cuda"):
    from tessel.codegen.cuda import build_kernel

    return build_kernel(kernel, target)


class FakeGpuArray:
    """Looks like a GPU array (__cuda_array_interface__) without any memory behind it."""

    def __init__(self, shape, dtype, ptr=0x7F0000000000, strides=None, readonly=False, device=0):
        self.shape = tuple(shape)
        self.dtype = numpy_dtype(dtype) if isinstance(dtype, str) else np.dtype(dtype)
        self.device = SimpleNamespace(id=device)
        self.__cuda_array_interface__ = {"shape": self.shape, "typestr": self.dtype.str, "data": (ptr, readonly),
                                         "strides": strides, "version": 3}


def _ew_kernel():
    return _build(gk.elementwise(n=256, block=32, lanes=4)[0], "cuda:sm_80")


def _fakes(kern, **overrides):
    out, ptr = [], 0x7F0000000000
    for p in kern.params:
        kw = overrides.get(p.name, {})
        out.append(FakeGpuArray(kw.get("shape", p.shape), kw.get("dtype", p.dtype), kw.get("ptr", ptr),
                                kw.get("strides"), kw.get("readonly", False), kw.get("device", 0)))
        ptr += 1 << 20
    return out


def test_public_surface_matches_cpu_kernels():
    kern = _ew_kernel()
    assert isinstance(kern, ts.Kernel) and kern.name == "ew" and kern.arch == "sm_80"
    assert [p.name for p in kern.params] == [p.name for p in kern.ir.params]
    assert "__global__" in kern.source and kern.inspect("cuda") == kern.source
    assert kern.launch.block == (32, 1, 1) and kern.launch.grid == (2, 1, 1)
    assert repr(kern).startswith("<tessel.GpuKernel ew(") and "(out)" in repr(kern)


def test_run_reference_on_numpy_and_torch_arrays():
    kern = _ew_kernel()
    arrays = gk.elementwise(n=256, block=32, lanes=4)[1](np.random.default_rng(3))
    kern.run_reference(*arrays)
    a, b, c = arrays[:3]
    assert np.array_equal(c, a * b + a - b / np.float32(2))
    torch = pytest.importorskip("torch")
    tensors = [torch.from_numpy(x.view(np.int16)).view(torch.bfloat16) if x.dtype.name == "bfloat16"
               else torch.from_numpy(x.copy()) for x in gk.elementwise(n=256, block=32, lanes=4)[1](
                   np.random.default_rng(4))]
    kern.run_reference(*tensors)
    a, b, c = tensors[6:9]  # bfloat16
    want = (a * b + a - b / 2)  # torch rounds bfloat16 per operation too
    assert torch.equal(c, want)


def test_host_arrays_are_refused_naming_the_argument():
    kern = _ew_kernel()
    arrays = gk.elementwise(n=256, block=32, lanes=4)[1](np.random.default_rng(5))
    with pytest.raises(ArgumentError, match="argument 'A_float32' is a numpy array in host memory"):
        kern(*arrays)
    torch = pytest.importorskip("torch")
    fakes = _fakes(kern)
    fakes[1] = torch.zeros(256)
    with pytest.raises(ArgumentError, match=r"argument 'B_float32' is a torch tensor on cpu.*\.cuda\(\)"):
        kern(*fakes)
    with pytest.raises(ArgumentError, match="takes 9 array"):
        kern(*fakes[:3])
    with pytest.raises(ArgumentError, match="argument 'A_float32' is a list"):
        kern([1.0], *fakes[1:])


@pytest.mark.parametrize("override, message", [
    ({"B_float16": {"dtype": "float32"}}, "argument 'B_float16': expected dtype float16, got float32"),
    ({"C_bfloat16": {"shape": (255,)}}, r"argument 'C_bfloat16': expected shape \(256,\), got \(255,\)"),
    ({"A_float32": {"shape": (256,), "strides": (8,)}}, "argument 'A_float32': expected a C-contiguous array"),
    ({"C_float32": {"readonly": True}}, "argument 'C_float32' is an output but the array given is read-only"),
    ({"B_float32": {"device": 1}}, "argument 'B_float32' is on GPU 1 but argument 'A_float32' is on GPU 0"),
    ({"C_float32": {"ptr": 0x7F0000000000 + 16}}, "arguments 'C_float32' and 'A_float32' overlap"),
])
def test_bad_gpu_arrays_are_refused_naming_the_argument(override, message):
    kern = _ew_kernel()
    with pytest.raises(ArgumentError, match=message):
        kern(*_fakes(kern, **override))


def test_calling_without_bindings_or_gpu_raises_tessel_error(monkeypatch):
    kern = _ew_kernel()
    from tessel.codegen import cuda_runtime

    if not cuda_runtime._RUNTIME.devices:  # a process that already has a GPU cannot show this
        with pytest.raises(TesselError) as info:
            kern(*_fakes(kern))
        assert not isinstance(info.value, ArgumentError)
        assert "GPU" in str(info.value) or "cuda.core" in str(info.value)
    monkeypatch.setitem(sys.modules, "cuda.core", None)  # as if the bindings were not installed
    monkeypatch.setattr(cuda_runtime, "_CORE", [])
    monkeypatch.setattr(cuda_runtime._RUNTIME, "devices", {})
    kern._devices_ok.clear()
    with pytest.raises(TesselError, match="needs NVIDIA's Python bindings"):
        kern(*_fakes(kern))


def test_arch_compatibility_rule():
    from tessel.codegen.cuda_runtime import arch_runs_on

    assert arch_runs_on("sm_80", (8, 0)) and arch_runs_on("sm_80", (8, 9)) and not arch_runs_on("sm_86", (8, 0))
    assert arch_runs_on("sm_90a", (9, 0)) and not arch_runs_on("sm_90a", (10, 0)) and not arch_runs_on("sm_80", (9, 0))


# ---------------------------------------------------------------------------------------------
# On the GPU
# ---------------------------------------------------------------------------------------------


def _to_torch(arrays):
    import torch

    out = []
    for a in arrays:
        if a.dtype.name == "bfloat16":
            out.append(torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16).cuda())
        else:
            out.append(torch.from_numpy(a.copy()).cuda())
    return out


def _to_numpy(t):
    import torch

    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.cpu().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.cpu().numpy()


def _reference(kernel, arrays):
    from tessel.ir.intrinsics import interp_registry

    ref = [a.copy() for a in arrays]
    Interpreter(interp_registry()).run(kernel, *ref)
    return ref


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(gk.KERNELS))
def test_gpu_matches_the_interpreter(name):
    import torch

    from tests.codegen.test_cuda_printer import _same

    kernel, make = gk.KERNELS[name]()
    arrays = make(np.random.default_rng(abs(hash(name)) % 2**32))
    ref = _reference(kernel, arrays)
    kern = _build(kernel)
    tensors = _to_torch(arrays)
    kern(*tensors)
    torch.cuda.synchronize()
    # CUDA's device math is within a few ulp of the correctly rounded values the interpreter gives;
    # float sums in a different order (the tree reduction) round differently
    ulps = {"math_calls": 4, "block_sum": 64, "warp_sum": 64}.get(name, 0)
    for p, t, want in zip(kernel.params, tensors, ref):
        got = _to_numpy(t)
        ok = _same(got, want, ulps)
        bad = np.argwhere(~ok)[:5].tolist()
        assert ok.all(), f"{name}: {p.name} differs at {bad}: {[got[tuple(i)] for i in bad]} vs " \
                         f"{[want[tuple(i)] for i in bad]}"


@pytest.mark.gpu
def test_gpu_elementwise_matches_torch_and_handles_misaligned_pointers():
    import torch

    n = 1000
    kernel, make = gk.elementwise(n=n, block=64, lanes=4)
    kern = _build(kernel)
    tensors = _to_torch(make(np.random.default_rng(6)))
    kern(*tensors)
    for k in range(3):
        a, b, c = tensors[3 * k: 3 * k + 3]
        assert torch.equal(c, a * b + a - b / 2)
    # the same arrays one element into larger buffers: not 16-byte aligned -> the scalar variant
    shifted = []
    for t in tensors:
        big = torch.empty(n + 1, dtype=t.dtype, device=t.device)
        big[1:] = t
        shifted.append(big[1:])
    for k in range(3):
        shifted[3 * k + 2].fill_(7)
    kern(*shifted)
    assert False in kern._variants
    for k in range(3):
        a, b, c = shifted[3 * k: 3 * k + 3]
        assert torch.equal(c, a * b + a - b / 2)


@pytest.mark.gpu
def test_gpu_large_shared_memory_streams_graphs_and_timing():
    import torch

    from tessel.codegen.cuda_runtime import CudaGraph

    kern = _build(gk.shared_reverse())
    assert kern.launch.shared_bytes == 65536
    a = torch.randn(16384, device="cuda")
    b = torch.full_like(a, 7)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # runs on torch's current stream
        kern(a, b)
    side.synchronize()
    assert torch.equal(b, a.flip(0))
    for use_torch in (True, False):
        g = CudaGraph(use_torch=use_torch)
        torch.cuda.synchronize()
        with g.capture():
            kern(a, b)
        a.copy_(torch.randn_like(a))
        b.fill_(7)
        torch.cuda.synchronize()
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(b, a.flip(0)), f"graph replay (use_torch={use_torch})"
    assert 0 < kern.time(a, b, number=3, repeat=3) < 1


@pytest.mark.gpu
def test_gpu_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    kernel, make = gk.block_sum()
    kern = _build(kernel)
    a, o = make(np.random.default_rng(7))
    ca, co = cupy.asarray(a), cupy.asarray(o)
    kern(ca, co)
    want, tol = a.astype(np.float64).reshape(3, 64).sum(axis=1), reduction_tol("float32", k=64)
    np.testing.assert_allclose(cupy.asnumpy(co), want, **tol)
    co[:] = 7
    kern.run_reference(ca, co)  # cupy arrays through the interpreter too
    np.testing.assert_allclose(cupy.asnumpy(co), want, **tol)


@pytest.mark.gpu
def test_gpu_generic_schedules_match_torch():
    import torch

    from tessel.ir.target import parse_target
    from tessel.schedules import generic_gpu

    target = parse_target("cuda")
    X = ts.placeholder((64, 1000), "float32", name="X")
    Y = ts.compute((64, 1000), lambda i, j: ts.exp(X[i, j]) * 2.0, name="Y")
    k = ts.reduce_axis(1000, name="k")
    S = ts.compute((64,), lambda i: ts.sum(X[i, k], axis=k), name="S")
    x = torch.randn(64, 1000, device="cuda")
    x64 = x.double().cpu().numpy()
    cases = (([X, Y], np.exp(x64) * 2, elementwise_tol("float32", ulps=2)),  # expf: 2 ulp (CUDA guide)
             ([X, S], x64.sum(axis=1), reduction_tol("float32", k=1000)))
    for tensors, want, tol in cases:
        ir = ts.lower(tensors)
        sch = generic_gpu.default_gpu_schedule(ir, target)
        kern = ts.build(tensors, target="cuda", schedule=sch)
        out = torch.full(want.shape, 7.0, device="cuda")
        kern(x, out)
        np.testing.assert_allclose(out.double().cpu().numpy(), want, **tol)
