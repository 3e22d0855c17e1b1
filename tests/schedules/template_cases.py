"""Representative kernels of each default schedule, shared by the template tests.

`golden()` regenerates tests/schedules/template_golden.json: the primitive trace the default
schedules produced for each case *before* they became templates (captured from commit b7f9ec0).
The templates must reproduce exactly these primitives for their default knobs.

    python -m tests.schedules.template_cases   # rewrite the golden file (only when intended)
"""

from __future__ import annotations

import json
import pathlib

import ml_dtypes
import numpy as np

from tessel.fuzz.suite import (  # noqa: F401 (the kernel builders; one copy, shared with the fuzzer)
    column_sum, elementwise, lowered, matmul, row_reduce, transpose, transpose3,
)

GOLDEN = pathlib.Path(__file__).with_name("template_golden.json")
NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "int32": np.int32}


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(NP[dtype])


CPU_CASES = {
    "gemm_64x64x32": lambda: matmul(64, 64, 32, "float32"),
    "gemm_50x70x30": lambda: matmul(50, 70, 30, "float32"),
    "bmm_2x24x40x16": lambda: matmul(24, 40, 16, "float32", batch=2),
    "gemm_bt_32x48x20": lambda: matmul(32, 48, 20, "float32", b_t=True),
    "elementwise_64x64": lambda: elementwise((64, 64)),
    "elementwise_37x19": lambda: elementwise((37, 19)),
    "elementwise_4096": lambda: elementwise((4096,)),
    "row_sum_8x100": lambda: row_reduce(8, 100),
    "row_max_300x64": lambda: row_reduce(300, 64, "max"),
    "softmax_6x40": lambda: lowered("softmax", [(6, 40)], "float32"),
    "layer_norm_5x64": lambda: lowered("layer_norm", [(5, 64), (64,), (64,)], "float32"),
    "conv_1x3x10x10_4x3x3x3": lambda: lowered("conv", [(1, 3, 10, 10), (4, 3, 3, 3)], "float32"),
}

GPU_CASES = {
    "elementwise_37x19": lambda: elementwise((37, 19)),
    "elementwise_f16_64x48": lambda: elementwise((64, 48), "float16"),
    "elementwise_5": lambda: elementwise((5,)),
    "elementwise_4096x8": lambda: elementwise((4096, 8)),
    "row_sum_6x100": lambda: row_reduce(6, 100),
    "row_max_3x1000": lambda: row_reduce(3, 1000, "max"),
    "row_sum_2x5000": lambda: row_reduce(2, 5000),
    "column_sum_50x7": lambda: column_sum(50, 7),
    "transpose_40x70": lambda: transpose(40, 70),
    "transpose3_3x20x36": lambda: transpose3(3, 20, 36),
    "softmax_6x40": lambda: lowered("softmax", [(6, 40)], "float32"),
    "softmax_3x700": lambda: lowered("softmax", [(3, 700)], "float32"),
    "log_softmax_2x3x50": lambda: lowered("log_softmax", [(2, 3, 50)], "float32"),
    "layer_norm_f16_5x64": lambda: lowered("layer_norm", [(5, 64), (64,), (64,)], "float16"),
    "rms_norm_bf16_4x600": lambda: lowered("rms_norm", [(4, 600), (600,)], "bfloat16"),
    "matmul_mma_64": lambda: matmul(64, 64, 64, "float16"),
    "matmul_mma_bf16_t_32": lambda: matmul(32, 32, 32, "bfloat16", True, True),
    "matmul_simt_33x40x17": lambda: matmul(33, 40, 17, "float32"),
}


def primitive_steps(trace) -> list:
    """The plain primitive steps of a trace as JSON (template and fallback records left out)."""
    out = []
    for s in trace:
        d = s.to_json() if hasattr(s, "to_json") else dict(s)
        if d["primitive"] not in ("template", "fallback"):
            out.append(d)
    return out


def golden() -> dict:
    """{"cpu": {case: trace}, "cuda": {case: trace}} from the default schedules as they are now."""
    from tessel.schedules.generic import default_schedule
    from tessel.schedules.generic_gpu import default_gpu_schedule

    out = {"cpu": {}, "cuda": {}}
    for name, make in CPU_CASES.items():
        out["cpu"][name] = primitive_steps(default_schedule(make(), "cpu").trace)
    for name, make in GPU_CASES.items():
        out["cuda"][name] = primitive_steps(default_gpu_schedule(make(), "cuda").trace)
    return out


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(golden(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
