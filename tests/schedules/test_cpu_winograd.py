"""Winograd F(2x2, 3x3) in cpu.conv (`algorithm="winograd"`, tessel/schedules/cpu_winograd.py): both
loop forms of the conv lowering (NCHW rows, channels-last with the pre-transposed CKF weight), batches,
and a sample of the tuner's Winograd knob space each match torch's conv2d computed in float64 on fresh
random inputs, within a small multiple of the direct convolution's own error; the default takes it only
for stride-1 3x3 convolutions with enough output tiles; its trace replays; bad knobs are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.lowering import inline_temporaries
from tessel.errors import ScheduleError
from tessel.frontend.op_library.contraction import channels_last
from tessel.frontend.ops import get_op
from tessel.schedules.cpu_conv import CPU_CONV
from tessel.schedules.generic import default_schedule
from tessel.schedules.schedule import Schedule

torch = pytest.importorskip("torch")


def _conv_relu(n, c, f, h, w, stride=1, k=3):
    """conv + relu lowered as compile() lowers it (channels-last convs read a CKF constant weight)."""
    ckf = channels_last(1, f, (stride, stride), (n, f, h // stride, w // stride))
    x = ts.placeholder((n, c, h, w), name="x")
    wt = ts.placeholder((c, k, k, f) if ckf else (f, c, k, k), name="w")
    shape = (n, f, (h + 2 - k) // stride + 1, (w + 2 - k) // stride + 1)
    attrs = {"padding": (1, 1), "stride": (stride, stride), **({"weight_layout": "CKF"} if ckf else {})}
    (y,) = get_op("conv").lower([x, wt], attrs, [(shape, "float32")], ["y"])
    z = ts.compute(shape, lambda *i: ts.maximum(y[i], 0.0), name="z")
    return inline_temporaries(ts.lower([x, wt, z], name="conv_relu"))[0], ckf, shape


def _run(ir, ckf, shape, knobs, seed):
    n, c, h, w = (int(d) for d in ir.params[0].shape)
    f = shape[1]
    sch = CPU_CONV.apply(ir, knobs, "cpu")
    kern = ts.build(ir, target="cpu", schedule=sch.kernel)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wf = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    got = np.full(shape, np.nan, np.float32)
    kern(x, np.ascontiguousarray(wf.transpose(1, 2, 3, 0)) if ckf else wf, got)
    want = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(wf).double(),
                                                 padding=1)).numpy()
    return sch, float(np.abs(got - want).max() / np.abs(want).max())


CASES = [  # n, c, f, h, w: NCHW rows (w >= 32, a multiple of 16), channels-last, batch, non-square
    (1, 16, 16, 32, 32),
    (2, 24, 32, 10, 14),
    (1, 32, 48, 8, 6),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_winograd_matches_float64_torch_near_the_direct_error(case):
    ir, ckf, shape = _conv_relu(*case)
    seed = sum(case)
    wino, e_wino = _run(ir, ckf, shape, {"algorithm": "winograd"}, seed)
    assert wino.trace[0].args["knobs"]["algorithm"] == "winograd"
    _, e_direct = _run(ir, ckf, shape, {"algorithm": "direct"}, seed)
    # F(2x2, 3x3) rearranges the sum (coefficients 0, +-1, +-1/2): its error stays near the direct one's
    assert e_wino < max(4 * e_direct, 1e-6), (e_wino, e_direct)


def test_a_sample_of_the_winograd_knob_space_matches():
    ir, ckf, shape = _conv_relu(2, 16, 32, 12, 16)
    space = CPU_CONV.space(ir, "cpu")
    assert {"wino_rows", "wino_vecs", "wino_block", "wino_images"} <= {k.name for k in space.knobs}
    points = [p for p in space.sample(60, seed=7) if p["algorithm"] == "winograd"]
    picked = {(p["wino_rows"], p["wino_vecs"], p["wino_block"], p["wino_images"]): p for p in points}
    assert len(picked) >= 3
    for k, p in enumerate(sorted(picked.values(), key=lambda p: sorted(p.items()))[:3]):
        _, err = _run(ir, ckf, shape, p, seed=100 + k)
        assert err < 2e-6, (p, err)


def test_default_takes_winograd_for_many_tiles_only():
    ir, _, _ = _conv_relu(1, 16, 16, 32, 32)
    sch = default_schedule(ir)
    assert sch.trace[0].args["name"] == "cpu.conv" and sch.trace[0].args["knobs"]["algorithm"] == "winograd"
    assert Schedule.replay(ir, sch.trace) == sch.kernel
    few, _, _ = _conv_relu(1, 64, 64, 4, 4)  # 4 tiles: the per-call weight transform would dominate
    assert default_schedule(few).trace[0].args["knobs"]["algorithm"] == "direct"
    strided, _, _ = _conv_relu(1, 16, 32, 16, 16, stride=2)
    assert default_schedule(strided).trace[0].args["knobs"]["algorithm"] == "direct"


def test_bad_winograd_knobs_are_refused_by_name():
    odd, _, _ = _conv_relu(1, 16, 16, 9, 9)  # odd output: no 2x2 tiling
    with pytest.raises(ScheduleError, match="algorithm.*no stride-1 3x3 convolution"):
        CPU_CONV.apply(odd, {"algorithm": "winograd"}, "cpu")
    ir, _, _ = _conv_relu(1, 16, 32, 12, 12)
    with pytest.raises(ScheduleError, match="wino_block=4 does not divide the 6 tile rows"):
        CPU_CONV.apply(ir, {"algorithm": "winograd", "wino_block": 4}, "cpu")
    with pytest.raises(ScheduleError, match="wino_images=2 does not divide the batch 1"):
        CPU_CONV.apply(ir, {"algorithm": "winograd", "wino_images": 2}, "cpu")
