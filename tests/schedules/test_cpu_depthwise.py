"""The direct depthwise template "cpu.depthwise" (tessel/schedules/cpu_depthwise.py) and the stride-2
load shuffle (tessel/codegen/tvm_strided.py): every knob value and both plane modes match torch's
conv2d (groups = channels) on fresh random inputs, with the padded copy as a stage or inlined,
strides 1 and 2, dilation, odd sizes and a bias + clip epilogue; it is the default for such kernels,
replays from its trace, refuses bad knob values by name and leaves other convolutions alone."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import tessel as ts
from tessel.codegen.tvm_strided import rewrite
from tessel.codegen.tvm_tir import to_tvm
from tessel.compiler.lowering import inline_temporaries
from tessel.errors import ScheduleError
from tessel.frontend.ops import get_op
from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
from tessel.schedules.cpu_depthwise import CPU_DEPTHWISE
from tessel.schedules.generic import default_schedule
from tessel.schedules.schedule import Schedule

torch = pytest.importorskip("torch")


def _dw_clip(n, c, h, w, k, stride, pad, dil=1, inline=True):
    x = ts.placeholder((n, c, h, w), name="x")
    wt = ts.placeholder((c, 1, k, k), name="w")
    b = ts.placeholder((c,), name="b")
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    shape = (n, c, ho, wo)
    attrs = {"stride": (stride, stride), "padding": (pad, pad), "groups": c, "dilation": (dil, dil)}
    (y,) = get_op("conv").lower([x, wt], attrs, [(shape, "float32")], ["y"])
    z = ts.compute(shape, lambda i, j, p, q: ts.minimum(ts.maximum(y[i, j, p, q] + b[j], 0.0), 6.0), name="z")
    ir = ts.lower([x, wt, b, z], name="dw_clip")
    return (inline_temporaries(ir)[0] if inline else ir), shape, attrs


def _run(ir, shape, attrs, knobs, seed):
    sch = CPU_DEPTHWISE.apply(ir, knobs, "cpu")
    kern = ts.build(ir, target="cpu", schedule=sch.kernel)
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(tuple(p.shape)).astype(np.float32) for p in ir.params[:3])
    got = np.full(shape, np.nan, np.float32)
    kern(x, w, b, got)
    t = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                   torch.from_numpy(b).double(), stride=attrs["stride"], padding=attrs["padding"],
                                   dilation=attrs["dilation"], groups=attrs["groups"])
    want = t.clamp(0.0, 6.0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return sch


CASES = [  # n, c, h, w, k, stride, pad, dil, inline
    (1, 16, 32, 32, 3, 1, 1, 1, True),   # MobileNet-like, padded copy kept (read 9x)
    (1, 8, 16, 16, 3, 2, 1, 1, True),    # stride 2: the pad is inlined as a select
    (2, 4, 9, 13, 3, 1, 1, 1, False),    # odd sizes, batch 2, the padded copy as a stage
    (1, 6, 11, 11, 3, 2, 1, 1, False),   # stride 2, odd rows (whole vectors + remainder)
    (1, 4, 12, 20, 5, 1, 2, 1, True),    # 5x5, pad 2
    (1, 3, 14, 14, 3, 1, 2, 2, True),    # dilation 2
    (1, 5, 8, 8, 3, 1, 0, 1, True),      # no padding: reads the input itself
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + ("" if c[8] else "-staged"))
def test_default_matches_torch(case):
    ir, shape, attrs = _dw_clip(*case)
    sch = _run(ir, shape, attrs, None, seed=zlib.crc32(repr(case).encode()))
    assert sch.trace[0].args["name"] == "cpu.depthwise"


@pytest.mark.parametrize("rows,lanes,plane", [(1, 4, "channel"), (2, 8, "all"), (4, 16, "channel"), (8, 16, "all")])
def test_knob_values_match_torch(rows, lanes, plane):
    ir, shape, attrs = _dw_clip(1, 6, 16, 24, 3, 1, 1)
    _run(ir, shape, attrs, {"tile_rows": rows, "vector_lanes": lanes, "plane": plane}, seed=rows * 7 + lanes)
    ir, shape, attrs = _dw_clip(1, 6, 16, 24, 3, 2, 1)
    _run(ir, shape, attrs, {"tile_rows": rows, "vector_lanes": lanes, "plane": plane}, seed=rows * 5 + lanes)


def test_is_the_default_and_replays():
    ir, _, _ = _dw_clip(1, 16, 32, 32, 3, 2, 1)
    sch = default_schedule(ir)
    assert sch.trace[0].args["name"] == "cpu.depthwise"
    assert Schedule.replay(ir, sch.trace_json()) == sch.kernel


def test_bad_knobs_are_refused_by_name():
    ir, _, _ = _dw_clip(1, 4, 12, 12, 3, 1, 1)
    with pytest.raises(ScheduleError, match="tile_rows"):
        CPU_DEPTHWISE.apply(ir, {"tile_rows": 5}, "cpu")  # does not divide 12 rows


def test_other_convolutions_are_left_alone():
    x = ts.placeholder((1, 8, 16, 16), name="x")
    w = ts.placeholder((8, 8, 3, 3), name="w")
    (y,) = get_op("conv").lower([x, w], {"padding": (1, 1)}, [((1, 8, 16, 16), "float32")], ["y"])
    assert CPU_DEPTHWISE.applies(ts.lower([x, w, y]), "cpu") is not None
    x = ts.placeholder((1, 8, 16, 16), name="x")
    w = ts.placeholder((8, 2, 3, 3), name="w")  # grouped, 2 channels per group
    (y,) = get_op("conv").lower([x, w], {"padding": (1, 1), "groups": 4}, [((1, 8, 16, 16), "float32")], ["y"])
    assert CPU_DEPTHWISE.applies(ts.lower([x, w, y]), "cpu") is not None


@pytest.mark.parametrize("lanes,offset", [(16, 0), (8, 3), (4, 1)])
def test_stride2_loads_become_shuffles_and_stay_exact(lanes, offset):
    n = 4 * lanes
    A, B = Buffer("A", (2 * n + offset + 1,)), Buffer("B", (n,))
    i, j = Var("i"), Var("j")
    body = For(i, n // lanes, For(j, lanes, Store(B, (i * lanes + j,), A[(i * lanes + j) * 2 + offset] * 3.0),
                                   kind="vectorized"))
    k = Kernel("evens", (A, B), body)
    assert "T.Shuffle" in rewrite(to_tvm(k)).script()
    kern = ts.build(k, target="cpu")
    a = np.random.default_rng(lanes).standard_normal(2 * n + offset + 1).astype(np.float32)
    b = np.full(n, np.nan, np.float32)
    kern(a, b)
    np.testing.assert_array_equal(b, a[offset:offset + 2 * n:2] * np.float32(3.0))


def test_functions_without_strided_loads_are_returned_unchanged():
    A, B = Buffer("A", (32,)), Buffer("B", (32,))
    i = Var("i")
    func = to_tvm(Kernel("copy", (A, B), For(i, 32, Store(B, (i,), A[i] + 1.0), kind="vectorized")))
    assert rewrite(func) is func


@pytest.mark.parametrize("stride", [1, 2])
def test_inlined_padding_select_is_gone_from_the_plane_read(stride):
    """Where the lowering inlined the zero padding as a select of the input, the template reads its
    padded plane (which holds those zeros) without the select: no select is left around a plane
    load (the rewrite visits the leaves first, so the select once survived around the plane read),
    and the result still matches torch."""
    from tessel.ir.nodes import Load, Select, walk

    ir, shape, attrs = _dw_clip(1, 8, 16, 16, 3, stride, 1, inline=True)
    assert any(isinstance(m, Select) for m in walk(ir))  # the inlined padding
    sch = _run(ir, shape, attrs, None, seed=np.random.SeedSequence().entropy % 2**32)
    around_plane = [m for m in walk(sch.kernel) if isinstance(m, Select) and isinstance(m.t, Load)
                    and m.t.buffer.name.endswith("_plane")]
    assert not around_plane
