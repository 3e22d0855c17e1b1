"""The pattern-rewrite facility: what matches, what does not, and that rewrites keep the function.

Properties: the SiLU rule fires on x*sigmoid(x) in either operand order and the graph computes
the same thing afterwards; it does not fire when the operands differ, when sigmoid(x) is read
elsewhere (the match must own its interior), or when the rule declines; bound names must bind the
same value; constants match by value; attributes and predicates restrict; a rule that changes a
value's type is reported; rules that undo each other are stopped.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tessel.frontend.graph import Graph, GraphError
from tessel.passes.graph.pattern import DEFAULT_RULES, SILU, Const, Op, Rule, Val, apply_rules, match
from tests.passes.graph.helpers import assert_same_function


def _silu_graph(order="xs", shape=(3, 5)):
    g = Graph("g")
    x = g.add_input("x", shape, "float32")
    (s,) = g.add_node("sigmoid", [x])
    (y,) = g.add_node("mul", [x, s] if order == "xs" else [s, x])
    (z,) = g.add_node("add", [y, x])
    g.mark_outputs([z])
    return g


@pytest.mark.parametrize("order", ["xs", "sx"])
def test_silu_rule_fires_in_either_order_and_keeps_the_function(order):
    g = _silu_graph(order)
    before = copy.deepcopy(g)
    assert apply_rules(g, [SILU]) == {"silu": 1}
    assert sorted(n.op for n in g.nodes.values()) == ["add", "silu"]
    assert_same_function(before, g, np.random.default_rng(0))


def test_silu_rule_needs_the_same_value_twice():
    g = Graph()
    x, y = g.add_input("x", (4,), "float32"), g.add_input("y", (4,), "float32")
    (s,) = g.add_node("sigmoid", [y])
    (z,) = g.add_node("mul", [x, s])
    g.mark_outputs([z])
    assert apply_rules(g, [SILU]) == {}
    assert sorted(n.op for n in g.nodes.values()) == ["mul", "sigmoid"]


def test_interior_read_elsewhere_blocks_the_rewrite():
    g = Graph()
    x = g.add_input("x", (4,), "float32")
    (s,) = g.add_node("sigmoid", [x])
    (y,) = g.add_node("mul", [x, s])
    g.mark_outputs([y, s])  # sigmoid(x) is also an output: replacing would compute it twice
    assert apply_rules(g, [SILU]) == {}
    g2 = _silu_graph()
    (extra,) = g2.add_node("exp", [g2.nodes["sigmoid"].outputs[0]])
    g2.mark_outputs(g2.outputs + [extra])
    assert apply_rules(g2, [SILU]) == {}


def test_const_patterns_match_by_value_and_attrs_and_predicates_restrict():
    g = Graph()
    x = g.add_input("x", (2, 3), "float32")
    two = g.add_const("two", np.full((1,), 2.0, np.float32))
    three = g.add_const("three", np.full((1,), 3.0, np.float32))
    (a,) = g.add_node("mul", [x, two])
    (b,) = g.add_node("mul", [x, three])
    (t,) = g.add_node("transpose", [x], {"perm": (1, 0)})
    g.mark_outputs([a, b, t])
    times_two = Op("mul", (Val("v"), Const("c", value=2.0)))
    assert match(g, times_two, g.nodes["mul"]) is not None
    assert match(g, times_two, g.nodes["mul_1"]) is None
    m = match(g, times_two, g.nodes["mul"])
    assert m["v"] == x and m.const("c").tolist() == [2.0]
    assert match(g, Op("transpose", attrs={"perm": (1, 0)}), g.nodes["transpose"]) is not None
    assert match(g, Op("transpose", attrs={"perm": (0, 1)}), g.nodes["transpose"]) is None
    big = Op("mul", (Val("v", where=lambda v: v.shape == (9,)), Val()))
    assert match(g, big, g.nodes["mul"]) is None


def test_declining_rule_leaves_the_graph_unchanged():
    g = _silu_graph()
    before = str(g)

    def decline(graph, m):
        graph.add_node("exp", [m["x"]])  # added, then dropped because the rule declines
        return None

    assert apply_rules(g, [Rule("never", SILU.pattern, decline)]) == {}
    assert str(g) == before


def test_rule_changing_a_type_is_reported():
    g = _silu_graph()
    bad = Rule("bad", SILU.pattern, lambda graph, m: graph.add_node("reduce_sum", [m["x"]], {"axes": (0,)})[0])
    with pytest.raises(GraphError, match="rule 'bad' replaced value"):
        apply_rules(g, [bad])


def test_rules_that_undo_each_other_are_stopped():
    g = Graph()
    x = g.add_input("x", (4,), "float32")
    (y,) = g.add_node("exp", [x])
    g.mark_outputs([y])
    to_log = Rule("a", Op("exp", (Val("v"),)), lambda graph, m: graph.add_node("log", [m["v"]])[0])
    to_exp = Rule("b", Op("log", (Val("v"),)), lambda graph, m: graph.add_node("exp", [m["v"]])[0])
    with pytest.raises(GraphError, match="did not settle"):
        apply_rules(g, [to_log, to_exp])


def test_nested_pattern_binds_nodes_and_rewrites_deep_trees():
    """exp(log(x)) -> x through a two-level pattern; the rewritten graph keeps its outputs."""
    g = Graph()
    x = g.add_input("x", (5,), "float32")
    (a,) = g.add_node("abs", [x])
    (l,) = g.add_node("log", [a])
    (e,) = g.add_node("exp", [l])
    (y,) = g.add_node("neg", [e])
    g.mark_outputs([y])
    before = copy.deepcopy(g)
    rule = Rule("exp_log", Op("exp", (Op("log", (Val("v"),), name="inner"),)), lambda graph, m: m["v"])
    assert apply_rules(g, [rule]) == {"exp_log": 1}
    assert [n.op for n in g.nodes.values()] == ["abs", "neg"]
    rng = np.random.default_rng(1)
    assert_same_function(before, g, rng, rtol=1e-5)


def _gelu_tanh_graph(half=0.5, k=0.044715):
    """GPT-2's NewGELU as torch.export spells it."""
    g = Graph("gelu")
    x = g.add_input("x", (3, 8), "float32")

    def c(name, v):
        return g.add_const(name, np.float32(v))

    (a,) = g.add_node("mul", [x, c("half", half)])
    (p,) = g.add_node("pow", [x, c("three", 3.0)])
    (q,) = g.add_node("mul", [p, c("k", k)])
    (r,) = g.add_node("add", [x, q])
    (s,) = g.add_node("mul", [r, c("s", np.sqrt(2 / np.pi))])
    (t,) = g.add_node("tanh", [s])
    (u,) = g.add_node("add", [t, c("one", 1.0)])
    (y,) = g.add_node("mul", [a, u])
    g.mark_outputs([y])
    return g


def test_gelu_tanh_rule_recognises_gpt2s_gelu():
    g = _gelu_tanh_graph()
    before = copy.deepcopy(g)
    assert apply_rules(g, DEFAULT_RULES) == {"gelu_tanh": 1}
    (node,) = g.nodes.values()
    assert node.op == "gelu" and node.attrs == {"approximate": "tanh"}
    assert_same_function(before, g, np.random.default_rng(2), rtol=1e-5)


def test_gelu_rule_checks_the_constants():
    g = _gelu_tanh_graph(k=0.05)
    assert apply_rules(g, DEFAULT_RULES) == {}
    assert len(g.nodes) == 8


@pytest.mark.parametrize("form", ["torch", "onnx"])
def test_gelu_erf_rules(form):
    g = Graph()
    x = g.add_input("x", (4, 4), "float32")
    if form == "torch":  # x * 0.5 * (1 + erf(x * M_SQRT1_2))
        (h,) = g.add_node("mul", [x, g.add_const("h", np.float32(0.5))])
        (e,) = g.add_node("mul", [x, g.add_const("s", np.float32(0.7071067811865476))])
    else:  # (x * (1 + erf(x / sqrt 2))) * 0.5
        (e,) = g.add_node("div", [x, g.add_const("s", np.float32(1.4142135623730951))])
    (e,) = g.add_node("erf", [e])
    (one,) = g.add_node("add", [e, g.add_const("one", np.float32(1.0))])
    if form == "torch":
        (y,) = g.add_node("mul", [h, one])
    else:
        (y,) = g.add_node("mul", [x, one])
        (y,) = g.add_node("mul", [y, g.add_const("h", np.float32(0.5))])
    g.mark_outputs([y])
    before = copy.deepcopy(g)
    assert apply_rules(g, DEFAULT_RULES) == {"gelu_erf": 1}
    assert [n.op for n in g.nodes.values()] == ["gelu"]
    assert_same_function(before, g, np.random.default_rng(3), rtol=1e-5)
