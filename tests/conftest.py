"""Test-suite wide settings: the hypothesis profile, skipping `gpu` tests where no NVIDIA GPU is,
and failing (never skipping) a test whose own tessel import fails.

The GPU probe is cheap and cached: `nvidia-smi -L` when it exists, else `cuda.bindings` when it is
importable (never torch, which is slow to import and may not be installed). Set
TESSEL_TEST_GPU=0 to skip GPU tests even on a GPU machine, or =1 to run them without probing.

Honest skips: a skip is for a missing optional third-party piece (torch, onnx, a GPU, nvcc). A
broken tessel module must fail the suite, so `pytest.importorskip("tessel...")` imports for real
(its ImportError fails the test), and a skip raised while handling an ImportError of a tessel
module (`try: from tessel... except ImportError: pytest.skip(...)`) is reported as a failure.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, settings

# "ci": no per-example deadline (a 2-core CI machine is noisy), a modest number of examples.
settings.register_profile("ci", deadline=None, derandomize=False, max_examples=30, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])  # a CI failure prints @reproduce_failure
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@functools.lru_cache(maxsize=1)
def gpu_available() -> tuple[bool, str]:
    """Whether an NVIDIA GPU is visible, and how that was decided."""
    forced = os.environ.get("TESSEL_TEST_GPU")
    if forced in ("0", "1"):
        return forced == "1", f"TESSEL_TEST_GPU={forced}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, f"nvidia-smi -L failed: {e}"
        found = r.returncode == 0 and "GPU" in r.stdout
        return found, "nvidia-smi -L lists a GPU" if found else "nvidia-smi -L lists no GPU"
    try:
        from cuda.bindings import runtime
    except ImportError:
        return False, "no nvidia-smi and no cuda.bindings"
    try:
        err, count = runtime.cudaGetDeviceCount()
    except (RuntimeError, OSError) as e:  # no driver library, say
        return False, f"cuda.bindings failed: {e}"
    ok = int(err) == 0 and count > 0
    return ok, f"cuda.bindings sees {count} device(s)" if ok else "cuda.bindings sees no device"


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    ok, why = gpu_available()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU ({why})")
    for item in gpu_items:
        item.add_marker(skip)


# -- a broken tessel import fails, it does not skip ------------------------------------------------

def _is_ours(module_name) -> bool:
    return isinstance(module_name, str) and (module_name == "tessel" or module_name.startswith("tessel."))


_third_party_importorskip = pytest.importorskip


def _importorskip(modname: str, *args, **kwargs):
    """pytest.importorskip, except that tessel's own modules are imported for real."""
    if _is_ours(modname):
        return importlib.import_module(modname)
    return _third_party_importorskip(modname, *args, **kwargs)


pytest.importorskip = _importorskip


def _our_import_error(exc):
    """The ImportError of a tessel module in the exception's context chain, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError) and _is_ours(exc.name):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and call.excinfo is not None and call.excinfo.errisinstance(pytest.skip.Exception):
        err = _our_import_error(call.excinfo.value)
        if err is not None:
            rep.outcome = "failed"
            rep.longrepr = (f"{item.nodeid}: skipped because a tessel module failed to import: "
                            f"{type(err).__name__}: {err}\n(a broken tessel import fails the suite; "
                            f"import it unconditionally)")
