"""Confirmation against the default: the tuner never keeps a point that, measured again beside the
default, is not faster beyond the spread; the verdict is in the log and compile/build replay it
without measuring. Timings come from fake executors with controlled times (nothing is built)."""

import json
import statistics

import pytest

import tessel as ts
from tessel.errors import TesselError
from tessel.tune.confirm import beats, confirm
from tessel.tune.measure import Executor, MeasureResult
from tessel.tune.records import Record, TuningLog, Workload, prune, workload_key
from tessel.tune.reuse import LogSchedules, target_info
from tessel.tune.space import TuneSpace, point_key
from tests.tune.helpers import matmul

N = 16  # the workload: a 16x16 matmul


def _default():
    from tessel.schedules.template import get_template

    return TuneSpace(get_template("cpu.generic"), ts.lower(matmul(N)), "cpu").default


class Scripted(Executor):
    """Times by point: the default always 1 ms (with a 1% jitter); the first other point measured
    (`special`) follows `special_times` (its n-th measurement takes the n-th, the last repeating);
    every other point takes `others`. Every measured point is kept in `seen`."""

    def __init__(self, special_times, others=1.2e-3, fail_default=False):
        self.special_times, self.others, self.fail_default = list(special_times), others, fail_default
        self.default = point_key(_default())
        self.special = None
        self.calls: dict = {}
        self.seen: list = []

    def time_of(self, knobs):
        key = point_key(knobs)
        n = self.calls.get(key, 0)
        self.calls[key] = n + 1
        if key == self.default:
            return None if self.fail_default else 1e-3 * (1.0, 1.01, 0.99)[n % 3]
        if self.special is None:
            self.special = key
        if key == self.special:
            return self.special_times[min(n, len(self.special_times) - 1)]
        return self.others

    def measure(self, inputs):
        out = []
        for m in inputs:
            self.seen.append(dict(m.knobs))
            t = self.time_of(m.knobs)
            out.append(MeasureResult(error="run: crashed") if t is None else MeasureResult(t, (t,)))
        return out


def _tune(log, executor, **kw):
    return ts.tune(matmul(N), target="cpu", trials=kw.pop("trials", 8), log=log, executor=executor, batch=4,
                   seed=0, **kw)


def test_a_point_fast_only_by_luck_is_not_kept(tmp_path):
    # the lucky point: 0.3 ms in the search (three times faster than the default), 1.5 ms every time after
    lucky = [0.3e-3, 1.5e-3]
    old = _tune(tmp_path / "old.jsonl", Scripted(lucky), confirm=0)
    assert point_key(old.workloads[0].best.knobs) != point_key(_default())  # the old rule keeps the lucky one

    log = tmp_path / "t.jsonl"
    ex = Scripted(lucky)
    res = _tune(log, ex)
    w = res.workloads[0]
    assert w.verdict["kept"] == "default" and point_key(w.best.knobs) == point_key(_default())
    assert w.speedup == pytest.approx(1.0)
    # the log replays the verdict: no measurement, the default schedule itself
    ex.measure = lambda inputs: pytest.fail("measured")
    look = LogSchedules(log, "cpu")
    assert look.schedule_for(ts.lower(matmul(N))) is None and len(look.defaulted) == 1 and not look.missing
    assert ts.build(matmul(N), target="cpu", tuning_log=log).ir == ts.build(matmul(N), target="cpu").ir


def test_a_point_faster_beyond_the_spread_is_kept(tmp_path):
    log = tmp_path / "t.jsonl"
    ex = Scripted([0.5e-3, 0.52e-3, 0.49e-3, 0.51e-3])
    res = _tune(log, ex)
    w = res.workloads[0]
    assert w.verdict["kept"] == "tuned" and point_key(w.best.knobs) == ex.special
    assert w.speedup == pytest.approx(1.0 / 0.51, rel=0.05)
    rec = LogSchedules(log, "cpu").record_for(ts.lower(matmul(N)))
    assert point_key(rec.knobs) == ex.special and rec.verdict["kept"] == "tuned"
    # the default and the candidates were measured again, interleaved, three rounds each
    again = ex.seen[len(ex.seen) - len(w.verdict["default"]) * (1 + len(w.verdict["candidates"])):]
    assert [point_key(p) for p in again[::1 + len(w.verdict["candidates"])]] == [ex.default] * 3


def test_a_gain_inside_the_margin_keeps_the_default(tmp_path):
    # 2.5% faster than the default's median, below its fastest confirmation, but not by the 3% margin asked
    res = _tune(tmp_path / "t.jsonl", Scripted([0.975e-3, 0.976e-3, 0.974e-3]), margin=0.03)
    assert res.workloads[0].verdict["kept"] == "default"
    res = _tune(tmp_path / "u.jsonl", Scripted([0.975e-3, 0.976e-3, 0.974e-3]), margin=0.02)
    assert res.workloads[0].verdict["kept"] == "tuned"


def test_a_candidate_that_overlaps_the_default_is_not_kept():
    # median 10% faster, but one confirmation inside the default's range: noise can explain it
    times = {"d": iter([1.0, 1.02, 0.98]), "c": iter([0.85, 0.99, 0.9])}
    v = confirm(lambda ps: [(next(times[p["k"]]), None) for p in ps], {"k": "d"}, [{"k": "c"}], rounds=3)
    assert v.kept == "default" and v.point == {"k": "d"}
    assert not beats([0.85, 0.99, 0.9], [1.0, 1.02, 0.98]) and beats([0.85, 0.95, 0.9], [1.0, 1.02, 0.98])


def test_a_default_that_does_not_run_keeps_the_fastest_candidate(tmp_path):
    res = _tune(tmp_path / "t.jsonl", Scripted([0.9e-3], fail_default=True))
    w = res.workloads[0]
    assert w.verdict["kept"] == "tuned" and "default did not run" in w.verdict["reason"]


def test_a_candidate_that_fails_when_confirmed_is_not_kept():
    seq = {"d": iter([1.0, 1.0, 1.0]), "c": iter([(0.5, None), (None, "run: crashed"), (0.5, None)])}

    def measure(ps):
        return [(next(seq["d"]), None) if p["k"] == "d" else next(seq["c"]) for p in ps]

    assert confirm(measure, {"k": "d"}, [{"k": "c"}], rounds=3).kept == "default"


def test_the_latest_verdict_wins_over_faster_records_and_survives_prune(tmp_path):
    log = tmp_path / "t.jsonl"
    ir = ts.lower(matmul(N))
    info = target_info("cpu")
    wl = Workload(workload_key(ir), "C")
    d = _default()
    fast = {**d, "tile_rows": 2}
    TuningLog(log).append(Record.new(wl, info, "cpu.generic", fast, time=1e-9),
                          Record.new(wl, info, "cpu.generic", d, time=1e-3, verdict={"kept": "default"}))
    assert LogSchedules(log, "cpu").schedule_for(ir) is None  # the fast record was not confirmed
    prune(log, keep=1)
    recs = TuningLog(log).read().records
    assert len(recs) == 2 and any(r.verdict for r in recs)
    assert LogSchedules(log, "cpu").schedule_for(ir) is None
    # a later verdict that kept the tuned point replaces it
    TuningLog(log).append(Record.new(wl, info, "cpu.generic", fast, time=0.5e-3, verdict={"kept": "tuned"}))
    assert LogSchedules(log, "cpu").record_for(ir).knobs == fast
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["extra"]["verdict"]["kept"] == "tuned"


def test_verdict_times_are_in_the_log(tmp_path):
    log = tmp_path / "t.jsonl"
    _tune(log, Scripted([0.3e-3, 1.5e-3]))
    (v,) = [r for r in TuningLog(log).read().records if r.verdict]
    assert len(v.verdict["default"]) == 3 and all(len(c["times"]) == 3 for c in v.verdict["candidates"])
    assert v.time == pytest.approx(statistics.median(v.verdict["default"]))
    assert "spread" in v.verdict["reason"] and v.verdict["rule"]


def test_bad_confirmation_arguments_raise(tmp_path):
    for kw in ({"confirm": -1}, {"confirm_top": 0}, {"margin": 1.5}, {"confirm": 1.5}, {"margin": "2%"},
               {"confirm_top": 1.5}):
        with pytest.raises(TesselError, match="confirm"):
            _tune(tmp_path / "t.jsonl", Scripted([1e-3]), **kw)
