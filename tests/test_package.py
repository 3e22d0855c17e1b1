"""The package as installed: `import tessel` is fast and light, the command runs, the metadata agrees."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tessel

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tvm", "tvm_ffi", "torch", "cuda", "xgboost", "onnx", "onnxruntime")

_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import tessel
dt = time.perf_counter() - t0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"seconds": dt, "heavy": heavy}}))
"""


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, cwd=ROOT, timeout=60)


def _import_probe() -> dict:
    r = _run(sys.executable, "-c", _PROBE.format(heavy=set(HEAVY)))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_is_light():
    """`import tessel` loads none of TVM, torch, CUDA bindings, XGBoost, ONNX (DESIGN principle 6)."""
    assert _import_probe()["heavy"] == []


def test_import_is_fast():
    """`import tessel` takes under a second (best of three fresh interpreters: CI machines are noisy)."""
    times = []
    for _ in range(3):
        times.append(_import_probe()["seconds"])
        if times[-1] < 1.0:
            break
    assert min(times) < 1.0, f"import tessel took {min(times):.2f} s at best ({times})"


def test_python_m_tessel_help():
    r = _run(sys.executable, "-m", "tessel", "--help")
    assert r.returncode == 0, r.stderr
    for command in ("demo", "version", "compile", "tune", "fuzz", "log", "bench"):
        assert re.search(rf"^\s+{command}\s", r.stdout, re.MULTILINE), f"{command!r} missing from --help:\n{r.stdout}"


def test_console_script_help():
    """The `tessel` script that pip installed next to this interpreter runs."""
    script = Path(sys.executable).parent / "tessel"
    if not script.exists():
        pytest.skip(f"no tessel script beside {sys.executable}: the package is not installed (pip install -e .)")
    r = _run(str(script), "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: tessel")


def test_console_script_entry_point():
    cfg = _setup_cfg()
    scripts = [x.strip() for x in cfg["options.entry_points"]["console_scripts"].splitlines() if x.strip()]
    assert scripts == ["tessel = tessel.cli:main"]
    from tessel.cli import main

    assert callable(main)


def test_version_matches_setup_cfg():
    """setup.cfg takes the version from tessel.__version__, and the installed metadata (if any) agrees."""
    cfg = _setup_cfg()
    assert cfg["metadata"]["version"].strip() == "attr: tessel.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d+)*", tessel.__version__), tessel.__version__
    r = _run(sys.executable, "-m", "tessel", "version")
    assert r.returncode == 0 and r.stdout.strip() == f"tessel {tessel.__version__}"
    from importlib import metadata

    try:
        dist = metadata.distribution("tessel")
    except metadata.PackageNotFoundError:
        pytest.skip("tessel is not installed in this interpreter; the metadata check needs pip install -e .")
    assert dist.version == tessel.__version__, "installed metadata is stale: run pip install -e . again"


def test_pinned_requirements():
    """The pins that shared/FACTS.md asks for: tvm-ffi 0.1.14.post1 (newer segfaults) and xgboost-cpu."""
    reqs = [x.strip() for x in _setup_cfg()["options"]["install_requires"].splitlines() if x.strip()]
    reqs = [x for x in reqs if not x.startswith("#")]
    assert "apache-tvm==0.27.0.post1" in reqs
    assert "apache-tvm-ffi==0.1.14.post1" in reqs
    assert "xgboost-cpu" in reqs and not any(re.match(r"xgboost\b(?!-)", x) for x in reqs)


def _readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_readme_has_the_two_commands_and_ci_runs_them():
    """README.md opens with the set-up and test commands, and .ci/run runs exactly those."""
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.DOTALL).group(1)
    setup = 'pip install torch==2.13.0 && pip install -e ".[test,torch,onnx]"'
    assert f"{setup} && tessel demo" in first_block
    assert "python -m pytest -q" in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"SETUP=(bash -c '{setup}')" in ci and "TESTS=(python -m pytest -q)" in ci


def test_readme_examples_run():
    """The README's Python examples run as written (in order, sharing one namespace)."""
    blocks = _readme_python_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
