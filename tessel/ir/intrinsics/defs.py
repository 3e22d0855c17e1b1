"""The shape of one intrinsic's registry entry: `IntrinsicDef`, its `Operand`s and its `Cost`.

An intrinsic is one row of one table (DESIGN.md, "Intrinsics are registry entries"): who executes
it, which arguments are buffer regions it reads or writes and how large each region is, what it
means (an `IntrinsicImpl` the interpreter runs over all participating lanes), how the CUDA
printer spells it, the device-header C++ that spelling relies on, and a rough cost for the tuner.

Argument conventions shared by the interpreter, the printer and the schedules:

- An `Intrinsic(name, args)` statement lists its arguments in the order of `operands`.
- A buffer operand is a `BufferRef(buffer, start)`; the region it covers is `elems` consecutive
  elements along the buffer's last dimension starting at `start` (for a byte-sized operand such
  as cp.async's, `bytes // itemsize` elements). So a fragment can live in a 1-D local buffer or in
  one row of a larger local array.
- The CUDA printer prints a buffer operand as a pointer to its start element, typed as the
  buffer's element type (`&frag[8 * i]`, `&A_shared[r * 40 + c]`), and an expression operand as
  its C expression; `IntrinsicDef.cuda(*printed)` then returns the statement text (with the
  trailing semicolon).

Example:
    >>> from tessel.ir.nodes import Buffer
    >>> op = Operand("dst", "write", bytes=16, scopes=("shared",))
    >>> op.region(Buffer("S", (4, 64), "float16", "shared"))
    (1, 8)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tessel.errors import TesselError
from tessel.ir.dtypes import bits
from tessel.ir.interp.intrinsics import SCOPE_LANES, IntrinsicImpl
from tessel.ir.nodes import BufferRef, Const, Expr, Intrinsic

ROLES = ("read", "write", "readwrite", "value")


@dataclass(frozen=True)
class Operand:
    """One argument of an intrinsic.

    role: "read", "write" or "readwrite" for a BufferRef (the region it covers is `elems`
    elements, or `bytes` bytes, along the buffer's last dimension), "value" for an expression.
    scopes / dtypes: what the buffer (or the expression) may be; empty means anything.
    const: an expression operand that must be an integer constant (a PTX immediate).
    """

    name: str
    role: str
    elems: int | None = None
    bytes: int | None = None
    scopes: tuple = ()
    dtypes: tuple = ()
    const: bool = False

    def __post_init__(self):
        if self.role not in ROLES:
            raise TesselError(f"operand '{self.name}': role {self.role!r} is not one of {ROLES}")
        if self.role != "value" and (self.elems is None) == (self.bytes is None):
            raise TesselError(f"operand '{self.name}': a buffer operand needs exactly one of elems and bytes")

    @property
    def is_buffer(self) -> bool:
        return self.role != "value"

    def count(self, dtype: str) -> int:
        """Elements the region holds for a buffer of `dtype`."""
        if self.elems is not None:
            return self.elems
        size = bits(dtype) // 8
        if self.bytes % size:
            raise TesselError(f"operand '{self.name}' covers {self.bytes} bytes: not a whole number of {dtype}")
        return self.bytes // size

    def region(self, buffer) -> tuple:
        """The region shape (what `Ref.region` takes) for `buffer`: ones, then the count."""
        return (1,) * (buffer.ndim - 1) + (self.count(buffer.dtype),)


@dataclass(frozen=True)
class Cost:
    """A rough cost for the tuner, per execution by the whole group (warp, thread, ...)."""

    flops: int = 0  # arithmetic work (a multiply-add counts 2)
    bytes: int = 0  # bytes moved
    cycles: float = 1.0  # issue cycles on one SM sub-partition, roughly


@dataclass(frozen=True)
class IntrinsicDef:
    """One intrinsic: see the module docstring for the argument conventions.

    name: the IR name (the PTX instruction's spelling where there is one).
    scope: "thread", "warp", "warpgroup" or "block": who executes one call together.
    operands: the arguments, in order.
    semantics: what the interpreter runs (numpy over all participating lanes).
    cuda: printed argument strings -> the CUDA statement text.
    header: device-header C++ defining the wrapper `cuda` calls (inside namespace tessel).
    cost: a rough figure for the tuner.
    doc: the fragment layout or other meaning, in words.
    """

    name: str
    scope: str
    operands: tuple
    semantics: IntrinsicImpl
    cuda: Callable[..., str]
    header: str
    cost: Cost = field(default_factory=Cost)
    doc: str = ""

    def __post_init__(self):
        if self.scope not in SCOPE_LANES:
            raise TesselError(f"intrinsic '{self.name}': scope {self.scope!r} is not one of {', '.join(SCOPE_LANES)}")
        if self.semantics.scope != self.scope:
            raise TesselError(f"intrinsic '{self.name}': its semantics run at scope {self.semantics.scope!r}, "
                              f"the entry says {self.scope!r}")

    @property
    def lanes(self) -> int | None:
        """Threads that execute one call together (None: the whole block)."""
        return SCOPE_LANES[self.scope]

    def reads(self) -> list[int]:
        """Positions of the buffer operands it reads."""
        return [i for i, o in enumerate(self.operands) if o.role in ("read", "readwrite")]

    def writes(self) -> list[int]:
        """Positions of the buffer operands it writes."""
        return [i for i, o in enumerate(self.operands) if o.role in ("write", "readwrite")]

    def cuda_text(self, args) -> str:
        """The CUDA statement for printed arguments, checking their number."""
        if len(args) != len(self.operands):
            raise TesselError(f"intrinsic '{self.name}' takes {len(self.operands)} argument(s) "
                              f"({', '.join(o.name for o in self.operands)}), got {len(args)}")
        return self.cuda(*args)

    def problems(self, call: Intrinsic) -> list[str]:
        """What is wrong with `call` as a use of this intrinsic (empty when nothing is)."""
        out = []
        if len(call.args) != len(self.operands):
            return [f"intrinsic '{self.name}' takes {len(self.operands)} argument(s) "
                    f"({', '.join(o.name for o in self.operands)}), got {len(call.args)}"]
        for op, arg in zip(self.operands, call.args):
            where = f"intrinsic '{self.name}' operand '{op.name}'"
            if op.is_buffer:
                if not isinstance(arg, BufferRef):
                    out.append(f"{where} must be a buffer reference (&buf[...]), got an expression")
                    continue
                buf = arg.buffer
                if op.scopes and buf.scope not in op.scopes:
                    out.append(f"{where}: buffer '{buf.name}' is in {buf.scope} memory, expected "
                               f"{' or '.join(op.scopes)}")
                if op.dtypes and buf.dtype not in op.dtypes:
                    out.append(f"{where}: buffer '{buf.name}' has dtype {buf.dtype}, expected "
                               f"{' or '.join(op.dtypes)}")
                try:
                    n = op.count(buf.dtype)
                except TesselError as e:
                    out.append(f"{where}: {e}")
                    continue
                if buf.shape and buf.shape[-1] < n:
                    out.append(f"{where}: buffer '{buf.name}' has only {buf.shape[-1]} elements along its last "
                               f"dimension; the operand covers {n}")
            else:
                if not isinstance(arg, Expr):
                    out.append(f"{where} must be an expression, got a buffer reference")
                    continue
                if op.dtypes and arg.dtype not in op.dtypes:
                    out.append(f"{where} has dtype {arg.dtype}, expected {' or '.join(op.dtypes)}")
                if op.const and not isinstance(arg, Const):
                    out.append(f"{where} must be an integer constant (a PTX immediate), got {arg}")
        return out

    def check(self, call: Intrinsic) -> None:
        """Raise TesselError naming every problem of `call` (see `problems`)."""
        found = self.problems(call)
        if found:
            raise TesselError("; ".join(found))


def ref_values(ref, op: Operand):
    """The region a lane's Ref covers for operand `op`, as a writable 1-D numpy view."""
    return ref.region(op.region(ref.buffer)).reshape(-1)


__all__ = ["ROLES", "Cost", "IntrinsicDef", "Operand", "ref_values"]
