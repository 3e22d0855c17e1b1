"""cache_accumulate: sum a loop's updates of a buffer in a zero-started local copy, then add it once.

`cache_accumulate(B, at=L)` is legal when every store to B under L is an update
`B[i] = B[i] + e` with `e` not reading B (and B is read nowhere else under L). Each iteration of
L then starts a new buffer at 0, the updates go to it, and at the end of the iteration it is added
to B: `B[g] = B[g] + local[l]` over the region L touches (region.py's bounds inference).

This changes the summation order only: a long dot product becomes a sum of partial sums of one
block each. A convolution that adds 864 float32 products in one chain drifts about 1e-6 relative
from the exact value (onnxruntime: 2-3e-7, it sums in blocks); partial sums of at most ~64
products keep every chain short (issue 12). cpu.conv uses it for its reduction blocks.

Example:
    >>> from tessel.ir.dsl import placeholder, compute, lower, reduce_axis, sum
    >>> from tessel.schedules.loops import split
    >>> from tessel.schedules.reduction import decompose_reduction
    >>> A = placeholder((4, 64), name="A")
    >>> k = reduce_axis(64, name="k")
    >>> kern = lower([A, compute((4,), lambda i: sum(A[i, k], axis=k), name="S")])
    >>> kern, (ko, ki) = split(kern, "k", [None, 16])
    >>> kern, _ = decompose_reduction(kern, "S", "k_0")
    >>> kern, (name,) = cache_accumulate(kern, "S", ko)
    >>> name
    'S_acc'
"""

from __future__ import annotations

from tessel.errors import ScheduleError
from tessel.ir.dtypes import is_float
from tessel.ir.nodes import Allocate, Binary, Buffer, Const, For, Kernel, Load, Store, rewrite, seq
from tessel.schedules.caching import _check_not_allocated_inside, _check_scope, copy_nest, inner_extents, outer_ranges
from tessel.schedules.nest import find_buffer, find_loop, fresh_name, loads_of, replace_loop, stores_to, used_names
from tessel.passes.simplify import simplify
from tessel.schedules.region import Box, accesses, touched_box


def cache_accumulate(kernel: Kernel, buffer: str, at: str, scope: str = "local") -> tuple[Kernel, list[str]]:
    """Let each iteration of loop `at` sum its updates of `buffer` in a new zero-started `scope`
    buffer, added to `buffer` at the end of the iteration (see the module docstring)."""
    _check_scope(scope, kernel, buffer, "cache_accumulate")
    buf = find_buffer(kernel, buffer)
    loop = find_loop(kernel.body, at)
    _check_not_allocated_inside(loop, buffer, "cache_accumulate")
    stores = stores_to(loop.body, buffer)
    if not stores:
        raise ScheduleError(f"cache_accumulate: loop '{at}' does not write '{buffer}'")
    for st in stores:
        v = st.value
        if not (isinstance(v, Binary) and v.op == "add" and isinstance(v.a, Load) and v.a.buffer.name == buffer
                and tuple(v.a.indices) == tuple(st.indices) and not loads_of(v.b, buffer)):
            raise ScheduleError(f"cache_accumulate: a store to '{buffer}' under loop '{at}' is not an update "
                                f"'{buffer}[i] = {buffer}[i] + e' with e not reading '{buffer}'")
    if len(loads_of(loop.body, buffer)) != len(stores):
        raise ScheduleError(f"cache_accumulate: loop '{at}' reads '{buffer}' outside its updates")
    box = touched_box(accesses(loop.body, buffer), buf.shape, inner_extents(loop))
    # `(x // 4) - (x // 4)`-style bases (a cached tile's own shifts) fold to 0, so the copies need no guard
    box = Box(tuple(simplify(b) for b in box.bases), box.extents)
    taken = used_names(kernel)
    new = Buffer(fresh_name(taken, f"{buffer}_acc"), box.extents, buf.dtype, scope)
    taken.add(new.name)
    ranges = outer_ranges(kernel, at)
    zero = Const(0.0 if is_float(buf.dtype) else 0, buf.dtype)
    init = copy_nest(taken, new.name + "_init", box, buf.shape, ranges, lambda g, loc: Store(new, loc, zero))
    add = copy_nest(taken, new.name + "_out", box, buf.shape, ranges,
                    lambda g, loc: Store(buf, g, Binary("add", Load(buf, g), Load(new, loc))))

    def shift(idx):
        return tuple(i if isinstance(b, Const) and b.value == 0 else Binary("sub", i, b)
                     for i, b in zip(idx, box.bases))

    def redirect(n):
        if isinstance(n, Store) and n.buffer.name == buffer:
            local = shift(n.indices)
            return Store(new, local, Binary("add", Load(new, local), n.value.b))
        return None

    def rebuild(old: For):
        body = rewrite(old.body, redirect, fixpoint=False)
        return For(old.var, old.extent, Allocate(new, seq(init, body, add)), old.kind)

    return replace_loop(kernel, at, rebuild), [new.name]


__all__ = ["cache_accumulate"]
