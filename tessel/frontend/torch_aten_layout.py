"""The aten layout ops (view, permute, slice, cat, split, pad ...), gathers (embedding, indexing) and
functional scatters (what in-place slice assignment becomes) mapped onto tessel's op set; the
registry and the other families live in torch_aten.py, which imports this module on first use.

Layout ops take their output shape from torch's metadata, so -1 and implicit sizes never reach the
graph; identities (a view to the same shape, a full slice) add no op.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> "aten.slice.Tensor" in converters()
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import _dim, _dims, aten

# -- gathers -----------------------------------------------------------------------------------------

@aten("embedding.default")
def _embedding(cx, a):
    return cx.emit("gather", [cx.v(a["weight"]), cx.v(a["indices"])], axis=0)


@aten("index_select.default")
def _index_select(cx, a):
    x = cx.v(a["self"])
    if not cx.g.values[x].shape:  # a 0-d tensor: its one element, for each index
        return cx.reshape(cx.emit("gather", [cx.reshape(x, (1,)), cx.v(a["index"])], axis=0), cx.out_shape)
    return cx.emit("gather", [x, cx.v(a["index"])], axis=_dim(a["dim"], len(cx.g.values[x].shape)))


@aten("index.Tensor")
def _index(cx, a):
    """x[..., i0, i1, ...] with adjacent index tensors: one gather over those dims, flattened."""
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    idx = list(a["indices"])
    pos = [d for d, i in enumerate(idx) if i is not None]
    if pos != list(range(pos[0], pos[0] + len(pos))):
        cx.unsupported("indexing with non-adjacent index tensors")
    if any(cx.val(idx[d]).dtype == "bool" for d in pos):
        cx.unsupported("indexing with a boolean mask (its result shape depends on the data)")
    d0, dims = pos[0], shape[pos[0]:pos[0] + len(pos)]
    flat = None
    for k, d in enumerate(pos):
        i = cx.cast(cx.v(idx[d]), "int64")
        if len(pos) > 1:  # gather wraps a negative index, but a flattened one must be wrapped first
            wrapped = cx.emit("add", [i, cx.scalar(shape[d], "int64")])
            i = cx.emit("where", [cx.emit("lt", [i, cx.scalar(0, "int64")]), wrapped, i])
        stride = math.prod(dims[k + 1:])
        if stride != 1:
            i = cx.emit("mul", [i, cx.scalar(stride, "int64")])
        flat = i if flat is None else cx.emit("add", [flat, i])
    data = cx.reshape(x, shape[:d0] + (math.prod(dims),) + shape[d0 + len(pos):])
    return cx.emit("gather", [data, flat], axis=d0)


# -- layout ------------------------------------------------------------------------------------------

def _broadcast_to(cx, v: str, shape: tuple) -> str:
    s = cx.g.values[v].shape
    if s == tuple(shape):
        return v
    return cx.emit("expand", [cx.reshape(v, (1,) * (len(shape) - len(s)) + s)], shape=tuple(shape))


@aten("copy.default", "fill.Tensor")
def _copy_into(cx, a):
    """Functional copy/fill: the source's values in the shape and dtype of `self`."""
    src = a["src"] if "src" in a else a["value"]
    return _broadcast_to(cx, cx.cast(cx.v(src), cx.out_dtype), cx.out_shape)


@aten("slice_scatter.default", "select_scatter.default")
def _scatter(cx, a):
    """`self` with a slice (step 1) replaced by `src`: `src` padded to full size, chosen by a mask."""
    import numpy as np

    x, shape = cx.v(a["self"]), cx.out_shape
    d = _dim(a["dim"], len(shape))
    src = cx.cast(cx.v(a["src"]), cx.out_dtype)
    if "index" in a:  # select_scatter: src lacks dim d
        start, end, step = a["index"] % shape[d], a["index"] % shape[d] + 1, 1
        src = cx.reshape(src, shape[:d] + (1,) + shape[d + 1:])
    else:
        start, end, step = slice(a["start"], a["end"], a["step"]).indices(shape[d])
    if step != 1:
        cx.unsupported(f"slice_scatter with step {step}")
    src = _broadcast_to(cx, src, shape[:d] + (end - start,) + shape[d + 1:])
    if end - start != shape[d]:
        pads = [0] * (2 * len(shape))
        pads[d], pads[len(shape) + d] = start, shape[d] - end
        src = cx.emit("pad", [src], pads=tuple(pads), value=0)
    mask = np.zeros(shape[d], dtype=bool)
    mask[start:end] = True
    mask = cx.const(mask.reshape((1,) * d + (shape[d],) + (1,) * (len(shape) - d - 1)), f"{cx.node.name}_mask")
    return cx.emit("where", [mask, src, x])


@aten("view.default", "_unsafe_view.default", "reshape.default", "view_copy.default", "flatten.using_ints",
      "unflatten.int", "squeeze.default", "squeeze.dim", "squeeze.dims", "unsqueeze.default",
      "reshape_as.default", "view_as.default")
def _reshape(cx, a):
    return cx.reshape(cx.v(a["self"]), cx.out_shape)


@aten("permute.default", "transpose.int", "t.default", "numpy_T.default")
def _transpose(cx, a):
    x = cx.v(a["self"])
    rank = len(cx.g.values[x].shape)
    name = cx.node.target._schema.name.split("::")[1]
    if name == "permute":
        perm = tuple(_dim(d, rank) for d in a["dims"])
    elif name == "transpose":
        perm = list(range(rank))
        d0, d1 = _dim(a["dim0"], rank), _dim(a["dim1"], rank)
        perm[d0], perm[d1] = perm[d1], perm[d0]
        perm = tuple(perm)
    else:
        perm = tuple(reversed(range(rank)))
    if perm == tuple(range(rank)):
        return x
    return cx.emit("transpose", [x], perm=perm)


@aten("expand.default", "expand_as.default")
def _expand(cx, a):
    x = cx.v(a["self"])
    if cx.g.values[x].shape == cx.out_shape:
        return x
    return cx.emit("expand", [x], shape=cx.out_shape)


@aten("repeat.default")
def _repeat(cx, a):
    x = cx.v(a["self"])
    reps = tuple(int(r) for r in a["repeats"])
    shape = (1,) * (len(reps) - len(cx.g.values[x].shape)) + cx.g.values[x].shape
    inter = tuple(v for s in shape for v in (1, s))  # (1, s0, 1, s1, ...) expanded to (r0, s0, r1, s1, ...)
    x = cx.reshape(x, inter)
    x = cx.emit("expand", [x], shape=tuple(v for r, s in zip(reps, shape) for v in (r, s)))
    return cx.reshape(x, cx.out_shape)


def _slice(cx, x: str, dim: int, start, end, step: int = 1) -> str:
    n = cx.g.values[x].shape[dim]
    start, end, _ = slice(start, end, step).indices(n)
    end = max(end, start)
    if (start, end, step) == (0, n, 1):
        return x
    return cx.emit("slice", [x], starts=(start,), ends=(end,), axes=(dim,), steps=(int(step),))


@aten("slice.Tensor")
def _slice_tensor(cx, a):
    x = cx.v(a["self"])
    return _slice(cx, x, _dim(a["dim"], len(cx.g.values[x].shape)), a["start"], a["end"], a["step"])


@aten("narrow.default")
def _narrow(cx, a):
    x = cx.v(a["self"])
    d = _dim(a["dim"], len(cx.g.values[x].shape))
    start = a["start"] % cx.g.values[x].shape[d]
    return _slice(cx, x, d, start, start + a["length"])


@aten("select.int")
def _select(cx, a):
    x = cx.v(a["self"])
    d = _dim(a["dim"], len(cx.g.values[x].shape))
    i = a["index"] % cx.g.values[x].shape[d]
    return cx.reshape(_slice(cx, x, d, i, i + 1), cx.out_shape)


@aten("split.Tensor", "split_with_sizes.default", "split.sizes", "chunk.default", "unbind.int",
      "tensor_split.sections")
def _split(cx, a):
    x = cx.v(a["self"])
    rank = len(cx.g.values[x].shape)
    d = _dim(a.get("dim", 0), rank)
    outs, start = [], 0
    for m in cx.out_meta:
        n = int(m.shape[d]) if len(m.shape) == rank else 1  # unbind drops the dim
        outs.append(cx.reshape(_slice(cx, x, d, start, start + n), tuple(m.shape)))
        start += n
    return outs


@aten("cat.default", "concat.default")
def _cat(cx, a):
    rank = len(cx.out_shape)
    ins = [cx.cast(cx.v(t), cx.out_dtype) for t in a["tensors"] if len(t.meta["val"].shape) == rank]
    if len(ins) == 1:
        return ins[0]
    return cx.emit("concat", ins, axis=_dim(a["dim"], rank))


@aten("stack.default")
def _stack(cx, a):
    rank = len(cx.out_shape)
    d = _dim(a["dim"], rank)
    ins = []
    for t in a["tensors"]:
        s = cx.val(t).shape
        ins.append(cx.reshape(cx.cast(cx.v(t), cx.out_dtype), s[:d] + (1,) + s[d:]))
    return ins[0] if len(ins) == 1 else cx.emit("concat", ins, axis=d)


@aten("constant_pad_nd.default", "pad.default")
def _pad(cx, a):
    from tessel.frontend.torch_aten_movement import _move

    value = a.get("value") or 0
    if a.get("mode", "constant") != "constant" or (any(p < 0 for p in a["pad"]) and value == 0):
        return _move(cx, a)  # reflect / replicate / circular, or cropping: pure data movement
    x = cx.v(a["self"])
    rank = len(cx.g.values[x].shape)
    pad = list(a["pad"])
    begin, end = [0] * rank, [0] * rank
    for k in range(len(pad) // 2):  # torch lists (begin, end) pairs from the last dim backwards
        begin[rank - 1 - k], end[rank - 1 - k] = int(pad[2 * k]), int(pad[2 * k + 1])
    if any(p < 0 for p in begin + end):
        cx.unsupported(f"negative padding {tuple(pad)} with the fill value {value}")
    return cx.emit("pad", [x], pads=tuple(begin + end), value=value)


@aten("flip.default")
def _flip(cx, a):
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    if not list(a["dims"]):  # torch.flip(x, dims=()) flips nothing (the slice op would read () as every axis)
        return x
    axes = tuple(d for d in _dims(a["dims"], len(shape)) if shape[d] > 0)  # an empty axis has nothing to flip
    if 0 in shape:
        return x  # flipping an empty tensor changes nothing
    return cx.emit("slice", [x], starts=tuple(shape[d] - 1 for d in axes), ends=tuple(-(2 ** 62) for _ in axes),
                   axes=axes, steps=tuple(-1 for _ in axes))


@aten("roll.default")
def _roll(cx, a):
    x = cx.v(a["self"])
    shape = cx.g.values[x].shape
    shifts, dims = list(a["shifts"]), list(a["dims"])
    if not dims:  # roll the flattened tensor
        flat = cx.reshape(x, (math.prod(shape),))
        return cx.reshape(_roll_axis(cx, flat, 0, shifts[0]), shape)
    for s, d in zip(shifts, dims):
        x = _roll_axis(cx, x, _dim(d, len(shape)), s)
    return x


def _roll_axis(cx, x: str, d: int, shift: int) -> str:
    n = cx.g.values[x].shape[d]
    if n == 0:  # an empty axis: nothing to roll
        return x
    shift %= n
    if shift == 0:
        return x
    return cx.emit("concat", [_slice(cx, x, d, n - shift, n), _slice(cx, x, d, 0, n - shift)], axis=d)


@aten("gather.default")
def _gather(cx, a):
    x = cx.v(a["self"])
    return take_along(cx, x, cx.v(a["index"]), _dim(a["dim"], len(cx.g.values[x].shape)))


def take_along(cx, x: str, idx: str, d: int) -> str:
    """torch.gather(x, d, idx) (ONNX GatherElements): one np.take over the flattened input with flat
    indices idx * stride(d) + (the offset of every other coordinate, a constant)."""
    import numpy as np

    idx = cx.cast(idx, "int64")
    shape, ishape = cx.g.values[x].shape, cx.g.values[idx].shape
    if not shape:  # a 0-d tensor: its one element, as often as idx asks
        return cx.emit("gather", [cx.reshape(x, (1,)), idx], axis=0)
    strides = [math.prod(shape[k + 1:]) for k in range(len(shape))]
    base = sum(np.arange(n).reshape([-1 if j == k else 1 for j in range(len(ishape))]) * strides[k]
               for k, n in enumerate(ishape) if k != d)
    flat = cx.emit("mul", [idx, cx.scalar(strides[d], "int64")]) if strides[d] != 1 else idx
    if len(ishape) > 1:
        flat = cx.emit("add", [flat, cx.const(np.broadcast_to(base, ishape).astype(np.int64), f"{cx.node.name}_base")])
    return cx.emit("gather", [cx.reshape(x, (math.prod(shape),)), flat], axis=0)


@aten("upsample_nearest2d.vec", "upsample_nearest1d.vec", "upsample_nearest2d.default", "upsample_nearest1d.default")
def _upsample_nearest(cx, a):
    """Nearest-neighbour resize: one gather per spatial axis with constant source indices
    min(floor(dst * scale), in - 1), scale = in / out (or 1 / scale_factor when given), as torch."""
    import numpy as np

    x = cx.v(a["input"] if "input" in a else a["self"])
    shape, out = cx.g.values[x].shape, cx.out_shape
    nsp = len(shape) - 2
    factors = a.get("scale_factors") or [a.get(k) for k in ("scales_h", "scales_w", "scales") if a.get(k)]
    for k in range(nsp):
        d = 2 + k
        scale = 1.0 / factors[k] if factors and len(factors) == nsp else shape[d] / out[d]
        src = np.minimum(np.floor(np.arange(out[d], dtype=np.float32) * np.float32(scale)), shape[d] - 1)
        if out[d] != shape[d] or (src != np.arange(out[d])).any():
            x = cx.emit("gather", [x, cx.const(src.astype(np.int64), f"{cx.node.name}_src{k}")], axis=d)
    return x
