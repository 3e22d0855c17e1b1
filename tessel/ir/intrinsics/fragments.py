"""Fragment layouts: which lane of a warp (or warpgroup) holds which element of a matrix tile.

A tensor-core operand or result is a tile (rows x cols) spread over `lanes` threads, each holding
`elems` of its elements in registers. `FragmentLayout.coords(lane, i)` is the tile position of
element `i` of `lane`; `owner(row, col)` is the inverse. Every layout the PTX ISA documents for the
shapes tessel uses is built here from *digits*: the lane index and the element index are split into
mixed-radix digits, `(index // stride) % size`, and each digit adds `digit * scale` to the row or
to the column. All PTX fragment layouts have this form (they permute digits of the lane and the
element index), so one small class covers them, the inverse is a digit permutation as well, and
both directions are also available as IR expressions (`coords_expr`, `owner_expr`) for schedules.

With g = lane // 4 (groupID) and t = lane % 4 (threadID_in_group), as the PTX ISA writes them:

- mma m16n8k16 f16/bf16 A (16x16, 8 elems): a_i at (g + 8 ((i // 2) % 2), 2t + i % 2 + 8 (i // 4));
  B (16x8, k x n, 4 elems): b_i at (2t + i % 2 + 8 (i // 2), g); C/D (16x8, 4 elems):
  c_i at (g + 8 (i // 2), 2t + i % 2) (also the s32 accumulator of the integer shapes).
- mma m16n8k8 f16/bf16 A (16x8, 4 elems): a_i at (g + 8 (i // 2), 2t + i % 2); B (8x8, 2 elems):
  b_i at (2t + i, g); C/D as m16n8k16.
- mma m16n8k8 tf32 A (16x8, 4 elems): a_i at (g + 8 (i % 2), t + 4 (i // 2)); B (8x8, 2 elems):
  b_i at (t + 4 i, g).
- mma m16n8k32 s8/u8/e4m3/e5m2 A (16x32, 16 elems): a_i at (g + 8 ((i // 4) % 2),
  4t + i % 4 + 16 (i // 8)); B (32x8, 8 elems): b_i at (4t + i % 4 + 16 (i // 4), g).
- ldmatrix .x1/.x2/.x4 results, on the tile of its matrices stacked as `ldmatrix_layout` says.
- wgmma m64nNk16 accumulator D (64xN, 128 lanes, N/2 elems): warp w = lane // 32 of the
  warpgroup owns rows 16w..16w+15; d_i at (16w + g + 8 ((i // 2) % 2), 8 (i // 4) + 2t + i % 2),
  i.e. lane (g, t) holds (16w+g, 8j+2t+{0,1}) and (16w+g+8, 8j+2t+{0,1}) for j in 0..N/8-1.
  The register A of wgmma (64x16, 8 elems) is m16n8k16's A with rows offset by 16w.

The accumulators C0, C1 of two adjacent 16x8 products, converted to f16/bf16 and concatenated, ARE
m16n8k16's A fragment of the 16x16 tile, lane by lane (m16n8k8's A is its accumulator's layout):
`acc_to_a` emits that conversion as IR, so attention's P @ V reuses S = Q @ K^T in registers.

Example:
    >>> M16N8K16_ACC.coords(5, 3)  # lane 5 (g=1, t=1), element c3
    (9, 3)
    >>> M16N8K16_ACC.owner(9, 3)
    (5, 3)
    >>> wgmma_acc(24).coords(37, 9)  # warp 1, g=1, t=1; d9: j=2, e=1, upper row half
    (17, 19)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tessel.errors import TesselError
from tessel.ir.nodes import Binary, Cast, Const, Expr, Load, Stmt, Store, seq

SOURCES = ("lane", "elem")
TARGETS = ("row", "col")


@dataclass(frozen=True)
class Digit:
    """One mixed-radix digit `(src // stride) % size` of the lane or element index, adding
    `digit * scale` to the row or the column of the tile."""

    src: str  # "lane" or "elem"
    stride: int
    size: int
    dst: str  # "row" or "col"
    scale: int


def _radix_ok(places: list[tuple[int, int]], extent: int) -> bool:
    """Whether (place value, size) pairs are exactly the digits of a mixed radix for `extent`."""
    place = 1
    for value, size in sorted(p for p in places if p[1] > 1):
        if value != place:
            return False
        place *= size
    return place == extent


@dataclass(frozen=True)
class FragmentLayout:
    """A tile of `rows` x `cols` spread over `lanes` threads with `elems` elements each.

    `digits` define `coords`; construction checks that they permute the digits of the four index
    spaces exactly, so `coords` and `owner` are inverse bijections by construction (the tests
    also check it by enumeration, and each layout against tables written from the PTX ISA).

    >>> lay = FragmentLayout("demo", 2, 4, 4, 2, (Digit("lane", 1, 4, "col", 1), Digit("elem", 1, 2, "row", 1)))
    >>> lay.coords(3, 1), lay.owner(1, 3)
    ((1, 3), (3, 1))
    """

    name: str
    rows: int
    cols: int
    lanes: int
    elems: int
    digits: tuple

    def __post_init__(self):
        extents = {"lane": self.lanes, "elem": self.elems, "row": self.rows, "col": self.cols}
        if self.rows * self.cols != self.lanes * self.elems:
            raise TesselError(f"fragment layout {self.name}: {self.rows}x{self.cols} tile is not "
                              f"{self.lanes} lanes x {self.elems} elements")
        for d in self.digits:
            if d.src not in SOURCES or d.dst not in TARGETS:
                raise TesselError(f"fragment layout {self.name}: digit {d} maps {d.src!r} to {d.dst!r}")
        for space in SOURCES + TARGETS:
            places = [(d.stride, d.size) if space in SOURCES else (d.scale, d.size)
                      for d in self.digits if space in (d.src, d.dst)]
            if not _radix_ok(places, extents[space]):
                raise TesselError(f"fragment layout {self.name}: its digits of the {space} index do not "
                                  f"cover 0..{extents[space] - 1} exactly once")

    # -- numbers ---------------------------------------------------------------------------------

    def coords(self, lane, i):
        """(row, col) of element `i` of `lane` (ints or numpy arrays, broadcast together)."""
        src = {"lane": lane, "elem": i}
        out = {"row": 0, "col": 0}
        for d in self.digits:
            out[d.dst] = out[d.dst] + (src[d.src] // d.stride) % d.size * d.scale
        return out["row"], out["col"]

    def owner(self, row, col):
        """(lane, element) holding tile element (row, col) (ints or numpy arrays)."""
        src = {"row": row, "col": col}
        out = {"lane": 0, "elem": 0}
        for d in self.digits:
            out[d.src] = out[d.src] + (src[d.dst] // d.scale) % d.size * d.stride
        return out["lane"], out["elem"]

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) index arrays of shape (lanes, elems): where each lane's elements sit.

        >>> r, c = M16N8K8_A.table()
        >>> r.shape, int(r[4, 2]), int(c[4, 2])
        ((32, 4), 9, 0)
        """
        lane = np.arange(self.lanes)[:, None]
        i = np.arange(self.elems)[None, :]
        r, c = self.coords(lane, i)
        shape = (self.lanes, self.elems)
        return np.broadcast_to(r, shape).copy(), np.broadcast_to(c, shape).copy()

    def gather(self, matrix: np.ndarray) -> np.ndarray:
        """Each lane's fragment of `matrix` (rows x cols): an array of shape (lanes, elems)."""
        matrix = np.asarray(matrix)
        if matrix.shape != (self.rows, self.cols):
            raise TesselError(f"fragment layout {self.name} is {self.rows}x{self.cols}; got a matrix of {matrix.shape}")
        r, c = self.table()
        return matrix[r, c]

    def scatter(self, frags: np.ndarray) -> np.ndarray:
        """The matrix whose fragments are `frags` (lanes x elems); the inverse of `gather`.

        >>> m = np.arange(128).reshape(16, 8)
        >>> bool((M16N8K16_ACC.scatter(M16N8K16_ACC.gather(m)) == m).all())
        True
        """
        frags = np.asarray(frags)
        if frags.shape != (self.lanes, self.elems):
            raise TesselError(f"fragment layout {self.name} has {self.lanes} lanes x {self.elems} elements; "
                              f"got fragments of {frags.shape}")
        out = np.empty((self.rows, self.cols), dtype=frags.dtype)
        r, c = self.table()
        out[r, c] = frags
        return out

    # -- IR expressions -------------------------------------------------------------------------

    def coords_expr(self, lane: Expr, i: Expr) -> tuple[Expr, Expr]:
        """`coords` as IR expressions of a lane expression (0..lanes-1) and an element expression.

        >>> from tessel.ir.nodes import Var
        >>> r, c = M16N8K8_ACC.coords_expr(Var("l"), Var("e"))
        >>> type(r).__name__
        'Binary'
        """
        return self._exprs({"lane": (lane, self.lanes), "elem": (i, self.elems)}, forward=True)

    def owner_expr(self, row: Expr, col: Expr) -> tuple[Expr, Expr]:
        """`owner` as IR expressions of a row and a column expression inside the tile."""
        return self._exprs({"row": (row, self.rows), "col": (col, self.cols)}, forward=False)

    def _exprs(self, src: dict, forward: bool):
        terms: dict[str, list] = {k: [] for k in (TARGETS if forward else SOURCES)}
        for d in self.digits:
            if d.size == 1:
                continue
            key, dst = (d.src, d.dst) if forward else (d.dst, d.src)
            div, mul = (d.stride, d.scale) if forward else (d.scale, d.stride)
            x, extent = src[key]
            if div != 1:
                x = Binary("floordiv", x, Const(div))
            if div * d.size < extent:  # the top digit needs no modulo (inputs are in range)
                x = Binary("floormod", x, Const(d.size))
            if mul != 1:
                x = Binary("mul", x, Const(mul))
            terms[dst].append(x)
        out = []
        for k in terms:
            acc = None
            for t in terms[k]:
                acc = t if acc is None else Binary("add", acc, t)
            out.append(Const(0) if acc is None else acc)
        return tuple(out)


def _L(stride, size, dst, scale):  # noqa: N802 - a digit of the lane index
    return Digit("lane", stride, size, dst, scale)


def _E(stride, size, dst, scale):  # noqa: N802 - a digit of the element index
    return Digit("elem", stride, size, dst, scale)


# g = lane // 4 and t = lane % 4 as digits (one warp).
_G, _T2, _T4, _T1 = _L(4, 8, "row", 1), _L(1, 4, "col", 2), _L(1, 4, "col", 4), _L(1, 4, "col", 1)

M16N8K16_A = FragmentLayout("m16n8k16.a", 16, 16, 32, 8, (_G, _T2, _E(1, 2, "col", 1), _E(2, 2, "row", 8),
                                                          _E(4, 2, "col", 8)))
M16N8K16_B = FragmentLayout("m16n8k16.b", 16, 8, 32, 4, (_L(4, 8, "col", 1), _L(1, 4, "row", 2),
                                                         _E(1, 2, "row", 1), _E(2, 2, "row", 8)))
M16N8K16_ACC = FragmentLayout("m16n8k16.acc", 16, 8, 32, 4, (_G, _T2, _E(1, 2, "col", 1), _E(2, 2, "row", 8)))

M16N8K8_A = FragmentLayout("m16n8k8.a", 16, 8, 32, 4, (_G, _T2, _E(1, 2, "col", 1), _E(2, 2, "row", 8)))
M16N8K8_B = FragmentLayout("m16n8k8.b", 8, 8, 32, 2, (_L(4, 8, "col", 1), _L(1, 4, "row", 2), _E(1, 2, "row", 1)))
M16N8K8_ACC = FragmentLayout("m16n8k8.acc", 16, 8, 32, 4, M16N8K16_ACC.digits)
M16N8K8_TF32_A = FragmentLayout("m16n8k8.tf32.a", 16, 8, 32, 4, (_G, _T1, _E(1, 2, "row", 8), _E(2, 2, "col", 4)))
M16N8K8_TF32_B = FragmentLayout("m16n8k8.tf32.b", 8, 8, 32, 2, (_L(4, 8, "col", 1), _L(1, 4, "row", 1),
                                                                _E(1, 2, "row", 4)))

M16N8K32_A = FragmentLayout("m16n8k32.a", 16, 32, 32, 16, (_G, _T4, _E(1, 4, "col", 1), _E(4, 2, "row", 8),
                                                           _E(8, 2, "col", 16)))
M16N8K32_B = FragmentLayout("m16n8k32.b", 32, 8, 32, 8, (_L(4, 8, "col", 1), _L(1, 4, "row", 4),
                                                         _E(1, 4, "row", 1), _E(4, 2, "row", 16)))
M16N8K32_ACC = FragmentLayout("m16n8k32.acc", 16, 8, 32, 4, M16N8K16_ACC.digits)


def ldmatrix_layout(num: int, trans: bool = False) -> FragmentLayout:
    """What ldmatrix .x{num}[.trans] leaves in each lane, on the tile of its `num` 8x8 source
    matrices stacked vertically (matrix m is rows 8m..8m+7, the rows lanes 8m..8m+7 address).

    Lane l = (g, t) receives in elements 2m, 2m+1 row g, columns 2t, 2t+1 of matrix m; with .trans,
    rows 2t, 2t+1 of column g (the same positions of the transposed matrix).

    >>> ldmatrix_layout(4).coords(6, 5), ldmatrix_layout(4, True).coords(6, 5)
    ((17, 5), (21, 1))
    """
    if num not in (1, 2, 4):
        raise TesselError(f"ldmatrix loads 1, 2 or 4 matrices, not {num}")
    if trans:
        digits = (_L(4, 8, "col", 1), _L(1, 4, "row", 2), _E(1, 2, "row", 1), _E(2, num, "row", 8))
    else:
        digits = (_G, _T2, _E(1, 2, "col", 1), _E(2, num, "row", 8))
    return FragmentLayout(f"ldmatrix.x{num}{'.trans' if trans else ''}", 8 * num, 8, 32, 2 * num, digits)


def ldmatrix_tile_layout(num: int, trans: bool = False) -> FragmentLayout:
    """ldmatrix's result on the tile the tile form (`tessel.ldmatrix.*.tile`) loads: matrix m is
    the 8x8 block at rows 8 (m % 2), columns 8 (m // 2) of an 8x8 (x1), 16x8 (x2) or 16x16 (x4)
    tile. x4 gives exactly mma m16n8k16's A fragment of a row-major 16x16 tile; x2.trans of a
    16x8 (k x n) tile gives its B fragment; x4.trans of a 16x16 (k x n) tile gives the B
    fragments of columns 0-7 (elements 0-3) and 8-15 (elements 4-7).

    >>> ldmatrix_tile_layout(4).table()[0].tolist() == M16N8K16_A.table()[0].tolist()
    True
    """
    if num not in (1, 2, 4):
        raise TesselError(f"ldmatrix loads 1, 2 or 4 matrices, not {num}")
    rows, cols = (8 if num == 1 else 16), (16 if num == 4 else 8)
    row_m = [_E(2, 2, "row", 8)] if num >= 2 else []
    col_m = [_E(4, 2, "col", 8)] if num == 4 else []
    if trans:
        digits = (_L(4, 8, "col", 1), _L(1, 4, "row", 2), _E(1, 2, "row", 1), *row_m, *col_m)
    else:
        digits = (_G, _T2, _E(1, 2, "col", 1), *row_m, *col_m)
    return FragmentLayout(f"ldmatrix.x{num}{'.trans' if trans else ''}.tile", rows, cols, 32, 2 * num, digits)


WGMMA_N = tuple(range(8, 257, 8))


def wgmma_acc(n: int) -> FragmentLayout:
    """The accumulator D of wgmma.mma_async m64nNk16 (f32, or f16 two to a register, in the same
    order): 128 lanes of a warpgroup, N/2 elements each (see the module docstring).

    >>> lay = wgmma_acc(256)
    >>> lay.lanes, lay.elems, lay.owner(63, 255)
    (128, 128, (127, 127))
    """
    if n not in WGMMA_N:
        raise TesselError(f"wgmma m64nNk16: N must be a multiple of 8 from 8 to 256, not {n}")
    digits = (_G, _T2, _L(32, 4, "row", 16), _E(1, 2, "col", 1), _E(2, 2, "row", 8), _E(4, n // 8, "col", 8))
    return FragmentLayout(f"wgmma.m64n{n}k16.acc", 64, n, 128, n // 2, digits)


def wgmma_a() -> FragmentLayout:
    """The register A operand of wgmma.mma_async m64nNk16 f16/bf16 (64x16, 8 elements per lane):
    warp w holds rows 16w..16w+15 laid out as mma m16n8k16's A.

    >>> wgmma_a().coords(32, 0)
    (16, 0)
    """
    return FragmentLayout("wgmma.m64k16.a", 64, 16, 128, 8, (*M16N8K16_A.digits, _L(32, 4, "row", 16)))


def acc_to_a(accs, a) -> Stmt:
    """Statements turning mma accumulators into the A operand of the next mma, per lane, with no
    data moving between lanes (what attention's P @ V needs after S = Q @ K^T).

    Why this is a re-indexing only: m16n8k16's accumulator c_j (j = 0..3) of lane (g, t) sits at
    (g + 8 (j // 2), 2t + j % 2) of its 16x8 tile, and A's a_i at (g + 8 ((i // 2) % 2),
    2t + i % 2 + 8 (i // 4)). So for the accumulators C0 (columns 0-7) and C1 (columns 8-15) of a
    16x16 product, a_i = C_{i // 4}[i % 4] in the same lane. For m16n8k8 (f16/bf16) A's layout is
    the accumulator's own: a_i = C[i]. Each value is converted to A's dtype (round to nearest).
    The same holds per warp for wgmma: columns 16kk..16kk+15 of an m64nNk16 accumulator d are the
    register A (`wgmma_a`) of the next wgmma (its .rs form) with a_i = d[8kk + i], so
    `acc_to_a([ref(d, 8kk), ref(d, 8kk + 4)], a)` converts them.

    accs: BufferRefs of the accumulators (2 for m16n8k16's A, 1 for m16n8k8's), each covering
    4 float32 elements along its buffer's last dimension; a: the BufferRef of the A fragment
    (4 elements per accumulator, float16 or bfloat16).

    >>> from tessel.ir.nodes import Buffer, BufferRef
    >>> acc, fa = Buffer("acc", (4, 4), "float32", "local"), Buffer("fa", (8,), "float16", "local")
    >>> body = acc_to_a([BufferRef(acc, (2, 0)), BufferRef(acc, (3, 0))], BufferRef(fa, (0,)))
    >>> len(body.stmts)
    8
    """
    accs = list(accs)
    if len(accs) not in (1, 2):
        raise TesselError(f"acc_to_a takes 1 (m16n8k8) or 2 (m16n8k16) accumulators, got {len(accs)}")
    for r in accs:
        if r.buffer.dtype != "float32":
            raise TesselError(f"acc_to_a: accumulator '{r.buffer.name}' has dtype {r.buffer.dtype}, expected float32")
    if a.buffer.dtype not in ("float16", "bfloat16"):
        raise TesselError(f"acc_to_a: A fragment '{a.buffer.name}' has dtype {a.buffer.dtype}, "
                          "expected float16 or bfloat16")

    def at(ref, k):
        *head, last = ref.indices
        return (*head, Binary("add", last, Const(k)) if k else last)

    stores = [Store(a.buffer, at(a, i), Cast(a.buffer.dtype, Load(accs[i // 4].buffer, at(accs[i // 4], i % 4))))
              for i in range(4 * len(accs))]
    return seq(*stores)


LAYOUTS = {lay.name: lay for lay in (
    M16N8K16_A, M16N8K16_B, M16N8K16_ACC, M16N8K8_A, M16N8K8_B, M16N8K8_ACC, M16N8K8_TF32_A, M16N8K8_TF32_B,
    M16N8K32_A, M16N8K32_B, M16N8K32_ACC, wgmma_a(),
    *(ldmatrix_layout(n, t) for n in (1, 2, 4) for t in (False, True)),
    *(ldmatrix_tile_layout(n, t) for n in (1, 2, 4) for t in (False, True)))}


def layout(name: str) -> FragmentLayout:
    """A fragment layout by name ('m16n8k16.a', 'm16n8k32.b', 'ldmatrix.x4.trans', 'wgmma.m64n96k16.acc', ...).

    >>> layout("wgmma.m64n96k16.acc").cols
    96
    """
    if name.startswith("wgmma.m64n") and name.endswith("k16.acc"):
        n = name[len("wgmma.m64n"):-len("k16.acc")]
        if n.isdigit():
            return wgmma_acc(int(n))
    if name not in LAYOUTS:
        raise TesselError(f"unknown fragment layout {name!r}; known: {', '.join(LAYOUTS)}, wgmma.m64n<N>k16.acc")
    return LAYOUTS[name]


__all__ = [
    "LAYOUTS", "M16N8K8_A", "M16N8K8_ACC", "M16N8K8_B", "M16N8K8_TF32_A", "M16N8K8_TF32_B", "M16N8K16_A",
    "M16N8K16_ACC", "M16N8K16_B", "M16N8K32_A", "M16N8K32_ACC", "M16N8K32_B", "WGMMA_N", "Digit", "FragmentLayout",
    "acc_to_a", "layout", "ldmatrix_layout", "ldmatrix_tile_layout", "wgmma_a", "wgmma_acc",
]
