"""Tuning into a log and reusing it: build(tuning_log=) and compile(tuning_log=) apply the best
record with no measurement; records of another target are not applied; workloads without a record
are listed in one warning; a resumed run's search measures no configuration twice (the confirmation
against the default re-measures on purpose: tests/tune/test_confirm.py)."""

import json
import warnings

import numpy as np
import pytest

import tessel as ts
from tessel.schedules.template import get_template
from tessel.tune import isolate, measure
from tessel.tune.records import Record, TargetInfo, TuningLog, Workload, workload_key
from tests.tune.helpers import FakeExecutor, matmul


@pytest.fixture
def no_measuring(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was measured")

    monkeypatch.setattr(measure.LocalExecutor, "measure", refuse)
    monkeypatch.setattr(isolate, "run_isolated", refuse)
    monkeypatch.setattr(measure, "run_isolated", refuse)


def _check(kern, n):
    rng = np.random.default_rng()
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    c = rng.standard_normal((n, n), dtype=np.float32)
    kern(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)


def test_build_applies_the_best_record_without_measuring(tmp_path, monkeypatch):
    log = tmp_path / "t.jsonl"
    fake = FakeExecutor()
    res = ts.tune(matmul(32), target="cpu", trials=12, log=log, executor=fake, batch=4)
    measured = fake.count  # 12 trials, then the default and the candidates again (3 rounds)
    assert res.trials == 12 and measured == 12 + 3 * (1 + len(res.workloads[0].verdict["candidates"]))
    best = res.workloads[0].best
    assert best.knobs["tile_rows"] == min(fake.seen, key=fake.cost)["tile_rows"]
    with monkeypatch.context() as m:
        m.setattr(measure.LocalExecutor, "measure", lambda *a: pytest.fail("measured"))
        m.setattr(measure, "run_isolated", lambda *a, **k: pytest.fail("measured"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the log has this workload: no warning
            kern = ts.build(matmul(32), target="cpu", tuning_log=log)
    assert fake.count == measured  # nothing more measured
    tpl = get_template(best.template)
    want = ts.build(matmul(32), target="cpu", schedule=lambda ir: tpl.apply(ir, best.knobs, "cpu")).ir
    assert kern.ir == want
    assert kern.ir != ts.build(matmul(32), target="cpu").ir  # the tuned knobs are not the defaults here
    _check(kern, 32)


def test_other_target_record_is_not_applied(tmp_path, no_measuring):
    log = tmp_path / "t.jsonl"
    key = workload_key(ts.lower(matmul(32)))
    there = TargetInfo("cpu", "some-other-cpu", "elsewhere")
    TuningLog(log).append(Record.new(Workload(key, "C"), there, "cpu.generic", {"tile_rows": 2, "tile_cols": 4},
                                     time=1e-9))
    with pytest.warns(UserWarning, match="only for other targets.*some-other-cpu"):
        kern = ts.build(matmul(32), target="cpu", tuning_log=log)
    assert kern.ir == ts.build(matmul(32), target="cpu").ir
    _check(kern, 32)


def test_missing_workload_falls_back_with_one_warning(tmp_path, no_measuring):
    log = tmp_path / "t.jsonl"
    log.write_text("")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        kern = ts.build(matmul(16), target="cpu", tuning_log=log)
    msgs = [str(x.message) for x in w if "tuning log" in str(x.message)]
    assert len(msgs) == 1 and "1 workload(s) have no record" in msgs[0] and "C(A: float32[16, 16]" in msgs[0]
    _check(kern, 16)


def test_resume_measures_no_configuration_twice(tmp_path):
    log = tmp_path / "t.jsonl"
    first, second = FakeExecutor(), FakeExecutor()
    ts.tune(matmul(32), target="cpu", trials=10, log=log, executor=first, batch=5, seed=0, confirm=0)
    ts.tune(matmul(32), target="cpu", trials=10, log=log, executor=second, batch=5, seed=0, confirm=0)
    a = {json.dumps(k, sort_keys=True) for k in first.seen}
    b = {json.dumps(k, sort_keys=True) for k in second.seen}
    assert len(a) == 10 and len(b) == 10 and not a & b
    recs = TuningLog(log).read().records
    assert len({r.knob_key() for r in recs}) == len(recs) == 20


def test_compile_applies_records_to_model_kernels(tmp_path, monkeypatch):
    from tessel.frontend.builder import GraphBuilder

    def model():
        g = GraphBuilder("mlp")
        x = g.input("x", (32, 32))
        w = g.input("w", (32, 32))
        g.output(g.relu(g.matmul(x, w)))
        return g

    log = tmp_path / "t.jsonl"
    fake = FakeExecutor()
    res = ts.tune(model(), target="cpu", trials=8, log=log, executor=fake, batch=4)
    assert res.trials == 8 and all(w.best is not None for w in res.workloads)
    measured = fake.count
    monkeypatch.setattr(measure.LocalExecutor, "measure", lambda *a: pytest.fail("measured"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cm = ts.compile(model(), target="cpu", tuning_log=log)
    rng = np.random.default_rng()
    x, w = rng.standard_normal((32, 32), dtype=np.float32), rng.standard_normal((32, 32), dtype=np.float32)
    np.testing.assert_allclose(cm(x, w), np.maximum(x @ w, 0), rtol=1e-4, atol=1e-4)
    assert fake.count == measured


def test_end_to_end_real_measurement(tmp_path):
    log = tmp_path / "t.jsonl"
    res = ts.tune(matmul(32), target="cpu", trials=3, log=log, batch=3, seed=1)
    recs = TuningLog(log).read().records
    assert all(r.ok for r in recs), [r.error for r in recs]
    assert [r.verdict is None for r in recs] == [True] * 3 + [False]  # 3 trials, then the verdict
    assert res.workloads[0].default_time is not None and res.workloads[0].best is not None
    _check(ts.build(matmul(32), target="cpu", tuning_log=log), 32)


def test_two_tuners_into_one_log_lose_no_record(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "t.jsonl"
    code = ("import sys, tessel as ts; from tests.tune.helpers import FakeExecutor, matmul;"
            "ts.tune(matmul(int(sys.argv[2])), target='cpu', trials=6, log=sys.argv[1], executor=FakeExecutor(),"
            " batch=3)")
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(log), str(n)], cwd=root) for n in (16, 24)]
    assert [p.wait(240) for p in procs] == [0, 0]
    got = TuningLog(log).read()
    assert got.problems == [] and len(got.records) == 12 + 2  # 6 trials and a verdict each
    assert len({r.workload.key for r in got.records}) == 2


def test_bad_requests_raise_tessel_errors(tmp_path):
    from tessel.errors import TesselError

    with pytest.raises(TesselError, match="trials=0"):
        ts.tune(matmul(16), trials=0)
    with pytest.raises(TesselError, match="strategy='annealing'"):
        ts.tune(matmul(16), trials=2, strategy="annealing")
    with pytest.raises(TesselError, match="unknown template 'nope'"):
        ts.tune(matmul(16), trials=2, template="nope", executor=FakeExecutor())
    with pytest.raises(TesselError, match="cannot tune a int"):
        ts.tune(42, trials=2)
    with pytest.raises(TesselError, match="not both"):
        ts.build(matmul(16), tuning_log=tmp_path / "t.jsonl", schedule=lambda ir: ir)


def test_time_budget_stops_between_batches():
    from tessel.tune.search import Search
    from tessel.tune.space import TuneSpace

    space = TuneSpace(get_template("cpu.generic"), ts.lower(matmul(16)), "cpu")
    asked = []
    search = Search(space, lambda ps: [(1e-3, None) for _ in ps], batch=4)
    h = search.run(64, stop=lambda: asked.append(1) or len(asked) > 3)  # "over budget" before the 4th batch
    assert len(h.trials) == 12
    ex = FakeExecutor()
    res = ts.tune(matmul(16), target="cpu", trials=64, time_budget=1e-9, executor=ex)
    assert ex.count == 0 and res.trials == 0
