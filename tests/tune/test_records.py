"""The tuning log: round trip, bad lines reported with their line number and kept, concurrent
writers lose nothing, a writer killed mid-line leaves a loadable log, stable workload keys."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from tessel.tune.records import (
    FORMAT_VERSION, Record, TargetInfo, TuningLog, Workload, best_records, merge, prune, workload_key,
)

CPU = TargetInfo("cpu", "x86-64-v3", "test cpu")


def rec(key="w1", t=1e-3, **knobs):
    return Record.new(Workload(key, f"desc {key}"), CPU, "cpu.generic", knobs or {"tile_rows": 4}, time=t,
                      times=(t, t))


def test_round_trip(tmp_path):
    log = TuningLog(tmp_path / "t.jsonl")
    r1, r2 = rec(t=2e-3, tile_rows=2), Record.new(Workload("w2"), CPU, "gemm", {"bm": 64}, error="build: boom")
    log.append(r1, r2)
    got = log.read()
    assert got.problems == []
    assert got.records == [r1, r2]
    assert got.records[1].error == "build: boom" and not got.records[1].ok
    d = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    assert d["version"] == FORMAT_VERSION and d["workload"]["key"] == "w1" and d["target"]["arch"] == "x86-64-v3"
    assert d["tessel"] and d["time"] > 0 and d["result"]["time"] == 2e-3


def test_bad_lines_reported_with_line_number_skipped_and_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    good = rec().to_line()
    newer = json.loads(good)
    newer["version"] = FORMAT_VERSION + 1
    lines = [good, "this is not json\n", json.dumps({"version": 1, "workload": {}}) + "\n",
             json.dumps(newer) + "\n", good, good[: len(good) // 2]]  # the last one truncated (no newline)
    text = "".join(lines)
    path.write_text(text)
    got = TuningLog(path).read()
    assert len(got.records) == 2
    by_line = {p.line: p.reason for p in got.problems}
    assert set(by_line) == {2, 3, 4, 6}
    assert "not JSON" in by_line[2] and "malformed" in by_line[3]
    assert "newer tessel" in by_line[4] and "truncated" in by_line[6]
    with pytest.warns(UserWarning, match=r"t\.jsonl:6: truncated"):
        TuningLog(path).read(warn=True)
    assert path.read_text() == text  # reading never rewrites
    # an append after the truncated line starts a fresh line: the new record is whole
    TuningLog(path).append(rec(key="w9"))
    got = TuningLog(path).read()
    assert [r.workload.key for r in got.records][-1] == "w9"
    assert path.read_text().startswith(text)


def _writer(path, who, n):
    log = TuningLog(path)
    for i in range(n):
        log.append(Record.new(Workload(f"w{who}"), CPU, "t", {"i": i, "pad": "x" * 2000}, time=1e-3))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "t.jsonl")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = TuningLog(path).read()
    assert got.problems == []
    assert sorted((r.workload.key, r.knobs["i"]) for r in got.records) == sorted(
        (f"w{w}", i) for w in range(4) for i in range(40))


def test_writer_killed_mid_write_leaves_a_loadable_log(tmp_path):
    path = str(tmp_path / "t.jsonl")
    code = ("import sys; from tessel.tune.records import *\n"
            "log = TuningLog(sys.argv[1]); t = TargetInfo('cpu', 'x')\n"
            "while True: log.append(Record.new(Workload('w'), t, 't', {'pad': 'y' * 200000}, time=1.0))\n")
    p = subprocess.Popen([sys.executable, "-c", code, path])
    deadline = time.time() + 60
    while time.time() < deadline and (not os.path.exists(path) or os.path.getsize(path) < 3_000_000):
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    got = TuningLog(path).read()
    assert len(got.records) >= 10
    assert all(pr.line == max(pr.line for pr in got.problems) for pr in got.problems)  # at most the last line
    assert len(got.problems) <= 1


def test_other_target_records_are_not_best_here(tmp_path):
    here, there = CPU, TargetInfo("cpu", "znver4", "other cpu")
    fast_elsewhere = Record.new(Workload("w"), there, "t", {"a": 1}, time=1e-6)
    slow_here = Record.new(Workload("w"), here, "t", {"a": 2}, time=1e-3)
    assert best_records([fast_elsewhere, slow_here], here)["w"].knobs == {"a": 2}
    assert best_records([fast_elsewhere], here) == {}


def test_merge_and_prune(tmp_path):
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    TuningLog(a).append(rec(t=3e-3, tile_rows=1), rec(t=1e-3, tile_rows=2))
    TuningLog(b).append(rec(t=2e-3, tile_rows=3), Record.new(Workload("w1"), CPU, "cpu.generic", {"tile_rows": 5},
                                                            error="run: crashed"))
    with open(b, "a") as f:
        f.write("garbage\n")
    added, problems = merge([a, b], out)
    assert added == 4 and [p.line for p in problems] == [3]
    assert merge([a, b], out)[0] == 0  # nothing twice
    kept, removed = prune(out, keep=1)
    assert (kept, removed) == (1, 3)
    assert [r.knobs["tile_rows"] for r in TuningLog(out).read().records] == [2]
    prune(b, keep=1)
    assert "garbage" in b.read_text()  # bad lines survive a prune


def test_workload_key_is_stable_across_processes():
    from tests.tune.helpers import matmul
    import tessel as ts

    key = workload_key(ts.lower(matmul(16)))
    code = ("import tessel as ts; from tests.tune.helpers import matmul; from tessel.tune.records import workload_key;"
            "print(workload_key(ts.lower(matmul(16))))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout.strip()
        assert out == key
    assert len(key) == 64 and key != workload_key(ts.lower(matmul(8)))
