"""Imports between tessel's folders point down the floors DESIGN.md draws (no cycles, no shortcuts).

Floors, from the ground up: `ir` imports no other folder; `frontend`, `passes`, `schedules` and
`codegen` stand on `ir` (passes may use the frontend's Graph, schedules may use passes); `tune`
stands on those; `compiler` (the driver) on all of them; `cli` (with the demos and `__main__`)
and `fuzz` on top. `tessel/errors.py` and the eager names of `tessel/__init__.py` are the base
that anyone may import.

Every `import` / `from ... import` of a tessel module is checked, at module level and inside
functions alike (a lazy import is still a dependency), and so are `importlib.import_module(...)`
calls with a constant name and `tessel.<lazy name>` uses (`tessel.build` loads the driver).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tessel

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tessel"

# floor -> the floors it may import (besides itself and the base).
_BELOW_TUNE = {"ir", "frontend", "passes", "schedules", "codegen"}
ALLOWED = {
    "ir": set(),
    "frontend": {"ir"},
    "passes": {"ir", "frontend"},
    "schedules": {"ir", "passes"},
    "codegen": {"ir"},
    "tune": _BELOW_TUNE,
    "compiler": _BELOW_TUNE | {"tune"},
    "fuzz": _BELOW_TUNE | {"tune", "compiler"},
    "cli": _BELOW_TUNE | {"tune", "compiler", "fuzz"},
}
# top-level modules that are not folders: which floor each stands on.
_TOP_MODULES = {"cli": "cli", "__main__": "cli", "demo": "cli", "demo_models": "cli"}
BASE = {"errors", "tessel"}  # tessel.errors, and `tessel` itself (its eager names: errors, the DSL)
# Modules that stand on another floor than their folder's. `ts.tune` is at once the tuner package
# and the user's entry point (the package is callable), and that entry builds candidates as
# `tessel.build` does: the package's __init__, api.py and commands.py are the tuner's glue to the
# driver, on the driver's floor. The rest of tune/ stays below the driver, and nothing below the
# driver may import the glue (the check treats importing it as importing compiler).
MODULE_FLOORS = {"tessel.tune": "compiler", "tessel.tune.api": "compiler", "tessel.tune.commands": "compiler"}


def floor_of_module(module: str) -> str:
    """The floor of a dotted tessel module name ("tessel.ir.nodes" -> "ir").

    >>> floor_of_module("tessel.codegen.cuda"), floor_of_module("tessel.errors"), floor_of_module("tessel")
    ('codegen', 'errors', 'tessel')
    """
    if module in MODULE_FLOORS:
        return MODULE_FLOORS[module]
    parts = module.split(".")
    if len(parts) == 1:
        return "tessel"
    return _TOP_MODULES.get(parts[1], parts[1])


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The tessel modules an `ImportFrom` loads (relative imports resolved; `from tessel import x`
    resolved to the submodule or the lazy target that `x` is)."""
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target != "tessel" and not target.startswith("tessel."):
        return []
    folder = ROOT.joinpath(*target.split("."))
    out = []
    for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
        if target == "tessel" and alias.name in tessel._LAZY:
            out.append(tessel._LAZY[alias.name][0])
        elif (folder / alias.name).is_dir() or (folder / f"{alias.name}.py").exists():
            out.append(f"{target}.{alias.name}")
        else:
            out.append(target)
    return out


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported tessel module) for every import in the file, wherever it stands."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    tessel_aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tessel" or alias.name.startswith("tessel."):
                    found.append((node.lineno, alias.name))
                    if alias.name == "tessel" and alias.asname:
                        tessel_aliases.add(alias.asname)
                    elif alias.asname is None:
                        tessel_aliases.add("tessel")
        elif isinstance(node, ast.ImportFrom):
            found.extend((node.lineno, m) for m in _resolve_from(node, module, path.name == "__init__.py"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and node.args[0].value.startswith("tessel.")):
            found.append((node.lineno, node.args[0].value))
    for node in ast.walk(tree):  # `ts.build(...)` after `import tessel as ts` loads the driver
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in tessel_aliases
                and node.attr in tessel._LAZY):
            found.append((node.lineno, tessel._LAZY[node.attr][0]))
    return found


def violations() -> list[str]:
    """Every import that points up or sideways, as 'file:line: floor X imports module (floor Y)'."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        module = _module_name(path)
        here = floor_of_module(module)
        for line, target in imports_of(path):
            there = floor_of_module(target)
            if there == here or there == "errors":
                continue
            rel = path.relative_to(ROOT)
            if here == "errors":
                out.append(f"{rel}:{line}: tessel/errors.py is the base and imports no tessel module, got {target}")
            elif here == "tessel":  # the package's __init__: eagerly only the base and the DSL (ir)
                if there not in ("ir",):
                    out.append(f"{rel}:{line}: tessel/__init__.py imports {target} eagerly; put it in _LAZY")
            elif there == "tessel":
                continue
            elif there not in ALLOWED[here]:
                out.append(f"{rel}:{line}: {here} imports {target} ({there}); {here} may import only "
                           f"{', '.join(sorted(ALLOWED[here] | {'errors'})) or 'errors'}")
    return out


def test_every_folder_has_a_floor():
    """A new folder under tessel/ must be placed on a floor here (and in DESIGN.md) before it is used."""
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__", "errors"}
    assert folders <= set(ALLOWED), f"folders without a floor: {sorted(folders - set(ALLOWED))}"
    assert modules <= set(_TOP_MODULES), f"top-level modules without a floor: {sorted(modules - set(_TOP_MODULES))}"


def test_imports_point_down_the_floors():
    found = violations()
    assert not found, "imports that do not point down DESIGN.md's floors:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from tessel.compiler.driver import build", "codegen imports tessel.compiler.driver (compiler)"),
    ("def f():\n    from tessel.frontend import graph\n", "codegen imports tessel.frontend (frontend)"),
    ("import tessel as ts\nk = ts.build", "codegen imports tessel.compiler.driver (compiler)"),
    ("from tessel import compile", "codegen imports tessel.compiler.compile_api (compiler)"),
    ("import importlib\nimportlib.import_module('tessel.tune.search')", "codegen imports tessel.tune.search (tune)"),
    ("from ..schedules import loops", "codegen imports tessel.schedules.loops (schedules)"),
    ("from tessel.tune import api", "codegen imports tessel.tune.api (compiler)"),
])
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, source, expected):
    """The checker is not vacuous: a planted upward import in codegen is reported with file and line."""
    import tests.test_layering as me

    fake = tmp_path / "tessel"
    (fake / "codegen").mkdir(parents=True)
    (fake / "codegen" / "__init__.py").write_text("")
    (fake / "codegen" / "bad.py").write_text(source + "\n")
    (fake / "errors.py").write_text("")
    for folder, module in (("schedules", "loops"), ("tune", "api")):  # harmless neighbours to point at
        (fake / folder).mkdir()
        (fake / folder / "__init__.py").write_text("")
        (fake / folder / f"{module}.py").write_text("")
    monkeypatch.setattr(me, "ROOT", tmp_path)
    monkeypatch.setattr(me, "PKG", fake)
    found = me.violations()
    assert len(found) == 1 and found[0].startswith("tessel/codegen/bad.py:") and expected in found[0], found


def test_down_and_base_imports_pass(tmp_path, monkeypatch):
    import tests.test_layering as me

    fake = tmp_path / "tessel"
    (fake / "compiler").mkdir(parents=True)
    (fake / "compiler" / "ok.py").write_text("from tessel.codegen import cuda\nfrom tessel.errors import TesselError\n"
                                             "import tessel as ts\nx = ts.placeholder\nfrom tessel.ir import nodes\n")
    monkeypatch.setattr(me, "ROOT", tmp_path)
    monkeypatch.setattr(me, "PKG", fake)
    assert me.violations() == []
