"""Renaming ONNX subgraphs so that one body can be inlined several times (Loop, Scan) without its
names colliding: every name a graph defines (its inputs, initializers and node outputs, in nested
subgraphs too) gets a prefix; references to names of outer scopes are left alone.

Example:
    >>> import onnx.helper as oh
    >>> vi = lambda s: oh.make_tensor_value_info(s, 1, [2])
    >>> body = oh.make_graph([oh.make_node("Add", ["x", "outer"], ["y"])], "b", [vi("x")], [vi("y")])
    >>> g = renamed_graph(body, "it0::")
    >>> [(list(n.input), list(n.output)) for n in g.node], g.input[0].name
    ([(['it0::x', 'outer'], ['it0::y'])], 'it0::x')
"""

from __future__ import annotations


def renamed_graph(graph, prefix: str, outer: dict | None = None):
    """A copy of GraphProto `graph` with the names it defines prefixed (`outer`: renames already
    made by enclosing graphs, for the names they define)."""
    import onnx

    g = onnx.GraphProto()
    g.CopyFrom(graph)
    names = dict(outer or {})
    defined = [vi.name for vi in g.input] + [t.name for t in g.initializer]
    defined += [o for n in g.node for o in n.output if o]
    names.update({d: prefix + d for d in defined})
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = names.get(vi.name, vi.name)
    for t in g.initializer:
        t.name = names[t.name]
    for n in g.node:
        n.name = prefix + n.name if n.name else ""
        n.input[:] = [names.get(i, i) if i else "" for i in n.input]
        n.output[:] = [names.get(o, o) if o else "" for o in n.output]
        for a in n.attribute:
            if a.HasField("g"):
                a.g.CopyFrom(renamed_graph(a.g, prefix, names))
            for k, sub in enumerate(a.graphs):
                a.graphs[k].CopyFrom(renamed_graph(sub, prefix, names))
    return g
