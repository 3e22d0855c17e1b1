"""Fusion: partition a graph's ops into groups, each of which becomes one kernel.

Nodes are visited in topological order; each either joins an existing group or starts one.
The rules, by op kind (see tessel/frontend/ops.py):

- elementwise / injective ops join the group of one of their producers: an elementwise group
  (elementwise chains) or an anchor group as its epilogue (GEMM + bias + GELU + residual add in one
  kernel). The producer with an anchor is preferred, then the first input.
- contraction, reduction and opaque ops anchor a new group (at most one anchor per group).
- prologues: an elementwise-only group whose every output is read only by the new anchor joins
  it in front, where recomputing it is cheap: into a contraction only when it is pure data
  movement (injective ops: transpose, reshape, expand...), which costs nothing when inlined into the
  operand loads; into a reduction when it has at most `max_prologue_ops` ops (a reduction re-reads
  its input a few times, so a short chain is cheap to recompute). Opaque anchors take no prologue.
- a group stays under `max_group_ops` ops.

Joining never creates a cycle between groups: a node joins group G only if none of its other
producer groups is reachable from G (checked with networkx on the group graph), and the final
group graph is verified acyclic. Inside a group the lowering inlines elementwise intermediates
(tessel.compiler.lowering); values crossing groups go through memory (memory.py).

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> g = Graph()
    >>> x = g.add_input("x", (4, 8), "float32")
    >>> w = g.add_const("w", np.ones((8, 8), np.float32))
    >>> (h,) = g.add_node("matmul", [x, w])
    >>> (y,) = g.add_node("relu", [h])
    >>> g.mark_outputs([y])
    >>> [grp.describe() for grp in fuse(g)]
    ['matmul+relu']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tessel.frontend.graph import Graph, GraphError, OpNode

FUSIBLE = ("elementwise", "injective")
ANCHORS = ("contraction", "reduction", "opaque")


@dataclass
class Group:
    """A set of nodes compiled into one kernel.

    `nodes` are in execution order; `anchor` is the contraction/reduction/opaque node (None for an
    elementwise-only group); `inputs` are the values read from outside (graph inputs, constants,
    other groups' outputs) and `outputs` the values read outside the group or returned by the graph.
    """

    id: int
    nodes: list = field(default_factory=list)
    anchor: OpNode | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    @property
    def kind(self) -> str:
        from tessel.frontend.ops import get_op

        return get_op(self.anchor.op).kind if self.anchor is not None else "elementwise"

    @property
    def ops(self) -> list:
        """The op names fused in this group, in execution order."""
        return [n.op for n in self.nodes]

    def describe(self) -> str:
        return "+".join(self.ops)


def fuse(graph: Graph, max_group_ops: int = 32, max_prologue_ops: int = 8) -> list:
    """Partition `graph` into Groups (returned in an execution order); the graph is not changed."""
    import networkx as nx

    from tessel.frontend.ops import get_op

    prods = graph.producers()
    cons = graph.consumers()
    group_of: dict[str, Group] = {}
    groups: dict[int, Group] = {}
    gdag = nx.DiGraph()  # group id -> group id, for the cycle checks

    ids = iter(range(len(graph.nodes)))

    def new_group(node: OpNode, anchor: OpNode | None) -> Group:
        g = Group(next(ids), [node], anchor)
        groups[g.id] = g
        gdag.add_node(g.id)
        group_of[node.name] = g
        return g

    def producer_groups(node: OpNode) -> list:
        seen, out = set(), []
        for v in node.inputs:
            if v in prods:
                g = group_of[prods[v].name]
                if g.id not in seen:
                    seen.add(g.id)
                    out.append(g)
        return out

    def add_edges(node: OpNode, g: Group) -> None:
        for p in producer_groups(node):
            if p.id != g.id:
                gdag.add_edge(p.id, g.id)

    def merge(src: Group, dst: Group) -> None:  # src's nodes go in front of dst's
        dst.nodes = src.nodes + dst.nodes
        for n in src.nodes:
            group_of[n.name] = dst
        for a, _ in list(gdag.in_edges(src.id)):
            gdag.add_edge(a, dst.id)
        for _, b in list(gdag.out_edges(src.id)):
            if b != dst.id:
                gdag.add_edge(dst.id, b)
        gdag.remove_node(src.id)
        del groups[src.id]

    for node in graph.topo_order():
        kind = get_op(node.op, node.describe()).kind
        if kind in FUSIBLE:
            target = _pick_producer(node, producer_groups(node), gdag, max_group_ops)
            if target is None:
                g = new_group(node, None)
            else:
                target.nodes.append(node)
                group_of[node.name] = target
                g = target
            add_edges(node, g)
            continue
        g = new_group(node, node)
        if kind != "opaque":
            for p in producer_groups(node):
                if _prologue_ok(p, node, kind, graph, cons, max_prologue_ops, max_group_ops):
                    merge(p, g)
        add_edges(node, g)

    order = _order(groups, gdag, graph)
    for k, g in enumerate(order):
        g.id = k  # numbered in execution order
        _finish(g, graph, cons)
    return order


def _pick_producer(node: OpNode, cands: list, gdag, max_ops: int) -> Group | None:
    import networkx as nx

    ranked = sorted(cands, key=lambda g: g.anchor is None)  # anchor groups first (stable)
    for g in ranked:
        if len(g.nodes) >= max_ops:
            continue
        if any(h.id != g.id and nx.has_path(gdag, g.id, h.id) for h in cands):
            continue  # node would read, through another group, a value computed after g
        return g
    return None


def _prologue_ok(p: Group, anchor: OpNode, kind: str, graph: Graph, cons: dict, max_pro: int, max_ops: int) -> bool:
    from tessel.frontend.ops import get_op

    if p.anchor is not None or len(p.nodes) + 1 > max_ops:
        return False
    kinds = [get_op(n.op).kind for n in p.nodes]
    if kind == "contraction" and any(k != "injective" for k in kinds):
        return False
    if kind == "reduction" and len(p.nodes) > max_pro:
        return False
    members = {n.name for n in p.nodes}
    for n in p.nodes:
        for v in n.outputs:
            if v in graph.outputs:
                return False
            if any(c.name not in members and c.name != anchor.name for c in cons.get(v, [])):
                return False
    return True


def _order(groups: dict, gdag, graph: Graph) -> list:
    import networkx as nx

    if not nx.is_directed_acyclic_graph(gdag):
        raise GraphError(f"graph '{graph.name}': fusion produced a cycle between groups (a fusion bug)")
    position = {name: i for i, name in enumerate(graph.nodes)}
    for g in groups.values():
        g.nodes.sort(key=lambda n: position[n.name])
    first = {gid: position[g.nodes[0].name] for gid, g in groups.items()}
    order = list(nx.lexicographical_topological_sort(gdag, key=lambda gid: first[gid]))
    return [groups[gid] for gid in order]


def _finish(g: Group, graph: Graph, cons: dict) -> None:
    members = {n.name for n in g.nodes}
    produced = {v for n in g.nodes for v in n.outputs}
    inputs: list = []
    for n in g.nodes:
        for v in n.inputs:
            if v is not None and v not in produced and v not in inputs:
                inputs.append(v)
    outputs = []
    for n in g.nodes:
        for v in n.outputs:
            if v in graph.outputs or any(c.name not in members for c in cons.get(v, [])):
                outputs.append(v)
    g.inputs, g.outputs = inputs, outputs
