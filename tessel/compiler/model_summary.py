"""The table `CompiledModel.summary()` prints: per kernel its ops, time and (on the CPU) its floor.

It reads a compiled model's program (steps, memory plan, report) and formats it; it computes
nothing. Example (a model's summary, untimed, has one row per step and a totals row):

    >>> import numpy as np, tessel as ts
    >>> b = ts.GraphBuilder("m"); x = b.input("x", (2, 3)); b.output(b.relu(x))
    >>> text = ts.compile(b, target="cpu").summary()
    >>> "total" in text and "relu" in text
    True
"""

from __future__ import annotations


class SummaryText(str):
    """Text whose repr is itself, so a prompt shows `cm.summary()` as the table (not a quoted string)."""

    def __repr__(self) -> str:
        return str(self)


def summary_table(program, prof: dict) -> str:
    """The text of `CompiledModel.summary`: one row per step (kernel, ops fused, floor columns on the CPU,
    time), then the totals, the floor's basis, the arena and the GPU splits. `prof` maps step -> seconds
    (empty: not timed)."""
    where = getattr(program, "target", "cpu")
    floors = _cpu_floors(program) if prof and where == "cpu" else None
    # the time stays the last column (scripts read it there); the floor columns go before it
    floor_cols = ("bound by", "floor (us)", "% of floor") if floors else ()
    rows = [("#", "kernel", "ops fused") + floor_cols + ("time (us)",)]
    total = total_floor = 0.0
    for k, step in enumerate(program.steps):
        t = prof.get(k, 0.0)
        total += t
        row = (str(k), step.kernel.name, step.group.describe())
        if floors:
            f, bound = floors[k]
            total_floor += f
            row += (bound, f"{f * 1e6:.2f}", f"{100 * f / t:.0f}%" if t > 0 else "-")
        rows.append(row + (f"{t * 1e6:.2f}" if prof else "-",))
    rows.append(("", "total", f"{len(program.steps)} steps, {len(program.kernels)} kernels")
                + (("", f"{total_floor * 1e6:.2f}", f"{100 * total_floor / total:.0f}%" if total > 0 else "-")
                   if floors else ()) + (f"{total * 1e6:.2f}" if prof else "-",))
    ncol = len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(ncol)]
    lines = [f"model '{program.source.name}' on {where}, compiled in {program.compile_seconds:.2f} s"
             + ("" if prof or where == "cpu" else " (no GPU here: not timed)")]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 3 or (floors and j == 3) else c.rjust(w)
                               for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    if floors:
        from tessel.codegen.tvm_profile import host_peaks

        peak, bw, cached = host_peaks()
        lines.append(f"floor: FLOPs / {peak / 1e9:.0f} GFLOP/s (numpy float32 512^3 GEMM here) or bytes of the "
                     f"kernel's arrays / {bw / 1e9:.1f} GB/s (a 32 MiB copy; {cached / 1e9:.0f} GB/s, a cached "
                     f"copy, when they fit in 1 MiB), the larger")
    p = program.plan
    lines.append(f"intermediates: {len(p.offsets)} values in a {_bytes(p.arena_bytes)} arena "
                 f"(one buffer each: {_bytes(p.naive_bytes)})")
    line = symbolic_line(program)
    if line is not None:
        lines.append(line)
    for sp in program.report.get("gpu_splits", []):
        lines.append(f"split {sp['group']} into {' | '.join(sp['into'])}: {sp['reason']}")
    return "\n".join(lines)


def _cpu_floors(program) -> list:
    """Per step: (floor seconds, "compute" / "memory" / "cache") from `tessel.codegen.tvm_profile`."""
    from tessel.codegen.tvm_profile import floor_seconds, host_peaks, kernel_cost

    peaks = host_peaks()
    return [floor_seconds(kernel_cost(_concrete_ir(program, step.kernel.ir)), peaks) for step in program.steps]


def _concrete_ir(program, ir):
    """A symbolic kernel's IR at the size the program runs at (a BoundProgram of model_symbolic)."""
    sym = getattr(program, "symbolic", None)
    if sym is None or not ir.scalar_params:
        return ir
    import dataclasses

    from tessel.compiler.symbolic_ir import instantiate_all

    return instantiate_all(dataclasses.replace(ir, params=tuple(p for p in ir.params if p not in sym.scalars)),
                           sym.env(program.size))


def symbolic_line(program) -> str | None:
    """The summary's line for a program that serves every size of a range, or None."""
    sym = getattr(program, "symbolic", None)
    if sym is None:
        return None
    at = ", ".join(f"{d.label}={n}" for d, n in zip(sym.dims, program.size))
    return f"symbolic: one program for every size of {sym.range_text()}, run here at {at}; kernels: {sym.describe()}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
