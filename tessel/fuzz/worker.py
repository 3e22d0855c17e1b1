"""Worker processes: test cases compile and run in children, so a crash of TVM or of generated
code (FACTS.md: random TVM pass sequences segfault) kills a child, not the campaign, and a hang
meets a time limit.

A `Worker` is one spawned child (a fresh interpreter: its own string-hash salt, so hash-order
nondeterminism shows between workers) that receives cases as text, runs `oracles.run_case` under
coverage (`coverage.Probe`), and answers with the Outcome and the coverage features it had not
seen before (per phase). The parent `submit`s a case and `poll`s; a child that dies gives a "died"
failure naming its exit signal, one that runs past the limit is killed and gives "hang"; either
way the child is replaced. Children are also replaced every `recycle` cases to bound memory.

Example:
    >>> from tessel.ir.text import parse_kernel
    >>> from tessel.fuzz.case import Case
    >>> k = parse_kernel("kernel f(A: float32[4] global) target cpu { for i in 4 { A[i] = (A[i] + 1.0f32) } }")
    >>> w = Worker(coverage=False)
    >>> run_one(w, Case(k, pipeline=[{"name": "simplify"}]))["status"]
    'ok'
    >>> w.close()
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time

READY_TIMEOUT = 180.0  # a child imports tessel (and TVM when asked) before it is ready


class _Conn:
    """Length-prefixed pickles over a pair of pipes (the child is `python -m tessel.fuzz.worker`,
    so it works whatever the parent's __main__ is: a script, stdin, a test runner)."""

    def __init__(self, rfile, wfile):
        self.r, self.w = rfile, wfile

    def fileno(self) -> int:
        return self.r.fileno()

    def send(self, obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self.w.write(struct.pack("<Q", len(data)) + data)
        self.w.flush()

    def recv(self):
        head = self.r.read(8)
        if len(head) < 8:
            raise EOFError
        (n,) = struct.unpack("<Q", head)
        data = self.r.read(n)
        if len(data) < n:
            raise EOFError
        return pickle.loads(data)

    def poll(self, timeout: float = 0.0) -> bool:
        return bool(select.select([self.r], [], [], timeout)[0])


def _child(conn, coverage: bool, preload_tvm: bool) -> None:
    os.environ["TESSEL_CACHE_DIR"] = ""  # no disk cache: every case compiles afresh
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import warnings

    warnings.simplefilter("ignore")
    import_plugins(os.environ.get("TESSEL_FUZZ_PLUGINS", ""))
    from tessel.fuzz.case import Case
    from tessel.fuzz.oracles import run_case

    if preload_tvm:
        try:  # the first TVM import and compile cost seconds: not in a case's time
            from tessel.codegen import cache, tvm
            from tessel.ir.text import parse_kernel

            tvm.compile_kernel(parse_kernel("kernel warm(A: float32[4] global) target cpu "
                                            "{ for i in 4 { A[i] = (A[i] + 1.0f32) } }"), cache=cache.ModuleCache())
        except Exception:  # noqa: BLE001 - without TVM the tvm oracle reports its own failure per case
            pass
    probe = None
    if coverage:
        from tessel.fuzz.coverage import Probe

        probe = Probe()
    seen: set = set()
    _warm_up(probe)
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        text, determinism = msg
        case = Case.from_text(text)
        if probe is not None:
            probe.start()
        try:
            out = run_case(case, probe, determinism=determinism)
        finally:
            if probe is not None:
                probe.stop()
        phases = []
        for name, feats in out.phases:
            new = feats - seen
            seen |= new
            phases.append((name, new))
        conn.send(("result", {**out.to_dict(), "digest": out.digest, "kept_schedule": out.kept_schedule,
                              "phases": phases}))


def _warm_up(probe) -> None:
    """Compile and run two small cases before answering "ready": the first case of a process pays
    for imports and first-time traces (seconds under coverage), which is not that case's time."""
    import random

    from tessel.fuzz.case import Case
    from tessel.fuzz.gen import dsl_kernel
    from tessel.fuzz.mutate_ir import default_schedule_cmds
    from tessel.fuzz.mutate_passes import base_pipeline
    from tessel.fuzz.oracles import run_case

    for target in ("cpu", "cuda"):
        try:
            k = dsl_kernel(random.Random(1), stages=1)
            case = Case(k, target, default_schedule_cmds(k, target), base_pipeline(target), 1)
            if probe is not None:
                probe.start()
            try:
                run_case(case, probe)
            finally:
                if probe is not None:
                    probe.stop()
                    probe.harvest()  # (forgotten: the first real case reports them)
        except Exception:  # noqa: BLE001 - a warm-up problem shows up again in real cases
            pass


def import_plugins(names) -> list:
    """Import plugin modules (comma-separated names or a list): modules that register passes (e.g.
    planted bugs for measuring the fuzzer), imported in the parent and in every child alike."""
    import importlib

    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    return [importlib.import_module(n) for n in names]


class Worker:
    """One child process running cases (see the module docstring)."""

    def __init__(self, coverage: bool = True, preload_tvm: bool = False, recycle: int = 2000, plugins=()):
        self.coverage, self.preload_tvm, self.recycle = coverage, preload_tvm, recycle
        self.plugins = ",".join(plugins) if not isinstance(plugins, str) else plugins
        self.proc = None
        self.job = None  # (tag, case text, deadline)
        self.done = 0
        self._start()

    def _start(self) -> None:
        args = [sys.executable, "-m", "tessel.fuzz.worker", str(int(self.coverage)), str(int(self.preload_tvm))]
        env = dict(os.environ)
        env.pop("PYTHONHASHSEED", None)  # each child its own string-hash salt
        env["TESSEL_FUZZ_PLUGINS"] = self.plugins
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.conn = _Conn(self.proc.stdout, self.proc.stdin)
        self.ready = False
        self.started = time.monotonic()
        self.done = 0

    def _wait_ready(self) -> None:
        if self.ready:
            return
        if not self.conn.poll(max(0.0, READY_TIMEOUT - (time.monotonic() - self.started))):
            self._kill()
            raise RuntimeError("a fuzz worker did not start")
        tag, _ = self.conn.recv()
        self.ready = tag == "ready"

    @property
    def idle(self) -> bool:
        return self.job is None

    def submit(self, tag, text: str, timeout: float, determinism: bool = True) -> None:
        self._wait_ready()
        self.job = (tag, text, time.monotonic() + timeout, timeout)
        self.conn.send((text, determinism))

    def poll(self):
        """(tag, result dict) when the job finished (or died, or hung), else None."""
        if self.job is None:
            return None
        tag, text, deadline, timeout = self.job
        try:
            if self.conn.poll():
                kind, result = self.conn.recv()
                self.job = None
                self.done += 1
                if self.done >= self.recycle:
                    self.restart()
                return tag, result
        except (EOFError, OSError):  # the child is gone (or going): reap it
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        else:
            if self.proc.poll() is None and time.monotonic() < deadline:
                return None
        if self.proc.poll() is None:  # past its time limit
            self._kill()
            result = _failure("hang", f"time limit of {timeout:.0f} s exceeded")
        else:
            code = self.proc.wait(5)
            name = signal.Signals(-code).name if code is not None and code < 0 else f"exit {code}"
            result = _failure("died", f"worker died ({name})")
        self.job = None
        self._start()
        return tag, result

    def restart(self) -> None:
        self._kill()
        self._start()

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.job is None:
                self.conn.send(None)
                self.proc.wait(2)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            pass
        self._kill()


def _failure(kind: str, message: str) -> dict:
    return {"status": "fail", "kind": kind, "stage": "worker", "message": message,
            "signature": f"{kind}:worker:{message.split('(')[-1].rstrip(')')}" if kind == "died" else f"{kind}:worker",
            "skipped": 0, "digest": "", "kept_schedule": [], "phases": []}


def wait_any(workers, timeout: float = 0.05) -> None:
    """Sleep until some busy worker has something to say (or `timeout`)."""
    conns = [w.conn.r for w in workers if not w.idle]
    if conns:
        select.select(conns, [], [], timeout)
    else:
        time.sleep(timeout)


def run_one(worker: Worker, case, timeout: float = 60.0, determinism: bool = True) -> dict:
    """Run one case on `worker` and wait for its result dict."""
    worker.submit(None, case.to_text(), timeout, determinism)
    while True:
        got = worker.poll()
        if got is not None:
            return got[1]
        wait_any([worker], 0.1)


def main(argv=None) -> None:
    """The child's entry: `python -m tessel.fuzz.worker COVERAGE PRELOAD_TVM` (0/1 each)."""
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the campaign, which stops its children
    rfile = sys.stdin.buffer
    wfile = os.fdopen(os.dup(1), "wb")  # messages go to the original stdout ...
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # ... and stray output (prints, TVM's C++ logs) to nowhere, so the stream stays clean
    if not os.environ.get("TESSEL_FUZZ_DEBUG"):
        os.dup2(null, 2)  # (and the parent's live line readable)
    _child(_Conn(rfile, wfile), argv[0] == "1", argv[1] == "1")


if __name__ == "__main__":
    main()


__all__ = ["Worker", "main", "run_one", "wait_any"]
