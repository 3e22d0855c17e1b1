"""The warp-specialised Hopper kernel skeleton that gemm.wgmma and the implicit-GEMM convolution
share: a grid of (persistent) blocks over output tiles, an mbarrier ring, a producer warpgroup
that fills it and one or two consumer warpgroups that run wgmma from it and store their tile.

What differs between the GEMM and the convolution is only where a k-tile comes from and where a
result goes; the caller says it with two functions:

- `produce(ring, lt, pm, pn, bv, part)`: the producer thread's loop over the k-tiles of output
  tile (pm, pn) of batch element `bv` (indices), ring iterations lt * k_tiles ..; `part`: for a
  2-CTA cluster, (this CTA's rank, 2): it loads its share of B's tile and multicasts it (None
  without a cluster). `tma_producer` (hopper_pieces) is the usual body.
- `store(acc, m_tiles, lt, pm, pn, bv, row0, wg, lane, frag, cstage)`: the statements that write
  consumer `wg`'s accumulators (rows row0.. of the tile, `m_tiles` stacked m64 tiles) once its
  k-loop is done; `frag` / `cstage`: the local fragment and the shared staging tile of the TMA
  store epilogue (kn.epilogue == "tma").

With `kn.split_k` = s > 1 (non-persistent, no multicast cluster) each tile is computed by a
cluster of s CTAs sharing its k-tiles and reducing through a global float32 workspace
(hopper_splitk.py); `produce` is then called with `krange=(first k-tile, count)` as a keyword
and `store` runs on rank 0 only, after the reduction.

Tiles are numbered over (batch, tile row, tile column), the rows in groups of `kn.group_m` (the
grouped order of gemm.mma_sync) so that blocks running together share operand rows in L2; a
persistent block takes tiles pid, pid + grid, ... and its ring runs on across them.

Example: see tessel.schedules.gemm_hopper.build_hopper_body, the GEMM built on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.ir.nodes import Allocate, Barrier, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, LetStmt, Var
from tessel.errors import ScheduleError
from tessel.ir.nodes import Launch, minimum, seq
from tessel.schedules import hopper_splitk as sk
from tessel.schedules.hopper_pieces import ATOM_COLS, Ring, consumer_mainloop, warp_specialized
from tessel.schedules.nest import unflatten_index


@dataclass(frozen=True)
class TileGrid:
    """Output tiles: `tiles_m` x `tiles_n` per element of the batch dimensions `batch`."""

    tiles_m: int
    tiles_n: int
    batch: tuple = ()

    @property
    def nbatch(self) -> int:
        out = 1
        for e in self.batch:
            out *= e
        return out


def warp_specialized_tiles(kn, tiles: TileGrid, k_tiles: int, at, bt, dtype: str, c_dtype: str, produce, store,
                           shared_bytes: int, prefix: str = "hg", drop: tuple = (), sms: int = 132):
    """The kernel's statement (a blockIdx.x loop) and its Launch. `kn`: the knobs of gemm.wgmma
    (bm, bn, stages, consumers, cluster, persistent, group_m, epilogue, pingpong); `at` / `bt`:
    the OperandTiles whose shared tiles the consumers' descriptors point into; `dtype`: the
    operands', `c_dtype`: the output's; `shared_bytes`: the block's dynamic shared memory (rings,
    staging, barriers). `drop`: synchronisation left out, as gemm_hopper.build_hopper_body says."""
    V = lambda s: Var(f"{prefix}_{s}")  # noqa: E731
    bn, nc = kn.bn, kn.consumers
    tiles_m, tiles_n, nbatch = tiles.tiles_m, tiles.tiles_n, tiles.nbatch
    per_batch = tiles_m * tiles_n
    tiles_all = per_batch * nbatch  # batches are tiles too: tile t of batch z is number z * per_batch + t
    cl = 2 if kn.cluster == "2x1" else 1
    split = getattr(kn, "split_k", 1)
    if split > 1 and (kn.persistent or cl > 1 or kn.pingpong):
        raise ScheduleError("hopper skeleton: split_k > 1 needs persistent=False, pingpong=False and cluster '1x1'")
    grid = max(cl, min(tiles_all, max(1, sms)) // cl * cl) if kn.persistent else tiles_all * split
    per_cta = -(-tiles_all // grid)
    pp = kn.pingpong  # consumer c takes the block's tiles lt = c, c + 2, ...: its own whole tiles
    rows_wg = kn.bm if pp else kn.bm // nc
    m_tiles = rows_wg // 64
    ring = Ring.make(prefix, kn.stages, 1 if pp else nc, drop, cluster=cl)
    pid, tid = V("pid"), V("tid")
    gm = min(kn.group_m, tiles_m)
    per_group = gm * tiles_n

    def over_tiles(tag, body_of, consumer=None):
        """body_of(lt, pm, pn, batch indices) for each output tile of this block: the block's tile lt
        (0 .. per_cta - 1) is tile pid + lt * grid, mapped to (batch, tile row, column)."""
        ltv = V(f"{tag}lt")
        lt = (ltv * 2 + consumer if consumer is not None else ltv) if kn.persistent else Const(0)
        tile_all = pid + lt * grid if kn.persistent else (pid // split if split > 1 else pid)
        tile = tile_all % per_batch if nbatch > 1 else tile_all
        bz = tile_all // per_batch
        bvars = unflatten_index(bz, tuple(tiles.batch))
        pm, pn, gs = V(f"{tag}pm"), V(f"{tag}pn"), V(f"{tag}gs")
        first_m = tile // per_group * gm
        inner = tile % per_group
        out = LetStmt(gs, minimum(Const(tiles_m) - first_m, Const(gm)),
                      LetStmt(pm, first_m + inner % gs,
                              LetStmt(pn, inner // gs, body_of(lt, pm, pn, tuple(bvars)))))
        if not kn.persistent:
            return out
        if tiles_all % grid or (consumer is not None and per_cta % 2):
            out = IfThenElse(tile_all < tiles_all, out)
        return For(ltv, -(-per_cta // 2) if consumer is not None else per_cta, out)

    # cluster 2x1: the pair's tiles are rows pm, pm + 1 of one column; each CTA loads half of B's
    # tile and multicasts it to both
    part = (pid % cl, cl) if cl > 1 else None
    rank = pid % split
    krange = sk.k_range(k_tiles, split, rank) if split > 1 else None
    kcount = krange[1] if split > 1 else k_tiles
    if split > 1:
        producer = over_tiles("p", lambda lt, pm, pn, bv: produce(ring, lt, pm, pn, bv, part, krange=krange))
    else:
        producer = over_tiles("p", lambda lt, pm, pn, bv: produce(ring, lt, pm, pn, bv, part))
    nvals = m_tiles * bn // 2
    ws = sk.workspace(prefix, split, tiles_all, nc, nvals) if split > 1 else None
    red = sk.reduce_barrier(prefix) if split > 1 else None
    acc = Buffer(f"{prefix}_acc", (m_tiles * bn // 2,), "float32", "local")
    da = Buffer(f"{prefix}_da", (1,), "int64", "local")
    db = Buffer(f"{prefix}_db", (1,), "int64", "local")
    wg, lane = V("wg"), V("lane")
    cstage = Buffer(f"{prefix}_cs", (nc * 64 * ATOM_COLS,), c_dtype, "shared")  # epilogue "tma": a 64x64 tile each
    frag = Buffer(f"{prefix}_frag", (8,), c_dtype, "local")

    def consumer(wg_expr, lane_expr):
        row0 = wg * rows_wg if nc > 1 and not pp else Const(0)

        def tile_body(lt, pm, pn, bv):
            turn = None
            if pp:  # take turns: wait for the other consumer's loop over tile lt - 1, pass the turn after ours
                turn = IfThenElse(pid + (lt + 1) * grid < tiles_all,  # the other has a tile lt + 1
                                  Intrinsic("bar.arrive", (4 - wg, Const(256))))
            main = consumer_mainloop(ring, V("ckt"), kcount, acc, bn, dtype, at, da[0], bt, db[0], 0,
                                     m_tiles, lane.eq(0), first_iter=lt * kcount, drop=drop, after_loop=turn)
            if pp and "turn" not in drop:
                main = seq(IfThenElse(lt > 0, Intrinsic("bar.sync", (3 + wg, Const(256)))), main)
            out = store(acc, m_tiles, lt, pm, pn, bv, row0, wg, lane, frag, cstage)
            out = seq(*(out if isinstance(out, (list, tuple)) else [out]))
            if split > 1:  # ranks 1..: partials to the workspace, then arrive; rank 0 waits, adds them, stores
                tile, skp = pid // split, f"{prefix}_sk"
                return seq(main, IfThenElse(rank > 0,
                                            sk.publish(ws, acc, red, nvals, rank, tile, wg, lane, tiles_all, nc,
                                                       skp, drop),
                                            seq(sk.gather(ws, acc, red, nvals, split, tile, wg, lane, tiles_all,
                                                          nc, skp, drop), out)))
            return seq(main, out)

        body = seq(at.base_desc(BufferRef(da, (Const(0),)), row0), bt.base_desc(BufferRef(db, (Const(0),))),
                   over_tiles("c", tile_body, wg if pp else None))
        body = Allocate(acc, Allocate(da, Allocate(db, Allocate(frag, body) if kn.epilogue == "tma" else body)))
        return LetStmt(wg, wg_expr, LetStmt(lane, lane_expr, body))

    roles = warp_specialized(tid, producer, consumer, nc)
    # (split-K's reduce barrier first: the ring's init ends with the fence that publishes inits to the cluster)
    init = ring.init(f"{prefix}_s") if red is None else seq(sk.init(red, split, nc), ring.init(f"{prefix}_s"))
    body = [IfThenElse(tid.eq(0), init)]
    cluster_sync = [Intrinsic("barrier.cluster.arrive", ()), Intrinsic("barrier.cluster.wait", ())]
    if "barrier" not in drop:  # the inits before any use (in a cluster: the peer's multicasts and arrivals too)
        body += cluster_sync if cl > 1 or split > 1 else [Barrier()]
    body.append(roles)
    if cl > 1:  # no CTA exits while its peer may still write its stages / arrive on its barriers
        body += cluster_sync
    threads = 128 * (1 + nc)
    blk = For(tid, threads, seq(*body), "threadIdx.x")
    blk = Allocate(at.smem, Allocate(bt.smem, ring.allocate(blk)))
    if kn.epilogue == "tma":
        blk = Allocate(cstage, blk)
    if ws is not None:
        blk = Allocate(ws, Allocate(red, blk))
    body = For(pid, grid, blk, "blockIdx.x")
    # dynamic shared memory (1024 bytes of slack for the swizzle atoms' alignment) only past the 48 KB a
    # block has without opting in: below it the printer declares the buffers statically, and a dynamic size
    # on top of them would double the request (the launch failed with CUDA_ERROR_INVALID_VALUE on the H200)
    smem = shared_bytes + 1024
    return body, Launch((grid, 1, 1), (threads, 1, 1), smem if smem > 48 * 1024 else 0, (max(cl, split), 1, 1))


__all__ = ["TileGrid", "warp_specialized_tiles"]
