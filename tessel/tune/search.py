"""Search: batches of candidates proposed by evolutionary search over the cost model, or at random.

`Search(space, measure, ...)` runs trials in batches of `batch`:

- While the model has too few good measurements, a batch is random valid points (and the
  template's default point first, so the result is never worse than the default).
- Then a population (the best points measured so far, plus random valid points) evolves for a
  few generations by mutation and crossover (`TuneSpace.mutate` / `crossover`), each generation
  keeping the points the model scores highest. A batch is the best unmeasured points of the last
  generation, except an exploration share (`explore`) of random valid points, so that a wrong
  model cannot lock the search into one corner.
- After each batch the model is retrained on everything measured (online learning).
- `early_stopping=k` stops when the best time has not improved by 0.5% in the last k trials.

`strategy="random"` is the baseline: every batch random valid points. Resuming: `known` maps
point keys already measured (from a log) to their time or None; they are never proposed again,
and the model and the best-so-far start from them.

`measure(points) -> [(time or None, error or None), ...]` is all the search knows of measuring.

Example (a synthetic objective, nothing built):
    >>> import tessel as ts
    >>> from tessel.schedules.template import Template, Pow2
    >>> tpl = Template("doc.search", [Pow2("a", 1, 64, default=1), Pow2("b", 1, 64, default=1)],
    ...                lambda sch, kn, ctx: None, targets=("cpu",))
    >>> A = ts.placeholder((8,), name="A")
    >>> from tessel.tune.space import TuneSpace
    >>> sp = TuneSpace(tpl, ts.lower([A, ts.compute((8,), lambda i: A[i] + 1.0, name="B")]), "cpu")
    >>> cost = lambda p: (p["a"] - 8) ** 2 + (p["b"] - 16) ** 2 + 1.0
    >>> h = Search(sp, lambda ps: [(cost(p), None) for p in ps], batch=8, seed=0).run(40)
    >>> h.best_time
    1.0
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from tessel.errors import TesselError
from tessel.tune.cost_model import CostModel
from tessel.tune.space import point_key


@dataclass
class Trial:
    """One measured point: its index in the run, the knobs, the time (or None) and the error."""

    index: int
    point: dict
    time: float | None
    error: str | None = None


@dataclass
class History:
    """The trials of a run (resumed ones not included) and the best over them and the known ones."""

    trials: list = field(default_factory=list)
    best_point: dict | None = None
    best_time: float | None = None
    stopped_early: bool = False

    def curve(self) -> list:
        """Best time after each trial (None until the first good one)."""
        out, best = [], None
        for t in self.trials:
            if t.time is not None and (best is None or t.time < best):
                best = t.time
            out.append(best)
        return out


class Search:
    """See the module docstring."""

    def __init__(self, space, measure, model: CostModel | None = None, batch: int = 8, explore: float = 0.25,
                 seed: int = 0, strategy: str = "xgb", early_stopping: int | None = None, known: dict | None = None,
                 featurize=None, population: int = 32, generations: int = 3, group: str = "workload"):
        if strategy not in ("xgb", "random"):
            raise TesselError(f"search strategy {strategy!r}: expected 'xgb' or 'random'")
        self.space, self.measure = space, measure
        self.model = model if model is not None else CostModel(seed=seed)
        self.batch, self.explore, self.strategy = max(1, batch), explore, strategy
        self.rng = random.Random(seed)
        self.early_stopping = early_stopping
        self.featurize = featurize or self._features
        self.population, self.generations, self.group = population, generations, group
        self.known: dict = {}  # point key -> time or None
        self.points: dict = {}  # point key -> point
        self.history = History()
        for point, t in (known or {}).values():
            self._record(point, t, count=False)

    # -- features ------------------------------------------------------------------------------
    def _features(self, point: dict) -> list:
        from tessel.tune.features import feature_vector

        kernel, _ = self.space.schedule(point)
        ir = feature_vector(kernel, self.space.target) if kernel is not None else [0.0] * _n_ir()
        return self.space.encode(point) + ir

    def _record(self, point: dict, t: float | None, error: str | None = None, count: bool = True) -> None:
        key = point_key(point)
        self.known[key] = t
        self.points[key] = point
        try:
            self.model.add(self.group, self.featurize(point), t)
        except ValueError:
            pass  # a known point from an older space with other features: it still counts as measured
        if t is not None and (self.history.best_time is None or t < self.history.best_time):
            self.history.best_time, self.history.best_point = t, point
        if count:
            self.history.trials.append(_trial(len(self.history.trials), point, t, error))

    # -- proposing -----------------------------------------------------------------------------
    def propose(self, n: int) -> list:
        """Up to `n` valid points not measured yet."""
        out: list = []
        if not self.known and self.space.valid(self.space.default):
            out.append(dict(self.space.default))
        good = sum(1 for t in self.known.values() if t is not None)
        if self.strategy == "random" or not self.model.trained or good < self.model.min_rows:
            return out + self._random(n - len(out), out)
        n_explore = max(1, round(n * self.explore)) if n > 1 else 0
        ranked = self._evolve()
        taken = {point_key(p) for p in out}
        for p in ranked:
            if len(out) >= n - n_explore:
                break
            if point_key(p) not in taken:
                taken.add(point_key(p))
                out.append(p)
        return out + self._random(n - len(out), out)

    def _random(self, n: int, already: list) -> list:
        if n <= 0:
            return []
        exclude = set(self.known) | {point_key(p) for p in already}
        return self.space.random_points(n, self.rng, exclude)

    def _evolve(self) -> list:
        measured = sorted(((t, k) for k, t in self.known.items() if t is not None))
        elite = [self.points[k] for _, k in measured[: max(4, self.population // 4)]]
        pop = elite + self._random(self.population - len(elite), elite)
        scored: dict = {}

        def score(points):
            fresh = [p for p in points if point_key(p) not in scored]
            if fresh:
                for p, s in zip(fresh, self.model.predict([self.featurize(p) for p in fresh])):
                    scored[point_key(p)] = (float(s), p)

        score(pop)
        for _ in range(self.generations):
            children = []
            for p in pop:
                for _ in range(2):
                    children.append(self.space.mutate(p, self.rng, 1 + (self.rng.random() < 0.3)))
            for _ in range(len(pop) // 2):
                a, b = self.rng.sample(pop, 2) if len(pop) > 1 else (pop[0], pop[0])
                children.append(self.space.crossover(a, b, self.rng))
            children = [c for c in children if point_key(c) not in scored and self.space.valid(c)]
            score(children)
            pool = sorted(scored.values(), key=lambda sp: -sp[0])
            pop = [p for _, p in pool[: self.population]]
        return [p for _, p in sorted(scored.values(), key=lambda sp: -sp[0]) if point_key(p) not in self.known]

    # -- running -------------------------------------------------------------------------------
    def run(self, trials: int, on_trial=None, stop=None) -> History:
        """Measure up to `trials` new points; `on_trial(trial, history)` after each one; `stop()`,
        asked before each batch, ends the run when true (a time budget)."""
        since = 0
        best_before = self.history.best_time
        while len(self.history.trials) < trials:
            if stop is not None and stop():
                break
            points = self.propose(min(self.batch, trials - len(self.history.trials)))
            if not points:
                break  # the space is exhausted
            results = self.measure(points)
            for p, (t, err) in zip(points, results):
                self._record(p, t, err)
                if on_trial is not None:
                    on_trial(self.history.trials[-1], self.history)
                best = self.history.best_time
                if best is not None and (best_before is None or best < best_before * 0.995):
                    best_before, since = best, 0
                else:
                    since += 1
            if self.strategy != "random":
                self.model.fit()
            if self.early_stopping is not None and since >= self.early_stopping:
                self.history.stopped_early = True
                break
        return self.history


def _trial(i, point, t, error) -> Trial:
    return Trial(i, dict(point), None if t is None or not math.isfinite(t) else float(t), error)


def _n_ir() -> int:
    from tessel.tune.features import FEATURE_NAMES

    return len(FEATURE_NAMES)
