"""Pointwise (and stem) convolutions lowered channels-last, computed NCHW: the template "cpu.conv_nchw".

The conv lowering accumulates narrow convolutions channels-last, `acl[n, y, x, f]`, then stores
`out[n, f, y, x] = epilogue(acl[n, y, x, f])`: a transposed read, which the epilogue fusion cannot
take and which vectorizes as a gather. For a 1x1 stride-1 convolution whose output rows are whole
vectors of 8 or more, the NCHW form is faster (one thread, thread CPU time, MobileNet-like's
pointwise convs: 32->64 at 16x16 21.6 -> 10.8 us, 64->64 at 16x16 30.5 -> 20.9 us); so is a stem
convolution over 3 input channels (MobileNet-like's 3x3 stride-2 3->16 at 64x64: 19.1 -> 11.6 us). Except
for small planes whose rows are part of a host vector: since cpu.conv stores a transposed result from its
register tile there (`fuse_transposed`), on a Zen 5 core 64->128 at 8x8 takes 9.2 us channels-last against
12.7 NCHW (128->128 at 8x8, batch 16: 212 against 319). Other 3x3 convolutions gained nothing at 16x16 and 8x8 and
lose 2x at 4x4 (16 input channels, stride 2: 30.5 vs 32.7 us), so they stay channels-last.

This template permutes `acl` to `[n, f, y, x]` (`transform_layout`: its nest computes the same
values in NCHW order; the epilogue now reads it at its own index) and then applies cpu.conv with
its defaults (the epilogue fuses into the register tile's write-back). No knobs of its own: the
tuner explores cpu.conv's knobs on the channels-last form, this is the other form as one point.

Example:
    >>> import tessel as ts
    >>> from tessel.frontend.ops import get_op
    >>> x = ts.placeholder((1, 32, 16, 16), name="x"); w = ts.placeholder((64, 32, 1, 1), name="w")
    >>> (y,) = get_op("conv").lower([x, w], {}, [((1, 64, 16, 16), "float32")], ["y"])
    >>> sch = CPU_CONV_NCHW.apply(ts.lower([x, w, y]), None, "cpu")
    >>> [s.args.get("name") for s in sch.trace if s.primitive == "template"]
    ['cpu.conv_nchw', 'cpu.conv']
"""

from __future__ import annotations

import random

from tessel.errors import ScheduleError
from tessel.ir.nodes import Allocate, Binary, Kernel, Load, walk
from tessel.schedules.cpu_host import host_vector
from tessel.schedules.nest import init_guards, perfect_chain
from tessel.schedules.template import Template, register


FEW_CHANNELS = 4  # input channels of a stem convolution (RGB) that this template also takes


def find_pointwise_cl(kernel: Kernel) -> str:
    """The temporary `acl[n, y, x, f]` of a channels-last convolution, 1x1 with stride 1 or over at
    most FEW_CHANNELS input channels with stride 1 or 2, whose only reader stores `out[n, f, y, x]`
    from `acl[n, y, x, f]`, with rows of a multiple of 8 (a pointwise one with a plane of at most
    cpu_conv.FUSE_PLANE values: of whole host vectors); ScheduleError if none."""
    from tessel.schedules.cpu_conv import FUSE_PLANE
    from tessel.schedules.cpu_depthwise import _affine
    from tessel.schedules.generic import _in_dsl_form, stages

    temps = {n.buffer.name: n.buffer for n in walk(kernel.body) if isinstance(n, Allocate)}
    nests = stages(kernel)
    for name, nest in nests:
        buf = temps.get(name)
        if buf is None or buf.ndim != 4 or not init_guards(nest) or not _in_dsl_form(kernel, name, nest):
            continue
        chain = perfect_chain(nest)
        if len(chain) != 7:
            continue
        pointwise = all(int(lp.extent.value) == 1 for lp in chain[5:])
        if not pointwise and int(chain[4].extent.value) > FEW_CHANNELS:
            continue  # 1x1, or a stem convolution over a few input channels
        ho, wo = int(chain[1].extent.value), int(chain[2].extent.value)
        if wo % 8:
            continue
        if pointwise and wo % host_vector().lanes(buf.dtype) and ho * wo <= FUSE_PLANE:
            continue  # rows of part of a vector, small planes: channels-last with the transposed store fused wins
        _, update = init_guards(nest)[0]
        if not isinstance(update.value, Binary):
            continue  # not `S = S + x * w` (a copy body: fuzz case conv_nchw_analysis_crashes_on_copy_body)
        n, y, x, f = (lp.var for lp in chain[:4])
        vars_ = [lp.var for lp in chain]
        rng = random.Random(3)
        reads = [m for m in walk(update.value.b) if isinstance(m, Load) and m.buffer.ndim == 4
                 and x in set(walk(m.indices[-1]))]
        if len(reads) != 1:
            continue
        form = _affine(reads[0].indices[-1], vars_, rng)
        if form is None or form[1].get(x) not in ((1,) if pointwise else (1, 2)):
            continue  # pointwise: stride 1 along the row; a stem: stride 1 or 2 (a load pair + shuffle)
        readers = [(o, on) for o, on in nests if o != name and any(
            isinstance(m, Load) and m.buffer.name == name for m in walk(on))]
        if len(readers) != 1:
            continue
        och = perfect_chain(readers[0][1])
        loads = [m for m in walk(readers[0][1]) if isinstance(m, Load) and m.buffer.name == name]
        ov = [lp.var for lp in och[:4]]
        if len(och) < 4 or any(tuple(m.indices) != (ov[0], ov[2], ov[3], ov[1]) for m in loads):
            continue
        return name
    raise ScheduleError(f"kernel '{kernel.name}' holds no pointwise (1x1, stride 1) or few-channel channels-last "
                        f"convolution read back transposed")


def _schedule(sch, knobs: dict, ctx) -> None:
    from tessel.schedules.cpu_conv import CPU_CONV

    sch.apply("transform_layout", buffer=ctx.info, order=[0, 3, 1, 2])
    CPU_CONV.apply(sch, None, ctx.target)


CPU_CONV_NCHW = register(Template(
    "cpu.conv_nchw",
    [],
    _schedule,
    analyze=lambda kernel, target: find_pointwise_cl(kernel),
    targets=("cpu",),
    doc="A pointwise convolution lowered channels-last computed NCHW, then cpu.conv."))
