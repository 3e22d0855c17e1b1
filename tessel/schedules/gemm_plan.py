"""What the GEMM template (tessel/schedules/gemm.py) finds in a DSL kernel, and its application.

`gemm_plan(kernel)` recognises one contraction stage C[b.., i, j] += f32(A[..]) * f32(B[..]) (fp16
/ bf16 operands, one loop variable per operand dimension, either operand k-contiguous or not) and,
with `allow_epilogue`, a following elementwise stage that reads C only at its own element (bias,
activation, residual, the cast to the output's dtype: tessel.schedules.epilogue.from_stage makes it
the epilogue). `apply_gemm(kernel, knobs)` replaces the stage(s) by the template's loop nest (the
epilogue stage and C's temporary disappear: one kernel); a batch sharing B with A K-major runs as
one GEMM over batch x M rows (`batch_fold`). `float32_operands`: the plan of gemm.wgmma_tf32.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((32, 32), "float16", name="A"); B = ts.placeholder((32, 16), "float16", name="B")
    >>> k = ts.reduce_axis(32, name="k")
    >>> C = ts.compute((32, 16), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"),
    ...                axis=k), name="C")
    >>> D = ts.compute((32, 16), lambda i, j: ts.maximum(C[i, j], 0.0).astype("float16"), name="D")
    >>> plan = gemm_plan(ts.lower([A, B, D]), allow_epilogue=True)
    >>> plan.problem.m, plan.out.name, plan.epilogue.describe()
    (32, 'D', 'expr')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tessel.errors import ScheduleError
from tessel.ir.nodes import Allocate, Buffer, Cast, For, Kernel, Store, Var, seq, substitute
from tessel.schedules.epilogue import Epilogue

if TYPE_CHECKING:
    from tessel.schedules.gemm import GemmProblem


@dataclass(frozen=True)
class GemmPlan:
    """What the template found in a kernel: the stage, its loop nest, the problem and the index
    maps of A, B and C (the DSL loads and store with the loop variables substituted)."""

    stage: str
    nest: For
    problem: GemmProblem
    a: object  # Load of A
    b: object  # Load of B
    update: Store
    batch_vars: tuple
    i: Var
    j: Var
    k: Var
    epilogue: Epilogue | None = None  # a fused elementwise stage reading the result pointwise
    out: Buffer | None = None  # that stage's output (what the kernel stores)
    epilogue_nest: For | None = None  # the stage storing `out`
    folded: tuple = ()  # (loop name, temporary) of elementwise stages folded into the epilogue


def gemm_plan(kernel: Kernel, allow_epilogue: bool = False, float32_operands: bool = False) -> GemmPlan:
    """The GEMM in `kernel` (one DSL stage C[b.., i, j] += f32(A[..]) * f32(B[..]), fp16 / bf16
    operands each indexed by one variable per dimension, float32 C), optionally followed by one
    elementwise stage reading C only at its own element (the graph's GEMM + bias + GELU, or the
    cast to the output's dtype: fused as the epilogue; only with `allow_epilogue`: a template that
    takes the plan must apply `plan.epilogue` and store `plan.out`), or ScheduleError saying why not.
    `float32_operands`: the operands are float32 instead (C += A * B, no casts: gemm.wgmma_tf32)."""
    from tessel.schedules.generic import stages

    found = stages(kernel)
    if len(found) >= 2 and allow_epilogue:
        return _plan_with_epilogue(kernel, found, float32_operands)  # epilogue stages or materialised operand copies
    if len(found) != 1:
        raise ScheduleError(f"kernel '{kernel.name}' has {len(found)} stages; the gemm template takes one "
                            f"(and an elementwise epilogue)")
    return _contraction_plan(kernel, *found[0], float32_operands=float32_operands)


def _plan_with_epilogue(kernel: Kernel, found: list, float32_operands: bool = False) -> GemmPlan:
    from tessel.ir.nodes import Const, Load, walk
    from tessel.schedules.epilogue import from_stage
    from tessel.schedules.nest import init_guards, perfect_chain

    red = [k for k, (_, nst) in enumerate(found) if init_guards(nst)]
    if len(red) != 1:
        raise ScheduleError(f"kernel '{kernel.name}': {len(red)} reduction stages; the gemm template takes one "
                            f"contraction")
    (name, nest), before, rest = found[red[0]], found[:red[0]], found[red[0] + 1:]
    env, folded = {}, []

    def one_store(ename, enest):
        stores = [n for n in walk(enest) if isinstance(n, Store)]
        chain = perfect_chain(enest)
        if len(stores) != 1 or len(chain) != stores[0].buffer.ndim or chain[-1].body != stores[0]:
            raise ScheduleError(f"kernel '{kernel.name}': stage '{ename}' is not one store in its loops")
        lv = tuple(lp.var for lp in chain)
        ext = tuple(lp.extent.value if isinstance(lp.extent, Const) else None for lp in chain)
        if tuple(stores[0].indices) != lv or ext != tuple(stores[0].buffer.shape):
            # the templates write whole tiles of the output: a stage over part of it (or elsewhere) is not theirs
            raise ScheduleError(f"kernel '{kernel.name}': stage '{ename}' stores {stores[0].buffer.name} at "
                                f"loops of extents {ext}, not at every element of its shape "
                                f"{tuple(stores[0].buffer.shape)}")
        return stores[0], lv

    # operands the lowering materialised (a transposed copy): read in place by the template's loads
    for ename, enest in before:
        st, lv = one_store(ename, enest)
        v = st.value.value if isinstance(st.value, Cast) and st.value.dtype == st.buffer.dtype else st.value
        if st.buffer in kernel.params or not isinstance(v, Load) or v.buffer in env:
            raise ScheduleError(f"kernel '{kernel.name}': stage '{ename}' before the contraction is not a copy of "
                                f"an operand")
        env[st.buffer] = (lv, st.value)
        folded.append((enest.var.name, st.buffer))
    nest = _fold(nest, env)
    # elementwise stages between the contraction and the output (temporaries the lowering kept, e.g.
    # a value a tanh-GELU reads three times) are folded into the last one's expression: in
    # registers, recomputing them costs a few instructions and no memory
    store = enest = None
    for ename, enest in rest:
        st, lv = one_store(ename, enest)
        value = _fold(st.value, env)
        if st.buffer in kernel.params:
            if (ename, enest) != rest[-1]:
                raise ScheduleError(f"kernel '{kernel.name}': epilogue stage '{ename}' is an output before the last")
            store, chain = Store(st.buffer, st.indices, value), lv
            break
        env[st.buffer] = (lv, value)
        folded.append((enest.var.name, st.buffer))
    if rest and store is None:
        raise ScheduleError(f"kernel '{kernel.name}': no epilogue stage stores a kernel output")
    bufs = []
    for n in walk(nest):
        if isinstance(n, (Load, Store)) and n.buffer not in bufs:
            bufs.append(n.buffer)
    plan = _contraction_plan(Kernel(kernel.name, tuple(bufs), nest), name, nest, float32_operands=float32_operands)
    if store is None:
        return dataclasses.replace(plan, folded=tuple(folded))
    epi = from_stage(store, chain, plan.update.buffer)
    return dataclasses.replace(plan, epilogue=epi, out=store.buffer, epilogue_nest=enest, folded=tuple(folded))


def _fold(value, env: dict):
    """`value` with every load of a folded temporary replaced by that temporary's expression at
    the load's indices."""
    from tessel.ir.nodes import Load, rewrite

    def fn(n):
        if isinstance(n, Load) and n.buffer in env:
            loop_vars, expr = env[n.buffer]
            return substitute(expr, dict(zip(loop_vars, n.indices)))
        return None
    return rewrite(value, fn, fixpoint=False) if env else value


def _contraction_plan(kernel: Kernel, name: str, nest: For, float32_operands: bool = False) -> GemmPlan:
    from tessel.schedules.generic_gpu_matmul import contraction_parts
    from tessel.schedules.schedule import Schedule

    parts = contraction_parts(Schedule(kernel), name)
    if parts is None:
        raise ScheduleError(f"stage '{name}' is not a contraction (a sum of products of two loads)")
    chain, ndim, update, a, b = parts
    prod = update.value.b
    if float32_operands:
        if update.buffer.dtype != "float32" or a.buffer.dtype != "float32" or b.buffer.dtype != "float32":
            raise ScheduleError(f"stage '{name}': operands {a.buffer.dtype} and {b.buffer.dtype} into "
                                f"{update.buffer.dtype}; the tf32 template takes float32 operands and output")
    else:
        if update.buffer.dtype != "float32" or not all(isinstance(f, Cast) and f.dtype == "float32"
                                                        for f in (prod.a, prod.b)):
            raise ScheduleError(f"stage '{name}': the gemm template accumulates float32 products of casts into a "
                                f"float32 output")
        if a.buffer.dtype != b.buffer.dtype or a.buffer.dtype not in ("float16", "bfloat16"):
            raise ScheduleError(f"stage '{name}': operands {a.buffer.dtype} and {b.buffer.dtype}; mma.sync takes "
                                f"two float16 or two bfloat16 operands")
    bvars = tuple(lp.var for lp in chain[:ndim - 2])
    i, j, k = (lp.var for lp in chain[ndim - 2:ndim + 1])
    if tuple(update.indices) != bvars + (i, j):
        raise ScheduleError(f"stage '{name}': the output is not stored at its loop variables")
    kc = []
    for ld, outer, what in ((a, i, "A"), (b, j, "B")):
        if not all(isinstance(x, Var) for x in ld.indices) or len(set(ld.indices)) != len(ld.indices):
            raise ScheduleError(f"stage '{name}': operand {ld.buffer.name} is not indexed by one loop variable per "
                                f"dimension")
        last2 = tuple(ld.indices[-2:])
        if last2 not in ((outer, k), (k, outer)) or not set(ld.indices[:-2]) <= set(bvars):
            raise ScheduleError(f"stage '{name}': operand {ld.buffer.name} is not a {what} tile of the GEMM")
        kc.append(last2 == (outer, k))
    ext = {lp.var: int(lp.extent.value) for lp in chain}
    _check_whole_gemm(name, nest, k, ext, update, (a, b))
    from tessel.schedules.gemm import GemmProblem

    p = GemmProblem(ext[i], ext[j], ext[k], a.buffer.dtype, tuple(ext[v] for v in bvars), kc[0], kc[1])
    return GemmPlan(name, nest, p, a, b, update, bvars, i, j, k)


def _check_whole_gemm(name: str, nest: For, k: Var, ext: dict, update: Store, loads: tuple) -> None:
    """ScheduleError unless the stage is the DSL's whole GEMM: every loop spans its buffer
    dimensions (the templates compute whole buffers) and C starts at 0.0 at k == 0 (their
    accumulators start at zero)."""
    from tessel.ir.nodes import Const
    from tessel.schedules.nest import init_guards

    for acc in (update,) + tuple(loads):
        for v, dim in zip(acc.indices, acc.buffer.shape):
            if isinstance(v, Var) and v in ext and ext[v] != dim:
                raise ScheduleError(f"stage '{name}': loop {v.name} runs {ext[v]} iterations over dimension {dim} of "
                                    f"'{acc.buffer.name}'; the gemm templates compute whole operands")
    (guard, _), = init_guards(nest)
    init = guard.then.value
    if guard.cond != k.eq(Const(0)) or not (isinstance(init, Const) and init.value == 0):
        raise ScheduleError(f"stage '{name}': the reduction does not start at 0 on {k.name} == 0 (init "
                            f"{guard.then.value} under {guard.cond})")


def batch_fold(plan: GemmPlan):
    """(problem, a_index, b_index, c_index) of the plan's batched GEMM with the batch folded into M
    (row m' = flat batch number x M + i: one GEMM of M' = batch x M rows), or None where it does
    not apply: a batch, B shared by every batch element (its indices use no batch variable: the
    weights of a linear layer over a [batch.., rows, features] input) and A K-major (each row's k
    run is contiguous: copies never cross a row, whatever A's batch layout). Tiles then span batch
    elements: no rows are wasted when M is not a multiple of the tile (M = 1 or 7 per batch
    element, say), and the grouped block order reuses B across them. gemm.mma_sync only: its
    operand copies are computed per row (TMA boxes of gemm.wgmma cannot cross the batch dimension).

    >>> import tessel as ts
    >>> X = ts.placeholder((4, 7, 32), "float16", name="X"); W = ts.placeholder((32, 16), "float16", name="W")
    >>> k = ts.reduce_axis(32, name="k")
    >>> Y = ts.compute((4, 7, 16), lambda b, i, j: ts.sum(X[b, i, k].astype("float32") * W[k, j].astype("float32"),
    ...                axis=k), name="Y")
    >>> q = batch_fold(gemm_plan(ts.lower([X, W, Y])))[0]
    >>> q.m, q.n, q.k, q.batch
    (28, 16, 32, ())
    """
    from tessel.ir.nodes import free_vars
    from tessel.schedules.gemm import GemmProblem
    from tessel.schedules.nest import unflatten_index

    p = plan.problem
    bset = {v.name for v in plan.batch_vars}
    if not p.batch or not p.a_kcontig or any(v.name in bset for x in plan.b.indices for v in free_vars(x)):
        return None
    nb = 1
    for e in p.batch:
        nb *= e

    def split(mm):
        return tuple(unflatten_index(mm // p.m, tuple(p.batch))), mm % p.m

    def a_index(bv, mm, kk):
        b, i = split(mm)
        env = dict(zip(plan.batch_vars, b))
        env.update({plan.i: i, plan.k: kk})
        return tuple(substitute(x, env) for x in plan.a.indices)

    def b_index(bv, n, kk):
        return tuple(substitute(x, {plan.j: n, plan.k: kk}) for x in plan.b.indices)

    def c_index(bv, mm, n):
        b, i = split(mm)
        return b + (i, n)

    q = GemmProblem(nb * p.m, p.n, p.k, p.dtype, (), True, p.b_kcontig, p.out_dtype)
    return q, a_index, b_index, c_index


def mma_problem(plan: GemmPlan):
    """The problem gemm.mma_sync runs for `plan`: the batch-folded one where `batch_fold` applies."""
    fold = batch_fold(plan)
    return fold[0] if fold is not None else plan.problem


def apply_gemm(kernel: Kernel, knobs, plan: GemmPlan | None = None, shared_limit: int | None = None) -> Kernel:
    """`kernel` with its GEMM stage (and a fused epilogue stage) replaced by the template's loop
    nest for `knobs` (GemmKnobs); `shared_limit`: the target's shared memory (default sm_90a's)."""
    from tessel.schedules.gemm import SHARED_LIMIT, build_gemm_body, knob_problems

    shared_limit = SHARED_LIMIT["sm_90a"] if shared_limit is None else shared_limit
    plan = plan or gemm_plan(kernel, allow_epilogue=True)
    bad = knob_problems(plan.problem, knobs, shared_limit)
    if bad:
        raise ScheduleError(f"gemm knob {bad[0][0]}={getattr(knobs, bad[0][0])!r}: {bad[0][1]}")

    def index_of(ld, outer_var):
        def index(bv, outer, kk):
            env = dict(zip(plan.batch_vars, bv))
            env.update({outer_var: outer, plan.k: kk})
            return tuple(substitute(x, env) for x in ld.indices)
        return index

    def c_index(bv, m, n):
        return tuple(bv) + (m, n)

    acc = plan.update.buffer
    c, raw = (acc, None) if plan.epilogue is None else (plan.out, acc if acc in kernel.params else None)
    fold = batch_fold(plan)
    problem, a_index, b_index = plan.problem, index_of(plan.a, plan.i), index_of(plan.b, plan.j)
    if fold is not None:  # one GEMM over batch x M rows (the epilogue still sees C's full index)
        problem, a_index, b_index, c_index = fold
    body, launch = build_gemm_body(problem, knobs, plan.a.buffer, plan.b.buffer, c, a_index, b_index, c_index,
                                   epilogue=plan.epilogue, raw=raw)
    return replace_stages(kernel, plan, body, launch)


def output_problem(plan: GemmPlan) -> "GemmProblem":
    """The plan's problem with the dtype of what the kernel stores: the epilogue stage's output
    when there is one (e.g. float16 after bias + GELU), else the contraction's own."""
    out = plan.out if plan.epilogue is not None else plan.update.buffer
    return dataclasses.replace(plan.problem, out_dtype=out.dtype)


def replace_stages(kernel: Kernel, plan: GemmPlan, body, launch) -> Kernel:
    """`kernel` with the plan's contraction nest replaced by a template's `body` (and `launch`);
    the fused epilogue stage, the folded operand copies and their temporaries go: one kernel."""
    from tessel.schedules.nest import replace_loop

    out = replace_loop(kernel, plan.nest.var.name, lambda _: body)
    drops = ((plan.epilogue_nest.var.name, plan.update.buffer),) if plan.epilogue is not None else ()
    for loop, temp in drops + tuple(plan.folded):
        out = _drop_stage(out, loop, temp)
    return dataclasses.replace(out, target="cuda", launch=launch)


def _drop_stage(kernel: Kernel, loop: str, temp: Buffer) -> Kernel:
    from tessel.ir.nodes import Seq, rewrite

    def fn(n):
        if isinstance(n, For) and n.var.name == loop:
            return Seq(())
        if isinstance(n, Allocate) and n.buffer == temp:
            return n.body
        if isinstance(n, Seq) and any(isinstance(x, Seq) and not x.stmts for x in n.stmts):
            return seq(*n.stmts)
        return None
    return rewrite(kernel, fn, fixpoint=False)


__all__ = ["GemmPlan", "apply_gemm", "batch_fold", "gemm_plan", "mma_problem", "output_problem", "replace_stages"]
