"""A model's symbolic programs, one per size bucket: small sizes get kernels scheduled for small sizes.

A symbolic program is scheduled at the largest primes of its range (`tessel.compiler.model_symbolic`),
so a call at a small size runs tiles sized for big ones, guarded: measured on a 64-wide
TransformerEncoderLayer at sequence 2, its GEMMs took 4.7 us where the per-shape kernels took 0.6 us.
So a range that reaches below `SMALL` and well above it (one dynamic dimension) gets a second
program for [lo, SMALL - 1], scheduled at the primes 13, 11, 7 (its groups whose schedule changes
between those sizes run the whole range's kernel instead). `SymbolicParts` holds them and
answers what `CompiledModel` asks of `cm.symbolic`: the kinds of the kernels, a description, the
sizes of a call and the bound program for them (from the part whose range holds them).

Example:
    >>> split_points(1, 512), split_points(1, 20), split_points(16, None), split_points(2, None)
    ([(1, 15), (16, 512)], [(1, 20)], [(16, None)], [(2, 15), (16, None)])
"""

from __future__ import annotations

from tessel.compiler.model_symbolic import Dim, SymbolicUnsupported, build_symbolic, check_against, find_dims
from tessel.errors import TesselError

SMALL = 16  # sizes below this get their own program where the range also reaches 2 * SMALL


def split_points(lo: int, hi) -> list:
    """The (lo, hi) bucket(s) of a range (hi None: unbounded)."""
    if lo < SMALL and (hi is None or hi >= 2 * SMALL):
        return [(lo, SMALL - 1), (SMALL, hi)]
    return [(lo, hi)]


def build_parts(specialize, ranges, base, options: dict) -> SymbolicParts:
    """The symbolic program(s) of a model, each checked (see `model_symbolic.check_against`):
    one over the whole ranges and, for one dynamic dimension whose range reaches below SMALL and to
    2 * SMALL, one for the small sizes, whose groups that do not generalise there (the schedule
    changes between 7, 11 and 13) run the whole range's kernel. Raises SymbolicUnsupported (or the
    TesselError of an import or a schedule) when the whole range has no symbolic program."""
    found = find_dims(ranges, base.inputs, options)
    whole = build_symbolic(specialize, ranges, base.inputs, options, found)
    check_against(whole, base, specialize)
    buckets = split_points(found[0][0].lo, found[0][0].hi) if len(found) == 1 else []
    if len(buckets) < 2:
        return SymbolicParts([whole], [d for d, _ in found])
    (lo, top), _ = buckets
    d0, ex = found[0]
    try:
        small = build_symbolic(specialize, ranges, base.inputs, options,
                               [(Dim(d0.label, lo, top, d0.where, d0.var), ex)])
        if [s.args for s in small.steps] != [s.args for s in whole.steps]:
            raise SymbolicUnsupported("the small sizes fuse other groups")
        for k, (mine, theirs) in enumerate(zip(small.steps, whole.steps)):
            if mine.kernel.kind != "symbolic" and theirs.kernel.kind == "symbolic":
                small.steps[k] = type(mine)(theirs.kernel, mine.group, mine.args)
        small.kinds = {k.name: k.kind for k in small.kernels}
        check_against(small, base, specialize)
    except TesselError:  # the small sizes keep the whole range's program
        return SymbolicParts([whole], [d for d, _ in found])
    whole.dims[0] = Dim(d0.label, SMALL, d0.hi, d0.where, d0.var)  # what it serves now (for messages)
    return SymbolicParts([small, whole], [d for d, _ in found])


class SymbolicParts:
    """The symbolic programs of a model over its whole ranges (`dims`), by bucket of the first dimension."""

    def __init__(self, parts: list, dims: list):
        self.parts, self.dims = list(parts), list(dims)
        self.scalars = tuple(d.var for d in self.dims)

    @property
    def kinds(self) -> dict:
        """Kernel name -> "symbolic" or "per-shape" ("per-shape" when it is so in any part)."""
        out: dict = {}
        for p in self.parts:
            for name, kind in p.kinds.items():
                out[name] = "per-shape" if "per-shape" in (kind, out.get(name)) else kind
        return out

    @property
    def kernels(self) -> list:
        return [k for p in self.parts for k in p.kernels]

    @property
    def compile_seconds(self) -> float:
        return sum(p.compile_seconds for p in self.parts)

    def range_text(self) -> str:
        return " and ".join(d.text() for d in self.dims)

    def describe(self) -> str:
        if len(self.parts) == 1:
            return self.parts[0].describe()
        return " | ".join(f"{p.dims[0].text()}: {p.describe()}" for p in self.parts)

    def size_of(self, key):
        return self.parts[0].size_of(key)

    def part_for(self, sizes: tuple):
        n = sizes[0]
        for p in self.parts:
            d = p.dims[0]
            if n >= d.lo and (d.hi is None or n <= d.hi):
                return p
        return None

    def bind(self, sizes: tuple):
        p = self.part_for(sizes)
        if p is None:
            raise SymbolicUnsupported(f"no symbolic program holds sizes {sizes}")
        return p.bind(sizes)
