"""ONNX models on int16 and the unsigned integer types, compiled for the CPU, against numpy.

Properties: arithmetic wraps modulo 2**bits exactly as numpy's does (fresh random inputs over the
whole range of the type, so sums and products overflow); integer Div truncates, Max/Min and
comparisons order unsigned values as unsigned (the top bit is not a sign); bitwise ops and shifts
(counts inside and outside [0, bits)) match numpy bit for bit; casts between the widths wrap;
float -> unsigned casts saturate at 0 and at the type's maximum (tessel's rule, as CUDA's).
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnx.helper as oh
import pytest

import tessel as ts
from tessel.frontend.onnx_import import import_onnx

DTYPES = ["uint8", "uint16", "int16", "uint32", "uint64"]
_ELEM = {"uint8": 2, "uint16": 4, "int16": 5, "uint32": 12, "uint64": 13, "int64": 7, "float32": 1, "bool": 9}

# (ONNX op, attributes, numpy reference)
BINARY = [
    ("Add", {}, np.add), ("Sub", {}, np.subtract), ("Mul", {}, np.multiply),
    ("Div", {}, lambda a, b: (a // b) if a.dtype.kind == "u" else np.trunc(a / b).astype(a.dtype)),
    ("Max", {}, np.maximum), ("Min", {}, np.minimum),
    ("BitwiseAnd", {}, np.bitwise_and), ("BitwiseOr", {}, np.bitwise_or), ("BitwiseXor", {}, np.bitwise_xor),
]
COMPARE = [("Less", np.less), ("Equal", np.equal), ("GreaterOrEqual", np.greater_equal)]


def _model(dtype: str, shape=(3, 17)):
    T = _ELEM[dtype]
    nodes, outs = [], []
    for op, attrs, _ in BINARY:
        nodes.append(oh.make_node(op, ["a", "b"], [f"y_{op}"], **attrs))
        outs.append(oh.make_tensor_value_info(f"y_{op}", T, shape))
    for op, _ in COMPARE:
        nodes.append(oh.make_node(op, ["a", "b"], [f"y_{op}"]))
        outs.append(oh.make_tensor_value_info(f"y_{op}", _ELEM["bool"], shape))
    nodes += [oh.make_node("BitwiseNot", ["a"], ["y_not"]),
              oh.make_node("Cast", ["a"], ["y_i64"], to=_ELEM["int64"]),
              oh.make_node("Cast", ["a"], ["y_f32"], to=_ELEM["float32"]),
              oh.make_node("Cast", ["f"], ["y_sat"], to=T),
              oh.make_node("ReduceSum", ["a", "axes"], ["y_sum"], keepdims=0),
              oh.make_node("Sub", ["zero", "a"], ["y_neg"])]  # 0 - a wraps (TVM bounds it by [0, 0])
    outs += [oh.make_tensor_value_info("y_not", T, shape), oh.make_tensor_value_info("y_i64", _ELEM["int64"], shape),
             oh.make_tensor_value_info("y_f32", _ELEM["float32"], shape),
             oh.make_tensor_value_info("y_sat", T, shape), oh.make_tensor_value_info("y_sum", T, shape[:1]),
             oh.make_tensor_value_info("y_neg", T, shape)]
    if dtype.startswith("u"):
        for d in ("LEFT", "RIGHT"):
            nodes.append(oh.make_node("BitShift", ["a", "s"], [f"y_{d}"], direction=d))
            outs.append(oh.make_tensor_value_info(f"y_{d}", T, shape))
    ins = [oh.make_tensor_value_info(n, T, shape) for n in ("a", "b", "s")]
    ins.append(oh.make_tensor_value_info("f", _ELEM["float32"], shape))
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    zero = onnx.numpy_helper.from_array(np.zeros((), dtype), "zero")
    graph = oh.make_graph(nodes, "ints", ins, outs, initializer=[axes, zero])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])


def _inputs(dtype: str, rng, shape=(3, 17)):
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    b = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    b[b == 0] = 3  # no division by zero
    b[0, :4] = a[0, :4]  # some equal pairs
    edges = np.array(sorted({info.min, info.min + 1, -1 if info.min else 1, 0, 1, info.max - 1, info.max}), dtype)
    a[1, :edges.size ** 2 % 17] = np.repeat(edges, edges.size)[:edges.size ** 2 % 17]  # extremes against extremes
    b[1, :edges.size ** 2 % 17] = np.tile(edges, edges.size)[:edges.size ** 2 % 17]
    a[2, :edges.size], b[2, :edges.size] = edges, edges[::-1]
    b[b == 0] = 3
    if info.min:  # MIN / -1 overflows: undefined in ONNX (tessel saturates, numpy wraps), not compared
        b[(a == info.min) & (b == -1)] = 3
    bits = info.bits
    s = rng.integers(0, bits + 3, shape).astype(dtype)  # shift counts, a few >= bits
    f = rng.uniform(float(info.min) * 1.5 - 10, float(info.max) * 1.5 + 10, shape).astype(np.float32)
    return a, b, s, f


@pytest.mark.parametrize("dtype", DTYPES)
def test_integer_ops_match_numpy(dtype):
    rng = np.random.default_rng(zlib.crc32(dtype.encode()))  # hash() of a str changes per process
    model = _model(dtype)
    a, b, s, f = _inputs(dtype, rng)
    graph = import_onnx(model)
    assert graph.values[graph.inputs[0]].dtype == dtype
    cm = ts.compile(graph, [a, b, s, f][: len(graph.inputs)], target="cpu")
    names = [o.name for o in model.graph.output]
    got = dict(zip(names, cm(*[a, b, s, f][: len(graph.inputs)])))
    with np.errstate(all="ignore"):
        for op, _, ref in BINARY:
            np.testing.assert_array_equal(got[f"y_{op}"], ref(a, b), err_msg=f"{op} on {dtype}")
            assert got[f"y_{op}"].dtype == np.dtype(dtype)
        for op, ref in COMPARE:
            np.testing.assert_array_equal(got[f"y_{op}"], ref(a, b), err_msg=f"{op} on {dtype}")
        np.testing.assert_array_equal(got["y_not"], np.invert(a))
        np.testing.assert_array_equal(got["y_neg"], np.zeros((), dtype) - a)
        np.testing.assert_array_equal(got["y_i64"], a.astype(np.int64))
        np.testing.assert_array_equal(got["y_f32"], a.astype(np.float32))
        info = np.iinfo(dtype)
        sat = np.clip(np.trunc(f.astype(np.float64)), float(info.min), float(info.max))
        want_sat = np.where(f >= float(info.max), info.max, sat.astype(dtype))  # uint64's max is not a float
        np.testing.assert_array_equal(got["y_sat"], want_sat)
        np.testing.assert_array_equal(got["y_sum"], a.sum(axis=1, dtype=dtype))
        if dtype.startswith("u"):
            bits = info.bits
            inside = s < bits
            left = np.where(inside, np.left_shift(a, np.where(inside, s, 0).astype(dtype)), 0).astype(dtype)
            right = np.where(inside, np.right_shift(a, np.where(inside, s, 0).astype(dtype)), 0).astype(dtype)
            np.testing.assert_array_equal(got["y_LEFT"], left)
            np.testing.assert_array_equal(got["y_RIGHT"], right)


def test_int16_constants_and_wide_folding():
    """A uint8 initializer folds with a model-input-free subgraph at import, wrapping as numpy does."""
    c = onnx.numpy_helper.from_array(np.array([250, 7, 128], np.uint8), "c")
    nodes = [oh.make_node("Add", ["c", "c"], ["d"]), oh.make_node("Add", ["x", "d"], ["y"])]
    graph = oh.make_graph(nodes, "fold", [oh.make_tensor_value_info("x", 2, [3])],
                          [oh.make_tensor_value_info("y", 2, [3])], initializer=[c])
    g = import_onnx(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]))
    consts = [v.data for v in g.values.values() if v.is_const]
    assert any(np.array_equal(d, np.array([244, 14, 0], np.uint8)) for d in consts)
    x = np.array([3, 255, 1], np.uint8)
    cm = ts.compile(g, [x], target="cpu")
    np.testing.assert_array_equal(cm(x), x + np.array([244, 14, 0], np.uint8))
