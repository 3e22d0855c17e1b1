"""Row pipelines on the CPU: consecutive row-wise stages fused under one loop over the rows.

Softmax, log-softmax, layer norm and RMS norm lower to a few stages over the same rows: row
reductions (max, sum, mean, variance) and elementwise stages that read the row statistics. Each
stage on its own sweeps every row, so a row is read from memory (or L2) once per stage. This module
rebuilds such a run of stages as

    for s in rows (fused; parallel when large):
      alloc t[F] local                                   (only when an element is shared, below)
        stage 1 of row s (a reduction: vector accumulators, cpu_reduce.accumulate_row)
        stage 2 of row s (elementwise: the row's F elements, vectorized)
        ...

so the row stays in L1 between stages. When a reduction's element, say exp(x - max), is also a
subexpression of a later elementwise stage (softmax's output exp(x - max) / sum), the reduction
stores it in the row buffer `t` as it sums, and the later stage loads it instead of computing it
again: softmax's exp runs once per element instead of twice.

Legality: every stage of the run iterates the same rows (its first R loops), a stage reads a buffer
another stage of the run writes only at its own row (the first R indices are its row variables; the
rest is any index inside that row, computed by an earlier stage), and no stage reads what it or a
later stage writes. Then running stage k of row s before stage k-1 of row s+1 reads and writes
exactly what the stage-by-stage order did.

Example:
    >>> import tessel as ts
    >>> x = ts.placeholder((4, 40), name="x"); k = ts.reduce_axis(40, name="k")
    >>> m = ts.compute((4,), lambda i: ts.max(x[i, k], axis=k), name="m")
    >>> y = ts.compute((4, 40), lambda i, j: ts.exp(x[i, j] - m[i]), name="y")
    >>> kern = ts.lower([x, y])
    >>> from tessel.schedules.generic import stages
    >>> new, names = fuse_rows(kern, [n for n, _ in stages(kern)], 16, 0, 4096)
    >>> sorted(names), len(stages(new))  # one nest now, writing both (stages() lists single writers)
    (['m', 'y'], 0)
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.ir.dtypes import bits
from tessel.ir.nodes import Allocate, Binary, Buffer, Call, Const, For, IfThenElse, Kernel, Load, Seq, Store, Var, \
    rewrite, seq, substitute, walk
from tessel.schedules.cpu_reduce import RowReduction, accumulate_row, accumulators_for, fresh_vars, \
    parse_row_reduction
from tessel.schedules.nest import perfect_chain, unflatten_index

# an element worth keeping in a row buffer rather than computing twice (a load or an add is not)
_COSTLY = ("exp", "log", "tanh", "sigmoid", "erf", "pow", "sin", "cos")
# the row buffer lives on the stack of each row's iteration
_MAX_ROW_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Member:
    name: str
    nest: For
    row_vars: tuple  # its first R loop variables
    reduction: RowReduction | None  # None: an elementwise stage
    tail: tuple  # elementwise: the loops after the rows


def fuse_rows(kernel: Kernel, eligible, lanes: int, accumulators: int,
              min_parallel_work: int) -> tuple[Kernel, set] | None:
    """`kernel` with each run of row-wise stages fused (module docstring), and the names of the
    stages fused; None when there is no run of two or more. `eligible`: the names of the stages (in
    DSL form) that may join a run; a run is made of adjacent top-level statements only."""
    groups, i = [], 0
    runs = _adjacent(kernel, set(eligible))
    for run in runs:
        i = 0
        while i < len(run):
            g = _group_from(kernel, run, i, lanes)
            if len(g) >= 2:
                groups.append(g)
                i += len(g)
            else:
                i += 1
    if not groups:
        return None
    fresh = fresh_vars(kernel)
    names: set = set()
    for g in groups:
        first, *rest = g
        new = _build(g, lanes, accumulators, min_parallel_work, fresh)
        drop = [m.nest for m in rest]
        kernel = rewrite(kernel, lambda n, first=first, new=new, drop=drop: _replace(n, first.nest, new, drop),
                         fixpoint=False)
        names |= {m.name for m in g}
    return rewrite(kernel, _drop_empty, fixpoint=False), names


def _adjacent(kernel: Kernel, eligible: set) -> list:
    """The maximal runs of adjacent top-level stages named in `eligible`, as (name, nest) lists."""
    from tessel.schedules.generic import stages

    single = {id(nest): name for name, nest in stages(kernel)}
    body = kernel.body
    while isinstance(body, Allocate):
        body = body.body
    runs, cur = [], []
    for st in (body.stmts if isinstance(body, Seq) else (body,)):
        name = single.get(id(st))
        if name is not None and name in eligible:
            cur.append((name, st))
            continue
        if cur:
            runs.append(cur)
        cur = []
    if cur:
        runs.append(cur)
    return runs


def _replace(n, first: For, new, drop: list):
    if not isinstance(n, For):
        return None
    if n == first:
        return new
    return _EMPTY if any(n == d for d in drop) else None


_EMPTY = Seq(())


def _drop_empty(n):
    if isinstance(n, Seq) and any(c is _EMPTY or (isinstance(c, Seq) and not c.stmts) for c in n.stmts):
        return seq(*n.stmts)
    return None


def _rows_of(r: RowReduction) -> tuple:
    """The row extents of a reduction: its spatial extents without trailing ones (keepdims)."""
    ext = [int(lp.extent.value) for lp in r.chain[: r.ndim]]
    while ext and ext[-1] == 1:
        ext.pop()
    return tuple(ext)


def _group_from(kernel: Kernel, candidates: list, start: int, lanes: int) -> list:
    """The longest run of stages from `candidates[start]` (a row reduction) that can share its row loop."""
    name, nest = candidates[start]
    r = parse_row_reduction(kernel, name, nest, _ndim(nest))
    if r is None or r.outer_red or r.F < lanes:
        return []
    rows = _rows_of(r)
    R = len(rows)
    group = [_Member(name, nest, tuple(lp.var for lp in r.chain[:R]), r, ())]
    written, read = {name}, _loaded(nest)
    for name, nest in candidates[start + 1:]:
        m = _member(kernel, name, nest, _ndim(nest), rows)
        # it reads the run's buffers only inside its row, and writes nothing an earlier stage read (that
        # stage, run first for the next row, would see the new values)
        if m is None or name in written or name in read or not _reads_ok(m, written):
            break
        group.append(m)
        written.add(name)
        read |= _loaded(nest)
    return group


def _loaded(nest: For) -> set:
    return {n.buffer.name for n in walk(nest) if isinstance(n, Load)}


def _ndim(nest: For) -> int:
    """The spatial loops of a DSL-form stage: the rank of the buffer it stores."""
    return len(next(n for n in walk(nest) if isinstance(n, Store)).indices)


def _member(kernel: Kernel, name: str, nest: For, ndim: int, rows: tuple) -> _Member | None:
    R = len(rows)
    chain = perfect_chain(nest)
    if tuple(int(lp.extent.value) for lp in chain[:R]) != rows or len(chain) < R:
        return None
    row_vars = tuple(lp.var for lp in chain[:R])
    if ndim < len(chain):  # a reduction: its spatial loops are the rows, then ones (keepdims)
        r = parse_row_reduction(kernel, name, nest, ndim)
        if r is None or r.outer_red or ndim < R or any(int(lp.extent.value) != 1 for lp in chain[R:ndim]):
            return None
        return _Member(name, nest, row_vars, r, ())
    leaf = chain[-1].body
    if not (isinstance(leaf, Store) and leaf.buffer.name == name and len(chain) == ndim
            and tuple(leaf.indices) == tuple(lp.var for lp in chain)):
        return None  # not one plain store per element (a guarded store: fuzz case rows_guarded_elementwise_store)
    if any(isinstance(n, Load) and n.buffer.name == name for n in walk(nest)):
        return None  # an elementwise stage reading its own output
    return _Member(name, nest, row_vars, None, tuple(chain[R:]))


def _reads_ok(m: _Member, written: set) -> bool:
    """Every load `m` makes of a buffer the run writes is inside its own row."""
    for n in walk(m.nest):
        if isinstance(n, Load) and n.buffer.name in written:
            R = len(m.row_vars)
            if tuple(n.indices[:R]) != m.row_vars:
                return False
            if any(v in m.row_vars for idx in n.indices[R:] for v in walk(idx)):
                return False
    return True


def _store_of(nest: For) -> Store:
    return perfect_chain(nest)[-1].body


def _build(group: list, lanes: int, accumulators: int, min_parallel_work: int, fresh) -> For:
    rows = tuple(int(lp.extent.value) for lp in group[0].reduction.chain[: len(group[0].row_vars)])
    total = 1
    for e in rows:
        total *= e
    s = fresh("row")
    row_idx = unflatten_index(s, rows)
    subs = [_row_sub(m, row_idx) for m in group]
    phi = fresh("phi")  # a stand-in for the flat index inside the row, while matching elements
    shared = _shared_elements(group, subs, phi)
    row_buffers, body, kept = [], [], []
    for k, m in enumerate(group):
        if m.reduction is not None:
            r = m.reduction
            t = None
            if k in shared:
                e, ext = shared[k]
                t = Buffer(fresh(f"{m.name}_row").name, (Const(r.F),), r.e.dtype, "local")
                row_buffers.append(t)
                kept.append((e, t, ext))

            def update(flat, r=r, t=t, sub=subs[k]):
                value = substitute(r.element(flat), sub)
                return (Store(t, (flat,), value),), Load(t, (flat,))
            out_idx = tuple(lp.var for lp in r.chain[: r.ndim])
            stmt = accumulate_row(r, lanes, accumulators_for(r, lanes, accumulators), fresh, out_idx,
                                  update if t is not None else None)
            body.append(substitute(stmt, subs[k]))
        else:
            body.append(_elementwise_row(m, subs[k], lanes, fresh, phi, kept))
    stmt = seq(*body)
    for t in reversed(row_buffers):
        stmt = Allocate(t, stmt)
    kind = "parallel" if total > 1 and total * group[0].reduction.F >= min_parallel_work else "serial"
    return For(s, Const(total), stmt, kind) if rows else substitute(stmt, {s: Const(0)})


def _row_sub(m: _Member, row_idx: list) -> dict:
    """Member `m`'s row variables -> the fused row's indices; a reduction's keepdims variables -> 0."""
    sub = dict(zip(m.row_vars, row_idx))
    if m.reduction is not None:
        for lp in m.reduction.chain[len(m.row_vars): m.reduction.ndim]:
            sub[lp.var] = Const(0)
    return sub


def _shared_elements(group: list, subs: list, phi: Var) -> dict:
    """{index of a reduction in the run: (its element at flat row index `phi`, its row extents)} for
    each reduction whose costly element a later elementwise stage over the same extents computes too."""
    out = {}
    for k, m in enumerate(group):
        r = m.reduction
        if r is None or r.F * bits(r.e.dtype) // 8 > _MAX_ROW_BYTES:
            continue
        e = substitute(r.element(phi), subs[k])
        if not any(isinstance(n, Call) and n.func in _COSTLY for n in walk(e)):
            continue
        ext = tuple(int(lp.extent.value) for lp in r.inner_red)
        for j in range(k + 1, len(group)):
            later = group[j]
            if later.reduction is None and _tail_extents(later) == ext \
                    and any(n == e for n in walk(_flat_value(later, subs[j], phi))):
                out[k] = (e, ext)
                break
    return out


def _tail_extents(m: _Member) -> tuple:
    return tuple(int(lp.extent.value) for lp in m.tail)


def _flat_value(m: _Member, sub: dict, flat) -> object:
    """The stored value of elementwise member `m` in the fused row (`sub`), its tail from `flat`."""
    return substitute(_store_of(m.nest).value, {**sub, **_tail_sub(m, flat)})


def _tail_sub(m: _Member, flat) -> dict:
    ext = _tail_extents(m)
    return dict(zip((lp.var for lp in m.tail), unflatten_index(flat, ext))) if ext else {}


def _elementwise_row(m: _Member, sub: dict, lanes: int, fresh, phi: Var, kept: list) -> object:
    """Member `m`'s stores for one row (`sub`: its row variables in the fused loop): its tail
    flattened, vectorized by `lanes` with a shorter last vector; an element a reduction kept in a row
    buffer is loaded from it."""
    st = _store_of(m.nest)
    ext = _tail_extents(m)
    P = 1
    for e in ext:
        P *= e
    value = _flat_value(m, sub, phi)
    for e, t, row_ext in kept:
        if row_ext == ext:  # the same flat index means the same element only over the same extents
            value = substitute(value, {e: Load(t, (phi,))})
    full_sub = {**sub, **_tail_sub(m, phi)}
    idx = tuple(substitute(i, full_sub) for i in st.indices)
    divides = _row_invariant_divisors(value, phi)
    if not divides:
        return _row_loops(Store(st.buffer, idx, value), P, lanes, fresh, m.name, phi)
    # x / d with d the same for the whole row: times 1/d, computed once per row (onnxruntime's softmax
    # does the same; the product is within an ulp of the quotient). Only where 1/d is a normal number
    # (2^-125 <= |d| <= 2^125): otherwise the row divides as written.
    rcp, scaled, normal, pre = {}, value, [], []
    for d in divides:
        buf = Buffer(fresh(f"{m.name}_rcp").name, (Const(1),), d.dtype, "local")
        rcp[d] = buf
        pre.append(Store(buf, (Const(0),), Binary("div", Const(1.0, d.dtype), d)))
        mag = Call("abs", (d,))
        normal += [Binary("ge", mag, Const(2.0 ** -125, d.dtype)), Binary("le", mag, Const(2.0 ** 125, d.dtype))]
    scaled = rewrite(value, lambda n: Binary("mul", n.a, Load(rcp[n.b], (Const(0),)))
                     if isinstance(n, Binary) and n.op == "div" and n.b in rcp else None, fixpoint=False)
    fast = _row_loops(Store(st.buffer, idx, scaled), P, lanes, fresh, m.name, phi)
    slow = _row_loops(Store(st.buffer, idx, value), P, lanes, fresh, m.name, phi)
    cond = normal[0]
    for c in normal[1:]:
        cond = Binary("and", cond, c)
    out = seq(*pre, IfThenElse(cond, fast, slow))
    for buf in rcp.values():
        out = Allocate(buf, out)
    return out


def _row_invariant_divisors(value, phi: Var) -> list:
    """The float32 divisors in `value` that do not depend on the index inside the row (`phi`)."""
    out = []
    for n in walk(value):
        if isinstance(n, Binary) and n.op == "div" and n.b.dtype == "float32" and n.b not in out \
                and not isinstance(n.b, Const) and not any(v == phi for v in walk(n.b)):
            out.append(n.b)
    return out


def _row_loops(one: Store, P: int, lanes: int, fresh, name: str, phi: Var):
    """`one` (a store at flat row index `phi`) for phi in 0..P-1: whole vectors of `lanes`, then one
    shorter vector."""
    if P == 1:
        return substitute(one, {phi: Const(0)})
    L = lanes
    loops = []
    full, rem = P // L, P % L
    if full:
        f0, lv = fresh(f"{name}_f"), fresh(f"{name}_l")
        loops.append(For(f0, Const(full), For(lv, Const(L), substitute(one, {phi: f0 * L + lv}), "vectorized"),
                         "serial"))
    if rem:
        lv = fresh(f"{name}_l")
        loops.append(For(lv, Const(rem), substitute(one, {phi: lv + full * L}),
                         "vectorized" if rem > 1 else "serial"))
    return seq(*loops)


__all__ = ["fuse_rows"]
