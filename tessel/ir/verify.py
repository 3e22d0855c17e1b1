"""Well-formedness checks of the tensor IR, run between passes.

`verify(kernel)` walks a kernel once, keeping the scope it is in (bound variables, buffers in
scope, loop ranges, enclosing conditions), and collects every problem it finds before raising one
`VerifyError` that lists them all, each naming the kernel and the culprit:

- scoping: variables used outside the For/LetStmt binding them, a variable bound again inside its
  own scope, two loops with the same variable name (names are identities in this IR), buffers
  used outside their Allocate that are not parameters, two buffers with one name but different
  shape/dtype/scope;
- types: index counts, operand dtypes of every operator, bool conditions, Store value dtypes,
  integer indices and extents, math calls on floats;
- constant out-of-bounds accesses (see `_Checker._check_bounds`);
- GPU structure: barriers under thread-divergent conditions, loop kinds, parallel loops nested in
  parallel loops, shared buffers or GPU axes on a CPU kernel, a launch cluster that does not
  divide the grid or holds more than MAX_CLUSTER blocks;
- scalar parameters: int32 / int64 Vars with unique names; symbolic buffer shapes and launch grid
  entries use only them.

Out-of-bounds reports must never be false alarms (the verifier runs on every kernel a pass
makes), so an access is reported only when a concrete witness is found: an assignment of the
enclosing loop variables within their ranges that satisfies every enclosing loop extent and
condition and puts the index outside the buffer. The interval analysis of `tessel.ir.bounds`
decides cheaply which accesses need that search. Loads inside a Select branch are never reported:
the condition may guard them (padding).

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, i = Buffer("A", (8,), "float32"), Var("i")
    >>> verify(Kernel("k", (A,), For(i, 8, Store(A, (i,), A[i] * 2.0))))   # fine: returns None
    >>> try:
    ...     verify(Kernel("k", (A,), For(i, 8, Store(A, (i + 1,), A[i]))))
    ... except VerifyError as e:
    ...     print(str(e).splitlines()[0])
    kernel 'k' failed verification with 1 problem(s):
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tessel.errors import VerifyError
from tessel.ir.bounds import interval
from tessel.ir.dtypes import ALL_DTYPES, is_bool, is_float, is_int
from tessel.ir.nodes import (
    ARITH_OPS, COMPARE_OPS, LOGIC_OPS, LOOP_KINDS, MATH_FUNCS, SCOPES, THREAD_AXES, Allocate, Barrier, Binary, Buffer,
    BufferRef, Call, Cast, Const, Expr, For, IfThenElse, Intrinsic, Kernel, Launch, LetStmt, Load, Node, Not, Select,
    Seq, Stmt, Store, Var, walk,
)
from tessel.ir.verify_witness import tighten, witness

SCALAR_PARAM_DTYPES = ("int32", "int64")
MAX_CLUSTER = 16  # blocks per thread-block cluster (8 portable, 16 with the non-portable opt-in on sm_90)


def verify(kernel: Kernel) -> None:
    """Raise VerifyError listing every well-formedness problem of `kernel`; return None if none.

    >>> from tessel.ir.dsl import placeholder, compute, lower
    >>> A = placeholder((4,), name="A")
    >>> verify(lower([A, compute((4,), lambda i: A[i] + 1.0, name="B")]))
    """
    if not isinstance(kernel, Kernel):
        raise VerifyError(f"verify() expects a Kernel, got {type(kernel).__name__}")
    checker = _Checker(f"kernel '{kernel.name}'", kernel.target)
    checker.check_kernel(kernel)
    checker.raise_if_any(f"kernel '{kernel.name}'")


def verify_expr(expr: Expr, variables=None) -> None:
    """Check the dtypes of an expression (and, when `variables` is given, that it uses no other
    variables); raise VerifyError listing the problems.

    >>> from tessel.ir.nodes import Var
    >>> verify_expr(Var("i") * 4 + 1, variables=[Var("i")])
    """
    checker = _Checker("expression", "cpu")
    scope = _Scope()
    if variables is None:
        checker.check_undefined = False
    else:
        scope.vars = {v.name: v for v in variables}
    checker.check_expr(expr, scope, expr)
    checker.raise_if_any("expression")


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


def _text(node: Node, limit: int = 72) -> str:
    """A short one-line rendering of a node for messages."""
    try:
        from tessel.ir.text import to_text

        s = to_text(node)
    except Exception:  # the printer is optional here: a message must never fail to print
        s = repr(node)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _in(e: Expr, where: Node) -> str:
    """`expr in statement`, rendered only when a problem is reported (printing costs)."""
    return f"{_show(e)} in {_show(where)}"


def _show(node: Node) -> str:
    """A statement's header (not its whole body) or an expression, for messages."""
    if isinstance(node, For):
        return f"loop 'for {node.var.name} in range({_text(node.extent)}) [{node.kind}]'"
    if isinstance(node, LetStmt):
        return f"'let {node.var.name} = {_text(node.value)}'"
    if isinstance(node, IfThenElse):
        return f"'if {_text(node.cond)}'"
    if isinstance(node, Allocate):
        b = node.buffer
        return f"'allocate {b.name}{list(b.shape)} {b.dtype} {b.scope}'"
    if isinstance(node, Seq):
        return "a Seq"
    return f"'{_text(node)}'"


# ---------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------


@dataclass
class _Scope:
    """What holds at one point of the kernel; copied (shallowly) when a statement binds something."""

    vars: dict = field(default_factory=dict)  # name -> Var bound here
    buffers: dict = field(default_factory=dict)  # name -> Buffer in scope
    ranges: dict = field(default_factory=dict)  # Var (or guarded Expr) -> (lo, hi), for interval analysis
    binders: tuple = ()  # enclosing For / LetStmt nodes, outermost first (for witnesses)
    guards: tuple = ()  # conditions known to hold here (enclosing ifs; Not(c) in else branches)
    thread_vars: frozenset = frozenset()  # names whose value differs between threads of a block
    divergent: str | None = None  # why control flow here may differ between threads of a block
    parallel: For | None = None  # the enclosing parallel loop
    axes: dict = field(default_factory=dict)  # GPU axis -> name of the enclosing loop bound to it


class _Checker:
    def __init__(self, where: str, target: str):
        self.where = where
        self.target = target
        self.problems: list[str] = []
        self.check_undefined = True
        self.launch = None
        self.axis_size: dict[str, int] = {}
        self.loop_vars: dict[str, For] = {}  # every loop variable name seen, kernel-wide
        self.buffers: dict[str, Buffer] = {}  # first buffer seen under each name, kernel-wide
        self.reported_buffers: set[str] = set()

    def report(self, msg: str) -> None:
        line = f"{self.where}: {msg}"
        if line not in self.problems:
            self.problems.append(line)

    def raise_if_any(self, what: str) -> None:
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise VerifyError(f"{what} failed verification with {len(self.problems)} problem(s):\n{lines}")

    # -- kernel and statements -----------------------------------------------------------------

    def check_kernel(self, kernel: Kernel) -> None:
        scope = _Scope()
        self.launch = kernel.launch
        self.axis_size = _launch_shape(kernel)
        if kernel.launch is not None:
            self.check_cluster(kernel.launch)
        names: set[str] = set()
        for p in kernel.params:
            if isinstance(p, Var):
                if p.name in names:
                    self.report(f"two parameters are named '{p.name}'")
                names.add(p.name)
                if p.dtype not in SCALAR_PARAM_DTYPES:
                    self.report(f"scalar parameter '{p.name}' has dtype {p.dtype}; scalar parameters are "
                                f"{' or '.join(SCALAR_PARAM_DTYPES)}")
                scope.vars[p.name] = p
                continue
            if not isinstance(p, Buffer):
                self.report(f"parameter {p!r} is neither a Buffer nor a scalar Var")
                continue
            if p.name in names:
                self.report(f"two parameters are named '{p.name}'")
            names.add(p.name)
            if p.scope != "global":
                self.report(f"parameter buffer '{p.name}' has scope '{p.scope}'; parameters live in global memory")
            self.note_buffer(p)
            scope.buffers[p.name] = p
        scalars = {p.name: p for p in kernel.params if isinstance(p, Var)}
        for p in kernel.params:
            if isinstance(p, Buffer):
                self.check_dims(p, scalars, f"the shape of parameter '{p.name}'")
        if kernel.launch is not None:
            for g in kernel.launch.grid:
                if isinstance(g, Expr):
                    self.check_dim(g, scalars, "the launch grid")
            if any(not isinstance(d, int) for d in kernel.launch.block):
                self.report(f"launch block {kernel.launch.block} must hold integers")
        self.scalars = scalars
        if not isinstance(kernel.body, Stmt):
            self.report(f"the body is a {type(kernel.body).__name__}, not a statement")
            return
        self.check_stmt(kernel.body, scope)

    def check_dims(self, b: Buffer, scalars: dict, what: str) -> None:
        for d in b.shape:
            if isinstance(d, Expr):
                self.check_dim(d, scalars, what)

    def check_dim(self, d: Expr, scalars: dict, what: str) -> None:
        """A symbolic extent: an integer expression of scalar parameters only (no loads)."""
        if not is_int(d.dtype):
            self.report(f"{what} has a {d.dtype} entry {_show(d)}, expected an integer")
        for n in walk(d):
            if isinstance(n, Load):
                self.report(f"{what} has an entry {_show(d)} that loads from buffer '{n.buffer.name}'")
            elif isinstance(n, Var) and scalars.get(n.name) != n:
                self.report(f"{what} uses '{n.name}' ({n.dtype}), which is not a scalar parameter of the kernel")

    def check_cluster(self, launch: Launch) -> None:
        cluster = tuple(launch.cluster)
        if len(cluster) != 3 or any(not isinstance(c, int) or c < 1 for c in cluster):
            self.report(f"launch cluster {cluster} must be three positive integers")
            return
        grid = (tuple(launch.grid) + (1, 1, 1))[:3]
        for g, c, a in zip(grid, cluster, "xyz"):
            if isinstance(g, int) and g % c:
                self.report(f"launch cluster {cluster} does not divide the grid {grid} along {a}")
        n = cluster[0] * cluster[1] * cluster[2]
        if n > MAX_CLUSTER:
            self.report(f"launch cluster {cluster} has {n} blocks; a cluster holds at most {MAX_CLUSTER}")

    def check_stmt(self, s: Stmt, scope: _Scope) -> None:
        if isinstance(s, Seq):
            for x in s.stmts:
                if isinstance(x, Stmt):
                    self.check_stmt(x, scope)
                else:
                    self.report(f"a Seq holds {type(x).__name__} {_show(x)}, which is not a statement")
        elif isinstance(s, For):
            self.check_for(s, scope)
        elif isinstance(s, LetStmt):
            self.check_let(s, scope)
        elif isinstance(s, IfThenElse):
            self.check_if(s, scope)
        elif isinstance(s, Allocate):
            self.check_allocate(s, scope)
        elif isinstance(s, Store):
            self.check_access(s.buffer, s.indices, scope, s, bounds=True)
            self.check_expr(s.value, scope, s)
            if s.value.dtype != s.buffer.dtype:
                self.report(f"store of a {s.value.dtype} value into {s.buffer.dtype} buffer "
                            f"'{s.buffer.name}' in {_show(s)}")
        elif isinstance(s, Barrier):
            if scope.divergent is not None:
                self.report(f"barrier under a thread-divergent {scope.divergent}: not every thread of the block "
                            f"reaches it")
        elif isinstance(s, Intrinsic):
            for a in s.args:
                if isinstance(a, BufferRef):
                    self.check_access(a.buffer, a.indices, scope, s, bounds=False)
                elif isinstance(a, Expr):
                    self.check_expr(a, scope, s)
                else:
                    self.report(f"intrinsic '{s.name}' has an argument {a!r} that is neither an expression "
                                f"nor a BufferRef")
        else:
            self.report(f"unexpected node {type(s).__name__} {_show(s)} in statement position")

    def bind(self, var: Var, binder: Stmt, scope: _Scope) -> None:
        if var.name in scope.vars:
            self.report(f"variable '{var.name}' is bound again inside its own scope by {_show(binder)}")
        if not is_int(var.dtype) and not (isinstance(binder, LetStmt) and var.dtype in ALL_DTYPES):
            self.report(f"variable '{var.name}' of {_show(binder)} has dtype {var.dtype}, expected an integer")

    def check_for(self, s: For, scope: _Scope) -> None:
        self.check_expr(s.extent, scope, s)
        name = s.var.name
        self.bind(s.var, s, scope)
        if name in self.loop_vars:
            self.report(f"two loops bind the variable '{name}' ({_show(self.loop_vars[name])} and {_show(s)}); "
                        f"loop names must be unique in a kernel")
        self.loop_vars.setdefault(name, s)
        if not is_int(s.extent.dtype):
            self.report(f"{_show(s)} has an extent of dtype {s.extent.dtype}, expected an integer")
        inner = replace(scope, vars={**scope.vars, name: s.var}, binders=scope.binders + (s,))
        ext = interval(s.extent, scope.ranges) if is_int(s.extent.dtype) else None
        if ext is not None and ext[1] >= 1:
            inner.ranges = {**scope.ranges, s.var: (0, ext[1] - 1)}
        self.check_loop_kind(s, scope, inner)
        if _uses(s.extent, scope.thread_vars):
            inner.divergent = f"loop extent in {_show(s)}"
        self.check_stmt(s.body, inner)

    def check_loop_kind(self, s: For, outer: _Scope, inner: _Scope) -> None:
        kind = s.kind
        if kind not in LOOP_KINDS:
            self.report(f"{_show(s)} has unknown kind '{kind}'; expected one of {', '.join(LOOP_KINDS)}")
        elif kind == "parallel":
            if outer.parallel is not None:
                self.report(f"parallel {_show(s)} is nested inside parallel {_show(outer.parallel)}")
            inner.parallel = s
        elif kind == "vectorized" and not isinstance(s.extent, Const):
            self.report(f"vectorized {_show(s)} needs a constant extent")
        elif kind in THREAD_AXES:
            if self.target == "cpu":
                self.report(f"{_show(s)} is bound to the GPU axis {kind} in a CPU kernel")
            if kind in outer.axes:
                self.report(f"{_show(s)} is bound to {kind}, already bound by the enclosing loop "
                            f"'{outer.axes[kind]}'")
            inner.axes = {**outer.axes, kind: s.var.name}
            size = self.axis_size.get(kind)
            ext = s.extent.value if isinstance(s.extent, Const) else None
            if self.launch is not None and ext is not None and size is not None and ext > size:
                self.report(f"{_show(s)} is bound to {kind} with extent {ext} but the launch has {size} along {kind}")
            if kind.startswith("threadIdx"):
                inner.thread_vars = outer.thread_vars | {s.var.name}
                # the threads past the extent skip the body
                if ext is None:
                    inner.divergent = f"{_show(s)}, whose extent is not a constant"
                elif size is not None and ext < size:
                    inner.divergent = f"{_show(s)}, which runs on {ext} of the {size} threads along {kind}"

    def check_let(self, s: LetStmt, scope: _Scope) -> None:
        self.check_expr(s.value, scope, s)
        self.bind(s.var, s, scope)
        if s.var.dtype != s.value.dtype:
            self.report(f"{_show(s)} binds a {s.value.dtype} value to a {s.var.dtype} variable")
        inner = replace(scope, vars={**scope.vars, s.var.name: s.var}, binders=scope.binders + (s,))
        r = interval(s.value, scope.ranges) if is_int(s.value.dtype) else None
        if r is not None:
            inner.ranges = {**scope.ranges, s.var: r}
        if _uses(s.value, scope.thread_vars):
            inner.thread_vars = scope.thread_vars | {s.var.name}
        self.check_stmt(s.body, inner)

    def check_if(self, s: IfThenElse, scope: _Scope) -> None:
        self.check_expr(s.cond, scope, s)
        if not is_bool(s.cond.dtype):
            self.report(f"condition of {_show(s)} has dtype {s.cond.dtype}, expected bool")
        divergent = f"condition {_show(s)}" if _uses(s.cond, scope.thread_vars) else scope.divergent
        then = replace(scope, guards=scope.guards + (s.cond,), divergent=divergent,
                       ranges=tighten(s.cond, True, scope.ranges))
        self.check_stmt(s.then, then)
        if s.else_ is not None:
            other = replace(scope, guards=scope.guards + (Not(s.cond),), divergent=divergent,
                            ranges=tighten(s.cond, False, scope.ranges))
            self.check_stmt(s.else_, other)

    def check_allocate(self, s: Allocate, scope: _Scope) -> None:
        b = s.buffer
        if b.name in scope.buffers:
            self.report(f"buffer '{b.name}' is allocated again inside its own scope (or shadows a parameter) "
                        f"by {_show(s)}")
        if b.scope not in SCOPES:
            self.report(f"buffer '{b.name}' has unknown scope '{b.scope}'; expected one of {', '.join(SCOPES)}")
        elif b.scope == "shared" and self.target == "cpu":
            self.report(f"buffer '{b.name}' is in shared memory in a CPU kernel")
        self.note_buffer(b)
        self.check_dims(b, getattr(self, "scalars", {}), f"the shape of buffer '{b.name}'")
        self.check_stmt(s.body, replace(scope, buffers={**scope.buffers, b.name: b}))

    # -- buffers and accesses -------------------------------------------------------------------

    def note_buffer(self, b: Buffer) -> None:
        first = self.buffers.setdefault(b.name, b)
        if first != b and b.name not in self.reported_buffers:
            self.reported_buffers.add(b.name)
            self.report(f"two buffers are named '{b.name}' with different shape/dtype/scope: "
                        f"{list(first.shape)} {first.dtype} {first.scope} and {list(b.shape)} {b.dtype} {b.scope}")

    def check_access(self, b: Buffer, indices: tuple, scope: _Scope, where: Node, bounds: bool) -> None:
        self.note_buffer(b)
        if b.name not in scope.buffers:
            self.report(f"buffer '{b.name}' is used in {_show(where)} outside its Allocate and is not a parameter")
        if len(indices) != b.ndim:
            self.report(f"buffer '{b.name}' has {b.ndim} dimension(s) but {_show(where)} gives {len(indices)} "
                        f"index(es)")
        for d, idx in enumerate(indices):
            self.check_expr(idx, scope, where)
            if not is_int(idx.dtype):
                self.report(f"index {d} of '{b.name}' in {_show(where)} has dtype {idx.dtype}, expected an integer")
        if bounds and len(indices) == b.ndim:
            self.check_bounds(b, indices, scope, where)

    def check_bounds(self, b: Buffer, indices: tuple, scope: _Scope, where: Node) -> None:
        """Report an index that leaves the buffer for some concrete point of the iteration space."""
        for d, (idx, extent) in enumerate(zip(indices, b.shape)):
            if not is_int(idx.dtype):
                continue
            r = interval(idx, scope.ranges)
            known = None if isinstance(idx, Var) else scope.ranges.get(idx)  # from an enclosing guard
            if r is not None and known is not None:
                r = max(r[0], known[0]), min(r[1], known[1])
            if isinstance(extent, Expr) or r is None or (r[0] >= 0 and r[1] < extent):
                continue  # a symbolic extent is checked at run time
            w = witness(idx, extent, scope)
            if w is not None:
                env, value = w
                at = ", ".join(f"{k}={v}" for k, v in env.items())
                self.report(f"index {d} of '{b.name}' in {_show(where)} is {value} at {at or 'every point'}, "
                            f"outside [0, {extent - 1}] (dim {d} of '{b.name}' has extent {extent})")

    # -- expressions ----------------------------------------------------------------------------

    def check_expr(self, e: Expr, scope: _Scope, where: Node, in_branch: bool = False) -> None:
        """Check `e` (an expression of statement `where`); loads inside Select branches are not
        bounds-checked (`in_branch`)."""
        if isinstance(e, Var):
            if e.dtype not in ALL_DTYPES:
                self.report(f"variable '{e.name}' has unknown dtype {e.dtype!r}")
            bound = scope.vars.get(e.name)
            if bound is None:
                if self.check_undefined:
                    self.report(f"variable '{e.name}' is used in {_show(where)} outside the loop or let binding it")
            elif bound.dtype != e.dtype:
                self.report(f"variable '{e.name}' is bound as {bound.dtype} but used as {e.dtype} in {_show(where)}")
        elif isinstance(e, Const):
            pass
        elif isinstance(e, Binary):
            self.check_expr(e.a, scope, where, in_branch)
            self.check_expr(e.b, scope, where, in_branch)
            self.check_binary(e, where)
        elif isinstance(e, Not):
            self.check_expr(e.a, scope, where, in_branch)
            if not is_bool(e.a.dtype):
                self.report(f"'not' of a {e.a.dtype} operand in {_show(where)}: {_show(e)}")
        elif isinstance(e, Select):
            self.check_expr(e.cond, scope, where, in_branch)
            self.check_expr(e.t, scope, where, True)
            self.check_expr(e.f, scope, where, True)
            if not is_bool(e.cond.dtype):
                self.report(f"select condition has dtype {e.cond.dtype}, expected bool, in {_show(where)}")
            if e.t.dtype != e.f.dtype:
                self.report(f"select branches have dtypes {e.t.dtype} and {e.f.dtype} in {_show(where)}")
        elif isinstance(e, Cast):
            self.check_expr(e.value, scope, where, in_branch)
            if e.dtype not in ALL_DTYPES:
                self.report(f"cast to unknown dtype {e.dtype!r} in {_show(where)}")
        elif isinstance(e, Call):
            for a in e.args:
                self.check_expr(a, scope, where, in_branch)
            self.check_call(e, where)
        elif isinstance(e, Load):
            self.check_access(e.buffer, e.indices, scope, where, bounds=not in_branch)
        else:
            self.report(f"unexpected node {type(e).__name__} in an expression of {_show(where)}")

    def check_binary(self, e: Binary, where: Node) -> None:
        a, b, op = e.a.dtype, e.b.dtype, e.op
        if a != b:
            self.report(f"operands of '{op}' have dtypes {a} and {b}: {_in(e, where)}")
        if op in LOGIC_OPS:
            if not (is_bool(a) and is_bool(b)):
                self.report(f"'{op}' needs bool operands, got {a} and {b}: {_in(e, where)}")
        elif op in COMPARE_OPS:
            if is_bool(a) and op not in ("eq", "ne"):
                self.report(f"ordering comparison '{op}' of bool operands: {_in(e, where)}")
        elif op in ARITH_OPS:
            if is_bool(a):
                self.report(f"arithmetic '{op}' on bool operands: {_in(e, where)}")
            elif op == "div" and is_int(a):
                self.report(f"'div' on {a} operands (integer division is floordiv): {_in(e, where)}")
        else:
            self.report(f"unknown binary operator '{op}': {_in(e, where)}")

    def check_call(self, e: Call, where: Node) -> None:
        if e.func not in MATH_FUNCS:
            self.report(f"unknown math function '{e.func}': {_in(e, where)}")
            return
        if len(e.args) != MATH_FUNCS[e.func]:
            self.report(f"'{e.func}' takes {MATH_FUNCS[e.func]} argument(s), got {len(e.args)}: {_in(e, where)}")
        dtypes = {a.dtype for a in e.args}
        if len(dtypes) > 1:
            self.report(f"arguments of '{e.func}' have different dtypes {sorted(dtypes)}: {_in(e, where)}")
        for dt in dtypes:
            if not is_float(dt) and not (e.func == "abs" and is_int(dt)):
                self.report(f"'{e.func}' of a {dt} argument (math functions take floats): {_in(e, where)}")


# ---------------------------------------------------------------------------------------------
# Helpers: thread dependence, guard tightening, out-of-bounds witnesses
# ---------------------------------------------------------------------------------------------


def _launch_shape(kernel: Kernel) -> dict[str, int]:
    """Threads (blocks) along each GPU axis: the Launch's, else the largest constant extent bound to
    the axis (as the interpreter launches it)."""
    if kernel.launch is not None:  # symbolic grid entries are left out: unknown until launch
        dims = zip(THREAD_AXES, tuple(kernel.launch.grid) + tuple(kernel.launch.block))
        return {axis: d for axis, d in dims if isinstance(d, int)}
    size: dict[str, int] = {}
    for n in walk(kernel.body):
        if isinstance(n, For) and n.kind in THREAD_AXES and isinstance(n.extent, Const):
            size[n.kind] = max(size.get(n.kind, 0), n.extent.value)
    return size


def _uses(e: Expr, names) -> bool:
    return bool(names) and any(isinstance(n, Var) and n.name in names for n in walk(e))


__all__ = ["verify", "verify_expr"]
