"""compile(model, target="cuda"): every model compiles to GPU kernels, and they compute what the graph means.

Here (no GPU): an MLP, the builder's transformer block (attention through sdpa and through
matmul + softmax), a small CNN and torch's TransformerEncoderLayer are compiled for cuda:sm_90a;
their scheduled GPU kernels are run by the reference interpreter (`run_interpreted`) and must agree
with the graph reference and with torch eager / numpy; every kernel's CUDA compiles with nvcc for
sm_90a; groups the default GPU schedule refuses are split and the split is reported; the CUDA path
never imports TVM; inputs on the host and calls without a GPU raise errors naming the problem;
`compile` picks "cuda" when a GPU is visible.

The `gpu` tests (skipped here) run the same models, plus GPT-2 and Llama from small transformers
configs, on the GPU against torch eager (float32, relative error <= 1e-4), and replay a model
captured as a CUDA graph.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tessel.codegen.cuda_build import nvcc_path, nvrtc_version
from tessel.compiler.gpu_kernel import GpuKernel
from tessel.compiler.model import compile_graph
from tessel.compiler.model_cuda import split_group, thread_per_element
from tessel.errors import ArgumentError, TesselError
from tessel.frontend.builder import GraphBuilder
from tessel.frontend.graph import Graph
from tessel.passes.graph.fusion import fuse

pytestmark = pytest.mark.skipif(nvcc_path() is None and nvrtc_version() is None,
                                reason="no CUDA compiler (nvcc or NVRTC) to build kernels with")
TARGET = "cuda:sm_90a"
TOL = 1e-4


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cuda-model-cache"))


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _w(rng, *shape, scale=None):
    scale = 1 / math.sqrt(shape[-1]) if scale is None else scale
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _check_kernels(cm):
    assert cm.target == TARGET and cm.on_gpu
    for k in cm.kernels:
        assert isinstance(k, GpuKernel) and k.arch == "sm_90a" and k.ir.target == "cuda", k.name
        assert "__global__" in k.source and k.launch is not None


def _mlp_builder(rng):
    w1, b1, w2, b2 = _w(rng, 32, 16), _w(rng, 32), _w(rng, 8, 32), _w(rng, 8)
    b = GraphBuilder("mlp")
    x = b.input("x", (8, 16))
    b.output(b.linear(b.relu(b.linear(x, w1, b1)), w2, b2))
    return b, lambda xs: np.maximum(xs @ w1.T + b1, 0) @ w2.T + b2


# -- through the interpreter ------------------------------------------------------------------------


def test_mlp_runs_interpreted_and_matches_numpy():
    rng = np.random.default_rng(0)
    b, numpy_mlp = _mlp_builder(rng)
    cm = compile_graph(b.graph, target=TARGET)
    _check_kernels(cm)
    xs = _w(rng, 8, 16, scale=1.0)
    got = cm.run_interpreted(xs)
    assert _rel(got, numpy_mlp(xs)) <= TOL
    assert _rel(cm.run_reference(xs), numpy_mlp(xs)) <= TOL
    # the matmul+bias+relu group has an epilogue the GPU matmul schedule cannot take: split, reported
    splits = cm.report["gpu_splits"]
    assert splits and splits[0]["group"] == "matmul+add+relu" and splits[0]["into"] == ["matmul", "add+relu"]
    text = cm.summary(show=False)
    assert "split matmul+add+relu into matmul | add+relu" in text and "not timed" in text
    assert cm.memory["arena_bytes"] > 0 and cm._current.plan.conflicts() == []


@pytest.mark.parametrize("attention", ["sdpa", "matmul_softmax"])
def test_transformer_block_runs_interpreted(attention):
    from tests.frontend.test_builder import B, D, S, _block_params, _build_block, _numpy_block

    rng = np.random.default_rng(1)
    p = _block_params(rng)
    b = GraphBuilder("block")
    b.output(_build_block(b, b.input("x", (B, S, D)), p, attention))
    cm = compile_graph(b.graph, target=TARGET)
    _check_kernels(cm)
    xs = _w(rng, B, S, D, scale=1.0)
    want = _numpy_block(xs.astype(np.float64), p)
    assert _rel(cm.run_reference(xs), want) <= TOL
    assert _rel(cm.run_interpreted(xs), want) <= TOL
    assert len(cm.kernels) < len(cm.steps)  # equal kernels are built once
    if attention == "sdpa":  # one op, several loop nests: one kernel per nest, temporaries in the arena
        assert any(s["group"] == "sdpa" for s in cm.report["gpu_splits"])
        assert any("." in a for s in cm.steps for a in s.args)


torch = pytest.importorskip("torch")


def _torch_models():
    from tests.frontend import test_torch_models as tm

    return tm


SMALL = {"mlp": (4, 16), "cnn": (1, 3, 8, 8), "encoder_layer": (1, 5, 32)}  # the interpreter is slow


@pytest.mark.parametrize("name", sorted(SMALL))
def test_torch_models_run_interpreted_and_match_eager(name):
    tm = _torch_models()
    module, _ = tm.MODELS[name]()
    inputs = (torch.randn(*SMALL[name], generator=torch.Generator().manual_seed(7)),)
    from tessel.compiler.compile_api import compile as ts_compile

    cm = ts_compile(module, inputs, target=TARGET)
    _check_kernels(cm)
    with torch.no_grad():
        want = module(*inputs).numpy()
    got = cm.run_interpreted(*[x.numpy() for x in inputs])
    assert isinstance(got, np.ndarray) and got.shape == want.shape
    assert _rel(got, want) <= TOL
    got_t = cm.run_interpreted(*inputs)  # torch in, torch out
    assert isinstance(got_t, torch.Tensor) and _rel(got_t.numpy(), want) <= TOL


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not installed")
def test_every_kernel_compiles_with_nvcc_for_sm_90a(monkeypatch):
    monkeypatch.setenv("TESSEL_CUDA_COMPILER", "nvcc")
    rng = np.random.default_rng(2)
    b, _ = _mlp_builder(rng)
    g = b.graph
    cm = compile_graph(g, target=TARGET)
    for k in cm.kernels:
        assert k.binary.compiler.startswith("nvcc") and k.binary.arch == "sm_90a"
        assert k.binary.code[:4] == b"\x7fELF", k.name  # a cubin


def test_the_cuda_path_never_imports_tvm():
    code = textwrap.dedent("""
        import sys, numpy as np, torch
        from tessel.frontend.builder import GraphBuilder
        import tessel
        b = GraphBuilder("m"); x = b.input("x", (4, 8))
        b.output(b.softmax(b.linear(x, np.ones((8, 8), np.float32)), axis=-1))
        cm = tessel.compile(b, target="cuda:sm_90a")
        y = cm.run_interpreted(np.ones((4, 8), np.float32))
        m = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
        cm2 = tessel.compile(m, (torch.randn(2, 8),), target="cuda:sm_90a")
        cm2.run_interpreted(torch.randn(2, 8)); cm2.summary(show=False)
        print(sorted(k for k in sys.modules if k.split(".")[0] in ("tvm", "tvm_ffi", "xgboost")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_transformers_models_run_interpreted(name):
    tm = _torch_models()
    module, (ids,) = tm.MODELS[name]()
    ids = ids[:1, :5]
    from tessel.compiler.compile_api import compile as ts_compile

    cm = ts_compile(module, (ids,), target=TARGET)
    with torch.no_grad():
        want = module(ids).logits
    assert _rel(cm.run_interpreted(ids).logits.numpy(), want.numpy()) <= TOL


def test_gpu_runtime_bookkeeping_with_simulated_kernels(monkeypatch):
    """The runtime's arena views, uploaded constants, fresh outputs and output structure, with each
    kernel launch replaced by the interpreter on CPU tensors (the launches themselves need a GPU)."""
    import contextlib

    from tessel.compiler import model_cuda

    tm = _torch_models()
    module, _ = tm.MODELS["encoder_layer"]()
    x = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(8))
    from tessel.compiler.compile_api import compile as ts_compile

    cm = ts_compile(module, (x,), target=TARGET)
    monkeypatch.setattr(model_cuda, "gpu_available", lambda: True)
    monkeypatch.setattr(model_cuda, "_as_cuda_tensor", lambda t, spec, what: (t, "torch"))
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(model_cuda.GpuProgram, "runtime",
                        lambda self, d: self._runtimes.setdefault(0, model_cuda.GpuRuntime(self, torch.device("cpu"))))
    monkeypatch.setattr(GpuKernel, "__call__", GpuKernel.run_reference)
    with torch.no_grad():
        want = module(x)
    for _ in range(2):  # the second call reuses the arena and the uploaded constants
        got = cm(x)
        assert isinstance(got, torch.Tensor) and _rel(got.numpy(), want.numpy()) <= TOL
    rt = cm._current._runtimes[0]
    assert rt.arena.numel() == cm.memory["arena_bytes"]
    assert all(t.untyped_storage().data_ptr() == rt.arena.untyped_storage().data_ptr()
               for name, t in rt.static.items() if name in cm._current.plan.offsets)


# -- splitting ----------------------------------------------------------------------------------------


def test_split_group_rules():
    g = Graph("s")
    x = g.add_input("x", (4, 8), "float32")
    w = g.add_const("w", np.ones((8, 8), np.float32))
    (t,) = g.add_node("transpose", [w], {"perm": (1, 0)})
    (h,) = g.add_node("matmul", [x, t])
    (y,) = g.add_node("relu", [h])
    (z,) = g.add_node("exp", [y])
    (u,) = g.add_node("neg", [y])
    g.mark_outputs([z, u])
    (grp,) = [gr for gr in fuse(g) if gr.anchor is not None]
    head, tail = split_group(g, grp)
    assert head.anchor is not None and tail.anchor is None
    assert tail.inputs == [h] and sorted(tail.outputs) == sorted([z, u])
    parts = split_group(g, tail)  # two outputs: one part per output, each recomputing relu
    assert [p.outputs for p in parts] == [[z], [u]] and all(p.ops[0] == "relu" for p in parts)
    assert [p.ops for p in split_group(g, parts[0])] == [["relu"], ["exp"]]


def test_thread_per_element_fallback_computes_the_same():
    import tessel as ts
    from tessel.ir.interp import run

    A = ts.placeholder((10, 7), name="A")
    k = ts.reduce_axis(7, name="k")
    S = ts.compute((10,), lambda i: ts.sum(A[i, k] * A[i, k], axis=k), name="S")
    ir = ts.lower([A, S])
    sched = thread_per_element(ir)
    a = np.random.default_rng(3).standard_normal((10, 7)).astype(np.float32)
    s = np.empty(10, np.float32)
    run(sched, a, s)
    np.testing.assert_allclose(s, (a * a).sum(1), rtol=1e-5)
    assert sched.launch.block == (32, 1, 1)


# -- errors, targets ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_cuda():
    b, _ = _mlp_builder(np.random.default_rng(4))
    return compile_graph(b.graph, target=TARGET)


def test_calling_without_a_gpu_says_so(mlp_cuda, monkeypatch):
    from tessel.compiler import model_cuda

    monkeypatch.setattr(model_cuda, "gpu_available", lambda: False)
    with pytest.raises(TesselError, match="needs an NVIDIA GPU"):
        mlp_cuda(np.ones((8, 16), np.float32))
    with pytest.raises(TesselError, match="needs an NVIDIA GPU"):
        mlp_cuda.capture_graph(np.ones((8, 16), np.float32))


def test_host_arrays_are_refused_naming_the_input(mlp_cuda, monkeypatch):
    from tessel.compiler import model_cuda

    monkeypatch.setattr(model_cuda, "gpu_available", lambda: True)
    with pytest.raises(ArgumentError, match="input 'x' is a numpy array in host memory"):
        mlp_cuda(np.ones((8, 16), np.float32))
    with pytest.raises(ArgumentError, match="input 'x' is a torch tensor on cpu"):
        mlp_cuda(torch.ones(8, 16))
    with pytest.raises(ArgumentError, match="takes 1 input"):
        mlp_cuda()


def test_cpu_only_options_and_bad_targets():
    b, _ = _mlp_builder(np.random.default_rng(5))
    with pytest.raises(TesselError, match="cuda_graph=True needs a CUDA target"):
        compile_graph(b.graph, target="cpu", cuda_graph=True)
    with pytest.raises(TesselError, match="unknown CUDA architecture"):
        compile_graph(b.graph, target="cuda:sm_9")
    cm = compile_graph(b.graph, target="cpu")
    with pytest.raises(TesselError, match="CUDA graphs need target='cuda'"):
        cm.capture_graph(np.ones((8, 16), np.float32))


def test_default_target_follows_the_visible_gpu(monkeypatch):
    import tessel
    from tessel.compiler import compile_api

    assert compile_api.default_target(gpu_visible=lambda: True) == "cuda"
    assert compile_api.default_target(gpu_visible=lambda: False) == "cpu"

    class OnGpu:
        device = type("D", (), {"type": "cuda"})()

    assert compile_api.default_target((OnGpu(),), gpu_visible=lambda: False) == "cuda"
    b = GraphBuilder("t")
    x = b.input("x", (4, 4))
    b.output(b.relu(x))
    monkeypatch.setattr(compile_api, "_gpu_visible", lambda: False)
    assert tessel.compile(b).target == "cpu"
    monkeypatch.setattr(compile_api, "_gpu_visible", lambda: True)
    cm = tessel.compile(b)
    assert cm.target.startswith("cuda:sm_") and cm.on_gpu


# -- on the GPU ----------------------------------------------------------------------------------------


def _gpu_model(name):
    tm = _torch_models()
    module, inputs = tm.MODELS[name]()
    return module.cuda(), tuple(x.cuda() for x in inputs)


def _main(out):
    out = out.logits if hasattr(out, "logits") else out
    return out[0] if isinstance(out, (list, tuple)) else out


@pytest.fixture
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mlp", "encoder_layer", "cnn", "gpt2", "llama"])
def test_models_on_the_gpu_match_torch_eager(name, _no_tf32):
    import tessel

    module, inputs = _gpu_model(name)
    cm = tessel.compile(module, inputs, target="cuda")
    for trial in range(2):
        if trial:  # new values, same shapes
            inputs = tuple(x.clone().uniform_(-2, 2) if x.is_floating_point() else x.clone().random_(0, 100)
                           for x in inputs)
        got = _main(cm(*inputs))
        with torch.no_grad():
            want = _main(module(*inputs))
        assert isinstance(got, torch.Tensor) and got.is_cuda and got.shape == want.shape
        assert _rel(got.cpu().numpy(), want.cpu().numpy()) <= TOL, name


@pytest.mark.gpu
def test_builder_block_on_the_gpu_matches_interpreter():
    from tests.frontend.test_builder import B, D, S, _block_params, _build_block

    rng = np.random.default_rng(6)
    b = GraphBuilder("block")
    b.output(_build_block(b, b.input("x", (B, S, D)), _block_params(rng), "sdpa"))
    cm = compile_graph(b.graph, target="cuda")
    xs = _w(rng, B, S, D, scale=1.0)
    got = cm(torch.from_numpy(xs).cuda())
    assert _rel(got.cpu().numpy(), cm.run_interpreted(xs)) <= TOL
    assert "time (us)" in cm.summary(show=False)


@pytest.mark.gpu
def test_cuda_graph_replay_gives_the_same_results(_no_tf32):
    import tessel

    module, inputs = _gpu_model("encoder_layer")
    cm = tessel.compile(module, inputs, target="cuda")
    graph = cm.capture_graph(*inputs)
    for _ in range(3):
        x = tuple(torch.randn_like(t) for t in inputs)
        with torch.no_grad():
            want = module(*x)
        got = graph(*x)
        assert _rel(got.cpu().numpy(), cm(*x).cpu().numpy()) <= 1e-6
        assert _rel(got.cpu().numpy(), want.cpu().numpy()) <= TOL
    cm2 = tessel.compile(module, inputs, target="cuda", cuda_graph=True)
    for _ in range(2):
        x = tuple(torch.randn_like(t) for t in inputs)
        with torch.no_grad():
            want = module(*x)
        assert _rel(cm2(*x).cpu().numpy(), want.cpu().numpy()) <= TOL
