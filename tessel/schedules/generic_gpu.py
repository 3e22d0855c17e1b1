"""Default GPU schedules, applied when a cuda kernel is built without a schedule.

`default_gpu_schedule(kernel, target)` recognises the kernel's shape and schedules it through
the GPU primitives (so the result carries a replayable trace):

- one contraction stage (GEMM, batched GEMM): tensor cores (the GEMM template, gemm.py: ldmatrix
  + mma.sync, cp.async pipelining) for float16/bfloat16 operands with float32 accumulation;
  otherwise a register-tiled SIMT kernel (generic_gpu_matmul.py);
- one contraction with elementwise stages after it (bias, activation, residual, the output cast)
  and copies of its operands before it (a transpose): ONE kernel of a template in
  EPILOGUE_TEMPLATES that fuses them (gemm_plan.py, epilogue.py), when one applies;
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

Each strategy is a template (tessel/schedules/template.py) whose knobs default to the choices
above: "gpu.elementwise" (threads, vector), "gpu.transpose" (tile, block_rows, pad),
"gpu.reduce_inner" and "gpu.rowwise" (threads per row, rows per block), "gpu.reduce_outer"
(threads); contractions go to the GEMM template "gemm.mma_sync" (tessel/schedules/gemm.py)
where tensor cores take them, else to "gpu.matmul_simt" (no knobs yet). `default_gpu_template`
picks one by the rules above; the tuner may search any template that applies
(`template.applicable`).

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
from tessel.schedules.generic_gpu_matmul import contraction_parts, schedule_simt
from tessel.schedules.nest import init_guards, perfect_chain, reduction_vars
from tessel.schedules.schedule import Schedule
from tessel.schedules.template import (
    IntRange, Pow2, Template, constraint, divides, get_template, max_shared_memory, max_threads, register,
)

# Templates tried, in order, for a contraction stage: on sm_90a the Hopper GEMM (TMA + wgmma,
# tessel/schedules/gemm_hopper.py) where TMA's alignment and a 64-wide tile fit, then tensor cores
# through mma.sync (tessel/schedules/gemm.py) where the dtypes fit, else the register-tiled SIMT kernel.
CONTRACTION_TEMPLATES = ("gemm.wgmma", "gemm.mma_sync", "gpu.matmul_simt")
# Templates tried for a contraction followed by an elementwise stage reading its result pointwise
# (tessel/schedules/epilogue.py): they fuse it into their epilogue.
EPILOGUE_TEMPLATES = ("gemm.wgmma", "gemm.mma_sync")


def default_gpu_schedule(kernel: Kernel, target=None, knobs: dict | None = None, allow_tf32: bool = False) -> Schedule:
    """Schedule `kernel` for the GPU with its default template (`default_gpu_template`) and
    `knobs` (missing ones: the template's defaults); returns the Schedule (`.kernel`, `.trace`).
    `target` is a string ("cuda", "cuda:sm_80") or a Target; None means "cuda". `allow_tf32`:
    a float32 GEMM may run on tf32 wgmma ("gemm.wgmma_tf32", tried first; 10-bit mantissa
    products), the user's permission; without it float32 GEMMs stay exact."""
    target = "cuda" if target is None else target
    tpl = None
    if allow_tf32:
        tf32 = get_template("gemm.wgmma_tf32")
        tpl = tf32 if tf32.applies(kernel, target) is None else None
    tpl = tpl or default_gpu_template(kernel, target)
    sch = tpl.apply(kernel, knobs, target)
    from tessel.schedules.hopper_splitk import WORKSPACE_SUFFIX  # split-K's per-launch workspace is intended

    scratch = [n.buffer.name for n in walk(sch.kernel.body) if isinstance(n, Allocate) and n.buffer.scope == "global"
               and not n.buffer.name.endswith(WORKSPACE_SUFFIX)]
    if scratch:
        raise ScheduleError(f"kernel '{kernel.name}': the GPU schedule left temporaries in global memory "
                            f"({', '.join(scratch)}); they need kernels of their own")
    return sch


def default_gpu_template(kernel: Kernel, target=None) -> Template:
    """The template today's default GPU schedule uses for `kernel` (the module docstring's rules).

    >>> import tessel as ts
    >>> A = ts.placeholder((64, 64), name="A")
    >>> default_gpu_template(ts.lower([A, ts.compute((64, 64), lambda i, j: A[j, i], name="B")])).name
    'gpu.transpose'
    """
    found = _dsl_stages(kernel)
    if len(found) == 1:
        name, nest = found[0]
        if init_guards(nest):
            if contraction_parts(Schedule(kernel), name) is not None:
                reasons = []
                for t in CONTRACTION_TEMPLATES:
                    why = get_template(t).applies(kernel, target)
                    if why is None:
                        return get_template(t)
                    reasons.append(why)
                raise ScheduleError(f"kernel '{kernel.name}': no contraction template applies: {'; '.join(reasons)}")
            return REDUCE_INNER if REDUCE_INNER.applies(kernel, target) is None else REDUCE_OUTER
        chain = perfect_chain(nest)
        return TRANSPOSE if _is_transpose(chain, _ndim(kernel, name)) else ELEMENTWISE
    if len(found) >= 2 and sum(1 for _, nest in found if init_guards(nest)) == 1:
        # a contraction with its elementwise epilogue (bias, activation, the output cast) and
        # copies of its operands (a transpose): one kernel where a contraction template fuses them
        for t in EPILOGUE_TEMPLATES:
            if get_template(t).applies(kernel, target) is None:
                return get_template(t)
    why = ROWWISE.applies(kernel, target)
    if why is not None:
        raise ScheduleError(f"kernel '{kernel.name}' has {len(found)} stages ({', '.join(n for n, _ in found)}) that "
                            f"are not row-wise fusable ({why}); on the GPU each stage needs a kernel of its own")
    return ROWWISE


def _dsl_stages(kernel: Kernel) -> list:
    """The kernel's stages, all in the DSL's naive form (ScheduleError otherwise)."""
    found = stages(kernel)
    if not found:
        raise ScheduleError(f"kernel '{kernel.name}': no loop nest to schedule for the GPU")
    for name, nest in found:
        if not _dsl_form(kernel, name, nest):
            raise ScheduleError(f"kernel '{kernel.name}': stage '{name}' is not a naive loop nest (already "
                                f"scheduled?); default GPU schedules start from the DSL's nests")
    return found


def _single_stage(kernel: Kernel, reduction: bool | None = None):
    """(name, nest, chain, ndim) of a one-stage kernel; ScheduleError unless it has one stage and
    (when `reduction` is given) is or is not a reduction."""
    found = _dsl_stages(kernel)
    if len(found) != 1:
        raise ScheduleError(f"kernel '{kernel.name}' has {len(found)} stages; this template schedules one")
    name, nest = found[0]
    if reduction is not None and bool(init_guards(nest)) != reduction:
        raise ScheduleError(f"stage '{name}' is {'not ' if reduction else ''}a reduction")
    return name, nest, perfect_chain(nest), _ndim(kernel, name)


def _dsl_form(kernel: Kernel, name: str, nest: For) -> bool:
    """Whether the stage is still the DSL's naive nest: serial constant loops, outer ones over the
    output's dimensions indexing every store of it."""
    ndim = _ndim(kernel, name)
    chain = perfect_chain(nest)
    if len(chain) < ndim or any(lp.kind != "serial" or not isinstance(lp.extent, Const) for lp in chain):
        return False
    want = tuple(lp.var for lp in chain[:ndim])
    return all(tuple(st.indices) == want for st in walk(nest) if isinstance(st, Store))


def _ndim(kernel: Kernel, name: str) -> int:
    return next(n.buffer.ndim for n in walk(kernel) if hasattr(n, "buffer") and n.buffer.name == name)


def _out_dtype(kernel: Kernel, name: str) -> str:
    return next(n.buffer.dtype for n in walk(kernel) if hasattr(n, "buffer") and n.buffer.name == name)


def _fuse(sch: Schedule, loops: list[str]) -> str:
    return sch.fuse(*loops) if len(loops) > 1 else loops[0]


# -- elementwise --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Elementwise:
    spatial: tuple
    total: int
    dtype: str


def _ew_analyze(kernel: Kernel, target) -> _Elementwise:
    name, _, chain, ndim = _single_stage(kernel, reduction=False)
    total = 1
    for lp in chain[:ndim]:
        total *= int(lp.extent.value)
    return _Elementwise(tuple(lp.var.name for lp in chain[:ndim]), total, _out_dtype(kernel, name))


def _ew_defaults(kernel, target, info: _Elementwise) -> dict:
    """Today's choice: 16-byte vectors halved until they divide the size, 256 threads (fewer, in
    whole warps, for small tensors)."""
    vec = max(1, target.vector_bytes * 8 // bits(info.dtype))
    while vec > 1 and info.total % vec:
        vec //= 2
    return {"vector": vec, "threads": min(256, max(32, -(-(info.total // vec) // 32) * 32))}


def _ew_schedule(sch: Schedule, knobs: dict, ctx) -> None:
    vec, threads = knobs["vector"], knobs["threads"]
    fused = _fuse(sch, list(ctx.info.spatial))
    if vec > 1:
        b, t, v = sch.split(fused, [None, threads, vec])
    else:
        (b, t), v = sch.split(fused, [None, threads]), None
    sch.bind(b, "blockIdx.x")
    sch.bind(t, "threadIdx.x")
    if v is not None:
        sch.vectorize(v)


@constraint("vector", "vector width")
def _vector_width(ctx):
    width = ctx["vector"] * bits(ctx.info.dtype) // 8
    return None if width <= ctx.target.vector_bytes else (f"{width}-byte accesses exceed the target's widest "
                                                           f"{ctx.target.vector_bytes}-byte access")


ELEMENTWISE = register(Template(
    "gpu.elementwise",
    [IntRange("threads", 32, 1024, step=32, default=256, doc="threads per block"),
     Pow2("vector", 1, 16, default=1, doc="consecutive elements per thread, as one vector access")],
    _ew_schedule, analyze=_ew_analyze, defaults=_ew_defaults, targets=("cuda",),
    constraints=[_vector_width, divides("vector", lambda ctx: ctx.info.total, "the element count"),
                 max_threads("threads", lambda ctx: ctx["threads"])],
    doc="All loops fused, one vector of `vector` elements per thread, `threads` threads per block."))


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


@dataclass(frozen=True)
class _Transpose:
    names: tuple  # spatial loops
    a: str  # the loop the input's innermost index runs along
    source: str
    itemsize: int


def _tr_analyze(kernel: Kernel, target) -> _Transpose:
    name, _, chain, ndim = _single_stage(kernel, reduction=False)
    if not _is_transpose(chain, ndim):
        raise ScheduleError(f"stage '{name}' is not a transpose (a copy whose innermost index is not the input's)")
    value = chain[ndim - 1].body.value
    while isinstance(value, Cast):
        value = value.value
    return _Transpose(tuple(lp.var.name for lp in chain[:ndim]), value.indices[-1].name, value.buffer.name,
                      bits(value.buffer.dtype) // 8)


def _tr_schedule(sch: Schedule, knobs: dict, ctx) -> None:
    info, t, rows = ctx.info, knobs["tile"], knobs["block_rows"]
    a, b = info.a, info.names[-1]
    others = [x for x in info.names if x not in (a, b)]
    ao, ao_i, ai = sch.split(a, [None, t // rows, rows])
    bo, bi = sch.split(b, [None, t])
    sch.reorder(*others, ao, bo, ai, bi, ao_i)
    if others:
        sch.bind(_fuse(sch, others), "blockIdx.z")
    sch.bind(ao, "blockIdx.y")
    sch.bind(bo, "blockIdx.x")
    sch.bind(ai, "threadIdx.y")
    sch.bind(bi, "threadIdx.x")
    tile = sch.cache_shared(info.source, bi)
    if knobs["pad"]:
        sch.pad(tile, knobs["pad"])


@constraint(("block_rows", "tile"), "tile shape")
def _rows_in_tile(ctx):
    return None if ctx["block_rows"] <= ctx["tile"] else f"more thread rows than the tile's {ctx['tile']} rows"


TRANSPOSE = register(Template(
    "gpu.transpose",
    [Pow2("tile", 8, 64, default=32, doc="square tile staged through shared memory"),
     Pow2("block_rows", 1, 32, default=8, doc="thread rows per block; each thread copies tile/block_rows elements"),
     IntRange("pad", 0, 2, default=1, doc="elements added to each shared row (1: no bank conflicts)")],
    _tr_schedule, analyze=_tr_analyze, targets=("cuda",),
    constraints=[_rows_in_tile, max_threads(("tile", "block_rows"), lambda ctx: ctx["tile"] * ctx["block_rows"]),
                 max_shared_memory(("tile", "pad"), lambda ctx: ctx["tile"] * (ctx["tile"] + ctx["pad"]) *
                                   ctx.info.itemsize)],
    doc="tile x tile blocks through a padded shared buffer: reads and writes both coalesced."))


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


@dataclass(frozen=True)
class _Reduction:
    name: str
    spatial: tuple
    red: tuple
    total: int  # output elements (rows)
    red_extent: int


def _red_analyze(kernel: Kernel, target) -> _Reduction:
    name, _, chain, ndim = _single_stage(kernel, reduction=True)
    total = red_extent = 1
    for lp in chain[:ndim]:
        total *= int(lp.extent.value)
    for lp in chain[ndim:]:
        red_extent *= int(lp.extent.value)
    return _Reduction(name, tuple(lp.var.name for lp in chain[:ndim]), tuple(lp.var.name for lp in chain[ndim:]),
                      total, red_extent)


def _outer_defaults(kernel, target, info: _Reduction) -> dict:
    return {"threads": min(256, max(32, -(-info.total // 32) * 32))}


def _outer_schedule(sch: Schedule, knobs: dict, ctx) -> None:
    b, t = sch.split(_fuse(sch, list(ctx.info.spatial)), [None, knobs["threads"]])
    sch.bind(b, "blockIdx.x")
    sch.bind(t, "threadIdx.x")


REDUCE_OUTER = register(Template(
    "gpu.reduce_outer",
    [IntRange("threads", 32, 1024, step=32, default=256, doc="threads per block, one output element each")],
    _outer_schedule, analyze=_red_analyze, defaults=_outer_defaults, targets=("cuda",),
    constraints=[max_threads("threads", lambda ctx: ctx["threads"])],
    doc="One thread per output element looping over the reduction (coalesced across threads)."))


def _inner_analyze(kernel: Kernel, target) -> _Reduction:
    info = _red_analyze(kernel, target)
    _, _, chain, ndim = _single_stage(kernel, reduction=True)
    if not any(p.name == info.name for p in kernel.params):
        # cross_thread_reduce leaves a temporary written by every thread (for a later cache_write, as
        # gpu.rowwise does); a one-stage kernel reducing into a temporary has nothing to keep it for
        raise ScheduleError(f"stage '{info.name}' reduces into a temporary, not a kernel output")
    if not _inner_reduction(chain, ndim):
        raise ScheduleError(f"stage '{info.name}': no load runs along the reduction in its innermost index")
    dtype = _out_dtype(kernel, info.name)
    if dtype not in ("float32", "int32"):
        raise ScheduleError(f"stage '{info.name}' reduces {dtype}; warp shuffles move float32 or int32")
    return info


def _reduce_threads(extent: int) -> int:
    """Today's choice: a warp for rows up to 512 elements, 128 threads up to 4096, else 256."""
    if extent <= 512:
        return 32
    return 128 if extent <= 4096 else 256


def _rows_default(rows_extent: int, threads: int) -> int:
    """Today's choice: with one warp per row, up to 4 rows per block, dividing the row count (no
    guard, so statistics stay in registers); a block per row otherwise."""
    if threads == 32 and rows_extent > 1:
        return max(d for d in range(1, min(4, rows_extent) + 1) if rows_extent % d == 0)
    return 1


def _inner_defaults(kernel, target, info: _Reduction) -> dict:
    threads = _reduce_threads(info.red_extent)
    return {"threads": threads, "rows": _rows_default(info.total, threads)}


def _inner_schedule(sch: Schedule, knobs: dict, ctx) -> None:
    info, threads = ctx.info, knobs["threads"]
    ro, rt = sch.split(_fuse(sch, list(info.red)), [None, threads])
    sch.reorder(rt, ro)
    row = _fuse(sch, list(info.spatial))
    _bind_rows(sch, row, threads, knobs["rows"])
    sch.cross_thread_reduce(info.name, rt)


def _bind_rows(sch: Schedule, row: str, threads: int, rows: int) -> str:
    """Bind the row loop: `rows` rows per block along threadIdx.y (always split for one warp per
    row), or a block per row; returns the innermost row loop."""
    extent = int(next(n for n in walk(sch.kernel.body) if isinstance(n, For) and n.var.name == row).extent.value)
    if (threads == 32 and extent > 1) or rows > 1:
        rb, ry = sch.split(row, [None, rows])
        sch.bind(rb, "blockIdx.x")
        sch.bind(ry, "threadIdx.y")
        return ry
    sch.bind(row, "blockIdx.x")
    return row


def _row_knobs(rows_of) -> tuple:
    knobs = [Pow2("threads", 32, 1024, default=32, doc="threads reducing one row (warp shuffles, then shared)"),
             IntRange("rows", 1, 32, default=1, doc="rows per block, along threadIdx.y")]
    constraints = [max_threads(("threads", "rows"), lambda ctx: ctx["threads"] * ctx["rows"]),
                   divides("rows", rows_of, "the row count")]
    return knobs, constraints


_INNER_KNOBS, _INNER_CONSTRAINTS = _row_knobs(lambda ctx: ctx.info.total)
REDUCE_INNER = register(Template(
    "gpu.reduce_inner", _INNER_KNOBS, _inner_schedule, analyze=_inner_analyze, defaults=_inner_defaults,
    constraints=_INNER_CONSTRAINTS, targets=("cuda",),
    doc="A reduction over the innermost axes: `threads` threads per output element, combined with warp "
        "shuffles (and shared memory across warps)."))


# -- row-wise fused kernels (softmax, layer norm) ---------------------------------------------------


@dataclass(frozen=True)
class _Rowwise:
    producers: tuple  # (name, reduction loop names) of the statistics, in order
    row_loops: tuple
    col_loops: tuple
    rows_extent: int
    row_len: int


def _rowwise_analyze(kernel: Kernel, target) -> _Rowwise:
    """Reductions over trailing axes into keepdims temporaries, then one elementwise stage writing
    a parameter: ScheduleError naming what does not fit otherwise."""
    found = _dsl_stages(kernel)
    if len(found) < 2:
        raise ScheduleError("a row-wise kernel has statistics and an elementwise stage; this one has one stage")
    last_name, last = found[-1]
    ndim = _ndim(kernel, last_name)
    chain = perfect_chain(last)
    if init_guards(last) or len(chain) != ndim or not any(p.name == last_name for p in kernel.params):
        raise ScheduleError(f"the last stage '{last_name}' is not an elementwise stage writing a kernel parameter")
    temps = {n.buffer.name for n in walk(kernel.body) if isinstance(n, Allocate)}
    rows, producers = None, []
    for name, nest in found[:-1]:
        if name not in temps or _ndim(kernel, name) != ndim:
            raise ScheduleError(f"stage '{name}' is not a temporary of the output's rank {ndim}")
        pchain = perfect_chain(nest)
        if not init_guards(nest) or len(pchain) <= ndim:
            raise ScheduleError(f"stage '{name}' is not a reduction")
        shape = next(n.buffer.shape for n in walk(kernel) if hasattr(n, "buffer") and n.buffer.name == name)
        lead = 0
        while lead < ndim and shape[lead] != 1:
            lead += 1
        if lead == 0 or any(s != 1 for s in shape[lead:]) or (rows is not None and rows != lead):
            raise ScheduleError(f"stage '{name}' (shape {shape}) does not reduce the same trailing axes as the others")
        if reduction_vars(nest) != {lp.var for lp in pchain[ndim:]}:
            raise ScheduleError(f"stage '{name}' reduces over loops that are not its trailing ones")
        if _out_dtype(kernel, name) not in ("float32", "int32"):
            raise ScheduleError(f"statistic '{name}' is {_out_dtype(kernel, name)}; warp shuffles move float32 "
                                f"or int32")
        rows = lead
        producers.append((name, tuple(lp.var.name for lp in pchain[ndim:])))
    if rows is None or rows >= ndim:
        raise ScheduleError("the statistics reduce every axis: no rows to spread over blocks")
    row_len = rows_extent = 1
    for lp in chain[rows:]:
        row_len *= int(lp.extent.value)
    for lp in chain[:rows]:
        rows_extent *= int(lp.extent.value)
    return _Rowwise(tuple(producers), tuple(lp.var.name for lp in chain[:rows]),
                    tuple(lp.var.name for lp in chain[rows:]), rows_extent, row_len)


def _rowwise_defaults(kernel, target, info: _Rowwise) -> dict:
    threads = _reduce_threads(info.row_len)
    return {"threads": threads, "rows": _rows_default(info.rows_extent, threads)}


def _rowwise_schedule(sch: Schedule, knobs: dict, ctx) -> None:
    """Everything inside one loop over rows: the statistics reduced across `threads` threads and
    kept in registers, then the elementwise stage spread over the same threads."""
    info, threads = ctx.info, knobs["threads"]
    for name, _ in reversed(info.producers):
        sch.compute_at(name, info.row_loops[-1])
    row = _fuse(sch, list(info.row_loops))
    inner_row = _bind_rows(sch, row, threads, knobs["rows"])
    for name, red in info.producers:
        ro, rt = sch.split(_fuse(sch, list(red)), [None, threads])
        sch.reorder(rt, ro)
        sch.cross_thread_reduce(name, rt)
    co, ct = sch.split(_fuse(sch, list(info.col_loops)), [None, threads])
    sch.reorder(ct, co)
    sch.bind(ct, "threadIdx.x")
    for name, _ in info.producers:
        sch.cache_write(name, inner_row, "local")
    sch.remove_dead_code()


_ROW_KNOBS, _ROW_CONSTRAINTS = _row_knobs(lambda ctx: ctx.info.rows_extent)
ROWWISE = register(Template(
    "gpu.rowwise", _ROW_KNOBS, _rowwise_schedule, analyze=_rowwise_analyze, defaults=_rowwise_defaults,
    constraints=_ROW_CONSTRAINTS, targets=("cuda",),
    doc="Softmax, log-softmax, layer and RMS norm: one fused kernel, statistics in registers."))


# -- contractions that tensor cores do not take (the GEMM template is tessel/schedules/gemm.py) ------


def _matmul_analyze(kernel: Kernel, target) -> str:
    name, _, _, _ = _single_stage(kernel, reduction=True)
    if contraction_parts(Schedule(kernel), name) is None:
        raise ScheduleError(f"stage '{name}' is not a contraction (a sum of products of two loads)")
    return name


def _simt_schedule(sch: Schedule, knobs: dict, ctx) -> None:
    schedule_simt(sch, ctx.info)


register(Template(
    "gpu.matmul_simt", [], _simt_schedule, analyze=_matmul_analyze, targets=("cuda",),
    doc="A register-tiled SIMT contraction (generic_gpu_matmul.schedule_simt: 16 x 16 threads, 2 x 2 "
        "outputs each, tiles of 16 along k through shared memory), for any dtypes and shapes; its sizes "
        "are not knobs yet."))


__all__ = ["CONTRACTION_TEMPLATES", "default_gpu_schedule", "default_gpu_template"]
