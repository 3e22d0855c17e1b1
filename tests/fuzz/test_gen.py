"""Generators make valid programs: the verifier accepts them, the text form round-trips, the
interpreter runs them, and lowered graph groups agree with the op registry's numpy references."""

import collections
import random

import numpy as np

from tessel.frontend.reference import run_graph
from tessel.fuzz.gen import dsl_kernel, graph_kernels, program, random_graph
from tessel.fuzz.oracles import make_inputs
from tessel.ir.interp import run
from tessel.ir.nodes import Binary, walk
from tessel.ir.text import parse_kernel, to_text
from tessel.ir.verify import verify


def test_dsl_kernels_are_valid_and_run():
    seen = collections.Counter()
    for seed in range(60):
        k = dsl_kernel(random.Random(seed))
        verify(k)
        assert parse_kernel(to_text(k)) == k
        arrays = make_inputs(k, seed)
        run(k, *arrays)
        for n in walk(k.body):
            if isinstance(n, Binary):
                seen[n.op] += 1
            seen[type(n).__name__] += 1
        seen.update(p.dtype for p in k.params)
    # the features the generator promises all occur
    for feature in ("floordiv", "floormod", "Select", "Cast", "IfThenElse", "float16", "int32", "max", "mul"):
        assert seen[feature] > 0, feature


def test_program_mixes_both_sources():
    names = [program(random.Random(s)).name for s in range(40)]
    assert any(n.startswith("fz") for n in names) and any(not n.startswith("fz") for n in names)


def test_graph_groups_match_op_references():
    """A graph that fuses into one kernel: the interpreter on the lowered kernel equals the numpy
    references of its ops (an independent reference)."""
    from tessel.compiler.lowering import lower_group
    from tessel.passes.graph.fusion import fuse

    checked = 0
    for seed in range(80):
        g = random_graph(random.Random(seed))
        groups = fuse(g)
        if len(groups) != 1 or not g.nodes:
            continue
        low = lower_group(g, groups[0])
        rng = np.random.default_rng(seed)
        feeds = {v: rng.standard_normal(g.values[v].shape).astype("float32") for v in g.inputs}
        want = run_graph(g, [feeds[v] for v in g.inputs])
        arrays = [feeds[a].copy() if a in feeds else np.zeros(g.values[a].shape, g.values[a].dtype) for a in low.args]
        run(low.ir, *arrays)
        got = dict(zip(low.args, arrays))
        for name, w in zip(g.outputs, want):
            np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 10


def test_graph_kernels_verify():
    n = 0
    for seed in range(30):
        for k in graph_kernels(random.Random(seed)):
            verify(k)
            n += 1
    assert n >= 20
