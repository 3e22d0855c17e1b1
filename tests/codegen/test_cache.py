"""The compiled-kernel cache: memory hits, disk reuse across a fresh memory cache, recovery from
corrupt files, atomic writes, and keys that change with everything that decides the code."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from tessel.codegen import cache, tvm_runtime
from tessel.codegen.tvm import compile_kernel
from tessel.ir.nodes import Buffer, For, Kernel, Store, Var


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh disk cache folder and an empty in-memory cache for one test."""
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(tmp_path))
    cache.default_cache().clear_memory()
    yield tmp_path
    cache.default_cache().clear_memory()


@pytest.fixture
def compiles(monkeypatch):
    """Counts calls of the LLVM compilation step."""
    calls = []
    real = tvm_runtime.compile_module

    def counting(func, target=None):
        calls.append(func)
        return real(func, target)

    monkeypatch.setattr(tvm_runtime, "compile_module", counting)
    return calls


def scale_kernel(factor: float) -> Kernel:
    i = Var("i")
    A, B = Buffer("A", (16,)), Buffer("B", (16,))
    return Kernel("scale", (A, B), For(i, 16, Store(B, (i,), A[i] * factor), "vectorized"))


def check_runs(runner, factor: float):
    a = np.random.default_rng(0).standard_normal(16).astype("float32")
    b = np.full(16, 9.0, "float32")
    runner(a, b)
    np.testing.assert_allclose(b, a * factor, rtol=1e-6)


def cache_files(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_second_compile_hits_memory(cache_dir, compiles):
    """The same kernel twice compiles once; a different kernel compiles again."""
    check_runs(compile_kernel(scale_kernel(3.0)), 3.0)
    check_runs(compile_kernel(scale_kernel(3.0)), 3.0)
    assert len(compiles) == 1
    check_runs(compile_kernel(scale_kernel(5.0)), 5.0)
    assert len(compiles) == 2


def test_disk_cache_reused_by_a_fresh_memory_cache(cache_dir, compiles):
    """After the memory cache is emptied (a new process, in effect) the kernel loads from disk."""
    check_runs(compile_kernel(scale_kernel(2.0)), 2.0)
    files = cache_files(cache_dir)
    assert len(files) == 1 and files[0].suffix == ".so"
    fresh = cache.ModuleCache()
    check_runs(compile_kernel(scale_kernel(2.0), cache=fresh), 2.0)
    assert len(compiles) == 1
    assert fresh.stats["disk"] == 1 and fresh.stats["built"] == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_file_is_reported_and_rebuilt(cache_dir, compiles, monkeypatch, damage):
    """A damaged cache file gives a warning, is replaced by a good one, and the kernel still runs."""
    check_runs(compile_kernel(scale_kernel(4.0)), 4.0)
    (good,) = cache_files(cache_dir)
    # Damage a copy in a folder this process never loaded a library from: the dynamic loader
    # would otherwise hand back the library it already mapped for that path.
    other = cache_dir / "other"
    bad = other / good.relative_to(cache_dir)
    bad.parent.mkdir(parents=True)
    data = good.read_bytes()
    bad.write_bytes({"garbage": b"not a shared library" * 50, "truncated": data[:200], "empty": b""}[damage])
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(other))
    fresh = cache.ModuleCache()
    with pytest.warns(RuntimeWarning, match="could not be loaded"):
        runner = compile_kernel(scale_kernel(4.0), cache=fresh)
    check_runs(runner, 4.0)
    assert len(compiles) == 2 and fresh.stats["corrupt"] == 1
    assert bad.read_bytes()[:4] == b"\x7fELF"  # rewritten with a real library
    # The rewritten file is good: a third cache loads it without warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cache.ModuleCache()
        check_runs(compile_kernel(scale_kernel(4.0), cache=again), 4.0)
    assert again.stats["disk"] == 1


def test_writes_are_atomic_and_leave_no_temporaries(cache_dir):
    """Only the final file remains after a build (the temporary was renamed onto it)."""
    compile_kernel(scale_kernel(6.0))
    names = [p.name for p in cache_files(cache_dir)]
    assert len(names) == 1 and not names[0].startswith(".") and "tmp" not in names[0]


def test_failed_export_leaves_no_file(tmp_path):
    """An export that fails half-way leaves neither the target file nor a temporary."""

    class Broken:
        def export_library(self, path):
            with open(path, "wb") as f:
                f.write(b"half a library")
            raise OSError("disk full")

    target = tmp_path / "k.so"
    with pytest.raises(OSError):
        tvm_runtime.export(Broken(), str(target))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_cache_dir_only_warns(tmp_path, monkeypatch, compiles):
    """A cache folder that cannot be created costs a warning, never the build."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(blocker / "sub"))
    fresh = cache.ModuleCache()
    with pytest.warns(RuntimeWarning, match="could not write"):
        runner = compile_kernel(scale_kernel(7.0), cache=fresh)
    check_runs(runner, 7.0)


def test_empty_cache_dir_setting_disables_the_disk(tmp_path, monkeypatch, compiles):
    monkeypatch.setenv("TESSEL_CACHE_DIR", "")
    assert cache.cache_dir() is None
    fresh = cache.ModuleCache()
    check_runs(compile_kernel(scale_kernel(8.0), cache=fresh), 8.0)
    assert fresh.stats["built"] == 1 and len(compiles) == 1


def test_default_cache_dir(monkeypatch):
    monkeypatch.delenv("TESSEL_CACHE_DIR", raising=False)
    assert cache.cache_dir() == cache.Path.home() / ".cache" / "tessel"


def test_cache_key_depends_on_every_part(monkeypatch):
    base = cache.cache_key("kernel text", "llvm znver3", "tvm-0.27")
    assert base == cache.cache_key("kernel text", "llvm znver3", "tvm-0.27")
    assert base != cache.cache_key("kernel text!", "llvm znver3", "tvm-0.27")
    assert base != cache.cache_key("kernel text", "llvm znver4", "tvm-0.27")
    assert base != cache.cache_key("kernel text", "llvm znver3", "tvm-0.28")
    import tessel

    monkeypatch.setattr(tessel, "__version__", "99.0")
    assert base != cache.cache_key("kernel text", "llvm znver3", "tvm-0.27")
    # Parts are separated: moving text between them changes the key.
    assert cache.cache_key("ab", "c", "v") != cache.cache_key("a", "bc", "v")


def test_loading_a_library_without_the_symbol_fails(cache_dir):
    """A cache file holding another kernel is refused by load (and so treated as corrupt)."""
    compile_kernel(scale_kernel(9.0))
    (path,) = cache_files(cache_dir)
    with pytest.raises(Exception, match="no function"):
        tvm_runtime.load(str(path), "tessel_other")
    assert os.path.exists(path)


def test_the_cache_key_covers_every_module_the_translator_uses():
    """Each tessel.codegen module that tvm_tir imports (and tvm_tir itself) is hashed into the
    backend version, so changing its code never reuses modules compiled before."""
    import ast
    from pathlib import Path

    from tessel.codegen import tvm as backend

    folder = Path(backend.__file__).parent
    used = {"tvm_tir", "tvm_runtime", "tvm_strided"}
    for name in list(used):
        tree = ast.parse((folder / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "tessel.codegen":
                used |= {a.name for a in node.names if a.name.startswith("tvm_")}
    assert {"tvm_fastmath", "tvm_select", "tvm_minmax"} <= used
    assert used <= {p.stem for p in backend.backend_sources()}
