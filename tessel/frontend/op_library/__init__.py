"""The op library: every op of the op set (see `tessel.frontend.ops`) with its shape rule, its
lowering to the tensor DSL and its numpy reference, one module per family.

Importing this package registers every op; `tessel.frontend.ops.get_op` imports it on first use.

    common.py       shared helpers: input/attribute checks, broadcasting, axes, dtype promotion
    elementwise.py  binary/unary arithmetic, comparisons, where, activations, cast, clip, batch_norm
    bitwise.py      bitwise and/or/xor/not and shifts, composed from integer arithmetic
    contraction.py  matmul, linear, conv
    reduction.py    reduce_*, argmax/argmin, softmax/log_softmax, layer_norm, rms_norm
    pool.py         max_pool, avg_pool
    layout.py       reshape, transpose, expand, concat, slice, gather, pad
    attention.py    sdpa
    fft.py          rfft, irfft
    control.py      if, loop: subgraphs run by the model compiler (no lowering)

Example:
    >>> from tessel.frontend.ops import all_ops
    >>> {"matmul", "sdpa", "rfft"} <= set(all_ops())
    True
"""

from tessel.frontend.op_library import (  # noqa: F401 - imported for their registrations
    attention, bitwise, contraction, control, elementwise, fft, layout, pool, reduction,
)
