"""Zero-padding copies on the CPU: whole input rows copied with vector loads, zeros only at the edges.

A padded convolution reads a zero-padded copy of its input, a stage
`P[n, c, i, j] = select(in bounds, x[n, c, i - top, j - left], 0)`. Vectorized as it stands, the
select's load is out of bounds at the edge lanes, so TVM emits it lane by lane: 16 channels at
34x34 took 4.5 us on one AVX-512 core, more than the depthwise convolution reading it. `pad_fill`
rebuilds such a stage as

    for nc in N*C (parallel when large):
      for r in rows of P:
        if 0 <= r - top < H:  P[nc, r, :left] = 0; P[nc, r, left:left+W] = x[nc, r - top, :] (whole
                              vectors and a vectorized remainder); P[nc, r, left+W:] = 0
        else:                 P[nc, r, :] = 0

Used by cpu.generic (and so cpu.conv) for every such stage; cpu.depthwise fills its own planes.

Example:
    >>> import tessel as ts
    >>> x = ts.placeholder((1, 2, 4, 4), name="x")
    >>> P = ts.compute((1, 2, 6, 6), lambda n, c, i, j: ts.where((i >= 1) & (i < 5) & (j >= 1) & (j < 5),
    ...                x[n, c, i - 1, j - 1], ts.const(0.0, "float32")), name="P")
    >>> k = ts.lower([x, P])
    >>> from tessel.schedules.generic import stages
    >>> new = pad_fill(k, "P", dict(stages(k))["P"], 16, 4096)
    >>> new is not None
    True
"""

from __future__ import annotations

from tessel.ir.nodes import Binary, Const, For, IfThenElse, Kernel, Load, Store, Var, rewrite, seq
from tessel.schedules.nest import fresh_name, perfect_chain, used_names


def pad_fill(kernel: Kernel, name: str, nest: For, lanes: int, min_parallel_work: int) -> Kernel | None:
    """`kernel` with the padding stage `nest` (storing `name`) rebuilt as row copies (module
    docstring), or None when `nest` is not such a stage."""
    from tessel.schedules.cpu_depthwise import _pieces, _shifted_read, _zero

    chain = perfect_chain(nest)
    if len(chain) != 4 or not isinstance(chain[-1].body, Store) or not all(isinstance(lp.extent, Const)
                                                                           for lp in chain):
        return None
    store = chain[-1].body
    ivars = [lp.var for lp in chain]
    if store.buffer.name != name or tuple(store.indices) != tuple(ivars):
        return None
    ext = [int(lp.extent.value) for lp in chain]
    found = _shifted_read(store.value, ivars, ext)
    if found is None:
        return None
    src, top, left = found
    N, C, hp, wp = ext
    H, W = int(src.shape[2]), int(src.shape[3])
    if (N, C) != tuple(int(d) for d in src.shape[:2]) or top < 0 or left < 0 or left >= wp:
        return None
    buf = store.buffer
    taken = used_names(kernel)

    def fresh(base):
        n = fresh_name(taken, base)
        taken.add(n)
        return Var(n)

    nc, r = fresh(f"{name}_nc"), fresh(f"{name}_r")
    n_e, c_e = (nc // C, nc % C) if N > 1 else (Const(0), nc)
    zero = _zero(buf.dtype)

    def vec(extent, body):
        out = []
        for start, width in _pieces(extent, lanes):
            v = fresh(f"{name}_v")
            out.append(For(v, Const(width), body(v + start if start else v), "vectorized" if width > 1 else "serial"))
        return seq(*out) if out else None

    iy = r - top
    inner = max(0, min(W, wp - left))
    right = wp - left - inner
    parts = [vec(left, lambda j: Store(buf, (n_e, c_e, r, j), zero)) if left else None,
             vec(inner, lambda j: Store(buf, (n_e, c_e, r, j + left), Load(src, (n_e, c_e, iy, j)))) if inner else None,
             vec(right, lambda j: Store(buf, (n_e, c_e, r, j + left + inner), zero)) if right else None]
    copy = seq(*[p for p in parts if p is not None])
    inside = Binary("and", Binary("ge", iy, Const(0)), Binary("lt", iy, Const(H)))
    body = For(r, Const(hp), IfThenElse(inside, copy, vec(wp, lambda j: Store(buf, (n_e, c_e, r, j), zero))))
    kind = "parallel" if N * C * hp * wp >= min_parallel_work else "serial"
    new = For(nc, Const(N * C), body, kind)
    return rewrite(kernel, lambda m: new if isinstance(m, For) and m == nest else None, fixpoint=False)
