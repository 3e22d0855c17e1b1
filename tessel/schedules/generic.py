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

The strategies are one template, "cpu.generic" (tessel/schedules/template.py), whose knobs are
the tile sizes, the vector width, the parallel threshold and panel packing; its defaults are the
choices above, so the tuner searches around them. Every choice is a Schedule primitive, so the
result carries a replayable trace: one "template" step with the knobs, then the primitives. What
the template may skip (a stage it cannot schedule, a loop a guard keeps serial) is a declared
fallback, recorded in the trace.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((64, 32), name="A"); B = ts.placeholder((32, 64), name="B")
    >>> k = ts.reduce_axis(32, name="k")
    >>> C = ts.compute((64, 64), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    >>> sch = default_schedule(ts.lower([A, B, C]))
    >>> [s.primitive for s in sch.trace][:3]
    ['template', 'split', 'split']
    >>> knobs = sch.trace[0].args["knobs"]
    >>> sch.trace[0].args["name"], knobs["tile_cols"] % host_vector().lanes("float32")
    ('cpu.generic', 0)
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.dtypes import bits
from tessel.ir.nodes import Allocate, Binary, Const, For, Kernel, Load, Seq, Store, walk
from tessel.schedules.cpu_host import host_vector
from tessel.schedules.nest import (
    IdentityCache, init_guards, inits_at_first_iteration, perfect_chain, release_caches,
)
from tessel.schedules.schedule import Schedule
from tessel.schedules.template import Bool, Choice, IntRange, Pow2, Template, at_most, constraint, register


def stages(kernel: Kernel) -> list[tuple[str, For]]:
    """The top-level loop nests of a kernel and the buffer each writes, in order."""
    return list(_STAGES.get(kernel, _find_stages))


# the templates ask these of one kernel several times (each template's analysis, then the schedule)
_STAGES, _WRITTEN, _BUFFERS, _ANALYSES = IdentityCache(64), IdentityCache(4096), IdentityCache(64), IdentityCache(64)


def _find_stages(kernel: Kernel) -> tuple:
    body = kernel.body
    while isinstance(body, Allocate):
        body = body.body
    items = body.stmts if isinstance(body, Seq) else (body,)
    out = []
    for st in items:
        if isinstance(st, For):
            written = _WRITTEN.get(st, _written)
            if len(written) == 1:
                out.append((next(iter(written)), st))
    return tuple(out)


def _written(nest: For) -> frozenset:
    return frozenset(n.buffer.name for n in walk(nest) if isinstance(n, Store))


def _buffer_named(kernel: Kernel, name: str):
    """The buffer of the first node (pre-order) that names one called `name`, or None."""
    return _BUFFERS.get(kernel, _first_buffers).get(name)


def _first_buffers(kernel: Kernel) -> dict:
    out: dict = {}
    for n in walk(kernel):
        if hasattr(n, "buffer"):
            out.setdefault(n.buffer.name, n.buffer)
    return out


def default_schedule(kernel: Kernel, target: str = "cpu", knobs: dict | None = None) -> Schedule:
    """Schedule every stage of `kernel` with the default template of `target` ("cpu.generic" on
    the CPU, generic_gpu's templates on CUDA targets) and `knobs` (missing ones: the defaults);
    returns the Schedule (its `.kernel` is the result, its `.trace` the steps)."""
    if str(target).startswith("cuda") or getattr(target, "kind", None) == "cuda":
        from tessel.schedules.generic_gpu import default_gpu_schedule

        return default_gpu_schedule(kernel, target, knobs)
    if str(target) != "cpu":
        raise ScheduleError(f"no default schedules for target {target!r}; targets: cpu, cuda[:sm_XY]")
    try:
        if knobs is None:  # kernels a specific CPU template takes (attention, convolutions) get it, with its defaults
            return default_cpu_template(kernel).apply(kernel, None, "cpu")
        return CPU_GENERIC.apply(kernel, knobs, "cpu")
    finally:
        release_caches()  # the analyses of this kernel's trees: no use for the next kernel


def default_cpu_template(kernel: Kernel):
    """The template `default_schedule` applies to `kernel` on the CPU: the first specific one that
    takes it (attention, depthwise, NCHW pointwise/stem convolution, convolution), else cpu.generic.
    The tuner searches this one first, so a tuned record competes with what compile() would do.

    >>> import tessel as ts
    >>> x = ts.placeholder((4, 8), name="x")
    >>> default_cpu_template(ts.lower([x, ts.compute((4, 8), lambda i, j: x[i, j] * 2, name="y")])).name
    'cpu.generic'
    """
    from tessel.schedules.cpu_attention import CPU_ATTENTION
    from tessel.schedules.cpu_conv import CPU_CONV
    from tessel.schedules.cpu_conv_nchw import CPU_CONV_NCHW
    from tessel.schedules.cpu_depthwise import CPU_DEPTHWISE

    for tpl in (CPU_ATTENTION, CPU_DEPTHWISE, CPU_CONV_NCHW, CPU_CONV):
        if tpl.applies(kernel, "cpu") is None:
            return tpl
    return CPU_GENERIC


# -- the template -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stage:
    name: str
    kind: str  # "contraction", "reduction", "elementwise" or "other"
    extents: tuple  # of the spatial loops
    dtype: str


def _analyze(kernel: Kernel, target) -> list[_Stage]:
    """The stages of `kernel` this template schedules and their kinds (pure in `kernel`: cached)."""
    return list(_ANALYSES.get(kernel, _analyze_stages))


def _analyze_stages(kernel: Kernel) -> tuple:
    out = []
    for name, nest in stages(kernel):
        if not _in_dsl_form(kernel, name, nest):
            continue  # hand-written or already scheduled: left alone
        ndim = _ndim(kernel, name)
        chain = perfect_chain(nest)
        if any(int(lp.extent.value) <= 0 for lp in chain):
            continue  # an empty loop (the verifier accepts negative extents): nothing to schedule
        guards, reduction = init_guards(nest), chain[ndim:]
        if guards and not inits_at_first_iteration(guards, reduction):
            # `if true` / `if k < 0` inits are not a reduction's: reordering or vectorising it would
            # change what it computes (fuzz case generic_reduction_init_guard_not_first_iteration)
            continue
        if guards and reduction and _is_contraction(nest, chain, ndim):
            kind = "contraction"
        elif guards:
            kind = "reduction"
        elif not reduction:
            kind = "elementwise"
        else:
            kind = "other"
        dtype = _buffer_named(kernel, name).dtype
        out.append(_Stage(name, kind, tuple(int(lp.extent.value) for lp in chain[:ndim]), dtype))
    return tuple(out)


def _contractions(info) -> list[_Stage]:
    return [s for s in info if s.kind == "contraction"]


def _defaults(kernel, target, info) -> dict:
    """Register tiles sized for the host's SIMD registers (`cpu_host.host_vector`): 2 vectors of
    columns (1 when 2 do not divide the extent) and as many rows as leave 4 registers free (at
    most 8), each the largest divisor of its extent (no guards) unless that divisor is tiny; the
    smallest over stages. Measured on one AVX-512 core: 512^3 GEMM 4x16 51 GFLOP/s, 8x32 153;
    3x3 convolution 32->64 channels at 48x48: 8x16 121 GFLOP/s."""
    cons = _contractions(info)
    if not cons:
        return {}
    return {"tile_rows": min(_tile_rows(s) for s in cons), "tile_cols": min(_tile_cols(s) for s in cons)}


def _tile_cols(s: _Stage) -> int:
    lanes, extent = host_vector().lanes(s.dtype), s.extents[-1]
    for vecs in (2, 1):  # (a 3-vector tile measured slower than 1 vector on the 3x3 convolution)
        if extent % (vecs * lanes) == 0:
            return vecs * lanes
    # one partial vector (a divisor, so no guard keeps it scalar), or a guarded tile when that is tiny
    best = max(d for d in range(1, min(extent, lanes) + 1) if extent % d == 0)
    return best if best * 4 >= min(extent, lanes) else min(extent, lanes)


def _tile_rows(s: _Stage) -> int:
    hv = host_vector()
    vecs = -(-_tile_cols(s) // hv.lanes(s.dtype))
    return _tile(s.extents[-2], max(1, min(8, (hv.registers - 4) // vecs)))


def _relevant(kernel, target, info) -> list[str]:
    kinds = {s.kind for s in info}
    names = ["min_parallel_work"] if kinds - {"other"} else []
    if kinds & {"contraction", "elementwise", "reduction"}:
        names.insert(0, "vector_lanes")
    if "reduction" in kinds:
        names += ["reduce_vector", "reduce_accumulators", "row_fuse"]
    if "contraction" in kinds:
        names += ["tile_rows", "tile_cols", "pack"]
    return names


def _accumulator_registers(ctx) -> int:
    cons = _contractions(ctx.info)
    if not cons:
        return 0
    width = max(bits(s.dtype) for s in cons) // 8
    return ctx["tile_rows"] * -(-ctx["tile_cols"] * width // host_vector().bytes)


@constraint(("tile_rows", "tile_cols"), "registers")
def _fits_registers(ctx):
    # the host's own registers (32 on AVX-512), not the portable AVX2 figure of limits_of("cpu")
    used, limit = _accumulator_registers(ctx), host_vector().registers
    return None if used <= limit else f"needs {used} vector registers, the host has {limit}"


def _schedule(sch: Schedule, knobs: dict, ctx) -> None:
    fused = _fuse_rows(sch, ctx.info, knobs)
    nests = dict(stages(sch.kernel))
    for k, stage in enumerate(ctx.info):
        if stage.kind == "other" or stage.name in fused:
            continue
        nest = nests[stage.name]
        if stage.kind == "elementwise" and _pad_rows(sch, stage, nest, knobs):
            continue
        if stage.kind == "reduction" and _row_reduce(sch, stage, nest, knobs):
            continue
        # a strategy that does not fit this stage must not fail the build: it stays naive (declared)
        done = ctx.attempt("naive_stage", stage.name, lambda: _schedule_stage(sch, ctx, stage, nest, knobs))
        if done and stage.kind == "contraction":
            fused |= _fuse_epilogue(sch, stage, ctx.info[k + 1:])


def schedule_rest(sch: Schedule, ctx, knobs: dict) -> None:
    """Schedule the stages of `sch.kernel` still in DSL form with this module's strategies: for
    templates that build some stages themselves (cpu_attention). `knobs` are cpu.generic's (the
    missing ones take their defaults for the kernel as it is now); `ctx` (the calling template's)
    must declare the fallbacks "naive_stage", "serial" and "unpacked"."""
    info = _analyze(sch.kernel, ctx.target)
    full = {k.name: k.default for k in CPU_GENERIC.knobs}
    full.update(_defaults(sch.kernel, ctx.target, info))
    full.update(knobs)
    nests = dict(stages(sch.kernel))
    fused: set = set()
    for k, stage in enumerate(info):
        if stage.kind == "other" or stage.name in fused:
            continue
        if stage.kind == "elementwise" and _pad_rows(sch, stage, nests[stage.name], full):
            continue
        if stage.kind == "reduction" and _row_reduce(sch, stage, nests[stage.name], full):
            continue
        done = ctx.attempt("naive_stage", stage.name,
                           lambda: _schedule_stage(sch, ctx, stage, nests[stage.name], full))
        if done and stage.kind == "contraction":
            fused |= _fuse_epilogue(sch, stage, info[k + 1:])


def _fuse_rows(sch: Schedule, info: list, knobs: dict) -> set:
    """Runs of row-wise stages (softmax, norms) fused under one row loop (cpu_rows.py); returns the
    names of the stages fused. Off with the knob "row_fuse" or "reduce_vector"."""
    from tessel.schedules.cpu_rows import fuse_rows

    if not (knobs.get("row_fuse", True) and knobs.get("reduce_vector", True)):
        return set()
    eligible = [s.name for s in info if s.kind in ("reduction", "elementwise")]
    done = fuse_rows(sch.kernel, eligible, knobs["vector_lanes"], knobs.get("reduce_accumulators", 0),
                     knobs["min_parallel_work"])
    if done is None:
        return set()
    sch.kernel = done[0]
    return done[1]


def _pad_rows(sch: Schedule, stage: _Stage, nest: For, knobs: dict) -> bool:
    """A zero-padding copy rebuilt as whole-row vector copies (cpu_pad.py); False if `nest` is not one."""
    from tessel.schedules.cpu_pad import pad_fill

    new = pad_fill(sch.kernel, stage.name, nest, knobs["vector_lanes"], knobs["min_parallel_work"])
    if new is None:
        return False
    sch.kernel = new
    return True


def _row_reduce(sch: Schedule, stage: _Stage, nest: For, knobs: dict) -> bool:
    """A reduction along contiguous rows rebuilt with vector accumulators (cpu_reduce.py); False if
    `nest` is not one or the knob "reduce_vector" is off."""
    from tessel.schedules.cpu_reduce import row_reduce

    if not knobs.get("reduce_vector", True):
        return False
    new = row_reduce(sch.kernel, stage.name, nest, len(stage.extents), knobs["vector_lanes"],
                     knobs.get("reduce_accumulators", 0), knobs["min_parallel_work"])
    if new is None:
        return False
    sch.kernel = new
    return True


def _fuse_epilogue(sch: Schedule, stage: _Stage, later: list) -> set:
    """Compute the elementwise stage right after a scheduled contraction in its write-back
    (tessel/schedules/cpu_epilogue.py); returns the names of the stages absorbed."""
    from tessel.schedules.cpu_epilogue import fuse_epilogue, right_after

    nxt = next((s for s in later if s.kind != "other"), None)
    if nxt is None or nxt.kind != "elementwise":
        return set()
    nest = dict(stages(sch.kernel)).get(nxt.name)
    if nest is None or not right_after(sch.kernel, stage.name, nest):
        # a statement between them (a stage this template leaves alone) may write what the epilogue
        # reads: computed in the write-back, it would read it too early (fuzz case
        # generic_epilogue_fused_over_a_stage_it_reads)
        return set()
    new = fuse_epilogue(sch.kernel, stage.name, nxt.name, nest, len(nxt.extents))
    if new is None:
        return set()
    sch.kernel = new
    return {nxt.name}


CPU_GENERIC = register(Template(
    "cpu.generic",
    [Pow2("vector_lanes", 4, 32, default=16, doc="lanes of the vectorized innermost loops"),
     IntRange("tile_rows", 1, 16, default=6, doc="rows of the register tile of a contraction"),
     IntRange("tile_cols", 1, 64, default=16, doc="columns of the register tile of a contraction"),
     Choice("min_parallel_work", (4096, 0, 256, 1024, 16384, 65536),
            doc="output elements below which an elementwise stage runs on one thread (reductions: /16; "
                "contractions: multiply-adds / 64)"),
     Bool("pack", default=True, doc="copy the column operand's panel into a contiguous local buffer"),
     Bool("reduce_vector", default=True,
          doc="a reduction along contiguous rows sums in vector accumulators, combined at the end (cpu_reduce.py)"),
     Choice("reduce_accumulators", (0, 1, 2, 4, 8),
            doc="independent vector accumulators of such a reduction (0: 4, or 8 on rows of 64 vectors or more)"),
     Bool("row_fuse", default=True,
          doc="consecutive row-wise stages (softmax, norms) share one loop over the rows (cpu_rows.py)")],
    _schedule,
    analyze=_analyze,
    defaults=_defaults,
    relevant=_relevant,
    constraints=[
        at_most("tile_rows", lambda ctx: min([s.extents[-2] for s in _contractions(ctx.info)] or [16]),
                "the contraction's row extent"),
        at_most("tile_cols", lambda ctx: min([s.extents[-1] for s in _contractions(ctx.info)] or [64]),
                "the contraction's column extent"),
        _fits_registers,
    ],
    fallbacks={
        "naive_stage": "a stage whose strategy raises ScheduleError keeps its naive loop nest",
        "unpacked": "the column operand is read in place when its panel cannot be cached (region not affine)",
        "serial": "a loop that cannot be vectorized or unrolled (a guard from a non-divisible split) stays serial",
    },
    targets=("cpu",),
    doc="Default CPU schedule: register-tiled contractions, parallel reductions, vectorized elementwise stages."))


def _in_dsl_form(kernel: Kernel, name: str, nest: For) -> bool:
    ndim = _ndim(kernel, name)
    chain = perfect_chain(nest)
    if len(chain) < ndim or not all(isinstance(lp.extent, Const) for lp in chain):
        return False
    want = tuple(lp.var for lp in chain[:ndim])
    stores = [n for n in walk(nest) if isinstance(n, Store)]
    return all(tuple(st.indices) == want for st in stores) and all(lp.kind == "serial" for lp in chain)


def _schedule_stage(sch: Schedule, ctx, stage: _Stage, nest: For, knobs: dict) -> None:
    """Schedule one stage by its kind (the strategies of the module docstring)."""
    ndim = len(stage.extents)
    chain = perfect_chain(nest)
    spatial = [lp.var.name for lp in chain[:ndim]]
    if stage.kind == "contraction":
        _schedule_contraction(sch, ctx, stage.name, chain, ndim, knobs)
    elif stage.kind == "reduction":
        if knobs.get("reduce_vector", True) and _kept_axis_vector(sch, ctx, stage, chain, ndim, knobs):
            return
        _parallel_outer(sch, spatial, list(stage.extents), knobs)
    elif stage.kind == "elementwise":
        _schedule_elementwise(sch, ctx, spatial, list(stage.extents), knobs)


def _kept_axis_vector(sch: Schedule, ctx, stage: _Stage, chain: list[For], ndim: int, knobs: dict) -> bool:
    """A reduction over outer axes whose innermost kept axis is the last index of every load (a sum over
    axis 0 of a row-major matrix): that axis split by the vector lanes and moved inside the reduction
    loops, so each reduction step is one vector update of contiguous outputs; False (nothing done) when
    the stage is not one or the lanes do not divide that axis."""
    lanes, last = knobs["vector_lanes"], chain[ndim - 1] if ndim else None
    if last is None or stage.extents[-1] % lanes or not chain[ndim:]:
        return False
    _, update = init_guards(chain[0])[0]
    val = update.value
    if not (isinstance(val, Binary) and isinstance(val.a, Load) and val.a.buffer.name == update.buffer.name):
        return False  # not `S[i] = S[i] op v` (a select, say: fuzz campaign crash at _kept_axis_vector)
    loads = [n for n in walk(val.b) if isinstance(n, Load)]
    if not loads or not all(n.indices and n.indices[-1] == last.var for n in loads):
        return False
    names = [lp.var.name for lp in chain]
    red = names[ndim:]
    lo, li = sch.split(names[ndim - 1], [None, lanes])
    outer = names[: ndim - 1] + [lo]
    sch.reorder(*outer, *red, li)
    init = sch.decompose_reduction(stage.name, at=red[0])
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    total = 1
    for e in stage.extents:
        total *= e
    if total >= knobs["min_parallel_work"] // 16:
        sch.parallel(fused)
    _vectorize_innermost_of(sch, ctx, li)
    _vectorize_innermost_of(sch, ctx, init[-1])
    return True


def _ndim(kernel: Kernel, name: str) -> int:
    buf = _buffer_named(kernel, name)
    return 0 if buf is None else buf.ndim


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


def _schedule_contraction(sch: Schedule, ctx, name: str, chain: list[For], ndim: int, knobs: dict) -> None:
    """Register-tiled contraction: for each column panel (parallel), copy the panel of the operand
    that runs along the columns (B of a GEMM) into a contiguous local buffer, then for each row
    tile accumulate a rows x cols block in registers over the whole reduction."""
    names = [lp.var.name for lp in chain]
    row, col = names[ndim - 2], names[ndim - 1]
    rows, cols = knobs["tile_rows"], knobs["tile_cols"]  # exactly as given: the constraints checked them
    lanes = knobs["vector_lanes"]
    ro, ri = sch.split(row, [None, rows])
    co, ci = sch.split(col, [None, cols])
    # a column tile of several vectors is an unrolled loop of whole vectors: LLVM legalizes a
    # 48-lane vector loop badly (a 3x3 convolution ran 50x slower than with 3 loops of 16 lanes)
    chunks = cols // lanes if cols > lanes and cols % lanes == 0 else 1
    batch = names[: ndim - 2]
    red = names[ndim:]
    # cpu.conv's knob: the reduction summed in blocks of at most `acc_block` products, each block's
    # partial sum started at 0 and added to the tile (cache_accumulate): shorter float chains
    block_outer = _reduction_blocks(sch, chain, ndim, knobs.get("acc_block", 0))
    if block_outer is not None:
        red = list(block_outer) + red[1:]
    # cpu.conv's knob: the innermost batch loop (a convolution's output channels) tiled into the
    # register tile too, so each column-operand vector feeds `tile_batch` multiply-adds
    tb = knobs.get("tile_batch", 1)
    inner = []
    if tb > 1 and batch:
        bo, bi = sch.split(batch[-1], [None, tb])
        batch, inner = batch[:-1] + [bo], [bi]
    sch.reorder(*batch, co, ro, *red, *inner, ri, ci)
    panel = _column_operand(chain, ndim) if knobs["pack"] else None
    if panel is not None:
        def pack():
            packed = sch.cache_read(panel, at=co, scope="local")
            _vectorize_innermost_of(sch, ctx, sch.get_loops(packed)[-1])
        ctx.attempt("unpacked", panel, pack)
    local = sch.cache_write(name, at=ro, scope="local")
    init = sch.decompose_reduction(local, at=red[0])
    partial = sch.cache_accumulate(local, at=red[0]) if block_outer is not None else None
    outer = batch + [co]
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    work = 1
    for lp in chain:
        work *= int(lp.extent.value)
    # a small contraction (under ~10 us on one core) runs on one thread: waking the pool costs
    # several us, and on a loaded machine a parallel loop waits whole scheduler slices for its
    # slowest thread (a 17-kernel ResNet-like model: 4.0 ms on 2 threads, 1.8 ms on 1, load 4)
    if work >= knobs["min_parallel_work"] * 64:
        sch.parallel(fused)
    if cols % lanes == 0 or cols <= lanes:
        col_loops = [ci, init[-1], f"{local}_out_ax{ndim - 1}"]
        if partial is not None:
            col_loops += [f"{partial}_init_ax{ndim - 1}", f"{partial}_out_ax{ndim - 1}"]
        if chunks > 1:  # whole vectors, in the compute, init and write-back loops
            for k, loop in enumerate(list(col_loops)):
                vec, col_loops[k] = sch.split(loop, [chunks, lanes])
                _unroll(sch, ctx, vec)
        for loop in col_loops:
            _vectorize_innermost_of(sch, ctx, loop)
    else:
        ctx.fallback("serial", ci, f"vector_lanes={lanes} does not divide tile_cols={cols}")
    extra = (lambda d: [f"{partial}_init_ax{d}", f"{partial}_out_ax{d}"]) if partial is not None else (lambda d: [])
    if rows > 1:
        for loop in [ri, init[-2], f"{local}_out_ax{ndim - 2}"] + extra(ndim - 2):
            _unroll(sch, ctx, loop)
    if inner:
        for loop in [inner[0], init[-3], f"{local}_out_ax{ndim - 3}"] + extra(ndim - 3):
            _unroll(sch, ctx, loop)


def _reduction_blocks(sch: Schedule, chain: list[For], ndim: int, block: int):
    """Split the outermost reduction loop so that one iteration of its outer part sums at most
    `block` products (the whole window of the inner reduction loops times the largest divisor of the
    outer one that fits); returns (outer, inner) names, or None when the reduction is that short
    already (or `block` is 0)."""
    red = chain[ndim:]
    if not block or not red:
        return None
    window = 1
    for lp in red[1:]:
        window *= int(lp.extent.value)
    first = int(red[0].extent.value)
    if first * window <= block:
        return None
    step = max([d for d in range(1, first + 1) if first % d == 0 and d * window <= block] or [1])
    if step == first:
        return None
    return tuple(sch.split(red[0].var.name, [None, step]))


def _column_operand(chain: list[For], ndim: int) -> str | None:
    """The input whose last index runs along the column loop but not along the row loop."""
    _, update = init_guards(chain[0])[0]
    row, col = chain[ndim - 2].var, chain[ndim - 1].var
    for load in (n for n in walk(update.value.b) if isinstance(n, Load)):
        vars_ = {v for idx in load.indices for v in walk(idx)}
        if load.indices and any(x == col for x in walk(load.indices[-1])) and row not in vars_:
            return load.buffer.name
    return None


def _unroll(sch: Schedule, ctx, loop: str) -> None:
    ctx.attempt("serial", loop, lambda: sch.unroll(loop))


def _vectorize_innermost_of(sch: Schedule, ctx, loop: str) -> None:
    # e.g. a guard from a non-divisible split makes it illegal: the loop stays serial (declared)
    ctx.attempt("serial", loop, lambda: sch.vectorize(loop))


def _parallel_outer(sch: Schedule, spatial: list[str], extents: list[int], knobs: dict) -> None:
    if not spatial:  # a reduction to a 0-d output: nothing to spread over threads
        return
    total = 1
    for e in extents:
        total *= e
    if total < knobs["min_parallel_work"] // 16:
        return
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    sch.parallel(fused)


def _schedule_elementwise(sch: Schedule, ctx, spatial: list[str], extents: list[int], knobs: dict) -> None:
    total = 1
    for e in extents:
        total *= e
    last, lanes = spatial[-1], knobs["vector_lanes"]
    inner = []
    if extents[-1] % lanes == 0 and extents[-1] >= lanes:
        outer_last, vec = sch.split(last, [None, lanes])
        outer, inner = spatial[:-1] + [outer_last], [vec]
    elif extents[-1] >= 4:
        # whole vectors and one shorter vectorized remainder (a 34-wide zero-padded conv row: 2 x 16 + 2),
        # or one partial vector when the row is shorter than a vector
        outer = spatial[:-1]
        if extents[-1] > lanes:
            pieces = sch.apply("peel", loop=last, factor=lanes)
            inner = pieces[1:]
            outer = outer or pieces[:1]  # a 1-D stage: its whole vectors run in parallel
        else:
            inner = [last]
    else:
        outer = spatial[:-1] if len(spatial) > 1 else spatial
        ctx.fallback("serial", last, f"vector_lanes={lanes} does not divide the innermost extent {extents[-1]}")
    if total >= knobs["min_parallel_work"] and outer:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)
    for loop in inner:
        _vectorize_innermost_of(sch, ctx, loop)


def _tile(extent: int, want: int) -> int:
    """The largest divisor of `extent` not above `want` (so no guards), or `want` if the best
    divisor is tiny compared with it."""
    best = max(d for d in range(1, min(extent, want) + 1) if extent % d == 0)
    return best if best * 4 >= min(extent, want) else min(extent, want)


from tessel.schedules import cpu_attention, cpu_conv, cpu_conv_nchw, cpu_depthwise  # noqa: E402, F401 - register the CPU templates
