"""IR constructors for the Hopper intrinsics, for templates (GEMM, attention, FFT): the calls
with their argument conventions filled in, the canonical descriptor strides of TMA-loaded
tiles, ring-buffer phases, and the accumulator epilogue store.

Shared tiles are 1-D shared buffers; a tile's element offset is where its first element sits.
Tile conventions (what the TMA box with a `swizzle`-byte swizzle writes, and wgmma reads):
- K-major (`major="k"`): rows of M (or N) with K contiguous; the tile is stored as atoms of
  `rows x (swizzle / itemsize)` elements, atom j (K elements j*W .. j*W+W-1, W = swizzle /
  itemsize) at offset j * rows * W. Descriptor: LBO 16 (unused), SBO 8 * swizzle.
- MN-major (`major="mn"`): K rows with M (or N) contiguous, atoms of `k_rows x W` elements
  along MN, atom j at offset j * k_rows * W. Descriptor: LBO k_rows * swizzle, SBO 8 * swizzle.
`k_step_bytes` gives the descriptor advance for the k-th 16-wide K step in either.

Example:
    >>> from tessel.ir.nodes import Buffer
    >>> bar = Buffer("full", (2,), "int64", "shared")
    >>> mbar_wait(bar, 1, 0).name
    'mbarrier.try_wait.parity.shared.b64'
    >>> k_step_bytes("k", 128, 5, rows=64), k_step_bytes("mn", 128, 5, rows=64)
    (8224, 10240)
"""

from __future__ import annotations

from tessel.errors import TesselError
from tessel.ir.intrinsics import mbarrier, tma, wgmma
from tessel.ir.nodes import Buffer, BufferRef, Const, Expr, For, IfThenElse, Intrinsic, Select, Store, Var, as_expr, seq

_ISZ = {"float16": 2, "bfloat16": 2, "float32": 4}


def ref(buf: Buffer, *idx) -> BufferRef:
    return BufferRef(buf, tuple(as_expr(i) for i in idx))


def mbar_init(bar: Buffer, i, count) -> Intrinsic:
    return Intrinsic(mbarrier.INIT, (ref(bar, i), as_expr(count)))


def mbar_arrive(bar: Buffer, i) -> Intrinsic:
    return Intrinsic(mbarrier.ARRIVE, (ref(bar, i),))


def mbar_arrive_tx(bar: Buffer, i, nbytes) -> Intrinsic:
    return Intrinsic(mbarrier.ARRIVE_TX, (ref(bar, i), as_expr(nbytes)))


def mbar_arrive_cluster(bar: Buffer, i, cta) -> Intrinsic:
    return Intrinsic(mbarrier.ARRIVE_CLUSTER, (ref(bar, i), as_expr(cta)))


def mbar_wait(bar: Buffer, i, parity) -> Intrinsic:
    return Intrinsic(mbarrier.WAIT, (ref(bar, i), as_expr(parity)))


def ring_slot(k: Expr, stages: int) -> tuple[Expr, Expr]:
    """(stage, parity) of iteration `k` of a `stages`-deep ring: consumers wait on full[stage]
    with `parity`, producers on empty[stage] with `1 - parity` (a fresh barrier's parity-1
    phase counts as complete, so the first round passes)."""
    return k % stages, (k // stages) % 2


def tma_load(dst: Buffer, dst_offset, bar: Buffer, bar_i, tensor: Buffer, coords, box, swizzle: int = 128,
             cta_mask=None) -> Intrinsic:
    """Load the `box` of `tensor` at `coords` (its index order) into `dst` at `dst_offset`."""
    if len(coords) != tensor.ndim or len(box) != tensor.ndim:
        raise TesselError(f"tma_load of '{tensor.name}': {tensor.ndim} coordinates and box dimensions needed")
    name = tma.tma_load_name(tensor.ndim, multicast=cta_mask is not None)
    args = (ref(dst, dst_offset), ref(bar, bar_i), ref(tensor, *coords), *[Const(int(b)) for b in box],
            Const(int(swizzle)))
    return Intrinsic(name, args + ((as_expr(cta_mask),) if cta_mask is not None else ()))


def tma_store(tensor: Buffer, coords, src: Buffer, src_offset, box, swizzle: int = 128) -> Intrinsic:
    return Intrinsic(tma.tma_store_name(tensor.ndim), (ref(tensor, *coords), ref(src, src_offset),
                                                       *[Const(int(b)) for b in box], Const(int(swizzle))))


def desc_strides(major: str, swizzle: int, rows: int | None = None, k_rows: int | None = None) -> tuple[int, int]:
    """(LBO, SBO) in bytes of a tile laid out as the module docstring says."""
    if major == "k":
        if swizzle == 0:
            if rows is None:
                raise TesselError("desc_strides: a K-major tile without swizzle needs `rows`")
            return rows * 16, 128  # core matrices (8 rows x 16 bytes) dense, K halves `rows * 16` apart
        return 16, 8 * swizzle
    if major == "mn":
        if not swizzle or k_rows is None:
            raise TesselError("desc_strides: an MN-major tile needs a swizzle and `k_rows`")
        return k_rows * swizzle, 8 * swizzle
    raise TesselError(f"desc_strides: major must be 'k' or 'mn', got {major!r}")


def smem_desc(out: Buffer, tile: Buffer, offset, major: str = "k", swizzle: int = 128, rows: int | None = None,
              k_rows: int | None = None) -> Intrinsic:
    """Write the descriptor of the tile at `tile[offset]` into local int64 `out[0]`."""
    lbo, sbo = desc_strides(major, swizzle, rows, k_rows)
    return Intrinsic(wgmma.DESC, (ref(out, 0), ref(tile, offset), Const(lbo), Const(sbo), Const(int(swizzle))))


def k_step_bytes(major: str, swizzle: int, ks, rows: int, dtype: str = "bfloat16"):
    """Byte offset of K step `ks` (16 elements) from the tile's start (an int or an expression).
    K-major: 32 bytes within a swizzle row, then whole atoms of `rows` rows; MN-major: 16 rows
    of `swizzle` bytes."""
    w = swizzle // _ISZ[dtype] if swizzle else 8
    per_atom = w // 16 if swizzle else 1
    if major == "k":
        if not swizzle:
            return ks * 2 * rows * 16
        return (ks % per_atom) * 32 + (ks // per_atom) * (rows * swizzle)
    return ks * 16 * swizzle


def desc_plus(desc: Expr, nbytes) -> Expr:
    """A descriptor moved by `nbytes` (a multiple of 16) along the start address."""
    step = as_expr(nbytes) // 16 if not isinstance(nbytes, int) else Const(nbytes // 16)
    return desc + step.astype("int64")


def wgmma_ss(acc: Buffer, a_desc: Expr, b_desc: Expr, n: int, dtype: str, scale_d, tnsp_a: int = 0,
             tnsp_b: int = 0) -> Intrinsic:
    """D (acc) = A . B + (scale_d ? D : 0), both operands from descriptors."""
    return Intrinsic(wgmma.wgmma_name(n, dtype), (ref(acc, 0), a_desc, b_desc, _flag(scale_d), Const(tnsp_a),
                                                  Const(tnsp_b)))


def wgmma_rs(acc: Buffer, a_frag: Buffer, b_desc: Expr, n: int, dtype: str, scale_d, tnsp_b: int = 0) -> Intrinsic:
    """As wgmma_ss with A from registers (8 values per thread, wgmma.A_FRAGMENT)."""
    return Intrinsic(wgmma.wgmma_name(n, dtype, True), (ref(acc, 0), ref(a_frag, 0), b_desc, _flag(scale_d),
                                                        Const(tnsp_b)))


def _flag(v):
    v = as_expr(v)
    return Select(v, Const(1), Const(0)) if v.dtype == "bool" else v


def wgmma_fence() -> Intrinsic:
    return Intrinsic(wgmma.FENCE, ())


def wgmma_commit() -> Intrinsic:
    return Intrinsic(wgmma.COMMIT, ())


def wgmma_wait(n: int = 0) -> Intrinsic:
    return Intrinsic(wgmma.WAIT, (Const(int(n)),))


def fence_acc(acc: Buffer, n: int) -> Intrinsic:
    return Intrinsic(wgmma.fence_acc_name(n), (ref(acc, 0),))


def acc_store(out: Buffer, acc: Buffer, lane: Expr, n: int, row0=0, col0=0, rows=None, cols=None, value=None,
              name: str = "acc_e") -> For:
    """Store a thread's m64nN accumulators into the 2-D `out` at (row0, col0) + their layout
    position (`lane` = the thread's index in its warpgroup). `rows` / `cols` (expressions) guard
    the edges; `value(v, r, c)` maps each value first (epilogue: bias, activation, cast)."""
    i = Var(name)
    w, g, t = lane // 32, (lane % 32) // 4, lane % 4
    r = as_expr(row0) + w * 16 + g + ((i // 2) % 2) * 8
    col = as_expr(col0) + (i // 4) * 8 + t * 2 + i % 2
    v = acc[i] if value is None else value(acc[i], r, col)
    if v.dtype != out.dtype:
        v = v.astype(out.dtype)
    body = Store(out, (r, col), v)
    cond = None
    if rows is not None:
        cond = r < rows
    if cols is not None:
        cond = (col < cols) if cond is None else (cond & (col < cols))
    return For(i, n // 2, body if cond is None else IfThenElse(cond, body), "unrolled")




def ring_producer(k_tiles, stages: int, full: Buffer, empty: Buffer, tx_bytes: int, loads, name: str = "kt") -> For:
    """The producer's loop of a `stages`-deep TMA ring (run it in one thread): for tile kt in
    stage s, wait empty[s], expect `tx_bytes` on full[s], issue `loads(kt, s)` (TMA loads that
    complete on full[s])."""
    kt = Var(name)
    s, parity = ring_slot(kt, stages)
    return For(kt, as_expr(k_tiles), seq(mbar_wait(empty, s, 1 - parity), mbar_arrive_tx(full, s, tx_bytes),
                                         *loads(kt, s)))


def ring_consumer(k_tiles, stages: int, full: Buffer, empty: Buffer, compute, release_if: Expr,
                  name: str = "kt") -> For:
    """The consumer's loop: wait full[s], `compute(kt, s)` (wgmmas, their commit and wait), then
    the thread for which `release_if` holds arrives on empty[s] (after the wait, so the
    tensor cores are done reading the stage)."""
    kt = Var(name)
    s, parity = ring_slot(kt, stages)
    return For(kt, as_expr(k_tiles), seq(mbar_wait(full, s, parity), *compute(kt, s),
                                         IfThenElse(release_if, mbar_arrive(empty, s))))


def epilogue_stmatrix(acc: Buffer, frag: Buffer, tile: Buffer, lane: Expr, n: int, dtype: str = "bfloat16",
                      name: str = "ep_j") -> For:
    """Convert a thread's m64nN accumulators to `dtype` and stmatrix.x4 them into `tile`, a
    shared 64 x n tile laid out as TMA's 128B-swizzled boxes of 64 x 64 (atom a = columns
    64a.. at element 64 * 64 * a; row r's 16-byte chunk q at chunk q ^ (r % 8)). Then a
    fence.proxy.async, a barrier of the warpgroup and one TMA store per atom write it out.
    `frag` is a local buffer of 8 `dtype` values. Lane l of warp w gives the row of matrix
    m = (l % 32) // 8: row 16w + 8 (m % 2) + l % 8, columns 8 (2 jj + m // 2)."""
    from tessel.ir.intrinsics.stmatrix import stmatrix_name
    if n % 16:
        raise TesselError(f"epilogue_stmatrix: N = {n} must be a multiple of 16")
    jj, e = Var(name), Var(name + "_e")
    w, ln = lane // 32, lane % 32
    m = ln // 8
    r = w * 16 + (m % 2) * 8 + ln % 8
    col = (jj * 2 + m // 2) * 8
    offset = (col // 64) * 4096 + r * 64 + _xor((col % 64) // 8, r % 8) * 8
    cvt = For(e, 8, Store(frag, (e,), acc[jj * 8 + e].astype(dtype)), "unrolled")
    return For(jj, n // 16, seq(cvt, Intrinsic(stmatrix_name(4, False), (ref(tile, offset), ref(frag, 0)))),
               "unrolled")


def _xor(a: Expr, b: Expr) -> Expr:
    """a ^ b for 3-bit values (the IR has no xor): sum over bits of |bit_a - bit_b| * 2^i."""
    out = None
    for i in range(3):
        ba, bb = (a // (1 << i)) % 2, (b // (1 << i)) % 2
        term = (ba + bb - ba * bb * 2) * (1 << i)
        out = term if out is None else out + term
    return out


def tma_store_tile(tensor: Buffer, row0, col0, tile: Buffer, n: int) -> list:
    """TMA stores of a 64 x n shared tile (atoms of 64 x 64, 128B swizzle) to `tensor` at
    (row0, col0), committed and waited for (rows / columns past the tensor are not written)."""
    from tessel.ir.intrinsics import tma as _tma

    out = [tma_store(tensor, (row0, as_expr(col0) + 64 * a), tile, 4096 * a, (64, 64), 128) for a in range(n // 64)]
    return out + [Intrinsic(_tma.COMMIT, ()), Intrinsic(_tma.WAIT, (Const(0),))]


def acc_to_a_fragment(acc: Buffer, frag: Buffer, kk, dtype: str = "bfloat16", value=None, name: str = "af_e") -> For:
    """The A operand (registers) of an RS wgmma for K step `kk` from an m64nN accumulator: columns
    16 kk .. 16 kk + 15 of the accumulator are exactly elements 8 kk .. 8 kk + 7 of each thread, in
    the A fragment's order (attention's P . V reuses the scores this way). `value(v)` maps each
    value before the cast (softmax's exp)."""
    e = Var(name)
    v = acc[as_expr(kk) * 8 + e]
    v = v if value is None else value(v)
    return For(e, 8, Store(frag, (e,), v.astype(dtype)), "unrolled")


__all__ = ["acc_store", "acc_to_a_fragment", "desc_plus", "desc_strides", "epilogue_stmatrix", "fence_acc",
           "k_step_bytes", "mbar_arrive", "mbar_arrive_cluster", "mbar_arrive_tx", "mbar_init", "mbar_wait", "ref",
           "ring_consumer", "ring_producer", "ring_slot", "smem_desc", "tma_load", "tma_store", "tma_store_tile",
           "wgmma_commit", "wgmma_fence", "wgmma_rs", "wgmma_ss", "wgmma_wait"]
