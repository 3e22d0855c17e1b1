"""ONNX sequences, resolved at import time, compiled for the CPU, against onnx's reference evaluator.

Properties: a chain of every sequence op (SplitToSequence with and without sizes, SequenceInsert at
the front and the back, SequenceErase, SequenceAt with negative positions, SequenceLength,
ConcatFromSequence with and without a new axis, SequenceMap) gives onnx.reference's values on fresh
random inputs; sequences as model inputs and outputs go in and come out as lists of arrays of
their own shapes; the graph holds no sequence (only slices and concats); a position out of range
and a sequence where a tensor is expected are refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx.reference import ReferenceEvaluator

from tessel.compiler.onnx_backend import TesselBackend
from tessel.frontend.onnx_import import import_onnx
from tessel.frontend.ops import UnsupportedOpError

F = onnx.TensorProto.FLOAT
I64 = onnx.TensorProto.INT64
nh = onnx.numpy_helper


def _seq_type(name, shape=None):
    return oh.make_tensor_sequence_value_info(name, F, shape)


def _chain_model():
    inits = [nh.from_array(np.array([2, 3, 1], np.int64), "sizes"), nh.from_array(np.array(0, np.int64), "zero"),
             nh.from_array(np.array(-2, np.int64), "minus2"), nh.from_array(np.array(1, np.int64), "one")]
    nodes = [
        oh.make_node("SplitToSequence", ["x", "sizes"], ["parts"], axis=1),  # x (4, 6): (4,2) (4,3) (4,1)
        oh.make_node("SplitToSequence", ["x"], ["rows"], axis=0, keepdims=0),  # 4 items of (6,)
        oh.make_node("SequenceAt", ["rows", "minus2"], ["row2"]),
        oh.make_node("SequenceInsert", ["parts", "y", "zero"], ["parts2"]),  # y (4, 5) in front
        oh.make_node("SequenceInsert", ["parts2", "y"], ["parts3"]),  # and at the back
        oh.make_node("SequenceErase", ["parts3", "one"], ["parts4"]),  # drops the (4,2) part
        oh.make_node("SequenceLength", ["parts4"], ["n"]),
        oh.make_node("ConcatFromSequence", ["parts4"], ["cat"], axis=1),
        oh.make_node("ConcatFromSequence", ["rows"], ["stacked"], axis=-1, new_axis=1),
        oh.make_node("Mul", ["row2", "row2"], ["sq"]),
    ]
    outs = [oh.make_tensor_value_info("cat", F, None), oh.make_tensor_value_info("stacked", F, None),
            oh.make_tensor_value_info("n", I64, None), oh.make_tensor_value_info("sq", F, None)]
    graph = oh.make_graph(nodes, "seq_chain", [oh.make_tensor_value_info("x", F, [4, 6]),
                                               oh.make_tensor_value_info("y", F, [4, 5])], outs, initializer=inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])


def test_sequence_ops_match_the_reference():
    rng = np.random.default_rng(21)
    model = _chain_model()
    x, y = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x, "y": y})
    got = TesselBackend.prepare(model, "CPU").run([x, y])
    assert [g.shape for g in got] == [w.shape for w in want] == [(4, 14), (6, 4), (), (6,)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    graph = import_onnx(model)
    assert {n.op for n in graph.nodes.values()} <= {"slice", "concat", "reshape", "mul"}


def test_sequence_inputs_and_outputs_are_lists():
    """SequenceMap (x * x + t per item) over a sequence input of three shapes; the output sequence and
    an inserted one come back as lists."""
    body = oh.make_graph([oh.make_node("Mul", ["a", "a"], ["aa"]), oh.make_node("Add", ["aa", "t"], ["b"])], "body",
                         [oh.make_tensor_value_info("a", F, None), oh.make_tensor_value_info("t", F, [1])],
                         [oh.make_tensor_value_info("b", F, None)])
    nodes = [oh.make_node("SequenceMap", ["s", "t"], ["mapped"], body=body),
             oh.make_node("SequenceInsert", ["s", "t"], ["longer"])]
    graph = oh.make_graph(nodes, "seq_io", [_seq_type("s"), oh.make_tensor_value_info("t", F, [1])],
                          [_seq_type("mapped"), _seq_type("longer")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    rng = np.random.default_rng(22)
    s = [rng.standard_normal(shape).astype(np.float32) for shape in [(2, 3), (5,), (1, 4, 2)]]
    t = rng.standard_normal(1).astype(np.float32)
    mapped, longer = TesselBackend.prepare(model, "CPU").run([s, t])
    want_mapped, want_longer = ReferenceEvaluator(model).run(None, {"s": s, "t": t})
    assert isinstance(mapped, list) and [m.shape for m in mapped] == [(2, 3), (5,), (1, 4, 2)]
    for g, w in zip(mapped, want_mapped):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    assert len(longer) == 4 and all(np.array_equal(g, w) for g, w in zip(longer, want_longer))


def test_bad_positions_and_kinds_are_refused_by_name():
    nodes = [oh.make_node("SplitToSequence", ["x"], ["rows"], axis=0), oh.make_node("SequenceAt", ["rows", "p"], ["r"])]
    graph = oh.make_graph(nodes, "bad", [oh.make_tensor_value_info("x", F, [3, 2])],
                          [oh.make_tensor_value_info("r", F, None)],
                          initializer=[nh.from_array(np.array(3, np.int64), "p")])
    with pytest.raises(UnsupportedOpError, match=r"SequenceAt.*position 3 is out of range for a sequence of 3"):
        import_onnx(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]))
    nodes = [oh.make_node("SequenceLength", ["x"], ["n"])]
    graph = oh.make_graph(nodes, "bad2", [oh.make_tensor_value_info("x", F, [3, 2])],
                          [oh.make_tensor_value_info("n", I64, None)])
    with pytest.raises(UnsupportedOpError, match=r"SequenceLength.*tensor where a sequence is expected"):
        import_onnx(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]))
