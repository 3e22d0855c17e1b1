"""Comparison tolerances derived from the dtypes and the reduction length, not picked by hand.

A GPU result differs from a float64 reference by rounding only: the inputs rounded to the
kernel's input dtype (when the kernel converts them, or the reference used unrounded values), the
additions rounded to the accumulator dtype, the result rounded to the output dtype. Each source is
bounded with the unit roundoff `u` of its dtype (2**-p for p significand bits), and errors of
random sign add like a random walk: K products each off by `u_in` relative add up to about
`sqrt(K) * u_in * scale`; a sequential K-long sum in the accumulator, whose partial sums grow like
`sqrt(j) * scale`, is off by about `K / sqrt(2) * u_acc * scale` if it rounds to nearest, and by
up to about `K * u_acc * scale` where the hardware truncates (tensor cores' adder trees do): the
bound takes the latter. The output's own rounding is `u_out` relative to the result. `scale` is the typical size
of one product (sigma_a * sigma_b for random inputs). A safety factor (default 6) puts the bound
far beyond the largest of a million random-walk errors, and still well under the error of a real
bug such as a dropped 16-term k-step (tests/test_tolerances.py checks both sides).

Use with numpy or torch:
    >>> import numpy as np
    >>> tol = matmul_tol("float16", k=4096)                  # fp16 in, f32 accumulate, fp16 out
    >>> sorted(tol), tol["rtol"] == 2 * 2.0**-11 + 2 * 256 * 2.0**-24
    (['atol', 'rtol'], True)
    >>> np.testing.assert_allclose(np.float32(64.01), 64.0, **tol)

Offered to every GPU test: replace a flat 3e-2 by `**matmul_tol(in_dtype, k)` (or
`reduction_tol` for sums, `elementwise_tol` for maps) in `np.testing.assert_allclose(...)`.
"""

from __future__ import annotations

import math

# significand bits (with the implicit bit) of each floating dtype
_BITS = {"float64": 53, "float32": 24, "tfloat32": 11, "float16": 11, "bfloat16": 8,
         "float8_e4m3fn": 4, "float8_e4m3": 4, "float8_e5m2": 3}
SAFETY = 6.0


def _name(dtype) -> str:
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.replace("torch.", "")
    return {"half": "float16", "float": "float32", "double": "float64"}.get(name, name)


def unit_roundoff(dtype) -> float:
    """2**-p for a dtype with p significand bits; 0 for integer dtypes (exact).

    >>> unit_roundoff("float16"), unit_roundoff("bfloat16") == 2.0**-8, unit_roundoff("int32")
    (0.00048828125, True, 0.0)
    """
    name = _name(dtype)
    if name.startswith(("int", "uint", "bool")):
        return 0.0
    if name not in _BITS:
        raise ValueError(f"no unit roundoff known for dtype {name!r}; known: {', '.join(sorted(_BITS))}")
    return 2.0 ** -_BITS[name]


def elementwise_tol(dtype, ulps: float = 1, scale: float = 0.0) -> dict:
    """rtol/atol for an elementwise result in `dtype` within `ulps` units in the last place (each
    at most 2u relative) of the exact value, plus its own rounding (u); `atol` is that much at
    `scale`, for results that can be near zero (default 0: relative only).

    >>> elementwise_tol("float32", ulps=2) == {"rtol": 5 * 2.0**-24, "atol": 0.0}
    True
    """
    rtol = (2 * ulps + 1) * unit_roundoff(dtype)
    return {"rtol": rtol, "atol": rtol * scale}


def reduction_tol(in_dtype, k: int, acc_dtype="float32", out_dtype=None, scale: float = 1.0,
                  rounds_inputs: bool = False, safety: float = SAFETY, truncations: int = 0) -> dict:
    """rtol/atol for sums (or dot products) of `k` terms of typical size `scale`, accumulated in
    `acc_dtype`, written in `out_dtype` (default: the accumulator's), against a float64 reference
    on the same input values (`rounds_inputs=True`: the reference used the unrounded inputs, or the
    kernel converts them to `in_dtype`). `rtol` is the output's rounding, `atol` the rest.
    `truncations`: accumulation steps that truncate instead of rounding (one per mma k-step on
    tensor cores); their errors share the sign of the sum, so they add up relative to the result.

    >>> t = reduction_tol("float32", k=1000, scale=2.0)
    >>> t["atol"] == 6 * 2.0 * 1000 * 2.0**-24, t["rtol"] == 2 * 2.0**-24
    (True, True)
    """
    if k < 1:
        raise ValueError(f"a reduction has k >= 1 terms, got {k}")
    u_in = unit_roundoff(in_dtype) if rounds_inputs else 0.0
    u_acc, u_out = unit_roundoff(acc_dtype), unit_roundoff(out_dtype or acc_dtype)
    # k * u_acc, not k / sqrt(2): a margin for partial sums larger than the result
    atol = safety * scale * (math.sqrt(k) * u_in + k * u_acc)
    # a truncation is off by up to one ulp (2u) of the running sum, always toward zero
    return {"rtol": 2 * u_out + 2 * truncations * u_acc, "atol": atol}


def matmul_tol(in_dtype, k: int, acc_dtype="float32", out_dtype=None, scale: float = 1.0,
               rounds_inputs: bool = False, safety: float = SAFETY, k_step: int = 16) -> dict:
    """rtol/atol for C = A @ B with `k`-long dot products: fp16/bf16 (or tf32, fp8) inputs,
    `acc_dtype` accumulation (f32 on tensor cores), output in `out_dtype` (default: `in_dtype`,
    as an mma GEMM stores its result). Products of fp16/bf16 are exact in f32, so only the
    accumulation, the output rounding and (with `rounds_inputs`) the inputs' rounding count.
    Tensor cores add each `k_step`-term chunk (16 for m16n8k16 fp16/bf16, 8 for tf32, 32 for
    fp8/int8) into the accumulator with truncation: `k / k_step` truncating steps.

    >>> matmul_tol("bfloat16", k=64)["rtol"] == 2 * 2.0**-8 + 2 * 4 * 2.0**-24
    True
    """
    return reduction_tol(in_dtype, k, acc_dtype, out_dtype or in_dtype, scale, rounds_inputs, safety,
                         truncations=math.ceil(k / k_step))
