"""The tensor DSL: placeholder / compute / reduce_axis / sum / max / min, lowered to naive loop nests.

A `compute` describes each element of a new tensor as an expression of its indices; `lower`
turns a list of tensors (the kernel's parameters, inputs and outputs in call order) into one
Kernel whose body is one loop nest per computed tensor, in dependency order. Tensors computed
but not passed become temporaries allocated inside the kernel.

A reduction (`sum`, `max`, `min` over reduce axes) must be the whole body of its compute. It
lowers to one perfect loop nest, spatial loops outside and reduction loops inside, whose body
initialises the output element when every reduction variable is zero and then accumulates:

    for i, j, k:
        if k == 0: C[i, j] = 0
        C[i, j] = C[i, j] + A[i, k] * B[k, j]

The nest stays perfect, so loop primitives (split, reorder, fuse) apply freely; the schedule
primitive `decompose_reduction` later hoists the initialisation out of the reduction loops.

Example:
    >>> A = placeholder((4, 8), "float32", name="A")
    >>> k = reduce_axis(8, name="k")
    >>> S = compute((4,), lambda i: sum(A[i, k], axis=k), name="S")
    >>> kernel = lower([A, S])
    >>> [p.name for p in kernel.params]
    ['A', 'S']
"""

from __future__ import annotations

import builtins
import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

from tessel.errors import DTypeError, ShapeError, TesselError
from tessel.ir.bounds import interval
from tessel.ir.dtypes import INDEX_DTYPE, check_dtype, is_int, max_value, min_value
from tessel.ir.nodes import (
    MATH_FUNCS, Binary, Buffer, Call, Const, Expr, For, IfThenElse, Kernel, Load, Node, Select, Seq, Store, Var,
    Allocate, as_expr, rewrite, seq, walk,
)

# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------


class Tensor:
    """A tensor of the DSL: a placeholder (kernel input) or the result of a compute.

    Indexing a tensor gives a Load expression: `A[i, k]`.
    """

    def __init__(self, name: str, shape: tuple, dtype: str, op: "ComputeOp | None" = None):
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.op = op

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def buffer(self) -> Buffer:
        return Buffer(self.name, self.shape, self.dtype)

    @property
    def is_placeholder(self) -> bool:
        return self.op is None

    def __getitem__(self, idx) -> Load:
        idx = idx if isinstance(idx, tuple) else (idx,)
        if len(idx) != self.ndim:
            raise ShapeError(f"tensor '{self.name}' has {self.ndim} dimension(s) {self.shape} "
                             f"but is indexed with {len(idx)}")
        exprs = []
        for d, x in enumerate(idx):
            if isinstance(x, Tensor):
                raise ShapeError(f"tensor '{self.name}' dim {d}: index is the tensor '{x.name}'; "
                                 f"index it with an element, e.g. {x.name}[i]")
            e = as_expr(x)
            if not is_int(e.dtype):
                raise DTypeError(f"tensor '{self.name}' dim {d}: index has dtype {e.dtype}, expected an integer")
            if e.dtype != INDEX_DTYPE:
                e = e.astype(INDEX_DTYPE)
            exprs.append(e)
        load = Load(self.buffer, tuple(exprs))
        # A non-structural side note so compute() can find its input tensors; rewrites drop it,
        # which is fine because compute() reads it right away.
        load.__dict__["_tensor"] = self
        return load

    def __repr__(self) -> str:
        kind = "placeholder" if self.is_placeholder else "compute"
        return f"Tensor({self.name!r}, {self.shape}, {self.dtype!r}, {kind})"


@dataclass
class ComputeOp:
    """How a computed tensor's elements are defined: index variables and a body expression."""

    axes: tuple  # Var per output dimension
    body: Expr  # may be a Reduce at the top
    inputs: tuple  # Tensors read by the body


def _check_shape(shape, what: str) -> tuple:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ShapeError(f"{what}: shape {shape!r} is not a tuple of integers") from None
    for d, s in enumerate(shape):
        if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
            raise ShapeError(f"{what}: dim {d} has extent {s!r}; extents must be positive integers")
    return shape


def placeholder(shape, dtype: str = "float32", name: str = "placeholder") -> Tensor:
    """An input tensor of a kernel.

    >>> placeholder((2, 3), "float16", name="X").shape
    (2, 3)
    """
    shape = _check_shape(shape, f"placeholder '{name}'")
    return Tensor(name, shape, check_dtype(dtype, f"placeholder '{name}'"))


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReduceAxis(Var):
    """A reduction variable with its extent; used inside exactly one reduction."""

    extent: int = 1


@dataclass(frozen=True, eq=False)
class Reduce(Expr):
    """`combiner` ("sum", "max", "min") of `value` over `axes`; DSL-only, gone after lowering."""

    combiner: str
    value: Expr
    axes: tuple

    @property
    def dtype(self) -> str:
        return self.value.dtype


def reduce_axis(extent: int, name: str = "k") -> ReduceAxis:
    """A reduction axis running over range(extent).

    >>> reduce_axis(16, name="k").extent
    16
    """
    if isinstance(extent, bool) or not isinstance(extent, int) or extent <= 0:
        raise ShapeError(f"reduce_axis '{name}': extent {extent!r} must be a positive integer")
    return ReduceAxis(name, INDEX_DTYPE, extent)


def _reduce(combiner: str, value, axis) -> Reduce:
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    for a in axes:
        if not isinstance(a, ReduceAxis):
            raise TesselError(f"{combiner}(): axis {a!r} is not a reduce_axis")
    value = as_expr(value)
    for n in walk(value):
        if isinstance(n, Reduce):
            raise TesselError(f"{combiner}(): nested reductions are not supported; compute the inner one first")
    return Reduce(combiner, value, axes)


def sum(value, axis) -> Reduce:  # noqa: A001 - mirrors numpy's name on purpose
    """Sum of `value` over the reduce axis (or axes) `axis`."""
    return _reduce("sum", value, axis)


def max(value, axis) -> Reduce:  # noqa: A001
    """Maximum of `value` over the reduce axis (or axes) `axis`."""
    return _reduce("max", value, axis)


def min(value, axis) -> Reduce:  # noqa: A001
    """Minimum of `value` over the reduce axis (or axes) `axis`."""
    return _reduce("min", value, axis)


# ---------------------------------------------------------------------------------------------
# Elementwise helpers
# ---------------------------------------------------------------------------------------------


def where(cond, t, f) -> Expr:
    """`t` where `cond` holds, else `f`; only the chosen branch is evaluated (safe for padding).

    Python numbers take the dtype of the other branch.
    """
    cond = as_expr(cond)
    if cond.dtype != "bool":
        raise DTypeError(f"where(): condition has dtype {cond.dtype}, expected bool")
    t = as_expr(t, like=f if isinstance(f, Expr) else None)
    f = as_expr(f, like=t)
    if t.dtype != f.dtype:
        raise DTypeError(f"where(): branches have dtypes {t.dtype} and {f.dtype}; use astype")
    return Select(cond, t, f)


def const(value, dtype: str = "float32") -> Const:
    """A typed constant: `const(0.5, "float16")`."""
    return Const(value, check_dtype(dtype, "const"))


def _math(func: str):
    def f(*args) -> Call:
        if len(args) != MATH_FUNCS[func]:
            raise TesselError(f"{func}() takes {MATH_FUNCS[func]} argument(s), got {len(args)}")
        first = next((a for a in args if isinstance(a, Expr)), None)
        exprs = tuple(as_expr(a, like=first) for a in args)
        if builtins.any(e.dtype != exprs[0].dtype for e in exprs):
            raise DTypeError(f"{func}(): arguments have different dtypes {[e.dtype for e in exprs]}")
        if func != "abs" and not exprs[0].dtype.startswith(("float", "bfloat")):
            raise DTypeError(f"{func}(): argument has dtype {exprs[0].dtype}, expected a float; use astype")
        return Call(func, exprs)

    f.__name__ = func
    f.__doc__ = f"Elementwise {func} (a math call in the IR)."
    return f


exp, log, sqrt, rsqrt, tanh, sigmoid, erf = (_math(n) for n in
                                            ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf"))
sin, cos, abs, pow, floor, ceil = (_math(n) for n in ("sin", "cos", "abs", "pow", "floor", "ceil"))  # noqa: A001


def maximum(a, b) -> Expr:
    """Elementwise maximum of two expressions."""
    a = as_expr(a, like=b if isinstance(b, Expr) else None)
    return a._bin("max", b)


def minimum(a, b) -> Expr:
    """Elementwise minimum of two expressions."""
    a = as_expr(a, like=b if isinstance(b, Expr) else None)
    return a._bin("min", b)


# ---------------------------------------------------------------------------------------------
# compute
# ---------------------------------------------------------------------------------------------


def _axis_names(fcompute: Callable, ndim: int, tensor: str) -> list[str]:
    try:
        params = list(inspect.signature(fcompute).parameters.values())
    except (TypeError, ValueError):
        params = []
    if params and params[0].kind == inspect.Parameter.VAR_POSITIONAL:
        return [f"i{d}" for d in range(ndim)]
    if len(params) != ndim:
        raise ShapeError(f"compute '{tensor}': shape has {ndim} dimension(s) but the function takes "
                         f"{len(params)} index argument(s)")
    return [p.name for p in params]


def compute(shape, fcompute: Callable, name: str = "compute", dtype: str | None = None) -> Tensor:
    """A tensor whose element at index (i, j, ...) is `fcompute(i, j, ...)`.

    `fcompute` returns an expression, or one reduction (`sum`/`max`/`min`) as its whole result.
    `dtype` casts the result when given; by default the expression's dtype is kept.

    >>> A = placeholder((3, 4), name="A")
    >>> B = compute((4, 3), lambda i, j: A[j, i] * 2.0, name="B")
    >>> B.shape, B.dtype
    ((4, 3), 'float32')
    """
    shape = _check_shape(shape, f"compute '{name}'")
    names = _axis_names(fcompute, len(shape), name)
    axes = tuple(Var(n) for n in names)
    body = fcompute(*axes)
    if isinstance(body, Tensor):
        raise TesselError(f"compute '{name}': the function returned the tensor '{body.name}'; "
                          f"return an element of it, e.g. {body.name}[i]")
    body = as_expr(body)
    if dtype is not None:
        dtype = check_dtype(dtype, f"compute '{name}'")
        if isinstance(body, Reduce):
            body = Reduce(body.combiner, body.value.astype(dtype), body.axes) if body.dtype != dtype else body
        else:
            body = body.astype(dtype)
    _check_reductions(body, name)
    inputs = _input_tensors(body)
    _check_bounds(body, axes, shape, inputs, name)
    _check_elementwise_shapes(body, axes, name)
    return Tensor(name, shape, body.dtype, ComputeOp(axes, body, tuple(inputs)))


def _check_elementwise_shapes(body: Expr, axes, name: str) -> None:
    """Tensors read elementwise (indexed by exactly the compute's axes, in order) must agree in
    shape: `A[i, j] + B[i, j]` with A (4, 5) and B (6, 7) is a shape mistake even where every
    access stays in bounds (reading part of one tensor on purpose indexes it explicitly)."""
    seen: dict[str, tuple] = {}
    for n in walk(body):
        if isinstance(n, Load) and n.indices == tuple(axes):
            seen.setdefault(n.buffer.name, tuple(n.buffer.shape))
    if len(set(seen.values())) > 1:
        (a, sa), (b, sb) = next(((x, sx), (y, sy)) for x, sx in seen.items() for y, sy in seen.items() if sx != sy)
        idx = ", ".join(v.name for v in axes)
        raise ShapeError(f"compute '{name}': '{a}' {sa} and '{b}' {sb} are both read elementwise as "
                         f"[{idx}] but their shapes disagree")


def _check_reductions(body: Expr, name: str) -> None:
    top_axes = set(body.axes) if isinstance(body, Reduce) else set()
    inner = body.value if isinstance(body, Reduce) else body
    for n in walk(inner):
        if isinstance(n, Reduce):
            raise TesselError(f"compute '{name}': a reduction must be the whole body of its compute "
                              f"(found {n.combiner}() inside an expression); compute it as its own tensor")
        if isinstance(n, ReduceAxis) and n not in top_axes:
            raise ShapeError(f"compute '{name}': reduce axis '{n.name}' is used outside a reduction over it")


def _input_tensors(body: Expr) -> list[Tensor]:
    seen: dict[str, Tensor] = {}
    for n in walk(body):
        t = n.__dict__.get("_tensor") if isinstance(n, Load) else None
        if t is not None:
            other = seen.get(t.name)
            if other is not None and other is not t:
                raise TesselError(f"two different tensors are both named '{t.name}'; give them distinct names")
            seen[t.name] = t
    return list(seen.values())


def _check_bounds(body: Expr, axes, shape, inputs, name: str) -> None:
    """Reject loads whose index provably leaves the tensor (loads under a where() are exempt:
    the condition may guard them)."""
    ranges = {a: (0, s - 1) for a, s in zip(axes, shape)}
    if isinstance(body, Reduce):
        ranges.update({a: (0, a.extent - 1) for a in body.axes})
    for n in _loads_outside_selects(body):
        for d, (idx, extent) in enumerate(zip(n.indices, n.buffer.shape)):
            r = interval(idx, ranges)
            if r is not None and (r[0] < 0 or r[1] >= extent):
                raise ShapeError(f"compute '{name}': index {d} of '{n.buffer.name}' ranges over "
                                 f"[{r[0]}, {r[1]}] but '{n.buffer.name}' dim {d} has extent {extent}")


def _loads_outside_selects(e: Node):
    if isinstance(e, Select):
        yield from _loads_outside_selects(e.cond)
        return
    if isinstance(e, Load):
        yield e
    for c in e.children():
        yield from _loads_outside_selects(c)


# ---------------------------------------------------------------------------------------------
# Lowering
# ---------------------------------------------------------------------------------------------


def _topo_computes(params: Sequence[Tensor]) -> list[Tensor]:
    order: list[Tensor] = []
    state: dict[int, str] = {}

    def visit(t: Tensor):
        s = state.get(id(t))
        if s == "done":
            return
        if s == "active":
            raise TesselError(f"tensor '{t.name}' depends on itself")
        state[id(t)] = "active"
        if t.op is not None:
            for x in t.op.inputs:
                visit(x)
        state[id(t)] = "done"
        order.append(t)

    for p in params:
        visit(p)
    return order


class _Names:
    """Hands out names unique within one kernel (explicit, per-lowering state)."""

    def __init__(self):
        self.used: set[str] = set()

    def fresh(self, base: str) -> str:
        name, n = base, 0
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


def lower(tensors: Sequence[Tensor], name: str | None = None) -> Kernel:
    """Lower tensors to a Kernel with naive loop nests. `tensors` are the kernel's parameters in
    call order: every placeholder that an output reads must be among them.

    >>> A = placeholder((4,), name="A")
    >>> B = compute((4,), lambda i: A[i] + 1.0, name="B")
    >>> lower([A, B]).body.var.name
    'i'
    """
    tensors = list(tensors)
    if not tensors:
        raise TesselError("build/lower needs at least one tensor")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TesselError(f"build/lower arguments must be tensors, got {type(t).__name__}")
    seen_names: dict[str, Tensor] = {}
    for t in tensors:
        if t.name in seen_names and seen_names[t.name] is not t:
            raise TesselError(f"two kernel arguments are both named '{t.name}'; give them distinct names")
        if t.name in seen_names:
            raise TesselError(f"tensor '{t.name}' is passed twice")
        seen_names[t.name] = t
    order = _topo_computes(tensors)
    param_ids = {id(t) for t in tensors}
    for t in order:
        if t.is_placeholder and id(t) not in param_ids:
            users = [c.name for c in order if c.op is not None and builtins.any(x is t for x in c.op.inputs)]
            raise TesselError(f"placeholder '{t.name}' is read by {', '.join(repr(u) for u in users)} "
                              f"but is not among the kernel's arguments")
    if not builtins.any(t.op is not None for t in tensors):
        raise TesselError("build/lower needs at least one computed tensor among the arguments")

    names = _Names()
    buffers: dict[int, Buffer] = {}
    for t in order:  # parameters keep their names; temporaries are renamed on collision
        bname = names.fresh(t.name)
        if id(t) in param_ids and bname != t.name:
            raise TesselError(f"two tensors are both named '{t.name}'; give them distinct names")
        buffers[id(t)] = Buffer(bname, t.shape, t.dtype)
    nests = [_lower_compute(t, buffers, names) for t in order if t.op is not None]
    body = seq(*nests)
    for t in reversed(order):
        if t.op is not None and id(t) not in param_ids:
            body = Allocate(buffers[id(t)], body)
    kname = name or next(t.name for t in reversed(tensors) if t.op is not None)
    return Kernel(kname, tuple(buffers[id(t)] for t in tensors), body)


def _lower_compute(t: Tensor, buffers, names: _Names):
    op = t.op
    by_name = {x.name: x for x in op.inputs}  # unique among one compute's inputs (checked)
    out = buffers[id(t)]
    mapping: dict[Node, Node] = {}
    loop_vars = []
    for a in op.axes:
        v = Var(names.fresh(a.name))
        mapping[a] = v
        loop_vars.append(v)
    body = op.body
    red_vars = []
    if isinstance(body, Reduce):
        for a in body.axes:
            v = Var(names.fresh(a.name))
            mapping[a] = v
            red_vars.append((v, a.extent))

    def fix(n: Node):
        if isinstance(n, Var) and n in mapping:
            return mapping[n]
        if isinstance(n, Load):
            src = by_name.get(n.buffer.name)
            if src is not None:
                b = buffers[id(src)]
                if b != n.buffer:
                    return Load(b, n.indices)
        if isinstance(n, ReduceAxis):
            return mapping.get(n)
        return None

    idx = tuple(loop_vars)
    if isinstance(body, Reduce):
        value = rewrite(body.value, fix, fixpoint=False)
        acc = Load(out, idx)
        if body.combiner == "sum":
            init, update = Const(0, out.dtype), Binary("add", acc, value)
        elif body.combiner == "max":
            init, update = Const(min_value(out.dtype), out.dtype), Binary("max", acc, value)
        else:
            init, update = Const(max_value(out.dtype), out.dtype), Binary("min", acc, value)
        first = None
        for v, _ in red_vars:
            c = Binary("eq", v, Const(0))
            first = c if first is None else Binary("and", first, c)
        stmt = Seq((IfThenElse(first, Store(out, idx, init)), Store(out, idx, update)))
        for v, extent in reversed(red_vars):
            stmt = For(v, extent, stmt)
    else:
        stmt = Store(out, idx, rewrite(body, fix, fixpoint=False))
    for v, extent in reversed(list(zip(loop_vars, t.shape))):
        stmt = For(v, extent, stmt)
    return stmt


__all__ = [
    "ComputeOp", "Reduce", "ReduceAxis", "Tensor", "abs", "ceil", "compute", "const", "cos", "erf", "exp", "floor",
    "log", "lower", "max", "maximum", "min", "minimum", "placeholder", "pow", "reduce_axis", "rsqrt", "sigmoid",
    "sin", "sqrt", "sum", "tanh", "where",
]
