"""Reusable Hopper (sm_90a) building blocks that emit IR: an mbarrier ring, TMA operand tiles in
128B-swizzled shared memory, a wgmma k-tile mainloop, an accumulator epilogue and the
warp-specialised role split. The GEMM template (gemm_hopper.py) is assembled from them; fused
attention and the FFT convolution are meant to reuse them.

Each function returns statements (tessel.ir.nodes) and states its contract: who executes it
(one thread, a warpgroup, every thread of the block) and what must hold before and after.
The intrinsics' IR forms are those of tessel.ir.intrinsics.{mbarrier, tma, wgmma, barriers}.

- `Ring`: S stages of full / empty mbarriers. Iteration i uses stage i % S with parity
  (i // S) % 2. Producer (one thread): `acquire(i)` (wait empty, parity flipped, so the first
  round passes on fresh barriers), then TMA loads completing on `full_ref(i)` after
  `commit(i, nbytes)` (arrive.expect_tx). Consumer (a warpgroup): `wait(i)` (wait full), read
  the stage, then one thread of each consumer warpgroup `release(i)` (arrive on empty, which
  counts `consumers` arrivals per phase).
- `OperandTiles`: a ring of `outer` x 64 (K) tiles of a 2-D global operand (K-major [outer][K]
  or MN-major [K][outer]) in 128B-swizzled shared memory, with its TMA loads (`load`) and its
  wgmma descriptor offsets (`desc_offset`, in 16-byte units from the ring's base descriptor).
- `wgmma_ktile` / `consumer_mainloop`: the wgmma k-steps of one k-tile (fence, BK/16 k-steps of
  m64nNk16 per 64-row sub-tile, commit), and the consumer loop over k-tiles keeping at most one
  wgmma group in flight: wait full[kt], issue kt, wait_group(1) (kt - 1 retired), release kt - 1.
- `store_accumulators`: each thread of a warpgroup stores its wgmma accumulators (f32, or cast),
  guarded at the edges, through an optional elementwise hook `fn(value, row, col)`.
- `warp_specialized`: warpgroup 0 lowers its registers (setmaxnreg.dec) and its thread 0 runs
  the producer; warpgroups 1.. raise theirs (setmaxnreg.inc) and run the consumer.

Example:
    >>> r = Ring.make("g", stages=3, consumers=2)
    >>> r.full.shape, r.empty.scope
    ((3,), 'shared')
    >>> from tessel.ir.nodes import Buffer
    >>> a = OperandTiles.make("g_a", Buffer("A", (256, 512), "bfloat16"), outer=128, kmajor=True, stages=3)
    >>> a.tile_bytes, a.lbo, a.sbo, a.tnsp
    (16384, 16, 1024, 0)
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.intrinsics import mbarrier, tma, wgmma
from tessel.ir.nodes import (
    Allocate, Buffer, BufferRef, Cast, Const, Expr, For, IfThenElse, Intrinsic, Select, Stmt, Store, Var, minimum, seq,
)

SWIZZLE = 128  # bytes: one swizzle atom row holds 64 bf16 / fp16 elements
ATOM_COLS = 64  # elements of a 2-byte dtype per 128-byte atom row
ATOM_BYTES = 8 * SWIZZLE  # 8 rows of 128 bytes: the unit the 128B swizzle repeats on
PRODUCER_REGS = 40
CONSUMER_REGS = {1: 240, 2: 232}  # per consumer-warpgroup count: 128 * (40 + n * r) <= 65536


def atom_cols(dtype: str) -> int:
    """Elements of `dtype` in one 128-byte swizzle atom row: a k-tile's width (64, or 32 for float32)."""
    return SWIZZLE // (4 if dtype == "float32" else 2)


def wgmma_tf32_name(n: int) -> str:
    """The tf32 wgmma's intrinsic name (m64nNk8, both operands K-major from descriptors)."""
    return f"wgmma.mma_async.sync.aligned.m64n{n}k8.f32.tf32.tf32"


def _c(v) -> Expr:
    return v if isinstance(v, Expr) else Const(int(v))


# -- the mbarrier ring ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ring:
    """S stages of full / empty mbarriers (see the module docstring). `drop` names waits to leave
    out ("full_wait", "empty_wait", "release"; "peer_release": in a cluster, release only this
    CTA's stage): the broken variants tests use."""

    full: Buffer
    empty: Buffer
    stages: int
    consumers: int
    drop: tuple = ()
    cluster: int = 1  # CTAs whose producers write this CTA's stages (TMA multicast): all must release

    @staticmethod
    def make(prefix: str, stages: int, consumers: int, drop: tuple = (), cluster: int = 1) -> "Ring":
        if stages < 1 or consumers < 1 or cluster < 1:
            raise ScheduleError(f"ring '{prefix}': needs stages, consumers and cluster >= 1, got {stages}, "
                                f"{consumers}, {cluster}")
        return Ring(Buffer(f"{prefix}_full", (stages,), "int64", "shared"),
                    Buffer(f"{prefix}_empty", (stages,), "int64", "shared"), stages, consumers, tuple(drop), cluster)

    def allocate(self, body: Stmt) -> Stmt:
        """`body` inside the allocations of the two barrier arrays."""
        return Allocate(self.full, Allocate(self.empty, body))

    def init(self, var_name: str = "ring_s") -> Stmt:
        """One thread: init full[s] (1 arrival: the producer's expect_tx) and empty[s] (`consumers`
        x `cluster` arrivals). A block barrier (a cluster barrier when cluster > 1) must follow
        before any other thread (or CTA) uses the ring."""
        s = Var(var_name)
        return seq(For(s, self.stages, seq(Intrinsic(mbarrier.INIT, (BufferRef(self.full, (s,)), Const(1))),
                                           Intrinsic(mbarrier.INIT, (BufferRef(self.empty, (s,)),
                                                                     Const(self._empty_count()))))),
                   Intrinsic(mbarrier.FENCE_INIT, ()))

    def _empty_count(self) -> int:
        return self.consumers * (1 if "peer_release" in self.drop else self.cluster)

    def stage(self, i) -> Expr:
        return _c(i) % self.stages if self.stages > 1 else Const(0)

    def parity(self, i) -> Expr:
        return (_c(i) // self.stages) % 2

    def full_ref(self, i) -> BufferRef:
        return BufferRef(self.full, (self.stage(i),))

    def empty_ref(self, i) -> BufferRef:
        return BufferRef(self.empty, (self.stage(i),))

    def acquire(self, i) -> Stmt:
        """Producer thread: wait until the consumers released stage i % S of round i // S - 1
        (passes at once in round 0)."""
        if "empty_wait" in self.drop:
            return seq()
        return Intrinsic(mbarrier.WAIT, (self.empty_ref(i), (self.parity(i) + 1) % 2))

    def commit(self, i, nbytes: int) -> Stmt:
        """Producer thread: arrive on full[i % S] expecting `nbytes` of copies (issue the TMA loads
        completing on `full_ref(i)` right after)."""
        return Intrinsic(mbarrier.ARRIVE_TX, (self.full_ref(i), Const(int(nbytes))))

    def wait(self, i) -> Stmt:
        """Consumer threads: wait until stage i % S holds iteration i's data."""
        if "full_wait" in self.drop:
            return seq()
        return Intrinsic(mbarrier.WAIT, (self.full_ref(i), self.parity(i)))

    def release(self, i) -> Stmt:
        """One thread per consumer warpgroup, after every read of stage i % S has retired. In a
        cluster it arrives on empty[i % S] of every CTA: each CTA's producer multicasts into all."""
        if "release" in self.drop:
            return seq()
        if self.cluster == 1 or "peer_release" in self.drop:  # (the broken variant: only this CTA's producer waits)
            return Intrinsic(mbarrier.ARRIVE, (self.empty_ref(i),))
        return seq(*[Intrinsic(mbarrier.ARRIVE_CLUSTER, (self.empty_ref(i), Const(r))) for r in range(self.cluster)])


# -- TMA operand tiles ------------------------------------------------------------------------------

@dataclass(frozen=True)
class OperandTiles:
    """A ring of `stages` tiles of `outer` rows (M or N) x 64 (K) elements of the 2-D global
    `tensor` (2-byte dtype) in 128B-swizzled shared memory, laid out as wgmma expects.

    K-major (`kmajor`: tensor [outer][K]): one TMA box (outer, 64) per tile; 8-row groups are
    1024 bytes apart (SBO), a k-step of 16 is +32 bytes. MN-major (tensor [K][outer]): outer / 64
    boxes (64 k-rows, 64 columns), atom j (columns 64j..) at +8 KB (LBO), 8 k-rows 1024 bytes
    apart (SBO), a k-step of 16 rows +2048 bytes. Tile `stage` starts at stage * tile_bytes."""

    smem: Buffer
    tensor: Buffer
    outer: int
    kmajor: bool
    stages: int

    @staticmethod
    def make(name: str, tensor: Buffer, outer: int, kmajor: bool, stages: int) -> "OperandTiles":
        if tensor.dtype not in ("float16", "bfloat16", "float32") or not 2 <= len(tensor.shape) <= 5:
            raise ScheduleError(f"operand '{tensor.name}': TMA tiles take a 2-D to 5-D float16 / bfloat16 / float32 "
                                f"tensor (leading dimensions: batch), got {tensor.dtype} {tensor.shape}")
        if tensor.dtype == "float32" and not kmajor:
            raise ScheduleError(f"operand '{tensor.name}': float32 (tf32) tiles must be K-major (wgmma reads tf32 "
                                f"operands K-major only)")
        if outer % 64 or not 64 <= outer <= 256:
            raise ScheduleError(f"operand '{tensor.name}': tile of {outer} rows; a multiple of 64 up to 256")
        cols = atom_cols(tensor.dtype)
        return OperandTiles(Buffer(f"{name}_s", (stages * outer * cols,), tensor.dtype, "shared"), tensor,
                            outer, kmajor, stages)

    @property
    def cols(self) -> int:
        """K elements per tile row: one 128-byte swizzle atom row (64 of a 2-byte type, 32 of float32)."""
        return atom_cols(self.tensor.dtype)

    @property
    def tile_elems(self) -> int:
        return self.outer * self.cols

    @property
    def tile_bytes(self) -> int:
        return self.outer * SWIZZLE

    @property
    def lbo(self) -> int:
        return 16 if self.kmajor else 64 * SWIZZLE  # MN-major: between 64-column atoms (64 k-rows each)

    sbo = ATOM_BYTES

    @property
    def tnsp(self) -> int:
        return 0 if self.kmajor else 1

    def load(self, stage, bar: BufferRef, outer0, k0, part=None, batch=()) -> list:
        """The producer thread's TMA loads of the tile at (outer0, k0) of the tensor into ring slot
        `stage`, completing on `bar` (`tile_bytes` in all; out-of-range elements arrive as zeros).
        `part=(rank, n)`: only part `rank` (an Expr) of n of the tile (rows for K-major, 64-column
        atoms for MN-major), multicast to the same slot and barrier of all n CTAs of the cluster.
        `batch`: the GEMM's batch indices (boxes of extent 1 there); a tensor with fewer leading
        dimensions takes the last ones (a weight shared by every batch takes none)."""
        base = _c(stage) * self.tile_elems
        nd = len(self.tensor.shape)
        if len(batch) < nd - 2:
            raise ScheduleError(f"operand '{self.tensor.name}': {nd - 2} batch indices needed, got {len(batch)}")
        batch = tuple(batch)[len(batch) - (nd - 2):]
        bidx, ones = tuple(_c(x) for x in batch), (Const(1),) * (nd - 2)
        if part is None:
            name, extra, rank, n = tma.tma_load_name(nd), (), Const(0), 1
        else:
            rank, n = part
            name, extra = tma.tma_load_name(nd, multicast=True), (Const((1 << n) - 1),)
        if self.kmajor:
            rows = self.outer // n
            r0 = _c(rank) * rows
            return [Intrinsic(name, (BufferRef(self.smem, (base + r0 * self.cols,)), bar,
                                     BufferRef(self.tensor, bidx + (_c(outer0) + r0, _c(k0)))) + ones
                              + (Const(rows), Const(self.cols), Const(SWIZZLE)) + extra)]
        per = self.outer // 64 // n
        out = []
        for jj in range(per):
            j = _c(rank) * per + jj
            out.append(Intrinsic(name, (BufferRef(self.smem, (base + j * (64 * ATOM_COLS),)), bar,
                                        BufferRef(self.tensor, bidx + (_c(k0), _c(outer0) + j * 64))) + ones
                                 + (Const(64), Const(ATOM_COLS), Const(SWIZZLE)) + extra))
        return out

    def base_desc(self, out: BufferRef, row0=0) -> Stmt:
        """Write the descriptor of slot 0, k 0, rows row0.. (a multiple of 64; may be an Expr)
        into the local int64 `out`. In both layouts rows row0.. start row0 * 64 elements in."""
        return Intrinsic(wgmma.DESC, (out, BufferRef(self.smem, (_c(row0) * self.cols,)), Const(self.lbo),
                                      Const(self.sbo), Const(SWIZZLE)))

    def desc_offset(self, stage, row0: int, ks: int) -> Expr:
        """Offset (16-byte units) from the base descriptor to the operand of rows row0.. (a
        multiple of 64 for MN-major, of 8 for K-major) at k-step `ks` of slot `stage`."""
        if self.kmajor:
            const = (row0 * SWIZZLE + ks * 32) // 16
        else:
            const = ((row0 // 64) * 64 * SWIZZLE + ks * 16 * SWIZZLE) // 16
        return _c(stage) * (self.tile_bytes // 16) + const


# -- the wgmma mainloop -----------------------------------------------------------------------------

def wgmma_ktile(acc: Buffer, n: int, dtype: str, a: OperandTiles, a_desc: Expr, b: OperandTiles, b_desc: Expr,
                stage, row0: int, m_tiles: int, first: Expr | None = None) -> Stmt:
    """One warpgroup: fence, then for each of the 4 k-steps of the k-tile in `stage` and each of
    `m_tiles` 64-row sub-tiles (A rows row0 + 64 mi ..) one wgmma m64nNk16 into
    acc[mi * n/2 ..], then commit the group. `first`: true on the first k-tile (the first k-step
    then overwrites the accumulators: scale_d = 0); None: always accumulate. float32 operands
    (K-major) run as tf32: 4 k-steps of m64nNk8 (32 bytes of K each, as a k16 step of 16-bit types)."""
    tf32 = dtype == "float32"
    name = wgmma_tf32_name(n) if tf32 else wgmma.wgmma_name(n, dtype)
    out = [Intrinsic(wgmma.FENCE, ())]
    for ks in range(SWIZZLE // 32):
        scale = Const(1) if (ks or first is None) else Select(first, Const(0), Const(1))
        for mi in range(m_tiles):
            da = a_desc + a.desc_offset(stage, row0 + 64 * mi, ks).astype("int64")
            db = b_desc + b.desc_offset(stage, 0, ks).astype("int64")
            flags = () if tf32 else (Const(a.tnsp), Const(b.tnsp))
            out.append(Intrinsic(name, (BufferRef(acc, (Const(mi * n // 2),)), da, db, scale) + flags))
    out.append(Intrinsic(wgmma.COMMIT, ()))
    return seq(*out)


def consumer_mainloop(ring: Ring, kt: Var, k_tiles, acc: Buffer, n: int, dtype: str, a: OperandTiles,
                      a_desc: Expr, b: OperandTiles, b_desc: Expr, row0: int, m_tiles: int, leader: Expr,
                      first_iter=0, drop: tuple = (), after_loop: Stmt | None = None) -> Stmt:
    """One consumer warpgroup's loop over `k_tiles` k-tiles (ring iterations first_iter + kt):
    wait full, issue the k-tile's wgmmas, wait_group(1) (the previous k-tile's group retired, so
    its stage is released by `leader`, one thread), and after the loop (`after_loop`, then)
    wait_group(0), release the last stage and fence the accumulators: they hold the tile's sums.
    The full-barrier waits are only exact when no other consumer of the ring is more than one
    round behind (parity aliases phases two apart): consumers that take turns on one ring must
    order their loops (gemm_hopper's pingpong passes the turn in `after_loop`).
    `drop` ("wgmma_wait"): leave out the in-loop wait_group (a broken variant for tests)."""
    it = _c(first_iter) + kt
    body = [ring.wait(it), wgmma_ktile(acc, n, dtype, a, a_desc, b, b_desc, ring.stage(it), row0, m_tiles,
                                       first=kt.eq(0))]
    if "wgmma_wait" not in drop:
        body.append(Intrinsic(wgmma.WAIT, (Const(1),)))
    body.append(IfThenElse(leader & (kt > 0), ring.release(it - 1)))
    tail = [Intrinsic(wgmma.WAIT, (Const(0),)), IfThenElse(leader, ring.release(_c(first_iter) + _c(k_tiles) - 1))]
    tail += [Intrinsic(wgmma.fence_acc_name(n), (BufferRef(acc, (Const(mi * n // 2),)),)) for mi in range(m_tiles)]
    return seq(For(kt, k_tiles, seq(*body)), *([after_loop] if after_loop is not None else []), *tail)


def tma_producer(ring: Ring, kt: Var, k_tiles, operands: list, first_iter=0, batch=(), k_first=0) -> Stmt:
    """The producer thread's loop: for each k-tile, acquire its stage, expect the bytes of every
    operand tile and issue their TMA loads. `operands`: [(OperandTiles, outer0)] or
    [(OperandTiles, outer0, part)] (`part` as in OperandTiles.load: this CTA loads its share and
    multicasts it; the stage's full barrier still expects the whole tile, the rest arriving from
    the other CTAs). k-tile kt covers K = 64 (k_first + kt) .. + 63 (`k_first`: a split-K rank's
    first k-tile). `batch`: the operands' batch indices."""
    it = _c(first_iter) + kt
    nbytes = sum(op[0].tile_bytes for op in operands)
    body = [ring.acquire(it), ring.commit(it, nbytes)]
    cols = operands[0][0].cols
    k0 = kt * cols if isinstance(k_first, int) and k_first == 0 else (_c(k_first) + kt) * cols
    for op in operands:
        tiles, outer0, part = (tuple(op) + (None,))[:3]
        body += tiles.load(ring.stage(it), ring.full_ref(it), outer0, k0, part, batch)
    return For(kt, k_tiles, seq(*body))


# -- the epilogue -----------------------------------------------------------------------------------

def store_accumulators(acc: Buffer, n: int, m_tiles: int, out: Buffer, row0, col0, lane: Expr,
                       m_limit: int | None = None, n_limit: int | None = None, fn=None, prefix: str = "epi",
                       index=None, guard=None) -> Stmt:
    """Every thread of one warpgroup (`lane` 0..127): store its accumulators of `m_tiles` stacked
    m64nN tiles to out[row0 + r, col0 + c] (wgmma accumulator layout), cast to out's dtype,
    skipping rows >= m_limit and columns >= n_limit (None: no guard). `fn(value, row, col)`:
    an elementwise hook on the float32 value (bias, activation). `index(row, col)`: out's
    indices (default (row, col)); `guard(row, col)`: a further condition for the store (an Expr,
    or None), e.g. an implicit-GEMM convolution's pixel inside the image."""
    mi, j, h, v = (Var(f"{prefix}_{x}") for x in ("mi", "j", "h", "v"))
    w, g, t = lane // 32, (lane % 32) // 4, lane % 4
    # element i = 4 j + 2 h + v of a tile: row 16 w + g + 8 h, column 8 j + 2 t + v; the pair v = 0, 1
    # is contiguous in out: a "vectorized" loop (one 8- or 4-byte store when aligned)
    row = _c(row0) + mi * 64 + w * 16 + g + h * 8
    col = _c(col0) + j * 8 + t * 2 + v
    val = acc[mi * (n // 2) + j * 4 + h * 2 + v]
    if fn is not None:
        val = fn(val, row, col)
    if out.dtype != "float32":
        val = Cast(out.dtype, val)
    st: Stmt = Store(out, index(row, col) if index else (row, col), val)
    conds = [x for x in ((row < m_limit) if m_limit is not None else None,
                         (col < n_limit) if n_limit is not None else None,
                         guard(row, col) if guard is not None else None) if x is not None]
    if conds:
        cond = conds[0]
        for x in conds[1:]:
            cond = cond & x
        st = IfThenElse(cond, st)
    st = For(v, 2, st, "vectorized")
    return For(mi, m_tiles, For(j, n // 8, For(h, 2, st, "unrolled"), "unrolled"), "unrolled")


def xor3(a: Expr, b: Expr) -> Expr:
    """a XOR b for 0 <= a, b < 8, in the IR's arithmetic (it has no bitwise operators): bit k of
    the result is (bit k of a + bit k of b) mod 2."""
    return sum((((a // (1 << k)) + (b // (1 << k))) % 2) * (1 << k) for k in range(3))


def store_accumulators_tma(acc: Buffer, n: int, m_tiles: int, out: Buffer, stage: Buffer, base: Expr, row0, col0,
                           lane: Expr, bar_id: Expr, fn=None, prefix: str = "epi", frag: Buffer | None = None,
                           drop: tuple = (), batch=(), m_limit: int | None = None, n_limit: int | None = None,
                           tma_box=None) -> list:
    """Every thread of one warpgroup (`lane` 0..127): its m_tiles stacked m64nN accumulator tiles
    go to out[row0 + r, col0 + c] through shared memory, 64 x 64 at a time: wait until the last
    TMA store has read the staging tile (thread 0: cp.async.bulk.wait_group.read 0, then named
    barrier `bar_id` of the 128 threads), cast (after `fn(value, row, col)`) and write the
    fragments with stmatrix.x4 into the 128B-swizzled staging tile stage[base .. base + 4096)
    (1024-byte aligned), fence.proxy.async, barrier, and thread 0 issues the TMA store (rows /
    columns outside `out` are not written: no guards) and commits it. `out` has a 16-bit dtype
    and rows a multiple of 16 bytes. Returns the statements and, last, thread 0's final
    wait_group 0 (put it where the stores must be complete: before the block exits).
    `frag`: the local buffer of 8 values (default: made here; allocate it around the result).
    `drop` ("store_wait", "store_barrier"): leave out the wait_group.read / the barrier between
    the stmatrix writes and the TMA store (broken variants for tests). `batch`: indices of out's
    leading (batch) dimensions. `m_limit` / `n_limit`: out's rows / columns where a tile crosses
    the edge: `fn` then sees indices clamped to them (its loads, e.g. a bias, stay in bounds; the
    TMA store drops the values computed there). `tma_box(mi, jc)`: (out's indices, box extents)
    of the TMA store of 64 x 64 tile (mi, jc) when out is not [batch.., rows, cols], e.g. a 4-D
    NHWC output whose 64 rows are 64 / bw rows of bw pixels (default: rows row0 + 64 mi, columns
    col0 + 64 jc, box 1 x .. x 64 x 64); the staging tile's 128-byte rows are the box's
    innermost-first order either way."""
    from tessel.ir.intrinsics.stmatrix import stmatrix_name

    frag = frag or Buffer(f"{prefix}_frag", (8,), out.dtype, "local")
    bidx, ones = tuple(_c(x) for x in batch), (Const(1),) * len(batch)
    lw = lane % 32
    w, g, t = lane // 32, lw // 4, lw % 4
    leader = lane.eq(0)
    sync = Intrinsic("bar.sync", (bar_id, Const(128)))
    body = []
    for mi in range(m_tiles):
        for jc in range(n // 64):
            if "store_wait" not in drop:
                body.append(IfThenElse(leader, Intrinsic(tma.WAIT_READ, (Const(0),))))
            body.append(sync)
            for j2 in range(4):
                # frag[2 m + v] = element (row 16 w + g + 8 (m % 2), column 8 (8 jc + 2 j2 + m // 2) + 2 t + v)
                e = Var(f"{prefix}_e{mi}_{jc}_{j2}")  # one loop variable per fill loop (loop names are unique)
                m, v = e // 2, e % 2
                jj = jc * 8 + j2 * 2 + m // 2
                h = m % 2
                val = acc[Const(mi * (n // 2)) + jj * 4 + h * 2 + v]
                if fn is not None:
                    r, cl = _c(row0) + mi * 64 + w * 16 + g + h * 8, _c(col0) + jj * 8 + t * 2 + v
                    r = r if m_limit is None else minimum(r, Const(m_limit - 1))
                    cl = cl if n_limit is None else minimum(cl, Const(n_limit - 1))
                    val = fn(val, r, cl)
                fill = For(e, 8, Store(frag, (e,), Cast(out.dtype, val)), "unrolled")
                # this lane addresses row lw % 8 of matrix lw // 8: tile row 16 w + 8 ((lw // 8) % 2) + lw % 8,
                # 16-byte chunk 2 j2 + lw // 16 of the 128-byte row, swizzled by the row (mod 8)
                row = w * 16 + ((lw // 8) % 2) * 8 + lw % 8
                chunk = xor3(Const(2 * j2) + lw // 16, lw % 8)
                dst = BufferRef(stage, (_c(base) + row * ATOM_COLS + chunk * 8,))
                body += [fill, Intrinsic(stmatrix_name(4, False), (dst, BufferRef(frag, (Const(0),))))]
            if tma_box is None:
                where, box = bidx + (_c(row0) + mi * 64, _c(col0) + jc * 64), ones + (Const(64), Const(ATOM_COLS))
            else:
                where, extents = tma_box(mi, jc)
                where, box = tuple(_c(x) for x in where), tuple(Const(int(e)) for e in extents)
            body += [Intrinsic(tma.FENCE, ())] + ([] if "store_barrier" in drop else [sync]) + [
                     IfThenElse(leader, seq(
                         Intrinsic(tma.tma_store_name(len(where)),
                                   (BufferRef(out, where), BufferRef(stage, (_c(base),))) + box + (Const(SWIZZLE),)),
                         Intrinsic(tma.COMMIT, ())))]
    return body + [IfThenElse(leader, Intrinsic(tma.WAIT, (Const(0),)))]


# -- roles ------------------------------------------------------------------------------------------

def warp_specialized(tid: Var, producer: Stmt, consumer, consumers: int,
                     producer_regs: int = PRODUCER_REGS, consumer_regs: int | None = None,
                     producer_after: Stmt | None = None) -> Stmt:
    """Every thread of a block of 128 * (1 + consumers): warpgroup 0 runs setmaxnreg.dec then
    `producer` on its thread 0 only (then `producer_after` on all its 128 threads, e.g. their
    part of a cluster barrier); warpgroup 1 + c runs setmaxnreg.inc then
    `consumer(c, lane)` (lane 0..127 within the warpgroup; Exprs)."""
    regs = consumer_regs or CONSUMER_REGS.get(consumers, 232)
    if 128 * (producer_regs + consumers * regs) > 65536:
        raise ScheduleError(f"warp_specialized: 128 x ({producer_regs} + {consumers} x {regs}) registers exceed "
                            f"the 65536-register file")
    prod = seq(Intrinsic("setmaxnreg.dec.sync.aligned.u32", (Const(producer_regs),)),
               IfThenElse(tid.eq(0), producer), *([producer_after] if producer_after is not None else []))
    ct = tid - 128
    cons = seq(Intrinsic("setmaxnreg.inc.sync.aligned.u32", (Const(regs),)), consumer(ct // 128, ct % 128))
    return IfThenElse(tid < 128, prod, cons)


__all__ = ["ATOM_BYTES", "ATOM_COLS", "CONSUMER_REGS", "OperandTiles", "PRODUCER_REGS", "Ring", "SWIZZLE", "atom_cols",
           "wgmma_tf32_name",
           "consumer_mainloop", "store_accumulators", "store_accumulators_tma", "tma_producer", "warp_specialized",
           "wgmma_ktile", "xor3"]
