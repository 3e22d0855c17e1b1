"""The search space of one workload: a template's declared knob space, pruned before measuring.

A `TuneSpace` wraps `tessel.schedules.template.Space` (the knobs a template declares for a kernel
and target, and its constraints) and adds what the search needs:

- `schedule(point)`: apply the template (deterministic); the scheduled IR is checked statically by
  the template (shared memory, registers, threads: `target_limits.resource_violations`). A point
  the constraints refuse, or whose scheduled IR breaks a limit, is *pruned*: never measured.
- `encode(point)`: the knob values as numbers for the cost model (log2 of powers of two, an index
  for string choices, 0/1 for bools).
- `mutate` / `crossover` for the evolutionary search, which stay inside the declared domains.
- `report()`: the space's size and the share pruned (by constraint, and by the static check of
  the points scheduled so far).

Example:
    >>> import tessel as ts
    >>> from tessel.schedules.template import Template, Pow2
    >>> tpl = Template("doc.split", [Pow2("t", 1, 8, default=2)],
    ...                lambda sch, kn, ctx: sch.split("i", [None, kn["t"]]), targets=("cpu",))
    >>> A = ts.placeholder((8,), name="A")
    >>> sp = TuneSpace(tpl, ts.lower([A, ts.compute((8,), lambda i: A[i] + 1.0, name="B")]), "cpu")
    >>> len(sp), sp.encode({"t": 4})
    (4, [2.0])
"""

from __future__ import annotations

import json
import math
import random

from tessel.errors import ScheduleError


def point_key(point: dict) -> str:
    """Canonical JSON of a point (the form the tuning log compares).

    >>> point_key({"b": 1, "a": 2})
    '{"a": 2, "b": 1}'
    """
    return json.dumps(point, sort_keys=True)


class TuneSpace:
    """The space of `template` for `kernel` (unscheduled IR) on `target` (see the module docstring)."""

    def __init__(self, template, kernel, target, fixed: dict | None = None, values: dict | None = None):
        """`fixed`: knob values not searched (a sub-space); `values`: {knob: values} narrowing a
        searched knob's domain (each value must be in the declared one)."""
        self.template = template
        self.kernel = kernel
        self.target = str(target)
        self.space = template.space(kernel, target)
        fixed, values = dict(fixed or {}), dict(values or {})
        self.default = {**self.space.default, **fixed}
        self.knobs = [k for k in self.space.knobs if k.name not in fixed]
        self._domains = {}
        for k in self.knobs:
            vals = tuple(values.get(k.name, k.values()))
            bad = [v for v in vals if k.reason(v)]
            if bad:
                raise ScheduleError(f"template '{template.name}': knob '{k.name}' value {bad[0]!r} {k.reason(bad[0])}")
            self._domains[k.name] = vals
        self.restricted = bool(fixed or values)
        self._schedules: dict = {}  # point key -> scheduled kernel, or the reason it is pruned
        self.static_pruned = 0

    @property
    def name(self) -> str:
        return self.template.name

    def __len__(self) -> int:
        return math.prod(len(v) for v in self._domains.values())

    def domain(self, name: str) -> tuple:
        """The values searched for knob `name`."""
        return self._domains[name]

    def point(self, index: int) -> dict:
        """The point at `index` (mixed radix over the searched knobs, in order)."""
        out = dict(self.default)
        for k in reversed(self.knobs):
            vals = self._domains[k.name]
            index, r = divmod(index, len(vals))
            out[k.name] = vals[r]
        return out

    def points(self):
        """Every point of the (possibly narrowed) space, valid or not."""
        for i in range(len(self)):
            yield self.point(i)

    # -- validity ------------------------------------------------------------------------------
    def check(self, point: dict) -> str | None:
        """None when the constraints accept `point`, else why not."""
        return self.space.check(point)

    def schedule(self, point: dict):
        """(scheduled kernel, None) or (None, reason): the template applied, with its static check.
        Cached per point."""
        key = point_key(point)
        if key not in self._schedules:
            why = self.check(point)
            if why is None:
                try:
                    self._schedules[key] = (self.template.apply(self.kernel, point, self.target).kernel, None)
                except ScheduleError as e:
                    self.static_pruned += 1
                    self._schedules[key] = (None, str(e).splitlines()[0])
            else:
                self._schedules[key] = (None, why)
            if len(self._schedules) > 4096:  # bound the memory of long searches
                self._schedules.pop(next(iter(self._schedules)))
        return self._schedules[key]

    def valid(self, point: dict) -> bool:
        return self.schedule(point)[0] is not None

    def random_points(self, n: int, rng: random.Random, exclude=frozenset()) -> list:
        """Up to `n` distinct valid points (constraints and static check) not in `exclude` (keys)."""
        out, seen = [], set(exclude)
        size = len(self)
        order = rng.sample(range(size), size) if size <= 20000 else (rng.randrange(size) for _ in range(400 * n))
        for i in order:
            p = self.point(i)
            k = point_key(p)
            if k in seen:
                continue
            seen.add(k)
            if self.check(p) is None and self.valid(p):
                out.append(p)
                if len(out) == n:
                    break
        return out

    # -- encoding and variation ----------------------------------------------------------------
    def encode(self, point: dict) -> list:
        """The searched knobs of `point` as floats."""
        out = []
        for k in self.knobs:
            v = point.get(k.name, self.default[k.name])
            if isinstance(v, bool):
                out.append(float(v))
            elif isinstance(v, int):
                out.append(math.log2(v) if k.kind == "pow2" and v > 0 else float(v))
            else:
                out.append(float(k.values().index(v)) if v in k.values() else -1.0)
        return out

    def feature_names(self) -> list:
        return [f"knob.{k.name}" for k in self.knobs]

    def mutate(self, point: dict, rng: random.Random, n_knobs: int = 1) -> dict:
        """A copy of `point` with `n_knobs` searched knobs moved: to a neighbouring value mostly
        (ordered knobs), sometimes to any value."""
        out = dict(point)
        if not self.knobs:
            return out
        for k in rng.sample(self.knobs, min(n_knobs, len(self.knobs))):
            vals = self._domains[k.name]
            cur = vals.index(out[k.name]) if out.get(k.name) in vals else 0
            if len(vals) == 1:
                continue
            if k.kind in ("pow2", "range") and rng.random() < 0.8:
                j = min(max(cur + rng.choice((-1, 1)), 0), len(vals) - 1)
            else:
                j = rng.randrange(len(vals))
            out[k.name] = vals[j]
        return out

    def crossover(self, a: dict, b: dict, rng: random.Random) -> dict:
        """Each searched knob from `a` or `b` at random."""
        return {**a, **{k.name: (a if rng.random() < 0.5 else b)[k.name] for k in self.knobs}}

    # -- reporting -----------------------------------------------------------------------------
    def report(self) -> dict:
        """Size, valid and pruned counts of the declared space (by constraint), plus how many of
        the points scheduled so far the static IR check pruned."""
        rep = self.space.report() if not self.restricted else self._report()
        scheduled = len(self._schedules)
        rep["static_pruned"] = self.static_pruned
        rep["scheduled"] = scheduled
        rep["pruned_share"] = rep["pruned"] / rep["size"] if rep["size"] else 0.0
        return rep

    def _report(self) -> dict:
        by: dict = {}
        valid = 0
        for p in self.points():
            bad = self.space.violations(p)
            if bad:
                by[bad[0].what] = by.get(bad[0].what, 0) + 1
            else:
                valid += 1
        return {"template": self.name, "target": self.target, "size": len(self), "valid": valid,
                "pruned": len(self) - valid, "pruned_by": dict(sorted(by.items())), "exact": True}

    def describe(self) -> str:
        rep = self.report()
        by = ", ".join(f"{k} {v}" for k, v in rep["pruned_by"].items()) or "none"
        return (f"template '{self.name}': {rep['size']} points, {rep['valid']} valid, {rep['pruned']} pruned "
                f"({100 * rep['pruned_share']:.0f}%: {by}); static IR check pruned {self.static_pruned} of "
                f"{rep['scheduled']} scheduled")


def spaces_for(kernel, target) -> list:
    """A TuneSpace for each registered template that can schedule `kernel` on `target`."""
    from tessel.schedules.template import applicable

    return [TuneSpace(t, kernel, target) for t in applicable(kernel, target)]
