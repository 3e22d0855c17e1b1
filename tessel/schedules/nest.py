"""Finding and replacing things in loop nests: the shared toolkit of the schedule primitives.

Loops are addressed by the name of their variable (names are unique within a kernel), buffers by
name. Every function here is pure: it returns new trees and never mutates.

Example:
    >>> from tessel.ir.dsl import placeholder, compute, lower
    >>> A = placeholder((4, 4), name="A")
    >>> k = lower([A, compute((4, 4), lambda i, j: A[i, j] + 1.0, name="B")])
    >>> [l.var.name for l in perfect_chain(find_loop(k.body, "i"))]
    ['i', 'j']
"""

from __future__ import annotations

from tessel.errors import ScheduleError
from tessel.ir.nodes import (
    Allocate, Barrier, Binary, Buffer, Const, Expr, For, IfThenElse, Intrinsic, Kernel, LetStmt, Load, Node, Seq,
    Stmt, Store, Var, rewrite, walk,
)


_CACHES: list = []


def release_caches() -> None:
    """Empty every IdentityCache (the trees they hold stay alive until then)."""
    for c in _CACHES:
        c.clear()


class IdentityCache:
    """Results of a pure function of an immutable IR node, keyed by the node's identity (nodes never
    change, so a result holds as long as the node lives; the entry keeps the node alive so its id is
    not reused). Keeps the `size` most recent entries. The schedule primitives ask the same questions
    of one kernel several times per primitive (find a loop, the names in use), and each primitive
    rebuilds only the spine above what it changed: the rest of the tree keeps its cached answers.
    `release_caches()` empties every one (default_schedule does after each kernel, so that the
    cached trees do not outlive the kernel they came from)."""

    def __init__(self, size: int):
        self.size, self._d = size, {}
        _CACHES.append(self)

    def clear(self) -> None:
        self._d = {}

    def get(self, node, make):
        hit = self._d.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        value = make(node)
        if len(self._d) >= self.size:
            try:
                del self._d[next(iter(self._d))]  # the oldest entry
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                self._d.clear()
        self._d[id(node)] = (node, value)
        return value


def loop_names(node: Node) -> set[str]:
    return {n.var.name for n in walk(node) if isinstance(n, For)}


def used_names(node: Node) -> set[str]:
    """Every variable and buffer name in the tree (fresh names must avoid all of them)."""
    return set(_names_of(node))


_NAMES = IdentityCache(1 << 14)


def _names_of(node: Node) -> frozenset:
    """used_names as a frozenset, cached per statement (a primitive rebuilds one spine of a kernel:
    the other statements keep their sets)."""
    if not isinstance(node, (Stmt, Kernel)):
        out: set = set()
        _add_names(node, out)
        return frozenset(out)
    return _NAMES.get(node, _statement_names)


def _statement_names(node: Node) -> frozenset:
    out, parts = set(), []
    for c in node.children():
        if isinstance(c, Stmt):
            parts.append(_names_of(c))
        else:
            _add_names(c, out)
    return frozenset(out.union(*parts)) if parts else frozenset(out)


def _add_names(root: Node, out: set) -> None:
    """Add the names of the Vars and Buffers of `root` (no statements inside) to `out`: the walk of
    used_names, with the common expression nodes taken apart directly."""
    stack = [root]
    while stack:
        n = stack.pop()
        t = type(n)
        if t is Binary:
            stack.append(n.a)
            stack.append(n.b)
        elif t is Const:
            continue
        elif t is Var:
            out.add(n.name)
        elif t is Load:
            out.add(n.buffer.name)
            stack.extend(x for x in n.buffer.shape if isinstance(x, Node))
            stack.extend(n.indices)
        else:
            if isinstance(n, (Var, Buffer)):
                out.add(n.name)
            stack.extend(n.children())


def fresh_name(taken: set[str], base: str) -> str:
    """`base`, or `base_1`, `base_2`, ... — the first not in `taken` (which is updated)."""
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def find_loop(node: Node, name: str) -> For:
    """The first loop named `name` in `node` (pre-order)."""
    spines = _loop_index(node).get(name)
    if not spines:
        raise ScheduleError(f"no loop named '{name}' in the kernel")
    return spines[0][-1]


def loop_path(node: Node, name: str) -> list[For]:
    """The loops enclosing loop `name`, outermost first, ending with the loop itself."""
    spines = _loop_index(node).get(name)
    if not spines:
        raise ScheduleError(f"no loop named '{name}' in the kernel")
    return [n for n in spines[0] if isinstance(n, For)]


def replace_loop(kernel: Kernel, name: str, fn) -> Kernel:
    """Replace the loop named `name` by `fn(loop)` (a statement)."""
    spines = _loop_index(kernel.body).get(name)
    if not spines:
        raise ScheduleError(f"no loop named '{name}' in the kernel")
    if len(spines) == 1:
        out = _replace_on_spine((kernel,) + spines[0], fn)
        if out is not None:
            return out
    # several loops of that name (or a statement holding one twice): the rewrite replaces each
    return rewrite(kernel, lambda n: fn(n) if isinstance(n, For) and n.var.name == name else None, fixpoint=False)


def _replace_on_spine(spine: tuple, fn):
    """What `rewrite` gives when it replaces the one loop at the end of `spine` (the statements from
    the root down to it) by `fn(loop)`: the loop's ancestors rebuilt with `with_children`, the rest
    of the tree shared. None when an ancestor holds the same child object twice."""
    loop = spine[-1]
    new = fn(loop)
    if new is None or new == loop:  # (the rewrite keeps a node whose replacement equals it)
        return spine[0]
    for parent in reversed(spine[:-1]):
        kids = parent.children()
        at = [k for k, c in enumerate(kids) if c is loop]
        if len(at) != 1:
            return None
        kids[at[0]] = new
        loop, new = parent, parent.with_children(kids)
    return new


_LOOPS = IdentityCache(16)


def _loop_index(node: Node) -> dict:
    """{loop name: [spine, ...]} of every loop in `node`, in pre-order; a spine is the tuple of
    statements from `node` down to the loop. One walk over the statements only: loops
    never sit inside expressions."""
    return _LOOPS.get(node, _build_loop_index)


def _build_loop_index(root: Node) -> dict:
    index: dict = {}
    stack = [(root,)]
    while stack:
        spine = stack.pop()
        n = spine[-1]
        if isinstance(n, For):
            index.setdefault(n.var.name, []).append(spine)
            kids = (n.body,)
        elif isinstance(n, Seq):
            kids = n.stmts
        elif isinstance(n, (Allocate, LetStmt)):
            kids = (n.body,)
        elif isinstance(n, IfThenElse):
            kids = (n.then,) if n.else_ is None else (n.then, n.else_)
        elif isinstance(n, (Store, Barrier, Intrinsic)):
            continue
        else:  # (a Kernel: its body)
            kids = [c for c in n.children() if isinstance(c, Stmt)]
        stack.extend(spine + (c,) for c in reversed(kids))
    return index


def perfect_chain(loop: For) -> list[For]:
    """`loop` and the loops nested directly inside it, each the whole body of the previous one."""
    chain = [loop]
    while isinstance(chain[-1].body, For):
        chain.append(chain[-1].body)
    return chain


def const_extent(loop: For) -> int:
    from tessel.ir.nodes import Const

    if not isinstance(loop.extent, Const):
        raise ScheduleError(f"loop '{loop.var.name}' has a non-constant extent {loop.extent}")
    return int(loop.extent.value)


def rebuild_chain(loops: list[For], body: Stmt) -> Stmt:
    """Nest `loops` (outermost first, keeping each one's var, extent and kind) around `body`."""
    for lp in reversed(loops):
        body = For(lp.var, lp.extent, body, lp.kind)
    return body


def leaf_of_chain(loop: For) -> Stmt:
    return perfect_chain(loop)[-1].body


def stores_to(node: Node, buffer: str) -> list[Store]:
    """The stores to `buffer` in `node`, in pre-order."""
    if not isinstance(node, Stmt):
        return [n for n in walk(node) if isinstance(n, Store) and n.buffer.name == buffer]
    return list(_stores_by_buffer(node).get(buffer, ()))


_STORES = IdentityCache(1 << 14)


def _stores_by_buffer(node: Stmt) -> dict:
    """{buffer name: [its stores in pre-order]} of a statement, cached per statement: compute_inline
    asks it of every loop of the kernel (stores sit only in statements, so the children's maps, in
    order, make the parent's)."""
    return _STORES.get(node, _collect_stores)


def _collect_stores(node: Stmt) -> dict:
    if isinstance(node, Store):
        return {node.buffer.name: [node]}
    kids = [c for c in node.children() if isinstance(c, Stmt)]
    if len(kids) == 1:
        return _stores_by_buffer(kids[0])
    out: dict = {}
    for k in kids:
        for name, stores in _stores_by_buffer(k).items():
            out.setdefault(name, []).extend(stores)
    return out


def loads_of(node: Node, buffer: str) -> list[Load]:
    return [n for n in walk(node) if isinstance(n, Load) and n.buffer.name == buffer]


def find_buffer(kernel: Kernel, name: str) -> Buffer:
    for p in kernel.params:
        if p.name == name:
            return p
    for n in walk(kernel.body):
        if isinstance(n, Allocate) and n.buffer.name == name:
            return n.buffer
    raise ScheduleError(f"no buffer named '{name}' in kernel '{kernel.name}'")


def allocated_in(node: Node) -> set[str]:
    return {n.buffer.name for n in walk(node) if isinstance(n, Allocate)}


def bound_vars(node: Node) -> set[Var]:
    return {n.var for n in walk(node) if isinstance(n, (For, LetStmt))}


def init_guards(node: Node) -> list[tuple[IfThenElse, Store]]:
    """The reduction initialisations in guarded form: `if cond: X[..] = init` directly followed
    by a store to X that reads X (the DSL's lowering of reductions)."""
    return list(_GUARDS.get(node, _find_init_guards))


_GUARDS = IdentityCache(1024)


def _find_init_guards(node: Node) -> tuple:
    found = []
    for n in walk(node):
        if not isinstance(n, Seq):
            continue
        for a, b in zip(n.stmts, n.stmts[1:]):
            if (isinstance(a, IfThenElse) and a.else_ is None and isinstance(a.then, Store)
                    and isinstance(b, Store) and b.buffer.name == a.then.buffer.name
                    and loads_of(b.value, b.buffer.name)):
                found.append((a, b))
    return tuple(found)


def reduction_vars(node: Node) -> set[Var]:
    """Loop variables that carry a reduction somewhere in `node`: those in an init guard's
    condition, and those absent from the indices of a store that reads its own buffer."""
    out: set[Var] = set()
    for guard, _ in init_guards(node):
        out |= {v for v in walk(guard.cond) if isinstance(v, Var)}
    return out


def is_data_parallel(loop: For) -> tuple[bool, str]:
    """Whether the iterations of `loop` write disjoint elements: every store under it to a buffer
    allocated outside it has the loop variable in its indices, and no reduction runs over it."""
    local = allocated_in(loop.body)
    v = loop.var
    if v in reduction_vars(loop):
        return False, f"loop '{v.name}' carries a reduction"
    for st in walk(loop.body):
        if isinstance(st, Store) and st.buffer.name not in local:
            if not any(x == v for idx in st.indices for x in walk(idx)):
                return False, f"iterations of loop '{v.name}' all write the same element of '{st.buffer.name}'"
            clash = _iterations_collide(loop, st)
            if clash is not None:
                return False, (f"iterations {clash[0]} and {clash[1]} of loop '{v.name}' write the same element of "
                               f"'{st.buffer.name}' (indices {', '.join(map(str, st.indices))})")
    return True, ""


def _iterations_collide(loop: For, st: Store, limit: int = 4096):
    """Two iterations of `loop` that store to the same element through `st`, or None. Only looked
    for where the loop variable reaches every index through a floordiv / floormod (a fused loop's
    `f // 4` alone repeats: C[i, jk // 2] += .. over a fused j-k loop is a reduction), by
    enumerating the loop and the loops inside it (the outer variables at 0) up to `limit` points."""
    import itertools

    from tessel.ir.verify_witness import evaluate

    v = loop.var

    def only_under_divmod(e) -> bool:
        if e == v:
            return False
        if isinstance(e, Binary) and e.op in ("floordiv", "floormod"):
            return True
        kids = [getattr(e, f) for f in ("a", "b") if isinstance(getattr(e, f, None), Expr)]
        return all(only_under_divmod(k) for k in kids)

    if not isinstance(loop.extent, Const) or not all(only_under_divmod(i) for i in st.indices):
        return None
    inner = [n for n in walk(loop.body) if isinstance(n, For) and isinstance(n.extent, Const)
             and any(x == n.var for i in st.indices for x in walk(i))]
    sizes = [int(loop.extent.value)] + [int(n.extent.value) for n in inner]
    total = 1
    for n in sizes:
        total *= n
    if total > limit:
        return None
    free = {x for i in st.indices for x in walk(i) if isinstance(x, Var)} - {v} - {n.var for n in inner}
    fast = _first_collision_numpy(st.indices, [v] + [n.var for n in inner], sizes, free)
    if fast is not _SLOW:
        return fast
    seen = {}
    for point in itertools.product(*(range(n) for n in sizes)):
        env = dict(zip([v] + [n.var for n in inner], point))
        env.update({x: 0 for x in free})
        idx = tuple(evaluate(i, env) for i in st.indices)
        if None in idx:
            return None
        first = seen.setdefault(idx, point[0])
        if first != point[0]:
            return first, point[0]
    return None


_SLOW = object()


class _NoArray(Exception):
    """An index `_first_collision_numpy` does not evaluate: the plain enumeration decides."""


def _first_collision_numpy(indices, loop_vars: list, sizes: list, free: set):
    """What the enumeration of `_iterations_collide` returns (the first point, in
    itertools.product order, whose index tuple an earlier point of another outer iteration
    stored), computed on all points at once with numpy; `_SLOW` where that would not be exactly the
    same (a float or non-arithmetic index, a zero divisor, a value beyond 2**31, repeated loops)."""
    import numpy as np

    if not indices or len(set(loop_vars)) != len(loop_vars) or min(sizes) <= 0:
        return _SLOW
    coords = np.indices(sizes, dtype=np.int64).reshape(len(sizes), -1)
    env = dict(zip(loop_vars, coords))
    env.update({x: 0 for x in free})
    try:
        idx = np.stack([np.broadcast_to(_array_of(i, env, np), coords.shape[1:]) for i in indices], axis=1)
    except _NoArray:
        return _SLOW
    _, first, inverse = np.unique(idx, axis=0, return_index=True, return_inverse=True)
    outer = coords[0]
    first_outer = outer[first[inverse.reshape(-1)]]
    clash = np.flatnonzero(first_outer != outer)
    return (int(first_outer[clash[0]]), int(outer[clash[0]])) if clash.size else None


_ARRAY_OPS = {"add": "add", "sub": "subtract", "mul": "multiply", "floordiv": "floor_divide",
              "floormod": "remainder", "min": "minimum", "max": "maximum"}


def _array_of(e, env: dict, np):
    """The integer expression `e` over the arrays of `env` (verify_witness.evaluate's integer
    semantics: floor division and modulo); _NoArray for anything else."""
    from tessel.ir.dtypes import is_int

    if isinstance(e, Const):
        if not is_int(e.dtype) or isinstance(e.value, bool) or abs(int(e.value)) >= 1 << 31:
            raise _NoArray
        return np.int64(e.value)
    if isinstance(e, Var):
        if e not in env:
            raise _NoArray
        return env[e]
    if not isinstance(e, Binary) or e.op not in _ARRAY_OPS:
        raise _NoArray
    a, b = _array_of(e.a, env, np), _array_of(e.b, env, np)
    if e.op in ("floordiv", "floormod") and np.any(b == 0):
        raise _NoArray
    out = getattr(np, _ARRAY_OPS[e.op])(a, b)
    if np.any(np.abs(out) >= 1 << 31):
        raise _NoArray
    return out


def unflatten_index(flat, extents: tuple) -> list:
    """The indices (Exprs) of the row-major multi-index `flat` (an Expr) over `extents`: the last
    fastest. E.g. a fused batch number into its batch dimensions' indices.

    >>> from tessel.ir.nodes import Var
    >>> [str(e) for e in unflatten_index(Var("z"), (2, 3))]
    ['(z // 3)', '(z % 3)']
    """
    out, rest = [], flat
    for i in range(len(extents)):
        inner = 1
        for x in extents[i + 1:]:
            inner *= x
        out.append(rest // inner if i + 1 < len(extents) else rest)
        rest = rest % inner
    return out


def and_all(conds: list) -> object:
    out = None
    for c in conds:
        out = c if out is None else Binary("and", out, c)
    return out


def inits_at_first_iteration(guards: list, loops: list) -> bool:
    """Whether every init guard of `guards` ((IfThenElse, update) pairs, as `init_guards` gives)
    holds exactly at the first iteration of the reduction `loops` (Fors of constant extent): what a
    template that starts its accumulators once per element needs (`guard_misses_first_iteration`).

    >>> from tessel.ir.nodes import Buffer, Const, For, IfThenElse, Store, Var, seq
    >>> k, S = Var("k"), Buffer("S", (1,))
    >>> body = lambda c: For(k, 4, seq(IfThenElse(c, Store(S, (0,), Const(0.0))), Store(S, (0,), S[0] + 1.0)))
    >>> [inits_at_first_iteration(init_guards(body(c)), [body(c)]) for c in (k.eq(0), k < 0)]
    [True, False]
    """
    return all(guard_misses_first_iteration(g.cond, {lp.var: int(lp.extent.value) for lp in loops}) is None
               for g, _ in guards)


def guard_misses_first_iteration(cond, extents: dict, fixed: dict | None = None) -> str | None:
    """Where the init guard `cond` differs from "every loop of `extents` ({Var: int}) is at its first
    iteration", or None when it never does: what a reduction needs for its init to run once, at
    the start, whatever the order of those loops. `fixed` gives values to other variables of
    `cond`. Checked on every point (the origin and 256 random points beyond 512); a guard that
    cannot be evaluated differs.

    >>> from tessel.ir.nodes import Var
    >>> r1, r2 = Var("r1"), Var("r2")
    >>> guard_misses_first_iteration(r1.eq(0) & r2.eq(0), {r1: 3, r2: 2}) is None
    True
    >>> guard_misses_first_iteration(r1.eq(0), {r1: 3, r2: 2})
    'r1=0, r2=1 gives True'
    """
    import itertools
    import math
    import random

    from tessel.ir.verify_witness import evaluate

    names = sorted(extents, key=lambda v: v.name)
    sizes = [max(0, int(extents[v])) for v in names]
    if 0 in sizes:
        return None  # the loops never run
    if math.prod(sizes) <= 512:
        points = itertools.product(*(range(e) for e in sizes))
    else:
        rng = random.Random(0)
        points = [tuple(0 for _ in sizes)] + [tuple(rng.randrange(e) for e in sizes) for _ in range(256)]
    for pt in points:
        got = evaluate(cond, {**(fixed or {}), **dict(zip(names, pt))})
        if got is None or bool(got) != all(x == 0 for x in pt):
            return ", ".join(f"{v.name}={x}" for v, x in zip(names, pt)) + f" gives {got}"
    return None
