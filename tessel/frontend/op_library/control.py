"""Control-flow ops: `if` and `loop`, whose subgraphs are tessel Graphs held in attributes.

They have no lowering: the model compiler runs them between compiled programs
(`tessel.compiler.model_control`), each subgraph compiled once. Their references run the
subgraphs with `tessel.frontend.reference.run_graph`.

- `if(cond, *captures; then_graph, else_graph)`: `cond` is a bool tensor of one element; both
  graphs take the captures as their inputs (same order, shapes, dtypes) and give outputs of the
  same shapes and dtypes, which are the op's outputs.
- `loop(trip, cond, *carried, *captures; body, start=0, scans=0)`: `trip` (an integer tensor of
  one element, or None: no limit) counts iterations, `cond` (bool, or None: true) is tested before
  each; `body(iteration, cond, *carried, *captures) -> (cond, *carried, *scan items)`, the
  iteration number an int64 scalar counting from `start`. ONNX Loop semantics. The outputs are the
  final carried values, then the `scans` scan outputs: each iteration's item stacked on a new axis
  0. Scan outputs need a constant `trip` and no `cond` (their length is the trip count), and the
  body's condition output is ignored then.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> from tessel.frontend.ops import get_op
    >>> def branch(op):
    ...     b = Graph(op); x = b.add_input("x", (2,), "float32"); (y,) = b.add_node(op, [x])
    ...     b.mark_outputs([y]); return b
    >>> attrs = {"then_graph": branch("neg"), "else_graph": branch("abs")}
    >>> get_op("if").reference([np.array(True), np.float32([1, -2])], attrs)[0].tolist()
    [-1.0, 2.0]
"""

from __future__ import annotations

from tessel.errors import ArgumentError, ShapeError
from tessel.frontend.ops import register


def _types(graph, names) -> list:
    return [(graph.values[v].shape, graph.values[v].dtype) for v in names]


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _check_scalar(op: str, what: str, value, kinds: tuple) -> None:
    if value is None:
        return
    if _size(value.shape) != 1 or not value.dtype.startswith(kinds):
        raise ArgumentError(f"{op}: {what} must be a one-element {'/'.join(kinds)} tensor, got "
                            f"{value.dtype}{list(value.shape)}")


def _check_args(op: str, graph, given: list, what: str) -> None:
    want = _types(graph, graph.inputs)
    got = [(v.shape, v.dtype) for v in given]
    if len(got) != len(want):
        raise ArgumentError(f"{op}: {what} '{graph.name}' takes {len(want)} input(s), got {len(got)}")
    for k, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise ShapeError(f"{op}: input {k} of {what} '{graph.name}' is {w[1]}{list(w[0])}, "
                             f"given {g[1]}{list(g[0])}")


def take_branch(node_name: str, graph, which: str):
    """`graph`, the branch an `if` takes; raises ArgumentError when it is a branch that could not be
    built for the model's shapes (`graph.meta["fails"]`: onnxruntime fails there too)."""
    why = graph.meta.get("fails")
    if why:
        raise ArgumentError(f"if '{node_name}' took its {which} branch, which cannot run for these input shapes: {why}")
    return graph


def _flag(arr) -> bool:
    import numpy as np

    return bool(np.asarray(arr).reshape(-1)[0])


@register("if", kind="control")
class If:
    @staticmethod
    def infer(inputs, attrs):
        then, other = attrs.get("then_graph"), attrs.get("else_graph")
        if then is None or other is None:
            raise ArgumentError("if: attributes 'then_graph' and 'else_graph' are required")
        if not inputs or inputs[0] is None:
            raise ArgumentError("if: input 0 (the condition) is required")
        _check_scalar("if", "the condition", inputs[0], ("bool",))
        for g, what in ((then, "then branch"), (other, "else branch")):
            _check_args("if", g, inputs[1:], what)
        a, b = _types(then, then.outputs), _types(other, other.outputs)
        if a != b:
            raise ShapeError(f"if: the branches give different outputs: then {a}, else {b}")
        return a

    @staticmethod
    def lower(inputs, attrs, outs, names):
        raise ArgumentError("if: a control op has no lowering; tessel.compiler.model_control runs it")

    @staticmethod
    def reference(arrays, attrs):
        from tessel.frontend.reference import run_graph

        which = "then" if _flag(arrays[0]) else "else"
        return run_graph(take_branch("if", attrs[f"{which}_graph"], which), list(arrays[1:]))


def loop_parts(inputs: list, body, scans: int = 0) -> tuple:
    """(trip, cond, carried, captures) of a loop node's inputs, split by its body's signature."""
    n_carried = len(body.outputs) - 1 - scans
    return inputs[0], inputs[1], list(inputs[2:2 + n_carried]), list(inputs[2 + n_carried:])


@register("loop", kind="control")
class Loop:
    @staticmethod
    def infer(inputs, attrs):
        body = attrs.get("body")
        if body is None:
            raise ArgumentError("loop: attribute 'body' is required")
        if len(inputs) < 2:
            raise ArgumentError("loop: inputs are trip, cond, *carried, *captures")
        scans = int(attrs.get("scans", 0))
        trip, cond, carried, captures = loop_parts(list(inputs), body, scans)
        _check_scalar("loop", "the trip count", trip, ("int", "uint"))
        if scans and (trip is None or not trip.is_const or cond is not None):
            raise ArgumentError("loop: scan outputs need a constant trip count and no condition")
        _check_scalar("loop", "the condition", cond, ("bool",))
        it, flag = (body.values[v] for v in body.inputs[:2])
        if it.dtype != "int64" or _size(it.shape) != 1 or _size(flag.shape) != 1 or flag.dtype != "bool":
            raise ArgumentError(f"loop: body '{body.name}' must take the iteration (int64) and the condition "
                                f"(bool) first")
        _check_args("loop", _signature(body, 2), carried + captures, "body")
        out = _types(body, body.outputs)
        if _size(out[0][0]) != 1 or out[0][1] != "bool":
            raise ArgumentError(f"loop: body '{body.name}' must give the condition (bool) first, gives {out[0]}")
        want = [(v.shape, v.dtype) for v in carried]
        if out[1:1 + len(carried)] != want:
            raise ShapeError(f"loop: body '{body.name}' gives carried values {out[1:1 + len(carried)]}, "
                             f"it takes {want}")
        n = int(trip.data.reshape(-1)[0]) if scans else 0
        return want + [((n,) + tuple(shape), dtype) for shape, dtype in out[1 + len(carried):]]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        raise ArgumentError("loop: a control op has no lowering; tessel.compiler.model_control runs it")

    @staticmethod
    def reference(arrays, attrs):
        import numpy as np

        from tessel.frontend.reference import run_graph
        from tessel.ir.dtypes import numpy_dtype

        body, scans = attrs["body"], int(attrs.get("scans", 0))
        trip, cond, carried, captures = loop_parts(list(arrays), body, scans)
        it_shape, flag_shape = (body.values[v].shape for v in body.inputs[:2])
        limit = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
        going = True if cond is None else _flag(cond)
        i, start, items = 0, int(attrs.get("start", 0)), []
        while (going or scans) and (limit is None or i < limit):
            outs = run_graph(body, [np.full(it_shape, start + i, np.int64), np.full(flag_shape, going)]
                             + carried + captures)
            going, carried = _flag(outs[0]), list(outs[1:len(outs) - scans])
            items.append(outs[len(outs) - scans:])
            i += 1
        item_types = [(body.values[v].shape, body.values[v].dtype) for v in body.outputs[len(body.outputs) - scans:]]
        return carried + [np.stack([it[k] for it in items]) if items else np.empty((0,) + shape, numpy_dtype(dt))
                          for k, (shape, dt) in enumerate(item_types)]


class _signature:
    """The inputs of `graph` from position `skip` on, as a graph-like object for `_check_args`."""

    def __init__(self, graph, skip: int):
        self.name, self.values, self.inputs = graph.name, graph.values, graph.inputs[skip:]
