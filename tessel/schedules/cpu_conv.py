"""Direct CPU convolutions: the template "cpu.conv" for contractions whose innermost batch loop does
not index the operand that runs along the columns (the output channels of an NCHW convolution).

cpu.generic's register tile is `tile_rows x tile_cols` of one output plane: for a convolution
`out[n, f, y, x] = sum pad[n, c, y + ky, x + kx] * w[f, c, ky, kx]` each vector of input it loads
feeds one multiply-add, so the loop is bound by loads (half of them unaligned, shifted by kx).
This template also tiles the output channels into the register tile: a
`tile_batch x tile_rows x tile_cols` block, so each input vector feeds `tile_batch` multiply-adds
with `tile_batch` broadcast weights. Everything else is cpu.generic's strategy and knobs (its
epilogue fusion included); `tile_batch = 1` is exactly cpu.generic's schedule.

Applies to kernels with at least one such contraction whose channel extent has a divisor above 1;
its other stages are scheduled as cpu.generic schedules them.

Example:
    >>> import tessel as ts
    >>> from tessel.frontend.ops import get_op
    >>> x = ts.placeholder((1, 8, 16, 16), name="x"); w = ts.placeholder((8, 8, 3, 3), name="w")
    >>> (y,) = get_op("conv").lower([x, w], {"padding": (1, 1)}, [((1, 8, 16, 16), "float32")], ["y"])
    >>> sch = CPU_CONV.apply(ts.lower([x, w, y]), None, "cpu")
    >>> sch.trace[0].args["knobs"]["tile_batch"] > 1
    True
"""

from __future__ import annotations

from tessel.errors import ScheduleError
from tessel.ir.dtypes import bits
from tessel.ir.nodes import Kernel, Load, walk
from tessel.schedules import cpu_winograd, generic
from tessel.schedules.cpu_host import host_vector
from tessel.schedules.nest import init_guards, perfect_chain
from tessel.schedules.template import (
    Bool, Choice, Constraint, IntRange, Pow2, Template, at_most, constraint, register,
)


def _reuse_stages(kernel: Kernel, info) -> list:
    """The contraction stages whose innermost batch loop no vector operand reads (the loads whose last
    index runs along the columns: a convolution's input)."""
    nests = dict(generic.stages(kernel))
    out = []
    for st in info:
        if st.kind != "contraction" or len(st.extents) < 3:
            continue
        ndim = len(st.extents)
        chain = perfect_chain(nests[st.name])
        bvar, col = chain[ndim - 3].var, chain[ndim - 1].var
        _, update = init_guards(chain[0])[0]
        loads = [n for n in walk(update.value.b) if isinstance(n, Load) and n.indices
                 and col in set(walk(n.indices[-1]))]
        if loads and not any(bvar in set(walk(i)) for n in loads for i in n.indices):
            out.append(st)
    return out


FUSE_PLANE = 256  # output values per channel up to which a transposed result is stored from the register tile


class _Info(list):
    """cpu.generic's stage list, plus the stride-1 3x3 convolution Winograd can compute (or None)."""

    wino = None
    rows_stream = False  # every contraction is a 1x1 convolution whose vector operand also runs along the rows


def _rows_stream(kernel: Kernel, info) -> bool:
    """Whether each contraction has a one-element kernel window and its vector operand (the input of an
    NCHW convolution) is indexed by the row loop too: a pointwise convolution computed NCHW."""
    nests = dict(generic.stages(kernel))
    cons = generic._contractions(info)
    for st in cons:
        ndim = len(st.extents)
        chain = perfect_chain(nests[st.name])
        if any(int(lp.extent.value) != 1 for lp in chain[ndim + 1:]):
            return False
        row, col = chain[ndim - 2].var, chain[ndim - 1].var
        _, update = init_guards(chain[0])[0]
        vec = [n for n in walk(update.value.b) if isinstance(n, Load) and n.indices and col in set(walk(n.indices[-1]))]
        if not vec or not all(any(row in set(walk(i)) for i in n.indices[:-1]) for n in vec):
            return False
    return bool(cons)


def _analyze(kernel: Kernel, target):
    info = _Info(generic._analyze(kernel, target))
    reuse = _reuse_stages(kernel, info)
    if not reuse or all(max(d for d in range(1, 9) if s.extents[-3] % d == 0) == 1 for s in reuse):
        raise ScheduleError(f"kernel '{kernel.name}' has no contraction whose column operand is shared by its "
                            f"innermost batch loop (a convolution's output channels)")
    info.rows_stream = _rows_stream(kernel, info)
    try:
        info.wino = cpu_winograd.find(kernel)
    except ScheduleError:
        pass
    return info


def _defaults(kernel, target, info) -> dict:
    """cpu.generic's defaults, then the largest channel tile (at most 4; 8 for a pointwise conv computed
    NCHW) that leaves the register tile its rows: measured on the ResNet-like model's 3x3 16->16
    convolution at 32x32 (one core, AVX-512), see the commit message."""
    out = generic._defaults(kernel, target, info)
    cons = generic._contractions(info)
    chans = min(s.extents[-3] if len(s.extents) >= 3 else 1 for s in cons)
    hv = host_vector()
    vecs = -(-out["tile_cols"] // hv.lanes(cons[0].dtype))
    budget = hv.registers - 4
    tb = max(d for d in range(1, 5) if chans % d == 0)
    rows_extent = min(s.extents[-2] for s in cons)
    rows = generic._tile(rows_extent, max(1, min(8, budget // (vecs * tb))))
    if info.rows_stream:
        # a pointwise conv computed NCHW: each input vector feeds one multiply-add per output channel, so 8
        # channels x 16 accumulators (batch 16, one thread: 16->32 at 32x32 115 -> 105 us, 64->64 at 16x16
        # 167 -> 154); channels-last ones lost with it (128->128 at 8x8, batch 16: 168 -> 193)
        tb = max(d for d in range(1, 9) if chans % d == 0)
        rows = generic._tile(rows_extent, max(1, 16 // (vecs * tb)))
    while tb > 1 and tb * rows * vecs > budget:
        tb = max(d for d in range(1, tb) if chans % d == 0)
    # the panel a channels-last conv would pack is its weight, already contiguous along the columns
    # and small: copying it per column panel cost 9-14% (1x1 128->128 and 3x3 64->64 at 8x8, one core)
    out.update(tile_batch=tb, tile_rows=rows, pack=False)
    # the fused transposed stores scatter across output planes: a gain while a plane is at most 256 values
    # (1x1 stride 2 16->32 at 32x32, batch 16: 54.9 -> 50.1 us; pointwise 64->128 at 8x8: 9.7 -> 9.2 us), a
    # loss beyond (3x3 stride 2 16->32 at 64x64, a 32x32 plane: 64 -> 117 us)
    out["fuse_transposed"] = all(s.extents[-3] * s.extents[-2] <= FUSE_PLANE for s in cons if len(s.extents) >= 3)
    if info.wino is not None:
        out.update(cpu_winograd.defaults(info.wino, hv.lanes("float32"), hv.registers))
        out["wino_fuse"] = info.wino.layout == "nchw" or info.wino.shape[3] * info.wino.shape[4] <= FUSE_PLANE
    return out


@constraint(("tile_batch",), "divisibility")
def _batch_divides(ctx):
    for s in generic._contractions(ctx.info):
        c = s.extents[-3] if len(s.extents) >= 3 else 1
        if c % ctx["tile_batch"]:
            return f"does not divide the {c} output channels of '{s.name}'"
    return None


@constraint(("tile_batch", "tile_rows", "tile_cols"), "registers")
def _fits_registers(ctx):
    cons = generic._contractions(ctx.info)
    width = max(bits(s.dtype) for s in cons) // 8
    used = ctx["tile_batch"] * ctx["tile_rows"] * -(-ctx["tile_cols"] * width // host_vector().bytes)
    limit = host_vector().registers
    return None if used <= limit else f"needs {used} vector registers, the host has {limit}"


@constraint(("algorithm",) + cpu_winograd.KNOBS[:4], "winograd")
def _winograd_fits(ctx):
    if ctx["algorithm"] != "winograd":
        return None
    cv = ctx.info.wino
    if cv is None:
        return "the kernel holds no stride-1 3x3 convolution with an even output size (float32)"
    hv = host_vector()
    return cpu_winograd.check(cv, {k: ctx[k] for k in cpu_winograd.KNOBS[:4]}, hv.lanes("float32"), hv.registers)


def _direct_only(c: Constraint) -> Constraint:
    """`c`, checked only for the direct algorithm (Winograd ignores the direct register tile's knobs)."""
    return Constraint(c.knobs, lambda ctx: None if ctx["algorithm"] == "winograd" else c.check(ctx), c.what)


def _relevant(kernel, target, info) -> list:
    wino = ["algorithm", *cpu_winograd.KNOBS] if info.wino is not None else []
    return generic._relevant(kernel, target, info) + ["tile_batch", "acc_block", "fuse_transposed"] + wino


def _fuse_output(sch, cv, ctx) -> None:
    """The elementwise stage after the convolution (its epilogue) computed in Winograd's output transform."""
    from tessel.schedules.cpu_epilogue import fuse_epilogue

    from tessel.ir.nodes import Load, walk

    nests = dict(generic.stages(sch.kernel))
    for st in generic._analyze(sch.kernel, ctx.target):
        if any(isinstance(n, Load) and n.buffer.name == cv.acc for n in walk(nests[st.name])):
            if st.kind == "elementwise":
                new = fuse_epilogue(sch.kernel, cv.acc, st.name, nests[st.name], len(st.extents), computed=True)
                sch.kernel = sch.kernel if new is None else new
            return


def _schedule_direct(sch, knobs: dict, ctx) -> None:
    """cpu.generic's strategies (generic._schedule), where with `fuse_transposed` a contraction whose result
    is read back transposed (a channels-last convolution's NCHW output) also computes that reader, and the
    epilogue in it, in its write-back: the stores scatter along the output channels, the gather pass goes."""
    if not knobs["fuse_transposed"]:
        return generic._schedule(sch, knobs, ctx)
    from tessel.schedules.cpu_epilogue import fuse_epilogue

    nests = dict(generic.stages(ctx.kernel))
    fused: set = set()
    for k, stage in enumerate(ctx.info):
        if stage.kind == "other" or stage.name in fused:
            continue
        nest = nests[stage.name]
        if stage.kind == "elementwise" and generic._pad_rows(sch, stage, nest, knobs):
            continue
        done = ctx.attempt("naive_stage", stage.name,
                           lambda: generic._schedule_stage(sch, ctx, stage, nest, knobs))  # noqa: B023
        if not (done and stage.kind == "contraction"):
            continue
        got = generic._fuse_epilogue(sch, stage, ctx.info[k + 1:])
        nxt = next((s for s in ctx.info[k + 1:] if s.kind != "other"), None)
        if not got and nxt is not None and nxt.kind == "elementwise":
            later = dict(generic.stages(sch.kernel)).get(nxt.name)
            new = fuse_epilogue(sch.kernel, stage.name, nxt.name, later, len(nxt.extents), computed=True) \
                if later is not None else None
            if new is not None:
                sch.kernel, got = new, {nxt.name}
        fused |= got


def _schedule(sch, knobs: dict, ctx) -> None:
    if knobs["algorithm"] != "winograd":
        return _schedule_direct(sch, knobs, ctx)
    cv = ctx.info.wino
    sch.kernel = cpu_winograd.build(sch.kernel, cv, knobs, host_vector().lanes("float32"))
    if knobs["wino_fuse"]:
        _fuse_output(sch, cv, ctx)
    # the padding copy, a channels-last result's transposed read and the epilogue, as cpu.generic does
    generic.schedule_rest(sch, ctx, {k: knobs[k] for k in ("vector_lanes", "min_parallel_work")})


CPU_CONV = register(Template(
    "cpu.conv",
    list(generic.CPU_GENERIC.knobs) + [
        IntRange("tile_batch", 1, 8, default=1, doc="output channels in the register tile of a convolution"),
        Choice("acc_block", (64, 0, 32, 128, 256), doc="products per partial sum (cache_accumulate blocks of the "
               "reduction; 0: one chain over the whole reduction)"),
        Bool("fuse_transposed", default=False, doc="direct: a channels-last result's transposed read (and the "
             "epilogue) computed in the register tile's write-back"),
        Choice("algorithm", ("direct", "winograd"), doc="direct convolution, or Winograd F(2x2, 3x3) for a stride-1 "
               "3x3 one (cpu_winograd.py)"),
        Pow2("wino_rows", 1, 16, default=8, doc="Winograd: rows of the GEMMs' register tile (tiles, or output "
                 "channels of an NCHW result)"),
        Pow2("wino_vecs", 1, 4, default=2, doc="Winograd: vectors in the GEMMs' register tile"),
        Pow2("wino_block", 1, 32, default=2, doc="Winograd: tile rows (2 output rows each) per block"),
        Pow2("wino_images", 1, 16, default=1, doc="Winograd: images per block (a block of several holds their "
             "whole images, and wino_block is unused)"),
        Bool("wino_fuse", default=True, doc="Winograd: the epilogue (a channels-last result's transposed read "
             "included) computed in the output transform")],
    _schedule,
    analyze=_analyze,
    defaults=_defaults,
    relevant=_relevant,
    constraints=[
        *(_direct_only(c) for c in (
            at_most("tile_rows", lambda ctx: min([s.extents[-2] for s in generic._contractions(ctx.info)] or [16]),
                    "the contraction's row extent"),
            at_most("tile_cols", lambda ctx: min([s.extents[-1] for s in generic._contractions(ctx.info)] or [64]),
                    "the contraction's column extent"),
            _batch_divides,
            _fits_registers)),
        _winograd_fits,
    ],
    fallbacks=dict(generic.CPU_GENERIC.fallbacks),
    targets=("cpu",),
    doc="Direct CPU convolution: cpu.generic with the output channels tiled into the register tile."))
