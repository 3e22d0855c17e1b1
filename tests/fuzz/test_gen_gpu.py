"""GPU-shaped programs (tessel/fuzz/gen_gpu.py) reach the templates small DSL programs miss: the
Hopper wgmma GEMM on sm_90a, mma.sync on sm_80, block-wide reductions, row-wise kernels; they
verify and run, and what the templates make of them matches the interpreter on the unscheduled
kernel. The reference suite's GPU programs (tessel/fuzz/suite.py) match their references, and a
wrong schedule makes them say so."""

import collections
import random

import pytest

from tessel.errors import ScheduleError
from tessel.fuzz import suite
from tessel.fuzz.case import Case
from tessel.fuzz.gen_gpu import gemm, gpu_program
from tessel.fuzz.mutate_ir import default_schedule_cmds
from tessel.fuzz.mutate_passes import base_pipeline
from tessel.fuzz.oracles import make_inputs, run_case
from tessel.ir.interp import run
from tessel.ir.nodes import Const, Store, rewrite
from tessel.ir.verify import verify
from tessel.schedules.generic_gpu import default_gpu_template


def test_gpu_programs_reach_the_gemm_and_block_templates():
    seed = random.randrange(1 << 20)  # fresh programs every run; the seed is in the messages
    rng = random.Random(seed)
    seen = collections.Counter()
    for _ in range(40):
        k = gpu_program(rng, "cuda:sm_90a")
        verify(k)
        try:
            seen[default_gpu_template(k, "cuda:sm_90a").name] += 1
        except ScheduleError:
            seen["refused"] += 1  # (a campaign draws another program)
    for name in ("gemm.wgmma", "gpu.reduce_inner", "gpu.rowwise"):
        assert seen[name] > 0, (seed, seen)
    archs = {default_gpu_template(gemm(random.Random(seed + s), "cuda:sm_80"), "cuda:sm_80").name for s in range(6)}
    assert "gemm.mma_sync" in archs and "gemm.wgmma" not in archs, (seed, archs)


@pytest.mark.parametrize("target", ["cuda:sm_80", "cuda:sm_90a"])
def test_a_generated_tensor_core_gemm_passes_the_oracles(target):
    """One fresh 16-bit GEMM through its template, the CUDA pipeline, the race-checking interpreter
    and the CUDA printer."""
    seed = random.randrange(1 << 20)
    rng = random.Random(seed)
    while True:
        k = suite.matmul(*rng.choice(((64, 64, 64), (64, 72, 64), (32, 48, 64))), rng.choice(("float16", "bfloat16")),
                         a_t=rng.random() < 0.5, b_t=rng.random() < 0.5,
                         epilogue=rng.choice((None, "bias_relu", "cast")))
        cmds = default_schedule_cmds(k, target)
        if cmds[0]["args"]["name"].startswith("gemm."):
            break
    run(k, *make_inputs(k, seed))
    out = run_case(Case(k, target, cmds, base_pipeline(target), seed))
    assert out.status == "ok", (seed, cmds, out.signature, out.message[:500])


@pytest.mark.parametrize("name", ["gpu.gemm_mma_bf16_tt_32", "gpu.row_max_3x1000", "gpu.x.mma_f16_bmm_2x32x48x32",
                                  "gpu.x.softmax_3x700"])
def test_suite_gpu_programs_match_their_reference(name):
    assert suite.run_program(name) is None


def test_suite_reports_a_wrong_schedule(monkeypatch):
    """The suite can fail: a schedule whose stores write one more than they should is a message."""
    right = suite.schedule_gpu

    def wrong(kernel, target, knobs=None):
        sk = right(kernel, target, knobs)
        out = sk.params[-1]
        return rewrite(sk, lambda n: Store(n.buffer, n.indices, n.value + Const(1, n.value.dtype))
                       if isinstance(n, Store) and n.buffer == out else None, fixpoint=False)

    monkeypatch.setattr(suite, "schedule_gpu", wrong)
    assert "buffer 'S'" in suite.run_program("gpu.row_max_3x1000")
