"""Fused GEMM epilogues (tessel/schedules/epilogue.py in the mma.sync template tessel/schedules/gemm.py):
every epilogue op (bias per column and per row, ReLU, GELU exact and tanh, SiLU, residual add, alpha /
beta scaling, the output cast) in the race-checked interpreter against numpy on fresh random inputs,
edges and batches included; a deleted barrier still caught with an epilogue; nvcc compiles an epilogue
kernel for sm_80 and sm_90a; the graph's GEMM + elementwise groups lower to ONE template kernel
on cuda (matmul, linear, batched matmul, addmm / baddbmm through torch, matmul + bias + GELU, 3-D linear +
tanh-GELU, q @ k^T * scale with the transposed copy folded into the loads, a GEMM whose raw result is also
an output) and match the graph reference through `run_interpreted`; and
(`gpu`) GEMM + bias + GELU on the GPU against torch."""

from __future__ import annotations

import math
import shutil

import ml_dtypes
import numpy as np
import pytest
from scipy.special import erf

from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.interp.race import RaceError
from tessel.ir.nodes import Barrier, Buffer, Seq, Var, rewrite
from tessel.schedules.epilogue import EpiOp, Epilogue
from tessel.schedules.gemm import GemmKnobs, GemmProblem, gemm_kernel
from tessel.codegen.cuda_build import available_compilers

needs_cuda_compiler = pytest.mark.skipif(not available_compilers(), reason="no CUDA compiler (nvcc or NVRTC)")

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
SMALL = GemmKnobs(bm=32, bn=32, bk=16, warps_m=2, warps_n=1, stages=2)


def _rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh inputs every run; the seed is in messages
    return seed, np.random.default_rng(seed)


def _numpy_epilogue(spec, v, arrays, batch_idx=None):
    """The reference of one spec (as Epilogue.of takes it) on float64 values v [.., M, N]."""
    kind = spec if isinstance(spec, str) else spec[0]
    if kind == "bias":
        b = arrays[spec[1].name].astype(np.float64)
        return v + (b[:, None] if len(spec) > 2 and spec[2] == -2 else b)
    if kind == "residual":
        return v + (spec[2] if len(spec) > 2 else 1.0) * arrays[spec[1].name].astype(np.float64)
    if kind == "scale":
        return spec[1] * v
    if kind == "relu":
        return np.maximum(v, 0)
    if kind == "gelu":
        return 0.5 * v * (1 + erf(v / math.sqrt(2)))
    if kind == "gelu_tanh":
        return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    if kind == "silu":
        return v / (1 + np.exp(-v))
    if kind == "cast":
        return v.astype(NP[spec[1]]).astype(np.float64)
    raise AssertionError(kind)


def _check(p: GemmProblem, specs, kn=SMALL, tol=2e-2):
    seed, rng = _rng()
    pre = tuple(p.batch)
    bufs = {"bias_n": Buffer("bias_n", (p.n,), p.dtype), "bias_m": Buffer("bias_m", (p.m,), "float32"),
            "R": Buffer("R", pre + (p.m, p.n), p.dtype)}
    specs = [tuple(bufs[x] if isinstance(x, str) and x in bufs else x for x in s) if not isinstance(s, str) else s
             for s in specs]
    epi = Epilogue.of(*specs)
    kern = gemm_kernel(p, kn, epilogue=epi)
    a_buf, b_buf, c_buf = p.buffers()
    a = rng.standard_normal(a_buf.shape).astype(NP[p.dtype])
    b = rng.standard_normal(b_buf.shape).astype(NP[p.dtype])
    arrays = {x.name: rng.standard_normal(x.shape).astype(NP[x.dtype]) for x in epi.buffers}
    c = np.full(c_buf.shape, 7e3, NP[p.out_dtype])  # garbage: every element must be written
    interp.run(kern, a, b, c, *[arrays[x.name] for x in epi.buffers])
    x, y = a.astype(np.float64), b.astype(np.float64)
    x = x if p.a_kcontig else np.swapaxes(x, -1, -2)
    y = np.swapaxes(y, -1, -2) if p.b_kcontig else y
    want = np.matmul(x, y)
    for s in specs:
        want = _numpy_epilogue(s, want, arrays)
    got = c.astype(np.float64)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-9)
    assert err <= tol, f"seed {seed}: {epi.describe()} relative error {err}"
    return kern


@pytest.mark.parametrize("specs", [
    [("bias", "bias_n"), "relu"],
    [("bias", "bias_m", -2), "gelu"],
    [("bias", "bias_n"), "gelu_tanh"],
    ["silu", ("scale", 0.5)],
    [("scale", 1.5), ("residual", "R", -0.75)],  # alpha * AB + beta * R
    [("bias", "bias_n"), ("cast", "float16"), "gelu", ("residual", "R")],
])
def test_each_epilogue_op_matches_numpy(specs):
    _check(GemmProblem(40, 48, 40, "float16", out_dtype="float16"), specs)


@pytest.mark.parametrize("p", [
    GemmProblem(33, 17, 19, "bfloat16", a_kcontig=False, out_dtype="bfloat16"),  # odd edges, transposed A
    GemmProblem(24, 40, 32, "float16", batch=(2,), b_kcontig=True, out_dtype="float32"),  # batched, f32 out
])
def test_epilogue_at_edges_and_batches(p):
    _check(p, [("bias", "bias_n"), ("residual", "R", 0.5), "silu"], GemmKnobs(bm=16, bn=16, bk=16, warps_m=1,
                                                                               warps_n=1, stages=2, group_m=1))


def test_epilogue_buffers_follow_c_and_bad_ops_raise():
    p = GemmProblem(32, 32, 32)
    bias = Buffer("bias", (32,), "float16")
    kern = gemm_kernel(p, SMALL, epilogue=Epilogue.of(("bias", bias), ("residual", bias.__class__(
        "R", (32, 32), "float32")), ("bias", bias)))
    assert [b.name for b in kern.params] == ["A", "B", "C", "bias", "R"]  # each buffer once
    with pytest.raises(ScheduleError, match="'swish'"):
        EpiOp("swish")
    with pytest.raises(ScheduleError, match="1-D"):
        EpiOp("bias", Buffer("b2", (4, 4), "float16"))


def test_epilogue_hook_form_for_other_templates():
    epi = Epilogue.of(("scale", 2.0), "relu")
    fn = epi.hook()
    v = Var("v", "float32")
    assert str(fn(v, Var("r"), Var("c"))) == str(epi.apply(v, (Var("r"), Var("c"))))


def test_deleted_barrier_with_an_epilogue_fails():
    p = GemmProblem(64, 32, 64, "float16", out_dtype="float16")
    kern = gemm_kernel(p, GemmKnobs(bm=64, bn=32, bk=16, warps_m=2, warps_n=1, stages=2),
                       epilogue=Epilogue.of("relu"))
    broken = rewrite(kern, lambda n: Seq(()) if isinstance(n, Barrier) else None, fixpoint=False)
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((64, 64)).astype(np.float16), rng.standard_normal((64, 32)).astype(np.float16))
    with pytest.raises(RaceError):
        interp.run(broken, a, b, np.zeros((64, 32), np.float16))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_nvcc_compiles_an_epilogue_kernel(arch):
    from tessel.codegen.cuda import cuda_source
    from tessel.codegen.cuda_build import compile_cuda

    p = GemmProblem(4096, 4096, 4096, "bfloat16", out_dtype="bfloat16")
    epi = Epilogue.of(("bias", Buffer("bias", (4096,), "bfloat16")), "gelu",
                      ("residual", Buffer("R", (4096, 4096), "bfloat16")))
    src = cuda_source(gemm_kernel(p, epilogue=epi))
    assert "erff" in src
    assert compile_cuda(src, arch, name="gemm", compiler="nvcc").code


# -- on the GPU, against torch ---------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", [(1000, 520, 333), (2048, 2048, 2048)])
def test_gpu_gemm_bias_gelu_matches_torch(m, n, k):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from tessel.codegen.cuda import build_kernel

    p = GemmProblem(m, n, k, "bfloat16", out_dtype="bfloat16")
    epi = Epilogue.of(("bias", Buffer("bias", (n,), "bfloat16")), "gelu")
    kern = build_kernel(gemm_kernel(p, epilogue=epi), "cuda")
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    c = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    kern(a, b, c, bias)
    ref = torch.nn.functional.gelu(a.float() @ b.float() + bias.float())
    err = float((c.float() - ref).norm() / ref.norm())
    assert err <= 5e-3 and not torch.isnan(c).any()


# -- the graph: GEMM + elementwise groups become one template kernel on cuda ------------------------

def _one_gemm_kernel(cm, n_kernels=1):
    from tessel.ir.nodes import Intrinsic, walk

    assert len(cm.kernels) == n_kernels, [k.name for k in cm.kernels]
    assert not cm.report.get("gpu_splits"), cm.report.get("gpu_splits")
    k = cm.kernels[0]
    # mma.sync on sm_80, wgmma where "cuda" resolves to a Hopper GPU's sm_90a
    assert any(isinstance(n, Intrinsic) and n.name.startswith(("mma", "wgmma.mma_async")) for n in walk(k.ir)), k.name
    return k


def _h(rng, *shape, scale=None):
    scale = 1 / math.sqrt(shape[-1]) if scale is None else scale
    return (rng.standard_normal(shape) * scale).astype(np.float16)


def _graph_case(name, rng):
    """(builder, inputs, numpy reference in float64 of the graph's float16 semantics)."""
    from tessel.frontend.builder import GraphBuilder

    b = GraphBuilder(name)
    f = lambda a: a.astype(np.float64)  # noqa: E731
    r16 = lambda a: f(np.asarray(a).astype(np.float16))  # noqa: E731
    x = _h(rng, 40, 24, scale=1.0)
    if name == "matmul_bias_gelu":
        w, bias = _h(rng, 24, 48), _h(rng, 48)
        b.output(b.gelu(b.add(b.matmul(b.input("x", x.shape, "float16"), w), bias)))
        h = r16(r16(f(x) @ f(w)) + f(bias))
        return b, [x], 0.5 * h * (1 + erf(h / math.sqrt(2)))
    if name == "linear":
        w, bias = _h(rng, 48, 24), _h(rng, 48)
        b.output(b.linear(b.input("x", x.shape, "float16"), w, bias))
        return b, [x], f(x) @ f(w).T + f(bias)
    if name == "linear3d_gelu_tanh":  # the lowering keeps the bias add as a temporary (tanh-GELU reads it 3x)
        x3, w, bias = _h(rng, 2, 5, 24, scale=1.0), _h(rng, 32, 24), _h(rng, 32)
        b.output(b.gelu(b.linear(b.input("x", x3.shape, "float16"), w, bias), approximate="tanh"))
        h = r16(r16(f(x3) @ f(w).T) + f(bias))
        return b, [x3], 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    if name == "scores":  # q @ k^T * scale: the transposed operand copy is read in place (B k-contiguous)
        q, k = _h(rng, 2, 40, 24, scale=1.0), _h(rng, 2, 32, 24, scale=1.0)
        qi, ki = b.input("q", q.shape, "float16"), b.input("k", k.shape, "float16")
        b.output(b.mul(b.matmul(qi, b.transpose(ki, (0, 2, 1))), 0.125))
        return b, [q, k], r16(np.matmul(f(q), np.swapaxes(f(k), 1, 2))) * 0.125
    if name == "matmul":
        w = _h(rng, 24, 48)
        b.output(b.matmul(b.input("x", x.shape, "float16"), w))
        return b, [x], f(x) @ f(w)
    if name == "bmm":
        y = _h(rng, 2, 24, 16, scale=1.0)
        xs = _h(rng, 2, 40, 24, scale=1.0)
        b.output(b.matmul(b.input("x", xs.shape, "float16"), b.input("y", y.shape, "float16")))
        return b, [xs, y], np.matmul(f(xs), f(y))
    if name == "matmul_silu_residual":
        w, res = _h(rng, 24, 24), _h(rng, 40, 24, scale=1.0)
        xi = b.input("x", x.shape, "float16")
        b.output(b.add(b.silu(b.matmul(xi, w)), b.input("r", res.shape, "float16")))
        h = r16(f(x) @ f(w))
        return b, [x, res], r16(h / (1 + np.exp(-h))) + f(res)
    raise AssertionError(name)


@needs_cuda_compiler
@pytest.mark.parametrize("name", ["matmul_bias_gelu", "linear", "linear3d_gelu_tanh", "matmul", "bmm",
                                  "matmul_silu_residual", "scores"])
def test_graph_gemm_groups_are_one_template_kernel_on_cuda(name):
    from tessel.compiler.model import compile_graph

    seed, rng = _rng()
    b, inputs, want = _graph_case(name, rng)
    cm = compile_graph(b.graph, target="cuda:sm_90a")
    _one_gemm_kernel(cm)
    got = np.asarray(cm.run_interpreted(*inputs), np.float64)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= 2e-3, f"seed {seed}: {name} relative error {err}"
    ref = np.asarray(cm.run_reference(*inputs), np.float64) if hasattr(cm, "run_reference") else want
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 2e-3


def test_dsl_gemm_whose_result_is_also_an_output():
    """C = A @ B is a kernel output and D = relu(C) another: the template stores both, one nest."""
    import tessel as ts
    from tessel.schedules.generic_gpu import default_gpu_schedule
    from tessel.schedules.generic import stages

    A = ts.placeholder((40, 24), "bfloat16", name="A")
    B = ts.placeholder((24, 32), "bfloat16", name="B")
    k = ts.reduce_axis(24, name="k")
    C = ts.compute((40, 32), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    D = ts.compute((40, 32), lambda i, j: ts.maximum(C[i, j], 0.0).astype("bfloat16"), name="D")
    sch = default_gpu_schedule(ts.lower([A, B, C, D]), "cuda:sm_90a")
    assert sch.trace[0].args["name"] == "gemm.mma_sync" and len(stages(sch.kernel)) <= 1
    seed, rng = _rng()
    a, b = (rng.standard_normal(s).astype(ml_dtypes.bfloat16) for s in ((40, 24), (24, 32)))
    c, d = np.full((40, 32), 7e3, np.float32), np.full((40, 32), 7e3, ml_dtypes.bfloat16)
    interp.run(sch.kernel, a, b, c, d)
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(c - want).max() <= 1e-3 * np.abs(want).max(), f"seed {seed}"
    assert np.array_equal(d, np.maximum(c, 0).astype(ml_dtypes.bfloat16)), f"seed {seed}"


@needs_cuda_compiler
@pytest.mark.parametrize("op", ["addmm", "baddbmm"])
def test_torch_addmm_and_baddbmm_are_one_template_kernel_on_cuda(op):
    torch = pytest.importorskip("torch")
    from tessel.compiler.compile_api import compile as ts_compile

    seed, _ = _rng()
    g = torch.Generator().manual_seed(seed)
    batch = (2,) if op == "baddbmm" else ()
    bias = torch.randn(*batch, 40, 16, generator=g).half()
    w = (torch.randn(*batch, 24, 16, generator=g) / 5).half()

    class M(torch.nn.Module):
        def forward(self, x):
            f = torch.addmm if op == "addmm" else torch.baddbmm
            return f(bias, x, w, beta=0.5, alpha=2.0)

    x = torch.randn(*batch, 40, 24, generator=g).half()
    cm = ts_compile(M(), (x,), target="cuda:sm_90a")
    _one_gemm_kernel(cm)
    want = 0.5 * bias.double() + 2.0 * (x.double() @ w.double())
    got = torch.as_tensor(np.asarray(cm.run_interpreted(x.numpy()), np.float64))
    assert float((got - want).abs().max() / want.abs().max()) <= 3e-3, f"seed {seed}"


@pytest.mark.gpu
def test_gpu_compiled_model_gemm_bias_gelu_matches_its_interpretation():
    """The compiled model's ONE fused kernel on the GPU against the interpreter and torch."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from tessel.compiler.model import compile_graph
    from tessel.frontend.builder import GraphBuilder

    rng = np.random.default_rng(int(np.random.SeedSequence().entropy % 2**32))
    x, w, bias = _h(rng, 200, 96, scale=1.0), _h(rng, 96, 136), _h(rng, 136)
    b = GraphBuilder("mbg")
    b.output(b.gelu(b.add(b.matmul(b.input("x", x.shape, "float16"), w), bias)))
    cm = compile_graph(b.graph, target="cuda")
    _one_gemm_kernel(cm)
    got = cm(torch.from_numpy(x).cuda()).float().cpu().numpy()
    want = np.asarray(cm.run_interpreted(x), np.float32)
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max()
    ref = torch.nn.functional.gelu(torch.from_numpy(x).float() @ torch.from_numpy(w).float()
                                   + torch.from_numpy(bias).float()).numpy()
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()


@pytest.mark.parametrize("template", ["gemm.mma_sync", "gemm.wgmma"])
def test_epilogue_stage_over_part_of_the_output_is_refused(template):
    # fuzz case gemm_epilogue_ignores_epilogue_loop_extent: the epilogue nest covers rows 0..23 of a
    # 48-row D (here 32 of 64 rows); fusing it would write relu(C + bias) into rows 24..47 as well
    import tessel as ts
    from tessel.ir.nodes import For, Kernel
    from tessel.ir.nodes import walk as _walk
    from tessel.schedules.template import get_template

    A = ts.placeholder((64, 80), "bfloat16", name="A")
    B = ts.placeholder((80, 80), "bfloat16", name="B")
    bias = ts.placeholder((80,), "float32", name="bias")
    k = ts.reduce_axis(80, name="k")
    C = ts.compute((64, 80), lambda i, j: ts.sum(A[i, k].astype("float32") * B[j, k].astype("float32"), axis=k),
                   name="C")
    D = ts.compute((64, 80), lambda i, j: ts.maximum(C[i, j] + bias[j], 0.0), name="D")
    whole = ts.lower([A, B, bias, D])
    assert get_template(template).applies(whole, "cuda:sm_90a") is None  # the whole epilogue fuses

    def shorten(n):  # the epilogue's row loop runs 32 of D's 64 rows
        if isinstance(n, For) and any(getattr(x, "buffer", None) is not None and x.buffer.name == "D"
                                      for x in _walk(n)) and int(n.extent.value) == 64 \
                and not any(isinstance(x, For) and int(x.extent.value) == 64 for x in _walk(n.body)):
            return For(n.var, 32, n.body, n.kind)
        return None

    part = Kernel(whole.name, whole.params, rewrite(whole.body, shorten), whole.target, whole.launch)
    assert part != whole
    why = get_template(template).applies(part, "cuda:sm_90a")
    assert why is not None and "not at every element" in why, why
