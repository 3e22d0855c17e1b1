"""Row reductions on the CPU: vector partial accumulators, then a horizontal combine.

A reduction stage `Y[s] = op(Y[s], e(s, r))` (op add, max or min; the DSL's guarded init) whose
innermost reduction variables run along the last, contiguous dims of every input they index (row
sums, layer-norm and softmax statistics, a global average pool over H x W of NCHW) is rebuilt as

    for s in spatial (fused; parallel when large):
      alloc acc[U * L] local
        acc[:] = identity                              (vectorized)
        for outer reduction loops (serial):
          for f0 in F // (U * L):  for u in U (unrolled):  for l in L (vectorized):
            acc[u*L + l] = op(acc[u*L + l], e(s, f0*U*L + u*L + l))
          the tail: whole vectors into acc[u*L : u*L + L], then one shorter vector into acc[0:rem]
        acc[0:L] = op(acc[0:L], acc[u*L : u*L + L]) for u = 1..U-1   (vectorized)
        acc[0:w] = op(acc[0:w], acc[w:2w]) for w = L/2, L/4, ..., 1  (a tree: the horizontal combine)
        Y[s] = acc[0]

where F is the product of the contiguous reduction extents (the flat index f is split back into
the reduction variables by div/mod, which TVM folds for contiguous rows), L the vector lanes and U
the number of independent accumulators (hiding the latency of the add: knob "reduce_accumulators").
Before it, the stage ran one scalar chain per output: a (16, 128, 8, 8) average pool took 31 us on
one AVX-512 core against a 3 us cache floor.

Floating point: a float sum is reassociated (L*U partial sums, combined as a tree). That is a
shorter rounding chain than the serial one, not a longer one: the error against float64 stays
within the serial sum's bound (tests/schedules/test_cpu_reduce.py checks it against numpy's float64).
max/min are exact in any order but for the sign of a zero result; a float max/min of loads steps by
two selects with the NaNs kept aside (`select_extreme`), so a NaN anywhere is the row's result.

Example:
    >>> import tessel as ts
    >>> x = ts.placeholder((4, 40), name="x"); k = ts.reduce_axis(40, name="k")
    >>> kern = ts.lower([x, ts.compute((4,), lambda i: ts.sum(x[i, k], axis=k), name="y")])
    >>> from tessel.schedules.generic import stages
    >>> new = row_reduce(kern, "y", dict(stages(kern))["y"], 1, lanes=16, accumulators=2, min_parallel_work=4096)
    >>> new is not None
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tessel.ir.dtypes import is_float
from tessel.ir.nodes import Allocate, Binary, Buffer, Const, For, Kernel, Load, Select, Seq, Stmt, Store, Var, \
    rewrite, seq, substitute, walk
from tessel.schedules.nest import fresh_name, init_guards, perfect_chain, unflatten_index, used_names

_OPS = ("add", "max", "min")


def _identity(op: str, dtype: str):
    if op == "add":
        return 0.0 if is_float(dtype) else 0
    if is_float(dtype):
        return -math.inf if op == "max" else math.inf
    return None  # (integer max/min: the init is the dtype's extreme, compared by value below)


def _is_identity(op: str, init: Const, dtype: str) -> bool:
    want = _identity(op, dtype)
    if want is None:
        return False
    return isinstance(init, Const) and init.value == want and (not isinstance(want, float) or want != 0.0
                                                                or math.copysign(1.0, init.value) > 0)


def _contiguous_suffix(e, red: list[For]) -> int:
    """How many of the innermost reduction loops run along the last dims of every load in `e` that
    reads a reduction variable (in order, over the whole dim); 0 when the innermost one does not."""
    rvars = [lp.var for lp in red]
    loads = [n for n in walk(e) if isinstance(n, Load) and any(v in rvars for idx in n.indices for v in walk(idx))]
    if not loads:
        return 0
    best = len(red)
    for ld in loads:
        k = 0
        while k < min(len(red), len(ld.indices)):
            lp = red[len(red) - 1 - k]
            dim = len(ld.indices) - 1 - k
            if not (ld.indices[dim] == lp.var and isinstance(ld.buffer.shape[dim], Const | int)
                    and int(_value(ld.buffer.shape[dim])) == int(lp.extent.value)):
                break
            k += 1
        if k == 0:
            return 0
        # the suffix variables must appear nowhere else in the load
        others = [v for idx in ld.indices[: len(ld.indices) - k] for v in walk(idx)]
        if any(lp.var in others for lp in red[len(red) - k:]):
            return 0
        best = min(best, k)
    return best


def _value(d):
    return d.value if isinstance(d, Const) else d


@dataclass(frozen=True)
class RowReduction:
    """A reduction stage `buf[spatial] = op(buf[spatial], e)` whose innermost reduction loops
    (`inner_red`, F iterations in all) run along contiguous rows (parse_row_reduction)."""

    buf: Buffer
    op: str
    e: object  # the reduced value, in the stage's loop variables
    chain: tuple  # the stage's perfect loop chain
    ndim: int  # spatial loops
    outer_red: tuple
    inner_red: tuple
    F: int

    def element(self, flat):
        """e with the contiguous reduction variables recovered from the flat row index `flat`."""
        ext = tuple(int(lp.extent.value) for lp in self.inner_red)
        return substitute(self.e, dict(zip((lp.var for lp in self.inner_red), unflatten_index(flat, ext))))


def parse_row_reduction(kernel: Kernel, name: str, nest: For, ndim: int) -> RowReduction | None:
    """The stage `nest` (storing `name`, `ndim` spatial loops) as a RowReduction, or None when it is
    not a guarded add/max/min reduction along contiguous rows."""
    chain = perfect_chain(nest)
    red = chain[ndim:]
    if not red or not all(isinstance(lp.extent, Const) for lp in chain):
        return None
    leaf = chain[-1].body
    guards = init_guards(nest)
    if len(guards) != 1 or not (isinstance(leaf, Seq) and leaf.stmts == guards[0]):
        return None
    guard, update = guards[0]
    buf = update.buffer
    spatial_vars = tuple(lp.var for lp in chain[:ndim])
    v = update.value
    if buf.name != name or tuple(update.indices) != spatial_vars or tuple(guard.then.indices) != spatial_vars:
        return None
    if not (isinstance(v, Binary) and v.op in _OPS and isinstance(v.a, Load) and v.a.buffer.name == name
            and tuple(v.a.indices) == spatial_vars):
        return None
    if not _is_identity(v.op, guard.then.value, buf.dtype):
        return None
    e = v.b
    if any(isinstance(n, Load) and n.buffer.name == name for n in walk(e)):
        return None
    k = _contiguous_suffix(e, red)
    if k == 0:
        return None
    F = 1
    for lp in red[len(red) - k:]:
        F *= int(lp.extent.value)
    return RowReduction(buf, v.op, e, tuple(chain), ndim, tuple(red[: len(red) - k]), tuple(red[len(red) - k:]), F)


def accumulators_for(r: RowReduction, lanes: int, accumulators: int) -> int:
    """How many vector accumulators: `accumulators`, 0 picks 4 (8 on rows of 64 vectors or more:
    64 rows of 100000, 30 -> 46 GB/s); never more than the row's whole vectors."""
    return max(1, min(accumulators or (8 if r.F >= 64 * lanes else 4), r.F // lanes))


def accumulate_row(r: RowReduction, lanes: int, U: int, fresh, out_idx: tuple, update=None) -> Stmt:
    """One output's reduction in U vector accumulators of `lanes` (module docstring), ending in the
    store of `r.buf[out_idx]`; the stage's spatial variables stay free. `fresh(base)` gives a new Var.
    `update(flat) -> (stmts, value)` may replace the plain `e` at flat row index `flat` (a caller
    that also stores the element); by default the value is `r.element(flat)`."""
    L, op, dtype = lanes, r.op, r.buf.dtype
    acc = Buffer(fresh(f"{r.buf.name}_vacc").name, (Const(U * L),), dtype, "local")
    float_sum = op == "add" and is_float(dtype)
    # a float sum's partials start at -0.0, which LLVM drops from the first add (x + -0.0 is x; x + 0.0
    # is not, for x = -0.0); the row's sum gets its +0.0 back once at the end (see below)
    ident = Const(-0.0 if float_sum else _identity(op, dtype), dtype)

    def vloop(width, body, kind="vectorized"):
        lv = fresh(f"{r.buf.name}_l")
        return For(lv, Const(width), body(lv), kind if width > 1 else "serial")

    def element(flat):
        return update(flat) if update is not None else ((), r.element(flat))

    # a float max/min of loads steps by select_extreme, its NaNs kept aside (the value has the same
    # form at every flat index, so the first one decides)
    nans = None
    if op in ("max", "min") and is_float(dtype) and isinstance(element(Const(0))[1], Load):
        nans = Buffer(fresh(f"{r.buf.name}_vnan").name, (Const(U * L),), dtype, "local")

    def update_at(slot, flat):
        pre, value = element(flat)
        if nans is not None:
            return seq(*pre, *select_extreme(op, acc, nans, slot, value))
        return seq(*pre, Store(acc, (slot,), Binary(op, Load(acc, (slot,)), value)))

    body = [vloop(U * L, lambda lv: Store(acc, (lv,), ident))]
    steps = []
    full = r.F // (U * L)
    if full:
        f0, u = fresh(f"{r.buf.name}_f"), fresh(f"{r.buf.name}_u")
        inner = vloop(L, lambda lv: update_at(u * L + lv, f0 * (U * L) + u * L + lv))
        steps.append(For(f0, Const(full), For(u, Const(U), inner, "unrolled" if U > 1 else "serial")))
    base, tail = full * U * L, r.F % (U * L)
    for t in range(tail // L):
        start = base + t * L
        steps.append(vloop(L, lambda lv, t=t, start=start: update_at(lv + t * L, lv + start)))
    if tail % L:
        start = base + (tail // L) * L
        steps.append(vloop(tail % L, lambda lv, start=start: update_at(lv, lv + start)))
    red_body = seq(*steps)
    for lp in reversed(r.outer_red):
        red_body = For(lp.var, lp.extent, red_body, "serial")
    body.append(red_body)

    def combine(lv, k):  # with nans: acc holds no NaN, so combine it by selects and the NaNs by adds
        a, b = Load(acc, (lv,)), Load(acc, (lv + k,))
        if nans is None:
            return Store(acc, (lv,), Binary(op, a, b))
        return seq(Store(acc, (lv,), Select(Binary("gt" if op == "max" else "lt", b, a), b, a)),
                   Store(nans, (lv,), Load(nans, (lv,)) + Load(nans, (lv + k,))))

    for u in range(1, U):
        body.append(vloop(L, lambda lv, u=u: combine(lv, u * L)))
    w = L // 2
    while w >= 1:
        body.append(vloop(w, lambda lv, w=w: combine(lv, w)))
        w //= 2
    result = Load(acc, (Const(0),))
    if nans is not None:  # nans[0] is 0 unless a NaN was seen (then it is NaN)
        nan0 = Load(nans, (Const(0),))
        result = Select(Binary("eq", nan0, Const(0.0, dtype)), result, nan0)
    if float_sum:  # the stage's own init +0.0, added through the buffer (TVM folds a literal 0.0 + x):
        # 0.0 + (-0.0) is the +0.0 an all -0.0 row sums to in the interpreter
        body.append(Store(r.buf, out_idx, Const(0.0, dtype)))
        result = Binary("add", Load(r.buf, out_idx), result)
    body.append(Store(r.buf, out_idx, result))
    if nans is not None:
        body.insert(1, vloop(U * L, lambda lv: Store(nans, (lv,), Const(0.0, dtype))))
    out = Allocate(acc, seq(*body))
    return Allocate(nans, out) if nans is not None else out


def select_extreme(op: str, acc: Buffer, nans: Buffer, slot, value: Load) -> tuple:
    """The float max (min) step `acc[slot] = op(acc[slot], value)` as two selects:
    - `acc = value > acc ? value : acc`, one vmaxps: numpy.maximum's result whenever no NaN is
      involved, but for the sign of a zero (which depends on a reduction's order in numpy too);
    - `nans = value <= acc ? nans : value`: the ordered compare fails only for a NaN value.
    acc never holds a NaN and nans only 0 or NaN, so the horizontal combine takes the max by selects
    and the NaNs by adds, and a NaN in the end is the result. A NaN-propagating max (llvm.maximum)
    costs six vector instructions on AVX-512 (signed-zero blends and a NaN fix-up): a 512 x 1000 row
    max ran at 0.72x onnxruntime."""
    a = Load(acc, (slot,))
    better, fine = ("gt", "le") if op == "max" else ("lt", "ge")
    # value <= the new acc holds for every value but NaN (an ordered compare): one compare and one
    # masked move, where an isnan test in TVM's VectorizeLoop goes lane by lane
    return (Store(acc, (slot,), Select(Binary(better, value, a), value, a)),
            Store(nans, (slot,), Select(Binary(fine, value, a), Load(nans, (slot,)), value)))


def fresh_vars(kernel: Kernel):
    """A function base -> a Var named apart from every name in `kernel` and from those it gave."""
    taken = used_names(kernel)

    def fresh(base):
        n = fresh_name(taken, base)
        taken.add(n)
        return Var(n)
    return fresh


def row_reduce(kernel: Kernel, name: str, nest: For, ndim: int, lanes: int, accumulators: int,
               min_parallel_work: int) -> Kernel | None:
    """`kernel` with the reduction stage `nest` (storing `name`, `ndim` spatial loops) rebuilt with
    vector accumulators (module docstring), or None when it is not a contiguous row reduction.
    `accumulators` 0 picks 4 (8 on rows of 64 vectors or more); never more than the row's whole vectors."""
    r = parse_row_reduction(kernel, name, nest, ndim)
    if r is None or r.F < lanes:
        return None  # a row shorter than a vector: the serial chain measured faster (4096 rows of 7: 1.3 vs 2.4 us)
    fresh = fresh_vars(kernel)
    spatial = r.chain[:ndim]
    # the spatial loops fused into one (its index split back by div/mod), parallel when large
    total = 1
    for lp in spatial:
        total *= int(lp.extent.value)
    s = fresh(f"{name}_s")
    sub = dict(zip((lp.var for lp in spatial), unflatten_index(s, tuple(int(lp.extent.value) for lp in spatial))))
    stmt = accumulate_row(r, lanes, accumulators_for(r, lanes, accumulators), fresh,
                          tuple(lp.var for lp in spatial))
    stmt = substitute(stmt, sub)
    if ndim == 0:
        new = stmt
    else:
        kind = "parallel" if total >= max(1, min_parallel_work // 16) and total > 1 else "serial"
        new = For(s, Const(total), stmt, kind)
    return rewrite(kernel, lambda m: new if isinstance(m, For) and m == nest else None, fixpoint=False)


__all__ = ["RowReduction", "accumulate_row", "accumulators_for", "fresh_vars", "parse_row_reduction", "row_reduce",
           "select_extreme"]
