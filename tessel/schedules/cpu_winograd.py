"""Winograd F(2x2, 3x3) for stride-1 3x3 convolutions on the CPU: cpu.conv's `algorithm="winograd"`.

A direct 3x3 convolution spends 9 multiply-adds per input channel on each output pixel. Winograd's
minimal filtering algorithm computes a 2x2 block of outputs from a 4x4 block of the (padded) input
with 16 products per input channel instead of 36 (2.25x fewer):

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A       B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
                                                 G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
                                               A^T = [1 1 1 0; 0 1 -1 -1]

Summed over input channels, the elementwise product becomes 16 independent GEMMs, one per point p of
the 4x4 transformed tile: `M[p][t, f] = sum_c V[p][c, t] * U[p][c, f]` (t: the 2x2 output tiles).
`build` replaces the convolution's accumulation stage by these nests (the padding stage, the
transposed read of a channels-last result and the epilogue stay, and cpu.generic schedules them):

    U[p, c, f] = G g G^T     weights, vectorized along f (the weight as the conv reads it, FCK or CKF)
    for each block of `block_rows` tile rows of an image (parallel when the work is large):
      V[p, c, t] = B^T d B   vectorized along the tile's column (stride-2 loads: a load pair + shuffle)
      for p, f-panel, t-tile: acc[tile_rows, panel] (registers) += V[p, c, t] (broadcast) * U[p, c, f]
                             -> M[p, t, f]
      acc_out[n, .., y, x, ..] = A^T M A    vectorized along f, one output pixel per lane group

Numerics: each output is still a sum over C*9 products, rearranged; the transforms' coefficients are
0, +-1 and +-1/2 (exact in float32). F(2x2, 3x3) is the variant whose error stays near the direct
convolution's (F(4x4) amplifies it about 10x); the tests compare against float64.

The weight transform runs on every call (the weights are kernel inputs), so the template applies only
where the tiles outnumber it: cpu.conv prefers it when batch x tiles >= PREFER_TILES (see cpu_conv.py).

Example:
    >>> import tessel as ts
    >>> from tessel.frontend.ops import get_op
    >>> x = ts.placeholder((1, 16, 32, 32), name="x"); w = ts.placeholder((16, 16, 3, 3), name="w")
    >>> (y,) = get_op("conv").lower([x, w], {"padding": (1, 1)}, [((1, 16, 32, 32), "float32")], ["y"])
    >>> find(ts.lower([x, w, y])).shape
    (1, 16, 16, 32, 32)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.nodes import (
    Allocate, Binary, Buffer, Const, For, Kernel, Load, Seq, Stmt, Store, Var, seq, walk,
)
from tessel.schedules.nest import fresh_name, init_guards, perfect_chain, used_names

PREFER_TILES = 64  # batch x 2x2 output tiles from which compile() takes Winograd by default

# B^T rows as (index, sign) pairs; G rows as (index, coefficient); A^T rows as (index, sign)
_BT = (((0, 1), (2, -1)), ((1, 1), (2, 1)), ((2, 1), (1, -1)), ((1, 1), (3, -1)))
_G = (((0, 1.0),), ((0, 0.5), (1, 0.5), (2, 0.5)), ((0, 0.5), (1, -0.5), (2, 0.5)), ((2, 1.0),))
_AT = (((0, 1), (1, 1), (2, 1)), ((1, 1), (2, -1), (3, -1)))


@dataclass(frozen=True)
class Conv3x3:
    acc: str  # the accumulated buffer
    layout: str  # "nchw": acc[n, f, y, x]; "nhwc": acc[n, y, x, f]
    src: Buffer  # the (padded) input the conv reads at [n, c, y + ky, x + kx]
    weight: Buffer  # w[f, c, ky, kx] ("fck") or wt[c, ky, kx, f] ("ckf")
    wlayout: str
    shape: tuple  # N, C, F, H, W (output H, W)
    dtype: str


def _affine(e, vars_, rng):
    from tessel.schedules.cpu_depthwise import _affine as aff

    return aff(e, vars_, rng)


def find(kernel: Kernel) -> Conv3x3:
    """The kernel's stride-1, undilated 3x3 convolution stage (groups 1, even output size, float32),
    in either loop form of the conv lowering; ScheduleError when it has none."""
    from tessel.schedules.generic import _in_dsl_form, stages

    bufs = {n.buffer.name: n.buffer for n in walk(kernel) if hasattr(n, "buffer")}
    for name, nest in stages(kernel):
        if name not in bufs or bufs[name].ndim != 4 or not init_guards(nest) or not _in_dsl_form(kernel, name, nest):
            continue
        chain = perfect_chain(nest)
        if len(chain) != 7 or [int(lp.extent.value) for lp in chain[5:]] != [3, 3]:
            continue
        guard, update = init_guards(nest)[0]
        val = update.value
        if not (isinstance(guard.then.value, Const) and guard.then.value.value == 0 and isinstance(val, Binary)
                and val.op == "add" and isinstance(val.a, Load) and val.a.buffer.name == name
                and isinstance(val.b, Binary) and val.b.op == "mul"):
            continue
        found = _match(name, bufs[name], chain, val.b)
        if found is not None:
            return found
    raise ScheduleError(f"kernel '{kernel.name}' holds no stride-1 3x3 convolution with an even output size")


def _match(name, acc, chain, prod):
    rng = random.Random(3)
    a, b = prod.a, prod.b
    if not (isinstance(a, Load) and isinstance(b, Load)) or acc.dtype != "float32":
        return None
    sp = [lp.var for lp in chain[:4]]
    rc, ky, kx = (lp.var for lp in chain[4:])
    vars_ = sp + [rc, ky, kx]
    for layout, (n, f, y, x) in (("nchw", sp), ("nhwc", (sp[0], sp[3], sp[1], sp[2]))):
        want_src = [{n: 1}, {rc: 1}, {y: 1, ky: 1}, {x: 1, kx: 1}]
        for src, wl in ((a, b), (b, a)):
            if src.buffer.ndim != 4 or wl.buffer.ndim != 4 or src.dtype != "float32" or wl.dtype != "float32":
                continue
            fs = [_affine(i, vars_, rng) for i in src.indices]
            fw = [_affine(i, vars_, rng) for i in wl.indices]
            if any(v is None for v in fs + fw):
                continue
            if [(c0, {k: v for k, v in co.items() if v}) for c0, co in fs] != [(0, d) for d in want_src]:
                continue
            forms = [(c0, {k: v for k, v in co.items() if v}) for c0, co in fw]
            wlayout = {str([(0, {f: 1}), (0, {rc: 1}), (0, {ky: 1}), (0, {kx: 1})]): "fck",
                       str([(0, {rc: 1}), (0, {ky: 1}), (0, {kx: 1}), (0, {f: 1})]): "ckf"}.get(str(forms))
            if wlayout is None:
                continue
            ext = {lp.var: int(lp.extent.value) for lp in chain}
            N, F, H, W, C = ext[n], ext[f], ext[y], ext[x], ext[rc]
            if H % 2 or W % 2 or tuple(int(d) for d in src.buffer.shape[:2]) != (N, C):
                return None
            if int(src.buffer.shape[2]) < H + 2 or int(src.buffer.shape[3]) < W + 2:
                return None
            return Conv3x3(name, layout, src.buffer, wl.buffer, wlayout, (N, C, F, H, W), acc.dtype)
    return None


KNOBS = ("wino_rows", "wino_vecs", "wino_block", "wino_images", "wino_fuse")


def _block_rows(cv: Conv3x3, knobs: dict) -> int:
    """Tile rows per block: `wino_block`, or an image's all when a block holds several images."""
    return cv.shape[3] // 2 if knobs["wino_images"] > 1 else knobs["wino_block"]


def _gemm(cv: Conv3x3, knobs: dict) -> tuple[int, int]:
    """(rows, columns) of the per-point GEMMs of one block."""
    N, C, F, H, W = cv.shape
    tiles = knobs["wino_images"] * _block_rows(cv, knobs) * (W // 2)
    return (tiles, F) if cv.layout == "nhwc" else (F, tiles)


def check(cv: Conv3x3, knobs: dict, lanes: int, registers: int) -> str | None:
    """Why `knobs` cannot compute `cv` (None if they can): the block must divide the tile rows and
    the batch, the register tile the block's GEMMs, and the tile must fit the vector registers."""
    N, C, F, H, W = cv.shape
    R, FV, BR, NI = (knobs[k] for k in KNOBS[:4])
    if N % NI:
        return f"wino_images={NI} does not divide the batch {N}"
    if NI == 1 and (H // 2) % BR:
        return f"wino_block={BR} does not divide the {H // 2} tile rows"
    rows, cols = _gemm(cv, knobs)
    if rows % R or cols % (FV * lanes):
        return f"a {R} x {FV * lanes} register tile does not divide the {rows} x {cols} GEMM of a block"
    if R * FV > registers - 4:
        return f"a {R} x {FV} register tile needs {R * FV} vector registers, the host has {registers}"
    return None


def defaults(cv: Conv3x3, lanes: int, registers: int) -> dict:
    """Winograd's knobs for `cv`, and `algorithm="winograd"` where they fit and the batch holds at least
    PREFER_TILES output tiles (the weight transform runs on every call; measured in the commit message);
    else `algorithm="direct"`. Blocks of 2 tile rows, register tiles of 8 rows x 2 vectors (else 4, 2 or 1
    rows x 4 vectors, or fewer vectors where the columns are fewer)."""
    N, C, F, H, W = cv.shape
    out = {"wino_block": 2 if (H // 2) % 2 == 0 else 1, "wino_images": 1, "wino_fuse": True}
    rows, cols = _gemm(cv, {**out, "wino_rows": 1, "wino_vecs": 1})
    out["wino_rows"] = next(r for r in (8, 4, 2, 1) if rows % r == 0 and 2 * r <= registers - 4)
    # 16 accumulators: 8 rows x 2 vectors, else 4 x 4 (128 channels at 4x4, batch 16: 280 -> 250 us)
    out["wino_vecs"] = next((v for v in ((2, 1) if out["wino_rows"] == 8 else (4, 2, 1)) if cols % (v * lanes) == 0
                             and out["wino_rows"] * v <= registers - 4), 1)
    ok = check(cv, out, lanes, registers) is None and N * (H // 2) * (W // 2) >= PREFER_TILES
    return {**out, "algorithm": "winograd" if ok else "direct"}


def _pieces(extent: int, lanes: int):
    out = [(s, lanes) for s in range(0, extent - extent % lanes, lanes)]
    if extent % lanes:
        out.append((extent - extent % lanes, extent % lanes))
    return out


def _combo(terms, value, dtype="float32"):
    """sum of coefficient * value(index) over terms (index, coefficient), +-1 without a multiply."""
    out = None
    for idx, coef in terms:
        v = value(idx)
        if coef not in (1, -1):
            v = Binary("mul", v, Const(float(coef), dtype))
        if out is None:
            out = v if coef != -1 else Binary("sub", Const(0.0, dtype), v)
        else:
            out = Binary("add" if coef != -1 else "sub", out, v)
    return out


def _staged(tmp: Buffer, lane: Var, width: int, loads: list, stores) -> Stmt:
    """A loop of `width` lanes (vectorized when wider than 1) that first copies `loads` (expressions
    in `lane`) into the local `tmp[k, lane]`, then runs `stores(get)`, `get(k)` reading `tmp[k, lane]`.
    The copy keeps each input loaded once: read straight from a global buffer between stores to
    another one, LLVM reloaded (and re-gathered) it for every store, since the buffers might alias."""
    first = [Store(tmp, (k, lane), ld) for k, ld in enumerate(loads)]
    body = seq(*first, *stores(lambda k: Load(tmp, (k, lane))))
    return Allocate(tmp, For(lane, Const(width), body, "vectorized" if width > 1 else "serial"))


def build(kernel: Kernel, cv: Conv3x3, knobs: dict, lanes: int) -> Kernel:
    """`kernel` with the convolution stage `cv.acc` computed by Winograd F(2x2, 3x3) (module
    docstring). Knobs: wino_rows (tiles per register tile), wino_vecs (f vectors per register tile),
    wino_block (tile rows per block), wino_images (images per block, each whole; wino_block then
    unused), min_parallel_work."""
    from tessel.schedules.generic import stages

    N, C, F, H, W = cv.shape
    TH, TW = H // 2, W // 2
    BR, NI = _block_rows(cv, knobs), knobs["wino_images"]
    TI = BR * TW  # tiles of one image in a block
    TB = NI * TI
    R, FV = knobs["wino_rows"], knobs["wino_vecs"]
    why = check(cv, knobs, lanes, 10 ** 6)
    if why:
        raise ScheduleError(f"winograd: {why}")
    taken = used_names(kernel)

    def var(base):
        n = fresh_name(taken, base)
        taken.add(n)
        return Var(n)

    def buf(base, shape, scope="global"):
        n = fresh_name(taken, base)
        taken.add(n)
        return Buffer(n, tuple(shape), cv.dtype, scope)

    U = buf(f"{cv.acc}_wu", (16, C, F))
    V = buf(f"{cv.acc}_wv", (16, C, TB))
    acc = next(n.buffer for n in walk(kernel) if hasattr(n, "buffer") and n.buffer.name == cv.acc)

    # U[p, c, f] = (G g G^T)[a, b], p = 4a + b, vectorized along f
    c = var("wu_c")

    wlanes = lanes if F % lanes == 0 else 1
    fo, fi = var("wu_fo"), var("wu_fi")
    fe = fo * wlanes + fi

    def wload(ky, kx):
        return Load(cv.weight, (fe, c, ky, kx)) if cv.wlayout == "fck" else Load(cv.weight, (c, ky, kx, fe))

    taps = [wload(ky, kx) for ky in range(3) for kx in range(3)]
    unest = For(c, Const(C), For(fo, Const(F // wlanes), _staged(
        buf(f"{cv.acc}_wg", (9, wlanes), "local"), fi, wlanes, taps, lambda get: [
            Store(U, (4 * ia + ib, c, fe), _combo(_G[ia], lambda ky, ib=ib: _combo(_G[ib], lambda kx, ky=ky: get(
                3 * ky + kx)))) for ia in range(4) for ib in range(4)])))

    # one block: image n, tile rows [ty0, ty0 + BR)
    blk = var("wino_blk")
    nb = TH // BR
    nblocks = (N // NI) * nb
    n0 = (blk // nb) * NI if N > NI else Const(0)
    ty0 = (blk % nb) * BR if nb > 1 else Const(0)

    # V[p, c, t] = (B^T d B)[a, b], t = ty * TW + tx, vectorized along tx
    vc, vty, vn = var("wv_c"), var("wv_ty"), var("wv_n")
    vparts = []
    for start, width in _pieces(TW, lanes):
        tx = var("wv_tx")
        txe = tx + start if start else tx

        def d(ia, ib, txe=txe):
            return Load(cv.src, (n0 + vn if NI > 1 else n0, vc, (ty0 + vty) * 2 + ia, txe * 2 + ib))

        tv = vn * TI + vty * TW + txe if NI > 1 else vty * TW + txe
        vparts.append(_staged(buf(f"{cv.acc}_wd", (16, width), "local"), tx, width,
                              [d(ia, ib) for ia in range(4) for ib in range(4)], lambda get, tv=tv: [
            Store(V, (4 * ia + ib, vc, tv), _combo(_BT[ib], lambda jb, ia=ia: _combo(
                _BT[ia], lambda ja, jb=jb: get(4 * ja + jb)))) for ia in range(4) for ib in range(4)]))
    vnest = For(vc, Const(C), For(vty, Const(BR), seq(*vparts)))
    if NI > 1:
        vnest = For(vn, Const(NI), vnest)

    # M = sum_c V[p, c, t] * U[p, c, f]: register tiles of R rows x FV vectors. Orientation "f" (an NHWC
    # result): rows are tiles, vectors run along f, M[p, t, f]; "t" (NCHW): rows are output channels,
    # vectors run along the tiles, M[p, f, t], so the output transform reads and writes along image rows
    orient = "f" if cv.layout == "nhwc" else "t"
    rows_ext, cols_ext = _gemm(cv, knobs)
    M = buf(f"{cv.acc}_wm", (16, rows_ext, cols_ext))
    p, mcol, mrow, mc = var("wm_p"), var("wm_f"), var("wm_t"), var("wm_c")
    tile = buf(f"{cv.acc}_wacc", (R, FV * lanes), "local")
    r0, v0, l0 = var("wm_r"), var("wm_v"), var("wm_l")
    r1, v1, l1 = var("wm_r"), var("wm_v"), var("wm_l")
    r2, v2, l2 = var("wm_r"), var("wm_v"), var("wm_l")

    def tile_loop(r, v, ln, body):
        return For(r, Const(R), For(v, Const(FV), For(ln, Const(lanes), body, "vectorized"), "unrolled"), "unrolled")

    col = lambda v, ln: mcol * (FV * lanes) + v * lanes + ln  # noqa: E731
    if orient == "f":
        prod = lambda r, v, ln: Binary("mul", Load(V, (p, mc, mrow * R + r)), Load(U, (p, mc, col(v, ln))))  # noqa: E731
    else:
        prod = lambda r, v, ln: Binary("mul", Load(U, (p, mc, mrow * R + r)), Load(V, (p, mc, col(v, ln))))  # noqa: E731
    init = tile_loop(r0, v0, l0, Store(tile, (r0, v0 * lanes + l0), Const(0.0, cv.dtype)))
    upd = tile_loop(r1, v1, l1, Store(tile, (r1, v1 * lanes + l1), Binary(
        "add", Load(tile, (r1, v1 * lanes + l1)), prod(r1, v1, l1))))
    wb = tile_loop(r2, v2, l2, Store(M, (p, mrow * R + r2, col(v2, l2)), Load(tile, (r2, v2 * lanes + l2))))
    mnest = For(p, Const(16), For(mcol, Const(cols_ext // (FV * lanes)), For(mrow, Const(rows_ext // R), Allocate(
        tile, seq(init, For(mc, Const(C), upd), wb)))))

    # acc = (A^T M A)[i, j]: vectorized along f (NHWC) or along the tile's column (NCHW: stride-2 stores)
    def out_stores(n_idx, f_e, ty_e, tx_e, get):
        out = []
        for i in range(2):
            for j in range(2):
                val = _combo(_AT[j], lambda b, i=i: _combo(_AT[i], lambda a, b=b: get(4 * a + b)))
                y, x = (ty0 + ty_e) * 2 + i, tx_e * 2 + j
                out.append(Store(acc, (n_idx, f_e, y, x) if cv.layout == "nchw" else (n_idx, y, x, f_e), val))
        return out

    if orient == "f":
        ot, ofo, ofi = var("wo_t"), var("wo_fo"), var("wo_fi")
        fe = ofo * lanes + ofi
        tin = ot % TI if NI > 1 else ot
        n_o = n0 + ot // TI if NI > 1 else n0
        onest = For(ot, Const(TB), For(ofo, Const(F // lanes), _staged(
            buf(f"{cv.acc}_wy", (16, lanes), "local"), ofi, lanes, [Load(M, (q, ot, fe)) for q in range(16)],
            lambda get: out_stores(n_o, fe, tin // TW, tin % TW, get))))
    else:
        of, oty, on = var("wo_f"), var("wo_ty"), var("wo_n")
        oparts = []
        for start, width in _pieces(TW, lanes):
            tx = var("wo_tx")
            txe = tx + start if start else tx
            t_e = (on * TI if NI > 1 else 0) + oty * TW + txe
            oparts.append(_staged(buf(f"{cv.acc}_wy", (16, width), "local"), tx, width,
                                  [Load(M, (q, of, t_e)) for q in range(16)],
                                  lambda get, txe=txe: out_stores(n0 + on if NI > 1 else n0, of, oty, txe, get)))
        onest = For(of, Const(F), For(oty, Const(BR), seq(*oparts)))
        if NI > 1:
            onest = For(on, Const(NI), onest)

    work = N * TH * TW * 16 * C * F
    kind = "parallel" if work >= knobs["min_parallel_work"] * 64 and nblocks > 1 else "serial"
    block = For(blk, Const(nblocks), Allocate(V, Allocate(M, seq(vnest, mnest, onest))), kind)
    new = Allocate(U, seq(unest, block))

    conv = dict(stages(kernel))[cv.acc]

    def swap(body):
        if isinstance(body, Allocate):
            return Allocate(body.buffer, swap(body.body))
        items = list(body.stmts) if isinstance(body, Seq) else [body]
        return seq(*[new if st is conv or st == conv else st for st in items])

    return Kernel(kernel.name, kernel.params, swap(kernel.body), kernel.target, kernel.launch)
