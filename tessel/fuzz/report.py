"""The campaign report: report.md and coverage.png (coverage over time) in the campaign directory.

Example:
    >>> lines = table([("a", 1)], ("name", "n"))
    >>> lines[0]
    '| name | n |'
"""

from __future__ import annotations

import os

from tessel.fuzz.coverage import feature_lines


def table(rows, header) -> list:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return out


def plot(history, path: str) -> bool:
    """Coverage (arcs) and unique failures over time as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not history:
        return False
    t = [h[0] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(t, [h[2] for h in history], label="coverage (arcs)")
    ax.plot(t, [h[3] for h in history], label="coverage (lines)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("covered")
    ax2 = ax.twinx()
    ax2.step(t, [h[5] for h in history], color="red", where="post", label="unique failures")
    ax2.set_ylabel("unique failures")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize="small")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _samples(history, n: int = 12) -> list:
    """About `n` evenly spaced rows of the history (and its last), for the text table."""
    if not history:
        return []
    step = max(1, len(history) // n)
    rows = list(history[::step])
    if rows[-1] != history[-1]:
        rows.append(history[-1])
    return [tuple(h[:6]) for h in rows]


def _total():
    try:
        from tessel.fuzz.coverage import total_statements

        return total_statements()
    except Exception:  # noqa: BLE001 - the denominator is a nicety
        return "?"


def write_report(c) -> str:
    """Write `report.md` (and coverage.png) for Campaign `c`; returns the report's path."""
    from tessel.fuzz.campaign import atomic_write

    st = c.stats
    el = max(1e-9, st["elapsed_s"])
    png = os.path.join(c.dir, "coverage.png")
    has_png = plot(c.history, png)
    cpu = getattr(c, "run_cpu", {}) or {}
    cpu_total = cpu.get("parent_s", 0.0) + cpu.get("workers_s", 0.0)
    run_cases = st["cases"] - getattr(c, "_cases0", 0)
    lines = [f"# tessel fuzz campaign ({c.target})", "",
             f"- time fuzzed: {st['elapsed_s']:.0f} s (all runs on this directory), seed {c.seed}, jobs {c.jobs}",
             f"- test cases run: {st['cases']} ({st['cases'] / el:.1f}/s overall); ok {st['ok']}, rejected when run "
             f"{st['rejected']}, rejected by the verifier before running {st['rejected_before_run']}, "
             f"failing {st['fail']}",
             f"- coverage of tessel's compiler code (compiler, passes, schedules, codegen): {len(c.features)} arcs, "
             f"{feature_lines(c.features)} lines of {_total()} statements",
             f"- corpus: {len(c.corpus)} seeds; passes dropped from seeds for adding no coverage: "
             f"{st['passes_dropped']}",
             f"- schedule commands refused (skipped): {st['skipped_commands']}",
             *([f"- last run: {run_cases} cases in {cpu_total:.0f} CPU seconds (campaign "
                f"{cpu.get('parent_s', 0):.0f} s, workers {cpu.get('workers_s', 0):.0f} s): "
                f"{run_cases / cpu_total:.1f} cases per CPU second"]
               if cpu_total > 0 else []),
             f"- feedback {'on' if c.feedback else 'off'}, pass mutation {'on' if c.mutate_passes else 'off'}, "
             f"TVM share {c.tvm_rate}",
             f"- GPU execution: {getattr(c, 'gpu_why', 'off')}; GPU cases run on the GPU and matching the "
             f"interpreter: {st.get('gpu_cases', 0)}", ""]
    if st["corrupt_files"]:
        lines += ["Corrupt corpus files (skipped, kept on disk): " + ", ".join(st["corrupt_files"]), ""]
    if has_png:
        lines += ["![coverage over time](coverage.png)", ""]
    else:
        why = "matplotlib is not installed (pip install matplotlib, or tessel's 'plot' extra)" \
            if not _has_matplotlib() else "no history yet"
        lines += [f"No coverage plot: {why}. Coverage over time:", ""]
        lines += table(_samples(c.history), ("seconds", "cases", "arcs", "lines", "corpus", "unique failures"))
        lines.append("")
    mix = getattr(c, "mix", None)
    if mix is not None:
        lines += ["## Targets (time shared by energy: new arcs per second of case time)", ""]
        lines += table([(t, d["cases"], d["case_seconds"], d["share_now"], d["energy"],
                         len(c.by_target.get(t, ()))) for t, d in mix.to_json().items()],
                       ("target", "cases", "case CPU s", "share now", "energy (arcs/s)", "corpus"))
        lines.append("")
    lines += ["## Unique failures", ""]
    if c.failures:
        rows = [(r["signature"].replace("|", "/")[:90], r["count"], r.get("found_after_s", ""),
                 f"`{r['replay']}`") for r in c.failures.values()]
        lines += table(rows, ("signature", "count", "found after (s)", "reproduce"))
    else:
        lines.append("none")
    lines += ["", "## Rejected (invalid inputs, counted)", ""]
    lines += table(sorted(st["rejected_by"].items()), ("why", "count")) if st["rejected_by"] else ["none"]
    lines += ["", "## Mutations applied", ""]
    lines += table(sorted(st["mutations"].items()), ("mutation", "count")) if st["mutations"] else ["none"]
    path = os.path.join(c.dir, "report.md")
    atomic_write(path, "\n".join(lines) + "\n")
    return path


__all__ = ["plot", "table", "write_report"]
