"""The GPU rows of the schedule-primitive table (`tessel.schedules.schedule.PRIMITIVES`).

Kept apart so that the GPU primitives, spread over a few modules (gpu.py: bind, cooperative
shared-memory caching, padding and swizzling; gpu_reduce.py: cross-thread reductions;
tensorize.py: fragments and tensorize; pipeline.py: software pipelining), join the one table
with a one-line change in schedule.py.

Example:
    >>> sorted(gpu_primitives())[:3]
    ['bind', 'cache_shared', 'cross_thread_reduce']
"""

from __future__ import annotations


def gpu_primitives() -> dict:
    """name -> (function, names of its arguments after the kernel)."""
    from tessel.schedules import gpu, gpu_reduce, pipeline, tensorize

    return {
        "bind": (gpu.bind, ("loop", "axis")),
        "cache_shared": (gpu.cache_shared, ("buffer", "at", "vector")),
        "pad": (gpu.pad, ("buffer", "elements")),
        "swizzle": (gpu.swizzle, ("buffer",)),
        "remove_dead_code": (gpu.remove_dead_code, ()),
        "cross_thread_reduce": (gpu_reduce.cross_thread_reduce, ("buffer", "loop", "axis")),
        "fragment": (tensorize.fragment, ("buffer", "layout")),
        "tensorize": (tensorize.tensorize, ("loop", "intrinsic")),
        "pipeline": (pipeline.pipeline, ("loop", "stages")),
    }
