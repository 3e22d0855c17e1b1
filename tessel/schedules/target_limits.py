"""What a target allows one kernel: the limits templates check their knob values against, and
the resources a scheduled kernel uses (a static check of its IR).

`limits_of(target)` takes "cpu", "cuda", "cuda:sm_80", "cuda:sm_90a" (or anything with `.kind`
and `.arch`, such as tessel.compiler.target.Target, which this floor may not import). Figures are
per block, from NVIDIA's tables: shared memory is the opt-in maximum of dynamic shared memory
(the CUDA printer switches to dynamic shared memory above 48 KiB and the runtime raises the
kernel's limit). "cuda" without an architecture means sm_90a, as in tessel.compiler.target.

Example:
    >>> lim = limits_of("cuda:sm_80")
    >>> lim.shared_bytes // 1024, lim.threads_per_block, lim.sm_count
    (163, 1024, 108)
    >>> limits_of("cpu").vector_bytes
    32
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from tessel.errors import ScheduleError
from tessel.ir.dtypes import bits
from tessel.ir.nodes import Allocate, Kernel, walk

DEFAULT_CUDA_ARCH = "sm_90a"  # what "cuda" means when no GPU says otherwise (as compiler/target.py)
STATIC_SHARED_BYTES = 48 * 1024


@dataclass(frozen=True)
class TargetLimits:
    """Per-block (GPU) or per-core (CPU) limits of a target."""

    target: str  # canonical spelling: "cpu", "cuda:sm_90a"
    kind: str
    arch: str | None = None
    shared_bytes: int = 0  # shared memory one block may use (opt-in maximum)
    static_shared_bytes: int = 0  # without the opt-in
    shared_bytes_per_sm: int = 0
    registers_per_thread: int = 0
    registers_per_block: int = 0
    threads_per_block: int = 0
    threads_per_sm: int = 0
    sm_count: int = 0  # streaming multiprocessors (GPU) or cores (CPU)
    warp_size: int = 32
    vector_bytes: int = 16  # widest vector access: 16-byte loads on the GPU, SIMD width on the CPU
    vector_registers: int = 0  # CPU SIMD registers
    features: frozenset = field(default_factory=frozenset)

    def to_json(self) -> dict:
        return {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in self.__dict__.items()}


# arch -> (shared opt-in bytes, shared per SM, SM count, threads per SM, features); the SM count is
# the usual part of that architecture (A100, A10/RTX 30, L4/RTX 40, H100/H200 SXM).
_CUDA = {
    "sm_70": (96 * 1024, 96 * 1024, 80, 2048, ()),
    "sm_75": (64 * 1024, 64 * 1024, 40, 1024, ()),
    "sm_80": (163 * 1024, 164 * 1024, 108, 2048, ("cp.async", "ldmatrix", "mma.sync")),
    "sm_86": (99 * 1024, 100 * 1024, 84, 1536, ("cp.async", "ldmatrix", "mma.sync")),
    "sm_89": (99 * 1024, 100 * 1024, 58, 1536, ("cp.async", "ldmatrix", "mma.sync")),
    "sm_90": (227 * 1024, 228 * 1024, 132, 2048, ("cp.async", "ldmatrix", "mma.sync", "mbarrier", "tma",
                                                  "cluster", "stmatrix")),
}
_HOPPER_A = ("wgmma", "setmaxnreg", "tma.multicast")
_ARCH = re.compile(r"sm_(\d{2,3})(a?)$")


def limits_of(target) -> TargetLimits:
    """The limits of `target` (a string or an object with `.kind` and `.arch`); ScheduleError for
    an unknown one."""
    if isinstance(target, TargetLimits):
        return target
    kind, arch = _parse(target)
    if kind == "cpu":
        return TargetLimits("cpu", "cpu", None, sm_count=os.cpu_count() or 1, vector_bytes=32, vector_registers=16,
                            threads_per_block=1, warp_size=1)
    m = _ARCH.match(arch)
    base = f"sm_{m.group(1)}"
    known = [a for a in _CUDA if int(a[3:]) <= int(m.group(1))]
    row = _CUDA[base] if base in _CUDA else _CUDA[known[-1]] if known else _CUDA["sm_70"]
    shared, per_sm, sms, per_sm_threads, feats = row
    feats = set(feats) | (set(_HOPPER_A) if m.group(2) and int(m.group(1)) >= 90 else set())
    return TargetLimits(f"cuda:{arch}", "cuda", arch, shared_bytes=shared, static_shared_bytes=STATIC_SHARED_BYTES,
                        shared_bytes_per_sm=per_sm, registers_per_thread=255, registers_per_block=65536,
                        threads_per_block=1024, threads_per_sm=per_sm_threads, sm_count=sms, warp_size=32,
                        vector_bytes=16, features=frozenset(feats))


def _parse(target) -> tuple[str, str | None]:
    if target is None:
        return "cpu", None
    if hasattr(target, "kind"):
        kind, arch = target.kind, getattr(target, "arch", None)
        if kind == "cuda":
            arch = arch or DEFAULT_CUDA_ARCH
        if kind == "cpu" or (kind == "cuda" and _ARCH.match(arch)):
            return kind, arch
    elif isinstance(target, str):
        text = target.strip().lower()
        if text == "cpu":
            return "cpu", None
        if text == "cuda":
            return "cuda", DEFAULT_CUDA_ARCH
        if text.startswith("cuda:") and _ARCH.match(text[5:]):
            return "cuda", text[5:]
    raise ScheduleError(f"unknown target {target!r} for schedule limits; expected 'cpu', 'cuda' or 'cuda:sm_XY[a]'")


@dataclass(frozen=True)
class Resources:
    """What one block of a scheduled kernel uses (static estimates from its IR)."""

    shared_bytes: int
    threads_per_block: int
    local_bytes_per_thread: int

    @property
    def registers_per_thread(self) -> int:
        """A floor: 32-bit registers for the thread's local buffers plus 16 for addressing."""
        return self.local_bytes_per_thread // 4 + 16


def resources(kernel: Kernel) -> Resources:
    """Shared memory, threads per block and per-thread local memory of a scheduled kernel.

    >>> import tessel as ts
    >>> A = ts.placeholder((8,), name="A")
    >>> resources(ts.lower([A, ts.compute((8,), lambda i: A[i] + 1.0, name="B")])).threads_per_block
    1
    """
    shared = local = 0
    for n in walk(kernel.body):
        if isinstance(n, Allocate):
            size = math.prod(int(getattr(s, "value", s)) for s in n.buffer.shape) * bits(n.buffer.dtype) // 8
            if n.buffer.scope == "shared":
                shared += size
            elif n.buffer.scope == "local":
                local += size
    block = kernel.launch.block if kernel.launch is not None else (1, 1, 1)
    return Resources(shared, math.prod(block), local)


def resource_violations(kernel: Kernel, target) -> list[str]:
    """Messages for each limit of `target` that the scheduled `kernel` exceeds (empty when none)."""
    lim = limits_of(target)
    if lim.kind != "cuda":
        return []
    r = resources(kernel)
    out = []
    if r.shared_bytes > lim.shared_bytes:
        out.append(f"shared memory {kib(r.shared_bytes)} exceeds the target's {kib(lim.shared_bytes)}")
    if r.threads_per_block > lim.threads_per_block:
        out.append(f"{r.threads_per_block} threads per block exceed the target's {lim.threads_per_block}")
    if r.registers_per_thread > lim.registers_per_thread:
        out.append(f"about {r.registers_per_thread} registers per thread exceed the target's "
                   f"{lim.registers_per_thread}")
    return out


def kib(n: int) -> str:
    """Bytes as the short text errors use: '96 KiB', '1.5 KiB', '200 B'.

    >>> kib(98304), kib(1536), kib(200)
    ('96 KiB', '1.5 KiB', '200 B')
    """
    if n < 1024:
        return f"{n} B"
    v = n / 1024
    return f"{v:.0f} KiB" if v == int(v) else f"{v:.1f} KiB"


__all__ = ["Resources", "TargetLimits", "kib", "limits_of", "resource_violations", "resources"]
