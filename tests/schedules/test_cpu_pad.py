"""Zero-padding stages as whole-row copies (tessel/schedules/cpu_pad.py, used by cpu.generic and
cpu.conv): padded convolutions in both loop forms match torch on fresh random inputs, an asymmetric
padding stage matches numpy's np.pad, and stages that are not a bounds-guarded shifted copy are left
to the elementwise strategy."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.lowering import inline_temporaries
from tessel.frontend.ops import get_op
from tessel.ir.nodes import For, walk
from tessel.schedules.cpu_pad import pad_fill
from tessel.schedules.generic import default_schedule, stages

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("c,f,hw,k,pad,stride", [(16, 16, 32, 3, 1, 1), (8, 16, 12, 3, 1, 1), (3, 16, 20, 3, 1, 2),
                                                 (4, 8, 9, 5, 2, 1)])
def test_padded_convolutions_match_torch(c, f, hw, k, pad, stride):
    x = ts.placeholder((1, c, hw, hw), name="x")
    w = ts.placeholder((f, c, k, k), name="w")
    ho = (hw + 2 * pad - k) // stride + 1
    (y,) = get_op("conv").lower([x, w], {"padding": (pad, pad), "stride": (stride, stride)},
                                [((1, f, ho, ho), "float32")], ["y"])
    ir = inline_temporaries(ts.lower([x, w, y]))[0]
    sch = default_schedule(ir)
    rng = np.random.default_rng(c * 31 + hw)
    a = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    b = rng.standard_normal((f, c, k, k)).astype(np.float32)
    out = np.full((1, f, ho, ho), np.nan, np.float32)
    ts.build(ir, target="cpu", schedule=sch.kernel)(a, b, out)
    want = torch.nn.functional.conv2d(torch.from_numpy(a).double(), torch.from_numpy(b).double(),
                                      padding=pad, stride=stride).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def _pad_stage(n, c, h, w, top, left, bottom, right, offset=0):
    x = ts.placeholder((n, c, h, w), name="x")
    hp, wp = h + top + bottom, w + left + right
    cond = (lambda i, j: (i >= top) & (i < top + h) & (j >= left) & (j < left + w))
    P = ts.compute((n, c, hp, wp), lambda a, b, i, j: ts.where(cond(i, j), x[a, b, i - top + offset, j - left],
                                                              ts.const(0.0, "float32")), name="P")
    return ts.lower([x, P])


def test_asymmetric_padding_matches_numpy():
    k = _pad_stage(2, 3, 5, 19, 1, 2, 3, 1)
    new = pad_fill(k, "P", dict(stages(k))["P"], 16, 4096)
    assert new is not None
    assert any(isinstance(n, For) and n.kind == "vectorized" for n in walk(new.body))
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 19)).astype(np.float32)
    out = np.full((2, 3, 9, 22), np.nan, np.float32)
    ts.build(k, target="cpu", schedule=new)(x, out)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), (1, 3), (2, 1))))
    out2 = np.full_like(out, np.nan)
    ts.build(k, target="cpu")(x, out2)  # the default schedule takes the same path
    np.testing.assert_array_equal(out2, out)


def test_other_stages_are_not_taken():
    k = _pad_stage(1, 2, 6, 6, 1, 1, 1, 1, offset=1)  # the guard no longer matches the shifted read
    assert pad_fill(k, "P", dict(stages(k))["P"], 16, 4096) is None
    x = ts.placeholder((1, 2, 6, 6), name="x")
    y = ts.compute((1, 2, 6, 6), lambda *i: x[i] * 2.0, name="y")
    k = ts.lower([x, y])
    assert pad_fill(k, "y", dict(stages(k))["y"], 16, 4096) is None
