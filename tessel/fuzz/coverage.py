"""Coverage feedback: line and branch coverage of tessel's compiler code, per test case and phase.

Uses coverage.py (branch mode, its C tracer) over tessel/compiler, passes, schedules and codegen
(not ir/: the interpreter is the oracle, and tracing the node walkers of nodes.py costs about 20%
more per case for arcs that say little about the compiler). A feature is one arc (from-line, to-line) of
one file, so both line and branch coverage count: a line reached is the arc into it.

Per case, the worker harvests the tracer's raw arc sets (coverage.py's collector data: a dict of
file -> set of packed arcs) and clears them, instead of building a CoverageData per case, which
costs about 15 ms; `harvest()` between compile phases says which phase (schedule, each pass,
codegen) reached what, so a pass adding nothing new can be dropped from its seed's pipeline.

Tracing is paused (`paused()`) while the oracles run code that is not compiler code: the
interpreter, the verifier, input generation and comparison, the second compilation of the
determinism check, LLVM and the compiled code. On Python 3.11 any trace function, even one that
ignores a frame, switches CPython's specialising interpreter off for all code (unmeasured code
runs about 4x slower while tracing is on), so the overhead is paid only where arcs are measured.
The collector attribute is private to coverage.py; `Probe` checks it exists when it starts and
raises FuzzError otherwise, so a coverage release that moves it fails loudly, not silently.

Example:
    >>> p = Probe()
    >>> p.start()
    >>> from tessel.compiler.pipeline import as_pipeline
    >>> _ = as_pipeline(["simplify"])
    >>> feats = p.harvest(); p.stop()
    >>> len(feats) > 0
    True
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

from tessel.fuzz.case import FuzzError

AREAS = ("compiler", "passes", "schedules", "codegen")


def tessel_root() -> str:
    import tessel

    return os.path.dirname(os.path.abspath(tessel.__file__))


class Probe:
    """Line + branch coverage of tessel's compiler code, harvested as sets of features (ints)."""

    def __init__(self, areas=AREAS):
        try:
            import coverage
        except ImportError as e:
            raise FuzzError("coverage feedback needs the 'coverage' package (pip install coverage), "
                            "or run the fuzzer with --no-coverage") from e
        root = tessel_root()
        self.cov = coverage.Coverage(branch=True, data_file=None, config_file=False,
                                     source=[os.path.join(root, a) for a in areas],
                                     omit=[os.path.join(root, "ir", "interp", "*")])
        self.files: dict[str, int] = {}  # file -> small id, so features stay ints
        self.running = False
        self._pauses = 0  # nesting depth of paused()

    def start(self) -> None:
        self.cov.start()
        self.running = True
        if not isinstance(getattr(getattr(self.cov, "_collector", None), "data", None), dict):
            self.cov.stop()
            raise FuzzError("this coverage.py version keeps its raw data elsewhere; fuzz with --no-coverage")

    def stop(self) -> None:
        if self.running:
            if self._pauses:  # coverage.py's stop expects a running tracer
                self.cov._collector.resume()
                self._pauses = 0
            self.cov.stop()
            self.running = False

    @contextmanager
    def paused(self):
        """No tracing inside the block (nests; a few microseconds each way).

        >>> from tessel.compiler.pipeline import as_pipeline
        >>> p = Probe(); p.start(); _ = p.harvest()
        >>> with p.paused():
        ...     _ = as_pipeline(["remove_dead_code"])
        >>> p.harvest()
        set()
        >>> _ = as_pipeline(["remove_dead_code"]); len(p.harvest()) > 0
        True
        >>> p.stop()
        """
        if not self.running:
            yield
            return
        if self._pauses == 0:
            self.cov._collector.pause()
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            if self._pauses == 0 and self.running:
                self.cov._collector.resume()

    def harvest(self) -> set:
        """The features reached since the last harvest (and forget them in the tracer)."""
        data = self.cov._collector.data
        out = set()
        for fname, arcs in list(data.items()):
            if not arcs:
                continue
            fid = self.files.get(fname)
            if fid is None:
                fid = self.files[fname] = _file_id(fname)
            out.update((fid << 60) | (a if isinstance(a, int) else _pack(a)) for a in arcs)
            arcs.clear()
        return out


def paused(probe):
    """`probe.paused()`, or a no-op context when there is no probe."""
    return probe.paused() if probe is not None else nullcontext()


def _pack(arc) -> int:
    """An (l1, l2) arc packed as coverage.py's C tracer packs it (for its Python tracer)."""
    l1, l2 = arc
    return abs(l1) | (abs(l2) << 28) | ((l1 < 0) << 56) | ((l2 < 0) << 57)


def _file_id(fname: str) -> int:
    """A stable small id of a file (same in every worker process): a hash of its tessel-relative path."""
    import zlib

    rel = os.path.relpath(fname, tessel_root())
    return zlib.crc32(rel.encode())  # coverage.py packs an arc into 58 bits; the file id goes above


def feature_lines(features) -> int:
    """How many distinct (file, line) pairs a feature set reaches (the line coverage count)."""
    lines = set()
    for f in features:
        fid, packed = f >> 60, f & ((1 << 60) - 1)
        for ln in (packed & 0xFFFFFFF, (packed >> 28) & 0xFFFFFFF):
            if ln:
                lines.add((fid, ln))
    return len(lines)


def total_statements(areas=AREAS) -> int:
    """How many statements the measured areas have (coverage.py's parser): the denominator of the
    line coverage the report prints."""
    import glob

    from coverage.parser import PythonParser

    n = 0
    for a in areas:
        for f in glob.glob(os.path.join(tessel_root(), a, "**", "*.py"), recursive=True):
            p = PythonParser(filename=f)
            p.parse_source()
            n += len(p.statements)
    return n


__all__ = ["AREAS", "Probe", "paused", "feature_lines", "tessel_root", "total_statements"]
