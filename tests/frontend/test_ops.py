"""The op library: for every op of the op set, on random inputs at small shapes,

(a) the shape rule (`infer`) gives the shapes and dtypes the numpy reference produces;
(b) the lowering, built for the CPU with the default schedule, computes what the reference
    computes (and, for a representative subset, so does the interpreter on the naive lowering);
(c) the reference agrees with torch (float64, CPU) for the ops torch has.
(d), the errors bad inputs raise, is in test_op_errors.py.

Cases are data (`CASES`): an op, its input specs, its attributes and, where torch has it, the torch
call. Every registered op must appear in some case (`test_every_op_has_cases`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest

import tessel as ts
from tessel.frontend.graph import Value
from tessel.frontend.ops import all_ops, get_op
from tessel.ir import dsl, interp
from tessel.ir.dtypes import is_float, numpy_dtype


@pytest.fixture(scope="session")
def kernel_cache_dir(request, tmp_path_factory):
    """pytest's cache folder (reused by reruns), or a temporary one without the cache plugin."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("tessel-kernels") if cache is not None else tmp_path_factory.mktemp("tessel-kernels")


@pytest.fixture(autouse=True)
def _kernel_cache(monkeypatch, kernel_cache_dir):
    """Compiled kernels go to that folder, never ~/.cache."""
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(kernel_cache_dir))


# -- cases ----------------------------------------------------------------------------------------


@dataclass
class Spec:
    shape: tuple
    dtype: str = "float32"
    gen: object = "normal"  # normal | pos | few | wide | int | int0 | posint | bool | keepmask | ("idx", n)


@dataclass
class Case:
    op: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    torch: object = None  # fn(torch, F, *tensors, **attrs) -> tensor; inputs given as float64
    interp: bool = False
    id: str = ""

    def __str__(self):
        return self.id or self.op


def S(shape, dtype="float32", gen="normal"):
    return Spec(tuple(shape), dtype, gen)


CASES: list[Case] = []


def case(op, *inputs, torch=None, interp=False, id="", **attrs):
    specs = [i if isinstance(i, Spec) or i is None else S(i) for i in inputs]
    CASES.append(Case(op, specs, attrs, torch, interp, id or f"{op}-{len([c for c in CASES if c.op == op])}"))


# elementwise binary, numpy broadcasting
_BIN_TORCH = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "maximum": "maximum",
              "minimum": "minimum", "eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge",
              "logical_and": "logical_and", "logical_or": "logical_or"}
for _op, _t in _BIN_TORCH.items():
    _gen = "few" if _op in ("eq", "ne", "lt", "le", "gt", "ge", "maximum", "minimum") else "normal"
    if _op == "pow":
        _a, _b = S((2, 3, 4), gen="pos"), S((4,), gen="few")
    else:
        _a, _b = S((2, 3, 4), gen=_gen), S((3, 1), gen=_gen)
    case(_op, _a, _b, torch=lambda t, F, a, b, _t=_t: getattr(t, _t)(a, b), interp=_op in ("add", "div", "eq"))
    case(_op, S((1, 5), gen=_gen if _op != "pow" else "pos"), S((4, 1), gen=_gen), id=f"{_op}-outer",
         torch=lambda t, F, a, b, _t=_t: getattr(t, _t)(a, b))
case("add", S((3, 4), "float16"), S((4,), "float16"), id="add-fp16")
case("mul", S((3, 4), "bfloat16"), S((3, 1), "bfloat16"), id="mul-bf16")
case("add", S((3, 4), "int32", "int"), S((), "int32", "int"), id="add-int-scalar", torch=lambda t, F, a, b: a + b)
case("mul", S((3, 4), "int64", "int"), S((3, 4), "int32", "int"), id="mul-int-promote")
case("add", S((3, 4), "float32"), S((3, 1), "int64", "int"), id="add-mixed-promote")
case("div", S((3, 4), "int32", "int"), S((4,), "int32", "int"), id="div-int-trunc", interp=True,
     torch=lambda t, F, a, b: t.div(a, b, rounding_mode="trunc"))
case("pow", S((3, 4), "int32", "int"), S((4,), "int32", "posint"), id="pow-int", torch=lambda t, F, a, b: t.pow(a, b))
case("pow", S((3, 4)), S((), gen="few"), id="pow-neg-base-int-exp", torch=lambda t, F, a, b: t.pow(a, b))
case("lt", S((3, 4), "int8", "int"), S((1, 4), "int8", "int"), id="lt-int8", torch=lambda t, F, a, b: a < b)
case("logical_and", S((2, 3), "bool", "bool"), S((3,), "bool", "bool"), id="and-bool",
     torch=lambda t, F, a, b: t.logical_and(a, b))
# bitwise ops (composed from integer arithmetic; negative values included)
case("bitwise_and", S((2, 3, 4), "int32", "int"), S((3, 1), "int32", "int"), id="bitwise_and-int32",
     torch=lambda t, F, a, b: t.bitwise_and(a, b))
case("bitwise_or", S((3, 4), "int8", "int"), S((3, 4), "int8", "int"), id="bitwise_or-int8",
     torch=lambda t, F, a, b: t.bitwise_or(a, b))
case("bitwise_xor", S((3, 4), "int8", "int"), S((4,), "int8", "int"), id="bitwise_xor-int8",
     torch=lambda t, F, a, b: t.bitwise_xor(a, b))
case("bitwise_not", S((3, 4), "int32", "int"), id="bitwise_not-int32", torch=lambda t, F, a: t.bitwise_not(a))
case("shift_left", S((3, 4), "int32", "int"), S((3, 4), "int32", "posint"), id="shift_left-int32",
     torch=lambda t, F, a, b: t.bitwise_left_shift(a, b))
case("shift_right", S((3, 4), "int8", "int"), S((4,), "int8", "posint"), id="shift_right-int8",
     torch=lambda t, F, a, b: t.bitwise_right_shift(a, b))
case("where", S((3, 1), "bool", "bool"), S((3, 4)), S((4,)), torch=lambda t, F, c, a, b: t.where(c, a, b),
     interp=True)
case("where", S((2, 1, 4), "bool", "bool"), S((3, 1)), S(()), torch=lambda t, F, c, a, b: t.where(c, a, b))

# elementwise unary
_UN_TORCH = {"neg": "neg", "abs": "abs", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt", "tanh": "tanh",
             "sigmoid": "sigmoid", "erf": "erf", "sin": "sin", "cos": "cos", "floor": "floor", "ceil": "ceil",
             "reciprocal": "reciprocal", "relu": "relu"}
for _op, _t in _UN_TORCH.items():
    _gen = "pos" if _op in ("log", "sqrt", "rsqrt", "reciprocal") else "normal"
    case(_op, S((3, 5), gen=_gen), torch=lambda t, F, x, _t=_t: getattr(t, _t)(x), interp=_op in ("exp", "erf"))
case("silu", S((3, 5)), torch=lambda t, F, x: F.silu(x))
case("gelu", S((3, 5)), approximate="none", torch=lambda t, F, x, approximate: F.gelu(x), interp=True)
case("gelu", S((3, 5)), approximate="tanh", torch=lambda t, F, x, approximate: F.gelu(x, approximate=approximate),
     id="gelu-tanh")
case("gelu", S((3, 5), "float16"), id="gelu-fp16")
case("exp", S((2, 4), "float64"), id="exp-fp64")
case("sigmoid", S((4, 4), "float16"), id="sigmoid-fp16")
case("leaky_relu", S((3, 5)), alpha=0.2, torch=lambda t, F, x, alpha: F.leaky_relu(x, alpha))
case("clip", S((3, 5)), min=-0.5, max=0.7, torch=lambda t, F, x, min, max: t.clamp(x, min, max))
case("clip", S((3, 5)), max=0.1, id="clip-max-only", torch=lambda t, F, x, max: t.clamp(x, max=max))
case("clip", S((3, 5), "int32", "int"), min=-2, max=3, id="clip-int",
     torch=lambda t, F, x, min, max: t.clamp(x, min, max))
case("neg", S((3, 5), "int64", "int"), id="neg-int", torch=lambda t, F, x: -x)
case("abs", S((3, 5), "int32", "int"), id="abs-int", torch=lambda t, F, x: x.abs())
case("relu", S((3, 5), "int8", "int"), id="relu-int8", torch=lambda t, F, x: F.relu(x))
case("floor", S((3, 5), "int32", "int"), id="floor-int")
case("logical_not", S((3, 5), "bool", "bool"), torch=lambda t, F, x: t.logical_not(x))
case("logical_not", S((3, 5), "int32", "int0"), id="not-int", torch=lambda t, F, x: t.logical_not(x))
_TD = {"int32": "int32", "int64": "int64", "int8": "int8", "float16": "float16", "float32": "float32", "bool": "bool",
       "float64": "float64"}
for _src, _dst, _gen in (("float32", "int32", "wide"), ("float32", "float16", "normal"), ("int32", "float32", "int"),
                         ("int32", "bool", "int0"), ("float32", "bool", "few"), ("bool", "float32", "bool"),
                         ("int64", "int8", "int"), ("float16", "float32", "normal")):
    case("cast", S((3, 5), _src, _gen), dtype=_dst, id=f"cast-{_src}-{_dst}", interp=_dst == "int32",
         torch=lambda t, F, x, dtype: x.to(getattr(t, _TD[dtype])))
case("batch_norm", S((2, 3, 4)), S((3,)), S((3,)), S((3,)), S((3,), gen="pos"), eps=1e-5, interp=True,
     torch=lambda t, F, x, s, b, m, v, eps: F.batch_norm(x, m, v, s, b, training=False, eps=eps))
case("batch_norm", S((2, 3, 2, 3)), S((3,)), S((3,)), S((3,)), S((3,), gen="pos"), eps=1e-3, id="batch_norm-4d",
     torch=lambda t, F, x, s, b, m, v, eps: F.batch_norm(x, m, v, s, b, training=False, eps=eps))

# contractions
for _a, _b in (((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (2, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4,)),
               ((2, 3, 4), (4,))):
    case("matmul", _a, _b, torch=lambda t, F, a, b: t.matmul(a, b), interp=_a == (2, 1, 3, 4), id=f"matmul-{_a}x{_b}")
case("matmul", S((3, 8), "float16"), S((8, 5), "float16"), id="matmul-fp16")
case("matmul", S((3, 4), "int32", "int"), S((4, 2), "int32", "int"), id="matmul-int",
     torch=lambda t, F, a, b: t.matmul(a, b))
case("linear", (2, 3, 4), (5, 4), (5,), torch=lambda t, F, x, w, b: F.linear(x, w, b), interp=True)
case("linear", (4,), (3, 4), id="linear-1d-nobias", torch=lambda t, F, x, w: F.linear(x, w))  # bias left out
case("linear", S((3, 8), "float16"), S((5, 8), "float16"), S((5,), "float16"), id="linear-fp16")


def _conv_torch(t, F, x, w, b, stride=1, padding=0, dilation=1, groups=1):
    nsp = x.ndim - 2
    pads = padding if isinstance(padding, (list, tuple)) else [padding] * nsp
    pads = list(pads) * (2 if len(pads) == nsp else 1)
    torch_pads = [p for d in reversed(range(nsp)) for p in (pads[d], pads[nsp + d])]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nsp]
    return conv(F.pad(x, torch_pads), w, b, stride=stride, dilation=dilation, groups=groups)


for _k, (_x, _w, _attrs) in enumerate((
        ((1, 2, 5, 4), (3, 2, 3, 3), dict(padding=[1, 1, 1, 1])),
        ((2, 4, 7, 6), (4, 2, 3, 2), dict(stride=[2, 1], padding=[1, 0, 2, 1], dilation=[1, 2], groups=2)),
        ((1, 3, 6, 6), (3, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
        ((2, 2, 9), (4, 2, 3), dict(stride=[2], padding=[2, 1], dilation=[2])),
        ((1, 2, 4, 4, 3), (2, 2, 2, 2, 2), dict(padding=[1, 0, 0, 0, 1, 1])))):
    for _bias in (True, False):
        case("conv", _x, _w, (_w[0],) if _bias else None, torch=_conv_torch, interp=_x == (2, 2, 9) and _bias,
             id=f"conv{len(_x) - 2}d-{_k}-{'bias' if _bias else 'nobias'}", **_attrs)
case("conv", S((1, 2, 5, 5), "float16"), S((2, 2, 3, 3), "float16"), None, padding=1, id="conv-fp16")

# reductions
_RED_TORCH = {"reduce_sum": "sum", "reduce_mean": "mean", "reduce_max": "amax", "reduce_min": "amin"}
for _op, _t in _RED_TORCH.items():
    for _axes, _keep in (([1], False), ([0, 2], True), (None, False), ([2], True)):
        case(_op, (2, 3, 4), axes=_axes, keepdims=_keep, interp=_op == "reduce_mean" and _keep,
             torch=lambda t, F, x, axes, keepdims, _t=_t: getattr(t, _t)(
                 x, dim=tuple(range(x.ndim)) if axes is None else tuple(axes), keepdim=keepdims))
case("reduce_sum", S((2, 3), "int32", "int"), axes=[1], id="reduce_sum-int",
     torch=lambda t, F, x, axes: x.sum(1, dtype=t.int32))
case("reduce_sum", S((2, 3), "bool", "bool"), axes=[1], id="reduce_sum-bool", torch=lambda t, F, x, axes: x.sum(1))
case("reduce_max", S((2, 3), "bool", "bool"), axes=[0], id="reduce_max-bool")
case("reduce_sum", (2, 3), axes=[], id="reduce_sum-noaxes")
case("reduce_mean", S((4, 6), "float16"), axes=[1], id="reduce_mean-fp16")
for _op in ("argmax", "argmin"):
    for _axis, _keep in ((1, False), (0, True), (2, False)):
        case(_op, S((2, 3, 4), gen="few"), axis=_axis, keepdims=_keep, interp=_axis == 1,
             torch=lambda t, F, x, axis, keepdims, _op=_op: getattr(t, _op)(x, dim=axis, keepdim=keepdims))
    case(_op, S((3, 5), "int32", "int"), axis=1, id=f"{_op}-int",
         torch=lambda t, F, x, axis, _op=_op: getattr(t, _op)(x, dim=axis))
for _op in ("softmax", "log_softmax"):
    for _axis in (1, 0, 2):
        case(_op, (2, 3, 4), axis=_axis, interp=_axis == 1,
             torch=lambda t, F, x, axis, _op=_op: getattr(t, _op)(x, axis))
case("softmax", S((3, 6), "float16"), axis=1, id="softmax-fp16")
case("softmax", S((3, 6), "bfloat16"), axis=1, id="softmax-bf16")
case("softmax", S((3, 6), gen="wide"), axis=1, id="softmax-large-logits",
     torch=lambda t, F, x, axis: t.softmax(x, axis))
case("layer_norm", (2, 3, 8), (8,), (8,), axes=[2], eps=1e-5, interp=True,
     torch=lambda t, F, x, w, b, axes, eps: F.layer_norm(x, (8,), w, b, eps))
case("layer_norm", (2, 3, 4), (3, 4), None, axes=[1, 2], eps=1e-3, id="layer_norm-2axes-nobias",
     torch=lambda t, F, x, w, b, axes, eps: F.layer_norm(x, (3, 4), w, None, eps))
case("layer_norm", (3, 6), None, None, axes=[1], id="layer_norm-noparams",
     torch=lambda t, F, x, w, b, axes: F.layer_norm(x, (6,)))
case("layer_norm", (2, 3, 4), (1, 4), (4,), axes=[1, 2], id="layer_norm-bcast-weight",
     torch=lambda t, F, x, w, b, axes: F.layer_norm(x, (3, 4), w.expand(3, 4), b.expand(3, 4)))
case("layer_norm", S((4, 8), "float16"), S((8,), "float16"), S((8,), "float16"), axes=[1], id="layer_norm-fp16")
case("rms_norm", (2, 3, 8), (8,), axes=[2], eps=1e-6, interp=True,
     torch=lambda t, F, x, w, axes, eps: F.rms_norm(x, (8,), w, eps))
case("rms_norm", (2, 3, 4), None, axes=[1, 2], eps=1e-5, id="rms_norm-noweight",
     torch=lambda t, F, x, w, axes, eps: F.rms_norm(x, (3, 4), None, eps))


def _pool_torch(kind):
    def f(t, F, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False, count_include_pad=True):
        n = len(kernel)
        pad = padding[:n] if isinstance(padding, (list, tuple)) else padding
        if kind == "max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
            return fn(x, kernel, stride, pad, dilation, ceil_mode=ceil_mode)
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
        return fn(x, kernel, stride, pad, ceil_mode=ceil_mode, count_include_pad=count_include_pad)

    return f


for _kind in ("max", "avg"):
    _op = f"{_kind}_pool"
    for _k, (_x, _attrs) in enumerate((((1, 2, 6, 6), dict(kernel=[2, 2])),
                       ((2, 3, 7, 5), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1])),
                       ((1, 2, 7, 7), dict(kernel=[3, 2], stride=[2, 2], padding=[1, 0], ceil_mode=True)),
                       ((2, 3, 9), dict(kernel=[3], stride=[2], padding=[1], ceil_mode=True)),
                       ((1, 1, 5, 6), dict(kernel=[2, 3], stride=[1, 2], padding=[1, 1, 1, 1],
                                           count_include_pad=False)))):
        case(_op, _x, torch=_pool_torch(_kind), interp=_x == (2, 3, 9), id=f"{_op}-{_k}", **_attrs)
case("max_pool", (1, 2, 8, 8), kernel=[2, 2], stride=[2, 2], dilation=[2, 2], padding=[1, 1], id="max_pool-dilated",
     torch=_pool_torch("max"))
case("max_pool", (1, 2, 6, 6), kernel=[3, 3], stride=[2, 2], padding=[1, 1, 0, 0], id="max_pool-asym")
case("avg_pool", (1, 2, 6, 6), kernel=[3, 3], stride=[2, 2], padding=[0, 1, 1, 1], id="avg_pool-asym")
case("max_pool", S((1, 2, 5, 5), "int32", "int"), kernel=[2, 2], padding=[1, 1], id="max_pool-int",
     torch=_pool_torch("max"))
case("avg_pool", S((1, 2, 6, 6), "float16"), kernel=[2, 2], padding=[1, 1], id="avg_pool-fp16")

# layout
case("reshape", (2, 3, 4), shape=[6, 4], torch=lambda t, F, x, shape: x.reshape(shape), interp=True)
case("reshape", (2, 3, 4), shape=[4, -1, 3], id="reshape-regroup", torch=lambda t, F, x, shape: x.reshape(shape))
case("reshape", (2, 1, 6), shape=[1, 2, 3, 2, 1], id="reshape-unit-dims", torch=lambda t, F, x, shape: x.reshape(shape))
case("reshape", (3, 4), shape=[12], id="reshape-flatten", torch=lambda t, F, x, shape: x.reshape(shape))
case("reshape", (1,), shape=[], id="reshape-to-scalar", torch=lambda t, F, x, shape: x.reshape(shape))
case("transpose", (2, 3, 4), perm=[2, 0, 1], torch=lambda t, F, x, perm: x.permute(perm), interp=True)
case("transpose", (3, 4), id="transpose-default", torch=lambda t, F, x: x.T)
case("expand", (3, 1), shape=[2, 3, 4], torch=lambda t, F, x, shape: x.expand(shape))
case("expand", (3, 1), shape=[-1, 5], id="expand-keep", torch=lambda t, F, x, shape: x.expand(shape))
case("expand", (2, 1, 4), shape=[3, 1], id="expand-bidirectional")
case("concat", (2, 3), (4, 3), (1, 3), axis=0, torch=lambda t, F, *xs, axis: t.cat(xs, axis), interp=True)
case("concat", (2, 3, 1), (2, 3, 2), axis=2, id="concat-last", torch=lambda t, F, *xs, axis: t.cat(xs, axis))
case("concat", S((2, 2), "int32", "int"), S((2, 1), "int32", "int"), axis=1, id="concat-int",
     torch=lambda t, F, *xs, axis: t.cat(xs, axis))


def _slice_torch(t, F, x, starts, ends, axes=None, steps=None):
    sl = [slice(None)] * x.ndim
    for k, (s, e) in enumerate(zip(starts, ends)):
        sl[axes[k] if axes else k] = slice(s, e, steps[k] if steps else 1)
    return x[tuple(sl)]


case("slice", (5, 6), starts=[1, 0], ends=[4, 6], axes=[0, 1], steps=[1, 2], torch=_slice_torch, interp=True)
case("slice", (5, 6), starts=[-4], ends=[1000], axes=[1], id="slice-neg-start-clamped", torch=_slice_torch)
case("slice", (5, 6), starts=[4], ends=[0], axes=[0], steps=[-2], id="slice-neg-step")
case("slice", (5, 6), starts=[1000], ends=[-1000], axes=[1], steps=[-1], id="slice-reverse")
case("slice", (4, 3, 5), starts=[-1, 1], ends=[-4, -1], axes=[2, 0], steps=[-1, 1], id="slice-mixed")
for _idx, _axis in ((S((4,), "int64", ("idx", 3)), 0), (S((2, 2), "int32", ("idx", 4)), 1),
                     (S((), "int64", ("idx", 5)), 2)):
    case("gather", (3, 4, 5), _idx, axis=_axis, interp=_axis == 1, id=f"gather-axis{_axis}",
         torch=lambda t, F, x, i, axis: x[(slice(None),) * axis + (i,)])
case("gather", (10, 4), S((2, 3), "int64", ("idx", 10)), axis=0, id="gather-embedding",
     torch=lambda t, F, w, i, axis: F.embedding(t.where(i < 0, i + 10, i), w))
case("pad", (2, 3), pads=[1, 0, 2, 3], value=0.5, interp=True,
     torch=lambda t, F, x, pads, value: F.pad(x, [pads[1], pads[3], pads[0], pads[2]], value=value))
case("pad", (3, 5), pads=[-1, 2, 0, -2], id="pad-crop",
     torch=lambda t, F, x, pads: F.pad(x, [pads[1], pads[3], pads[0], pads[2]]))
case("pad", (1, 2, 5), pads=[0, 0, 2, 0, 0, 3], mode="reflect", id="pad-reflect",
     torch=lambda t, F, x, pads, mode: F.pad(x, [2, 3], mode="reflect"))
case("pad", (1, 2, 4), pads=[0, 0, 1, 0, 0, 3], mode="edge", id="pad-edge",
     torch=lambda t, F, x, pads, mode: F.pad(x, [1, 3], mode="replicate"))
case("pad", S((2, 3), "bool", "bool"), pads=[1, 1, 0, 0], value=True, id="pad-bool")


# attention
def _sdpa_torch(t, F, q, k, v, mask=None, is_causal=False, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


case("sdpa", (2, 4, 8), (2, 6, 8), (2, 6, 3), torch=_sdpa_torch, interp=True)
case("sdpa", (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4), None, is_causal=True, id="sdpa-causal", torch=_sdpa_torch)
case("sdpa", (2, 3, 4, 8), (1, 1, 6, 8), (2, 1, 6, 8), S((4, 6), "bool", "keepmask"), scale=0.3,
     id="sdpa-bool-mask-bcast", torch=_sdpa_torch)
case("sdpa", (2, 4, 8), (2, 6, 8), (2, 6, 8), (2, 4, 6), id="sdpa-float-mask", torch=_sdpa_torch)
case("sdpa", (1, 4, 4), (1, 4, 4), (1, 4, 4), S((1, 4, 4), "bool", "keepmask"), is_causal=True,
     id="sdpa-causal-and-mask")
case("sdpa", S((2, 4, 16), "float16"), S((2, 4, 16), "float16"), S((2, 4, 16), "float16"), id="sdpa-fp16")


# FFT
def _rfft_torch(t, F, x, n=None, axis=-1):
    return t.view_as_real(t.fft.rfft(x, n=n, dim=axis))


def _irfft_torch(t, F, x, n=None, axis=-1):
    return t.fft.irfft(t.view_as_complex(x.contiguous()), n=n, dim=axis)


case("rfft", (3, 16), torch=_rfft_torch, interp=True)
case("rfft", (2, 7, 3), axis=1, id="rfft-odd-axis1", torch=_rfft_torch)
case("rfft", (2, 10), n=16, id="rfft-zero-pad", torch=_rfft_torch)
case("rfft", (2, 10), n=6, id="rfft-truncate", torch=_rfft_torch)
case("irfft", (3, 9, 2), torch=_irfft_torch, interp=True)
case("irfft", (2, 4, 3, 2), n=7, axis=1, id="irfft-odd-axis1", torch=_irfft_torch)
case("irfft", (2, 5, 2), n=16, id="irfft-zero-pad", torch=_irfft_torch)
case("irfft", (2, 9, 2), n=6, id="irfft-truncate", torch=_irfft_torch)


# -- running a case -------------------------------------------------------------------------------


def random_array(spec: Spec, rng) -> np.ndarray:
    return np.asarray(_random(spec, rng))


def _random(spec: Spec, rng):
    shape, gen = spec.shape, spec.gen
    if isinstance(gen, tuple):  # ("idx", n): indices in [-n, n), negatives included
        return rng.integers(-gen[1], gen[1], size=shape).astype(spec.dtype)
    if gen == "bool":
        return rng.random(shape) < 0.5
    if gen == "keepmask":  # random keep-mask that keeps key 0 for every query (no empty row)
        m = rng.random(shape) < 0.5
        m[..., 0] = True
        return m
    if gen in ("int", "int0", "posint"):
        lo, hi = {"int": (1, 6), "int0": (0, 4), "posint": (0, 4)}[gen]
        v = rng.integers(lo, hi, size=shape)
        if gen != "posint":
            v = v * rng.choice([-1, 1], size=shape)
        return v.astype(spec.dtype)
    if gen == "pos":
        v = rng.uniform(0.5, 2.0, size=shape)
    elif gen == "few":
        v = rng.choice([-2.0, -1.0, 1.0, 2.0], size=shape)
    elif gen == "wide":
        v = rng.standard_normal(shape) * 40.0
    else:
        v = rng.standard_normal(shape)
    return np.asarray(v).astype(numpy_dtype(spec.dtype))


def case_arrays(c: Case) -> list:
    rng = np.random.default_rng(zlib.crc32(c.id.encode()))
    return [random_array(s, rng) if s is not None else None for s in c.inputs]


def infer(c: Case) -> list:
    values = [Value(f"in{k}", s.shape, s.dtype) if s is not None else None for k, s in enumerate(c.inputs)]
    return get_op(c.op).infer(values, c.attrs)


def lowered(c: Case, prefix: str = ""):
    """(placeholders, output tensors) of the case's lowering; `prefix` starts every name."""
    outs = infer(c)
    phs = [dsl.placeholder(s.shape, s.dtype, name=f"{prefix}in{k}") if s is not None else None
           for k, s in enumerate(c.inputs)]
    names = [f"{prefix}y{k}" if k else f"{prefix}y" for k in range(len(outs))]
    tensors = get_op(c.op).lower(phs, c.attrs, outs, names)
    assert [(t.shape, t.dtype) for t in tensors] == [(tuple(s), d) for s, d in outs]
    assert [t.name for t in tensors] == names
    return [p for p in phs if p is not None], tensors


def reference(c: Case, arrays) -> list:
    return [np.asarray(r) for r in get_op(c.op).reference(arrays, c.attrs)]


def garbage(tensors) -> list:
    """Output buffers filled with a value no op produces here, so unwritten elements show."""
    return [np.full(t.shape, np.nan if is_float(t.dtype) else 77, numpy_dtype(t.dtype)) for t in tensors]


def assert_close(got, want, dtype: str, what: str):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if not is_float(dtype):
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    tol = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 1e-5, "float64": 1e-12}[dtype]
    g, w = got.astype(np.float64), want.astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))  # errors of sums scale with the magnitudes
    np.testing.assert_allclose(g, w, rtol=tol, atol=tol * scale, err_msg=what)


CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_infer_matches_reference(c: Case):
    """(a) The shape rule's (shape, dtype) per output equals what the numpy reference returns."""
    refs = reference(c, case_arrays(c))
    assert infer(c) == [(r.shape, r.dtype.name) for r in refs]


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_lowering_matches_reference(c: Case):
    """(b) The lowering, built for the CPU with the default schedule, matches the reference."""
    arrays = case_arrays(c)
    got = group_outputs(CASES.index(c) // GROUP).get(c.id)
    if got is None:  # the group's kernel failed: build this case alone, so its own error shows
        got = built_outputs([c])[c.id]
    for g, w, (shape, dtype) in zip(got, reference(c, arrays), infer(c)):
        assert_close(g, w, dtype, f"{c.id}: output of shape {shape}")


# Compiling costs about 0.1-0.3 s per kernel, mostly fixed overhead (LLVM, linking, the disk
# cache), so the lowering tests build GROUP consecutive cases into one kernel (independent stages,
# names prefixed per case) and run it once.
GROUP = 6
_GROUP_OUTPUTS: dict = {}  # explicit cache: group number -> {case id: outputs}, {} if the build failed


def built_outputs(cases: list) -> dict:
    """Build the cases' lowerings as one CPU kernel, run it on the cases' inputs, and return
    {case id: [output arrays]}."""
    params_in, params_out, args_in, split = [], [], [], []
    for k, c in enumerate(cases):
        phs, outs = lowered(c, prefix=f"c{k}_")
        params_in += phs
        params_out += outs
        args_in += [a for a in case_arrays(c) if a is not None]
        split.append((c.id, len(outs)))
    got = garbage(params_out)
    ts.build(params_in + params_out, target="cpu")(*args_in, *got)
    res, k = {}, 0
    for cid, n in split:
        res[cid], k = got[k:k + n], k + n
    return res


def group_outputs(g: int) -> dict:
    if g not in _GROUP_OUTPUTS:
        try:
            _GROUP_OUTPUTS[g] = built_outputs(CASES[g * GROUP:(g + 1) * GROUP])
        except Exception:  # noqa: BLE001 - any failure: fall back to one kernel per case
            _GROUP_OUTPUTS[g] = {}
    return _GROUP_OUTPUTS[g]


@pytest.mark.parametrize("c", [c for c in CASES if c.interp], ids=[c.id for c in CASES if c.interp])
def test_interpreter_matches_reference(c: Case):
    """(b') The naive lowering run by the reference interpreter matches the reference too."""
    arrays = case_arrays(c)
    phs, outs = lowered(c)
    got = garbage(outs)
    interp.run(dsl.lower(phs + outs), *[a for a in arrays if a is not None], *got)
    for g, w, t in zip(got, reference(c, arrays), outs):
        assert_close(g, w, t.dtype, f"{c.id} (interpreter): output {t.name}")


TORCH_CASES = [c for c in CASES if c.torch is not None]


@pytest.mark.parametrize("c", TORCH_CASES, ids=[c.id for c in TORCH_CASES])
def test_reference_matches_torch(c: Case):
    """(c) The numpy reference agrees with torch on float64 inputs (so both sides compute in
    float64 and any difference is a semantic one)."""
    torch = pytest.importorskip("torch", reason="torch is not importable")
    import torch.nn.functional as F

    arrays = [None if a is None else a.astype(np.float64) if is_float(a.dtype.name) else a for a in case_arrays(c)]
    want = reference(c, arrays)
    tensors = [None if a is None else torch.from_numpy(a.copy()) for a in arrays]
    got = c.torch(torch, F, *tensors, **c.attrs)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = g.numpy()
        assert g.shape == w.shape, f"{c.id}: torch shape {g.shape} != reference {w.shape}"
        if w.dtype.kind == "f" and w.dtype.itemsize == 8:
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10 * max(1.0, float(np.abs(w).max())))
        else:
            assert_close(g.astype(w.dtype), w, w.dtype.name, f"{c.id} vs torch")


def test_every_op_has_cases():
    """Every op of the registry is exercised, and all but a few are also checked against torch."""
    ops = set(all_ops())
    assert ops <= {c.op for c in CASES}, f"ops without test cases: {sorted(ops - {c.op for c in CASES})}"
    assert ops - {c.op for c in TORCH_CASES} == set(), "ops never compared with torch"


def test_kinds():
    """Fusion relies on the kinds: spot-check one op of each."""
    kinds = {"add": "elementwise", "gelu": "elementwise", "reshape": "injective", "gather": "injective",
             "reduce_sum": "reduction", "softmax": "reduction", "matmul": "contraction", "conv": "contraction",
             "sdpa": "opaque", "rfft": "opaque"}
    assert {op: get_op(op).kind for op in kinds} == kinds


def test_intermediates_are_named_after_the_output():
    """Temporaries of multi-stage lowerings carry the output's name as a prefix (softmax: max, exp, sum)."""
    x = dsl.placeholder((3, 4), name="x")
    (y,) = get_op("softmax").lower([x], {"axis": 1}, [((3, 4), "float32")], ["probs"])
    names = [b.name for b in dsl.lower([x, y]).params] + [n.buffer.name for n in _allocs(dsl.lower([x, y]))]
    assert names[:2] == ["x", "probs"] and {"probs_max", "probs_exp", "probs_sum"} <= set(names)


def _allocs(kernel):
    from tessel.ir.nodes import Allocate, walk

    return [n for n in walk(kernel.body) if isinstance(n, Allocate)]


def test_reduce_mean_divides_by_count():
    """reduce_mean is the sum times the constant 1/n: the mean of (1..n) is (n+1)/2 exactly enough."""
    c = Case("reduce_mean", [S((2, 5))], {"axes": [1]})
    phs, outs = lowered(c)
    x = np.tile(np.arange(1, 6, dtype="float32"), (2, 1))
    got = garbage(outs)
    ts.build(phs + outs)(x, *got)
    np.testing.assert_allclose(got[0], [3.0, 3.0], rtol=1e-6)


def test_argmax_first_occurrence_and_int64():
    """argmax/argmin return the first index of the extreme value, as int64."""
    x = np.array([[1.0, 3.0, 3.0, 0.0], [-1.0, -1.0, 2.0, -1.0]], "float32")
    for op, want in (("argmax", [1, 2]), ("argmin", [3, 0])):
        c = Case(op, [S((2, 4))], {"axis": 1})
        phs, outs = lowered(c)
        got = garbage(outs)
        ts.build(phs + outs)(x, *got)
        assert got[0].dtype == np.int64 and got[0].tolist() == want


def test_softmax_is_stable_for_huge_logits():
    """Logits near float32's limit: exp would overflow without subtracting the row maximum."""
    c = Case("softmax", [S((1, 3))], {"axis": 1})
    phs, outs = lowered(c)
    x = np.array([[3e38, 3e38 - 1e32, -3e38]], "float32")
    got = garbage(outs)
    ts.build(phs + outs)(x, *got)
    assert np.all(np.isfinite(got[0])) and abs(float(got[0].sum()) - 1.0) < 1e-6
