"""The ONNX importer: models built with onnx.helper (and one exported from torch) must compute, when
imported and run with the op references (`run_graph`), what onnxruntime computes on fresh random
inputs; bad models must raise TesselErrors that name what is wrong.

The op cases cover the semantics the importer itself decides: attributes that became inputs across
opsets, Softmax's pre-13 coercion, auto_pad, Slice clamping with negative steps, Reshape's 0/-1,
negative indices, reductions with empty axes, select_last_index, Pad modes, folding of shape
computations, and ops defined as ONNX functions (expanded from their schema).
"""

from __future__ import annotations

import os

import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
oh = onnx.helper
TP = onnx.TensorProto

from tessel.errors import ShapeError, TesselError  # noqa: E402
from tessel.frontend.onnx import (  # noqa: E402
    NotConstantError, OnnxImportError, UnsupportedOpError, import_onnx,
)
from tessel.frontend.reference import run_graph  # noqa: E402

NP_OF = {TP.FLOAT: np.float32, TP.INT64: np.int64, TP.INT32: np.int32, TP.BOOL: np.bool_, TP.DOUBLE: np.float64}


def vi(name, shape, elem=TP.FLOAT):
    return oh.make_tensor_value_info(name, elem, shape)


def init(name, arr):
    return onnx.numpy_helper.from_array(np.asarray(arr), name)


def make_model(nodes, inputs, outputs, inits=(), opset=17, infer=True):
    graph = oh.make_graph(nodes, "test", inputs, outputs, initializer=list(inits))
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model) if infer else model  # fills in undefined output types


def random_feeds(model, rng, shapes=None):
    feeds = {}
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        shape = (shapes or {}).get(i.name) or [d.dim_value for d in tt.shape.dim]
        dt = NP_OF[tt.elem_type]
        if dt == np.bool_:
            feeds[i.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dt, np.integer):
            feeds[i.name] = rng.integers(-5, 6, size=shape).astype(dt)
        else:
            feeds[i.name] = np.asarray(rng.standard_normal(shape) + 0.1).astype(dt)  # +0.1: never exactly zero
    return feeds


def check_against_ort(model, rng, shapes=None, rtol=1e-5, atol=1e-6, feeds=None):
    """Import, run with run_graph, compare every output with onnxruntime; returns the Graph."""
    feeds = feeds or random_feeds(model, rng, shapes)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    graph = import_onnx(model, {k: v.shape for k, v in feeds.items()})
    got = run_graph(graph, [feeds[n] for n in graph.inputs])
    assert len(got) == len(want)
    for g, w, o in zip(got, want, model.graph.output):
        assert g.shape == w.shape, f"output '{o.name}': shape {g.shape}, onnxruntime {w.shape}"
        assert g.dtype == w.dtype, f"output '{o.name}': dtype {g.dtype}, onnxruntime {w.dtype}"
        # atol scales with the output: float32 sums of O(1) terms leave ~1e-6 absolute error near zero
        scale = float(np.max(np.abs(w))) if np.size(w) and np.issubdtype(np.asarray(w).dtype, np.floating) else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * max(1.0, scale) * 4, err_msg=f"output '{o.name}'")
    return graph


def one(op, in_shapes, out_shape=None, opset=17, inits=(), extra_inputs=(), n_out=1, **attrs):
    """A one-node model: inputs x0, x1 ... (float) plus `extra_inputs` names (initializers)."""
    names = [f"x{k}" for k in range(len(in_shapes))]
    outs = [f"y{k}" for k in range(n_out)]
    node = oh.make_node(op, names + list(extra_inputs), outs, name=f"the_{op.lower()}", **attrs)
    ins = [vi(n, s) for n, s in zip(names, in_shapes)]
    return make_model([node], ins, [vi(o, None, TP.UNDEFINED) for o in outs], inits, opset)


# Each case: (id, model factory). Models are small; inputs come from random_feeds.
def _cases():
    c = []
    r = np.random.default_rng(7)
    w34 = r.standard_normal((3, 4)).astype(np.float32)
    w43 = w34.T.copy()
    c.append(("gemm_transB_bias", one("Gemm", [[2, 4]], extra_inputs=["w", "b"], transB=1,
                                      inits=[init("w", w34), init("b", r.standard_normal(3).astype(np.float32))])))
    c43 = r.standard_normal((2, 3)).astype(np.float32)
    c.append(("gemm_alpha_beta_transA", one("Gemm", [[4, 2]], extra_inputs=["w", "c"], transA=1, alpha=0.5, beta=2.0,
                                            inits=[init("w", w43), init("c", c43)])))
    c.append(("matmul_batched", one("MatMul", [[2, 3, 4], [4, 5]])))
    cw = r.standard_normal((4, 2, 3, 3)).astype(np.float32)
    c.append(("conv_same_upper_stride2_groups", one("Conv", [[1, 4, 7, 6]], extra_inputs=["w"], inits=[init("w", cw)],
                                                    auto_pad="SAME_UPPER", strides=[2, 2], group=2)))
    cb = r.standard_normal(4).astype(np.float32)
    c.append(("conv_pads_dilation_bias", one("Conv", [[2, 2, 8, 8]], extra_inputs=["w", "b"], pads=[1, 0, 2, 1],
                                             dilations=[2, 1], inits=[init("w", cw[:, :2].copy()), init("b", cb)])))
    c.append(("conv1d_same_lower", one("Conv", [[1, 2, 9]], extra_inputs=["w"], auto_pad="SAME_LOWER", strides=[2],
                                       inits=[init("w", r.standard_normal((3, 2, 4)).astype(np.float32))])))
    c.append(("maxpool_ceil_pads", one("MaxPool", [[1, 2, 7, 7]], kernel_shape=[3, 3], strides=[2, 2],
                                       pads=[1, 1, 0, 0], ceil_mode=1)))
    c.append(("avgpool_same_upper", one("AveragePool", [[1, 2, 5, 6]], kernel_shape=[2, 3], strides=[2, 2],
                                        auto_pad="SAME_UPPER")))
    c.append(("avgpool_count_include_pad", one("AveragePool", [[1, 1, 5, 5]], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                               count_include_pad=1)))
    c.append(("global_avg_pool", one("GlobalAveragePool", [[2, 3, 4, 5]])))
    c.append(("global_max_pool", one("GlobalMaxPool", [[2, 3, 4, 5]])))
    bn = [init(n, (r.random(3) + 0.5).astype(np.float32)) for n in ("s", "b", "m", "v")]
    c.append(("batchnorm", one("BatchNormalization", [[2, 3, 4, 4]], extra_inputs=["s", "b", "m", "v"], inits=bn,
                               epsilon=1e-3)))
    c.append(("layernorm_axis1", one("LayerNormalization", [[2, 3, 4]], extra_inputs=["s", "b"], axis=1,
                                     inits=[init("s", r.standard_normal((3, 4)).astype(np.float32)),
                                            init("b", r.standard_normal((3, 4)).astype(np.float32))])))
    c.append(("instancenorm", one("InstanceNormalization", [[2, 3, 5]], extra_inputs=["s", "b"],
                                  inits=[init("s", r.standard_normal(3).astype(np.float32)),
                                         init("b", r.standard_normal(3).astype(np.float32))])))
    c.append(("softmax_opset11_coerces_2d", one("Softmax", [[2, 3, 4]], opset=11, axis=1)))
    c.append(("logsoftmax_opset13_axis", one("LogSoftmax", [[2, 3, 4]], opset=13, axis=1)))
    c.append(("hardmax", one("Hardmax", [[3, 5]], opset=13)))
    c.append(("reducemean_axes_attr_opset13", one("ReduceMean", [[2, 3, 4]], opset=13, axes=[-1, 0], keepdims=0)))
    c.append(("reducesum_axes_input_opset13", one("ReduceSum", [[2, 3, 4]], opset=13, extra_inputs=["ax"],
                                                  inits=[init("ax", np.array([1], np.int64))])))
    c.append(("reducemax_axes_input_opset18", one("ReduceMax", [[2, 3, 4]], opset=18, extra_inputs=["ax"],
                                                  inits=[init("ax", np.array([-1], np.int64))], keepdims=0)))
    c.append(("reducel2_all", one("ReduceL2", [[2, 3]], opset=18)))
    c.append(("reducelogsumexp", one("ReduceLogSumExp", [[2, 3, 4]], opset=18, extra_inputs=["ax"],
                                     inits=[init("ax", np.array([1], np.int64))])))
    c.append(("reduce_noop_empty_axes", one("ReduceSum", [[2, 3]], opset=13, noop_with_empty_axes=1)))
    c.append(("argmax_last_index", make_model(
        [oh.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0, select_last_index=1)],
        [vi("x", [3, 6], TP.INT64)], [vi("y", None, TP.INT64)])))
    c.append(("argmin_keepdims", one("ArgMin", [[3, 4, 2]], axis=-2)))
    c.append(("reshape_zero_minus_one", one("Reshape", [[2, 3, 4]], extra_inputs=["s"],
                                            inits=[init("s", np.array([0, -1, 2], np.int64))])))
    c.append(("flatten_axis_neg", one("Flatten", [[2, 3, 4, 5]], axis=-2)))
    c.append(("squeeze_opset11_attr", one("Squeeze", [[1, 3, 1, 2]], opset=11, axes=[0, -2])))
    c.append(("unsqueeze_opset13_input", one("Unsqueeze", [[3, 2]], opset=13, extra_inputs=["ax"],
                                             inits=[init("ax", np.array([0, -1], np.int64))])))
    c.append(("transpose_default_perm", one("Transpose", [[2, 3, 4]])))
    c.append(("expand_both_ways", one("Expand", [[3, 1]], extra_inputs=["s"],
                                      inits=[init("s", np.array([2, 1, 4], np.int64))])))
    c.append(("concat_neg_axis", one("Concat", [[2, 3], [2, 1], [2, 2]], axis=-1)))
    c.append(("slice_negative_steps_clamped", one(
        "Slice", [[5, 6, 4]], extra_inputs=["st", "en", "ax", "sp"],
        inits=[init("st", np.array([-1, 100, 1], np.int64)), init("en", np.array([-100, 0, 3], np.int64)),
               init("ax", np.array([0, 1, 2], np.int64)), init("sp", np.array([-2, -1, 1], np.int64))])))
    c.append(("gather_negative_indices", one("Gather", [[4, 3]], extra_inputs=["i"], axis=0,
                                             inits=[init("i", np.array([[-1, 0], [2, -4]], np.int64))])))
    c.append(("gather_elements_axis1", one("GatherElements", [[3, 4]], extra_inputs=["i"], axis=1,
                                           inits=[init("i", np.array([[0, -1], [2, 1], [3, 3]], np.int64))])))
    c.append(("pad_constant_opset18_axes", one("Pad", [[2, 3, 4]], opset=18, extra_inputs=["p", "v", "ax"],
                                               inits=[init("p", np.array([1, 0, 2, 1], np.int64)),
                                                      init("v", np.array(1.5, np.float32)),
                                                      init("ax", np.array([0, 2], np.int64))])))
    c.append(("pad_reflect_and_crop", one("Pad", [[3, 5]], extra_inputs=["p"], mode="reflect",
                                          inits=[init("p", np.array([2, -1, 1, 3], np.int64))])))
    c.append(("pad_edge", one("Pad", [[3, 4]], extra_inputs=["p"], mode="edge",
                              inits=[init("p", np.array([1, 2, 0, 1], np.int64))])))
    c.append(("split_uneven_input", one("Split", [[7, 2]], extra_inputs=["s"], n_out=3, axis=0,
                                        inits=[init("s", np.array([2, 4, 1], np.int64))])))
    c.append(("split_num_outputs_opset18", one("Split", [[7, 2]], opset=18, n_out=3, axis=0, num_outputs=3)))
    c.append(("tile", one("Tile", [[2, 3]], extra_inputs=["r"], inits=[init("r", np.array([2, 3], np.int64))])))
    c.append(("clip_inputs", one("Clip", [[3, 4]], extra_inputs=["lo", "hi"],
                                 inits=[init("lo", np.array(-0.5, np.float32)),
                                        init("hi", np.array(0.7, np.float32))])))
    c.append(("clip_runtime_bounds", make_model(
        [oh.make_node("Abs", ["a"], ["hi"]), oh.make_node("Neg", ["hi"], ["lo"]),
         oh.make_node("Clip", ["x", "lo", "hi"], ["y"])], [vi("x", [3, 4]), vi("a", [])],
        [vi("y", None, TP.UNDEFINED)])))
    c.append(("max_variadic_broadcast", one("Max", [[2, 3], [3], [1, 1]])))
    c.append(("mean_variadic", one("Mean", [[2, 3], [2, 3], [3]])))
    exponents = init("e", np.array([1.0, 2.0, 3.0], np.float32))
    c.append(("pow_float", make_model([oh.make_node("Pow", ["x", "e"], ["y"])], [vi("x", [2, 3])],
                                      [vi("y", None, TP.UNDEFINED)], [exponents])))
    for op, attrs in [("HardSigmoid", dict(alpha=0.3, beta=0.4)), ("Elu", dict(alpha=0.7)), ("Selu", {}),
                      ("Softplus", {}), ("Softsign", {}), ("LeakyRelu", dict(alpha=0.2)), ("Celu", dict(alpha=1.5)),
                      ("HardSwish", {}), ("Mish", {}), ("ThresholdedRelu", dict(alpha=0.3)), ("Sign", {}),
                      ("Erf", {}), ("Tanh", {}), ("Sigmoid", {}), ("Reciprocal", {}), ("Floor", {}), ("Ceil", {})]:
        c.append((f"unary_{op}", one(op, [[3, 4]], opset=18, **attrs)))
    c.append(("gelu_tanh_opset20", one("Gelu", [[3, 4]], opset=20, approximate="tanh")))
    c.append(("where_compare", make_model(
        [oh.make_node("Greater", ["a", "b"], ["c"]), oh.make_node("Where", ["c", "a", "b"], ["y"])],
        [vi("a", [2, 3]), vi("b", [3])], [vi("y", None, TP.UNDEFINED)])))
    c.append(("cast_and_int_div", make_model(
        [oh.make_node("Cast", ["a"], ["ai"], to=TP.INT32), oh.make_node("Cast", ["b"], ["bi"], to=TP.INT32),
         oh.make_node("Abs", ["bi"], ["ba"]), oh.make_node("Add", ["ba", "one"], ["bp"]),
         oh.make_node("Div", ["ai", "bp"], ["y"])],
        [vi("a", [4, 5]), vi("b", [4, 5])], [vi("y", None, TP.INT32)], [init("one", np.array(1, np.int32))])))
    c.append(("cumsum_reverse_exclusive", one("CumSum", [[3, 4]], extra_inputs=["ax"], exclusive=1, reverse=1,
                                              inits=[init("ax", np.array(1, np.int64))])))
    c.append(("trilu_lower_k", one("Trilu", [[4, 5]], extra_inputs=["k"], upper=0,
                                   inits=[init("k", np.array(-1, np.int64))])))
    c.append(("depth_to_space_crd", one("DepthToSpace", [[1, 8, 2, 3]], blocksize=2, mode="CRD")))
    c.append(("space_to_depth", one("SpaceToDepth", [[1, 2, 4, 6]], blocksize=2)))
    c.append(("mvn_function_expanded", one("MeanVarianceNormalization", [[2, 3, 4, 5]], opset=13)))
    c.append(("group_norm_opset21", make_model(
        [oh.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)], [vi("x", [2, 4, 3])],
        [vi("y", [2, 4, 3])], [init("s", r.standard_normal(4).astype(np.float32)),
                               init("b", r.standard_normal(4).astype(np.float32))], opset=21)))
    # shape arithmetic that folds away: y = reshape(x, concat(shape(x)[:1], [-1]))
    c.append(("shape_chain_folds", make_model(
        [oh.make_node("Shape", ["x"], ["s"]), oh.make_node("Gather", ["s", "zero"], ["n"], axis=0),
         oh.make_node("Unsqueeze", ["n", "zero1"], ["n1"]), oh.make_node("Concat", ["n1", "minus1"], ["t"], axis=0),
         oh.make_node("Reshape", ["x", "t"], ["y"])],
        [vi("x", [2, 3, 4])], [vi("y", None, TP.UNDEFINED)],
        [init("zero", np.array(0, np.int64)), init("zero1", np.array([0], np.int64)),
         init("minus1", np.array([-1], np.int64))])))
    c.append(("constant_of_shape_range", make_model(
        [oh.make_node("Shape", ["x"], ["s"]), oh.make_node("ConstantOfShape", ["s"], ["f"],
                                                           value=oh.make_tensor("v", TP.FLOAT, [1], [2.0])),
         oh.make_node("Range", ["a", "b", "d"], ["r"]), oh.make_node("Cast", ["r"], ["rf"], to=TP.FLOAT),
         oh.make_node("Mul", ["x", "f"], ["xf"]), oh.make_node("Add", ["xf", "rf"], ["y"])],
        [vi("x", [2, 4])], [vi("y", None, TP.UNDEFINED)],
        [init("a", np.array(1, np.int64)), init("b", np.array(9, np.int64)), init("d", np.array(2, np.int64))])))
    c.append(("dropout_identity_mask", one("Dropout", [[3, 4]], n_out=2)))
    ct_w = r.standard_normal((4, 3, 3, 2)).astype(np.float32)
    c.append(("conv_transpose_stride_pads_groups", one(
        "ConvTranspose", [[1, 4, 3, 4]], extra_inputs=["w", "b"], strides=[2, 3], pads=[1, 0, 0, 1],
        output_padding=[1, 0], group=2, inits=[init("w", ct_w), init("b", r.standard_normal(6).astype(np.float32))])))
    c.append(("conv_transpose_output_shape", one("ConvTranspose", [[1, 2, 5]], extra_inputs=["w"], strides=[2],
                                                 output_shape=[10], inits=[init("w", ct_w[:2, :, :, 0].copy())])))
    for mode, coord, extra in [("nearest", "asymmetric", dict(nearest_mode="floor")),
                               ("nearest", "half_pixel", {}),
                               ("linear", "half_pixel", {}), ("linear", "align_corners", {}),
                               ("cubic", "pytorch_half_pixel", dict(cubic_coeff_a=-0.5)),
                               ("linear", "half_pixel", dict(antialias=1))]:
        # scale * size is an integer on every axis: onnxruntime and onnx's specification then agree
        scales = init("sc", np.array([1, 1, 0.6 if "antialias" in extra else 1.6, 2.5], np.float32))
        c.append((f"resize_{mode}_{coord}{'_aa' if extra.get('antialias') else ''}", one(
            "Resize", [[1, 2, 5, 4]], opset=18, extra_inputs=["", "sc"], inits=[scales], mode=mode,
            coordinate_transformation_mode=coord, **extra)))
    sizes = init("sz", np.array([7, 3], np.int64))
    c.append(("resize_sizes_axes_cubic_exclude", one("Resize", [[1, 2, 5, 6]], opset=18, extra_inputs=["", "", "sz"],
                                                     inits=[sizes], axes=[2, 3], mode="cubic", exclude_outside=1)))
    c.append(("mod_fmod_float", make_model([oh.make_node("Mod", ["a", "b"], ["y"], fmod=1)],
                                           [vi("a", [3, 4]), vi("b", [4])], [vi("y", None, TP.UNDEFINED)])))
    c.append(("mod_int_python_sign", make_model([oh.make_node("Mod", ["a", "b"], ["y"])],
                                                [vi("a", [3, 4], TP.INT64)], [vi("y", None, TP.UNDEFINED)],
                                                [init("b", np.array([3, -3, 5, -2], np.int64))])))
    c.append(("round_half_even", one("Round", [[2, 6]])))
    c.append(("lp_pool_p3", one("LpPool", [[1, 2, 5, 5]], opset=18, kernel_shape=[2, 3], p=3, strides=[1, 2],
                                pads=[1, 0, 0, 1])))
    c.append(("attention_gqa_float_mask_as_sdpa", make_model(
        [oh.make_node("Attention", ["q", "k", "v", "m"], ["y"], scale=0.3)],
        [vi("q", [2, 4, 3, 8]), vi("k", [2, 2, 5, 8]), vi("v", [2, 2, 5, 6]), vi("m", [3, 5])],
        [vi("y", None, TP.UNDEFINED)], opset=23)))
    c.append(("attention_3d_causal_as_sdpa", make_model(
        [oh.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1, q_num_heads=2, kv_num_heads=2)],
        [vi("q", [2, 4, 16]), vi("k", [2, 4, 16]), vi("v", [2, 4, 16])], [vi("y", None, TP.UNDEFINED)], opset=23)))
    for k, (eq, shapes) in enumerate([("...ij,...jk->...ik", [[2, 1, 3, 4], [1, 5, 4, 2]]), ("bii->bi", [[2, 3, 3]]),
                                      ("ij,jk", [[3, 4], [4, 2]]), ("ab,bc,cd->ad", [[2, 3], [3, 4], [4, 5]]),
                                      ("bhqd,bhkd->bhqk", [[2, 3, 4, 5], [2, 3, 6, 5]]), ("ijk->kj", [[2, 3, 4]])]):
        c.append((f"einsum_{k}_{eq.replace('...', 'E').replace(',', '_').replace('->', '_to_')}",
                  one("Einsum", shapes, opset=12, equation=eq)))
    c.append(("softmax_cross_entropy_context_function", make_model(
        [oh.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["y"], reduction="mean")],
        [vi("x", [3, 5])], [vi("y", None, TP.UNDEFINED)], [init("t", np.array([0, 4, 2], np.int64))], opset=13)))
    return c


CASES = _cases()


@pytest.mark.parametrize("name,model", CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(name, model):
    check_against_ort(model, np.random.default_rng(zlib.crc32(name.encode())))  # stable across runs


def test_attention_maps_to_one_sdpa_op():
    graph = import_onnx(dict(CASES)["attention_gqa_float_mask_as_sdpa"])
    assert [n.op for n in graph.nodes.values() if n.op not in ("reshape", "expand")] == ["sdpa"]


def test_shape_arithmetic_folds_to_one_reshape():
    model = dict(CASES)["shape_chain_folds"]
    graph = check_against_ort(model, np.random.default_rng(1))
    assert [n.op for n in graph.nodes.values()] == ["reshape"]
    assert graph.nodes[next(iter(graph.nodes))].attrs["shape"] == (2, 12)


def test_origin_names_onnx_node_and_op_type():
    graph = import_onnx(dict(CASES)["gemm_alpha_beta_transA"])
    assert graph.nodes and all(n.origin == "the_gemm/Gemm" for n in graph.nodes.values())


def test_outputs_keep_onnx_names_even_when_repeated():
    nodes = [oh.make_node("Relu", ["x"], ["r"]), oh.make_node("Identity", ["r"], ["y"])]
    model = make_model(nodes, [vi("x", [3])], [vi("y", [3]), vi("r", [3]), vi("x", [3])])
    graph = import_onnx(model)
    assert graph.outputs == ["y", "y", "x"]
    x = np.array([-1.5, 2.0, 0.5], np.float32)
    got = run_graph(graph, [x])
    np.testing.assert_array_equal(got[0], np.maximum(x, 0))
    np.testing.assert_array_equal(got[2], x)


def test_dynamic_dims_from_input_shapes():
    node = oh.make_node("MatMul", ["x", "w"], ["y"])
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    model = make_model([node], [vi("x", ["batch", "seq", 4])], [vi("y", ["batch", "seq", 3])], [init("w", w)])
    check_against_ort(model, np.random.default_rng(2), shapes={"x": (2, 5, 4)})
    with pytest.raises(ShapeError, match=r"model input 'x' has dynamic shape \(batch, seq, 4\)"):
        import_onnx(model)
    with pytest.raises(ShapeError, match=r"model input 'x': declared shape \(batch, seq, 4\) contradicts the given "
                                         r"shape \(2, 5, 3\)"):
        import_onnx(model, {"x": (2, 5, 3)})
    with pytest.raises(ShapeError, match=r"contradicts the given shape \(2, 4\)"):
        import_onnx(model, {"x": (2, 4)})
    with pytest.raises(OnnxImportError, match="'nope'"):
        import_onnx(model, {"x": (2, 5, 4), "nope": (1,)})
    assert import_onnx(model, [(3, 2, 4)]).values["x"].shape == (3, 2, 4)  # shapes in input order
    with pytest.raises(ShapeError, match=r"takes 1 input\(s\) \(x\), got 2 shape\(s\)"):
        import_onnx(model, [(3, 2, 4), (1,)])


def test_declared_static_shape_contradicting_example_names_both():
    model = one("Relu", [[2, 3]])
    with pytest.raises(ShapeError, match=r"model input 'x0': declared shape \(2, 3\) contradicts the given shape "
                                         r"\(3, 3\)"):
        import_onnx(model, {"x0": (3, 3)})


def test_shape_operand_fed_as_input_needs_its_value():
    node = oh.make_node("Reshape", ["x", "s"], ["y"], name="r")
    model = make_model([node], [vi("x", [2, 6]), vi("s", [2], TP.INT64)], [vi("y", None, TP.UNDEFINED)])
    with pytest.raises(NotConstantError, match=r"ONNX node 'r' \(Reshape\): the target shape .* model input\(s\) 's'"):
        import_onnx(model)
    s = np.array([3, -1], np.int64)
    graph = import_onnx(model, input_values={"s": s})
    assert graph.inputs == ["x"]
    x = np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(graph, [x])[0], x.reshape(3, 4))


def test_unsupported_op_names_type_node_and_model_input():
    nodes = [oh.make_node("Relu", ["x"], ["r"], name="first"),
             oh.make_node("NonMaxSuppression", ["r", "scores"], ["y"], name="nms_node")]
    model = make_model(nodes, [vi("x", [1, 4, 4]), vi("scores", [1, 1, 4])], [vi("y", None, TP.INT64)], opset=17)
    with pytest.raises(UnsupportedOpError, match=r"'NonMaxSuppression' at node 'nms_node'.*model input\(s\) "
                                                 r"'scores', 'x'"):
        import_onnx(model)
    custom = make_model([oh.make_node("FusedThing", ["x"], ["y"], name="n1", domain="com.example")],
                        [vi("x", [2])], [vi("y", None)], infer=False)
    custom.opset_import.append(oh.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpError, match=r"'com.example.FusedThing' at node 'n1'.*'x'"):
        import_onnx(custom)


def test_unsupported_dtype_is_named():
    f8 = TP.FLOAT8E4M3FN
    model = make_model([oh.make_node("Relu", ["x"], ["y"])], [vi("x", [2], f8)], [vi("y", None, f8)])
    with pytest.raises(TesselError, match=r"model input 'x': ONNX element type FLOAT8E4M3FN"):
        import_onnx(model)


def _saved(tmp_path, model, name="m.onnx"):
    path = os.fspath(tmp_path / name)
    onnx.save(model, path)
    return path


def test_truncated_and_garbage_files(tmp_path):
    model = dict(CASES)["conv_pads_dilation_bias"]
    data = model.SerializeToString()
    for k, cut in enumerate([len(data) // 2, len(data) - 7, 5, 0]):
        path = tmp_path / f"cut{k}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(OnnxImportError, match=f"cut{k}.onnx"):
            import_onnx(os.fspath(path))
    (tmp_path / "junk.onnx").write_bytes(os.urandom(300))
    with pytest.raises(OnnxImportError, match="junk.onnx"):
        import_onnx(os.fspath(tmp_path / "junk.onnx"))
    with pytest.raises(OnnxImportError, match="cannot read it"):
        import_onnx(os.fspath(tmp_path / "absent.onnx"))


def test_missing_initializer_is_named():
    model = make_model([oh.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x", [2, 3])],
                       [vi("y", None, TP.UNDEFINED)], infer=False)
    with pytest.raises(OnnxImportError, match=r"node 'mm' \(MatMul\) reads 'W'"):
        import_onnx(model)


def _external_model(tmp_path):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    model = make_model([oh.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [3, 64])], [vi("y", None, TP.UNDEFINED)],
                       [init("w", w)])
    path = os.fspath(tmp_path / "ext.onnx")
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.weights",
              size_threshold=0)
    return path, w


def test_external_data_loads_next_to_the_model(tmp_path):
    path, w = _external_model(tmp_path)
    graph = import_onnx(path)
    x = np.random.default_rng(6).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(run_graph(graph, [x])[0], x @ w, rtol=1e-5, atol=1e-5)


def test_missing_external_data_file_names_tensor_and_file(tmp_path):
    path, _ = _external_model(tmp_path)
    os.remove(tmp_path / "ext.weights")
    with pytest.raises(OnnxImportError, match=r"tensor 'w' .* external file 'ext.weights', which does not exist"):
        import_onnx(path)


def test_torch_exported_mlp_and_cnn(tmp_path):
    torch = pytest.importorskip("torch")
    import warnings

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.LayerNorm(16),
                              torch.nn.Linear(16, 4), torch.nn.Softmax(-1))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 4, 3, stride=2, groups=2),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    for name, module, shape in [("mlp", mlp, (5, 6)), ("cnn", cnn.eval(), (2, 3, 12, 12))]:
        x = torch.randn(*shape)
        path = os.fspath(tmp_path / f"{name}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}})
        with pytest.raises(ShapeError, match="dynamic shape"):
            import_onnx(path)
        graph = import_onnx(path, {"x": shape})
        with torch.no_grad():
            want = module(x).numpy()
        got = run_graph(graph, [x.numpy()])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
