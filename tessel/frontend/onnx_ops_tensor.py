"""ONNX layout and shape op converters (registered into onnx_ops.CONVERTERS on import).

Shapes are static, so Shape, Size, ConstantOfShape, Range and EyeLike become constants; Squeeze,
Unsqueeze, Flatten, Tile and DepthToSpace become reshape/expand/transpose; a Slice with a negative
step, GatherElements, GatherND, Pad in reflect/edge/wrap mode become gathers with constant indices
computed here with numpy (their operand sizes are known), so the op set needs no extra ops.

Example:
    >>> from tessel.frontend.onnx_ops import CONVERTERS
    >>> all(op in CONVERTERS for op in ("Reshape", "Slice", "Pad", "Shape", "Range"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.errors import ShapeError
from tessel.frontend.onnx_ops import (
    cast, const_float, const_ints, converter, empty, ins, norm_axis, np_of, opt, reshape, scalar,
)


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


# -- constants and shapes ------------------------------------------------------------------------------

@converter("Constant")
def _constant(ctx, node):
    for a in node.attribute:
        name = a.name
        if name == "value":
            return [ctx.const(ctx.attr(node, "value"), node.output[0])]
        if name in ("value_float", "value_int"):
            dt = np.float32 if name == "value_float" else np.int64
            return [ctx.const(np.array(ctx.attr(node, name), dt), node.output[0])]
        if name in ("value_floats", "value_ints"):
            dt = np.float32 if name == "value_floats" else np.int64
            return [ctx.const(np.array(ctx.attr(node, name), dt), node.output[0])]
    raise ctx.unsupported("only tensor, float(s) and int(s) values are supported")


@converter("Shape")
def _shape(ctx, node):
    (x,) = ins(ctx, node)
    shape = ctx.shape(x)
    r = len(shape)
    start, end = ctx.attr(node, "start", 0), ctx.attr(node, "end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return [ctx.const(np.array(shape[start:end], np.int64), "shape")]


@converter("Size")
def _size(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.const(np.array(_numel(ctx.shape(x)), np.int64), "size")]


@converter("ConstantOfShape")
def _constant_of_shape(ctx, node):
    (s,) = ins(ctx, node)
    shape = const_ints(ctx, s, "the shape")
    value = ctx.attr(node, "value")
    value = np.zeros(1, np.float32) if value is None else value
    return [ctx.const(np.full(shape, value.reshape(-1)[0], value.dtype), "filled")]


@converter("Range")
def _range(ctx, node):
    start, limit, delta = (ctx.need_const(v, what) for v, what in zip(ins(ctx, node), ("start", "limit", "delta")))
    n = max(int(np.ceil((limit.item() - start.item()) / delta.item())), 0)
    return [ctx.const((start + np.arange(n) * delta).astype(start.dtype), "range")]


@converter("EyeLike")
def _eye_like(ctx, node):
    from tessel.frontend.onnx_import import onnx_dtype

    (x,) = ins(ctx, node)
    to = ctx.attr(node, "dtype")
    dt = ctx.dtype(x) if to is None else onnx_dtype(to, f"{ctx.where()} attribute 'dtype'")
    n, m = ctx.shape(x)
    return [ctx.const(np.eye(n, m, int(ctx.attr(node, "k", 0)), dtype=np_of(dt)), "eye")]


@converter("Dropout")
def _dropout(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    training = opt(vals, 2)
    if training is not None and bool(np.asarray(ctx.need_const(training, "training_mode")).reshape(-1)[0]):
        ratio = opt(vals, 1)
        if ratio is None or const_float(ctx, ratio, "ratio") != 0.0:
            raise ctx.unsupported("training mode (random dropout)")
    if int(ctx.attr(node, "is_test", 1)) == 0 and ctx.version(node) < 7:
        raise ctx.unsupported("training mode (random dropout)")
    mask = ctx.const(np.ones(ctx.shape(x), bool), "dropout_mask")
    return [x, mask]


# -- reshapes ---------------------------------------------------------------------------------------------

@converter("Reshape")
def _reshape(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    target = ctx.attr(node, "shape") if ctx.version(node) < 5 else const_ints(ctx, vals[1], "the target shape")
    allowzero = int(ctx.attr(node, "allowzero", 0))
    return [reshape(ctx, x, _reshape_target(ctx, ctx.shape(x), target, allowzero))]


def _reshape_target(ctx, shape, target, allowzero) -> tuple:
    out = []
    for i, s in enumerate(target):
        if s == 0 and not allowzero:
            if i >= len(shape):
                raise ShapeError(f"{ctx.where()}: target shape {tuple(target)} copies dim {i} (0), but the "
                                 f"input has shape {shape}")
            s = shape[i]
        out.append(int(s))
    if out.count(-1) > 1:
        raise ShapeError(f"{ctx.where()}: target shape {tuple(target)} has more than one -1")
    if -1 in out:
        rest = _numel([s for s in out if s != -1])
        if rest == 0 or _numel(shape) % rest:
            raise ShapeError(f"{ctx.where()}: cannot reshape {shape} into {tuple(target)}")
        out[out.index(-1)] = _numel(shape) // rest
    if _numel(out) != _numel(shape) or any(s < 0 for s in out):
        raise ShapeError(f"{ctx.where()}: cannot reshape {shape} ({_numel(shape)} elements) into {tuple(out)}")
    return tuple(out)


@converter("Flatten")
def _flatten(ctx, node):
    (x,) = ins(ctx, node)
    shape = ctx.shape(x)
    axis = ctx.attr(node, "axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        raise ShapeError(f"{ctx.where()}: axis {ctx.attr(node, 'axis', 1)} is out of range for rank {len(shape)}")
    return [reshape(ctx, x, (_numel(shape[:axis]), _numel(shape[axis:])))]


def _axes_operand(ctx, node, vals, k: int):
    """Axes given as attribute (older opsets) or as input #k (None when absent)."""
    if len(vals) > k and vals[k] is not None:
        return const_ints(ctx, vals[k], "axes")
    return ctx.attr(node, "axes")


@converter("Squeeze")
def _squeeze(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    shape = ctx.shape(x)
    axes = _axes_operand(ctx, node, vals, 1)
    if axes is None:
        axes = [i for i, s in enumerate(shape) if s == 1]
    axes = {norm_axis(ctx, a, len(shape), "squeeze axis") for a in axes}
    for a in axes:
        if shape[a] != 1:
            raise ShapeError(f"{ctx.where()}: cannot squeeze axis {a} of shape {shape} (extent {shape[a]})")
    return [reshape(ctx, x, [s for i, s in enumerate(shape) if i not in axes])]


@converter("Unsqueeze")
def _unsqueeze(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    shape = ctx.shape(x)
    axes = _axes_operand(ctx, node, vals, 1) or []
    rank = len(shape) + len(axes)
    axes = sorted(norm_axis(ctx, a, rank, "unsqueeze axis") for a in axes)
    out, it = [], iter(shape)
    for i in range(rank):
        out.append(1 if i in axes else next(it))
    return [reshape(ctx, x, out)]


@converter("Transpose")
def _transpose(ctx, node):
    (x,) = ins(ctx, node)
    rank = len(ctx.shape(x))
    perm = ctx.attr(node, "perm")
    perm = list(range(rank))[::-1] if perm is None else [norm_axis(ctx, p, rank, "perm entry") for p in perm]
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"{ctx.where()}: perm {perm} is not a permutation of {rank} axes")
    return [x if perm == list(range(rank)) else ctx.op("transpose", [x], perm=tuple(perm))]


@converter("Expand")
def _expand(ctx, node):
    x, s = ins(ctx, node)
    target = const_ints(ctx, s, "the target shape")
    try:
        out = tuple(int(d) for d in np.broadcast_shapes(ctx.shape(x), tuple(target)))
    except ValueError:
        raise ShapeError(f"{ctx.where()}: cannot expand shape {ctx.shape(x)} to {tuple(target)}") from None
    return [x if out == ctx.shape(x) else empty(ctx, out, ctx.dtype(x)) or ctx.op("expand", [x], shape=out)]


@converter("Tile")
def _tile(ctx, node):
    x, r = ins(ctx, node)
    shape = ctx.shape(x)
    reps = const_ints(ctx, r, "repeats")
    if len(reps) != len(shape):
        raise ShapeError(f"{ctx.where()}: {len(reps)} repeats for an input of rank {len(shape)}")
    if all(k == 1 for k in reps):
        return [x]
    # (d0, d1) -> (1, d0, 1, d1) -> expand (r0, d0, r1, d1) -> (r0*d0, r1*d1)
    inter = [v for d in shape for v in (1, d)]
    big = [v for k, d in zip(reps, shape) for v in (k, d)]
    y = ctx.op("expand", [reshape(ctx, x, inter)], shape=tuple(big))
    return [reshape(ctx, y, [k * d for k, d in zip(reps, shape)])]


@converter("DepthToSpace", "SpaceToDepth")
def _depth_space(ctx, node):
    (x,) = ins(ctx, node)
    n, c, h, w = ctx.shape(x)
    b = int(ctx.attr(node, "blocksize"))
    mode = ctx.attr(node, "mode", "DCR")
    if node.op_type == "SpaceToDepth":
        y = reshape(ctx, x, (n, c, h // b, b, w // b, b))
        y = ctx.op("transpose", [y], perm=(0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4))
        return [reshape(ctx, y, (n, c * b * b, h // b, w // b))]
    if mode == "DCR":
        y = ctx.op("transpose", [reshape(ctx, x, (n, b, b, c // (b * b), h, w))], perm=(0, 3, 4, 1, 5, 2))
    else:
        y = ctx.op("transpose", [reshape(ctx, x, (n, c // (b * b), b, b, h, w))], perm=(0, 1, 4, 2, 5, 3))
    return [reshape(ctx, y, (n, c // (b * b), h * b, w * b))]


# -- joining and splitting --------------------------------------------------------------------------------

@converter("Concat")
def _concat(ctx, node):
    xs = [x for x in ins(ctx, node) if x is not None]
    axis = norm_axis(ctx, ctx.attr(node, "axis"), len(ctx.shape(xs[0])))
    nonempty = [x for x in xs if ctx.shape(x)[axis] > 0] or xs[:1]
    return [nonempty[0] if len(nonempty) == 1 else ctx.op("concat", nonempty, axis=axis)]


def slice_axis(ctx, x, axis: int, start: int, end: int, step: int = 1) -> str:
    """x[start:end:step] along `axis` with start/end already clamped and non-negative (step > 0)."""
    shape = ctx.shape(x)
    if (start, end, step) == (0, shape[axis], 1):
        return x
    c = ctx.try_const(x)
    if c is not None:  # constants (mostly shape arithmetic) slice in numpy, empty results included
        return ctx.const(c[(slice(None),) * axis + (slice(start, end, step),)], "sliced")
    out = shape[:axis] + (len(range(start, end, step)),) + shape[axis + 1:]
    return empty(ctx, out, ctx.dtype(x)) or ctx.op("slice", [x], starts=(start,), ends=(end,), axes=(axis,),
                                                  steps=(step,))


@converter("Split")
def _split(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    shape = ctx.shape(x)
    axis = norm_axis(ctx, ctx.attr(node, "axis", 0), len(shape))
    n_out = len(node.output)
    sizes = const_ints(ctx, vals[1], "split sizes") if opt(vals, 1) is not None else ctx.attr(node, "split")
    if sizes is None:
        k = int(ctx.attr(node, "num_outputs", n_out))
        chunk = -(-shape[axis] // k)
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(k)]
    if sum(sizes) != shape[axis] or len(sizes) != n_out:
        raise ShapeError(f"{ctx.where()}: split sizes {sizes} do not cover extent {shape[axis]} in {n_out} outputs")
    outs, at = [], 0
    for s in sizes:
        outs.append(slice_axis(ctx, x, axis, at, at + s))
        at += s
    return outs


@converter("Slice")
def _slice(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    shape = ctx.shape(x)
    if ctx.version(node) < 10:
        starts, ends, axes = ctx.attr(node, "starts"), ctx.attr(node, "ends"), ctx.attr(node, "axes")
        steps = None
    else:
        starts, ends = const_ints(ctx, vals[1], "starts"), const_ints(ctx, vals[2], "ends")
        axes = const_ints(ctx, vals[3], "axes") if opt(vals, 3) is not None else None
        steps = const_ints(ctx, vals[4], "steps") if opt(vals, 4) is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    axes = [norm_axis(ctx, a, len(shape)) for a in axes]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{ctx.where()}: repeated axes {axes}")
    pos = {"starts": [], "ends": [], "axes": [], "steps": []}
    negative = []
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = shape[a]
        if st == 0:
            raise ShapeError(f"{ctx.where()}: step 0 on axis {a}")
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
            if (s, e, st) != (0, d, 1):
                for k, v in zip(("starts", "ends", "axes", "steps"), (s, max(e, s), a, st)):
                    pos[k].append(v)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            negative.append((a, np.arange(s, e, st, dtype=np.int64)))
    c = ctx.try_const(x)
    if c is not None:  # constants (mostly shape arithmetic) slice in numpy, empty results included
        index = [slice(None)] * len(shape)
        for a, s, e, st in zip(pos["axes"], pos["starts"], pos["ends"], pos["steps"]):
            index[a] = slice(s, e, st)
        for a, idx in negative:
            index[a] = idx
        return [ctx.const(_index_const(c, index), "sliced")]
    out = list(shape)
    for a, s, e, st in zip(pos["axes"], pos["starts"], pos["ends"], pos["steps"]):
        out[a] = len(range(s, e, st))
    for a, idx in negative:
        out[a] = len(idx)
    y = empty(ctx, out, ctx.dtype(x))
    if y is not None:
        return [y]
    y = x
    if pos["axes"]:
        y = ctx.op("slice", [y], **{k: tuple(v) for k, v in pos.items()})
    for a, idx in negative:
        y = take(ctx, y, idx, a)
    return [y]


def _index_const(c, index):
    for a, ix in enumerate(index):
        c = c[(slice(None),) * a + (ix,)]
    return c


def take(ctx, x, idx, axis: int) -> str:
    """x gathered with constant (non-negative) 1-D indices `idx` along `axis`: a slice when they step
    evenly (one index, a range, a reversal), else a gather; constants are indexed in numpy."""
    idx = np.asarray(idx, np.int64).reshape(-1)
    n = ctx.shape(x)[axis]
    if len(idx) == n and np.array_equal(idx, np.arange(n)):
        return x
    c = ctx.try_const(x)
    if c is not None:
        return ctx.const(np.take(c, idx, axis=axis), "taken")
    out = ctx.shape(x)[:axis] + (len(idx),) + ctx.shape(x)[axis + 1:]
    if len(idx) == 0:
        return empty(ctx, out, ctx.dtype(x))
    steps = np.unique(np.diff(idx)) if len(idx) > 1 else np.array([1])
    if len(steps) == 1 and steps[0] != 0:
        step = int(steps[0])
        end = int(idx[-1]) + step
        end = -n - 1 if end < 0 else end  # ONNX slice: an end below -n means "past the first element"
        return ctx.op("slice", [x], starts=(int(idx[0]),), ends=(end,), axes=(axis,), steps=(step,))
    return ctx.op("gather", [x, ctx.const(idx, "indices")], axis=axis)


# -- gathers ----------------------------------------------------------------------------------------------

def _nonneg_indices(ctx, idx, extent) -> str:
    """Indices with negative entries wrapped (ONNX allows -extent..extent-1)."""
    c = ctx.try_const(idx)
    if c is not None:
        return ctx.const(np.where(c < 0, c + extent, c).astype(c.dtype), "indices")
    dt = ctx.dtype(idx)
    neg = ctx.op("lt", [idx, scalar(ctx, 0, dt)])
    return ctx.op("where", [neg, ctx.op("add", [idx, scalar(ctx, extent, dt)]), idx])


def _nonneg_indices_per_dim(ctx, idx, extents) -> str:
    """Like _nonneg_indices, the last dim of `idx` indexing dims of the given extents."""
    c = ctx.try_const(idx)
    ext = np.asarray(extents, dtype=np.int64)
    if c is not None:
        return ctx.const(np.where(c < 0, c + ext, c).astype(c.dtype), "indices")
    dt = ctx.dtype(idx)
    neg = ctx.op("lt", [idx, scalar(ctx, 0, dt)])
    return ctx.op("where", [neg, ctx.op("add", [idx, ctx.const(ext.astype(np_of(dt)), "extents")]), idx])


@converter("Gather")
def _gather(ctx, node):
    x, idx = ins(ctx, node)
    axis = norm_axis(ctx, ctx.attr(node, "axis", 0), len(ctx.shape(x)))
    xs = ctx.shape(x)
    out = xs[:axis] + ctx.shape(idx) + xs[axis + 1:]
    c = ctx.try_const(idx)
    if c is not None and c.ndim <= 1 and c.size:  # constant indices (x[:, 0], x[..., 2:5]): a slice if they step
        y = take(ctx, x, np.where(c < 0, c + xs[axis], c).reshape(-1), axis)
        return [reshape(ctx, y, out)]
    return [empty(ctx, out, ctx.dtype(x)) or ctx.op("gather", [x, _nonneg_indices(ctx, idx, xs[axis])], axis=axis)]


@converter("GatherElements")
def _gather_elements(ctx, node):
    """out[i, j] = x[idx[i, j], j] (axis 0): a gather from the flattened x at computed flat indices."""
    x, idx = ins(ctx, node)
    xs, ishape = ctx.shape(x), ctx.shape(idx)
    axis = norm_axis(ctx, ctx.attr(node, "axis", 0), len(xs))
    idx = cast(ctx, _nonneg_indices(ctx, idx, xs[axis]), "int64")
    strides = np.array([_numel(xs[d + 1:]) for d in range(len(xs))], np.int64)
    coords = np.indices(ishape, dtype=np.int64)
    offset = sum(coords[d] * strides[d] for d in range(len(xs)) if d != axis) + np.zeros(ishape, np.int64)
    flat = ctx.op("add", [ctx.op("mul", [idx, scalar(ctx, strides[axis], "int64")]), ctx.const(offset, "offsets")])
    return [ctx.op("gather", [reshape(ctx, x, (_numel(xs),)), flat], axis=0)]


@converter("GatherND")
def _gather_nd(ctx, node):
    """A gather from x flattened over its batch and indexed dims, at flat row indices (with batch_dims b,
    batch element i's rows start at i times the rows of one batch element)."""
    x, idx = ins(ctx, node)
    b = int(ctx.attr(node, "batch_dims", 0))
    xs, ishape = ctx.shape(x), ctx.shape(idx)
    k = ishape[-1]
    idx = cast(ctx, _nonneg_indices_per_dim(ctx, idx, xs[b:b + k]), "int64")
    strides = np.array([_numel(xs[b + d + 1:b + k]) for d in range(k)], np.int64)
    flat = ctx.op("reduce_sum", [ctx.op("mul", [idx, ctx.const(strides, "strides")])], axes=(len(ishape) - 1,),
                  keepdims=False)
    if b:
        batch = (np.arange(_numel(xs[:b]), dtype=np.int64) * _numel(xs[b:b + k])).reshape(
            tuple(xs[:b]) + (1,) * (len(ishape) - 1 - b))
        flat = ctx.op("add", [flat, ctx.const(batch, "batch_rows")])
    return [ctx.op("gather", [reshape(ctx, x, (_numel(xs[:b + k]),) + tuple(xs[b + k:])), flat], axis=0)]


@converter("OneHot")
def _one_hot(ctx, node):
    idx, depth, values = ins(ctx, node)
    d = int(np.asarray(ctx.need_const(depth, "depth")).reshape(-1)[0])
    rank = len(ctx.shape(idx)) + 1
    axis = norm_axis(ctx, ctx.attr(node, "axis", -1), rank)
    idx = cast(ctx, idx, "int64")  # float indices truncate, as the ONNX reference does
    idx = _nonneg_indices(ctx, idx, d)
    idx = reshape(ctx, idx, ctx.shape(idx)[:axis] + (1,) + ctx.shape(idx)[axis:])
    iota = np.arange(d, dtype=np.int64).reshape([d if i == axis else 1 for i in range(rank)])
    hit = ctx.op("eq", [idx, ctx.const(iota, "iota")])
    off = slice_axis(ctx, values, 0, 0, 1)
    on = slice_axis(ctx, values, 0, 1, 2)
    return [ctx.op("where", [hit, reshape(ctx, on, ()), reshape(ctx, off, ())])]


@converter("Trilu")
def _trilu(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    k = const_ints(ctx, vals[1], "k")[0] if opt(vals, 1) is not None else 0
    n, m = ctx.shape(x)[-2:]
    upper = int(ctx.attr(node, "upper", 1))
    mask = np.triu(np.ones((n, m), bool), k) if upper else np.tril(np.ones((n, m), bool), k)
    return [ctx.op("where", [ctx.const(mask, "mask"), x, scalar(ctx, 0, ctx.dtype(x))])]


# -- padding ----------------------------------------------------------------------------------------------

@converter("Pad")
def _pad(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    shape = ctx.shape(x)
    rank = len(shape)
    mode = ctx.attr(node, "mode", "constant")
    if ctx.version(node) < 11:
        pads, value = ctx.attr(node, "pads"), float(ctx.attr(node, "value", 0.0))
        axes = list(range(rank))
    else:
        pads = const_ints(ctx, vals[1], "pads")
        value = const_float(ctx, vals[2], "constant_value") if opt(vals, 2) is not None else 0
        axes = const_ints(ctx, vals[3], "axes") if opt(vals, 3) is not None else list(range(rank))
    axes = [norm_axis(ctx, a, rank) for a in axes]
    if len(pads) != 2 * len(axes):
        raise ShapeError(f"{ctx.where()}: {len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * rank, [0] * rank
    for a, b, e in zip(axes, pads[:len(axes)], pads[len(axes):]):
        begin[a], end[a] = b, e
    # negative pads crop first
    y = x
    for a in range(rank):
        if begin[a] < 0 or end[a] < 0:
            d = ctx.shape(y)[a]
            y = slice_axis(ctx, y, a, max(-begin[a], 0), d - max(-end[a], 0))
    begin, end = [max(b, 0) for b in begin], [max(e, 0) for e in end]
    if not any(begin) and not any(end):
        return [y]
    if mode == "constant":
        return [ctx.op("pad", [y], pads=tuple(begin + end), value=value)]
    if mode not in ("reflect", "edge", "wrap"):
        raise ctx.unsupported(f"mode '{mode}'")
    for a in range(rank):
        if begin[a] or end[a]:
            d = ctx.shape(y)[a]
            if mode == "reflect" and d < 2:
                raise ShapeError(f"{ctx.where()}: reflect padding needs extent >= 2 on axis {a}")
            y = take(ctx, y, np.pad(np.arange(d), (begin[a], end[a]), mode=mode), a)
    return [y]


@converter("CumSum", "CumProd")
def _cumsum(ctx, node):
    """out[..., j] = sum over i of where(mask[i, j], x[..., i], 0) along the axis (moved last);
    CumProd is that sum in the log domain (onnx_ops_nn.log_domain_product)."""
    from tessel.frontend.onnx_ops_nn import log_domain_product

    x, ax = ins(ctx, node)
    shape = ctx.shape(x)
    axis = norm_axis(ctx, const_ints(ctx, ax, "axis")[0], len(shape))
    n = shape[axis]
    i, j = np.indices((n, n))
    exclusive, rev = int(ctx.attr(node, "exclusive", 0)), int(ctx.attr(node, "reverse", 0))
    mask = (i >= j if rev else i <= j) if not exclusive else (i > j if rev else i < j)
    m = ctx.const(mask.reshape((n, n) + (1,) * (len(shape) - axis - 1)), "mask")

    def cumulative(v):
        # v: (..., n_i, 1, ...) against mask (n_i, n_j) laid out on axes (axis, axis + 1)
        ve = reshape(ctx, v, shape[:axis + 1] + (1,) + shape[axis + 1:])
        terms = ctx.op("where", [m, ve, scalar(ctx, 0, ctx.dtype(v))])
        return ctx.op("reduce_sum", [terms], axes=(axis,), keepdims=False)

    if node.op_type == "CumProd":
        return [log_domain_product(ctx, x, cumulative)]
    return [cumulative(x)]
