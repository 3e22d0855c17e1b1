"""ONNX bitwise ops: `BitShift` (direction LEFT or RIGHT) and `BitwiseAnd`/`Or`/`Xor`/`Not`, onto
the op library's bitwise family (`op_library/bitwise.py`, composed from integer arithmetic).

Example:
    >>> all(op in CONVERTERS for op in ("BitShift", "BitwiseAnd", "BitwiseNot"))
    True
"""

from __future__ import annotations

from tessel.frontend.onnx_ops import CONVERTERS, converter, ins  # noqa: F401 - CONVERTERS: the docstring

_BITWISE = {"BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor"}


@converter("BitShift")
def _bit_shift(ctx, node):
    x, y = ins(ctx, node)
    direction = ctx.attr(node, "direction")
    if direction not in ("LEFT", "RIGHT"):
        raise ctx.unsupported(f"attribute 'direction' is {direction!r}, expected 'LEFT' or 'RIGHT'")
    return [ctx.op("shift_left" if direction == "LEFT" else "shift_right", [x, y])]


@converter(*_BITWISE)
def _bitwise(ctx, node):
    a, b = ins(ctx, node)
    return [ctx.op(_BITWISE[node.op_type], [a, b])]


@converter("BitwiseNot")
def _bitwise_not(ctx, node):
    (x,) = ins(ctx, node)
    return [ctx.op("bitwise_not", [x])]
