"""Pipelines are data: they round-trip through JSON, bad data raises PipelineError naming the pass
or parameter, and mutated pipelines (passes deleted, reordered, repeated, inserted, parameters
changed) still give kernels that verify, build, and compute what the unpassed kernel computes."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.pipeline import (
    PASSES, Pass, as_pipeline, cpu_pipeline, cuda_pipeline, pipeline_from_json, pipeline_to_json, run_pipeline,
)
from tessel.errors import PipelineError, TesselError
from tessel.ir.verify import verify
from tests.passes.gpu_cases import case, equal_bits, run_case


def test_json_round_trip_of_the_real_pipelines():
    for p in (cpu_pipeline(), cuda_pipeline(), [Pass("unroll", {"max_extent": 3, "serial": True}), Pass("hoist")]):
        text = pipeline_to_json(p)
        assert pipeline_from_json(text) == p
        assert pipeline_from_json(json.loads(text)) == p  # the parsed list is accepted too
        assert json.loads(pipeline_to_json(pipeline_from_json(text))) == json.loads(text)


def test_mixed_forms_and_defaults():
    p = as_pipeline(["simplify", {"name": "unroll", "params": {"max_extent": 2}}, Pass("hoist", {"min_ops": 3})])
    assert [x.name for x in p] == ["simplify", "unroll", "hoist"]
    assert p[1].arguments() == {"max_extent": 2, "max_stmts": 256, "serial": False}
    assert p[2].arguments() == {"min_ops": 3}
    assert Pass("unroll") != Pass("unroll", {"max_extent": 2}) and hash(Pass("hoist")) == hash(Pass("hoist"))


@pytest.mark.parametrize("data,match", [
    ('[{"name": "unrol"}]', "unknown pass 'unrol'; registered passes: simplify"),
    ('["nope"]', "unknown pass 'nope'"),
    ('[{"name": "unroll", "params": {"max_extnt": 4}}]', "pass 'unroll' has no parameter 'max_extnt'; its parameters: "
                                                         "max_extent, max_stmts, serial"),
    ('[{"name": "unroll", "params": {"max_extent": "4"}}]', "pass 'unroll': parameter 'max_extent' must be int"),
    ('[{"name": "unroll", "params": {"max_extent": true}}]', "parameter 'max_extent' must be int, got True"),
    ('[{"name": "unroll", "params": {"max_extent": -1}}]', r"'max_extent' = -1 is outside \[0, 1024\]"),
    ('[{"name": "hoist", "params": {"min_ops": 0}}]', r"'min_ops' = 0 is outside \[1, 64\]"),
    ('[{"name": "vector_access", "params": {"enabled": 1}}]', "parameter 'enabled' must be bool"),
    ('[{"name": "simplify", "params": {"x": 1}}]', "pass 'simplify' has no parameter 'x'; its parameters: none"),
    ('[{"pass": "simplify"}]', "pipeline entry 0: expected"),
    ('[{"name": "simplify", "params": [1]}]', "params must be a dict"),
    ('[3]', "pipeline entry 0: expected a Pass, a pass name or a dict"),
    ('{"name": "simplify"}', "a pipeline is a list of passes, got dict"),
    ('[{"name": "simplify"', "pipeline JSON does not parse"),
])
def test_bad_pipeline_data_names_the_culprit(data, match):
    with pytest.raises(PipelineError, match=match):
        pipeline_from_json(data)
    assert issubclass(PipelineError, TesselError)


def test_build_refuses_a_bad_pipeline_before_doing_any_work():
    A = ts.placeholder((8,), name="A")
    B = ts.compute((8,), lambda i: A[i] * 2.0, name="B")
    with pytest.raises(PipelineError, match="unknown pass 'fold'"):
        ts.build([A, B], target="cuda:sm_80", pipeline=["simplify", "fold"])
    with pytest.raises(PipelineError, match="'max_stmts' = 0"):
        ts.build([A, B], target="cpu", pipeline=[{"name": "unroll", "params": {"max_stmts": 0}}])


def test_cpu_build_takes_a_pipeline():
    A = ts.placeholder((6, 5), name="A")
    B = ts.compute((6, 5), lambda i, j: A[i, j] * 3.0 + 1.0, name="B")
    a = np.random.default_rng().standard_normal((6, 5)).astype(np.float32)
    for pipe in ([], ["simplify", "unroll", "simplify", "hoist"], cpu_pipeline() * 2):
        kern = ts.build([A, B], target="cpu", pipeline=pipe)
        b = np.full((6, 5), 7e3, np.float32)
        kern(a, b)
        np.testing.assert_allclose(b, a * 3.0 + 1.0, rtol=1e-6, atol=1e-6)  # TVM may fuse the multiply-add


@pytest.mark.parametrize("name", ["softmax", "conv2d", "gemm_fp16_fp32"])
def test_cpu_builds_through_every_pass_kind(name):
    """Every pass of the registry (unroll of serial loops too) on a CPU kernel, compiled by TVM."""
    from tests.ir.dsl_programs import PROGRAMS, random_inputs

    tensors, reference = PROGRAMS[name]()
    pipe = ["simplify", {"name": "unroll", "params": {"serial": True, "max_extent": 4}}, "simplify", "storage_rewrite",
            {"name": "hoist", "params": {"min_ops": 1}}, "vector_access", "remove_dead_code"]
    kern = ts.build(tensors, target="cpu", pipeline=pipe)
    inputs = random_inputs(tensors, np.random.default_rng())
    outs = [np.full(t.shape, 7.0, np.float32) for t in tensors if not t.is_placeholder]
    kern(*inputs, *outs)
    for got, want in zip(outs, reference(*inputs)):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-2, atol=1e-3)


# -- mutations -----------------------------------------------------------------------------------

def _random_params(name: str, rng: random.Random) -> dict:
    out = {}
    for k, p in PASSES[name].params.items():
        if rng.random() < 0.5:
            continue
        if p.type is bool:
            out[k] = rng.random() < 0.5
        elif p.type is int:
            out[k] = rng.randint(p.lo, min(p.hi, max(p.lo, 1) * 16))
    return out


def mutate(pipeline: list, rng: random.Random) -> list:
    """One random edit of a pipeline: delete, swap two, repeat one, insert a random pass, or
    change a pass's parameters."""
    p = list(pipeline)
    names = [n for n in PASSES if n in {x.name for x in cuda_pipeline()}]
    op = rng.choice(["delete", "swap", "repeat", "insert", "params"])
    if op == "delete" and p:
        del p[rng.randrange(len(p))]
    elif op == "swap" and len(p) > 1:
        i, j = rng.sample(range(len(p)), 2)
        p[i], p[j] = p[j], p[i]
    elif op == "repeat" and p:
        i = rng.randrange(len(p))
        p.insert(i, p[i])
    elif op == "insert" or not p:
        n = rng.choice(names)
        p.insert(rng.randrange(len(p) + 1), Pass(n, _random_params(n, rng)))
    else:
        i = rng.randrange(len(p))
        p[i] = Pass(p[i].name, _random_params(p[i].name, rng))
    return p


@pytest.mark.parametrize("seed", range(8))
def test_mutated_pipelines_keep_the_meaning(seed):
    rng = random.Random(seed)
    pipe = cuda_pipeline()
    for _ in range(rng.randint(1, 6)):
        pipe = mutate(pipe, rng)
    assert pipeline_from_json(pipeline_to_json(pipe)) == pipe
    for name in ("softmax_block", "matmul_mma_bf16_t", "elementwise_f16", "matmul_simt"):
        c = case(name)
        before = run_case(c.kernel, c)
        out = run_pipeline(c.kernel, pipe, debug=True)  # the verifier after every pass
        verify(out)
        assert equal_bits(before, run_case(out, c)), (name, pipeline_to_json(pipe))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("edit", ["delete_simplify", "reverse", "repeat_all", "no_vectors"])
def test_edited_pipelines_build_and_match(edit):
    """The named edits of the CUDA pipeline build through `tessel.build` (nvcc or NVRTC) and the
    built kernel's IR computes what numpy computes."""
    pipe = cuda_pipeline()
    pipe = {"delete_simplify": [p for p in pipe if p.name != "simplify"], "reverse": pipe[::-1],
            "repeat_all": pipe + pipe,
            "no_vectors": [Pass("vector_access", {"enabled": False}) if p.name == "vector_access" else p
                           for p in pipe]}[edit]
    c = case("elementwise_f16")
    kern = ts.build(c.kernel, target="cuda:sm_80", schedule=c.kernel, pipeline=pipe)
    assert ("load_vec" in kern.source) == (edit != "no_vectors")
    y = np.full(c.want.shape, 7e3, np.float16)
    kern.run_reference(*c.inputs, y)
    np.testing.assert_allclose(y.astype(np.float64), c.want, rtol=c.tol, atol=c.tol)


def test_the_pipeline_is_deterministic_across_processes():
    """The same kernel gives the same IR text whatever the string-hash seed (the fuzzer's
    non-determinism oracle, and cache keys, rely on it)."""
    import os
    import subprocess
    import sys

    code = ("import hashlib; from tests.passes.gpu_cases import case; "
            "from tessel.compiler.pipeline import cuda_pipeline, run_pipeline; "
            "print(hashlib.sha256(''.join(str(run_pipeline(case(n, seed=0).kernel, cuda_pipeline())) "
            "for n in ('softmax_block', 'gemm_3stage', 'matmul_simt')).encode()).hexdigest())")
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        assert r.returncode == 0, r.stderr[-2000:]
        outs.add(r.stdout.strip())
    assert len(outs) == 1
