"""`tessel.tune(...)`: tune the kernels of a DSL program, an IR kernel or a model, into a tuning log.

For each workload (unique unscheduled kernel) the tuner picks a template (`template=` or the first
registered one that applies, model-specific templates before the generic ones), searches its knob
space (`tessel.tune.search`: XGBoost-guided evolution, or random), measures candidates through an
executor (`tessel.tune.measure`: isolated processes, reference-checked) and appends one record per
measurement to the log (`tessel.tune.records`). Configurations the log already holds for this
workload and target are not measured again; they seed the search and its model. Records of the
same template from other workloads (other shapes) warm-start the model.

After the search, the default point and the `confirm_top` fastest candidates are measured again,
`confirm` rounds each, interleaved, and a candidate replaces the default only when it beats it beyond
the spread of those measurements (`tessel.tune.confirm`); the verdict is a record in the log, which
compile(tuning_log=) replays. `confirm=0` keeps the fastest measurement unconfirmed (the old rule).

This module is the tuner's glue to the driver: a candidate is built as `tessel.build` builds
(template, pass pipeline, code generation), so it imports `tessel.compiler` (lazily, inside the
functions): it sits on the driver's floor, as `tessel.cli` does, while the rest of `tessel.tune`
stays below it.

Example:
    >>> import os, tempfile, tessel as ts
    >>> A = ts.placeholder((16, 16), name="A"); B = ts.placeholder((16, 16), name="B")
    >>> k = ts.reduce_axis(16, name="k")
    >>> C = ts.compute((16, 16), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    >>> log = os.path.join(tempfile.mkdtemp(), "tune.jsonl")
    >>> from tessel.tune.measure import Executor, MeasureResult
    >>> class Pretend(Executor):  # measures nothing: a time from the knobs (LocalExecutor measures)
    ...     def measure(self, inputs):
    ...         return [MeasureResult(1e-3 * m.knobs["tile_rows"], (1e-3,)) for m in inputs]
    >>> res = tune([A, B, C], target="cpu", trials=4, log=log, executor=Pretend(), seed=0)
    >>> res.trials, len(TuningLog(log).read().records), res.workloads[0].template   # 4 trials, 1 verdict
    (4, 5, 'cpu.generic')
    >>> res.workloads[0].verdict["kept"], round(res.workloads[0].speedup, 2)  # confirmed against the default
    ('tuned', 1.6)
"""

from __future__ import annotations

import statistics
import time as _time
from dataclasses import dataclass, field

from tessel.errors import TesselError
from tessel.tune.measure import LocalExecutor, MeasureInput, MeasureTask, make_inputs, output_names
from tessel.tune.records import Record, TuningLog, Workload, describe, measured_keys, workload_key
from tessel.tune.reuse import target_info
from tessel.tune.space import TuneSpace, point_key

INTERP_LIMIT = 5e7  # loop iterations above which the interpreter is too slow as a reference


@dataclass
class WorkloadResult:
    """The outcome for one workload: its best record, the default's time and the speed-up."""

    name: str
    key: str
    template: str
    space: str
    trials: int
    best: Record | None
    default_time: float | None
    curve: list = field(default_factory=list)
    verdict: dict | None = None  # the confirmation's verdict (tessel.tune.confirm), None when not confirmed

    @property
    def speedup(self) -> float | None:
        if self.best is None or not self.default_time:
            return None
        return self.default_time / self.best.time


@dataclass
class TuneResult:
    """What `tune` returns: trials measured in all, and one WorkloadResult per workload."""

    trials: int
    workloads: list
    log: str | None
    seconds: float

    @property
    def best(self) -> dict:
        """The best record of each workload by name."""
        return {w.name: w.best for w in self.workloads}

    @property
    def speedup(self) -> float | None:
        """Default time over tuned time, summed over the workloads."""
        ws = [w for w in self.workloads if w.best is not None and w.default_time]
        if not ws:
            return None
        return sum(w.default_time for w in ws) / sum(w.best.time for w in ws)

    def summary(self) -> str:
        lines = [f"tuned {len(self.workloads)} workload(s), {self.trials} trial(s) in {self.seconds:.1f} s"]
        for w in self.workloads:
            best = f"{w.best.time * 1e3:.4f} ms {w.best.knobs}" if w.best else "no good candidate"
            dflt = f"{w.default_time * 1e3:.4f} ms" if w.default_time else "n/a"
            sp = f", speed-up {w.speedup:.2f}x" if w.speedup else ""
            how = f" [{w.verdict['kept']} kept: {w.verdict['reason']}]" if w.verdict else ""
            lines.append(f"  {w.name}: template {w.template}, default {dflt}, best {best}{sp}{how}")
            lines.append(f"    space: {w.space}")
        return "\n".join(lines)


def build_candidate(kernel, target, template, knobs):
    """Build one candidate as `tessel.build` would (runs in a measurement child); the final IR."""
    from tessel.compiler.driver import build
    from tessel.schedules.template import get_template

    tpl = get_template(template)
    return build(kernel, target=target, schedule=lambda ir: tpl.apply(ir, knobs, target)).ir


def tune(kernel_or_model, example_inputs=None, target="cpu", trials: int = 64, time_budget: float | None = None,
         log=None, template: str | None = None, strategy: str = "xgb", batch: int = 8, seed: int = 0,
         executor=None, reference=None, progress: bool = False, early_stopping: int | None = None,
         on_trial=None, confirm: int = 3, confirm_top: int = 2, margin: float = 0.02) -> TuneResult:
    """Tune every workload of `kernel_or_model` for `target`; see the module docstring.

    `kernel_or_model`: DSL tensors (a list, parameters in order), an IR Kernel, or a model that
    `tessel.compile` accepts (with `example_inputs`). `trials`: measurements per workload (split
    evenly for a model). `time_budget`: seconds in all (stops between batches). `log`: the tuning
    log path (None: nothing is written, nothing resumed). `reference`: for a single kernel, a
    function of the input arrays returning the expected output arrays (default: the interpreter;
    for a workload too large for it, the default schedule's output, with a warning). `executor`: an
    `Executor` (default: `LocalExecutor()`). `confirm`, `confirm_top`, `margin`: the confirmation
    after the search (rounds, candidates, least gain; module docstring).
    """
    from tessel.ir.target import parse_target

    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise TesselError(f"tune(trials={trials!r}): expected a positive number of trials")
    if strategy not in ("xgb", "random"):
        raise TesselError(f"tune(strategy={strategy!r}): expected 'xgb' (cost-model guided) or 'random'")
    def _int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not (_int(confirm) and confirm >= 0 and _int(confirm_top) and confirm_top >= 1
            and isinstance(margin, (int, float)) and not isinstance(margin, bool) and 0 <= margin < 1):
        raise TesselError(f"tune(confirm={confirm!r}, confirm_top={confirm_top!r}, margin={margin!r}): expected "
                          f"confirmation rounds >= 0 (0: off), at least 1 candidate and a margin in [0, 1)")
    start = _time.monotonic()
    tgt = str(parse_target(target))
    info = target_info(tgt)
    if tgt.startswith("cuda"):
        from tessel.tune.isolate import preload

        preload("torch")  # the run children time on the GPU through torch
    if strategy == "xgb" and not _has_xgboost():
        import warnings

        warnings.warn("tune: xgboost is not installed; searching at random instead (pip install xgboost-cpu)",
                      stacklevel=2)
        strategy = "random"
    workloads = _workloads(kernel_or_model, example_inputs, tgt)
    executor = executor or LocalExecutor()
    tlog = TuningLog(log) if log is not None else None
    records = tlog.read(warn=True).records if tlog is not None else []
    per = max(1, trials // len(workloads)) if workloads else 0
    results, total = [], 0
    for name, kernel in workloads:
        remaining = None if time_budget is None else time_budget - (_time.monotonic() - start)
        if remaining is not None and remaining <= 0:
            break
        res = _tune_one(name, kernel, tgt, info, per, remaining, tlog, records, template, strategy, batch, seed,
                        executor, reference if len(workloads) == 1 else None, progress, early_stopping, on_trial,
                        (confirm, confirm_top, margin))
        total += res.trials
        results.append(res)
    return TuneResult(total, results, None if log is None else str(log), _time.monotonic() - start)


def _has_xgboost() -> bool:
    import importlib.util

    return importlib.util.find_spec("xgboost") is not None


def _tune_one(name, kernel, tgt, info, trials, budget, tlog, records, template, strategy, batch, seed, executor,
              reference, progress, early_stopping, on_trial, confirming=(0, 1, 0.02)) -> WorkloadResult:
    from tessel.tune.cost_model import CostModel
    from tessel.tune.search import Search

    space = _space_for(kernel, tgt, template)
    key = workload_key(kernel)
    wl = Workload(key, describe(kernel))
    task = MeasureTask(kernel, tgt, build_candidate, _expected(kernel, tgt, seed, reference, space, executor), seed)
    done = measured_keys(records, key, info, space.name)
    known = {}
    for r in records:
        if r.workload.key == key and r.template == space.name and r.target.matches(info):
            known[r.knob_key()] = (r.knobs, r.time if r.ok else None)
    model = CostModel(seed=seed)
    _warm_start(model, records, key, space, info)
    start = _time.monotonic()
    bar = _progress(name, trials) if progress else None

    def measure(points):
        fresh = [p for p in points if point_key(p) not in done]
        results = executor.measure([MeasureInput(task, space.name, p) for p in fresh])
        by = {point_key(p): r for p, r in zip(fresh, results)}
        out, recs = [], []
        for p in points:
            r = by.get(point_key(p))
            if r is None:
                out.append((None, "already measured"))
                continue
            out.append((r.time, r.error))
            recs.append(Record.new(wl, info, space.name, p, time=r.time, times=r.times, error=r.error,
                                   features=search.featurize(p), build_s=round(r.build_seconds, 3)))
        if tlog is not None and recs:
            tlog.append(*recs)
        records.extend(recs)
        return out

    def trial_cb(trial, history):
        if bar is not None:
            bar.update(1)
            if history.best_time is not None:
                bar.set_postfix_str(f"best {history.best_time * 1e3:.4f} ms")
        if on_trial is not None:
            on_trial(name, trial, history)

    search = Search(space, measure, model=model, batch=batch, seed=seed, strategy=strategy,
                    early_stopping=early_stopping, known=known, group=key)
    try:
        history = search.run(trials, trial_cb,
                             stop=None if budget is None else lambda: _time.monotonic() - start > budget)
    finally:
        if bar is not None:
            bar.close()
    default_key = point_key(space.default)
    default_time = search.known.get(default_key)
    best, verdict = _best(records, key, info, space.name), None
    rounds, top, margin = confirming
    if rounds and best is not None and history.trials:
        rec = _confirm(records, key, info, space, task, executor, wl, rounds, top, margin, default_time)
        if tlog is not None:
            tlog.append(rec)
        records.append(rec)
        best, verdict = rec, rec.verdict
        if verdict.get("default"):
            default_time = statistics.median(verdict["default"])
    return WorkloadResult(name, key, space.name, space.describe(), len(history.trials), best, default_time,
                          history.curve(), verdict)


def _measurements(records, key, info, template) -> list:
    """The workload's good plain measurements with this template on this target (verdicts aside)."""
    return [r for r in records if r.workload.key == key and r.template == template and r.ok
            and r.target.matches(info) and r.verdict is None]


def _best(records, key, info, template):
    """The fastest plain measurement of the workload with this template."""
    good = _measurements(records, key, info, template)
    return min(good, key=lambda r: r.time) if good else None


def _confirm(records, key, info, space, task, executor, wl, rounds, top, margin, default_time):
    """The verdict record of the workload: the default and the `top` fastest candidates measured again
    (`tessel.tune.confirm`). Candidates are points the search measured faster than the default (all
    of the fastest when the default has no time); none: the default is kept unmeasured."""
    from tessel.tune.confirm import Verdict, confirm, verdict_record

    ranked = sorted(_measurements(records, key, info, space.name), key=lambda r: r.time)
    dkey, cands, seen = point_key(space.default), [], set()
    for r in ranked:
        p = {**space.default, **r.knobs}  # a record of an older space: its missing knobs at their defaults
        k = point_key(p)
        if k == dkey or (default_time is not None and r.time >= default_time):
            break  # the default, or slower than it: nothing faster left to confirm
        if k not in seen:
            seen.add(k)
            cands.append(p)
        if len(cands) == top:
            break
    if not cands:
        once = (default_time,) if default_time else ()
        v = Verdict("default", dict(space.default), once, once, (), margin,
                    "no candidate measured faster than the default")
        return verdict_record(wl, info, space.name, v)

    def measure(points):
        return [(r.time, r.error) for r in executor.measure([MeasureInput(task, space.name, p) for p in points])]

    return verdict_record(wl, info, space.name, confirm(measure, space.default, cands, rounds, margin))


def _warm_start(model, records, key, space, info) -> None:
    """Rows of other workloads of the same template and target (their features are in the log)."""
    n = len(space.encode(space.default)) + _n_ir()
    for r in records:
        feats = r.extra.get("features")
        if (r.workload.key != key and r.template == space.name and r.target.matches(info)
                and isinstance(feats, list) and len(feats) == n):
            model.add(r.workload.key, feats, r.time if r.ok else None)
    model.fit()


def _n_ir() -> int:
    from tessel.tune.features import FEATURE_NAMES

    return len(FEATURE_NAMES)


def _space_for(kernel, target, template) -> TuneSpace:
    from tessel.schedules.template import applicable, get_template

    if template is not None:
        tpl = get_template(template)
        why = tpl.applies(kernel, target)
        if why:
            raise TesselError(f"tune: template '{template}' does not apply to {describe(kernel)}: {why}")
        return TuneSpace(tpl, kernel, target)
    found = applicable(kernel, target)
    if not found:
        raise TesselError(f"tune: no registered template applies to {describe(kernel)} on {target}")
    first = _default_template(kernel, target)
    # the template compile would use by default first (on sm_90a gemm.wgmma; on the CPU e.g. cpu.conv_nchw
    # for a pointwise convolution), then specific ones (gemm)
    found.sort(key=lambda t: (t.name != first, "generic" in t.name, t.name))
    return TuneSpace(found[0], kernel, target)


def _default_template(kernel, target) -> str | None:
    """The name of the template the default schedule applies to `kernel` (None when no GPU template
    takes it)."""
    if not str(target).startswith("cuda"):
        from tessel.schedules.generic import default_cpu_template

        return default_cpu_template(kernel).name
    from tessel.errors import ScheduleError
    from tessel.schedules.generic_gpu import default_gpu_template

    try:
        return default_gpu_template(kernel, target).name
    except ScheduleError:
        return None


def _expected(kernel, target, seed, reference, space, executor) -> tuple:
    """The reference outputs on the inputs of `seed`."""
    import numpy as np

    arrays = make_inputs(kernel, seed)
    names = [p.name for p in kernel.params]
    outs = output_names(kernel)
    if reference is not None:
        got = reference(*[a for a, n in zip(arrays, names) if n not in outs])
        got = got if isinstance(got, (list, tuple)) else [got]
        return tuple(np.asarray(g) for g in got)
    if _iterations(kernel) <= INTERP_LIMIT:
        from tessel.ir.interp import run

        run(kernel, *arrays)
        return tuple(arrays[names.index(n)] for n in outs)
    import warnings

    from tessel.tune.measure import reference_outputs

    warnings.warn(f"tune: {describe(kernel)} is too large for the interpreter ({_iterations(kernel):.3g} loop "
                  f"iterations): candidates are checked against the default schedule's output instead (pass "
                  f"reference=fn(*inputs) -> outputs, e.g. numpy, for an independent check)", stacklevel=3)
    try:
        return reference_outputs(build_candidate, kernel, target, space.name, space.default, seed)
    except RuntimeError as e:
        raise TesselError(f"tune: {describe(kernel)}: no reference: {e}; pass reference=fn(*inputs)") from None


def _iterations(kernel) -> float:
    from tessel.ir.nodes import Const, For

    total = 0.0

    def visit(s, mult):
        nonlocal total
        if isinstance(s, For):
            n = s.extent.value if isinstance(s.extent, Const) else 1
            total += mult * n
            visit(s.body, mult * n)
        else:
            for c in getattr(s, "stmts", ()) or ():
                visit(c, mult)
            for attr in ("body", "then", "else_"):
                c = getattr(s, attr, None)
                if c is not None and not isinstance(c, (list, tuple)):
                    visit(c, mult)

    visit(kernel.body, 1.0)
    return total


def _progress(name, trials):
    from tqdm import tqdm

    return tqdm(total=trials, desc=f"tune {name}", unit="trial", leave=True)


def _workloads(obj, example_inputs, target) -> list:
    """(name, unscheduled IR kernel) for each distinct workload."""
    from tessel.ir.dsl import Tensor, lower
    from tessel.ir.nodes import Kernel

    if isinstance(obj, Kernel):
        return [(obj.name, obj)]
    if isinstance(obj, Tensor):
        obj = [obj]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, Tensor) for t in obj):
        k = lower(list(obj))
        return [(k.name, k)]
    return _model_workloads(obj, example_inputs, target)


def _model_workloads(model, example_inputs, target) -> list:
    """The group kernels `tessel.compile` builds for a model, deduplicated by workload key.

    It follows `tessel.compiler.model._compile_program` (graph passes, fusion, lowering of each
    group with inlining), so that the keys match what compile(tuning_log=) looks up."""
    from tessel.compiler.lowering import lower_group
    from tessel.compiler.model import copy_graph
    from tessel.passes.graph import optimize
    from tessel.passes.graph.fusion import fuse

    graph = _as_graph(model, example_inputs)
    work = copy_graph(graph)
    optimize(work, None)
    work.prune()
    work.reorder_topologically()
    groups = fuse(work, max_group_ops=32, max_prologue_ops=8)
    if target.startswith("cuda"):
        irs = _gpu_model_kernels(work, groups, target)
    else:
        irs = [lower_group(work, g, inline=False).inline().ir for g in groups]
    out, seen = [], set()
    for ir in irs:
        key = workload_key(ir)
        if key not in seen:
            seen.add(key)
            out.append((ir.name, ir))
    return out


def _gpu_model_kernels(work, groups, target) -> list:
    """The unscheduled kernels that `tessel.compile(target="cuda")` schedules with a template (as
    tessel.compiler.model_cuda splits the groups); the keys compile(tuning_log=) looks up. Kernels
    the GPU path builds already scheduled (the implicit-GEMM convolution) have no knobs to tune."""
    from tessel.compiler.model_cuda import gpu_pieces

    out = []
    for g in groups:
        out += [p.ir for p in gpu_pieces(work, g, target, {}, []) if p.how == "default" and p.ir != p.scheduled]
    return out


def _as_graph(model, example_inputs):
    from tessel.frontend.graph import Graph

    if isinstance(model, Graph):
        return model
    graph = getattr(model, "graph", None)
    if isinstance(graph, Graph):
        return graph
    from tessel.compiler import compile_api

    if compile_api._is_onnx_model(model) or compile_api._is_onnx_path(model):
        from tessel.frontend.onnx import import_onnx, load_model

        proto, _ = load_model(model)
        init = {t.name for t in proto.graph.initializer}
        names = [i.name for i in proto.graph.input if i.name not in init]
        shapes = None
        if example_inputs is not None:
            ex = example_inputs if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
            shapes = {n: tuple(x.shape) for n, x in zip(names, ex)}
        return import_onnx(proto, shapes)
    if compile_api._is_torch_module(model):
        from tessel.frontend.torch import import_torch

        if example_inputs is None:
            raise TesselError("tune: a torch module needs example_inputs")
        ex = example_inputs if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
        return import_torch(model, tuple(ex))
    raise TesselError(f"tune: cannot tune a {type(model).__name__}; pass DSL tensors, an IR Kernel, a Graph, a "
                      f"GraphBuilder, an ONNX model or a torch module")


__all__ = ["TuneResult", "WorkloadResult", "build_candidate", "tune"]
