"""Split-K for the warp-specialised Hopper skeleton (hopper_skeleton.py): the K loop of one output
tile is shared by the `split` CTAs of a thread-block cluster, which reduce their partial tiles
through a float32 workspace in global memory.

Why a cluster: CTAs of one cluster run together and reach each other's shared memory, so rank
0 can wait on an mbarrier that its peers arrive on remotely (`mbarrier.arrive.release.cluster`):
the reduction needs no atomics, no zero-filled buffer and no second kernel, and is deterministic
(rank 0 adds the partials in rank order). The interpreter runs a cluster's blocks together and
checks the order (blocks of different clusters are never ordered: a reduction across clusters
could not be checked there).

Per output tile (a cluster of `split` CTAs, launched along blockIdx.x; rank = blockIdx.x % split):
- rank r runs k-tiles [r * T // split, (r + 1) * T // split) of the T = ceil(K / 64) k-tiles
  (`k_range`; every rank gets at least one when split <= T: K need not divide);
- ranks 1.. store their float32 accumulators to the workspace (`publish`: each consumer thread
  its N/2 values per m64 tile in groups of 4: value 4 g + v of lane l at [g][l][v], so that
  each thread writes 16 contiguous bytes and a warp 512), pass a named barrier of their warpgroup,
  and its thread 0 arrives on rank 0's `reduce` mbarrier (one arrival per peer warpgroup);
- rank 0's consumer threads wait on that barrier (phase 0), add the partials of ranks 1, 2, ..
  to their accumulators (`gather`, the same layout: each thread reads back exactly what the
  same thread of each peer wrote) and store the tile through the usual epilogue (fused bias /
  activation, TMA store). The barrier's init is ordered before the peers' arrivals by the
  cluster barrier at the kernel's start.

The workspace is a `global` buffer the kernel allocates (`workspace`; the CUDA runtime allocates
it per launch): (split - 1) x tiles x consumers x values x 128 floats.

Memory order on the GPU: the peers' arrive is a release at cluster scope and rank 0's wait an
acquire at cluster scope (`mbarrier.try_wait.parity.acquire.cluster`), so the peers' workspace
stores happen before rank 0's loads in the PTX memory model.

Example:
    >>> from tessel.ir.nodes import Var
    >>> first, count = k_range(10, 4, Var("r"))
    >>> from tessel.ir.interp import interpret_expr
    >>> [(int(interpret_expr(first, {"r": r})), int(interpret_expr(count, {"r": r}))) for r in range(4)]
    [(0, 2), (2, 3), (5, 2), (7, 3)]
"""

from __future__ import annotations

from tessel.ir.intrinsics import mbarrier
from tessel.ir.nodes import Buffer, BufferRef, Const, Expr, For, IfThenElse, Intrinsic, Stmt, Store, Var, seq

MAX_SPLIT = 8  # CTAs per cluster (the portable limit)
WORKSPACE_SUFFIX = "_splitk_ws"  # generic_gpu lets templates leave a global buffer of this name: a per-launch workspace


def k_range(k_tiles: int, split: int, rank: Expr) -> tuple[Expr, Expr]:
    """(first k-tile, number of k-tiles) of `rank` when `k_tiles` are shared by `split` ranks as
    evenly as integers allow."""
    first = rank * k_tiles // split
    return first, (rank + 1) * k_tiles // split - first


def workspace(prefix: str, split: int, tiles: int, consumers: int, values: int, lanes: int = 128) -> Buffer:
    """The float32 workspace of ranks 1 .. split - 1 (see the module docstring): `consumers` groups
    of `lanes` threads per tile, `values` accumulators per thread."""
    return Buffer(f"{prefix}{WORKSPACE_SUFFIX}", ((split - 1) * tiles * consumers * values * lanes,), "float32",
                  "global")


def _slot(rank, tile, wg, tiles: int, consumers: int, values: int, lanes: int = 128) -> Expr:
    return ((((rank - 1) * tiles + tile) * consumers + wg) * values) * lanes


def _acc(acc: Buffer, acc_index, f):
    return acc[acc_index(f)] if acc_index is not None else acc[f]


def reduce_barrier(prefix: str) -> Buffer:
    """Rank 0's mbarrier (shared int64) that the peers' warpgroups arrive on."""
    return Buffer(f"{prefix}_reduce", (1,), "int64", "shared")


def init(bar: Buffer, split: int, consumers: int) -> Stmt:
    """One thread of every CTA (only rank 0's is used): expect one arrival per peer warpgroup."""
    return Intrinsic(mbarrier.INIT, (BufferRef(bar, (Const(0),)), Const((split - 1) * consumers)))


def publish(ws: Buffer, acc: Buffer, bar: Buffer, values: int, rank, tile, wg, lane, tiles: int, consumers: int,
            prefix: str = "sk", drop: tuple = (), lanes: int = 128, acc_index=None, group_sync=None) -> Stmt:
    """Every thread of a consumer warpgroup of rank `rank` >= 1: its `values` accumulators into
    the workspace, the warpgroup's named barrier 1 + wg, then thread 0 arrives on rank 0's reduce
    barrier. `drop` ("split_barrier": no named barrier, "split_arrive": no arrival). Other thread
    groups: `lanes` threads, `acc_index(flat value number)` -> the accumulator's index (a
    multi-dimensional register array), `group_sync` the statement ordering their stores (e.g. a
    block Barrier)."""
    i, v = Var(f"{prefix}_i"), Var(f"{prefix}_v")
    base = _slot(rank, tile, wg, tiles, consumers, values, lanes) + lane * 4
    out = [For(i, values // 4, For(v, 4, Store(ws, (base + i * (4 * lanes) + v,), _acc(acc, acc_index, i * 4 + v)),
                                   "vectorized"), "unrolled")]
    if "split_barrier" not in drop:
        out.append(group_sync if group_sync is not None else Intrinsic("bar.sync", (wg + 1, Const(128))))
    if "split_arrive" not in drop:
        out.append(IfThenElse(lane.eq(0), Intrinsic(mbarrier.ARRIVE_CLUSTER, (BufferRef(bar, (Const(0),)), Const(0)))))
    return seq(*out)


def gather(ws: Buffer, acc: Buffer, bar: Buffer, values: int, split: int, tile, wg, lane, tiles: int,
           consumers: int, prefix: str = "sk", drop: tuple = (), lanes: int = 128, acc_index=None) -> Stmt:
    """Every thread of a consumer warpgroup of rank 0: wait for the peers (a cluster-scope acquire;
    `drop` "split_wait": don't), then acc += the partials of ranks 1 .. split - 1, in rank order."""
    out = [] if "split_wait" in drop else [Intrinsic(mbarrier.WAIT_CLUSTER, (BufferRef(bar, (Const(0),)), Const(0)))]
    # a serial loop over the peers (an unrolled one let nvcc hoist all (split - 1) x values loads and
    # spill at split 8), the values unrolled: the accumulators stay registers
    r, i, v = Var(f"{prefix}_r"), Var(f"{prefix}_ai"), Var(f"{prefix}_av")
    base = _slot(r + 1, tile, wg, tiles, consumers, values, lanes) + lane * 4
    f = i * 4 + v
    idx = tuple(acc_index(f)) if acc_index is not None else (f,)
    add = Store(acc, idx, _acc(acc, acc_index, f) + ws[base + i * (4 * lanes) + v])
    out.append(For(r, split - 1, For(i, values // 4, For(v, 4, add, "vectorized"), "unrolled")))
    return seq(*out)


__all__ = ["MAX_SPLIT", "WORKSPACE_SUFFIX", "gather", "init", "k_range", "publish", "reduce_barrier", "workspace"]
