"""Targets: where a kernel runs. The definitions live on the ground floor, `tessel.ir.target`,
so that schedules and codegen can read a target without importing the driver; this module
re-exports them under their old names.

Example:
    >>> parse_target("cuda:sm_80")
    Target(kind='cuda', arch='sm_80')
"""

from tessel.ir.target import (DEFAULT_CUDA_ARCH, VALID_TARGETS, Target, arch_of_capability, detect_cuda_arch,
                              parse_target)

__all__ = ["DEFAULT_CUDA_ARCH", "VALID_TARGETS", "Target", "arch_of_capability", "detect_cuda_arch", "parse_target"]
