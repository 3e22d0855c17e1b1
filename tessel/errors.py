"""The errors tessel raises. Every user-facing failure is a `TesselError` subclass.

This module imports nothing from tessel, so every floor of the package may use it.

Example:
    >>> try:
    ...     raise ShapeError("tensor 'A' dim 1: expected 4, got 5")
    ... except TesselError as e:
    ...     print(e)
    tensor 'A' dim 1: expected 4, got 5
"""


class TesselError(Exception):
    """Base class of every error tessel raises on bad input or impossible requests."""


class ShapeError(TesselError):
    """Mismatched shapes, bad index counts, out-of-bounds constant accesses."""


class DTypeError(TesselError):
    """Unknown dtypes or operands whose dtypes do not agree."""


class VerifyError(TesselError):
    """The IR is not well formed (undefined variables, buffers out of scope, ...)."""


class ScheduleError(TesselError):
    """A schedule primitive was asked for something illegal or impossible."""


class ParseError(TesselError):
    """The text form of the IR could not be parsed; the message names line and column."""


class CodegenError(TesselError):
    """Code generation or the backend compiler failed."""


class ArgumentError(TesselError):
    """A kernel or model was called with the wrong arguments (count, shape, dtype, device)."""


class PipelineError(TesselError):
    """A pass pipeline names an unknown pass or gives a pass a bad parameter."""


class ArtifactError(TesselError):
    """A saved model file (`tessel.load`, `tessel compile -o`) is corrupt, truncated, of a format
    version this tessel does not read, built for another machine, or not a tessel model at all; the
    message names the file and what is wrong."""
