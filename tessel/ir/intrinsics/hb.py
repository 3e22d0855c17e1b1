"""What the Hopper intrinsics need from the interpreter, in one place: happens-before reporting,
blocking, cluster peers and virtual shared-memory addresses.

The race-checking interpreter (RACE_API.md, owner interp) passes a Context with `read`, `write`,
`read_at`, `write_at`, `release`, `acquire`, `sync`, `actor`, `async_actor`, `peer_ref` and
`cluster_state`. `track(ctx)` returns the context itself when it has them, else a stand-in whose
reporting calls do nothing (an interpreter without race checking), so the intrinsics' meaning
(data movement, poison, phases) is the same in both and only the race reports differ.

`impl(fn, scope, ready)` builds an IntrinsicImpl with a `ready` predicate when the interpreter's
IntrinsicImpl has that field; without it, `fn` checks `ready` itself and raises an
ExecutionError saying the thread would block (a scheduler that cannot block cannot run it).

Virtual shared addresses: PTX descriptors (wgmma) and swizzles work on shared-memory byte
addresses. The interpreter gives every shared buffer of a block a base address, 1024-byte aligned
(the CUDA printer aligns such buffers to 1024 bytes too, so swizzle patterns agree), assigned in
order of first use; `address(ctx, ref)` is the byte address of a Ref's start element and
`resolve(ctx, addr)` maps an address back to (Ref of element 0, byte offset).

Example:
    >>> track(object()).release(0, "k") is None
    True
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tessel.ir.interp.intrinsics import IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError, Ref

SMEM_ALIGN = 1024  # bytes: a 128B-swizzle atom (8 rows of 128 bytes)


class _NoTrack:
    """Reporting calls that do nothing (an interpreter without race checking)."""

    def __init__(self, ctx):
        self._ctx = ctx

    def actor(self, lane):
        return ("thread", lane)

    def async_actor(self, lane):
        return ("async", lane)

    def read(self, *a, **k):
        return None

    write = read_at = write_at = read_lanes = write_lanes = release = acquire = sync = read

    @property
    def site(self):
        return getattr(self._ctx, "site", "?")


def track(ctx):
    """`ctx` when it reports races (has `release`), else a stand-in whose reports do nothing."""
    return ctx if hasattr(ctx, "release") and hasattr(ctx, "write_at") else _NoTrack(ctx)


def cluster_state(ctx) -> dict:
    """State shared by the blocks of a cluster (the block's own state without clusters)."""
    st = getattr(ctx, "cluster_state", None)
    return ctx.state if st is None else st


def cluster_rank(ctx) -> int:
    return int(getattr(ctx, "cluster_rank", 0))


def cluster_size(ctx) -> int:
    return int(getattr(ctx, "cluster_size", 1))


def peer_ref(ctx, ref, rank: int):
    """`ref`'s buffer in CTA `rank` of the cluster (the same Ref for one's own rank)."""
    if rank == cluster_rank(ctx):
        return ref
    if not hasattr(ctx, "peer_ref"):
        raise ExecutionError(f"CTA {rank} of the cluster is addressed, but this interpreter runs no clusters "
                             f"(cluster size {cluster_size(ctx)})")
    return ctx.peer_ref(ref, rank)


_HAS_READY = "ready" in {f.name for f in dataclasses.fields(IntrinsicImpl)}


_HAS_WRITES = "writes" in {f.name for f in dataclasses.fields(IntrinsicImpl)}


def impl(fn, scope: str = "thread", ready=None, writes=None) -> IntrinsicImpl:
    """An IntrinsicImpl taking a Context; `ready(ctx, *args)` makes it a blocking intrinsic;
    `writes`: positions of the buffer operands it may write (for the race checker)."""
    extra = {"writes": tuple(writes)} if writes is not None and _HAS_WRITES else {}
    if ready is None:
        return IntrinsicImpl(fn, scope, with_context=True, **extra)
    if _HAS_READY:
        return IntrinsicImpl(fn, scope, with_context=True, ready=ready, **extra)

    def checked(ctx, *args):
        if not ready(ctx, *args):
            raise ExecutionError(f"{getattr(ctx, 'site', 'a blocking intrinsic')}: the thread would block here, "
                                 f"and this interpreter's scheduler cannot block (deadlock without other threads)")
        return fn(ctx, *args)

    return IntrinsicImpl(checked, scope, with_context=True, **extra)


def flat_start(ref) -> int:
    """Flat element index of a Ref's start in its buffer."""
    flat = 0
    for s, d in zip(ref.start, ref.buffer.shape):
        flat = flat * d + int(s)
    return flat


def itemsize(ref) -> int:
    return ref.array.dtype.itemsize


def _table(ctx) -> dict:
    return ctx.state.setdefault(("smem.addresses",), {"next": 0, "base": {}, "ranges": []})


def base_address(ctx, ref) -> int:
    """The virtual byte address of element 0 of `ref`'s (shared) buffer in this block."""
    if ref.buffer.scope != "shared":
        raise ExecutionError(f"buffer '{ref.buffer.name}' is in {ref.buffer.scope} memory; a shared-memory "
                             f"address needs a shared buffer")
    tab = _table(ctx)
    key = id(ref.array)
    base = tab["base"].get(key)
    if base is None:
        base = tab["next"]
        nbytes = ref.array.size * ref.array.dtype.itemsize
        tab["next"] = base + -(-nbytes // SMEM_ALIGN) * SMEM_ALIGN
        tab["base"][key] = base
        tab["ranges"].append((base, nbytes, Ref(ref.buffer, ref.array, (0,) * ref.buffer.ndim, ref.kernel)))
    return base


def address(ctx, ref) -> int:
    """Virtual byte address of `ref`'s start element."""
    return base_address(ctx, ref) + flat_start(ref) * itemsize(ref)


def resolve(ctx, addr: int, what: str):
    """(Ref of element 0, byte offset) of the shared buffer holding virtual address `addr`."""
    for base, nbytes, ref in _table(ctx)["ranges"]:
        if base <= addr < base + nbytes:
            return ref, addr - base
    raise ExecutionError(f"{what}: shared address {addr:#x} lies in no shared buffer this block has addressed "
                         f"(build descriptors with tessel.smem_desc)")


def flat_view(ref) -> np.ndarray:
    """The whole buffer of `ref` as a flat, writable array."""
    return ref.array.reshape(-1)


__all__ = ["SMEM_ALIGN", "address", "base_address", "cluster_rank", "cluster_size", "cluster_state", "flat_start",
           "flat_view", "impl", "itemsize", "peer_ref", "resolve", "track"]
