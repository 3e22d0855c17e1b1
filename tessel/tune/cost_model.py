"""The cost model: XGBoost trained online on measured candidates, with a ranking objective.

Each measured candidate is a row: its knob values (`TuneSpace.encode`) and the static features of
its scheduled IR (`tessel.tune.features`), labelled by how fast it ran relative to the best of
its workload (best = 1, twice as slow = 0.5, an error = 0). Rows are grouped by workload, and the
model learns to *order* candidates within a group (`rank:pairwise`), which is all the search
needs and which transfers between shapes better than absolute times. `predict` returns a score:
higher means expected faster.

Rows from other workloads of the same template (another shape) share the group-free IR features
and the knob columns, so a model warm-started from an existing log (`add_records`) ranks a new
shape's candidates before any of them is measured.

`save(path)` writes the XGBoost model (JSON) and the training rows next to it; `load` reads both.
xgboost is imported when the model is first trained.

Example:
    >>> m = CostModel(seed=0)
    >>> for i in range(1, 9):
    ...     m.add("w", [float(i), 0.0], float(i))       # time grows with the first feature
    >>> m.fit()
    >>> s = m.predict([[1.0, 0.0], [8.0, 0.0]])
    >>> bool(s[0] > s[1])
    True
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


class CostModel:
    """An online XGBoost ranker over feature rows (see the module docstring)."""

    def __init__(self, seed: int = 0, objective: str = "rank:pairwise", rounds: int = 60, min_rows: int = 4):
        self.seed, self.objective, self.rounds, self.min_rows = seed, objective, rounds, min_rows
        self.rows: list = []  # (group, features, time or None)
        self.booster = None
        self._width = None

    @property
    def trained(self) -> bool:
        return self.booster is not None

    def add(self, group: str, features, time: float | None) -> None:
        """One measured row: `time` in seconds, or None for a candidate that failed."""
        feats = [float(x) for x in features]
        if self._width is None:
            self._width = len(feats)
        elif len(feats) != self._width:
            raise ValueError(f"cost model: feature row of length {len(feats)}, expected {self._width}")
        ok = time is not None and math.isfinite(time) and time > 0
        self.rows.append((str(group), feats, float(time) if ok else None))

    def fit(self) -> None:
        """(Re)train on every row so far; needs `min_rows` good rows, else it stays untrained."""
        good = [r for r in self.rows if r[2] is not None]
        if len(good) < self.min_rows:
            return
        import xgboost as xgb

        groups: dict = {}
        for g, f, t in self.rows:
            groups.setdefault(g, []).append((f, t))
        xs, ys, sizes = [], [], []
        for rows in groups.values():
            best = min((t for _, t in rows if t is not None), default=None)
            for f, t in rows:
                xs.append(f)
                ys.append(0.0 if t is None or best is None else best / t)
            sizes.append(len(rows))
        dtrain = xgb.DMatrix(np.asarray(xs, dtype=np.float64), label=np.asarray(ys))
        dtrain.set_group(sizes)
        params = {"objective": self.objective, "eta": 0.2, "max_depth": 6, "min_child_weight": 0.5,
                  "subsample": 1.0, "seed": self.seed, "nthread": 1, "verbosity": 0}
        self.booster = xgb.train(params, dtrain, num_boost_round=self.rounds)

    def predict(self, features) -> np.ndarray:
        """Scores for rows of features (higher: expected faster); zeros while untrained."""
        xs = np.asarray([[float(x) for x in f] for f in features], dtype=np.float64)
        if self.booster is None or len(xs) == 0:
            return np.zeros(len(xs))
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(xs))

    def save(self, path) -> None:
        """Write the model to `path` (XGBoost JSON) and its rows to `path + '.rows.json'`."""
        path = os.fspath(path)
        if self.booster is not None:
            self.booster.save_model(path)
        with open(path + ".rows.json", "w") as f:
            json.dump({"seed": self.seed, "objective": self.objective, "rounds": self.rounds,
                       "trained": self.booster is not None, "rows": self.rows}, f)

    @staticmethod
    def load(path) -> CostModel:
        """A model saved by `save` (the booster when it had one, and the rows)."""
        path = os.fspath(path)
        with open(path + ".rows.json") as f:
            d = json.load(f)
        m = CostModel(d["seed"], d["objective"], d["rounds"])
        for g, feats, t in d["rows"]:
            m.add(g, feats, t)
        if d.get("trained"):
            import xgboost as xgb

            m.booster = xgb.Booster()
            m.booster.load_model(path)
        return m
