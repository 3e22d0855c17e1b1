"""Operands as strided 2-D tiles, and the tile form of ldmatrix built on them.

A plain `Operand` covers a run of consecutive elements along its buffer's last dimension. A
`TileOperand` covers a rows x cols tile whose rows lie `pitch` elements apart in the buffer's
flat (row-major) storage, starting at the BufferRef's element; the pitch is another operand of the
same call (a "value" operand named by `TileOperand.pitch`), so the tile may be any window of a
2-D array (pitch = the array's row length) or of a padded 1-D one. The CUDA printer needs nothing
new: the tile prints as the pointer to its first element and the pitch as an int.

`tessel.ldmatrix.x{1,2,4}[.trans].tile.b16` is ldmatrix with a tile source instead of per-lane
row addresses: every lane of the warp passes the same tile (8x8, 16x8 or 16x16 16-bit values in
shared memory, rows 16-byte aligned) and the wrapper derives the row each lane addresses (lane
l < 8 num gives row l % 16 of column block l // 16). The result in each lane is
`fragments.ldmatrix_tile_layout(num, trans)` of the tile: x4 of a row-major 16x16 A tile is
mma m16n8k16's A fragment, x2.trans of a 16x8 (k x n) tile its B fragment.

Example:
    >>> e = [x for x in entries() if x.name == tile_ldmatrix_name(4, False)][0]
    >>> [o.name for o in e.operands], e.cuda_text(["&f[0]", "&S[r * 40]", "40"])
    (['dst', 'src', 'pitch'], 'tessel::ldmatrix_x4_tile(&f[0], &S[r * 40], 40);')
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tessel.ir.interp.intrinsics import IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values
from tessel.ir.intrinsics.fragments import ldmatrix_tile_layout
from tessel.ir.nodes import BufferRef, Const

_B16 = ("float16", "bfloat16")


@dataclass(frozen=True)
class TileOperand(Operand):
    """A buffer operand covering a `rows` x `cols` tile, rows `pitch` elements apart (`pitch`
    names the value operand that holds the row stride). Build it with `tile_operand`."""

    rows: int = 1
    cols: int = 1
    pitch: str = "pitch"

    def flat_indices(self, ref, pitch: int) -> np.ndarray:
        """Flat element indices (rows x cols) of the tile at `ref` into its buffer; raises
        ExecutionError naming the buffer when the tile leaves it.

        >>> from tessel.ir.nodes import Buffer
        >>> from tessel.ir.interp.runtime import Ref
        >>> op = tile_operand("src", "read", 2, 3, "ld")
        >>> op.flat_indices(Ref(Buffer("S", (4, 8)), np.zeros(32), (1, 2)), 8).tolist()
        [[10, 11, 12], [18, 19, 20]]
        """
        pitch = int(pitch)
        if pitch < self.cols:
            raise ExecutionError(f"operand '{self.name}': pitch {pitch} of buffer '{ref.buffer.name}' is below the "
                                 f"tile's {self.cols} columns")
        start = 0
        for s, d in zip(ref.start, ref.buffer.shape):
            start = start * d + int(s)
        idx = start + np.arange(self.rows)[:, None] * pitch + np.arange(self.cols)[None, :]
        if start < 0 or idx[-1, -1] >= ref.buffer.size:
            raise ExecutionError(f"operand '{self.name}': a {self.rows}x{self.cols} tile at {tuple(ref.start)} with "
                                 f"pitch {pitch} leaves buffer '{ref.buffer.name}' of shape {ref.buffer.shape}")
        return idx

    def read(self, ref, pitch: int) -> np.ndarray:
        """The tile's values (a rows x cols copy)."""
        return ref.array.reshape(-1)[self.flat_indices(ref, pitch)]

    def write(self, ref, pitch: int, values) -> None:
        """Store a rows x cols array into the tile."""
        ref.array.reshape(-1)[self.flat_indices(ref, pitch)] = np.asarray(values).reshape(self.rows, self.cols)


def tile_operand(name: str, role: str, rows: int, cols: int, pitch: str, scopes: tuple = (),
                 dtypes: tuple = ()) -> TileOperand:
    """A TileOperand of `rows` x `cols` elements whose row stride is the value operand `pitch`.

    >>> tile_operand("a", "read", 16, 16, "lda").elems
    256
    """
    return TileOperand(name, role, elems=rows * cols, scopes=scopes, dtypes=dtypes, rows=rows, cols=cols, pitch=pitch)


@dataclass(frozen=True)
class TileIntrinsicDef(IntrinsicDef):
    """An IntrinsicDef some of whose operands are TileOperands: call checks measure a tile by its
    columns against the buffer's last dimension, by its size against the buffer's, and require
    its pitch operand to be at least its column count when it is a constant."""

    def problems(self, call) -> list[str]:
        plain = tuple(Operand(o.name, o.role, elems=o.cols, scopes=o.scopes, dtypes=o.dtypes)
                      if isinstance(o, TileOperand) else o for o in self.operands)
        out = IntrinsicDef.problems(replace(self, operands=plain), call)
        if len(call.args) != len(self.operands):
            return out
        names = [o.name for o in self.operands]
        for op, arg in zip(self.operands, call.args):
            if not isinstance(op, TileOperand) or not isinstance(arg, BufferRef):
                continue
            where = f"intrinsic '{self.name}' operand '{op.name}'"
            if arg.buffer.size < op.rows * op.cols:
                out.append(f"{where}: buffer '{arg.buffer.name}' has {arg.buffer.size} elements; the tile covers "
                           f"{op.rows}x{op.cols}")
            pitch = call.args[names.index(op.pitch)]
            if isinstance(pitch, Const) and int(pitch.value) < op.cols:
                out.append(f"{where}: pitch {pitch.value} is below the tile's {op.cols} columns")
        return out


def tile_ldmatrix_name(num: int, trans: bool) -> str:
    """The registry name of the tile form of ldmatrix with `num` (1, 2, 4) matrices."""
    return f"tessel.ldmatrix.x{num}{'.trans' if trans else ''}.tile.b16"


def _tile_shape(num: int) -> tuple[int, int]:
    return (8 if num == 1 else 16), (16 if num == 4 else 8)


def _operands(num: int) -> tuple:
    rows, cols = _tile_shape(num)
    return (Operand("dst", "write", elems=2 * num, scopes=("local",), dtypes=_B16),
            tile_operand("src", "read", rows, cols, "pitch", scopes=("shared",), dtypes=_B16),
            Operand("pitch", "value", dtypes=("int32",)))


def _semantics(name: str, num: int, trans: bool) -> IntrinsicImpl:
    dst_op, src_op, _ = _operands(num)
    lay = ldmatrix_tile_layout(num, trans)

    rows_of_lane = np.arange(8 * num) % (8 if num == 1 else 16)
    cols_of_lane = (np.arange(8 * num) // 16) * 8 if num == 4 else np.zeros(8 * num, dtype=int)

    def ldmatrix_tile(ctx, lanes):
        if len(lanes) != 32:
            raise ExecutionError(f"{name} needs a full warp of 32 lanes, got {len(lanes)}")
        src, pitch = lanes[0][1], int(lanes[0][2])
        for ln, (dst, s, p) in enumerate(lanes):
            if s.buffer is not src.buffer or tuple(s.start) != tuple(src.start) or int(p) != pitch:
                raise ExecutionError(f"{name}: every lane must pass the same tile; lane {ln} passes "
                                     f"{s.buffer.name}{tuple(s.start)} pitch {int(p)}, lane 0 "
                                     f"{src.buffer.name}{tuple(src.start)} pitch {pitch}")
            if dst.buffer.dtype != src.buffer.dtype:
                raise ExecutionError(f"{name}: source '{src.buffer.name}' ({src.buffer.dtype}) and destination "
                                     f"'{dst.buffer.name}' ({dst.buffer.dtype}) differ in dtype")
        idx = src_op.flat_indices(src, pitch)
        if idx[0, 0] % 8 or pitch % 8:
            raise ExecutionError(f"{name}: tile {src.buffer.name}{tuple(src.start)} with pitch {pitch} has rows "
                                 f"that are not 16-byte aligned")
        # the race checker: lane l < 8 num reads the 8 elements of the tile row it addresses
        row_idx = idx[rows_of_lane[:, None], cols_of_lane[:, None] + np.arange(8)[None, :]]
        actors = np.repeat([ctx.actor(ln) for ln in range(8 * num)], 8)
        ctx.read_at(actors, src, row_idx.reshape(-1))
        frags = lay.gather(src.array.reshape(-1)[idx])
        for ln, (dst, _, _) in enumerate(lanes):
            ref_values(dst, dst_op)[:] = frags[ln]

    return IntrinsicImpl(ldmatrix_tile, "warp", with_context=True)


def _header(num: int, trans: bool) -> str:
    fn = f"ldmatrix_x{num}{'_trans' if trans else ''}_tile"
    ptx = f"ldmatrix.sync.aligned.m8n8.x{num}{'.trans' if trans else ''}.shared.b16"
    row = {1: "(l & 7)", 2: "(l & 15)", 4: "(l & 15)"}[num]
    col = " + (int)(l >> 4) * 8" if num == 4 else ""
    regs = ", ".join(f"%{i}" for i in range(num))
    outs = ", ".join(f'"=r"(r[{i}])' for i in range(num))
    unpack = " ".join(f"unpack2(r[{i}], d + {2 * i});" for i in range(num))
    return f"""namespace tessel {{
// {tile_ldmatrix_name(num, trans)}: every lane passes the same tile (shared, rows `pitch` elements
// apart, 16-byte aligned); lane l addresses tile row {row}{col.replace('(int)', '')}; d receives {2 * num} values.
template <typename T> __device__ __forceinline__ void {fn}(T* d, const T* tile, int pitch) {{
  unsigned l;
  asm("mov.u32 %0, %%laneid;\\n" : "=r"(l));
  const T* p = tile + (int){row} * pitch{col};
  unsigned r[{num}];
  asm volatile("{ptx} {{{regs}}}, [%{num}];\\n" : {outs} : "r"(smem_addr(p)));
  {unpack}
}}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    """The tile-form ldmatrix entries (x1, x2, x4, each plain and .trans)."""
    out = []
    for num in (1, 2, 4):
        for trans in (False, True):
            name = tile_ldmatrix_name(num, trans)
            fn = f"tessel::ldmatrix_x{num}{'_trans' if trans else ''}_tile"
            out.append(TileIntrinsicDef(
                name=name, scope="warp", operands=_operands(num), semantics=_semantics(name, num, trans),
                cuda=lambda d, s, p, fn=fn: f"{fn}({d}, {s}, {p});", header=_header(num, trans),
                cost=Cost(bytes=128 * num, cycles=float(num)), doc=__doc__.split("\n\n")[2]))
    return out


__all__ = ["TileIntrinsicDef", "TileOperand", "entries", "tile_ldmatrix_name", "tile_operand"]
