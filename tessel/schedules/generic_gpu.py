"""Default GPU schedules, applied when a cuda kernel is built without a schedule.

`default_gpu_schedule(kernel, target)` recognises the kernel's shape and schedules it through
the GPU primitives (so the result carries a replayable trace):

- one contraction stage (GEMM, batched GEMM): tensor cores (ldmatrix + mma.sync, cp.async
  pipelining) for float16/bfloat16 operands, float32 accumulation and M, N, K multiples of
  16, 8, 16; otherwise a register-tiled SIMT kernel (generic_gpu_matmul.py);
- row-wise fused kernels (softmax, log-softmax, layer norm, RMS norm: reductions over trailing
  axes into keepdims statistics, then an elementwise stage reading them): everything computed
  inside one loop over rows, one warp per row (4 rows per block) for rows up to 512 elements,
  one block per row above; statistics reduced with warp shuffles (and shared memory across
  warps) and kept in registers;
- one reduction stage: over the innermost axes, one warp or block per output element with
  shuffles; over outer axes, one thread per output element looping over the reduction
  (coalesced across threads);
- a transpose (an elementwise copy whose innermost index is not the input's): 32 x 32 tiles
  through a padded shared buffer, so reads and writes are both coalesced;
- one elementwise stage: all loops fused, 256 threads per block, each thread a 16-byte vector
  where the size allows, enough blocks to cover the tensor.

A kernel with several stages that is not row-wise fusable raises ScheduleError: its stages
would communicate across blocks, which needs one kernel per stage.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((64, 64), name="A")
    >>> sch = default_gpu_schedule(ts.lower([A, ts.compute((64, 64), lambda i, j: A[i, j] * 2.0, name="B")]))
    >>> sch.kernel.target, sch.kernel.launch.block
    ('cuda', (256, 1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.dtypes import bits
from tessel.ir.nodes import Allocate, Cast, Const, For, Kernel, Load, Store, Var, walk
from tessel.schedules.generic import stages
from tessel.schedules.generic_gpu_matmul import contraction_parts, schedule_mma, schedule_simt
from tessel.schedules.nest import init_guards, perfect_chain, reduction_vars
from tessel.schedules.schedule import Schedule


@dataclass(frozen=True)
class GpuKnobs:
    """Sizes of the default GPU schedules (tuning will search these)."""

    threads: int = 256  # threads per block of elementwise kernels
    vector_bytes: int = 16  # bytes each thread moves per step where the size allows
    warp_rows: int = 4  # rows per block when one warp handles a row
    warp_row_limit: int = 512  # rows up to this many elements get one warp, longer ones a block
    tile: int = 32  # transpose tile


def default_gpu_schedule(kernel: Kernel, target=None, knobs: GpuKnobs | None = None) -> Schedule:
    """Schedule `kernel` for the GPU; returns the Schedule (`.kernel`, `.trace`). `target` (a
    string or Target) is accepted for the future (architecture-specific choices)."""
    knobs = knobs or GpuKnobs()
    sch = Schedule(kernel)
    found = stages(kernel)
    if not found:
        raise ScheduleError(f"kernel '{kernel.name}': no loop nest to schedule for the GPU")
    for name, nest in found:
        if not _dsl_form(kernel, name, nest):
            raise ScheduleError(f"kernel '{kernel.name}': stage '{name}' is not a naive loop nest (already "
                                f"scheduled?); default GPU schedules start from the DSL's nests")
    if len(found) == 1:
        _single_stage(sch, found[0][0], found[0][1], knobs)
    elif not _rowwise(sch, found, knobs):
        raise ScheduleError(f"kernel '{kernel.name}' has {len(found)} stages ({', '.join(n for n, _ in found)}) that "
                            f"are not row-wise fusable; on the GPU each stage needs a kernel of its own")
    scratch = [n.buffer.name for n in walk(sch.kernel.body) if isinstance(n, Allocate) and n.buffer.scope == "global"]
    if scratch:
        raise ScheduleError(f"kernel '{kernel.name}': the GPU schedule left temporaries in global memory "
                            f"({', '.join(scratch)}); they need kernels of their own")
    return sch


def _dsl_form(kernel: Kernel, name: str, nest: For) -> bool:
    """Whether the stage is still the DSL's naive nest: serial constant loops, outer ones over the
    output's dimensions indexing every store of it."""
    ndim = _ndim(kernel, name)
    chain = perfect_chain(nest)
    if len(chain) < ndim or any(lp.kind != "serial" or not isinstance(lp.extent, Const) for lp in chain):
        return False
    want = tuple(lp.var for lp in chain[:ndim])
    return all(tuple(st.indices) == want for st in walk(nest) if isinstance(st, Store))


def _single_stage(sch: Schedule, name: str, nest: For, knobs: GpuKnobs) -> None:
    ndim = _ndim(sch.kernel, name)
    chain = perfect_chain(nest)
    if init_guards(nest):
        if contraction_parts(sch, name) is not None:
            if not schedule_mma(sch, name):
                schedule_simt(sch, name)
            return
        _reduction(sch, name, chain, ndim, knobs)
        return
    if _is_transpose(chain, ndim):
        _transpose(sch, name, chain, ndim, knobs)
        return
    _elementwise(sch, [lp.var.name for lp in chain[:ndim]], [int(lp.extent.value) for lp in chain[:ndim]],
                 _out_dtype(sch.kernel, name), knobs)


def _ndim(kernel: Kernel, name: str) -> int:
    return next(n.buffer.ndim for n in walk(kernel) if hasattr(n, "buffer") and n.buffer.name == name)


def _out_dtype(kernel: Kernel, name: str) -> str:
    return next(n.buffer.dtype for n in walk(kernel) if hasattr(n, "buffer") and n.buffer.name == name)


def _fuse(sch: Schedule, loops: list[str]) -> str:
    return sch.fuse(*loops) if len(loops) > 1 else loops[0]


# -- elementwise --------------------------------------------------------------------------------


def _elementwise(sch: Schedule, spatial: list[str], extents: list[int], dtype: str, knobs: GpuKnobs) -> None:
    total = 1
    for e in extents:
        total *= e
    vec = max(1, knobs.vector_bytes * 8 // bits(dtype))
    while vec > 1 and total % vec:
        vec //= 2
    threads = min(knobs.threads, max(32, -(-(total // vec) // 32) * 32))
    fused = _fuse(sch, spatial)
    if vec > 1:
        b, t, v = sch.split(fused, [None, threads, vec])
    else:
        (b, t), v = sch.split(fused, [None, threads]), None
    sch.bind(b, "blockIdx.x")
    sch.bind(t, "threadIdx.x")
    if v is not None:
        sch.vectorize(v)


# -- transpose ----------------------------------------------------------------------------------


def _is_transpose(chain: list[For], ndim: int) -> bool:
    if ndim < 2:
        return False
    leaf = chain[ndim - 1].body
    value = getattr(leaf, "value", None)
    while isinstance(value, Cast):
        value = value.value
    if not isinstance(value, Load) or value.buffer.ndim < 2:
        return False
    last_in = value.indices[-1]
    return isinstance(last_in, Var) and last_in != chain[ndim - 1].var and last_in in [lp.var for lp in chain]


def _transpose(sch: Schedule, name: str, chain: list[For], ndim: int, knobs: GpuKnobs) -> None:
    value = chain[ndim - 1].body.value
    while isinstance(value, Cast):
        value = value.value
    names = [lp.var.name for lp in chain[:ndim]]
    a, b = value.indices[-1].name, names[-1]
    others = [x for x in names if x not in (a, b)]
    t = knobs.tile
    ao, ao_i, ai = sch.split(a, [None, t // 8, 8])
    bo, bi = sch.split(b, [None, t])
    sch.reorder(*others, ao, bo, ai, bi, ao_i)
    if others:
        sch.bind(_fuse(sch, others), "blockIdx.z")
    sch.bind(ao, "blockIdx.y")
    sch.bind(bo, "blockIdx.x")
    sch.bind(ai, "threadIdx.y")
    sch.bind(bi, "threadIdx.x")
    tile = sch.cache_shared(value.buffer.name, bi)
    sch.pad(tile, 1)


# -- reductions ---------------------------------------------------------------------------------


def _inner_reduction(chain: list[For], ndim: int) -> bool:
    """Whether some load's innermost index runs along a reduction loop (then threads should
    split the reduction: their loads are contiguous)."""
    red = {lp.var for lp in chain[ndim:]}
    _, update = init_guards(chain[0])[0]
    for ld in (n for n in walk(update.value) if isinstance(n, Load) and n.buffer.name != update.buffer.name):
        if ld.indices and any(isinstance(v, Var) and v in red for v in walk(ld.indices[-1])):
            return True
    return False


def _reduction(sch: Schedule, name: str, chain: list[For], ndim: int, knobs: GpuKnobs) -> None:
    spatial = [lp.var.name for lp in chain[:ndim]]
    red = [lp.var.name for lp in chain[ndim:]]
    red_extent = 1
    for lp in chain[ndim:]:
        red_extent *= int(lp.extent.value)
    dtype = _out_dtype(sch.kernel, name)
    if not _inner_reduction(chain, ndim) or dtype not in ("float32", "int32"):
        total = 1
        for lp in chain[:ndim]:
            total *= int(lp.extent.value)
        threads = min(knobs.threads, max(32, -(-total // 32) * 32))
        b, t = sch.split(_fuse(sch, spatial), [None, threads])
        sch.bind(b, "blockIdx.x")
        sch.bind(t, "threadIdx.x")
        return
    r = _fuse(sch, red)
    threads = _reduce_threads(red_extent, knobs)
    ro, rt = sch.split(r, [None, threads])
    sch.reorder(rt, ro)
    row = _fuse(sch, spatial)
    _bind_rows(sch, row, threads, knobs)
    sch.cross_thread_reduce(name, rt)


def _reduce_threads(extent: int, knobs: GpuKnobs) -> int:
    if extent <= knobs.warp_row_limit:
        return 32
    return 128 if extent <= 4096 else 256


def _bind_rows(sch: Schedule, row: str, threads: int, knobs: GpuKnobs) -> str:
    """Bind the row loop: warps of several rows per block, or a block per row; returns the
    innermost row loop."""
    extent = int(next(n for n in walk(sch.kernel.body) if isinstance(n, For) and n.var.name == row).extent.value)
    if threads == 32 and extent > 1:
        # rows per block dividing the row count: no guard, so statistics stay in registers
        rows = max(d for d in range(1, min(knobs.warp_rows, extent) + 1) if extent % d == 0)
        rb, ry = sch.split(row, [None, rows])
        sch.bind(rb, "blockIdx.x")
        sch.bind(ry, "threadIdx.y")
        return ry
    sch.bind(row, "blockIdx.x")
    return row


# -- row-wise fused kernels (softmax, layer norm) ---------------------------------------------------


def _rowwise(sch: Schedule, found: list, knobs: GpuKnobs) -> bool:
    """Fuse reductions over trailing axes and the elementwise stage reading them into one loop
    over rows; False (nothing applied) when the kernel does not have that shape."""
    kernel = sch.kernel
    last_name, last = found[-1]
    ndim = _ndim(kernel, last_name)
    chain = perfect_chain(last)
    if init_guards(last) or len(chain) != ndim or not any(p.name == last_name for p in kernel.params):
        return False
    temps = {n.buffer.name for n in walk(kernel.body) if isinstance(n, Allocate)}
    producers = found[:-1]
    rows = None
    for name, nest in producers:
        if name not in temps or _ndim(kernel, name) != ndim:
            return False
        pchain = perfect_chain(nest)
        if not init_guards(nest) or len(pchain) <= ndim:
            return False
        shape = next(n.buffer.shape for n in walk(kernel) if hasattr(n, "buffer") and n.buffer.name == name)
        lead = 0
        while lead < ndim and shape[lead] != 1:
            lead += 1
        if lead == 0 or any(s != 1 for s in shape[lead:]) or (rows is not None and rows != lead):
            return False
        if reduction_vars(nest) != {lp.var for lp in pchain[ndim:]}:
            return False
        rows = lead
    if rows is None or rows >= ndim:
        return False
    row_loops = [lp.var.name for lp in chain[:rows]]
    col_loops = [lp.var.name for lp in chain[rows:]]
    row_len = 1
    for lp in chain[rows:]:
        row_len *= int(lp.extent.value)
    if any(_out_dtype(kernel, n) not in ("float32", "int32") for n, _ in producers):
        return False
    before = (sch.kernel, list(sch.trace))
    try:
        for name, _ in reversed(producers):
            sch.compute_at(name, row_loops[-1])
        row = _fuse(sch, row_loops)
        threads = _reduce_threads(row_len, knobs)
        inner_row = _bind_rows(sch, row, threads, knobs)
        for name, nest in producers:
            red = [lp.var.name for lp in perfect_chain(nest)[ndim:]]
            ro, rt = sch.split(_fuse(sch, red), [None, threads])
            sch.reorder(rt, ro)
            sch.cross_thread_reduce(name, rt)
        co, ct = sch.split(_fuse(sch, col_loops), [None, threads])
        sch.reorder(ct, co)
        sch.bind(ct, "threadIdx.x")
        for name, _ in producers:
            sch.cache_write(name, inner_row, "local")
        sch.remove_dead_code()
    except ScheduleError:
        sch.kernel, sch.trace = before
        return False
    return True


__all__ = ["GpuKnobs", "default_gpu_schedule"]
