"""The intrinsic table: every GPU intrinsic the IR may call, one entry each.

An entry (`IntrinsicDef`, defs.py) says who executes the intrinsic (a thread, a warp of 32, a
warpgroup of 128, a block), which arguments are buffer regions it reads or writes and how large
each is, what it means (the interpreter's numpy implementation over all participating lanes,
with the exact PTX fragment layouts), how the CUDA printer spells a call, the device-header C++
(inline PTX) behind that spelling, and a rough cost for the tuner. Adding an instruction means
adding an entry here and its test, nothing else (DESIGN.md, "Intrinsics are registry entries").

The entries:
- mma.sync.aligned.m16n8k16.row.col.f32.{f16.f16,bf16.bf16}.f32 (mma.py; fragment layouts there)
- ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16 (ldmatrix.py)
- cp.async.{ca.shared.global.{4,8,16}, cg.shared.global.16}, cp.async.commit_group,
  cp.async.wait_group, cp.async.wait_all (cp_async.py)
- shfl.sync.{bfly,down,up,idx}.b32 (shuffle.py)
- more mma shapes and strided-tile ldmatrix (mma_shapes.py, tiles.py; layouts in fragments.py)
- Hopper (sm_90a): mbarrier init / arrive / arrive.expect_tx / try_wait.parity (blocking) / remote arrive
  (mbarrier.py); TMA cp.async.bulk.tensor 1-5D loads (+ multicast), stores, bulk groups, fence.proxy.async
  (tma.py; tensor maps derived by the printer, encoded by the runtime); wgmma.mma_async m64nNk16 f16/bf16
  from descriptors or registers, fence / commit / wait, smem descriptors (wgmma.py); stmatrix (stmatrix.py);
  bar.sync / bar.arrive, barrier.cluster, setmaxnreg (barriers.py); red / atom add, max, CAS (atomics.py);
  cp.async with a zero-filling source size (cp_async_zfill.py). hb.py is their interpreter plumbing and
  hopper_ir.py builds their IR for templates (rings, TMA tiles, wgmma k-steps, epilogues).

For the CUDA printer: print each BufferRef argument as a pointer to its start element of the
buffer's element type (`&buf[flat index]`; half is `__half`, bfloat16 `__nv_bfloat16`) and each
expression as C, call `lookup(name).cuda_text(printed)` for the statement, and prepend
`device_header(names)` (the prelude and the wrappers of the intrinsics the kernel calls). Shared
buffers must be at least 16-byte aligned (ldmatrix rows and 16-byte cp.async need it); an entry with
a `shared_align` attribute (TMA, wgmma descriptors) needs its shared buffers aligned to that (1024).
An entry with `tensor_operand` (TMA) gets that operand printed as (tensor-map name, coordinates).

Example:
    >>> e = lookup("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")
    >>> e.scope, [o.name for o in e.operands]
    ('warp', ['d', 'a', 'b', 'c'])
    >>> e.cuda_text(["&acc[0]", "&fa[0]", "&fb[0]", "&acc[0]"])
    'tessel::mma_m16n8k16_f32_f16(&acc[0], &fa[0], &fb[0], &acc[0]);'
"""

from __future__ import annotations

from tessel.errors import TesselError
from tessel.ir.intrinsics import atomics, barriers, cp_async, ldmatrix, mbarrier, mma, shuffle, stmatrix, tma, wgmma
from tessel.ir.intrinsics import cp_async_zfill, wgmma_tf32
from tessel.ir.intrinsics import fragments, mma_shapes, tiles  # noqa: F401 (fragments: layouts, no entries)
from tessel.ir.intrinsics.mma_shapes import mma_shape_name
from tessel.ir.intrinsics.tiles import tile_ldmatrix_name
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand
from tessel.ir.intrinsics.header import assemble
from tessel.ir.intrinsics.mma import ACC, A_LAYOUT, B_LAYOUT, FragmentLayout, mma_name
from tessel.ir.intrinsics.ldmatrix import ldmatrix_name
from tessel.ir.intrinsics.cp_async import COMMIT, WAIT_ALL, WAIT_GROUP, copy_name
from tessel.ir.intrinsics.shuffle import shfl_name


# The modules whose entries need sm_90a (Hopper); the rest compile for sm_80 too.
HOPPER_MODULES = (mbarrier, tma, wgmma, wgmma_tf32, atomics, barriers, stmatrix, cp_async_zfill)


def _build_table() -> dict[str, IntrinsicDef]:
    table: dict[str, IntrinsicDef] = {}
    for module in (mma, ldmatrix, cp_async, shuffle, mbarrier, tma, wgmma, mma_shapes, tiles, atomics, barriers,
                   stmatrix, cp_async_zfill, wgmma_tf32):
        for entry in module.entries():
            if entry.name in table:
                raise TesselError(f"intrinsic '{entry.name}' is defined twice")
            table[entry.name] = entry
    return table


# The one table (built once at import; entries are immutable).
TABLE: dict[str, IntrinsicDef] = _build_table()


def lookup(name: str) -> IntrinsicDef:
    """The entry of intrinsic `name`; raises TesselError naming it when there is none.

    >>> lookup("cp.async.commit_group").cuda_text([])
    'tessel::cp_async_commit_group();'
    """
    entry = TABLE.get(name)
    if entry is None:
        raise TesselError(f"unknown intrinsic '{name}' (known: {', '.join(TABLE)})")
    return entry


def all_intrinsics() -> list[IntrinsicDef]:
    """Every entry, in table order.

    >>> len(all_intrinsics()) >= 17
    True
    """
    return list(TABLE.values())


def interp_registry() -> dict:
    """The interpreter's registry: name -> IntrinsicImpl (what `Interpreter(...)` takes; the
    default interpreter already uses it).

    >>> interp_registry()["shfl.sync.bfly.b32"].scope
    'warp'
    """
    return {name: e.semantics for name, e in TABLE.items()}


def device_header(names=None) -> str:
    """The device header: prelude, then the wrappers of `names` (default: every intrinsic).

    >>> "mma_m16n8k16_f32_bf16" in device_header()
    True
    """
    entries = all_intrinsics() if names is None else [lookup(n) for n in sorted(set(names), key=_order)]
    return assemble([e.header for e in entries])


def _order(name: str) -> int:
    return list(TABLE).index(name) if name in TABLE else -1


__all__ = [
    "ACC", "A_LAYOUT", "B_LAYOUT", "COMMIT", "TABLE", "WAIT_ALL", "WAIT_GROUP", "Cost", "FragmentLayout",
    "IntrinsicDef", "Operand", "all_intrinsics", "copy_name", "device_header", "interp_registry", "ldmatrix_name",
    "lookup", "mma_name", "mma_shape_name", "shfl_name", "tile_ldmatrix_name",
]
