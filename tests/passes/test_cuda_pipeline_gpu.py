"""On a GPU: every default GPU schedule built with the CUDA pipeline computes what numpy computes,
and the same bits as the build without any pass (the passes never change float arithmetic)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tessel as ts
from tests.passes.gpu_cases import CASES, NP, case


def _to_torch(x):
    import torch

    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(x.view(np.uint16)).cuda().view(torch.bfloat16)
    return torch.from_numpy(x).cuda()


def _run(kern, c):
    import torch

    out = c.kernel.params[-1]
    y = _to_torch(np.full(out.shape, 7e3, NP[out.dtype]))
    kern(*[_to_torch(x) for x in c.inputs], y)
    torch.cuda.synchronize()
    y = y.cpu()
    return (y.view(torch.uint16).numpy().view(ml_dtypes.bfloat16) if out.dtype == "bfloat16" else y.numpy())


@pytest.mark.gpu
@pytest.mark.parametrize("name", CASES)
def test_pipeline_output_runs_on_the_gpu(name):
    c = case(name)
    with_passes = ts.build(c.kernel, target="cuda", schedule=c.kernel)
    without = ts.build(c.kernel, target="cuda", schedule=c.kernel, pipeline=[])
    y = _run(with_passes, c)
    np.testing.assert_allclose(y.astype(np.float64), c.want, rtol=c.tol, atol=c.tol)
    assert y.tobytes() == _run(without, c).tobytes()
