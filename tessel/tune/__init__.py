"""The autotuner: knob spaces over templates, an XGBoost cost model, isolated and verified
measurement, and tuning logs that `tessel.build` and `tessel.compile` reuse.

    space.py       the search space of one workload (a template's knobs, pruned before measuring)
    features.py    static features of a scheduled kernel's IR for the cost model
    cost_model.py  XGBoost ranker trained online on the measured candidates
    search.py      evolutionary search over the model, with exploration; random search
    isolate.py     child processes with time and memory limits
    measure.py     the executor interface and the local process pool; reference check; timers
    confirm.py     the default and the fastest candidates measured again: a point is kept only when it
                   beats the default beyond the spread (the verdict is a log record)
    records.py     the tuning log (append-only JSON lines, locked)
    reuse.py       the best record of each workload as its schedule (for build/compile)
    api.py         `tune(...)`, the glue to the driver
    plot.py        the tuning-curve PNG

`tessel.tune(...)` calls `tessel.tune.api.tune` (the package itself is callable, so `ts.tune`
works whether or not a submodule was imported first). Nothing heavy is imported here.
"""

import sys
import types


class _TuneModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from tessel.tune.api import tune

        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _TuneModule
_self = sys.modules[__name__]  # what `tessel.tune` resolves to through tessel's lazy names
