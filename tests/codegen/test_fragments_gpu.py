"""On an NVIDIA GPU: the CUDA wrapper of every new fragment intrinsic against the interpreter's
meaning, register by register in every lane.

Run: `python -m pytest -q -s -m gpu tests/codegen/test_fragments_gpu.py` (collected by the suite;
without a GPU and nvcc the tests skip themselves). Each kernel loads per-lane fragments from global
memory, runs one wrapper, and dumps each lane's result registers back; the interpreter runs the
same fragments through the same intrinsic. Fragments are gathered with the PTX ISA tables of
tests/ir/test_fragments.py. Covered: the seven mma.sync entries of mma_shapes.py, the six tile
ldmatrix forms of tiles.py, and P @ V with P converted from the accumulator (acc_to_a)."""

from __future__ import annotations

import subprocess

import ml_dtypes
import numpy as np
import pytest

from tessel.ir.interp import run
from tessel.ir.intrinsics import fragments as fr
from tessel.ir.intrinsics import mma as mma_mod
from tessel.ir.intrinsics import mma_shapes, tiles
from tessel.ir.intrinsics.header import assemble
from tests.ir import test_fragments as tf

pytestmark = pytest.mark.gpu

_CT = {"float16": "__half", "bfloat16": "__nv_bfloat16", "float32": "float", "int8": "signed char", "int32": "int"}
# |gpu - interpreter| bounds per input kind (floats: the hardware's summation order and rounding
# are unspecified). Measured on an H200, 2026-12-03, 4 random trials each: f16 4.8e-7, bf16 9.5e-7,
# tf32 4.8e-7, e4m3 0, e5m2 0 (s8/u8 compare exactly).
TOL = {"f16": 1e-5, "bf16": 1e-5, "tf32": 1e-5, "e4m3": 1e-5, "e5m2": 1e-5}


def _mma_kernel_src(s) -> str:
    it, ct = _CT[s.in_dtype], _CT[s.acc]
    na, nb, nc = s.a.elems, s.b.elems, s.c.elems
    return f"""
extern "C" __global__ void k_{s.fn}(const {it}* fa, const {it}* fb, const {ct}* fc, {ct}* fd) {{
  int l = threadIdx.x; {it} a[{na}], b[{nb}]; {ct} acc[{nc}];
  for (int i = 0; i < {na}; ++i) a[i] = fa[l * {na} + i];
  for (int i = 0; i < {nb}; ++i) b[i] = fb[l * {nb} + i];
  for (int i = 0; i < {nc}; ++i) acc[i] = fc[l * {nc} + i];
  tessel::{s.fn}(acc, a, b, acc);
  for (int i = 0; i < {nc}; ++i) fd[l * {nc} + i] = acc[i];
}}
"""


_LDT_SRC = r"""
extern "C" __global__ void k_ldt(const __half* g, __half* o) {  // g: 24 x 40; tile at (5, 16), pitch 40
  __shared__ __align__(16) __half s[24 * 40];
  int l = threadIdx.x;
  for (int i = l; i < 24 * 40; i += 32) s[i] = g[i];
  __syncthreads();
  const __half* t = &s[5 * 40 + 16];
  __half f[8];
  tessel::ldmatrix_x1_tile(f, t, 40); for (int i = 0; i < 2; ++i) o[(0 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x1_trans_tile(f, t, 40); for (int i = 0; i < 2; ++i) o[(1 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x2_tile(f, t, 40); for (int i = 0; i < 4; ++i) o[(2 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x2_trans_tile(f, t, 40); for (int i = 0; i < 4; ++i) o[(3 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x4_tile(f, t, 40); for (int i = 0; i < 8; ++i) o[(4 * 32 + l) * 8 + i] = f[i];
  tessel::ldmatrix_x4_trans_tile(f, t, 40); for (int i = 0; i < 8; ++i) o[(5 * 32 + l) * 8 + i] = f[i];
}
"""

# S = Q K^T in two m16n8k16 accumulators, P = S as half (acc_to_a's re-indexing), O = P V; S dumped too.
_PV_SRC = r"""
extern "C" __global__ void k_pv(const __half* q, const __half* kt, const __half* v, float* s, float* o) {
  int l = threadIdx.x; __half fq[8], fk[2][4], fv[4], fp[8]; float acc[2][4], fo[4];
  for (int i = 0; i < 8; ++i) fq[i] = q[l * 8 + i];
  for (int j = 0; j < 2; ++j) for (int i = 0; i < 4; ++i) fk[j][i] = kt[(j * 32 + l) * 4 + i];
  for (int i = 0; i < 4; ++i) { fv[i] = v[l * 4 + i]; fo[i] = 0.f; acc[0][i] = 0.f; acc[1][i] = 0.f; }
  tessel::mma_m16n8k16_f32_f16(acc[0], fq, fk[0], acc[0]);
  tessel::mma_m16n8k16_f32_f16(acc[1], fq, fk[1], acc[1]);
  for (int i = 0; i < 8; ++i) fp[i] = __float2half_rn(acc[i / 4][i % 4]);
  tessel::mma_m16n8k16_f32_f16(fo, fp, fv, fo);
  for (int j = 0; j < 2; ++j) for (int i = 0; i < 4; ++i) s[(j * 32 + l) * 4 + i] = acc[j][i];
  for (int i = 0; i < 4; ++i) o[l * 4 + i] = fo[i];
}
"""


def source() -> str:
    """The CUDA source: the wrappers (device header parts) and one test kernel per intrinsic family."""
    ents = mma_shapes.entries() + tiles.entries() + [e for e in mma_mod.entries() if "f16.f16" in e.name]
    return assemble([e.header for e in ents]) + "".join(_mma_kernel_src(s) for s in mma_shapes.SHAPES) + \
        _LDT_SRC + _PV_SRC


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    import cupy

    d = tmp_path_factory.mktemp("gpu_fragments")
    (d / "frag.cu").write_text(source())
    cc = cupy.cuda.Device().compute_capability  # "90" on an H100/H200
    arch = f"sm_{cc}{'a' if cc == '90' else ''}"
    r = subprocess.run(["nvcc", f"-arch={arch}", "-cubin", str(d / "frag.cu"), "-o", str(d / "frag.cubin")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return cupy.RawModule(path=str(d / "frag.cubin"))


def _dev(a):
    """A device copy of `a` (16-bit floats as their bits: cupy has no bfloat16)."""
    import cupy

    if a.dtype in (np.float16, ml_dtypes.bfloat16):
        a = a.view(np.uint16)
    return cupy.asarray(np.ascontiguousarray(a))


@pytest.mark.parametrize("shape", mma_shapes.SHAPES, ids=[f"m{s.m}n{s.n}k{s.k}.{s.kind}" for s in mma_shapes.SHAPES])
def test_gpu_mma_registers_match_the_interpreter(module, shape):
    import cupy

    pa, pb = tf.PTX_TABLES[f"m16n8k{shape.k}.{shape.kind}"]
    ar, ac = tf._table(pa, 32, shape.a.elems)
    br, bc = tf._table(pb, 32, shape.b.elems)
    cr, cc = tf._table(tf.ptx_acc, 32, 4)
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(4):
        a, b, _, _, c = tf.random_operands(shape.kind, shape.m, shape.n, shape.k, rng)
        fa, fb, fc = a[ar, ac], b[br, bc], c[cr, cc]
        want = np.full((32, 4), 7, dtype=c.dtype)
        run(tf._mma_kernel(shape.name, shape.in_dtype, shape.acc, shape.a.elems, shape.b.elems, 4), fa, fb, fc, want)
        got = cupy.zeros((32, 4), dtype=c.dtype)
        module.get_function(f"k_{shape.fn}")((1,), (32,), (_dev(fa), _dev(fb), _dev(fc), got))
        got = cupy.asnumpy(got)
        if shape.acc == "int32":
            np.testing.assert_array_equal(got, want)
        else:
            worst = max(worst, float(np.abs(got - want).max()))
            np.testing.assert_allclose(got, want, rtol=TOL[shape.kind], atol=TOL[shape.kind])
    print(f"\n{shape.name}: max |gpu - interpreter| = {worst:.3g}")


def _wide_operands(kind, m, n, k, rng):
    """Float operands spread over 2^-6 .. 2^6 (fp8 clipped to its range), C = 0: the hardware's
    accumulation precision shows in the sums, not hidden behind C."""
    npd = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "tf32": np.float32, "e4m3": ml_dtypes.float8_e4m3fn,
           "e5m2": ml_dtypes.float8_e5m2}[kind]

    def draw(shape):
        x = rng.standard_normal(shape) * np.exp2(rng.integers(-6, 7, shape))
        v = np.clip(x, -400, 400).astype(npd)
        return v.view(np.int8) if kind in ("e4m3", "e5m2") else v

    return draw((m, k)), draw((k, n)), np.zeros((m, n), np.float32)


@pytest.mark.parametrize("shape", [s for s in mma_shapes.SHAPES if s.acc == "float32"],
                         ids=[s.kind for s in mma_shapes.SHAPES if s.acc == "float32"])
def test_gpu_float_mma_with_wide_operands(module, shape):
    """Normwise |gpu - interpreter| / max |D| on operands of wide dynamic range, C = 0. Measured on
    an H200 (2026-12-03, 8 trials): f16 8.4e-8, bf16 1.1e-7, tf32 8.4e-8, e4m3 1.1e-7, e5m2 1.1e-7,
    i.e. float32 rounding: mma.sync's k = 8 / 32 sums lose nothing beyond it there."""
    import cupy

    pa, pb = tf.PTX_TABLES[f"m16n8k{shape.k}.{shape.kind}"]
    ar, ac = tf._table(pa, 32, shape.a.elems)
    br, bc = tf._table(pb, 32, shape.b.elems)
    cr, cc = tf._table(tf.ptx_acc, 32, 4)
    rng = np.random.default_rng(17)
    worst = 0.0
    for _ in range(8):
        a, b, c = _wide_operands(shape.kind, shape.m, shape.n, shape.k, rng)
        fa, fb, fc = a[ar, ac], b[br, bc], c[cr, cc]
        want = np.full((32, 4), 7, np.float32)
        run(tf._mma_kernel(shape.name, shape.in_dtype, shape.acc, shape.a.elems, shape.b.elems, 4), fa, fb, fc, want)
        got = cupy.zeros((32, 4), cupy.float32)
        module.get_function(f"k_{shape.fn}")((1,), (32,), (_dev(fa), _dev(fb), _dev(fc), got))
        err = float(np.abs(cupy.asnumpy(got) - want).max() / np.abs(want).max())
        worst = max(worst, err)
    print(f"\n{shape.name} wide operands: max normwise |gpu - interpreter| / max|D| = {worst:.3g}")
    assert worst < 1e-5


def test_gpu_tile_ldmatrix_registers_match_the_interpreter(module):
    import cupy

    g = np.random.default_rng(8).standard_normal((24, 40)).astype(np.float16)
    o = cupy.zeros((6, 32, 8), cupy.uint16)
    module.get_function("k_ldt")((1,), (32,), (_dev(g), o))
    got = cupy.asnumpy(o)
    for v, (num, trans) in enumerate([(1, False), (1, True), (2, False), (2, True), (4, False), (4, True)]):
        want = np.zeros((32, 2 * num), np.float16)
        run(tf._tile_ldmatrix_kernel(tiles.tile_ldmatrix_name(num, trans), "float16", num, (24, 40), (5, 16), 40),
            g, want)
        np.testing.assert_array_equal(got[v, :, :2 * num], want.view(np.uint16), err_msg=f"x{num} trans={trans}")


def test_gpu_p_times_v_from_the_accumulator(module):
    import cupy

    rng = np.random.default_rng(9)
    q, kt, v = (rng.standard_normal(s).astype(np.float16) for s in ((16, 16), (16, 16), (16, 8)))
    fq = fr.M16N8K16_A.gather(q)
    fk = np.stack([fr.M16N8K16_B.gather(kt[:, 8 * j:8 * j + 8]) for j in range(2)])
    fv = fr.M16N8K16_B.gather(v)
    s, o = cupy.zeros((2, 32, 4), cupy.float32), cupy.zeros((32, 4), cupy.float32)
    module.get_function("k_pv")((1,), (32,), (_dev(fq), _dev(fk), _dev(fv), s, o))
    s_gpu = np.concatenate([fr.M16N8K16_ACC.scatter(x) for x in cupy.asnumpy(s)], axis=1)
    np.testing.assert_allclose(s_gpu, q.astype(np.float64) @ kt.astype(np.float64), rtol=1e-5, atol=1e-5)
    # O from the GPU's own S, rounded to half as acc_to_a converts it, times V
    want = s_gpu.astype(np.float16).astype(np.float64) @ v.astype(np.float64)
    got = fr.M16N8K16_ACC.scatter(cupy.asnumpy(o))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    print(f"\nP @ V from the accumulator: max |gpu - numpy| = {float(np.abs(got - want).max()):.3g}")
