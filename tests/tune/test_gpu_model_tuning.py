"""Tuning a model for the GPU and compiling it from the log, without a GPU: the workloads are the
kernels `compile(target="cuda")` schedules with a template (the same keys it looks up), a stand-in
executor times candidates by a made-up rule, the log gets the records, and
`compile(..., target="cuda:sm_90a", tuning_log=log)` then builds each kernel with its best
record's knobs (the launch shows them) and matches a numpy reference in the interpreter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from tessel.codegen.cuda_build import available_compilers
from tessel.tune.measure import Executor, MeasureResult

# compiling for cuda builds the cubins (no GPU needed, but a CUDA compiler: nvcc or NVRTC)
needs_cuda_compiler = pytest.mark.skipif(not available_compilers(), reason="no CUDA compiler (nvcc or NVRTC)")

TARGET = "cuda:sm_90a"


class RuleExecutor(Executor):
    """Times a candidate by a rule of its knobs (no build, no GPU): gemm.wgmma candidates with
    bn = 64 and one consumer are the fastest, anything else by its knob values' hash."""

    def __init__(self):
        self.count = 0

    def measure(self, inputs):
        out = []
        for m in inputs:
            self.count += 1
            k = m.knobs
            if m.template == "gemm.wgmma":
                t = 1e-3 * (1 + (k["bn"] != 64) + (k["consumers"] != 1) + 0.1 * k["stages"])
            else:
                t = 1e-3 * (1 + (hash(tuple(sorted(map(str, k.items())))) % 97) / 97)
            out.append(MeasureResult(time=t, times=(t,)))
        return out


def _model(rng):
    from tessel.frontend.builder import GraphBuilder

    x = rng.standard_normal((128, 64)).astype(np.float16)
    w = (rng.standard_normal((64, 128)) / 8).astype(np.float16)
    bias = rng.standard_normal(128).astype(np.float16)
    b = GraphBuilder("mlp_gpu")
    b.output(b.gelu(b.add(b.matmul(b.input("x", x.shape, "float16"), w), bias)))
    f = lambda a: a.astype(np.float64)  # noqa: E731
    r16 = lambda a: f(np.asarray(a).astype(np.float16))  # noqa: E731
    h = r16(r16(f(x) @ f(w)) + f(bias))
    return b.graph, x, 0.5 * h * (1 + erf(h / math.sqrt(2)))


def _launch_of(graph, knobs):
    """The launch of the model's one kernel under gemm.wgmma with `knobs` (None: its defaults)."""
    from tessel.schedules.template import get_template
    from tessel.tune.api import _model_workloads

    ((_, ir),) = _model_workloads(graph, None, TARGET)
    return get_template("gemm.wgmma").apply(ir, knobs, TARGET).kernel.launch


@needs_cuda_compiler
def test_tune_a_gpu_model_then_compile_from_its_log(tmp_path):
    from tessel.compiler.model import compile_graph
    from tessel.tune.api import tune
    from tessel.tune.records import TuningLog

    seed = int(np.random.SeedSequence().entropy % 2**32)
    graph, x, want = _model(np.random.default_rng(seed))
    log = tmp_path / "gpu.jsonl"
    ex = RuleExecutor()
    res = tune(graph, target=TARGET, trials=12, batch=4, log=log, executor=ex, strategy="random")
    assert ex.count >= 12 and res.trials >= 12
    recs = TuningLog(log).read().records
    assert {r.template for r in recs} == {"gemm.wgmma"}  # the one template kernel of this model
    best = min((r for r in recs if r.ok), key=lambda r: r.time)
    cm = compile_graph(graph, target=TARGET, tuning_log=str(log))
    (kern,) = cm.kernels
    assert cm.report["gpu_schedules"] == {"tuned": 1}
    assert kern.ir.launch == _launch_of(graph, best.knobs)
    assert kern.ir.launch != _launch_of(graph, None)  # the default knobs differ (6 stages, not the best)
    got = np.asarray(cm.run_interpreted(x), np.float64)
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max(), f"seed {seed}"


@needs_cuda_compiler
def test_gpu_log_records_are_not_applied_on_another_architecture(tmp_path):
    from tessel.compiler.model import compile_graph
    from tessel.tune.api import tune

    graph, _, _ = _model(np.random.default_rng(0))
    log = tmp_path / "gpu.jsonl"
    tune(graph, target=TARGET, trials=4, batch=4, log=log, executor=RuleExecutor(), strategy="random")
    with pytest.warns(UserWarning, match="other targets"):
        cm = compile_graph(graph, target="cuda:sm_80", tuning_log=str(log))
    assert cm.report["gpu_schedules"] == {"default": 1}
