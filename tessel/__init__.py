"""tessel: a tensor compiler. Models and DSL kernels in, fast kernels out.

Importing tessel is cheap: the DSL names are pure Python, and the heavy parts (TVM, torch, CUDA
bindings) are imported by the stage that needs them, when it first runs.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((4, 4), "float32", name="A")
    >>> B = ts.compute((4, 4), lambda i, j: A[j, i], name="B")
    >>> B.shape
    (4, 4)
"""

from tessel.errors import (  # noqa: F401
    ArgumentError, ArtifactError, CodegenError, DTypeError, ParseError, ScheduleError, ShapeError, TesselError,
    VerifyError,
)
from tessel.ir.dsl import (  # noqa: F401
    Tensor, abs, ceil, compute, const, cos, erf, exp, floor, log, max, maximum, min, minimum, placeholder, pow,
    reduce_axis, rsqrt, sigmoid, sin, sqrt, sum, tanh, where,
)

__version__ = "0.1.0"

# Heavier entry points, resolved on first use (PEP 562) so `import tessel` stays light.
_LAZY = {
    "build": ("tessel.compiler.driver", "build"),
    "compile": ("tessel.compiler.compile_api", "compile"),
    "load": ("tessel.compiler.artifact", "load_model"),
    "GraphBuilder": ("tessel.frontend.builder", "GraphBuilder"),
    "CompiledModel": ("tessel.compiler.model", "CompiledModel"),
    "lower": ("tessel.ir.dsl", "lower"),
    "Schedule": ("tessel.schedules.schedule", "Schedule"),
    "Kernel": ("tessel.compiler.kernel", "Kernel"),
    "tune": ("tessel.tune", "_self"),  # the package, callable: ts.tune(...) runs tessel.tune.api.tune
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tessel' has no attribute {name!r}")
