"""Default CPU schedules, applied by `ts.build` when no schedule is given.

Each stage (one top-level loop nest writing one buffer) is classified and scheduled on its own:

- contraction (a sum whose value multiplies loads, with at least two spatial loops, the last
  spatial loop running along the last index of an input: GEMM, batched GEMM, convolution):
  register tiling. A `tile_rows x tile_cols` block of the output is accumulated in a local buffer
  (registers) over the whole reduction, inner columns vectorized, rows unrolled; outer tile
  loops fused and parallel.
- other reductions (row max/sum of softmax, layer-norm statistics): spatial loops fused and
  parallel, the reduction serial inside.
- elementwise: outer loops fused and parallel, the last loop split by the vector width and
  vectorized.

All choices are made through Schedule primitives, so the result carries a replayable trace.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((64, 32), name="A"); B = ts.placeholder((32, 64), name="B")
    >>> k = ts.reduce_axis(32, name="k")
    >>> C = ts.compute((64, 64), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    >>> sch = default_schedule(ts.lower([A, B, C]))
    >>> [s.primitive for s in sch.trace][:3]
    ['split', 'split', 'reorder']
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.nodes import Allocate, Binary, Const, For, Kernel, Load, Seq, Store, walk
from tessel.schedules.nest import init_guards, perfect_chain
from tessel.schedules.schedule import Schedule


@dataclass(frozen=True)
class CpuKnobs:
    """Tile sizes of the default CPU schedules (tuning will search these)."""

    vector_lanes: int = 16  # float32 lanes of a 512-bit vector; also fine on 256-bit machines
    tile_rows: int = 6  # rows x cols accumulators must fit the vector registers (6 x 16 floats: 12 ymm)
    tile_cols: int = 16
    min_parallel_work: int = 4096  # below this many output elements, no thread pool


def stages(kernel: Kernel) -> list[tuple[str, For]]:
    """The top-level loop nests of a kernel and the buffer each writes, in order."""
    body = kernel.body
    while isinstance(body, Allocate):
        body = body.body
    items = body.stmts if isinstance(body, Seq) else (body,)
    out = []
    for st in items:
        if isinstance(st, For):
            written = {n.buffer.name for n in walk(st) if isinstance(n, Store)}
            if len(written) == 1:
                out.append((written.pop(), st))
    return out


def default_schedule(kernel: Kernel, target: str = "cpu", knobs: CpuKnobs | None = None) -> Schedule:
    """Schedule every stage of `kernel` with the default strategies of `target` (CUDA targets go
    to generic_gpu); returns the Schedule (its `.kernel` is the result, its `.trace` the steps)."""
    if str(target).startswith("cuda"):
        from tessel.schedules.generic_gpu import default_gpu_schedule

        return default_gpu_schedule(kernel, target)
    knobs = knobs or CpuKnobs()
    sch = Schedule(kernel)
    if target != "cpu":
        raise ScheduleError(f"no default schedules for target {target!r}; targets: cpu, cuda[:sm_XY]")
    for name, nest in stages(kernel):
        if not _in_dsl_form(kernel, name, nest):
            continue  # hand-written or already scheduled: leave it alone
        before_kernel, before_trace = sch.kernel, list(sch.trace)
        try:
            _schedule_stage(sch, kernel, name, nest, knobs)
        except ScheduleError:
            # A strategy that does not fit this stage must not fail the build: keep it naive.
            sch.kernel, sch.trace = before_kernel, before_trace
    return sch


def _in_dsl_form(kernel: Kernel, name: str, nest: For) -> bool:
    ndim = _ndim(kernel, name)
    chain = perfect_chain(nest)
    if len(chain) < ndim or not all(isinstance(lp.extent, Const) for lp in chain):
        return False
    want = tuple(lp.var for lp in chain[:ndim])
    stores = [n for n in walk(nest) if isinstance(n, Store)]
    return all(tuple(st.indices) == want for st in stores) and all(lp.kind == "serial" for lp in chain)


def _schedule_stage(sch: Schedule, kernel: Kernel, name: str, nest: For, knobs: CpuKnobs) -> None:
    ndim = _ndim(kernel, name)
    chain = perfect_chain(nest)
    spatial = [lp.var.name for lp in chain[:ndim]]
    reduction = [lp.var.name for lp in chain[ndim:]]
    guards = init_guards(nest)
    if guards and reduction and _is_contraction(nest, chain, ndim):
        _schedule_contraction(sch, name, chain, ndim, knobs)
    elif guards:
        _parallel_outer(sch, spatial, [lp.extent.value for lp in chain[:ndim]], knobs)
    elif not reduction:
        _schedule_elementwise(sch, spatial, [lp.extent.value for lp in chain[:ndim]], knobs)


def _ndim(kernel: Kernel, name: str) -> int:
    for n in walk(kernel):
        if hasattr(n, "buffer") and n.buffer.name == name:
            return n.buffer.ndim
    return 0


def _is_contraction(nest: For, chain: list[For], ndim: int) -> bool:
    """A sum of products whose last spatial variable indexes the last dim of some input."""
    if ndim < 2:
        return False
    _, update = init_guards(nest)[0]
    if not (isinstance(update.value, Binary) and update.value.op == "add"):
        return False
    last = chain[ndim - 1].var
    loads = [n for n in walk(update.value.b) if isinstance(n, Load)]
    return any(n.indices and any(x == last for x in walk(n.indices[-1])) for n in loads)


def _schedule_contraction(sch: Schedule, name: str, chain: list[For], ndim: int, knobs: CpuKnobs) -> None:
    """Register-tiled contraction: for each column panel (parallel), copy the panel of the operand
    that runs along the columns (B of a GEMM) into a contiguous local buffer, then for each row
    tile accumulate a rows x cols block in registers over the whole reduction."""
    extents = [lp.extent.value for lp in chain]
    names = [lp.var.name for lp in chain]
    row, col = names[ndim - 2], names[ndim - 1]
    rows, cols = _tile(extents[ndim - 2], knobs.tile_rows), _tile(extents[ndim - 1], knobs.tile_cols)
    ro, ri = sch.split(row, [None, rows])
    co, ci = sch.split(col, [None, cols])
    batch = names[: ndim - 2]
    red = names[ndim:]
    sch.reorder(*batch, co, ro, *red, ri, ci)
    panel = _column_operand(chain, ndim)
    if panel is not None:
        try:
            packed = sch.cache_read(panel, at=co, scope="local")
            _vectorize_innermost_of(sch, sch.get_loops(packed)[-1])
        except ScheduleError:
            pass  # region not affine, say: read the operand in place
    local = sch.cache_write(name, at=ro, scope="local")
    init = sch.decompose_reduction(local, at=red[0])
    outer = batch + [co]
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    sch.parallel(fused)
    if cols % knobs.vector_lanes == 0 or cols <= knobs.vector_lanes:
        for loop in (ci, init[-1], f"{local}_out_ax{ndim - 1}"):
            _vectorize_innermost_of(sch, loop)
    if rows > 1:
        for loop in (ri, init[-2], f"{local}_out_ax{ndim - 2}"):
            _unroll(sch, loop)


def _column_operand(chain: list[For], ndim: int) -> str | None:
    """The input whose last index runs along the column loop but not along the row loop."""
    _, update = init_guards(chain[0])[0]
    row, col = chain[ndim - 2].var, chain[ndim - 1].var
    for load in (n for n in walk(update.value.b) if isinstance(n, Load)):
        vars_ = {v for idx in load.indices for v in walk(idx)}
        if load.indices and any(x == col for x in walk(load.indices[-1])) and row not in vars_:
            return load.buffer.name
    return None


def _unroll(sch: Schedule, loop: str) -> None:
    try:
        sch.unroll(loop)
    except ScheduleError:
        pass


def _vectorize_innermost_of(sch: Schedule, loop: str) -> None:
    try:
        sch.vectorize(loop)
    except ScheduleError:
        pass  # e.g. a guard from a non-divisible split makes it illegal; leave it serial


def _parallel_outer(sch: Schedule, spatial: list[str], extents: list[int], knobs: CpuKnobs) -> None:
    total = 1
    for e in extents:
        total *= e
    if total < knobs.min_parallel_work // 16:
        return
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    sch.parallel(fused)


def _schedule_elementwise(sch: Schedule, spatial: list[str], extents: list[int], knobs: CpuKnobs) -> None:
    total = 1
    for e in extents:
        total *= e
    last, lanes = spatial[-1], knobs.vector_lanes
    inner = None
    if extents[-1] % lanes == 0 and extents[-1] >= lanes:
        outer_last, inner = sch.split(last, [None, lanes])
        outer = spatial[:-1] + [outer_last]
    else:
        outer = spatial[:-1] if len(spatial) > 1 else spatial
    if total >= knobs.min_parallel_work and outer:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)
    if inner is not None:
        _vectorize_innermost_of(sch, inner)


def _tile(extent: int, want: int) -> int:
    """The largest divisor of `extent` not above `want` (so no guards), or `want` if the best
    divisor is tiny compared with it."""
    best = max(d for d in range(1, min(extent, want) + 1) if extent % d == 0)
    return best if best * 4 >= min(extent, want) else min(extent, want)
