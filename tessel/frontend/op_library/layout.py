"""Layout (injective) ops: reshape, transpose, expand, concat, slice, gather and pad.

Each lowers to one compute that reads its input at a remapped index, so fusion can inline it into
its neighbours. reshape groups dimensions whose products match, so (N, C, H, W) -> (N, C*H*W)
splits only the last index instead of linearising everything; slice follows ONNX (negative starts
and ends count from the end, out-of-range ones are clamped, negative steps walk backwards); gather
wraps negative indices as numpy and torch do; concat selects its source with nested where()s;
pad supports "constant" (the op set's mode), "reflect" and "edge".

Example:
    >>> from tessel.frontend.graph import Value
    >>> get_op("slice").infer([Value("x", (10,), "float32")], {"starts": [8], "ends": [1], "steps": [-3]})
    [((3,), 'float32')]
"""

from __future__ import annotations

from tessel.errors import ArgumentError, ShapeError
from tessel.frontend.op_library.common import (
    bload, broadcast_shapes, check_inputs, int_list, need_index, norm_axis, promote, size_of, to_np,
)
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.ir import dsl
from tessel.ir.dtypes import is_float


def _np():
    import numpy as np

    return np


def _positive(op: str, shape: tuple) -> tuple:
    """`shape` if no extent is negative. Zero extents are fine: the graph turns an op with an empty
    result into a constant (graph._empty_result), so no kernel ever has a zero extent."""
    if any(s < 0 for s in shape):
        raise ShapeError(f"{op}: the result would have shape {shape}, with a negative extent")
    return shape


# -- reshape ----------------------------------------------------------------------------------------


def _reshape_target(x_shape: tuple, attrs: dict) -> tuple:
    shape = list(int_list("reshape", attrs, "shape"))
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: target shape {tuple(shape)} has more than one -1")
    total = size_of(x_shape)
    if -1 in shape:
        rest = size_of([s for s in shape if s != -1])
        if rest <= 0 or total % rest:
            raise ShapeError(f"reshape: cannot infer the -1 in {tuple(shape)} from input shape {x_shape}")
        shape[shape.index(-1)] = total // rest
    if any(s < 0 for s in shape) or size_of(shape) != total:
        raise ShapeError(f"reshape: input 0 shape {x_shape} ({total} elements) cannot become {tuple(shape)}")
    return tuple(shape)


def _groups(ins: tuple, outs: tuple) -> list:
    """Pairs (input dims, output dims) of equal product, over the dims of extent > 1."""
    ii = [d for d, s in enumerate(ins) if s != 1]
    oo = [d for d, s in enumerate(outs) if s != 1]
    groups, a, b = [], 0, 0
    while a < len(ii):
        gi, go = [ii[a]], [oo[b]]
        pi, po = ins[ii[a]], outs[oo[b]]
        a, b = a + 1, b + 1
        while pi != po:
            if pi < po:
                gi.append(ii[a])
                pi *= ins[ii[a]]
                a += 1
            else:
                go.append(oo[b])
                po *= outs[oo[b]]
                b += 1
        groups.append((gi, go))
    return groups


@register("reshape", "injective")
class Reshape:
    """Same elements in row-major order, new shape (one -1 is inferred)."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("reshape", inputs, 1)
        return [(_positive("reshape", _reshape_target(tuple(x.shape), attrs)), x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, _ = outs[0]
        groups = _groups(x.shape, shape)

        def body(*o):
            idx = [0] * x.ndim
            for gi, go in groups:
                flat = None
                for d in go:  # row-major position within the group
                    flat = o[d] if flat is None else flat * shape[d] + o[d]
                stride = size_of([x.shape[d] for d in gi])
                for k, d in enumerate(gi):
                    stride //= x.shape[d]
                    v = flat if stride == 1 else flat // stride
                    idx[d] = v if k == 0 else v % x.shape[d]
            return x[tuple(idx)]

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        x = _np().asarray(arrays[0])
        return [x.reshape(_reshape_target(x.shape, attrs))]


# -- transpose --------------------------------------------------------------------------------------


def _perm(x_ndim: int, attrs: dict) -> tuple:
    perm = attrs.get("perm")
    if perm is None:
        return tuple(reversed(range(x_ndim)))
    perm = tuple(norm_axis("transpose", p, x_ndim, "perm entry") for p in perm)
    if sorted(perm) != list(range(x_ndim)):
        raise ShapeError(f"transpose: perm {tuple(attrs['perm'])} is not a permutation of the {x_ndim} input dims")
    return perm


@register("transpose", "injective")
class Transpose:
    """Output dim d is input dim perm[d] (default: reversed)."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("transpose", inputs, 1)
        perm = _perm(len(x.shape), attrs)
        return [(tuple(x.shape[p] for p in perm), x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, _ = outs[0]
        perm = _perm(x.ndim, attrs)
        inv = [perm.index(d) for d in range(x.ndim)]
        return [dsl.compute(shape, lambda *o: x[tuple(o[inv[d]] for d in range(x.ndim))], name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        x = _np().asarray(arrays[0])
        return [x.transpose(_perm(x.ndim, attrs))]


# -- expand -----------------------------------------------------------------------------------------


def _expand_shape(x_shape: tuple, attrs: dict) -> tuple:
    target = int_list("expand", attrs, "shape")
    off = len(target) - len(x_shape)
    # -1 keeps the input's extent (torch); otherwise numpy broadcasting both ways (ONNX Expand)
    target = tuple(x_shape[d - off] if s == -1 and d >= off else s for d, s in enumerate(target))
    if any(s < 0 for s in target):
        raise ShapeError(f"expand: target shape {target} has a -1 where input 0 has no dimension")
    try:
        return broadcast_shapes("expand", [x_shape, target])
    except ShapeError:
        raise ShapeError(f"expand: input 0 shape {x_shape} does not broadcast to the target shape {target}") from None


@register("expand", "injective")
class Expand:
    """Broadcast input 0 to `shape` (numpy rules; -1 keeps the input's extent)."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("expand", inputs, 1)
        return [(_positive("expand", _expand_shape(tuple(x.shape), attrs)), x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, _ = outs[0]
        return [dsl.compute(shape, lambda *o: bload(x, shape, o), name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        x = _np().asarray(arrays[0])
        return [_np().broadcast_to(x, _expand_shape(x.shape, attrs)).copy()]


# -- concat -----------------------------------------------------------------------------------------


@register("concat", "injective")
class Concat:
    """Inputs joined along `axis`; every other dim must agree."""

    @staticmethod
    def infer(inputs, attrs):
        if not inputs or any(v is None for v in inputs):
            raise ArgumentError(f"concat: expected one or more inputs, got {len(inputs)} (absent ones not allowed)")
        first = tuple(inputs[0].shape)
        if not first:
            raise ShapeError("concat: input 0 is a scalar; expected rank >= 1")
        axis = norm_axis("concat", attrs.get("axis", 0), len(first))
        total = 0
        for k, v in enumerate(inputs):
            s = tuple(v.shape)
            if len(s) != len(first):
                raise ShapeError(f"concat: input {k} has rank {len(s)} (shape {s}) but input 0 has rank {len(first)}")
            for d in range(len(s)):
                if d != axis and s[d] != first[d]:
                    raise ShapeError(f"concat: input {k} dim {d} is {s[d]} but input 0 dim {d} is {first[d]} "
                                     f"(only dim {axis}, the concat axis, may differ)")
            total += s[axis]
        out = first[:axis] + (total,) + first[axis + 1:]
        return [(out, promote("concat", [v.dtype for v in inputs]))]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        shape, dt = outs[0]
        axis = norm_axis("concat", attrs.get("axis", 0), len(shape))
        starts = [0]
        for t in inputs:
            starts.append(starts[-1] + t.shape[axis])

        def body(*o):
            def read(k):
                idx = list(o)
                idx[axis] = o[axis] - starts[k] if starts[k] else o[axis]
                return inputs[k][tuple(idx)].astype(dt)

            v = read(len(inputs) - 1)
            for k in range(len(inputs) - 2, -1, -1):
                v = dsl.where(o[axis] < starts[k + 1], read(k), v)
            return v

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        arrays = [np.asarray(a) for a in arrays]
        dt = promote("concat", [a.dtype.name for a in arrays])
        return [to_np(np.concatenate(arrays, axis=norm_axis("concat", attrs.get("axis", 0), arrays[0].ndim)), dt)]


# -- slice ------------------------------------------------------------------------------------------


def slice_plan(x_shape: tuple, attrs: dict) -> list:
    """(start, step, count) per input dim after ONNX's clamping rules."""
    starts = int_list("slice", attrs, "starts")
    ends = int_list("slice", attrs, "ends", len(starts))
    axes = int_list("slice", attrs, "axes", len(starts), default=tuple(range(len(starts))))
    steps = int_list("slice", attrs, "steps", len(starts), default=(1,) * len(starts))
    plan = [(0, 1, s) for s in x_shape]
    seen = set()
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = norm_axis("slice", ax, len(x_shape))
        if ax in seen:
            raise ShapeError(f"slice: axis {ax} is sliced twice")
        seen.add(ax)
        if sp == 0:
            raise ArgumentError(f"slice: step 0 on axis {ax}")
        n = x_shape[ax]
        st, en = st + n if st < 0 else st, en + n if en < 0 else en
        if sp > 0:
            st, en = min(max(st, 0), n), min(max(en, 0), n)
        else:
            st, en = min(max(st, 0), n - 1), min(max(en, -1), n - 1)
        count = max(0, -(-(en - st) // sp))  # 0: an empty result, which the graph makes a constant
        plan[ax] = (st, sp, count)
    return plan


@register("slice", "injective")
class Slice:
    """x[start:end:step] along `axes` (ONNX Slice semantics, attributes instead of inputs)."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("slice", inputs, 1)
        return [(tuple(c for _, _, c in slice_plan(tuple(x.shape), attrs)), x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, _ = outs[0]
        plan = slice_plan(x.shape, attrs)

        def index(o, st, sp):
            v = o if sp == 1 else o * sp
            return v + st if st else v

        return [dsl.compute(shape, lambda *o: x[tuple(index(o[d], *plan[d][:2]) for d in range(x.ndim))],
                            name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x = np.asarray(arrays[0])
        idx = [st + sp * np.arange(c) for st, sp, c in slice_plan(x.shape, attrs)]
        return [x[np.ix_(*idx)] if idx else x.copy()]


# -- gather -----------------------------------------------------------------------------------------


@register("gather", "injective")
class Gather:
    """numpy.take(data, indices, axis): negative indices count from the end."""

    @staticmethod
    def infer(inputs, attrs):
        data, idx = check_inputs("gather", inputs, 2)
        need_index("gather", idx.dtype, 1)
        if not data.shape:
            raise ShapeError("gather: input 0 is a scalar; expected rank >= 1")
        axis = norm_axis("gather", attrs.get("axis", 0), len(data.shape))
        return [(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]), data.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        data, idx = inputs
        shape, _ = outs[0]
        axis = norm_axis("gather", attrs.get("axis", 0), data.ndim)
        n, q = data.shape[axis], idx.ndim

        def body(*o):
            i = idx[tuple(o[axis:axis + q])]
            i = dsl.where(i < 0, i + n, i)
            return data[tuple(o[:axis]) + (i,) + tuple(o[axis + q:])]

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        data, idx = np.asarray(arrays[0]), np.asarray(arrays[1])
        return [np.take(data, idx.astype(np.int64), axis=norm_axis("gather", attrs.get("axis", 0), data.ndim))]


# -- pad --------------------------------------------------------------------------------------------

_PAD_MODES = ("constant", "reflect", "edge")


def _pads(x_shape: tuple, attrs: dict) -> tuple:
    nd = len(x_shape)
    pads = int_list("pad", attrs, "pads", 2 * nd)
    mode = attrs.get("mode", "constant")
    if mode not in _PAD_MODES:
        raise ArgumentError(f"pad: mode {mode!r} is not one of {_PAD_MODES}")
    begin, end = pads[:nd], pads[nd:]
    for d in range(nd):
        if mode != "constant" and (begin[d] < 0 or end[d] < 0):
            raise ArgumentError(f"pad: negative pads {pads} need mode 'constant', not {mode!r}")
        if mode == "reflect" and max(begin[d], end[d]) >= x_shape[d]:
            raise ShapeError(f"pad: reflect padding {max(begin[d], end[d])} on dim {d} must be below its extent "
                             f"{x_shape[d]}")
    out = tuple(s + b + e for s, b, e in zip(x_shape, begin, end))
    return begin, end, mode, _positive("pad", out)


@register("pad", "injective")
class Pad:
    """Pad (or, with negative pads, crop) each dim: pads = (begin..., end...); `value` fills in
    constant mode."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("pad", inputs, 1)
        return [(_pads(tuple(x.shape), attrs)[3], x.dtype)]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        begin, end, mode, _ = _pads(x.shape, attrs)
        fill = attrs.get("value", 0)
        fill = dsl.const(bool(fill) if dt == "bool" else float(fill) if is_float(dt) else int(fill), dt)

        def body(*o):
            idx, guard = [], None
            for d in range(x.ndim):
                i = o[d] - begin[d] if begin[d] else o[d]
                n = x.shape[d]
                if mode == "edge":
                    i = dsl.minimum(dsl.maximum(i, 0), n - 1) if begin[d] or end[d] else i
                elif mode == "reflect":
                    i = (n - 1) - dsl.abs((n - 1) - dsl.abs(i)) if begin[d] or end[d] else i
                else:
                    for cond in ([i >= 0] if begin[d] > 0 else []) + ([i < n] if end[d] > 0 else []):
                        guard = cond if guard is None else guard & cond
                idx.append(i)
            v = x[tuple(idx)]
            return dsl.where(guard, v, fill) if guard is not None else v

        return [dsl.compute(shape, body, name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        x = np.asarray(arrays[0])
        begin, end, mode, _ = _pads(x.shape, attrs)
        x = x[tuple(slice(-b if b < 0 else 0, x.shape[d] + e if e < 0 else None)
                    for d, (b, e) in enumerate(zip(begin, end)))]
        widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
        if x.ndim == 0:  # nothing to pad (np.pad refuses the empty, float-typed width list)
            return [x.copy()]
        if mode == "constant":
            return [np.pad(x, widths, mode="constant", constant_values=attrs.get("value", 0)).astype(x.dtype)]
        return [np.pad(x, widths, mode=mode)]
