"""Det, MaxPool's Indices output, GatherND with batch_dims, Binarizer and ArrayFeatureExtractor,
compiled for the CPU, against numpy and onnxruntime on fresh random inputs.

Properties: Det equals numpy's determinant for batches of 1x1 to 4x4 matrices; MaxPool's indices
point at the maximum of each window (first occurrence, padding never chosen) and equal onnx's,
with strides, pads, dilation and both storage orders, on inputs with many ties, equal onnxruntime's; GatherND with
batch_dims picks per batch element; Binarizer thresholds and ArrayFeatureExtractor gathers the
last axis at run-time indices.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from tessel.compiler.onnx_backend import TesselBackend

F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


def _model(node, feeds: dict, n_out=1, opsets=(("", 18),), out_types=None):
    elem = {np.dtype(np.float32): F, np.dtype(np.int64): I64}
    ins = [oh.make_tensor_value_info(k, elem[v.dtype], v.shape) for k, v in feeds.items()]
    outs = [oh.make_tensor_value_info(o, t, None) for o, t in zip(node.output[:n_out], out_types or [0] * n_out)]
    graph = oh.make_graph([node], "m", ins, outs)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid(d, v) for d, v in opsets])


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_det_matches_numpy(n):
    rng = np.random.default_rng(50 + n)
    x = rng.standard_normal((3, 2, n, n)).astype(np.float32)
    model = _model(oh.make_node("Det", ["x"], ["y"]), {"x": x})
    (got,) = TesselBackend.prepare(model, "CPU").run([x])
    np.testing.assert_allclose(got, np.linalg.det(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[2, 2], strides=[2, 2], storage_order=1),
    dict(kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 1, 0], dilations=[2, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, storage_order=1),
])
def test_max_pool_indices_match_the_reference(attrs):
    rng = np.random.default_rng(55)
    x = rng.integers(-3, 4, (2, 3, 7, 6)).astype(np.float32)  # small integers: many ties
    model = _model(oh.make_node("MaxPool", ["x"], ["y", "i"], **attrs), {"x": x}, n_out=2, out_types=[F, I64])
    got_y, got_i = TesselBackend.prepare(model, "CPU").run([x])
    ort = pytest.importorskip("onnxruntime")  # (onnx.reference counts padded cells in its indices)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want_y, want_i = sess.run(None, {"x": x})
    np.testing.assert_array_equal(got_y, want_y)
    np.testing.assert_array_equal(got_i, want_i)
    flat = x.reshape(-1) if attrs.get("storage_order", 0) == 0 else x.transpose(0, 1, 3, 2).reshape(-1)
    np.testing.assert_array_equal(flat[got_i], got_y)  # each index points at its window's maximum


def test_gather_nd_batch_dims():
    rng = np.random.default_rng(56)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    idx = np.stack([rng.integers(-3, 3, (2, 6)), rng.integers(0, 4, (2, 6))], axis=-1).astype(np.int64)
    model = _model(oh.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1), {"x": x, "i": idx})
    (got,) = TesselBackend.prepare(model, "CPU").run([x, idx])
    want = np.stack([x[b][idx[b, :, 0], idx[b, :, 1]] for b in range(2)])
    np.testing.assert_array_equal(got, want)


def test_ml_binarizer_and_array_feature_extractor():
    rng = np.random.default_rng(57)
    ml = (("", 18), ("ai.onnx.ml", 3))
    x = rng.standard_normal((3, 5)).astype(np.float32)
    model = _model(oh.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.2), {"x": x}, opsets=ml)
    (got,) = TesselBackend.prepare(model, "CPU").run([x])
    np.testing.assert_array_equal(got, (x > 0.2).astype(np.float32))
    cols = np.array([4, 0, 0, 2], np.int64)
    model = _model(oh.make_node("ArrayFeatureExtractor", ["x", "c"], ["y"], domain="ai.onnx.ml"), {"x": x, "c": cols},
                   opsets=ml)
    rep = TesselBackend.prepare(model, "CPU")
    (got,) = rep.run([x, cols])
    np.testing.assert_array_equal(got, x[:, cols])
    (got,) = rep.run([x, cols[::-1].copy()])  # the indices are a run-time input: no recompiling
    np.testing.assert_array_equal(got, x[:, cols[::-1]])
    assert sum(len(v) for v in rep._cache.values()) == 1


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_writes_each_rows_update_at_its_index(mode):
    rng = np.random.default_rng(58)
    past = rng.standard_normal((3, 2, 6, 4)).astype(np.float32)
    upd = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    wi = np.array([0, 3, 5 if mode == "circular" else 2], np.int64)
    model = _model(oh.make_node("TensorScatter", ["p", "u", "w"], ["y"], mode=mode), {"p": past, "u": upd, "w": wi},
                   opsets=(("", 24),))
    (got,) = TesselBackend.prepare(model, "CPU").run([past, upd, wi])
    want = past.copy()
    for b in range(3):
        for i in range(3):
            want[b, :, (wi[b] + i) % 6 if mode == "circular" else wi[b] + i] = upd[b, :, i]
    np.testing.assert_array_equal(got, want)


def test_stft_matches_numpy_rfft_of_windowed_frames():
    rng = np.random.default_rng(59)
    x = rng.standard_normal((2, 100, 1)).astype(np.float32)
    w = np.hanning(16).astype(np.float32)
    step = np.array(6, np.int64)
    model = _model(oh.make_node("STFT", ["x", "s", "w"], ["y"]), {"x": x, "s": step, "w": w}, opsets=(("", 17),))
    (got,) = TesselBackend.prepare(model, "CPU").run([x, step, w])
    frames = np.stack([x[:, f * 6:f * 6 + 16, 0] * w for f in range((100 - 16) // 6 + 1)], axis=1)
    want = np.fft.rfft(frames.astype(np.float64), axis=-1)
    np.testing.assert_allclose(got, np.stack([want.real, want.imag], axis=-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attrs", [
    dict(mode="avg", coordinate_transformation_mode="half_pixel", sampling_ratio=2, spatial_scale=0.5),
    dict(mode="max", coordinate_transformation_mode="output_half_pixel", sampling_ratio=3, spatial_scale=1.0),
])
def test_roi_align_matches_the_reference(attrs):
    """Random boxes, some reaching past the feature map (their samples there count as 0)."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(60)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    lo = rng.uniform(-4, 10, (5, 2))
    rois = np.concatenate([lo, lo + rng.uniform(0.5, 12, (5, 2))], axis=1).astype(np.float32)
    batch = rng.integers(0, 2, 5).astype(np.int64)
    model = _model(oh.make_node("RoiAlign", ["x", "r", "b"], ["y"], output_height=3, output_width=4, **attrs),
                   {"x": x, "r": rois, "b": batch}, opsets=(("", 16),))
    (got,) = TesselBackend.prepare(model, "CPU").run([x, rois, batch])
    (want,) = ReferenceEvaluator(model).run(None, {"x": x, "r": rois, "b": batch})
    assert got.shape == (5, 3, 3, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_flex_attention_expands_through_its_preview_domain_function():
    """ai.onnx.preview.FlexAttention has no converter: the importer expands onnx's function body (with
    GQA head sharing); checked against numpy attention."""
    rng = np.random.default_rng(61)
    q = rng.standard_normal((2, 4, 5, 8)).astype(np.float32)
    k = rng.standard_normal((2, 2, 7, 8)).astype(np.float32)
    v = rng.standard_normal((2, 2, 7, 3)).astype(np.float32)
    node = oh.make_node("FlexAttention", ["q", "k", "v"], ["y"], domain="ai.onnx.preview", scale=0.3)
    model = _model(node, {"q": q, "k": k, "v": v}, opsets=(("", 26), ("ai.onnx.preview", 1)))
    (got,) = TesselBackend.prepare(model, "CPU").run([q, k, v])
    kk, vv = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    s = q.astype(np.float64) @ kk.transpose(0, 1, 3, 2) * 0.3
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (p / p.sum(-1, keepdims=True)) @ vv, rtol=1e-4, atol=1e-5)
