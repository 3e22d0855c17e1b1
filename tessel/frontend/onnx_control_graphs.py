"""ONNX `If` and `Loop` whose condition or trip count only the run time knows: their subgraphs
become tessel Graphs held by an `if` or `loop` node (tessel.frontend.op_library.control), which
the model compiler runs as control flow (tessel.compiler.model_control).

How a subgraph becomes a Graph: it is converted in place like an inlined one (so constants fold,
nested `If`s on shapes fold, and nested run-time control flow nests), then the nodes it added are
cut out of the model's graph into a Graph of their own. Values they read from outer scopes become
that Graph's inputs (the captures); constants are copied in. A Loop body's iteration number,
condition and carried values are stand-in inputs while it is converted, so nothing about them is
folded.

What stays unsupported (the caller then needs the condition at import time, and says why): branches
whose outputs differ in shape or dtype, or are sequences; Loop scan outputs (their length is only
known at run time) and carried values that change shape or are sequences.

Example:
    >>> import numpy as np, onnx.helper as oh
    >>> from tessel.frontend.onnx_import import import_onnx
    >>> vi = lambda n, t, s: oh.make_tensor_value_info(n, t, s)
    >>> branch = lambda op: oh.make_graph([oh.make_node(op, ["x"], ["y_" + op])], op, [], [vi("y_" + op, 1, [2])])
    >>> node = oh.make_node("If", ["c"], ["y"], then_branch=branch("Neg"), else_branch=branch("Abs"))
    >>> m = oh.make_model(oh.make_graph([node], "m", [vi("c", 9, []), vi("x", 1, [2])], [vi("y", 1, [2])]))
    >>> g = import_onnx(m)
    >>> [n.op for n in g.nodes.values()], g.nodes["If_0.if"].inputs
    (['if'], ['c', 'x'])
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.graph import Graph, Value


class NotRunnable(Exception):
    """This control op cannot run as control flow here; the message says why (internal)."""


def runtime_if(ctx, node, cond: str, base: str) -> list:
    """The outputs of an `if` node for ONNX `If` `node` on run-time `cond`; NotRunnable says why not."""
    graphs, captures, failed = [], [], {}
    for attr in ("then_branch", "else_branch"):
        before = set(ctx.g.nodes)
        try:
            outs = ctx.inline_graph(ctx.graph_attr(node, attr), [], f"{base}::{attr}::")
        except Exception as e:  # a branch that only fails for these shapes fails when taken (as in onnxruntime)
            if not _fails_only_here(e):
                raise
            for n in [n for n in ctx.g.nodes if n not in before]:
                del ctx.g.nodes[n]
            failed[attr] = e
            graphs.append(None)
            continue
        _plain("a branch output", outs)
        sub, caps = _cut(ctx, before, outs, f"{base}.{attr}", [])
        graphs.append(sub)
        captures += [c for c in caps if c not in captures]
    if len(failed) == 2:
        raise failed["then_branch"]
    if failed:
        ok = graphs[0] if graphs[0] is not None else graphs[1]
        bad = "then_branch" if graphs[0] is None else "else_branch"
        stub = _failing_branch(ok, f"{base}.{bad}", f"{type(failed[bad]).__name__}: {failed[bad]}")
        graphs = [stub if g is None else g for g in graphs]
    a, b = (_types(g, g.outputs) for g in graphs)
    if a != b:
        raise NotRunnable(f"its branches give outputs of different shapes or dtypes (then {_fmt(a)}, else {_fmt(b)})")
    for g in graphs:
        _take_inputs(g, ctx.g, captures)
    flag = _as_flag(ctx, cond)
    return ctx.op_multi("if", [flag] + captures, then_graph=graphs[0], else_graph=graphs[1])


def runtime_loop(ctx, node, trip, cond, carried: list, base: str, start: int = 0, scans_ok: bool = False) -> list:
    """The outputs of a `loop` node for ONNX `Loop` `node` (run-time trip count or condition, or a
    long constant one), from iteration `start` with `trip` iterations left; NotRunnable says why not.
    `scans_ok` (a constant trip count, no condition): scan outputs are allowed when the body's
    condition cannot stop the loop early (it passes the condition through or is constant true)."""
    body = ctx.graph_attr(node, "body")
    n_scan = len(body.output) - 1 - len(carried)
    if n_scan and not scans_ok:
        raise NotRunnable(f"it has {n_scan} scan output(s), whose length would only be known at run time")
    _plain("a loop-carried value", carried)
    g = ctx.g
    stand_ins = [_stand_in(ctx, f"{base}.iter", _declared(body.input[0]), "int64"),
                 _stand_in(ctx, f"{base}.cond", _declared(body.input[1]), "bool")]
    stand_ins += [_stand_in(ctx, f"{base}.carried{k}", ctx.shape(v), ctx.dtype(v)) for k, v in enumerate(carried)]
    before = set(g.nodes)
    try:
        outs = ctx.inline_graph(body, stand_ins, f"{base}::body::")
        _plain("a body output", outs)
        n_c = len(carried)
        want, got = _ctx_types(ctx, carried), _ctx_types(ctx, outs[1:1 + n_c])
        if got != want:
            raise NotRunnable(f"its carried values change type in the body ({_fmt(want)} -> {_fmt(got)})")
        if n_scan and not (outs[0] == stand_ins[1] or _is_true(ctx, outs[0])):
            raise NotRunnable("its condition may end it early, so its scan outputs' length is only known at run time")
        if ctx.g.values[outs[0]].shape != ():
            outs[0] = _as_flag(ctx, outs[0])
        graph, captures = _cut(ctx, before, outs, f"{base}.body", stand_ins)
    except Exception:
        for n in [n for n in g.nodes if n not in before]:
            del g.nodes[n]
        raise
    finally:
        g.inputs = [v for v in g.inputs if v not in stand_ins]
    _take_inputs(graph, ctx.g, captures)
    trip_v = None if trip is None else _as_scalar(ctx, trip, "int64")
    cond_v = None if cond is None or n_scan else _as_flag(ctx, cond)
    return ctx.op_multi("loop", [trip_v, cond_v] + carried + captures, body=graph, start=int(start), scans=n_scan)


def compiled_scan(ctx, node, states: list, xs: list, axes: list, dirs: list, out_axes: list, out_dirs: list,
                  length: int, base: str) -> list:
    """ONNX `Scan` as a `loop` node iterating its body once per step (not unrolled): the body
    gathers step t of each scan input itself (t or length-1-t), its outputs are stacked and moved
    to their output axes. NotRunnable / import errors leave the graph as it was."""
    import numpy as np

    body = ctx.graph_attr(node, "body")
    _plain("a scan state", states)
    g = ctx.g
    it = _stand_in(ctx, f"{base}.iter", (), "int64")
    stand_ins = [it, _stand_in(ctx, f"{base}.cond", (), "bool")]
    stand_ins += [_stand_in(ctx, f"{base}.state{k}", ctx.shape(v), ctx.dtype(v)) for k, v in enumerate(states)]
    before = set(g.nodes)
    try:
        back = ctx.op("sub", [ctx.const(np.array(length - 1, np.int64), "last"), it])
        steps = [ctx.op("gather", [x, back if d else it], axis=a) for x, a, d in zip(xs, axes, dirs)]
        outs = ctx.inline_graph(body, stand_ins[2:] + steps, f"{base}::body::")
        _plain("a body output", outs)
        n_s = len(states)
        want, got = _ctx_types(ctx, states), _ctx_types(ctx, outs[:n_s])
        if got != want:
            raise NotRunnable(f"its states change type in the body ({_fmt(want)} -> {_fmt(got)})")
        graph, captures = _cut(ctx, before, [ctx.const(np.array(True), "true")] + outs, f"{base}.body", stand_ins)
    except Exception:
        for n in [n for n in g.nodes if n not in before]:
            del g.nodes[n]
        raise
    finally:
        g.inputs = [v for v in g.inputs if v not in stand_ins]
    _take_inputs(graph, ctx.g, captures)
    n_out = len(outs) - len(states)
    res = ctx.op_multi("loop", [ctx.const(np.array(length, np.int64), "trip"), None] + states + captures,
                       body=graph, start=0, scans=n_out)
    finals, stacked = res[:len(states)], res[len(states):]
    for k, (y, a, d) in enumerate(zip(stacked, out_axes, out_dirs)):
        if d:
            y = ctx.op("gather", [y, ctx.const(np.arange(length - 1, -1, -1, dtype=np.int64), "reversed")], axis=0)
        r = len(ctx.shape(y))
        a = a + r if a < 0 else a
        if a:
            y = ctx.op("transpose", [y], perm=tuple(range(1, a + 1)) + (0,) + tuple(range(a + 1, r)))
        stacked[k] = y
    return finals + stacked


def _ctx_types(ctx, values) -> list:
    return [(ctx.shape(v), ctx.dtype(v)) for v in values]


def _is_true(ctx, v) -> bool:
    data = ctx.try_const(v)
    return data is not None and bool(np.asarray(data).all())


def _fails_only_here(e: Exception) -> bool:
    """Whether a branch's import error means "this branch cannot run for these shapes" (a shape or
    argument error), not "the model is unsupported" or "bind this input" (those propagate)."""
    from tessel.errors import TesselError
    from tessel.frontend.onnx_import import NotConstantError
    from tessel.frontend.ops import UnsupportedOpError

    if isinstance(e, (NotConstantError, UnsupportedOpError)):
        return False
    return isinstance(e, (TesselError, ValueError, IndexError))


def _failing_branch(like: Graph, name: str, why: str) -> Graph:
    """A branch that cannot be built for these shapes: a Graph with `like`'s outputs, marked with
    meta["fails"] (the reason), which raises when the model takes it."""
    sub = Graph(name)
    for o in like.outputs:
        val = like.values[o]
        sub.values[o] = Value(o, val.shape, val.dtype, np.zeros(val.shape, _np(val.dtype)))
    sub.outputs = list(like.outputs)
    sub.meta["fails"] = why
    return sub


def _plain(what: str, values) -> None:
    from tessel.frontend.onnx_ops_sequence import NO_VALUE, Sequence

    for v in values:
        if v is None or v is NO_VALUE or isinstance(v, Sequence):
            raise NotRunnable(f"{what} is a sequence or an optional, which tessel runs only when the control "
                              f"flow folds at import")


def _stand_in(ctx, name: str, shape, dtype: str) -> str:
    v = ctx.g.add_input(ctx.g.fresh(name.replace("::", ".")), shape, dtype)
    ctx.derives[v] = frozenset()
    return v


def _declared(vi) -> tuple:
    """The static shape a body input declares, () when it declares none (a scalar, by the spec)."""
    t = vi.type.tensor_type
    if not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
        return ()
    return tuple(int(d.dim_value) for d in t.shape.dim)


def _as_flag(ctx, v: str) -> str:
    """A bool scalar of one-element `v` (ONNX conditions may be (1,)-shaped)."""
    if ctx.dtype(v) != "bool":
        v = ctx.op("ne", [v, ctx.const(np.zeros((), _np(ctx.dtype(v))), "zero")])
    return v if ctx.shape(v) == () else ctx.op("reshape", [v], shape=())


def _as_scalar(ctx, v: str, dtype: str) -> str:
    if ctx.dtype(v) != dtype:
        v = ctx.op("cast", [v], dtype=dtype)
    return v if ctx.shape(v) == () else ctx.op("reshape", [v], shape=())


def _np(dtype: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)


def _types(graph: Graph, names) -> list:
    return [(graph.values[v].shape, graph.values[v].dtype) for v in names]


def _fmt(types) -> str:
    return ", ".join(f"{d}{list(s)}" for s, d in types)


def _cut(ctx, before: set, outs: list, name: str, formal: list) -> tuple:
    """Move the nodes added since `before` that `outs` need into a new Graph taking `formal` and
    then the outer values they read (returned as the captures)."""
    g = ctx.g
    added = [n for n in g.nodes if n not in before]
    made = {o: n for n in added for o in g.nodes[n].outputs}
    live, todo = set(), [v for v in outs]
    while todo:
        n = made.get(todo.pop())
        if n is not None and n not in live:
            live.add(n)
            todo.extend(i for i in g.nodes[n].inputs if i is not None)
    sub = Graph(name)
    sub._counter = g._counter
    for v in formal:
        sub.values[v] = _copy(g.values[v])
        sub.inputs.append(v)
    captures: list = []

    def need(v):
        if v is None or v in sub.values or v in made:
            return
        val = g.values[v]
        sub.values[v] = _copy(val)
        if not val.is_const:
            captures.append(v)

    for n in added:
        node = g.nodes[n]
        if n in live:
            for i in node.inputs:
                need(i)
            sub.nodes[n] = node
            for o in node.outputs:
                sub.values[o] = g.values[o]
    for o in outs:
        need(o)
    for n in added:
        del g.nodes[n]
    sub.outputs = list(outs)
    return sub, captures


def _take_inputs(sub: Graph, outer: Graph, captures: list) -> None:
    """Make `sub` take every capture, in order, after its formal inputs."""
    for v in captures:
        if v not in sub.values:
            sub.values[v] = _copy(outer.values[v])
    sub.inputs = [v for v in sub.inputs if v not in captures] + list(captures)


def _copy(v: Value) -> Value:
    return Value(v.name, v.shape, v.dtype, v.data)
