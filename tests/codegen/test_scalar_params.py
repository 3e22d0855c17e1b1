"""Scalar kernel parameters in compiled kernels: one GpuKernel serves every length n.

Without a GPU: the printed signature takes the scalar by value; `run_reference` at several n
matches numpy; argument errors name the culprit (the scalar's type or range, the array, its
dimension and the scalar it depends on); a call through a stand-in runtime evaluates the grid,
binds the TMA tensor map and passes the scalar as np.int32 / np.int64 per call; CPU builds raise
a CodegenError naming the GPU axis. The `gpu` tests call one built kernel with three lengths against torch.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import tessel as ts
from tessel.codegen import cuda_runtime as rt
from tessel.codegen.cuda_build import nvcc_path, nvrtc_version
from tessel.errors import ArgumentError, CodegenError
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.nodes import Buffer, For, IfThenElse, Kernel, Launch, Store, Var
from tessel.ir.verify import verify
from tests.codegen import gpu_hopper_kernels as H

needs_compiler = pytest.mark.skipif(nvcc_path() is None and nvrtc_version() is None,
                                    reason="no CUDA compiler (nvcc or NVRTC) to build kernels with")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cuda-cache"))


def affine_n(dtype="int32", block=128):
    """B[i] = A[i] * 2 + 1 for i < n over symbolic (n,) buffers, grid ceil(n / block)."""
    n = Var("n", dtype)
    A, B = Buffer("A", (n,)), Buffer("B", (n,))
    b, t = Var("b", dtype), Var("t", dtype)
    i = b * block + t
    body = For(b, (n + (block - 1)) // block,
               For(t, block, IfThenElse(i < n, Store(B, (i,), A[i] * 2.0 + 1.0)), "threadIdx.x"), "blockIdx.x")
    k = Kernel("affine_n", (A, n, B), body, target="cuda", launch=Launch(((n + (block - 1)) // block, 1, 1),
                                                                          (block, 1, 1)))
    verify(k)
    return k


def rows_n():
    """O[r, c] = X[r, c] + r over an (m, 8) buffer: a 2-D symbolic shape, int64 scalar m."""
    m = Var("m", "int64")
    X, O = Buffer("X", (m, 8)), Buffer("O", (m, 8))
    r, c = Var("r", "int64"), Var("c", "int64")
    body = For(r, m, For(c, 8, Store(O, (r, c), X[r, c] + r.astype("float32")), "threadIdx.x"), "blockIdx.x")
    k = Kernel("rows_n", (m, X, O), body, target="cuda", launch=Launch((m, 1, 1), (8, 1, 1)))
    verify(k)
    return k


def _build(ir):
    from tessel.codegen.cuda import build_kernel

    return build_kernel(ir, "cuda:sm_90a")


def test_the_printed_signature_takes_the_scalar_by_value():
    from tessel.codegen.cuda import cuda_source

    sig32 = next(ln for ln in cuda_source(affine_n()).splitlines() if "__global__" in ln)
    assert "const int n," in sig32 and "float* __restrict__ B" in sig32
    sig64 = next(ln for ln in cuda_source(rows_n()).splitlines() if "__global__" in ln)
    assert "(const long long m," in sig64


@needs_compiler
def test_run_reference_serves_every_length():
    kern = _build(affine_n())
    assert "n: int32" in repr(kern) and "A: float32[n]" in repr(kern)
    for n in (1, 100, 300):
        a = np.random.default_rng(n).standard_normal(n).astype("float32")
        b = np.full(n, np.nan, "float32")
        kern.run_reference(a, np.int32(n) if n == 100 else n, b)
        np.testing.assert_allclose(b, a * 2 + 1, rtol=1e-6)


@needs_compiler
def test_run_reference_with_an_int64_scalar_and_a_2d_symbolic_shape():
    kern = _build(rows_n())
    for m in (3, 17):
        x = np.random.default_rng(m).standard_normal((m, 8)).astype("float32")
        o = np.zeros((m, 8), "float32")
        kern.run_reference(m, x, o)
        np.testing.assert_allclose(o, x + np.arange(m, dtype="float32")[:, None], rtol=1e-6)


@needs_compiler
def test_symbolic_tma_kernel_builds_and_runs_on_the_reference_at_two_lengths():
    kern = _build(H.tma_swizzle(symbolic=True, row0=30)[0])  # issue 7's repro: used to crash in _specs
    assert kern.params[0].name == "n" and not kern._specs[1].output  # A is only read (by the TMA copy)
    for n in (40, 130):
        _, inputs, reference = H.tma_swizzle(symbolic=True, row0=30, total_rows=n)
        arrays = inputs(np.random.default_rng(n))
        expect = reference([a.copy() for a in arrays])
        kern.run_reference(*arrays)
        assert np.array_equal(arrays[2].view(np.int16), expect[2].view(np.int16))


@needs_compiler
@pytest.mark.parametrize("bad, match", [
    (5.0, r"argument 'n': a scalar int32 parameter takes a Python or numpy int, got float"),
    (True, r"argument 'n': .* got bool"),
    (np.float32(5), r"argument 'n': .* got float32"),
    (np.array(5), r"argument 'n': .* got ndarray"),
    (2**31, r"argument 'n': 2147483648 is out of the range of int32"),
    (-2**31 - 1, r"argument 'n': -2147483649 is out of the range of int32"),
])
def test_a_bad_scalar_is_named(bad, match):
    kern = _build(affine_n())
    a, b = np.ones(5, "float32"), np.zeros(5, "float32")
    with pytest.raises(ArgumentError, match=match):
        kern.run_reference(a, bad, b)


@needs_compiler
def test_a_shape_mismatch_names_the_array_the_dimension_and_the_scalar():
    kern = _build(affine_n())
    with pytest.raises(ArgumentError, match=r"argument 'B': dimension 0 has 6 elements but must have n = 5 .*"
                                            r"scalar parameter\(s\) n"):
        kern.run_reference(np.ones(5, "float32"), 5, np.zeros(6, "float32"))
    kern2 = _build(rows_n())
    with pytest.raises(ArgumentError, match=r"argument 'X': expected shape \(4, 8\) \(shape \(m, 8\) for m=4\), "
                                            r"got \(4, 9\) \(dimension 1: 9, not 8\)"):
        kern2.run_reference(4, np.ones((4, 9), "float32"), np.zeros((4, 8), "float32"))
    with pytest.raises(ArgumentError, match=r"argument 'O': dimension 0 has 3 elements but must have m = 4"):
        kern2.run_reference(4, np.ones((4, 8), "float32"), np.zeros((3, 8), "float32"))
    with pytest.raises(ArgumentError, match=r"takes 3 argument\(s\) \(A, n, B\), got 2"):
        kern.run_reference(np.ones(5, "float32"), 5)
    with pytest.raises(ArgumentError, match=r"launch grid .* is \(0, 1, 1\) for n=0"):
        kern.run_reference(np.ones(0, "float32"), 0, np.zeros(0, "float32"))


class FakeGpuArray:
    """Looks like a GPU array (__cuda_array_interface__) without memory behind it."""

    def __init__(self, shape, dtype, ptr):
        self.shape, self.dtype = tuple(shape), numpy_dtype(dtype)
        self.device = SimpleNamespace(id=0)
        self.__cuda_array_interface__ = {"shape": self.shape, "typestr": self.dtype.str, "data": (ptr, False),
                                         "strides": None, "version": 3}


@pytest.fixture
def launches(monkeypatch):
    """Stand in for the driver: record every launch instead of making it."""
    got = []
    monkeypatch.setattr(rt, "device_capability", lambda device: (9, 0))
    monkeypatch.setattr(rt, "launch_config", lambda grid, block, shared: ("config", tuple(grid)))

    def launch(code, key, symbol, name, grid, block, shared, pointers, device, stream, config=None, tensor_maps=()):
        got.append(SimpleNamespace(grid=tuple(grid), block=block, args=list(pointers), config=config,
                                   maps=list(tensor_maps)))

    monkeypatch.setattr(rt, "launch", launch)
    return got


@needs_compiler
def test_a_call_evaluates_the_grid_and_passes_the_scalar_by_value(launches):
    kern = _build(affine_n())
    base = 0x7F0000000000
    for n in (1000, 129, 1000):
        kern(FakeGpuArray((n,), "float32", base), n, FakeGpuArray((n,), "float32", base + 4 * n))
    assert [c.grid for c in launches] == [(8, 1, 1), (2, 1, 1), (8, 1, 1)]
    assert [c.config[1] for c in launches] == [(8, 1, 1), (2, 1, 1), (8, 1, 1)]
    scalars = [c.args[1] for c in launches]
    assert all(type(s) is np.int32 for s in scalars) and [int(s) for s in scalars] == [1000, 129, 1000]
    assert launches[0].args[0] == base and launches[1].args[2] == base + 4 * 129
    # int64 scalars go by value as np.int64
    kern64 = _build(rows_n())
    kern64(7, FakeGpuArray((7, 8), "float32", base), FakeGpuArray((7, 8), "float32", base + 4 * 56))
    assert type(launches[-1].args[0]) is np.int64 and launches[-1].grid == (7, 1, 1)


@needs_compiler
def test_overlap_checks_use_the_evaluated_sizes(launches):
    kern = _build(affine_n())
    base, n = 0x7F0000000000, 100
    with pytest.raises(ArgumentError, match="arguments 'B' and 'A' overlap"):  # B starts at A's last element
        kern(FakeGpuArray((n,), "float32", base), n, FakeGpuArray((n,), "float32", base + 4 * (n - 1)))
    kern(FakeGpuArray((n,), "float32", base), n, FakeGpuArray((n,), "float32", base + 4 * n))  # adjacent: fine
    with pytest.raises(ArgumentError, match="argument 'A': dimension 0 has 99 elements but must have n = 100"):
        kern(FakeGpuArray((n - 1,), "float32", base), n, FakeGpuArray((n,), "float32", base + 4 * n))
    with pytest.raises(ArgumentError, match="argument 'n': a scalar int32 parameter takes a Python or numpy int"):
        kern(FakeGpuArray((n,), "float32", base), float(n), FakeGpuArray((n,), "float32", base + 4 * n))
    assert len(launches) == 1


@needs_compiler
def test_tensor_maps_are_bound_per_call(launches):
    kern = _build(H.tma_swizzle(symbolic=True, row0=30)[0])
    base = 0x7F0000000000
    for n in (40, 70, 40):
        kern(np.int32(n), FakeGpuArray((n, 64), "bfloat16", base), FakeGpuArray((64 * 64,), "bfloat16", base + 2**24))
    shapes = [[(spec.buffer, spec.shape, ptr) for spec, ptr in c.maps] for c in launches]
    assert shapes == [[("A", (n, 64), base)] for n in (40, 70, 40)]
    assert [int(c.args[0]) for c in launches] == [40, 70, 40]


def test_cpu_builds_of_scalar_kernels_refuse_only_the_gpu_axes():
    # scalar parameters compile on the CPU too (tests/codegen/test_tvm_symbolic.py); a GPU-bound loop does not
    ir = Kernel("affine_cpu", affine_n().params, affine_n().body, target="cpu")
    with pytest.raises(CodegenError, match="loop 'b' is bound to blockIdx.x, a GPU axis"):
        ts.build(ir, "cpu", schedule=ir)


# -- on the GPU ----------------------------------------------------------------------------------

@pytest.mark.gpu
def test_one_gpu_kernel_serves_three_lengths_against_torch():
    import torch

    kern = _build(affine_n())
    for n in (1, 1000, 100_003):
        a = torch.randn(n, device="cuda")
        b = torch.full((n,), float("nan"), device="cuda")
        kern(a, n, b)
        torch.cuda.synchronize()
        torch.testing.assert_close(b, a * 2 + 1)
    assert kern.time(a, n, b, number=3, repeat=2) > 0
    kern64 = _build(rows_n())
    for m in (1, 5, 300):
        x = torch.randn(m, 8, device="cuda")
        o = torch.zeros(m, 8, device="cuda")
        kern64(np.int64(m), x, o)
        torch.cuda.synchronize()
        torch.testing.assert_close(o, x + torch.arange(m, device="cuda", dtype=torch.float32)[:, None])


@pytest.mark.gpu
def test_one_gpu_tma_kernel_serves_three_lengths():
    import torch

    kern = _build(H.tma_swizzle(symbolic=True, row0=30)[0])
    for n in (40, 70, 130):
        _, inputs, reference = H.tma_swizzle(symbolic=True, row0=30, total_rows=n)
        arrays = inputs(np.random.default_rng(n))
        expect = reference([a.copy() for a in arrays])
        a = torch.from_numpy(arrays[1].view(np.int16).copy()).view(torch.bfloat16).cuda()
        o = torch.from_numpy(arrays[2].view(np.int16).copy()).view(torch.bfloat16).cuda()
        kern(n, a, o)
        torch.cuda.synchronize()
        assert np.array_equal(o.view(torch.int16).cpu().numpy(), expect[2].view(np.int16))
