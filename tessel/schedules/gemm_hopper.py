"""The Hopper GEMM template 'gemm.wgmma' (sm_90a): TMA + mbarrier ring + wgmma, warp-specialised,
built as IR from the pieces of tessel.schedules.hopper_pieces.

C[b.., i, j] = sum_k f32(A[b.., i, k]) * f32(B[b.., k, j]), A and B float16 or bfloat16 (each
stored K-major or MN-major: `GemmProblem.a_kcontig` / `b_kcontig`), up to 3 batch dimensions
(3-D to 5-D TMA boxes; each batch's tiles are tiles of the grid), any M, N and K whose
contiguous extents are multiples of 8 (TMA needs 16-byte row pitches), accumulated in float32
and stored as C's dtype. float32 A and B (both K-major) run on tf32 wgmma (m64nNk8, k-tiles of 32)
only with `allow_tf32` — the separate, opt-in template 'gemm.wgmma_tf32' (never a default choice).

A block computes a BM x BN tile of C (`persistent`: a grid of min(tiles, SMs) blocks, block b
taking tiles b, b + grid, ...; its ring runs on across them, so the producer fetches the next
tile's k-tiles while the consumers store the last one) with 128 * (1 + consumers) threads:
- warpgroup 0, the producer: setmaxnreg.dec to 40 registers; its thread 0 loops over the k-tiles
  (BK = 64: one 128-byte swizzle atom of 2-byte elements), acquiring ring stage kt % stages
  (empty barrier), expecting the tile bytes on the full barrier and issuing the TMA loads of
  A's BM x 64 and B's 64 x BN tiles (out-of-range rows / columns / k arrive as zeros: edges
  cost nothing in the main loop);
- warpgroups 1.. (`consumers`, 1 or 2), setmaxnreg.inc: consumer c owns rows
  c * BM / consumers .. of the tile as BM / (64 consumers) stacked m64nBNk16 accumulators; per
  k-tile it waits on the full barrier, issues 4 k-steps of wgmma from shared-memory descriptors,
  commits, waits until at most one group is in flight and releases the previous stage;
- epilogue: each consumer thread stores its accumulators (cast to C's dtype) directly to
  global memory, guarded at the M / N edges.
Blocks are ordered in groups of `group_m` tile rows (as gemm.mma_sync does) for L2 reuse.

Knobs (`HopperKnobs`): bm (64..256, a multiple of 64 * consumers), bn (64..256 step 64), bk (64),
stages, consumers (1, 2), cluster ("1x1", or "2x1": CTA pairs along M, each loading half of the
shared B tile and multicasting it; every consumer releases a stage in both CTAs), persistent,
group_m, split_k (1..8: a cluster of split_k CTAs shares each tile's k-tiles and rank 0 reduces
their float32 partials from a global workspace: hopper_splitk.py; non-persistent, no multicast;
`default_split_k` is the default's rule). `check_knobs` raises ScheduleError naming the knob (shared memory, registers,
divisibility) and the problem's own limits (dtype, TMA alignment, sm_90a).

Example:
    >>> from tessel.schedules.gemm import GemmProblem
    >>> p = GemmProblem(m=128, n=64, k=128, dtype="bfloat16", b_kcontig=False)
    >>> k = hopper_gemm_kernel(p, HopperKnobs(bm=64, bn=64, stages=2, consumers=1))
    >>> k.launch.grid, k.launch.block
    ((2, 1, 1), (256, 1, 1))
    >>> import ml_dtypes, numpy as np; from tessel.ir.interp import run
    >>> rng = np.random.default_rng(0)
    >>> a = rng.standard_normal((128, 128)).astype(ml_dtypes.bfloat16)
    >>> b = rng.standard_normal((128, 64)).astype(ml_dtypes.bfloat16)
    >>> c = np.zeros((128, 64), np.float32); run(k, a, b, c)
    >>> bool(np.allclose(c, a.astype(np.float32) @ b.astype(np.float32), atol=1e-3))
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.nodes import Buffer, Kernel, Var
from tessel.schedules.epilogue import Epilogue
from tessel.schedules.gemm import GemmProblem
from tessel.schedules.hopper_pieces import (
    ATOM_COLS, CONSUMER_REGS, OperandTiles, atom_cols, store_accumulators, store_accumulators_tma, tma_producer,
)
from tessel.schedules.hopper_skeleton import TileGrid, warp_specialized_tiles
from tessel.schedules.hopper_splitk import MAX_SPLIT

SHARED_LIMIT = 227 * 1024
ACC_HEADROOM = 48  # registers a consumer needs besides its accumulators (descriptors, addresses, loop)


@dataclass(frozen=True)
class HopperKnobs:
    """The knobs of 'gemm.wgmma' (module docstring); `as_dict` / `from_dict` for traces."""

    bm: int = 128
    bn: int = 128
    bk: int = 64
    stages: int = 4
    consumers: int = 2
    cluster: str = "1x1"
    persistent: bool = False
    group_m: int = 8
    epilogue: str = "direct"  # "direct" (guarded global stores) or "tma" (stmatrix + TMA store, 16-bit C)
    pingpong: bool = False  # persistent, 2 consumers: each takes whole tiles in turn (else both share each tile)
    split_k: int = 1  # CTAs (one cluster) sharing each tile's k-tiles, reduced through a workspace (hopper_splitk)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "HopperKnobs":
        from tessel.schedules.knobs import knobs_from_dict

        return knobs_from_dict(HopperKnobs, d, "gemm.wgmma")


def shared_bytes(kn: HopperKnobs) -> int:
    """Dynamic shared memory of a block: the A and B rings plus the barriers."""
    staging = kn.consumers * 64 * ATOM_COLS * 2 if kn.epilogue == "tma" else 0
    return kn.stages * (kn.bm + kn.bn) * ATOM_COLS * 2 + staging + 16 * kn.stages


def acc_registers(kn: HopperKnobs) -> int:
    """float32 accumulators per consumer thread: (bm / consumers / 64) m64 tiles of bn / 2 (with
    pingpong, bm / 64: each consumer holds a whole tile)."""
    return max(1, kn.bm // (1 if kn.pingpong else max(1, kn.consumers)) // 64) * kn.bn // 2


def problem_issues(p: GemmProblem, arch: str = "sm_90a", allow_tf32: bool = False) -> list:
    """What keeps problem `p` off this template (not a knob's fault), as phrases. float32
    operands run as tf32 (10-bit mantissa) and only with `allow_tf32` (the user's permission)."""
    out = []
    if arch != "sm_90a":
        out.append(f"wgmma and setmaxnreg need sm_90a, not {arch}")
    if p.dtype == "float32":
        if not allow_tf32:
            out.append("operands are float32: wgmma runs them only as tf32 (10-bit mantissa), which needs "
                       "allow_tf32=True (template gemm.wgmma_tf32)")
        elif not (p.a_kcontig and p.b_kcontig):
            out.append(f"tf32 wgmma reads K-major operands only: A must be stored [M][K] and B [N][K] (A is "
                       f"{'K' if p.a_kcontig else 'M'}-major, B {'K' if p.b_kcontig else 'N'}-major)")
    elif p.dtype not in ("float16", "bfloat16"):
        out.append(f"operands are {p.dtype}; wgmma here takes float16 or bfloat16 (float32 as tf32)")
    per16 = 4 if p.dtype == "float32" else 8  # elements in 16 bytes
    if len(p.batch) > 3:
        out.append(f"{len(p.batch)} batch dimensions: TMA boxes have at most 5 dimensions (3 batch)")
    for what, ext in (("K (A's contiguous extent)" if p.a_kcontig else "M (A's contiguous extent)",
                       p.k if p.a_kcontig else p.m),
                      ("K (B's contiguous extent)" if p.b_kcontig else "N (B's contiguous extent)",
                       p.k if p.b_kcontig else p.n)):
        if ext % per16:
            out.append(f"{what} = {ext} is not a multiple of {per16}: TMA needs 16-byte row pitches")
    if p.out_dtype not in ("float32", "float16", "bfloat16"):
        out.append(f"output dtype {p.out_dtype}: float32, float16 or bfloat16")
    return out


def knob_problems(p: GemmProblem, kn: HopperKnobs, shared_limit: int = SHARED_LIMIT) -> list:
    """[(knob, what is wrong)] for knob values that cannot run problem `p` (empty when they can)."""
    out = []
    if kn.bk != atom_cols(p.dtype):
        out.append(("bk", f"must be {atom_cols(p.dtype)}: one 128-byte swizzle atom of {p.dtype} elements per k-tile"))
    if kn.consumers not in (1, 2):
        out.append(("consumers", "must be 1 or 2 consumer warpgroups"))
        return out
    per = 1 if kn.pingpong is True else kn.consumers  # warpgroups sharing a tile's rows
    if not isinstance(kn.bm, int) or kn.bm % (64 * per) or not 64 <= kn.bm <= 256:
        out.append(("bm", f"must be a multiple of {64 * per} (m64 wgmma tiles for each of the {per} consumer "
                          f"warpgroup(s) sharing a tile), at most 256 (a TMA box)"))
    if not isinstance(kn.bn, int) or kn.bn % 64 or not 64 <= kn.bn <= 256:
        out.append(("bn", "must be 64, 128, 192 or 256 (wgmma N <= 256, 64-column TMA atoms)"))
    if not isinstance(kn.stages, int) or kn.stages < 2:
        out.append(("stages", "needs at least 2 (the producer loads one stage while the consumers read another)"))
    if kn.cluster not in ("1x1", "2x1"):
        out.append(("cluster", "must be '1x1' or '2x1' (two CTAs along M sharing B's tile by TMA multicast)"))
    elif kn.cluster == "2x1" and isinstance(kn.bm, int) and kn.bm > 0:
        tiles_m = -(-p.m // kn.bm)
        if tiles_m % 2:
            out.append(("cluster", f"'2x1' pairs tile rows: M / bm = {tiles_m} tile rows is odd"))
        elif isinstance(kn.group_m, int) and kn.group_m < 2:
            out.append(("cluster", "'2x1' needs group_m >= 2 (the pair's tiles must be one column's rows)"))
        elif not p.b_kcontig and isinstance(kn.bn, int) and kn.bn % 128:
            out.append(("cluster", f"'2x1' splits B's {kn.bn // 64} 64-column atoms between the two CTAs: bn must "
                                   f"be 128 or 256"))
    if not isinstance(kn.persistent, bool):
        out.append(("persistent", "must be True or False"))
    if not isinstance(kn.group_m, int) or kn.group_m < 1 or kn.group_m & (kn.group_m - 1):
        out.append(("group_m", "must be a power of two"))
    if not isinstance(kn.pingpong, bool):
        out.append(("pingpong", "must be True or False"))
    elif kn.pingpong and not (kn.persistent is True and kn.consumers == 2):
        out.append(("pingpong", "needs persistent=True and consumers=2 (the two take a block's tiles in turn)"))
    if kn.epilogue not in ("direct", "tma"):
        out.append(("epilogue", "must be 'direct' or 'tma'"))
    elif kn.epilogue == "tma" and p.out_dtype not in ("float16", "bfloat16"):
        out.append(("epilogue", f"'tma' stages C through stmatrix (16-bit values); C is {p.out_dtype}"))
    elif kn.epilogue == "tma" and p.n % 8:
        out.append(("epilogue", f"'tma' needs C's rows (N = {p.n}) a multiple of 16 bytes"))
    out += _split_problems(p, kn)
    if out:
        return out
    smem = shared_bytes(kn)
    if smem > shared_limit:
        out.append(("stages", f"{kn.stages} stages of {kn.bm}x64 + {kn.bn}x64 tiles take {smem} bytes of shared "
                              f"memory; the target allows {shared_limit}"))
    regs = acc_registers(kn) + ACC_HEADROOM
    cap = CONSUMER_REGS[kn.consumers]
    if regs > cap:
        out.append(("bn", f"{acc_registers(kn)} accumulators per consumer thread (+{ACC_HEADROOM}) exceed the "
                          f"{cap} registers a consumer warpgroup gets (raise consumers or lower bm / bn)"))
    return out


def _split_problems(p: GemmProblem, kn: HopperKnobs) -> list:
    s = kn.split_k
    if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= MAX_SPLIT:
        return [("split_k", f"must be an integer 1..{MAX_SPLIT} (the CTAs of one cluster)")]
    if s == 1:
        return []
    if kn.persistent is not False or kn.pingpong is not False or kn.cluster != "1x1":
        return [("split_k", "needs persistent=False, pingpong=False and cluster='1x1' (the split's CTAs are the "
                            "cluster; each takes one tile)")]
    k_tiles = -(-p.k // atom_cols(p.dtype))
    if s > k_tiles:
        return [("split_k", f"{s} CTAs share K = {p.k}, only {k_tiles} k-tiles of 64: each needs at least one")]
    return []


def check_knobs(p: GemmProblem, kn: HopperKnobs, arch: str = "sm_90a", shared_limit: int = SHARED_LIMIT,
                allow_tf32: bool = False) -> None:
    """Raise ScheduleError naming the knob (or the problem) when `kn` cannot run `p` on `arch`."""
    issues = problem_issues(p, arch, allow_tf32)
    if issues:
        raise ScheduleError(f"gemm.wgmma: {issues[0]}")
    bad = knob_problems(p, kn, shared_limit)
    if bad:
        knob, msg = bad[0]
        raise ScheduleError(f"gemm.wgmma knob {knob}={getattr(kn, knob)!r}: {msg}")


def default_knobs(p: GemmProblem, sms: int = 132, split_k: int | None = None) -> HopperKnobs:
    """128 x 256 tiles, 2 consumers, 4 stages when the grid still fills the GPU; else 128 x 128
    (5 stages), else 64 x 128, else 64 x 64 with one consumer. Persistent blocks, and the stmatrix + TMA-store
    epilogue where C allows it (16-bit, rows of 16-byte multiples): on the H200 (13:30 run,
    bf16, against torch.matmul in the same run) 128x256 went from 0.90x / 0.95x (non-persistent,
    direct stores) to 1.01x / 1.01x at 4096^3 / 8192^3. Skinny and small-MN large-K problems
    split K instead (`default_split_k`: 128 x 128 tiles, non-persistent, clusters of split_k CTAs).
    `split_k`: force it (1: the tile rule without split-K; bench/gemm.py --split-k compares)."""
    nbatch = 1
    for e in p.batch:
        nbatch *= e
    epi = "tma" if p.out_dtype in ("float16", "bfloat16") and p.n % 8 == 0 else "direct"
    # the first tile whose grid (nearly) fills the GPU (skinny and small problems take smaller tiles, so that
    # e.g. 128 x 8192 x 8192 runs 128 blocks of 64 x 128 rather than 64 of 128 x 128; not measured yet)
    split = default_split_k(p, sms) if split_k is None else split_k
    if split > 1:
        bm = 128 if p.m > 64 else 64
        return HopperKnobs(bm=bm, bn=128, bk=atom_cols(p.dtype), stages=5 if bm == 128 else 6, consumers=bm // 64,
                           persistent=False, epilogue=epi, split_k=split)
    candidates = [(128, 256, 2, 4), (128, 128, 2, 5), (64, 128, 1, 6), (64, 64, 1, 6)]
    bm, bn, nc, st = next((c for c in candidates if (c[1] <= 128 or p.n >= 256)
                           and nbatch * -(-p.m // c[0]) * -(-p.n // c[1]) >= 0.9 * sms), candidates[-1])
    return HopperKnobs(bm=bm, bn=bn, bk=atom_cols(p.dtype), stages=st, consumers=nc, persistent=True, epilogue=epi)


def default_split_k(p: GemmProblem, sms: int = 132) -> int:
    """The default split-K rule (skinny and small-MN, large-K problems): with tiles of 128 x 128
    (64 x 128 when M <= 64), split the K loop of each tile over s CTAs (one cluster) when the
    tiles fill at most half of the `sms` multiprocessors and K has at least 16 k-tiles of 64;
    s is the largest of 8, 6, 4, 3, 2 that keeps tiles x s <= sms and at least 8 k-tiles per CTA.
    Otherwise 1 (no split). Not measured yet (bench/gemm.py --split-k compares).

    >>> default_split_k(GemmProblem(128, 8192, 8192, "bfloat16")), default_split_k(GemmProblem(4096, 4096, 4096))
    (2, 1)
    >>> default_split_k(GemmProblem(512, 512, 16384, "bfloat16"))
    8
    """
    nbatch = 1
    for e in p.batch:
        nbatch *= e
    k_tiles = -(-p.k // atom_cols(p.dtype))
    tiles = nbatch * -(-p.m // (128 if p.m > 64 else 64)) * -(-p.n // 128)
    if 2 * tiles > sms or k_tiles < 16:
        return 1
    return next((s for s in (8, 6, 4, 3, 2) if tiles * s <= sms and k_tiles // s >= 8), 1)


def build_hopper_body(p: GemmProblem, kn: HopperKnobs, a: Buffer, b: Buffer, c: Buffer, prefix: str = "hg",
                      drop: tuple = (), fn=None, sms: int = 132, epilogue: Epilogue | None = None,
                      allow_tf32: bool = False):
    """The GEMM's statement (a blockIdx.x loop) and its Launch for 2-D buffers a, b, c laid out as
    `p` says. `drop` leaves synchronisation out ("full_wait", "empty_wait", "release",
    "wgmma_wait", "barrier", "store_wait", "store_barrier", "turn"): broken variants for tests.
    `fn(value, row, col)`: an epilogue hook; `epilogue` (tessel.schedules.epilogue, indexed by C's
    full index: batch.., row, column) instead, e.g. what the graph's fusion hands over.
    `sms`: the grid of a persistent kernel (min(tiles, sms) blocks). `allow_tf32`: float32
    operands run on tf32 wgmma (both K-major; refused without it)."""
    if fn is not None and epilogue is not None:
        raise ScheduleError("gemm.wgmma: give an epilogue hook or an Epilogue, not both")
    check_knobs(p, kn, allow_tf32=allow_tf32)
    bm, bn = kn.bm, kn.bn
    k_tiles = -(-p.k // atom_cols(p.dtype))
    at = OperandTiles.make(f"{prefix}_a", a, bm, p.a_kcontig, kn.stages)
    bt = OperandTiles.make(f"{prefix}_b", b, bn, p.b_kcontig, kn.stages)
    m_limit, n_limit = p.m if p.m % bm else None, p.n if p.n % bn else None

    def produce(ring, lt, pm, pn, bv, part, krange=None):
        b_load = (bt, pn * bn) + ((part,) if part is not None else ())
        first, count = krange if krange is not None else (0, k_tiles)
        return tma_producer(ring, Var(f"{prefix}_pkt"), count, [(at, pm * bm), b_load], first_iter=lt * count,
                            batch=bv, k_first=first)

    def store(acc, m_tiles, lt, pm, pn, bv, row0, wg, lane, frag, cstage):
        hook = epilogue.hook(bv) if epilogue is not None else fn
        m0, n0 = pm * bm, pn * bn
        if kn.epilogue == "tma":
            return store_accumulators_tma(acc, bn, m_tiles, c, cstage, wg * (64 * ATOM_COLS), m0 + row0, n0, lane,
                                          wg + 1, hook, f"{prefix}_e", frag, drop, bv, m_limit, n_limit)
        return store_accumulators(acc, bn, m_tiles, c, m0 + row0, n0, lane, m_limit, n_limit, hook, f"{prefix}_e",
                                  index=lambda r, col: bv + (r, col))

    return warp_specialized_tiles(kn, TileGrid(-(-p.m // bm), -(-p.n // bn), tuple(p.batch)), k_tiles, at, bt,
                                  p.dtype, c.dtype, produce, store, shared_bytes(kn), prefix, drop, sms)


def hopper_gemm_kernel(p: GemmProblem, kn: HopperKnobs | None = None, name: str = "gemm_wgmma",
                       drop: tuple = (), sms: int = 132, epilogue=None, allow_tf32: bool = False) -> Kernel:
    """A whole kernel with parameters (A, B, C) as `GemmProblem.buffers` lays them out.
    `epilogue`: (fn(value, row, col) -> value, extra parameter buffers) applied to every float32
    result before the cast and store, e.g. a bias and an activation; the extra buffers follow C.
    `allow_tf32`: a float32 problem (A [M][K], B [N][K]) runs on tf32 wgmma (refused without it)."""
    kn = kn or default_knobs(p, sms)
    a, b, c = p.buffers()
    fn, extra = epilogue if epilogue is not None else (None, ())
    body, launch = build_hopper_body(p, kn, a, b, c, drop=drop, sms=sms, fn=fn, allow_tf32=allow_tf32)
    return Kernel(name, (a, b, c) + tuple(extra), body, target="cuda", launch=launch)


def apply_hopper_gemm(kernel: Kernel, knobs: HopperKnobs, plan=None, sms: int = 132,
                      allow_tf32: bool = False) -> Kernel:
    """`kernel` with its GEMM stage (tessel.schedules.gemm.gemm_plan) replaced by this template's
    loop nest for `knobs`; a following elementwise stage (the graph's bias, activation, residual,
    output cast) runs in the epilogue, on the float32 accumulators: one kernel."""
    from tessel.schedules.gemm_plan import gemm_plan, output_problem, replace_stages

    plan = plan or gemm_plan(kernel, allow_epilogue=True)
    _check_plan(kernel, plan)
    c = plan.out if plan.epilogue is not None else plan.update.buffer
    body, launch = build_hopper_body(output_problem(plan), knobs, plan.a.buffer, plan.b.buffer, c, sms=sms,
                                     epilogue=plan.epilogue, allow_tf32=allow_tf32)
    return replace_stages(kernel, plan, body, launch)


def _check_plan(kernel: Kernel, plan) -> None:
    """ScheduleError for what TMA and the one-output epilogue cannot take in `plan`."""
    for ld in (plan.a, plan.b):
        lead = tuple(ld.indices[:-2])
        if lead != tuple(plan.batch_vars)[len(plan.batch_vars) - len(lead):]:
            raise ScheduleError(f"gemm.wgmma: operand {ld.buffer.name}'s leading indices are not the last batch "
                                f"loops in order (TMA boxes take them as they are)")
        if ld.buffer not in kernel.params:
            raise ScheduleError(f"gemm.wgmma: operand {ld.buffer.name} is not a kernel parameter (TMA reads global "
                                f"memory through a tensor map of a parameter)")
    if plan.epilogue is not None and plan.update.buffer in kernel.params:
        raise ScheduleError(f"gemm.wgmma: the raw result '{plan.update.buffer.name}' is an output besides the "
                            f"epilogue's '{plan.out.name}'; this template stores one")


def _register_template(name: str = "gemm.wgmma", tf32: bool = False):
    from tessel.schedules.gemm import gemm_plan
    from tessel.schedules.gemm_plan import output_problem
    from tessel.schedules.template import Bool, Choice, Constraint, IntRange, Pow2, Template, register

    def analyze(kernel, target):
        if "wgmma" not in target.features:
            raise ScheduleError(f"target {target.target} has no wgmma (sm_90a only)")
        plan = gemm_plan(kernel, allow_epilogue=True, float32_operands=tf32)
        _check_plan(kernel, plan)
        q = output_problem(plan)
        issues = problem_issues(q, allow_tf32=tf32)
        if tf32 and q.dtype != "float32":
            issues.insert(0, f"operands are {q.dtype}: gemm.wgmma_tf32 is for float32 operands (gemm.wgmma takes "
                             f"16-bit ones)")
        if min(q.m, q.n, q.k) < 64:  # most of a 64 x 64 x 64 tile would be zero fill: mma.sync serves it
            issues.append(f"{q.m}x{q.n}x{q.k} is smaller than one 64 x 64 x 64 wgmma tile in some dimension")
        if issues:
            raise ScheduleError(f"{name}: {issues[0]}")
        return plan

    def defaults(kernel, target, plan):
        return default_knobs(output_problem(plan), target.sm_count or 132).as_dict()

    def schedule(sch, knobs, ctx):
        sch.kernel = apply_hopper_gemm(sch.kernel, HopperKnobs.from_dict(knobs), ctx.info, ctx.target.sm_count or 132,
                                       allow_tf32=tf32)

    def knob_check(knob_name):
        def check(ctx):
            kn = HopperKnobs.from_dict(ctx.knobs)
            for knob, msg in knob_problems(output_problem(ctx.info), kn, ctx.target.shared_bytes or SHARED_LIMIT):
                if knob == knob_name:
                    return msg
            return None
        return Constraint((knob_name,), check, f"{name} {knob_name}")

    names = [f.name for f in dataclasses.fields(HopperKnobs)]
    doc = ("Hopper GEMM (sm_90a): TMA + mbarrier ring + wgmma, a producer and 1-2 consumer warpgroups." if not tf32
           else "gemm.wgmma for float32 operands on tf32 wgmma (K-major A and B; only where the user allows tf32).")
    return register(Template(
        name,
        [Choice("bm", (64, 128, 192, 256), default=128), Choice("bn", (64, 128, 192, 256), default=128),
         Choice("bk", (32,) if tf32 else (64,)), IntRange("stages", 2, 8, default=4),
         Choice("consumers", (1, 2), default=2),
         Choice("cluster", ("1x1", "2x1")), Bool("persistent", default=False), Pow2("group_m", 1, 16, default=8),
         Choice("epilogue", ("direct", "tma")), Bool("pingpong", default=False),
         Choice("split_k", (1, 2, 3, 4, 6, 8), default=1)],
        schedule, analyze=analyze, defaults=defaults, constraints=[knob_check(n) for n in names],
        targets=("cuda",),
        doc=doc, opt_in="allow_tf32" if tf32 else ""))


GEMM_WGMMA = _register_template()
# float32 GEMMs on tf32 wgmma: never a default choice (generic_gpu tries it only with allow_tf32)
GEMM_WGMMA_TF32 = _register_template("gemm.wgmma_tf32", tf32=True)

__all__ = ["GEMM_WGMMA", "GEMM_WGMMA_TF32", "HopperKnobs", "acc_registers", "apply_hopper_gemm", "build_hopper_body",
           "check_knobs", "default_knobs", "default_split_k", "hopper_gemm_kernel", "knob_problems", "problem_issues",
           "shared_bytes"]
