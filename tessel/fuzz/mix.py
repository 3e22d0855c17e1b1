"""Energy scheduling of targets in a `--target all` campaign: which target the next case gets.

One campaign covers the targets (`ALL`: the CPU with TVM, the GPU templates of sm_90a and of sm_80
in the race-checking interpreter, and the graph passes), so its kept corpus exercises passes, CPU
schedules, GPU templates, CPU code generation and graph rewrites together. Their cases cost very
different times (a CPU case about 50 ms, a GEMM on the wgmma template in the interpreter about a
second), so the mix shares *time*, not cases:

- each target is owed a share of the workers' time: `floor` (default half of it) split evenly, so
  no target starves, and the rest in proportion to its energy, the new coverage arcs it found per
  second of case time, decayed with a half-life of `half_life` seconds of campaign time (so a target
  that stops finding new arcs gives its time to those that still do);
- a case's target is drawn with probability proportional to share / (mean time of that target's
  cases), which gives each target its share of the time in expectation; before a target has run
  a case its time is guessed (`GUESS_S`).

Example:
    >>> import random
    >>> m = TargetMix(("cpu", "graph"), random.Random(0))
    >>> m.record("cpu", 0.05, new=40, now=1.0); m.record("graph", 0.01, new=0, now=1.0)
    >>> s = m.shares(); s["cpu"] > s["graph"] > 0.2
    True
    >>> m.pick() in ("cpu", "graph")
    True
"""

from __future__ import annotations

import math
import random

ALL = ("cpu", "cuda:sm_90a", "cuda:sm_80", "graph")
GUESS_S = {"cpu": 0.05, "graph": 0.02}  # seconds per case before any ran (GPU targets: 0.5)


class TargetMix:
    """The time shares of targets and the draw of the next case's target (see the module docstring)."""

    def __init__(self, targets, rng: random.Random, floor: float = 0.5, half_life: float = 90.0):
        self.targets = tuple(targets)
        self.rng, self.floor, self.half_life = rng, floor, half_life
        self.time = {t: 0.0 for t in self.targets}  # case seconds, all runs
        self.cases = {t: 0 for t in self.targets}
        self.new = {t: 0.0 for t in self.targets}  # decayed new arcs
        self.busy = {t: 0.0 for t in self.targets}  # decayed case seconds
        self._now = 0.0

    def _decay(self, now: float) -> None:
        if now > self._now:
            f = math.exp(-math.log(2) * (now - self._now) / self.half_life)
            for t in self.targets:
                self.new[t] *= f
                self.busy[t] *= f
            self._now = now

    def record(self, target: str, seconds: float, new: int, now: float) -> None:
        """A case of `target` ran for `seconds` and reached `new` arcs nobody had reached."""
        if target not in self.time:
            return
        self._decay(now)
        seconds = max(0.0, float(seconds))
        self.time[target] += seconds
        self.cases[target] += 1
        self.new[target] += new
        self.busy[target] += seconds

    def energy(self, target: str) -> float:
        """New arcs per second of case time, recently (with a prior of one arc per 10 s)."""
        return (self.new[target] + 1.0) / (self.busy[target] + 10.0)

    def shares(self) -> dict:
        """target -> the share of the time it is owed now (they sum to 1)."""
        n = len(self.targets)
        e = {t: self.energy(t) for t in self.targets}
        total = sum(e.values())
        return {t: self.floor / n + (1 - self.floor) * e[t] / total for t in self.targets}

    def cost(self, target: str) -> float:
        """Mean seconds of a case of `target` (a guess before the first)."""
        if self.cases[target]:
            return max(1e-3, self.time[target] / self.cases[target])
        return GUESS_S.get(target, 0.5)

    def pick(self) -> str:
        """The next case's target: drawn in proportion to share / cost."""
        s = self.shares()
        w = [s[t] / self.cost(t) for t in self.targets]
        return self.rng.choices(self.targets, weights=w)[0]

    def to_json(self) -> dict:
        s = self.shares()
        return {t: {"cases": self.cases[t], "case_seconds": round(self.time[t], 1), "share_now": round(s[t], 3),
                    "energy": round(self.energy(t), 3)} for t in self.targets}

    def load(self, state: dict) -> None:
        """Carry on the counters of an earlier run (`to_json`'s form)."""
        for t, d in (state or {}).items():
            if t in self.time:
                self.cases[t] = int(d.get("cases", 0))
                self.time[t] = float(d.get("case_seconds", 0.0))


__all__ = ["ALL", "TargetMix"]
