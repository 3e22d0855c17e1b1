"""2-D convolution as an implicit GEMM on Hopper (sm_90a): the warp-specialised wgmma kernel of
gemm.wgmma (tessel/schedules/hopper_skeleton.py) whose pixel operand arrives by TMA as boxes of
the NHWC input, shifted by each filter tap.

Y = conv(X, W), stride 1 (any padding and dilation), X [N, H, W, C] (NHWC), W as the [K, R S C]
matrix (channels innermost), fp16 / bf16 in, float32 accumulation, an optional fused epilogue
(tessel/schedules/epilogue.py, indexed by Y's own index), Y cast to its dtype.

The output pixels are tiled in rectangles of bh x bw pixels of one image (`pixel_tile`): the
GEMM's pixel tile is those bh * bw rows. For filter tap (r, s) and channel block c0 .. c0 + 63,
the pixel tile's operand is the box X[n, p0 + r d - pad .. + bh, q0 + s d - pad .. + bw,
c0 .. c0 + 64] (d: the dilation): one 4-D TMA load whose 128-byte-swizzled shared layout is
exactly the K-major 64-column tile wgmma reads, rows in (h, w) order. The padding and the image
edges are the tensor map's out-of-bounds zeros: nothing in the main loop checks a bound. The
k-loop runs over (r, s, channel block) — R S ceil(C / 64) k-tiles; the weight tile of a k-tile
starts at column (r S + s) C + c0 of W's matrix (a channel block past C reads other taps'
weights, multiplied by the zeros the pixel box has there).

Two layouts (`ConvProblem.layout`, as tessel.schedules.conv_gemm):
- "NHWC": GEMM rows = pixels (A = the pixel boxes), columns = output channels (B = W), Y
  [N, P, Q, K]: each thread stores pairs of adjacent channels.
- "NHWC:NCHW": rows = output channels (A = W), columns = pixels (B = the boxes), Y [N, K, P, Q]:
  what compiled NCHW models use (after X's NHWC copy); the image is the GEMM's batch.

Knobs: gemm.wgmma's (`HopperKnobs`; no cluster, no split-K). The epilogue: "direct" (the
default: guarded stores per thread) or, in "NHWC" with a 16-bit Y, "tma": stmatrix into a
128B-swizzled 64 x 64 staging tile (64 / bw rows of bw pixels x 64 channels; bw <= 64 then) and
one 4-D TMA store per staging tile, clipped by the tensor map at the image's edges. Stride 1 only:
strided windows need the tensor map's element strides, which tessel's TMA does not encode yet.

Example:
    >>> import numpy as np; from tessel.ir.interp import run
    >>> from tessel.schedules.conv_gemm import ConvProblem
    >>> from tessel.schedules.gemm_hopper import HopperKnobs
    >>> p = ConvProblem(n=1, c=16, k=64, h=8, w=8, r=3, s=3, pad=1, layout="NHWC")
    >>> kern = hopper_conv_kernel(p, HopperKnobs(bm=64, bn=64, stages=2, consumers=1))
    >>> pixel_tile(p, 64), kern.launch.block
    ((8, 8), (256, 1, 1))
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 8, 8, 16)).astype(np.float16)
    >>> w = rng.standard_normal((64, 3, 3, 16)).astype(np.float16)
    >>> y = np.zeros((1, 8, 8, 64), np.float32); run(kern, x, w.reshape(64, 144), y)
    >>> xp = np.pad(x.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
    >>> want = sum(np.einsum("npqc,kc->npqk", xp[:, r:r + 8, s:s + 8], w[:, r, s].astype(np.float32))
    ...            for r in range(3) for s in range(3))
    >>> bool(np.allclose(y, want, atol=1e-2))
    True
"""

from __future__ import annotations

import dataclasses

from tessel.errors import ScheduleError
from tessel.ir.intrinsics import tma
from tessel.ir.nodes import Buffer, BufferRef, Const, For, Intrinsic, Kernel, Var, minimum, seq
from tessel.schedules.conv_gemm import ConvProblem
from tessel.schedules.epilogue import Epilogue
from tessel.schedules.gemm import GemmProblem
from tessel.schedules.gemm_hopper import HopperKnobs, check_knobs, default_knobs, shared_bytes
from tessel.schedules.hopper_pieces import ATOM_COLS, SWIZZLE, OperandTiles, store_accumulators, store_accumulators_tma
from tessel.schedules.hopper_skeleton import TileGrid, warp_specialized_tiles

LAYOUTS = ("NHWC", "NHWC:NCHW")


def pixel_tile(p: ConvProblem, rows: int, max_bw: int = 256) -> tuple:
    """(bh, bw): the rectangle of output pixels a tile of `rows` GEMM rows covers, bh * bw == rows,
    bw a power of two from 8 up to `max_bw`, chosen to waste the fewest pixels past the image's
    edges (ties: the wider, for longer runs of the input's rows)."""
    best = None
    bw = 8
    while bw <= min(rows, max_bw):
        bh = rows // bw
        if rows % bw == 0 and bh <= 256 and bw <= 256:
            area = -(-p.p // bh) * bh * (-(-p.q // bw) * bw)
            if best is None or area <= best[0]:
                best = (area, (bh, bw))
        bw *= 2
    if best is None:
        raise ScheduleError(f"conv: no pixel tile of {rows} rows (a multiple of 8 up to 256 x 256)")
    return best[1]


def problem_issues(p: ConvProblem, arch: str = "sm_90a") -> list:
    """What keeps convolution `p` off this schedule, as phrases (empty when it applies)."""
    out = []
    if arch != "sm_90a":
        out.append(f"wgmma and TMA need sm_90a, not {arch}")
    if p.layout not in LAYOUTS:
        out.append(f"layout {p.layout}: the TMA boxes read an NHWC input ({', '.join(LAYOUTS)})")
    if p.stride != 1:
        out.append(f"stride {p.stride}: strided windows need TMA element strides (stride 1 only)")
    if p.c % 8:
        out.append(f"C = {p.c} is not a multiple of 8: TMA needs 16-byte pixel pitches")
    if p.out_dtype not in ("float32", "float16", "bfloat16"):
        out.append(f"output dtype {p.out_dtype}: float32, float16 or bfloat16")
    return out


def _gemm_shape(p: ConvProblem) -> GemmProblem:
    """The GEMM the knob checks see: M, N, K of the implicit GEMM (pixels counted as tiled)."""
    red = p.r * p.s * p.c
    if p.layout == "NHWC":
        return GemmProblem(p.n * p.p * p.q, p.k, red, p.dtype, (), True, True, p.out_dtype)
    return GemmProblem(p.k, p.p * p.q, red, p.dtype, (p.n,), True, True, p.out_dtype)


def default_conv_knobs(p: ConvProblem, sms: int = 132) -> HopperKnobs:
    """gemm.wgmma's defaults for the implicit GEMM's shape, with direct stores and no cluster; in
    "NHWC:NCHW" 256 pixel columns become 128 (5 stages): each stored column's pixel coordinates
    cost registers, and at 256 nvcc 13 spilled 152 bytes (168 registers) at C = K = 256, 56 x 56."""
    kn = dataclasses.replace(default_knobs(_gemm_shape(p), sms), epilogue="direct", cluster="1x1")
    if p.layout == "NHWC:NCHW" and kn.bn == 256:
        kn = dataclasses.replace(kn, bn=128, stages=5)
    return kn


def check(p: ConvProblem, kn: HopperKnobs, arch: str = "sm_90a") -> None:
    """ScheduleError naming the problem's or the knob's fault."""
    issues = problem_issues(p, arch)
    if issues:
        raise ScheduleError(f"conv.wgmma: {issues[0]}")
    if kn.cluster != "1x1" or kn.split_k != 1:
        raise ScheduleError(f"conv.wgmma knob {'cluster' if kn.cluster != '1x1' else 'split_k'}: the convolution "
                            f"runs without a cluster ('1x1', split_k 1)")
    if kn.epilogue == "tma":
        why = None
        if p.layout != "NHWC":
            why = "the TMA store writes NHWC tiles of pixels x channels; 'NHWC:NCHW' stores directly"
        elif p.out_dtype not in ("float16", "bfloat16"):
            why = f"'tma' stages Y through stmatrix (16-bit values); Y is {p.out_dtype}"
        elif p.k % 8:
            why = f"'tma' needs Y's pixels (K = {p.k} channels) a multiple of 16 bytes"
        if why:
            raise ScheduleError(f"conv.wgmma knob epilogue='tma': {why}")
    check_knobs(_gemm_shape(p), kn, arch)


def hopper_conv_body(p: ConvProblem, kn: HopperKnobs, x: Buffer, w: Buffer, y: Buffer,
                     epilogue: Epilogue | None = None, prefix: str = "hc", drop: tuple = (), sms: int = 132):
    """(statement, Launch) of the convolution on buffers laid out as `p.buffers()`; `drop` as
    gemm_hopper.build_hopper_body (broken variants for tests)."""
    check(p, kn)
    nhwc = p.layout == "NHWC"
    pix_rows = kn.bm if nhwc else kn.bn
    tma_store = kn.epilogue == "tma"  # 64 x 64 staging tiles = 64 / bw rows of bw pixels: bw <= 64
    bh, bw = pixel_tile(p, pix_rows, 64 if tma_store else 256)
    th, tw = -(-p.p // bh), -(-p.q // bw)
    cblocks = -(-p.c // ATOM_COLS)
    k_tiles = p.r * p.s * cblocks
    pix = OperandTiles.make(f"{prefix}_x", x, pix_rows, True, kn.stages)
    wts = OperandTiles.make(f"{prefix}_w", w, kn.bn if nhwc else kn.bm, True, kn.stages)
    at, bt = (pix, wts) if nhwc else (wts, pix)
    if nhwc:
        tiles = TileGrid(p.n * th * tw, -(-p.k // kn.bn))
    else:
        tiles = TileGrid(-(-p.k // kn.bm), th * tw, (p.n,))

    def pixels(pm, pn, bv):
        """(image, first output row, first output column) of the tile's pixel rectangle."""
        if nhwc:
            return pm // (th * tw), pm // tw % th * bh, pm % tw * bw
        return bv[0], pn // tw * bh, pn % tw * bw

    def produce(ring, lt, pm, pn, bv, part):
        kt = Var(f"{prefix}_pkt")
        it = lt * k_tiles + kt
        rs, c0 = kt // cblocks, kt % cblocks * ATOM_COLS
        r, s = rs // p.s, rs % p.s
        n_img, p0, q0 = pixels(pm, pn, bv)
        stage, bar = ring.stage(it), ring.full_ref(it)
        box = BufferRef(x, (n_img, p0 + r * p.dilation - p.pad, q0 + s * p.dilation - p.pad, c0))
        x_load = Intrinsic(tma.tma_load_name(4), (BufferRef(pix.smem, (stage * pix.tile_elems,)), bar, box,
                                                   Const(1), Const(bh), Const(bw), Const(ATOM_COLS), Const(SWIZZLE)))
        w_outer = pn * kn.bn if nhwc else pm * kn.bm
        w_load = wts.load(stage, bar, w_outer, rs * p.c + c0)
        body = [ring.acquire(it), ring.commit(it, pix.tile_bytes + wts.tile_bytes), x_load, *w_load]
        return For(kt, k_tiles, seq(*body))

    def store(acc, m_tiles, lt, pm, pn, bv, row0, wg, lane, frag, cstage):
        n_img, p0, q0 = pixels(pm, pn, bv)
        if nhwc:
            def index(row, col):
                return (n_img, p0 + row // bw, q0 + row % bw, pn * kn.bn + col)

            def guard(row, col):
                out = (p0 + row // bw < p.p) & (q0 + row % bw < p.q)
                return out & (pn * kn.bn + col < p.k) if p.k % kn.bn else out
        else:
            def index(row, col):
                return (n_img, pm * kn.bm + row, p0 + col // bw, q0 + col % bw)

            def guard(row, col):
                out = (p0 + col // bw < p.p) & (q0 + col % bw < p.q)
                return out & (pm * kn.bm + row < p.k) if p.k % kn.bm else out
        if tma_store:  # stmatrix into 64 x 64 staging tiles, each one 4-D TMA store (clipped at the edges)
            def clamped(row, col):  # what the epilogue reads stays inside Y where the store will clip
                return (n_img, minimum(p0 + row // bw, Const(p.p - 1)), minimum(q0 + row % bw, Const(p.q - 1)),
                        minimum(pn * kn.bn + col, Const(p.k - 1)))

            def box(mi, jc):
                return ((n_img, p0 + (row0 + mi * 64) // bw, q0, pn * kn.bn + jc * 64), (1, 64 // bw, bw, 64))

            hook = None if epilogue is None else (lambda v, row, col: epilogue.apply(v, clamped(row, col)))
            return store_accumulators_tma(acc, kn.bn, m_tiles, y, cstage, wg * (64 * ATOM_COLS), row0, Const(0),
                                          lane, wg + 1, hook, f"{prefix}_e", frag, drop, tma_box=box)
        hook = None if epilogue is None else (lambda v, row, col: epilogue.apply(v, index(row, col)))
        return store_accumulators(acc, kn.bn, m_tiles, y, row0, Const(0), lane, None, None, hook, f"{prefix}_e",
                                  index=index, guard=guard)

    return warp_specialized_tiles(kn, tiles, k_tiles, at, bt, p.dtype, y.dtype, produce, store, shared_bytes(kn),
                                  prefix, drop, sms)


def hopper_conv_kernel(p: ConvProblem, kn: HopperKnobs | None = None, name: str = "conv_wgmma",
                       epilogue: Epilogue | None = None, drop: tuple = (), sms: int = 132) -> Kernel:
    """A whole kernel with parameters (X, W, Y) as `p.buffers()` lays them out, then the buffers
    `epilogue` reads."""
    kn = kn or default_conv_knobs(p, sms)
    x, w, y = p.buffers()
    body, launch = hopper_conv_body(p, kn, x, w, y, epilogue, drop=drop, sms=sms)
    extra = epilogue.buffers if epilogue is not None else ()
    return Kernel(name, (x, w, y) + tuple(extra), body, target="cuda", launch=launch)


__all__ = ["LAYOUTS", "check", "default_conv_knobs", "hopper_conv_body", "hopper_conv_kernel", "pixel_tile",
           "problem_issues"]
