"""Shared helpers of the graph-pass tests: random inputs and a graph-vs-graph comparison."""

from __future__ import annotations

import numpy as np

from tessel.frontend.reference import run_graph


def rand(rng, shape, dtype="float32"):
    """Standard-normal data (never zeros)."""
    return rng.standard_normal(shape).astype(dtype)


def inputs_for(graph, rng) -> list:
    return [rand(rng, graph.values[v].shape, graph.values[v].dtype) for v in graph.inputs]


def assert_same_function(before, after, rng, rtol=1e-5, atol=1e-6, trials=2) -> None:
    """Both graphs compute the same outputs (with the ops' numpy references) on random inputs."""
    for _ in range(trials):
        xs = inputs_for(before, rng)
        want, got = run_graph(before, xs), run_graph(after, xs)
        assert len(want) == len(got)
        for w, g in zip(want, got):
            assert w.shape == g.shape and w.dtype == g.dtype
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
