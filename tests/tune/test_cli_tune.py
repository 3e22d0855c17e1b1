"""`tessel log show|best|merge|prune` and `tessel tune` from the command line."""

import importlib.util
import json

from tessel.cli import main
from tessel.tune.records import Record, TargetInfo, TuningLog, Workload

T = TargetInfo("cpu", "x", "test")


def test_log_commands(tmp_path, capsys):
    log, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    TuningLog(log).append(Record.new(Workload("k1", "gemm A"), T, "t", {"n": 1}, time=2e-3),
                          Record.new(Workload("k1", "gemm A"), T, "t", {"n": 2}, time=1e-3))
    with open(log, "a") as f:
        f.write('{"truncated": \n')
    assert main(["log", "show", str(log)]) == 0
    out = capsys.readouterr().out
    assert "2 record(s), 1 line(s) skipped" in out and "a.jsonl:3" in out
    assert main(["log", "best", str(log)]) == 0
    out = capsys.readouterr().out
    assert "{'n': 2}" in out and "{'n': 1}" not in out
    assert main(["log", "merge", str(log), "--into", str(other)]) == 0
    assert len(TuningLog(other).read().records) == 2
    assert main(["log", "prune", str(other), "--keep", "1"]) == 0
    assert [r.knobs for r in TuningLog(other).read().records] == [{"n": 2}]


def test_tune_command(tmp_path, capsys):
    log = tmp_path / "t.jsonl"
    assert main(["tune", "gemm:32x32x32", "--trials", "2", "--batch", "2", "--log", str(log), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "tuned 1 workload(s), 2 trial(s)" in out
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["result"]["error"] is None for x in lines)
    assert "verdict" in json.loads(lines[-1])["extra"]  # 2 trials, then the confirmation's verdict
    # matplotlib is the optional `plot` extra (CI does not install it): with it the curve is a PNG,
    # without it the command says so and the log is written all the same.
    if importlib.util.find_spec("matplotlib") is not None:
        assert "tuning curve:" in out and (tmp_path / "t.png").exists()
    else:
        assert "needs matplotlib" in out and not (tmp_path / "t.png").exists()
