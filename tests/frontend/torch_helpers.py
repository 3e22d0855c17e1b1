"""Shared helpers of the torch importer tests: wrap a function as a module, import it, and compare the
graph (run with each op's numpy reference) against torch eager on the same random inputs."""

from __future__ import annotations

import numpy as np

TOL = 1e-4  # max relative error, float32 (the accuracy target)


def fn_module(fn):
    """An nn.Module whose forward is `fn` (torch.export traces through it)."""
    import torch

    class Fn(torch.nn.Module):
        def forward(self, *xs):
            return fn(*xs)

    m = Fn()
    m.__class__.__name__ = getattr(fn, "__name__", "Fn")
    return m.eval()


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)) if want.size else 0.0


def assert_close(got, want, what: str = "output", tol: float = TOL) -> None:
    """Exact for ints and bools, relative error <= tol for floats; shapes and dtypes must agree."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch says {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch says {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        finite = np.isfinite(want)
        np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=f"{what}: non-finite values differ")
        err = rel_err(got[finite], want[finite])
        assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


def check_module(module, inputs, decompose=None, tol: float = TOL):
    """Import `module` on `inputs`, run the graph with run_graph and compare every output with eager."""
    import torch
    import torch.utils._pytree as pytree

    from tessel.frontend.reference import run_graph
    from tessel.frontend.torch import import_torch

    module = module.eval()
    graph = import_torch(module, inputs, decompose=decompose)
    got = run_graph(graph, [x.numpy() for x in inputs])
    with torch.no_grad():
        want = [w for w in pytree.tree_leaves(module(*inputs)) if isinstance(w, torch.Tensor)]
    assert len(got) == len(want), f"{len(got)} graph outputs, the module returns {len(want)} tensors"
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w.numpy(), f"output {k}", tol)
    return graph


def randn(*shape, seed: int = 0, dtype=None):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype or torch.float32)
