"""ONNX quantisation ops compiled for the CPU, against onnx's reference evaluator and onnxruntime.

Properties, on fresh random inputs whose scales make many values saturate and many land on
rounding ties: QuantizeLinear per tensor, per axis and blocked, to uint8/int8/int16, equals the
reference exactly (round half to even, saturation); DequantizeLinear per axis matches to float32
rounding; DynamicQuantizeLinear's three outputs are exact; MatMulInteger with per-row and
per-column zero points, ConvInteger and QLinearMatMul / QLinearConv (per-channel weight scales and
an int32 bias) are exact against the reference and, where onnxruntime runs them, against it too.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx.reference import ReferenceEvaluator

from tessel.compiler.onnx_backend import TesselBackend

TP = onnx.TensorProto
_ELEM = {np.dtype(np.float32): TP.FLOAT, np.dtype(np.uint8): TP.UINT8, np.dtype(np.int8): TP.INT8,
         np.dtype(np.int16): TP.INT16, np.dtype(np.int32): TP.INT32}


def _model(node, inputs: dict, n_out: int = 1, opset: int = 21):
    ins = [oh.make_tensor_value_info(k, _ELEM[v.dtype], v.shape) for k, v in inputs.items()]
    outs = [oh.make_tensor_value_info(o, 0, None) for o in node.output[:n_out]]
    return oh.make_model(oh.make_graph([node], "q", ins, outs), opset_imports=[oh.make_opsetid("", opset)])


def _check(node, inputs: dict, n_out: int = 1, exact: bool = True, opset: int = 21):
    model = _model(node, inputs, n_out, opset)
    got = TesselBackend.prepare(model, "CPU").run(list(inputs.values()))
    want = ReferenceEvaluator(model).run(None, inputs)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-6)
    try:
        import onnxruntime as ort
    except ImportError:
        return got
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime lacks this op / type combination
        return got
    for g, w in zip(got, sess.run(None, inputs)):
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=1e-6, atol=0 if exact else 1e-6)
    return got


@pytest.mark.parametrize("qtype", [np.uint8, np.int8, np.int16])
def test_quantize_linear_per_tensor_axis_and_block(qtype):
    rng = np.random.default_rng(31)
    info = np.iinfo(qtype)
    x = (rng.standard_normal((2, 6, 4)) * 300).astype(np.float32)
    x[0, 0, :] = [0.5, 1.5, -2.5, 3.5]  # ties at scale 1
    scale = np.float32(1.0)
    zp = np.array(rng.integers(info.min // 2, info.max // 2), qtype)
    _check(oh.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]), {"x": x, "s": np.array(scale), "z": zp})
    s_axis = rng.uniform(0.5, 4, 6).astype(np.float32)
    z_axis = rng.integers(info.min // 2, info.max // 2, 6).astype(qtype)
    _check(oh.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1), {"x": x, "s": s_axis, "z": z_axis})
    s_block = rng.uniform(0.5, 4, (2, 3, 4)).astype(np.float32)  # blocks of 2 along axis 1
    z_block = rng.integers(info.min // 2, info.max // 2, (2, 3, 4)).astype(qtype)
    _check(oh.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1, block_size=2),
           {"x": x, "s": s_block, "z": z_block})


def test_dequantize_and_dynamic_quantize():
    rng = np.random.default_rng(32)
    x = rng.integers(0, 256, (3, 5)).astype(np.uint8)
    s = rng.uniform(0.01, 2, 5).astype(np.float32)
    z = rng.integers(0, 256, 5).astype(np.uint8)
    _check(oh.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=1), {"x": x, "s": s, "z": z}, exact=False)
    f = (rng.standard_normal((4, 7)) * 3 + 1).astype(np.float32)
    _check(oh.make_node("DynamicQuantizeLinear", ["x"], ["y", "ys", "yz"]), {"x": f}, n_out=3)
    _check(oh.make_node("DynamicQuantizeLinear", ["x"], ["y", "ys", "yz"]), {"x": np.abs(f)}, n_out=3)  # min 0


def test_integer_matmul_and_conv():
    rng = np.random.default_rng(33)
    a = rng.integers(0, 256, (4, 6)).astype(np.uint8)
    b = rng.integers(-128, 128, (6, 3)).astype(np.int8)
    az, bz = np.array(rng.integers(0, 256), np.uint8), rng.integers(-128, 128, 3).astype(np.int8)
    _check(oh.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"]), {"a": a, "b": b, "az": az, "bz": bz},
           opset=13)
    # a per-row zero point (onnx.reference broadcasts it along the wrong axis): against numpy
    az = rng.integers(0, 256, 4).astype(np.uint8)
    model = _model(oh.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"]), {"a": a, "b": b, "az": az, "bz": bz},
                   opset=13)
    (got,) = TesselBackend.prepare(model, "CPU").run([a, b, az, bz])
    want = (a.astype(np.int32) - az.astype(np.int32)[:, None]) @ (b.astype(np.int32) - bz.astype(np.int32))
    np.testing.assert_array_equal(got, want)
    x = rng.integers(0, 256, (1, 2, 6, 6)).astype(np.uint8)
    w = rng.integers(0, 256, (3, 2, 3, 3)).astype(np.uint8)
    _check(oh.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1]),
           {"x": x, "w": w, "xz": np.array(rng.integers(0, 256), np.uint8),
            "wz": np.array(rng.integers(0, 256), np.uint8)}, opset=13)


def test_qlinear_matmul_and_conv():
    rng = np.random.default_rng(34)
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    u8 = lambda v: np.array(v, np.uint8)  # noqa: E731
    a = rng.integers(0, 256, (2, 3, 8)).astype(np.uint8)
    b = rng.integers(0, 256, (8, 5)).astype(np.uint8)
    feeds = {"a": a, "as": f32(0.02), "az": u8(rng.integers(0, 256)), "b": b, "bs": f32(0.03),
             "bz": u8(rng.integers(0, 256)), "ys": f32(0.5), "yz": u8(rng.integers(0, 256))}
    _check(oh.make_node("QLinearMatMul", list(feeds), ["y"]), feeds)
    x = rng.integers(0, 256, (1, 3, 7, 7)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    feeds = {"x": x, "xs": f32(0.05), "xz": u8(rng.integers(0, 256)), "w": w,
             "ws": rng.uniform(0.01, 0.05, 4).astype(np.float32), "wz": np.zeros(4, np.int8), "ys": f32(0.7),
             "yz": u8(rng.integers(0, 256)), "bias": rng.integers(-2000, 2000, 4).astype(np.int32)}
    _check(oh.make_node("QLinearConv", list(feeds), ["y"], pads=[1, 1, 1, 1]), feeds)
