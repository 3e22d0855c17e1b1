"""Canonicalisation: rewrite the graph into the few forms that fusion and lowering handle best.

Decisions (and why):
- `linear(x, w, b)` becomes `matmul(x, transpose(w))` followed by `add(b)`. With a constant weight
  the transpose folds away (fold.py), so the GEMM reads a (K, N) weight along its vectorised last
  axis, which is the form the CPU contraction schedule recognises; the bias add becomes an ordinary
  elementwise epilogue, fused into the GEMM kernel together with activations and residual adds.
  Keeping `linear` as its own anchor would need a second GEMM schedule for the transposed operand.
- Identity layout ops disappear: reshape/expand to the same shape, transpose by the identity
  permutation, cast to the same dtype, slices covering everything, zero padding, one-input concat.
- Chains collapse: reshape(reshape(x)) -> reshape(x), transpose(transpose(x)) -> one transpose,
  cast(cast(x)) when the inner cast widens floats exactly (float16/bfloat16 -> float32 -> float64).
- `batch_norm(conv(x, w, b))` with constant weights and statistics folds into the conv's weights and
  bias (what onnxruntime does too): no normalisation epilogue in the kernel.
- Scalar-constant operands of elementwise ops: x+0, x-0, x*1, x/1, pow(x, 1) -> x; pow(x, 2) ->
  x*x; pow(x, 3) -> x*x*x; pow(x, 0.5) -> sqrt(x); x / c -> x * (1/c) for a float constant c (a
  multiply is cheaper; the result differs from the division by at most an ulp). The remaining
  scalar constants become immediates in the generated code when a group is lowered (see
  tessel.compiler.lowering).

Every rule keeps the value's shape and dtype (the pattern engine checks it), so broadcasting
`x + zeros(bigger shape)` is left alone.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> g = Graph()
    >>> x = g.add_input("x", (2, 3), "float32")
    >>> (y,) = g.add_node("reshape", [x], {"shape": (2, 3)})
    >>> g.mark_outputs([y])
    >>> canonicalize(g)["identity"]
    1
    >>> g.outputs
    ['x']
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.graph import Graph
from tessel.passes.graph.pattern import Const, Match, Op, Rule, Val, apply_rules


def canonicalize(graph: Graph) -> dict:
    """Apply the canonicalisation rules in place until none applies; returns {rule: count}."""
    return apply_rules(graph, RULES)


def _out(m: Match):
    return m.graph.values[m.root.outputs[0]]


def _origin(m: Match) -> str:
    return m.root.origin or m.root.name


def _same_type(graph: Graph, value: str, m: Match) -> bool:
    a, b = graph.values[value], _out(m)
    return a.shape == b.shape and a.dtype == b.dtype


# -- identities -------------------------------------------------------------------------------


def _is_identity(node, graph: Graph) -> bool:
    x = graph.values[node.inputs[0]] if node.inputs and node.inputs[0] is not None else None
    y = graph.values[node.outputs[0]]
    if x is None or len(node.outputs) != 1 or x.shape != y.shape or x.dtype != y.dtype:
        return False
    a = node.attrs
    if node.op in ("reshape", "expand", "cast"):
        return True
    if node.op == "transpose":
        return list(a.get("perm", ())) == list(range(len(x.shape)))
    if node.op == "slice":
        return all(s in (1, None) for s in (a.get("steps") or ()))
    if node.op == "pad":
        return not any(a.get("pads", ()))
    if node.op == "concat":
        return len(node.inputs) == 1
    return False


IDENTITY = Rule("identity", Op(("reshape", "expand", "cast", "transpose", "slice", "pad", "concat"),
                               where=_is_identity, inputs=None, name="n"),
                lambda g, m: m.nodes["n"].inputs[0])


# -- chains -----------------------------------------------------------------------------------


def _reshape_chain(graph: Graph, m: Match):
    return graph.add_node("reshape", [m["x"]], {"shape": tuple(_out(m).shape)}, origin=_origin(m))[0]


RESHAPE_CHAIN = Rule("reshape_chain", Op("reshape", (Op("reshape", (Val("x"),)),)), _reshape_chain)


def _transpose_chain(graph: Graph, m: Match):
    inner, outer = m.nodes["inner"].attrs["perm"], m.root.attrs["perm"]
    perm = tuple(inner[p] for p in outer)
    return graph.add_node("transpose", [m["x"]], {"perm": perm}, origin=_origin(m))[0]


TRANSPOSE_CHAIN = Rule("transpose_chain", Op("transpose", (Op("transpose", (Val("x"),), name="inner"),)),
                       _transpose_chain)

_EXACT_WIDENING = {("float16", "float32"), ("bfloat16", "float32"), ("float16", "float64"),
                   ("bfloat16", "float64"), ("float32", "float64")}


def _cast_chain(graph: Graph, m: Match):
    src, mid = graph.values[m["x"]].dtype, graph.values[m.nodes["inner"].outputs[0]].dtype
    if (src, mid) not in _EXACT_WIDENING:
        return None
    dst = _out(m).dtype
    if dst == src:
        return m["x"]
    return graph.add_node("cast", [m["x"]], {"dtype": dst}, origin=_origin(m))[0]


CAST_CHAIN = Rule("cast_chain", Op("cast", (Op("cast", (Val("x"),), name="inner"),)), _cast_chain)


# -- linear -----------------------------------------------------------------------------------


def _linear(graph: Graph, m: Match):
    x, w = m.root.inputs[0], m.root.inputs[1]
    b = m.root.inputs[2] if len(m.root.inputs) > 2 else None
    wv = graph.values[w]
    if len(wv.shape) != 2 or len(graph.values[x].shape) < 1:
        return None
    o = _origin(m)
    (wt,) = graph.add_node("transpose", [w], {"perm": (1, 0)}, origin=o)
    (y,) = graph.add_node("matmul", [x, wt], origin=o)
    if b is not None:
        (y,) = graph.add_node("add", [y, b], origin=o)
    return y if _same_type(graph, y, m) else None


LINEAR = Rule("linear_to_matmul", Op("linear"), _linear)


# -- conv weights -------------------------------------------------------------------------------


def _conv_weight(graph: Graph, m: Match):
    """A constant weight of a convolution that accumulates channels-last (see
    op_library.contraction.channels_last) is transposed to (C, *kernel, F) here, where fold.py
    folds it once, instead of in the kernel on every call (most of a 128-channel 3x3 conv at 4x4)."""
    from tessel.frontend.op_library.contraction import channels_last, conv_params

    node = m.root
    if node.attrs.get("weight_layout", "FCK") != "FCK" or len(node.inputs) < 2:
        return None
    x, w = graph.values[node.inputs[0]], graph.values[node.inputs[1]]
    if not w.is_const or len(w.shape) != len(x.shape) or len(w.shape) < 3:
        return None
    if x.dtype in ("float16", "bfloat16"):
        # 16-bit convs go to the tensor-core implicit GEMM on cuda (schedules/conv_gemm.py), which takes the
        # weights in their (F, C, *kernel) layout; the graph passes know no target, so the rule stays off here.
        return None
    out = _out(m)
    stride, _, _, groups = conv_params("conv", node.attrs, len(x.shape) - 2)
    if not channels_last(groups, w.shape[0] // groups, stride, out.shape):
        return None
    o = _origin(m)
    nd = len(w.shape)
    (wt,) = graph.add_node("transpose", [node.inputs[1]], {"perm": tuple(range(1, nd)) + (0,)}, origin=o)
    (y,) = graph.add_node("conv", [node.inputs[0], wt, *node.inputs[2:]], {**node.attrs, "weight_layout": "CKF"},
                          origin=o)
    return y if _same_type(graph, y, m) else None


CONV_WEIGHT = Rule("conv_weight_channels_last", Op("conv"), _conv_weight)


# -- batch norm after a convolution ----------------------------------------------------------------


def _conv_batch_norm(graph: Graph, m: Match):
    """batch_norm(conv(x, w[, b]), scale, bias, mean, var) with constant w, b and statistics becomes
    conv(x, w * k, (b - mean) * k + bias), k = scale / sqrt(var + eps) per output channel (computed in
    float64): the kernel loses five inputs and a per-element rsqrt-and-scale epilogue, and autotuning
    no longer feeds random (negative) variances to it."""
    conv = m.nodes["conv"]
    x, w = graph.values[conv.inputs[0]], graph.values[conv.inputs[1]]
    b = graph.values[conv.inputs[2]] if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
    if not w.is_const or (b is not None and not b.is_const) or w.dtype != "float32" or x.dtype != "float32":
        return None
    layout = conv.attrs.get("weight_layout", "FCK")
    axis = 0 if layout == "FCK" else w.data.ndim - 1
    f = w.data.shape[axis]
    stats = [np.asarray(m.const(n), np.float64).reshape(-1) for n in ("scale", "bias", "mean", "var")]
    if any(a.size != f for a in stats):
        return None
    scale, bias, mean, var = stats
    k = scale / np.sqrt(var + float(m.root.attrs.get("eps", 1e-5)))
    shape = [1] * w.data.ndim
    shape[axis] = f
    w_new = (np.asarray(w.data, np.float64) * k.reshape(shape)).astype(np.float32)
    b_old = np.asarray(b.data, np.float64).reshape(-1) if b is not None else 0.0
    b_new = ((b_old - mean) * k + bias).astype(np.float32)
    if not (np.all(np.isfinite(w_new)) and np.all(np.isfinite(b_new))):
        return None
    o = _origin(m)
    wc = graph.add_const(conv.inputs[1] + "_bn", w_new)
    bc = graph.add_const(conv.inputs[1] + "_bn_bias", b_new)
    (y,) = graph.add_node("conv", [conv.inputs[0], wc, bc], dict(conv.attrs), origin=o)
    return y if _same_type(graph, y, m) else None


CONV_BATCH_NORM = Rule("conv_batch_norm", Op("batch_norm", (Op("conv", name="conv"), Const("scale"), Const("bias"),
                                                            Const("mean"), Const("var"))), _conv_batch_norm)


# -- scalar constants ---------------------------------------------------------------------------


def _scalar(v) -> bool:
    return v.data.size == 1


def _keep_x(graph: Graph, m: Match):
    return m["x"] if _same_type(graph, m["x"], m) else None


def _scalar_const(value):
    return Const("c", value=value, where=_scalar)


SCALAR_IDENTITIES = [
    Rule("add_zero", Op("add", (Val("x"), _scalar_const(0))), _keep_x),
    Rule("sub_zero", Op("sub", (Val("x"), _scalar_const(0))), _keep_x),
    Rule("mul_one", Op("mul", (Val("x"), _scalar_const(1))), _keep_x),
    Rule("div_one", Op("div", (Val("x"), _scalar_const(1))), _keep_x),
    Rule("pow_one", Op("pow", (Val("x"), _scalar_const(1))), _keep_x),
]


def _pow_two(graph: Graph, m: Match):
    if not _same_type(graph, m["x"], m):
        return None
    return graph.add_node("mul", [m["x"], m["x"]], origin=_origin(m))[0]


def _pow_three(graph: Graph, m: Match):
    if not _same_type(graph, m["x"], m):
        return None
    (sq,) = graph.add_node("mul", [m["x"], m["x"]], origin=_origin(m))
    return graph.add_node("mul", [sq, m["x"]], origin=_origin(m))[0]


def _pow_half(graph: Graph, m: Match):
    if not _same_type(graph, m["x"], m) or not graph.values[m["x"]].dtype.startswith(("float", "bfloat")):
        return None
    return graph.add_node("sqrt", [m["x"]], origin=_origin(m))[0]


def _div_const(graph: Graph, m: Match):
    c = m.const("c")
    out = _out(m)
    if not out.dtype.startswith(("float", "bfloat")) or not np.issubdtype(c.dtype, np.floating):
        return None
    if not np.all(np.isfinite(c)) or np.any(c == 0):
        return None
    with np.errstate(all="ignore"):
        inv = (np.asarray(1.0, np.float64) / c.astype(np.float64)).astype(c.dtype)
    if not np.all(np.isfinite(inv)):
        return None
    ci = graph.add_const(m["c"] + "_inv", inv)
    return graph.add_node("mul", [m["x"], ci], origin=_origin(m))[0]


SCALAR_REWRITES = [
    Rule("pow_two", Op("pow", (Val("x"), _scalar_const(2))), _pow_two),
    Rule("pow_three", Op("pow", (Val("x"), _scalar_const(3))), _pow_three),
    Rule("pow_half", Op("pow", (Val("x"), _scalar_const(0.5))), _pow_half),
    Rule("div_const", Op("div", (Val("x"), Const("c", where=lambda v: v.data.size <= 4096))), _div_const),
]

RULES = [IDENTITY, RESHAPE_CHAIN, TRANSPOSE_CHAIN, CAST_CHAIN, LINEAR, CONV_BATCH_NORM, CONV_WEIGHT, *SCALAR_IDENTITIES,
         *SCALAR_REWRITES]
