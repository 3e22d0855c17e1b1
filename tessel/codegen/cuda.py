"""The CUDA backend: a GPU-scheduled tessel Kernel in, a callable GpuKernel out.

Three modules, one idea each:
  * `cuda_printer.py`  tessel IR -> CUDA C++ (with `cuda_vectorize.py` for vector accesses,
                       `cuda_text.py` for types, literals, names and intrinsic text, and the device
                       header `include/tessel_cuda.cuh`);
  * `cuda_build.py`    CUDA C++ -> cubin through NVRTC (cuda.core) or nvcc, cached on disk;
  * `cuda_runtime.py`  loading, argument checks, streams, launches, CUDA graphs;
and `tessel.codegen.cuda_kernel.GpuKernel` is what users hold. Building needs a compiler but no
GPU (the architecture comes from the target: "cuda" detects it from the visible GPU, or uses
sm_90a without one); calling needs the GPU.

Example (printing runs anywhere; the build lines are skipped in the doctest run, since building
needs nvcc or NVRTC, which a CI machine may lack):
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B, t = Buffer("A", (64,)), Buffer("B", (64,)), Var("t")
    >>> ir = Kernel("inc", (A, B), For(t, 64, Store(B, (t,), A[t] + 1.0), "threadIdx.x"), target="cuda")
    >>> print(cuda_source(ir).splitlines()[-3])
        B[t] = (A[t] + 0x1.0000000000000p+0f);
    >>> kern = build_kernel(ir, "cuda:sm_80")        # doctest: +SKIP
    >>> kern.arch, kern.launch.block                 # doctest: +SKIP
    ('sm_80', (64, 1, 1))
"""

from __future__ import annotations

import dataclasses

from tessel.codegen.cuda_build import compile_cuda
from tessel.codegen.cuda_kernel import GpuKernel
from tessel.codegen.cuda_printer import print_kernel
from tessel.errors import CodegenError
from tessel.ir.nodes import Kernel
from tessel.ir.target import parse_target


def build_kernel(ir: Kernel, target="cuda"):
    """Print `ir` as CUDA C++, compile it for the target's architecture (cached) and return the
    `GpuKernel`. Raises CodegenError (with the compiler's log and the saved source's path) when
    the code does not compile, and when no CUDA compiler is available."""
    tgt = parse_target(target)
    if not tgt.is_gpu:
        raise CodegenError(f"kernel '{ir.name}': the CUDA backend builds for 'cuda' targets, got '{tgt}'")
    if ir.target != "cuda":
        ir = dataclasses.replace(ir, target="cuda")
    printed = print_kernel(ir)
    binary = compile_cuda(printed.source, tgt.arch, name=ir.name)
    return GpuKernel(ir, printed, binary, tgt)


def cuda_source(ir: Kernel) -> str:
    """The CUDA C++ source of a GPU kernel (what `build_kernel(...).source` holds)."""
    return print_kernel(ir).source


__all__ = ["build_kernel", "cuda_source"]
