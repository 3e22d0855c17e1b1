"""The tensor IR: immutable node types and the one rewrite engine.

Kernels are loop nests over buffers. Every node is a frozen dataclass with structural equality and
a cached structural hash, so equal trees compare equal wherever they were built and can key
caches. Variables and buffers are identified by name: a kernel never defines two loop variables or
two buffers with the same name (the verifier checks this), which keeps the text form trivial to
round-trip.

Expressions: Var, Const, Binary (+ - * / floordiv floormod min max, comparisons, logical and/or),
Not, Select, Cast, Call (math functions), Load. Statements: For (serial, parallel, vectorized,
unrolled, or bound to a GPU axis), Store, Allocate (a buffer with a memory scope), Seq,
IfThenElse, LetStmt, Barrier, Intrinsic (named intrinsic calls, e.g. tensor-core instructions).
A Kernel has parameter buffers, a body, a target and, for GPUs, launch dimensions.

The rewrite engine (`Pat`, `Rule`, `rewrite`) is how passes and schedule primitives change trees:
a rule is a pattern plus a function of the captured nodes that returns a replacement (or None).

Example:
    >>> i = Var("i")
    >>> A = Buffer("A", (8,), "float32")
    >>> body = For(i, 8, Store(A, (i,), Load(A, (i,)) * 2.0))
    >>> double = Rule(Pat(Binary, op="mul", a=Pat(name="x"), b=Pat(Const, value=2.0)),
    ...               lambda x, **_: x + x)
    >>> print(rewrite(body, [double]).body.value.op)
    add
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Union

from tessel.errors import DTypeError
from tessel.ir.dtypes import ALL_DTYPES, INDEX_DTYPE, check_dtype, is_bool, is_float, is_int

# ---------------------------------------------------------------------------------------------
# Base node: structural equality, cached hash, generic children
# ---------------------------------------------------------------------------------------------

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # explicit cache: dataclass field names per class


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names


class Node:
    """Base of every IR node. Subclasses are frozen dataclasses declared with eq=False."""

    def _key(self) -> tuple:
        return tuple(getattr(self, n) for n in _field_names(type(self)))

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((type(self).__name__, self._key()))
            self.__dict__["_hash"] = h
        return h

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(self) is not type(other) or hash(self) != hash(other):
            return False
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __getstate__(self) -> dict:
        # the cached hash depends on the process's string-hash salt: never carry it to another process
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def children(self) -> list["Node"]:
        """The direct sub-nodes, in field order (tuples of nodes are flattened)."""
        out = []
        for n in _field_names(type(self)):
            v = getattr(self, n)
            if isinstance(v, Node):
                out.append(v)
            elif isinstance(v, tuple):
                out.extend(x for x in v if isinstance(x, Node))
        return out

    def with_children(self, new: list["Node"]) -> "Node":
        """A copy with the direct sub-nodes replaced, in the order `children()` lists them."""
        it = iter(new)
        changes = {}
        for n in _field_names(type(self)):
            v = getattr(self, n)
            if isinstance(v, Node):
                nv = next(it)
                if nv is not v:
                    changes[n] = nv
            elif isinstance(v, tuple) and any(isinstance(x, Node) for x in v):
                nv = tuple(next(it) if isinstance(x, Node) else x for x in v)
                if any(a is not b for a, b in zip(nv, v)):
                    changes[n] = nv
        return dataclasses.replace(self, **changes) if changes else self

    def __str__(self) -> str:
        from tessel.ir.text import to_text  # the printer lives with the parser

        return to_text(self)


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------

ARITH_OPS = ("add", "sub", "mul", "div", "floordiv", "floormod", "min", "max")
COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")
LOGIC_OPS = ("and", "or")
BINARY_OPS = ARITH_OPS + COMPARE_OPS + LOGIC_OPS

# Math functions: name -> number of arguments.
MATH_FUNCS = {
    "exp": 1, "log": 1, "sqrt": 1, "rsqrt": 1, "tanh": 1, "sigmoid": 1, "erf": 1, "sin": 1, "cos": 1,
    "abs": 1, "floor": 1, "ceil": 1, "pow": 2,
}


class Expr(Node):
    """Base of expressions. Arithmetic operators build nodes; `==` stays structural equality,
    so use `.eq()` / `.ne()` to build comparisons."""

    dtype: str

    def _bin(self, op: str, other, reverse: bool = False) -> "Binary":
        other = as_expr(other, like=self)
        a, b = (other, self) if reverse else (self, other)
        if a.dtype != b.dtype:
            raise DTypeError(f"operands of '{op}' have different dtypes {a.dtype} and {b.dtype}; use astype")
        return Binary(op, a, b)

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __truediv__(self, o): return self._bin("div", o)
    def __rtruediv__(self, o): return self._bin("div", o, True)
    def __floordiv__(self, o): return self._bin("floordiv", o)
    def __rfloordiv__(self, o): return self._bin("floordiv", o, True)
    def __mod__(self, o): return self._bin("floormod", o)
    def __rmod__(self, o): return self._bin("floormod", o, True)
    def __lt__(self, o): return self._bin("lt", o)
    def __le__(self, o): return self._bin("le", o)
    def __gt__(self, o): return self._bin("gt", o)
    def __ge__(self, o): return self._bin("ge", o)
    def __and__(self, o): return self._bin("and", o)
    def __or__(self, o): return self._bin("or", o)
    def __invert__(self): return Not(self)
    def __neg__(self): return self._bin("sub", 0, True) if not is_bool(self.dtype) else Not(self)

    __hash__ = Node.__hash__
    __eq__ = Node.__eq__

    def eq(self, o) -> "Binary":
        return self._bin("eq", o)

    def ne(self, o) -> "Binary":
        return self._bin("ne", o)

    def astype(self, dtype: str) -> "Expr":
        dtype = check_dtype(dtype, "astype")
        return self if dtype == self.dtype else Cast(dtype, self)


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A scalar variable (loop variable or let-bound), identified by its name."""

    name: str
    dtype: str = INDEX_DTYPE


@dataclass(frozen=True, eq=False)
class Const(Expr):
    """A constant of a dtype; the value is a Python int, float or bool."""

    value: Union[int, float, bool]
    dtype: str = INDEX_DTYPE

    def __post_init__(self):
        check_dtype(self.dtype, "constant")
        v = self.value
        if is_float(self.dtype):
            v = float(v)
            if v != v:  # one NaN object, so equal NaN constants compare and hash equal
                v = math.nan
        elif is_int(self.dtype):
            if isinstance(v, float) and not v.is_integer():
                raise DTypeError(f"constant {v!r} is not an integer but has dtype {self.dtype}")
            v = int(v)
        else:
            v = bool(v)
        object.__setattr__(self, "value", v)

    def _key(self) -> tuple:
        # 0.0 == -0.0 in Python, but they are different constants (x + 0.0, 1/x differ): keep the sign
        v = self.value
        return (v, self.dtype, math.copysign(1.0, v)) if isinstance(v, float) else (v, self.dtype)


@dataclass(frozen=True, eq=False)
class Binary(Expr):
    """`a op b` with op in BINARY_OPS. Comparisons and and/or give bool; others keep a's dtype.
    `div` is true division and is for floats; `floordiv` / `floormod` round toward minus infinity
    (as Python and numpy do) on integers and floats alike."""

    op: str
    a: Expr
    b: Expr

    @cached_property
    def dtype(self) -> str:
        return "bool" if self.op in COMPARE_OPS or self.op in LOGIC_OPS else self.a.dtype


@dataclass(frozen=True, eq=False)
class Not(Expr):
    """Logical not of a bool expression."""

    a: Expr
    dtype = "bool"


@dataclass(frozen=True, eq=False)
class Select(Expr):
    """`cond ? t : f`. Only the chosen branch is evaluated (as C's `?:`), so a branch may hold a
    load that would be out of bounds when the condition is false (padding)."""

    cond: Expr
    t: Expr
    f: Expr

    @property
    def dtype(self) -> str:
        return self.t.dtype


@dataclass(frozen=True, eq=False)
class Cast(Expr):
    """Conversion to `dtype`. Float to int truncates toward zero (as C does)."""

    dtype: str
    value: Expr


@dataclass(frozen=True, eq=False)
class Call(Expr):
    """A math function from MATH_FUNCS applied to arguments of one float dtype (abs also ints)."""

    func: str
    args: tuple

    def __post_init__(self):
        object.__setattr__(self, "args", tuple(as_expr(a) for a in self.args))

    @property
    def dtype(self) -> str:
        return self.args[0].dtype


def _dim(s):
    """A shape entry: an int, or an integer expression of scalar kernel parameters (a constant
    expression becomes its int)."""
    if isinstance(s, Const):
        return int(s.value)
    if isinstance(s, Expr):
        if not is_int(s.dtype):
            raise DTypeError(f"a shape entry must be an integer, got a {s.dtype} expression")
        return s
    return int(s)


@dataclass(frozen=True, eq=False)
class Buffer(Node):
    """A multi-dimensional array with a shape, a dtype and a memory scope: "global" (device or
    host memory), "shared" (one copy per GPU block), "local" (registers, one copy per thread).
    Shape entries are ints, or integer expressions of the kernel's scalar parameters (symbolic
    extents: `Buffer("K", (n, 128))` with `n = Var("n")` a parameter of the kernel)."""

    name: str
    shape: tuple
    dtype: str = "float32"
    scope: str = "global"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(_dim(s) for s in self.shape))
        check_dtype(self.dtype, f"buffer {self.name}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def symbolic(self) -> bool:
        """Whether some shape entry is an expression (of scalar parameters), not an int."""
        return any(isinstance(s, Expr) for s in self.shape)

    @property
    def size(self):
        """The element count: an int, or an expression when the shape is symbolic."""
        n = 1
        for s in self.shape:
            n = s if isinstance(n, int) and n == 1 else n * s
        return n

    def __getitem__(self, idx) -> "Load":
        return Load(self, idx if isinstance(idx, tuple) else (idx,))


SCOPES = ("global", "shared", "local")


@dataclass(frozen=True, eq=False)
class Load(Expr):
    """`buffer[indices]`."""

    buffer: Buffer
    indices: tuple

    def __post_init__(self):
        object.__setattr__(self, "indices", tuple(as_expr(i) for i in self.indices))

    @property
    def dtype(self) -> str:
        return self.buffer.dtype


# ---------------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------------

THREAD_AXES = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z")
LOOP_KINDS = ("serial", "parallel", "vectorized", "unrolled") + THREAD_AXES


class Stmt(Node):
    pass


@dataclass(frozen=True, eq=False)
class For(Stmt):
    """`for var in range(extent)`. `kind` says how iterations run: in order, on CPU threads, as
    vector lanes, unrolled, or as GPU blocks/threads along a launch axis."""

    var: Var
    extent: Expr
    body: Stmt
    kind: str = "serial"

    def __post_init__(self):
        object.__setattr__(self, "extent", as_expr(self.extent))

    @property
    def thread_axis(self) -> str | None:
        return self.kind if self.kind in THREAD_AXES else None


@dataclass(frozen=True, eq=False)
class Store(Stmt):
    """`buffer[indices] = value`."""

    buffer: Buffer
    indices: tuple
    value: Expr

    def __post_init__(self):
        object.__setattr__(self, "indices", tuple(as_expr(i) for i in self.indices))


@dataclass(frozen=True, eq=False)
class Allocate(Stmt):
    """Allocates `buffer` (in its scope) for the duration of `body`. Contents start undefined."""

    buffer: Buffer
    body: Stmt


@dataclass(frozen=True, eq=False)
class Seq(Stmt):
    """Statements run in order. `Seq(())` is the empty statement."""

    stmts: tuple

    def __post_init__(self):
        object.__setattr__(self, "stmts", tuple(self.stmts))


@dataclass(frozen=True, eq=False)
class IfThenElse(Stmt):
    cond: Expr
    then: Stmt
    else_: Stmt | None = None


@dataclass(frozen=True, eq=False)
class LetStmt(Stmt):
    """Binds `var` to `value` within `body`."""

    var: Var
    value: Expr
    body: Stmt


@dataclass(frozen=True, eq=False)
class Barrier(Stmt):
    """All threads of a GPU block wait here until every one of them has arrived."""


@dataclass(frozen=True, eq=False)
class BufferRef(Node):
    """A buffer and a start index: an operand of an intrinsic (which region it covers is part of
    the intrinsic's definition)."""

    buffer: Buffer
    indices: tuple

    def __post_init__(self):
        object.__setattr__(self, "indices", tuple(as_expr(i) for i in self.indices))


@dataclass(frozen=True, eq=False)
class Intrinsic(Stmt):
    """A call of a named intrinsic (e.g. a tensor-core instruction). Arguments are expressions
    or BufferRefs; the meaning of each name lives in the intrinsic registry."""

    name: str
    args: tuple

    def __post_init__(self):
        object.__setattr__(self, "args", tuple(a if isinstance(a, BufferRef) else as_expr(a) for a in self.args))


@dataclass(frozen=True, eq=False)
class Launch(Node):
    """GPU launch shape: grid and block dimensions (x, y, z), dynamic shared memory in bytes, and
    the thread-block cluster (x, y, z): blocks per cluster along each grid axis (each must divide
    the grid's; (1, 1, 1) is no cluster). Grid entries may be integer expressions of the kernel's
    scalar parameters (evaluated at launch); block and cluster entries are ints."""

    def __post_init__(self):
        object.__setattr__(self, "grid", tuple(_dim(g) for g in self.grid))

    grid: tuple = (1, 1, 1)
    block: tuple = (1, 1, 1)
    shared_bytes: int = 0
    cluster: tuple = (1, 1, 1)


@dataclass(frozen=True, eq=False)
class Kernel(Node):
    """A kernel: parameters in call order, a body, the target it was scheduled for ("cpu" or
    "cuda") and, for GPU kernels, its launch shape. Parameters are Buffers (inputs and outputs)
    and scalar parameters: int32 / int64 `Var`s, which loop extents, buffer shapes and the launch
    grid may use, so that one kernel serves every length."""

    name: str
    params: tuple
    body: Stmt
    target: str = "cpu"
    launch: Launch | None = None

    def __post_init__(self):
        object.__setattr__(self, "params", tuple(self.params))

    def param(self, name: str):
        """The parameter (Buffer or scalar Var) named `name`."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def scalar_params(self) -> tuple:
        """The scalar (Var) parameters, in order."""
        return tuple(p for p in self.params if isinstance(p, Var))

    @property
    def buffer_params(self) -> tuple:
        """The Buffer parameters, in order."""
        return tuple(p for p in self.params if isinstance(p, Buffer))


# ---------------------------------------------------------------------------------------------
# Constructors and small helpers
# ---------------------------------------------------------------------------------------------


def const(value, dtype: str = INDEX_DTYPE) -> Const:
    return Const(value, dtype)


def as_expr(value, like: Expr | None = None) -> Expr:
    """Turn a Python number into a Const; the dtype follows `like` when given.

    >>> as_expr(2.0, like=Var("x", "float16")).dtype
    'float16'
    """
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool):
        return Const(value, "bool")
    if isinstance(value, int):
        if like is not None and like.dtype != "bool":
            return Const(value, like.dtype)
        return Const(value, INDEX_DTYPE)
    if isinstance(value, float):
        if like is not None:
            if not is_float(like.dtype):
                raise DTypeError(f"float constant {value!r} used with a {like.dtype} operand; use astype")
            return Const(value, like.dtype)
        return Const(value, "float32")
    if hasattr(value, "dtype") and hasattr(value, "item"):  # numpy scalar
        return Const(value.item(), check_dtype(value.dtype))
    raise DTypeError(f"cannot use {value!r} ({type(value).__name__}) as an IR expression")


def seq(*stmts: Stmt) -> Stmt:
    """Sequence statements, flattening nested Seqs and dropping empty ones; one statement stays
    itself."""
    flat = []
    for s in stmts:
        if s is None:
            continue
        if isinstance(s, Seq):
            flat.extend(s.stmts)
        else:
            flat.append(s)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def call(func: str, *args) -> Call:
    return Call(func, tuple(args))


def select(cond, t, f) -> Select:
    t = as_expr(t, like=f if isinstance(f, Expr) else None)
    f = as_expr(f, like=t)
    return Select(as_expr(cond), t, f)


def minimum(a, b) -> Expr:
    a = as_expr(a, like=b if isinstance(b, Expr) else None)
    return a._bin("min", b)


def maximum(a, b) -> Expr:
    a = as_expr(a, like=b if isinstance(b, Expr) else None)
    return a._bin("max", b)


# The rewrite engine (Pat, Rule, RuleSet, rewrite, in tessel/ir/rewrite.py) and the traversals (walk,
# collect, free_vars, substitute, in tessel/ir/traverse.py) are re-exported here; they are imported last
# because they stand on the node types above.
from tessel.ir.rewrite import Pat, Rule, RuleSet, rewrite  # noqa: E402
from tessel.ir.traverse import collect, free_vars, substitute, walk  # noqa: E402


__all__ = [
    "ALL_DTYPES", "ARITH_OPS", "BINARY_OPS", "COMPARE_OPS", "LOGIC_OPS", "LOOP_KINDS", "MATH_FUNCS", "SCOPES",
    "THREAD_AXES", "Allocate", "Barrier", "Binary", "Buffer", "BufferRef", "Call", "Cast", "Const", "Expr",
    "For", "IfThenElse", "Intrinsic", "Kernel", "Launch", "Load", "LetStmt", "Node", "Not", "Pat", "Rule",
    "RuleSet", "Select", "Seq", "Stmt", "Store", "Var", "as_expr", "call", "collect", "const", "free_vars",
    "maximum", "minimum", "rewrite", "select", "seq", "substitute", "walk",
]
