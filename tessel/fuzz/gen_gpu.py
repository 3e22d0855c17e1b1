"""Generator of GPU-shaped programs: the kernels the GPU templates take whole.

`dsl_kernel` (tessel/fuzz/gen.py) draws extents of 1..16, so its contractions never meet the GEMM
templates' conditions (gemm.wgmma: float16 / bfloat16 operands, every dimension >= 64, contiguous
extents multiples of 8; gemm.mma_sync: 16-bit operands on tile-friendly shapes) and its reductions
never need a block-wide one. `gpu_program(rng, target)` draws, for a `--target cuda[:ARCH]` campaign:

- whole GEMM nests (tessel/fuzz/suite.py `matmul`): 16-bit operands (sometimes float32: the SIMT
  template), A or B transposed, an optional batch dimension, an optional fused epilogue (bias +
  ReLU, bias + GELU + cast, the output cast); on sm_90a, M, N, K >= 64 and multiples of 8 (edges
  where they are not multiples of the 64-wide tile), elsewhere multiples of 16 from 16 up;
- reductions over long rows (100..2048 columns: one block per row, warps combined through shared
  memory) and over columns;
- row-wise ops as the model compiler lowers them (softmax, log-softmax, layer norm, RMS norm) on
  rows up to 1024 wide, in float32, float16 and bfloat16;
- transposes (2-D and 3-D) of 20..72 extents;
- otherwise a small one-stage DSL program, as before.

Sizes stay small enough for the race-checking interpreter (a GEMM has at most 1.5 * 2^18 multiply-adds, 2^19 in
float16 on sm_90a;
bfloat16, whose scalar casts the interpreter runs slowly, is a fifth of the 16-bit GEMMs).

Example:
    >>> import random
    >>> from tessel.schedules.generic_gpu import default_gpu_template
    >>> names = {default_gpu_template(gemm(random.Random(s), "cuda:sm_90a"), "cuda:sm_90a").name for s in range(8)}
    >>> "gemm.wgmma" in names
    True
"""

from __future__ import annotations

import random

from tessel.ir.nodes import Kernel

MAX_MACS = 3 << 17  # (the reference interpreter runs a naive 64^3 float16 GEMM in ~0.4 s, bfloat16 ~2 s)
MAX_MACS_F16 = 1 << 19
EPILOGUES = (None, None, None, "bias_relu", "bias_gelu_cast", "cast")


def _dims_sm90(rng: random.Random, limit: int = MAX_MACS) -> tuple:
    while True:
        m, n, k = (rng.choice((64, 64, 64, 72, 96, 128)) for _ in range(3))
        if m * n * k <= limit:
            return m, n, k


def _dims_small(rng: random.Random) -> tuple:
    while True:
        m, n, k = (rng.choice((16, 32, 32, 48, 64, 80, 96)) for _ in range(3))
        if m * n * k <= MAX_MACS:
            return m, n, k


def gemm(rng: random.Random, target: str = "cuda:sm_90a") -> Kernel:
    """A whole GEMM nest (see the module docstring) sized for `target`'s templates."""
    from tessel.fuzz.suite import matmul

    wgmma = target.endswith("sm_90a") or target == "cuda"
    dtype = rng.choice(("float16", "float16", "float16", "float16", "bfloat16", "float32", "float32"))
    if dtype == "float32":  # the SIMT template: no fused epilogue, and the interpreter runs it slowly
        m, n, k = (rng.choice((8, 16, 24, 33, 40)) for _ in range(3))
        return matmul(m, n, k, dtype, a_t=rng.random() < 0.3, b_t=rng.random() < 0.3)
    # (float16 may go to 64 x 64 x 128: three k-tiles of 64 wrap the wgmma templates' 2-stage rings)
    m, n, k = _dims_sm90(rng, MAX_MACS_F16 if dtype == "float16" else MAX_MACS) if wgmma and rng.random() < 0.7 \
        else _dims_small(rng)
    batch = rng.choice((2, 3)) if rng.random() < 0.15 and m * n * k <= MAX_MACS // 3 else None
    epi = rng.choice(EPILOGUES)
    return matmul(m, n, k, dtype, a_t=rng.random() < 0.3, b_t=rng.random() < 0.3, batch=batch, epilogue=epi)


def reduction(rng: random.Random) -> Kernel:
    from tessel.fuzz.suite import column_sum, row_reduce

    if rng.random() < 0.75:
        return row_reduce(rng.randint(1, 6), rng.choice((100, 300, 513, 600, 1000, 1500, 2048)),
                          rng.choice(("sum", "max", "min")))
    return column_sum(rng.choice((33, 100, 300)), rng.choice((7, 33, 64)))


def rowwise(rng: random.Random) -> Kernel:
    from tessel.fuzz.suite import lowered

    op = rng.choice(("softmax", "log_softmax", "layer_norm", "rms_norm"))
    rows, width = rng.randint(2, 6), rng.choice((32, 40, 64, 200, 512, 600, 1024))  # (1 row: no rows to spread)
    dtype = rng.choice(("float32", "float16", "bfloat16"))
    shapes = [(rows, width)] + {"layer_norm": [(width,), (width,)], "rms_norm": [(width,)]}.get(op, [])
    return lowered(op, shapes, dtype)


def transpose(rng: random.Random) -> Kernel:
    from tessel.fuzz.suite import transpose as t2
    from tessel.fuzz.suite import transpose3

    ext = (20, 32, 33, 40, 64, 70, 72)
    if rng.random() < 0.7:
        return t2(rng.choice(ext), rng.choice(ext))
    return transpose3(rng.randint(2, 3), rng.choice(ext), rng.choice(ext))


def gpu_program(rng: random.Random, target: str = "cuda") -> Kernel:
    """One unscheduled program for a GPU campaign on `target` (see the module docstring).

    >>> import random
    >>> gpu_program(random.Random(0)).target
    'cpu'
    """
    r = rng.random()
    if r < 0.35:
        return gemm(rng, target)
    if r < 0.5:
        return reduction(rng)
    if r < 0.6:
        return rowwise(rng)
    if r < 0.65:
        return transpose(rng)
    from tessel.fuzz.gen import dsl_kernel

    return dsl_kernel(rng, stages=1)


__all__ = ["gemm", "gpu_program", "reduction", "rowwise", "transpose"]
