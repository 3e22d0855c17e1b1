"""Search: the XGBoost-guided evolution reaches a good point in fewer trials than random search
on a synthetic objective (median over seeds), stays in the valid space, and stops early."""

import statistics

import tessel as ts
from tessel.schedules.template import IntRange, Pow2, Template, constraint
from tessel.tune.search import Search
from tessel.tune.space import TuneSpace, point_key

TPL = Template("test.synthetic", [Pow2("a", 1, 256, default=1), Pow2("b", 1, 256, default=1),
                                  IntRange("c", 1, 8, default=1), IntRange("d", 0, 3, default=0)],
               lambda sch, kn, ctx: None, targets=("cpu",),
               constraints=[constraint(("a", "b"), "budget")(
                   lambda ctx: None if ctx["a"] * ctx["b"] <= 4096 else "a * b above 4096")])


def _space():
    A = ts.placeholder((8,), name="A")
    return TuneSpace(TPL, ts.lower([A, ts.compute((8,), lambda i: A[i] + 1.0, name="B")]), "cpu")


def cost(p) -> float:
    # a smooth valley in log space (what tile sizes look like), plus a small term per knob
    from math import log2
    return 1e-3 * (1 + (log2(p["a"]) - 5) ** 2 + 0.5 * (log2(p["b"]) - 3) ** 2 + 0.3 * (p["c"] - 6) ** 2
                   + 0.2 * p["d"])


def _trials_to_reach(strategy: str, seed: int, target: float, budget: int = 64) -> int:
    sp = _space()
    h = Search(sp, lambda ps: [(cost(p), None) for p in ps], batch=8, seed=seed, strategy=strategy).run(budget)
    for i, best in enumerate(h.curve()):
        if best is not None and best <= target:
            return i + 1
    return budget * 2  # not reached: counts as twice the budget


def test_search_beats_random_on_a_synthetic_objective():
    sp = _space()
    best = min(cost(p) for p in sp.space.valid_points())
    target = best / 0.95  # within 95% of the exhaustive best
    xgb = [_trials_to_reach("xgb", s, target) for s in range(5)]
    rnd = [_trials_to_reach("random", s, target) for s in range(5)]
    assert statistics.median(xgb) <= 64, (xgb, rnd)
    assert statistics.median(xgb) < statistics.median(rnd), (xgb, rnd)


def test_points_are_valid_distinct_and_known_ones_never_proposed():
    sp = _space()
    known = {point_key(p): (p, cost(p)) for p in sp.random_points(10, __import__("random").Random(1))}
    seen = []

    def measure(ps):
        seen.extend(ps)
        return [(cost(p), None) for p in ps]

    Search(sp, measure, batch=8, seed=3, known=known).run(40)
    keys = [point_key(p) for p in seen]
    assert len(keys) == len(set(keys)) == 40
    assert not set(keys) & set(known)
    assert all(sp.check(p) is None for p in seen)


def test_early_stopping():
    sp = _space()
    h = Search(sp, lambda ps: [(1.0, None) for _ in ps], batch=4, seed=0, early_stopping=8).run(64)
    assert h.stopped_early and len(h.trials) < 64
