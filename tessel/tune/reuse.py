"""Reusing a tuning log: the best record of each workload becomes its schedule, with no measurement.

`LogSchedules(path, target)` reads the log once and indexes the record it chose per workload key
(`records.best_records`: the latest confirmation verdict, else the fastest good record).
`schedule_for(kernel)` returns the scheduled kernel for an unscheduled IR kernel (its template
applied with the record's knobs) or None when the log has no record for it on this target, or when
its verdict kept the default schedule (then the caller schedules it exactly as without a log).
Records of the same workload from another target kind or architecture are never applied: they are
counted and named in one warning. `warn()` issues, once, one warning listing the
workloads that fell back to the default schedule and one for the records of other targets.

The driver (`tessel.build(..., tuning_log=)`, `tessel.compile(..., tuning_log=)`) uses this.

Example:
    >>> import os, tempfile, warnings
    >>> import tessel as ts
    >>> A = ts.placeholder((8,), name="A"); B = ts.compute((8,), lambda i: A[i] + 1.0, name="B")
    >>> lookup = LogSchedules(os.path.join(tempfile.mkdtemp(), "empty.jsonl"), "cpu")
    >>> lookup.schedule_for(ts.lower([A, B])) is None
    True
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always"); lookup.warn()
    >>> "1 workload(s) have no record" in str(w[0].message)
    True
"""

from __future__ import annotations

import warnings

from tessel.errors import ScheduleError
from tessel.tune.records import TuningLog, best_records, describe, workload_key


def target_info(target):
    """The TargetInfo of `target` ("cpu", "cuda:sm_90a", a Target) on this machine: the CPU's LLVM
    name (what TVM compiles for) and model name, or the GPU's architecture and device name."""
    from tessel.tune.records import TargetInfo

    kind, arch = _kind_arch(target)
    if kind == "cpu":
        return TargetInfo("cpu", _cpu_arch(), _cpu_name())
    return TargetInfo(kind, arch or "", _gpu_name())


def _kind_arch(target):
    if hasattr(target, "kind"):
        return target.kind, getattr(target, "arch", None)
    text = str(target).strip().lower()
    if text.startswith("cuda"):
        from tessel.ir.target import parse_target

        t = parse_target(text)
        return t.kind, t.arch
    return text, None


def _cpu_arch() -> str:
    try:
        from tessel.codegen.tvm_runtime import host_target

        return str(host_target().get("mcpu", "generic"))
    except Exception:  # noqa: BLE001 - no TVM: name the machine instead
        import platform

        return platform.machine()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _gpu_name() -> str:
    try:
        from cuda.bindings import driver

        driver.cuInit(0)
        err, dev = driver.cuDeviceGet(0)
        err, name = driver.cuDeviceGetName(64, dev)
        return name.split(b"\0")[0].decode() if int(err) == 0 else ""
    except Exception:  # noqa: BLE001 - no GPU or no bindings: the architecture still identifies the target
        return ""


class LogSchedules:
    """Schedules from the best records of a tuning log (see the module docstring)."""

    def __init__(self, path, target, info=None):
        self.path = str(path)
        self.target = str(target)
        self.info = info if info is not None else target_info(target)
        contents = TuningLog(path).read(warn=True)
        self.best = best_records(contents.records, self.info)
        self.foreign: dict = {}  # workload key -> the other targets it has records for
        for r in contents.records:
            if r.ok and not r.target.matches(self.info):
                self.foreign.setdefault(r.workload.key, set()).add(f"{r.target.kind}:{r.target.arch}")
        self.missing: list = []  # descriptions of workloads without a record here
        self.skipped: list = []  # (description, other targets) of workloads with records only elsewhere
        self.applied: list = []  # (description, template, knobs)
        self.defaulted: list = []  # descriptions of workloads whose verdict kept the default schedule
        self._warned = False

    def record_for(self, kernel):
        """The best record of `kernel`'s workload on this target, or None."""
        return self.best.get(workload_key(kernel))

    def schedule_for(self, kernel):
        """`kernel` scheduled with its best record's template and knobs, or None (no record)."""
        from tessel.schedules.template import get_template

        key = workload_key(kernel)
        rec = self.best.get(key)
        if rec is None:
            if key in self.foreign:
                self.skipped.append((describe(kernel), sorted(self.foreign[key])))
            else:
                self.missing.append(describe(kernel))
            return None
        if (rec.verdict or {}).get("kept") == "default":
            self.defaulted.append(describe(kernel))
            return None
        try:
            sch = get_template(rec.template).apply(kernel, rec.knobs, self.target)
        except ScheduleError as e:
            raise ScheduleError(f"tuning log '{self.path}': the best record of {describe(kernel)} (template "
                                f"'{rec.template}', knobs {rec.knobs}) no longer applies: {e}") from None
        self.applied.append((describe(kernel), rec.template, dict(rec.knobs)))
        return sch.kernel

    def warn(self) -> None:
        """One warning for the workloads left at their defaults, one for records of other targets."""
        if self._warned:
            return
        self._warned = True
        if self.skipped:
            listed = "; ".join(f"{d} (records for {', '.join(ts)})" for d, ts in self.skipped)
            warnings.warn(f"tuning log '{self.path}': {len(self.skipped)} workload(s) have records only for other "
                          f"targets than {self.info}; not applied, default schedules used: {listed}", stacklevel=3)
        if self.missing:
            warnings.warn(f"tuning log '{self.path}': {len(self.missing)} workload(s) have no record for "
                          f"{self.info}; default schedules used: {'; '.join(self.missing)}", stacklevel=3)
