"""Run a Graph with each op's numpy reference: the graph-level oracle.

It checks importers (a graph imported from torch or ONNX must compute what the source model
computes) independently of lowering and code generation, and it is what constant folding uses.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> g = Graph()
    >>> x = g.add_input("x", (3,), "float32")
    >>> (y,) = g.add_node("relu", [x])
    >>> g.mark_outputs([y])
    >>> run_graph(g, [np.array([-1.0, 0.5, 2.0], np.float32)])[0].tolist()
    [0.0, 0.5, 2.0]
"""

from __future__ import annotations

from tessel.errors import ArgumentError
from tessel.frontend.graph import Graph


def run_graph(graph: Graph, inputs: list) -> list:
    """Evaluate `graph` on numpy `inputs` (one per graph input, in order); returns the outputs."""
    import numpy as np

    from tessel.frontend.ops import get_op
    from tessel.ir.dtypes import numpy_dtype

    if len(inputs) != len(graph.inputs):
        raise ArgumentError(f"graph '{graph.name}' takes {len(graph.inputs)} input(s), got {len(inputs)}")
    env = {}
    for name, arr in zip(graph.inputs, inputs):
        v = graph.values[name]
        arr = np.asarray(arr)
        if tuple(arr.shape) != v.shape:
            raise ArgumentError(f"graph input '{name}': expected shape {v.shape}, got {tuple(arr.shape)}")
        env[name] = arr.astype(numpy_dtype(v.dtype), copy=False)
    for v in graph.values.values():
        if v.is_const:
            env[v.name] = v.data
    for node in graph.topo_order():
        args = [env[i] if i is not None else None for i in node.inputs]
        outs = get_op(node.op, node.describe()).reference(args, node.attrs)
        for name, arr in zip(node.outputs, outs):
            want = graph.values[name]
            env[name] = np.asarray(arr).astype(numpy_dtype(want.dtype), copy=False).reshape(want.shape)
    return [env[o] for o in graph.outputs]
