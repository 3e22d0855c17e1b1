"""Confirming a tuned point against the default schedule before the log lets it replace the default.

A search measures each candidate once (one child process, a few rounds), and of many candidates
about as fast as the default the fastest measurement is the one most flattered by noise: a loaded
machine, a lucky memory layout of that process, a round that ran while the other core was idle. Kept
as is, such a point can make a kernel slower than its default in the model. So, after the search,
`confirm` measures the default point and the `top` fastest measured candidates again, `rounds` times
each, interleaved (default, c1, c2, default, c1, c2, ...; every measurement in its own process, so the
spread includes what differs between processes), and keeps a candidate only when it beats the default
beyond the spread of these measurements (`beats`):

- its slowest confirmation is faster than the default's fastest (the ranges do not overlap), and
- its median is at least `margin` (default 2%) below the default's median.

Of the candidates that pass, the one with the lowest median is kept; when none does, the default is.
(When the default cannot be built or run, the fastest candidate that ran is kept and the verdict says
why.) The verdict becomes one record in the tuning log (`verdict_record`: the kept point, its median
confirmation time, and in `extra["verdict"]` the rule, the margin and every confirmation time), and
reading the log (`records.best_records`) takes a workload's latest verdict over its fastest record, so
`compile(tuning_log=)` replays the decision without measuring, and a kept "default" compiles the
default schedule itself.

Example (timings made up: candidate "b" is fast once, by luck, and slow when measured again):
    >>> times = {"a": iter([1.0, 1.01, 0.99]), "b": iter([1.5, 1.6, 1.4])}
    >>> v = confirm(lambda ps: [(next(times[p["t"]]), None) for p in ps], {"t": "a"}, [{"t": "b"}], rounds=3)
    >>> v.kept, v.point, v.reason
    ('default', {'t': 'a'}, 'no candidate beat the default beyond the spread (t=b: 1.4-1.6 vs 0.99-1.01)')
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from tessel.tune.space import point_key

RULE = "kept: slowest confirmation below the default's fastest, and median at least `margin` below the default's"


@dataclass(frozen=True)
class Verdict:
    """What `confirm` decided: `kept` ("tuned" or "default"), the kept `point` and its confirmation
    `times`, the default's confirmation times, each candidate's (point, times), and why."""

    kept: str
    point: dict
    times: tuple
    default_times: tuple
    candidates: tuple = ()
    margin: float = 0.02
    reason: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def time(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def default_time(self) -> float | None:
        return statistics.median(self.default_times) if self.default_times else None

    def to_json(self) -> dict:
        return {"kept": self.kept, "rule": RULE, "margin": self.margin, "reason": self.reason,
                "default": list(self.default_times),
                "candidates": [{"knobs": dict(p), "times": list(t)} for p, t in self.candidates], **self.extra}


def beats(candidate: list, default: list, margin: float = 0.02) -> bool:
    """Does a candidate's set of confirmation times beat the default's beyond their spread?

    >>> beats([0.80, 0.82, 0.81], [1.0, 1.02, 0.99])
    True
    >>> beats([0.80, 1.00, 0.81], [0.99, 1.02, 1.0])      # ranges overlap: noise could explain it
    False
    >>> beats([0.985, 0.986, 0.987], [0.99, 1.0, 1.01])   # below the default's range, but less than 2%
    False
    """
    if not candidate or not default:
        return False
    return max(candidate) < min(default) and statistics.median(candidate) <= (1 - margin) * statistics.median(default)


def confirm(measure, default: dict, candidates: list, rounds: int = 3, margin: float = 0.02) -> Verdict:
    """Measure `default` and `candidates` (points) `rounds` times each, interleaved, through
    `measure(points) -> [(seconds or None, error or None), ...]`, and decide (module docstring)."""
    cands = []
    for p in candidates:  # distinct, and not the default
        if point_key(p) != point_key(default) and all(point_key(p) != point_key(q) for q in cands):
            cands.append(dict(p))
    points = [dict(default)] + cands
    got: dict = {point_key(p): [] for p in points}
    errors: dict = {}
    results = measure([p for _ in range(max(1, rounds)) for p in points])
    for p, (t, err) in zip([p for _ in range(max(1, rounds)) for p in points], results):
        if t is not None and err is None:
            got[point_key(p)].append(float(t))
        else:
            errors.setdefault(point_key(p), err or "no time")
    dt = got[point_key(default)]
    measured = [(p, tuple(got[point_key(p)])) for p in cands]
    # a candidate that failed in any round is not kept: what fails now may fail in the model
    ok = [(p, t) for p, t in measured if t and point_key(p) not in errors]
    if not dt:
        if not ok:
            return Verdict("default", dict(default), (), (), tuple(measured), margin,
                           f"neither the default nor a candidate ran ({errors.get(point_key(default))})")
        p, t = min(ok, key=lambda pt: statistics.median(pt[1]))
        return Verdict("tuned", p, t, (), tuple(measured), margin,
                       f"the default did not run ({errors.get(point_key(default))}); the fastest candidate that ran")
    winners = [(p, t) for p, t in ok if beats(list(t), dt, margin)]
    if winners:
        p, t = min(winners, key=lambda pt: statistics.median(pt[1]))
        gain = statistics.median(dt) / statistics.median(t)
        return Verdict("tuned", p, t, tuple(dt), tuple(measured), margin,
                       f"{gain:.3g}x faster than the default, beyond the spread")
    spread = "; ".join(f"{_short(p, default)}: {_range(t)} vs {_range(dt)}" for p, t in ok) or "no candidate ran"
    return Verdict("default", dict(default), tuple(dt), tuple(dt), tuple(measured), margin,
                   f"no candidate beat the default beyond the spread ({spread})")


def _range(times) -> str:
    return f"{min(times):.3g}-{max(times):.3g}"


def _short(point: dict, default: dict) -> str:
    """The knobs where `point` differs from the default, as k=v."""
    diff = {k: v for k, v in point.items() if default.get(k) != v} or point
    return ",".join(f"{k}={v}" for k, v in diff.items())


def verdict_record(workload, target, template: str, verdict: Verdict):
    """The tuning-log record of a verdict (its time is the kept point's median confirmation)."""
    from tessel.tune.records import Record

    return Record.new(workload, target, template, verdict.point, time=verdict.time, times=verdict.times,
                      verdict=verdict.to_json())
