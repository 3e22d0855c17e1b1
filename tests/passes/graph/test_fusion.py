"""Fusion partitions the graph into groups that are legal and useful.

Properties: every node is in exactly one group; a group has at most one anchor; the groups form
a DAG and come in an order where each group's inputs exist before it runs (hypothesis-drawn random
graphs); elementwise ops fuse into producers and as epilogues of anchors; prologues join only where
cheap (injective ops before a contraction, short elementwise chains before a reduction, nothing
before an opaque op) and only when the anchor is their sole reader; no cycle is ever created.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tessel.frontend.graph import Graph
from tessel.frontend.ops import get_op
from tessel.passes.graph.fusion import fuse


def _describe(g):
    return [grp.describe() for grp in fuse(g)]


def _const(g, rng, shape, name="w"):
    return g.add_const(name, rng.standard_normal(shape).astype(np.float32))


def test_mlp_fuses_bias_and_activation_into_each_gemm():
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", (4, 8), "float32")
    (h,) = g.add_node("matmul", [x, _const(g, rng, (8, 16))])
    (h,) = g.add_node("add", [h, _const(g, rng, (16,))])
    (h,) = g.add_node("relu", [h])
    (y,) = g.add_node("matmul", [h, _const(g, rng, (16, 2))])
    (y,) = g.add_node("add", [y, _const(g, rng, (2,))])
    g.mark_outputs([y])
    groups = fuse(g)
    assert [grp.describe() for grp in groups] == ["matmul+add+relu", "matmul+add"]
    assert groups[0].outputs == [h] and groups[1].inputs[0] == h


def test_elementwise_chain_is_one_group_with_external_inputs():
    g = Graph()
    x, y = g.add_input("x", (4,), "float32"), g.add_input("y", (4,), "float32")
    (a,) = g.add_node("exp", [x])
    (b,) = g.add_node("tanh", [a])
    (c,) = g.add_node("mul", [b, y])
    g.mark_outputs([c, a])
    (grp,) = fuse(g)
    assert grp.describe() == "exp+tanh+mul" and grp.anchor is None
    assert grp.inputs == [x, y] and grp.outputs == [a, c]


def test_joining_never_creates_a_cycle():
    """add(A, softmax(A)) with A = matmul: the add cannot join A's group (it reads softmax, which
    reads A's group), so it joins the softmax group."""
    rng = np.random.default_rng(1)
    g = Graph()
    x = g.add_input("x", (4, 4), "float32")
    (a,) = g.add_node("matmul", [x, _const(g, rng, (4, 4))])
    (s,) = g.add_node("softmax", [a], {"axis": 1})
    (y,) = g.add_node("add", [a, s])
    g.mark_outputs([y])
    assert _describe(g) == ["matmul", "softmax+add"]


def test_prologues():
    g = Graph()
    x, w = g.add_input("x", (4, 6), "float32"), g.add_input("w", (4, 6), "float32")
    (wt,) = g.add_node("transpose", [w], {"perm": (1, 0)})  # injective: joins the GEMM
    (e,) = g.add_node("exp", [x])  # compute: does not join the GEMM
    (m,) = g.add_node("matmul", [e, wt])
    (s,) = g.add_node("mul", [m, m])
    (sm,) = g.add_node("softmax", [s], {"axis": 1})  # the mul is the GEMM's epilogue, not a prologue
    (n,) = g.add_node("neg", [x])
    (sm2,) = g.add_node("softmax", [n], {"axis": 0})  # neg has one reader: prologue
    (n2,) = g.add_node("abs", [x])
    (sm3,) = g.add_node("softmax", [n2], {"axis": 0})  # abs has two readers: no prologue
    (q,) = g.add_node("sdpa", [n2, n2, n2])  # opaque: takes no prologue but an epilogue
    (q2,) = g.add_node("relu", [q])
    g.mark_outputs([sm, sm2, sm3, q2])
    assert _describe(g) == ["exp", "transpose+matmul+mul", "softmax", "neg+softmax", "abs", "softmax",
                            "sdpa+relu"]


def test_max_group_ops_is_respected():
    g = Graph()
    v = g.add_input("x", (4,), "float32")
    for _ in range(10):
        (v,) = g.add_node("tanh", [v])
    g.mark_outputs([v])
    assert [len(grp.nodes) for grp in fuse(g, max_group_ops=4)] == [4, 4, 2]


# -- random graphs -----------------------------------------------------------------------------

_OPS = ["exp", "tanh", "add", "mul", "matmul", "softmax", "reduce_sum", "transpose", "sdpa"]


@st.composite
def random_graphs(draw):
    g = Graph("random")
    values = [g.add_input("x", (4, 4), "float32"), g.add_input("y", (4, 4), "float32")]
    for _ in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(_OPS))
        pick = lambda: values[draw(st.integers(0, len(values) - 1))]  # noqa: E731
        if op in ("add", "mul", "matmul"):
            ins, attrs = [pick(), pick()], {}
        elif op == "sdpa":
            ins, attrs = [pick(), pick(), pick()], {}
        elif op == "softmax":
            ins, attrs = [pick()], {"axis": draw(st.integers(0, 1))}
        elif op == "reduce_sum":
            ins, attrs = [pick()], {"axes": (draw(st.integers(0, 1)),), "keepdims": True}
            (r,) = g.add_node(op, ins, attrs)
            values.append(g.add_node("expand", [r], {"shape": (4, 4)})[0])
            continue
        elif op == "transpose":
            ins, attrs = [pick()], {"perm": (1, 0)}
        else:
            ins, attrs = [pick()], {}
        values.extend(g.add_node(op, ins, attrs))
    k = draw(st.integers(1, min(3, len(values) - 2)))
    g.mark_outputs(values[-k:])
    g.prune()
    return g


@settings(max_examples=60)
@given(random_graphs())
def test_random_graphs_partition_into_an_acyclic_ordered_set_of_groups(g):
    groups = fuse(g)
    seen = [n.name for grp in groups for n in grp.nodes]
    assert sorted(seen) == sorted(g.nodes)  # a partition
    available = set(g.inputs) | {v.name for v in g.values.values() if v.is_const}
    dag = nx.DiGraph()
    producer = {}
    for grp in groups:
        anchors = [n for n in grp.nodes if get_op(n.op).kind in ("contraction", "reduction", "opaque")]
        assert len(anchors) <= 1 and (grp.anchor is None) == (not anchors)
        assert set(grp.inputs) <= available, "a group reads a value no earlier group wrote"
        inside = {v for n in grp.nodes for v in n.outputs}
        for v in grp.inputs:
            if v in producer:
                dag.add_edge(producer[v], grp.id)
        for n in grp.nodes:  # inside a group, nodes run in an order that respects their edges
            assert all(v in available or v in inside for v in n.inputs)
        for v in grp.outputs:
            producer[v] = grp.id
        available |= set(grp.outputs)
        if grp.anchor is not None:
            before = grp.nodes[:grp.nodes.index(grp.anchor)]
            kind = get_op(grp.anchor.op).kind
            if kind == "contraction":
                assert all(get_op(n.op).kind == "injective" for n in before)
            if kind == "opaque":
                assert not before
    assert nx.is_directed_acyclic_graph(dag)
    assert set(g.outputs) <= available
