"""The planted-bug evaluation's corpus replay (bench/fuzz_judge.py) survives cases that kill their
process: such a case is recorded as died (with its signal), and the cases after it still run, in a
new fork. Cases here are stand-ins (run_any replaced), so the test is about the harness only."""

from __future__ import annotations

import faulthandler
import os
import signal
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def judge(monkeypatch):
    # importing fuzz_judge turns the kernel cache off for the process: give the old value back after
    monkeypatch.setenv("TESSEL_CACHE_DIR", os.environ.get("TESSEL_CACHE_DIR", ""))
    if "TESSEL_CACHE_DIR" not in os.environ:
        monkeypatch.delenv("TESSEL_CACHE_DIR")
    monkeypatch.syspath_prepend(str(BENCH))
    import fuzz_judge

    return fuzz_judge


class _Outcome:
    def __init__(self, signature: str):
        self.status, self.signature, self.phases = "pass", signature, ()


def test_case_lines_records_a_dying_case_and_goes_on(judge, monkeypatch):
    from tessel.fuzz import worker

    def run_any(text, probe):  # inherited by the forks
        if text == "segfault":
            faulthandler.disable()  # pytest's would print a traceback on the way down
            os.kill(os.getpid(), signal.SIGSEGV)
        if text == "exit":
            os._exit(3)
        if text == "raise":
            raise RuntimeError("a harness error")
        return _Outcome(f"ran:{text}")

    monkeypatch.setattr(worker, "load_case", lambda text: text)
    monkeypatch.setattr(worker, "run_any", run_any)
    cases = [("a", "one"), ("b", "segfault"), ("c", "two"), ("d", "exit"), ("e", "raise"), ("f", "three")]
    out = judge.case_lines(cases, modules=[])
    assert list(out) == ["a", "b", "c", "d", "e", "f"]
    assert out["b"] == {"status": "died", "signature": f"died:{int(signal.SIGSEGV)}", "lines": {}}
    assert out["d"] == {"status": "died", "signature": "died:3", "lines": {}}
    assert out["e"]["status"] == "error" and "a harness error" in out["e"]["signature"]
    for label, text in (("a", "one"), ("c", "two"), ("f", "three")):
        assert out[label]["status"] == "pass" and out[label]["signature"] == f"ran:{text}"


def test_forked_reports_a_timeout_and_a_death(judge):
    import time

    assert judge.forked(lambda: 6 * 7, timeout=30) == 42
    assert judge.forked(lambda: time.sleep(30), timeout=0.5) == {"timeout": 0.5}
    assert judge.forked(lambda: os.kill(os.getpid(), signal.SIGKILL), timeout=30) == {"died": int(signal.SIGKILL)}
