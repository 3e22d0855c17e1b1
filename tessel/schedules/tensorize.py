"""Tensor cores: distribute a register tile over a warp's lanes (`fragment`) and replace a
multiply-accumulate nest by `mma.sync` (`tensorize`).

`fragment(buffer, layout)`: `buffer` is a local tile (rows x cols, multiples of the layout's
16 x 8) that every thread so far holds whole. Each nest that touches it must run over one
16 x 8 sub-tile with two directly nested loops of extents 16 and 8 whose variables index the
tile's rows and columns (`T[R + ii, C + jj]`, R and C multiples of 16 and 8): those two loops
become a loop over the 32 lanes of a warp (bound to threadIdx.x) and a loop over the lane's
elements, following the layout (`m16n8k16.acc`: lane l, element e hold row l/4 + 8(e/2),
column 2(l%4) + e%2). The buffer becomes (rows/16, cols/8, elements) and each thread keeps only
its own elements: the same numbers, 32 times less storage, and the accumulator layout mma wants.

`tensorize(loop, intrinsic)`: `loop` is the element loop of a distributed multiply-accumulate
(what `fragment` leaves of `for ii, jj, kk: T[..] += cast(A[..]) * cast(B[..])`), i.e.

    for lane (threadIdx.x, 32): for e in 4: for kk in 16:
        T[p, q, e] = T[p, q, e] + float32(X[...]) * float32(Y[...])

The operands' index expressions are matched by evaluating them over all lanes, elements and kk
(so padded or swizzled layouts match too): one operand must read A[m, k] and the other B[k, n] of
a 16x16x16 product through some address function. The nest becomes fragment loads (ldmatrix
from shared memory where rows are contiguous and 16-byte aligned — x4 for A, x2 for B, .trans
when the operand is stored the other way round — else one load per element) and one mma.sync.
The replacement is then proved: both versions run in the interpreter on random data for one
warp, with the enclosing loop variables at sampled values, and must agree.

Example:
    >>> from tessel.ir.intrinsics import ACC
    >>> ACC.coords(0, 3)
    (8, 1)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tessel.errors import ScheduleError, TesselError
from tessel.ir.dtypes import bits, is_int
from tessel.ir.intrinsics import ACC, A_LAYOUT, B_LAYOUT, FragmentLayout, ldmatrix_name, lookup
from tessel.ir.intrinsics.mma import layout as layout_by_name
from tessel.ir.nodes import (
    Allocate, Binary, Buffer, BufferRef, Cast, Const, Expr, For, Intrinsic, Kernel, Load, Stmt, Store, Var, rewrite,
    seq, substitute, walk,
)
from tessel.schedules.gpu import redundancy_problems, with_launch
from tessel.schedules.nest import (
    const_extent, find_buffer, find_loop, fresh_name, is_data_parallel, loop_path, replace_loop, used_names,
)
from tessel.schedules.region import affine_form
from tessel.schedules.tensorize_proof import prove_same

# ---------------------------------------------------------------------------------------------
# Small expression tools
# ---------------------------------------------------------------------------------------------


def np_eval(e: Expr, env: dict):
    """An integer index expression evaluated with numpy (env: Var -> int or int array)."""
    if isinstance(e, Const):
        return np.int64(e.value)
    if isinstance(e, Var):
        if e not in env:
            raise ScheduleError(f"cannot evaluate {e.name}: not bound")
        return env[e]
    if isinstance(e, Cast) and is_int(e.dtype):
        return np_eval(e.value, env)
    if isinstance(e, Binary):
        a, b = np_eval(e.a, env), np_eval(e.b, env)
        ops = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "floordiv": np.floor_divide,
               "floormod": np.mod, "min": np.minimum, "max": np.maximum}
        if e.op in ops:
            return ops[e.op](a, b)
    raise ScheduleError(f"cannot evaluate the index expression {e}")


def exact_div(e: Expr, d: int) -> Expr | None:
    """`e / d` when e is an affine expression whose coefficients and constant d divides."""
    vars_ = {x for x in walk(e) if isinstance(x, Var)}
    form = affine_form(e, vars_)
    if form is None:
        return None
    coeffs, rest = form
    if not isinstance(rest, Const) or rest.value % d or any(c % d for c in coeffs.values()):
        return None
    out: Expr = Const(rest.value // d)
    for v in sorted(coeffs, key=lambda x: x.name):
        c = coeffs[v] // d
        term = v if c == 1 else Binary("mul", v, Const(c))
        out = term if isinstance(out, Const) and out.value == 0 else Binary("add", out, term)
    return out


# ---------------------------------------------------------------------------------------------
# fragment
# ---------------------------------------------------------------------------------------------


def fragment(kernel: Kernel, buffer: str, layout: str) -> tuple[Kernel, list[str]]:
    """Distribute local tile `buffer` over a warp's lanes in fragment `layout`; returns the names
    of the new lane and element loops, (lane, element) per nest in program order."""
    try:
        lay = layout_by_name(layout)
    except TesselError as e:
        raise ScheduleError(f"fragment '{buffer}': {e}") from None
    if lay is not ACC:
        raise ScheduleError(f"fragment '{buffer}': only the accumulator layout '{ACC.name}' can hold a tile "
                            f"(got {layout!r}); operand fragments are made by tensorize")
    if any(p.name == buffer for p in kernel.params):
        raise ScheduleError(f"fragment: '{buffer}' is a kernel parameter; only local tiles can be distributed")
    old = find_buffer(kernel, buffer)
    if old.scope != "local" or old.ndim < 2 or old.shape[-2] % lay.rows or old.shape[-1] % lay.cols:
        raise ScheduleError(f"fragment '{buffer}': needs a local tile whose last two dimensions are multiples of "
                            f"{lay.rows} and {lay.cols}; it is {old.scope} {list(old.shape)}")
    new = Buffer(old.name, old.shape[:-2] + (old.shape[-2] // lay.rows, old.shape[-1] // lay.cols, lay.elems),
                 old.dtype, "local")
    for n in walk(kernel.body):
        if isinstance(n, Intrinsic) and any(isinstance(a, BufferRef) and a.buffer.name == buffer for a in n.args):
            raise ScheduleError(f"fragment '{buffer}': intrinsic '{n.name}' already uses it")
        if isinstance(n, For) and n.kind == "threadIdx.x" and _touches(n, buffer):
            raise ScheduleError(f"fragment '{buffer}': loop '{n.var.name}' around an access is already bound to "
                                f"threadIdx.x")
    taken = used_names(kernel)
    names: list[str] = []
    nests = _tile_nests(kernel, buffer, lay)

    def fn(n):
        if isinstance(n, For) and n in nests:
            return _distribute(n, old, new, lay, taken, names)
        if isinstance(n, Allocate) and n.buffer.name == buffer:
            return Allocate(new, n.body)
        return None

    out = rewrite(kernel, fn, fixpoint=False)
    left = [n for n in walk(out.body) if isinstance(n, (Load, Store)) and n.buffer.name == buffer
            and n.buffer.shape != new.shape]
    if left:
        raise ScheduleError(f"fragment '{buffer}': the access {left[0]} is not inside a 16 x 8 sub-tile nest "
                            f"(split the loops over the tile by {lay.rows} and {lay.cols} first)")
    out = with_launch(out)
    problems = redundancy_problems(out)
    if problems:
        raise ScheduleError(f"fragment '{buffer}': " + "; ".join(problems[:3]))
    return out, names


def _touches(node, buffer: str) -> bool:
    return any(isinstance(n, (Load, Store)) and n.buffer.name == buffer for n in walk(node))


def _tile_nests(kernel: Kernel, buffer: str, lay: FragmentLayout) -> set:
    """The loops `ii` (extent rows) whose body is a loop `jj` (extent cols) such that every access
    of `buffer` below reads or writes T[R + ii, C + jj] with R, C multiples of the tile."""
    found = set()
    for n in walk(kernel.body):
        if not (isinstance(n, For) and isinstance(n.body, For) and _touches(n, buffer)):
            continue
        ii, jj = n, n.body
        if not (isinstance(ii.extent, Const) and ii.extent.value == lay.rows and isinstance(jj.extent, Const)
                and jj.extent.value == lay.cols):
            continue
        accesses = [a for a in walk(jj.body) if isinstance(a, (Load, Store)) and a.buffer.name == buffer]
        if all(_tile_index(a.indices, ii.var, jj.var, lay) is not None for a in accesses) and _parallel(ii, jj):
            found.add(ii)
    return found


def _parallel(ii: For, jj: For) -> bool:
    return is_data_parallel(ii)[0] and is_data_parallel(jj)[0]


def _tile_index(idx: tuple, ii: Var, jj: Var, lay: FragmentLayout):
    """(leading indices..., R / rows, C / cols) for an index (..., R + ii, C + jj), or None."""
    if len(idx) < 2 or any(isinstance(v, Var) and v in (ii, jj) for i in idx[:-2] for v in walk(i)):
        return None
    out = list(idx[:-2])
    for e, v, size in ((idx[-2], ii, lay.rows), (idx[-1], jj, lay.cols)):
        form = affine_form(e, {ii, jj})
        if form is None or form[0] != {v: 1}:
            return None
        q = exact_div(form[1], size)
        if q is None:
            return None
        out.append(q)
    return tuple(out)


def _distribute(ii: For, old: Buffer, new: Buffer, lay: FragmentLayout, taken: set, names: list) -> Stmt:
    jj = ii.body
    lane = Var(fresh_name(taken, f"{old.name}_lane"))
    e = Var(fresh_name(taken, f"{old.name}_e"))
    names += [lane.name, e.name]
    row, col = lay.coords_expr(lane, e)

    def fn(n):
        if isinstance(n, (Load, Store)) and n.buffer.name == old.name:
            tile = _tile_index(n.indices, ii.var, jj.var, lay)
            return dataclasses.replace(n, buffer=new, indices=tile + (e,))
        return None

    body = rewrite(jj.body, fn, fixpoint=False)
    body = substitute(body, {ii.var: row, jj.var: col})
    return For(lane, Const(32), For(e, Const(lay.elems), body, jj.kind), "threadIdx.x")


# ---------------------------------------------------------------------------------------------
# tensorize
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Operand:
    load: Load
    addr: object  # (m_or_k, k_or_n) exprs -> index tuple
    role: str  # "a" or "b"


def tensorize(kernel: Kernel, loop: str, intrinsic: str) -> tuple[Kernel, list[str]]:
    """Replace the distributed multiply-accumulate under element loop `loop` by `intrinsic`
    (an m16n8k16 mma.sync); returns the names of the operand fragment buffers."""
    try:
        entry = lookup(intrinsic)
    except TesselError as e:
        raise ScheduleError(f"tensorize '{loop}': {e}") from None
    if not intrinsic.startswith("mma.sync.aligned.m16n8k16"):
        raise ScheduleError(f"tensorize: no loop-nest pattern is known for intrinsic '{intrinsic}' "
                            f"(supported: the m16n8k16 mma.sync entries)")
    in_dtype = entry.operands[1].dtypes[0]
    e_loop = find_loop(kernel.body, loop)
    path = loop_path(kernel.body, loop)
    lanes = [lp for lp in path[:-1] if lp.kind == "threadIdx.x"]
    if not lanes or const_extent(lanes[-1]) != 32:
        raise ScheduleError(f"tensorize '{loop}': it must sit inside a loop over the 32 lanes of a warp bound to "
                            f"threadIdx.x (made by fragment)")
    lane = lanes[-1].var
    if (with_launch(kernel).launch.block[0]) != 32:
        raise ScheduleError(f"tensorize '{loop}': the block must have exactly 32 threads along threadIdx.x")
    store, k_loop = _match_mac(e_loop, loop)
    acc, x, y = store.buffer, *_operand_loads(store, in_dtype, loop)
    e, kk = e_loop.var, k_loop.var
    samples = _samples(path[:-1], lane)
    ops = []
    for load in (x, y):
        ops.append(_classify(load, lane, e, kk, samples))
    if {o.role for o in ops if o is not None} != {"a", "b"}:
        raise ScheduleError(f"tensorize '{loop}': the operands do not read A[m, k] and B[k, n] of a 16x8x16 "
                            f"product in the accumulator layout (loads {x} and {y})")
    a_op = next(o for o in ops if o.role == "a")
    b_op = next(o for o in ops if o.role == "b")
    prefix = store.indices[:-1]
    taken = used_names(kernel)
    fa = Buffer(fresh_name(taken, f"{a_op.load.buffer.name}_frag"), (8,), in_dtype, "local")
    fb = Buffer(fresh_name(taken, f"{b_op.load.buffer.name}_frag"), (4,), in_dtype, "local")
    load_a = _fragment_load(a_op, fa, A_LAYOUT, lane, samples, taken)
    load_b = _fragment_load(b_op, fb, B_LAYOUT, lane, samples, taken)
    ref_c = BufferRef(acc, prefix + (Const(0),))
    call = Intrinsic(intrinsic, (ref_c, BufferRef(fa, (Const(0),)), BufferRef(fb, (Const(0),)), ref_c))
    replacement = Allocate(fa, Allocate(fb, seq(load_a, load_b, call)))
    prove_same(kernel, path, e_loop, replacement, lane, samples)
    out = replace_loop(kernel, loop, lambda _: replacement)
    return with_launch(out), [fa.name, fb.name]


def _match_mac(e_loop: For, loop: str):
    k_loop = e_loop.body
    if not (isinstance(e_loop.extent, Const) and e_loop.extent.value == 4 and isinstance(k_loop, For)
            and isinstance(k_loop.extent, Const) and k_loop.extent.value == 16 and isinstance(k_loop.body, Store)):
        raise ScheduleError(f"tensorize '{loop}': expected `for e in 4: for k in 16: acc[.., e] += a * b` (the "
                            f"element loop left by fragment), found another nest")
    store = k_loop.body
    acc = store.buffer
    if acc.scope != "local" or acc.dtype != "float32" or store.indices[-1] != e_loop.var:
        raise ScheduleError(f"tensorize '{loop}': the accumulator must be a float32 local fragment indexed by the "
                            f"element loop last (got {acc.scope} {acc.dtype} '{acc.name}' at {store.indices})")
    if any(isinstance(v, Var) and v in (e_loop.var, k_loop.var) for i in store.indices[:-1] for v in walk(i)):
        raise ScheduleError(f"tensorize '{loop}': the accumulator's other indices depend on the nest's loops")
    return store, k_loop


def _operand_loads(store: Store, in_dtype: str, loop: str):
    val, me = store.value, Load(store.buffer, store.indices)
    if isinstance(val, Binary) and val.op == "add":
        prod = val.b if val.a == me else val.a if val.b == me else None
        if isinstance(prod, Binary) and prod.op == "mul":
            loads = []
            for f in (prod.a, prod.b):
                if isinstance(f, Cast) and f.dtype == "float32" and isinstance(f.value, Load) \
                        and f.value.buffer.dtype == in_dtype:
                    loads.append(f.value)
            if len(loads) == 2:
                return loads
    raise ScheduleError(f"tensorize '{loop}': the update {val} is not acc + float32({in_dtype} a) * "
                        f"float32({in_dtype} b)")


def _samples(outer: list[For], lane: Var) -> list[dict]:
    """Values of the enclosing loop variables to check index patterns at: all zeros, all maxima,
    and two random points (the lane variable excluded: it is what patterns run over)."""
    rng = np.random.default_rng(0)
    loops = [lp for lp in outer if lp.var != lane and isinstance(lp.extent, Const)]
    out = [{lp.var: 0 for lp in loops}, {lp.var: int(lp.extent.value) - 1 for lp in loops}]
    for _ in range(2):
        out.append({lp.var: int(rng.integers(0, int(lp.extent.value))) for lp in loops})
    return out


def _classify(load: Load, lane: Var, e: Var, kk: Var, samples: list[dict]) -> _Operand | None:
    """Whether `load` reads A[m, k] (m = the accumulator row) or B[k, n] (n = its column), and
    its address function."""
    ln = np.arange(32)[:, None, None]
    el = np.arange(4)[None, :, None]
    kv = np.arange(16)[None, None, :]
    m, n = ACC.coords(ln, el)
    for role in ("a", "b"):
        def addr(u, w, role=role):
            # u = m (A) or k (B); w = k (A) or n (B): pick lane / element / kk giving those
            if role == "a":
                sub = {lane: Binary("mul", Binary("floormod", u, Const(8)), Const(4)),
                       e: Binary("mul", Binary("floordiv", u, Const(8)), Const(2)), kk: w}
            else:
                sub = {lane: Binary("floordiv", w, Const(2)), e: Binary("floormod", w, Const(2)), kk: u}
            return tuple(substitute(i, sub) for i in load.indices)

        ok = True
        for env in samples:
            env = dict(env)
            env.update({lane: ln, e: el, kk: kv})
            got = [np.broadcast_to(np_eval(i, env), (32, 4, 16)) for i in load.indices]
            uu, ww = (np.broadcast_to(m, (32, 4, 16)), np.broadcast_to(kv, (32, 4, 16))) if role == "a" else \
                (np.broadcast_to(kv, (32, 4, 16)), np.broadcast_to(n, (32, 4, 16)))
            env2 = {k: v for k, v in env.items() if k not in (lane, e, kk)}
            uvar, wvar = Var("__u"), Var("__w")
            env2.update({uvar: uu, wvar: ww})
            want = [np.broadcast_to(np_eval(i, env2), (32, 4, 16)) for i in addr(uvar, wvar)]
            if not all(np.array_equal(g, w) for g, w in zip(got, want)):
                ok = False
                break
        if ok:
            return _Operand(load, addr, role)
    return None


def _fragment_load(op: _Operand, frag: Buffer, lay: FragmentLayout, lane: Var, samples, taken: set) -> Stmt:
    """Fill `frag` (this lane's elements of the operand in layout `lay`)."""
    src = op.load.buffer
    plan = _ldmatrix_plan(op, lay, lane, samples) if src.scope == "shared" and bits(src.dtype) == 16 else None
    if plan is not None:
        name, start = plan
        return Intrinsic(name, (BufferRef(frag, (Const(0),)), BufferRef(src, start)))
    i = Var(fresh_name(taken, f"{frag.name}_i"))
    r, c = lay.coords_expr(lane, i)
    return For(i, Const(lay.elems), Store(frag, (i,), Load(src, op.addr(r, c))), "unrolled")


def _ldmatrix_plan(op: _Operand, lay: FragmentLayout, lane: Var, samples):
    """(ldmatrix name, this lane's row address) when the operand's rows of 8 are contiguous and
    16-byte aligned in shared memory, else None. A (16x16): x4; B (16x8, k x n): x2."""
    num = 4 if lay is A_LAYOUT else 2
    l8, r8 = Binary("floordiv", lane, Const(8)), Binary("floormod", lane, Const(8))
    # matrix j = lane / 8 covers rows (u0 + ..) and columns (w0 + ..) of the logical tile
    if lay is A_LAYOUT:  # logical (m, k); matrices j: (m0, k0) = (8 (j % 2), 8 (j / 2))
        u0 = Binary("mul", Binary("floormod", l8, Const(2)), Const(8))
        w0 = Binary("mul", Binary("floordiv", l8, Const(2)), Const(8))
    else:  # logical (k, n); matrices j (lanes 0-15): k0 = 8 (j % 2), n0 = 0
        u0 = Binary("mul", Binary("floormod", l8, Const(2)), Const(8))
        w0 = Const(0)
    for trans in (False, True):
        # without .trans a matrix row is 8 consecutive columns of the logical tile; with .trans,
        # 8 consecutive rows (the operand is stored the other way round)
        if lay is A_LAYOUT:
            row_u, row_w = (Binary("add", u0, r8), w0) if not trans else (u0, Binary("add", w0, r8))
        else:
            row_u, row_w = (Binary("add", u0, r8), w0) if trans else (u0, Binary("add", Const(0), r8))
        start = op.addr(row_u, row_w)
        if _rows_contiguous(op, start, lane, samples, along_w=(not trans) if lay is A_LAYOUT else trans,
                            lay=lay, row_u=row_u, row_w=row_w):
            return ldmatrix_name(num, trans), start
    return None


def _rows_contiguous(op: _Operand, start, lane: Var, samples, along_w: bool, lay, row_u, row_w) -> bool:
    """Every lane's 8 logical elements (along w, or along u) sit at start + 0..7 of the last
    dimension, and start is 16-byte aligned in the buffer (at every sample)."""
    buf = op.load.buffer
    ln = np.arange(32)
    j = Var("__j")
    u = Binary("add", row_u, j) if not along_w else row_u
    w = Binary("add", row_w, j) if along_w else row_w
    elems = op.addr(u, w)
    jv = np.arange(8)[None, :]
    strides = np.cumprod((buf.shape[1:] + (1,))[::-1])[::-1]
    for env in samples:
        env = dict(env)
        env[lane] = ln[:, None]
        env[j] = jv
        got = [np.broadcast_to(np_eval(i, env), (32, 8)) for i in elems]
        base = [np.broadcast_to(np_eval(i, env), (32, 8)) for i in start]
        if any(not np.array_equal(g, b) for g, b in zip(got[:-1], base[:-1])):
            return False
        if not np.array_equal(got[-1], base[-1] + jv):
            return False
        flat = sum(b[:, 0] * s for b, s in zip(base, strides))
        if np.any(flat % 8) or buf.shape[-1] % 8 or np.any(base[-1][:, 0] + 8 > buf.shape[-1]):
            return False
    return True


__all__ = ["exact_div", "fragment", "np_eval", "tensorize"]
