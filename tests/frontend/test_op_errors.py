"""The op library's checks that are not per-case: (d) bad shapes, dtypes and attributes raise
TesselError subclasses whose messages name the op, the input and the dimensions at fault; and two
properties of the numpy references. The per-case checks (a)-(c) are in test_ops.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tessel.errors import ArgumentError, DTypeError, ShapeError, TesselError
from tessel.frontend.graph import Graph, Value
from tessel.frontend.ops import get_op

# -- (d) errors -------------------------------------------------------------------------------------

V = Value
ERRORS = [
    ("add", [V("a", (2, 3), "float32"), V("b", (4,), "float32")], {}, ShapeError,
     ["add", "input 0", "input 1", "dim 1 is 3", "dim 0 is 4"]),
    ("where", [V("c", (2, 1), "bool"), V("a", (2, 3), "float32"), V("b", (2, 5), "float32")], {}, ShapeError,
     ["where", "input 1", "input 2", "3", "5"]),
    ("add", [V("a", (2, 3), "float32")], {}, ArgumentError, ["add", "expected 2 input(s), got 1"]),
    ("sub", [V("a", (2,), "bool"), V("b", (2,), "bool")], {}, DTypeError, ["sub", "input 0", "bool"]),
    ("exp", [V("a", (2, 3), "int32")], {}, DTypeError, ["exp", "input 0", "int32", "float"]),
    ("cast", [V("a", (2,), "float32")], {"dtype": "complex64"}, DTypeError, ["cast", "complex64"]),
    ("gelu", [V("a", (2,), "float32")], {"approximate": "fast"}, ArgumentError, ["gelu", "approximate", "fast"]),
    ("batch_norm", [V("x", (2, 3, 4), "float32")] + [V(f"p{k}", (4,), "float32") for k in range(4)], {}, ShapeError,
     ["batch_norm", "input 1", "(4,)", "(3,)"]),
    ("matmul", [V("a", (2, 3), "float32"), V("b", (4, 5), "float32")], {}, ShapeError,
     ["matmul", "input 0 dim 1 is 3", "input 1 dim 0 is 4"]),
    ("matmul", [V("a", (2, 2, 3), "float32"), V("b", (3, 3, 4), "float32")], {}, ShapeError,
     ["matmul", "input 0", "input 1", "dim 0"]),
    ("linear", [V("x", (2, 3), "float32"), V("w", (5, 4), "float32")], {}, ShapeError,
     ["linear", "input 0 dim 1 is 3", "input 1 dim 1", "4"]),
    ("conv", [V("x", (1, 3, 5, 5), "float32"), V("w", (4, 2, 3, 3), "float32")], {}, ShapeError,
     ["conv", "input 0 dim 1", "3", "input 1 dim 1 is 2"]),
    ("conv", [V("x", (1, 2, 2, 2), "float32"), V("w", (4, 2, 3, 3), "float32")], {}, ShapeError,
     ["conv", "dim 2", "kernel"]),
    ("reduce_sum", [V("x", (2, 3), "float32")], {"axes": [2]}, ShapeError, ["reduce_sum", "axis 2", "rank 2"]),
    ("softmax", [V("x", (2, 3), "float32")], {"axis": -3}, ShapeError, ["softmax", "axis -3"]),
    ("layer_norm", [V("x", (2, 3, 4), "float32"), V("w", (3,), "float32")], {"axes": [2]}, ShapeError,
     ["layer_norm", "input 1", "(3,)", "(4,)"]),
    ("max_pool", [V("x", (1, 1, 2, 2), "float32")], {"kernel": [3, 3]}, ShapeError, ["max_pool", "dim 2", "kernel"]),
    ("avg_pool", [V("x", (1, 1, 4, 4), "int32")], {"kernel": [2, 2]}, DTypeError, ["avg_pool", "int32"]),
    ("reshape", [V("x", (2, 3), "float32")], {"shape": [4, 2]}, ShapeError, ["reshape", "(2, 3)", "(4, 2)"]),
    ("reshape", [V("x", (2, 3), "float32")], {"shape": [-1, -1]}, ShapeError, ["reshape", "more than one -1"]),
    ("transpose", [V("x", (2, 3), "float32")], {"perm": [0, 0]}, ShapeError, ["transpose", "perm", "permutation"]),
    ("expand", [V("x", (2, 3), "float32")], {"shape": [4, 3]}, ShapeError, ["expand", "(2, 3)", "(4, 3)"]),
    ("concat", [V("a", (2, 3), "float32"), V("b", (2, 4), "float32")], {"axis": 0}, ShapeError,
     ["concat", "input 1 dim 1 is 4", "input 0 dim 1 is 3"]),
    # (a slice selecting nothing is an empty result now, which the graph makes a constant)
    ("slice", [V("x", (5,), "float32")], {"starts": [0], "ends": [3], "steps": [0]}, ArgumentError,
     ["slice", "step 0", "axis 0"]),
    ("gather", [V("x", (5, 2), "float32"), V("i", (3,), "float32")], {"axis": 0}, DTypeError,
     ["gather", "input 1", "float32"]),
    ("pad", [V("x", (2, 3), "float32")], {"pads": [1, 1]}, ArgumentError, ["pad", "pads", "expected 4"]),
    ("sdpa", [V("q", (2, 4, 8), "float32"), V("k", (2, 6, 7), "float32"), V("v", (2, 6, 3), "float32")], {},
     ShapeError, ["sdpa", "input 1", "dim 2 is 7", "input 0", "8"]),
    ("sdpa", [V("q", (2, 4, 8), "float32"), V("k", (2, 6, 8), "float32"), V("v", (2, 6, 3), "float32"),
              V("m", (4, 5), "bool")], {}, ShapeError, ["sdpa", "input 3", "(4, 5)", "(2, 4, 6)"]),
    ("irfft", [V("x", (3, 9), "float32")], {}, ShapeError, ["irfft", "(3, 9)", "last dim"]),
    ("rfft", [V("x", (3, 9), "float32")], {"n": 0}, ArgumentError, ["rfft", "n = 0"]),
]


@pytest.mark.parametrize("op,inputs,attrs,err,parts", ERRORS, ids=[f"{e[0]}-{k}" for k, e in enumerate(ERRORS)])
def test_shape_errors_are_clear(op, inputs, attrs, err, parts):
    """(d) Bad inputs raise the right TesselError subclass with a message naming what is wrong."""
    with pytest.raises(err) as info:
        get_op(op).infer(inputs, attrs)
    assert isinstance(info.value, TesselError)
    msg = str(info.value)
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


def test_graph_prefixes_the_node():
    """Through Graph.add_node the message also names the node and where it came from."""
    g = Graph()
    a, b = g.add_input("a", (2, 3), "float32"), g.add_input("b", (3, 4), "float32")
    with pytest.raises(ShapeError, match=r"node 'mm' \(matmul\) \(from model.fc1\): matmul: contracted"):
        g.add_node("matmul", [a, a], name="mm", origin="model.fc1")
    (y,) = g.add_node("matmul", [a, b])
    assert g.values[y].shape == (2, 4)


def test_reference_is_float64_inside():
    """References compute in float64 and round once: a float16 sum of many small terms keeps the
    precision a float16 accumulator would lose."""
    x = np.full((1, 4096), 1e-3, np.float16)
    (r,) = get_op("reduce_sum").reference([x], {"axes": [1]})
    assert r.dtype == np.float16 and abs(float(r[0]) - 4096 * float(np.float16(1e-3))) < 4e-3


def test_gelu_constant_matches_formula():
    """The tanh form uses sqrt(2/pi); spot-check one value against the closed form."""
    (y,) = get_op("gelu").reference([np.array([1.0])], {"approximate": "tanh"})
    want = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (1 + 0.044715)))
    assert abs(y[0] - want) < 1e-15
