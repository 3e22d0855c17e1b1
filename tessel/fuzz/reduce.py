"""Reducer: shrink a failing (program, pipeline) pair to a small one that fails the same way.

"The same way" is the same failure signature (kind, stage, and for crashes the exception type and
innermost tessel frame; see oracles.Outcome.signature). Greedy passes, repeated until nothing
shrinks or the budget is spent, each candidate run through `check(case) -> signature`:

1. the pipeline: drop halves, then single passes; reset parameters to their defaults;
2. the schedule: drop commands; reset template knobs to the defaults;
3. the program: delete statements, unwrap ifs, replace expressions by an operand or a constant,
   shrink loop extents; also drop the TVM build when the failure is not in TVM.

The result is saved in the IR text form (`Case.to_text`) with the one-line command that
reproduces it: `tessel fuzz --replay FILE`.

Example:
    >>> from tessel.ir.text import parse_kernel
    >>> from tessel.fuzz.case import Case
    >>> k = parse_kernel("kernel f(A: float32[4] global) target cpu { for i in 4 { A[i] = (A[i] + 1.0f32) } }")
    >>> c = Case(k, pipeline=[{"name": "simplify"}, {"name": "hoist"}, {"name": "simplify"}])
    >>> small = reduce_case(c, lambda x: "bug" if any(p["name"] == "hoist" for p in x.pipeline) else "")
    >>> [p["name"] for p in small.pipeline]
    ['hoist']
"""

from __future__ import annotations

import dataclasses
import time

from tessel.errors import TesselError
from tessel.fuzz.case import Case
from tessel.fuzz.graph_case import GraphCase
from tessel.fuzz.mutate_ir import preorder, replace_nth
from tessel.ir.nodes import Binary, Call, Cast, Const, Expr, For, IfThenElse, Not, Select, Seq, Var


def size(case) -> int:
    """How big a case is: IR nodes + schedule commands + passes (what the reducer minimises); for a
    graph case, nodes + outputs + passes."""
    if isinstance(case, GraphCase):
        return 3 * len(case.graph.nodes) + len(case.graph.outputs) + 2 * len(case.pipeline) + len(case.fuse)
    return sum(1 for _ in preorder(case.kernel.body)) + 3 * len(case.schedule) + 3 * len(case.pipeline)


def reduce_case(case: Case, check, budget_s: float = 60.0, max_tries: int = 400) -> Case:
    """The smallest case found that `check` gives the same signature as `case` (see module doc).
    `check(case) -> str` runs a case and returns its failure signature ("" when it passes)."""
    want = check(case)
    if not want:
        return case
    if isinstance(case, GraphCase):
        return _reduce_graph(case, check, want, budget_s, max_tries)
    deadline = time.monotonic() + budget_s
    tries = [0]

    def same(c: Case) -> bool:
        if tries[0] >= max_tries or time.monotonic() > deadline:
            return False
        tries[0] += 1
        try:
            return check(c) == want
        except Exception:  # noqa: BLE001 - a candidate the printer or parser cannot take is not smaller
            return False

    best = case
    while True:
        before = size(best)
        for step in (_pipeline, _schedule, _flags, _program):
            best = step(best, same)
        if size(best) >= before or tries[0] >= max_tries or time.monotonic() > deadline:
            return best


def _pipeline(case: Case, same) -> Case:
    p = list(case.pipeline)
    chunk = max(1, len(p) // 2)
    while chunk >= 1 and p:
        i = 0
        while i < len(p):
            cand = p[:i] + p[i + chunk:]
            if same(case.replace(pipeline=cand)):
                p = cand
            else:
                i += chunk
        chunk //= 2
    for i, x in enumerate(p):
        if x.get("params"):
            cand = p[:i] + [{"name": x["name"]}] + p[i + 1:]
            if same(case.replace(pipeline=cand)):
                p = cand
    return case.replace(pipeline=p)


def _schedule(case: Case, same) -> Case:
    s = list(case.schedule)
    i = len(s) - 1
    while i >= 0:
        cand = s[:i] + s[i + 1:]
        if same(case.replace(schedule=cand)):
            s = cand
        i -= 1
    for i, cmd in enumerate(s):
        if cmd.get("primitive") == "template" and cmd["args"].get("knobs"):
            cand = s[:i] + [{"primitive": "template", "args": {**cmd["args"], "knobs": None}}] + s[i + 1:]
            if same(case.replace(schedule=cand)):
                s = cand
    return case.replace(schedule=s)


def _flags(case: Case, same) -> Case:
    if case.tvm and same(case.replace(tvm=False)):
        case = case.replace(tvm=False)
    return case


def _simpler(node):
    """Smaller replacements of one node (tried in order)."""
    if isinstance(node, Seq):
        return [Seq(node.stmts[:i] + node.stmts[i + 1:]) for i in range(len(node.stmts))]
    if isinstance(node, IfThenElse):
        return [node.then] + ([node.else_] if node.else_ is not None else [])
    if isinstance(node, For) and isinstance(node.extent, Const) and int(node.extent.value) > 1:
        e = int(node.extent.value)
        return [dataclasses.replace(node, extent=Const(1)), dataclasses.replace(node, extent=Const(e // 2))]
    if isinstance(node, Expr) and not isinstance(node, (Const, Var)):  # (a Var may be a loop's own)
        out = []
        if isinstance(node, (Binary, Select, Call, Cast, Not)):
            out += [c for c in node.children() if isinstance(c, Expr) and c.dtype == node.dtype]
        if node.dtype != "bool":
            out.append(Const(1 if not node.dtype.startswith(("float", "bfloat")) else 1.0, node.dtype))
        else:
            out.append(Const(True, "bool"))
        return out
    return []


def _program(case: Case, same) -> Case:
    body = case.kernel.body
    i = 0
    while i < sum(1 for _ in preorder(body)):
        node = next(n for j, n in enumerate(preorder(body)) if j == i)
        for alt in _simpler(node):
            try:
                cand_body = replace_nth(body, i, lambda _, alt=alt: alt)
                cand = case.replace(kernel=dataclasses.replace(case.kernel, body=cand_body))
            except TesselError:
                continue
            if same(cand):
                body = cand_body
                break
        i += 1
    return case.replace(kernel=dataclasses.replace(case.kernel, body=body))


def _reduce_graph(case: GraphCase, check, want: str, budget_s: float, max_tries: int) -> GraphCase:
    """Greedy graph reduction: drop graph passes, the compile flag and the fusion knobs; keep fewer
    outputs; bypass nodes (their readers read one of the node's inputs of the same type instead)."""
    deadline, tries = time.monotonic() + budget_s, [0]

    def same(c) -> bool:
        if tries[0] >= max_tries or time.monotonic() > deadline:
            return False
        tries[0] += 1
        try:
            return check(c) == want
        except Exception:  # noqa: BLE001
            return False

    best = case
    while True:
        before = size(best)
        p = list(best.pipeline)
        for i in reversed(range(len(p))):
            cand = p[:i] + p[i + 1:]
            if same(best.replace(pipeline=cand)):
                p = cand
        best = best.replace(pipeline=p)
        for flag in ({"compile": False}, {"fuse": {}}):
            if any(getattr(best, k) != v for k, v in flag.items()) and same(best.replace(**flag)):
                best = best.replace(**flag)
        for h in _smaller_graphs(best.graph):
            if same(best.replace(graph=h)):
                best = best.replace(graph=h)
                break  # (the other variants are of the graph before this one)
        if size(best) >= before or tries[0] >= max_tries or time.monotonic() > deadline:
            return best


def _smaller_graphs(g):
    """Graphs with one output fewer, or one node bypassed (its readers read an input of its type)."""
    from tessel.compiler.model_program import copy_graph

    if len(g.outputs) > 1:
        for o in g.outputs:
            h = copy_graph(g)
            h.mark_outputs([x for x in g.outputs if x != o])
            h.prune()
            yield h
    for name, n in reversed(list(g.nodes.items())):
        out = g.values[n.outputs[0]] if len(n.outputs) == 1 else None
        for v in n.inputs:
            if out is not None and v is not None and (g.values[v].shape, g.values[v].dtype) == (out.shape, out.dtype):
                h = copy_graph(g)
                h.replace_uses(n.outputs[0], v)
                del h.nodes[name]
                h.outputs = list(dict.fromkeys(h.outputs))
                h.prune()
                yield h
                break


def replay_command(path: str) -> str:
    """The one-line command that reproduces a saved case."""
    return f"tessel fuzz --replay {path}"


__all__ = ["reduce_case", "replay_command", "size"]
