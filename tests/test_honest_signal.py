"""The suite's signal is honest: a broken tessel import fails (never skips), optional third-party
pieces may skip, and no test guards our own modules with a skip condition.

The conftest net is checked end to end: a throw-away test directory with the suite's conftest and
one test per pattern runs in a fresh pytest, and each outcome is read back.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CASES = '''
import pytest


def test_importorskip_ours():
    pytest.importorskip("tessel.no_such_module_xyz")


def test_except_importerror_skip_ours():
    try:
        from tessel.ir import no_such_name_xyz  # noqa: F401
    except ImportError:
        pytest.skip("not there yet")


def test_importorskip_third_party():
    pytest.importorskip("no_such_third_party_xyz")


def test_except_importerror_skip_third_party():
    try:
        import no_such_third_party_xyz  # noqa: F401
    except ImportError:
        pytest.skip("optional dependency")


def test_importorskip_ours_that_exists():
    assert pytest.importorskip("tessel.ir.nodes").__name__ == "tessel.ir.nodes"
'''

_REPORT = '''
import json, pytest
outcomes = {}
class Collect:
    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            outcomes.setdefault(report.nodeid.split("::")[-1], report.outcome)
pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "CASES"], plugins=[Collect()])
print("OUTCOMES=" + json.dumps(outcomes))
'''


def test_a_broken_tessel_import_fails_and_third_party_skips(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(_CASES)
    script = _REPORT.replace("CASES", str(tmp_path / "test_cases.py"))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    line = [x for x in r.stdout.splitlines() if x.startswith("OUTCOMES=")]
    assert line, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads(line[0][len("OUTCOMES="):]) == {
        "test_importorskip_ours": "failed",
        "test_except_importerror_skip_ours": "failed",
        "test_importorskip_third_party": "skipped",
        "test_except_importerror_skip_third_party": "skipped",
        "test_importorskip_ours_that_exists": "passed",
    }


# A skip condition computed from whether a tessel module imports: the conftest net cannot see
# those (the ImportError is swallowed before the skip), so they are banned outright.
# (`pytest.importorskip("tessel...")` needs no ban: the conftest makes it a real import.)
_GUARDS = [
    re.compile(r"""find_spec\(\s*["']tessel"""),
    re.compile(r"""skipif\([^)]*(interp_run\(\)|_MISSING)"""),
]


def test_no_test_guards_our_own_modules_with_a_skip():
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(g.search(line) for g in _GUARDS):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "tests that skip when a tessel module does not import (import it unconditionally):\n" + \
        "\n".join(found)


def _guarded_tessel_imports(path: Path) -> list[int]:
    """Lines of `try:` blocks that import a tessel module and catch its ImportError."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for h in node.handlers:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)} if h.type is not None else {"*"}
        if not caught & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException", "*"}:
            continue
        for stmt in node.body:
            for m in ast.walk(stmt):
                names = [a.name for a in m.names] if isinstance(m, ast.Import) else \
                    [m.module or ""] if isinstance(m, ast.ImportFrom) and not m.level else []
                if any(n == "tessel" or n.startswith("tessel.") for n in names):
                    lines.append(node.lineno)
    return sorted(set(lines))


def test_no_test_catches_the_import_error_of_our_own_modules():
    """`try: from tessel... except ImportError: <skip, return None, pass>` hides a broken module
    whatever the handler does; import it unconditionally."""
    found = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "tests").rglob("*.py"))
             for n in _guarded_tessel_imports(p)]
    assert not found, "tests that catch the ImportError of a tessel module: " + ", ".join(found)


def test_the_guard_scan_finds_the_patterns(tmp_path):
    src = tmp_path / "t.py"
    src.write_text("def f():\n    try:\n        from tessel.ir import interp\n    except ImportError:\n"
                   "        return None\n\ntry:\n    import torch\nexcept ImportError:\n    torch = None\n")
    assert _guarded_tessel_imports(src) == [2]
