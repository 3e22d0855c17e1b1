"""Generic GPU schedules of contractions (GEMM, batched GEMM): tensor cores where they fit, a
register-tiled SIMT kernel elsewhere.

Tensor-core path (`schedule_mma`): C[b.., i, j] = sum_k float32(A[.., i, k]) * float32(B[.., k, j])
with A and B float16 or bfloat16 (either operand may be stored transposed), C float32, any M, N,
K: the GEMM template of tessel/schedules/gemm.py ("gemm.mma_sync": a multi-stage cp.async ring,
ldmatrix fragments double-buffered in registers, predicated edges), recorded in the trace as a
template step with its knobs. `schedule_mma_primitives` is the earlier schedule built from
primitives (split, cache_shared, fragment, tensorize, pipeline), kept for comparison; it needs M,
N, K multiples of 16, 8, 16.

SIMT path (`schedule_simt`): any dtypes and shapes: 16 x 16 threads per block, each computing a
2 x 2 register tile, A and B tiles of 16 along k through shared memory. `schedule_mma` returns
False when the template does not apply (other dtypes, several stages): the caller then takes
`schedule_simt` explicitly.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((32, 32), "float16", name="A"); B = ts.placeholder((32, 16), "float16", name="B")
    >>> k = ts.reduce_axis(32, name="k")
    >>> C = ts.compute((32, 16), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"),
    ...                axis=k), name="C")
    >>> from tessel.schedules.schedule import Schedule
    >>> sch = Schedule(ts.lower([A, B, C]))
    >>> schedule_mma(sch, "C")
    True
    >>> sch.trace[0].primitive, sch.trace[0].args["name"]
    ('template', 'gemm.mma_sync')
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.intrinsics import mma_name
from tessel.ir.nodes import Binary, Cast, For, Load, Var, walk
from tessel.schedules.nest import init_guards, perfect_chain
from tessel.schedules.schedule import Schedule


@dataclass(frozen=True)
class MmaKnobs:
    """Tile shape of the tensor-core GEMM (tuning will search these)."""

    warps_m: int = 2
    warps_n: int = 2
    tiles_m: int = 2  # 16-row mma tiles per warp
    tiles_n: int = 4  # 8-column mma tiles per warp
    bk: int = 32  # reduction columns per shared-memory tile
    stages: int = 3
    pad: int = 8  # elements added to each shared row (16 bytes: ldmatrix rows hit distinct banks)


def contraction_parts(sch: Schedule, name: str):
    """(chain, ndim, update, A load, B load) of a DSL contraction stage writing `name`, or None."""
    nest = _stage(sch, name)
    if nest is None:
        return None
    guards = init_guards(nest)
    if len(guards) != 1:
        return None
    _, update = guards[0]
    ndim = update.buffer.ndim
    chain = perfect_chain(nest)
    if ndim < 2 or len(chain) != ndim + 1:
        return None
    val = update.value
    me = Load(update.buffer, update.indices)
    if not (isinstance(val, Binary) and val.op == "add" and val.a == me and isinstance(val.b, Binary)
            and val.b.op == "mul"):
        return None
    loads = [f.value if isinstance(f, Cast) else f for f in (val.b.a, val.b.b)]
    if not all(isinstance(x, Load) for x in loads):
        return None
    i, j = chain[ndim - 2].var, chain[ndim - 1].var
    uses = [{v for idx in ld.indices for v in walk(idx) if isinstance(v, Var)} for ld in loads]
    if i in uses[0] and j in uses[1]:
        return chain, ndim, update, loads[0], loads[1]
    if i in uses[1] and j in uses[0]:
        return chain, ndim, update, loads[1], loads[0]
    return None


def _stage(sch: Schedule, name: str):
    from tessel.schedules.generic import stages

    for n, nest in stages(sch.kernel):
        if n == name:
            return nest
    return None


def mma_fits(sch: Schedule, name: str) -> str | None:
    """The mma intrinsic for contraction stage `name` when tensor cores fit it, else None."""
    parts = contraction_parts(sch, name)
    if parts is None:
        return None
    chain, ndim, update, a, b = parts
    val = update.value.b
    if update.buffer.dtype != "float32" or not all(isinstance(f, Cast) and f.dtype == "float32"
                                                    for f in (val.a, val.b)):
        return None
    if a.buffer.dtype != b.buffer.dtype or a.buffer.dtype not in ("float16", "bfloat16"):
        return None
    m, n, k = (int(chain[ndim - 2].extent.value), int(chain[ndim - 1].extent.value),
               int(chain[ndim].extent.value))
    if m % 16 or n % 8 or k % 16:
        return None
    return mma_name(a.buffer.dtype)


def _fit(extent: int, unit: int, want: int) -> int:
    """The largest count c <= want of `unit`-sized tiles with extent % (c * unit) == 0."""
    for c in range(want, 0, -1):
        if extent % (c * unit) == 0:
            return c
    return 1


def schedule_mma(sch: Schedule, name: str, knobs=None, target: str = "cuda") -> bool:
    """Schedule contraction stage `name` with the tensor-core GEMM template (`knobs`: a dict or
    GemmKnobs, missing ones from `gemm.default_knobs`); False (and nothing applied) when the
    template does not apply to the kernel. Impossible knobs raise ScheduleError."""
    from tessel.schedules.gemm import GEMM_TEMPLATE, GemmKnobs

    why = GEMM_TEMPLATE.applies(sch.kernel, target)
    if why is not None or _stage(sch, name) is None:
        return False
    if isinstance(knobs, GemmKnobs):
        knobs = knobs.as_dict()
    GEMM_TEMPLATE.apply(sch, knobs, target)
    return True


def schedule_mma_primitives(sch: Schedule, name: str, knobs: MmaKnobs | None = None) -> bool:
    """The earlier tensor-core schedule from primitives; False (and nothing applied) when it does
    not fit."""
    intrinsic = mma_fits(sch, name)
    if intrinsic is None:
        return False
    knobs = knobs or MmaKnobs()
    chain, ndim, _, a, b = contraction_parts(sch, name)
    names = [lp.var.name for lp in chain]
    batch, i, j, k = names[: ndim - 2], names[ndim - 2], names[ndim - 1], names[ndim]
    m, n, kk = (int(lp.extent.value) for lp in chain[ndim - 2:])
    tm = _fit(m, 16, knobs.tiles_m)
    wm = _fit(m // (16 * tm), 1, knobs.warps_m)
    tn = _fit(n, 8, knobs.tiles_n)
    wn = _fit(n // (8 * tn), 1, knobs.warps_n)
    bk = 16 * _fit(kk, 16, knobs.bk // 16)
    bi, wi, ir = sch.split(i, [None, wm, tm * 16])
    bj, wj, jr = sch.split(j, [None, wn, tn * 8])
    ko, kr = sch.split(k, [None, bk])
    sch.reorder(*batch, bi, bj, wi, wj, ko, kr, ir, jr)
    acc = sch.cache_write(name, wj, "local")
    iri, jri = sch.decompose_reduction(acc, ko)[-2:]
    mi, ii = sch.split(ir, [None, 16])
    ni, jj = sch.split(jr, [None, 8])
    ki, kk16 = sch.split(kr, [None, 16])
    sch.reorder(ki, mi, ni, ii, jj, kk16)
    a0, a1 = sch.split(iri, [None, 16])
    b0, b1 = sch.split(jri, [None, 8])
    sch.reorder(a0, b0, a1, b1)
    out = sch.get_loops(name)
    o0, o1 = sch.split(out[-2], [None, 16])
    p0, p1 = sch.split(out[-1], [None, 8])
    sch.reorder(o0, p0, o1, p1)
    if batch:
        fused = sch.fuse(*batch) if len(batch) > 1 else batch[0]
        sch.bind(fused, "blockIdx.z")
    sch.bind(bi, "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    sch.bind(wi, "threadIdx.z")
    sch.bind(wj, "threadIdx.y")
    loops = sch.fragment(acc, "m16n8k16.acc")
    mac_e = loops[3]
    # small constant loops over fragments: unrolled, so fragments stay in registers
    for loop in (a0, b0, loops[1], ki, mi, ni, o0, p0, loops[5]):
        sch.unroll(loop)
    shared = []
    for operand in (a, b):
        s = sch.cache_shared(operand.buffer.name, ko, 8)
        sch.pad(s, knobs.pad)
        shared.append(s)
    if kk // bk >= 2 and knobs.stages >= 2:
        try:
            sch.pipeline(ko, min(knobs.stages, kk // bk))
        except ScheduleError:
            pass  # copies not expressible as cp.async (a tile not dividing the operand): stay synchronous
    sch.tensorize(mac_e, intrinsic)
    return True


def schedule_simt(sch: Schedule, name: str) -> bool:
    """Register-tiled SIMT schedule of contraction stage `name` (any dtypes and shapes)."""
    parts = contraction_parts(sch, name)
    if parts is None:
        return False
    chain, ndim, _, a, b = parts
    names = [lp.var.name for lp in chain]
    batch, i, j, k = names[: ndim - 2], names[ndim - 2], names[ndim - 1], names[ndim]
    m, n = int(chain[ndim - 2].extent.value), int(chain[ndim - 1].extent.value)
    ri_, rj_ = (2 if m >= 32 else 1), (2 if n >= 32 else 1)
    ti_, tj_ = min(16, -(-m // ri_)), min(16, -(-n // rj_))
    bi, ti, ri = sch.split(i, [None, ti_, ri_])
    bj, tj, rj = sch.split(j, [None, tj_, rj_])
    ko, ki = sch.split(k, [None, 16])
    sch.reorder(*batch, bi, bj, ti, tj, ko, ki, ri, rj)
    acc = sch.cache_write(name, tj, "local")
    sch.decompose_reduction(acc, ko)
    if batch:
        fused = sch.fuse(*batch) if len(batch) > 1 else batch[0]
        sch.bind(fused, "blockIdx.z")
    sch.bind(bi, "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    sch.bind(ti, "threadIdx.y")
    sch.bind(tj, "threadIdx.x")
    for operand in (a, b):
        sch.cache_shared(operand.buffer.name, ko)
    return True


def chain_of(loop: For) -> list[str]:
    return [lp.var.name for lp in perfect_chain(loop)]


__all__ = ["MmaKnobs", "contraction_parts", "mma_fits", "schedule_mma", "schedule_mma_primitives", "schedule_simt"]
