"""The tensor-core GEMM template (path 1: mma.sync, sm_80 and later), built as IR directly.

C[b.., i, j] = sum_k f32(A[b.., i, k]) * f32(B[b.., k, j]) with A and B float16 or bfloat16 (each
stored k-contiguous or not: "transposed" operands), any M, N, K and batch, accumulated in float32
and stored as C's dtype (float32, or cast in the epilogue). One block computes a BM x BN tile of
C; its warps_m x warps_n warps each a (BM / warps_m) x (BN / warps_n) tile held in mma
accumulator fragments. The kernel the template builds, per block:

- Block order: blocks are numbered along blockIdx.x and mapped to (tile row, tile column) in
  groups of `group_m` tile rows (the "grouped launch" of Triton's matmul), so blocks running at
  the same time share A rows and B columns in L2. Batches run along blockIdx.y.
- Shared memory: a ring of `stages` A and B tiles. Each tile row (the operand's non-contiguous
  dimension) holds the contiguous dimension in 16-byte chunks rotated by the row (`swizzle`
  "rotate": chunk c of row r sits at chunk (c + r / max(1, 8 / chunks)) mod chunks), so the 8
  rows one ldmatrix phase reads and the 8 chunks one cp.async phase writes hit distinct banks
  without padding. (An XOR swizzle needs a bitwise operator the IR does not have; the rotation
  is conflict-free for whole 16-byte chunks too.)
- Loads: cp.async.cg of 16 bytes per thread and chunk (8, 4 or 2 bytes when the contiguous
  extent is not a multiple of 8 elements; plain loads when it is odd). Chunks outside the
  operand (edges of M, N, K) are not copied: the thread writes zeros instead (guarded
  statements, no padding copies), so the tile's products there are zero.
- Main loop over k-tiles: the prologue fills stages - 1 tiles; then per k-tile: the copy of tile
  kt + stages - 1 into the slot freed by tile kt - 1 (committed as one group even when empty),
  and per k-step of 16 the A and B fragments of the next step loaded with ldmatrix.x4 (.trans
  when the operand is not k-contiguous) into the other half of a double buffer while the mmas of
  this step run. With `spread`, the copies of the next tile are issued in pieces, one before
  each k-step's mmas, and committed at the last step (CUTLASS's interleaving), instead of all at
  the start of the k-tile. Before the last step's mmas, cp.async.wait_group(stages - 2) and the k-tile's
  one __syncthreads make tile kt + 1 visible, and the next tile's first fragments are loaded.
- Everything inside a k-tile is unrolled (straight-line code: fragments stay in registers).
- Epilogue: each lane stores its accumulator elements, guarded at the M / N edges.

`GemmKnobs` holds the knobs; `check_knobs` raises ScheduleError naming the knob for impossible
values (nothing is shrunk). `gemm_kernel` builds a whole kernel from a `GemmProblem`;
`apply_gemm` replaces a DSL contraction stage of a kernel (what `schedule_gemm` records in a
Schedule's trace as the step "gemm" with the knobs, so the trace replays).

Example:
    >>> p = GemmProblem(m=32, n=32, k=32, dtype="float16")
    >>> k = gemm_kernel(p, GemmKnobs(bm=32, bn=32, bk=16, warps_m=1, warps_n=1, stages=2))
    >>> k.launch.grid, k.launch.block
    ((1, 1, 1), (32, 1, 1))
    >>> import numpy as np; from tessel.ir.interp import run
    >>> rng = np.random.default_rng(0)
    >>> a, b = (rng.standard_normal((32, 32)).astype(np.float16) for _ in range(2))
    >>> c = np.zeros((32, 32), np.float32); run(k, a, b, c)
    >>> bool(np.allclose(c, a.astype(np.float32) @ b.astype(np.float32), atol=1e-3))
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.intrinsics import mbarrier, mma_name
from tessel.ir.intrinsics.cp_async import COMMIT, MAX_WAIT, WAIT_GROUP, copy_name
from tessel.ir.intrinsics.ldmatrix import ldmatrix_name
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, Launch, LetStmt, Store,
    Var, minimum, seq, substitute,
)
from tessel.schedules.epilogue import Epilogue, store_value
from tessel.schedules import hopper_splitk as sk
from tessel.schedules.nest import unflatten_index

# Shared memory a block may use, by architecture (bytes; the opt-in maximum).
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024,
                "sm_90a": 227 * 1024}
MAX_REGS = 255
REG_FILE = 65536


@dataclass(frozen=True)
class GemmKnobs:
    """The template's knobs (see the module docstring); `as_dict` / `from_dict` for traces."""

    bm: int = 128  # CTA tile rows (M)
    bn: int = 128  # CTA tile columns (N)
    bk: int = 32  # CTA tile depth (K) per pipeline stage
    warps_m: int = 2
    warps_n: int = 2
    stages: int = 4  # shared-memory ring slots (cp.async multi-buffering)
    swizzle: str = "rotate"  # "rotate" (conflict-free chunk rotation) or "none"
    group_m: int = 8  # tile rows per group of the block order (1: row-major order)
    split_k: int = 1  # CTAs of one cluster sharing a tile's k-tiles (sm_90: hopper_splitk's reduction)
    spread: bool = False  # issue the next tile's copies in pieces between the k-steps' mmas

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "GemmKnobs":
        from tessel.schedules.knobs import knobs_from_dict

        return knobs_from_dict(GemmKnobs, d, "gemm")


@dataclass(frozen=True)
class GemmProblem:
    """Shapes, dtypes and storage of one GEMM. a_kcontig: A stored [.., M, K] (else [.., K, M]);
    b_kcontig: B stored [.., N, K] (else [.., K, N]). out_dtype: C's dtype."""

    m: int
    n: int
    k: int
    dtype: str = "float16"
    batch: tuple = ()
    a_kcontig: bool = True
    b_kcontig: bool = False
    out_dtype: str = "float32"

    def buffers(self) -> tuple[Buffer, Buffer, Buffer]:
        pre = tuple(self.batch)
        a = Buffer("A", pre + ((self.m, self.k) if self.a_kcontig else (self.k, self.m)), self.dtype)
        b = Buffer("B", pre + ((self.n, self.k) if self.b_kcontig else (self.k, self.n)), self.dtype)
        return a, b, Buffer("C", pre + (self.m, self.n), self.out_dtype)


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def knob_problems(p: GemmProblem, kn: GemmKnobs, shared_limit: int = SHARED_LIMIT["sm_90a"]) -> list:
    """[(knob, what is wrong)] for knob values that cannot run problem `p` (empty when they can)."""
    out = []
    for knob in ("bm", "bn", "bk", "warps_m", "warps_n", "group_m"):
        v = getattr(kn, knob)
        if not isinstance(v, int) or isinstance(v, bool) or not _pow2(v):
            out.append((knob, "must be a power of two"))
    if out:
        return out
    if kn.bk < 16:
        out.append(("bk", "must be at least 16 (one mma k-step)"))
    if kn.bm % (16 * kn.warps_m):
        out.append(("bm", f"must be a multiple of 16 * warps_m = {16 * kn.warps_m} (16-row mma tiles per warp)"))
    if kn.bn % (16 * kn.warps_n):
        out.append(("bn", f"must be a multiple of 16 * warps_n = {16 * kn.warps_n} (pairs of 8-column mma tiles "
                          f"per warp)"))
    threads = 32 * kn.warps_m * kn.warps_n
    if threads > 1024:
        out.append(("warps_n", f"warps_m * warps_n = {threads // 32} warps: a block holds at most 32 (1024 threads)"))
    if not isinstance(kn.stages, int) or kn.stages < 2:
        out.append(("stages", "needs at least 2 (double buffering)"))
    elif kn.stages - 2 > MAX_WAIT:
        out.append(("stages", f"cp.async.wait_group takes at most {MAX_WAIT}: stages <= {MAX_WAIT + 2}"))
    if kn.swizzle not in ("rotate", "none"):
        out.append(("swizzle", "must be 'rotate' or 'none'"))
    if not isinstance(kn.split_k, int) or isinstance(kn.split_k, bool) or not 1 <= kn.split_k <= 8:
        out.append(("split_k", "must be an integer 1..8 (the CTAs of one cluster)"))
    elif kn.split_k > -(-p.k // kn.bk):
        out.append(("split_k", f"{kn.split_k} CTAs share K = {p.k}: only {-(-p.k // kn.bk)} k-tiles of {kn.bk}"))
    if not isinstance(kn.spread, bool):
        out.append(("spread", "must be True or False"))
    for what, rows in (("bm", kn.bm), ("bn", kn.bn)):
        chunks = rows * kn.bk // 8
        if chunks % threads:
            out.append(("bk", f"a {rows}x{kn.bk} tile has {chunks} 16-byte chunks, not a multiple of the block's "
                              f"{threads} threads ({what}={rows})"))
    if isinstance(kn.stages, int):
        smem = kn.stages * (kn.bm + kn.bn) * kn.bk * 2
        if smem > shared_limit:
            out.append(("stages", f"{kn.stages} stages of {kn.bm}x{kn.bk} + {kn.bn}x{kn.bk} tiles take {smem} bytes "
                                  f"of shared memory; the target allows {shared_limit}"))
    regs = registers(kn)
    if regs > MAX_REGS:
        out.append(("bm", f"a {kn.bm // kn.warps_m}x{kn.bn // kn.warps_n} warp tile needs about {regs} registers "
                          f"per thread; at most {MAX_REGS} (raise warps_m / warps_n or lower bm / bn)"))
    elif regs * threads > REG_FILE:
        out.append(("warps_n", f"{threads} threads x about {regs} registers exceed the {REG_FILE}-register file"))
    return out


def check_knobs(p: GemmProblem, kn: GemmKnobs, arch: str = "sm_90a") -> None:
    """Raise ScheduleError naming the knob and the limit when `kn` cannot run problem `p`."""
    bad = knob_problems(p, kn, SHARED_LIMIT.get(arch, SHARED_LIMIT["sm_80"]))
    if not bad and kn.split_k > 1 and not arch.startswith("sm_9"):
        bad = [("split_k", f"split-K reduces within a thread-block cluster: sm_90 and later, not {arch}")]
    if bad:
        knob, msg = bad[0]
        raise ScheduleError(f"gemm knob {knob}={getattr(kn, knob)!r}: {msg}")


def registers(kn: GemmKnobs) -> int:
    """A rough count of registers per thread: accumulators, double-buffered fragments, addresses."""
    wm, wn = kn.bm // kn.warps_m, kn.bn // kn.warps_n
    acc = wm * wn // 32
    frags = 2 * (wm // 16 * 4 + wn // 8 * 2)
    return acc + frags + 40


def default_knobs(p: GemmProblem, sms: int = 132) -> GemmKnobs:
    """Today's choice for a problem: 256x128x64 tiles of 8 warps (64x64 warp tiles), 3 stages, when
    that still gives every SM a block (the best variant measured on the H200 at 4096^3 and 8192^3);
    else tiles of at most 128 x 128, halved along the longer side until the grid has `sms` blocks,
    so small and skinny problems still fill the GPU and no block is mostly edge."""
    nbatch = 1
    for e in p.batch:
        nbatch *= e
    blocks = lambda bm, bn: nbatch * -(-p.m // bm) * -(-p.n // bn)  # noqa: E731
    if p.k >= 256 and blocks(256, 128) >= sms:
        return GemmKnobs(bm=256, bn=128, bk=64, warps_m=4, warps_n=2, stages=3)

    def tile(x):
        t = 16
        while t < 128 and t < x:
            t *= 2
        return t
    bm, bn = tile(p.m), tile(p.n)
    while blocks(bm, bn) < sms and max(bm, bn) > 32:
        if bm >= bn:
            bm //= 2
        else:
            bn //= 2
    wm, wn = (2 if bm >= 64 else 1), (2 if bn >= 64 else 1)
    bk = 64 if p.k >= 256 else 32 if p.k > 16 else 16
    while (bm * bk // 8) % (32 * wm * wn) or (bn * bk // 8) % (32 * wm * wn):
        bk *= 2
    stages = 3 if p.k >= 3 * bk else 2
    return GemmKnobs(bm=bm, bn=bn, bk=bk, warps_m=wm, warps_n=wn, stages=stages)


# -- the operand tiles ------------------------------------------------------------------------------

@dataclass
class _Operand:
    """One of A / B: its global buffer, its index function (batch idx, outer idx, k) -> indices,
    whether k is contiguous, and its shared ring (rows = the non-contiguous dimension)."""

    name: str
    buf: Buffer
    index: object  # (batch_vars, outer, k) -> index tuple
    kcontig: bool
    outer_extent: int  # M for A, N for B
    k_extent: int
    tile_outer: int  # BM / BN
    bk: int
    stages: int
    swizzle: str
    prefix: str
    valid: object = None  # (batch_vars, outer, k) -> bool Expr: where the operand is not an implicit zero
    max_vec: int = 8  # cap on the elements per copy (1: element loads, e.g. a shifted conv window)

    @property
    def rows(self) -> int:
        return self.tile_outer if self.kcontig else self.bk

    @property
    def cols(self) -> int:
        return self.bk if self.kcontig else self.tile_outer

    def shared(self) -> Buffer:
        return Buffer(f"{self.prefix}_{self.name}s", (self.stages, self.rows, self.cols), self.buf.dtype, "shared")

    @property
    def period(self) -> int:
        """Rows after which the rotation repeats."""
        nch = self.cols // 8
        return max(1, 8 // nch) * nch

    def phys(self, row, col, rot_row=None):
        """Column of element (row, col) of a tile in the swizzled layout. `rot_row`: a simpler
        expression congruent to `row` modulo `period` (the same rotation, less index arithmetic)."""
        nch = self.cols // 8
        if self.swizzle == "none" or nch == 1:
            return col
        rot = (row if rot_row is None else rot_row) // max(1, 8 // nch) % nch
        return (col // 8 + rot) % nch * 8 + col % 8

    def vec(self) -> int:
        """Elements per copy: the largest of 8, 4, 2, 1 dividing the contiguous extent."""
        ext = self.k_extent if self.kcontig else self.outer_extent
        return next(v for v in (8, 4, 2, 1) if ext % v == 0 and v <= self.max_vec)


def _load_tile(op: _Operand, smem: Buffer, slot, bvars, outer0, k0, tx: Var, threads: int, uid: str,
               piece: tuple = (0, 1)):
    """All threads copy one (rows x cols) tile of `op` into ring slot `slot`: cp.async chunks of
    `vec` elements, zeros where the chunk lies outside the operand. piece = (i, n): only the i-th
    of n consecutive parts of each thread's copies."""
    vec = op.vec()
    per_row = op.cols // vec
    total = op.rows * per_row
    it = Var(f"{uid}_it")
    rot_row = None
    # rows and columns as (per-thread part) + (per-iteration constant), so the compiler keeps one
    # address per operand plus immediate offsets
    if threads % per_row == 0:
        rpi = threads // per_row
        row, col = it * rpi + tx // per_row, tx % per_row * vec
        if rpi % op.period == 0:
            rot_row = tx // per_row
    elif per_row % threads == 0:
        ipr = per_row // threads
        row, col = it // ipr, (it % ipr * threads + tx) * vec
    else:
        q = it * threads + tx
        row, col = q // per_row, q % per_row * vec
    outer, kk = (row, col) if op.kcontig else (col, row)
    g_outer, g_k = outer0 + outer, k0 + kk
    conds = []
    if op.outer_extent % op.tile_outer:
        conds.append(g_outer < op.outer_extent)
    if op.k_extent % op.bk:
        conds.append(g_k < op.k_extent)
    if op.valid is not None:  # e.g. a convolution window inside the padding (for all `vec` elements)
        conds.append(op.valid(bvars, g_outer, g_k))
    gidx = op.index(bvars, g_outer, g_k)
    pcol = op.phys(row, col, rot_row)
    if vec >= 2:
        v = Var(f"{uid}_v")
        copy = Intrinsic(copy_name("cg" if vec == 8 else "ca", 2 * vec),
                         (BufferRef(smem, (slot, row, pcol)), BufferRef(op.buf, gidx)))
        zero = For(v, vec, Store(smem, (slot, row, pcol + v), Const(0.0, smem.dtype)), "unrolled")
    else:
        copy = Store(smem, (slot, row, pcol), op.buf[gidx])
        zero = Store(smem, (slot, row, pcol), Const(0.0, smem.dtype))
    body = copy
    if conds:
        cond = conds[0]
        for x in conds[1:]:
            cond = cond & x
        body = IfThenElse(cond, copy, zero)
    count = total // threads
    lo, hi = piece[0] * count // piece[1], (piece[0] + 1) * count // piece[1]
    if hi == lo:
        return seq()
    itp = Var(f"{uid}_ip")
    return For(itp, hi - lo, substitute(body, {it: itp + lo}), "unrolled")


def _ldmatrix(op: _Operand, smem: Buffer, slot, frag: Buffer, dst: tuple, outer0, k0, lane: Var,
              aligned: bool):
    """One ldmatrix.x4 of the 16 (outer) x 16 (k) region at (outer0, k0) of a ring slot into
    frag[dst..dst+8]: A gives one 16x16 A fragment, B two 16x8 B fragments (n tiles 0, 1)."""
    j, r8 = lane // 8, lane % 8
    if op.name == "A":
        o_off, k_off = (j % 2) * 8, (j // 2) * 8
    else:
        k_off, o_off = (j % 2) * 8, (j // 2) * 8
    if op.kcontig:
        row, col, lane_row = outer0 + (r8 + o_off), k0 + k_off, r8 + o_off
    else:
        row, col, lane_row = k0 + (r8 + k_off), outer0 + o_off, r8 + k_off
    # the tile-row part (warp offset, 16-row steps, k-steps of 16) is a multiple of the rotation
    # period when `aligned`: the rotation then depends on the lane alone
    name = ldmatrix_name(4, trans=not op.kcontig)
    pcol = op.phys(row, col, lane_row if aligned else None)
    return Intrinsic(name, (BufferRef(frag, dst), BufferRef(smem, (slot, row, pcol))))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def build_gemm_body(p: GemmProblem, kn: GemmKnobs, a: Buffer, b: Buffer, c: Buffer, a_index, b_index, c_index,
                    prefix: str = "gemm", epilogue: Epilogue | None = None, raw: Buffer | None = None,
                    a_load: tuple = (None, 8), b_load: tuple = (None, 8), drop: tuple = ()):
    """The GEMM's statement (a blockIdx.x loop) and its Launch, for buffers a, b, c indexed by
    a_index(bvars, m, k), b_index(bvars, n, k), c_index(bvars, m, n). `epilogue`
    (tessel.schedules.epilogue) maps each float32 result, at C's index, before the store to C;
    `raw`: a buffer indexed as C that gets the result before the epilogue too. `a_load` / `b_load`:
    (valid(bvars, outer, k) -> bool Expr or None, max elements per copy) of an operand that is
    an implicit zero outside `valid` (the padding of an implicit-GEMM convolution). With
    `kn.split_k` > 1 (sm_90) a cluster of split_k CTAs shares each tile's k-tiles and rank 0 adds the
    others' float32 partials (hopper_splitk.py); `drop` ("split_wait", "split_barrier",
    "split_arrive") leaves its synchronisation out (broken variants for tests)."""
    kn_drop = tuple(drop)
    check_knobs(p, kn)
    bm, bn, bk, st = kn.bm, kn.bn, kn.bk, kn.stages
    wm_, wn_ = kn.bm // kn.warps_m, kn.bn // kn.warps_n
    mt_n, nt_n = wm_ // 16, wn_ // 8
    threads = 32 * kn.warps_m * kn.warps_n
    tiles_m, tiles_n = _ceil(p.m, bm), _ceil(p.n, bn)
    kt_n = _ceil(p.k, bk)
    ks_n = bk // 16
    nbatch = 1
    for e in p.batch:
        nbatch *= e
    V = lambda s: Var(f"{prefix}_{s}")  # noqa: E731
    pid, bz, tx = V("pid"), V("bz"), V("tx")
    A = _Operand("A", a, a_index, p.a_kcontig, p.m, p.k, bm, bk, st, kn.swizzle, prefix, *a_load)
    B = _Operand("B", b, b_index, p.b_kcontig, p.n, p.k, bn, bk, st, kn.swizzle, prefix, *b_load)
    sa, sb = A.shared(), B.shared()
    acc = Buffer(f"{prefix}_acc", (mt_n, nt_n, 4), "float32", "local")
    fa = Buffer(f"{prefix}_fa", (2, mt_n, 8), p.dtype, "local")
    fb = Buffer(f"{prefix}_fb", (2, nt_n // 2, 8), p.dtype, "local")
    # batch indices from the fused blockIdx.y
    bvars = unflatten_index(bz, tuple(p.batch))
    # split-K (sm_90): the `split` CTAs of a cluster share each tile's k-tiles (hopper_splitk.py)
    split = kn.split_k
    tile_id, rank = (pid // split, pid % split) if split > 1 else (pid, None)
    k_first, k_count = sk.k_range(kt_n, split, rank) if split > 1 else (0, kt_n)
    # grouped block order
    gm = min(kn.group_m, tiles_m)
    per_group = gm * tiles_n
    pm, pn, gsize = V("pm"), V("pn"), V("gsize")
    first_m = tile_id // per_group * gm
    warp, lane, wi, wj = V("warp"), V("lane"), V("wi"), V("wj")
    m0, n0 = pm * bm, pn * bn
    kt = V("kt")

    def loads(slot, ktile, tag, piece=(0, 1)):
        k0 = (ktile + k_first) * bk if split > 1 else ktile * bk
        return seq(_load_tile(A, sa, slot, bvars, m0, k0, tx, threads, f"{prefix}_la{tag}", piece),
                   _load_tile(B, sb, slot, bvars, n0, k0, tx, threads, f"{prefix}_lb{tag}", piece))

    def frag_loads(slot, ks, buf, tag):
        mv, pv = Var(f"{prefix}_fm{tag}"), Var(f"{prefix}_fp{tag}")
        a_al = 16 % A.period == 0 and (not A.kcontig or wm_ % A.period == 0)
        b_al = 16 % B.period == 0 and (not B.kcontig or wn_ % B.period == 0)
        return seq(For(mv, mt_n, _ldmatrix(A, sa, slot, fa, (buf, mv, 0), wi * wm_ + mv * 16, ks * 16, lane, a_al),
                       "unrolled"),
                   For(pv, nt_n // 2, _ldmatrix(B, sb, slot, fb, (buf, pv, 0), wj * wn_ + pv * 16, ks * 16, lane,
                                                b_al), "unrolled"))

    def mmas(buf, tag):
        mt, nt = Var(f"{prefix}_mm{tag}"), Var(f"{prefix}_mn{tag}")
        call = Intrinsic(mma_name(p.dtype), (BufferRef(acc, (mt, nt, 0)), BufferRef(fa, (buf, mt, 0)),
                                             BufferRef(fb, (buf, nt // 2, nt % 2 * 4)), BufferRef(acc, (mt, nt, 0))))
        return For(mt, mt_n, For(nt, nt_n, call, "unrolled"), "unrolled")

    # prologue: stages - 1 tiles in flight, then tile 0 visible and its first fragments loaded
    prologue = []
    for s in range(st - 1):
        ld = loads(s, Const(s), f"p{s}")
        ld = IfThenElse(Const(s) < k_count, ld) if split > 1 and s > 0 else ld  # every rank has a k-tile
        prologue += [ld if s < kt_n else seq(), Intrinsic(COMMIT, ())]
    prologue += [Intrinsic(WAIT_GROUP, (Const(st - 2),)), Barrier(), frag_loads(0, 0, 0, "p")]
    # main loop: one k-tile
    slot = kt % st
    nxt = kt + (st - 1)
    # the copies of tile kt + stages - 1 go to the slot tile kt - 1 used: free since the barrier
    # that ended tile kt - 1. All at once, or (spread) one piece before each k-step's mmas.
    pieces = ks_n if kn.spread else 1
    step = [] if kn.spread else [IfThenElse(nxt < k_count, loads(nxt % st, nxt, "m")), Intrinsic(COMMIT, ())]
    for ks in range(ks_n):
        buf, other = ks % 2, (ks + 1) % 2
        copies = ([IfThenElse(nxt < k_count, loads(nxt % st, nxt, f"m{ks}", (ks, pieces)))] if kn.spread else [])
        if ks + 1 < ks_n:
            step += [frag_loads(slot, ks + 1, other, f"m{ks}"), *copies, mmas(buf, ks)]
            continue
        if kn.spread:
            step += copies + [Intrinsic(COMMIT, ())]
        step += [Intrinsic(WAIT_GROUP, (Const(st - 2),)), Barrier()]
        # unconditional: after the last tile it reads a stale slot into unused registers (a
        # guarded load would merge old and new fragment halves with PRMTs)
        nxt_frags = frag_loads((kt + 1) % st, 0, 0, "n")
        # the next tile starts in buffer 0: load it while this step's mmas run when they use
        # buffer 1 (an even number of k-steps), after them otherwise
        step += [nxt_frags, mmas(buf, ks)] if buf == 1 else [mmas(buf, ks), nxt_frags]
    main = For(kt, k_count, seq(*step))
    mt, nt, e = V("zm"), V("zn"), V("ze")
    zero = For(mt, mt_n, For(nt, nt_n, For(e, 4, Store(acc, (mt, nt, e), Const(0.0, "float32")), "unrolled"),
                             "unrolled"), "unrolled")
    # epilogue
    # each lane holds pairs of neighbouring columns (c0 c1, c2 c3): one 2-wide vector store per
    # pair when the row length keeps pairs aligned
    mt, nt, eh, ev = V("em"), V("en"), V("eh"), V("ev")
    g, t4 = lane // 4, lane % 4
    row = m0 + wi * wm_ + mt * 16 + g + eh * 8
    col = n0 + wj * wn_ + nt * 8 + t4 * 2 + ev
    # the fused epilogue (bias, activation, residual, scaling, cast) on the float32 value in registers
    cidx = c_index(bvars, row, col)
    store = Store(c, cidx, store_value(epilogue, acc[mt, nt, eh * 2 + ev], cidx, c.dtype))
    if raw is not None:  # the contraction's own result is an output too
        store = seq(Store(raw, cidx, store_value(None, acc[mt, nt, eh * 2 + ev], cidx, raw.dtype)), store)
    conds = []
    if p.m % bm:
        conds.append(row < p.m)
    if p.n % bn:
        conds.append(col < p.n)
    if conds:
        store = IfThenElse(conds[0] if len(conds) == 1 else conds[0] & conds[1], store)
    pair = For(ev, 2, store, "vectorized" if p.n % 2 == 0 else "unrolled")
    epi = For(mt, mt_n, For(nt, nt_n, For(eh, 2, pair, "unrolled"), "unrolled"), "unrolled")
    head, ws, red = [], None, None
    if split > 1:  # ranks 1..: partials to the workspace, then arrive; rank 0 waits, adds them, stores
        nvals, tiles_all = mt_n * nt_n * 4, tiles_m * tiles_n * nbatch
        tile_g = bz * (tiles_m * tiles_n) + tile_id if p.batch else tile_id
        ws, red = sk.workspace(prefix, split, tiles_all, 1, nvals, threads), sk.reduce_barrier(prefix)
        kw = dict(prefix=f"{prefix}_sk", drop=kn_drop, lanes=threads,
                  acc_index=lambda f: (f // (nt_n * 4), f // 4 % nt_n, f % 4))
        epi = IfThenElse(rank > 0, sk.publish(ws, acc, red, nvals, rank, tile_g, Const(0), tx, tiles_all, 1,
                                              group_sync=Barrier(), **kw),
                         seq(sk.gather(ws, acc, red, nvals, split, tile_g, Const(0), tx, tiles_all, 1, **kw), epi))
        # rank 0's barrier initialised (and published to the cluster) before any peer arrives
        head = [IfThenElse(tx.eq(0), seq(sk.init(red, split, 1), Intrinsic(mbarrier.FENCE_INIT, ()))),
                Intrinsic("barrier.cluster.arrive", ()), Intrinsic("barrier.cluster.wait", ())]
    body = seq(*head, zero, *prologue, main, epi)
    for buf in (fb, fa, acc):
        body = Allocate(buf, body)
    body = LetStmt(warp, tx // 32, LetStmt(lane, tx % 32, LetStmt(wi, warp // kn.warps_n, LetStmt(
        wj, warp % kn.warps_n, body))))
    body = For(tx, threads, body, "threadIdx.x")
    body = Allocate(sa, Allocate(sb, body if red is None else Allocate(red, body)))
    inner = tile_id % per_group
    body = LetStmt(gsize, minimum(Const(tiles_m) - first_m, Const(gm)), LetStmt(
        pm, first_m + inner % gsize, LetStmt(pn, inner // gsize, body)))
    if ws is not None:
        body = Allocate(ws, body)
    body = For(pid, tiles_m * tiles_n * split, body, "blockIdx.x")
    if p.batch:
        body = For(bz, nbatch, body, "blockIdx.y")
    smem = st * (bm + bn) * bk * 2
    return body, Launch((tiles_m * tiles_n * split, nbatch, 1), (threads, 1, 1), smem if smem > 48 * 1024 else 0,
                        (split, 1, 1))


def gemm_kernel(p: GemmProblem, kn: GemmKnobs | None = None, name: str = "gemm",
                epilogue: Epilogue | None = None, drop: tuple = ()) -> Kernel:
    """A whole GEMM kernel with parameters (A, B, C) as `GemmProblem.buffers` lays them out, then
    the buffers `epilogue` reads (its bias, residual...), applied before C's store."""
    kn = kn or default_knobs(p)
    a, b, c = p.buffers()
    nb = len(p.batch)

    def a_index(bv, m, k):
        return tuple(bv) + ((m, k) if p.a_kcontig else (k, m))

    def b_index(bv, n, k):
        return tuple(bv) + ((n, k) if p.b_kcontig else (k, n))

    def c_index(bv, m, n):
        return tuple(bv) + (m, n)

    assert len(a.shape) == nb + 2
    body, launch = build_gemm_body(p, kn, a, b, c, a_index, b_index, c_index, epilogue=epilogue, drop=drop)
    extra = epilogue.buffers if epilogue is not None else ()
    return Kernel(name, (a, b, c) + tuple(extra), body, target="cuda", launch=launch)


# -- the template (GemmPlan, gemm_plan, apply_gemm: tessel/schedules/gemm_plan.py) ---------------------

def _register_template():
    from tessel.schedules.template import Choice, Constraint, IntRange, Pow2, Template, register

    from tessel.schedules.gemm_plan import apply_gemm, gemm_plan

    def analyze(kernel, target):
        if "mma.sync" not in target.features:
            raise ScheduleError(f"target {target.target} has no mma.sync")
        return gemm_plan(kernel, allow_epilogue=True)

    def defaults(kernel, target, plan):
        from tessel.schedules.gemm_plan import mma_problem

        return default_knobs(mma_problem(plan), target.sm_count or 132).as_dict()

    def schedule(sch, knobs, ctx):
        sch.kernel = apply_gemm(sch.kernel, GemmKnobs.from_dict(knobs), ctx.info, ctx.target.shared_bytes)

    def knob_check(name):
        def check(ctx):
            kn = GemmKnobs.from_dict(ctx.knobs)
            for knob, msg in knob_problems(ctx.info.problem, kn, ctx.target.shared_bytes):
                if knob == name:
                    return msg
            if name == "split_k" and kn.split_k != 1 and "cluster" not in ctx.target.features:
                return "split-K reduces within a thread-block cluster (sm_90 and later)"
            return None
        return Constraint((name,), check, f"gemm {name}")

    names = [f.name for f in dataclasses.fields(GemmKnobs)]
    return register(Template(
        "gemm.mma_sync",
        [Pow2("bm", 16, 256, default=128), Pow2("bn", 16, 256, default=128), Pow2("bk", 16, 128, default=32),
         Pow2("warps_m", 1, 8, default=2), Pow2("warps_n", 1, 8, default=2), IntRange("stages", 2, 6, default=4),
         Choice("swizzle", ("rotate", "none")), Pow2("group_m", 1, 16, default=8),
         Choice("split_k", (1, 2, 4, 8), default=1),
         Choice("spread", (False, True))],
        schedule, analyze=analyze, defaults=defaults, constraints=[knob_check(n) for n in names],
        targets=("cuda",),
        doc="Tensor-core GEMM (mma.sync, sm_80+): built as IR by tessel.schedules.gemm from its knobs."))


GEMM_TEMPLATE = _register_template()

from tessel.schedules.gemm_plan import GemmPlan, apply_gemm, gemm_plan  # noqa: E402  (re-exported)

__all__ = ["GEMM_TEMPLATE", "GemmKnobs", "GemmPlan", "GemmProblem", "SHARED_LIMIT", "apply_gemm", "build_gemm_body",
           "check_knobs", "default_knobs", "gemm_kernel", "gemm_plan", "knob_problems", "registers"]
