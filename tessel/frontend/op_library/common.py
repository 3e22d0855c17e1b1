"""Helpers shared by the op library: input and attribute checks, numpy broadcasting (the shape rule
and the index mapping), axis normalisation, dtype promotion and reduction building blocks.

Every op module uses these so that shape rules report errors the same way: the message names the
op, the input index, and the dimensions that disagree (the Graph prefixes the node's name).

Example:
    >>> broadcast_shapes("add", [(2, 1, 3), (4, 1)])
    (2, 4, 3)
    >>> norm_axes("reduce_sum", [-1, 0], 3)
    (0, 2)
"""

from __future__ import annotations

import builtins
import math

from tessel.errors import ArgumentError, DTypeError, ShapeError
from tessel.ir import dsl
from tessel.ir.dtypes import check_dtype, is_bool, is_float, is_int, numpy_dtype

# -- inputs and attributes ------------------------------------------------------------------------


def check_inputs(op: str, inputs: list, required: int, optional: int = 0) -> list:
    """The inputs padded with None up to required + optional; raises when a required one is
    missing or there are too many.

    >>> check_inputs("linear", ["x", "w"], 2, 1)
    ['x', 'w', None]
    """
    n = len(inputs)
    if n < required or n > required + optional:
        want = f"{required}" if not optional else f"{required} to {required + optional}"
        raise ArgumentError(f"{op}: expected {want} input(s), got {n}")
    for k in range(required):
        if inputs[k] is None:
            raise ArgumentError(f"{op}: input {k} is required but absent")
    return list(inputs) + [None] * (required + optional - n)


def int_list(op: str, attrs: dict, key: str, n: int | None = None, default=None) -> tuple:
    """Attribute `key` as a tuple of ints (a scalar is repeated n times); `default` when absent.

    >>> int_list("conv", {"stride": 2}, "stride", 2)
    (2, 2)
    """
    v = attrs.get(key)
    if v is None:
        if default is None:
            raise ArgumentError(f"{op}: attribute '{key}' is required")
        v = default
    if isinstance(v, (int,)) and not isinstance(v, bool):
        if n is None:
            raise ArgumentError(f"{op}: attribute '{key}' must be a list of ints, got {v!r}")
        v = (v,) * n
    try:
        out = tuple(int(x) for x in v)
    except (TypeError, ValueError):
        raise ArgumentError(f"{op}: attribute '{key}' must be a list of ints, got {v!r}") from None
    if n is not None and len(out) != n:
        raise ArgumentError(f"{op}: attribute '{key}' has {len(out)} value(s) {out}, expected {n}")
    return out


# -- shapes ---------------------------------------------------------------------------------------


def broadcast_shapes(op: str, shapes: list, indices: list | None = None) -> tuple:
    """The numpy broadcast of `shapes` (input k of the op has shape shapes[k], or the input index
    indices[k]); raises ShapeError naming both inputs and the dims that disagree.

    >>> broadcast_shapes("mul", [(3,), (2, 3)])
    (2, 3)
    """
    indices = list(range(len(shapes))) if indices is None else list(indices)
    shapes = [tuple(s) for s in shapes]
    ndim = builtins.max((len(s) for s in shapes), default=0)
    out = []
    for d in range(-ndim, 0):
        size, who = 1, None
        for k, s in zip(indices, shapes):
            if -d > len(s) or s[d] == 1:
                continue
            if who is None or size == 1:
                size, who = s[d], k
            elif s[d] != size:
                sw = shapes[indices.index(who)]
                raise ShapeError(f"{op}: input {who} (shape {sw}) and input {k} (shape {s}) do not broadcast: "
                                 f"input {who} dim {len(sw) + d} is {size}, input {k} dim {len(s) + d} is {s[d]}")
        out.append(size)
    return tuple(out)


def norm_axis(op: str, axis, ndim: int, what: str = "axis") -> int:
    """`axis` as a non-negative int below ndim (negative counts from the end)."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        try:
            axis = int(axis)
        except (TypeError, ValueError):
            raise ArgumentError(f"{op}: {what} {axis!r} is not an integer") from None
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: {what} {axis} is out of range for an input of rank {ndim}")
    return axis % ndim


def norm_axes(op: str, axes, ndim: int) -> tuple:
    """Sorted, distinct, non-negative axes; None means every axis."""
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    out = tuple(sorted(norm_axis(op, a, ndim, "axis") for a in axes))
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: axes {tuple(axes)} name a dimension twice")
    return out


def reduced_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    """`shape` with `axes` removed (or set to 1 with keepdims).

    >>> reduced_shape((2, 3, 4), (1,), False), reduced_shape((2, 3, 4), (1,), True)
    ((2, 4), (2, 1, 4))
    """
    if keepdims:
        return tuple(1 if d in axes else s for d, s in enumerate(shape))
    return tuple(s for d, s in enumerate(shape) if d not in axes)


def size_of(shape) -> int:
    return math.prod(shape)


# -- dtypes ---------------------------------------------------------------------------------------

_FLOAT_RANK = {"float16": 0, "bfloat16": 0, "float32": 1, "float64": 2}


def promote(op: str, dtypes: list) -> str:
    """The common dtype of operands: a float if any is a float (the widest; float16 with bfloat16
    gives float32), else the widest integer, else bool.

    >>> promote("add", ["int32", "float16"]), promote("add", ["float16", "bfloat16"])
    ('float16', 'float32')
    """
    dtypes = [check_dtype(d, f"{op} input") for d in dtypes]
    floats = [d for d in dtypes if is_float(d)]
    if floats:
        if len(set(floats)) == 1:
            return floats[0]
        best = builtins.max(floats, key=lambda d: _FLOAT_RANK[d])
        return "float32" if _FLOAT_RANK[best] == 0 else best
    if len(set(dtypes)) == 1:
        return dtypes[0]
    import numpy as np

    # numpy's promotion of mixed integers (uint8 with int8 -> int16); only uint64 with a signed
    # type has no integer dtype holding both (numpy says float64): int64, as torch does
    best = np.result_type(*[numpy_dtype(d) for d in dtypes])
    return best.name if best.kind in "iub" else "int64"


def compute_dtype(dtype: str) -> str:
    """The dtype to compute in: float16/bfloat16 compute in float32 (one rounding at the end)."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def need_float(op: str, dtype: str, k: int = 0) -> None:
    if not is_float(dtype):
        raise DTypeError(f"{op}: input {k} has dtype {dtype}, expected a float dtype (insert a cast)")


def need_numeric(op: str, dtype: str, k: int = 0) -> None:
    if is_bool(dtype):
        raise DTypeError(f"{op}: input {k} has dtype bool, expected a number (insert a cast)")


def need_index(op: str, dtype: str, k: int) -> None:
    if not is_int(dtype):
        raise DTypeError(f"{op}: input {k} (indices) has dtype {dtype}, expected int32 or int64")


def to_np(arr, dtype: str):
    """A numpy array of `dtype` (references cast their float64 results with this)."""
    import numpy as np

    return np.asarray(arr).astype(numpy_dtype(dtype))


def f64(arr):
    """Floats as float64 (references compute in it); other dtypes unchanged."""
    import numpy as np

    arr = np.asarray(arr)
    return arr.astype(np.float64) if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16" else arr


# -- lowering helpers -----------------------------------------------------------------------------


def bload(t: dsl.Tensor, out_shape: tuple, idx: tuple):
    """Element of `t` read at output index `idx` under numpy broadcasting: dimensions align on
    the right and size-1 dimensions are read at index 0."""
    off = len(out_shape) - t.ndim
    return t[tuple(0 if s == 1 else idx[off + d] for d, s in enumerate(t.shape))]


def full_index(ndim: int, axes: tuple, outer: tuple, inner, keepdims: bool) -> tuple:
    """The input index of a reduction: `inner[k]` at axes[k], the output index `outer` elsewhere
    (`outer` has the reduced axes too when keepdims)."""
    it = iter(outer)
    out = []
    for d in range(ndim):
        if d in axes:
            out.append(inner[axes.index(d)])
            if keepdims:
                next(it)
        else:
            out.append(next(it))
    return tuple(out)


def reduce_over(x_shape: tuple, axes: tuple, keepdims: bool, combiner, value_fn, name: str, dtype=None):
    """A compute reducing over `axes` of an input of shape `x_shape`: element o of the result is
    combiner(value_fn(input index)) over the reduce axes. With no axes, value_fn is copied.

    >>> X = dsl.placeholder((2, 3), name="X")
    >>> reduce_over((2, 3), (1,), False, dsl.sum, lambda i: X[i], "S").shape
    (2,)
    """
    out_shape = reduced_shape(x_shape, axes, keepdims)
    rs = [dsl.reduce_axis(x_shape[a], name=f"r{a}") for a in axes]

    def body(*o):
        v = value_fn(full_index(len(x_shape), axes, o, rs, keepdims))
        return combiner(v, axis=rs) if rs else v

    return dsl.compute(out_shape, body, name=name, dtype=dtype)


def stat_index(idx: tuple, axes: tuple) -> tuple:
    """Index of a keepdims statistic (shape 1 along `axes`) at element `idx` of the input."""
    return tuple(0 if d in axes else i for d, i in enumerate(idx))


def fconst(value: float, dtype: str):
    """A float constant of `dtype` (for expressions whose other operand is not an Expr)."""
    return dsl.const(float(value), dtype)


def to_bool(e):
    """`e != 0` as a bool expression (NaN is true); bools unchanged."""
    if is_bool(e.dtype):
        return e
    return e.ne(0.0) if is_float(e.dtype) else e.ne(0)
