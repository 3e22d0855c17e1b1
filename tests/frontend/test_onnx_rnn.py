"""ONNX RNN / GRU / LSTM unrolled at import time, against onnxruntime on fresh random weights and
inputs: every direction, both layouts, biases, initial states, peepholes, clip, linear_before_reset."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
oh, nh = onnx.helper, onnx.numpy_helper
F = onnx.TensorProto.FLOAT
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _model(kind, direction, layout, seq=5, batch=3, inp=4, hidden=6, peepholes=False, **attrs):
    """A one-node model with random weights (initializers) and its random feeds."""
    rng = np.random.default_rng()
    nd, g = (2 if direction == "bidirectional" else 1), GATES[kind]
    arrays = {"W": rng.standard_normal((nd, g * hidden, inp)) * 0.5,
              "R": rng.standard_normal((nd, g * hidden, hidden)) * 0.5,
              "B": rng.standard_normal((nd, 2 * g * hidden)) * 0.3}
    state = (batch, nd, hidden) if layout else (nd, batch, hidden)
    feeds = {"X": rng.standard_normal((batch, seq, inp) if layout else (seq, batch, inp)).astype(np.float32),
             "h0": rng.standard_normal(state).astype(np.float32)}
    names = ["X", "W", "R", "B", "", "h0"]
    if kind == "LSTM":
        feeds["c0"] = rng.standard_normal(state).astype(np.float32)
        names.append("c0")
        if peepholes:
            arrays["P"] = rng.standard_normal((nd, 3 * hidden)) * 0.5
            names.append("P")
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    node = oh.make_node(kind, names, outs, hidden_size=hidden, direction=direction, layout=layout, **attrs)
    inits = [nh.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    vis = [oh.make_tensor_value_info(n, F, a.shape) for n, a in feeds.items()]
    graph = oh.make_graph([node], kind.lower(), vis, [oh.make_tensor_value_info(o, F, None) for o in outs],
                          initializer=inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 14)]), feeds


@pytest.mark.parametrize("kind, direction, layout, extra", [
    ("RNN", "forward", 0, {}), ("RNN", "reverse", 0, {"clip": 0.8}), ("RNN", "reverse", 1, {}),
    ("RNN", "bidirectional", 0, {"activations": ["Relu", "Tanh"]}),
    ("GRU", "forward", 0, {}), ("GRU", "bidirectional", 1, {"linear_before_reset": 1}),
    ("GRU", "reverse", 0, {"linear_before_reset": 0}),
    ("LSTM", "forward", 0, {}), ("LSTM", "bidirectional", 0, {"peepholes": True}),
    ("LSTM", "reverse", 0, {"peepholes": True, "clip": 1.5}), ("LSTM", "reverse", 1, {"peepholes": True}),
])
def test_recurrent_ops_match_onnxruntime(kind, direction, layout, extra):
    model, feeds = _model(kind, direction, layout, **extra)
    if layout:  # onnxruntime has no batch-first recurrent ops: onnx's reference (which ignores clip) checks those
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(model).run(None, feeds)
    else:
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ts.compile(model, example_inputs=tuple(feeds.values()), target="cpu")(*feeds.values())
    for name, g, w in zip(["Y", "Y_h", "Y_c"], got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5, err_msg=name)
