"""Kernel: a compiled kernel, callable on arrays. Defined in `tessel.codegen.kernel` (the backends
build it, and codegen imports nothing from the driver); re-exported here, where `tessel.build`'s
callers have always found it.
"""

from tessel.codegen.kernel import Kernel

__all__ = ["Kernel"]
