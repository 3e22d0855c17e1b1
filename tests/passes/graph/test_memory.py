"""Memory planning: reuse never makes two live values share bytes, and it does save memory.

Properties: on hypothesis-drawn step sequences the plan has no conflicts (two values live at the
same step never overlap), every value fits in the arena, the arena is no larger than one buffer per
value and no smaller than the bytes live at the busiest step; a compiled model whose intermediates
share the arena computes what the graph reference computes, call after call.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessel.compiler.model import compile_graph
from tessel.errors import TesselError
from tessel.frontend.graph import Graph
from tessel.frontend.reference import run_graph
from tessel.passes.graph.memory import ALIGN, plan_memory


@st.composite
def step_programs(draw):
    n_values = draw(st.integers(1, 14))
    sizes = {f"v{i}": draw(st.integers(1, 5000)) for i in range(n_values)}
    steps = []
    for i in range(n_values):  # step i writes v_i and reads a few earlier values
        reads = [f"v{j}" for j in range(i) if draw(st.booleans())]
        steps.append((reads, [f"v{i}"]))
    return steps, sizes


@settings(max_examples=150)
@given(step_programs())
def test_plans_never_overlap_live_values(program):
    steps, sizes = program
    plan = plan_memory(steps, sizes)
    assert plan.conflicts() == []
    for v, off in plan.offsets.items():
        assert off % ALIGN == 0 and off + sizes[v] <= plan.arena_bytes
    assert plan.arena_bytes <= plan.naive_bytes
    busiest = max(sum(-(-sizes[v] // ALIGN) * ALIGN for v, (a, b) in plan.lifetimes.items() if a <= s <= b)
                  for s in range(len(steps)))
    assert plan.arena_bytes >= busiest


def test_a_chain_reuses_memory():
    steps = [([], ["a"]), (["a"], ["b"]), (["b"], ["c"]), (["c"], ["d"])]
    plan = plan_memory(steps, {v: 1000 for v in "abcd"})
    assert plan.arena_bytes == 2 * 1024 and plan.naive_bytes == 4 * 1024
    assert plan.offsets["a"] == plan.offsets["c"] and plan.offsets["b"] == plan.offsets["d"]


def test_bad_programs_are_reported():
    with pytest.raises(TesselError, match="read by step 0 before any step writes it"):
        plan_memory([(["a"], ["b"])], {"a": 4, "b": 4})
    with pytest.raises(TesselError, match="no step writes"):
        plan_memory([([], ["a"])], {"a": 4, "b": 4})


def _unfusable_chain():
    """softmax and matmul alternate, so every intermediate crosses a kernel boundary; a residual
    reads an early value late, which keeps it live across the middle of the chain."""
    rng = np.random.default_rng(0)
    g = Graph("chain")
    x = g.add_input("x", (8, 16), "float32")
    v = x
    vals = []
    for k in range(6):
        (v,) = g.add_node("softmax", [v], {"axis": 1})
        (v,) = g.add_node("matmul", [v, g.add_const(f"w{k}", rng.standard_normal((16, 16)).astype(np.float32))])
        vals.append(v)
    (y,) = g.add_node("add", [v, vals[1]])
    (z,) = g.add_node("mul", [y, vals[2]])
    g.mark_outputs([z, vals[3]])
    return g


def test_compiled_model_with_shared_buffers_matches_the_reference():
    g = _unfusable_chain()
    cm = compile_graph(g)
    plan = cm._current.plan
    assert plan.conflicts() == []
    assert cm.memory["arena_bytes"] < cm.memory["naive_bytes"]
    rng = np.random.default_rng(1)
    for _ in range(3):  # values from one call must not leak into the next
        x = rng.standard_normal((8, 16)).astype(np.float32)
        got = cm(x)
        want = run_graph(g, [x])
        assert isinstance(got, tuple) and len(got) == 2
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    first = cm(x)[1]
    second = cm(x)[1]
    assert first is not second and not np.shares_memory(first, second)  # outputs are fresh arrays
