"""Lowering a fused group (tessel.passes.graph.fusion) to one tensor-IR kernel.

For a group: a placeholder per external input (graph input, constant, another group's output),
each op's `lower(...)` from the registry in execution order, and as kernel outputs the values read
outside the group or returned by the graph; `tessel.ir.dsl.lower` turns that into loop nests. Then
elementwise temporaries are inlined into their readers (`Schedule.compute_inline`), where that does
not multiply work, and `build_group` schedules and compiles the result.

Names inside a kernel are canonical (inputs `in0, in1, ...`, outputs `out0, ...`, other values
`t0, ...`, the kernel named after its ops), so that two groups computing the same thing on the same
shapes (the layers of a transformer) lower to equal IR, which the model compiler builds once.

Scalar constants (one element) become immediates in the code instead of kernel arguments: their
tensor answers every index with the constant itself (`ScalarConst`).

Inlining policy: a temporary T that is not a reduction is inlined when its readers read at most
`2 * size(T)` elements in all (each element recomputed at most twice), or when T is pure data
movement (loads, selects, casts: transpose, reshape, pad) and no reduction re-reads it many times
(a GEMM operand transposed on the fly would lose the contiguous loads its schedule relies on, so it
stays materialised). Reductions are never inlined.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> from tessel.passes.graph.fusion import fuse
    >>> g = Graph()
    >>> x = g.add_input("x", (4, 8), "float32")
    >>> (y,) = g.add_node("relu", [x]); (z,) = g.add_node("exp", [y]); g.mark_outputs([z])
    >>> low = lower_group(g, fuse(g)[0])
    >>> low.args, [p.name for p in low.ir.params], low.inlined
    (['x', 'exp_out0'], ['in0', 'out0'], ['t0'])
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from tessel.errors import ScheduleError, TesselError
from tessel.frontend.graph import Graph
from tessel.ir.dsl import Tensor
from tessel.ir.nodes import Call, Cast, Const, For, Kernel, Load, Select, walk
from tessel.passes.graph.fusion import Group
from tessel.schedules.nest import IdentityCache


class LoweringError(TesselError):
    """An op's lowering broke its contract (wrong number, shape or dtype of results)."""


class ScalarConst(Tensor):
    """A one-element constant as a DSL tensor whose every element is the immediate constant.

    >>> c = ScalarConst("c", (1,), "float32", 0.5)
    >>> c[0]
    Const(value=0.5, dtype='float32')
    """

    def __init__(self, name: str, shape: tuple, dtype: str, value):
        super().__init__(name, shape, dtype)
        self.value = value

    def __getitem__(self, idx) -> Const:
        idx = idx if isinstance(idx, tuple) else (idx,)
        if len(idx) != self.ndim:
            super().__getitem__(idx)  # raises the DSL's own error
        return Const(self.value, self.dtype)


@dataclass
class LoweredGroup:
    """A group as an unscheduled IR kernel: `naive` (the DSL lowering), `ir` (elementwise
    temporaries inlined), `args` (the graph value passed for each kernel parameter, in order),
    `inlined` (temporaries inlined). With `inline=False` `ir` is None until `inline()` runs:
    equal naive kernels inline equally, so a caller that deduplicates kernels inlines once."""

    group: Group
    naive: Kernel
    args: list
    ir: Kernel | None = None
    inlined: list | None = None

    def inline(self) -> "LoweredGroup":
        if self.ir is None:
            self.ir, self.inlined = inline_temporaries(self.naive)
        return self


def kernel_name(group: Group) -> str:
    """A readable kernel name from the group's ops: 'matmul_add_gelu'."""
    ops = []
    for op in group.ops:
        if not ops or ops[-1] != op:
            ops.append(op)
    name = re.sub(r"\W", "_", "_".join(ops))
    return name if len(name) <= 48 else name[:40] + f"_{len(ops)}ops"


def lower_group(graph: Graph, group: Group, inline: bool = True) -> LoweredGroup:
    """Lower `group` of `graph` to an IR kernel with canonical names (see the module docstring)."""
    import numpy as np

    from tessel.frontend.ops import get_op
    from tessel.ir.dsl import compute, lower, placeholder

    env: dict = {}
    params, args = [], []
    for i, v in enumerate(group.inputs):
        val = graph.values[v]
        if val.is_const and val.data.size == 1:
            env[v] = ScalarConst(f"in{i}", val.shape, val.dtype, np.asarray(val.data).reshape(()).item())
        else:
            env[v] = placeholder(val.shape, val.dtype, name=f"in{i}")
            params.append(env[v])
            args.append(v)
    out_index = {v: k for k, v in enumerate(group.outputs)}
    temp = 0
    for node in group.nodes:
        ins = [env[v] if v is not None else None for v in node.inputs]
        outs = [(graph.values[v].shape, graph.values[v].dtype) for v in node.outputs]
        names = []
        for v in node.outputs:
            if v in out_index:
                names.append(f"out{out_index[v]}")
            else:
                names.append(f"t{temp}")
                temp += 1
        try:
            results = get_op(node.op, node.describe()).lower(ins, node.attrs, outs, names)
        except TesselError as e:
            raise type(e)(f"lowering {node.describe()}: {e}") from None
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        if len(results) != len(node.outputs):
            raise LoweringError(f"lowering {node.describe()}: {len(results)} tensor(s) for "
                                f"{len(node.outputs)} output(s)")
        for v, t, (shape, dtype), name in zip(node.outputs, results, outs, names):
            if not isinstance(t, Tensor) or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                got = f"{t.dtype}{list(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
                raise LoweringError(f"lowering {node.describe()}: output '{v}' should be {dtype}{list(shape)}, "
                                    f"the lowering gave {got}")
            if v in out_index and (t.op is None or t.name != name):
                t = compute(t.shape, lambda *i, t=t: t[i], name=name)  # a parameter needs its own stage
            env[v] = t
    outputs = [env[v] for v in group.outputs]
    low = LoweredGroup(group, lower(params + outputs, name=kernel_name(group)), args + list(group.outputs))
    return low.inline() if inline else low


# ---------------------------------------------------------------------------------------------
# Inlining
# ---------------------------------------------------------------------------------------------


def inline_temporaries(ir: Kernel) -> tuple[Kernel, list]:
    """Inline the elementwise temporaries of `ir` that the policy allows; returns the kernel and
    the names inlined. A temporary the schedule primitive refuses stays as it is."""
    from tessel.schedules.generic import stages
    from tessel.schedules.nest import init_guards
    from tessel.schedules.schedule import Schedule

    sch = Schedule(ir)
    params = {p.name for p in ir.params}
    inlined = []
    for name, nest in stages(ir):
        if name in params or init_guards(nest):
            continue
        if not _worth_inlining(sch.kernel, name, nest):
            continue
        try:
            sch.compute_inline(name)
            inlined.append(name)
        except ScheduleError:
            pass  # not in DSL form, or read in a way the primitive cannot substitute: keep it
    return sch.kernel, inlined


def _worth_inlining(kernel: Kernel, name: str, nest: For) -> bool:
    from tessel.schedules.generic import stages
    from tessel.schedules.nest import init_guards, perfect_chain

    size = 1
    for lp in perfect_chain(nest)[: _ndim_of(nest, name)]:
        size *= _extent(lp)
    total, amplified_reduction = 0, False
    for other, onest in stages(kernel):
        loads = _load_counts(onest).get(name, 0)
        if not loads or other == name:
            continue
        iters = 1
        for lp in perfect_chain(onest):
            iters *= _extent(lp)
        reads = iters * loads
        total += reads
        if init_guards(onest) and reads > 2 * size:
            amplified_reduction = True
    if total <= 2 * size:
        return True
    return _data_movement(nest, name) and not amplified_reduction


def _load_counts(nest: For) -> dict:
    """{buffer name: number of loads of it} in `nest`, cached per nest (inline_temporaries asks it of
    every stage for each temporary; the stages it does not rewrite keep their nests)."""
    return _LOADS.get(nest, lambda n: Counter(x.buffer.name for x in walk(n) if isinstance(x, Load)))


_LOADS = IdentityCache(4096)


def _extent(lp: For) -> int:
    return lp.extent.value if isinstance(lp.extent, Const) else 1


def _ndim_of(nest: For, name: str) -> int:
    from tessel.ir.nodes import Store

    for n in walk(nest):
        if isinstance(n, Store) and n.buffer.name == name:
            return n.buffer.ndim
    return 0


def _data_movement(nest: For, name: str) -> bool:
    """The stored value only moves data: loads, constants, selects and casts (index math aside)."""
    from tessel.ir.nodes import Store

    def ok(e) -> bool:
        if isinstance(e, (Load, Const)):
            return True
        if isinstance(e, Select):
            return ok(e.t) and ok(e.f)
        if isinstance(e, Cast):
            return ok(e.value)
        return False

    stores = [n for n in walk(nest) if isinstance(n, Store) and n.buffer.name == name]
    return bool(stores) and all(ok(s.value) for s in stores) and not any(isinstance(n, Call) for s in stores
                                                                        for n in walk(s.value))


def build_kernel(ir: Kernel, name: str, target: str = "cpu", tuning=None):
    """Schedule a lowered group kernel with the target's default schedule (or, with `tuning`, a
    `tessel.tune.reuse.LogSchedules`, its tuning log's best record when there is one) and compile it.

    >>> import tessel as ts
    >>> A = ts.placeholder((8,), name="in0"); B = ts.compute((8,), lambda i: A[i] * 2.0, name="out0")
    >>> build_kernel(ts.lower([A, B]), "double").name
    'double'
    """
    from tessel.compiler.driver import build
    from tessel.schedules.generic import default_schedule

    if target != "cpu":
        raise TesselError(f"kernel '{name}': models compile for target 'cpu' only so far, not {target!r}")
    scheduled = tuning.schedule_for(ir) if tuning is not None else None
    if scheduled is None:
        scheduled = default_schedule(ir).kernel
    return build(ir, target=target, schedule=scheduled, name=name)
