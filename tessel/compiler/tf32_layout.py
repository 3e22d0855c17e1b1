"""Weight layout for tf32 GEMMs on Hopper: float32 constant weights read K-major.

tf32 wgmma takes both operands K-major (PTX has no transposed tf32 operands), but the graph passes
fold a torch Linear's `transpose(w)` into a (K, N) constant. With the user's `allow_tf32`, compile()
turns such weights back before fusion, so the GEMM templates see B as [N][K].
"""

from __future__ import annotations

import numpy as np


def keep_tf32_weights_k_major(graph) -> int:
    """Give every float32 matmul whose B operand is a constant (K, N) weight a (N, K) copy read
    through a transpose, so the GEMM's B is K-major, which tf32 wgmma needs (PTX has no transposed
    tf32 operands). The graph passes fold a torch Linear's `transpose(w)` into a (K, N) constant, which
    would keep such models on exact float32 although the user allowed tf32. Run after the graph
    passes (folding would undo it); returns how many weights it turned.

    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> g = Graph(); x = g.add_input("x", (64, 32), "float32"); w = g.add_const("w", np.ones((32, 16), np.float32))
    >>> (y,) = g.add_node("matmul", [x, w]); g.mark_outputs([y])
    >>> mm = next(n for n in g.nodes.values() if n.op == "matmul")
    >>> keep_tf32_weights_k_major(g), g.producer(mm.inputs[1]).op
    (1, 'transpose')
    """
    turned = 0
    for node in list(graph.nodes.values()):
        if node.op != "matmul" or len(node.inputs) != 2:
            continue
        w = graph.values[node.inputs[1]]
        if not (w.is_const and w.dtype == "float32" and len(w.shape) == 2):
            continue
        wt = graph.add_const(f"{w.name}_kmajor", np.ascontiguousarray(w.data.T))
        (back,) = graph.add_node("transpose", [wt], {"perm": (1, 0)}, origin=node.origin)
        node.inputs = [node.inputs[0], back]
        turned += 1
    if turned:
        graph.prune()
        graph.reorder_topologically()
    return turned
