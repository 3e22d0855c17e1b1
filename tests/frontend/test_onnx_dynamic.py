"""ONNX input dims without a value (no value and no name, or a negative value such as Paddle's -1)
are dynamic: the model compiles for the shapes it is called with, checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ShapeError

onnx = pytest.importorskip("onnx")


def _conv_model(dims):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng()
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "dyn", [x], [y], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("dims", [[-1, 3, None, None], [None, 3, "H", -1], ["N", 3, None, 48]])
def test_dims_without_value_are_dynamic(dims):
    ort = pytest.importorskip("onnxruntime")
    model = _conv_model(dims)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng()
    first = rng.standard_normal((1, 3, 12, 48)).astype(np.float32)
    cm = ts.compile(model, example_inputs=(first,), target="cpu")
    for shape in [(1, 3, 12, 48), (2, 3, 7, 48)]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(cm(x), want, rtol=1e-5, atol=1e-5)


def test_dynamic_dims_need_a_shape():
    with pytest.raises(ShapeError, match=r"model input 'x' has dynamic shape \(\?, 3, \?, \?\)"):
        ts.compile(_conv_model([-1, 3, None, None]), target="cpu")
