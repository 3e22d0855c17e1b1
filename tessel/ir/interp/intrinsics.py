"""How the interpreter executes intrinsics: who executes each one, and the registry it looks in.

An `Intrinsic(name, args)` statement is looked up by name in a registry, a plain dict from name
to an `IntrinsicImpl` (or to a bare callable, which means a per-thread intrinsic). The scope says
who executes it together:

- "thread": each thread on its own, as soon as it reaches the call: `fn(*args)`;
- "warp" (32 lanes), "warpgroup" (128 lanes), "block" (all threads of the block): the threads
  of the group wait until every one of them has reached the same call, then the interpreter
  calls `fn(lanes)` once, `lanes` being the list of each participant's argument tuple in lane
  order (as a warp-wide `mma.sync` or a block-wide collective behaves).

Arguments arrive evaluated: expressions as numpy scalars / Python ints, BufferRefs as `Ref`s
(runtime.py) whose `region(shape)` is a writable, bounds-checked numpy view of the buffer.

An intrinsic declared `with_context=True` receives a `Context` first: the block index, the
participating threads' indices, and a dict private to the intrinsics of the block. That is where
asynchronous copies (cp.async, TMA) keep what they owe until their wait intrinsic performs it,
so a schedule that forgets the wait reads poison.

`INTRINSICS` is the default registry: the meaning of every entry of the intrinsic table
(tessel.ir.intrinsics), where each intrinsic's meaning sits next to its CUDA text and cost
(DESIGN.md, "Intrinsics are registry entries").

Example:
    >>> def warp_sum(lanes):  # every lane's Ref receives the sum of all lanes' values
    ...     total = sum(float(v) for v, _ in lanes)
    ...     for _, out in lanes:
    ...         out.region((1,))[0] = total
    >>> impl = IntrinsicImpl(warp_sum, "warp")
    >>> as_impl(impl).scope, as_impl(print).scope
    ('warp', 'thread')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tessel.errors import TesselError

SCOPE_LANES = {"thread": 1, "warp": 32, "warpgroup": 128, "block": None}  # None: the whole block


@dataclass(frozen=True)
class Context:
    """What an intrinsic declared `with_context` learns about where it runs."""

    block: tuple  # blockIdx (x, y, z)
    threads: tuple  # threadIdx (x, y, z) of each participant, in lane order
    state: dict  # private to the intrinsics of this block, for its whole run


@dataclass(frozen=True)
class IntrinsicImpl:
    """An intrinsic's meaning for the interpreter: `fn`, the scope that executes it together, and
    whether `fn` takes a Context first."""

    fn: Callable
    scope: str = "thread"
    with_context: bool = False

    def __post_init__(self):
        if self.scope not in SCOPE_LANES:
            raise TesselError(f"intrinsic scope {self.scope!r} is not one of {', '.join(SCOPE_LANES)}")


def as_impl(entry) -> IntrinsicImpl:
    """A registry entry as an IntrinsicImpl: a bare callable is a per-thread intrinsic, and any
    object with `fn` and `scope` attributes is taken as it is."""
    if isinstance(entry, IntrinsicImpl):
        return entry
    if hasattr(entry, "fn") and hasattr(entry, "scope"):
        return IntrinsicImpl(entry.fn, entry.scope, bool(getattr(entry, "with_context", False)))
    if callable(entry):
        return IntrinsicImpl(entry, "thread")
    raise TesselError(f"intrinsic registry entry {entry!r} is neither callable nor an IntrinsicImpl")


class _DefaultRegistry(Mapping):
    """The default registry: the intrinsic table's entries (tessel.ir.intrinsics), loaded on
    first use, because that package imports this module (a lazy import avoids the cycle)."""

    def __init__(self):
        self._data: dict | None = None

    def _load(self) -> dict:
        if self._data is None:
            from tessel.ir.intrinsics import interp_registry

            self._data = interp_registry()
        return self._data

    def __getitem__(self, name):
        return self._load()[name]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


# The default registry (name -> IntrinsicImpl): every entry of the intrinsic table.
INTRINSICS: Mapping = _DefaultRegistry()
