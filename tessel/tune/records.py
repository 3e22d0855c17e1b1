"""The tuning log: append-only JSON lines, one record per measurement.

A record says what was measured (the workload: a stable key and a readable description), where (the
target: kind, architecture, device name), how (the template and its knob values) and what came of
it (the median time in seconds, or the error), with the tessel version and the wall-clock time.

    {"version": 1, "workload": {"key": "3f2a...", "desc": "C = matmul(A[64,64] float32, ...)"},
     "target": {"kind": "cpu", "arch": "x86-64-v3", "device": "Intel(R) Xeon(R) Processor"},
     "template": "cpu.generic", "knobs": {"tile_rows": 6, "tile_cols": 16},
     "result": {"time": 0.00012, "times": [...], "error": null}, "tessel": "0.1.0", "time": 1764771234.5}

A tuning run ends each workload with a *verdict* record (`tessel.tune.confirm`): the point kept after
the default and the fastest candidates were measured again against each other, with every
confirmation time in `extra["verdict"]`. The record a log gives for a workload (`best_records`, what
compile(tuning_log=) applies) is its latest verdict, else (logs of older tessels) its fastest record.

The workload key is a SHA-256 of the kernel's canonical text form (`tessel.ir.text.to_text` of
the unscheduled kernel with its name and target blanked), never Python's salted `hash()`, so it is
the same in every process and on every machine.

Writing is safe with several writers: an append takes a file lock (`filelock`, on `<log>.lock`)
and writes the whole line with one `write` on a file opened with O_APPEND. A writer killed in the
middle leaves at most a truncated last line; the next append starts on a fresh line so its own
record stays whole. Reading never fails on a bad line: a truncated, non-JSON, malformed or
newer-format line is reported (`LogProblem`, with its line number) and skipped, and it stays in the
file (nothing here rewrites the log, except `prune`/`merge`, which write the bad lines back too).

Records of a newer format version than this tessel reads are skipped with a problem "written by a
newer tessel" (a documented skip, not an error): the log stays usable by both versions.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tune.jsonl")
    >>> log = TuningLog(path)
    >>> rec = Record.new(Workload("k" * 64, "demo"), TargetInfo("cpu", "x86-64", "host"), "cpu.generic",
    ...                  {"tile_rows": 4}, time=1e-3)
    >>> log.append(rec)
    >>> log.read().records[0].knobs
    {'tile_rows': 4}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time as _time
import warnings
from dataclasses import dataclass, field

from tessel.errors import TesselError

FORMAT_VERSION = 1


class TuningLogError(TesselError):
    """A tuning log cannot be used at all (unreadable file, bad arguments to a log command)."""


@dataclass(frozen=True)
class Workload:
    """What is tuned: `key` (stable hash of the canonical kernel text) and a readable `desc`."""

    key: str
    desc: str = ""


@dataclass(frozen=True)
class TargetInfo:
    """Where it ran: `kind` ("cpu", "cuda"), `arch` (LLVM CPU name, or sm_XY), `device` (a name)."""

    kind: str
    arch: str
    device: str = ""

    def matches(self, other: TargetInfo) -> bool:
        """Same kind and architecture: a record from such a target may be applied here."""
        return self.kind == other.kind and self.arch == other.arch

    def __str__(self) -> str:
        return f"{self.kind}:{self.arch}" + (f" ({self.device})" if self.device else "")


@dataclass(frozen=True)
class Record:
    """One measurement. `time` is the median seconds per run (None on error); `error` says why not."""

    workload: Workload
    target: TargetInfo
    template: str
    knobs: dict
    time: float | None = None
    times: tuple = ()
    error: str | None = None
    tessel: str = ""
    timestamp: float = 0.0
    version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @staticmethod
    def new(workload: Workload, target: TargetInfo, template: str, knobs: dict, time: float | None = None,
            times=(), error: str | None = None, **extra) -> Record:
        """A record stamped with this tessel's version and the current time."""
        from tessel import __version__

        return Record(workload, target, template, dict(knobs), time, tuple(times), error, __version__,
                      _time.time(), FORMAT_VERSION, dict(extra))

    @property
    def ok(self) -> bool:
        return self.error is None and self.time is not None and math.isfinite(self.time)

    @property
    def verdict(self) -> dict | None:
        """The confirmation verdict this record states (`tessel.tune.confirm`), or None for a plain
        measurement."""
        v = self.extra.get("verdict")
        return v if isinstance(v, dict) else None

    def knob_key(self) -> str:
        """The knobs as canonical JSON: equal configurations give equal strings."""
        return json.dumps(self.knobs, sort_keys=True)

    def to_json(self) -> dict:
        return {"version": self.version, "workload": {"key": self.workload.key, "desc": self.workload.desc},
                "target": {"kind": self.target.kind, "arch": self.target.arch, "device": self.target.device},
                "template": self.template, "knobs": self.knobs,
                "result": {"time": self.time, "times": list(self.times), "error": self.error},
                "tessel": self.tessel, "time": self.timestamp, **({"extra": self.extra} if self.extra else {})}

    def to_line(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, allow_nan=False) + "\n"

    @staticmethod
    def from_json(d) -> Record:
        """Parse one record; raises ValueError (with what is wrong) on a malformed one."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        version = d.get("version")
        if not isinstance(version, int):
            raise ValueError("no integer 'version'")
        if version > FORMAT_VERSION:
            raise _NewerFormat(f"format version {version} was written by a newer tessel (this one reads up "
                               f"to {FORMAT_VERSION}); skipped")
        try:
            w, t, r = d["workload"], d["target"], d["result"]
            rec = Record(Workload(str(w["key"]), str(w.get("desc", ""))),
                         TargetInfo(str(t["kind"]), str(t["arch"]), str(t.get("device", ""))),
                         str(d["template"]), dict(d["knobs"]),
                         None if r.get("time") is None else float(r["time"]),
                         tuple(float(x) for x in r.get("times", ())), r.get("error"),
                         str(d.get("tessel", "")), float(d.get("time", 0.0)), version, dict(d.get("extra", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"malformed record ({type(e).__name__}: {e})") from None
        if rec.error is not None and not isinstance(rec.error, str):
            raise ValueError("'result.error' is not a string")
        return rec


class _NewerFormat(ValueError):
    pass


@dataclass(frozen=True)
class LogProblem:
    """A line of a log that was skipped: where, why, and its text (kept in the file)."""

    path: str
    line: int
    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class LogContents:
    """What reading a log gave: the good records (in file order) and the skipped lines."""

    records: list
    problems: list

    def warn(self) -> None:
        """One warning listing every skipped line (none when all lines were good)."""
        if self.problems:
            lines = "\n  ".join(str(p) for p in self.problems[:20])
            more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            warnings.warn(f"tuning log: {len(self.problems)} line(s) skipped (they stay in the file):\n  "
                          f"{lines}{more}", stacklevel=3)


class TuningLog:
    """A JSON-lines tuning log at `path` (created on the first append). See the module docstring."""

    def __init__(self, path, lock_timeout: float = 60.0):
        self.path = os.fspath(path)
        self.lock_timeout = lock_timeout

    def _lock(self):
        from filelock import FileLock

        return FileLock(self.path + ".lock", timeout=self.lock_timeout)

    def append(self, *records: Record) -> None:
        """Append records, each as one whole line, under the lock."""
        if not records:
            return
        data = "".join(r.to_line() for r in records).encode()
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with self._lock():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if _ends_without_newline(fd):  # a writer died mid-line: keep our record on its own line
                    data = b"\n" + data
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, warn: bool = False) -> LogContents:
        """All good records and the problems of the bad lines; a missing file is an empty log."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return LogContents([], [])
        except OSError as e:
            raise TuningLogError(f"tuning log '{self.path}' cannot be read: {e}") from None
        contents = parse_lines(raw, self.path)
        if warn:
            contents.warn()
        return contents

    def records(self) -> list:
        """The good records (bad lines reported in one warning)."""
        return self.read(warn=True).records


def parse_lines(raw: bytes, path: str = "<log>") -> LogContents:
    """Parse the bytes of a log: good records and problems, line numbers from 1."""
    records, problems = [], []
    lines = raw.split(b"\n")
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        text = line.decode("utf-8", errors="replace")
        last = no == len(lines)  # no newline after it: a writer stopped in the middle
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            why = "truncated line (no newline at the end of the file)" if last else f"not JSON ({e.msg})"
            problems.append(LogProblem(path, no, why, text))
            continue
        try:
            records.append(Record.from_json(obj))
        except ValueError as e:
            problems.append(LogProblem(path, no, str(e), text))
    return LogContents(records, problems)


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ---------------------------------------------------------------------------------------------
# Queries over records
# ---------------------------------------------------------------------------------------------


def best_records(records, target: TargetInfo | None = None) -> dict:
    """The record chosen for each workload key (of `target`'s kind and arch when given): its latest
    confirmation verdict (`tessel.tune.confirm`: the kept point, maybe the default) when it has one,
    else its fastest good record.

    >>> t = TargetInfo("cpu", "x")
    >>> rs = [Record.new(Workload("a"), t, "T", {"n": n}, time=s) for n, s in ((1, 3.0), (2, 1.0))]
    >>> best_records(rs)["a"].knobs
    {'n': 2}
    >>> rs.append(Record.new(Workload("a"), t, "T", {"n": 1}, time=3.0, verdict={"kept": "default"}))
    >>> best_records(rs)["a"].knobs   # the fast time of n=2 was not confirmed
    {'n': 1}
    """
    best: dict = {}
    verdicts: dict = {}
    for r in records:
        if not r.ok or (target is not None and not r.target.matches(target)):
            continue
        if r.verdict is not None:
            cur = verdicts.get(r.workload.key)
            if cur is None or r.timestamp >= cur.timestamp:
                verdicts[r.workload.key] = r
            continue
        cur = best.get(r.workload.key)
        if cur is None or r.time < cur.time:
            best[r.workload.key] = r
    best.update(verdicts)
    return best


def measured_keys(records, workload_key: str, target: TargetInfo, template: str) -> set:
    """The knob configurations (canonical JSON) already measured for a workload on a target,
    errors included: resuming a tuning run measures none of them again."""
    return {r.knob_key() for r in records if r.workload.key == workload_key and r.template == template
            and r.target.matches(target)}


def workload_key(kernel) -> str:
    """The stable key of an (unscheduled) IR kernel: SHA-256 of its text with the name and target
    blanked, so the same computation under another kernel name shares its tuning records.

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B = Buffer("A", (4,)), Buffer("B", (4,)); i = Var("i")
    >>> k1 = Kernel("inc", (A, B), For(i, 4, Store(B, (i,), A[i] + 1.0)))
    >>> workload_key(k1) == workload_key(dataclasses.replace(k1, name="other"))
    True
    """
    from tessel.ir.text import to_text

    canon = dataclasses.replace(kernel, name="workload", target="cpu", launch=None)
    return hashlib.sha256(to_text(canon).encode()).hexdigest()


def describe(kernel) -> str:
    """A readable one-line description of a kernel: its name and parameters.

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B = Buffer("A", (4,)), Buffer("B", (4,)); i = Var("i")
    >>> describe(Kernel("inc", (A, B), For(i, 4, Store(B, (i,), A[i] + 1.0))))
    'inc(A: float32[4], B: float32[4])'
    """
    params = ", ".join(f"{p.name}: {p.dtype}{list(p.shape)}" for p in kernel.params)
    return f"{kernel.name}({params})"


# ---------------------------------------------------------------------------------------------
# Whole-log operations behind `tessel log merge|prune`
# ---------------------------------------------------------------------------------------------


def merge(sources, dest) -> tuple[int, list]:
    """Append every good record of `sources` that `dest` does not hold yet (same workload, target,
    template, knobs and time stamp) to `dest`; returns (records added, problems of the sources)."""
    out = TuningLog(dest)
    have = {_identity(r) for r in out.read().records}
    added, problems = [], []
    for src in sources:
        contents = TuningLog(src).read()
        problems += contents.problems
        for r in contents.records:
            ident = _identity(r)
            if ident not in have:
                have.add(ident)
                added.append(r)
    out.append(*added)
    return len(added), problems


def prune(path, keep: int = 1, drop_errors: bool = True) -> tuple[int, int]:
    """Rewrite the log keeping the `keep` fastest records of each (workload, target arch), its latest
    confirmation verdict, and, unless `drop_errors` is False, no error records. Bad lines are kept
    verbatim at the end (they are reported, never dropped). The rewrite is atomic (temporary file,
    then rename) under the lock. Returns (records kept, records removed)."""
    if keep < 1:
        raise TuningLogError(f"prune: keep must be at least 1, got {keep}")
    log = TuningLog(path)
    with log._lock():
        contents = log.read()
        groups: dict = {}
        for r in contents.records:
            if r.ok or not drop_errors:
                groups.setdefault((r.workload.key, r.target.kind, r.target.arch), []).append(r)
        kept = []
        for rs in groups.values():
            rs.sort(key=lambda r: (not r.ok, r.time if r.ok else 0.0))
            plain = [r for r in rs if r.verdict is None]
            kept += plain[:keep] if drop_errors else [r for r in plain if r.ok][:keep] + [r for r in plain if not r.ok]
            verdicts = [r for r in rs if r.verdict is not None and r.ok]
            if verdicts:  # the choice the log replays stays
                kept.append(max(verdicts, key=lambda r: r.timestamp))
        kept.sort(key=lambda r: r.timestamp)
        tmp = f"{log.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.writelines(r.to_line() for r in kept)
            f.writelines(p.text + "\n" for p in contents.problems)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, log.path)
    return len(kept), len(contents.records) - len(kept)


def _identity(r: Record) -> tuple:
    return (r.workload.key, r.target.kind, r.target.arch, r.template, r.knob_key(), r.timestamp)
