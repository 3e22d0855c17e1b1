"""ONNX ops composed from the op set (inverse trigonometry, products, 3-D pools, LRN), each checked
against onnxruntime on fresh random inputs wider than onnx's own node cases."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
oh = onnx.helper


def _run_both(node, inputs: dict, opset=18, out_dtype=onnx.TensorProto.FLOAT, initializers=()):
    vis = [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs.items()]
    out = oh.make_tensor_value_info(node.output[0], out_dtype, None)
    model = oh.make_model(oh.make_graph([node], "g", vis, [out], initializer=list(initializers)),
                          opset_imports=[oh.make_opsetid("", opset)])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    got = ts.compile(model, example_inputs=tuple(inputs.values()), target="cpu")(*inputs.values())
    return np.asarray(got), want


def _wide(rng, shape, lo, hi):
    return rng.uniform(lo, hi, shape).astype(np.float32)


@pytest.mark.parametrize("op, lo, hi", [("Atan", -1e3, 1e3), ("Atan", -2, 2), ("Asin", -1, 1), ("Acos", -1, 1),
                                         ("Asinh", -50, 50), ("Acosh", 1, 80), ("Atanh", -0.99, 0.99)])
def test_inverse_trigonometry(op, lo, hi):
    rng = np.random.default_rng()
    x = _wide(rng, (5, 37), lo, hi)
    if op in ("Asin", "Acos"):
        x[0, :3] = [-1.0, 1.0, 0.0]
    if op == "Atan":
        x[0, :2] = [np.inf, -np.inf]
    got, want = _run_both(oh.make_node(op, ["x"], ["y"]), {"x": x})
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_reduce_prod_and_cumprod_with_zeros_and_negatives(dtype):
    rng = np.random.default_rng()
    if dtype == np.float32:
        x = rng.uniform(-1.6, 1.6, (3, 6, 4)).astype(dtype)
    else:
        x = rng.integers(-4, 5, (3, 6, 4)).astype(dtype)
    x[1, 2, 3] = 0
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    tp = oh.np_dtype_to_tensor_dtype(np.dtype(dtype))
    got, want = _run_both(oh.make_node("ReduceProd", ["x", "axes"], ["y"], keepdims=0), {"x": x},
                          out_dtype=tp, initializers=[axes])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for exclusive in (0, 1):  # onnxruntime has no CumProd: numpy's cumprod is the reference
        for reverse in (0, 1):
            node = oh.make_node("CumProd", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
            axis = onnx.numpy_helper.from_array(np.array(1, np.int64), "axis")
            vi = oh.make_tensor_value_info("x", tp, x.shape)
            model = oh.make_model(oh.make_graph([node], "g", [vi], [oh.make_tensor_value_info("y", tp, None)],
                                                initializer=[axis]), opset_imports=[oh.make_opsetid("", 24)])
            got = ts.compile(model, example_inputs=(x,), target="cpu")(x)
            v = x[:, ::-1] if reverse else x
            if exclusive:
                v = np.concatenate([np.ones_like(v[:, :1]), v[:, :-1]], axis=1)
            want = np.cumprod(v.astype(np.float64), axis=1)
            want = want[:, ::-1] if reverse else want
            np.testing.assert_allclose(got, want.astype(dtype), rtol=1e-5)


@pytest.mark.parametrize("op, attrs", [
    ("MaxPool", dict(kernel_shape=[2, 3, 2], strides=[2, 1, 2], pads=[1, 0, 1, 0, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 2, 2], dilations=[2, 1, 2], ceil_mode=1, strides=[2, 2, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3, 2], pads=[1, 1, 0, 1, 1, 1], count_include_pad=0)),
    ("AveragePool", dict(kernel_shape=[3, 3, 2], pads=[1, 1, 0, 1, 1, 1], count_include_pad=1, strides=[2, 2, 2])),
    ("AveragePool", dict(kernel_shape=[2, 2, 3], ceil_mode=1, strides=[2, 2, 2])),
    ("LpPool", dict(kernel_shape=[2, 2, 2], p=3, strides=[1, 2, 1])),
])
def test_3d_pools(op, attrs):
    x = np.random.default_rng().standard_normal((2, 3, 7, 6, 5)).astype(np.float32)
    got, want = _run_both(oh.make_node(op, ["x"], ["y"], **attrs), {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_and_nd_with_reductions(reduction):
    rng = np.random.default_rng()
    data = rng.standard_normal((5, 4)).astype(np.float32)
    # axis 1: per row, distinct target columns (negative ones too), so reduction "none" is defined
    idx = np.stack([rng.permutation(4)[:3] for _ in range(5)]).astype(np.int64)
    idx[0, 0] -= 4
    upd = rng.standard_normal((5, 3)).astype(np.float32)
    i_init = onnx.numpy_helper.from_array(idx, "i")
    node = oh.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1, reduction=reduction)
    got, want = _run_both(node, {"x": data, "u": upd}, initializers=[i_init])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # ScatterND: whole rows of a (6, 3, 2) tensor, indices given at run time
    data = rng.standard_normal((6, 3, 2)).astype(np.float32)
    rows = rng.permutation(6)[:4].reshape(4, 1).astype(np.int64)
    if reduction != "none":
        rows[3] = rows[0]  # a repeated target combines both updates
    upd = rng.standard_normal((4, 3, 2)).astype(np.float32)
    node = oh.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction)
    got, want = _run_both(node, {"x": data, "i": rows, "u": upd})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_2d(mode, padding):
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1.7, 1.7, (2, 4, 7, 2)).astype(np.float32)  # beyond [-1, 1]: the padding matters
    for align in (0, 1):
        node = oh.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=padding, align_corners=align)
        got, want = _run_both(node, {"x": x, "g": grid}, opset=16)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"align_corners={align}")


def test_grid_sample_3d_linear():
    rng = np.random.default_rng()
    x = rng.standard_normal((1, 2, 4, 5, 3)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (1, 3, 2, 4, 3)).astype(np.float32)
    node = oh.make_node("GridSample", ["x", "g"], ["y"], mode="linear", padding_mode="border")
    got, want = _run_both(node, {"x": x, "g": grid}, opset=20)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("inverse, onesided, length", [(0, 0, None), (1, 0, None), (0, 1, None), (0, 0, 9),
                                                        (1, 0, 5), (1, 1, None), (0, 1, 6)])
def test_dft_against_numpy(inverse, onesided, length):
    rng = np.random.default_rng()
    n = 7
    real_input = bool(onesided and not inverse)
    x = rng.standard_normal((2, n, 3, 1 if real_input else 2)).astype(np.float32)
    names = ["x", "len" if length else "", "axis"]
    inits = [onnx.numpy_helper.from_array(np.array(1, np.int64), "axis")]
    if length:
        inits.append(onnx.numpy_helper.from_array(np.array(length, np.int64), "len"))
    node = oh.make_node("DFT", names, ["y"], inverse=inverse, onesided=onesided)
    vi = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)
    out = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    model = oh.make_model(oh.make_graph([node], "g", [vi], [out], initializer=inits),
                          opset_imports=[oh.make_opsetid("", 20)])
    got = np.asarray(ts.compile(model, example_inputs=(x,), target="cpu")(x))
    z = x[..., 0].astype(np.float64) + (1j * x[..., 1] if x.shape[-1] == 2 else 0)
    if inverse and onesided:
        want = np.fft.irfft(z, n=length, axis=1)[..., None]
    else:
        want = (np.fft.ifft if inverse else np.fft.fft)(z, n=length, axis=1)
        want = want[:, :(length or n) // 2 + 1] if onesided else want
        want = np.stack([want.real, want.imag], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("largest, axis", [(1, -1), (0, 1), (1, 0)])
def test_top_k_with_ties(largest, axis):
    rng = np.random.default_rng()
    x = rng.integers(-3, 4, (4, 7, 5)).astype(np.float32)  # many ties: lower indices come first
    k = onnx.numpy_helper.from_array(np.array([3], np.int64), "k")
    node = oh.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)
    vis = [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)]
    outs = [oh.make_tensor_value_info("v", onnx.TensorProto.FLOAT, None),
            oh.make_tensor_value_info("i", onnx.TensorProto.INT64, None)]
    model = oh.make_model(oh.make_graph([node], "g", vis, outs, initializer=[k]),
                          opset_imports=[oh.make_opsetid("", 17)])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ts.compile(model, example_inputs=(x,), target="cpu")(x)
    np.testing.assert_array_equal(np.asarray(got[0]), want[0])
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])


@pytest.mark.parametrize("size", [3, 5])  # onnxruntime takes odd sizes only
def test_lrn(size):
    x = np.random.default_rng().standard_normal((2, 6, 4, 3)).astype(np.float32)
    node = oh.make_node("LRN", ["x"], ["y"], size=size, alpha=0.02, beta=0.6, bias=1.5)
    got, want = _run_both(node, {"x": x}, opset=13)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_norm_training_mode_outputs_running_statistics():
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32) * 2 + 1
    stats = [rng.standard_normal(4).astype(np.float32) for _ in range(3)] + [rng.uniform(0.5, 2, 4).astype(np.float32)]
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in zip(stats, ["s", "b", "m", "v"])]
    node = oh.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1,
                        momentum=0.8)
    vis = [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)]
    outs = [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("y", "rm", "rv")]
    model = oh.make_model(oh.make_graph([node], "g", vis, outs, initializer=inits),
                          opset_imports=[oh.make_opsetid("", 15)])
    got = ts.compile(model, example_inputs=(x,), target="cpu")(x)
    axes = (0, 2, 3)  # numpy reference (onnx's definition): population variance, running = old * m + batch * (1 - m)
    mu, var = x.mean(axis=axes, dtype=np.float64), x.var(axis=axes, dtype=np.float64)
    shp = (1, 4, 1, 1)
    y = (x - mu.reshape(shp)) / np.sqrt(var.reshape(shp) + 1e-5) * stats[0].reshape(shp) + stats[1].reshape(shp)
    np.testing.assert_allclose(got[0], y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], stats[2] * 0.8 + mu * 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2], stats[3] * 0.8 + var * 0.2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2]}])
def test_col2im(attrs):
    rng = np.random.default_rng()
    image, block = (5, 6), (2, 3)
    st, pd, dl = attrs.get("strides", [1, 1]), attrs.get("pads", [0] * 4), attrs.get("dilations", [1, 1])
    counts = [(image[d] + pd[d] + pd[2 + d] - (dl[d] * (block[d] - 1) + 1)) // st[d] + 1 for d in range(2)]
    x = rng.standard_normal((2, 3 * 6, counts[0] * counts[1])).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(np.array(image, np.int64), "im"),
             onnx.numpy_helper.from_array(np.array(block, np.int64), "bl")]
    got, want = _run_both(oh.make_node("Col2Im", ["x", "im", "bl"], ["y"], **attrs), {"x": x}, initializers=inits)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_max_unpool_places_values_at_maxpool_indices():
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    pool = oh.make_node("MaxPool", ["x"], ["v", "i"], kernel_shape=[2, 2], strides=[2, 2])
    vi = [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)]
    outs = [oh.make_tensor_value_info("v", onnx.TensorProto.FLOAT, None),
            oh.make_tensor_value_info("i", onnx.TensorProto.INT64, None)]
    m = oh.make_model(oh.make_graph([pool], "p", vi, outs), opset_imports=[oh.make_opsetid("", 12)])
    v, i = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    node = oh.make_node("MaxUnpool", ["v", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    got, want = _run_both(node, {"v": v, "i": i}, opset=11)
    np.testing.assert_allclose(got, want, rtol=0, atol=0)
    # with a larger output_shape, onnx's reference (which tessel follows) keeps the inferred layout and
    # pads at the end; onnxruntime re-reads the indices in the larger shape, so the two differ there
    shape = onnx.numpy_helper.from_array(np.array([2, 3, 7, 9], np.int64), "shape")
    node = oh.make_node("MaxUnpool", ["v", "i", "shape"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    vis = [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in (("v", v), ("i", i))]
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    model = oh.make_model(oh.make_graph([node], "g", vis, [y], initializer=[shape]),
                          opset_imports=[oh.make_opsetid("", 11)])
    from onnx.reference import ReferenceEvaluator

    np.testing.assert_array_equal(ts.compile(model, example_inputs=(v, i), target="cpu")(v, i),
                                  ReferenceEvaluator(model).run(None, {"v": v, "i": i})[0])
