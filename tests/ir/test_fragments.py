"""General fragment layouts, the m16n8k8 / m16n8k32 mma entries, tile operands (tile-form
ldmatrix) and the accumulator-to-A conversion.

Every layout is checked against a table written here from the PTX ISA's "row = ... for ai where ..."
text, element by element with the ISA's case splits, not from the digit formulas of fragments.py.
The mma entries are checked through the interpreter against numpy on fragments gathered with those
tables; the device header of the new entries is compiled with nvcc for sm_80 and sm_90a."""

from __future__ import annotations

import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

from tessel.errors import TesselError
from tessel.ir.interp import ExecutionError, RaceError, run
from tessel.ir.intrinsics import fragments as fr
from tessel.ir.intrinsics import ldmatrix as ldm_mod
from tessel.ir.intrinsics import mma as mma_mod
from tessel.ir.intrinsics import mma_shapes, tiles
from tessel.ir.intrinsics.header import assemble
from tessel.ir.nodes import (
    Allocate, Barrier, Binary, Buffer, BufferRef, Const, For, Intrinsic, Kernel, Store, Var, seq,
)

# -- the PTX ISA tables (g = groupID = lane >> 2, t = threadID_in_group = lane % 4) ---------------


def gt(lane):
    return lane >> 2, lane % 4


def ptx_m16n8k16_a(lane, i):
    g, t = gt(lane)
    row = g if (0 <= i < 2 or 4 <= i < 6) else g + 8
    col = t * 2 + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def ptx_m16n8k16_b(lane, i):
    g, t = gt(lane)
    return t * 2 + (i & 1) + (8 if i >= 2 else 0), g


def ptx_acc(lane, i):  # C/D of m16n8k8, m16n8k16 and m16n8k32 (f32 and s32)
    g, t = gt(lane)
    return (g if i < 2 else g + 8), t * 2 + (i & 1)


def ptx_m16n8k8_a(lane, i):
    g, t = gt(lane)
    return (g if i in (0, 1) else g + 8), t * 2 + (i & 1)


def ptx_m16n8k8_b(lane, i):
    g, t = gt(lane)
    return t * 2 + i, g


def ptx_m16n8k8_tf32_a(lane, i):
    g, t = gt(lane)
    return (g if i in (0, 2) else g + 8), (t if i in (0, 1) else t + 4)


def ptx_m16n8k8_tf32_b(lane, i):
    g, t = gt(lane)
    return (t if i == 0 else t + 4), g


def ptx_m16n8k32_a(lane, i):
    g, t = gt(lane)
    row = g if (0 <= i < 4 or 8 <= i < 12) else g + 8
    col = t * 4 + (i & 3) + (16 if i >= 8 else 0)
    return row, col


def ptx_m16n8k32_b(lane, i):
    g, t = gt(lane)
    return t * 4 + (i & 3) + (16 if i >= 4 else 0), g


def ptx_wgmma_d(n):
    """wgmma m64nNk16 D: warp w of the warpgroup covers rows 16w..16w+15; within it each of the
    N/8 column blocks j is laid out as an m16n8 accumulator (d_{4j..4j+3})."""
    def f(lane, i):
        w, (g, t) = lane // 32, gt(lane % 32)
        j, c = divmod(i, 4)
        row = 16 * w + (g if c < 2 else g + 8)
        col = 8 * j + t * 2 + (c & 1)
        return row, col
    return f


def ptx_ldmatrix(num, trans):
    """Element 2m+e of lane l: matrix m (rows 8m.. of the stacked source), row l/4, column
    2(l%4)+e; with .trans the element at row 2(l%4)+e, column l/4 of the source matrix."""
    def f(lane, i):
        m, e = divmod(i, 2)
        r, c = lane // 4, 2 * (lane % 4) + e
        return (8 * m + c, r) if trans else (8 * m + r, c)
    return f


CASES = [
    (fr.M16N8K16_A, ptx_m16n8k16_a), (fr.M16N8K16_B, ptx_m16n8k16_b), (fr.M16N8K16_ACC, ptx_acc),
    (fr.M16N8K8_A, ptx_m16n8k8_a), (fr.M16N8K8_B, ptx_m16n8k8_b), (fr.M16N8K8_ACC, ptx_acc),
    (fr.M16N8K8_TF32_A, ptx_m16n8k8_tf32_a), (fr.M16N8K8_TF32_B, ptx_m16n8k8_tf32_b),
    (fr.M16N8K32_A, ptx_m16n8k32_a), (fr.M16N8K32_B, ptx_m16n8k32_b), (fr.M16N8K32_ACC, ptx_acc),
    *[(fr.wgmma_acc(n), ptx_wgmma_d(n)) for n in (8, 16, 24, 64, 136, 256)],
    *[(fr.ldmatrix_layout(n, t), ptx_ldmatrix(n, t)) for n in (1, 2, 4) for t in (False, True)],
]


def _eval(e, env):
    """A tiny evaluator of index expressions (independent of the interpreter)."""
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return env[e.name]
    ops = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "floordiv": lambda a, b: a // b,
           "floormod": lambda a, b: a % b}
    assert isinstance(e, Binary), e
    return ops[e.op](_eval(e.a, env), _eval(e.b, env))


@pytest.mark.parametrize("lay,ref", CASES, ids=[c[0].name for c in CASES])
def test_layout_matches_the_ptx_table_and_inverts(lay, ref):
    seen = set()
    le, ie, re_, ce = (Var(x) for x in "liqc")
    rx, cx = lay.coords_expr(le, ie)
    lx, ix = lay.owner_expr(re_, ce)
    for lane in range(lay.lanes):
        for i in range(lay.elems):
            rc = ref(lane, i)
            assert lay.coords(lane, i) == rc, (lane, i)
            assert lay.owner(*rc) == (lane, i)
            assert (_eval(rx, {"l": lane, "i": i}), _eval(cx, {"l": lane, "i": i})) == rc
            assert (_eval(lx, {"q": rc[0], "c": rc[1]}), _eval(ix, {"q": rc[0], "c": rc[1]})) == (lane, i)
            assert 0 <= rc[0] < lay.rows and 0 <= rc[1] < lay.cols
            seen.add(rc)
    assert len(seen) == lay.rows * lay.cols  # each tile element held exactly once
    m = np.random.default_rng(0).standard_normal((lay.rows, lay.cols))
    np.testing.assert_array_equal(lay.scatter(lay.gather(m)), m)


def test_every_wgmma_n_matches_the_ptx_table():
    """All 32 wgmma accumulator widths, vectorised: coords against the ISA table, owner inverts."""
    for n in fr.WGMMA_N:
        lay = fr.wgmma_acc(n)
        ref = np.vectorize(ptx_wgmma_d(n))
        lane, i = np.meshgrid(np.arange(128), np.arange(n // 2), indexing="ij")
        r, c = lay.coords(lane, i)
        rr, cc = ref(lane, i)
        np.testing.assert_array_equal(r, rr)
        np.testing.assert_array_equal(c, cc)
        ln, el = lay.owner(r, c)
        np.testing.assert_array_equal(ln, lane)
        np.testing.assert_array_equal(el, i)
        assert len(set(zip(r.ravel().tolist(), c.ravel().tolist()))) == 64 * n


def test_wgmma_py_layouts_agree_with_the_general_ones():
    """wgmma.py's own accumulator and register-A layouts place every element where fragments.py does."""
    from tessel.ir.intrinsics import wgmma

    pairs = [(wgmma.acc_layout(n), fr.wgmma_acc(n)) for n in fr.WGMMA_N] + [(wgmma.A_FRAGMENT, fr.wgmma_a())]
    for theirs, ours in pairs:
        lane, i = np.meshgrid(np.arange(ours.lanes), np.arange(ours.elems), indexing="ij")
        for a, b in zip(theirs.coords(lane, i), ours.coords(lane, i)):
            np.testing.assert_array_equal(np.broadcast_to(a, lane.shape), b, err_msg=ours.name)


def test_layouts_of_mma_py_agree_with_the_general_ones():
    pairs = (mma_mod.A_LAYOUT, fr.M16N8K16_A), (mma_mod.B_LAYOUT, fr.M16N8K16_B), (mma_mod.ACC, fr.M16N8K16_ACC)
    for old, new in pairs:
        for a, b in zip(old.table(), new.table()):
            np.testing.assert_array_equal(a, b)


def test_wgmma_a_and_layout_lookup():
    lay = fr.wgmma_a()
    for lane in range(128):
        for i in range(8):
            r, c = ptx_m16n8k16_a(lane % 32, i)
            assert lay.coords(lane, i) == (r + 16 * (lane // 32), c)
    assert fr.layout("wgmma.m64n40k16.acc").cols == 40
    assert fr.layout("m16n8k32.b") is fr.M16N8K32_B
    with pytest.raises(TesselError, match="unknown fragment layout 'm16n8k4.a'"):
        fr.layout("m16n8k4.a")
    with pytest.raises(TesselError, match="multiple of 8"):
        fr.wgmma_acc(12)


def test_bad_digits_are_refused():
    with pytest.raises(TesselError, match="row index"):  # rows 0..7 covered twice, 8..15 never
        fr.FragmentLayout("bad", 16, 8, 32, 4, (fr.Digit("lane", 4, 8, "row", 1), fr.Digit("lane", 1, 4, "col", 2),
                                                fr.Digit("elem", 1, 2, "col", 1), fr.Digit("elem", 2, 2, "row", 4)))
    with pytest.raises(TesselError, match="not 32 lanes x 2"):
        fr.FragmentLayout("bad", 16, 8, 32, 2, ())


# -- the mma entries through the interpreter ---------------------------------------------------


def _table(fn, lanes, elems):
    rows = np.array([[fn(ln, i)[0] for i in range(elems)] for ln in range(lanes)])
    cols = np.array([[fn(ln, i)[1] for i in range(elems)] for ln in range(lanes)])
    return rows, cols


def _mma_kernel(name, in_dt, acc_dt, na, nb, nc):
    """Lane l loads its fragments FA[l], FB[l], FC[l] into registers, runs `name`, stores FD[l]."""
    FA, FB = Buffer("FA", (32, na), in_dt), Buffer("FB", (32, nb), in_dt)
    FC, FD = Buffer("FC", (32, nc), acc_dt), Buffer("FD", (32, nc), acc_dt)
    la, lb = Buffer("la", (na,), in_dt, "local"), Buffer("lb", (nb,), in_dt, "local")
    lc = Buffer("lc", (2, nc), acc_dt, "local")  # row 1 holds C and then D: D aliases C
    lane, e = Var("lane"), Var("e")
    body = Allocate(la, Allocate(lb, Allocate(lc, seq(
        For(e, na, Store(la, (e,), FA[lane, e])),
        For(e, nb, Store(lb, (e,), FB[lane, e])),
        For(e, nc, Store(lc, (1, e), FC[lane, e])),
        Intrinsic(name, (BufferRef(lc, (1, 0)), BufferRef(la, (0,)), BufferRef(lb, (0,)), BufferRef(lc, (1, 0)))),
        For(e, nc, Store(FD, (lane, e), lc[1, e]))))))
    return Kernel("mma", (FA, FB, FC, FD), For(lane, 32, body, "threadIdx.x"), target="cuda")


PTX_TABLES = {"m16n8k8.f16": (ptx_m16n8k8_a, ptx_m16n8k8_b), "m16n8k8.bf16": (ptx_m16n8k8_a, ptx_m16n8k8_b),
              "m16n8k8.tf32": (ptx_m16n8k8_tf32_a, ptx_m16n8k8_tf32_b)}
for _k in ("s8", "u8", "e4m3", "e5m2"):
    PTX_TABLES[f"m16n8k32.{_k}"] = (ptx_m16n8k32_a, ptx_m16n8k32_b)


def tf32_reference(x):
    """Round float32 to 10 mantissa bits, to nearest, ties away from zero (frexp-based; the
    implementation works on the bits)."""
    m, e = np.frexp(np.asarray(x, np.float64))
    return np.sign(m) * np.floor(np.abs(m) * 2048 + 0.5) / 2048 * np.exp2(e)


def random_operands(kind, m, n, k, rng):
    """A (m x k) and B (k x n) as stored (buffer dtype), their values as numbers, and C."""
    if kind in ("f16", "bf16", "tf32"):
        npd = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "tf32": np.float32}[kind]
        a, b = rng.standard_normal((m, k)).astype(npd), rng.standard_normal((k, n)).astype(npd)
        conv = tf32_reference if kind == "tf32" else (lambda v: v.astype(np.float64))
        return a, b, conv(a), conv(b), rng.standard_normal((m, n)).astype(np.float32)
    if kind in ("s8", "u8"):
        a, b = rng.integers(-128, 128, (m, k)).astype(np.int8), rng.integers(-128, 128, (k, n)).astype(np.int8)
        val = (lambda v: v.astype(np.int64)) if kind == "s8" else (lambda v: v.view(np.uint8).astype(np.int64))
        return a, b, val(a), val(b), rng.integers(-2 ** 20, 2 ** 20, (m, n)).astype(np.int32)
    fp8 = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[kind]

    def draw(shape):  # random finite fp8 values, bit patterns in int8 buffers
        v = rng.standard_normal(shape).astype(fp8)
        return v.view(np.int8), v.astype(np.float64)

    (a, av), (b, bv) = draw((m, k)), draw((k, n))
    return a, b, av, bv, rng.standard_normal((m, n)).astype(np.float32)


@pytest.mark.parametrize("shape", mma_shapes.SHAPES, ids=[f"{s.m}x{s.n}x{s.k}.{s.kind}" for s in mma_shapes.SHAPES])
def test_mma_entry_equals_numpy(shape):
    rng = np.random.default_rng(abs(hash(shape.name)) % 1000)
    pa, pb = PTX_TABLES[f"m16n8k{shape.k}.{shape.kind}"]
    ar, ac = _table(pa, 32, shape.a.elems)
    br, bc = _table(pb, 32, shape.b.elems)
    cr, cc = _table(ptx_acc, 32, 4)
    for trial in range(2):
        a, b, av, bv, c = random_operands(shape.kind, shape.m, shape.n, shape.k, rng)
        if trial == 1 and shape.acc == "int32":  # near the top of int32: the sum wraps (no .satfinite)
            a = np.abs(a.astype(np.int16)).clip(0, 127).astype(np.int8)
            b = np.abs(b.astype(np.int16)).clip(0, 127).astype(np.int8)
            av, bv = a.astype(np.int64), b.astype(np.int64)
            c = np.full((shape.m, shape.n), 2 ** 31 - 1000, np.int32)
        fd = np.full((32, 4), 7, dtype=c.dtype)
        run(_mma_kernel(shape.name, shape.in_dtype, shape.acc, shape.a.elems, shape.b.elems, 4),
            a[ar, ac], b[br, bc], c[cr, cc], fd)
        want = av @ bv + c.astype(av.dtype)
        if shape.acc == "int32":
            want = ((want + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)
            if trial == 1:
                assert (want < 0).any()  # the wrap really happened
            np.testing.assert_array_equal(fd, want[cr, cc])
        else:
            np.testing.assert_allclose(fd, want[cr, cc], rtol=1e-6, atol=1e-6)


def test_tf32_rounding_agrees_and_ties_go_away_from_zero():
    x = np.random.default_rng(3).standard_normal(4096).astype(np.float32)
    ties = np.array([1 + 2 ** -11, -(1 + 2 ** -11), 1 + 3 * 2 ** -11], np.float32)
    for v in (x, ties):
        np.testing.assert_array_equal(mma_shapes.round_tf32(v).astype(np.float64), tf32_reference(v))
    assert mma_shapes.round_tf32(np.float32(1 + 2 ** -11)) == np.float32(1 + 2 ** -10)


def test_mma_entry_needs_a_full_warp():
    k = _mma_kernel(mma_shapes.SHAPES[0].name, "float16", "float32", 4, 2, 4)
    k = Kernel(k.name, k.params, For(Var("lane"), 16, k.body.body, "threadIdx.x"), target="cuda")
    z = np.zeros
    with pytest.raises(ExecutionError, match="full warp"):
        run(k, z((32, 4), np.float16), z((32, 2), np.float16), z((32, 4), np.float32), z((32, 4), np.float32))


# -- the accumulator as the A operand of the next mma ------------------------------------------


def test_acc_to_a_is_a_reindexing_of_the_layouts():
    for lane in range(32):
        for i in range(8):  # m16n8k16: a_i = C_{i//4}[i%4], C_1 shifted by 8 columns
            r, c = ptx_acc(lane, i % 4)
            assert ptx_m16n8k16_a(lane, i) == (r, c + 8 * (i // 4))
        for i in range(4):  # m16n8k8: the same positions
            assert ptx_m16n8k8_a(lane, i) == ptx_acc(lane, i)


def test_wgmma_accumulator_columns_are_the_next_register_a():
    """Columns 16kk..16kk+15 of a wgmma accumulator, elements 8kk..8kk+7 of each lane, sit where
    wgmma's register A puts a_0..a_7 (what acc_to_a relies on for P @ V with wgmma .rs)."""
    for n in (16, 64, 128):
        acc, a = fr.wgmma_acc(n), fr.wgmma_a()
        for kk in range(n // 16):
            for lane in range(128):
                for i in range(8):
                    r, c = acc.coords(lane, 8 * kk + i)
                    assert a.coords(lane, i) == (r, c - 16 * kk)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_p_times_v_from_the_accumulator(dtype):
    """S = Q @ K^T into two m16n8k16 accumulators, P = S converted by acc_to_a, O = P @ V: equals
    numpy's (Q @ K^T, rounded to float32 then to dtype) @ V."""
    npd = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    rng = np.random.default_rng(11)
    q, kt, v = (rng.standard_normal(s).astype(npd) for s in ((16, 16), (16, 16), (16, 8)))
    mma = mma_mod.mma_name(dtype)
    Q, KT, V, O = Buffer("Q", (32, 8), dtype), Buffer("KT", (2, 32, 4), dtype), Buffer("V", (32, 4), dtype), \
        Buffer("O", (32, 4), "float32")
    fq, fk = Buffer("fq", (8,), dtype, "local"), Buffer("fk", (2, 4), dtype, "local")
    fv = Buffer("fv", (4,), dtype, "local")
    acc, fp, fo = Buffer("acc", (2, 4), "float32", "local"), Buffer("fp", (8,), dtype, "local"), \
        Buffer("fo", (4,), "float32", "local")
    lane, e, j = Var("lane"), Var("e"), Var("j")
    zero = Const(0.0, "float32")
    body = seq(
        For(e, 8, Store(fq, (e,), Q[lane, e])),
        For(j, 2, For(e, 4, Store(fk, (j, e), KT[j, lane, e]))),
        For(e, 4, Store(fv, (e,), V[lane, e])),
        For(j, 2, For(e, 4, Store(acc, (j, e), zero))),
        For(e, 4, Store(fo, (e,), zero)),
        *[Intrinsic(mma, (BufferRef(acc, (jj, 0)), BufferRef(fq, (0,)), BufferRef(fk, (jj, 0)),
                          BufferRef(acc, (jj, 0)))) for jj in range(2)],
        fr.acc_to_a([BufferRef(acc, (0, 0)), BufferRef(acc, (1, 0))], BufferRef(fp, (0,))),
        Intrinsic(mma, (BufferRef(fo, (0,)), BufferRef(fp, (0,)), BufferRef(fv, (0,)), BufferRef(fo, (0,)))),
        For(e, 4, Store(O, (lane, e), fo[e])))
    for b in (fo, fp, acc, fv, fk, fq):
        body = Allocate(b, body)
    kern = Kernel("pv", (Q, KT, V, O), For(lane, 32, body, "threadIdx.x"), target="cuda")
    ar, ac = _table(ptx_m16n8k16_a, 32, 8)
    br, bc = _table(ptx_m16n8k16_b, 32, 4)
    cr, cc = _table(ptx_acc, 32, 4)
    kt_frags = np.stack([kt[:, 8 * jj:8 * jj + 8][br, bc] for jj in range(2)])
    o = np.full((32, 4), 7, np.float32)
    run(kern, q[ar, ac], kt_frags, v[br, bc], o)
    p = (q.astype(np.float64) @ kt.astype(np.float64)).astype(np.float32).astype(npd)
    want = p.astype(np.float64) @ v.astype(np.float64)
    np.testing.assert_allclose(o, want[cr, cc], rtol=1e-6, atol=1e-6)
    # and the conversion matters: P used in float32 would give a different result
    assert not np.allclose(o, (q.astype(np.float64) @ kt.astype(np.float64) @ v.astype(np.float64))[cr, cc],
                           rtol=1e-6, atol=1e-6)


def test_p_times_v_with_m16n8k8_from_the_accumulator():
    """m16n8k8: S = Q (16x8) @ K^T (8x8) in one accumulator, converted by acc_to_a into the A of
    the next m16n8k8, O = P @ V (8x8)."""
    rng = np.random.default_rng(12)
    q, kt, v = (rng.standard_normal(sh).astype(np.float16) for sh in ((16, 8), (8, 8), (8, 8)))
    mma = mma_shapes.mma_shape_name("m16n8k8", "f16")
    Q, KT, V, O = (Buffer(n, sh, d) for n, sh, d in (("Q", (32, 4), "float16"), ("KT", (32, 2), "float16"),
                                                       ("V", (32, 2), "float16"), ("O", (32, 4), "float32")))
    fq, fk, fv = Buffer("fq", (4,), "float16", "local"), Buffer("fk", (2,), "float16", "local"), \
        Buffer("fv", (2,), "float16", "local")
    acc, fp, fo = Buffer("acc", (4,), "float32", "local"), Buffer("fp", (4,), "float16", "local"), \
        Buffer("fo", (4,), "float32", "local")
    lane, e = Var("lane"), Var("e")
    zero = Const(0.0, "float32")
    ref = lambda b: BufferRef(b, (0,))  # noqa: E731
    body = seq(For(e, 4, Store(fq, (e,), Q[lane, e])), For(e, 2, Store(fk, (e,), KT[lane, e])),
               For(e, 2, Store(fv, (e,), V[lane, e])), For(e, 4, Store(acc, (e,), zero)),
               For(e, 4, Store(fo, (e,), zero)),
               Intrinsic(mma, (ref(acc), ref(fq), ref(fk), ref(acc))),
               fr.acc_to_a([ref(acc)], ref(fp)),
               Intrinsic(mma, (ref(fo), ref(fp), ref(fv), ref(fo))),
               For(e, 4, Store(O, (lane, e), fo[e])))
    for b in (fo, fp, acc, fv, fk, fq):
        body = Allocate(b, body)
    ar, ac = _table(ptx_m16n8k8_a, 32, 4)
    br, bc = _table(ptx_m16n8k8_b, 32, 2)
    cr, cc = _table(ptx_acc, 32, 4)
    o = np.full((32, 4), 7, np.float32)
    run(Kernel("pv8", (Q, KT, V, O), For(lane, 32, body, "threadIdx.x"), target="cuda"),
        q[ar, ac], kt[br, bc], v[br, bc], o)
    p = (q.astype(np.float64) @ kt.astype(np.float64)).astype(np.float32).astype(np.float16)
    np.testing.assert_allclose(o, (p.astype(np.float64) @ v.astype(np.float64))[cr, cc], rtol=1e-6, atol=1e-6)


def test_acc_to_a_refuses_wrong_operands():
    acc, fa = Buffer("acc", (4,), "float32", "local"), Buffer("fa", (8,), "float16", "local")
    with pytest.raises(TesselError, match="1 .m16n8k8. or 2"):
        fr.acc_to_a([BufferRef(acc, (0,))] * 3, BufferRef(fa, (0,)))
    with pytest.raises(TesselError, match="'fa32' has dtype float32"):
        fr.acc_to_a([BufferRef(acc, (0,))], BufferRef(Buffer("fa32", (4,), "float32", "local"), (0,)))


# -- tile operands and the tile form of ldmatrix -------------------------------------------------


def _fill(S, G, lane, threads=32):
    """The threads copy G into shared S, thread l taking the flat elements l, l + threads, ..."""
    i = Var("i")
    idx = i * threads + lane
    rc = (idx // S.shape[1], idx % S.shape[1])
    return For(i, S.size // threads, Store(S, rc, G[rc]))


def _tile_ldmatrix_kernel(name, dtype, num, shape, start, pitch, per_lane_start=None, barrier=True, threads=32):
    """`threads` threads (whole warps) fill shared S from G, then every warp runs the tile ldmatrix
    `name` on the tile at `start`; thread l stores its values to O[l]."""
    G, O = Buffer("G", shape, dtype), Buffer("O", (threads, 2 * num), dtype)
    S, F = Buffer("S", shape, dtype, "shared"), Buffer("F", (2 * num,), dtype, "local")
    lane, e = Var("lane"), Var("e")
    src = BufferRef(S, per_lane_start(lane) if per_lane_start else start)
    body = seq(_fill(S, G, lane, threads), *([Barrier()] if barrier else []),
               Allocate(F, seq(Intrinsic(name, (BufferRef(F, (0,)), src, Const(pitch))),
                               For(e, 2 * num, Store(O, (lane, e), F[e])))))
    return Kernel("ldt", (G, O), Allocate(S, For(lane, threads, body, "threadIdx.x")), target="cuda")


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_tile_ldmatrix_matches_numpy_and_the_per_lane_form(num, trans):
    rng = np.random.default_rng(20 + num)
    g = rng.standard_normal((24, 40)).astype(np.float16)  # pitch 40 halves = 80 bytes (16-byte multiple)
    o = np.zeros((32, 2 * num), np.float16)
    run(_tile_ldmatrix_kernel(tiles.tile_ldmatrix_name(num, trans), "float16", num, (24, 40), (5, 16), 40), g, o)
    rows, cols = (8 if num == 1 else 16), (16 if num == 4 else 8)
    tile = g[5:5 + rows, 16:16 + cols]
    # numpy, from the ISA: matrix m is the 8x8 block at rows 8 (m % 2), cols 8 (m // 2)
    want = np.zeros_like(o)
    for ln in range(32):
        for m in range(num):
            blk = tile[8 * (m % 2):8 * (m % 2) + 8, 8 * (m // 2):8 * (m // 2) + 8]
            if trans:
                blk = blk.T
            want[ln, 2 * m:2 * m + 2] = blk[ln // 4, 2 * (ln % 4):2 * (ln % 4) + 2]
    np.testing.assert_array_equal(o, want)
    # the per-lane ldmatrix of ldmatrix.py, lanes addressing the rows the tile form derives, agrees
    o2 = np.zeros_like(o)
    run(_per_lane_kernel(num, trans, lambda ln: (5 + ln % rows, 16 + (ln // 16) * 8 if num == 4 else Const(16))), g, o2)
    np.testing.assert_array_equal(o2, want)


def _per_lane_kernel(num, trans, starts):
    """ldmatrix.py's form: lane l passes the row it addresses, `starts(l)`; no pitch operand."""
    shape, dtype = (24, 40), "float16"
    G, O = Buffer("G", shape, dtype), Buffer("O", (32, 2 * num), dtype)
    S, F = Buffer("S", shape, dtype, "shared"), Buffer("F", (2 * num,), dtype, "local")
    lane, e = Var("lane"), Var("e")
    call = Intrinsic(ldm_mod.ldmatrix_name(num, trans), (BufferRef(F, (0,)), BufferRef(S, starts(lane))))
    body = seq(_fill(S, G, lane), Barrier(),
               Allocate(F, seq(call, For(e, 2 * num, Store(O, (lane, e), F[e])))))
    return Kernel("ldl", (G, O), Allocate(S, For(lane, 32, body, "threadIdx.x")), target="cuda")


@pytest.mark.parametrize("num", [1, 4])
def test_tile_ldmatrix_without_the_barrier_races(num):
    """Two warps fill shared memory, then each loads the same tile: deleting the barrier between
    is caught (warp 0 reads rows that warp 1 wrote, unordered; a warp's own lanes are ordered by
    the collective itself)."""
    g, o = np.ones((24, 40), np.float16), np.zeros((64, 2 * num), np.float16)
    name = tiles.tile_ldmatrix_name(num, False)
    run(_tile_ldmatrix_kernel(name, "float16", num, (24, 40), (0, 8), 40, threads=64), g, o)  # with it: fine
    with pytest.raises(RaceError, match="shared buffer 'S'.*tessel.ldmatrix"):
        run(_tile_ldmatrix_kernel(name, "float16", num, (24, 40), (0, 8), 40, barrier=False, threads=64), g, o)


def test_tile_ldmatrix_x4_gives_the_mma_a_fragment():
    g = np.random.default_rng(4).standard_normal((16, 24)).astype(np.float16)
    o = np.zeros((32, 8), np.float16)
    run(_tile_ldmatrix_kernel(tiles.tile_ldmatrix_name(4, False), "float16", 4, (16, 24), (0, 8), 24), g, o)
    ar, ac = _table(ptx_m16n8k16_a, 32, 8)
    np.testing.assert_array_equal(o, g[:, 8:24][ar, ac])


def test_tile_ldmatrix_errors_name_the_problem():
    name = tiles.tile_ldmatrix_name(2, False)
    g, o = np.ones((24, 40), np.float16), np.zeros((32, 4), np.float16)
    with pytest.raises(ExecutionError, match="16-byte aligned"):
        run(_tile_ldmatrix_kernel(name, "float16", 2, (24, 40), (0, 4), 40), g, o)
    with pytest.raises(ExecutionError, match="leaves buffer 'S'"):
        run(_tile_ldmatrix_kernel(name, "float16", 2, (24, 40), (16, 0), 40), g, o)
    with pytest.raises(ExecutionError, match="same tile; lane 1"):
        run(_tile_ldmatrix_kernel(name, "float16", 2, (24, 40), None, 40, lambda ln: (ln % 2 * 8, Const(0))), g, o)


def test_tile_operand_regions_and_call_checks():
    op = tiles.tile_operand("src", "read", 3, 4, "ld")
    from tessel.ir.interp.runtime import Ref
    buf = Buffer("T", (6, 10), "float32")
    arr = np.arange(60, dtype=np.float32)
    ref = Ref(buf, arr, (2, 5))
    np.testing.assert_array_equal(op.read(ref, 10), arr.reshape(6, 10)[2:5, 5:9])
    op.write(ref, 10, -np.ones((3, 4)))
    assert (arr.reshape(6, 10)[2:5, 5:9] == -1).all() and arr.reshape(6, 10)[2:5, 9].tolist() == [29, 39, 49]
    with pytest.raises(ExecutionError, match="pitch 3 of buffer 'T' is below"):
        op.read(ref, 3)
    e = [x for x in tiles.entries() if x.name == tiles.tile_ldmatrix_name(4, True)][0]
    S = Buffer("S", (64, 40), "float16", "shared")
    F = Buffer("F", (8,), "float16", "local")
    assert e.problems(Intrinsic(e.name, (BufferRef(F, (0,)), BufferRef(S, (16, 8)), Const(40)))) == []
    small = Buffer("S8", (4, 16), "float16", "shared")
    bad = e.problems(Intrinsic(e.name, (BufferRef(F, (0,)), BufferRef(small, (0, 0)), Const(4))))
    assert any("has 64 elements; the tile covers 16x16" in p for p in bad), bad
    assert any("pitch 4 is below the tile's 16 columns" in p for p in bad), bad


# -- the CUDA text compiles ----------------------------------------------------------------------

_CT = {"float16": "__half", "bfloat16": "__nv_bfloat16", "float32": "float", "int8": "signed char", "int32": "int"}


def probe_source() -> str:
    """A kernel calling every new wrapper, arguments printed the way the CUDA printer prints them."""
    ents = mma_shapes.entries() + tiles.entries()
    lines = [assemble([e.header for e in ents]),
             'extern "C" __global__ void probe(float* out) {',
             "  __shared__ __align__(16) __half sh[16 * 24];",
             "  int lane = threadIdx.x & 31; float acc = 0.f;",
             "  for (int i = lane; i < 16 * 24; i += 32) sh[i] = __float2half((float)i);",
             "  __syncthreads();"]
    for k, e in enumerate(ents):
        args = []
        for j, op in enumerate(e.operands):
            d = op.dtypes[0]
            if not op.is_buffer:
                args.append("24")
            elif op.scopes == ("shared",):
                args.append("&sh[0]")
            else:
                n = op.count(d)
                lines += [f"  {_CT[d]} v{k}_{j}[{n}];",
                          f"  for (int q = 0; q < {n}; ++q) v{k}_{j}[q] = ({_CT[d]})(float)(q + lane);"]
                args.append(f"&v{k}_{j}[0]")
        lines.append("  " + e.cuda_text(args))
        lines += [f"  acc += (float)v{k}_{j}[0];" for j, op in enumerate(e.operands) if op.role == "write"]
    lines.append("  out[threadIdx.x] = acc;\n}")
    return "\n".join(lines)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_new_entries_compile_with_nvcc(arch, tmp_path):
    src = tmp_path / "probe.cu"
    src.write_text(probe_source())
    r = subprocess.run(["nvcc", f"-arch={arch}", "-cubin", str(src), "-o", str(tmp_path / "probe.cubin"),
                        "-Xptxas", "-v"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "0 bytes stack frame" in r.stderr, r.stderr[-2000:]  # fragments stay in registers
    if shutil.which("cuobjdump"):  # the tensor-core instructions are really there
        sass = subprocess.run(["cuobjdump", "-sass", str(tmp_path / "probe.cubin")], capture_output=True, text=True)
        assert "HMMA" in sass.stdout and "IMMA" in sass.stdout and "LDSM" in sass.stdout


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_printed_kernels_using_the_new_entries_compile(tmp_path):
    """The CUDA printer's text for IR kernels calling each new entry (and the P @ V kernel with
    acc_to_a) compiles for sm_90a: pointer types and argument order fit the wrappers."""
    from tessel.codegen.cuda_build import INCLUDE_DIR
    from tessel.codegen.cuda_printer import print_kernel

    kernels = [_mma_kernel(s.name, s.in_dtype, s.acc, s.a.elems, s.b.elems, 4) for s in mma_shapes.SHAPES]
    kernels += [_tile_ldmatrix_kernel(tiles.tile_ldmatrix_name(n, t), "float16", n, (24, 40), (5, 16), 40)
                for n in (1, 2, 4) for t in (False, True)]
    srcs = [print_kernel(Kernel(f"k{i}", k.params, k.body, target="cuda")).source for i, k in enumerate(kernels)]
    for s in mma_shapes.SHAPES:
        assert any(f"tessel::{s.fn}(" in src for src in srcs), s.name
    # one file: each printed kernel without its own header, one header with every wrapper on top
    import re

    from tessel.ir.intrinsics import device_header

    guard = r"#ifndef TESSEL_DEVICE_HEADER_INCLUDED.*?#endif  // TESSEL_DEVICE_HEADER_INCLUDED"
    names = [s.name for s in mma_shapes.SHAPES] + [tiles.tile_ldmatrix_name(n, t) for n in (1, 2, 4) for t in (0, 1)]
    text = device_header(names) + "\n".join(re.sub(guard, "", src, flags=re.S) for src in srcs)
    (tmp_path / "printed.cu").write_text(text)
    r = subprocess.run(["nvcc", "-arch=sm_90a", "-I", str(INCLUDE_DIR), "-cubin", str(tmp_path / "printed.cu"), "-o",
                        str(tmp_path / "printed.cubin")], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
