"""cp.async: asynchronous copies from global to shared memory, and the groups that wait for them.

- `cp.async.ca.shared.global.{4,8,16}` and `cp.async.cg.shared.global.16` (cg bypasses L1 and
  exists only for 16 bytes): one thread starts a copy of 4/8/16 bytes from global memory
  (`src`) to shared memory (`dst`), both aligned to the copy size. IR form:
  `Intrinsic(name, (BufferRef(dst_shared, ...), BufferRef(src_global, ...)))`, each covering
  `bytes / itemsize` elements along the last dimension; both buffers have one dtype.
- `cp.async.commit_group`: the thread's copies started since its last commit form a group.
- `cp.async.wait_group N`: the thread waits until at most N of its most recent groups are still
  in flight (copies not yet committed are not waited for). N is an integer constant.
- `cp.async.wait_all`: commit, then wait for everything.

In the interpreter a copy reads its source when it starts and writes its destination only when
a wait completes its group: until then the destination keeps what it held (poison in a fresh
shared buffer). For the race checker the copy is done by the thread's async proxy: at issue the
source region is read and the destination region written by it (so a conflicting access not
ordered before the issue races); commit_group publishes the proxy's clock as the group, and a
wait that completes a group makes the thread happen-after it. So reading the destination before
the wait (or a wait for too little) is a RaceError "read before its cp.async wait", and the
other threads of the block see the data only through a barrier after the wait, as on the GPU
(where the wait only covers the thread's own copies).

Example:
    >>> [e.name for e in entries()][-3:]
    ['cp.async.commit_group', 'cp.async.wait_group', 'cp.async.wait_all']
"""

from __future__ import annotations

from tessel.ir.dtypes import bits
from tessel.ir.interp.intrinsics import IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values

COMMIT = "cp.async.commit_group"
WAIT_GROUP = "cp.async.wait_group"
WAIT_ALL = "cp.async.wait_all"
MAX_WAIT = 7  # the largest N the device header spells as an immediate (larger N waits for all)


def copy_name(cache: str, nbytes: int) -> str:
    """The registry name of a cp.async of `nbytes` bytes; cache is "ca" or "cg"."""
    return f"cp.async.{cache}.shared.global.{nbytes}"


def _operands(nbytes: int) -> tuple:
    return (Operand("dst", "write", bytes=nbytes, scopes=("shared",)),
            Operand("src", "read", bytes=nbytes, scopes=("global",)))


def _flat_start(ref) -> int:
    flat = 0
    for s, d in zip(ref.start, ref.buffer.shape):
        flat = flat * d + int(s)
    return flat


def _state(ctx) -> dict:
    """This thread's copies: started but not committed, and committed groups (copies, sync key)
    oldest first, and how many groups it has committed."""
    return ctx.state.setdefault(("cp.async", ctx.threads[0]), {"open": [], "groups": [], "count": 0})


def _land(ctx, group: tuple) -> None:
    copies, key = group
    for dst, data in copies:
        dst[:] = data
    ctx.acquire(ctx.actor(0), key)


def _copy_semantics(name: str, nbytes: int):
    dst_op, src_op = _operands(nbytes)

    def cp_async(ctx, dst, src):
        if dst.buffer.dtype != src.buffer.dtype:
            raise ExecutionError(f"{name}: source '{src.buffer.name}' ({src.buffer.dtype}) and destination "
                                 f"'{dst.buffer.name}' ({dst.buffer.dtype}) differ in dtype")
        size = bits(dst.buffer.dtype) // 8
        for ref in (dst, src):
            if (_flat_start(ref) * size) % nbytes:
                raise ExecutionError(f"{name}: address of '{ref.buffer.name}' at {ref.start} is not "
                                     f"{nbytes}-byte aligned")
        proxy = ctx.async_actor(0)
        ctx.read(proxy, src, src_op.region(src.buffer))
        ctx.write(proxy, dst, dst_op.region(dst.buffer))
        data = ref_values(src, src_op).copy()
        _state(ctx)["open"].append((ref_values(dst, dst_op), data))

    return IntrinsicImpl(cp_async, "thread", with_context=True)


def _commit(ctx):
    st = _state(ctx)
    key = ("cp.async group", ctx.threads[0], ctx.block, st["count"])
    st["count"] += 1
    ctx.release(ctx.async_actor(0), key)
    st["groups"].append((st["open"], key))
    st["open"] = []


def _wait_group(ctx, n):
    n = int(n)
    if n < 0:
        raise ExecutionError(f"{WAIT_GROUP} {n}: N must not be negative")
    st = _state(ctx)
    if n > MAX_WAIT:
        n = 0  # as the device header: an N it cannot spell waits for everything committed
    while len(st["groups"]) > n:
        _land(ctx, st["groups"].pop(0))


def _wait_all(ctx):
    _commit(ctx)
    _wait_group(ctx, 0)


def _copy_header(cache: str, nbytes: int) -> str:
    fn = f"cp_async_{cache}_{nbytes}"
    return f"""namespace tessel {{
// {copy_name(cache, nbytes)}: start copying {nbytes} bytes from global src to shared dst.
template <typename T> __device__ __forceinline__ void {fn}(T* dst, const T* src) {{
  asm volatile("cp.async.{cache}.shared.global [%0], [%1], {nbytes};\\n"
               :: "r"(smem_addr(dst)), "l"(__cvta_generic_to_global(src)) : "memory");
}}
}}  // namespace tessel
"""


_WAIT_CASES = "\n".join(f'    case {n}: asm volatile("cp.async.wait_group {n};\\n" ::: "memory"); break;'
                        for n in range(1, MAX_WAIT + 1))

_GROUP_HEADER = f"""namespace tessel {{
__device__ __forceinline__ void cp_async_commit_group() {{ asm volatile("cp.async.commit_group;\\n" ::: "memory"); }}
// cp.async.wait_group takes an immediate: a constant n folds the switch away.
__device__ __forceinline__ void cp_async_wait_group(int n) {{
  switch (n) {{
{_WAIT_CASES}
    default: asm volatile("cp.async.wait_group 0;\\n" ::: "memory"); break;
  }}
}}
__device__ __forceinline__ void cp_async_wait_all() {{ asm volatile("cp.async.wait_all;\\n" ::: "memory"); }}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    out = []
    for cache, nbytes in (("ca", 4), ("ca", 8), ("ca", 16), ("cg", 16)):
        fn = f"tessel::cp_async_{cache}_{nbytes}"
        out.append(IntrinsicDef(
            name=copy_name(cache, nbytes), scope="thread", operands=_operands(nbytes),
            semantics=_copy_semantics(copy_name(cache, nbytes), nbytes),
            cuda=lambda d, s, fn=fn: f"{fn}({d}, {s});", header=_copy_header(cache, nbytes),
            cost=Cost(bytes=nbytes, cycles=1.0), doc=__doc__.split("\n\n")[1]))
    doc = __doc__.split("\n\n")[1]
    out.append(IntrinsicDef(COMMIT, "thread", (), IntrinsicImpl(_commit, "thread", with_context=True),
                            lambda: "tessel::cp_async_commit_group();", _GROUP_HEADER, Cost(cycles=1.0), doc))
    out.append(IntrinsicDef(WAIT_GROUP, "thread", (Operand("n", "value", dtypes=("int32",), const=True),),
                            IntrinsicImpl(_wait_group, "thread", with_context=True),
                            lambda n: f"tessel::cp_async_wait_group({n});", _GROUP_HEADER, Cost(cycles=1.0), doc))
    out.append(IntrinsicDef(WAIT_ALL, "thread", (), IntrinsicImpl(_wait_all, "thread", with_context=True),
                            lambda: "tessel::cp_async_wait_all();", _GROUP_HEADER, Cost(cycles=1.0), doc))
    return out


__all__ = ["COMMIT", "MAX_WAIT", "WAIT_ALL", "WAIT_GROUP", "copy_name", "entries"]
