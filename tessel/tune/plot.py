"""The tuning-curve PNG: best time so far against trials, one line per search (tuned, random).

matplotlib is imported when a plot is made; without it `plot_curves` raises a TesselError that
says so (matplotlib is the `plot` extra: `pip install matplotlib`).

Example:
    >>> import os, tempfile
    >>> try:
    ...     _ = plot_curves({"xgb": [3e-3, 2e-3, 2e-3]}, os.path.join(tempfile.mkdtemp(), "curve.png"))
    ... except TesselError as e:
    ...     print("matplotlib" in str(e))
    ... else:
    ...     print(True)
    True
"""

from __future__ import annotations

from tessel.errors import TesselError


def plot_curves(curves: dict, path, title: str = "tuning curve") -> str:
    """Write a PNG of `curves` ({label: [best seconds after each trial or None]}) to `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TesselError("the tuning-curve plot needs matplotlib, which is not installed "
                          "(pip install matplotlib); the tuning log is written all the same") from None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, curve in curves.items():
        xs = [i + 1 for i, v in enumerate(curve) if v is not None]
        ys = [v * 1e3 for v in curve if v is not None]
        ax.step(xs, ys, where="post", label=label)
    ax.set_xlabel("trials")
    ax.set_ylabel("best time so far (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
