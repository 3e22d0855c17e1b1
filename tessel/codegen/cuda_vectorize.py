"""Vectorized loops as whole-vector loads and stores, for the CUDA printer.

A loop of kind "vectorized" (extent V) whose body stores `f(loads)` contiguously becomes: one vector
load per contiguous input into a register array, an unrolled loop computing the V results into a
register array, one vector store. GPUs move memory fastest in 16-byte transactions per thread;
nvcc merges neighbouring scalar accesses only when it can prove their alignment, which it rarely
can through our index arithmetic, so the printer proves it instead:

- an access is *contiguous* when its flat index is `rest + v` (v the loop variable) and *aligned*
  when `rest` is a known multiple of V (`affine` and `known_multiple` below; `(x * V + v) // c`
  and `% c` with c a multiple of V stay analysable, which is what fusing and splitting leave);
- loads that do not depend on v stay scalar (broadcasts), and so do accesses to `local` buffers
  (register arrays, indexed by constants once the loop is unrolled; a vector copy would take
  their address and could push them to memory); any other v-dependent access, a load under a
  Select branch (it may be out of bounds when not chosen), a loop, barrier, intrinsic or
  allocation in the body, or a global / shared buffer both loaded and stored, keeps the plain
  unrolled loop;
- a guard `if cond` around the stores (left by splits that do not divide) runs the vector path
  when cond holds for every lane and the guarded scalar loop otherwise; cond is checked at the
  two ends when it is monotone in v (a comparison of affine sides), else at every lane.

Vector accesses to kernel parameters also need the base pointer aligned; `vectorize_loop`
reports the alignment each parameter needs and the runtime checks it (a misaligned call runs a
variant printed without vector accesses).

Example:
    >>> from tessel.ir.nodes import Buffer, For, Store, Var
    >>> A, B, v, i = Buffer("A", (64,)), Buffer("B", (64,)), Var("v"), Var("i")
    >>> loop = For(v, 4, Store(B, (i * 4 + v,), A[i * 4 + v] * 2.0), "vectorized")
    >>> out = vectorize_loop(loop, {"A", "B"})
    >>> sorted(out.alignment.items())
    [('A', 16), ('B', 16)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tessel.ir.dtypes import bits
from tessel.ir.nodes import (
    Allocate, Binary, Buffer, Const, Expr, For, IfThenElse, Load, Select, Seq, Stmt, Store, Var, seq, substitute,
    walk,
)

_MAX_LANES = 64


@dataclass(frozen=True, eq=False)
class VecCopy(Stmt):
    """Printer-internal statement: copy `local` (a register array of `lanes` elements) from
    `buffer` at flat element offset `offset` (`store=False`), or into it (`store=True`)."""

    local: Buffer
    buffer: Buffer
    offset: Expr
    store: bool = False

    @property
    def lanes(self) -> int:
        return self.local.size


@dataclass(frozen=True)
class Vectorized:
    """The statement replacing a vectorized loop and the pointer alignment (bytes) each
    parameter buffer needs for it."""

    stmt: Stmt
    alignment: dict


def vector_bytes_ok(nbytes: int) -> bool:
    """Whether `nbytes` can be moved as one 2/4/8-byte chunk or as whole 16-byte chunks."""
    return nbytes in (2, 4, 8) or (nbytes > 0 and nbytes % 16 == 0)


def _mentions(e, v: Var) -> bool:
    return any(n == v for n in walk(e) if isinstance(n, Var))


def _const(value: int, like: Expr) -> Const:
    return Const(value, like.dtype)


def _add(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and a.value == 0:
        return b
    return Binary("add", a, b)


def _mul(a: Expr, c: int) -> Expr:
    if isinstance(a, Const):
        return Const(a.value * c, a.dtype)
    return a if c == 1 else Binary("mul", a, Const(c, a.dtype))


def affine(e: Expr, v: Var, lanes: int):
    """`(coef, rest)` with `e == coef * v + rest` for every v in [0, lanes), or None.

    >>> i, v = Var("i"), Var("v")
    >>> c, r = affine((i * 4 + v) % 64, v, 4); c, str(r)
    (1, '((i * 4) % 64)')
    """
    if not _mentions(e, v):
        return 0, e
    if e == v:
        return 1, _const(0, e)
    if not isinstance(e, Binary):
        return None
    if e.op in ("add", "sub"):
        a, b = affine(e.a, v, lanes), affine(e.b, v, lanes)
        if a is None or b is None:
            return None
        if e.op == "add":
            return a[0] + b[0], _add(a[1], b[1])
        rest = a[1] if isinstance(b[1], Const) and b[1].value == 0 else Binary("sub", a[1], b[1])
        return a[0] - b[0], rest
    if e.op == "mul":
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if isinstance(y, Const):
                inner = affine(x, v, lanes)
                return None if inner is None else (inner[0] * int(y.value), _mul(inner[1], int(y.value)))
        return None
    if e.op in ("floordiv", "floormod") and isinstance(e.b, Const) and e.b.value > 0:
        c = e.b.value
        inner = affine(e.a, v, lanes)
        # (rest + v) with rest a multiple of lanes and c a multiple of lanes: no multiple of c lies
        # strictly inside [rest, rest + lanes), so the quotient is rest // c for every lane.
        if inner is None or inner[0] != 1 or c % lanes or known_multiple(inner[1]) % lanes:
            return None
        if e.op == "floordiv":
            return 0, Binary("floordiv", inner[1], e.b)
        return 1, Binary("floormod", inner[1], e.b)
    return None


def known_multiple(e: Expr) -> int:
    """A number that `e` is always a multiple of (0: e is always zero).

    >>> i, j = Var("i"), Var("j")
    >>> known_multiple(i * 8 + j * 12), known_multiple((i * 8) % 12)
    (4, 4)
    """
    if isinstance(e, Const):
        return abs(int(e.value)) if not isinstance(e.value, float) else 1
    if isinstance(e, Binary):
        if e.op == "mul":
            return known_multiple(e.a) * known_multiple(e.b)
        if e.op in ("add", "sub"):
            return math.gcd(known_multiple(e.a), known_multiple(e.b))
        if e.op == "floormod" and isinstance(e.b, Const) and e.b.value > 0:
            return math.gcd(known_multiple(e.a), e.b.value)
        if e.op == "floordiv" and isinstance(e.b, Const) and e.b.value > 0:
            m = known_multiple(e.a)
            return m // e.b.value if m % e.b.value == 0 else 1
    if isinstance(e, Select):
        return math.gcd(known_multiple(e.t), known_multiple(e.f))
    return 1


def _flat(buf: Buffer, indices: tuple, v: Var, lanes: int):
    """`(coef, rest)` of the row-major flat index of `buf[indices]`, or None."""
    coef, rest, stride = 0, None, 1
    for idx, n in reversed(list(zip(indices, buf.shape))):
        a = affine(idx, v, lanes)
        if a is None:
            return None
        coef += a[0] * stride
        term = _mul(a[1], stride)
        rest = term if rest is None else _add(term, rest)
        stride *= n
    return coef, rest if rest is not None else Const(0)


def _all_lanes(cond: Expr, v: Var, lanes: int) -> Expr:
    """An expression true exactly when `cond` holds for every v in [0, lanes)."""
    if not _mentions(cond, v):
        return cond
    if isinstance(cond, Binary) and cond.op == "and":
        return Binary("and", _all_lanes(cond.a, v, lanes), _all_lanes(cond.b, v, lanes))
    points = range(lanes)
    if isinstance(cond, Binary) and cond.op in ("lt", "le", "gt", "ge"):
        if affine(cond.a, v, lanes) is not None and affine(cond.b, v, lanes) is not None:
            points = (0, lanes - 1)  # monotone in v: the two ends decide
    out = None
    for k in points:
        c = substitute(cond, {v: Const(k, v.dtype)})
        out = c if out is None else Binary("and", out, c)
    return out


def _stores(body: Stmt):
    items = body.stmts if isinstance(body, Seq) else (body,)
    return list(items) if all(isinstance(s, Store) for s in items) else None


def _collect_loads(e: Expr, out: list) -> None:
    """Append `(load, under_select)` for every load of `e`: whether it sits in a Select branch
    (where it may be out of bounds when the branch is not chosen)."""
    stack = [(e, False)]
    while stack:
        n, under = stack.pop()
        if isinstance(n, Load):
            out.append((n, under))
            for i in n.indices:
                stack.append((i, under))
        elif isinstance(n, Select):
            stack.append((n.cond, under))
            stack.append((n.t, True))
            stack.append((n.f, True))
        else:
            stack.extend((c, under) for c in n.children())


def vectorize_loop(loop: For, params: set, taken: set | None = None) -> Vectorized | None:
    """The vector form of a vectorized loop, or None when it does not apply (see the module
    docstring). `params` names the kernel's parameter buffers (their base pointers need a
    runtime alignment check); `taken` holds names already used (new register arrays avoid them)."""
    if not isinstance(loop.extent, Const):
        return None
    lanes, v = int(loop.extent.value), loop.var
    if not 2 <= lanes <= _MAX_LANES:
        return None
    body, guard = loop.body, None
    if isinstance(body, IfThenElse) and body.else_ is None:
        guard, body = body.cond, body.then
    stores = _stores(body)
    if not stores:
        return None
    taken = set(taken or ()) | {n.name for n in walk(loop) if isinstance(n, (Var, Buffer))}
    counter = [0]

    def fresh(base: str) -> str:
        while True:
            counter[0] += 1
            name = f"{base}_vec{counter[0]}"
            if name not in taken:
                taken.add(name)
                return name

    align: dict[str, int] = {}
    loads_in: dict[tuple, Buffer] = {}  # (buffer name, rest) -> register array
    copies_in, copies_out, new_stores, locals_ = [], [], [], []
    stored = {s.buffer.name for s in stores}
    if len(stored) != len(stores):
        return None

    def need(buf: Buffer) -> bool:
        nbytes = lanes * bits(buf.dtype) // 8
        if not vector_bytes_ok(nbytes):
            return False
        if buf.name in params:
            align[buf.name] = max(align.get(buf.name, 1), min(16, nbytes))
        return True

    for st in stores:
        in_registers = st.buffer.scope == "local"  # register arrays: indexed directly, no vector copies
        flat = _flat(st.buffer, st.indices, v, lanes)
        if flat is None or flat[0] != 1 or known_multiple(flat[1]) % lanes:
            return None
        if not in_registers and not need(st.buffer):
            return None
        found: list = []
        _collect_loads(st.value, found)
        mapping = {}
        for ld, under in found:
            if ld.buffer.scope == "local" or not _mentions(ld, v):
                if ld.buffer.name in stored and ld.buffer.scope != "local":
                    return None
                continue
            fl = _flat(ld.buffer, ld.indices, v, lanes)
            if under or fl is None or fl[0] != 1 or known_multiple(fl[1]) % lanes:
                return None
            if ld.buffer.name in stored or not need(ld.buffer):
                return None
            key = (ld.buffer.name, fl[1])
            reg = loads_in.get(key)
            if reg is None:
                reg = loads_in[key] = Buffer(fresh(ld.buffer.name), (lanes,), ld.buffer.dtype, "local")
                locals_.append(reg)
                copies_in.append(VecCopy(reg, ld.buffer, fl[1]))
            mapping[ld] = Load(reg, (v,))
        value = substitute(st.value, mapping) if mapping else st.value
        if in_registers:
            new_stores.append(Store(st.buffer, st.indices, value))
            continue
        out = Buffer(fresh(st.buffer.name), (lanes,), st.buffer.dtype, "local")
        locals_.append(out)
        new_stores.append(Store(out, (v,), value))
        copies_out.append(VecCopy(out, st.buffer, flat[1], store=True))
    if not copies_in and not copies_out:
        return None  # registers only: the unrolled loop is already the best form
    vec: Stmt = seq(*copies_in, For(v, loop.extent, seq(*new_stores), "unrolled"), *copies_out)
    for reg in reversed(locals_):
        vec = Allocate(reg, vec)
    if guard is not None:
        scalar = For(v, loop.extent, loop.body, "unrolled")
        vec = IfThenElse(_all_lanes(guard, v, lanes), vec, scalar)
    return Vectorized(vec, align)


def decide_vector_loops(kernel, enabled: bool = True):
    """The pipeline step "vector_access" (tessel.compiler.pipeline): every vectorized loop that
    `vectorize_loop` cannot turn into vector accesses becomes an unrolled scalar loop (what the
    printer would print for it anyway), so each vectorized loop left is printed as vector loads and
    stores. The decision is made here, on the IR; the printer still carries it out (VecCopy and the
    alignment checks belong to the printed code, not to the IR). `enabled=False` turns every
    vectorized loop into a scalar one.

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B, v, i = Buffer("A", (64,)), Buffer("B", (64,)), Var("v"), Var("i")
    >>> k = Kernel("k", (A, B), For(i, 16, For(v, 4, Store(B, (i * 4 + v,), A[i * 4 + v]), "vectorized")), "cuda")
    >>> decide_vector_loops(k).body.body.kind, decide_vector_loops(k, enabled=False).body.body.kind
    ('vectorized', 'unrolled')
    """
    import dataclasses

    from tessel.ir.nodes import rewrite

    params = {p.name for p in kernel.params}

    def decide(node):
        if isinstance(node, For) and node.kind == "vectorized":
            if enabled and vectorize_loop(node, params) is not None:
                return None
            return dataclasses.replace(node, kind="unrolled")
        return None

    body = rewrite(kernel.body, decide, fixpoint=False)
    return kernel if body is kernel.body else dataclasses.replace(kernel, body=body)


__all__ = ["VecCopy", "Vectorized", "affine", "decide_vector_loops", "known_multiple", "vector_bytes_ok",
           "vectorize_loop"]

