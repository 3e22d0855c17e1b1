"""Schedule: apply primitives to a kernel and record each application in a replayable trace.

A trace is data: a list of steps `{"primitive": name, "args": {...}, "results": [...]}`, each
JSON-serialisable. Replaying a trace on the same unscheduled kernel gives an equal kernel, because
every primitive is deterministic, including the names it invents. This is what tuning logs store
(knobs and traces, never code).

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((64, 64), name="A")
    >>> B = ts.compute((64, 64), lambda i, j: A[i, j] * 2.0, name="B")
    >>> sch = Schedule(ts.lower([A, B]))
    >>> io, ii = sch.split("i", [None, 8])
    >>> sch.parallel(io)
    'i_0'
    >>> replayed = Schedule.replay(ts.lower([A, B]), sch.trace)
    >>> replayed == sch.kernel
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tessel.errors import ScheduleError
from tessel.ir.nodes import For, Kernel, Store, walk
from tessel.schedules import accumulate, caching, layout, location, loops, reduction
from tessel.schedules.gpu_table import gpu_primitives
from tessel.schedules.nest import loop_path

# name -> (function, names of its arguments after the kernel). One table: replay and the
# Schedule methods both go through it.
PRIMITIVES = {
    "split": (loops.split, ("loop", "factors")),
    "reorder": (loops.reorder, ("loops",)),
    "fuse": (loops.fuse, ("loops",)),
    "annotate": (loops.annotate, ("loop", "kind")),
    "cache_read": (caching.cache_read, ("buffer", "at", "scope")),
    "cache_write": (caching.cache_write, ("buffer", "at", "scope")),
    "cache_accumulate": (accumulate.cache_accumulate, ("buffer", "at", "scope")),
    "transform_layout": (layout.transform_layout, ("buffer", "order")),
    "compute_at": (location.compute_at, ("producer", "at")),
    "compute_inline": (location.compute_inline, ("producer",)),
    "decompose_reduction": (reduction.decompose_reduction, ("buffer", "at")),
    "peel": (loops.peel, ("loop", "factor")),
}
# GPU primitives (tessel/schedules/gpu*.py, tensorize.py, pipeline.py) add their rows here.
PRIMITIVES.update(gpu_primitives())


def _fallback(kernel: Kernel, template: str, kind: str, at: str, reason: str) -> tuple[Kernel, list]:
    """A declared fallback of a template (template.py), recorded in the trace: it changes nothing."""
    return kernel, []


PRIMITIVES["fallback"] = (_fallback, ("template", "kind", "at", "reason"))
# "template" steps (name, knobs, target, steps) are applied by the registered template itself
TEMPLATE_ARGS = ("name", "knobs", "target", "steps")


@dataclass(frozen=True)
class Step:
    """One primitive application: its name, its arguments and the names it returned."""

    primitive: str
    args: dict
    results: tuple = field(default=())

    def to_json(self) -> dict:
        return {"primitive": self.primitive, "args": self.args, "results": list(self.results)}

    @staticmethod
    def from_json(d: dict) -> "Step":
        known = d.get("primitive") in PRIMITIVES or d.get("primitive") == "template" if isinstance(d, dict) else False
        if not known or not isinstance(d.get("args"), dict):
            raise ScheduleError(f"not a schedule step: {d!r}")
        return Step(d["primitive"], dict(d["args"]), tuple(d.get("results", ())))


class Schedule:
    """A kernel being scheduled. Methods return the names of the loops or buffers they create."""

    def __init__(self, kernel: Kernel):
        if not isinstance(kernel, Kernel):
            raise ScheduleError(f"Schedule needs a tessel.ir.nodes.Kernel, got {type(kernel).__name__}")
        self.original = kernel
        self.kernel = kernel
        self.trace: list[Step] = []

    # -- the generic step ------------------------------------------------------------------------
    def apply(self, primitive: str, **args):
        """Apply a primitive by name (what replay does); returns its result names. "template"
        applies a registered template (args: name, knobs, target)."""
        if primitive == "template":
            unknown = set(args) - set(TEMPLATE_ARGS)
            if unknown or "name" not in args:
                raise ScheduleError(f"template step: needs 'name' and takes {TEMPLATE_ARGS}, got {sorted(args)}")
            self.template(args["name"], args.get("knobs"), args.get("target"))
            return []
        if primitive not in PRIMITIVES:
            raise ScheduleError(f"unknown schedule primitive {primitive!r}; known: {', '.join(PRIMITIVES)}")
        fn, arg_names = PRIMITIVES[primitive]
        unknown = set(args) - set(arg_names)
        if unknown:
            raise ScheduleError(f"{primitive}: unexpected argument(s) {sorted(unknown)}")
        self.kernel, results = fn(self.kernel, **args)
        self.trace.append(Step(primitive, _jsonable(args), tuple(results)))
        return results

    # -- primitives ------------------------------------------------------------------------------
    def split(self, loop: str, factors) -> list[str]:
        """Split `loop` by `factors` (outermost first, one may be None)."""
        return self.apply("split", loop=loop, factors=list(factors))

    def reorder(self, *loops: str) -> None:
        """Reorder loops of one perfect nest into the given order."""
        self.apply("reorder", loops=list(_flat(loops)))

    def fuse(self, *loops: str) -> str:
        """Fuse consecutive nested loops; returns the fused loop's name."""
        return self.apply("fuse", loops=list(_flat(loops)))[0]

    def parallel(self, loop: str) -> str:
        return self.apply("annotate", loop=loop, kind="parallel")[0]

    def vectorize(self, loop: str) -> str:
        return self.apply("annotate", loop=loop, kind="vectorized")[0]

    def unroll(self, loop: str) -> str:
        return self.apply("annotate", loop=loop, kind="unrolled")[0]

    def cache_read(self, buffer: str, at: str, scope: str = "local") -> str:
        return self.apply("cache_read", buffer=buffer, at=at, scope=scope)[0]

    def cache_write(self, buffer: str, at: str, scope: str = "local") -> str:
        return self.apply("cache_write", buffer=buffer, at=at, scope=scope)[0]

    def cache_accumulate(self, buffer: str, at: str, scope: str = "local") -> str:
        """Sum loop `at`'s updates of `buffer` in a zero-started local buffer per iteration, added to
        `buffer` at its end (tessel/schedules/accumulate.py)."""
        return self.apply("cache_accumulate", buffer=buffer, at=at, scope=scope)[0]

    def compute_at(self, producer: str, at: str) -> list[str]:
        return self.apply("compute_at", producer=producer, at=at)

    def compute_inline(self, producer: str) -> None:
        self.apply("compute_inline", producer=producer)

    def decompose_reduction(self, buffer: str, at: str) -> list[str]:
        return self.apply("decompose_reduction", buffer=buffer, at=at)

    # -- GPU primitives --------------------------------------------------------------------------
    def bind(self, loop: str, axis: str) -> str:
        """Run `loop` as the blocks or threads along `axis` ("blockIdx.x" .. "threadIdx.z")."""
        return self.apply("bind", loop=loop, axis=axis)[0]

    def cache_shared(self, buffer: str, at: str, vector: int = 1) -> str:
        """Stage the block's reads of `buffer` in loop `at` through shared memory (cooperative copy)."""
        return self.apply("cache_shared", buffer=buffer, at=at, vector=vector)[0]

    def pad(self, buffer: str, elements: int) -> None:
        """Pad each row of an allocated buffer by `elements`."""
        self.apply("pad", buffer=buffer, elements=elements)

    def swizzle(self, buffer: str) -> None:
        """Rotate the 16-byte chunks of each row of an allocated buffer by the row index."""
        self.apply("swizzle", buffer=buffer)

    def remove_dead_code(self) -> None:
        """Drop dead stores and unused temporaries (the dead-code pass as a step)."""
        self.apply("remove_dead_code")

    def cross_thread_reduce(self, buffer: str, loop: str, axis: str = "threadIdx.x") -> list[str]:
        """Spread reduction loop `loop` of `buffer` over the threads along `axis` (warp shuffles,
        then shared memory across warps)."""
        return self.apply("cross_thread_reduce", buffer=buffer, loop=loop, axis=axis)

    def fragment(self, buffer: str, layout: str) -> list[str]:
        """Distribute a local tile buffer over the lanes of a warp in a tensor-core fragment layout."""
        return self.apply("fragment", buffer=buffer, layout=layout)

    def tensorize(self, loop: str, intrinsic: str) -> list[str]:
        """Replace the nest under `loop` by a call of `intrinsic` (checked in the interpreter)."""
        return self.apply("tensorize", loop=loop, intrinsic=intrinsic)

    def pipeline(self, loop: str, stages: int) -> list[str]:
        """Software-pipeline the shared-memory copies of `loop` over `stages` buffers with cp.async."""
        return self.apply("pipeline", loop=loop, stages=stages)

    def template(self, name: str, knobs: dict | None = None, target=None) -> "Schedule":
        """Apply the registered template `name` with `knobs` (missing ones take their defaults)
        for `target`; recorded as one "template" step followed by the primitives it ran."""
        from tessel.schedules.template import get_template

        return get_template(name).apply(self, knobs, target)

    # -- queries ---------------------------------------------------------------------------------
    def get_loops(self, buffer: str) -> list[str]:
        """Names of the loops around the last store to `buffer`, outermost first."""
        stores = [n for n in walk(self.kernel.body) if isinstance(n, Store) and n.buffer.name == buffer]
        if not stores:
            raise ScheduleError(f"no stage writes '{buffer}' in kernel '{self.kernel.name}'")
        last = stores[-1]
        loops_ = [n for n in walk(self.kernel.body) if isinstance(n, For)]
        around = [lp for lp in loops_ if any(s is last for s in walk(lp.body))]
        path = loop_path(self.kernel.body, around[-1].var.name) if around else []
        return [lp.var.name for lp in path]

    # -- traces ----------------------------------------------------------------------------------
    def trace_json(self) -> str:
        return json.dumps([s.to_json() for s in self.trace])

    @staticmethod
    def replay(kernel: Kernel, trace) -> Kernel:
        """Apply a trace (Steps, dicts, or its JSON text) to an unscheduled kernel. A "template"
        step re-runs its template from the recorded knobs, which must produce the primitive steps
        recorded after it (they are checked, not applied twice)."""
        sch = Schedule(kernel)
        if isinstance(trace, str):
            trace = json.loads(trace)
        steps = [s if isinstance(s, Step) else Step.from_json(s) for s in trace]
        i = 0
        while i < len(steps):
            step = steps[i]
            if step.primitive == "template":
                n, start = int(step.args.get("steps", 0)), len(sch.trace)
                sch.apply("template", **{k: v for k, v in step.args.items() if k != "steps"})
                made = [s.to_json() for s in sch.trace[start + 1:]]
                recorded = [s.to_json() for s in steps[i + 1:i + 1 + n]]
                if made != recorded:
                    raise ScheduleError(f"replaying template '{step.args['name']}' with knobs "
                                        f"{json.dumps(step.args.get('knobs'))}: it now applies {len(made)} steps that "
                                        f"differ from the {len(recorded)} the trace recorded (first difference at "
                                        f"step {_first_diff(made, recorded)}; was the trace made for another kernel "
                                        f"or another version of the template?)")
                i += 1 + n
                continue
            results = sch.apply(step.primitive, **step.args)
            if step.results and tuple(results) != tuple(step.results):
                raise ScheduleError(f"replaying {step.primitive}: got names {results}, the trace recorded "
                                    f"{list(step.results)} (was the trace made for another kernel?)")
            i += 1
        return sch.kernel


def _first_diff(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _flat(items):
    for x in items:
        if isinstance(x, (list, tuple)):
            yield from x
        else:
            yield x


def _jsonable(args: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
