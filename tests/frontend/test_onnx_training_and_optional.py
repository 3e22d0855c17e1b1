"""ONNX training ops (Adagrad, Adam, Momentum), ReverseSequence and optionals, compiled for the CPU,
against onnx's reference evaluator on fresh random inputs.

Properties: the optimisers' updated tensors and states match the reference for several tensors at
once, at step 0 and later steps, with regularisation and decay; ReverseSequence reverses each batch
row's prefix of its own length on either layout; an optional model input may be empty (None) or
hold a tensor, OptionalHasElement says which, and OptionalGetElement passes the tensor on.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx.reference import ReferenceEvaluator

from tessel.compiler.onnx_backend import TesselBackend

F = onnx.TensorProto.FLOAT
TRAINING = "ai.onnx.preview.training"


def _run_both(model, feeds: dict):
    got = TesselBackend.prepare(model, "CPU").run(list(feeds.values()))
    want = ReferenceEvaluator(model).run(None, feeds)
    return got, want


def _optimizer_model(op, n_state, attrs, shapes):
    names = ["R", "T"]
    letters = {"Adagrad": "XGH", "Adam": "XGVH", "Momentum": "XGV"}[op]
    groups = [[f"{k}{i}" for i in range(len(shapes))] for k in letters]
    for g in groups:
        names += g
    outs = [f"{n}_new" for g in [groups[0]] + groups[2:] for n in g]
    node = oh.make_node(op, names, outs, domain=TRAINING, **attrs)
    ins = [oh.make_tensor_value_info("R", F, []), oh.make_tensor_value_info("T", onnx.TensorProto.INT64, [])]
    ins += [oh.make_tensor_value_info(n, F, shapes[i]) for g in groups for i, n in enumerate(g)]
    graph = oh.make_graph([node], op, ins, [oh.make_tensor_value_info(o, F, None) for o in outs])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18), oh.make_opsetid(TRAINING, 1)]), names


@pytest.mark.parametrize("op,n_state,attrs", [
    ("Adagrad", 1, {"decay_factor": 0.1, "epsilon": 1e-5, "norm_coefficient": 0.01}),
    ("Adam", 2, {"alpha": 0.85, "beta": 0.95, "epsilon": 1e-4, "norm_coefficient": 0.02, "norm_coefficient_post": 0.1}),
    ("Momentum", 1, {"alpha": 0.9, "beta": 0.7, "mode": "standard", "norm_coefficient": 0.01}),
    ("Momentum", 1, {"alpha": 0.9, "beta": 0.7, "mode": "nesterov", "norm_coefficient": 0.0}),
])
@pytest.mark.parametrize("step", [0, 3])
def test_optimizers_match_the_reference(op, n_state, attrs, step):
    rng = np.random.default_rng(41 + step)
    shapes = [(3,), (2, 4)]
    model, names = _optimizer_model(op, n_state, attrs, shapes)
    feeds = {"R": np.array(0.1, np.float32), "T": np.array(step, np.int64)}
    for n in names[2:]:
        shape = shapes[int(n[1:])]
        v = rng.standard_normal(shape).astype(np.float32)
        feeds[n] = np.abs(v) if n[0] == "H" else v  # squared-gradient state is non-negative
    got, want = _run_both(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.all(np.isfinite(w))
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("time_axis,batch_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(time_axis, batch_axis):
    rng = np.random.default_rng(43)
    shape = [0, 0, 3]
    shape[time_axis], shape[batch_axis] = 5, 4
    x = rng.standard_normal(shape).astype(np.float32)
    lens = rng.integers(1, 6, 4).astype(np.int64)
    node = oh.make_node("ReverseSequence", ["x", "lens"], ["y"], time_axis=time_axis, batch_axis=batch_axis)
    graph = oh.make_graph([node], "rs", [oh.make_tensor_value_info("x", F, shape),
                                         oh.make_tensor_value_info("lens", onnx.TensorProto.INT64, [4])],
                          [oh.make_tensor_value_info("y", F, shape)])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    # lens stays a run-time input: one compiled model, several lengths
    rep = TesselBackend.prepare(model, "CPU")
    for _ in range(2):
        (got,) = rep.run([x, lens])
        (want,) = ReferenceEvaluator(model).run(None, {"x": x, "lens": lens})
        np.testing.assert_array_equal(got, want)
        lens = rng.integers(1, 6, 4).astype(np.int64)
    assert len(rep._cache) == 1 and len(next(iter(rep._cache.values()))) == 1


def test_optional_inputs_empty_or_holding_a_tensor():
    opt = oh.make_optional_type_proto(oh.make_tensor_type_proto(F, [3]))
    nodes = [oh.make_node("OptionalHasElement", ["o"], ["has"])]
    graph = oh.make_graph(nodes, "opt", [oh.make_value_info("o", opt)],
                          [oh.make_tensor_value_info("has", onnx.TensorProto.BOOL, [])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    rep = TesselBackend.prepare(model, "CPU")
    x = np.random.default_rng(44).standard_normal(3).astype(np.float32)
    assert rep.run([None])[0] == np.array(False) and rep.run([x])[0] == np.array(True)
    nodes = [oh.make_node("OptionalGetElement", ["o"], ["v"]), oh.make_node("Neg", ["v"], ["y"])]
    graph = oh.make_graph(nodes, "opt2", [oh.make_value_info("o", opt)], [oh.make_tensor_value_info("y", F, [3])])
    (y,) = TesselBackend.prepare(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]), "CPU").run([x])
    np.testing.assert_array_equal(y, -x)
