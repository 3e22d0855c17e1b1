"""ONNX If / Loop / Scan folded or unrolled at import time, checked against onnxruntime on fresh
random inputs (run-time control flow: test_onnx_control_runtime.py)."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
oh, nh = onnx.helper, onnx.numpy_helper
F, I64, B = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL


def _check(model, *inputs, rtol=1e-5):
    model = oh.make_model(model, opset_imports=[oh.make_opsetid("", 17)])
    names = [i.name for i in model.graph.input]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, dict(zip(names, inputs)))
    got = ts.compile(model, example_inputs=inputs, target="cpu")(*inputs)
    got = [got] if len(want) == 1 else list(got)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=rtol, atol=1e-6)


def _vi(name, elem, shape):
    return oh.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_a_constant_condition_takes_its_branch(flag):
    then_g = oh.make_graph([oh.make_node("Mul", ["x", "x"], ["t"])], "then", [], [_vi("t", F, [3, 4])])
    else_g = oh.make_graph([oh.make_node("Neg", ["x"], ["e"]), oh.make_node("Exp", ["e"], ["e2"])], "else", [],
                           [_vi("e2", F, [3, 4])])
    nodes = [oh.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    g = oh.make_graph(nodes, "if", [_vi("x", F, [3, 4])], [_vi("y", F, [3, 4])],
                      initializer=[nh.from_array(np.array(flag), "c")])
    _check(g, np.random.default_rng().standard_normal((3, 4)).astype(np.float32))


def test_loop_with_a_known_trip_count_unrolls():
    # y <- 0.5 * y + x * i, scanning y out each iteration
    body = oh.make_graph(
        [oh.make_node("Cast", ["i"], ["fi"], to=F), oh.make_node("Mul", ["x", "fi"], ["xi"]),
         oh.make_node("Mul", ["y_in", "half"], ["yh"]), oh.make_node("Add", ["yh", "xi"], ["y_out"]),
         oh.make_node("Identity", ["cond_in"], ["cond_out"]), oh.make_node("Identity", ["y_out"], ["scan"])],
        "body", [_vi("i", I64, []), _vi("cond_in", B, []), _vi("y_in", F, [2, 3])],
        [_vi("cond_out", B, []), _vi("y_out", F, [2, 3]), _vi("scan", F, [2, 3])],
        initializer=[nh.from_array(np.array(0.5, np.float32), "half")])
    g = oh.make_graph([oh.make_node("Loop", ["M", "", "y0"], ["y", "ys"], body=body)], "loop",
                      [_vi("x", F, [2, 3]), _vi("y0", F, [2, 3])], [_vi("y", F, [2, 3]), _vi("ys", F, [5, 2, 3])],
                      initializer=[nh.from_array(np.array(5, np.int64), "M")])
    rng = np.random.default_rng()
    _check(g, *(rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2)))


@pytest.mark.parametrize("reverse", [0, 1])
def test_scan_unrolls_over_the_sequence(reverse):
    # running sum over axis 1 of x (3, 6, 4), state (3, 4); scan output is the running sum, stacked on axis 1
    body = oh.make_graph([oh.make_node("Add", ["s_in", "x_t"], ["s_out"]), oh.make_node("Tanh", ["s_out"], ["o"])],
                         "body", [_vi("s_in", F, [3, 4]), _vi("x_t", F, [3, 4])],
                         [_vi("s_out", F, [3, 4]), _vi("o", F, [3, 4])])
    node = oh.make_node("Scan", ["s0", "x"], ["s", "os"], body=body, num_scan_inputs=1, scan_input_axes=[1],
                        scan_input_directions=[reverse], scan_output_axes=[1])
    g = oh.make_graph([node], "scan", [_vi("s0", F, [3, 4]), _vi("x", F, [3, 6, 4])],
                      [_vi("s", F, [3, 4]), _vi("os", F, [3, 6, 4])])
    rng = np.random.default_rng()
    _check(g, rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 6, 4)).astype(np.float32))


@pytest.mark.parametrize("reverse", [0, 1])
def test_opset8_scan_runs_per_batch_element(reverse):
    """Opset-8 Scan: a batch axis first, no sequence_lens; a running product-sum over 5 steps."""
    body = oh.make_graph([oh.make_node("Mul", ["s_in", "x_t"], ["m"]), oh.make_node("Add", ["m", "x_t"], ["s_out"]),
                          oh.make_node("Sin", ["s_out"], ["o"])], "body",
                         [_vi("s_in", F, [4]), _vi("x_t", F, [4])], [_vi("s_out", F, [4]), _vi("o", F, [4])])
    node = oh.make_node("Scan", ["", "s0", "x"], ["s", "os"], body=body, num_scan_inputs=1, directions=[reverse])
    g = oh.make_graph([node], "scan8", [_vi("s0", F, [3, 4]), _vi("x", F, [3, 5, 4])],
                      [_vi("s", F, [3, 4]), _vi("os", F, [3, 5, 4])])
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", 8)])
    rng = np.random.default_rng()
    inputs = (rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 5, 4)).astype(np.float32))
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"s0": inputs[0], "x": inputs[1]})
    got = ts.compile(model, example_inputs=inputs, target="cpu")(*inputs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
