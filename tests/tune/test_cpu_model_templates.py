"""The tuner searches, for each workload of a model, the template compile() would apply by default
on the CPU (cpu.conv_nchw for a pointwise convolution, cpu.depthwise for a depthwise one, ...), so
a tuned record competes with what compile() does instead of replacing it with another template.

(Before: the tuner took the alphabetically first specific template, cpu.conv, for pointwise
convolutions whose default is cpu.conv_nchw, and the tuned MobileNet ran slower than the untuned.)
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.builder import GraphBuilder
from tessel.schedules.generic import default_cpu_template
from tessel.tune.api import _model_workloads, _space_for


def _model(rng):
    b = GraphBuilder("net")
    x = b.input("x", (1, 32, 16, 16))
    dw = b.conv(x, b.const(rng.standard_normal((32, 1, 3, 3)).astype(np.float32)), padding=1, groups=32)
    pw = b.conv(b.relu(dw), b.const(rng.standard_normal((64, 32, 1, 1)).astype(np.float32) / 6))
    b.output(b.relu(pw))
    return b.graph


def test_tuner_searches_the_template_compile_uses_by_default():
    workloads = _model_workloads(_model(np.random.default_rng()), None, "cpu")
    chosen = {default_cpu_template(ir).name: _space_for(ir, "cpu", None).name for _, ir in workloads}
    assert {"cpu.depthwise", "cpu.conv_nchw"} <= set(chosen), chosen
    assert all(k == v for k, v in chosen.items()), chosen
