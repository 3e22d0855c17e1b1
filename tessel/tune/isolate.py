"""Run functions in child processes with a time limit and a memory limit, several at once.

A child that crashes (segfault, abort), hangs past its time limit, or grows past its memory
limit is killed (SIGKILL) and reported as an `Outcome` with the error in words; the parent never
dies with it. This is what makes a bad tuning candidate cost one trial and not the tuner.

Children come from a fork server (`multiprocessing`'s "forkserver" start method) that has
imported numpy, TVM and tessel's back ends once, so a child starts in milliseconds instead of the
seconds TVM's import takes, and it is a fresh fork of a process that has run no kernel (TVM's
thread pool has not started, which makes forking safe). The memory limit is checked by polling
the child's resident set size with psutil: an address-space limit (RLIMIT_AS) would count LLVM's
and the thread pool's reservations, not what the candidate uses.

Why hand-written and not `concurrent.futures.ProcessPoolExecutor`: a pool worker that crashes
breaks the whole pool, and a pool cannot kill one hung task; here each task owns its process.

Example:
    >>> outs = run_isolated([Job(pow, (2, 10), timeout=30)])
    >>> outs[0].ok, outs[0].value
    (True, 1024)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait

# Modules the fork server imports once, so that every child has them already.
PRELOAD = ["numpy", "tessel", "tessel.ir.interp", "tessel.codegen.tvm", "tvm"]
_POLL_S = 0.05


@dataclass(frozen=True)
class Job:
    """`fn(*args)` in a child process; `fn` must be picklable (a module-level function)."""

    fn: object
    args: tuple = ()
    timeout: float = 60.0
    memory_limit: int | None = None  # bytes of resident memory; None: no limit


@dataclass(frozen=True)
class Outcome:
    """What came of a Job: `value` when `ok`, else `error` (one line saying what went wrong)."""

    ok: bool
    value: object = None
    error: str | None = None
    seconds: float = 0.0


_context = None


def context():
    """The multiprocessing context children come from (a fork server with PRELOAD imported)."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([m for m in PRELOAD if _importable(m)])
        _context = ctx
    return _context


def preload(*modules: str) -> None:
    """Have the fork server import `modules` too (before it starts; later calls do nothing). The
    GPU path preloads torch: importing it does not touch the GPU, so forking after it is safe."""
    if _context is None:
        PRELOAD.extend(m for m in modules if m not in PRELOAD)


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _main_not_rerun():
    """Children of a fork server re-run the parent's main script (multiprocessing's rule for
    pickling its functions) unless it has a `__main__` guard; a user's tuning script rarely has
    one, and the jobs run tessel's own functions. So the script's path is hidden while a child
    starts, and the child does not run it."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = main is not None and path is not None and getattr(main, "__spec__", None) is None
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path


def _child(conn, fn, args) -> None:
    try:
        value = fn(*args)
    except BaseException as e:  # noqa: BLE001 - everything the candidate raises is its outcome
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
        msg = str(e).strip().splitlines()
        first = msg[0] if msg else ""
        conn.send((False, f"{type(e).__name__}: {first[:500]}{where}"))
    else:
        try:
            conn.send((True, value))
        except Exception as e:  # noqa: BLE001 - an unpicklable value
            conn.send((False, f"the result could not be sent back: {type(e).__name__}: {e}"))
    conn.close()


class _Running:
    def __init__(self, index: int, job: Job):
        ctx = context()
        self.index, self.job = index, job
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child, args=(send, job.fn, job.args), daemon=True)
        with _main_not_rerun():
            self.proc.start()  # the first start also starts the fork server: not the job's time
        self.start = time.monotonic()
        send.close()
        self._ps = None

    def rss(self) -> int:
        try:
            import psutil

            if self._ps is None:
                self._ps = psutil.Process(self.proc.pid)
            return self._ps.memory_info().rss
        except Exception:  # noqa: BLE001 - the child is gone already: no memory to count
            return 0

    def kill(self) -> None:
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, TypeError):
            pass
        self.proc.join(5)

    def finish(self) -> Outcome:
        took = time.monotonic() - self.start
        try:
            ok, value = self.recv.recv() if self.recv.poll() else (None, None)
        except (EOFError, OSError):
            ok, value = None, None
        self.proc.join(5)
        self.recv.close()
        if ok is None:
            return Outcome(False, error=_death(self.proc.exitcode), seconds=took)
        return Outcome(True, value, seconds=took) if ok else Outcome(False, error=value, seconds=took)


def _death(code) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the process crashed ({name})"
    return f"the process exited with status {code} without a result"


def run_isolated(jobs, parallel: int = 1, on_done=None) -> list:
    """Run `jobs` (a list of Job), at most `parallel` at a time, each in its own child process;
    returns their Outcomes in order. `on_done(index, outcome)` is called as each one finishes."""
    jobs = list(jobs)
    outcomes: list = [None] * len(jobs)
    pending = list(range(len(jobs)))
    running: list[_Running] = []
    parallel = max(1, int(parallel))

    def done(r: _Running, out: Outcome) -> None:
        outcomes[r.index] = out
        running.remove(r)
        if on_done is not None:
            on_done(r.index, out)

    try:
        while pending or running:
            while pending and len(running) < parallel:
                i = pending.pop(0)
                running.append(_Running(i, jobs[i]))
            ready = wait([r.recv for r in running] + [r.proc.sentinel for r in running], timeout=_POLL_S)
            now = time.monotonic()
            for r in list(running):
                if r.recv in ready or r.proc.sentinel in ready:
                    done(r, r.finish())
                elif now - r.start > r.job.timeout:
                    r.kill()
                    done(r, Outcome(False, error=f"timed out after {r.job.timeout:g} s (killed)",
                                    seconds=now - r.start))
                elif r.job.memory_limit is not None and r.rss() > r.job.memory_limit:
                    used = r.rss()
                    r.kill()
                    done(r, Outcome(False, error=f"out of memory: resident size {used / 2**20:.0f} MiB passed the "
                                                 f"limit of {r.job.memory_limit / 2**20:.0f} MiB (killed)",
                                    seconds=now - r.start))
    finally:
        for r in running:  # interrupted (Ctrl-C): no orphans
            r.kill()
    return outcomes
