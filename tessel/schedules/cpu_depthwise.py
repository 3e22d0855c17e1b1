"""Direct depthwise convolutions on the CPU: the template "cpu.depthwise".

A depthwise convolution (one filter per channel, `groups == channels`) lowers to
`acc[n, c, y, x] = sum_{ky, kx} P[n, c, y*sh + ky*dh, x*sw + kx*dw] * w[c, 0, ky, kx]` where P is
either a zero-padded copy of the input (a stage of the kernel) or, where the lowering inlined that
copy, a select of the input and 0. cpu.generic schedules it like any contraction; then the padded
copy runs through a per-lane select (its loads are out of bounds at the edges) and a stride-2
read is a lane-by-lane gather: MobileNet-like's depthwise convolutions ran at 21-73% of their
floor (16 channels at 32x32: 10.2 us, 4.5 of them in the pad copy).

This template builds the nest directly, NCHW, vectorized along the output row:

    for nc in N*C (parallel when the work is large):
      plane[Hp, Wp] (local) = the padded input plane: zero rows above/below, each input row copied
                               with whole vector loads/stores at column offset `pad_left`, zeros
                               only at the edge columns (no per-element select)
      for each tile of `tile_rows` output rows:
        acc[R, Wo] (registers) = 0
        for ky, kx:  w = weight(c, ky, kx)          (one broadcast)
          for r (unrolled): for x (vectors of `vector_lanes`): acc[r, x] += plane[.., x*sw + kx*dw] * w
        acc_out[n, c, rows, :] = acc                (the epilogue, e.g. bias + clip, fuses here)

With stride 2 along the row, the plane holds each padded row deinterleaved (even columns, then odd),
filled through tvm_strided.py's load pair + shuffle once per input vector, so every tap reads one
contiguous vector (MobileNet-like's 32 ch 32x32 -> 16x16: 7.05 -> 5.14 us; 64 ch 16x16 -> 8x8: 3.66 ->
2.91 us, one thread, thread CPU time). Knobs:
`tile_rows` (divides the output height), `vector_lanes`, `min_parallel_work` (as cpu.generic).
Stages other than the depthwise one (the epilogue) are scheduled by cpu.generic's strategies.

Example:
    >>> import tessel as ts
    >>> from tessel.frontend.ops import get_op
    >>> x = ts.placeholder((1, 8, 16, 16), name="x"); w = ts.placeholder((8, 1, 3, 3), name="w")
    >>> (y,) = get_op("conv").lower([x, w], {"padding": (1, 1), "groups": 8}, [((1, 8, 16, 16), "float32")], ["y"])
    >>> sch = CPU_DEPTHWISE.apply(ts.lower([x, w, y]), None, "cpu")
    >>> sch.trace[0].args["name"], sch.trace[0].args["knobs"]["tile_rows"]
    ('cpu.depthwise', 16)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.nodes import (
    Allocate, Binary, Buffer, Cast, Const, For, IfThenElse, Kernel, Load, Select, Seq, Store, Var, rewrite, seq,
    substitute, walk,
)
from tessel.ir.verify_witness import evaluate
from tessel.schedules.cpu_host import host_vector
from tessel.schedules.nest import (
    fresh_name, init_guards, inits_at_first_iteration, loads_of, perfect_chain, used_names,
)
from tessel.schedules.template import Choice, IntRange, Pow2, Template, constraint, register

PLANE_BYTES = 60 * 1024  # plane="channel" keeps it on the stack (tvm_tir.STACK_LIMIT_BYTES is 64 KiB)
PLANE_SMALL = 1024  # elements: below this, planes are filled for all channels first (default knob)


@dataclass(frozen=True)
class _Depthwise:
    acc: str  # the accumulated buffer (N, C, Ho, Wo)
    src: Buffer  # the unpadded input (N, C, H, W)
    pad: str | None  # the padded copy's buffer, a stage of the kernel (None: read inline)
    shape: tuple  # N, C, Ho, Wo
    kernel: tuple  # kh, kw
    stride: tuple
    dilation: tuple
    pads: tuple  # top, left
    dtype: str  # of the plane (the input's)


def _top(kernel: Kernel):
    allocs, body = [], kernel.body
    while isinstance(body, Allocate):
        allocs.append(body.buffer)
        body = body.body
    return allocs, (list(body.stmts) if isinstance(body, Seq) else [body])


def _affine(e, vars_, rng) -> tuple | None:
    """(constant, {var: coefficient}) of an integer expression affine in `vars_` (others 0), checked
    at random points; None if it is not."""
    zero = {v: 0 for v in vars_}
    c0 = evaluate(e, zero)
    if c0 is None:
        return None
    coef = {}
    for v in vars_:
        val = evaluate(e, {**zero, v: 1})
        if val is None:
            return None
        coef[v] = val - c0
    for _ in range(8):
        pt = {v: rng.randrange(0, 7) for v in vars_}
        if evaluate(e, pt) != c0 + sum(coef[v] * pt[v] for v in vars_):
            return None
    return c0, coef


def _pad_source(kernel, items, name):
    """(source buffer, top, left) when `name` is a padded copy: a stage storing
    select(in-bounds, src[n, c, i - top, j - left], 0) at [n, c, i, j]."""
    for st in items:
        if not (isinstance(st, For) and {n.buffer.name for n in walk(st) if isinstance(n, Store)} == {name}):
            continue
        chain = perfect_chain(st)
        if len(chain) != 4 or not isinstance(chain[-1].body, Store):
            return None
        store = chain[-1].body
        ivars = [lp.var for lp in chain]
        if tuple(store.indices) != tuple(ivars):
            return None
        return _shifted_read(store.value, ivars, [int(lp.extent.value) for lp in chain])
    return None


def _shifted_read(value, ivars, extents):
    """(src, top, left) for `select(bounds, src[v0, v1, v2 - top, v3 - left], 0)` or a plain
    `src[v0, v1, v2, v3]` (top = left = 0), the select's condition being exactly the bounds test."""
    rng = random.Random(0)
    cond = None
    if isinstance(value, Select):
        if not (isinstance(value.f, Const) and value.f.value == 0 and isinstance(value.t, Load)):
            return None
        cond, value = value.cond, value.t
    if not isinstance(value, Load) or value.buffer.ndim != 4 or value.buffer.scope != "global":
        return None
    forms = [_affine(i, ivars, rng) for i in value.indices]
    if any(f is None for f in forms):
        return None
    for d in range(2):
        if forms[d] != (0, {v: int(v == ivars[d]) for v in ivars}):
            return None
    offs = []
    for d in (2, 3):
        c0, coef = forms[d]
        if coef != {v: int(v == ivars[d]) for v in ivars}:
            return None
        offs.append(-c0)
    src = value.buffer
    H, W = int(src.shape[2]), int(src.shape[3])
    # the condition is the bounds test of the shifted read: at random points, and along the middle
    # row and column of the source, every padded row and column (a bound off by one drops a column
    # that random points miss: fuzz case conv_pad_condition_not_checked)
    mid_i, mid_j = offs[0] + H // 2, offs[1] + W // 2
    points = [{v: rng.randrange(0, e) for v, e in zip(ivars, extents)} for _ in range(48)]
    if cond is not None and mid_i < extents[2] and mid_j < extents[3]:
        points += [{ivars[0]: 0, ivars[1]: 0, ivars[2]: mid_i, ivars[3]: j} for j in range(extents[3])]
        points += [{ivars[0]: 0, ivars[1]: 0, ivars[2]: i, ivars[3]: mid_j} for i in range(extents[2])]
    for pt in points:
        i, j = pt[ivars[2]] - offs[0], pt[ivars[3]] - offs[1]
        inside = 0 <= i < H and 0 <= j < W
        got = True if cond is None else evaluate(cond, pt)
        if got is None or bool(got) != inside:
            return None
    return src, offs[0], offs[1]


def find_depthwise(kernel: Kernel) -> _Depthwise:
    """The kernel's depthwise convolution stage; ScheduleError when it has none."""
    from tessel.schedules.generic import _in_dsl_form, stages

    allocs, items = _top(kernel)
    temps = {b.name: b for b in allocs}
    temps.update({p.name: p for p in kernel.params})
    for name, nest in stages(kernel):
        if name not in temps or temps[name].ndim != 4 or not init_guards(nest) or not _in_dsl_form(kernel, name, nest):
            continue
        chain = perfect_chain(nest)
        if len(chain) != 7:
            continue
        guard, update = init_guards(nest)[0]
        if not (isinstance(guard.then.value, Const) and guard.then.value.value == 0):
            continue
        val = update.value
        if not (isinstance(val, Binary) and val.op == "add" and isinstance(val.a, Load) and val.a.buffer.name == name
                and isinstance(val.b, Binary) and val.b.op == "mul"):
            continue
        spatial, red = chain[:4], chain[4:]
        if int(red[0].extent.value) != 1:
            continue  # one input channel per filter
        if not inits_at_first_iteration([(guard, update)], red):
            continue  # an init that is not at the first reduction step (`rc < 0`: never) is not a convolution's
        info = _match(kernel, items, name, temps[name], spatial, red, val.b)
        if info is not None:
            return info
    raise ScheduleError(f"kernel '{kernel.name}' holds no depthwise convolution (one input channel per output "
                        f"channel, NCHW, 2-D)")


def _strip(e):
    while isinstance(e, Cast):
        e = e.value
    return e


def _match(kernel, items, name, acc_buf, spatial, red, prod):
    rng = random.Random(1)
    n, c, y, x = (lp.var for lp in spatial)
    rc, ky, kx = (lp.var for lp in red)
    vars_ = [n, c, y, x, ky, kx]
    for v_side, w_side in ((prod.a, prod.b), (prod.b, prod.a)):
        inner = _strip(v_side)
        if any(isinstance(m, Load) and m.buffer.name == name for m in walk(w_side)):
            return None
        w_loads = [m for m in walk(w_side) if isinstance(m, Load)]
        if not w_loads or any(m.buffer.name == name or y in set(walk(m)) or x in set(walk(m)) for m in w_loads):
            continue
        if isinstance(inner, Load) and inner.buffer.name in {b.name for b in _top(kernel)[0]}:
            found = _pad_source(kernel, items, inner.buffer.name)
            if found is None:
                return None
            src, top, left = found
            if sum(1 for st in items if loads_of(st, inner.buffer.name)) != 1:
                return None  # the padded copy feeds other stages too: it stays
            pad, load, cond = inner.buffer.name, inner, None
            shift = (0, 0)
        else:
            cond = inner.cond if isinstance(inner, Select) else None
            load = inner.t if isinstance(inner, Select) else inner
            if not isinstance(load, Load) or load.buffer.name not in {p.name for p in kernel.params}:
                continue
            if isinstance(inner, Select) and not (isinstance(inner.f, Const) and inner.f.value == 0):
                continue
            src, pad, top, left, shift = load.buffer, None, 0, 0, None
        env0 = {rc: Const(0)}
        forms = [_affine(substitute(i, env0), vars_, rng) for i in load.indices]
        if len(forms) != 4 or any(f is None for f in forms):
            return None
        if forms[0] != (0, {v: int(v == n) for v in vars_}) or forms[1] != (0, {v: int(v == c) for v in vars_}):
            return None
        (c2, k2), (c3, k3) = forms[2], forms[3]
        if any(k2[v] for v in (n, c, x, kx)) or any(k3[v] for v in (n, c, y, ky)):
            return None
        sh, dh, sw, dw = k2[y], k2[ky], k3[x], k3[kx]
        if min(sh, dh, sw, dw) <= 0:
            return None
        if shift is None:  # read inline: the offsets are the padding, the select the bounds test
            top, left = -c2, -c3
            if cond is not None and not _is_bounds(cond, vars_, rc, spatial, red, load, src):
                return None
            if cond is None and (top or left):
                return None
        elif c2 or c3:
            return None
        N, C, Ho, Wo = (int(lp.extent.value) for lp in spatial)
        if tuple(int(s) for s in src.shape[:2]) != (N, C):
            return None
        if tuple(int(s) for s in acc_buf.shape) != (N, C, Ho, Wo):
            return None  # the nest covers part of its output (fuzz case depthwise_partial_output_nest)
        return _Depthwise(name, src, pad, (N, C, Ho, Wo), (int(red[1].extent.value), int(red[2].extent.value)),
                          (sh, sw), (dh, dw), (top, left), src.dtype)
    return None


def _is_bounds(cond, vars_, rc, spatial, red, load, src) -> bool:
    rng = random.Random(2)
    H, W = int(src.shape[2]), int(src.shape[3])
    loops = list(spatial) + list(red)
    for _ in range(64):
        pt = {lp.var: rng.randrange(0, int(lp.extent.value)) for lp in loops}
        i, j = evaluate(load.indices[2], pt), evaluate(load.indices[3], pt)
        got = evaluate(cond, pt)
        if i is None or j is None or got is None or bool(got) != (0 <= i < H and 0 <= j < W):
            return False
    return True


# -- the template --------------------------------------------------------------------------------


def _analyze(kernel: Kernel, target):
    from tessel.schedules import generic

    dw = find_depthwise(kernel)
    return dw, generic._analyze(kernel, target)


def _plane(dw: _Depthwise) -> tuple[int, int]:
    _, _, Ho, Wo = dw.shape
    return ((Ho - 1) * dw.stride[0] + (dw.kernel[0] - 1) * dw.dilation[0] + 1,
            (Wo - 1) * dw.stride[1] + (dw.kernel[1] - 1) * dw.dilation[1] + 1)


def _pieces(extent: int, lanes: int) -> list[tuple[int, int]]:
    """(start, width) of whole vectors of `lanes`, then the remainder."""
    out = [(s, lanes) for s in range(0, extent - extent % lanes, lanes)]
    if extent % lanes:
        out.append((extent - extent % lanes, extent % lanes))
    return out


def _defaults(kernel, target, info) -> dict:
    """Vectors as wide as the host's (a narrower power of two when the row is shorter), and as many
    rows (at most 16) as leave 6 registers free, the largest divisor of the output height."""
    dw, _ = info
    _, _, Ho, Wo = dw.shape
    hv = host_vector()
    lanes = hv.lanes(dw.dtype)
    while lanes > 4 and lanes // 2 >= Wo:
        lanes //= 2
    vecs = len(_pieces(Wo, lanes))
    budget = max(1, (hv.registers - 6) // vecs)
    rows = max(d for d in range(1, min(Ho, budget, 16) + 1) if Ho % d == 0)
    hp, wp = _plane(dw)
    small = hp * wp < PLANE_SMALL or hp * wp * 4 > PLANE_BYTES
    return {"tile_rows": rows, "vector_lanes": lanes, "plane": "all" if small else "channel"}


@constraint(("tile_rows",), "divisibility")
def _rows_divide(ctx):
    Ho = ctx.info[0].shape[2]
    return None if Ho % ctx["tile_rows"] == 0 else f"does not divide the output height {Ho}"


@constraint(("tile_rows", "vector_lanes"), "registers")
def _fits(ctx):
    Wo = ctx.info[0].shape[3]
    hv = host_vector()
    width = max(1, hv.lanes(ctx.info[0].dtype))
    used = ctx["tile_rows"] * sum(-(-w // width) for _, w in _pieces(Wo, ctx["vector_lanes"]))
    return None if used <= hv.registers - 2 else f"needs {used} vector registers, the host has {hv.registers}"


@constraint(("plane",), "stack")
def _plane_fits(ctx):
    hp, wp = _plane(ctx.info[0])
    if ctx["plane"] == "channel" and hp * wp * 4 > PLANE_BYTES:
        return f"a {hp}x{wp} plane on the stack is larger than {PLANE_BYTES} bytes"
    return None


def _schedule(sch, knobs: dict, ctx) -> None:
    from tessel.schedules import generic

    dw, _ = ctx.info
    sch.kernel = _build(sch.kernel, dw, knobs)
    # the epilogue (bias, clip) into the write-back, then the remaining stages as cpu.generic does
    info = generic._analyze(sch.kernel, ctx.target)
    nests = dict(generic.stages(sch.kernel))
    later = [s for s in info if s.name != dw.acc]
    nxt = next((s for s in later if s.kind != "other"), None)
    if nxt is not None and nxt.kind == "elementwise":
        from tessel.schedules.cpu_epilogue import fuse_epilogue

        new = fuse_epilogue(sch.kernel, dw.acc, nxt.name, nests[nxt.name], len(nxt.extents))
        if new is not None:
            sch.kernel = new
    generic.schedule_rest(sch, ctx, {k: knobs[k] for k in ("vector_lanes", "min_parallel_work")})


def _build(kernel: Kernel, dw: _Depthwise, knobs: dict) -> Kernel:
    from tessel.schedules.generic import stages

    allocs, items = _top(kernel)
    nests = dict(stages(kernel))
    conv = nests[dw.acc]
    chain = perfect_chain(conv)
    guard, update = init_guards(conv)[0]
    taken = used_names(kernel)

    def fresh(base):
        name = fresh_name(taken, base)
        taken.add(name)
        return name

    N, C, Ho, Wo = dw.shape
    kh, kw = dw.kernel
    (sh, sw), (dh, dwl) = dw.stride, dw.dilation
    top, left = dw.pads
    H, W = int(dw.src.shape[2]), int(dw.src.shape[3])
    hp, wp = _plane(dw)
    R, lanes = knobs["tile_rows"], knobs["vector_lanes"]
    acc_buf = next(b for b in list(allocs) + list(kernel.params) if b.name == dw.acc)
    per_channel = knobs["plane"] == "channel"
    # stride 2 along the row: the plane holds each padded row deinterleaved (even columns, then odd), so
    # every tap reads one contiguous vector (the stride-2 read cost a load pair + shuffle per tap)
    split = sw == 2 and dwl == 1
    wq = -(-wp // 2)
    pw = 2 * wq if split else wp
    plane = (Buffer(fresh(f"{dw.acc}_plane"), (1, hp, pw), dw.dtype, "local") if per_channel else
             Buffer(fresh(f"{dw.acc}_plane"), (N * C, hp, pw), dw.dtype, "global"))
    tile = Buffer(fresh(f"{dw.acc}_local"), (R, Wo), acc_buf.dtype, "local")
    nc, nc2, r, yo = Var(fresh("nc")), Var(fresh("nc")), Var(fresh("r")), Var(fresh("yo"))
    if per_channel:
        nc2 = nc
    p_fill, p_read = (Const(0), Const(0)) if per_channel else (nc2, nc)
    n2, c2 = (nc2 // C, nc2 % C) if N > 1 else (Const(0), nc2)
    n_e, c_e = (nc // C, nc % C) if N > 1 else (Const(0), nc)
    zero_p, zero_t = _zero(dw.dtype), _zero(acc_buf.dtype)

    def vec(extent, body, lanes_=lanes, kind="vectorized"):
        """Loops over [0, extent): whole vectors then a remainder, body(index expr) -> Stmt."""
        out = []
        for start, width in _pieces(extent, lanes_):
            v = Var(fresh("v"))
            out.append(For(v, Const(width), body(v + start if start else v), kind if width > 1 else "serial"))
        return seq(*out) if out else None

    # the padded plane: rows inside the input are copied whole, edges and outer rows are zero
    iy = r - top
    right = max(0, wp - left - W)
    inner_w = min(W, wp - left)
    copy = [vec(left, lambda j: Store(plane, (p_fill, r, j), zero_p)) if left else None,
            vec(inner_w, lambda j: Store(plane, (p_fill, r, j + left), Load(dw.src, (n2, c2, iy, j)))),
            vec(right, lambda j: Store(plane, (p_fill, r, j + left + inner_w), zero_p)) if right else None]
    if split:
        copy = []
        for t in (0, 1):  # padded column 2j + t -> plane column t * wq + j; input column 2j + t - left
            lo = max(0, -(-(left - t) // 2))
            hi = min(wq - 1, (left + W - 1 - t) // 2)
            base = t * wq
            copy.append(vec(lo, lambda j, base=base: Store(plane, (p_fill, r, j + base), zero_p)) if lo else None)
            if hi >= lo:
                copy.append(vec(hi - lo + 1, lambda j, t=t, lo=lo, base=base: Store(
                    plane, (p_fill, r, j + (base + lo)), Load(dw.src, (n2, c2, iy, j * 2 + (2 * lo + t - left))))))
            if wq - 1 - hi > 0:
                s0 = base + max(hi, lo - 1) + 1
                copy.append(vec(wq - 1 - max(hi, lo - 1), lambda j, s0=s0: Store(plane, (p_fill, r, j + s0), zero_p)))
    copy = seq(*[s for s in copy if s is not None])
    rows_in = Binary("and", Binary("ge", iy, Const(0)), Binary("lt", iy, Const(H)))
    fill = For(r, Const(hp), IfThenElse(rows_in, copy, vec(pw, lambda j: Store(plane, (p_fill, r, j), zero_p))))

    # the product with the plane read in place of the input
    spatial = [lp.var for lp in chain[:4]]
    rc, ky, kx = (lp.var for lp in chain[4:])
    prod = update.value.b
    rr, ry, rx = Var(fresh("ri")), Var(fresh("ky")), Var(fresh("kx"))

    def product(row_expr, col_expr):
        py = row_expr * sh + ry * dh
        px = (rx % 2) * wq + col_expr + rx // 2 if split else col_expr * sw + rx * dwl
        read = Load(plane, (p_read, py, px))
        new = rewrite(prod, lambda m: _replace_read(m, dw, read), fixpoint=False)
        env = {spatial[0]: n_e, spatial[1]: c_e, spatial[2]: row_expr, spatial[3]: col_expr, rc: Const(0),
               ky: ry, kx: rx}
        return substitute(new, env)

    ri0, ri2 = Var(fresh("ri")), Var(fresh("ri"))
    init = For(ri0, Const(R), vec(Wo, lambda j: Store(tile, (ri0, j), zero_t)), "unrolled")
    body = vec(Wo, lambda j: Store(tile, (rr, j), Binary("add", Load(tile, (rr, j)), product(yo * R + rr, j))))
    compute = For(ry, Const(kh), For(rx, Const(kw), For(rr, Const(R), body, "unrolled")))
    wb = For(ri2, Const(R), vec(Wo, lambda j: Store(acc_buf, (n_e, c_e, yo * R + ri2, j), Load(tile, (ri2, j)))),
             "unrolled")
    rows = For(yo, Const(Ho // R), Allocate(tile, seq(init, compute, wb)))
    work = N * C * Ho * Wo * kh * kw
    kind = "parallel" if work >= knobs["min_parallel_work"] * 64 else "serial"
    # plane="all": the planes of every channel are filled first: a small plane read right after its
    # stores waits on store-to-load forwarding (128 channels at 8x8: 7.1 us with one plane per channel,
    # 2.6 us with all filled first); plane="channel": one plane, filled and read per channel (stays in L1)
    if per_channel:
        nest = For(nc, Const(N * C), Allocate(plane, seq(fill, rows)), kind)
    else:
        nest = seq(For(nc2, Const(N * C), fill, kind), For(nc, Const(N * C), rows, kind))

    new_items = []
    for st in items:
        if st is conv or st == conv:
            new_items.append(nest)
        elif dw.pad is not None and dw.pad in {m.buffer.name for m in walk(st) if isinstance(m, Store)}:
            continue
        else:
            new_items.append(st)
    body_ = seq(*new_items) if per_channel else Allocate(plane, seq(*new_items))
    for b in reversed(allocs):
        if b.name != dw.pad:
            body_ = Allocate(b, body_)
    return Kernel(kernel.name, kernel.params, body_, kernel.target, kernel.launch)


def _zero(dtype: str) -> Const:
    return Const(0.0 if dtype.startswith(("float", "bfloat")) else 0, dtype)


def _replace_read(m, dw: _Depthwise, read: Load):
    """The input read of the product (the padded buffer's load, or the select of the input) -> `read`."""
    if dw.pad is not None and isinstance(m, Load) and m.buffer.name == dw.pad:
        return read
    if dw.pad is None:
        # the select is the bounds test (checked by the parse), and the plane holds its zeros; its
        # load may already be the plane read (rewrite goes to the leaves first)
        if isinstance(m, Select) and isinstance(m.t, Load) and m.t.buffer.name in (dw.src.name, read.buffer.name):
            return read
        if isinstance(m, Load) and m.buffer.name == dw.src.name:
            return read
    return None


def _relevant(kernel, target, info) -> list:
    return ["tile_rows", "vector_lanes", "plane", "min_parallel_work"]


CPU_DEPTHWISE = register(Template(
    "cpu.depthwise",
    [IntRange("tile_rows", 1, 16, default=4, doc="output rows accumulated in registers at once"),
     Pow2("vector_lanes", 4, 16, default=16, doc="lanes of the vectors along the output row"),
     Choice("plane", ("channel", "all"), doc="fill one padded plane per channel and read it at once, or "
            "the planes of all channels first"),
     Choice("min_parallel_work", (4096, 0, 256, 1024, 16384, 65536),
            doc="multiply-adds / 64 below which the channel loop runs on one thread")],
    _schedule,
    analyze=_analyze,
    defaults=_defaults,
    relevant=_relevant,
    constraints=[_rows_divide, _fits, _plane_fits],
    fallbacks={
        "naive_stage": "a stage whose strategy raises ScheduleError keeps its naive loop nest",
        "unpacked": "the column operand is read in place when its panel cannot be cached (region not affine)",
        "serial": "a loop that cannot be vectorized or unrolled (a guard from a non-divisible split) stays serial",
    },
    targets=("cpu",),
    doc="Direct depthwise convolution (NCHW): a padded plane per channel, row tiles in registers, "
        "vectors along the output row."))
