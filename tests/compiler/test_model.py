"""CompiledModel and compile(): compiled graphs compute what numpy computes, behind a checked call.

Properties: a compiled MLP matches an independent numpy implementation; random graphs drawn by
hypothesis compile to models that match the graph reference (fusion, lowering, inlining and memory
planning together); equal groups share one kernel; one output comes back unwrapped, several as a
tuple, inputs/constants returned as outputs are copies; numpy in gives numpy out, torch in gives
torch out; bad calls raise ArgumentError naming the input with expected and given; example inputs
that contradict the declared shapes are refused; a specialising model compiles once per new shape;
compile() dispatches on the model type and refuses what it does not know, listing what it accepts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessel.compiler.compile_api import compile as ts_compile
from tessel.compiler.model import CompiledModel, compile_graph
from tessel.errors import ArgumentError, TesselError
from tessel.frontend.builder import GraphBuilder
from tessel.frontend.graph import Graph
from tessel.frontend.reference import run_graph


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _mlp(rng, layers=2, width=16, name="mlp"):
    b = GraphBuilder(name)
    x = b.input("x", (4, width))
    h, params = x, []
    for _ in range(layers):
        w, bias = _rand(rng, width, width) / 4, _rand(rng, width)
        params.append((w, bias))
        h = b.gelu(b.linear(h, b.const(w), b.const(bias)))
    b.output(h)
    return b, params


def _gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


@pytest.fixture(scope="module")
def mlp():
    rng = np.random.default_rng(0)
    b, params = _mlp(rng, layers=3)
    return b, params, compile_graph(b.graph)


def test_mlp_matches_numpy_and_shares_kernels(mlp):
    b, params, cm = mlp
    rng = np.random.default_rng(1)
    x = _rand(rng, 4, 16)
    want = x.astype(np.float64)
    for w, bias in params:
        want = _gelu(want @ w.T + bias)
    got = cm(x)
    assert isinstance(got, np.ndarray) and got.shape == (4, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert len(cm.steps) == 3 and len(cm.kernels) == 1  # three equal layers, one kernel
    assert cm.kernels[0].name == "matmul_add_gelu"
    assert "matmul+add+gelu" == cm.steps[0].group.describe()
    assert cm.kernels[0].source and cm.kernels[0].ir.params[0].name == "in0"
    np.testing.assert_allclose(cm.run_reference(x), got, rtol=1e-4, atol=1e-5)


def test_summary_lists_kernels_ops_and_times(mlp, capsys):
    _, _, cm = mlp
    text = cm.summary(show=True)
    assert text in capsys.readouterr().out
    lines = text.splitlines()
    assert sum("matmul_add_gelu" in ln and "matmul+add+gelu" in ln for ln in lines) == 3
    assert "3 steps, 1 kernels" in text and "arena" in text
    times = [float(ln.split()[-1]) for ln in lines if "matmul+add+gelu" in ln]
    assert all(t > 0 for t in times)


def test_wrong_inputs_raise_argument_errors_naming_the_input(mlp):
    _, _, cm = mlp
    with pytest.raises(ArgumentError, match=r"takes 1 input\(s\) \(x: float32\[4, 16\]\), got 2"):
        cm(np.zeros((4, 16), np.float32), np.zeros((4, 16), np.float32))
    with pytest.raises(ArgumentError, match=r"input 'x': expected shape \(4, 16\), got \(4, 15\)"):
        cm(np.ones((4, 15), np.float32))
    with pytest.raises(ArgumentError, match="input 'x': expected dtype float32, got float64"):
        cm(np.ones((4, 16)))
    with pytest.raises(ArgumentError, match="input 'x': expected a numpy array or a CPU torch tensor"):
        cm([[1.0] * 16] * 4)


def test_non_contiguous_inputs_are_accepted(mlp):
    _, _, cm = mlp
    x = _rand(np.random.default_rng(2), 16, 4).T
    np.testing.assert_allclose(cm(x), cm(np.ascontiguousarray(x)), rtol=1e-6)


def test_torch_tensors_in_give_torch_tensors_out(mlp):
    torch = pytest.importorskip("torch")
    _, _, cm = mlp
    x = torch.randn(4, 16)
    y = cm(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), cm(x.numpy()), rtol=1e-6)
    with pytest.raises(ArgumentError, match="expected dtype float32, got float64"):
        cm(torch.randn(4, 16, dtype=torch.float64))


def test_several_outputs_inputs_and_constants_as_outputs():
    rng = np.random.default_rng(3)
    g = Graph("multi")
    x = g.add_input("x", (3, 4), "float32")
    c = g.add_const("c", _rand(rng, 3, 4))
    (y,) = g.add_node("add", [x, c])
    (z,) = g.add_node("reduce_sum", [y], {"axes": (1,), "keepdims": False})
    g.mark_outputs([z, x, c, y, z])
    cm = compile_graph(g)
    xs = _rand(rng, 3, 4)
    out = cm(xs)
    assert isinstance(out, tuple) and len(out) == 5
    np.testing.assert_allclose(out[0], (xs + g.values[c].data).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(out[1], xs)
    assert not np.shares_memory(out[1], xs)
    np.testing.assert_array_equal(out[2], g.values[c].data)
    out[2][0, 0] = 123.0  # the caller owns its outputs: the model's constant is untouched
    np.testing.assert_array_equal(cm(xs)[2], g.values[c].data)
    np.testing.assert_array_equal(out[0], out[4])
    assert not np.shares_memory(out[0], out[4])


def test_degenerate_graphs_and_scalar_values():
    rng = np.random.default_rng(8)
    g = Graph("identity")
    x = g.add_input("x", (3,), "float32")
    g.mark_outputs([x])
    xs = _rand(rng, 3)
    cm = compile_graph(g)
    assert cm.steps == [] and np.array_equal(cm(xs), xs)
    g = Graph("constant")
    g.add_input("x", (3,), "float32")
    (y,) = g.add_node("exp", [g.add_const("c", np.float32(2.0))])
    g.mark_outputs([y])
    out = compile_graph(g)(xs)
    assert out.shape == () and np.isclose(out, np.exp(2.0))
    g = Graph("zero_d")  # 0-d values cross kernel boundaries
    x = g.add_input("x", (4, 5), "float32")
    (s,) = g.add_node("reduce_sum", [x], {"axes": (0, 1), "keepdims": False})
    (t,) = g.add_node("softmax", [x], {"axis": 1})
    (m,) = g.add_node("reduce_max", [g.add_node("mul", [t, s])[0]], {"axes": (0, 1), "keepdims": False})
    (v,) = g.add_node("add", [m, s])
    g.mark_outputs([v, s])
    xs = _rand(rng, 4, 5)
    got = compile_graph(g)(xs)
    assert [a.shape for a in got] == [(), ()]
    for a, b in zip(got, run_graph(g, [xs])):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_example_inputs_must_match_the_declared_shapes():
    g = Graph("decl")
    x = g.add_input("x", (2, 3), "float32")
    (y,) = g.add_node("exp", [x])
    g.mark_outputs([y])
    with pytest.raises(ArgumentError, match=r"example input 'x': expected shape \(2, 3\), got \(3, 3\).*contradict"):
        compile_graph(g, [np.ones((3, 3), np.float32)])
    compile_graph(g, [np.ones((2, 3), np.float32)])


def test_specialising_model_compiles_once_per_shape():
    calls = []

    def make(n):
        g = Graph("spec")
        x = g.add_input("x", (n, 3), "float32")
        (y,) = g.add_node("tanh", [x])
        (z,) = g.add_node("reduce_sum", [y], {"axes": (0,), "keepdims": False})
        g.mark_outputs([z])
        return g

    def specialize(inputs):
        calls.append(inputs[0].shape)
        return make(inputs[0].shape[0])

    cm = compile_graph(make(2), specialize=specialize)
    rng = np.random.default_rng(4)
    for n in (2, 5, 2, 5, 7):
        x = _rand(rng, n, 3)
        np.testing.assert_allclose(cm(x), np.tanh(x).sum(0), rtol=1e-5)
    assert calls == [(5, 3), (7, 3)]
    assert len(cm.specializations) == 3


def test_static_model_refuses_other_shapes_even_after_a_call():
    rng = np.random.default_rng(5)
    b, _ = _mlp(rng, layers=1, width=8)
    cm = compile_graph(b.graph)
    cm(_rand(rng, 4, 8))
    with pytest.raises(ArgumentError, match=r"expected shape \(4, 8\), got \(5, 8\)"):
        cm(_rand(rng, 5, 8))


def test_compile_entry_dispatches_and_refuses_unknown_models(tmp_path):
    rng = np.random.default_rng(6)
    b, _ = _mlp(rng, layers=1, width=8)
    x = _rand(rng, 4, 8)
    for model in (b, b.graph):
        cm = ts_compile(model, target="cpu")  # without a target, a machine with a GPU picks "cuda"
        assert isinstance(cm, CompiledModel)
        np.testing.assert_allclose(cm(x), run_graph(b.graph, [x])[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(TesselError, match="accepts a tessel Graph, a tessel GraphBuilder, an onnx.ModelProto"):
        ts_compile(42)
    with pytest.raises(TesselError, match="is not an existing .onnx file"):
        ts_compile(str(tmp_path / "missing.onnx"))
    with pytest.raises(TesselError, match="target"):
        ts_compile(b, target="tpu")
    with pytest.raises(TesselError, match="unknown option"):
        ts_compile(b, fusion_level=3)
    # allow_tf32 is an option (it changes only float32 GEMMs on sm_90a): on the CPU, the same results
    np.testing.assert_allclose(ts_compile(b, target="cpu", allow_tf32=True)(x), run_graph(b.graph, [x])[0],
                               rtol=1e-4, atol=1e-5)


def test_compile_torch_module_specialises_per_shape():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    cm = ts_compile(m, (torch.randn(2, 8),), target="cpu")
    for n in (2, 3):
        x = torch.randn(n, 8)
        y = cm(x)
        assert isinstance(y, torch.Tensor) and y.shape == (n, 4)
        with torch.no_grad():
            np.testing.assert_allclose(y.numpy(), m(x).numpy(), rtol=1e-4, atol=1e-5)
    assert len(cm.specializations) == 2
    with pytest.raises(TesselError, match="needs example_inputs"):
        ts_compile(m)


def test_compile_onnx_model_and_path(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper as oh
    from onnx import numpy_helper

    rng = np.random.default_rng(7)
    w = _rand(rng, 8, 4)
    node1 = oh.make_node("MatMul", ["x", "w"], ["h"])
    node2 = oh.make_node("Relu", ["h"], ["y"])
    graph = oh.make_graph([node1, node2], "g", [oh.make_tensor_value_info("x", 1, ["N", 8])],
                          [oh.make_tensor_value_info("y", 1, ["N", 4])], [numpy_helper.from_array(w, "w")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for src in (model, path, str(path)):
        x = _rand(rng, 3, 8)
        cm = ts_compile(src, [x], target="cpu")
        np.testing.assert_allclose(cm(x), np.maximum(x @ w, 0), rtol=1e-4, atol=1e-5)
    x5 = _rand(rng, 5, 8)  # a dynamic dim: a new shape compiles again
    np.testing.assert_allclose(cm(x5), np.maximum(x5 @ w, 0), rtol=1e-4, atol=1e-5)
    with pytest.raises(TesselError, match="dynamic"):
        ts_compile(model)  # no example inputs, no static shape


# -- random graphs, compiled ------------------------------------------------------------------------

_UNARY = ["exp", "tanh", "neg", "sigmoid", "relu"]


@st.composite
def graphs(draw):
    g = Graph("random")
    vals = [g.add_input("x", (4, 8), "float32"), g.add_input("y", (4, 8), "float32")]
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["unary", "binary", "matmul", "softmax", "sum", "transpose2"]))
        a = vals[draw(st.integers(0, len(vals) - 1))]
        if kind == "unary":
            (v,) = g.add_node(draw(st.sampled_from(_UNARY)), [a])
        elif kind == "binary":
            bval = vals[draw(st.integers(0, len(vals) - 1))]
            (v,) = g.add_node(draw(st.sampled_from(["add", "mul", "sub", "maximum"])), [a, bval])
        elif kind == "matmul":
            (v,) = g.add_node("matmul", [a, g.add_const("w", _rand(rng, 8, 8) / 3)])
        elif kind == "softmax":
            (v,) = g.add_node("softmax", [a], {"axis": draw(st.integers(0, 1))})
        elif kind == "sum":
            (s,) = g.add_node("reduce_sum", [a], {"axes": (1,), "keepdims": True})
            (v,) = g.add_node("sub", [a, s])
        else:
            (t,) = g.add_node("transpose", [a], {"perm": (1, 0)})
            (t,) = g.add_node("exp", [t])
            (v,) = g.add_node("transpose", [t], {"perm": (1, 0)})
        vals.append(v)
    g.mark_outputs(vals[2:][-draw(st.integers(1, 2)):])
    g.prune()
    return g


@settings(max_examples=12)
@given(graphs(), st.integers(0, 2**31))
def test_random_graphs_compile_to_models_matching_the_reference(g, seed):
    cm = compile_graph(g)
    rng = np.random.default_rng(seed)
    xs = [_rand(rng, 4, 8), _rand(rng, 4, 8)]
    got = cm(*xs)
    got = got if isinstance(got, tuple) else (got,)
    for a, b in zip(got, run_graph(g, xs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert cm._current.plan.conflicts() == []
