"""The cache of compiled kernels: in memory for this process, and on disk across processes.

A compiled kernel is keyed by a stable hash of everything that decides its machine code: the IR
text of the scheduled kernel, the backend target (for the CPU: triple and CPU name), the tessel
version and the version of the code generator (TVM). A change to any of them is a new key, so a
stale entry is never used; old entries are simply left behind.

On disk, entries live under `TESSEL_CACHE_DIR` (default `~/.cache/tessel`; set it to an empty
string to turn the disk cache off), one file per kernel named by its key. Files are written
atomically (a temporary file in the same folder, then `os.replace`), so a reader never sees half a
file, and two processes building the same kernel at once both end with a good file. A file that
cannot be loaded (corrupt, truncated, foreign) is reported with a warning, deleted, and rebuilt:
never fatal.

The in-memory cache is a plain dict owned by a `ModuleCache`; `default_cache()` is the one the
driver uses, and `clear_memory()` empties it (tests use that to check the disk layer).

Example:
    >>> key = cache_key("kernel k(...) {...}", "llvm znver3", backend_version="0.27")
    >>> len(key)
    40
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path


def cache_key(ir_text: str, target: str, backend_version: str) -> str:
    """A stable hex digest of the IR text, the target, the tessel version and the backend version."""
    from tessel import __version__

    h = hashlib.sha256()
    for part in (__version__, backend_version, target, ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:40]


def cache_dir() -> Path | None:
    """The disk cache folder (`TESSEL_CACHE_DIR`, default `~/.cache/tessel`), or None if disabled.

    >>> isinstance(cache_dir(), (Path, type(None)))
    True
    """
    value = os.environ.get("TESSEL_CACHE_DIR")
    if value is None:
        return Path.home() / ".cache" / "tessel"
    return Path(value).expanduser() if value.strip() else None


class ModuleCache:
    """Compiled modules by key: a dict in memory, shared-library files on disk.

    `get_or_build(key, build, save, load)` returns the module for `key`: from memory, else from
    disk (via `load(path)`), else `build()` — which is then saved with `save(module, path)` and
    loaded back from that file.
    `stats` counts where answers came from.
    """

    def __init__(self):
        self.memory: dict[str, object] = {}
        self.stats = {"memory": 0, "disk": 0, "built": 0, "corrupt": 0}

    def clear_memory(self) -> None:
        self.memory.clear()

    def get_or_build(self, key: str, build: Callable[[], object], save: Callable[[object, str], None],
                     load: Callable[[str], object], suffix: str = ".so", folder: str = "cpu"):
        module = self.memory.get(key)
        if module is not None:
            self.stats["memory"] += 1
            return module
        root = cache_dir()
        path = str(root / folder / (key + suffix)) if root is not None else None
        if path is not None and os.path.exists(path):
            try:
                module = load(path)
                self.stats["disk"] += 1
            except Exception as e:  # noqa: BLE001 - a bad file must never stop a build: rebuild it
                self.stats["corrupt"] += 1
                warnings.warn(f"tessel: cached kernel {path} could not be loaded ({type(e).__name__}: "
                              f"{_first_line(e)}); deleting it and recompiling", RuntimeWarning, stacklevel=3)
                _unlink(path)
                module = None
        if module is None:
            module = build()
            self.stats["built"] += 1
            if path is not None:
                try:
                    save(module, path)
                    # Run what was saved: the same code as later processes, and for LLVM modules
                    # cheaper than JIT-compiling the module a second time.
                    module = load(path)
                except Exception as e:  # noqa: BLE001 - a full or read-only disk costs speed only
                    warnings.warn(f"tessel: could not write or reload the kernel cache file {path} "
                                  f"({type(e).__name__}: {_first_line(e)})", RuntimeWarning, stacklevel=3)
        self.memory[key] = module
        return module


def _first_line(e: Exception) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


_DEFAULT = ModuleCache()  # the process-wide cache of compiled kernels (explicit, clearable)


def default_cache() -> ModuleCache:
    """The cache the driver uses."""
    return _DEFAULT
