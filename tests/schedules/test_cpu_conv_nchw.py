"""transform_layout (tessel/schedules/layout.py) and the template "cpu.conv_nchw": permuting a
temporary changes no value (interpreter before/after on fresh random inputs); pointwise convolutions with
rows of whole host vectors and 3-channel stem convolutions lowered channels-last are scheduled NCHW by
default, pointwise ones with shorter rows channels-last by cpu.conv with the transposed store fused
(`fuse_transposed`), and all match torch with a bias + clip epilogue; the trace replays; 3x3 and stride-2
convolutions and narrow rows are left to cpu.conv."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.lowering import inline_temporaries
from tessel.errors import ScheduleError
from tessel.frontend.ops import get_op
from tessel.ir.interp import run
from tessel.ir.nodes import Allocate, walk
from tessel.schedules.cpu_conv_nchw import CPU_CONV_NCHW
from tessel.schedules.generic import default_schedule
from tessel.schedules.schedule import Schedule

torch = pytest.importorskip("torch")


def _conv_clip(c, f, hw, k=1, stride=1):
    x = ts.placeholder((1, c, hw, hw), name="x")
    w = ts.placeholder((f, c, k, k), name="w")
    b = ts.placeholder((f,), name="b")
    ho = (hw + 2 * (k // 2) - k) // stride + 1
    shape = (1, f, ho, ho)
    (y,) = get_op("conv").lower([x, w], {"padding": (k // 2, k // 2), "stride": (stride, stride)},
                                [(shape, "float32")], ["y"])
    z = ts.compute(shape, lambda n, j, p, q: ts.minimum(ts.maximum(y[n, j, p, q] + b[j], 0.0), 6.0), name="z")
    return inline_temporaries(ts.lower([x, w, b, z], name="pw"))[0], shape


@pytest.mark.parametrize("c,f,hw,k,stride", [(32, 64, 16, 1, 1), (16, 24, 8, 1, 1), (8, 16, 24, 1, 1),
                                             (3, 16, 32, 3, 2), (3, 8, 16, 3, 1)])  # the last two: stems
def test_pointwise_convolutions_run_nchw_and_match_torch(c, f, hw, k, stride):
    from tessel.schedules.cpu_host import host_vector

    ir, shape = _conv_clip(c, f, hw, k, stride)
    sch = default_schedule(ir)
    nchw = k != 1 or hw % host_vector().lanes("float32") == 0 or hw * hw > 256
    assert sch.trace[0].args["name"] == ("cpu.conv_nchw" if nchw else "cpu.conv")
    if not nchw:  # rows shorter than a vector: channels-last, the transposed read stored from the register tile
        assert sch.trace[0].args["knobs"]["fuse_transposed"]
        assert not [n for n in walk(sch.kernel.body) if isinstance(n, Allocate) and n.buffer.name.endswith("_cl")]
    rng = np.random.default_rng(c * 1000 + hw)
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((f, c, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    out = np.full(shape, np.nan, np.float32)
    ts.build(ir, target="cpu", schedule=sch.kernel)(x, w, b, out)
    want = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                      torch.from_numpy(b).double(), stride=stride, padding=k // 2)
    want = want.clamp(0.0, 6.0).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert Schedule.replay(ir, sch.trace_json()) == sch.kernel


def test_transform_layout_changes_no_value():
    ir, shape = _conv_clip(8, 16, 16)
    name = CPU_CONV_NCHW.analyze(ir)
    sch = Schedule(ir)
    sch.apply("transform_layout", buffer=name, order=[0, 3, 1, 2])
    rng = np.random.default_rng(8)
    args = [rng.standard_normal(tuple(p.shape)).astype(np.float32) for p in ir.params[:3]]
    before, after = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    run(ir, *args, before)
    run(sch.kernel, *args, after)
    np.testing.assert_array_equal(after, before)
    with pytest.raises(ScheduleError, match="permutation"):
        sch.apply("transform_layout", buffer=name, order=[0, 1, 1, 2])


def test_transform_layout_refuses_an_intrinsic_operand():
    # fuzz case transform_layout_of_mma_accumulator_two_buffers: permuting gemm.mma_sync's accumulator
    # fragment re-indexed its loads and stores but not the mma operands, leaving two 'gemm_acc' buffers
    from tessel.fuzz.suite import matmul

    sch = Schedule(matmul(32, 48, 32)).template("gemm.mma_sync", target="cuda:sm_80")
    assert any(isinstance(n, Allocate) and n.buffer.name == "gemm_acc" for n in walk(sch.kernel.body))
    with pytest.raises(ScheduleError, match="intrinsic"):
        sch.apply("transform_layout", buffer="gemm_acc", order=[2, 1, 0])


@pytest.mark.parametrize("c,f,hw,k,stride", [(16, 16, 16, 3, 1), (16, 32, 32, 1, 2), (16, 16, 4, 1, 1)])
def test_other_convolutions_are_left_to_cpu_conv(c, f, hw, k, stride):
    ir, _ = _conv_clip(c, f, hw, k, stride)
    assert CPU_CONV_NCHW.applies(ir, "cpu") is not None
