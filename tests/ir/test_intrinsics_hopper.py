"""The Hopper intrinsics' interpreter meaning against numpy references written here from the PTX
ISA / CUTLASS definitions (not from tessel.ir.intrinsics), on fresh random data: swizzles, TMA
loads and stores (out-of-bounds fill, clipping), mbarrier phases and transaction counts, wgmma
from shared-memory descriptors in every swizzle mode and from registers, stmatrix, named
barriers, atomics; and the hello-world kernels, each failing once its wait or barrier is gone."""

from __future__ import annotations

import numpy as np
import pytest

from tests.codegen import gpu_hopper_kernels as H
from tessel.ir.interp import Context, ExecutionError, RaceError, run
from tessel.ir.interp.runtime import Ref
from tessel.ir.intrinsics import TABLE, lookup, mbarrier, tma, wgmma
from tessel.ir.nodes import Allocate, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel
from tessel.ir.nodes import Store, Var, collect, rewrite, seq

BF16 = H.BF16


def c(v):
    return Const(v)


def _rf(buf, *idx):
    return BufferRef(buf, tuple(idx))


def cute_swizzle(off: int, bbits: int) -> int:
    """CUTLASS Swizzle<B, M=4, S=3> on a byte offset: yyy_mask = ((1 << B) - 1) << (M + S);
    off ^ ((off & yyy_mask) >> S)."""
    mask = ((1 << bbits) - 1) << 7
    return off ^ ((off & mask) >> 3)


@pytest.mark.parametrize("swizzle,bbits", [(0, 0), (32, 1), (64, 2), (128, 3)])
def test_swizzle_is_cutlass_swizzle_b_4_3(swizzle, bbits):
    offs = np.arange(0, 4096, 2)
    assert [int(x) for x in tma.swizzle_offset(offs, swizzle)] == [cute_swizzle(int(o), bbits) for o in offs]
    # a bijection on every 1024-byte atom
    assert sorted(int(x) for x in tma.swizzle_offset(np.arange(1024), swizzle)) == list(range(1024))


# -- TMA ---------------------------------------------------------------------------------------------


_tma_kernel = H.tma_box_kernel


def _np_box(a, start, box):
    """The box of `a` at `start` with zeros outside `a`."""
    out = np.zeros(box, a.dtype)
    src = tuple(slice(max(s, 0), min(s + b, n)) for s, b, n in zip(start, box, a.shape))
    dst = tuple(slice(max(s, 0) - s, min(s + b, n) - s) for s, b, n in zip(start, box, a.shape))
    out[dst] = a[src]
    return out


def _image(box_values, swizzle):
    flat = box_values.reshape(-1)
    out = np.empty_like(flat)
    isz = flat.dtype.itemsize
    for i in range(flat.size):
        out[cute_swizzle(i * isz, {0: 0, 32: 1, 64: 2, 128: 3}[swizzle]) // isz] = flat[i]
    return out


@pytest.mark.parametrize("shape,dtype,start,box,swizzle", [
    ((40, 64), "bfloat16", (-3, 0), (16, 64), 128),
    ((9, 72), "float32", (5, 40), (8, 32), 128),
    ((3, 20, 16), "float16", (1, 15, 0), (2, 8, 16), 32),
    ((2, 3, 4, 5, 32), "float16", (1, 2, 1, 3, 0), (1, 2, 4, 2, 32), 64),
    ((100,), "float32", (90,), (32,), 0),
])
def test_tma_load_writes_the_swizzled_box_with_zero_fill(shape, dtype, start, box, swizzle):
    rng = np.random.default_rng(len(shape) * 7 + swizzle)
    npd = {"bfloat16": BF16, "float16": np.float16, "float32": np.float32}[dtype]
    a = (rng.standard_normal(shape) + 3).astype(npd)  # no zeros: the fill must show
    o = np.full(int(np.prod(box)), 7, npd)
    run(_tma_kernel(shape, dtype, start, box, swizzle), a, o)
    assert np.array_equal(o.astype(np.float32), _image(_np_box(a, start, box), swizzle).astype(np.float32))


@pytest.mark.parametrize("swizzle", [0, 128])
def test_tma_store_writes_the_box_clipped_and_only_after_its_wait(swizzle):
    rng = np.random.default_rng(swizzle)
    shape, box = (20, 64), (8, 64)
    a = rng.standard_normal(shape).astype(BF16)
    o = np.full(shape, 7, BF16)
    run(_tma_kernel(shape, "bfloat16", (4, 0), box, swizzle, store_at=(15, 0)), a, o)
    expect = np.full(shape, 7, BF16)
    expect[15:20] = a[4:9]  # rows 20..22 of the stored box fall outside O: not written
    assert np.array_equal(o.astype(np.float32), expect.astype(np.float32))
    o = np.full(shape, 7, BF16)
    run(_tma_kernel(shape, "bfloat16", (4, 0), box, swizzle, store_at=(15, 0), wait=False), a, o)
    assert (o.astype(np.float32) == 7).all()  # never waited for: nothing landed


def test_tma_box_rules_are_checked():
    with pytest.raises(ExecutionError, match="exactly 128 bytes"):
        run(_tma_kernel((8, 64), "bfloat16", (0, 0), (8, 32), 128), np.ones((8, 64), BF16), np.ones(256, BF16))
    with pytest.raises(ExecutionError, match="multiples of 16 bytes"):  # 70 floats a row: 280 bytes
        run(_tma_kernel((9, 70), "float32", (0, 0), (8, 32), 128), np.ones((9, 70), np.float32),
            np.ones(256, np.float32))


# -- mbarrier ----------------------------------------------------------------------------------------


def _bar_ctx():
    buf = Buffer("bar", (2,), "int64", "shared")
    arr = np.zeros(2, np.int64)
    return Context((0, 0, 0), ((0, 0, 0),), {}), Ref(buf, arr, (0,), "k"), Ref(buf, arr, (1,), "k")


def _call(name, ctx, *args):
    return lookup(name).semantics.fn(ctx, *args)


def _ready(ctx, ref, parity):
    return lookup(mbarrier.WAIT).semantics.ready(ctx, ref, parity)


def test_mbarrier_phase_completes_on_count_and_parity_alternates():
    ctx, bar, other = _bar_ctx()
    _call(mbarrier.INIT, ctx, bar, 2)
    _call(mbarrier.INIT, ctx, other, 1)
    assert _ready(ctx, bar, 1) and not _ready(ctx, bar, 0)  # fresh: phase 0 pending, "parity 1" done
    _call(mbarrier.ARRIVE, ctx, bar)
    assert not _ready(ctx, bar, 0)
    _call(mbarrier.ARRIVE, ctx, bar)
    assert _ready(ctx, bar, 0) and not _ready(ctx, bar, 1)  # phase 0 done, phase 1 pending
    _call(mbarrier.ARRIVE, ctx, bar)
    _call(mbarrier.ARRIVE, ctx, bar)
    assert _ready(ctx, bar, 1) and not _ready(ctx, bar, 0)
    assert _ready(ctx, other, 1) and not _ready(ctx, other, 0)  # barriers are independent


def test_mbarrier_transaction_bytes_hold_the_phase_until_the_copy_lands():
    ctx, bar, _ = _bar_ctx()
    _call(mbarrier.INIT, ctx, bar, 1)
    _call(mbarrier.ARRIVE_TX, ctx, bar, 256)
    assert not _ready(ctx, bar, 0)
    landed = []
    mbarrier.add_transfer(ctx, bar, 128, lambda ctx2: landed.append(1) or 0, 0)
    assert not _ready(ctx, bar, 0) and not landed
    mbarrier.add_transfer(ctx, bar, 128, lambda ctx2: landed.append(2) or 0, 0)
    assert _ready(ctx, bar, 0) and landed == [1, 2]  # delivered when the phase is checked


def test_mbarrier_misuse_raises():
    ctx, bar, other = _bar_ctx()
    with pytest.raises(ExecutionError, match="before mbarrier.init"):
        _call(mbarrier.ARRIVE, ctx, bar)
    _call(mbarrier.INIT, ctx, bar, 1)
    _call(mbarrier.ARRIVE_TX, ctx, bar, 64)
    mbarrier.add_transfer(ctx, bar, 128, lambda ctx2: 0, 0)
    with pytest.raises(ExecutionError, match="expect_tx too small"):
        _ready(ctx, bar, 0)


# -- wgmma -------------------------------------------------------------------------------------------


k_major_offsets, mn_major_offsets, _place, MODES = H.k_major_offsets, H.mn_major_offsets, H.place, H.MODES
_wgmma_kernel = H.wgmma_image_kernel


@pytest.mark.parametrize("n,dtype,a,b", [
    (64, "bfloat16", "k128", "k128"), (128, "float16", "k64", "mn128"), (8, "bfloat16", "k32", "k_none"),
    (256, "float16", "k_none", "mn64"), (136, "bfloat16", "mn128", "k32"), (64, "float16", "mn64", "k64"),
])
def test_wgmma_from_descriptors_in_every_layout(n, dtype, a, b):
    rng = np.random.default_rng(n)
    npd = BF16 if dtype == "bfloat16" else np.float16
    am, bm = rng.standard_normal((64, 16)).astype(npd), rng.standard_normal((16, n)).astype(npd)
    a_mode, b_mode = MODES[a](64), MODES[b](n)
    offs = mn_major_offsets if a_mode[3] else k_major_offsets
    ia = _place(am, offs(64, *a_mode[:3]), 4096)
    offs = mn_major_offsets if b_mode[3] else k_major_offsets
    ib = _place(bm.T, offs(n, *b_mode[:3]), 8192)
    o = np.full((64, n), 7, np.float32)
    run(_wgmma_kernel(n, dtype, a_mode, b_mode), ia, ib, np.zeros((128, 8), npd), o)
    np.testing.assert_allclose(o, am.astype(np.float64) @ bm.astype(np.float64), rtol=1e-5, atol=1e-5)
    # a wrong stride (SBO) in A's descriptor reads other elements: a wrong product
    bad = (a_mode[0], a_mode[1], a_mode[2] * 2, a_mode[3])
    try:
        run(_wgmma_kernel(n, dtype, bad, b_mode), ia, ib, np.zeros((128, 8), npd), o)
    except ExecutionError as e:  # or it leaves the buffer
        assert "outside shared buffer" in str(e)
    else:
        assert not np.allclose(o, am.astype(np.float64) @ bm.astype(np.float64), rtol=1e-3, atol=1e-3)


def test_wgmma_with_a_from_registers():
    rng = np.random.default_rng(3)
    am, bm = rng.standard_normal((64, 16)).astype(BF16), rng.standard_normal((16, 64)).astype(BF16)
    fa = np.zeros((128, 8), BF16)
    for lane in range(128):  # PTX ISA: warp w rows 16w.., the m16n8k16 A layout per warp
        w, g, t = lane // 32, (lane % 32) // 4, lane % 4
        for i in range(8):
            fa[lane, i] = am[16 * w + g + 8 * ((i // 2) % 2), 2 * t + i % 2 + 8 * (i // 4)]
    b_mode = MODES["k128"](64)
    ib = _place(bm.T, k_major_offsets(64, *b_mode[:3]), 8192)
    o = np.full((64, 64), 7, np.float32)
    run(_wgmma_kernel(64, "bfloat16", MODES["k128"](64), b_mode, a_regs=True), np.zeros(4096, BF16), ib, fa, o)
    np.testing.assert_allclose(o, am.astype(np.float64) @ bm.astype(np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [8, 64, 136, 256])
def test_wgmma_accumulator_layout_is_the_ptx_figure_and_inverts(n):
    lay = wgmma.acc_layout(n)
    seen = set()
    for lane in range(128):
        w, g, t = lane // 32, (lane % 32) // 4, lane % 4
        for i in range(n // 2):
            rc = (16 * w + g + 8 * ((i // 2) % 2), 8 * (i // 4) + 2 * t + i % 2)
            assert lay.coords(lane, i) == rc
            assert lay.owner(*rc) == (lane, i)
            seen.add(rc)
    assert len(seen) == 64 * n


def test_wgmma_descriptor_round_trips():
    for addr, lbo, sbo, sw in ((0x400, 16, 1024, 128), (0x3FFF0, 2048, 512, 64), (0x80, 128, 256, 0)):
        d = wgmma.encode_desc(addr, lbo, sbo, sw)
        assert wgmma.decode_desc(d) == (addr, lbo, sbo, sw)
        assert (d & 0x3FFF) == addr >> 4 and (d >> 16) & 0x3FFF == lbo >> 4 and (d >> 32) & 0x3FFF == sbo >> 4


def test_overwriting_a_wgmma_operand_before_the_wait_races():
    # thread 0 rewrites A's shared tile between commit and wait: the tensor cores may still read it
    k, inputs, _ = H.wgmma_tile(n=64, k=64, drop=("clobber",))
    with pytest.raises(RaceError, match="'SA'"):
        run(k, *inputs(np.random.default_rng(0)))


# -- stmatrix, named barriers, atomics ---------------------------------------------------------------


@pytest.mark.parametrize("num,trans", [(1, False), (1, True), (2, False), (2, True), (4, False), (4, True)])
def test_stmatrix_places_each_lanes_pair(num, trans):
    k, inputs, reference = H.stmatrix_warp(num, trans)
    arrays = inputs(np.random.default_rng(num * 2 + trans))
    expect = reference(arrays)
    run(k, *arrays)
    assert np.array_equal(arrays[1], expect[1])


def _named_barrier_kernel(arrive=True, sync=True):
    """Warp 0 writes S and signals barrier 1 with bar.arrive; warp 1 waits with bar.sync, reads S."""
    S, O = Buffer("S", (32,), "float32", "shared"), Buffer("O", (32,), "float32")
    A = Buffer("A", (32,), "float32")
    t = Var("t")
    produce = [Store(S, (t,), A[t] * 2.0)] + ([Intrinsic("bar.arrive", (c(1), c(64)))] if arrive else [])
    consume = ([Intrinsic("bar.sync", (c(1), c(64)))] if sync else []) + [Store(O, (t - 32,), S[t - 32])]
    return Kernel("named", (A, O), Allocate(S, For(t, 64, IfThenElse(t < 32, seq(*produce), seq(*consume)),
                                                      "threadIdx.x")), target="cuda")


def test_named_barrier_orders_producer_and_consumer_warps():
    a = np.random.default_rng(5).standard_normal(32).astype(np.float32)
    for seed in range(4):
        o = np.full(32, 7, np.float32)
        run(_named_barrier_kernel(), a, o, seed=seed)
        assert np.array_equal(o, a * 2)
    with pytest.raises(RaceError, match="'S'"):
        run(_named_barrier_kernel(sync=False), a, np.zeros(32, np.float32), seed=1)
    with pytest.raises(ExecutionError, match="deadlock"):
        run(_named_barrier_kernel(arrive=False), a, np.zeros(32, np.float32), seed=1)


_atomic_kernel = H.atomic_kernel


@pytest.mark.parametrize("name,dtype,pair", [("red.add.f32", "float32", False), ("red.add.s32", "int32", False),
                                             ("red.max.s32", "int32", False),
                                             ("red.add.noftz.f16x2", "float16", True),
                                             ("red.add.noftz.bf16x2", "bfloat16", True)])
def test_atomics_from_every_block_combine(name, dtype, pair):
    rng = np.random.default_rng(len(name))
    npd = {"float32": np.float32, "int32": np.int32, "float16": np.float16, "bfloat16": BF16}[dtype]
    cells = 5
    a = (rng.integers(-50, 50, (96, 2) if pair else 96) if dtype == "int32"
         else rng.standard_normal((96, 2) if pair else 96)).astype(npd)
    y0 = (rng.integers(-50, 50, cells * (2 if pair else 1)) if dtype == "int32"
          else rng.standard_normal(cells * (2 if pair else 1))).astype(npd)
    y = y0.copy()
    run(_atomic_kernel(name, dtype, cells, pair=pair), a, y)
    flat_a = a.reshape(96, -1).astype(np.float64)
    expect = y0.astype(np.float64).reshape(cells, -1).copy()
    for i in range(96):
        expect[i % cells] = np.maximum(expect[i % cells], flat_a[i]) if "max" in name else expect[i % cells] + flat_a[i]
    tol = {"float32": 1e-5, "int32": 0, "float16": 2e-2, "bfloat16": 1e-1}[dtype]
    np.testing.assert_allclose(y.astype(np.float64).reshape(cells, -1), expect, rtol=tol, atol=tol)


def test_compare_and_swap_lets_exactly_one_thread_win():
    L, O = Buffer("L", (1,), "int32"), Buffer("O", (64,), "int32")
    old = Buffer("old", (1,), "int32", "local")
    t = Var("t")
    body = Allocate(old, seq(Intrinsic("atom.cas.b32", (_rf(old, 0), _rf(L, 0), c(-1), t + 1)), Store(O, (t,), old[0])))
    lock, o = np.full(1, -1, np.int32), np.zeros(64, np.int32)
    run(Kernel("cas", (L, O), For(t, 64, body, "threadIdx.x"), target="cuda"), lock, o, seed=4)
    assert (o == -1).sum() == 1 and lock[0] == np.flatnonzero(o == -1)[0] + 1
    assert set(o[o != -1]) == {lock[0]}  # the others all saw the winner's value


def test_the_table_has_every_wgmma_shape():
    for n in range(8, 257, 8):
        for dt in ("float16", "bfloat16"):
            assert wgmma.wgmma_name(n, dt) in TABLE and wgmma.wgmma_name(n, dt, True) in TABLE


# -- hello-world kernels: pass, and fail without their synchronisation ---------------------------------


def _run_maker(maker, seed=0, **kw):
    k, inputs, reference = maker(**kw)
    arrays = inputs(np.random.default_rng(seed))
    expect = reference([a.copy() for a in arrays])
    run(k, *arrays, seed=seed)
    return arrays, expect


@pytest.mark.parametrize("maker,kw,tol", [
    (H.tma_swizzle, {"row0": 60}, 0), (H.wgmma_tile, {}, 1e-5), (H.wgmma_tile, {"b_major": "mn", "n": 192}, 1e-5),
    (H.pipeline_ring, {"tiles": 4}, 1e-4), (H.pipeline_ring, {"tiles": 5, "n": 128}, 1e-4),
    (H.cluster_multicast, {}, 0), (H.atomic_splitk, {}, 1e-4),
])
def test_hello_world_matches_numpy(maker, kw, tol):
    for seed in (0, 1):
        arrays, expect = _run_maker(maker, seed, **kw)
        for got, want in zip(arrays, expect):
            if want is not None:
                np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("maker,drop", [
    (H.tma_swizzle, "wait"), (H.wgmma_tile, "wait"), (H.wgmma_tile, "wgmma_wait"), (H.cluster_multicast, "wait"),
])
def test_hello_world_without_its_wait_reads_poison(maker, drop):
    arrays, _ = _run_maker(maker, drop=(drop,))
    assert np.isnan(arrays[-1].astype(np.float32)).any()


@pytest.mark.parametrize("drop", ["full_wait", "empty_wait", "empty_arrive"])
def test_pipeline_ring_without_a_wait_or_arrive_fails(drop):
    with pytest.raises(ExecutionError):  # a race, a deadlock, or poison in the product
        arrays, expect = _run_maker(H.pipeline_ring, drop=(drop,))
        np.testing.assert_allclose(arrays[2], expect[2], rtol=1e-4, atol=1e-4)


def test_atomic_split_k_with_plain_stores_races():
    with pytest.raises(RaceError, match="different blocks"):
        _run_maker(H.atomic_splitk, drop=("atomic",))


@pytest.mark.parametrize("maker", [H.tma_swizzle, H.pipeline_ring])
def test_hello_world_without_its_barrier_races(maker):
    """Without the __syncthreads after mbarrier.init, other threads use the barrier unordered
    with its init."""
    for seed in range(3):
        with pytest.raises((RaceError, ExecutionError)):
            _run_maker(maker, seed, drop=("barrier",))


def test_named_barrier_handoff_over_rounds_and_without_its_syncs():
    arrays, expect = _run_maker(H.named_barrier_handoff, 1, rounds=4)
    assert np.array_equal(arrays[1], expect[1])
    k, inputs, _ = H.named_barrier_handoff(rounds=2)
    bad = _drop_intrinsics(k, "bar.sync")
    with pytest.raises(RaceError, match="S_nb"):
        run(bad, *inputs(np.random.default_rng(0)), seed=0)


def _drop_intrinsics(k, name):
    from tessel.ir.nodes import rewrite

    return rewrite(k, lambda node: seq() if isinstance(node, Intrinsic) and node.name == name else None)


def test_setmaxnreg_is_checked_and_otherwise_changes_nothing():
    arrays, expect = _run_maker(H.pipeline_ring, 0, tiles=3, regs=(40, 232))
    np.testing.assert_allclose(arrays[2], expect[2], rtol=1e-4, atol=1e-4)
    with pytest.raises(ExecutionError, match="multiple of 8"):
        _run_maker(H.pipeline_ring, 0, tiles=1, regs=(41, 232))


@pytest.mark.parametrize("n,b_major", [(64, "k"), (128, "mn"), (192, "mn")])
def test_hopper_ir_builders_make_a_gemm_tile(n, b_major):
    """tessel.ir.intrinsics.hopper_ir: TMA loads of A (64 x 128, K-major) and B (K-major B^T or
    MN-major), 8 k-steps of wgmma with advanced descriptors, a guarded epilogue store."""
    arrays, expect = _run_maker(H.builder_gemm_tile, n, n=n, b_major=b_major)
    np.testing.assert_allclose(arrays[2], expect[2], rtol=1e-5, atol=1e-5)


def test_remote_arrive_on_the_peer_ctas_barrier():
    arrays, expect = _run_maker(H.cluster_multicast, 0, remote_arrive=True)
    assert np.array_equal(arrays[1].view(np.int16), expect[1].view(np.int16))
    with pytest.raises(ExecutionError, match="deadlock"):
        _run_maker(H.cluster_multicast, 0, remote_arrive=True, drop=("remote_arrive",))

def _with_cluster_acquire(maker):
    """`maker` with every mbarrier wait turned into its cluster-scope acquire form."""
    def make(**kw):
        k, inputs, reference = maker(**kw)
        swap = lambda n: (Intrinsic(mbarrier.WAIT_CLUSTER, n.args)  # noqa: E731
                          if isinstance(n, Intrinsic) and n.name == mbarrier.WAIT else None)
        k2 = rewrite(k, swap, fixpoint=False)
        assert any(n.name == mbarrier.WAIT_CLUSTER for n in collect(k2, Intrinsic))
        return k2, inputs, reference
    return make


def test_cluster_scope_acquire_wait_orders_remote_arrivals_like_the_cta_wait():
    maker = _with_cluster_acquire(H.cluster_multicast)
    arrays, expect = _run_maker(maker, 1, remote_arrive=True)
    assert np.array_equal(arrays[1].view(np.int16), expect[1].view(np.int16))
    with pytest.raises(ExecutionError, match="deadlock"):
        _run_maker(maker, 1, remote_arrive=True, drop=("remote_arrive",))



@pytest.mark.parametrize("kw", [{}, {"n": 64, "stages": 2, "k_tiles": 5}])
def test_warp_specialised_gemm_tile_with_stmatrix_tma_store_epilogue(kw):
    arrays, expect = _run_maker(H.ws_gemm_tile, 0, **kw)
    np.testing.assert_allclose(arrays[2].astype(np.float64), expect[2].astype(np.float64), rtol=1e-2, atol=1e-2)
    assert (arrays[2][-1] != 7).all()  # the clipped TMA store reached the last row


def test_warp_specialised_gemm_tile_without_its_epilogue_barrier_races():
    with pytest.raises(RaceError, match="'CS'"):
        _run_maker(H.ws_gemm_tile, 0, drop=("epilogue_sync",))


def test_wgmma_layouts_agree_with_the_general_fragment_layouts():
    from tessel.ir.intrinsics import fragments

    for n in wgmma.NS:
        general, mine = fragments.wgmma_acc(n), wgmma.acc_layout(n)
        assert all(tuple(int(v) for v in general.coords(lane, i)) == mine.coords(lane, i)
                   for lane in range(0, 128, 5) for i in range(n // 2))
    general = fragments.wgmma_a()
    assert all(tuple(int(v) for v in general.coords(lane, i)) == wgmma.A_FRAGMENT.coords(lane, i)
               for lane in range(128) for i in range(8))


@pytest.mark.parametrize("n_kv", [64, 128])
def test_attention_tile_chains_an_accumulator_into_the_next_a_operand(n_kv):
    arrays, expect = _run_maker(H.attention_tile, 0, n_kv=n_kv)
    np.testing.assert_allclose(arrays[3], expect[3], rtol=1e-5, atol=1e-3)


def test_wgmma_reads_after_every_issuing_thread_not_only_the_first():
    """Each thread writes its own part of the operands, fences, and takes part in the wgmma: the
    tensor cores' reads come after every issuer's writes (no block barrier needed for that)."""
    rng = np.random.default_rng(11)
    am, bm = rng.standard_normal((64, 16)).astype(BF16), rng.standard_normal((16, 64)).astype(BF16)
    a_mode, b_mode = MODES["k128"](64), MODES["k128"](64)
    ia, ib = _place(am, k_major_offsets(64, *a_mode[:3]), 4096), _place(bm.T, k_major_offsets(64, *b_mode[:3]), 8192)
    o = np.full((64, 64), 7, np.float32)
    for seed in range(3):
        kernel = _wgmma_kernel(64, "bfloat16", a_mode, b_mode, barrier=False)
        run(kernel, ia, ib, np.zeros((128, 8), BF16), o, seed=seed)
        np.testing.assert_allclose(o, am.astype(np.float64) @ bm.astype(np.float64), rtol=1e-5, atol=1e-5)


_zfill_kernel = H.zfill_kernel


def test_cp_async_zfill_reads_src_bytes_and_zero_fills():
    rng = np.random.default_rng(2)
    g = (rng.standard_normal((6, 8)) + 5).astype(np.float16)
    sizes = np.array([16, 8, 0, 2, 16, 4, 0, 0], np.int32)  # rows 6, 7 lie past G: size 0, never read
    o = np.full((8, 8), 7, np.float16)
    run(_zfill_kernel(sizes), g, sizes, o)
    expect = np.zeros((8, 8), np.float16)
    for r, n in enumerate(sizes):
        if n:
            expect[r, :n // 2] = g[r, :n // 2]
    assert np.array_equal(o, expect)
    with pytest.raises(ExecutionError, match="out of bounds|leaves its shape"):
        run(_zfill_kernel(sizes), g, np.full(8, 16, np.int32), o)  # row 6 of G does not exist


def test_bulk_copy_lands_at_the_mbarrier_wait():
    g = np.random.default_rng(4).standard_normal(352).astype(np.float32)
    o = np.full(256, 7, np.float32)
    run(H.bulk_load_kernel(), g, o)
    assert np.array_equal(o, g[64:320])
