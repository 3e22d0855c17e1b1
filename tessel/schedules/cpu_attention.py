"""Fused CPU attention: the template "cpu.attention" for kernels holding an sdpa lowering.

The sdpa op lowers to five loop nests (op_library/attention.py): scores `P_qk = q k^T`, the row
maximum `P_max` of the scaled, masked scores, `P_exp = exp(score - max)`, the row sum `P_sum` and
`P_pv = P_exp v`, each a full-size temporary, then `out = P_pv / P_sum`. Scheduled stage by
stage, that is five parallel regions and three score-sized arrays through memory, and the score
loops (S keys, not a multiple of the vector width) stay scalar: Llama's sdpa (batch 16, 4 heads,
12 tokens, head size 16) took 2.5 ms, 1% of its floor. This template replaces the five nests by
one, row tile by row tile:

    for f in batch (fused batch dims; parallel when the work is large enough):
      kt[E, S] = K factor of the score product, transposed (`pack`: the key loop reads it
                 contiguously, so the score loops vectorize along the keys)
      for each tile of `tile_rows` query rows:
        s[R, S] = q k^T        (for e: for row (unrolled): for key (vectorized))
        m[R]    = max of the masked, scaled scores            (the max nest's own update)
        s[R, S] = exp(score - m)                  (in place; vectorized along the keys)
        d[R]    = sum of s                                    (the sum nest's own update)
        acc[R, Ev] = s v       (for key: for row (unrolled): for value column (vectorized))
        P_pv[...] = acc; P_sum[...] = d

Each nest's own expressions are moved, with their reads of the score temporaries redirected to
the local buffers: masks, causality, scale, casts and batch broadcasting come along unchanged.
The remaining stages of the kernel (the division and its epilogue: transpose, reshape) get the
default CPU schedule (`generic.schedule_rest`). All key and value loops vectorize: whole vectors
of `vector_lanes`, plus one shorter vectorized loop for the remainder. The score tile is kept in a
local buffer of S columns, so this suits the short and middling sequences of these models; long
sequences would want key blocks with an online softmax.

Example:
    >>> import tessel as ts
    >>> b = ts.GraphBuilder("att"); q = b.input("q", (2, 5, 8)); k = b.input("k", (2, 7, 8))
    >>> v = b.input("v", (2, 7, 4)); b.output(b.sdpa(q, k, v))
    >>> cm = ts.compile(b, target="cpu")
    >>> [s.kernel.name for s in cm.steps]
    ['sdpa']
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.nodes import (
    Allocate, Binary, Buffer, Const, For, Kernel, Load, Seq, Store, Var, rewrite, seq, substitute, walk,
)
from tessel.schedules.cpu_host import host_vector
from tessel.schedules.nest import (
    fresh_name, init_guards, inits_at_first_iteration, loads_of, perfect_chain, used_names,
)
from tessel.schedules.template import Bool, Choice, IntRange, Pow2, Template, constraint, register

_PARTS = ("qk", "max", "exp", "sum", "pv")


@dataclass(frozen=True)
class _Attention:
    prefix: str
    batch: tuple  # extents of the batch dims
    L: int
    S: int
    E: int
    Ev: int
    dtype: str  # of the scores


def _top(kernel: Kernel):
    """The kernel's top-level statements (under its Allocates) and a function rebuilding the
    kernel from new ones."""
    allocs, body = [], kernel.body
    while isinstance(body, Allocate):
        allocs.append(body.buffer)
        body = body.body
    items = list(body.stmts) if isinstance(body, Seq) else [body]
    return allocs, items


def _written(stmt) -> set:
    return {n.buffer.name for n in walk(stmt) if isinstance(n, Store)}


def find_attention(kernel: Kernel) -> _Attention:
    """The sdpa nests of `kernel` (the first prefix P with P_qk, P_max, P_exp, P_sum, P_pv as
    consecutive top-level DSL nests); ScheduleError when there are none."""
    from tessel.schedules.generic import _in_dsl_form

    allocs, items = _top(kernel)
    temps = {b.name: b for b in allocs}
    by_name = {}
    for k, st in enumerate(items):
        w = _written(st)
        if isinstance(st, For) and len(w) == 1:
            by_name[w.pop()] = k
    for name in by_name:
        if not name.endswith("_qk"):
            continue
        p = name[:-3]
        names = [f"{p}_{x}" for x in _PARTS]
        if not all(n in by_name and n in temps for n in names):
            continue
        pos = [by_name[n] for n in names]
        if sorted(pos) != list(range(min(pos), min(pos) + 5)) or not (pos[0] < pos[1] < pos[2] < min(pos[3:])):
            continue
        if not all(_in_dsl_form(kernel, n, items[by_name[n]]) for n in names):
            continue
        qk, mx, ex, sm, pv = (temps[n] for n in names)
        if qk.ndim < 2:
            continue
        batch, (L, S) = tuple(qk.shape[:-2]), tuple(qk.shape[-2:])
        if (tuple(mx.shape) != batch + (L,) or tuple(sm.shape) != batch + (L,) or tuple(ex.shape) != tuple(qk.shape)
                or tuple(pv.shape[:-1]) != batch + (L,) or not all(isinstance(d, int) for d in qk.shape + pv.shape)):
            continue
        chain = perfect_chain(items[by_name[name]])
        if len(chain) != qk.ndim + 1:
            continue
        info = _Attention(p, batch, L, S, int(chain[-1].extent.value), int(pv.shape[-1]), qk.dtype)
        if not _spans_whole(items, by_name, names, info):
            continue
        _check_reads(kernel, items, by_name, info)
        return info
    raise ScheduleError(f"kernel '{kernel.name}' holds no sdpa loop nests (P_qk, P_max, P_exp, P_sum, P_pv)")


def _spans_whole(items, by_name, names, info) -> bool:
    """Whether each nest's loops run over its whole tensors (the fused nest assumes it: a PV sum over
    one key of eight was computed over all eight, fuzz campaign), and each reduction's init is at its
    first step."""
    b, L, S = info.batch, info.L, info.S
    want = [b + (L, S, info.E), b + (L, S), b + (L, S), b + (L, S), b + (L, info.Ev, S)]
    ndims = [len(b) + 2, len(b) + 1, len(b) + 2, len(b) + 1, len(b) + 2]  # of each nest's output
    for n, shape, ndim in zip(names, want, ndims):
        nest = items[by_name[n]]
        chain = perfect_chain(nest)
        if tuple(int(lp.extent.value) if isinstance(lp.extent, Const) else None for lp in chain) != shape:
            return False
        if not inits_at_first_iteration(init_guards(nest), chain[ndim:]):
            return False
    return True


def _check_reads(kernel, items, by_name, info) -> None:
    """The score temporaries are read only where the fused nest replaces the reads."""
    p = info.prefix
    readers = {f"{p}_qk": {f"{p}_max", f"{p}_exp"}, f"{p}_max": {f"{p}_exp"}, f"{p}_exp": {f"{p}_sum", f"{p}_pv"}}
    for buf, allowed in readers.items():
        for name, k in by_name.items():
            if name != buf and name not in allowed and loads_of(items[k], buf):
                raise ScheduleError(f"'{buf}' is also read by the nest of '{name}'")
    fused = {by_name[f"{p}_{x}"] for x in _PARTS}
    for k, st in enumerate(items):
        if k not in fused and any(loads_of(st, b) for b in readers):
            raise ScheduleError(f"a score temporary of '{p}' is read outside the sdpa nests")


# -- building the fused nest ----------------------------------------------------------------------


class _Names:
    def __init__(self, kernel: Kernel):
        self.taken = used_names(kernel)

    def var(self, base: str) -> Var:
        return Var(fresh_name(self.taken, base))

    def buf(self, base: str, shape, dtype) -> Buffer:
        return Buffer(fresh_name(self.taken, base), tuple(shape), dtype, "local")


def _nest_parts(nest: For, ndim: int):
    """(spatial vars, reduction var or None, init value or None, update/store value, store indices)."""
    chain = perfect_chain(nest)
    spatial = [lp.var for lp in chain[:ndim]]
    guards = init_guards(nest)
    if guards:
        if len(chain) != ndim + 1 or len(guards) != 1:
            raise ScheduleError("an sdpa reduction nest is not one guarded reduction")
        guard, update = guards[0]
        return spatial, chain[-1].var, guard.then.value, update.value, tuple(update.indices)
    body = chain[ndim - 1].body
    if len(chain) != ndim or not isinstance(body, Store):
        raise ScheduleError("the sdpa exp nest is not elementwise")
    return spatial, None, None, body.value, tuple(body.indices)


def _vec(names: _Names, base: str, extent: int, lanes: int, body):
    """Loops over `extent` whose innermost is vectorized: whole vectors of `lanes`, then one
    shorter vectorized loop for the remainder; `body(index)` builds the body."""
    if extent <= lanes:
        v = names.var(base)
        return For(v, extent, body(v), "vectorized")
    whole, rem = divmod(extent, lanes)
    vo, vi = names.var(base + "_o"), names.var(base + "_v")
    out = [For(vo, whole, For(vi, lanes, body(vo * lanes + vi), "vectorized"))]
    if rem:
        vt = names.var(base + "_t")
        out.append(For(vt, rem, body(Const(whole * lanes) + vt), "vectorized"))
    return seq(*out)


def _rows(names: _Names, base: str, R: int, body):
    i = names.var(base)
    return For(i, R, body(i), "unrolled" if R > 1 else "serial")


def fused_nest(kernel: Kernel, info: _Attention, knobs: dict) -> tuple[For | Seq, list]:
    """The fused attention statement for `info`'s nests in `kernel` (see the module docstring),
    and whether the K factor was packed."""
    _, items = _top(kernel)
    nests = {}
    for st in items:
        w = _written(st)
        if isinstance(st, For) and len(w) == 1:
            nests[w.pop()] = st
    p, nb = info.prefix, len(info.batch)
    qk_n, mx_n, ex_n, sm_n, pv_n = (f"{p}_{x}" for x in _PARTS)
    R, lanes, pack = knobs["tile_rows"], knobs["vector_lanes"], knobs["pack"]
    names = _Names(kernel)
    qk_sp, qk_r, qk_init, qk_upd, _ = _nest_parts(nests[qk_n], nb + 2)
    mx_sp, mx_r, mx_init, mx_upd, _ = _nest_parts(nests[mx_n], nb + 1)
    ex_sp, _, _, ex_val, _ = _nest_parts(nests[ex_n], nb + 2)
    sm_sp, sm_r, sm_init, sm_upd, _ = _nest_parts(nests[sm_n], nb + 1)
    pv_sp, pv_r, pv_init, pv_upd, _ = _nest_parts(nests[pv_n], nb + 2)
    for init in (qk_init, mx_init, sm_init, pv_init):
        if any(isinstance(n, (Var, Load)) for n in walk(init)):
            raise ScheduleError(f"an sdpa reduction of '{p}' starts from a value that is not a constant")
    bufs = {b.name: b for b in (n.buffer for n in walk(kernel.body) if isinstance(n, Allocate))}
    s = names.buf(f"{p}_s", (R, info.S), bufs[qk_n].dtype)
    m = names.buf(f"{p}_m", (R,), bufs[mx_n].dtype)
    d = names.buf(f"{p}_d", (R,), bufs[sm_n].dtype)
    acc = names.buf(f"{p}_acc", (R, info.Ev), bufs[pv_n].dtype)

    nbatch = 1
    for x in info.batch:
        nbatch *= x
    f = names.var(f"{p}_bh") if nbatch > 1 else None
    bidx, stride = [], nbatch
    for x in info.batch:
        stride //= x
        if x == 1 or f is None:
            bidx.append(Const(0))
        else:
            e = f // stride if stride > 1 else f
            bidx.append(e % x if stride * x < nbatch else e)
    lo = names.var(f"{p}_rows") if info.L > R else None

    def row(i):
        return (lo * R + i if R > 1 else lo) if lo is not None else i

    def localize(expr, i, acc_buf=None, acc_load=None):
        """Reads of the score temporaries at row (batch, l) -> the local buffers of tile row i."""
        want = tuple(bidx) + (row(i),)

        def fn(n):
            if not isinstance(n, Load):
                return None
            if acc_buf is not None and n == acc_load:
                return acc_buf
            if n.buffer.name in (qk_n, ex_n, mx_n):
                if tuple(n.indices[: nb + 1]) != want:
                    raise ScheduleError(f"'{n.buffer.name}' is read at another row than the one computed")
                if n.buffer.name == mx_n:
                    return Load(m, (i,))
                return Load(s, (i, n.indices[nb + 1]))
            return None

        return rewrite(expr, fn, fixpoint=False)

    def moved(sp, red, upd, i, last, r):
        mapping = dict(zip(sp, list(bidx) + [row(i)] + ([last] if last is not None else [])))
        if red is not None:
            mapping[red] = r
        return substitute(upd, mapping)

    # the K factor of the score product, packed transposed: kt[e, j]
    e_var = names.var(f"{p}_e")
    packed = False
    kt = None
    j_probe, i_probe = Var("__j"), Var("__i")
    qk_expr = moved(qk_sp, qk_r, qk_upd, i_probe, j_probe, e_var)
    qk_acc = _self_load(qk_expr, qk_n)
    term = _other_operand(qk_expr, qk_acc)
    kfac = _k_factor(term, j_probe, {i_probe} | ({lo} if lo is not None else set())) if pack else None
    if kfac is not None:
        kt = Buffer(fresh_name(names.taken, f"{p}_kt"), (info.E, info.S), kfac.dtype, "local")
        pe = names.var(f"{p}_pe")
        out_pack = For(pe, info.E, _vec(names, f"{p}_pj", info.S, lanes,
                                        lambda j: Store(kt, (pe, j), substitute(kfac, {j_probe: j, e_var: pe}))))
        packed = True

    def qk_body(i, j):
        x = substitute(qk_expr, {i_probe: i, j_probe: j})
        if kfac is not None:
            x = substitute(x, {substitute(kfac, {j_probe: j}): Load(kt, (e_var, j))})
        return Store(s, (i, j), localize(x, i, Load(s, (i, j)), substitute(qk_acc, {i_probe: i, j_probe: j})))

    tile = [
        _rows(names, f"{p}_i", R, lambda i: _vec(names, f"{p}_j", info.S, lanes,
                                                  lambda j: Store(s, (i, j), qk_init))),
        For(e_var, info.E, _rows(names, f"{p}_i", R, lambda i: _vec(names, f"{p}_j", info.S, lanes,
                                                                     lambda j: qk_body(i, j)))),
    ]

    def reduce_rows(buf, sp, red, init, upd, name):
        # keys outside, rows inside: the R rows' reductions are independent chains that the
        # unrolled row loop interleaves (a row after row, each a serial chain of S dependent
        # max / add steps, was latency-bound)
        r = names.var(f"{p}_r")

        def one(i):
            x = moved(sp, red, upd, i, None, r)
            return Store(buf, (i,), localize(x, i, Load(buf, (i,)), _self_load(x, name)))

        return seq(_rows(names, f"{p}_i", R, lambda i: Store(buf, (i,), init)),
                   For(r, info.S, _rows(names, f"{p}_i", R, one)))

    tile.append(reduce_rows(m, mx_sp, mx_r, mx_init, mx_upd, mx_n))
    def exp_body(i, j):
        return Store(s, (i, j), localize(moved(ex_sp, None, ex_val, i, j, None), i))

    tile.append(_rows(names, f"{p}_i", R, lambda i: _vec(names, f"{p}_j", info.S, lanes, lambda j: exp_body(i, j))))
    tile.append(reduce_rows(d, sm_sp, sm_r, sm_init, sm_upd, sm_n))
    tile.append(_rows(names, f"{p}_i", R, lambda i: _vec(names, f"{p}_c", info.Ev, lanes,
                                                          lambda c: Store(acc, (i, c), pv_init))))
    r_pv = names.var(f"{p}_k")

    def pv_body(i, c):
        x = moved(pv_sp, pv_r, pv_upd, i, c, r_pv)
        return Store(acc, (i, c), localize(x, i, Load(acc, (i, c)), _self_load(x, pv_n)))

    tile.append(For(r_pv, info.S, _rows(names, f"{p}_i", R, lambda i: _vec(names, f"{p}_c", info.Ev, lanes,
                                                                             lambda c: pv_body(i, c)))))
    pv_buf, sm_buf = bufs[pv_n], bufs[sm_n]
    tile.append(_rows(names, f"{p}_i", R, lambda i: _vec(
        names, f"{p}_c", info.Ev, lanes, lambda c: Store(pv_buf, tuple(bidx) + (row(i), c), Load(acc, (i, c))))))
    tile.append(_rows(names, f"{p}_i", R, lambda i: Store(sm_buf, tuple(bidx) + (row(i),), Load(d, (i,)))))
    body = seq(*tile)
    for b in (acc, d, m, s):
        body = Allocate(b, body)
    if lo is not None:
        body = For(lo, info.L // R, body)
    if kt is not None:
        body = Allocate(kt, seq(out_pack, body))
    if f is not None:
        work = nbatch * info.L * info.S * (info.E + info.Ev)
        body = For(f, nbatch, body, "parallel" if work >= knobs["min_parallel_work"] * 64 else "serial")
    return body, packed


def _self_load(expr, name: str) -> Load:
    """The load of the accumulator `name` in a reduction's update."""
    found = [n for n in walk(expr) if isinstance(n, Load) and n.buffer.name == name]
    if len(found) != 1:
        raise ScheduleError(f"the update of '{name}' reads it {len(found)} times")
    return found[0]


def _other_operand(expr, acc: Load):
    if isinstance(expr, Binary) and expr.op == "add":
        if expr.a == acc:
            return expr.b
        if expr.b == acc:
            return expr.a
    return None


def _k_factor(term, j: Var, row_vars: set):
    """The factor of the score product that depends on the key (j) but not on the query row."""
    if not (isinstance(term, Binary) and term.op == "mul"):
        return None
    for x in (term.a, term.b):
        free = {n for n in walk(x) if isinstance(n, Var)}
        if j in free and not (free & row_vars) and not any(isinstance(n, Load) and n.buffer.scope == "local"
                                                           for n in walk(x)):
            return x
    return None


# -- the template ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Info:
    attention: _Attention
    score_stage: bool  # a separate P_score nest, inlined first


def _analyze(kernel: Kernel, target) -> _Info:
    from tessel.schedules.location import compute_inline

    try:
        return _Info(find_attention(kernel), False)
    except ScheduleError as first:
        prefixes = [b.name[:-6] for b in _top(kernel)[0] if b.name.endswith("_score")]
        for p in prefixes:
            try:
                inlined, _ = compute_inline(kernel, f"{p}_score")
                return _Info(find_attention(inlined), True)
            except ScheduleError:
                continue
        raise first


def _default_rows(L: int) -> int:
    return max(r for r in range(1, min(L, 8) + 1) if L % r == 0)


def _defaults(kernel, target, info: _Info) -> dict:
    return {"tile_rows": _default_rows(info.attention.L), "vector_lanes": host_vector().lanes(info.attention.dtype)}


@constraint(("tile_rows",), "divisibility")
def _rows_divide(ctx):
    L = ctx.info.attention.L
    return None if L % ctx["tile_rows"] == 0 else f"does not divide the {L} query rows"


def _replace(kernel: Kernel, info: _Attention, stmt) -> Kernel:
    import dataclasses

    allocs, items = _top(kernel)
    names = {f"{info.prefix}_{x}" for x in _PARTS}
    dead = {f"{info.prefix}_{x}" for x in ("qk", "max", "exp")}
    out, placed = [], False
    for st in items:
        w = _written(st)
        if isinstance(st, For) and len(w) == 1 and w <= names:
            if not placed:
                out.append(stmt)
                placed = True
            continue
        out.append(st)
    body = seq(*out)
    for b in reversed(allocs):
        if b.name not in dead:
            body = Allocate(b, body)
    return dataclasses.replace(kernel, body=body)


def _schedule(sch, knobs: dict, ctx) -> None:
    from tessel.schedules.generic import schedule_rest

    info = ctx.info.attention
    if ctx.info.score_stage:
        sch.compute_inline(f"{info.prefix}_score")
    stmt, packed = fused_nest(sch.kernel, info, knobs)
    if knobs["pack"] and not packed:
        ctx.fallback("unpacked", f"{info.prefix}_qk", "the score product has no factor of the key alone")
    sch.kernel = _replace(sch.kernel, info, stmt)
    schedule_rest(sch, ctx, {"vector_lanes": knobs["vector_lanes"], "min_parallel_work": knobs["min_parallel_work"]})


CPU_ATTENTION = register(Template(
    "cpu.attention",
    [IntRange("tile_rows", 1, 16, default=4, doc="query rows computed together (register tile of scores and output)"),
     Pow2("vector_lanes", 4, 32, default=16, doc="lanes of the vectorized key and value-column loops"),
     Bool("pack", default=True, doc="copy the keys transposed into a local buffer once per batch and head"),
     Choice("min_parallel_work", (4096, 0, 256, 1024, 16384, 65536),
            doc="multiply-adds / 64 below which the batch-head loop runs on one thread (other stages: as in "
                "cpu.generic)")],
    _schedule,
    analyze=_analyze,
    defaults=_defaults,
    constraints=[_rows_divide],
    fallbacks={
        "unpacked": "the keys (or a remaining contraction's column panel) are read in place when they cannot be "
                    "packed (no factor of the key alone; region not affine)",
        "naive_stage": "a remaining stage whose default strategy raises ScheduleError keeps its naive loop nest",
        "serial": "a loop of a remaining stage that cannot be vectorized or unrolled stays serial",
    },
    targets=("cpu",),
    doc="Fused CPU attention: the sdpa nests as one loop over batch and head, row tiles of scores in registers."))
