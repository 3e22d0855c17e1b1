"""The mapping of aten ops onto tessel's op set (see tessel/frontend/ops.py), used by torch.py.

Each converter takes the importer (`cx`, see `_Importer` in torch.py: `cx.v(node)` is the graph value
of an fx node, `cx.emit(op, inputs, **attrs)` adds an op for the current fx node, `cx.out_shape` /
`cx.out_dtype` are what torch says the node produces) and the node's arguments bound by schema name,
and returns the graph value of the result (a list for ops with several outputs; None marks an output
the op set does not compute, such as max-pool indices or batch-norm statistics).

Dtypes follow torch: operands are cast to the dtype torch computes in before an op, so the op set
never sees mixed operands. Ops that only read shapes (`zeros_like`, `new_ones` ...) are in
FOLD_SHAPE_ONLY: the importer folds them to constants. This module holds the registry and the
elementwise, normalisation, reduction, contraction and pooling families; torch_aten_layout.py holds
layout ops, gathers and scatters (`converters()` loads both).

Example:
    >>> "aten.linear.default" in converters() and "aten.view.default" in converters()
    True
"""

from __future__ import annotations

import math

CONVERTERS: dict = {}

FOLD_SHAPE_ONLY = frozenset(f"aten.{n}" for n in (
    "zeros_like.default", "ones_like.default", "full_like.default", "empty_like.default", "new_zeros.default",
    "new_ones.default", "new_full.default", "new_empty.default", "scalar_tensor.default", "arange.default",
    "arange.start", "arange.start_step", "full.default", "zeros.default", "ones.default", "empty.memory_format",
    "fill.Scalar"))


def aten(*names):
    """Register a converter for aten overloads, e.g. @aten("add.Tensor", "add.Scalar")."""
    def deco(fn):
        for n in names:
            CONVERTERS[f"aten.{n}"] = fn
        return fn
    return deco


def converters() -> dict:
    """Every converter, keyed by aten overload name (importing the modules that register them)."""
    from tessel.frontend import (  # noqa: F401 - they register on import
        torch_aten_bessel, torch_aten_index, torch_aten_layout, torch_aten_linalg, torch_aten_math, torch_aten_misc,
        torch_aten_movement, torch_aten_pool, torch_aten_resize, torch_aten_scan, torch_aten_sort, torch_aten_special,
    )

    return CONVERTERS


def _is_node(x) -> bool:
    return hasattr(x, "op") and hasattr(x, "meta")


def _result_dtype(a, b) -> str:
    """torch's type promotion of two operands (fx nodes or Python scalars)."""
    import torch

    from tessel.frontend.torch import tessel_dtype

    ta = a.meta["val"] if _is_node(a) else a
    tb = b.meta["val"] if _is_node(b) else b
    return tessel_dtype(torch.result_type(ta, tb))


def _dim(d: int, rank: int) -> int:
    return d % rank if rank else 0


def _dims(ds, rank: int) -> tuple:
    if rank == 0:  # torch accepts dim 0 or -1 of a 0-d tensor: nothing to reduce
        return ()
    if ds is None or (isinstance(ds, (list, tuple)) and len(ds) == 0):
        return tuple(range(rank))
    if isinstance(ds, int):
        ds = [ds]
    return tuple(sorted({_dim(d, rank) for d in ds}))


def _pair(v, n: int) -> tuple:
    v = [v] if isinstance(v, int) else list(v)
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


# -- identities and casts --------------------------------------------------------------------------

@aten("clone.default", "alias.default", "contiguous.default", "detach.default", "lift_fresh_copy.default",
      "dropout.default", "feature_dropout.default", "alpha_dropout.default", "_to_copy.default", "to.dtype",
      "to.dtype_layout", "to.device", "to.other", "type_as.default")
def _copy(cx, a):
    if a.get("train"):
        cx.unsupported("dropout in training mode (call module.eval() first)")
    return cx.cast(cx.v(a["self"] if "self" in a else a["input"]), cx.out_dtype)


# -- elementwise -----------------------------------------------------------------------------------

_UNARY = {n: n for n in ("relu", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "sin",
                         "cos", "floor", "ceil", "reciprocal", "silu", "logical_not")}
_UNARY["bitwise_not"] = "logical_not"  # bool only, checked below


def _unary(cx, a):
    op = _UNARY[cx.node.target._schema.name.split("::")[1]]
    x = cx.v(a["self"])
    if op == "logical_not":
        if cx.node.target._schema.name.endswith("bitwise_not") and cx.val(a["self"]).dtype != "bool":
            cx.unsupported("bitwise_not on integers")
        return cx.emit(op, [cx.cast(x, "bool")])
    return cx.emit(op, [cx.cast(x, cx.out_dtype)])


for _n in _UNARY:
    CONVERTERS[f"aten.{_n}.default"] = _unary


@aten("exp2.default", "log2.default", "log10.default")
def _composed_unary(cx, a):
    """Unary ops the op set spells with two ops (log1p and expm1: torch_aten_math.py)."""
    dt = cx.out_dtype
    x = cx.cast(cx.v(a["self"]), dt)
    name = cx.node.target._schema.name.split("::")[1]
    if name == "exp2":
        return cx.emit("pow", [cx.scalar(2, dt), x])
    return cx.emit("mul", [cx.emit("log", [x]), cx.scalar(1 / math.log(2 if name == "log2" else 10), dt)])


@aten("sign.default")
def _sign(cx, a):
    dt = cx.out_dtype
    x = cx.v(a["self"])
    pos = cx.emit("cast", [cx.emit("gt", [x, cx.scalar(0, dt)])], dtype=dt)
    neg = cx.emit("cast", [cx.emit("lt", [x, cx.scalar(0, dt)])], dtype=dt)
    return cx.emit("sub", [pos, neg])


@aten("elu.default")
def _elu(cx, a):
    """scale * (x if x > 0 else alpha * (exp(input_scale * x) - 1)); selu and celu decompose to it."""
    dt = cx.out_dtype
    x = cx.v(a["self"])
    e = cx.emit("exp", [cx.emit("mul", [x, cx.scalar(a["input_scale"], dt)])])
    e = cx.emit("mul", [cx.emit("sub", [e, cx.scalar(1, dt)]), cx.scalar(a["alpha"], dt)])
    y = cx.emit("where", [cx.emit("gt", [x, cx.scalar(0, dt)]), x, e])
    return y if a["scale"] == 1 else cx.emit("mul", [y, cx.scalar(a["scale"], dt)])


@aten("gelu.default")
def _gelu(cx, a):
    return cx.emit("gelu", [cx.v(a["self"])], approximate=a["approximate"])


@aten("leaky_relu.default")
def _leaky_relu(cx, a):
    return cx.emit("leaky_relu", [cx.v(a["self"])], alpha=float(a["negative_slope"]))


@aten("hardtanh.default", "clamp.default", "clamp_min.default", "clamp_max.default", "relu6.default")
def _clip(cx, a):
    if cx.node.target._schema.name.endswith("relu6"):
        lo, hi = 0, 6
    else:
        lo, hi = a.get("min", a.get("min_val")), a.get("max", a.get("max_val"))
    x = cx.cast(cx.v(a["self"]), cx.out_dtype)
    return cx.emit("clip", [x], min=None if lo is None else lo, max=None if hi is None else hi)


@aten("clamp.Tensor", "clamp_min.Tensor", "clamp_max.Tensor")
def _clamp_tensor(cx, a):
    dt = cx.out_dtype
    x = cx.cast(cx.v(a["self"]), dt)
    if a.get("min") is not None:
        x = cx.emit("maximum", [x, cx.operand(a["min"], dt)])
    if a.get("max") is not None:
        x = cx.emit("minimum", [x, cx.operand(a["max"], dt)])
    return x


_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "maximum": "maximum",
           "minimum": "minimum", "max": "maximum", "min": "minimum", "logical_and": "logical_and",
           "logical_or": "logical_or", "bitwise_and": "logical_and", "bitwise_or": "logical_or",
           "__and__": "logical_and", "__or__": "logical_or"}
_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")


def _binary(cx, a):
    name = cx.node.target._schema.name.split("::")[1]
    x, y = (a["self"], a["other"]) if "other" in a else (a["self"], a["exponent"])
    if name in _COMPARE:
        dt = _result_dtype(x, y)
        return cx.emit(name, [cx.operand(x, dt), cx.operand(y, dt)])
    op = _BINARY[name]
    if op.startswith("logical_"):  # logical_and/or read any nonzero as true; bitwise ones need bools
        if not name.startswith("logical_") and _result_dtype(x, y) != "bool":
            cx.unsupported(f"{name} on integers (only bool operands map to {op})")
        return cx.emit(op, [cx.operand(x, "bool"), cx.operand(y, "bool")])
    dt = cx.out_dtype
    if dt == "bool" and op in ("mul", "add", "maximum", "minimum"):  # bool arithmetic is logic
        op = "logical_and" if op in ("mul", "minimum") else "logical_or"
        return cx.emit(op, [cx.operand(x, "bool"), cx.operand(y, "bool")])
    xv, yv = cx.operand(x, dt), cx.operand(y, dt)
    if a.get("alpha", 1) != 1:  # add/sub: x + alpha * y
        yv = cx.emit("mul", [yv, cx.scalar(a["alpha"], dt)])
    if op == "div" and a.get("rounding_mode") is None and not dt.startswith("float") and dt != "bfloat16":
        cx.unsupported(f"true division giving {dt}")
    out = cx.emit(op, [xv, yv])
    mode = a.get("rounding_mode")
    if mode is not None and dt.startswith("int"):  # the op set's div truncates integers
        if mode == "floor":  # one less where the division is inexact and the signs differ
            rem = cx.emit("sub", [xv, cx.emit("mul", [out, yv])])
            zero = cx.scalar(0, dt)
            differ = cx.emit("ne", [cx.emit("lt", [xv, zero]), cx.emit("lt", [yv, zero])])
            fix = cx.emit("logical_and", [cx.emit("ne", [rem, zero]), differ])
            out = cx.emit("sub", [out, cx.emit("cast", [fix], dtype=dt)])
    elif mode is not None:
        if mode == "floor":
            out = cx.emit("floor", [out])
        else:  # trunc: round toward zero
            neg = cx.emit("lt", [out, cx.scalar(0, dt)])
            out = cx.emit("where", [neg, cx.emit("ceil", [out]), cx.emit("floor", [out])])
    return out


for _n in ("add", "sub", "mul", "div"):
    CONVERTERS[f"aten.{_n}.Tensor"] = CONVERTERS[f"aten.{_n}.Scalar"] = _binary
for _n in _COMPARE:
    CONVERTERS[f"aten.{_n}.Tensor"] = CONVERTERS[f"aten.{_n}.Scalar"] = _binary
for _k in ("aten.div.Tensor_mode", "aten.div.Scalar_mode", "aten.pow.Tensor_Tensor", "aten.pow.Tensor_Scalar",
           "aten.maximum.default", "aten.minimum.default", "aten.max.other", "aten.min.other",
           "aten.logical_and.default", "aten.logical_or.default", "aten.bitwise_and.Tensor",
           "aten.bitwise_or.Tensor", "aten.__and__.Tensor", "aten.__or__.Tensor"):
    CONVERTERS[_k] = _binary


@aten("pow.Scalar")
def _pow_scalar(cx, a):
    dt = cx.out_dtype
    return cx.emit("pow", [cx.scalar(a["self"], dt), cx.operand(a["exponent"], dt)])


@aten("rsub.Tensor", "rsub.Scalar")
def _rsub(cx, a):
    dt = cx.out_dtype
    x, y = cx.operand(a["self"], dt), cx.operand(a["other"], dt)
    if a.get("alpha", 1) != 1:
        x = cx.emit("mul", [x, cx.scalar(a["alpha"], dt)])
    return cx.emit("sub", [y, x])


@aten("where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar")
def _where(cx, a):
    dt = cx.out_dtype
    cond = cx.cast(cx.v(a["condition"]), "bool")
    return cx.emit("where", [cond, cx.operand(a["self"], dt), cx.operand(a["other"], dt)])


@aten("masked_fill.Scalar", "masked_fill.Tensor")
def _masked_fill(cx, a):
    dt = cx.out_dtype
    return cx.emit("where", [cx.cast(cx.v(a["mask"]), "bool"), cx.operand(a["value"], dt), cx.operand(a["self"], dt)])


@aten("tril.default", "triu.default")
def _tri(cx, a):
    import numpy as np

    shape = cx.out_shape
    keep = (np.tril if cx.node.target._schema.name.endswith("tril") else np.triu)(
        np.ones(shape[-2:], dtype=bool), int(a["diagonal"]))
    return cx.emit("where", [cx.const(keep), cx.v(a["self"]), cx.scalar(0, cx.out_dtype)])


# -- normalisations ----------------------------------------------------------------------------------

def _opt(cx, x):
    return None if x is None else cx.v(x)


def _norm_axes(cx, x, normalized_shape) -> tuple:
    rank = len(cx.val(x).shape)
    return tuple(range(rank - len(normalized_shape), rank))


@aten("layer_norm.default", "native_layer_norm.default")
def _layer_norm(cx, a):
    x = a["input"]
    w, b = a["weight"], a["bias"]
    out = cx.emit("layer_norm", [cx.v(x), _opt(cx, w), _opt(cx, b)],
                  axes=_norm_axes(cx, x, a["normalized_shape"]), eps=float(a["eps"]))
    return out if cx.node.target._schema.name.endswith("::layer_norm") else [out, None, None]


@aten("rms_norm.default")
def _rms_norm(cx, a):
    import torch

    x, w = a["input"], a["weight"]
    eps = a["eps"] if a["eps"] is not None else torch.finfo(x.meta["val"].dtype).eps
    return cx.emit("rms_norm", [cx.v(x), _opt(cx, w)], axes=_norm_axes(cx, x, a["normalized_shape"]),
                   eps=float(eps))


@aten("batch_norm.default", "native_batch_norm.default", "_native_batch_norm_legit_no_training.default",
      "_native_batch_norm_legit.default")
def _batch_norm(cx, a):
    import numpy as np

    from tessel.ir.dtypes import numpy_dtype

    if a.get("training") or a["running_mean"] is None:
        cx.unsupported("batch norm in training mode (call module.eval() first)")
    x = cx.v(a["input"])
    c = cx.g.values[x].shape[1]
    dt = numpy_dtype(cx.g.values[x].dtype)
    w = cx.v(a["weight"]) if a["weight"] is not None else cx.const(np.ones(c, dt), f"{cx.node.name}_ones")
    b = cx.v(a["bias"]) if a["bias"] is not None else cx.const(np.zeros(c, dt), f"{cx.node.name}_zeros")
    out = cx.emit("batch_norm", [x, w, b, cx.v(a["running_mean"]), cx.v(a["running_var"])], eps=float(a["eps"]))
    return out if cx.node.target._schema.name.endswith("::batch_norm") else [out, None, None]


@aten("native_group_norm.default", "group_norm.default")
def _group_norm(cx, a):
    """Normalise each of G channel groups: layer_norm over (N, G, rest), then the per-channel affine."""
    x = cx.v(a["input"])
    shape = cx.g.values[x].shape
    g = int(a["group"] if "group" in a else a["num_groups"])
    y = cx.emit("layer_norm", [cx.reshape(x, (shape[0], g, math.prod(shape[1:]) // g)), None, None], axes=(2,),
                eps=float(a["eps"]))
    y = cx.reshape(y, shape)
    per_channel = (shape[1],) + (1,) * (len(shape) - 2)
    if a["weight"] is not None:
        y = cx.emit("mul", [y, cx.reshape(cx.v(a["weight"]), per_channel)])
    if a["bias"] is not None:
        y = cx.emit("add", [y, cx.reshape(cx.v(a["bias"]), per_channel)])
    return y if cx.node.target._schema.name.endswith("::group_norm") else [y, None, None]


@aten("_softmax.default", "softmax.int", "_log_softmax.default", "log_softmax.int")
def _softmax(cx, a):
    x = cx.cast(cx.v(a["self"]), cx.out_dtype)
    op = "log_softmax" if "log_softmax" in cx.node.target._schema.name else "softmax"
    return cx.emit(op, [x], axis=_dim(a["dim"], len(cx.out_shape)))


# -- reductions --------------------------------------------------------------------------------------

@aten("mean.dim", "mean.default", "sum.dim_IntList", "sum.default", "amax.default", "amin.default",
      "max.default", "min.default")
def _reduce(cx, a):
    name = cx.node.target._schema.name.split("::")[1]
    op = {"mean": "reduce_mean", "sum": "reduce_sum", "amax": "reduce_max", "amin": "reduce_min",
          "max": "reduce_max", "min": "reduce_min"}[name]
    x = cx.v(a["self"])
    if op in ("reduce_mean", "reduce_sum"):
        x = cx.cast(x, cx.out_dtype)
    rank = len(cx.g.values[x].shape)
    return cx.emit(op, [x], axes=_dims(a.get("dim"), rank), keepdims=bool(a.get("keepdim", False)))


@aten("var.correction", "std.correction", "var_mean.correction")
def _var(cx, a):
    """sum((x - mean)^2) / (n - correction) over dims; std is its square root."""
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    axes = _dims(a["dim"], len(shape))
    dt = cx.g.values[x].dtype
    mean = cx.emit("reduce_mean", [x], axes=axes, keepdims=True)
    d = cx.emit("sub", [x, mean])
    ss = cx.emit("reduce_sum", [cx.emit("mul", [d, d])], axes=axes, keepdims=bool(a["keepdim"]))
    n = math.prod(shape[k] for k in axes) - (1 if a["correction"] is None else a["correction"])
    if math.prod(shape[k] for k in axes) == 0:
        n = 0  # torch: the variance over no elements is NaN (0 / 0), whatever the correction
    var = cx.emit("div", [ss, cx.scalar(n, dt)])
    name = cx.node.target._schema.name
    if name.endswith("std"):
        return cx.emit("sqrt", [var])
    if name.endswith("var_mean"):
        return [var, mean if a["keepdim"] else cx.reshape(mean, cx.g.values[var].shape)]
    return var


@aten("any.dim", "any.dims", "any.default", "all.dim", "all.dims", "all.default")
def _any_all(cx, a):
    x = cx.cast(cx.cast(cx.v(a["self"]), "bool"), "int32")
    is_any = "::any" in cx.node.target._schema.name
    axes = _dims(a.get("dim"), len(cx.g.values[x].shape))
    r = cx.emit("reduce_max" if is_any else "reduce_min", [x], axes=axes, keepdims=bool(a.get("keepdim", False)))
    return cx.emit("gt", [r, cx.scalar(0, "int32")])


@aten("max.dim", "min.dim")
def _reduce_with_index(cx, a):
    import numpy as np

    x = cx.v(a["self"])
    if not cx.g.values[x].shape:  # a 0-d tensor is its own max, at index 0
        return [x, cx.const(np.zeros((), np.int64))]
    axis = _dim(a["dim"], len(cx.g.values[x].shape))
    keep = bool(a["keepdim"])
    is_max = cx.node.target._schema.name.endswith("max")
    vals = cx.emit("reduce_max" if is_max else "reduce_min", [x], axes=(axis,), keepdims=keep)
    idx = cx.emit("argmax" if is_max else "argmin", [x], axis=axis, keepdims=keep)
    return [vals, idx]


@aten("argmax.default", "argmin.default")
def _arg(cx, a):
    import numpy as np

    x = cx.v(a["self"])
    op = "argmax" if cx.node.target._schema.name.endswith("argmax") else "argmin"
    if not cx.g.values[x].shape:  # the only element of a 0-d tensor
        return cx.const(np.zeros((), np.int64))
    if a["dim"] is None:  # over the flattened tensor
        flat = cx.reshape(x, (math.prod(cx.g.values[x].shape),))
        return cx.reshape(cx.emit(op, [flat], axis=0, keepdims=False), cx.out_shape)
    return cx.emit(op, [x], axis=_dim(a["dim"], len(cx.g.values[x].shape)), keepdims=bool(a["keepdim"]))


# -- contractions ------------------------------------------------------------------------------------

@aten("linear.default")
def _linear(cx, a):
    b = a["bias"]
    return cx.emit("linear", [cx.v(a["input"]), cx.v(a["weight"])] + ([cx.v(b)] if b is not None else []))


@aten("mm.default", "bmm.default", "matmul.default")
def _matmul(cx, a):
    return cx.emit("matmul", [cx.v(a["self"]), cx.v(a["other"] if "other" in a else a["mat2"])])


@aten("addmm.default", "baddbmm.default")
def _addmm(cx, a):
    dt = cx.out_dtype
    m1, m2 = (a["mat1"], a["mat2"]) if "mat1" in a else (a["batch1"], a["batch2"])
    prod = cx.emit("matmul", [cx.v(m1), cx.v(m2)])
    if a["alpha"] != 1:
        prod = cx.emit("mul", [prod, cx.scalar(a["alpha"], dt)])
    if a["beta"] == 0:
        return prod
    bias = cx.v(a["self"])
    if a["beta"] != 1:
        bias = cx.emit("mul", [bias, cx.scalar(a["beta"], dt)])
    return cx.emit("add", [prod, bias])


@aten("convolution.default", "conv1d.default", "conv2d.default")
def _conv(cx, a):
    x, w = a["input"], a["weight"]
    if len(cx.val(x).shape) == len(cx.val(w).shape) - 1:  # an unbatched input: a batch of one
        name = cx.node.target._schema.name
        if not name.endswith(("conv1d", "conv2d")):
            cx.unsupported(f"an unbatched {name}")
        xs = cx.val(x).shape
        batched = dict(a, input=None)
        out = _conv_values(cx, batched, cx.reshape(cx.v(x), (1,) + xs))
        return cx.reshape(out, cx.out_shape)
    return _conv_values(cx, a, cx.v(x))


def _conv_values(cx, a, xv: str):
    w, b = a["weight"], a["bias"]
    nsp = len(cx.g.values[xv].shape) - 2
    if nsp not in (1, 2):
        cx.unsupported(f"a {nsp}-D convolution (the op set has 1-D and 2-D)")
    if a.get("transposed"):
        from tessel.frontend.torch_aten_pool import conv_transpose

        return conv_transpose(cx, a, xv)
    dil = _pair(a["dilation"], nsp)
    if isinstance(a["padding"], str):  # 'valid': none; 'same': d (k - 1) in all, the odd one at the end
        kernel = cx.val(w).shape[2:]
        total = [d * (k - 1) if a["padding"] == "same" else 0 for d, k in zip(dil, kernel)]
        begin, end = tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
    else:
        begin = end = _pair(a["padding"], nsp)
    return cx.emit("conv", [xv, cx.v(w)] + ([cx.v(b)] if b is not None else []),
                   stride=_pair(a["stride"], nsp), padding=begin + end, dilation=dil,
                   groups=int(a["groups"]))


@aten("scaled_dot_product_attention.default")
def _sdpa(cx, a):
    q, k, v, mask = a["query"], a["key"], a["value"], a["attn_mask"]
    if a["dropout_p"]:
        cx.unsupported(f"attention dropout (dropout_p={a['dropout_p']})")
    qs = cx.val(q).shape
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(qs[-1])
    kv = [cx.v(k), cx.v(v)]
    if a["enable_gqa"] and cx.val(k).shape[-3] != qs[-3]:  # repeat each key/value head for its query group
        kv = [_repeat_heads(cx, t, qs[-3]) for t in kv]
    ins = [cx.v(q), *kv] + ([cx.v(mask)] if mask is not None else [])
    return cx.emit("sdpa", ins, is_causal=bool(a["is_causal"]), scale=float(scale))


def _repeat_heads(cx, t: str, heads: int) -> str:
    s = cx.g.values[t].shape
    rep = heads // s[-3]
    t = cx.reshape(t, s[:-2] + (1,) + s[-2:])
    t = cx.emit("expand", [t], shape=s[:-2] + (rep,) + s[-2:])
    return cx.reshape(t, s[:-3] + (heads,) + s[-2:])


def _output_used(node, k: int) -> bool:
    """Whether output k of a multi-output fx node is read by anything."""
    import operator

    return any(u.target is operator.getitem and u.args[1] == k and u.users for u in node.users)


# -- pooling -----------------------------------------------------------------------------------------

@aten("max_pool2d_with_indices.default", "max_pool2d.default", "max_pool1d.default")
def _max_pool(cx, a):
    from tessel.frontend.torch_aten_pool import max_pool_windows

    x = cx.v(a["self"])
    nsp = 1 if "1d" in cx.node.target._schema.name else 2
    if _output_used(cx.node, 1):  # the indices: through the window table
        return max_pool_windows(cx, a, nsp)
    kernel = _pair(a["kernel_size"], nsp)
    stride = _pair(a["stride"], nsp) if a["stride"] else kernel
    pad = _pair(a["padding"], nsp)
    out = cx.emit("max_pool", [x], kernel=kernel, stride=stride, padding=pad + pad,
                  dilation=_pair(a["dilation"], nsp), ceil_mode=bool(a["ceil_mode"]), count_include_pad=False)
    return [out, None] if cx.node.target._schema.name.endswith("with_indices") else out


@aten("avg_pool2d.default", "avg_pool1d.default")
def _avg_pool(cx, a):
    from tessel.frontend.torch_aten_pool import avg_pool_windows

    nsp = 1 if "1d" in cx.node.target._schema.name else 2
    if a.get("divisor_override") is not None:
        return avg_pool_windows(cx, a, nsp)
    kernel = _pair(a["kernel_size"], nsp)
    stride = _pair(a["stride"], nsp) if a["stride"] else kernel
    pad = _pair(a["padding"], nsp)
    return cx.emit("avg_pool", [cx.v(a["self"])], kernel=kernel, stride=stride, padding=pad + pad,
                   dilation=(1,) * nsp, ceil_mode=bool(a["ceil_mode"]),
                   count_include_pad=bool(a["count_include_pad"]))


@aten("adaptive_avg_pool2d.default", "_adaptive_avg_pool2d.default", "adaptive_avg_pool1d.default")
def _adaptive_avg_pool(cx, a):
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    nsp = 1 if "1d" in cx.node.target._schema.name else 2
    insz, outsz = shape[-nsp:], _pair(a["output_size"], nsp)
    if all(o == 1 for o in outsz):
        return cx.emit("reduce_mean", [x], axes=tuple(range(len(shape) - nsp, len(shape))), keepdims=True)
    if any(i % o for i, o in zip(insz, outsz)):  # windows of several sizes: the window table
        from tessel.frontend.torch_aten_pool import adaptive_avg

        return adaptive_avg(cx, x, outsz, nsp)
    kernel = tuple(i // o for i, o in zip(insz, outsz))
    return cx.emit("avg_pool", [x], kernel=kernel, stride=kernel, padding=(0,) * (2 * nsp), dilation=(1,) * nsp,
                   ceil_mode=False, count_include_pad=True)
