"""Random valid points of the default GPU templates as CUDA: nvcc compiles them (where nvcc is
installed), and on a GPU they compute what numpy computes (float64 reference, fresh inputs,
outputs starting from garbage). The interpreter checks of the same spaces are in
test_template_defaults.py."""

from __future__ import annotations

import shutil

import ml_dtypes
import numpy as np
import pytest

from tessel.schedules.template import get_template
from tests.schedules.template_cases import elementwise, lowered, row_reduce, transpose, transpose3
from tests.tolerances import elementwise_tol, reduction_tol


def _softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _rms(x, w):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6) * w


# template -> [(case, kernel maker, numpy reference of the float64 inputs, tolerance)]
CASES = {
    "gpu.elementwise": [
        ("ew_f32", lambda: elementwise((300, 70)), lambda a: np.exp(a) * a, elementwise_tol("float32", 4)),
        ("ew_f16", lambda: elementwise((256, 64), "float16"), None, elementwise_tol("float16", 2, scale=1.0)),
    ],
    "gpu.transpose": [("t2", lambda: transpose(200, 136), lambda a: a.T, dict(rtol=0, atol=0)),
                      ("t3", lambda: transpose3(3, 64, 40), lambda a: np.swapaxes(a, 1, 2), dict(rtol=0, atol=0))],
    "gpu.reduce_inner": [("sum", lambda: row_reduce(48, 900), lambda a: a.sum(axis=1), reduction_tol("float32", 900)),
                         ("max", lambda: row_reduce(64, 200, "max"), lambda a: a.max(axis=1), dict(rtol=0, atol=0))],
    "gpu.reduce_outer": [("sum", lambda: row_reduce(2000, 30), lambda a: a.sum(axis=1), reduction_tol("float32", 30))],
    "gpu.rowwise": [("softmax", lambda: lowered("softmax", [(64, 500)], "float32"), _softmax,
                     dict(rtol=1e-4, atol=1e-6)),
                    ("rms", lambda: lowered("rms_norm", [(32, 768), (768,)], "float32"), _rms,
                     dict(rtol=1e-4, atol=1e-5))],
}
PARAMS = [(t, c) for t, cases in CASES.items() for c, *_ in cases]
POINTS = 3


def _points(template, case, target):
    make = {c: m for c, m, *_ in CASES[template]}[case]
    kernel = make()
    space = get_template(template).space(kernel, target)
    return kernel, [space.default] + space.sample(POINTS, seed=sum(map(ord, template + case)))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("template,case", PARAMS)
def test_random_points_compile_with_nvcc(template, case):
    from tessel.codegen.cuda import cuda_source
    from tessel.codegen.cuda_build import compile_cuda

    kernel, points = _points(template, case, "cuda:sm_90a")
    for knobs in points[1:2]:  # one random point each: nvcc takes about a second
        sch = get_template(template).apply(kernel, knobs, "cuda:sm_90a")
        assert compile_cuda(cuda_source(sch.kernel), "sm_90a", name=case, compiler="nvcc").code


@pytest.mark.gpu
@pytest.mark.parametrize("template,case", PARAMS)
def test_random_points_match_numpy_on_the_gpu(template, case):
    import torch

    from tessel.codegen.cuda import build_kernel

    _, make, ref, tol = next(x for x in CASES[template] if x[0] == case)
    kernel, points = _points(template, case, "cuda")
    rng = np.random.default_rng(7)
    np_dtype = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
    ins = [rng.standard_normal(p.shape).astype(np_dtype[p.dtype]) for p in kernel.params[:-1]]
    x64 = [a.astype(np.float64) for a in ins]
    want = ref(*x64) if ref is not None else (np.exp(ins[0].astype(np.float32)).astype(np.float16).astype(np.float64)
                                              * x64[0])
    out_p = kernel.params[-1]
    tdt = {"float16": torch.float16, "float32": torch.float32}[out_p.dtype]
    for knobs in points:
        sch = get_template(template).apply(kernel, knobs, "cuda")
        gpu = build_kernel(sch.kernel, "cuda")
        tensors = [torch.from_numpy(a).cuda() for a in ins]
        out = torch.full(out_p.shape, 7e3, dtype=tdt, device="cuda")
        gpu(*tensors, out)
        torch.cuda.synchronize()
        np.testing.assert_allclose(out.float().cpu().numpy().astype(np.float64), want, **tol,
                                   err_msg=f"{template} {case} {knobs}")
