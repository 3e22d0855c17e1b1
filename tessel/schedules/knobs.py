"""Knobs and constraints of templates (tessel/schedules/template.py).

A knob is a named, typed, finite set of JSON values with a default: `Choice`, `IntRange`, `Pow2`,
`Bool`. A constraint is a condition on some knobs checked against the kernel and the target's
limits before a template applies anything; a failed one is a `Violation` that prints as
"knob 'bk'=128: shared memory 96 KiB exceeds the target's 48 KiB". The helpers build the usual
ones: `max_shared_memory`, `max_threads`, `max_registers`, `divides`, `at_most`, and `constraint`
(a decorator for any other).

Example:
    >>> Pow2("threads", 32, 256).values()
    (32, 64, 128, 256)
    >>> IntRange("rows", 1, 8, default=4).reason(9)
    'is outside the range 1..8'
    >>> str(Violation({"bk": 128}, "shared memory", "shared memory 96 KiB exceeds the target's 48 KiB"))
    "knob 'bk'=128: shared memory 96 KiB exceeds the target's 48 KiB"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from tessel.errors import ScheduleError
from tessel.ir.nodes import Kernel
from tessel.schedules.target_limits import TargetLimits, kib

# -- knobs --------------------------------------------------------------------------------------


class Knob:
    """A named, typed, finite set of values with a default."""

    kind = "knob"

    def __init__(self, name: str, values, default=None, doc: str = ""):
        if not isinstance(name, str) or not name.isidentifier():
            raise ScheduleError(f"knob name must be an identifier, got {name!r}")
        self.name, self.doc = name, doc
        self._values = tuple(values)
        if not self._values:
            raise ScheduleError(f"knob '{name}' has no values")
        self.default = self._values[0] if default is None else default
        why = self.reason(self.default)
        if why:
            raise ScheduleError(f"knob '{name}': default {self.default!r} {why}")

    def values(self) -> tuple:
        """Every value, in the order the space enumerates them."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    def reason(self, value) -> str | None:
        """Why `value` is not a value of this knob, or None."""
        if value not in self._values or type(value) is not type(self._values[self._values.index(value)]):
            return f"is not one of {', '.join(map(repr, self._values))}"
        return None

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "values": list(self._values), "default": self.default}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, default={self.default!r}, {len(self)} values)"

    def __eq__(self, other) -> bool:
        return isinstance(other, Knob) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))


class Choice(Knob):
    """One of the given values (ints, strings or bools): `Choice("bk", (16, 32, 64))`; the first is
    the default unless `default=` says otherwise."""

    kind = "choice"

    def __init__(self, name: str, values, default=None, doc: str = ""):
        for v in values:
            if not isinstance(v, (int, str, bool)) or v is None:
                raise ScheduleError(f"knob '{name}': choice {v!r} is not an int, str or bool (knobs are JSON data)")
        super().__init__(name, values, default, doc)


class IntRange(Knob):
    """An integer from `lo` to `hi` inclusive, in steps of `step`: `IntRange("rows", 1, 8)`."""

    kind = "range"

    def __init__(self, name: str, lo: int, hi: int, step: int = 1, default=None, doc: str = ""):
        if not all(_is_int(x) for x in (lo, hi, step)) or step < 1 or hi < lo:
            raise ScheduleError(f"knob '{name}': a range needs integers lo <= hi and step >= 1, got "
                                f"{lo}, {hi}, {step}")
        self.lo, self.hi, self.step = lo, hi, step
        super().__init__(name, range(lo, hi + 1, step), default, doc)

    def reason(self, value) -> str | None:
        if not _is_int(value):
            return f"is not an integer (a range {self.lo}..{self.hi})"
        if not self.lo <= value <= self.hi or (value - self.lo) % self.step:
            return f"is outside the range {self.lo}..{self.hi}" + (f" step {self.step}" if self.step > 1 else "")
        return None

    def to_json(self) -> dict:
        return {**super().to_json(), "lo": self.lo, "hi": self.hi, "step": self.step}


class Pow2(Knob):
    """A power of two from `lo` to `hi` inclusive: `Pow2("threads", 32, 1024, default=256)`."""

    kind = "pow2"

    def __init__(self, name: str, lo: int, hi: int, default=None, doc: str = ""):
        if not (_is_int(lo) and _is_int(hi) and 1 <= lo <= hi and _pow2(lo) and _pow2(hi)):
            raise ScheduleError(f"knob '{name}': Pow2 needs powers of two lo <= hi, got {lo}, {hi}")
        self.lo, self.hi = lo, hi
        super().__init__(name, [1 << e for e in range(lo.bit_length() - 1, hi.bit_length())], default, doc)

    def reason(self, value) -> str | None:
        if not _is_int(value) or not _pow2(value):
            return "is not a power of two"
        if not self.lo <= value <= self.hi:
            return f"is outside the range {self.lo}..{self.hi}"
        return None


class Bool(Knob):
    """True or False: `Bool("pack", default=True)`."""

    kind = "bool"

    def __init__(self, name: str, default: bool = False, doc: str = ""):
        super().__init__(name, (False, True), bool(default), doc)

    def reason(self, value) -> str | None:
        return None if isinstance(value, bool) else "is not a bool"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


# -- constraints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a constraint or a template's schedule function sees: the kernel being scheduled, the
    target's limits, the knob values (a dict) and the template's analysis of the kernel (`info`)."""

    kernel: Kernel
    target: TargetLimits
    knobs: dict
    info: object = None

    def __getitem__(self, name: str):
        return self.knobs[name]


@dataclass(frozen=True)
class Constraint:
    """A condition on some knobs: `check(ctx)` returns None when it holds, else what is wrong (a
    phrase such as "shared memory 96 KiB exceeds the target's 48 KiB"). `knobs` are the knobs the
    error names; `what` is a short label for pruning reports."""

    knobs: tuple
    check: Callable
    what: str

    def violation(self, ctx: Context) -> "Violation | None":
        msg = self.check(ctx)
        if msg is None:
            return None
        return Violation({k: ctx.knobs[k] for k in self.knobs}, self.what, msg)


@dataclass(frozen=True)
class Violation:
    """One failed check: the knobs at fault with their values, the constraint's label, the message."""

    knobs: dict
    what: str
    message: str

    def __str__(self) -> str:
        named = ", ".join(f"'{k}'={v!r}" for k, v in self.knobs.items())
        return f"knob{'s' if len(self.knobs) > 1 else ''} {named}: {self.message}" if self.knobs else self.message


def _knob_names(knobs) -> tuple:
    return (knobs,) if isinstance(knobs, str) else tuple(knobs)


def constraint(knobs, what: str):
    """Decorator: a constraint from a function ctx -> message or None."""
    return lambda fn: Constraint(_knob_names(knobs), fn, what)


def max_shared_memory(knobs, bytes_of: Callable) -> Constraint:
    """Shared memory per block, `bytes_of(ctx)`, within the target's limit."""
    def check(ctx):
        used, limit = bytes_of(ctx), ctx.target.shared_bytes
        return None if used <= limit else f"shared memory {kib(used)} exceeds the target's {kib(limit)}"
    return Constraint(_knob_names(knobs), check, "shared memory")


def max_threads(knobs, threads_of: Callable) -> Constraint:
    """Threads per block, `threads_of(ctx)`, within the target's limit."""
    def check(ctx):
        used, limit = threads_of(ctx), ctx.target.threads_per_block
        return None if used <= limit else f"{used} threads per block exceed the target's {limit}"
    return Constraint(_knob_names(knobs), check, "threads per block")


def max_registers(knobs, registers_of: Callable, per: str = "thread") -> Constraint:
    """Registers, `registers_of(ctx)`: 32-bit registers per thread on the GPU, SIMD registers on
    the CPU (`per="vector"`), within the target's limit."""
    def check(ctx):
        used = registers_of(ctx)
        limit = ctx.target.vector_registers if per == "vector" else ctx.target.registers_per_thread
        unit = "vector registers" if per == "vector" else "registers per thread"
        return None if used <= limit else f"needs {used} {unit}, the target has {limit}"
    return Constraint(_knob_names(knobs), check, "registers")


def divides(knob: str, extent_of: Callable, what: str = "the loop") -> Constraint:
    """Knob `knob` divides the extent `extent_of(ctx)` (no partial tile)."""
    def check(ctx):
        e, v = extent_of(ctx), ctx.knobs[knob]
        return None if e % v == 0 else f"does not divide {what} {e}"
    return Constraint((knob,), check, "divisibility")


def at_most(knob: str, extent_of: Callable, what: str = "the loop") -> Constraint:
    """Knob `knob` is not above `extent_of(ctx)` (a tile larger than its loop is all padding)."""
    def check(ctx):
        e, v = extent_of(ctx), ctx.knobs[knob]
        return None if v <= e else f"exceeds {what} {e}"
    return Constraint((knob,), check, "extent")



def knobs_from_dict(cls, d: dict, where: str):
    """The frozen knob dataclass `cls` built from a trace's knob dict; an unknown name is a
    ScheduleError naming it and the knobs there are (`where`: the template, for the message).

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class K:
    ...     bm: int = 64
    >>> knobs_from_dict(K, {"bm": 128}, "t").bm
    128
    >>> knobs_from_dict(K, {"bn": 1}, "t")
    Traceback (most recent call last):
    tessel.errors.ScheduleError: t: unknown knob(s) ['bn']; knobs: ['bm']
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ScheduleError(f"{where}: unknown knob(s) {sorted(unknown)}; knobs: {sorted(names)}")
    return cls(**d)

__all__ = ["Bool", "Choice", "Constraint", "Context", "IntRange", "Knob", "Pow2", "Violation", "at_most", "constraint",
           "knobs_from_dict",
           "divides", "max_registers", "max_shared_memory", "max_threads"]
