"""The input shapes a dynamic-shape model accepts: per input dimension a fixed size or a named
range (from `torch.export.Dim`), checked before a call with a new shape is compiled.

A model compiled from a torch module exported with `dynamic_shapes` (or from an ExportedProgram)
keeps one `InputRanges`. A call whose shapes break it raises `ArgumentError` naming the input, the
dimension and the range, before anything is exported or compiled. Dimensions that share a name
(one `Dim` used by several inputs) must agree. A dimension torch derived from others (`2 * batch`)
is recorded as "derived" and left to the export of that shape to check.

Example:
    >>> r = InputRanges("M", [("x", [("batch", 1, 64), 8])])
    >>> r.check([((3, 8), "float32")])
    >>> try:
    ...     r.check([((70, 8), "float32")])
    ... except ArgumentError as e:
    ...     print(e)
    model 'M' input 'x' dimension 0 is 70, outside the range [1, 64] of 'batch' that the model was compiled for
"""

from __future__ import annotations

from tessel.errors import ArgumentError


def fmt_range(lo, hi) -> str:
    """'[1, 64]', or '[2, inf)' for a range without an upper bound.

    >>> fmt_range(2, None)
    '[2, inf)'
    """
    return f"[{lo}, {hi}]" if hi is not None else f"[{lo}, inf)"


class InputRanges:
    """Per input (name, dims), each dim an int (fixed), (name, low, high or None) (a range) or
    "derived" (computed by torch from other dims: not checked here)."""

    def __init__(self, model: str, inputs: list):
        self.model = model
        self.inputs = [(name, [tuple(d) if isinstance(d, list) else d for d in dims]) for name, dims in inputs]

    @property
    def dynamic(self) -> bool:
        """Whether some dimension is not fixed."""
        return any(not isinstance(d, int) for _, dims in self.inputs for d in dims)

    def describe(self) -> str:
        """'x: (batch in [1, 64], 8), y: ...' for messages.

        >>> InputRanges("M", [("x", [("b", 1, None), 8])]).describe()
        'x: (b in [1, inf), 8)'
        """
        def dim(d):
            if isinstance(d, int):
                return str(d)
            return "derived" if d == "derived" else f"{d[0]} in {fmt_range(d[1], d[2])}"

        return ", ".join(f"{n}: ({', '.join(dim(d) for d in dims)}{',' if len(dims) == 1 else ''})"
                         for n, dims in self.inputs)

    def check(self, signature) -> None:
        """Raise ArgumentError for the first input of `signature` (((shape, dtype), ...), one per input)
        whose shape the ranges refuse."""
        if len(signature) != len(self.inputs):
            return  # the count is checked, and named, with the inputs
        seen: dict = {}  # dim name -> (input, dimension, size) first seen
        for (name, dims), (shape, _) in zip(self.inputs, signature):
            what = f"model '{self.model}' input '{name}'"
            if len(shape) != len(dims):
                raise ArgumentError(f"{what} has {len(shape)} dimension(s) {tuple(shape)}; the model takes "
                                    f"{len(dims)} ({self.describe()})")
            for k, (d, size) in enumerate(zip(dims, shape)):
                if isinstance(d, int):
                    if size != d:
                        raise ArgumentError(f"{what} dimension {k} is {size}; the model fixes it at {d} "
                                            f"(inputs: {self.describe()})")
                    continue
                if d == "derived":
                    continue
                label, lo, hi = d
                if size < lo or (hi is not None and size > hi):
                    raise ArgumentError(f"{what} dimension {k} is {size}, outside the range {fmt_range(lo, hi)} of "
                                        f"'{label}' that the model was compiled for")
                first = seen.setdefault(label, (name, k, size))
                if first[2] != size:
                    raise ArgumentError(f"{what} dimension {k} is {size} but input '{first[0]}' dimension "
                                        f"{first[1]} is {first[2]}; both are '{label}' and must be equal")

    def to_json(self) -> dict:
        return {"model": self.model, "inputs": [[n, [list(d) if isinstance(d, tuple) else d for d in dims]]
                                                 for n, dims in self.inputs]}

    @classmethod
    def from_json(cls, data: dict) -> InputRanges:
        return cls(data["model"], [(n, dims) for n, dims in data["inputs"]])

    def __repr__(self) -> str:
        return f"InputRanges({self.describe()})"
