"""A fuzz test case: an unscheduled program, a schedule (template + primitives), a pass pipeline.

Seeds are (program, pipeline) pairs that evolve together; the schedule is part of the program's
side, because schedule primitives and template knobs are mutated like any other IR decision.

- `kernel`: the unscheduled IR kernel (as DSL lowering or a graph group produced it, then mutated).
- `target`: which schedules it gets: "cpu" (cpu.generic + CPU primitives, then TVM) or "cuda",
  "cuda:sm_80", "cuda:sm_90a" (the GPU templates of that architecture + GPU primitives; run by the
  race-checking interpreter, printed as CUDA; plain "cuda" is the default CUDA target, the visible
  GPU's architecture or sm_90a).
- `schedule`: schedule commands `{"primitive": name, "args": {...}}`, applied in order with
  `Schedule.apply` (a "template" command runs a template with its knobs). A command the schedule
  refuses (ScheduleError) is skipped, and counted.
- `pipeline`: the tensor-IR pass pipeline as data (`[{"name", "params"}]`, see
  tessel.compiler.pipeline).
- `seed`: the seed of the random inputs (and of the interpreter's thread interleaving).

The file form is the IR text form of the kernel (tessel/ir/text.py) after `#` header lines that
hold the rest as JSON, so a reduced case is readable and replays with `tessel fuzz --replay FILE`:

    >>> from tessel.ir.text import parse_kernel
    >>> k = parse_kernel("kernel f(A: float32[4] global) target cpu { for i in 4 { A[i] = 1.5f32 } }")
    >>> c = Case(k, "cpu", [], [{"name": "simplify"}], 7)
    >>> Case.from_text(c.to_text()) == c
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from tessel.errors import TesselError
from tessel.ir.nodes import Kernel

HEADER = "# tessel fuzz case v1"
TARGETS = ("cpu", "cuda", "cuda:sm_80", "cuda:sm_90a")


def is_gpu(target: str) -> bool:
    """Whether a case target schedules for the GPU ("cuda" or "cuda:ARCH").

    >>> is_gpu("cuda:sm_90a"), is_gpu("cpu")
    (True, False)
    """
    return target == "cuda" or target.startswith("cuda:")


class FuzzError(TesselError):
    """Bad fuzzer input: a corrupt case or corpus file, an unknown target, a bad option."""


@dataclass
class Case:
    kernel: Kernel
    target: str = "cpu"
    schedule: list = field(default_factory=list)
    pipeline: list = field(default_factory=list)
    seed: int = 0
    tvm: bool = False  # also build it with the CPU backend (TVM) and compare

    def __post_init__(self):
        if self.target not in TARGETS:
            raise FuzzError(f"fuzz case: unknown target {self.target!r}; targets: {', '.join(TARGETS)}")

    def meta(self) -> dict:
        return {"target": self.target, "schedule": self.schedule, "pipeline": self.pipeline,
                "seed": self.seed, "tvm": self.tvm}

    def to_text(self) -> str:
        from tessel.ir.text import to_text

        lines = [HEADER] + [f"# {k}: {json.dumps(v)}" for k, v in self.meta().items()]
        return "\n".join(lines) + "\n" + to_text(self.kernel) + "\n"

    @staticmethod
    def from_text(text: str, where: str = "fuzz case") -> "Case":
        """Parse a case file's text; FuzzError naming `where` when it is not one."""
        from tessel.ir.text import parse_kernel

        meta, body = split_header(text, HEADER, "a tessel fuzz case", where)
        try:
            kernel = parse_kernel("\n".join(body))
        except TesselError as e:
            raise FuzzError(f"{where}: the kernel does not parse: {e}") from None
        known = {"target", "schedule", "pipeline", "seed", "tvm"}
        bad = set(meta) - known
        if bad:
            raise FuzzError(f"{where}: unknown header(s) {sorted(bad)}")
        try:
            return Case(kernel, **meta)
        except TypeError as e:
            raise FuzzError(f"{where}: bad headers: {e}") from None

    def key(self) -> str:
        """A stable digest of the case (names corpus files)."""
        return hashlib.sha256(self.to_text().encode()).hexdigest()[:16]

    def __eq__(self, other) -> bool:
        return isinstance(other, Case) and self.kernel == other.kernel and self.meta() == other.meta()

    def replace(self, **changes) -> "Case":
        d = {"kernel": self.kernel, **self.meta()}
        d.update(changes)
        return Case(**d)




def split_header(text: str, header: str, what: str, where: str) -> tuple[dict, list]:
    r"""A case file's `# key: <json>` header lines as a dict, and its other lines (the body).

    FuzzError naming `where` (and the line) when the first line is not `header` or a value is not JSON.
    Shared by kernel cases and graph cases.

    >>> split_header("# v1\n# seed: 3\nbody", "# v1", "a case", "x")
    ({'seed': 3}, ['body'])
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != header:
        raise FuzzError(f"{where}: not {what} (first line should be {header!r})")
    meta, body = {}, []
    for n, line in enumerate(lines[1:], 2):
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if not sep:
                continue
            try:
                meta[key.strip()] = json.loads(value)
            except json.JSONDecodeError as e:
                raise FuzzError(f"{where} line {n}: header {key.strip()!r} is not JSON: {e}") from None
        else:
            body.append(line)
    return meta, body


__all__ = ["Case", "FuzzError", "HEADER", "TARGETS", "is_gpu", "split_header"]
