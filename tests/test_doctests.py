"""Every tessel module imports, and the examples in its docstrings run as written (doctest).

One test per module, so a failing example names its module. A module that needs an optional
third-party library that is not installed (torch, onnx ...) skips with that library's name; a
module whose own tessel import fails fails. Examples that need a GPU or a CUDA compiler carry
`# doctest: +SKIP` and say why in the docstring. `python -m pytest --doctest-modules tessel`
runs the same examples through pytest's own collector.

Measured: all modules' examples take about 6 s on the 2-core CI machine (most of it one TVM build
in `tessel.codegen.kernel` and torch's import in `tessel.frontend.torch`).
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# __main__ runs the command line when imported; it has no examples.
_NOT_IMPORTED = {"tessel.__main__"}


def _modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "tessel").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name not in _NOT_IMPORTED:
            names.append(name)
    return names


MODULES = _modules()


def test_every_module_is_covered():
    assert len(MODULES) > 50 and "tessel.ir.nodes" in MODULES and "tessel.codegen.cuda" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        if e.name is None or e.name == "tessel" or e.name.startswith("tessel."):
            raise  # our own module is broken: that fails
        pytest.skip(f"{name} needs {e.name}, which is not installed")
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    runner = doctest.DocTestRunner(optionflags=0)
    out = io.StringIO()
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} example(s) failed in {name}:\n{out.getvalue()}"
