"""The op registry: for each graph op, its shape rule, its lowering to the tensor DSL, a numpy
reference, and its kind (which fusion uses).

An op is registered once with `@register(name, kind=...)` on a class with three static methods:
`infer(inputs, attrs) -> [(shape, dtype), ...]` (inputs are graph Values, None for an absent
optional input), `lower(inputs, attrs, outs, names) -> [Tensor, ...]` (inputs are DSL tensors,
`outs` the inferred (shape, dtype) of each output, `names` the output value names), and
`reference(arrays, attrs) -> [ndarray, ...]` (plain numpy, independent of the lowering: tests
compare the two, and constant folding uses it).

Kinds: "elementwise" (output element i reads input element i, after broadcasting: fuses into
producers and consumers), "injective" (layout ops: reshape, transpose, slice, concat...: fuse like
elementwise), "reduction", "contraction" (matmul, conv: anchors whose epilogues fuse in),
"opaque" (everything else: a kernel of its own), and "control" (`if`, `loop`: they hold subgraphs
and have no lowering; the model compiler runs them as steps between compiled programs, see
tessel.compiler.model_control; `all_ops()` leaves them out, `control_ops()` lists them).

The op set (names and attributes are the contract between importers and lowerings; axes are
non-negative after import, shapes static):

    elementwise, numpy broadcasting:  add sub mul div pow maximum minimum eq ne lt le gt ge
                                      logical_and logical_or where(cond, a, b)
    elementwise, unary:               neg abs exp log sqrt rsqrt tanh sigmoid erf sin cos floor ceil
                                      reciprocal logical_not relu silu gelu(approximate="none"|"tanh")
                                      leaky_relu(alpha) clip(min=None, max=None) cast(dtype)
                                      batch_norm(eps) inputs x, scale, bias, mean, var (channel axis 1)
    contraction:                      matmul (numpy matmul semantics, batch broadcasting, 1-D operands)
                                      linear inputs x, w (out, in), optional b
                                      conv(stride, padding, dilation, groups) inputs x (N, C, *spatial),
                                        w (F, C/groups, *kernel), optional b; 1-D and 2-D spatial;
                                        padding is per side: (begin..., end...)
    reduction:                        reduce_sum reduce_mean reduce_max reduce_min (axes, keepdims)
                                      argmax argmin (axis, keepdims) -> int64
                                      softmax log_softmax (axis)
                                      layer_norm(axes, eps) inputs x, optional weight, optional bias
                                      rms_norm(axes, eps) inputs x, optional weight
                                      max_pool avg_pool (kernel, stride, padding, dilation, ceil_mode,
                                        count_include_pad) over the trailing 1 or 2 dims
    injective (layout):               reshape(shape) transpose(perm) expand(shape) concat(axis)
                                      slice(starts, ends, axes, steps) gather(axis) inputs data, indices
                                      pad(pads, value, mode="constant"|"reflect"|"edge")
                                      squeeze/unsqueeze go through reshape
    opaque:                           sdpa(is_causal, scale) inputs q, k, v, optional mask
                                        (batch..., L, E) layout as torch's scaled_dot_product_attention
                                      rfft(n, axis) -> (..., n//2+1, 2) real/imag pairs (last dim 2)
                                      irfft(n, axis) inputs (..., m, 2) -> (..., n)
    control:                          if(then_graph, else_graph) inputs cond, *captures
                                      loop(body, start) inputs trip, cond (either may be None),
                                        *carried, *captures -> the final carried values

Example:
    >>> get_op("add").kind
    'elementwise'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tessel.errors import TesselError


class UnsupportedOpError(TesselError):
    """An op that tessel does not know (the message names the op type and the node)."""


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str
    infer: Callable
    lower: Callable
    reference: Callable


_REGISTRY: dict[str, OpDef] = {}  # filled at import time by @register; never changed afterwards

KINDS = ("elementwise", "injective", "reduction", "contraction", "opaque", "control")


def register(name: str, kind: str):
    """Class decorator registering an op (see the module docstring for the three methods)."""
    if kind not in KINDS:
        raise ValueError(f"op kind {kind!r} is not one of {KINDS}")

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"op '{name}' registered twice")
        _REGISTRY[name] = OpDef(name, kind, cls.infer, cls.lower, cls.reference)
        return cls

    return deco


def get_op(name: str, where: str = "") -> OpDef:
    _load_op_modules()
    op = _REGISTRY.get(name)
    if op is None:
        at = f" at {where}" if where else ""
        raise UnsupportedOpError(f"unsupported op '{name}'{at}")
    return op


def all_ops() -> list[str]:
    """The ops that lower to kernels (control ops excluded: see `control_ops`)."""
    _load_op_modules()
    return sorted(n for n, op in _REGISTRY.items() if op.kind != "control")


def control_ops() -> list[str]:
    """The control-flow ops (`if`, `loop`): subgraphs run by the model compiler, no lowering.

    >>> control_ops()
    ['if', 'loop']
    """
    _load_op_modules()
    return sorted(n for n, op in _REGISTRY.items() if op.kind == "control")


_OP_MODULES = ("tessel.frontend.op_library",)


def _load_op_modules() -> None:
    import importlib

    for m in _OP_MODULES:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            if e.name != m:
                raise
