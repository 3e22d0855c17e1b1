"""Default GPU schedules: each kind of kernel gets the schedule meant for it (checked on the
loop kinds, launch shape and intrinsics it uses), and the scheduled kernel computes what numpy
computes (reference interpreter, small sizes, random inputs, outputs starting from garbage).
This is how CI, which has no GPU, checks the GPU schedules."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.nodes import Allocate, For, Intrinsic, walk
from tessel.ir.verify import verify
from tessel.schedules.generic_gpu import default_gpu_schedule
from tessel.schedules.schedule import Schedule
from tests.tolerances import elementwise_tol, matmul_tol

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "int32": np.int32}


def schedule_and_run(tensors, inputs):
    """Default-schedule the DSL kernel, run it on `inputs` (numpy arrays, one per placeholder, in
    order); returns (schedule, outputs)."""
    kernel = ts.lower(tensors)
    sch = default_gpu_schedule(kernel, "cuda")
    verify(sch.kernel)
    assert sch.kernel.target == "cuda" and sch.kernel.launch is not None
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    outs = [np.full(t.shape, 7e3, NP[t.dtype]) for t in tensors if not t.is_placeholder]
    interp.run(sch.kernel, *inputs, *outs)
    return sch, outs


def intrinsics(sch):
    return [n.name for n in walk(sch.kernel.body) if isinstance(n, Intrinsic)]


def kinds(sch):
    return {n.kind for n in walk(sch.kernel.body) if isinstance(n, For)}


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(NP[dtype])


# -- elementwise ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype", [((37, 19), "float32"), ((64, 48), "float16"), ((5,), "float32")])
def test_elementwise(shape, dtype):
    A = ts.placeholder(shape, dtype, name="A")
    B = ts.compute(shape, lambda *i: ts.exp(A[i].astype("float32")).astype(dtype) * A[i], name="B")
    a = rand(shape, dtype)
    sch, (b,) = schedule_and_run([A, B], [a])
    want = np.exp(a.astype(np.float32)).astype(NP[dtype]).astype(np.float64) * a.astype(np.float64)
    np.testing.assert_allclose(b.astype(np.float64), want, rtol=2e-3, atol=1e-3)
    assert {"blockIdx.x", "threadIdx.x"} <= kinds(sch)
    size = int(np.prod(shape))
    per_thread = 16 // np.dtype(NP[dtype]).itemsize
    if size % per_thread == 0:
        assert "vectorized" in kinds(sch)  # 16-byte accesses


# -- reductions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,op", [(6, 100, "sum"), (3, 1000, "max"), (2, 5000, "sum"), (4, 45, "min")])
def test_row_reductions_use_shuffles(rows, cols, op):
    X = ts.placeholder((rows, cols), name="X")
    k = ts.reduce_axis(cols, name="k")
    red = {"sum": ts.sum, "max": ts.max, "min": ts.min}[op]
    x = rand((rows, cols), "float32", 1)
    sch, (s,) = schedule_and_run([X, ts.compute((rows,), lambda i: red(X[i, k], axis=k), name="S")], [x])
    want = {"sum": x.sum, "max": x.max, "min": x.min}[op](axis=1)
    np.testing.assert_allclose(s, want, rtol=1e-4, atol=1e-4)
    assert "shfl.sync.bfly.b32" in intrinsics(sch)
    block = sch.kernel.launch.block
    assert block[0] == (32 if cols <= 512 else 128 if cols <= 4096 else 256)


def test_column_reduction_is_one_thread_per_output():
    X = ts.placeholder((50, 7), name="X")
    k = ts.reduce_axis(50, name="k")
    x = rand((50, 7), "float32", 2)
    sch, (s,) = schedule_and_run([X, ts.compute((7,), lambda j: ts.sum(X[k, j], axis=k), name="S")], [x])
    np.testing.assert_allclose(s, x.sum(axis=0), rtol=1e-4, atol=1e-4)
    assert not intrinsics(sch)


# -- row-wise fused kernels (through the frontend's lowering, as the compiler makes them) -----------

def _lowered(op, shapes, dtype, attrs=None):
    from tessel.compiler.lowering import lower_group
    from tessel.frontend.graph import Graph
    from tessel.passes.graph.fusion import fuse

    g = Graph()
    ins = [g.add_input(f"x{i}", s, dtype) for i, s in enumerate(shapes)]
    (y,) = g.add_node(op, ins, attrs or {})
    g.mark_outputs([y])
    (group,) = fuse(g)
    return lower_group(g, group).ir


def _numpy(op, arrays):
    x = arrays[0].astype(np.float64)
    if op in ("softmax", "log_softmax"):
        z = x - x.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return np.exp(z - lse) if op == "softmax" else z - lse
    if op == "layer_norm":
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * arrays[1].astype(np.float64) + arrays[2].astype(np.float64)
    ms = (x * x).mean(axis=-1, keepdims=True)
    return x / np.sqrt(ms + 1e-6) * arrays[1].astype(np.float64)


@pytest.mark.parametrize("op,shapes,dtype", [
    ("softmax", [(6, 40)], "float32"),
    ("softmax", [(3, 700)], "float32"),
    ("log_softmax", [(2, 3, 50)], "float32"),
    ("layer_norm", [(5, 64), (64,), (64,)], "float16"),
    ("rms_norm", [(4, 600), (600,)], "bfloat16"),
])
def test_rowwise_fused(op, shapes, dtype):
    kernel = _lowered(op, shapes, dtype)
    sch = default_gpu_schedule(kernel, "cuda")
    verify(sch.kernel)
    assert Schedule.replay(kernel, sch.trace) == sch.kernel
    # one kernel, statistics in registers: no temporary left in global memory
    scopes = {n.buffer.name: n.buffer.scope for n in walk(sch.kernel.body) if isinstance(n, Allocate)}
    assert "global" not in scopes.values(), scopes
    stats = {"softmax": 2, "log_softmax": 2, "layer_norm": 2, "rms_norm": 1}[op]
    assert intrinsics(sch).count("shfl.sync.bfly.b32") == 5 * stats  # a 5-step butterfly per statistic
    arrays = [rand(s, dtype, k) for k, s in enumerate(shapes)]
    out = np.full(shapes[0], 7e3, NP[dtype])
    interp.run(sch.kernel, *arrays, out)
    # float16/bfloat16: every operation rounds to the dtype; about four roundings reach an output
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else elementwise_tol(dtype, ulps=4, scale=1.0)
    np.testing.assert_allclose(out.astype(np.float64), _numpy(op, arrays), **tol)


def test_several_unfusable_stages_are_refused():
    X = ts.placeholder((8, 8), name="X")
    T = ts.compute((8, 8), lambda i, j: X[j, i] * 2.0, name="T")
    k = ts.reduce_axis(8, name="k")
    S = ts.compute((8,), lambda i: ts.sum(T[k, i], axis=k), name="S")  # reads T across rows
    with pytest.raises(ScheduleError, match="kernel of its own"):
        default_gpu_schedule(ts.lower([X, S]))


# -- transpose ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,perm", [((40, 70), (1, 0)), ((3, 33, 20), (0, 2, 1)), ((64, 32), (1, 0))])
def test_transpose_through_padded_shared_memory(shape, perm):
    A = ts.placeholder(shape, name="A")
    out_shape = tuple(shape[p] for p in perm)
    inv = np.argsort(perm)
    B = ts.compute(out_shape, lambda *o: A[tuple(o[inv[d]] for d in range(len(shape)))], name="B")
    a = rand(shape, "float32", 3)
    sch, (b,) = schedule_and_run([A, B], [a])
    np.testing.assert_array_equal(b, a.transpose(perm))
    shared = [n.buffer for n in walk(sch.kernel.body) if isinstance(n, Allocate) and n.buffer.scope == "shared"]
    assert [s.shape[-2:] for s in shared] == [(32, 33)]  # a 32 x 32 tile, rows padded by one element
    assert sch.kernel.launch.block == (32, 8, 1)


# -- matmul ---------------------------------------------------------------------------------------

def _matmul(M, N, K, dtype, a_t=False, b_t=False, batch=None):
    pre = (batch,) if batch else ()
    A = ts.placeholder(pre + ((K, M) if a_t else (M, K)), dtype, name="A")
    B = ts.placeholder(pre + ((N, K) if b_t else (K, N)), dtype, name="B")
    k = ts.reduce_axis(K, name="k")
    acc = "float32" if dtype in ("float16", "bfloat16") else dtype

    def body(*idx):
        b, (i, j) = idx[:-2], idx[-2:]
        x = A[b + ((k, i) if a_t else (i, k))]
        y = B[b + ((j, k) if b_t else (k, j))]
        return ts.sum(x.astype(acc) * y.astype(acc), axis=k)

    C = ts.compute(pre + (M, N), body, name="C")
    a, b = rand(A.shape, dtype, 4), rand(B.shape, dtype, 5)
    at = np.swapaxes(a, -1, -2) if a_t else a
    bt = np.swapaxes(b, -1, -2) if b_t else b
    want = np.matmul(at.astype(np.float64), bt.astype(np.float64))
    return [A, B, C], [a, b], want


@pytest.mark.parametrize("M,N,K,dtype,a_t,b_t,batch", [
    (32, 16, 48, "float16", False, False, None),
    (48, 16, 32, "bfloat16", False, True, None),
    (32, 32, 32, "float16", True, False, None),
    (16, 8, 32, "float16", False, False, 2),
    (64, 64, 64, "bfloat16", False, False, None),
    (24, 12, 20, "float16", False, False, None),  # not multiples of the mma tile: predicated edges
])
def test_matmul_on_tensor_cores(M, N, K, dtype, a_t, b_t, batch):
    tensors, inputs, want = _matmul(M, N, K, dtype, a_t, b_t, batch)
    sch, (c,) = schedule_and_run(tensors, inputs)
    np.testing.assert_allclose(c, want, **matmul_tol(dtype, k=K, out_dtype="float32"))
    calls = set(intrinsics(sch))
    t = "f16" if dtype == "float16" else "bf16"
    if min(M, N, K) >= 64:  # sm_90a (the default target here): the Hopper template takes a 64-wide tile
        assert sch.trace[0].args["name"] == "gemm.wgmma"
        assert f"wgmma.mma_async.sync.aligned.m64n64k16.f32.{t}.{t}" in calls
        return
    assert f"mma.sync.aligned.m16n8k16.row.col.f32.{t}" in " ".join(calls)
    assert any(c.startswith("ldmatrix") for c in calls)
    if K // 32 >= 2:
        assert "cp.async.cg.shared.global.16" in calls and "cp.async.wait_group" in calls


# float16 operands with float32 accumulation take tensor cores at any M, N, K (the GEMM template,
# gemm.py): only other dtypes reach the SIMT kernel
@pytest.mark.parametrize("M,N,K,dtype", [(20, 9, 12, "float32"), (33, 40, 17, "float32"), (16, 16, 16, "int32")])
def test_matmul_simt_fallback(M, N, K, dtype):
    tensors, inputs, want = _matmul(M, N, K, dtype)
    if dtype == "int32":
        inputs = [np.random.default_rng(6).integers(-9, 9, x.shape).astype(np.int32) for x in inputs]
        want = inputs[0].astype(np.int64) @ inputs[1].astype(np.int64)
    sch, (c,) = schedule_and_run(tensors, inputs)
    np.testing.assert_allclose(c.astype(np.float64), want, rtol=1e-4, atol=1e-4)
    assert not any(n.startswith("mma") for n in intrinsics(sch))
    assert any(n.buffer.scope == "shared" for n in walk(sch.kernel.body) if isinstance(n, Allocate))


# -- one representative kernel of each schedule: nvcc compiles it; on a GPU it matches numpy ---------

def _case(name):
    """(unscheduled kernel, inputs, expected output) of a representative kernel per schedule."""
    if name == "elementwise":
        A = ts.placeholder((37, 19), name="A")
        a = rand((37, 19), "float32")
        return ts.lower([A, ts.compute((37, 19), lambda i, j: ts.exp(A[i, j]) * 2.0, name="B")]), [a], np.exp(a) * 2
    if name == "elementwise_f16":
        A = ts.placeholder((64, 48), "float16", name="A")
        a = rand((64, 48), "float16")
        return ts.lower([A, ts.compute((64, 48), lambda i, j: A[i, j] * A[i, j], name="B")]), [a], a * a
    if name in ("row_sum", "row_max_block"):
        rows, cols = (6, 100) if name == "row_sum" else (3, 1000)
        X = ts.placeholder((rows, cols), name="X")
        k = ts.reduce_axis(cols, name="k")
        red = ts.sum if name == "row_sum" else ts.max
        x = rand((rows, cols), "float32", 1)
        want = x.sum(axis=1) if name == "row_sum" else x.max(axis=1)
        return ts.lower([X, ts.compute((rows,), lambda i: red(X[i, k], axis=k), name="S")]), [x], want
    if name == "column_sum":
        X = ts.placeholder((50, 7), name="X")
        k = ts.reduce_axis(50, name="k")
        x = rand((50, 7), "float32", 2)
        return ts.lower([X, ts.compute((7,), lambda j: ts.sum(X[k, j], axis=k), name="S")]), [x], x.sum(axis=0)
    if name == "transpose":
        A = ts.placeholder((40, 70), name="A")
        a = rand((40, 70), "float32", 3)
        return ts.lower([A, ts.compute((70, 40), lambda i, j: A[j, i], name="B")]), [a], a.T
    if name in ("softmax", "layer_norm", "rms_norm"):
        shapes, dtype = {"softmax": ([(6, 40)], "float32"), "layer_norm": ([(5, 64), (64,), (64,)], "float16"),
                         "rms_norm": ([(4, 600), (600,)], "bfloat16")}[name]
        arrays = [rand(s, dtype, k) for k, s in enumerate(shapes)]
        return _lowered(name, shapes, dtype), arrays, _numpy(name, arrays)
    M, N, K, dtype, a_t, b_t = {"matmul_mma": (64, 64, 64, "float16", False, False),
                                "matmul_mma_bf16_t": (32, 32, 32, "bfloat16", True, True),
                                "matmul_simt": (33, 40, 17, "float32", False, False)}[name]
    tensors, inputs, want = _matmul(M, N, K, dtype, a_t, b_t)
    return ts.lower(tensors), inputs, want


CASES = ["elementwise", "elementwise_f16", "row_sum", "row_max_block", "column_sum", "transpose", "softmax",
         "layer_norm", "rms_norm", "matmul_mma", "matmul_mma_bf16_t", "matmul_simt"]


def _have_nvcc() -> bool:
    import shutil

    return shutil.which("nvcc") is not None


@pytest.mark.skipif(not _have_nvcc(), reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("case", CASES)
def test_generated_cuda_compiles_with_nvcc(case, arch):
    from tessel.codegen.cuda import cuda_source
    from tessel.codegen.cuda_build import compile_cuda

    kernel, _, _ = _case(case)
    sch = default_gpu_schedule(kernel, f"cuda:{arch}")
    binary = compile_cuda(cuda_source(sch.kernel), arch, name=case, compiler="nvcc")
    assert binary.code


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_generated_cuda_runs_on_the_gpu(case):
    import torch

    from tessel.codegen.cuda import build_kernel

    kernel, inputs, want = _case(case)
    sch = default_gpu_schedule(kernel, "cuda")
    gpu = build_kernel(sch.kernel, "cuda")
    out_param = kernel.params[-1]
    tensors = [torch.from_numpy(x.view(np.uint16) if x.dtype == ml_dtypes.bfloat16 else x).cuda() for x in inputs]
    tensors = [t.view(torch.bfloat16) if x.dtype == ml_dtypes.bfloat16 else t for t, x in zip(tensors, inputs)]
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[out_param.dtype]
    out = torch.full(out_param.shape, 7e3, dtype=torch_dtype, device="cuda")
    gpu(*tensors, out)
    torch.cuda.synchronize()
    got = out.float().cpu().numpy().astype(np.float64)
    if "mma" in case:
        k = next(int(lp.extent.value) for lp in walk(kernel.body) if isinstance(lp, For) and lp.var.name == "k")
        tol = matmul_tol(kernel.params[0].dtype, k=k, out_dtype="float32")
    elif out_param.dtype == "float32":
        tol = dict(rtol=1e-4, atol=1e-4)
    else:
        tol = elementwise_tol(out_param.dtype, ulps=4, scale=1.0)
    np.testing.assert_allclose(got, np.asarray(want, np.float64), **tol)
