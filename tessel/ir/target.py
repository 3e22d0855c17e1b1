"""Targets: where a kernel runs. Parsed from the strings users write.

    "cpu"             the host CPU, through TVM -> LLVM (the CPU name is detected at compile time)
    "cuda"            an NVIDIA GPU: the architecture of the visible GPU (device 0), detected through
                      cuda.bindings when it is first asked for; sm_90a (H100/H200) when there is
                      no GPU, no driver or no bindings
    "cuda:sm_90a"     an NVIDIA GPU of the named architecture (sm_XY or sm_XYa)

A `Target` is a small frozen value: its `kind` is what the IR records (`Kernel.target`), its
`arch` picks instructions. `str(target)` is its canonical spelling, used in cache keys and logs.

It lives on the ground floor (it needs nothing but `tessel.errors`) so that every stage above,
schedules and codegen included, can read a target; `tessel.compiler.target` re-exports it.

Example:
    >>> parse_target("cuda:sm_80")
    Target(kind='cuda', arch='sm_80')
    >>> str(parse_target("cpu"))
    'cpu'
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from tessel.errors import TesselError

DEFAULT_CUDA_ARCH = "sm_90a"
VALID_TARGETS = ("cpu", "cuda", "cuda:sm_<XY>[a] (e.g. cuda:sm_80, cuda:sm_90a)")
_CUDA_ARCH = re.compile(r"sm_\d{2,3}a?$")


@dataclass(frozen=True)
class Target:
    """A compilation target: `kind` is "cpu" or "cuda"; `arch` is the GPU architecture (None on CPU)."""

    kind: str
    arch: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arch is None else f"{self.kind}:{self.arch}"

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"


def parse_target(spec) -> Target:
    """A Target from a string ("cpu", "cuda", "cuda:sm_90a") or a Target (returned as is).

    Raises TesselError naming the valid targets for anything else.

    >>> parse_target(" CUDA ").arch
    'sm_90a'
    """
    if isinstance(spec, Target):
        return spec
    if not isinstance(spec, str):
        raise TesselError(f"target must be a string such as 'cpu' or 'cuda', got {type(spec).__name__} "
                          f"{spec!r}; valid targets: {', '.join(VALID_TARGETS)}")
    text = spec.strip().lower()
    if text == "cpu":
        return Target("cpu")
    if text == "cuda":
        return Target("cuda", detect_cuda_arch() or DEFAULT_CUDA_ARCH)
    if text.startswith("cuda:"):
        arch = text[len("cuda:"):]
        if _CUDA_ARCH.match(arch):
            return Target("cuda", arch)
        raise TesselError(f"unknown CUDA architecture {arch!r} in target {spec!r}; expected sm_<XY> or "
                          f"sm_<XY>a, e.g. cuda:sm_90a")
    raise TesselError(f"unknown target {spec!r}; valid targets: {', '.join(VALID_TARGETS)}")


def arch_of_capability(major: int, minor: int) -> str:
    """The architecture name tessel compiles for on a GPU of compute capability major.minor: the
    architecture-specific variant ("a", which has wgmma, TMA multicast ...) from Hopper on.

    >>> arch_of_capability(9, 0), arch_of_capability(8, 6)
    ('sm_90a', 'sm_86')
    """
    return f"sm_{major}{minor}{'a' if major >= 9 else ''}"


@functools.cache  # one probe per process: the visible GPUs do not change while it runs
def detect_cuda_arch() -> str | None:
    """The architecture of the first visible GPU (cuda.bindings' driver API), or None when there
    is no GPU, no driver or no bindings. Never raises; imports the bindings only when called."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return None
    try:
        (err,) = driver.cuInit(0)
        if int(err) != 0:
            return None
        err, count = driver.cuDeviceGetCount()
        if int(err) != 0 or count < 1:
            return None
        err, dev = driver.cuDeviceGet(0)
        if int(err) != 0:
            return None
        attr = driver.CUdevice_attribute
        err1, major = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        err2, minor = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        if int(err1) != 0 or int(err2) != 0:
            return None
        return arch_of_capability(int(major), int(minor))
    except Exception:  # noqa: BLE001 - a missing libcuda raises from inside the bindings: no GPU
        return None
