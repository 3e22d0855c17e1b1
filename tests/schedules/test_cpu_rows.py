"""Row pipelines (tessel/schedules/cpu_rows.py): softmax, log-softmax, layer norm and RMS norm lowered as
the model compiler lowers them, scheduled by cpu.generic's default, fuse into one loop over the rows and
agree with numpy's float64 on fresh random inputs, compiled by TVM and through the interpreter; the
stages that may not share a row loop stay apart; a row whose divisor has no normal reciprocal divides.
"""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.fuzz.suite import lowered
from tessel.ir import interp
from tessel.ir.nodes import Call, For, walk
from tessel.ir.text import to_text
from tessel.schedules.generic import default_schedule

tvm = pytest.importorskip("tvm")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


REF = {
    "softmax": lambda x, *_: _softmax(x),
    "log_softmax": lambda x, *_: np.log(_softmax(x)),
    "layer_norm": lambda x, w, b: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b,
    "rms_norm": lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w,
}
ATTRS = {"layer_norm": {"axis": -1, "epsilon": 1e-5}, "rms_norm": {"axis": -1, "epsilon": 1e-6}}
CASES = [("softmax", (6, 40)), ("softmax", (3, 700)), ("softmax", (2, 3, 17)), ("softmax", (64,)),
         ("log_softmax", (2, 3, 50)), ("layer_norm", (5, 64)), ("layer_norm", (4, 33)), ("rms_norm", (7, 48))]


def _kernel(op, shape):
    shapes = [shape] + [(shape[-1],)] * {"layer_norm": 2, "rms_norm": 1}.get(op, 0)
    return lowered(op, shapes, "float32", ATTRS.get(op)), shapes


def _top_loops(kernel):
    body = kernel.body
    while not hasattr(body, "stmts") and hasattr(body, "body") and not isinstance(body, For):
        body = body.body
    return [s for s in getattr(body, "stmts", (body,)) if isinstance(s, For)]


@pytest.mark.parametrize("op,shape", CASES)
def test_row_stages_fuse_and_match_numpy(op, shape):
    kernel, shapes = _kernel(op, shape)
    sch = default_schedule(kernel, "cpu")
    if len(shape) > 1:  # one loop over the rows (a single row has none: its stages in sequence)
        assert len(_top_loops(sch.kernel)) == 1, to_text(sch.kernel)
    rng = np.random.default_rng()
    args = [rng.standard_normal(s).astype("float32") for s in shapes]
    want = REF[op](*[a.astype(np.float64) for a in args])
    built = ts.build(kernel)  # the default schedule, through TVM
    out = np.empty(shape, "float32")
    built(*args, out)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-6)
    out2 = np.full(shape, 1234.5, "float32")
    interp.run(sch.kernel, *args, out2)
    np.testing.assert_allclose(out2, want, rtol=2e-5, atol=2e-6)


def test_softmax_computes_each_exp_once():
    kernel, _ = _kernel("softmax", (6, 40))
    before = sum(isinstance(n, Call) and n.func == "exp" for n in walk(kernel))
    fused = default_schedule(kernel, "cpu").kernel
    # the reduction's exp is stored in the row buffer and the output loads it: exp only inside the sum
    text = to_text(fused)
    assert before == 2 and "out0_sum_row[" in text
    out_stores = [line for line in text.splitlines() if line.strip().startswith("out0[")]
    assert out_stores and not any("exp(" in line for line in out_stores)


def test_knob_off_keeps_the_stages_apart():
    kernel, shapes = _kernel("softmax", (3, 700))
    sch = default_schedule(kernel, "cpu", {"row_fuse": False})
    assert len(_top_loops(sch.kernel)) == 3
    x = np.random.default_rng().standard_normal(shapes[0]).astype("float32")
    out = np.full(shapes[0], 7.0, "float32")
    interp.run(sch.kernel, x, out)
    np.testing.assert_allclose(out, _softmax(x.astype(np.float64)), rtol=2e-5, atol=2e-6)


def test_a_stage_reading_another_row_is_not_fused():
    # y[i, j] = x[i, j] - m[(i + 1) % R]: row i needs row i+1's maximum, not yet computed in a fused loop
    R, F = 5, 48
    x = ts.placeholder((R, F), name="x")
    k = ts.reduce_axis(F, name="k")
    m = ts.compute((R,), lambda i: ts.max(x[i, k], axis=k), name="m")
    y = ts.compute((R, F), lambda i, j: x[i, j] - m[(i + 1) % R], name="y")
    kernel = ts.lower([x, y])
    fused = default_schedule(kernel, "cpu").kernel
    assert len(_top_loops(fused)) == 2
    xv = np.random.default_rng().standard_normal((R, F)).astype("float32")
    out = np.empty((R, F), "float32")
    ts.build(kernel)(xv, out)
    np.testing.assert_allclose(out, xv - np.roll(xv.max(1), -1)[:, None], rtol=1e-6)


def test_a_row_whose_divisor_has_no_normal_reciprocal_divides():
    # y = x / max(x) per row; rows scaled so the maximum is subnormal (1/m overflows), huge (1/m is
    # subnormal) or ordinary: only the ordinary row may multiply by the reciprocal
    R, F = 3, 40
    x = ts.placeholder((R, F), name="x")
    k = ts.reduce_axis(F, name="k")
    m = ts.compute((R,), lambda i: ts.max(x[i, k], axis=k), name="m")
    y = ts.compute((R, F), lambda i, j: x[i, j] / m[i], name="y")
    kernel = ts.lower([x, y])
    rng = np.random.default_rng()
    xv = (rng.uniform(0.5, 1.0, (R, F)) * np.array([[1e-39], [1e38], [1.0]])).astype("float32")
    x64 = xv.astype(np.float64)
    want = (x64 / x64.max(1, keepdims=True)).astype("float32")
    fused = default_schedule(kernel, "cpu").kernel
    assert len(_top_loops(fused)) == 1 and "_rcp" in to_text(fused)
    for run in ("interp", "tvm"):
        out = np.empty((R, F), "float32")
        interp.run(fused, xv, out) if run == "interp" else ts.build(kernel)(xv, out)
        # the divided rows are correctly rounded quotients; the multiplied one within an ulp or two
        np.testing.assert_array_equal(out[:2], want[:2], err_msg=run)
        np.testing.assert_allclose(out[2], want[2], rtol=3e-7, err_msg=run)


def test_a_stage_writing_what_an_earlier_one_read_ends_the_run():
    # y reads z at the next row; the stage after it overwrites z. Fused, row 3's y would read row 0's new z.
    from tessel.ir.text import parse_kernel

    kernel = parse_kernel("""
kernel k(x: float32[4, 32] global, z: float32[4, 32] global, y: float32[4, 32] global) target cpu {
  alloc m: float32[4] global {
    for i in 4 {
      for k in 32 {
        if (k == 0) {
          m[i] = -inf_f32
        }
        m[i] = max(m[i], x[i, k])
      }
    }
    for i1 in 4 {
      for j in 32 {
        y[i1, j] = ((x[i1, j] - m[i1]) + z[((i1 + 1) % 4), j])
      }
    }
    for i2 in 4 {
      for j2 in 32 {
        z[i2, j2] = (x[i2, j2] * 2.0f32)
      }
    }
  }
}
""")
    fused = default_schedule(kernel, "cpu").kernel
    assert len(_top_loops(fused)) == 2  # m and y share a row loop; z's stage stays after it
    rng = np.random.default_rng()
    x, z = (rng.standard_normal((4, 32)).astype("float32") for _ in range(2))
    want_y = x - x.max(1, keepdims=True) + np.roll(z, -1, axis=0)
    for k in (kernel, fused):
        zz, y = z.copy(), np.full((4, 32), 9.0, "float32")
        interp.run(k, x, zz, y)
        np.testing.assert_allclose(y, want_y, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(zz, 2 * x, rtol=1e-6)
