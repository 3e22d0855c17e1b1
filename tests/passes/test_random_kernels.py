"""Random DSL kernels (tessel.fuzz.gen) through the pass pipelines: scheduled for the GPU where
the default GPU schedule takes them (and for the CPU otherwise), every pass of the CUDA pipeline,
and unrolling and hoisting on CPU schedules, leave kernels that verify and compute the same bits
in the interpreter on fresh random inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tessel.compiler.pipeline import Pass, cuda_pipeline
from tessel.errors import ScheduleError
from tessel.fuzz.gen import dsl_kernel
from tessel.ir import interp
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.verify import verify
from tessel.schedules.generic import default_schedule
from tessel.schedules.generic_gpu import default_gpu_schedule


def _arrays(kernel, rng):
    out = []
    for p in kernel.params:
        if p.dtype.startswith("int"):
            out.append(rng.integers(-5, 6, size=p.shape).astype(p.dtype))
        elif p.dtype == "bool":
            out.append(rng.random(p.shape) < 0.5)
        else:
            out.append(rng.standard_normal(p.shape).astype(numpy_dtype(p.dtype)))
    return out


def _run(kernel, arrays):
    copies = [a.copy() for a in arrays]
    interp.run(kernel, *copies)
    return [a.tobytes() for a in copies]


def _kernels(seed, count):
    rng = random.Random(seed)
    return [dsl_kernel(rng, stages=rng.choice((1, 1, 2))) for _ in range(count)]


@pytest.mark.parametrize("seed", range(6))
def test_random_kernels_keep_their_bits_through_the_cuda_pipeline(seed):
    rng = np.random.default_rng()
    gpu = 0
    for k in _kernels(seed, 6):
        try:
            scheduled = default_gpu_schedule(k, "cuda:sm_80").kernel
        except ScheduleError:
            continue  # several stages that are not row-wise fusable: one kernel per stage on a GPU
        gpu += 1
        arrays = _arrays(k, rng)
        want = _run(scheduled, arrays)
        for p in cuda_pipeline():
            scheduled = p(scheduled)
            verify(scheduled)
            assert _run(scheduled, arrays) == want, (seed, k.name, p.name)
    assert gpu, "no random kernel took the GPU schedule"


@pytest.mark.parametrize("seed", range(6))
def test_random_cpu_schedules_keep_their_bits_through_unroll_and_hoist(seed):
    rng = np.random.default_rng()
    passes = [Pass("simplify"), Pass("unroll", {"serial": True, "max_extent": 6, "max_stmts": 512}),
              Pass("simplify"), Pass("storage_rewrite"), Pass("hoist", {"min_ops": 1}), Pass("remove_dead_code")]
    for k in _kernels(100 + seed, 4):
        scheduled = default_schedule(k, "cpu").kernel
        arrays = _arrays(k, rng)
        want = _run(scheduled, arrays)
        for p in passes:
            scheduled = p(scheduled)
            verify(scheduled)
            assert _run(scheduled, arrays) == want, (seed, k.name, p.name)
