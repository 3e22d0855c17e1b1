"""Model artifacts: a compiled CPU model saved to one file (`CompiledModel.save`, `tessel compile -o`)
and run again by `tessel.load` without compiling anything.

The file (suffix `.tsl` by convention) is a zip archive; nothing in it is pickled:

    manifest.json           format name and version, tessel and TVM versions, the host target the
                            kernels were built for, the model (every specialisation: graphs, steps,
                            memory plan, input ranges; the symbolic program for a range, see
                            `tessel.compiler.artifact_symbolic`) and the SHA-256 and size of every
                            other entry
    kernels/K_NAME.tir      each kernel's scheduled IR in its text form (`tessel.ir.text`)
    kernels/K_NAME.tvm.py   CPU: the TVMScript source the backend made of it (for reading)
    kernels/K_NAME.so       CPU: the shared library TVM built from it
    kernels/K_NAME.cu       CUDA: the CUDA C++ source printed from it
    kernels/K_NAME.cubin    CUDA: the binary nvcc / NVRTC compiled from that source
    data/SHA256.bin         the raw bytes of each constant array (dtype and shape in the manifest)

Loading checks the format and its version, for a CPU model that the kernels were built for this
machine's CPU (target triple and CPU name) with this TVM version, and every entry's hash and size;
anything wrong raises `ArtifactError` naming the file and what is wrong (not a zip file, truncated,
no manifest, another format, a newer format version, a missing or altered entry, another CPU). Then
each CPU library is written, atomically, to a content-addressed file in the kernel cache folder (a
temporary folder when the disk cache is off), loaded with TVM's runtime, and bound to its parsed
IR: no lowering, scheduling, pass or code generation runs.

A CUDA model's kernels are bound to their stored binaries (no nvcc or NVRTC runs); the CUDA printer
runs again on each kernel's IR for the launch data (grid, block, shared memory, tensor maps), and a
printed source that differs from the stored one (another tessel's printer) is an ArtifactError. A
CUDA artifact runs on a GPU of the architecture it names; without one it still runs through the
interpreter (`run_interpreted`). (Checked here without a GPU: the launches themselves run in the
`-m gpu` tests.)

Example:
    >>> import numpy as np, os, tempfile, tessel as ts
    >>> b = ts.GraphBuilder("tiny"); x = b.input("x", (2, 2)); b.output(b.relu(x))
    >>> path = save_model(ts.compile(b, target="cpu"), os.path.join(tempfile.mkdtemp(), "tiny.tsl"))
    >>> load_model(path)(np.float32([[1, -1], [-2, 2]])).tolist()
    [[1.0, 0.0], [0.0, 2.0]]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile

from tessel.compiler.artifact_graph import (
    Blobs, array_of, decode, decode_graph, decode_node, encode, encode_graph, encode_node,
)
from tessel.errors import ArtifactError, ParseError, TesselError

FORMAT = "tessel.model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def save_model(model, path) -> str:
    """Write `model` (a CompiledModel) to the artifact file `path`, atomically; returns the path.
    `CompiledModel.save` calls this; its docstring has an example."""
    path = os.fspath(path)
    tvm_version = host = None
    if not model.on_gpu:  # TVM built the CPU kernels (a GPU machine may have no TVM at all)
        import tvm

        from tessel.codegen import tvm_runtime

        tvm_version, host = tvm.__version__, tvm_runtime.host_target()
    restructure = _restructure_name(model)
    _refuse_control_flow(model)
    blobs, files, kernels = Blobs(), {}, {}
    dropped: list = []
    programs = [_encode_program(p, blobs, files, kernels, dropped) for p in model._programs.values()]
    from tessel.compiler.artifact_symbolic import symbolic_entry

    symbolic = symbolic_entry(getattr(model, "_symbolic", None), blobs, files, kernels, dropped, _encode_kernel)
    current = list(model._programs.values()).index(model._current)
    for key, raw in blobs.data.items():
        files[f"data/{key}.bin"] = raw
    options = {k: v for k, v in model._options.items() if isinstance(v, (bool, int, float, str, type(None)))}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tessel_version": _tessel_version(),
        "tvm_version": tvm_version, "host_target": host,
        "model": {"name": model.name, "target": model.target, "options": options, "restructure": restructure,
                  "input_ranges": None if model.input_ranges is None else model.input_ranges.to_json(),
                  "current": current, "programs": programs, "dropped_meta": sorted(set(dropped)),
                  "symbolic": symbolic, "symbolic_not_saved": None if symbolic is not None else _symbolic_note(model)},
        "files": {name: {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)} for name, raw in files.items()},
    }
    _write_zip(path, manifest, files)
    return path


def _refuse_control_flow(model) -> None:
    """ArtifactError, up front, for a model with run-time control flow (`tessel.compiler.model_control`),
    whose programs hold subgraphs and nested programs that artifacts cannot hold yet."""
    from tessel.compiler.model_control import CONTROL_OPS

    for program in model._programs.values():
        for graph in (getattr(program, "graph", None), getattr(program, "source", None)):
            node = next((n for n in getattr(graph, "nodes", {}).values() if n.op in CONTROL_OPS), None)
            if node is not None:
                raise ArtifactError(f"cannot save model '{model.name}': it has run-time control flow ({node.op} "
                                    f"'{node.name}'), which artifacts cannot hold yet")


def _symbolic_note(model):
    """What a loaded model says, for a shape it does not hold, about the program for its ranges that
    the artifact lacks (artifacts keep per-shape programs and fully symbolic ones), or None."""
    sym = getattr(model, "_symbolic", None)
    if sym is not None:
        return (f"the original model ran one program for every size of {sym.range_text()}, whose per-shape "
                f"kernels an artifact cannot hold (a loaded model does not compile); compile the model again "
                f"to serve this shape")
    if getattr(model, "_symbolic_pending", False):
        return ("the original model had not compiled its program for its input ranges yet (it does so on the "
                "first call with a new shape): read cm.symbolic, or call it once with another shape, before "
                "saving to keep that program")
    return None


def _restructure_name(model):
    fn = model._restructure
    if fn is None:
        return None
    if getattr(fn, "__module__", "") == "tessel.frontend.torch" and getattr(fn, "__name__", "") == "rebuild_outputs":
        return "torch"
    raise ArtifactError(f"cannot save model '{model.name}': its output structure comes from a custom function "
                        f"({getattr(fn, '__qualname__', fn)!r}), which an artifact cannot hold")


def _encode_program(program, blobs: Blobs, files: dict, kernels: dict, dropped: list) -> dict:
    steps = []
    for step in program.steps:
        if id(step.kernel) not in kernels:
            kernels[id(step.kernel)] = _encode_kernel(step.kernel, len(kernels), files)
        g = step.group
        steps.append({"kernel": kernels[id(step.kernel)], "args": list(step.args),
                      "group": {"id": g.id, "nodes": [encode_node(n, blobs, program.graph.name) for n in g.nodes],
                                "anchor": None if g.anchor is None else g.anchor.name,
                                "inputs": list(g.inputs), "outputs": list(g.outputs)}})
    plan = program.plan
    extra = {}
    if getattr(program, "device_kind", "cpu") == "cuda":
        extra = {"target": str(program.target),
                 "temps": {k: [list(shape), dtype] for k, (shape, dtype) in program.temps.items()}}
    return {**extra, "source": encode_graph(program.source, blobs, dropped),
            "graph": encode_graph(program.graph, blobs, dropped), "steps": steps,
            "plan": {"offsets": plan.offsets, "sizes": plan.sizes,
                     "lifetimes": {k: list(v) for k, v in plan.lifetimes.items()},
                     "arena_bytes": plan.arena_bytes, "naive_bytes": plan.naive_bytes},
            "report": encode(program.report, blobs, "the compile report"), "compile_seconds": program.compile_seconds}


def _encode_kernel(kernel, index: int, files: dict) -> dict:
    from tessel.ir.text import to_text

    base = f"kernels/{index}_{re.sub(r'[^A-Za-z0-9_]', '_', kernel.name)[:60]}"
    files[base + ".tir"] = to_text(kernel.ir).encode()
    binary = getattr(kernel, "binary", None)
    if binary is not None:  # a GpuKernel: its CUDA source and binary
        files[base + ".cu"] = kernel.source.encode()
        files[base + "." + binary.kind] = bytes(binary.code)
        return {"name": kernel.name, "ir": base + ".tir", "source": base + ".cu", "binary": base + "." + binary.kind,
                "kind": binary.kind, "arch": binary.arch, "compiler": binary.compiler, "key": binary.key,
                "target": str(kernel.target)}
    files[base + ".tvm.py"] = kernel.source.encode()
    files[base + ".so"] = _library_bytes(kernel)
    return {"name": kernel.name, "ir": base + ".tir", "source": base + ".tvm.py", "library": base + ".so"}


def _library_bytes(kernel) -> bytes:
    """The shared library of a compiled CPU kernel: the kernel cache's file when there is one, else
    the in-memory module exported, else (a loaded library, whose file is gone) built again."""
    from tessel.codegen import cache
    from tessel.codegen import tvm as backend
    from tessel.codegen import tvm_runtime

    root = cache.cache_dir()
    if root is not None:
        key = cache.cache_key(backend.ir_text(kernel.ir), tvm_runtime.target_key(), backend.backend_version())
        cached = root / "cpu" / f"{key}.so"
        if cached.is_file():
            return cached.read_bytes()
    module = kernel._runner.module
    with tempfile.TemporaryDirectory(prefix="tessel-save-") as tmp:
        out = os.path.join(tmp, "kernel.so")
        try:
            module.export_library(out)
        except Exception:  # noqa: BLE001 - a module loaded from a library cannot be exported again
            tvm_runtime.compile_module(backend.to_tvm(kernel.ir)).export_library(out)
        with open(out, "rb") as f:
            return f.read()


def _write_zip(path: str, manifest: dict, files: dict) -> None:
    """The archive, written to a temporary file in the same folder and renamed into place."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w") as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True), zipfile.ZIP_DEFLATED)
            for name, raw in files.items():
                z.writestr(name, raw, zipfile.ZIP_STORED if name.startswith("data/") else zipfile.ZIP_DEFLATED)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _tessel_version() -> str:
    from tessel import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_model(path):
    """The CompiledModel saved in artifact `path` (`tessel.load`), ready to run; no kernel is compiled.
    Raises ArtifactError, naming the file, for anything but a good artifact made for this machine.

    >>> import numpy as np, os, tempfile, tessel as ts
    >>> b = ts.GraphBuilder("neg"); x = b.input("x", (3,)); b.output(b.neg(x))
    >>> path = ts.compile(b, target="cpu").save(os.path.join(tempfile.mkdtemp(), "neg.tsl"))
    >>> ts.load(path)(np.float32([1, -2, 3])).tolist()
    [-1.0, 2.0, -3.0]
    >>> read_manifest(path)["format_version"]
    1
    """
    path = os.fspath(path)
    with _Reader(path) as r:
        return r.model()


def read_manifest(path) -> dict:
    """The manifest of artifact `path`, checked (format and version) but without loading anything."""
    path = os.fspath(path)
    with _Reader(path) as r:
        return r.manifest


class _Reader:
    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise ArtifactError(f"{path}: no such file")
        if os.path.isdir(path):
            raise ArtifactError(f"{path}: is a folder, not a tessel model file")
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise self.error("not a tessel model file (not a zip archive; truncated or another kind of file)") from None
        except OSError as e:
            raise self.error(f"cannot be read: {e.strerror or e}") from None
        try:
            self.manifest = self._manifest()
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def error(self, what: str) -> ArtifactError:
        return ArtifactError(f"{self.path}: {what}")

    def _read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)
        except KeyError:
            raise self.error(f"entry '{name}' is missing (truncated or altered file)") from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:  # a bad CRC, a cut-off entry
            raise self.error(f"entry '{name}' is corrupt ({_first_line(e)})") from None

    def _manifest(self) -> dict:
        if MANIFEST not in self.zip.namelist():
            raise self.error(f"a zip archive without {MANIFEST}: not a tessel model file")
        try:
            m = json.loads(self._read(MANIFEST))
        except ValueError as e:
            raise self.error(f"{MANIFEST} is not valid JSON ({_first_line(e)})") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            got = m.get("format") if isinstance(m, dict) else type(m).__name__
            raise self.error(f"not a tessel model file ({MANIFEST} says format {got!r}, expected {FORMAT!r})")
        version = m.get("format_version")
        if not isinstance(version, int):
            raise self.error(f"{MANIFEST} has no integer format_version (got {version!r})")
        if version != FORMAT_VERSION:
            newer = "a newer" if version > FORMAT_VERSION else "an older"
            raise self.error(f"format version {version}, written by {newer} tessel ({m.get('tessel_version', '?')}); "
                             f"this tessel ({_tessel_version()}) reads version {FORMAT_VERSION}: compile the model "
                             f"again")
        for key in ("model", "files"):
            if key not in m:
                raise self.error(f"{MANIFEST} lacks '{key}' (altered file)")
        return m

    def entry(self, name: str) -> bytes:
        """An entry's bytes, checked against the manifest's size and SHA-256."""
        want = self.manifest["files"].get(name)
        if want is None:
            raise self.error(f"entry '{name}' is not listed in {MANIFEST} (altered file)")
        raw = self._read(name)
        if len(raw) != want["size"] or hashlib.sha256(raw).hexdigest() != want["sha256"]:
            raise self.error(f"entry '{name}' does not match its hash in {MANIFEST} (corrupt or altered file)")
        return raw

    def array(self, ref: dict):
        raw = self.entry(f"data/{ref['blob']}.bin")
        try:
            return array_of(raw, ref)
        except (ValueError, TesselError) as e:
            raise self.error(f"constant data/{ref['blob'][:12]}: {_first_line(e)}") from None

    def _check_host(self) -> None:
        import tvm

        from tessel.codegen import tvm_runtime

        m, here = self.manifest, tvm_runtime.host_target()
        built = m.get("host_target")
        if not isinstance(built, dict) or "tvm_version" not in m:
            raise self.error(f"{MANIFEST} lacks the host target or TVM version of its CPU kernels (altered file)")
        for k in ("mtriple", "mcpu"):
            if built.get(k) != here.get(k):
                raise self.error(f"its kernels were built for {built.get('mtriple')} CPU '{built.get('mcpu')}', and "
                                 f"this machine is {here.get('mtriple')} CPU '{here.get('mcpu')}': compile the "
                                 f"model again here")
        if m["tvm_version"] != tvm.__version__:
            raise self.error(f"its kernels were built with TVM {m['tvm_version']}, and this machine has TVM "
                             f"{tvm.__version__}: compile the model again here")

    def model(self):
        from tessel.compiler.model import CompiledModel
        from tessel.compiler.model_ranges import InputRanges

        info = self.manifest["model"]
        gpu = str(info.get("target", "cpu")).startswith("cuda")
        if not gpu:
            self._check_host()
        try:
            kernels: dict = {}
            programs = [self._program(p, kernels) for p in info["programs"]]
            restructure = None
            if info.get("restructure") == "torch":
                from tessel.frontend.torch import rebuild_outputs as restructure
            elif info.get("restructure") is not None:
                raise self.error(f"unknown output structure {info['restructure']!r}")
            ranges = info.get("input_ranges")
            cm = CompiledModel(programs[0], None, info.get("options", {}), restructure,
                               None if ranges is None else InputRanges.from_json(ranges))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise self.error(f"{MANIFEST} is malformed ({type(e).__name__}: {_first_line(e)})") from None
        from tessel.compiler.model_io import _key_of

        cm._programs = {_key_of(p.inputs): p for p in programs}
        cm._current = programs[info.get("current", 0)]
        cm.loaded_from = self.path
        cm._symbolic_not_saved = info.get("symbolic_not_saved")
        if info.get("symbolic") is not None:
            from tessel.compiler.artifact_symbolic import read_parts

            try:
                cm.symbolic = read_parts(info["symbolic"], self.array, self._kernel, kernels)
            except (KeyError, TypeError, ValueError, IndexError, ParseError) as e:
                raise self.error(f"{MANIFEST}'s symbolic program is malformed ({type(e).__name__}: "
                                 f"{_first_line(e)})") from None
        return cm

    def _program(self, data: dict, kernels: dict):
        from tessel.compiler.model_program import Program, Step
        from tessel.passes.graph.fusion import Group
        from tessel.passes.graph.memory import MemoryPlan

        try:
            source = decode_graph(data["source"], self.array)
            graph = decode_graph(data["graph"], self.array)
        except ImportError as e:  # a torch model's output structure needs torch's pytree
            raise self.error(f"holds a torch model, whose outputs need {e.name or 'torch'} to rebuild; install "
                             f"it") from None
        steps = []
        for s in data["steps"]:
            kref = s["kernel"]
            key = kref["binary"] if "binary" in kref else kref["library"]
            if key not in kernels:
                kernels[key] = self._kernel(kref)
            g = s["group"]
            nodes = [decode_node(n, self.array) for n in g["nodes"]]
            anchor = next((n for n in nodes if n.name == g["anchor"]), None)
            steps.append(Step(kernels[key], Group(g["id"], nodes, anchor, list(g["inputs"]), list(g["outputs"])),
                              list(s["args"])))
        p = data["plan"]
        plan = MemoryPlan(dict(p["offsets"]), dict(p["sizes"]), {k: tuple(v) for k, v in p["lifetimes"].items()},
                          int(p["arena_bytes"]), int(p["naive_bytes"]))
        report = decode(data["report"], self.array)
        if "target" in data:  # a CUDA program
            from tessel.compiler.model_cuda import GpuProgram

            temps = {k: (tuple(shape), dtype) for k, (shape, dtype) in data["temps"].items()}
            return GpuProgram(source, graph, steps, plan, report, float(data["compile_seconds"]), data["target"], temps)
        return Program(source, graph, steps, plan, report, float(data["compile_seconds"]))

    def _kernel(self, kref: dict):
        if "binary" in kref:
            return self._gpu_kernel(kref)
        from tessel.codegen import tvm as backend
        from tessel.codegen import tvm_runtime
        from tessel.codegen.kernel import Kernel
        from tessel.ir.target import parse_target
        from tessel.ir.text import parse_kernel

        try:
            ir = parse_kernel(self.entry(kref["ir"]).decode())
        except TesselError as e:
            raise self.error(f"kernel '{kref.get('name')}': its IR does not parse ({_first_line(e)})") from None
        raw = self.entry(kref["library"])
        source = self.entry(kref["source"]).decode()
        symbol = backend.symbol_name(ir)
        try:
            module = _load_library(raw, symbol)
        except Exception as e:  # noqa: BLE001 - dlopen and TVM raise their own types
            raise self.error(f"kernel '{ir.name}': its library does not load ({_first_line(e)})") from None
        runner = tvm_runtime.Runner(module, symbol, ir.params)
        return Kernel(ir, runner, parse_target("cpu"), source=source,
                      inspect=lambda kind: backend.inspect(runner, ir, kind))


    def _gpu_kernel(self, kref: dict):
        from tessel.codegen.cuda_build import Binary
        from tessel.codegen.cuda_kernel import GpuKernel
        from tessel.codegen.cuda_printer import print_kernel
        from tessel.ir.target import parse_target
        from tessel.ir.text import parse_kernel

        try:
            ir = parse_kernel(self.entry(kref["ir"]).decode())
        except TesselError as e:
            raise self.error(f"kernel '{kref.get('name')}': its IR does not parse ({_first_line(e)})") from None
        source = self.entry(kref["source"]).decode()
        code = self.entry(kref["binary"])
        try:
            printed = print_kernel(ir)
        except TesselError as e:
            raise self.error(f"kernel '{ir.name}': this tessel's CUDA printer refuses its IR ({_first_line(e)}); "
                             f"compile the model again") from None
        if printed.source != source:
            raise self.error(f"kernel '{ir.name}': this tessel prints other CUDA source for its IR than the file holds "
                             f"(written by tessel {self.manifest.get('tessel_version', '?')}); compile the model again")
        from tessel.ir import target as gpu_target

        here = gpu_target.detect_cuda_arch()  # None without a GPU: the model still runs interpreted
        if here is not None and not runs_on(kref["arch"], kref["kind"], here):
            raise self.error(f"kernel '{ir.name}' was compiled for {kref['arch']} ({kref['kind']}), which this "
                             f"machine's GPU ({here}) cannot run: compile the model again here")
        binary = Binary(code=code, arch=kref["arch"], compiler=kref["compiler"], key=kref["key"], kind=kref["kind"])
        return GpuKernel(ir, printed, binary, parse_target(kref["target"]))


def runs_on(built: str, kind: str, gpu: str) -> bool:
    """Whether code compiled for architecture `built` ("sm_86", "sm_90a") as `kind` ("cubin" or
    "ptx") runs on a GPU of architecture `gpu`: a cubin on the same major version and a minor at
    least as high, an "a" (architecture-specific) cubin only on its own architecture, PTX on any
    later GPU (the driver compiles it).

    >>> runs_on("sm_80", "cubin", "sm_86"), runs_on("sm_90a", "cubin", "sm_100a"), runs_on("sm_80", "ptx", "sm_90a")
    (True, False, True)
    """
    def parse(arch):
        m = re.fullmatch(r"sm_(\d+?)(\d)(a?)", arch)
        return (int(m.group(1)), int(m.group(2)), bool(m.group(3))) if m else None

    b, g = parse(built), parse(gpu)
    if b is None or g is None:
        return built == gpu
    if kind == "ptx":
        return (g[0], g[1]) >= (b[0], b[1])
    if b[2]:
        return (g[0], g[1]) == (b[0], b[1])
    return g[0] == b[0] and g[1] >= b[1]


def _load_library(raw: bytes, symbol: str):
    """Load library bytes through a content-addressed file: in the kernel cache folder (written
    atomically, kept), or a temporary folder when the disk cache is off (removed once loaded)."""
    from tessel.codegen import tvm_runtime
    from tessel.codegen.cache import cache_dir
    from tessel.codegen.cuda_build import write_atomic

    digest = hashlib.sha256(raw).hexdigest()[:40]
    root = cache_dir()
    if root is not None:
        folder = root / "artifact"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{digest}.so"
            if not (target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest()[:40] == digest):
                write_atomic(target, raw)
            return tvm_runtime.load(str(target), symbol)
        except OSError:
            pass  # a read-only cache folder: fall through to a temporary file
    with tempfile.TemporaryDirectory(prefix="tessel-load-") as tmp:
        target = os.path.join(tmp, f"{digest}.so")
        with open(target, "wb") as f:
            f.write(raw)
        return tvm_runtime.load(target, symbol)  # the mapping outlives the file


def _first_line(e: Exception) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[0][:300] if lines else type(e).__name__
