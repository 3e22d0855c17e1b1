"""Warp shuffles: shfl.sync.{bfly,down,up,idx}.b32 over all 32 lanes (member mask 0xffffffff).

IR form: `Intrinsic(name, (BufferRef(dst, ...), value, lane_arg))`: every lane offers `value` (a
float32 or int32 expression) and receives into `dst` (one element, same dtype) the value of
its source lane:

- bfly: lane ^ n (xor; a butterfly, as in tree reductions where every lane ends with the total);
- down: lane + n, or its own value when that is past lane 31;
- up: lane - n, or its own value when that is below lane 0;
- idx: n (a broadcast when every lane gives the same lane_arg);

where n is lane_arg % 32 (PTX reads only the low 5 bits).

All 32 lanes must execute the call together (the interpreter raises otherwise, as a partial
warp with a full mask is undefined on the GPU).

Example:
    >>> sorted(e.name for e in entries())[0]
    'shfl.sync.bfly.b32'
"""

from __future__ import annotations

from tessel.ir.interp.intrinsics import IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values

_B32 = ("float32", "int32")
_CUDA_FN = {"bfly": "__shfl_xor_sync", "down": "__shfl_down_sync", "up": "__shfl_up_sync", "idx": "__shfl_sync"}


def shfl_name(mode: str) -> str:
    """The registry name of the shuffle with `mode` bfly, down, up or idx."""
    return f"shfl.sync.{mode}.b32"


def _source(mode: str, lane: int, arg: int) -> int:
    arg &= 31  # PTX uses the low 5 bits of the lane operand (measured on an H200 as well)
    src = {"bfly": lane ^ arg, "down": lane + arg, "up": lane - arg, "idx": arg}[mode]
    return src if 0 <= src < 32 else lane


def _operands() -> tuple:
    return (Operand("dst", "write", elems=1, dtypes=_B32),
            Operand("value", "value", dtypes=_B32),
            Operand("lane", "value", dtypes=("int32",)))


def _semantics(mode: str):
    name = shfl_name(mode)
    dst_op = _operands()[0]

    def shfl(ctx, lanes):
        if len(lanes) != 32:
            raise ExecutionError(f"{name} needs a full warp of 32 lanes, got {len(lanes)}")
        ctx.write_lanes([dst for dst, _, _ in lanes], dst_op.region(lanes[0][0].buffer))  # race check
        values = [v for _, v, _ in lanes]
        for lane, (dst, _, arg) in enumerate(lanes):
            ref_values(dst, dst_op)[0] = values[_source(mode, lane, int(arg))]

    return IntrinsicImpl(shfl, "warp", with_context=True)


def _header(mode: str) -> str:
    return f"""namespace tessel {{
// {shfl_name(mode)}: *dst = the value of the source lane (full warp).
template <typename T> __device__ __forceinline__ void shfl_{mode}(T* dst, T value, int lane) {{
  *dst = {_CUDA_FN[mode]}(0xffffffffu, value, lane);
}}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    out = []
    for mode in ("bfly", "down", "up", "idx"):
        fn = f"tessel::shfl_{mode}"
        out.append(IntrinsicDef(
            name=shfl_name(mode), scope="warp", operands=_operands(), semantics=_semantics(mode),
            cuda=lambda d, v, n, fn=fn: f"{fn}({d}, {v}, {n});", header=_header(mode),
            cost=Cost(bytes=128, cycles=2.0), doc=__doc__.split("\n\n")[1] + "\n\n" + __doc__.split("\n\n")[2]))
    return out


__all__ = ["entries", "shfl_name"]
