"""Memory planning: one arena for the values that cross kernels, reused by liveness.

A compiled model runs its kernels in a fixed order. A value written by step `s` and last read by
step `t` is live over [s, t]; two values whose live ranges intersect must not share bytes, two that
do not may. Offsets are assigned greedily by size (the "greedy by size" planner of TFLite): the
largest values are placed first, each at the lowest-waste gap of the arena that no live-overlapping,
already placed value occupies. The result is the arena size (the peak) and the offset of each
value; the model then takes a numpy view of the arena per value, once, at compile time.

Values are freed after the step that last reads them and taken before the step that writes them,
so a kernel's outputs never overlap its own inputs (its arguments must not alias). Graph inputs,
constants and graph outputs are not planned: the caller owns them.

Why by hand: this is a small, well-known algorithm with no maintained library for it in Python.

Example:
    >>> plan = plan_memory([(["x"], ["a"]), (["a"], ["b"]), (["b"], ["y"])],
    ...                    {"a": 512, "b": 512}, planned={"a", "b"})
    >>> plan.arena_bytes, plan.naive_bytes
    (1024, 1024)
    >>> plan = plan_memory([(["x"], ["a"]), (["a"], ["b"]), (["b"], ["c"]), (["c"], ["y"])],
    ...                    {"a": 512, "b": 512, "c": 512}, planned={"a", "b", "c"})
    >>> plan.offsets["a"] == plan.offsets["c"], plan.arena_bytes < plan.naive_bytes
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.errors import TesselError

ALIGN = 64  # bytes: a cache line, and enough for any vector load


@dataclass(frozen=True)
class MemoryPlan:
    """Where each planned value lives: `offsets[value]` in an arena of `arena_bytes`; `sizes` in
    bytes; `lifetimes[value] = (first step, last step)`; `naive_bytes` is what one buffer per
    value would take."""

    offsets: dict
    sizes: dict
    lifetimes: dict
    arena_bytes: int
    naive_bytes: int

    def conflicts(self) -> list:
        """Pairs of values that are live at the same time and overlap in memory (always empty
        for a correct plan; tests check it)."""
        out = []
        names = sorted(self.offsets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if _overlap(self.lifetimes[a], self.lifetimes[b]) and _overlap(
                        (self.offsets[a], self.offsets[a] + self.sizes[a] - 1),
                        (self.offsets[b], self.offsets[b] + self.sizes[b] - 1)):
                    out.append((a, b))
        return out


def _overlap(a, b) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(steps: list, planned: set) -> dict:
    """(first, last) step index of each planned value; `steps` are (reads, writes) pairs."""
    life: dict = {}
    for s, (reads, writes) in enumerate(steps):
        for v in writes:
            if v in planned and v not in life:
                life[v] = [s, s]
        for v in reads:
            if v in planned:
                if v not in life:
                    raise TesselError(f"memory plan: value '{v}' is read by step {s} before any step writes it")
                life[v][1] = max(life[v][1], s)
    missing = set(planned) - set(life)
    if missing:
        raise TesselError(f"memory plan: no step writes {sorted(missing)}")
    return {v: tuple(r) for v, r in life.items()}


def plan_memory(steps: list, sizes: dict, planned: set | None = None) -> MemoryPlan:
    """Assign arena offsets to the `planned` values (default: every value in `sizes`).

    `steps`: the execution order, as (values read, values written) per step; `sizes`: bytes per
    value. Returns a MemoryPlan.
    """
    planned = set(sizes) if planned is None else set(planned)
    life = lifetimes(steps, planned)
    order = sorted(planned, key=lambda v: (-sizes[v], life[v][0], v))
    offsets: dict = {}
    arena = 0
    for v in order:
        size = _align(max(1, sizes[v]))
        busy = sorted((offsets[u], offsets[u] + _align(max(1, sizes[u]))) for u in offsets
                      if _overlap(life[u], life[v]))
        best, best_waste, prev_end = None, None, 0
        for lo, hi in busy:
            gap = lo - prev_end
            if gap >= size and (best_waste is None or gap - size < best_waste):
                best, best_waste = prev_end, gap - size
            prev_end = max(prev_end, hi)
        offsets[v] = best if best is not None else prev_end
        arena = max(arena, offsets[v] + size)
    naive = sum(_align(max(1, sizes[v])) for v in planned)
    return MemoryPlan(offsets, {v: sizes[v] for v in planned}, life, arena, naive)
