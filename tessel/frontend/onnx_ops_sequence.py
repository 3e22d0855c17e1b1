"""ONNX sequence ops, resolved at import time: a sequence is a `Sequence`, a tuple of Graph values
the importer keeps in its name map, so `SequenceConstruct`, `SequenceEmpty`, `SequenceAt`,
`SequenceInsert`, `SequenceErase`, `SequenceLength`, `SplitToSequence`, `ConcatFromSequence` and
`SequenceMap` (its body inlined once per item) only rearrange Graph values or add slices and
concats. Shapes are static, so the number of items is always known; a position must be known at
import time (a constant, or an input the caller binds). Model inputs and outputs that are
sequences are flattened to one graph input/output per item (`onnx_import.sequence_item`).

Optionals (`Optional`, `OptionalHasElement`, `OptionalGetElement`) are resolved the same way: an
optional is its content, or `NO_VALUE` when empty (a model input whose value is None).

Example:
    >>> all(op in CONVERTERS for op in ("SequenceAt", "SplitToSequence", "ConcatFromSequence"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, const_ints, converter, empty, ins, norm_axis, reshape  # noqa: F401
from tessel.frontend.onnx_ops_tensor import slice_axis


class Sequence(tuple):
    """An ONNX sequence of tensors while importing: the Graph values of its items, in order."""


class _NoValue:
    """The value of an empty ONNX optional (an optional that holds something is just that thing)."""

    def __repr__(self):
        return "NO_VALUE"


NO_VALUE = _NoValue()


def _seq(ctx, v, what: str = "input 0") -> Sequence:
    if not isinstance(v, Sequence):
        raise ctx.unsupported(f"{what} is a tensor where a sequence is expected")
    return v


def _position(ctx, v, n: int, default: int, insert: bool = False) -> int:
    if v is None:
        return default
    p = const_ints(ctx, v, "the position")[0]
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        raise ctx.unsupported(f"position {p} is out of range for a sequence of {n} item(s)")
    return p + n if p < 0 else p


def _tensor(ctx, v, what: str):
    if isinstance(v, Sequence):
        raise ctx.unsupported(f"{what} is a sequence where a tensor is expected")
    return v


@converter("SequenceConstruct")
def _construct(ctx, node):
    return [Sequence(_tensor(ctx, v, "an input") for v in ins(ctx, node))]


@converter("SequenceEmpty")
def _empty(ctx, node):
    return [Sequence()]


@converter("SequenceAt")
def _at(ctx, node):
    seq, pos = ins(ctx, node)
    seq = _seq(ctx, seq)
    return [seq[_position(ctx, pos, len(seq), 0)]]


@converter("SequenceInsert")
def _insert(ctx, node):
    vals = ins(ctx, node)
    seq, x = _seq(ctx, vals[0]), _tensor(ctx, vals[1], "input 1")
    p = _position(ctx, vals[2] if len(vals) > 2 else None, len(seq), len(seq), insert=True)
    return [Sequence(seq[:p] + (x,) + seq[p:])]


@converter("SequenceErase")
def _erase(ctx, node):
    vals = ins(ctx, node)
    seq = _seq(ctx, vals[0])
    if not seq:
        raise ctx.unsupported("erasing from an empty sequence")
    p = _position(ctx, vals[1] if len(vals) > 1 else None, len(seq), len(seq) - 1)
    return [Sequence(seq[:p] + seq[p + 1:])]


@converter("SequenceLength")
def _length(ctx, node):
    (seq,) = ins(ctx, node)
    return [ctx.const(np.array(len(_seq(ctx, seq)), np.int64), "length")]


@converter("SplitToSequence")
def _split_to_sequence(ctx, node):
    vals = ins(ctx, node)
    x = _tensor(ctx, vals[0], "input 0")
    split = vals[1] if len(vals) > 1 else None
    shape = ctx.shape(x)
    axis = norm_axis(ctx, ctx.attr(node, "axis", 0), len(shape))
    n = shape[axis]
    if split is None:
        sizes, squeeze = [1] * n, not ctx.attr(node, "keepdims", 1)
    else:
        given = np.asarray(ctx.need_const(split, "SplitToSequence's split"))
        if given.ndim == 0:
            k = int(given)
            if k <= 0:
                raise ctx.unsupported(f"split size {k}")
            sizes = [k] * (n // k) + ([n % k] if n % k else [])
        else:
            sizes = [int(s) for s in given.reshape(-1)]
        squeeze = False
        if sum(sizes) != n or min(sizes, default=0) < 0:
            raise ctx.unsupported(f"split sizes {sizes} do not add up to dimension {axis} of shape {shape}")
    items, start = [], 0
    for size in sizes:
        part = slice_axis(ctx, x, axis, start, start + size)
        start += size
        items.append(reshape(ctx, part, shape[:axis] + shape[axis + 1:]) if squeeze else part)
    return [Sequence(items)]


@converter("ConcatFromSequence")
def _concat_from_sequence(ctx, node):
    (seq,) = ins(ctx, node)
    seq = _seq(ctx, seq)
    if not seq:
        raise ctx.unsupported("concatenating an empty sequence (its dtype and shape are unknown)")
    shape = ctx.shape(seq[0])
    new_axis = bool(ctx.attr(node, "new_axis", 0))
    axis = norm_axis(ctx, ctx.attr(node, "axis"), len(shape) + new_axis)
    parts = [reshape(ctx, v, ctx.shape(v)[:axis] + (1,) + ctx.shape(v)[axis:]) for v in seq] if new_axis else list(seq)
    nonempty = [v for v in parts if ctx.shape(v)[axis] > 0] or parts[:1]
    return [nonempty[0] if len(nonempty) == 1 else ctx.op("concat", nonempty, axis=axis)]


@converter("SequenceMap")
def _sequence_map(ctx, node):
    vals = ins(ctx, node)
    first = _seq(ctx, vals[0])
    body = ctx.graph_attr(node, "body")
    n = len(first)
    for k, v in enumerate(vals[1:], start=1):
        if isinstance(v, Sequence) and len(v) != n:
            raise ctx.unsupported(f"input {k} has {len(v)} item(s), input 0 has {n}")
    outs: list = [[] for _ in body.output]
    base = ctx.stack[-1][1]
    for i in range(n):
        args = [v[i] if isinstance(v, Sequence) else v for v in vals]
        for k, y in enumerate(ctx.inline_graph(body, args, f"{base}::item{i}::")):
            outs[k].append(y)
    return [Sequence(o) for o in outs]


# -- optionals: an optional is its content, or NO_VALUE ----------------------------------------------

@converter("Optional")
def _optional(ctx, node):
    vals = ins(ctx, node)
    return [vals[0] if vals and vals[0] is not None else NO_VALUE]


@converter("OptionalHasElement")
def _optional_has_element(ctx, node):
    vals = ins(ctx, node)
    has = bool(vals) and vals[0] is not None and vals[0] is not NO_VALUE
    return [ctx.const(np.array(has), "has_element")]


@converter("OptionalGetElement")
def _optional_get_element(ctx, node):
    (v,) = ins(ctx, node)
    if v is None or v is NO_VALUE:
        raise ctx.unsupported("the optional is empty (onnx: an error at run time)")
    return [v]
