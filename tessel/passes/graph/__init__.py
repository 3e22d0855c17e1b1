"""Graph passes: they rewrite a `tessel.frontend.graph.Graph` in place or analyse it.

- `fold.fold_constants`: evaluate constant subgraphs with the ops' numpy references;
- `canonicalize.canonicalize`: the forms fusion and lowering expect (linear -> matmul + bias, no
  identity layout ops, scalar-constant identities);
- `pattern`: the subgraph-matching rewrite facility (`Op`/`Val`/`Const` patterns, `Rule`,
  `apply_rules`) and its rules (x * sigmoid(x) -> silu, GELU spelled out -> gelu);
- `fusion.fuse`: partition into groups, one kernel each;
- `memory.plan_memory`: buffers for values crossing kernels, reused by liveness.

`optimize(graph)` runs the rewriting passes in the order the model compiler uses. Nothing is
imported at package import time.
"""


def optimize(graph, fold_limit=None) -> dict:
    """Apply the pattern rules, canonicalise, fold constants, and repeat once (in place);
    returns what each pass did (counts per rule, folded nodes).

    >>> from tessel.frontend.graph import Graph
    >>> g = Graph(); x = g.add_input("x", (2,), "float32")
    >>> (y,) = g.add_node("cast", [x], {"dtype": "float32"}); g.mark_outputs([y])
    >>> optimize(g)["canonicalize"]
    {'identity': 1}
    """
    from tessel.passes.graph.canonicalize import canonicalize
    from tessel.passes.graph.fold import DEFAULT_MAX_ELEMENTS, fold_constants
    from tessel.passes.graph.pattern import DEFAULT_RULES, apply_rules

    # Patterns first: they recognise idioms as the source spelled them (pow(x, 3) in GELU),
    # before canonicalisation respells them; then again on the canonical form.
    report = {"patterns": apply_rules(graph, DEFAULT_RULES)}
    report["canonicalize"] = canonicalize(graph)
    report["folded"] = fold_constants(graph, fold_limit or DEFAULT_MAX_ELEMENTS)
    for k, v in apply_rules(graph, DEFAULT_RULES).items():
        report["patterns"][k] = report["patterns"].get(k, 0) + v
    second = canonicalize(graph)
    report["folded"] += fold_constants(graph, fold_limit or DEFAULT_MAX_ELEMENTS)
    for k, v in second.items():
        report["canonicalize"][k] = report["canonicalize"].get(k, 0) + v
    graph.prune()
    graph.reorder_topologically()
    return report
