"""cache_read and cache_write: stage a buffer's region through a smaller buffer in a faster scope.

`cache_read(B, at=L)` copies the part of B that L's body reads into a new buffer at the start of
each iteration of L and redirects those reads. `cache_write(C, at=L)` redirects L's body's
accesses of C to a new buffer and copies the region back to C at the end of each iteration (and
first copies it in when the body reads C before initialising it there). Regions come from the
affine bounds inference in region.py; copies that could leave the buffer are guarded.

Example:
    >>> from tessel.ir.dsl import placeholder, compute, lower, reduce_axis, sum
    >>> A = placeholder((8, 8), name="A")
    >>> k = reduce_axis(8, name="k")
    >>> kern = lower([A, compute((8,), lambda i: sum(A[i, k], axis=k), name="S")])
    >>> kern, (name,) = cache_read(kern, "A", "i")
    >>> name
    'A_local'
"""

from __future__ import annotations

from tessel.errors import ScheduleError, TesselError
from tessel.ir.bounds import interval
from tessel.ir.nodes import (
    SCOPES, Allocate, Binary, Buffer, Const, Expr, For, IfThenElse, Kernel, LetStmt, Load, Store, Var, rewrite, seq,
    walk,
)
from tessel.schedules.nest import (
    allocated_in, and_all, find_buffer, find_loop, fresh_name, loads_of, loop_path, replace_loop, stores_to,
    used_names,
)
from tessel.schedules.region import Box, accesses, is_dense_write, touched_box


def inner_extents(loop: For) -> dict:
    """Extents of the loops bound inside `loop`'s body (constant extents required)."""
    out = {}
    for n in walk(loop.body):
        if isinstance(n, LetStmt):
            raise ScheduleError(f"loop '{loop.var.name}' holds a let binding; cache regions cannot be inferred")
        if isinstance(n, For):
            if not isinstance(n.extent, Const):
                raise ScheduleError(f"loop '{n.var.name}' has a non-constant extent; regions cannot be inferred")
            out[n.var] = int(n.extent.value)
    return out


def outer_ranges(kernel: Kernel, loop: str) -> dict:
    """Inclusive ranges of the variables of `loop` and the loops around it."""
    return {lp.var: (0, int(lp.extent.value) - 1) for lp in loop_path(kernel.body, loop)
            if isinstance(lp.extent, Const)}


def copy_nest(taken: set, prefix: str, box: Box, shape: tuple, ranges: dict, make_store) -> object:
    """Loops over `box` whose body is `make_store(global_index, local_index)`, guarded where the
    global index might leave `shape`."""
    vars_ = [Var(fresh_name(taken, f"{prefix}_ax{d}")) for d in range(len(box.extents))]
    ranges = dict(ranges)
    ranges.update({v: (0, e - 1) for v, e in zip(vars_, box.extents)})
    glob = tuple(v if isinstance(b, Const) and b.value == 0 else Binary("add", b, v)
                 for b, v in zip(box.bases, vars_))
    conds = []
    for g, dim in zip(glob, shape):
        r = interval(g, ranges)
        if r is None or r[0] < 0:
            conds.append(Binary("ge", g, Const(0)))
        if r is None or r[1] >= dim:
            conds.append(Binary("lt", g, Const(dim)))
    body = make_store(glob, tuple(vars_))
    if conds:
        body = IfThenElse(and_all(conds), body)
    for v, e in reversed(list(zip(vars_, box.extents))):
        body = For(v, Const(e), body)
    return body


def _redirect(body, buf: Buffer, new: Buffer, box: Box, loads_only: bool):
    def shift(idx):
        return tuple(i if isinstance(b, Const) and b.value == 0 else Binary("sub", i, b)
                     for i, b in zip(idx, box.bases))

    def fn(n):
        if isinstance(n, Load) and n.buffer.name == buf.name:
            return Load(new, shift(n.indices))
        if not loads_only and isinstance(n, Store) and n.buffer.name == buf.name:
            return Store(new, shift(n.indices), n.value)
        return None

    return rewrite(body, fn, fixpoint=False)


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ScheduleError(f"unknown memory scope {scope!r}; expected one of {SCOPES}")


def _check_not_allocated_inside(loop: For, buffer: str, what: str) -> None:
    if buffer in allocated_in(loop.body):
        raise ScheduleError(f"{what}: '{buffer}' is allocated inside loop '{loop.var.name}'; cache it at a loop "
                            f"inside its allocation")


def cache_read(kernel: Kernel, buffer: str, at: str, scope: str = "local") -> tuple[Kernel, list[str]]:
    """Copy what loop `at` reads of `buffer` into a new `scope` buffer at the start of each of its
    iterations; the loop's reads use the copy."""
    _check_scope(scope)
    if scope == "shared" and kernel.target == "cpu":  # fuzz case cache_read_shared_scope_in_cpu_kernel
        raise ScheduleError(f"cache_read '{buffer}': scope 'shared' needs a GPU kernel; kernel '{kernel.name}' "
                            f"targets the CPU (use scope 'local')")
    buf = find_buffer(kernel, buffer)
    loop = find_loop(kernel.body, at)
    _check_not_allocated_inside(loop, buffer, "cache_read")
    loads = loads_of(loop.body, buffer)
    if not loads:
        raise ScheduleError(f"cache_read: loop '{at}' does not read '{buffer}'")
    if stores_to(loop.body, buffer):
        raise ScheduleError(f"cache_read: loop '{at}' also writes '{buffer}'; use cache_write")
    box = touched_box(loads, buf.shape, inner_extents(loop))
    taken = used_names(kernel)
    new = Buffer(fresh_name(taken, f"{buffer}_{scope}"), box.extents, buf.dtype, scope)
    copy = copy_nest(taken, new.name, box, buf.shape, outer_ranges(kernel, at),
                     lambda g, loc: Store(new, loc, Load(buf, g)))

    def rebuild(old: For):
        return For(old.var, old.extent, Allocate(new, seq(copy, _redirect(old.body, buf, new, box, True))), old.kind)

    return replace_loop(kernel, at, rebuild), [new.name]


def cache_write(kernel: Kernel, buffer: str, at: str, scope: str = "local") -> tuple[Kernel, list[str]]:
    """Let loop `at` compute its part of `buffer` in a new `scope` buffer, copied back to `buffer`
    at the end of each iteration."""
    _check_scope(scope)
    buf = find_buffer(kernel, buffer)
    loop = find_loop(kernel.body, at)
    _check_not_allocated_inside(loop, buffer, "cache_write")
    stores = stores_to(loop.body, buffer)
    if not stores:
        raise ScheduleError(f"cache_write: loop '{at}' does not write '{buffer}'")
    extents = inner_extents(loop)
    if not is_dense_write(stores, extents):
        raise ScheduleError(f"cache_write: the writes of '{buffer}' inside loop '{at}' do not form a dense box "
                            f"(each index must be an outer expression plus one inner loop variable)")
    box = touched_box(accesses(loop.body, buffer), buf.shape, extents)
    taken = used_names(kernel)
    new = Buffer(fresh_name(taken, f"{buffer}_{scope}"), box.extents, buf.dtype, scope)
    ranges = outer_ranges(kernel, at)
    copy_out = copy_nest(taken, new.name + "_out", box, buf.shape, ranges,
                         lambda g, loc: Store(buf, g, Load(new, loc)))
    copy_in = None
    # The copy-out writes the whole box back, so the cache must start as a copy of the buffer unless
    # the body writes every element before reading it: a read first, or only guarded stores (a guard
    # that is false for some element would write the cache's poison back), need the copy-in.
    # a loop inside that may not run (extent <= 0) leaves the cache unwritten too (fuzz case
    # cache_write_copies_out_a_loop_without_iterations)
    if (_reads_before_init(loop, buffer, set(extents)) or not _stored_unconditionally(loop.body, buffer)
            or any(e <= 0 for e in extents.values())):
        copy_in = copy_nest(taken, new.name + "_in", box, buf.shape, ranges,
                            lambda g, loc: Store(new, loc, Load(buf, g)))

    def rebuild(old: For):
        inner = _redirect(old.body, buf, new, box, False)
        return For(old.var, old.extent, Allocate(new, seq(copy_in, inner, copy_out)), old.kind)

    return replace_loop(kernel, at, rebuild), [new.name]


def _stored_unconditionally(body, buffer: str) -> bool:
    """Whether some store to `buffer` in `body` sits under no IfThenElse (with the dense-write check,
    it then writes every element of the cached box)."""
    if isinstance(body, Store):
        return body.buffer.name == buffer
    if isinstance(body, IfThenElse):
        return False
    return any(_stored_unconditionally(c, buffer) for c in body.children() if not isinstance(c, Expr))


def _holds_at_zero(cond, names: set) -> bool:
    """Whether `cond` is true when every variable in `names` is 0 (False when it cannot be evaluated)."""
    from tessel.ir.interp import interpret_expr

    try:
        return bool(interpret_expr(cond, {v: 0 for v in names}))
    except TesselError:
        return False


def _reads_before_init(loop: For, buffer: str, inner: set) -> bool:
    """Whether the loop body may read `buffer` values it did not write itself (then the cache
    must start as a copy). It does not when the first access in program order is a store that
    does not read the buffer, under no condition on variables from outside the loop (a guarded
    reduction init `if k == 0` with k inside the loop counts as unconditional here)."""
    if not loads_of(loop.body, buffer):
        return False

    def first_access(node, outer_guarded: bool):
        if isinstance(node, Store) and node.buffer.name == buffer:
            return "init" if not loads_of(node.value, buffer) and not outer_guarded else "read"
        if isinstance(node, Load) and node.buffer.name == buffer:
            return "read"
        if isinstance(node, IfThenElse):
            names = {v for v in walk(node.cond) if isinstance(v, Var)}
            # An init guard on inner variables (`k == 0`) counts as unconditional only if it holds at the first
            # iteration (every inner variable 0): `k == -4` never holds, and the update would read poison.
            guarded = outer_guarded or not names <= inner or not _holds_at_zero(node.cond, names)
            return first_access(node.cond, outer_guarded) or first_access(node.then, guarded) or (
                first_access(node.else_, guarded) if node.else_ is not None else None)
        for child in node.children():
            found = first_access(child, outer_guarded)
            if found:
                return found
        return None

    return first_access(loop.body, False) != "init"
