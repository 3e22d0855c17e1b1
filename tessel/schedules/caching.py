"""cache_read and cache_write: stage a buffer's region through a smaller buffer in a faster scope.

`cache_read(B, at=L)` copies the part of B that L's body reads into a new buffer at the start of
each iteration of L and redirects those reads. `cache_write(C, at=L)` redirects L's body's
accesses of C to a new buffer and copies the region back to C at the end of each iteration (and
first copies it in when the body reads C before initialising it there). Regions come from the
affine bounds inference in region.py; copies that could leave the buffer are guarded.

In a GPU kernel every thread runs the statements outside its thread-bound loops, so a copy nest
placed there would be run by every thread (fuzz case cache_write_in_gpu_reduce_outer_races: each
thread copied the whole block's part of the output in and out, a race on it). The rule:

- a cache is per thread: scope "local" (registers). A "shared" or "global" cache where threads
  are bound (around `at` or inside it) would be one staging buffer for all of them and is refused
  (cache_shared stages a block's reads cooperatively, with its barrier);
- `cache_write(C, at=L)` with threads bound inside L gives each thread its own copy of what it
  touches: the copies go inside the innermost thread loop holding every access of C, each thread
  staging its own box;
- otherwise every thread keeps a replicated copy of the whole box (the row-wise schedules: every
  thread holds the row's statistic after the shuffles): no index of C may depend on those
  threads, each thread writes every element before reading it (no copy-in: a thread would not see
  the others' writes), and one thread (index 0 along each axis bound inside) copies it out;
- the threads that each stage a box (bound around the cache) must stage disjoint boxes, checked
  over every thread index; with a barrier inside the cached loop, disjoint across the iterations
  of the loops around it too (the barrier orders one iteration's accesses with another thread's in
  the next, but not the copies at its ends);
- a "local" C is one per thread already: cached as on the CPU.

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
    SCOPES, Allocate, Barrier, Binary, Buffer, BufferRef, Const, Expr, For, IfThenElse, Intrinsic, Kernel, LetStmt,
    Load, Store, Var, rewrite, seq, walk,
)
from tessel.schedules.nest import (
    allocated_in, and_all, find_buffer, find_loop, fresh_name, loads_of, loop_path, replace_loop, stores_to,
    used_names,
)
from tessel.schedules.region import Box, accesses, affine_form, is_dense_write, touched_box


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


def _check_scope(scope: str, kernel: Kernel | None = None, buffer: str = "", what: str = "") -> None:
    if scope not in SCOPES:
        raise ScheduleError(f"unknown memory scope {scope!r}; expected one of {SCOPES}")
    # fuzz cases cache_read_shared_scope_in_cpu_kernel and (cache_write) a 4-minute sm_90a campaign's
    if scope == "shared" and kernel is not None and kernel.target == "cpu":
        raise ScheduleError(f"{what} '{buffer}': scope 'shared' needs a GPU kernel; kernel '{kernel.name}' "
                            f"targets the CPU (use scope 'local')")


def _check_not_allocated_inside(loop: For, buffer: str, what: str) -> None:
    if buffer in allocated_in(loop.body):
        raise ScheduleError(f"{what}: '{buffer}' is allocated inside loop '{loop.var.name}'; cache it at a loop "
                            f"inside its allocation")


def cache_read(kernel: Kernel, buffer: str, at: str, scope: str = "local") -> tuple[Kernel, list[str]]:
    """Copy what loop `at` reads of `buffer` into a new `scope` buffer at the start of each of its
    iterations; the loop's reads use the copy."""
    _check_scope(scope, kernel, buffer, "cache_read")
    buf = find_buffer(kernel, buffer)
    loop = find_loop(kernel.body, at)
    _check_not_allocated_inside(loop, buffer, "cache_read")
    _check_one_copy_per_thread(kernel, loop, buffer, scope, "cache_read")
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
    at the end of each iteration (in a GPU kernel: each thread its own part; module docstring)."""
    _check_scope(scope, kernel, buffer, "cache_write")
    buf = find_buffer(kernel, buffer)
    loop = find_loop(kernel.body, at)
    _check_not_allocated_inside(loop, buffer, "cache_write")
    if not stores_to(loop.body, buffer):
        raise ScheduleError(f"cache_write: loop '{at}' does not write '{buffer}'")
    _check_no_refs(loop, buffer, "cache_write")
    _check_one_copy_per_thread(kernel, loop, buffer, scope, "cache_write")
    _check_no_blocks_inside(kernel, loop, buffer)
    loop, fanout = _thread_level(kernel, buf, loop)
    box, copy_in_needed = _write_plan(buf, loop)
    taken = used_names(kernel)
    new = Buffer(fresh_name(taken, f"{buffer}_{scope}"), box.extents, buf.dtype, scope)
    ranges = outer_ranges(kernel, loop.var.name)
    copy_out = copy_nest(taken, new.name + "_out", box, buf.shape, ranges,
                         lambda g, loc: Store(buf, g, Load(new, loc)))
    for axis in fanout:  # replicated copies: thread 0 along each axis bound inside writes them back
        copy_out = For(Var(fresh_name(taken, f"{new.name}_out_{axis[-1]}")), Const(1), copy_out, axis)
    copy_in = None
    if copy_in_needed:
        copy_in = copy_nest(taken, new.name + "_in", box, buf.shape, ranges,
                            lambda g, loc: Store(new, loc, Load(buf, g)))

    def rebuild(old: For):
        inner = _redirect(old.body, buf, new, box, False)
        return For(old.var, old.extent, Allocate(new, seq(copy_in, inner, copy_out)), old.kind)

    return replace_loop(kernel, loop.var.name, rebuild), [new.name]


def _write_plan(buf: Buffer, loop: For) -> tuple[Box, bool]:
    """The box a cache of `buf` at `loop` holds, and whether it must start as a copy of `buf`."""
    buffer = buf.name
    stores = stores_to(loop.body, buffer)
    extents = inner_extents(loop)
    if not is_dense_write(stores, extents):
        raise ScheduleError(f"cache_write: the writes of '{buffer}' inside loop '{loop.var.name}' do not form a "
                            f"dense box (each index must be an outer expression plus one inner loop variable)")
    box = touched_box(accesses(loop.body, buffer), buf.shape, extents)
    # The copy-out writes the whole box back, so the cache must start as a copy of the buffer unless
    # the body writes every element before reading it: a read first, or only guarded stores (a guard
    # that is false for some element would write the cache's poison back), need the copy-in.
    # a loop inside that may not run (extent <= 0) leaves the cache unwritten too (fuzz case
    # cache_write_copies_out_a_loop_without_iterations)
    copy_in = (_reads_before_init(loop, buffer, set(extents)) or not _stored_unconditionally(loop.body, buffer)
               or any(e <= 0 for e in extents.values()))
    return box, copy_in


# -- GPU kernels: one copy per thread ------------------------------------------------------------


def _thread_loops(node) -> list[For]:
    """The threadIdx-bound loops in `node`, pre-order (outer ones first)."""
    return [n for n in walk(node) if isinstance(n, For) and n.kind.startswith("threadIdx")]


def _check_no_refs(loop: For, buffer: str, what: str) -> None:
    """An intrinsic writing `buffer` through an operand would bypass the cache, and the copy-out
    would overwrite what it wrote."""
    if any(isinstance(n, BufferRef) and n.buffer.name == buffer for n in walk(loop.body)):
        raise ScheduleError(f"{what}: an intrinsic inside loop '{loop.var.name}' takes '{buffer}' as an operand; "
                            f"its accesses cannot be redirected to a cache")


def _check_no_blocks_inside(kernel: Kernel, loop: For, buffer: str) -> None:
    """A cache around blockIdx-bound loops is copied back by every block, each writing the whole
    region, most of it what other blocks computed: a race between blocks (fuzz case
    cache_write_around_block_loop_races)."""
    if kernel.target == "cpu":
        return
    blocks = [n for n in walk(loop.body) if isinstance(n, For) and n.kind.startswith("blockIdx")]
    if blocks:
        names = ", ".join(f"'{b.var.name}'" for b in blocks)
        raise ScheduleError(f"cache_write '{buffer}' at '{loop.var.name}': the loop holds block-bound loops ({names}); "
                            f"every block would copy the whole region back, over the other blocks' results: cache "
                            f"inside the block loops")


def _check_one_copy_per_thread(kernel: Kernel, loop: For, buffer: str, scope: str, what: str) -> None:
    """A shared or global cache where threads are bound would be one buffer that each thread
    fills and drains with its own copy nest: refused."""
    if kernel.target == "cpu" or scope == "local":
        return
    around = [lp for lp in loop_path(kernel.body, loop.var.name) if lp.kind.startswith("threadIdx")]
    inside = _thread_loops(loop.body)
    if around or inside:
        names = ", ".join(f"'{lp.var.name}'" for lp in around + inside)
        hint = " (cache_shared stages a block's reads cooperatively)" if what == "cache_read" else ""
        raise ScheduleError(f"{what} '{buffer}' at '{loop.var.name}': a {scope!r} cache is one buffer for all the "
                            f"threads (bound by {names}), each of which would copy the region in and out of it: "
                            f"use scope 'local', a copy per thread{hint}")


def _thread_level(kernel: Kernel, buf: Buffer, loop: For) -> tuple[For, tuple]:
    """Where a per-thread cache of `buf` for loop `loop` goes, and the thread axes bound inside it
    (whose threads then each hold a replicated copy): `loop` itself when no threads are bound inside
    it; else the innermost thread loop holding every access of `buf` whose threads' boxes are
    disjoint, or `loop` with replicated copies; ScheduleError saying why not otherwise. A `local`
    buffer is one per thread already: nothing to share."""
    if kernel.target == "cpu" or buf.scope == "local":
        return loop, ()
    around = [lp for lp in loop_path(kernel.body, loop.var.name) if lp.kind.startswith("threadIdx")]
    inside = _thread_loops(loop.body)
    if not around and not inside:
        return loop, ()
    count = len(accesses(loop.body, buf.name))
    chain = [loop] + [t for t in inside if len(accesses(t.body, buf.name)) == count]
    problems = []
    for i in range(len(chain) - 1, -1, -1):
        level = chain[i]
        try:
            why = _level_problem(kernel, buf, level, around + chain[1:i + 1], _thread_loops(level.body))
        except ScheduleError as e:
            why = str(e)
        if why is None:
            return level, tuple(sorted({t.kind for t in _thread_loops(level.body)}))
        problems.append(f"at '{level.var.name}': {why}")
    raise ScheduleError(f"cache_write '{buf.name}' at '{loop.var.name}': its threads cannot each keep a copy of "
                        f"their part ({'; '.join(problems)})")


def _level_problem(kernel: Kernel, buf: Buffer, level: For, threads: list, fan: list) -> str | None:
    """Why a cache at `level` cannot be per thread (None: it can). `threads`: the thread loops
    around the cache (`level` included), whose threads each stage their own box; `fan`: the thread
    loops inside `level`, whose threads each hold the whole box."""
    box, copy_in = _write_plan(buf, level)
    outer = loop_path(kernel.body, level.var.name)
    if threads:
        why = _overlap(box, threads, threads, outer)
        if why:
            return why
    if fan:
        fan_vars = {t.var for t in fan}
        for acc in accesses(level.body, buf.name):
            if any(isinstance(v, Var) and v in fan_vars for idx in acc.indices for v in walk(idx)):
                where = ", ".join(str(i) for i in acc.indices)
                return f"the element {acc.buffer.name}[{where}] depends on the threads bound inside it"
        if copy_in:
            return ("its threads would each start from a copy of the buffer and miss the others' writes (every "
                    "thread must write every element of the box before reading it)")
        from tessel.schedules.gpu import block_dims

        dims = block_dims(kernel)
        for t in fan:  # every thread must run the stores (then each writes the whole box)
            if accesses(t.body, buf.name) and (not isinstance(t.extent, Const) or t.extent.value != dims[t.kind]):
                return f"loop '{t.var.name}' runs on fewer than the block's {dims[t.kind]} threads along {t.kind}"
    sync = next((n for n in walk(level.body) if _orders_memory(n)), None)
    if sync is not None:
        # a barrier inside orders the accesses of one iteration of the block's loops around the
        # cache with the other threads' in the next; the copies at its ends would not be: the boxes
        # must be disjoint across those iterations too (a thread may reuse its own)
        path = [lp for lp in outer if not lp.kind.startswith("blockIdx")]
        why = _overlap(box, path, threads, outer)
        if why:
            what = sync.name if isinstance(sync, Intrinsic) else "barrier"
            return f"a {what} inside it would order the threads' accesses but not the copies: {why}"
    return None


def _overlap(box: Box, loops: list, threads: list, outer: list, limit: int = 1 << 16) -> str | None:
    """Why the boxes of two iterations of `loops` run by different threads (they differ in a loop of
    `threads`) may share an element; None: they cannot. `outer`: every loop around the cache, whose
    values are enumerated too where a box base is not affine in `loops`."""
    import itertools
    import math

    if any(not isinstance(t.extent, Const) for t in loops):
        return "a loop around it has a non-constant extent"
    if math.prod(int(t.extent.value) for t in loops) > limit:
        return f"more than {limit} iterations of its loops to compare"
    loop_vars = [t.var for t in loops]
    mine = [k for k, t in enumerate(loops) if any(t is u for u in threads)]
    forms = [affine_form(base, set(loop_vars)) for base in box.bases]
    if all(f is not None for f in forms):  # the starts' differences do not depend on the other loops
        coeffs = [[f[0].get(v, 0) for v in loop_vars] for f in forms]
        return _first_overlap(box, loops, mine, lambda it: tuple(sum(c * i for c, i in zip(row, it))
                                                                 for row in coeffs))
    from tessel.ir.interp import interpret_expr

    others = [lp for lp in outer if not any(lp is t for t in loops)]
    if any(not isinstance(t.extent, Const) for t in others):
        return "a loop around it has a non-constant extent"
    if math.prod(int(t.extent.value) for t in outer) > limit // 16:
        return f"the box base {next(b for b, f in zip(box.bases, forms) if f is None)} is not affine in its loops"
    for values in itertools.product(*(range(int(t.extent.value)) for t in others)):
        env = {t.var.name: v for t, v in zip(others, values)}

        def starts(it, env=env):
            scope = {**env, **{v.name: i for v, i in zip(loop_vars, it)}}
            return tuple(int(interpret_expr(b, scope)) for b in box.bases)

        try:
            why = _first_overlap(box, loops, mine, starts)
        except TesselError as e:
            return f"its box cannot be evaluated ({e})"
        if why:
            return why
    return None


def _first_overlap(box: Box, loops: list, mine: list, starts) -> str | None:
    """The first two iterations of `loops` by different threads (positions `mine` differ) whose
    boxes (at `starts(iteration)`) overlap, described; None if there are none."""
    import itertools

    seen: dict = {}
    for it in itertools.product(*(range(int(t.extent.value)) for t in loops)):
        start = starts(it)
        who = tuple(it[k] for k in mine)
        # boxes of equal extents overlap iff their starts differ by less than the extent in every
        # dimension: bucket the starts by extent-sized cells, and compare with the neighbour cells
        cell = tuple(s // max(e, 1) for s, e in zip(start, box.extents))
        for near in itertools.product(*((c - 1, c, c + 1) for c in cell)):
            for other, owho, oit in seen.get(near, ()):
                if owho != who and all(abs(a - b) < e for a, b, e in zip(start, other, box.extents)):
                    names = ", ".join(t.var.name for t in loops)
                    return f"({names}) = {oit} and {it} are different threads staging overlapping boxes"
        seen.setdefault(cell, []).append((start, who, it))
    return None


def _orders_memory(n) -> bool:
    """Whether statement `n` orders memory between threads (a barrier, a blocking wait, a
    block-wide collective); unknown intrinsics count as ordering."""
    if isinstance(n, Barrier):
        return True
    if not isinstance(n, Intrinsic):
        return False
    from tessel.ir.interp.intrinsics import as_impl
    from tessel.ir.intrinsics import interp_registry

    entry = interp_registry().get(n.name)
    if entry is None:
        return True
    impl = as_impl(entry)
    return impl.orders_memory() or impl.ready is not None


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
