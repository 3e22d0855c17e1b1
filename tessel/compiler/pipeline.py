"""The named tensor-IR pass pipeline of each target, one comment per pass saying why it sits there.

A pipeline is a list of `Pass`es (name, function Kernel -> Kernel). `run_pipeline` applies them in
order; with `debug=True` (or `TESSEL_DEBUG=1` in the environment) it runs the IR verifier before the
first pass and after every pass, and a failure names the pass that broke the kernel.

The passes live in `tessel.passes` and are imported when a pipeline runs, never at import time.
A pass whose module is not installed yet is skipped with a warning (once per process), so the
pipeline stays runnable while the package grows.

Example:
    >>> [p.name for p in cpu_pipeline()]
    ['simplify', 'remove_dead_code']
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from tessel.errors import VerifyError
from tessel.ir.nodes import Kernel


@dataclass(frozen=True)
class Pass:
    """One step of a pipeline: `module.attr` is a function Kernel -> Kernel (or Node -> Node)."""

    name: str
    module: str
    attr: str

    def function(self) -> Callable | None:
        return _load(self.module, self.attr)

    def __call__(self, kernel: Kernel) -> Kernel:
        fn = self.function()
        return kernel if fn is None else fn(kernel)


def cpu_pipeline() -> list[Pass]:
    """The tensor-IR passes run on every CPU kernel after scheduling, before TVM codegen.

    >>> cpu_pipeline()[0].module
    'tessel.passes.simplify'
    """
    return [
        # Scheduling (split, fuse, compute_at) leaves index arithmetic such as (i_0 * 8 + i_1) // 8
        # and guards such as `k_0 * 4 + k_1 == 0` that fold to simple forms; simpler indices are
        # what TVM's vectorizer recognises as contiguous ramps.
        Pass("simplify", "tessel.passes.simplify", "simplify"),
        # Guards folded to constants leave empty branches, and inlined producers leave buffers that
        # are written but never read; removing them saves work and allocations.
        Pass("remove_dead_code", "tessel.passes.dce", "remove_dead_code"),
    ]


def pipeline_for(target) -> list[Pass]:
    """The pipeline of a target ("cpu" or a Target whose kind is "cpu"); GPU pipelines come with
    the CUDA backend."""
    kind = getattr(target, "kind", target)
    if kind == "cpu":
        return cpu_pipeline()
    return []


def debug_enabled() -> bool:
    """Whether `TESSEL_DEBUG` asks for the verifier between passes."""
    return os.environ.get("TESSEL_DEBUG", "").strip() not in ("", "0", "false", "no")


def run_pipeline(kernel: Kernel, passes: list[Pass], debug: bool = False) -> Kernel:
    """Apply `passes` in order. With `debug` (or TESSEL_DEBUG=1) verify the kernel before the first
    pass and after each one; a VerifyError names the pass after which the kernel went bad.

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A = Buffer("A", (4,)); i = Var("i")
    >>> k = Kernel("k", (A,), For(i, 4, Store(A, (i,), A[i] + 0.0)))
    >>> isinstance(run_pipeline(k, cpu_pipeline()), Kernel)
    True
    """
    debug = debug or debug_enabled()
    verify = _load("tessel.ir.verify", "verify") if debug else None
    if verify is not None:
        _verify(verify, kernel, "before the first pass (the scheduled kernel)")
    for p in passes:
        out = p(kernel)
        if not isinstance(out, Kernel):
            raise VerifyError(f"pass '{p.name}' returned {type(out).__name__} for kernel '{kernel.name}', "
                              f"expected a Kernel")
        kernel = out
        if verify is not None:
            _verify(verify, kernel, f"after pass '{p.name}'")
    return kernel


def _verify(verify: Callable, kernel: Kernel, when: str) -> None:
    try:
        verify(kernel)
    except VerifyError as e:
        raise VerifyError(f"kernel '{kernel.name}' is not well formed {when}: {e}") from e


@functools.cache  # one import attempt (and one warning) per pass per process
def _load(module: str, attr: str) -> Callable | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:  # the module exists but something it imports is missing: a real bug
            raise
        warnings.warn(f"tessel: {module} is not available yet; its pass is skipped", RuntimeWarning, stacklevel=2)
        return None
    return getattr(mod, attr)
