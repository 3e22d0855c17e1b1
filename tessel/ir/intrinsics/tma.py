"""TMA: cp.async.bulk.tensor copies of a box of a global tensor to and from shared memory.

IR forms, for d = 1..5 dimensions (`tma_load_name(d)`, `tma_store_name(d)`, ...):

- load `(dst, bar, src, box_0 .. box_{d-1}, swizzle)`: `src` is `BufferRef(global tensor,
  (c_0 .. c_{d-1}))`, the box's first element in the tensor's index order (coordinates may be
  negative or run past the end: those elements are filled with zero); `dst` a shared buffer
  region of the box's size, `bar` the mbarrier (mbarrier.py) the copy completes on (complete_tx
  of the whole box's bytes); `box_i` and `swizzle` (0, 32, 64 or 128 bytes) are constants.
- load.multicast `(dst, bar, src, box..., swizzle, cta_mask)`: the same box lands in `dst` and
  completes on `bar` of every CTA of the cluster whose bit is set in `cta_mask`.
- store `(dst, src, box..., swizzle)`: `dst` is the global tensor's box start, `src` the shared
  box; out-of-range elements are not written. Completion: `cp.async.bulk.commit_group`, then
  `cp.async.bulk.wait_group N` (the writes are done) or `.read N` (shared memory may be reused).
- `fence.proxy.async.shared::cta`: orders the thread's ordinary shared-memory writes before
  later copy-engine / tensor-core reads (required on the GPU; the interpreter does not model
  proxies, so a missing fence goes unnoticed there).

The tensor map is not an IR node: the CUDA printer derives one `__grid_constant__` tensor-map
parameter per distinct (tensor, box, swizzle) from the calls (`tensor_map_spec`), and the runtime
encodes it at launch from the argument's pointer (cuTensorMapEncodeTiled).

Shared layout of a box: row-major (last dimension fastest), dense, then swizzled: the byte
offset `o` from the (1024-byte aligned) buffer start goes to `swizzle_offset(o, swizzle)`, the
pattern Swizzle<B,4,3> of CUTLASS with B = 1, 2, 3 for 32, 64, 128 bytes (16-byte chunk bits
4.. XOR bits 7..). With a swizzle the box's last dimension must span exactly `swizzle` bytes.

Example:
    >>> swizzle_offset(128 + 16, 128)  # row 1, chunk 1 -> chunk 0
    128
    >>> tma_load_name(2)
    'cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tessel.errors import TesselError
from tessel.ir.interp.runtime import ExecutionError, Ref
from tessel.ir.intrinsics import hb, mbarrier
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand
from tessel.ir.nodes import Const

SWIZZLES = (0, 32, 64, 128)
_B = {0: 0, 32: 1, 64: 2, 128: 3}
COMMIT = "cp.async.bulk.commit_group"
WAIT = "cp.async.bulk.wait_group"
WAIT_READ = "cp.async.bulk.wait_group.read"
FENCE = "fence.proxy.async.shared::cta"
MAX_WAIT = 7


def tma_load_name(d: int, multicast: bool = False) -> str:
    mc = ".multicast::cluster" if multicast else ""
    return f"cp.async.bulk.tensor.{d}d.shared::cluster.global.mbarrier::complete_tx::bytes{mc}"


def tma_store_name(d: int) -> str:
    return f"cp.async.bulk.tensor.{d}d.global.shared::cta.bulk_group"


def swizzle_offset(offset, swizzle: int):
    """Byte offset `offset` (int or numpy array) after the `swizzle`-byte TMA / wgmma swizzle."""
    b = _B[swizzle]
    return offset ^ ((offset >> 3) & (((1 << b) - 1) << 4))


@dataclass(frozen=True)
class TensorMapSpec:
    """What the host encodes into one CUtensorMap: the parameter `buffer` (its dtype and shape,
    outermost dimension first), the box (same order), the swizzle in bytes; OOB reads fill 0."""

    buffer: str
    dtype: str
    shape: tuple
    box: tuple
    swizzle: int

    def bind(self, scalars: dict) -> "TensorMapSpec":
        """The spec with symbolic extents (expressions of scalar parameters) evaluated, given
        `scalars`: parameter name -> int.

        >>> from tessel.ir.nodes import Var
        >>> TensorMapSpec("A", "float16", (Var("n") * 2, 64), (8, 64), 128).bind({"n": 5}).shape
        (10, 64)
        """
        if all(isinstance(d, int) for d in self.shape):
            return self
        from tessel.ir.interp import interpret_expr

        shape = tuple(d if isinstance(d, int) else int(interpret_expr(d, scalars)) for d in self.shape)
        return TensorMapSpec(self.buffer, self.dtype, shape, self.box, self.swizzle)


def _check_box(what: str, box, swizzle: int, itemsize: int) -> None:
    if swizzle not in SWIZZLES:
        raise TesselError(f"{what}: swizzle {swizzle} is not one of {SWIZZLES}")
    if any(b < 1 or b > 256 for b in box):
        raise TesselError(f"{what}: box {tuple(box)}: every box dimension must be in 1..256")
    inner = box[-1] * itemsize
    if inner % 16:
        raise TesselError(f"{what}: box {tuple(box)}: its last dimension spans {inner} bytes, not a multiple of 16")
    if swizzle and inner != swizzle:
        raise TesselError(f"{what}: box {tuple(box)} with a {swizzle}-byte swizzle: its last dimension must span "
                          f"exactly {swizzle} bytes (it spans {inner})")


def _check_strides(what: str, buf, itemsize: int) -> None:
    """The tensor map's rule: every row stride of the global tensor is a multiple of 16 bytes."""
    stride = itemsize
    for n in reversed(buf.shape[1:]):
        stride *= int(n)
        if stride % 16:
            raise ExecutionError(f"{what}: tensor '{buf.name}' of shape {tuple(buf.shape)}: a TMA tensor's row "
                                 f"strides must be multiples of 16 bytes (one is {stride})")


def box_offsets(box, itemsize: int, swizzle: int) -> np.ndarray:
    """Element offsets (from the 1024-aligned buffer start) where each box element lands, row-major."""
    n = int(np.prod(box))
    return swizzle_offset(np.arange(n, dtype=np.int64) * itemsize, swizzle) // itemsize


def _box_coords(start, box, shape):
    """Flat tensor indices of the box's in-range elements and the mask of those elements."""
    grids = np.meshgrid(*[np.arange(s, s + b, dtype=np.int64) for s, b in zip(start, box)], indexing="ij")
    coords = [g.reshape(-1) for g in grids]
    mask = np.ones(coords[0].shape, bool)
    for c, n in zip(coords, shape):
        mask &= (c >= 0) & (c < n)
    flat = np.zeros(coords[0].shape, np.int64)
    for c, n in zip(coords, shape):
        flat = flat * n + np.where(mask, c, 0)
    return flat, mask


def _dest_indices(what, ref, box, swizzle) -> np.ndarray:
    isz = hb.itemsize(ref)
    start = hb.flat_start(ref) * isz
    align = hb.SMEM_ALIGN if swizzle else 128
    if start % align:
        raise ExecutionError(f"{what}: shared box '{ref.buffer.name}'{list(ref.start)} starts {start} bytes into its "
                             f"buffer, not a multiple of {align}")
    idx = start // isz + box_offsets(box, isz, swizzle)
    if idx.max() >= ref.array.size:
        raise ExecutionError(f"{what}: box {tuple(box)} at '{ref.buffer.name}'{list(ref.start)} runs past the end of "
                             f"the shared buffer ({ref.array.size} elements)")
    return idx


def _whole(ref):
    """A Ref of element 0 of `ref`'s buffer (what read_at / write_at index from)."""
    return Ref(ref.buffer, ref.array, (0,) * ref.buffer.ndim, ref.kernel)


def _load_semantics(d: int, multicast: bool):
    name = tma_load_name(d, multicast)

    def load(ctx, dst, bar, src, *rest):
        box = [int(b) for b in rest[:d]]
        swizzle = int(rest[d])
        mask_bits = int(rest[d + 1]) if multicast else (1 << hb.cluster_rank(ctx))
        if src.buffer.ndim != d:
            raise ExecutionError(f"{name}: tensor '{src.buffer.name}' has {src.buffer.ndim} dimensions, the copy {d}")
        if dst.buffer.dtype != src.buffer.dtype:
            raise ExecutionError(f"{name}: '{src.buffer.name}' ({src.buffer.dtype}) and '{dst.buffer.name}' "
                                 f"({dst.buffer.dtype}) differ in dtype")
        isz = hb.itemsize(dst)
        try:
            _check_box(name, box, swizzle, isz)
        except TesselError as e:
            raise ExecutionError(str(e)) from None
        _check_strides(name, src.buffer, isz)
        t = hb.track(ctx)
        engine = t.async_actor(0)
        flat, mask = _box_coords(src.start, box, src.buffer.shape)
        t.read_at(engine, _whole(src), flat[mask])
        values = np.zeros(flat.shape, src.array.dtype)
        values[mask] = src.array.reshape(-1)[flat[mask]]
        idx = _dest_indices(name, dst, box, swizzle)
        nbytes = values.size * isz
        for rank in range(hb.cluster_size(ctx)):
            if not mask_bits >> rank & 1:
                continue
            d_ref, b_ref = hb.peer_ref(ctx, dst, rank), hb.peer_ref(ctx, bar, rank)

            def deliver(ctx2, d_ref=d_ref):
                hb.flat_view(d_ref)[idx] = values
                hb.track(ctx2).write_at(engine, _whole(d_ref), idx)
                return engine

            mbarrier.add_transfer(ctx, b_ref, nbytes, deliver, engine)

    return hb.impl(load, writes=(0,))


BULK_LOAD = "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"


def _bulk_load(ctx, dst, bar, src, nbytes):
    """A 1-D bulk copy (no tensor map): `nbytes` contiguous bytes from `src` to `dst`."""
    nbytes = int(nbytes)
    isz = hb.itemsize(dst)
    if nbytes <= 0 or nbytes % 16:
        raise ExecutionError(f"{BULK_LOAD}: size {nbytes} must be a positive multiple of 16 bytes")
    if dst.buffer.dtype != src.buffer.dtype:
        raise ExecutionError(f"{BULK_LOAD}: '{src.buffer.name}' and '{dst.buffer.name}' differ in dtype")
    for ref in (dst, src):
        if (hb.flat_start(ref) * isz) % 16:
            raise ExecutionError(f"{BULK_LOAD}: '{ref.buffer.name}' at {list(ref.start)} is not 16-byte aligned")
    n = nbytes // isz
    s0, d0 = hb.flat_start(src), hb.flat_start(dst)
    if s0 + n > src.array.size or d0 + n > dst.array.size:
        raise ExecutionError(f"{BULK_LOAD}: {nbytes} bytes run past '{src.buffer.name}' or '{dst.buffer.name}'")
    t = hb.track(ctx)
    engine = t.async_actor(0)
    t.read_at(engine, _whole(src), np.arange(s0, s0 + n))
    values = hb.flat_view(src)[s0:s0 + n].copy()

    def deliver(ctx2):
        hb.flat_view(dst)[d0:d0 + n] = values
        hb.track(ctx2).write_at(engine, _whole(dst), np.arange(d0, d0 + n))
        return engine

    mbarrier.add_transfer(ctx, bar, nbytes, deliver, engine)


def _groups(ctx) -> dict:
    return ctx.state.setdefault(("bulk", ctx.threads[0]), {"open": [], "groups": []})


def _store_semantics(d: int):
    name = tma_store_name(d)

    def store(ctx, dst, src, *rest):
        box = [int(b) for b in rest[:d]]
        swizzle = int(rest[d])
        if dst.buffer.ndim != d:
            raise ExecutionError(f"{name}: tensor '{dst.buffer.name}' has {dst.buffer.ndim} dimensions, the copy {d}")
        if dst.buffer.dtype != src.buffer.dtype:
            raise ExecutionError(f"{name}: '{src.buffer.name}' and '{dst.buffer.name}' differ in dtype")
        try:
            _check_box(name, box, swizzle, hb.itemsize(src))
        except TesselError as e:
            raise ExecutionError(str(e)) from None
        _check_strides(name, dst.buffer, hb.itemsize(src))
        t = hb.track(ctx)
        engine = t.async_actor(0)
        idx = _dest_indices(name, src, box, swizzle)
        t.read_at(engine, _whole(src), idx)
        values = hb.flat_view(src)[idx].copy()
        flat, mask = _box_coords(dst.start, box, dst.buffer.shape)

        def land(ctx2):
            hb.flat_view(dst)[flat[mask]] = values[mask]
            hb.track(ctx2).write_at(engine, _whole(dst), flat[mask])
            return engine

        _groups(ctx)["open"].append(land)

    return hb.impl(store, writes=(0,))


def _commit(ctx):
    st = _groups(ctx)
    st["groups"].append(st["open"])
    st["open"] = []


def _wait_semantics(read_only: bool):
    def wait(ctx, n):
        n = int(n)
        st = _groups(ctx)
        if n > MAX_WAIT:
            n = 0
        t = hb.track(ctx)
        me = t.actor(0)
        while len(st["groups"]) > n:
            for land in st["groups"].pop(0):
                engine = land(ctx)  # writes land at either wait (see the module docstring)
                key = ("bulk", id(land))
                t.release(engine, key)
                t.acquire(me, key)

    return hb.impl(wait)


def _fence(ctx):
    return None


def _ptx_load(d: int, multicast: bool) -> str:
    """The PTX spelling (with the .tile load mode the IR name leaves out)."""
    return tma_load_name(d, multicast).replace(".mbarrier", ".tile.mbarrier")


def _load_header(d: int, multicast: bool) -> str:
    cs = ", ".join(f"int c{i}" for i in range(d))
    coords = ", ".join(f"%{i + 3}" for i in range(d))  # innermost first, as PTX wants
    ins = ", ".join(f'"r"(c{i})' for i in reversed(range(d)))
    fn = f"tma_load_{d}d{'_mc' if multicast else ''}"
    mc_param = ", unsigned short mask" if multicast else ""
    mc_op = f", %{d + 3}" if multicast else ""
    mc_in = ', "h"(mask)' if multicast else ""
    return f"""namespace tessel {{
__device__ __forceinline__ void {fn}(const TensorMap* map, void* dst, long long* bar, {cs}{mc_param}) {{
  asm volatile("{_ptx_load(d, multicast)}"
               " [%0], [%1, {{{coords}}}], [%2]{mc_op};\\n"
               :: "r"(smem_addr(dst)), "l"(reinterpret_cast<unsigned long long>(map)), "r"(smem_addr(bar)), {ins}{mc_in}
               : "memory");
}}
}}  // namespace tessel
"""


def _store_header(d: int) -> str:
    cs = ", ".join(f"int c{i}" for i in range(d))
    coords = ", ".join(f"%{i + 2}" for i in range(d))
    ins = ", ".join(f'"r"(c{i})' for i in reversed(range(d)))
    return f"""namespace tessel {{
__device__ __forceinline__ void tma_store_{d}d(const TensorMap* map, const void* src, {cs}) {{
  asm volatile("cp.async.bulk.tensor.{d}d.global.shared::cta.tile.bulk_group [%0, {{{coords}}}], [%1];\\n"
               :: "l"(reinterpret_cast<unsigned long long>(map)), "r"(smem_addr(src)), {ins} : "memory");
}}
}}  // namespace tessel
"""


_CASES = "\n".join(f'    case {n}: asm volatile("cp.async.bulk.wait_group{{R}} {n};\\n" ::: "memory"); break;'
                   for n in range(1, MAX_WAIT + 1))

MAP_HEADER = r"""namespace tessel {
// A CUtensorMap as the kernel receives it (a 128-byte, 64-byte aligned opaque object; the
// host encodes it with cuTensorMapEncodeTiled). Declared here so that no CUDA header is needed.
struct __align__(64) TensorMap { unsigned long long opaque[16]; };
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void bulk_commit_group() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
""" + "\n".join(f"""__device__ __forceinline__ void bulk_wait_group{suffix}(int n) {{
  switch (n) {{
{_CASES.replace('{R}', ptx)}
    default: asm volatile("cp.async.bulk.wait_group{ptx} 0;\\n" ::: "memory"); break;
  }}
}}""" for suffix, ptx in (("", ""), ("_read", ".read"))) + "\n}  // namespace tessel\n"


_BULK_HEADER = r"""namespace tessel {
__device__ __forceinline__ void bulk_load(void* dst, long long* bar, const void* src, int nbytes) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
               :: "r"(smem_addr(dst)), "l"(__cvta_generic_to_global(src)), "r"(nbytes), "r"(smem_addr(bar))
               : "memory");
}
}  // namespace tessel
"""


class TmaDef(IntrinsicDef):
    """A TMA entry: also says which operand is the global tensor (`tensor_operand`) and derives
    the tensor map a call needs (`tensor_map_spec`). The printer passes that operand to `cuda`
    as `(map_name, [printed coordinates])`."""

    def __init__(self, *a, tensor_operand: int, dims: int, **k):
        super().__init__(*a, **k)
        object.__setattr__(self, "tensor_operand", tensor_operand)
        object.__setattr__(self, "dims", dims)

    shared_align = hb.SMEM_ALIGN  # shared operands' buffers are 1024-byte aligned in CUDA

    def tensor_map_spec(self, call) -> TensorMapSpec:
        ref = call.args[self.tensor_operand]
        first_const = 3 if self.tensor_operand == 2 else 2
        consts = call.args[first_const:first_const + self.dims + 1]
        if not all(isinstance(c, Const) for c in consts):
            raise TesselError(f"intrinsic '{self.name}': box and swizzle must be integer constants")
        box = tuple(int(c.value) for c in consts[:-1])
        swizzle = int(consts[-1].value)
        buf = ref.buffer
        _check_box(self.name, box, swizzle, np.dtype(_np_dtype(buf.dtype)).itemsize)
        return TensorMapSpec(buf.name, buf.dtype, tuple(buf.shape), box, swizzle)


def _np_dtype(dtype: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)


def _int(name):
    return Operand(name, "value", dtypes=("int32", "int64"), const=True)


def _map_arg(arg) -> tuple:
    if not (isinstance(arg, tuple) and len(arg) == 2):
        raise TesselError("a TMA call's tensor operand must be printed as (tensor map, coordinates) by the CUDA "
                          "printer")
    return arg


def entries() -> list[IntrinsicDef]:
    doc = __doc__.split("\n\n")[1]
    out = []
    for d in range(1, 6):
        box_ops = tuple(_int(f"box{i}") for i in range(d)) + (_int("swizzle"),)
        for mc in (False, True):
            ops = (Operand("dst", "write", elems=1, scopes=("shared",)), mbarrier.BAR,
                   Operand("src", "read", elems=1, scopes=("global",))) + box_ops
            if mc:
                ops += (Operand("cta_mask", "value", dtypes=("int32",)),)

            def cuda(dst, bar, src, *rest, d=d, mc=mc):
                m, coords = _map_arg(src)
                extra = f", {rest[-1]}" if mc else ""
                return f"tessel::tma_load_{d}d{'_mc' if mc else ''}(&{m}, {dst}, {bar}, {', '.join(coords)}{extra});"

            out.append(TmaDef(tma_load_name(d, mc), "thread", ops, _load_semantics(d, mc), cuda,
                              MAP_HEADER + _load_header(d, mc), Cost(cycles=2.0), doc, tensor_operand=2, dims=d))
        ops = (Operand("dst", "write", elems=1, scopes=("global",)),
               Operand("src", "read", elems=1, scopes=("shared",))) + box_ops

        def store_cuda(dst, src, *rest, d=d):
            m, coords = _map_arg(dst)
            return f"tessel::tma_store_{d}d(&{m}, {src}, {', '.join(coords)});"

        out.append(TmaDef(tma_store_name(d), "thread", ops, _store_semantics(d), store_cuda,
                          MAP_HEADER + _store_header(d), Cost(cycles=2.0), doc, tensor_operand=0, dims=d))
    n_op = (Operand("n", "value", dtypes=("int32",), const=True),)
    out.append(IntrinsicDef(
        BULK_LOAD, "thread", (Operand("dst", "write", elems=1, scopes=("shared",)), mbarrier.BAR,
                              Operand("src", "read", elems=1, scopes=("global",)),
                              Operand("nbytes", "value", dtypes=("int32",))),
        hb.impl(_bulk_load, writes=(0,)), lambda d, b, s, n: f"tessel::bulk_load({d}, {b}, {s}, {n});",
        MAP_HEADER + _BULK_HEADER, Cost(cycles=2.0),
        "1-D bulk copy global -> shared of nbytes (a multiple of 16, both ends 16-byte aligned), completing on "
        "the mbarrier like a TMA load (complete_tx of nbytes); no tensor map."))
    out += [
        IntrinsicDef(COMMIT, "thread", (), hb.impl(_commit), lambda: "tessel::bulk_commit_group();", MAP_HEADER,
                     Cost(cycles=1.0), doc),
        IntrinsicDef(WAIT, "thread", n_op, _wait_semantics(False), lambda n: f"tessel::bulk_wait_group({n});",
                     MAP_HEADER, Cost(cycles=1.0), doc),
        IntrinsicDef(WAIT_READ, "thread", n_op, _wait_semantics(True), lambda n: f"tessel::bulk_wait_group_read({n});",
                     MAP_HEADER, Cost(cycles=1.0), doc),
        IntrinsicDef(FENCE, "thread", (), hb.impl(_fence), lambda: "tessel::fence_proxy_async();", MAP_HEADER,
                     Cost(cycles=1.0), doc),
    ]
    return out


__all__ = ["BULK_LOAD", "COMMIT", "FENCE", "SWIZZLES", "WAIT", "WAIT_READ", "TensorMapSpec", "TmaDef", "box_offsets",
           "entries", "swizzle_offset", "tma_load_name", "tma_store_name"]
