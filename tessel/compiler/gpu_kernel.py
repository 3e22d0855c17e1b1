"""GpuKernel: a compiled CUDA kernel. Defined in `tessel.codegen.cuda_kernel` (codegen imports
nothing from the driver); re-exported here under its old name.
"""

from tessel.codegen.cuda_kernel import GpuKernel

__all__ = ["GpuKernel"]
