"""The host CPU's SIMD shape, for CPU templates: vector width in bytes and number of vector registers.

The CPU backend compiles for the host's own CPU (`tessel.codegen.tvm_runtime.host_target`: LLVM's
name for it, e.g. `rocketlake` or `znver3`), so register tiles are sized for the host's ISA, not a
fixed one: AVX-512 has 32 registers of 64 bytes, AVX2 16 of 32 bytes, Arm NEON 32 of 16 bytes.
A 4x16 float32 GEMM tile (4 AVX-512 accumulators) ran the 512^3 GEMM at 51 GFLOP/s on one core
here, an 8x32 tile (16 accumulators) at 153 GFLOP/s (numpy/OpenBLAS on one core: 141).

Read from /proc/cpuinfo (Linux) without importing TVM; `TESSEL_CPU_VECTOR_BYTES` (16, 32 or 64)
overrides the width (e.g. to size tiles for an AVX2 machine on an AVX-512 one).

Example:
    >>> v = host_vector()
    >>> v.bytes in (16, 32, 64) and v.registers in (16, 32)
    True
    >>> v.lanes("float32") == v.bytes // 4
    True
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

from tessel.ir.dtypes import bits


@dataclass(frozen=True)
class HostVector:
    isa: str  # "avx512", "avx2", "neon" or "sse"
    bytes: int  # width of one vector register
    registers: int  # architectural vector registers

    def lanes(self, dtype: str) -> int:
        """Elements of `dtype` in one vector register."""
        return max(1, self.bytes * 8 // max(8, bits(dtype)))


_BY_ISA = {"avx512": (64, 32), "avx2": (32, 16), "neon": (16, 32), "sse": (16, 16)}


@functools.cache  # the host does not change while we run
def host_vector() -> HostVector:
    """The host's vector ISA (see the module docstring)."""
    isa = _detect()
    width, regs = _BY_ISA[isa]
    forced = os.environ.get("TESSEL_CPU_VECTOR_BYTES")
    if forced in ("16", "32", "64"):
        width = int(forced)
        regs = 32 if width == 64 or isa == "neon" else 16
    return HostVector(isa, width, regs)


def _detect() -> str:
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "neon"
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read(1 << 16)
    except OSError:
        return "sse"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    return "sse"
