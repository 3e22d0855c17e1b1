"""The direct-convolution template "cpu.conv" (tessel/schedules/cpu_conv.py): output channels tiled into
the register tile; every knob value matches torch's conv2d on fresh random inputs, both loop forms
(NCHW rows and channels-last), strides and pointwise convolutions; it is the default for such
kernels, replays from its trace, refuses bad knob values by name and leaves other kernels alone."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.lowering import inline_temporaries
from tessel.errors import ScheduleError
from tessel.frontend.ops import get_op
from tessel.ir.nodes import For, walk
from tessel.schedules.cpu_conv import CPU_CONV
from tessel.schedules.generic import default_schedule
from tessel.schedules.schedule import Schedule

torch = pytest.importorskip("torch")


def _conv_relu(n, c, f, hw, k, stride, pad, groups=1):
    x = ts.placeholder((n, c, hw, hw), name="x")
    w = ts.placeholder((f, c // groups, k, k), name="w")
    out_hw = (hw + 2 * pad - k) // stride + 1
    shape = (n, f, out_hw, out_hw)
    (y,) = get_op("conv").lower([x, w], {"stride": (stride, stride), "padding": (pad, pad), "groups": groups},
                                [(shape, "float32")], ["y"])
    z = ts.compute(shape, lambda *i: ts.maximum(y[i], 0.0), name="z")
    return inline_temporaries(ts.lower([x, w, z], name="conv_relu"))[0], shape


def _check(ir, shape, n, c, f, hw, k, stride, pad, knobs, seed, groups=1):
    sch = CPU_CONV.apply(ir, knobs, "cpu")
    kern = ts.build(ir, target="cpu", schedule=sch.kernel)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((f, c // groups, k, k)).astype(np.float32)
    got = np.full(shape, np.nan, np.float32)
    kern(x, w, got)
    want = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                                                 padding=pad, groups=groups)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return sch


CASES = [  # n, c, f, hw, k, stride, pad
    (1, 16, 16, 32, 3, 1, 1),   # NCHW rows (ResNet's first stage)
    (1, 8, 64, 8, 3, 1, 1),     # channels-last (narrow rows)
    (2, 12, 32, 15, 3, 2, 1),   # stride 2, odd size, batch 2
    (1, 24, 40, 16, 1, 1, 0),   # pointwise
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("tile_batch", [None, 1, 2, 8])
def test_every_channel_tile_matches_torch(case, tile_batch):
    ir, shape = _conv_relu(*case)
    # the direct convolution's channel tile (the Winograd form has its own test file, test_cpu_winograd.py)
    knobs = {"algorithm": "direct"} if tile_batch is None else {"tile_batch": tile_batch, "tile_rows": 1,
                                                                "algorithm": "direct"}
    sch = _check(ir, shape, *case, knobs, seed=sum(case) + (tile_batch or 0))
    tb = sch.trace[0].args["knobs"]["tile_batch"]
    if tile_batch is None:
        assert tb > 1  # the default tiles the channels
    unrolled = [n.extent.value for n in walk(sch.kernel.body) if isinstance(n, For) and n.kind == "unrolled"]
    assert tb == 1 or tb in unrolled


def test_default_schedule_picks_it_and_the_trace_replays():
    ir, _ = _conv_relu(1, 16, 16, 16, 3, 1, 1)
    sch = default_schedule(ir)
    assert sch.trace[0].args["name"] == "cpu.conv"
    assert Schedule.replay(ir, sch.trace) == sch.kernel
    space = CPU_CONV.space(ir, "cpu")
    assert "tile_batch" in {k.name for k in space.knobs}
    direct = [p for p in space.sample(20, seed=1) if p["algorithm"] == "direct"]  # (Winograd ignores tile_batch)
    assert direct and all(16 % p["tile_batch"] == 0 for p in direct)


def test_bad_knobs_are_refused_by_name():
    ir, _ = _conv_relu(1, 16, 12, 16, 3, 1, 1)
    with pytest.raises(ScheduleError, match="tile_batch.*does not divide the 12 output channels"):
        CPU_CONV.apply(ir, {"tile_batch": 8, "algorithm": "direct"}, "cpu")
    with pytest.raises(ScheduleError, match="vector registers"):
        CPU_CONV.apply(ir, {"tile_batch": 6, "tile_rows": 8, "tile_cols": 16, "algorithm": "direct"}, "cpu")


def test_kernels_without_shared_columns_are_left_to_generic():
    A = ts.placeholder((4, 32, 16), name="A")
    B = ts.placeholder((4, 16, 32), name="B")
    r = ts.reduce_axis(16, name="r")
    bmm = ts.compute((4, 32, 32), lambda b, i, j: ts.sum(A[b, i, r] * B[b, r, j], axis=r), name="C")
    assert "no contraction whose column operand is shared" in CPU_CONV.applies(ts.lower([A, B, bmm]), "cpu")
    ir, _ = _conv_relu(1, 8, 8, 16, 3, 1, 1, groups=8)  # depthwise: the channel loop reads the input
    assert CPU_CONV.applies(ir, "cpu") is not None
    assert default_schedule(ir).trace[0].args["name"] == "cpu.depthwise"  # its own template (cpu_depthwise.py)


@pytest.mark.parametrize("case", [(2, 12, 32, 15, 3, 2, 1), (1, 16, 32, 16, 1, 2, 0)], ids=["3x3s2", "1x1s2"])
def test_fused_transposed_store_matches_torch_and_drops_the_gather_pass(case):
    """fuse_transposed: a channels-last result stored NCHW from the register tile (with the epilogue)."""
    from tessel.ir.nodes import Allocate

    ir, shape = _conv_relu(*case)
    sch = CPU_CONV.apply(ir, None, "cpu")
    assert sch.trace[0].args["knobs"]["fuse_transposed"]  # output planes of at most 256 values
    names = lambda s: {n.buffer.name for n in walk(s.kernel.body) if isinstance(n, Allocate)}  # noqa: E731
    assert not any(n.endswith("_cl") for n in names(sch))
    _check(ir, shape, *case, {"fuse_transposed": True}, seed=sum(case))
    unfused = _check(ir, shape, *case, {"fuse_transposed": False}, seed=sum(case) + 1)
    assert any(n.endswith("_cl") for n in names(unfused))
