"""Templates: schedules as a function of typed knob values, with the space the autotuner searches.

A `Template` declares its knobs (`Choice`, `IntRange`, `Pow2`, `Bool`, each with a default; they
and the constraint helpers live in knobs.py and are re-exported here) and
constraints against the target (shared memory, registers, threads per block, divisibility of the
kernel's extents), checked on (kernel, target, knobs) *before* anything is applied. Applying is
deterministic and exact: a knob value is used as given or refused with a `ScheduleError` naming
the knob, its value and the limit, never shrunk to fit. A step the template may skip (say, a
vectorisation a guard makes illegal) is a *declared fallback*: it is listed in the template and
recorded in the trace as a "fallback" step when it happens; nothing is swallowed silently.

The trace holds one "template" step (name, knobs, target, and the number of primitive steps it
ran, which follow it), so `Schedule.replay` re-runs the template from its knobs and checks that
it still produces the recorded primitives. Templates are registered by name (`get_template`).

A template may also build its kernel as IR directly (`sch.kernel = build(...)` inside its schedule
function, as the GEMM template does): the trace then holds the template step with no primitive
steps after it, and replay reproduces the kernel by re-running the template from its knobs.

`template.space(kernel, target)` is the autotuner's view: iterate, index or sample the points
(knob dicts, JSON-able), check each with the reason it is invalid, and count what the constraints
prune.

Example:
    >>> import tessel as ts
    >>> from tessel.schedules.template import Template, Choice, Pow2, divides
    >>> def run(sch, knobs, ctx):
    ...     outer, inner = sch.split("i", [None, knobs["tile"]])
    ...     sch.bind(outer, "blockIdx.x"); sch.bind(inner, "threadIdx.x")
    >>> tpl = Template("demo.copy", [Pow2("tile", 32, 1024, default=128)], run, targets=("cuda",),
    ...                constraints=[divides("tile", lambda ctx: ctx.info, "the tensor's length")],
    ...                analyze=lambda kernel, target: 256)
    >>> A = ts.placeholder((256,), name="A")
    >>> kernel = ts.lower([A, ts.compute((256,), lambda i: A[i] * 2.0, name="B")])
    >>> sch = tpl.apply(kernel, {"tile": 64}, "cuda:sm_80")
    >>> sch.kernel.launch.block, sch.trace[0].primitive, sch.trace[0].args["knobs"]
    ((64, 1, 1), 'template', {'tile': 64})
    >>> tpl.apply(kernel, {"tile": 512}, "cuda:sm_80")
    Traceback (most recent call last):
    ...
    tessel.errors.ScheduleError: template 'demo.copy': knob 'tile'=512: does not divide the tensor's length 256
    >>> space = tpl.space(kernel, "cuda:sm_80")
    >>> len(space), [p["tile"] for p in space.valid_points()]
    (6, [32, 64, 128, 256])
"""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Callable, Iterator

from tessel.errors import ScheduleError
from tessel.ir.nodes import Kernel
from tessel.schedules.knobs import (  # noqa: F401 - re-exported: templates import them from here
    Bool, Choice, Constraint, Context, IntRange, Knob, Pow2, Violation, at_most, constraint, divides, max_registers,
    max_shared_memory, max_threads,
)
from tessel.schedules.schedule import Schedule, Step
from tessel.schedules.target_limits import TargetLimits, limits_of, resource_violations

# -- templates ----------------------------------------------------------------------------------


class Template:
    """A schedule as a function of knob values.

    - `knobs`: the Knob declarations.
    - `schedule(sch, knobs, ctx)`: applies primitives to the Schedule `sch` (a Run, see below),
      using the knob values in the dict `knobs`; it must be deterministic.
    - `analyze(kernel, target) -> info`: raises ScheduleError when the template does not apply to
      the kernel; its result is `ctx.info` for constraints and schedule.
    - `defaults(kernel, target, info) -> dict`: default values that depend on the kernel (the
      declared defaults fill the rest).
    - `constraints`: Constraint list, checked before applying.
    - `relevant(kernel, target, info) -> names`: the knobs that matter for this kernel (the
      space fixes the others at their defaults); all by default.
    - `fallbacks`: {name: what happens}, the only steps the schedule may skip (`ctx.fallback`).
    - `opt_in`: the name of a user permission the template needs (e.g. "allow_tf32": it changes
      numerics); such a template is used only when named or permitted, never found by `applicable`.
    - `targets`: target kinds it schedules ("cpu", "cuda").
    """

    def __init__(self, name: str, knobs, schedule: Callable, *, analyze: Callable | None = None,
                 defaults: Callable | None = None, constraints=(), relevant: Callable | None = None,
                 fallbacks: dict | None = None, targets=("cpu", "cuda"), doc: str = "", opt_in: str = ""):
        self.name = name
        self.opt_in = opt_in  # non-empty: a permission the user gives (e.g. "allow_tf32"); `applicable` skips it
        self.knobs = tuple(knobs)
        names = [k.name for k in self.knobs]
        if len(set(names)) != len(names):
            raise ScheduleError(f"template '{name}': a knob is declared twice in {names}")
        for c in constraints:
            if not set(c.knobs) <= set(names):
                raise ScheduleError(f"template '{name}': constraint '{c.what}' names unknown knobs {c.knobs}")
        self._schedule, self._analyze, self._defaults = schedule, analyze, defaults
        self.constraints = tuple(constraints)
        self._relevant = relevant
        self.fallbacks = dict(fallbacks or {})
        self.targets = tuple(targets)
        self.doc = doc

    def __repr__(self) -> str:
        return f"Template({self.name!r}, knobs={[k.name for k in self.knobs]})"

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise ScheduleError(f"template '{self.name}' has no knob {name!r}; knobs: "
                            f"{', '.join(k.name for k in self.knobs) or '(none)'}")

    # -- analysis -----------------------------------------------------------------------------
    def analyze(self, kernel: Kernel, target=None):
        """The template's analysis of `kernel` (its `ctx.info`); ScheduleError when it does not apply."""
        lim = self._limits(target)
        if lim.kind not in self.targets:
            raise ScheduleError(f"template '{self.name}' schedules for {', '.join(self.targets)}, not {lim.target}")
        if not isinstance(kernel, Kernel):
            raise ScheduleError(f"template '{self.name}' needs a tessel.ir.nodes.Kernel, got {type(kernel).__name__}")
        return self._analyze(kernel, lim) if self._analyze else None

    def applies(self, kernel: Kernel, target=None) -> str | None:
        """None when the template can schedule `kernel` for `target`, else the reason it cannot."""
        try:
            self.analyze(kernel, target)
        except ScheduleError as e:
            return str(e)
        return None

    def defaults(self, kernel: Kernel, target=None, info=None) -> dict:
        """The default knob values for `kernel` (today's choices of the default schedules)."""
        lim = self._limits(target)
        info = self.analyze(kernel, lim) if info is None else info
        out = {k.name: k.default for k in self.knobs}
        if self._defaults:
            out.update(self._defaults(kernel, lim, info))
        return out

    def resolve(self, kernel: Kernel, knobs: dict | None, target=None, info=None) -> dict:
        """The complete knob dict: `knobs` over the defaults. Unknown names and values outside a
        knob's domain raise ScheduleError naming the knob."""
        knobs = dict(knobs or {})
        unknown = sorted(set(knobs) - {k.name for k in self.knobs})
        if unknown:
            raise ScheduleError(f"template '{self.name}' has no knob(s) {', '.join(map(repr, unknown))}; knobs: "
                                f"{', '.join(k.name for k in self.knobs) or '(none)'}")
        out = self.defaults(kernel, target, info)
        out.update(knobs)
        return out

    def violations(self, kernel: Kernel, knobs: dict | None, target=None, info=None) -> list[Violation]:
        """Every way the knob values fail: domains first, then the constraints (empty when valid)."""
        lim = self._limits(target)
        info = self.analyze(kernel, lim) if info is None else info
        values = self.resolve(kernel, knobs, lim, info)
        out = []
        for k in self.knobs:
            why = k.reason(values[k.name])
            if why:
                out.append(Violation({k.name: values[k.name]}, "domain", why))
        if out:
            return out  # constraints may assume well-typed values
        ctx = Context(kernel, lim, values, info)
        return [v for c in self.constraints if (v := c.violation(ctx)) is not None]

    def check(self, kernel: Kernel, knobs: dict | None = None, target=None, info=None) -> dict:
        """The resolved knob dict, or ScheduleError with the first violation."""
        bad = self.violations(kernel, knobs, target, info)
        if bad:
            raise ScheduleError(f"template '{self.name}': {bad[0]}")
        return self.resolve(kernel, knobs, target, info)

    def space(self, kernel: Kernel, target=None) -> "Space":
        """The knob space of this template for `kernel` on `target` (see Space)."""
        lim = self._limits(target)
        info = self.analyze(kernel, lim)
        names = self._relevant(kernel, lim, info) if self._relevant else [k.name for k in self.knobs]
        return Space(self, kernel, lim, info, [self.knob(n) for n in names])

    # -- application --------------------------------------------------------------------------
    def apply(self, kernel_or_schedule, knobs: dict | None = None, target=None, *,
              allow_fallbacks: bool = True) -> Schedule:
        """Schedule `kernel_or_schedule` (a Kernel, or a Schedule to continue) with `knobs` (missing
        ones take their defaults) for `target`; returns the Schedule. Invalid knobs raise
        ScheduleError before anything is applied; a failure while applying restores the Schedule
        and raises. `allow_fallbacks=False` turns each declared fallback into an error."""
        sch = kernel_or_schedule if isinstance(kernel_or_schedule, Schedule) else Schedule(kernel_or_schedule)
        lim = self._limits(target)
        info = self.analyze(sch.kernel, lim)
        values = self.check(sch.kernel, knobs, lim, info)
        before_kernel, before_trace = sch.kernel, list(sch.trace)
        at = len(sch.trace)
        sch.trace.append(Step("template", {"name": self.name, "knobs": dict(values), "target": lim.target,
                                           "steps": 0}))
        run = Run(self, sch, Context(sch.kernel, lim, values, info), allow_fallbacks)
        try:
            self._schedule(sch, values, run)
            bad = resource_violations(sch.kernel, lim)
            if bad:
                raise ScheduleError(f"the scheduled kernel breaks a limit that no constraint caught: {bad[0]}")
        except ScheduleError as e:
            sch.kernel, sch.trace = before_kernel, before_trace
            raise ScheduleError(f"template '{self.name}' with knobs {json.dumps(values)}: {e}") from e
        step = sch.trace[at]
        sch.trace[at] = Step("template", {**step.args, "steps": len(sch.trace) - at - 1})
        return sch

    def _limits(self, target) -> TargetLimits:
        return limits_of(target if target is not None else self.targets[0])


class Run:
    """Passed to a template's schedule function as `ctx`: the Context's fields plus `fallback` and
    `attempt`, which record declared fallbacks in the trace."""

    def __init__(self, template: Template, sch: Schedule, ctx: Context, allow: bool):
        self.template, self.sch, self.allow = template, sch, allow
        self.kernel, self.target, self.knobs, self.info = ctx.kernel, ctx.target, ctx.knobs, ctx.info

    def __getitem__(self, name: str):
        return self.knobs[name]

    def fallback(self, kind: str, at: str, reason: str) -> None:
        """Record that declared fallback `kind` happened at `at` (a stage, loop or buffer)."""
        if kind not in self.template.fallbacks:
            raise ScheduleError(f"template '{self.template.name}': fallback {kind!r} is not declared (declared: "
                                f"{', '.join(self.template.fallbacks) or 'none'})")
        if not self.allow:
            raise ScheduleError(f"fallback '{kind}' at '{at}' ({self.template.fallbacks[kind]}): {reason}")
        self.sch.apply("fallback", template=self.template.name, kind=kind, at=at, reason=str(reason))

    def attempt(self, kind: str, at: str, fn: Callable) -> bool:
        """Run `fn()`; if it raises ScheduleError, undo what it applied, record fallback `kind` and
        return False."""
        kernel, trace = self.sch.kernel, list(self.sch.trace)
        try:
            fn()
        except ScheduleError as e:
            self.sch.kernel, self.sch.trace = kernel, trace
            self.fallback(kind, at, str(e).splitlines()[0])
            return False
        return True


# -- spaces -------------------------------------------------------------------------------------


class Space:
    """The knob space of one template for one kernel and target.

    Points are complete knob dicts (JSON-able); the knobs not searched (`fixed`) keep their
    defaults. `len(space)` counts every combination of the searched knobs, valid or not;
    `check(point)` gives the reason a point is invalid (None when valid); `valid_points()`
    iterates the valid ones; `sample(n, seed)` draws distinct valid points; `neighbors(point)`
    gives the valid points one knob step away; `report()` counts what each constraint prunes."""

    def __init__(self, template: Template, kernel: Kernel, target: TargetLimits, info, knobs: list[Knob]):
        self.template, self.kernel, self.target, self.info = template, kernel, target, info
        self.knobs = list(knobs)
        self.default = template.defaults(kernel, target, info)
        self.fixed = {k: v for k, v in self.default.items() if k not in {x.name for x in self.knobs}}

    def __len__(self) -> int:
        return math.prod(len(k) for k in self.knobs)

    @property
    def size(self) -> int:
        return len(self)

    def point(self, index: int) -> dict:
        """The point at `index` (0 <= index < len(self)), mixed radix over the knobs in order."""
        if not 0 <= index < len(self):
            raise ScheduleError(f"point index {index} outside the space of {len(self)} points")
        out = dict(self.fixed)
        for k in reversed(self.knobs):
            index, r = divmod(index, len(k))
            out[k.name] = k.values()[r]
        return {k: out[k] for k in self.default}

    def index(self, point: dict) -> int:
        """The index of `point` (its searched knobs); ScheduleError when a value is not in the space."""
        i = 0
        for k in self.knobs:
            v = point.get(k.name, self.default[k.name])
            why = k.reason(v)
            if why:
                raise ScheduleError(f"knob '{k.name}'={v!r} {why}")
            i = i * len(k) + k.values().index(v)
        return i

    def __iter__(self) -> Iterator[dict]:
        for combo in itertools.product(*(k.values() for k in self.knobs)):
            yield {**self.default, **self.fixed, **dict(zip((k.name for k in self.knobs), combo))}

    def violations(self, point: dict) -> list[Violation]:
        return self.template.violations(self.kernel, {**self.fixed, **point}, self.target, self.info)

    def check(self, point: dict) -> str | None:
        """None when `point` is valid, else the reason (the first violation)."""
        bad = self.violations(point)
        return str(bad[0]) if bad else None

    def is_valid(self, point: dict) -> bool:
        return not self.violations(point)

    def neighbors(self, point: dict, valid: bool = True) -> list[dict]:
        """The points one step away from `point`: one searched knob moved to the value next to its
        own (before or after it in the knob's order), valid ones only unless `valid=False`. For
        local search and for fuzzers that mutate knobs."""
        base = {**self.default, **self.fixed, **point}
        out = []
        for k in self.knobs:
            vals = k.values()
            i = vals.index(base[k.name]) if base[k.name] in vals else None
            for j in ((i - 1, i + 1) if i is not None else ()):
                if 0 <= j < len(vals):
                    p = {**base, k.name: vals[j]}
                    if not valid or self.is_valid(p):
                        out.append(p)
        return out

    def valid_points(self) -> Iterator[dict]:
        return (p for p in self if self.is_valid(p))

    def sample(self, n: int, seed=0, valid: bool = True) -> list[dict]:
        """Up to `n` distinct points drawn at random (seeded: `seed` is an int or a random.Random),
        only valid ones unless `valid=False`; fewer when the space has fewer."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        size = len(self)
        if size <= 4 * n or size <= 4096:
            order = list(range(size))
            rng.shuffle(order)
            out = []
            for i in order:
                p = self.point(i)
                if not valid or self.is_valid(p):
                    out.append(p)
                    if len(out) == n:
                        break
            return out
        seen, out = set(), []
        for _ in range(200 * n):
            i = rng.randrange(size)
            if i in seen:
                continue
            seen.add(i)
            p = self.point(i)
            if not valid or self.is_valid(p):
                out.append(p)
                if len(out) == n:
                    break
        return out

    def report(self, limit: int = 100_000) -> dict:
        """{"template", "target", "size", "valid", "pruned", "pruned_by": {constraint: count}} by
        enumeration (spaces above `limit` points are estimated from a seeded sample of `limit`)."""
        size = len(self)
        points = iter(self) if size <= limit else (self.point(i) for i in
                                                    random.Random(0).sample(range(size), limit))
        seen = valid = 0
        by: dict[str, int] = {}
        for p in points:
            seen += 1
            bad = self.violations(p)
            if not bad:
                valid += 1
            else:
                by[bad[0].what] = by.get(bad[0].what, 0) + 1
        scale = size / seen if seen else 0
        return {"template": self.template.name, "target": self.target.target, "size": size,
                "valid": round(valid * scale), "pruned": round((seen - valid) * scale),
                "pruned_by": {k: round(v * scale) for k, v in sorted(by.items())}, "exact": size <= limit}

    def to_json(self) -> dict:
        return {"template": self.template.name, "target": self.target.target,
                "knobs": [k.to_json() for k in self.knobs], "fixed": dict(self.fixed), "default": dict(self.default)}


# -- the registry -------------------------------------------------------------------------------

_REGISTRY: dict[str, Template] = {}
# modules whose import registers templates; looked up lazily (they import this module)
BUILTIN_MODULES = ("tessel.schedules.generic", "tessel.schedules.generic_gpu", "tessel.schedules.gemm",
                   "tessel.schedules.gemm_hopper")


def register(template: Template) -> Template:
    """Add `template` to the registry under its name (a module reloaded may register it again)."""
    if not isinstance(template, Template):
        raise ScheduleError(f"register() takes a Template, got {type(template).__name__}")
    _REGISTRY[template.name] = template
    return template


def unregister(name: str) -> None:
    """Remove template `name` from the registry (tests that register their own)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    import importlib

    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # a template module that is not there yet is fine; a broken one is not
                raise


def get_template(name: str) -> Template:
    """The registered template `name`; ScheduleError listing the known ones otherwise."""
    if name not in _REGISTRY:
        _load_builtins()
    if name not in _REGISTRY:
        raise ScheduleError(f"unknown template {name!r}; known: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[name]


def templates() -> dict[str, Template]:
    """Every registered template by name."""
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def applicable(kernel: Kernel, target=None, permissions=()) -> list[Template]:
    """The registered templates that can schedule `kernel` for `target` (an opt-in template only
    when its permission is in `permissions`)."""
    kind = limits_of(target).kind
    return [t for t in templates().values() if kind in t.targets and (not t.opt_in or t.opt_in in permissions)
            and t.applies(kernel, target) is None]


__all__ = ["Bool", "Choice", "Constraint", "Context", "IntRange", "Knob", "Pow2", "Run", "Space", "Template",
           "Violation", "applicable", "at_most", "constraint", "divides", "get_template", "max_registers",
           "max_shared_memory", "max_threads", "register", "templates", "unregister"]
