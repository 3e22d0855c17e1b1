"""The graph IR: ops with attributes over typed values, with shape and dtype inference.

A Graph holds named Values (a static shape and a dtype; constants also hold their numpy data)
and OpNodes (an op name from the op registry, input and output value names, attributes, and the
place in the source model it came from, for error messages). Nodes are kept in a valid execution
order; graph algorithms (topological order, dominators, subgraph matching) run on the networkx
view `graph.nx()`.

Example:
    >>> g = Graph("tiny")
    >>> x = g.add_input("x", (2, 3), "float32")
    >>> w = g.add_const("w", __import__("numpy").ones((3, 4), "float32"))
    >>> (y,) = g.add_node("matmul", [x, w])
    >>> g.mark_outputs([y])
    >>> g.values[y].shape
    (2, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tessel.errors import ShapeError, TesselError
from tessel.ir.dtypes import check_dtype


class GraphError(TesselError):
    """A malformed graph (unknown values, cycles, duplicate names)."""


@dataclass
class Value:
    """A tensor flowing through the graph: a name, a static shape and a dtype; constants carry data."""

    name: str
    shape: tuple
    dtype: str
    data: Any = None  # numpy array for constants

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass
class OpNode:
    """One op application. `origin` says where it came from (e.g. the torch or ONNX node)."""

    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    origin: str = ""

    def describe(self) -> str:
        where = f" (from {self.origin})" if self.origin else ""
        return f"node '{self.name}' ({self.op}){where}"


def _empty_result(opdef, in_vals: list, attrs: dict, out_types: list):
    """The outputs of an op as arrays when empty tensors decide them without a kernel: every output
    is empty, or every input is empty or constant (e.g. a sum over an empty axis is zeros, a matmul
    of (n, 0) by (0, m) is zeros); None otherwise. Zero-size tensors never reach the kernels, whose
    extents are positive."""
    import numpy as np

    from tessel.ir.dtypes import numpy_dtype

    if all(0 in tuple(shape) for shape, _ in out_types):
        return [np.zeros(tuple(shape), numpy_dtype(dt)) for shape, dt in out_types]
    present = [v for v in in_vals if v is not None]
    if not any(0 in v.shape for v in present) or not all(v.is_const or 0 in v.shape for v in present):
        return None
    arrays = [None if v is None else (v.data if v.is_const else np.zeros(v.shape, numpy_dtype(v.dtype)))
              for v in in_vals]
    with np.errstate(all="ignore"):  # e.g. a mean over no elements is NaN, as in torch and numpy
        outs = opdef.reference(arrays, attrs)
    return [np.asarray(o).astype(numpy_dtype(dt), copy=False).reshape(tuple(shape))
            for o, (shape, dt) in zip(outs, out_types)]


class Graph:
    """A dataflow graph of ops. Build it with add_input/add_const/add_node, then mark_outputs."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.values: dict[str, Value] = {}
        self.nodes: dict[str, OpNode] = {}  # insertion order is an execution order
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        # What an importer knows beyond the ops, for the caller (e.g. "torch_out_spec": how to
        # rebuild the model's output structure from the flat outputs).
        self.meta: dict = {}
        self._counter = 0

    # -- building --------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A value or node name not used yet, derived from `base`."""
        base = base or "v"
        name = base
        while name in self.values or name in self.nodes:
            self._counter += 1
            name = f"{base}_{self._counter}"
        return name

    def add_input(self, name: str, shape, dtype: str) -> str:
        name = self._new_value(name, shape, dtype)
        self.inputs.append(name)
        return name

    def add_const(self, name: str, data) -> str:
        import numpy as np

        from tessel.ir.dtypes import from_numpy_dtype

        arr = np.asarray(data)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
            arr = np.ascontiguousarray(arr)
        return self._new_value(name, arr.shape, from_numpy_dtype(arr.dtype), data=arr)

    def _new_value(self, name: str, shape, dtype: str, data=None) -> str:
        name = self.fresh(name)
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ShapeError(f"value '{name}': negative extent in shape {shape}")
        self.values[name] = Value(name, shape, check_dtype(dtype, f"value '{name}'"), data)
        return name

    def add_node(self, op: str, inputs: list, attrs: dict | None = None, name: str | None = None,
                 origin: str = "", output_names: list | None = None) -> list[str]:
        """Append an op; infers its output types with the op's shape rule; returns output names."""
        from tessel.frontend.ops import get_op

        opdef = get_op(op, origin or name or "")
        attrs = dict(attrs or {})
        for v in inputs:
            if v is not None and v not in self.values:
                raise GraphError(f"{op} node '{name or op}': input value '{v}' does not exist")
        node_name = self.fresh(name or op)
        in_vals = [self.values[v] if v is not None else None for v in inputs]
        node = OpNode(node_name, op, list(inputs), [], attrs, origin)
        try:
            out_types = opdef.infer(in_vals, attrs)
        except TesselError as e:
            raise type(e)(f"{node.describe()}: {e}") from None
        empty = _empty_result(opdef, in_vals, attrs, out_types)
        if empty is not None:  # no kernel: the values are known from the shapes alone
            return [self.add_const(output_names[k] if output_names and k < len(output_names)
                                   else f"{node_name}_out{k}", arr) for k, arr in enumerate(empty)]
        if op == "concat" and any(v is not None and 0 in v.shape for v in in_vals):
            kept = [v for v in inputs if v is not None and 0 not in self.values[v].shape]
            if kept:  # empty parts add nothing to a concatenation
                return self.add_node(op, kept, attrs, name, origin, output_names)
        outs = []
        for k, (shape, dtype) in enumerate(out_types):
            base = output_names[k] if output_names and k < len(output_names) else f"{node_name}_out{k}"
            outs.append(self._new_value(base, shape, dtype))
        node.outputs = outs
        self.nodes[node_name] = node
        return outs

    def mark_outputs(self, names: list) -> None:
        for n in names:
            if n not in self.values:
                raise GraphError(f"graph output '{n}' does not exist")
        self.outputs = list(names)

    # -- queries ---------------------------------------------------------------------------------
    def producer(self, value: str) -> OpNode | None:
        for node in self.nodes.values():
            if value in node.outputs:
                return node
        return None

    def producers(self) -> dict[str, OpNode]:
        return {v: n for n in self.nodes.values() for v in n.outputs}

    def consumers(self) -> dict[str, list[OpNode]]:
        out: dict[str, list[OpNode]] = {v: [] for v in self.values}
        for n in self.nodes.values():
            for v in n.inputs:
                if v is not None:
                    out[v].append(n)
        return out

    def nx(self):
        """A networkx DiGraph over node names (edges carry the value name)."""
        import networkx as nx

        g = nx.DiGraph()
        prod = self.producers()
        for n in self.nodes.values():
            g.add_node(n.name, op=n.op)
        for n in self.nodes.values():
            for v in n.inputs:
                if v in prod:
                    g.add_edge(prod[v].name, n.name, value=v)
        return g

    def topo_order(self) -> list[OpNode]:
        import networkx as nx

        position = {name: i for i, name in enumerate(self.nodes)}  # a dict: list.index was O(N) per lookup
        try:
            order = list(nx.lexicographical_topological_sort(self.nx(), key=position.__getitem__))
        except nx.NetworkXUnfeasible:
            raise GraphError(f"graph '{self.name}' has a cycle") from None
        return [self.nodes[n] for n in order]

    # -- editing ---------------------------------------------------------------------------------
    def remove_node(self, name: str) -> None:
        del self.nodes[name]

    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of value `old` read `new` instead (graph outputs too)."""
        for n in self.nodes.values():
            n.inputs = [new if v == old else v for v in n.inputs]
        self.outputs = [new if v == old else v for v in self.outputs]

    def prune(self) -> None:
        """Drop nodes whose outputs nobody uses and values nobody refers to."""
        changed = True
        while changed:
            changed = False
            used = set(self.outputs) | {v for n in self.nodes.values() for v in n.inputs}
            for name, n in list(self.nodes.items()):
                if not any(o in used for o in n.outputs):
                    del self.nodes[name]
                    changed = True
        referenced = set(self.inputs) | set(self.outputs) | {v for n in self.nodes.values()
                                                             for v in (*n.inputs, *n.outputs)}
        for v in list(self.values):
            if v not in referenced:
                del self.values[v]

    def reorder_topologically(self) -> None:
        self.nodes = {n.name: n for n in self.topo_order()}

    # -- printing --------------------------------------------------------------------------------
    def __str__(self) -> str:
        def ty(v):
            val = self.values[v]
            return f"{val.dtype}{list(val.shape)}"

        lines = [f"graph {self.name}(" + ", ".join(f"%{v}: {ty(v)}" for v in self.inputs) + ") {"]
        consts = [v for v in self.values.values() if v.is_const]
        for c in consts:
            lines.append(f"  %{c.name}: {ty(c.name)} = const")
        for n in self.nodes.values():
            attrs = ", ".join(f"{k}={v!r}" for k, v in n.attrs.items())
            ins = ", ".join(f"%{v}" if v is not None else "None" for v in n.inputs)
            outs = ", ".join(f"%{v}: {ty(v)}" for v in n.outputs)
            lines.append(f"  {outs} = {n.op}({ins}{', ' if attrs and ins else ''}{attrs})")
        lines.append("  return " + ", ".join(f"%{v}" for v in self.outputs))
        lines.append("}")
        return "\n".join(lines)
