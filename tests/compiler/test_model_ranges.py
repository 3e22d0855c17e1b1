"""Input ranges (issue 12 item 4): a dynamic model refuses, before importing or compiling, a call
whose shapes break its declared dims, with an ArgumentError naming the input, the dimension and
the range or fixed size; in-range shapes run and match numpy on fresh random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.model_ranges import InputRanges
from tessel.errors import ArgumentError

RNG = np.random.default_rng()


def test_ranges_accept_inside_and_name_what_is_wrong_outside():
    r = InputRanges("M", [("x", [("batch", 2, 8), 5]), ("y", [("batch", 2, 8), ("seq", 1, None)])])
    for b in RNG.integers(2, 9, size=4):
        r.check([((int(b), 5), "float32"), ((int(b), int(RNG.integers(1, 1000))), "float32")])
    bad = {
        ((9, 5), (9, 3)): r"input 'x' dimension 0 is 9, outside the range \[2, 8\] of 'batch'",
        ((1, 5), (1, 3)): r"input 'x' dimension 0 is 1, outside the range \[2, 8\]",
        ((4, 5), (5, 3)): r"input 'y' dimension 0 is 5 but input 'x' dimension 0 is 4; both are 'batch'",
        ((4, 6), (4, 3)): r"input 'x' dimension 1 is 6; the model fixes it at 5",
        ((4, 5), (4, 0)): r"input 'y' dimension 1 is 0, outside the range \[1, inf\) of 'seq'",
        ((4, 5, 1), (4, 3)): r"input 'x' has 3 dimension\(s\) \(4, 5, 1\); the model takes 2",
    }
    for (sx, sy), pattern in bad.items():
        with pytest.raises(ArgumentError, match=pattern):
            r.check([(sx, "float32"), (sy, "float32")])
    assert InputRanges.from_json(r.to_json()).describe() == r.describe()


def _onnx_add():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3])
    g = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g", [x, y], [z])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_named_dims_are_checked_at_call_time():
    m = _onnx_add()
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    cm = ts.compile(m, (a, a), target="cpu")
    for b in (4, int(RNG.integers(5, 12))):
        x, y = (RNG.standard_normal((b, 3)).astype(np.float32) for _ in range(2))
        np.testing.assert_allclose(cm(x, y), x + y, rtol=1e-6)
    f = np.float32
    with pytest.raises(ArgumentError, match=r"input 'y' dimension 0 is 5 but input 'x' dimension 0 is 4; both are "
                                            r"'batch'"):
        cm(np.ones((4, 3), f), np.ones((5, 3), f))
    with pytest.raises(ArgumentError, match=r"input 'x' dimension 1 is 4; the model fixes it at 3"):
        cm(np.ones((4, 4), f), np.ones((4, 4), f))
    with pytest.raises(ArgumentError, match=r"input 'x' has 1 dimension"):
        cm(np.ones(4, f), np.ones(4, f))
    assert cm.input_ranges.describe() == "x: (batch in [0, inf), 3), y: (batch in [0, inf), y.1 in [0, inf))"
