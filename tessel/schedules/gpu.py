"""GPU schedule primitives: bind loops to the launch grid, stage data through shared memory with
cooperative copies, and lay shared buffers out to avoid bank conflicts.

- `bind(loop, axis)`: the loop runs as the blocks or threads along `axis` ("blockIdx.x" ..
  "threadIdx.z"). The kernel becomes a "cuda" kernel and its Launch is derived again from every
  bound loop (the largest extent along each axis). Launch.shared_bytes, the dynamic shared
  memory, is left as it was: the CUDA printer sizes the shared buffers (`shared_bytes(kernel)`
  says how many bytes they take).
- `cache_shared(buffer, at, vector)`: like cache_read into shared memory, but for the whole block:
  the region the block's threads read in one iteration of `at` (thread-bound loops count as
  running over their extents) is copied by all threads of the block together, each copying
  `vector` consecutive elements at a time, with a Barrier after the copy (and one before it when
  `at` or a loop between the block and `at` iterates, so the previous iteration's readers are
  done). The shared buffer is allocated once per block.
- `pad(buffer, elements)`: rows of an allocated buffer get `elements` unused elements at their
  end (a 32x33 tile instead of 32x32: column reads hit 32 different banks).
- `swizzle(buffer)`: 16-byte chunks of each row are rotated by the row index, chunk c of row r
  stored at chunk (c + r) mod n: another way to spread rows over banks without padding. (An XOR
  swizzle needs a bitwise operator the IR does not have; the rotation has the same conflict-free
  property for ldmatrix and cp.async, which move whole chunks.)
- `remove_dead_code()`: the dead-code pass as a schedule step (temporaries cached away leave
  dead copy-outs behind).

The semantics of the IR make code outside a loop bound to an axis run on every thread (block)
along it; `bind` refuses to make such redundant code unsafe: a read-modify-write of a shared or
global buffer, or a store of a per-thread value, that would then run on several threads.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((64,), name="A")
    >>> k = ts.lower([A, ts.compute((64,), lambda i: A[i] * 2.0, name="B")])
    >>> from tessel.schedules.loops import split
    >>> k, (bo, bi) = split(k, "i", [None, 32])
    >>> k, _ = bind(k, bo, "blockIdx.x"); k, _ = bind(k, bi, "threadIdx.x")
    >>> k.target, k.launch.grid, k.launch.block
    ('cuda', (2, 1, 1), (32, 1, 1))
"""

from __future__ import annotations

import dataclasses

from tessel.errors import ScheduleError
from tessel.ir.bounds import interval
from tessel.ir.dtypes import bits
from tessel.ir.intrinsics import TABLE
from tessel.ir.nodes import (
    THREAD_AXES, Allocate, Barrier, Binary, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, Launch, Load,
    Store, Var, rewrite, seq, walk,
)
from tessel.schedules.caching import inner_extents
from tessel.schedules.nest import (
    and_all, const_extent, find_buffer, find_loop, fresh_name, is_data_parallel, loads_of, loop_path, replace_loop,
    stores_to, used_names,
)
from tessel.schedules.region import affine_form, touched_box

MAX_BLOCK = {"threadIdx.x": 1024, "threadIdx.y": 1024, "threadIdx.z": 64}
MAX_GRID = {"blockIdx.x": 2**31 - 1, "blockIdx.y": 65535, "blockIdx.z": 65535}
MAX_THREADS = 1024


# ---------------------------------------------------------------------------------------------
# Launch shape
# ---------------------------------------------------------------------------------------------


def axis_extents(kernel: Kernel) -> dict[str, int]:
    """The largest constant extent bound to each GPU axis."""
    out: dict[str, int] = {}
    for n in walk(kernel.body):
        if isinstance(n, For) and n.kind in THREAD_AXES:
            if not isinstance(n.extent, Const):
                raise ScheduleError(f"loop '{n.var.name}' is bound to {n.kind} with a non-constant extent")
            out[n.kind] = max(out.get(n.kind, 1), int(n.extent.value))
    return out


def shared_bytes(kernel: Kernel) -> int:
    """Bytes of every shared buffer the kernel allocates, each rounded up to 16 bytes."""
    total = 0
    for n in walk(kernel.body):
        if isinstance(n, Allocate) and n.buffer.scope == "shared":
            total += -(-(n.buffer.size * bits(n.buffer.dtype) // 8) // 16) * 16
    return total


def with_launch(kernel: Kernel) -> Kernel:
    """The kernel as a cuda kernel with its Launch derived from its bound loops.

    >>> from tessel.ir.nodes import Buffer, For, Store, Var
    >>> t = Var("t"); B = Buffer("B", (8,))
    >>> with_launch(Kernel("k", (B,), For(t, 8, Store(B, (t,), 1.0), "threadIdx.x"))).launch.block
    (8, 1, 1)
    """
    ext = axis_extents(kernel)
    grid = tuple(ext.get(f"blockIdx.{a}", 1) for a in "xyz")
    block = tuple(ext.get(f"threadIdx.{a}", 1) for a in "xyz")
    dynamic = kernel.launch.shared_bytes if kernel.launch is not None else 0  # the printer sizes shared arrays
    # the cluster is not derived from loops: keep it (a dropped cluster deadlocks the cluster
    # barriers of split-K; fuzz case remove_dead_code_drops_the_cluster)
    cluster = kernel.launch.cluster if kernel.launch is not None else (1, 1, 1)
    for g, c in zip(grid, cluster):
        if isinstance(g, int) and g % c:
            raise ScheduleError(f"kernel '{kernel.name}': the grid {grid} is no longer a multiple of its "
                                f"cluster {cluster}")
    return dataclasses.replace(kernel, target="cuda", launch=Launch(grid, block, dynamic, cluster))


def block_dims(kernel: Kernel) -> dict[str, int]:
    """Threads along each threadIdx axis of the kernel's launch (1 where unbound)."""
    ext = axis_extents(kernel)
    return {a: ext.get(a, 1) for a in THREAD_AXES if a.startswith("threadIdx")}


# ---------------------------------------------------------------------------------------------
# bind
# ---------------------------------------------------------------------------------------------


def bind(kernel: Kernel, loop: str, axis: str) -> tuple[Kernel, list[str]]:
    """Run `loop` as the blocks / threads along `axis`; returns [loop]."""
    if axis not in THREAD_AXES:
        raise ScheduleError(f"bind '{loop}': axis {axis!r} is not one of {', '.join(THREAD_AXES)}")
    target = find_loop(kernel.body, loop)
    extent = const_extent(target)
    if target.kind in THREAD_AXES:
        raise ScheduleError(f"bind '{loop}': the loop is already bound to {target.kind}")
    ok, why = is_data_parallel(target)
    if not ok:
        raise ScheduleError(f"cannot bind loop '{loop}' to {axis}: {why}")
    path = loop_path(kernel.body, loop)[:-1]
    inner = [n for n in walk(target.body) if isinstance(n, For)]
    for lp in path + inner:
        if lp.kind == axis:
            raise ScheduleError(f"cannot bind loop '{loop}' to {axis}: loop '{lp.var.name}' around or inside it "
                                f"is bound to {axis} already")
        if lp.kind == "parallel":
            raise ScheduleError(f"cannot bind loop '{loop}' to {axis}: loop '{lp.var.name}' is a CPU-parallel loop")
    if axis.startswith("blockIdx"):
        outer_threads = [lp.var.name for lp in path if lp.kind.startswith("threadIdx")]
        if outer_threads:
            raise ScheduleError(f"cannot bind loop '{loop}' to {axis}: it is inside thread-bound loop(s) "
                                f"{outer_threads}; blocks must be outside threads")
    else:
        inner_blocks = [lp.var.name for lp in inner if lp.kind.startswith("blockIdx")]
        if inner_blocks:
            raise ScheduleError(f"cannot bind loop '{loop}' to {axis}: block-bound loop(s) {inner_blocks} are "
                                f"inside it")
    limit = MAX_BLOCK.get(axis) or MAX_GRID[axis]
    if extent > limit:
        raise ScheduleError(f"cannot bind loop '{loop}' (extent {extent}) to {axis}: at most {limit}")
    out = replace_loop(kernel, loop, lambda old: For(old.var, old.extent, old.body, axis))
    out = with_launch(out)
    threads = 1
    for d in block_dims(out).values():
        threads *= d
    if threads > MAX_THREADS:
        raise ScheduleError(f"cannot bind loop '{loop}' to {axis}: the block would have {threads} threads "
                            f"(at most {MAX_THREADS})")
    problems = redundancy_problems(out)
    if problems:
        raise ScheduleError(f"cannot bind loop '{loop}' to {axis}: " + "; ".join(problems[:3]))
    along = axis_extents(out).get(axis, 1)
    if extent < along:
        # only threads below `extent` run the loop: each thread's own copy of a local buffer the loop
        # fills would stay unfilled in the others (fuzz case bind_local_cache_copy_leaves_other_threads_unfilled)
        inside = {n.buffer.name for n in walk(target.body) if isinstance(n, Allocate)}
        filled = sorted({n.buffer.name for n in walk(target.body) if isinstance(n, Store)
                         and n.buffer.scope == "local" and n.buffer.name not in inside})
        if filled:
            raise ScheduleError(f"cannot bind loop '{loop}' (extent {extent}) to {axis}: the block has {along} "
                                f"threads along it, and the loop fills per-thread buffer(s) {filled} that the "
                                f"other threads would leave unfilled")
    return out, [loop]


def redundancy_problems(kernel: Kernel) -> list[str]:
    """Stores that would run on several threads (or blocks) at once and are unsafe there: a
    shared or global buffer updated from its own value, or given a per-thread (local) value."""
    launch = {a: d for a, d in axis_extents(kernel).items() if d > 1}
    out: list[str] = []

    def visit(node, axes: frozenset, local: frozenset):
        if isinstance(node, For):
            axes = axes | {node.kind} if node.kind in THREAD_AXES else axes
        if isinstance(node, Allocate) and node.buffer.scope == "local":
            local = local | {node.buffer.name}
        if isinstance(node, Store) and node.buffer.name not in local and node.buffer.scope != "local":
            missing = [a for a in launch if a not in axes and not (node.buffer.scope == "shared"
                                                                      and a.startswith("blockIdx"))]
            if missing:
                loads = {ld.buffer.name for ld in walk(node.value) if isinstance(ld, Load)}
                if node.buffer.name in loads:
                    out.append(f"the update of '{node.buffer.name}' would run on every thread along "
                               f"{', '.join(missing)} (a read-modify-write race)")
                elif loads & local:
                    out.append(f"the store to '{node.buffer.name}' of per-thread values "
                               f"({', '.join(sorted(loads & local))}) would run on every thread along "
                               f"{', '.join(missing)}")
                else:
                    # even one value from every thread is a write-write race: nothing orders the writes
                    out.append(f"the store to '{node.buffer.name}' would run on every thread along "
                               f"{', '.join(missing)} (a write-write race)")
        if isinstance(node, Intrinsic):  # (cp.async, stmatrix ... write memory too; block-scope ones run once)
            entry = TABLE.get(node.name)
            if entry is not None and entry.scope != "block":
                covered = axes
                for k in entry.writes():
                    ref = node.args[k] if k < len(node.args) else None
                    if not isinstance(ref, BufferRef) or ref.buffer.name in local or ref.buffer.scope == "local":
                        continue
                    missing = [a for a in launch if a not in covered and not (ref.buffer.scope == "shared"
                                                                             and a.startswith("blockIdx"))]
                    if missing:
                        out.append(f"'{node.name}' writing '{ref.buffer.name}' would run on every thread along "
                                   f"{', '.join(missing)} (a write-write race)")
        for c in node.children():
            visit(c, axes, local)

    visit(kernel.body, frozenset(), frozenset())
    return out


# ---------------------------------------------------------------------------------------------
# cache_shared: cooperative copies into shared memory
# ---------------------------------------------------------------------------------------------


def _thread_loops(path: list[For]) -> dict[str, For]:
    return {lp.kind: lp for lp in path if lp.kind.startswith("threadIdx")}


def cooperative_loops(kernel: Kernel, path: list[For], taken: set, prefix: str):
    """The linear thread index over the whole block at a point whose enclosing loops are `path`,
    the thread count, and the new thread-bound loops (outermost first) the code there must sit in
    for axes no enclosing loop binds."""
    dims = block_dims(kernel)
    bound = _thread_loops(path)
    tid, stride, wrap = None, 1, []
    for a in ("threadIdx.x", "threadIdx.y", "threadIdx.z"):
        if a in bound:
            var, ext = bound[a].var, const_extent(bound[a])
        elif dims[a] > 1:
            var, ext = Var(fresh_name(taken, f"{prefix}_t{a[-1]}")), dims[a]
            wrap.append((var, ext, a))
        else:
            continue
        term = var if stride == 1 else Binary("mul", var, Const(stride))
        tid = term if tid is None else Binary("add", tid, term)
        stride *= ext
    return (tid if tid is not None else Const(0)), stride, list(reversed(wrap))


def cooperative_copy(taken: set, prefix: str, extents: tuple, tid, nthreads: int, vector: int, make_store,
                     guard=None) -> object:
    """Loops copying a box of `extents` with `nthreads` threads (linear index `tid`), `vector`
    consecutive elements of the last dimension per thread and step: `make_store(local_index)`
    builds the element copy, `guard(local_index)` an optional condition."""
    if extents[-1] % vector:
        raise ScheduleError(f"cooperative copy of '{prefix}': the last extent {extents[-1]} is not a multiple of "
                            f"the vector width {vector}")
    chunks = list(extents[:-1]) + [extents[-1] // vector]
    total = 1
    for e in chunks:
        total *= e
    steps = -(-total // nthreads)
    it = Var(fresh_name(taken, f"{prefix}_it"))
    v = Var(fresh_name(taken, f"{prefix}_v"))
    flat = tid if steps == 1 else Binary("add", Binary("mul", it, Const(nthreads)), tid)
    index, stride = [], total
    for e in chunks:
        stride //= e
        q = flat if stride == 1 else Binary("floordiv", flat, Const(stride))
        index.append(q if stride * e == total else Binary("floormod", q, Const(e)))
    index[-1] = Binary("add", Binary("mul", index[-1], Const(vector)), v) if vector > 1 else index[-1]
    body = make_store(tuple(index))
    cond = guard(tuple(index)) if guard is not None else None
    if cond is not None:
        body = IfThenElse(cond, body)
    if vector > 1:
        body = For(v, Const(vector), body, "vectorized" if cond is None else "unrolled")
    if total % nthreads:
        body = IfThenElse(Binary("lt", flat, Const(total)), body)
    return For(it, Const(steps), body, "unrolled" if steps <= 8 else "serial") if steps > 1 else \
        _substitute_it(body, it)


def _substitute_it(body, it: Var):
    from tessel.ir.nodes import substitute

    return substitute(body, {it: Const(0)})


def box_guard(glob: tuple, bases: tuple, extents: tuple, shape: tuple, ranges: dict):
    """The condition keeping `glob` (base + local index, local index in [0, extent)) inside
    `shape`, leaving out the bounds interval analysis of the bases proves; None if none needed."""
    conds = []
    for g, b, e, dim in zip(glob, bases, extents, shape):
        r = interval(b, ranges)
        if r is None or r[0] < 0:
            conds.append(Binary("ge", g, Const(0)))
        if r is None or r[1] + e - 1 >= dim:
            conds.append(Binary("lt", g, Const(dim)))
    return and_all(conds)


def _shift(idx: tuple, bases: tuple) -> tuple:
    return tuple(i if isinstance(b, Const) and b.value == 0 else Binary("sub", i, b) for i, b in zip(idx, bases))


def cache_shared(kernel: Kernel, buffer: str, at: str, vector: int = 1) -> tuple[Kernel, list[str]]:
    """Stage what the block reads of `buffer` in one iteration of loop `at` through a shared buffer
    filled by all the block's threads together; returns [shared buffer name]."""
    if isinstance(vector, bool) or not isinstance(vector, int) or vector < 1:
        raise ScheduleError(f"cache_shared '{buffer}': vector must be a positive integer, got {vector!r}")
    buf = find_buffer(kernel, buffer)
    loop = find_loop(kernel.body, at)
    path = loop_path(kernel.body, at)
    if not any(lp.kind.startswith("threadIdx") for lp in path) and not any(
            n.kind.startswith("threadIdx") for n in walk(kernel.body) if isinstance(n, For)):
        raise ScheduleError(f"cache_shared '{buffer}' at '{at}': the kernel has no thread-bound loops yet; bind "
                            f"threads first (or use cache_read for a per-thread copy)")
    if buffer in {n.buffer.name for n in walk(loop.body) if isinstance(n, Allocate)}:
        raise ScheduleError(f"cache_shared: '{buffer}' is allocated inside loop '{at}'")
    loads = loads_of(loop.body, buffer)
    if not loads:
        raise ScheduleError(f"cache_shared: loop '{at}' does not read '{buffer}'")
    if stores_to(loop.body, buffer):
        raise ScheduleError(f"cache_shared: loop '{at}' also writes '{buffer}'")
    inner = inner_extents(loop)
    block_level = max((k for k, lp in enumerate(path) if lp.kind.startswith("blockIdx")), default=-1)
    for lp in path[block_level + 1:]:
        if lp.kind.startswith("threadIdx"):
            inner[lp.var] = const_extent(lp)
    abstract, extents = _abstract_loads(loads, inner)
    box = touched_box(abstract, buf.shape, extents)
    for b in box.bases:
        if any(isinstance(v, Var) and v in inner for v in walk(b)):
            raise ScheduleError(f"cache_shared '{buffer}': the region read depends on the thread index")
    taken = used_names(kernel)
    new = Buffer(fresh_name(taken, f"{buffer}_shared"), box.extents, buf.dtype, "shared")
    ranges = {lp.var: (0, const_extent(lp) - 1) for lp in path if isinstance(lp.extent, Const)}
    tid, nthreads, wrap = cooperative_loops(kernel, path, taken, new.name)
    for var, ext, _ in wrap:
        ranges[var] = (0, ext - 1)

    def glob(loc):
        return tuple(v if isinstance(b, Const) and b.value == 0 else Binary("add", b, v)
                     for b, v in zip(box.bases, loc))

    def guard(loc):
        return box_guard(glob(loc), box.bases, box.extents, buf.shape, ranges)

    copy = cooperative_copy(taken, new.name, box.extents, tid, nthreads, vector,
                            lambda loc: Store(new, loc, Load(buf, glob(loc))), guard)
    for var, ext, axis in reversed(wrap):
        copy = For(var, Const(ext), copy, axis)
    iterating = [lp for lp in path[block_level + 1:] if lp.kind not in THREAD_AXES and const_extent(lp) > 1]

    def redirect(n):
        if isinstance(n, Load) and n.buffer.name == buffer:
            return Load(new, _shift(n.indices, box.bases))
        return None

    def rebuild(old: For):
        body = rewrite(old.body, redirect, fixpoint=False)
        stmts = list(body.stmts) if hasattr(body, "stmts") else [body]

        def reads_new(k):  # an earlier copy that now reads this cache must wait for it
            return k < len(stmts) and bool(loads_of(stmts[k], new.name))

        if iterating and stmts and isinstance(stmts[0], Barrier) and not reads_new(1):
            # an earlier cooperative copy already opens the body with a barrier: join its group
            new_body = seq(stmts[0], copy, *stmts[1:])
        elif (not iterating and len(stmts) > 1 and isinstance(stmts[1], Barrier) and _is_shared_copy(stmts[0])
              and not reads_new(0)):
            new_body = seq(copy, *stmts)
        else:
            new_body = seq(Barrier() if iterating else None, copy, Barrier(), body)
        return For(old.var, old.extent, new_body, old.kind)

    out = replace_loop(kernel, at, rebuild)
    out = _allocate_at_block_level(out, path[block_level].var.name if block_level >= 0 else None, new)
    return with_launch(out), [new.name]


def _abstract_loads(loads: list, inner: dict) -> tuple[list, dict]:
    """The loads with each non-affine piece that depends on inner variables only (a lane's row
    `lane // 4 + 8 * (e // 2)`, say) replaced by a fresh variable ranging over its interval, and
    the inner extents with those variables added: touched_box then bounds the region tightly
    instead of assuming whole dimensions."""
    extents = dict(inner)
    ranges = {v: (0, e - 1) for v, e in inner.items()}
    pseudo: dict = {}

    def only_inner(e) -> bool:
        vs = [x for x in walk(e) if isinstance(x, Var)]
        return bool(vs) and all(v in inner for v in vs)

    def go(e):
        if only_inner(e) and affine_form(e, set(inner)) is None:
            r = interval(e, ranges)
            if r is None or r[0] < 0:
                return e
            if e not in pseudo:
                pseudo[e] = Var(f"__piece{len(pseudo)}")
                extents[pseudo[e]] = r[1] + 1
            return pseudo[e]
        if isinstance(e, Binary) and e.op in ("add", "sub", "mul"):
            a, b = go(e.a), go(e.b)
            return e if (a is e.a and b is e.b) else Binary(e.op, a, b)
        return e

    out = [Load(ld.buffer, tuple(go(i) for i in ld.indices)) for ld in loads]
    return out, extents


def _is_shared_copy(stmt) -> bool:
    """Whether `stmt` only stores into shared buffers (a cooperative copy)."""
    stores = [n for n in walk(stmt) if isinstance(n, Store)]
    return bool(stores) and all(st.buffer.scope == "shared" for st in stores)


def _allocate_at_block_level(kernel: Kernel, block_loop: str | None, buf: Buffer) -> Kernel:
    if block_loop is None:
        return dataclasses.replace(kernel, body=Allocate(buf, kernel.body))
    return replace_loop(kernel, block_loop, lambda old: For(old.var, old.extent, Allocate(buf, old.body), old.kind))


# ---------------------------------------------------------------------------------------------
# Layout of shared buffers: padding and swizzling
# ---------------------------------------------------------------------------------------------


def _allocated(kernel: Kernel, buffer: str) -> Buffer:
    if any(p.name == buffer for p in kernel.params):
        raise ScheduleError(f"'{buffer}' is a kernel parameter; only buffers the kernel allocates can change layout")
    return find_buffer(kernel, buffer)


def _retype(kernel: Kernel, old: Buffer, new: Buffer, index_fn=None) -> Kernel:
    def fn(n):
        if isinstance(n, Buffer) and n.name == old.name:
            return new
        if index_fn is not None and isinstance(n, (Load, Store, BufferRef)) and n.buffer.name == old.name:
            return dataclasses.replace(n, buffer=new, indices=index_fn(n.indices, isinstance(n, BufferRef)))
        return None

    return rewrite(kernel, fn, fixpoint=False)


def pad(kernel: Kernel, buffer: str, elements: int) -> tuple[Kernel, list[str]]:
    """Give each row of allocated `buffer` `elements` extra (unused) elements; returns []."""
    if isinstance(elements, bool) or not isinstance(elements, int) or elements < 1:
        raise ScheduleError(f"pad '{buffer}': elements must be a positive integer, got {elements!r}")
    old = _allocated(kernel, buffer)
    row = old.shape[-1] + elements
    from tessel.ir.intrinsics import lookup
    from tessel.ir.nodes import Intrinsic

    # an intrinsic that moves `count` elements at a time (cp.async's 16 bytes, ldmatrix's rows) needs
    # every row to start on such a boundary (fuzz case pad_of_cp_async_buffer_misaligns)
    for call in (n for n in walk(kernel.body) if isinstance(n, Intrinsic)):
        for op, ref in zip(lookup(call.name).operands, call.args):
            if isinstance(ref, BufferRef) and ref.buffer.name == buffer:
                count = op.count(old.dtype)
                if count > 1 and row % count:
                    raise ScheduleError(f"pad '{buffer}' by {elements}: rows of {row} elements would misalign "
                                        f"'{call.name}', which moves {count} elements at a time (pad by a "
                                        f"multiple of {count})")
    new = dataclasses.replace(old, shape=old.shape[:-1] + (row,))
    out = _retype(kernel, old, new)
    return (with_launch(out) if out.target == "cuda" else out), []


def swizzle(kernel: Kernel, buffer: str) -> tuple[Kernel, list[str]]:
    """Rotate the 16-byte chunks of each row of allocated `buffer` by the row index (chunk c of
    row r lives at chunk (c + r) mod n); returns []."""
    old = _allocated(kernel, buffer)
    v = 128 // bits(old.dtype)  # elements per 16-byte chunk
    if old.ndim < 2 or old.shape[-1] % v or old.shape[-1] // v < 2:
        raise ScheduleError(f"swizzle '{buffer}': needs rows (the last dimension, {old.shape[-1]}) of at least "
                            f"two whole 16-byte chunks ({v} elements of {old.dtype})")
    n = old.shape[-1] // v
    from tessel.ir.intrinsics import lookup
    from tessel.ir.nodes import Intrinsic

    for call in (n for n in walk(kernel.body) if isinstance(n, Intrinsic)):
        for op, ref in zip(lookup(call.name).operands, call.args):
            if not (isinstance(ref, BufferRef) and ref.buffer.name == buffer):
                continue
            count = op.count(old.dtype)
            if v % count or not _multiple_of(ref.indices[-1], count):
                raise ScheduleError(f"swizzle '{buffer}': intrinsic '{call.name}' addresses {count} element(s) at "
                                    f"{ref.indices[-1]}, which is not provably inside one 16-byte chunk")

    def index_fn(idx, _is_ref):
        r, c = idx[-2], idx[-1]
        chunk = Binary("floormod", Binary("add", Binary("floordiv", c, Const(v)), r), Const(n))
        moved = Binary("mul", chunk, Const(v))
        return idx[:-1] + (Binary("add", moved, Binary("floormod", c, Const(v))),)

    return _retype(kernel, old, old, index_fn), []


def _multiple_of(e, v: int) -> bool:
    """Whether integer expression `e` is a multiple of v for every value of its variables."""
    form = affine_form(e, {x for x in walk(e) if isinstance(x, Var)})
    if form is None:
        return False
    coeffs, rest = form
    return all(c % v == 0 for c in coeffs.values()) and isinstance(rest, Const) and rest.value % v == 0


def remove_dead_code(kernel: Kernel) -> tuple[Kernel, list[str]]:
    """The dead-code pass as a schedule step; returns []."""
    from tessel.passes.dce import remove_dead_code as dce

    out = dce(kernel)
    return (with_launch(out) if out.target == "cuda" else out), []


__all__ = [
    "axis_extents", "bind", "block_dims", "box_guard", "cache_shared", "cooperative_copy", "cooperative_loops", "pad",
    "redundancy_problems", "remove_dead_code", "shared_bytes", "swizzle", "with_launch",
]
