"""Aten ops that only move elements (as_strided, diagonal, unfold, diag_embed, rot90, im2col, the
reflection/replication pads, the *_copy views ...) and their scatter forms (diagonal_scatter,
as_strided_scatter ...), converted by running the op itself at import time on element numbers.

The op is called in torch on a tensor of the input's shape holding 1, 2, ..., n (float64, exact
below 2**53); what comes out says, for every output element, which input element it is (0: a zero
the op fills in). That becomes one gather with constant indices, so any pure data-movement op maps
exactly, whatever its arguments, without a converter of its own. A scatter form is called on the
numbers 1..n for `self` and -1..-m for `src`: a positive number is read from self, a negative one
from src.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(k in converters() for k in ("aten.as_strided.default", "aten.diagonal.default", "aten.unfold.default"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import CONVERTERS
from tessel.frontend.torch_aten_expr import X, where

MOVES = ("as_strided.default", "as_strided_copy.default", "diagonal.default", "diagonal_copy.default",
         "diag_embed.default", "diag.default", "unfold.default", "unfold_copy.default", "narrow_copy.default",
         "permute_copy.default", "unbind_copy.int", "t_copy.default", "transpose_copy.int", "expand_copy.default",
         "squeeze_copy.dim", "squeeze_copy.dims", "squeeze_copy.default", "unsqueeze_copy.default",
         "alias_copy.default", "detach_copy.default", "slice_copy.Tensor", "select_copy.int", "split_copy.Tensor",
         "split_with_sizes_copy.default", "movedim.int", "movedim.intlist", "moveaxis.int", "moveaxis.intlist",
         "swapaxes.default", "swapdims.default", "rot90.default", "pixel_shuffle.default", "pixel_unshuffle.default",
         "channel_shuffle.default", "native_channel_shuffle.default", "im2col.default",
         "repeat_interleave.self_int", "reflection_pad1d.default", "reflection_pad2d.default",
         "reflection_pad3d.default", "replication_pad1d.default", "replication_pad2d.default",
         "replication_pad3d.default", "_pad_circular.default", "upsample_nearest3d.vec", "upsample_nearest3d.default",
         "_upsample_nearest_exact1d.vec", "_upsample_nearest_exact2d.vec", "_upsample_nearest_exact3d.vec",
         "_upsample_nearest_exact1d.default", "_upsample_nearest_exact2d.default",
         "_upsample_nearest_exact3d.default", "tensor_split.indices", "tensor_split.sections", "hsplit.int",
         "vsplit.int", "dsplit.int", "view_copy.default", "_reshape_copy.default")
SCATTERS = ("diagonal_scatter.default", "as_strided_scatter.default", "select_scatter.default",
            "slice_scatter.default")


def _numbers(shape, sign: int):
    import torch

    n = math.prod(shape)
    return (torch.arange(1, n + 1, dtype=torch.float64) * sign).reshape(tuple(shape))


def _run(cx, replace: dict):
    """The current fx node's op called with the tensors of `replace` (fx node name -> tensor) and its
    other arguments as they are; a tensor argument not in `replace` must be a constant."""
    import torch
    from torch.fx.node import map_arg

    def value(n):
        if n.name in replace:
            return replace[n.name]
        v = cx.env.get(n.name)
        if isinstance(v, str):
            if not cx.g.values[v].is_const:
                cx.unsupported(f"op '{cx.node.target}' with a data-dependent argument '{n.name}'")
            return torch.from_numpy(cx.g.values[v].data)
        return v

    args = map_arg(cx.node.args, value)
    kwargs = map_arg(cx.node.kwargs, value)
    with torch.no_grad():
        return cx.node.target(*args, **kwargs)


def _read(cx, sources: list, ids) -> str:
    """The output whose element numbers are `ids` (a tensor): k > 0 reads sources[0] (flat, 1-based),
    k < 0 sources[1] (-1-based), 0 is a zero."""
    import numpy as np

    ids = np.rint(ids.detach().numpy()).astype(np.int64)
    dt = cx.out_dtype if not isinstance(cx.out_meta, (list, tuple)) else cx.g.values[sources[0]].dtype
    flat = [cx.cast(cx.reshape(s, (math.prod(cx.g.values[s].shape),)), dt) for s in sources]
    if ids.size == 0:
        return cx.const(np.zeros(ids.shape, _np_dtype(dt)))
    n0 = cx.g.values[flat[0]].shape[0]
    if len(sources) == 1 and not (ids <= 0).any() and ids.shape == cx.g.values[sources[0]].shape \
            and (ids.reshape(-1) == np.arange(1, n0 + 1)).all():
        return cx.cast(sources[0], dt)  # the identity
    out = None
    for src, pick in zip(flat, (ids > 0, ids < 0)):
        if not pick.any():
            continue
        at = np.where(pick, np.abs(ids) - 1, 0)
        part = X(cx, cx.emit("gather", [src, cx.const(at)], axis=0))
        if pick.all():
            out = part
        else:
            out = where(X(cx, cx.const(pick)), part, out if out is not None else 0)
    if out is None:  # every element a filled-in zero
        return cx.const(np.zeros(ids.shape, _np_dtype(dt)))
    return out.v


def _np_dtype(dt: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dt)


def _self_node(cx):
    a = cx.node.args[0] if cx.node.args else next(iter(cx.node.kwargs.values()))
    return a


def _owns_storage(node) -> bool:
    """Whether the example tensor of fx node `node` is all of its storage, from offset 0 (as_strided
    then means the same on the element numbers as on the tensor)."""
    val = node.meta.get("val")
    try:
        return val.storage_offset() == 0 and int(val.untyped_storage().nbytes()) == val.numel() * val.element_size()
    except Exception:  # noqa: BLE001 - symbolic sizes or no storage: not known to own it
        return False


def _move(cx, a):
    src = _self_node(cx)
    if "as_strided" in cx.node.target._schema.name and not _owns_storage(src):
        cx.unsupported("as_strided of a view into a larger storage (it reads the storage, and a compiled "
                       "model sees only the tensor's elements)")
    x = cx.v(src)
    res = _run(cx, {src.name: _numbers(cx.g.values[x].shape, 1)})
    if isinstance(res, (list, tuple)):
        return [_read(cx, [x], r) for r in res]
    return _read(cx, [x], res)


def _scatter_move(cx, a):
    s, src = a["self"], a["src"]
    x, y = cx.v(s), cx.v(src)
    res = _run(cx, {s.name: _numbers(cx.g.values[x].shape, 1), src.name: _numbers(cx.g.values[y].shape, -1)})
    return _read(cx, [x, y], res)


for _k in MOVES:
    CONVERTERS.setdefault(f"aten.{_k}", _move)
for _k in SCATTERS:
    CONVERTERS[f"aten.{_k}"] = _scatter_move
