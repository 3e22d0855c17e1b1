"""Compiling CUDA C++ to machine code (cubin) for a named architecture, with a disk cache.

Two compilers, tried in this order: NVRTC through NVIDIA's Python bindings (`cuda.core`'s
`Program`, in process, tens of milliseconds) and `nvcc` in a subprocess (about a second). Neither
needs a GPU: code for `sm_90a` or `sm_80` is produced on any machine that has one of them, and
only running it needs the device. `TESSEL_CUDA_COMPILER=nvrtc|nvcc` (or `compiler=`) picks one.

Both compile with FMA contraction off (`-fmad=false`): the reference interpreter rounds after
every operation, and `a * b + c` contracted into one fma would round once (tessel's own
tensor-core and reduction schedules do not depend on contraction for speed: they are memory- or
tensor-core-bound). The toolkit's headers (cuda_fp16.h, ...) come from the CUDA install
(`CUDA_HOME`, `CUDA_PATH`, the folder of `nvcc`, /usr/local/cuda) or the `nvidia-cuda-runtime`
wheel; tessel's own header from `include/` beside this file.

Cache: a binary is keyed by a hash of the source, the architecture, the compiler and its version,
the options and tessel's device header, and kept in memory and under `TESSEL_CACHE_DIR`
(`cache.cache_dir()`, in `cuda/`), written atomically (a temporary file, then `os.replace`). The
source is saved next to it (`<key>.cu`); a failed compile saves it under `cuda/failed/` and
raises CodegenError with the compiler's log and that path.

Example (skipped in the doctest run: it needs nvcc or NVRTC):
    >>> src = 'extern "C" __global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }'
    >>> b = compile_cuda(src, "sm_80", name="k")   # doctest: +SKIP
    >>> b.arch, b.cubin[:4]                          # doctest: +SKIP
    ('sm_80', b'\\x7fELF')
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from tessel.codegen.cache import cache_dir
from tessel.errors import CodegenError

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
HEADER = INCLUDE_DIR / "tessel_cuda.cuh"
COMPILERS = ("nvrtc", "nvcc")
NVCC_TIMEOUT_S = 600


@dataclass(frozen=True)
class Binary:
    """Compiled code: `code` (cubin bytes, or PTX text as bytes), its architecture, the compiler
    that made it ("nvrtc 13.0" / "nvcc 13.0.88"), the cache key and the cache file (None when the
    disk cache is off)."""

    code: bytes
    arch: str
    compiler: str
    key: str
    path: str | None = None
    kind: str = "cubin"

    @property
    def cubin(self) -> bytes:
        return self.code


class BuildCache:
    """Compiled binaries by key: a dict in memory, files on disk. `stats` counts where each answer
    came from ("memory", "disk", "built"), which is how tests see that a second build does not
    run the compiler."""

    def __init__(self):
        self.memory: dict[str, Binary] = {}
        self.stats = {"memory": 0, "disk": 0, "built": 0}

    def clear_memory(self) -> None:
        self.memory.clear()


_CACHE = BuildCache()  # the process-wide cache (explicit, clearable)


def default_cache() -> BuildCache:
    return _CACHE


# ---------------------------------------------------------------------------------------------
# Finding the compilers and the toolkit headers
# ---------------------------------------------------------------------------------------------


def _has_fp16_header(d: Path) -> bool:
    return (d / "cuda_fp16.h").is_file()


@functools.cache
def cuda_include_dirs() -> tuple[str, ...]:
    """Folders holding the CUDA toolkit's headers (cuda_fp16.h, ...), first match first."""
    cands: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        if os.environ.get(var):
            cands.append(Path(os.environ[var]) / "include")
    nvcc = nvcc_path()
    if nvcc:
        cands.append(Path(nvcc).resolve().parent.parent / "include")
    cands += [Path("/usr/local/cuda/include")]
    try:  # the pip wheels (nvidia-cuda-runtime) ship the headers NVRTC needs
        from cuda.pathfinder import find_nvidia_header_directory

        found = find_nvidia_header_directory("cudart")
        if found:
            cands.append(Path(found))
    except Exception:  # noqa: BLE001 - an optional helper; its absence or failure is not an error
        pass
    out = []
    for d in cands:
        if _has_fp16_header(d) and str(d) not in out:
            out.append(str(d))
    return tuple(out)


@functools.cache
def nvcc_path() -> str | None:
    """The nvcc executable: `$CUDA_HOME/bin/nvcc`, else the one on PATH, else /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        p = Path(os.environ.get(var, "")) / "bin" / "nvcc"
        if os.environ.get(var) and p.is_file():
            return str(p)
    found = shutil.which("nvcc")
    if found:
        return found
    p = Path("/usr/local/cuda/bin/nvcc")
    return str(p) if p.is_file() else None


@functools.cache
def nvcc_version() -> str | None:
    """nvcc's version ("13.0.88"), or None without nvcc."""
    nvcc = nvcc_path()
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"V(\d+\.\d+\.\d+)", out) or re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


@functools.cache
def nvrtc_version() -> str | None:
    """NVRTC's version ("13.0") when cuda.core and the NVRTC library can both be loaded, else None."""
    try:
        _program_api()
        from cuda.bindings import nvrtc

        err, major, minor = nvrtc.nvrtcVersion()
        if int(err) != 0:
            return None
        return f"{major}.{minor}"
    except Exception:  # noqa: BLE001 - missing package, missing libnvrtc: NVRTC is just not there
        return None


def _program_api():
    try:
        from cuda.core import Program, ProgramOptions
    except ImportError:
        from cuda.core.experimental import Program, ProgramOptions  # cuda.core before 0.4
    return Program, ProgramOptions


def available_compilers() -> list[str]:
    """The usable compilers, preferred first ("nvrtc", "nvcc")."""
    out = []
    if nvrtc_version() is not None and cuda_include_dirs():
        out.append("nvrtc")
    if nvcc_version() is not None:
        out.append("nvcc")
    return out


def choose_compiler(compiler: str | None = None) -> str:
    """The compiler to use: `compiler`, else `TESSEL_CUDA_COMPILER`, else the first available.

    Raises CodegenError when none (or not the one asked for) is available.
    """
    want = compiler or os.environ.get("TESSEL_CUDA_COMPILER", "").strip().lower() or None
    have = available_compilers()
    if want is not None:
        if want not in COMPILERS:
            raise CodegenError(f"unknown CUDA compiler {want!r}; expected one of {', '.join(COMPILERS)}")
        if want not in have:
            raise CodegenError(f"the CUDA compiler {want!r} is not available here (available: "
                               f"{', '.join(have) or 'none'}); {_install_hint()}")
        return want
    if not have:
        raise CodegenError(f"no CUDA compiler is available to build CUDA kernels; {_install_hint()}")
    return have[0]


def _install_hint() -> str:
    return ("install NVIDIA's Python bindings (pip install cuda-core cuda-bindings nvidia-cuda-nvrtc "
            "nvidia-cuda-runtime) or the CUDA toolkit (nvcc)")


def compiler_id(compiler: str) -> str:
    return f"{compiler} {nvrtc_version() if compiler == 'nvrtc' else nvcc_version()}"


@functools.cache
def _header_digest() -> str:
    return hashlib.sha256(HEADER.read_bytes()).hexdigest()[:16] if HEADER.is_file() else "none"


# ---------------------------------------------------------------------------------------------
# Compiling
# ---------------------------------------------------------------------------------------------


def build_key(source: str, arch: str, compiler: str, kind: str = "cubin", fmad: bool = False) -> str:
    """The cache key of a compile: source, arch, compiler and version, options, header, tessel."""
    from tessel import __version__

    h = hashlib.sha256()
    for part in (__version__, compiler_id(compiler), arch, kind, f"fmad={fmad}", _header_digest(), source):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:40]


def compile_cuda(source: str, arch: str, name: str = "kernel", compiler: str | None = None, kind: str = "cubin",
                 fmad: bool = False, cache: BuildCache | None = None) -> Binary:
    """Compile CUDA C++ `source` for `arch` ("sm_90a", "sm_80", ...) into a cubin (`kind="ptx"`:
    PTX text), from the cache when it was compiled before. `name` names the kernel in messages.

    Raises CodegenError with the compiler's log and the path of the saved source on failure.
    """
    if not re.fullmatch(r"sm_\d{2,3}a?", arch or ""):
        raise CodegenError(f"kernel '{name}': CUDA architecture {arch!r} is not of the form sm_XY or sm_XYa")
    if kind not in ("cubin", "ptx"):
        raise CodegenError(f"kernel '{name}': unknown output kind {kind!r}; expected 'cubin' or 'ptx'")
    cache = cache if cache is not None else _CACHE
    comp = choose_compiler(compiler)
    key = build_key(source, arch, comp, kind, fmad)
    hit = cache.memory.get(key)
    if hit is not None:
        cache.stats["memory"] += 1
        return hit
    root = cache_dir()
    folder = root / "cuda" if root is not None else None
    path = str(folder / f"{key}.{kind}") if folder is not None else None
    if path is not None and os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                code = f.read()
            if code:
                binary = Binary(code, arch, compiler_id(comp), key, path, kind)
                cache.memory[key] = binary
                cache.stats["disk"] += 1
                return binary
        except OSError:
            pass  # unreadable: rebuild it
    code = _compile(source, arch, name, comp, kind, fmad, key, folder)
    cache.stats["built"] += 1
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / f"{key}.cu", source.encode())
            write_atomic(Path(path), code)
        except OSError as e:  # a full or read-only disk costs speed only
            warnings.warn(f"tessel: could not write the CUDA kernel cache file {path} ({e})", RuntimeWarning,
                          stacklevel=2)
            path = None
    binary = Binary(code, arch, compiler_id(comp), key, path, kind)
    cache.memory[key] = binary
    return binary


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _compile(source, arch, name, compiler, kind, fmad, key, folder) -> bytes:
    try:
        if compiler == "nvrtc":
            return _compile_nvrtc(source, arch, name, kind, fmad)
        return _compile_nvcc(source, arch, name, kind, fmad)
    except _CompileFailed as e:
        saved = _save_failed(source, key, folder)
        raise CodegenError(f"kernel '{name}': CUDA compilation for {arch} with {compiler_id(compiler)} failed; "
                           f"the source is saved at {saved}\n{e.log.strip()}") from None


class _CompileFailed(Exception):
    def __init__(self, log: str):
        super().__init__(log)
        self.log = log


def _save_failed(source: str, key: str, folder: Path | None) -> str:
    try:
        if folder is not None:
            failed = folder / "failed"
            failed.mkdir(parents=True, exist_ok=True)
        else:
            failed = Path(tempfile.mkdtemp(prefix="tessel-cuda-"))
        path = failed / f"{key}.cu"
        write_atomic(path, source.encode())
        return str(path)
    except OSError as e:
        return f"(not saved: {e})"


def _compile_nvrtc(source: str, arch: str, name: str, kind: str, fmad: bool) -> bytes:
    Program, ProgramOptions = _program_api()
    opts = ProgramOptions(name=f"{_safe(name)}.cu", arch=arch, std="c++17", fma=fmad,
                          include_path=[str(INCLUDE_DIR), *cuda_include_dirs()])
    log = io.StringIO()
    try:
        prog = Program(source, code_type="c++", options=opts)
        obj = prog.compile(kind, logs=log)
    except Exception as e:  # noqa: BLE001 - NVRTC's errors carry the log; report it whatever the type
        raise _CompileFailed(f"{log.getvalue()}\n{e}") from None
    code = obj.code
    return code.encode() if isinstance(code, str) else bytes(code)


def _compile_nvcc(source: str, arch: str, name: str, kind: str, fmad: bool) -> bytes:
    nvcc = nvcc_path()
    with tempfile.TemporaryDirectory(prefix="tessel-nvcc-") as tmp:
        src = Path(tmp) / f"{_safe(name)}.cu"
        out = Path(tmp) / f"{_safe(name)}.{kind}"
        src.write_text(source)
        cmd = [nvcc, f"-{kind}", f"-arch={arch}", "-std=c++17", f"-fmad={'true' if fmad else 'false'}",
               f"-I{INCLUDE_DIR}", "-o", str(out), str(src)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=NVCC_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise _CompileFailed(f"nvcc did not finish within {NVCC_TIMEOUT_S} s") from None
        if r.returncode != 0 or not out.is_file():
            raise _CompileFailed(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        return out.read_bytes()


def _safe(name: str) -> str:
    return re.sub(r"\W", "_", name) or "kernel"


__all__ = ["Binary", "BuildCache", "available_compilers", "build_key", "choose_compiler", "compile_cuda",
           "compiler_id", "cuda_include_dirs", "default_cache", "nvcc_path", "nvcc_version", "nvrtc_version",
           "write_atomic"]
