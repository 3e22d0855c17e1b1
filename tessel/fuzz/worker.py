"""Worker processes: test cases compile and run in children, so a crash of TVM or of generated
code (FACTS.md: random TVM pass sequences segfault) kills a child, not the campaign, and a hang
meets a time limit.

A `Worker` is one spawned child (a fresh interpreter: its own string-hash salt, so hash-order
nondeterminism shows between workers) that receives cases as text, runs `oracles.run_case` under
coverage (`coverage.Probe`), and answers with the Outcome and the coverage features it had not
seen before (per phase). The parent `submit`s a case and `poll`s; a child that dies gives a "died"
failure naming its exit signal, one that runs past the limit is killed and gives "hang"; either
way the child is replaced. Children are also replaced every `recycle` cases to bound memory, and
after a case whose result says "restart" (a CUDA error poisoned the child's context: the failure is
recorded once, and the cases queued behind it go to the fresh child). `gpu`: GPU cases of this
worker also run on the GPU (tessel/fuzz/gpu_oracle.py; the child is a fresh interpreter started
by subprocess, never a fork of the parent, so CUDA state never crosses).

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
from collections import deque

READY_TIMEOUT = 600.0  # a child imports tessel (and TVM when asked) before it is ready: on a loaded
# machine (load 12 on 2 cores) that took over 3 minutes
START_ATTEMPTS = 3  # children in a row that may fail to start before the campaign gives up


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
        text, determinism, *more = msg
        trace = more[0] if more else True
        case = load_case(text)
        if len(more) > 1 and more[1] and hasattr(case, "kernel"):  # the campaign verified this program already
            from tessel.fuzz.oracles import VERIFIED
            from tessel.ir.text import to_text

            VERIFIED.put(to_text(case.kernel), True)
        traced = probe if trace else None
        cpu0 = time.process_time()
        if traced is not None:
            traced.start()
        try:
            out = run_any(case, traced, determinism=determinism)
        finally:
            if traced is not None:
                traced.stop()
        cpu_s = time.process_time() - cpu0
        phases = []
        for name, feats in out.phases:
            new = feats - seen
            seen |= new
            phases.append((name, new))
        gpu = sys.modules.get("tessel.fuzz.gpu_oracle")
        lost = gpu is not None and gpu.POISONED  # a CUDA error broke this process's context
        conn.send(("result", {**out.to_dict(), "digest": out.digest, "kept_schedule": out.kept_schedule,
                              "phases": phases, "cpu_s": cpu_s, "restart": lost}))
        if lost:  # answered once; the parent replaces this child and sends it the cases behind this one
            _wait_to_be_replaced(conn)
            return


def _wait_to_be_replaced(conn) -> None:
    """Read (and drop) what the parent still sends until it closes the pipe or kills this child:
    exiting at once could break the pipe under a case the parent is sending."""
    while True:
        try:
            if conn.recv() is None:
                return
        except (EOFError, OSError):
            return


def load_case(text: str, where: str = "fuzz case"):
    """A kernel Case or a graph case, by its file's first line."""
    from tessel.fuzz.graph_case import load_case as load

    return load(text, where)


def run_any(case, probe=None, determinism: bool = True):
    """`oracles.run_case` for a kernel case, `graph_oracle.run_graph_case` for a graph case."""
    from tessel.fuzz.graph_case import GraphCase

    if isinstance(case, GraphCase):
        from tessel.fuzz.graph_oracle import run_graph_case

        return run_graph_case(case, probe, determinism=determinism)
    from tessel.fuzz.oracles import run_case

    return run_case(case, probe, determinism=determinism)


def _warm_up(probe) -> None:
    """Compile and run two small cases before answering "ready": the first case of a process pays
    for imports and first-time traces (seconds under coverage), which is not that case's time."""
    import random

    from tessel.fuzz.case import Case
    from tessel.fuzz.gen import dsl_kernel
    from tessel.fuzz.mutate_ir import default_schedule_cmds
    from tessel.fuzz.mutate_passes import base_pipeline
    from tessel.fuzz.oracles import run_case

    try:  # a graph case (the graph passes, fusion and lowering: their imports)
        from tessel.fuzz.graph_case import fresh_graph_case
        from tessel.fuzz.graph_oracle import run_graph_case

        run_graph_case(fresh_graph_case(random.Random(1), 0.0))
    except Exception:  # noqa: BLE001
        pass
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
    """One child process running cases (see the module docstring).

    Up to `depth` cases are in flight per child: the next case is already in its pipe while it
    runs one, so the child never waits for the parent to be scheduled (on a loaded machine that
    wait cost about a third of the throughput). The time limit of a case starts when the case
    before it finished; a case queued behind one that hangs or kills the child is sent again to
    the replacement.
    """

    def __init__(self, coverage: bool = True, preload_tvm: bool = False, recycle: int = 2000, plugins=(),
                 depth: int = 2, gpu: bool = False):
        self.coverage, self.preload_tvm, self.recycle, self.depth = coverage, preload_tvm, recycle, depth
        self.gpu = gpu
        self.plugins = ",".join(plugins) if not isinstance(plugins, str) else plugins
        self.proc = None
        self.queue: deque = deque()  # [tag, case text, timeout, (determinism, trace), deadline (head only)]
        self.backlog: deque = deque()  # cases for a child that is still starting (sent once it is ready)
        self.failed_starts = 0
        self.done = 0
        self.cpu_s = 0.0  # CPU seconds its children spent on cases (start-up excluded; see cpu_used)
        self._cpu0 = None
        self._start()

    def _start(self) -> None:
        args = [sys.executable, "-m", "tessel.fuzz.worker", str(int(self.coverage)), str(int(self.preload_tvm))]
        env = dict(os.environ)
        env.pop("PYTHONHASHSEED", None)  # each child its own string-hash salt
        env["TESSEL_FUZZ_PLUGINS"] = self.plugins
        env["TESSEL_FUZZ_GPU"] = "1" if self.gpu else "0"  # (gpu_oracle.ENV)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.conn = _Conn(self.proc.stdout, self.proc.stdin)
        self.ready = False
        self.started = time.monotonic()
        self.done = 0

    def _wait_ready(self) -> None:
        """Block until the child is ready (replacing children that fail to start)."""
        while not self.check_ready(max(0.0, READY_TIMEOUT - (time.monotonic() - self.started))):
            pass

    def check_ready(self, timeout: float = 0.0) -> bool:
        """Whether the child is ready, waiting at most `timeout`; a child that died while starting
        or took longer than READY_TIMEOUT is replaced (FuzzError after START_ATTEMPTS in a row)."""
        if self.ready:
            return True
        try:
            if self.conn.poll(timeout):
                tag, _ = self.conn.recv()
                if tag == "ready":
                    self.ready, self.failed_starts = True, 0
                    self._cpu0 = proc_cpu_s(self.proc.pid)
                    for tag, text, timeout_, opts in list(self.backlog):
                        self._send(tag, text, timeout_, opts)
                    self.backlog.clear()
                    return True
        except (EOFError, OSError):  # died while starting (e.g. an import failed)
            self._failed_start("died while starting")
            return False
        if time.monotonic() - self.started > READY_TIMEOUT:
            self._failed_start(f"not ready after {READY_TIMEOUT:.0f} s")
        return False

    def _failed_start(self, why: str) -> None:
        from tessel.fuzz.case import FuzzError

        self.failed_starts += 1
        self._kill()
        if self.failed_starts >= START_ATTEMPTS:
            raise FuzzError(f"tessel fuzz: {START_ATTEMPTS} worker processes in a row failed to start ({why}); "
                            f"try `python -m tessel.fuzz.worker 1 0` to see why")
        self._start()

    def _account(self) -> None:
        if self._cpu0 is not None and self.proc is not None:
            now = proc_cpu_s(self.proc.pid)
            if now is not None:
                self.cpu_s += now - self._cpu0
        self._cpu0 = None

    @property
    def cpu_used(self) -> float:
        """CPU seconds (user + system) this worker's children have spent since each was ready:
        the fuzzing work without the start-up imports (0.0 where /proc is not there)."""
        now = proc_cpu_s(self.proc.pid) if self._cpu0 is not None and self.proc is not None else None
        return self.cpu_s + (now - self._cpu0 if now is not None else 0.0)

    @property
    def idle(self) -> bool:
        """No case in flight or waiting for the child."""
        return not self.queue and not self.backlog

    @property
    def free(self) -> bool:
        """Ready, with room for one more case in flight (never blocks: a starting child is not free)."""
        return self.check_ready() and len(self.queue) < self.depth

    def submit(self, tag, text: str, timeout: float, determinism: bool = True, trace: bool = True,
               verified: bool = False) -> None:
        """Send a case (waits for the child to be ready; the campaign only submits to `free` workers).
        `trace` False: run it without coverage (a re-run whose coverage is known already); `verified`:
        the caller ran the verifier on its program (the child does not again: it cost about a tenth
        of a CPU case, mostly the out-of-bounds witness search on mutated kernels)."""
        self._wait_ready()
        self._send(tag, text, timeout, (determinism, trace, verified))

    def _send(self, tag, text: str, timeout: float, opts: tuple) -> None:
        self.queue.append([tag, text, timeout, opts, time.monotonic() + timeout if not self.queue else None])
        self.conn.send((text, *opts))

    def poll(self):
        """(tag, result dict) when the oldest case in flight finished (or died, or hung), else None."""
        if not self.check_ready():
            return None
        if not self.queue:
            return None
        tag, _, timeout, _, deadline = self.queue[0]
        try:
            if self.conn.poll():
                kind, result = self.conn.recv()
                self.queue.popleft()
                if self.queue:  # the next one starts now
                    self.queue[0][4] = time.monotonic() + self.queue[0][2]
                self.done += 1
                if self.done >= self.recycle or result.get("restart"):
                    self._replace()
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
        self.queue.popleft()
        self._replace()
        return tag, result

    def _replace(self) -> None:
        """A fresh child, which gets the cases still queued once it is ready (nothing waits for it)."""
        self.backlog.extend(job[:4] for job in self.queue)
        self.queue.clear()
        self._kill()
        self._start()

    def restart(self) -> None:
        """A fresh child; the cases in flight are dropped, not answered."""
        self.queue.clear()
        self.backlog.clear()
        self._kill()
        self._start()

    def _kill(self) -> None:
        if self.proc is None:
            return
        self._account()
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
        self._account()
        try:
            if self.proc.poll() is None and self.ready and not self.queue:
                self.conn.send(None)
                self.proc.wait(2)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            pass
        self._kill()


def _failure(kind: str, message: str) -> dict:
    return {"status": "fail", "kind": kind, "stage": "worker", "message": message,
            "signature": f"{kind}:worker:{message.split('(')[-1].rstrip(')')}" if kind == "died" else f"{kind}:worker",
            "skipped": 0, "digest": "", "kept_schedule": [], "phases": []}


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc (None elsewhere or when it is gone).

    >>> proc_cpu_s(os.getpid()) > 0  # (this process has run)
    True
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def wait_any(workers, timeout: float = 0.05) -> None:
    """Sleep until some busy worker has something to say (or `timeout`)."""
    conns = [w.conn.r for w in workers if not w.idle or not w.ready]
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


__all__ = ["Worker", "load_case", "main", "proc_cpu_s", "run_any", "run_one", "wait_any"]
