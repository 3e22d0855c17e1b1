"""Target parsing, and the pass pipelines: their passes, that they preserve meaning, and that the
verifier between passes names the pass that broke a kernel. (Pipelines as data, the CUDA
pipeline and its passes: tests/passes.)"""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler import pipeline
from tessel.compiler.pipeline import Pass, cpu_pipeline, cuda_pipeline, pipeline_for, register_pass, run_pipeline
from tessel.compiler.target import Target, parse_target
from tessel.errors import TesselError, VerifyError
from tessel.ir.nodes import Buffer, For, Kernel, Store, Var


@pytest.mark.parametrize("spec,expected", [
    ("cpu", Target("cpu")), (" CPU ", Target("cpu")), ("cuda", Target("cuda", "sm_90a")),
    ("cuda:sm_90a", Target("cuda", "sm_90a")), ("cuda:sm_80", Target("cuda", "sm_80")),
    (Target("cuda", "sm_86"), Target("cuda", "sm_86")),
])
def test_parse_target(spec, expected):
    assert parse_target(spec) == expected
    assert parse_target(str(expected)) == expected  # the canonical spelling parses back


@pytest.mark.parametrize("spec,match", [
    ("tpu", "unknown target 'tpu'; valid targets: cpu, cuda, cuda:sm_"),
    ("llvm", "unknown target 'llvm'"),
    ("cuda:ampere", "unknown CUDA architecture 'ampere'"),
    ("cuda:sm_9", "unknown CUDA architecture"),
    (None, "target must be a string"),
    (3, "target must be a string"),
])
def test_unknown_targets_list_the_valid_ones(spec, match):
    with pytest.raises(TesselError, match=match):
        parse_target(spec)


def test_cpu_pipeline_names_and_modules():
    passes = cpu_pipeline()
    assert [p.name for p in passes] == ["simplify", "remove_dead_code"]
    for p in passes + cuda_pipeline():
        assert p.function() is not None, f"pass {p.name} is missing"


def test_each_target_gets_its_pipeline():
    assert pipeline_for("cpu") == cpu_pipeline()
    assert pipeline_for(parse_target("cuda:sm_80")) == cuda_pipeline()
    assert pipeline_for("cuda") == cuda_pipeline()
    assert "hoist" in [p.name for p in cuda_pipeline()] and "hoist" not in [p.name for p in cpu_pipeline()]


def test_pipeline_preserves_meaning_on_a_scheduled_kernel():
    """The pipeline output computes the same as its input (interpreter on both, random inputs)."""
    from tessel.ir.interp import run
    from tessel.schedules.generic import default_schedule
    from tests.ir.dsl_programs import layernorm, random_inputs

    tensors, _ = layernorm(5, 24)
    scheduled = default_schedule(ts.lower(tensors), "cpu").kernel
    out = run_pipeline(scheduled, cpu_pipeline(), debug=True)
    inputs = random_inputs(tensors, np.random.default_rng(0))
    y1, y2 = np.full((5, 24), 7.0, "float32"), np.full((5, 24), 7.0, "float32")
    run(scheduled, *inputs, y1)
    run(out, *inputs, y2)
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)


def broken_pass(kernel: Kernel) -> Kernel:
    """Stores to a buffer that is declared nowhere."""
    i = Var("i")
    ghost = Buffer("ghost", (4,))
    return Kernel(kernel.name, kernel.params, For(i, 4, Store(ghost, (i,), ghost[i])))


def small_kernel() -> Kernel:
    i = Var("i")
    A = Buffer("A", (4,))
    return Kernel("small", (A,), For(i, 4, Store(A, (i,), A[i] * 2.0)))


@pytest.fixture
def breaker(monkeypatch):
    """A registered pass 'breaker' that breaks every kernel."""
    monkeypatch.setitem(pipeline.PASSES, "breaker", pipeline.PassInfo(__name__, "broken_pass"))
    return Pass("breaker")


def test_verifier_between_passes_names_the_broken_pass(breaker):
    passes = [Pass("simplify"), breaker]
    with pytest.raises(VerifyError, match="after pass 'breaker'"):
        run_pipeline(small_kernel(), passes, debug=True)


def test_debug_comes_from_the_environment(monkeypatch, breaker):
    passes = [breaker]
    monkeypatch.setenv("TESSEL_DEBUG", "0")
    run_pipeline(small_kernel(), passes)  # not verified: the broken kernel goes through
    monkeypatch.setenv("TESSEL_DEBUG", "1")
    with pytest.raises(VerifyError, match="after pass 'breaker'"):
        run_pipeline(small_kernel(), passes)


def test_an_ill_formed_input_is_caught_before_the_first_pass():
    with pytest.raises(VerifyError, match="before the first pass"):
        run_pipeline(broken_pass(small_kernel()), cpu_pipeline(), debug=True)


def body_of(kernel):
    return kernel.body


def test_a_pass_returning_a_non_kernel_is_refused(monkeypatch):
    monkeypatch.setitem(pipeline.PASSES, "odd", pipeline.PassInfo(__name__, "body_of"))
    with pytest.raises(VerifyError, match="pass 'odd' returned"):
        run_pipeline(small_kernel(), [Pass("odd")])


def test_missing_pass_module_is_skipped_with_a_warning():
    pipeline._load.cache_clear()
    try:
        register_pass("later", "tessel.passes.not_there", "f")
        with pytest.warns(RuntimeWarning, match="tessel.passes.not_there is not available"):
            out = run_pipeline(small_kernel(), [Pass("later")])
        assert out == small_kernel()
    finally:
        pipeline.unregister_pass("later")
        pipeline._load.cache_clear()
