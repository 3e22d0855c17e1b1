"""The intrinsic table: each intrinsic's interpreter meaning against an independent numpy
computation on random data (fragment layouts written out here from the PTX ISA, not taken from
the implementation), the table's API and call checks, and the device header compiled by nvcc for
sm_80 and sm_90a with a kernel that calls every wrapper."""

from __future__ import annotations

import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

from tessel.errors import TesselError
from tessel.ir.interp import INTRINSICS, ExecutionError, RaceError, run
from tessel.ir.intrinsics.header import _blocks
from tessel.ir.intrinsics import (
    ACC, A_LAYOUT, B_LAYOUT, TABLE, all_intrinsics, copy_name, device_header, interp_registry, ldmatrix_name, lookup,
    mma_name, shfl_name,
)
from tessel.ir.nodes import (
    Allocate, IfThenElse, Barrier, Buffer, BufferRef, Const, For, Intrinsic, Kernel, Load, Store, Var, seq,
)

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "int32": np.int32}


def c(v):
    return Const(v)


def warp_kernel(name, params, body_of_lane):
    lane = Var("lane")
    return Kernel(name, tuple(params), For(lane, 32, body_of_lane(lane), "threadIdx.x"), target="cuda")


def per_element(n, fn):
    """for e in range(n): fn(e) (one IR loop)."""
    e = Var(f"e{n}_{id(fn) % 997}")
    return For(e, n, fn(e))


# PTX ISA fragment layouts for mma.m16n8k16 (g = lane / 4, t = lane % 4), written out element by
# element as in the ISA's figures, independently of tessel.ir.intrinsics.mma.
def ptx_a(lane, i):
    g, t = lane // 4, lane % 4
    table = [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1),
             (g, 2 * t + 8), (g, 2 * t + 9), (g + 8, 2 * t + 8), (g + 8, 2 * t + 9)]
    return table[i]


def ptx_b(lane, i):
    g, t = lane // 4, lane % 4
    return [(2 * t, g), (2 * t + 1, g), (2 * t + 8, g), (2 * t + 9, g)][i]


def ptx_c(lane, i):
    g, t = lane // 4, lane % 4
    return [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)][i]


def test_layout_objects_match_the_ptx_tables_and_invert():
    for lay, ref, elems in ((A_LAYOUT, ptx_a, 8), (B_LAYOUT, ptx_b, 4), (ACC, ptx_c, 4)):
        seen = set()
        for lane in range(32):
            for i in range(elems):
                rc = lay.coords(lane, i)
                assert rc == ref(lane, i), (lay.name, lane, i)
                assert lay.owner(*rc) == (lane, i)
                seen.add(rc)
        assert len(seen) == lay.rows * lay.cols  # every tile element held exactly once


def _gather_table(layout_fn, elems):
    """Per-lane (row, col) index arrays of shape (32, elems) from a PTX table function."""
    rows = np.array([[layout_fn(ln, i)[0] for i in range(elems)] for ln in range(32)])
    cols = np.array([[layout_fn(ln, i)[1] for i in range(elems)] for ln in range(32)])
    return rows, cols


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mma_sync_equals_a_times_b_plus_c(dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 16)).astype(NP[dtype])
    b = rng.standard_normal((16, 8)).astype(NP[dtype])
    cc = rng.standard_normal((16, 8)).astype(np.float32)
    # Fragments as each lane holds them, gathered here with numpy from the PTX tables.
    ar, ac = _gather_table(ptx_a, 8)
    br, bc = _gather_table(ptx_b, 4)
    cr, ccol = _gather_table(ptx_c, 4)
    fa, fb, fc = a[ar, ac], b[br, bc], cc[cr, ccol]
    FA, FB, FC = Buffer("FA", (32, 8), dtype), Buffer("FB", (32, 4), dtype), Buffer("FC", (32, 4), "float32")
    FD = Buffer("FD", (32, 4), "float32")
    la, lb, lc = Buffer("la", (8,), dtype, "local"), Buffer("lb", (4,), dtype, "local"), Buffer("lc", (2, 4), "float32",
                                                                                                 "local")

    def body(lane):
        return Allocate(la, Allocate(lb, Allocate(lc, seq(
            per_element(8, lambda e: Store(la, (e,), FA[lane, e])),
            per_element(4, lambda e: Store(lb, (e,), FB[lane, e])),
            per_element(4, lambda e: Store(lc, (1, e), FC[lane, e])),
            Intrinsic(mma_name(dtype), (BufferRef(lc, (1, 0)), BufferRef(la, (0,)), BufferRef(lb, (0,)),
                                         BufferRef(lc, (1, 0)))),
            per_element(4, lambda e: Store(FD, (lane, e), lc[1, e]))))))

    fd = np.zeros((32, 4), np.float32)
    run(warp_kernel("mma", (FA, FB, FC, FD), body), fa, fb, fc, fd)
    d = np.zeros((16, 8), np.float32)
    d[cr, ccol] = fd
    want = a.astype(np.float64) @ b.astype(np.float64) + cc
    np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-5)


def test_mma_reads_poison_from_an_unloaded_fragment():
    la, lb, lc = Buffer("la", (8,), "float16", "local"), Buffer("lb", (4,), "float16", "local"), \
        Buffer("lc", (4,), "float32", "local")
    FD = Buffer("FD", (32, 4), "float32")

    def body(lane):
        return Allocate(la, Allocate(lb, Allocate(lc, seq(
            per_element(4, lambda e: Store(lc, (e,), Const(1.0, "float32"))),
            Intrinsic(mma_name("float16"), tuple(BufferRef(x, (0,)) for x in (lc, la, lb, lc))),
            per_element(4, lambda e: Store(FD, (lane, e), lc[e]))))))

    fd = np.zeros((32, 4), np.float32)
    run(warp_kernel("mma_poison", (FD,), body), fd)
    assert np.isnan(fd).all()


def _ldmatrix_kernel(num, trans, dtype, row_of_lane, col_of_lane, shape=(16, 24)):
    """A warp copies G into shared memory, then ldmatrix with each lane addressing
    S[row_of_lane(lane), col_of_lane(lane)]; lanes store their 2*num values to O[lane, :]."""
    G, O = Buffer("G", shape, dtype), Buffer("O", (32, 2 * num), dtype)
    S = Buffer("S", shape, dtype, "shared")
    F = Buffer("F", (2 * num,), dtype, "local")

    def body(lane):
        r, q = Var("r"), Var("q")
        fill = For(r, shape[0], For(q, shape[1], Store(S, (r, q), G[r, q])))
        return seq(
            IfThenElse(lane.eq(0), fill), Barrier(),  # one writer: redundant writes of all lanes would race
            Allocate(F, seq(Intrinsic(ldmatrix_name(num, trans),
                                      (BufferRef(F, (0,)), BufferRef(S, (row_of_lane(lane), col_of_lane(lane))))),
                            per_element(2 * num, lambda e: Store(O, (lane, e), F[e])))))

    return Kernel("ldm", (G, O), Allocate(S, For(Var("lane"), 32, body(Var("lane")), "threadIdx.x")), target="cuda")


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_distributes_rows_per_the_ptx_layout(num, trans):
    rng = np.random.default_rng(2 + num)
    g = rng.standard_normal((16, 24)).astype(np.float16)
    # lane 8m + r addresses row (r + 3) at column 8 * (m % 2) + (m // 2) * 8 of a shifted window;
    # any 16-byte aligned rows will do, these are deliberately scattered.
    rows = lambda ln: (ln % 8) * 2 % 16 + (ln // 8) % 2  # noqa: E731
    cols = lambda ln: (ln // 16) * 8  # noqa: E731
    k = _ldmatrix_kernel(num, trans, "float16", rows, cols)
    o = np.zeros((32, 2 * num), np.float16)
    run(k, g, o)
    want = np.zeros_like(o)
    for m in range(num):
        mat = np.stack([g[rows(8 * m + r), cols(8 * m + r):cols(8 * m + r) + 8] for r in range(8)])
        if trans:
            mat = mat.T
        for ln in range(32):
            want[ln, 2 * m] = mat[ln // 4, 2 * (ln % 4)]
            want[ln, 2 * m + 1] = mat[ln // 4, 2 * (ln % 4) + 1]
    np.testing.assert_array_equal(o, want)


def test_ldmatrix_misaligned_row_raises():
    k = _ldmatrix_kernel(1, False, "float16", lambda ln: ln % 8, lambda ln: c(4))
    with pytest.raises(ExecutionError, match="16-byte aligned"):
        run(k, np.ones((16, 24), np.float16), np.zeros((32, 2), np.float16))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_ldmatrix_then_mma_computes_a_tile_product(dtype):
    """ldmatrix.x4 of a row-major 16x16 A and ldmatrix.x2.trans of a k x n B give exactly the
    mma fragments: the product matches numpy."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((16, 16)).astype(NP[dtype])
    b = rng.standard_normal((16, 8)).astype(NP[dtype])
    GA, GB, O = Buffer("GA", (16, 16), dtype), Buffer("GB", (16, 8), dtype), Buffer("O", (16, 8), "float32")
    SA, SB = Buffer("SA", (16, 16), dtype, "shared"), Buffer("SB", (16, 8), dtype, "shared")
    FA, FB, FC = Buffer("FA", (8,), dtype, "local"), Buffer("FB", (4,), dtype, "local"), Buffer("FC", (4,), "float32",
                                                                                                "local")
    lane, r, q = Var("lane"), Var("r"), Var("q")
    fill = seq(For(r, 16, For(q, 16, Store(SA, (r, q), GA[r, q]))),
               For(Var("r2"), 16, For(Var("q2"), 8, Store(SB, (Var("r2"), Var("q2")), GB[Var("r2"), Var("q2")]))))
    g, t = lane // 4, lane % 4
    e = Var("e")
    body = seq(
        IfThenElse(lane.eq(0), fill), Barrier(),
        Allocate(FA, Allocate(FB, Allocate(FC, seq(
            For(e, 4, Store(FC, (e,), Const(0.0, "float32"))),
            Intrinsic(ldmatrix_name(4, False), (BufferRef(FA, (0,)), BufferRef(SA, (lane % 16, (lane // 16) * 8)))),
            Intrinsic(ldmatrix_name(2, True), (BufferRef(FB, (0,)), BufferRef(SB, (lane % 16, c(0))))),
            Intrinsic(mma_name(dtype), tuple(BufferRef(x, (0,)) for x in (FC, FA, FB, FC))),
            For(Var("e2"), 4, Store(O, (g + (Var("e2") // 2) * 8, t * 2 + Var("e2") % 2), FC[Var("e2")])))))))
    k = Kernel("ldmma", (GA, GB, O), Allocate(SA, Allocate(SB, For(lane, 32, body, "threadIdx.x"))), target="cuda")
    o = np.zeros((16, 8), np.float32)
    run(k, a, b, o)
    np.testing.assert_allclose(o, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-5)


def _cp_async_kernel(nbytes, cache, waits, n_threads=8, dtype="float32"):
    """Each thread copies its `nbytes` chunk of G into shared S with cp.async, in two groups
    (first half of the chunks, then second); `waits` are the intrinsics run before the barrier;
    then every thread copies S to O."""
    per = nbytes // np.dtype(NP[dtype]).itemsize
    n = n_threads * per
    G, O, S = Buffer("G", (2, n), dtype), Buffer("O", (2, n), dtype), Buffer("S", (2, n), dtype, "shared")
    t = Var("t")
    name = copy_name(cache, nbytes)
    body = seq(
        Intrinsic(name, (BufferRef(S, (c(0), t * per)), BufferRef(G, (c(0), t * per)))),
        Intrinsic("cp.async.commit_group", ()),
        Intrinsic(name, (BufferRef(S, (c(1), t * per)), BufferRef(G, (c(1), t * per)))),
        Intrinsic("cp.async.commit_group", ()),
        *waits, Barrier(),
        For(Var("x"), 2, For(Var("y"), per, Store(O, (Var("x"), t * per + Var("y")), S[Var("x"), t * per + Var("y")]))))
    return Kernel("cpa", (G, O), Allocate(S, For(t, n_threads, body, "threadIdx.x")), target="cuda"), (2, n)


@pytest.mark.parametrize("cache,nbytes", [("ca", 4), ("ca", 8), ("ca", 16), ("cg", 16)])
def test_cp_async_lands_at_the_wait(cache, nbytes):
    rng = np.random.default_rng(nbytes)
    wait_all = Intrinsic("cp.async.wait_all", ())
    k, shape = _cp_async_kernel(nbytes, cache, [wait_all])
    g = rng.standard_normal(shape).astype(np.float32)
    o = np.zeros(shape, np.float32)
    run(k, g, o)
    np.testing.assert_array_equal(o, g)
    # no wait: the race checker reports the read of the copy's destination; without it every
    # element read is the shared buffer's poison
    k, _ = _cp_async_kernel(nbytes, cache, [])
    with pytest.raises(RaceError, match="async proxy"):
        run(k, g, o)
    run(k, g, o, race_check=False)
    assert np.isnan(o).all()


def test_cp_async_wait_group_counts_the_most_recent_groups():
    rng = np.random.default_rng(7)
    wait1 = Intrinsic("cp.async.wait_group", (c(1),))
    k, shape = _cp_async_kernel(16, "cg", [wait1])
    g = rng.standard_normal(shape).astype(np.float32)
    o = np.zeros(shape, np.float32)
    with pytest.raises(RaceError, match="async proxy"):  # the most recent group may still be in flight
        run(k, g, o)
    run(k, g, o, race_check=False)
    np.testing.assert_array_equal(o[0], g[0])  # the older group landed
    assert np.isnan(o[1]).all()  # the most recent one did not
    k, _ = _cp_async_kernel(16, "cg", [Intrinsic("cp.async.wait_group", (c(0),))])
    run(k, g, o)
    np.testing.assert_array_equal(o, g)


def test_cp_async_misaligned_raises():
    G, S = Buffer("G", (16,), "float32"), Buffer("S", (16,), "float32", "shared")
    t = Var("t")
    k = Kernel("mis", (G,), Allocate(S, For(t, 2, Intrinsic(copy_name("cg", 16), (BufferRef(S, (t * 4 + 1,)),
                                                                                   BufferRef(G, (t * 4,)))),
                                            "threadIdx.x")), target="cuda")
    with pytest.raises(ExecutionError, match="16-byte aligned"):
        run(k, np.ones(16, np.float32))


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_shfl_bfly_tree_reduction_gives_every_lane_the_sum(dtype):
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(64) * 100).astype(NP[dtype])
    X, O = Buffer("X", (64,), dtype), Buffer("O", (64,), dtype)
    V, T = Buffer("V", (1,), dtype, "local"), Buffer("T", (1,), dtype, "local")
    t = Var("t")
    steps = []
    for off in (16, 8, 4, 2, 1):
        steps += [Intrinsic(shfl_name("bfly"), (BufferRef(T, (c(0),)), V[0], c(off))),
                  Store(V, (c(0),), V[0] + T[0])]
    body = Allocate(V, Allocate(T, seq(Store(V, (c(0),), X[t]), *steps, Store(O, (t,), V[0]))))
    o = np.zeros(64, NP[dtype])
    run(Kernel("bfly", (X, O), For(t, 64, body, "threadIdx.x"), target="cuda"), x, o)
    want = np.repeat(x.reshape(2, 32).astype(np.float64).sum(axis=1), 32)
    np.testing.assert_allclose(o.astype(np.float64), want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("mode", ["down", "up", "idx", "bfly"])
def test_shfl_source_lanes(mode):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(32).astype(np.float32)
    args = rng.integers(0, 40, 32).astype(np.int32)
    X, A, O = Buffer("X", (32,), "float32"), Buffer("A", (32,), "int32"), Buffer("O", (32,), "float32")
    T = Buffer("T", (1,), "float32", "local")
    t = Var("t")
    body = Allocate(T, seq(Intrinsic(shfl_name(mode), (BufferRef(T, (c(0),)), X[t], A[t])), Store(O, (t,), T[0])))
    o = np.zeros(32, np.float32)
    run(Kernel("shfl", (X, A, O), For(t, 32, body, "threadIdx.x"), target="cuda"), x, args, o)
    for ln in range(32):
        a = int(args[ln]) % 32  # PTX reads the low 5 bits of the lane operand
        src = {"down": ln + a, "up": ln - a, "idx": a, "bfly": ln ^ a}[mode]
        assert o[ln] == x[src if 0 <= src < 32 else ln], (mode, ln, a)


def test_shfl_needs_a_full_warp():
    X, O = Buffer("X", (8,), "float32"), Buffer("O", (8,), "float32")
    T = Buffer("T", (1,), "float32", "local")
    t = Var("t")
    body = Allocate(T, seq(Intrinsic(shfl_name("down"), (BufferRef(T, (c(0),)), X[t], c(1))), Store(O, (t,), T[0])))
    with pytest.raises(ExecutionError, match="full warp"):
        run(Kernel("s8", (X, O), For(t, 8, body, "threadIdx.x"), target="cuda"), np.ones(8, np.float32),
            np.zeros(8, np.float32))


# -- the table's API ----------------------------------------------------------------------------

def test_table_api_and_default_registry():
    names = [e.name for e in all_intrinsics()]
    assert len(names) == len(set(names)) == len(TABLE)
    for want in (mma_name("float16"), mma_name("bfloat16"), ldmatrix_name(4, True), copy_name("cg", 16),
                 "cp.async.commit_group", "cp.async.wait_group", "cp.async.wait_all", shfl_name("bfly"),
                 shfl_name("down")):
        assert want in names
        assert lookup(want).name == want
        assert want in INTRINSICS and INTRINSICS[want] is interp_registry()[want]
    with pytest.raises(TesselError, match="unknown intrinsic 'mma.bogus'"):
        lookup("mma.bogus")
    e = lookup(ldmatrix_name(2, True))
    assert e.scope == "warp" and e.lanes == 32 and e.reads() == [1] and e.writes() == [0]
    assert e.operands[0].region(Buffer("F", (3, 4), "float16", "local")) == (1, 4)
    assert lookup(copy_name("ca", 8)).operands[1].region(Buffer("G", (9, 64), "float16")) == (1, 4)
    assert lookup(mma_name("float16")).cost.flops == 4096


def test_call_checks_name_the_problem():
    e = lookup(mma_name("float16"))
    la, lc = Buffer("la", (8,), "float16", "local"), Buffer("lc", (4,), "float32", "local")
    good = Intrinsic(e.name, (BufferRef(lc, (0,)), BufferRef(la, (0,)), BufferRef(la, (0,)), BufferRef(lc, (0,))))
    assert e.problems(good) == []
    bad = Intrinsic(e.name, (BufferRef(la, (0,)), BufferRef(la, (0,)), BufferRef(la, (0,)), BufferRef(lc, (0,))))
    with pytest.raises(TesselError, match="operand 'd'.*float16"):
        e.check(bad)
    with pytest.raises(TesselError, match="takes 4 argument"):
        e.check(Intrinsic(e.name, ()))
    w = lookup("cp.async.wait_group")
    assert w.problems(Intrinsic(w.name, (Var("n"),)))[0].endswith("got n")
    cp = lookup(copy_name("cg", 16))
    S, G = Buffer("S", (64,), "float16", "shared"), Buffer("G", (64,), "float16")
    assert "shared" in cp.problems(Intrinsic(cp.name, (BufferRef(G, (0,)), BufferRef(G, (0,)))))[0]
    assert cp.cuda_text(["&S[8]", "&G[8]"]) == "tessel::cp_async_cg_16(&S[8], &G[8]);"
    assert isinstance(S, Buffer) and isinstance(Load(S, (0,)), Load)


def test_device_header_selects_wrappers():
    full = device_header()
    only = device_header([shfl_name("bfly")])
    assert "shfl_bfly" in only and "mma_m16n8k16" not in only and "smem_addr" in only
    assert len(only) < len(full)
    for e in all_intrinsics():  # every block of every wrapper, once (families share their helpers)
        for block in _blocks(e.header):
            assert full.count(block) == 1, (e.name, block[:80])


# -- nvcc ------------------------------------------------------------------------------------------

_CT = {"float16": "__half", "bfloat16": "__nv_bfloat16", "float32": "float", "int32": "int", "int8": "signed char"}


def _classic():
    """The pre-Hopper entries (sm_80); the Hopper ones have their own probe (test_hopper_build.py)."""
    from tessel.ir.intrinsics import HOPPER_MODULES

    hopper = {e.name for m in HOPPER_MODULES for e in m.entries()}
    return [e for e in all_intrinsics() if e.name not in hopper]


def _probe_source() -> str:
    """A kernel calling every wrapper once, arguments printed the way the CUDA printer does."""
    lines = [device_header([e.name for e in _classic()]),
             'extern "C" __global__ void probe(const __half* gh, const float* gf, float* out) {',
             "  __shared__ __align__(16) __half sh[512];",
             "  __shared__ __align__(16) float sf[512];",
             "  int lane = threadIdx.x & 31; float acc = 0.f;"]
    for k, e in enumerate(_classic()):
        dtype = next((o.dtypes[0] for o in e.operands if o.dtypes), "float16")
        if e.name.startswith("cp.async.c"):
            dtype = "float32" if k % 2 else "float16"
        args = []
        for j, op in enumerate(e.operands):
            d = op.dtypes[0] if len(op.dtypes) == 1 else dtype
            if not op.is_buffer:
                args.append("2" if op.const else ("(float)lane" if d == "float32" else "lane"))
            elif op.scopes == ("shared",):
                args.append(f"&{'sf' if d == 'float32' else 'sh'}[(lane % 16) * 8]")
            elif op.scopes == ("global",):
                args.append(f"&{'gf' if d == 'float32' else 'gh'}[lane * 8]")
            else:
                n = op.count(d)
                lines.append(f"  {_CT[d]} v{k}_{j}[{n}];")
                lines.append(f"  for (int q = 0; q < {n}; ++q) v{k}_{j}[q] = ({_CT[d]})(float)(q + lane);")
                args.append(f"&v{k}_{j}[0]")
        lines.append("  " + e.cuda_text(args))
        lines += [f"  acc += (float)v{k}_{j}[0];" for j, op in enumerate(e.operands)
                  if op.is_buffer and op.role != "read" and args[j].startswith("&v")]
    lines.append("  out[threadIdx.x] = acc;\n}")
    return "\n".join(lines)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_device_header_compiles_with_nvcc(arch, tmp_path):
    src = tmp_path / "probe.cu"
    src.write_text(_probe_source())
    r = subprocess.run(["nvcc", f"-arch={arch}", "-c", str(src), "-o", str(tmp_path / "probe.o"), "-Xptxas", "-v"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    # fragments stay in registers: the wrappers take no stack frame
    assert "0 bytes stack frame" in r.stderr, r.stderr[-2000:]


# -- on the GPU: the device header against the interpreter's meaning -------------------------------

_GPU_SRC = r"""
extern "C" __global__ void mma_k(const T16* fa, const T16* fb, const float* fc, float* fd) {
  int l = threadIdx.x; T16 a[8], b[4]; float acc[4];
  for (int i = 0; i < 8; ++i) a[i] = fa[l * 8 + i];
  for (int i = 0; i < 4; ++i) { b[i] = fb[l * 4 + i]; acc[i] = fc[l * 4 + i]; }
  MMA(acc, a, b, acc);
  for (int i = 0; i < 4; ++i) fd[l * 4 + i] = acc[i];
}
extern "C" __global__ void ldm_k(const T16* g, T16* o) {  // g: 16 x 24; o: 6 variants x 32 x 8
  __shared__ __align__(16) T16 s[16 * 24];
  int l = threadIdx.x;
  for (int i = l; i < 16 * 24; i += 32) s[i] = g[i];
  __syncthreads();
  const T16* p = &s[((l % 8) * 2 % 16 + (l / 8) % 2) * 24 + (l / 16) * 8];
  T16 f[8];
  tessel::ldmatrix_x1(f, p); for (int i = 0; i < 2; ++i) o[(0 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x1_trans(f, p); for (int i = 0; i < 2; ++i) o[(1 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x2(f, p); for (int i = 0; i < 4; ++i) o[(2 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x2_trans(f, p); for (int i = 0; i < 4; ++i) o[(3 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x4(f, p); for (int i = 0; i < 8; ++i) o[(4 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x4_trans(f, p); for (int i = 0; i < 8; ++i) o[(5 * 32 + l) * 8 + i] = f[i];
}
extern "C" __global__ void cpa_k(const float* g, float* o) {  // 8 threads x 16 floats, 4 copy sizes
  __shared__ __align__(16) float s[128];
  int t = threadIdx.x;
  tessel::cp_async_ca_4(&s[t * 16], &g[t * 16]);
  tessel::cp_async_ca_4(&s[t * 16 + 1], &g[t * 16 + 1]);
  tessel::cp_async_ca_8(&s[t * 16 + 2], &g[t * 16 + 2]);
  tessel::cp_async_commit_group();
  tessel::cp_async_ca_16(&s[t * 16 + 4], &g[t * 16 + 4]);
  tessel::cp_async_commit_group();
  tessel::cp_async_cg_16(&s[t * 16 + 8], &g[t * 16 + 8]);
  tessel::cp_async_ca_16(&s[t * 16 + 12], &g[t * 16 + 12]);
  tessel::cp_async_wait_group(1);
  tessel::cp_async_wait_all();
  __syncthreads();
  for (int i = 0; i < 16; ++i) o[t * 16 + i] = s[((t + 1) % 8) * 16 + i];
}
extern "C" __global__ void shfl_k(const float* x, const int* a, float* o) {  // o: 4 modes x 32
  int l = threadIdx.x; float v;
  tessel::shfl_bfly(&v, x[l], a[l]); o[l] = v;
  tessel::shfl_down(&v, x[l], a[l]); o[32 + l] = v;
  tessel::shfl_up(&v, x[l], a[l]); o[64 + l] = v;
  tessel::shfl_idx(&v, x[l], a[l]); o[96 + l] = v;
}
"""


def _gpu_module(tmp_path, dtype):
    import cupy

    ct = _CT[dtype]
    short = {"float16": "f16", "bfloat16": "bf16"}[dtype]
    src = tmp_path / f"gpu_{short}.cu"
    src.write_text(device_header() + f"\n#define T16 {ct}\n#define MMA tessel::mma_m16n8k16_f32_{short}\n" + _GPU_SRC)
    cubin = tmp_path / f"gpu_{short}.cubin"
    cc = cupy.cuda.Device().compute_capability  # "90" on an H100/H200
    arch = f"sm_{cc}{'a' if cc == '90' else ''}"
    subprocess.run(["nvcc", f"-arch={arch}", "-cubin", str(src), "-o", str(cubin)], check=True, timeout=240)
    return cupy.RawModule(path=str(cubin))


def _bits(a):
    return a.view(np.uint16)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_gpu_wrappers_match_the_interpreter(dtype, tmp_path):
    import cupy

    mod = _gpu_module(tmp_path, dtype)
    rng = np.random.default_rng(10)
    # mma: per-lane fragments in, per-lane D out; the interpreter runs the same data
    fa = rng.standard_normal((32, 8)).astype(NP[dtype])
    fb = rng.standard_normal((32, 4)).astype(NP[dtype])
    fc = rng.standard_normal((32, 4)).astype(np.float32)
    fd = cupy.zeros((32, 4), cupy.float32)
    mod.get_function("mma_k")((1,), (32,), (cupy.asarray(_bits(fa)), cupy.asarray(_bits(fb)), cupy.asarray(fc), fd))
    ar, ac = _gather_table(ptx_a, 8)
    br, bc = _gather_table(ptx_b, 4)
    cr, ccol = _gather_table(ptx_c, 4)
    a, b, cmat = np.zeros((16, 16)), np.zeros((16, 8)), np.zeros((16, 8))
    a[ar, ac], b[br, bc], cmat[cr, ccol] = fa, fb, fc
    np.testing.assert_allclose(cupy.asnumpy(fd), (a @ b + cmat)[cr, ccol], rtol=1e-5, atol=1e-5)
    # ldmatrix, all six forms, against the interpreter
    g = rng.standard_normal((16, 24)).astype(NP[dtype])
    o = cupy.zeros((6, 32, 8), cupy.uint16)
    mod.get_function("ldm_k")((1,), (32,), (cupy.asarray(_bits(g)), o))
    got = cupy.asnumpy(o)
    rows = lambda ln: (ln % 8) * 2 % 16 + (ln // 8) % 2  # noqa: E731
    cols = lambda ln: (ln // 16) * 8  # noqa: E731
    for v, (num, trans) in enumerate([(1, False), (1, True), (2, False), (2, True), (4, False), (4, True)]):
        want = np.zeros((32, 2 * num), NP[dtype])
        run(_ldmatrix_kernel(num, trans, dtype, rows, cols), g, want)
        np.testing.assert_array_equal(got[v, :, :2 * num], _bits(want), err_msg=f"x{num} trans={trans}")


@pytest.mark.gpu
def test_gpu_cp_async_and_shuffles(tmp_path):
    import cupy

    mod = _gpu_module(tmp_path, "float16")
    rng = np.random.default_rng(11)
    g = rng.standard_normal(128).astype(np.float32)
    o = cupy.zeros(128, cupy.float32)
    mod.get_function("cpa_k")((1,), (8,), (cupy.asarray(g), o))
    np.testing.assert_array_equal(cupy.asnumpy(o), np.roll(g.reshape(8, 16), -1, axis=0).reshape(-1))
    x = rng.standard_normal(32).astype(np.float32)
    args = rng.integers(0, 40, 32).astype(np.int32)
    o = cupy.zeros(128, cupy.float32)
    mod.get_function("shfl_k")((1,), (32,), (cupy.asarray(x), cupy.asarray(args), o))
    got = cupy.asnumpy(o).reshape(4, 32)
    X, A, O = Buffer("X", (32,), "float32"), Buffer("A", (32,), "int32"), Buffer("O", (32,), "float32")
    T = Buffer("T", (1,), "float32", "local")
    t = Var("t")
    for row, mode in enumerate(["bfly", "down", "up", "idx"]):
        body = Allocate(T, seq(Intrinsic(shfl_name(mode), (BufferRef(T, (c(0),)), X[t], A[t])), Store(O, (t,), T[0])))
        want = np.zeros(32, np.float32)
        run(Kernel("shfl", (X, A, O), For(t, 32, body, "threadIdx.x"), target="cuda"), x, args, want)
        np.testing.assert_array_equal(got[row], want, err_msg=mode)
