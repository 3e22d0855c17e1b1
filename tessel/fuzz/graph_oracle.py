"""The graph-pass oracle: run one GraphCase (tessel/fuzz/graph_case.py) and judge it.

Stages, in order (each a coverage phase; the Outcome is oracles.Outcome, so graph failures are
recorded, deduplicated, reduced and replayed like kernel failures):

- program: the graph is well formed (`check_graph`, else rejected "verify") and the op
  registry's numpy references evaluate it on seeded inputs (`frontend.reference.run_graph`, else
  rejected "exec"): the reference results;
- graph:NAME: each graph pass of the pipeline; a non-TesselError is a **crash**, a graph that is
  no longer well formed (a node reading a value nothing defines, a cycle, a value whose shape or
  dtype its op's shape rule no longer gives, an output gone) a **verify** failure, and results of
  the numpy references on the rewritten graph that differ from the reference a **diff**: the
  first pass after which they differ is named;
- fuse: the groups partition the nodes (each node in exactly one group, **verify**);
- lower: every group lowered as the model compiler lowers it (`lower_group`), verified, and run by
  the reference interpreter in order: the graph's outputs must match the reference (**diff** at
  lower, naming the group's kernel);
- compile (cases marked `compile`): the rewritten graph through `tessel.compile(target="cpu",
  optimize=False)` with the case's fusion knobs (CPU schedules, tensor-IR passes, TVM): **diff** at
  compile;
- determinism: the pipeline run twice gives the same graph text (**nondet** at graph).

Example:
    >>> import random
    >>> from tessel.fuzz.gen_graph import graph_program
    >>> from tessel.fuzz.graph_case import GraphCase
    >>> run_graph_case(GraphCase(graph_program(random.Random(1)), seed=3)).status
    'ok'
"""

from __future__ import annotations

import hashlib
from collections import namedtuple
from contextlib import nullcontext

import numpy as np

from tessel.errors import TesselError
from tessel.fuzz.oracles import Outcome, _crash, _Stop, compare

_Param = namedtuple("_Param", "name dtype")


def check_graph(g) -> str | None:
    """None when `g` is well formed, else what is wrong (see the module docstring)."""
    from tessel.frontend.ops import get_op

    defined = set(g.inputs) | {v for v, val in g.values.items() if val.is_const}
    for v in g.inputs:
        if v not in g.values:
            return f"graph input '{v}' has no value"
    try:
        order = g.topo_order()
    except TesselError as e:
        return str(e)
    for n in order:
        for v in n.inputs:
            if v is not None and v not in defined:
                return f"node '{n.name}' ({n.op}) reads '{v}', which nothing defines before it"
        try:
            types = get_op(n.op, n.name).infer([g.values[v] if v is not None else None for v in n.inputs], n.attrs)
        except TesselError as e:
            return f"node '{n.name}' ({n.op}): its shape rule refuses its inputs now: {e}"
        if len(types) != len(n.outputs):
            return f"node '{n.name}' ({n.op}) has {len(n.outputs)} outputs; its shape rule gives {len(types)}"
        for v, (shape, dtype) in zip(n.outputs, types):
            val = g.values.get(v)
            if val is None:
                return f"node '{n.name}' ({n.op}) writes '{v}', which has no value"
            if tuple(val.shape) != tuple(shape) or val.dtype != dtype:
                return (f"value '{v}' of node '{n.name}' ({n.op}) is {val.dtype}{list(val.shape)}, but the shape rule "
                        f"gives {dtype}{list(shape)}")
            if v in defined:
                return f"value '{v}' is defined twice"
            defined.add(v)
    for v in g.outputs:
        if v not in defined:
            return f"graph output '{v}' is not defined"
    return None


def graph_inputs(g, seed: int) -> list:
    from tessel.ir.dtypes import numpy_dtype

    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(g.values[v].shape) * 1.5).astype(numpy_dtype(g.values[v].dtype))
            for v in g.inputs]


def _compare(got: list, want: list, g0, loose: float = 1.0) -> str | None:
    # (float64 outputs of a float32 computation (a cast at the end) get float32's tolerance)
    params = [_Param(f"output {i} ({o})", "float32" if g0.values[o].dtype == "float64" else g0.values[o].dtype)
              for i, o in enumerate(g0.outputs)]
    if len(got) != len(want):
        return f"{len(got)} outputs, want {len(want)}"
    for p, a, w in zip(params, got, want):
        a = np.asarray(a)
        if a.shape != w.shape:
            return f"{p.name}: shape {a.shape}, want {w.shape}"
        if a.dtype != w.dtype:
            return f"{p.name}: dtype {a.dtype}, want {w.dtype}"
    return compare([np.asarray(a) for a in got], want, params, loose=loose)


def run_graph_case(case, probe=None, determinism: bool = True) -> Outcome:
    """Run `case` (a GraphCase) through the graph-pass oracle; see the module docstring."""
    from tessel.fuzz.coverage import paused

    phases: list = []

    def phase(name):
        if probe is not None:
            phases.append((name, probe.harvest()))

    try:
        out = _run(case, phase, determinism, lambda: paused(probe))
    except _Stop as s:
        out = s.outcome
    except TesselError as e:
        out = Outcome("rejected", "invalid", "case", str(e)[:500])
    phase("end")
    out.phases = phases
    return out


def run_pipeline(case, g, quiet=nullcontext, check=None):
    """Apply the case's graph pipeline to graph `g` in place; `check(stage)` after each pass."""
    from tessel.fuzz.graph_case import _run_graph_pass

    for p in case.pipeline:
        stage = f"graph:{p['name']}"
        try:
            _run_graph_pass(p["name"], g, p.get("params", {}))
        except TesselError as e:
            raise _Stop(Outcome("rejected", "refused", stage, str(e)[:500])) from e
        except Exception as e:  # noqa: BLE001
            raise _Stop(_crash(stage, e)) from e
        if check is not None:
            with quiet():
                check(stage)


def _run(case, phase, determinism: bool, quiet) -> Outcome:
    from tessel.compiler.model_program import copy_graph
    from tessel.frontend.reference import run_graph

    from tessel.fuzz.graph_case import check_graph_pipeline

    check_graph_pipeline(case.pipeline)  # (FuzzError: an invalid case)
    g0 = case.graph
    with quiet():
        bad = check_graph(g0)
        if bad:
            return Outcome("rejected", "verify", "program", bad[:500])
        ins = graph_inputs(g0, case.seed)
        try:
            ref = run_graph(g0, ins)
        except TesselError as e:
            return Outcome("rejected", "exec", "program", str(e)[:500])
        except Exception as e:  # noqa: BLE001 - a numpy reference crashed on a graph its shape rules accepted
            return _crash("reference", e)
    phase("program")

    work = copy_graph(g0)

    def check(stage):
        why = check_graph(work)
        if why:
            raise _Stop(Outcome("fail", "verify", stage, why[:2000]))
        try:
            got = run_graph(work, ins)
        except Exception as e:  # noqa: BLE001 - the rewritten graph no longer evaluates
            raise _Stop(Outcome("fail", "exec", stage, f"{type(e).__name__}: {e}"[:2000])) from e
        why = _compare(got, ref, g0)
        if why:
            raise _Stop(Outcome("fail", "diff", stage, why))

    for k in range(len(case.pipeline)):  # one phase per pass
        before = copy_graph(work)
        try:
            run_pipeline(case.replace(pipeline=case.pipeline[k:k + 1]), work, quiet, check)
        except _Stop as st:
            if st.outcome.status == "fail" and st.outcome.kind in ("diff", "verify", "exec"):
                with quiet():
                    rule = _culprit_rule(case.pipeline[k]["name"], before, ins, ref, g0)
                if rule:
                    st.outcome.stage += f":{rule}"
            raise
        phase(f"graph:{case.pipeline[k]['name']}")
    text = str(work)
    if determinism:
        with quiet():
            again = copy_graph(g0)
            run_pipeline(case, again)
            if str(again) != text:
                return Outcome("fail", "nondet", "graph", "the graph pipeline run twice gave different graphs:\n"
                               + str(again)[:1500])
    kernels = _lower_and_run(case, work, ins, ref, g0, phase, quiet)
    if case.compile:
        _compile(case, work, ins, ref, g0, quiet)
        phase("compile")
    digest = hashlib.sha256((text + "\n" + "\n".join(kernels)).encode()).hexdigest()[:16]
    return Outcome("ok", digest=digest)


def _culprit_rule(name: str, before, ins, ref, g0) -> str | None:
    """For a rule set pass (patterns, canonicalize) that broke the graph: the first of its rules that
    breaks it alone (so one wrong rule is one signature, whichever other rules the graph met)."""
    from tessel.compiler.model_program import copy_graph
    from tessel.frontend.reference import run_graph
    from tessel.fuzz.graph_case import _rules
    from tessel.passes.graph import canonicalize, pattern

    sets = {"patterns": pattern.DEFAULT_RULES, "canonicalize": canonicalize.RULES}
    if name not in sets:
        return None
    by_name = _rules()
    for rname in dict.fromkeys(r.name for r in sets[name]):
        g = copy_graph(before)
        try:
            if not pattern.apply_rules(g, by_name[rname]):
                continue
            if check_graph(g) or _compare(run_graph(g, ins), ref, g0):
                return rname
        except Exception:  # noqa: BLE001 - it breaks the graph all the same
            return rname
    return None


def _lower_and_run(case, work, ins, ref, g0, phase, quiet) -> list:
    from tessel.compiler.lowering import lower_group
    from tessel.errors import VerifyError
    from tessel.fuzz.oracles import _interp
    from tessel.ir.dtypes import numpy_dtype
    from tessel.ir.text import to_text
    from tessel.ir.verify import verify
    from tessel.passes.graph.fusion import fuse

    try:
        groups = fuse(work, **case.fuse)
    except TesselError as e:
        raise _Stop(Outcome("rejected", "refused", "fuse", str(e)[:500])) from e
    except Exception as e:  # noqa: BLE001
        raise _Stop(_crash("fuse", e)) from e
    seen = [n.name for grp in groups for n in grp.nodes]
    if sorted(seen) != sorted(work.nodes):
        missing = sorted(set(work.nodes) - set(seen))
        twice = sorted({n for n in seen if seen.count(n) > 1})
        raise _Stop(Outcome("fail", "verify", "fuse", f"the groups do not partition the nodes: missing {missing}, "
                            f"in two groups {twice}"))
    phase("fuse")
    env = dict(zip(work.inputs, ins))
    for v, val in work.values.items():
        if val.is_const:
            env[v] = np.asarray(val.data)
    texts = []
    for grp in groups:
        try:
            low = lower_group(work, grp)
        except TesselError as e:
            raise _Stop(Outcome("rejected", "refused", "lower", str(e)[:500])) from e
        except Exception as e:  # noqa: BLE001
            raise _Stop(_crash("lower", e)) from e
        k = low.ir
        with quiet():
            try:
                verify(k)
            except VerifyError as e:
                raise _Stop(Outcome("fail", "verify", "lower", f"kernel {k.name}: {e}"[:2000])) from e
            arrays = []
            for a, p in zip(low.args, k.params):
                if a in env:
                    arrays.append(np.array(env[a], dtype=numpy_dtype(p.dtype)).reshape(tuple(p.shape)))
                else:
                    arrays.append(np.zeros(tuple(p.shape), numpy_dtype(p.dtype)))
            try:
                arrays = _interp(k, arrays, case.seed)
            except TesselError as e:
                raise _Stop(Outcome("fail", "exec", "lower", f"kernel {k.name}: {e}"[:2000])) from e
            for a, arr in zip(low.args, arrays):
                if a in grp.outputs:
                    env[a] = arr.reshape(work.values[a].shape)
        texts.append(to_text(k))
    phase("lower")
    with quiet():
        why = _compare([env[o] for o in work.outputs], ref, g0, loose=4.0)
    if why:
        raise _Stop(Outcome("fail", "diff", "lower", why))
    return texts


def _compile(case, work, ins, ref, g0, quiet) -> None:
    import tessel
    from tessel.compiler.model_program import copy_graph

    try:
        cm = tessel.compile(copy_graph(work), [a.copy() for a in ins], target="cpu", optimize=False, **case.fuse)
        with quiet():
            got = cm(*[a.copy() for a in ins])
    except TesselError as e:
        raise _Stop(Outcome("rejected", "refused", "compile", str(e)[:500])) from e
    except Exception as e:  # noqa: BLE001
        raise _Stop(_crash("compile", e)) from e
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    with quiet():
        why = _compare(got, ref, g0, loose=8.0)
    if why:
        raise _Stop(Outcome("fail", "diff", "compile", why))


__all__ = ["check_graph", "graph_inputs", "run_graph_case", "run_pipeline"]
