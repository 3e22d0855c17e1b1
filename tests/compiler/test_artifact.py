"""Model artifacts (issue 12 item 6): `CompiledModel.save` / `tessel compile -o` write a file that
`tessel.load` runs without compiling, with the original model's outputs on fresh random inputs; a
corrupt, truncated, other-version, other-machine or foreign file is one clear ArtifactError line
naming the file and what is wrong.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import tessel as ts
from tessel.compiler import artifact
from tessel.errors import ArgumentError, ArtifactError

RNG = np.random.default_rng()


def _mlp(hidden: int = 24):
    w1 = RNG.standard_normal((16, hidden)).astype(np.float32)
    b1 = RNG.standard_normal(hidden).astype(np.float32)
    w2 = RNG.standard_normal((hidden, 5)).astype(np.float32)
    b = ts.GraphBuilder("mlp")
    x = b.input("x", (4, 16))
    h = b.relu(b.add(b.matmul(x, b.const(w1)), b.const(b1)))
    b.output(b.softmax(b.matmul(h, b.const(w2)), axis=-1))

    def reference(a):
        z = np.maximum(a @ w1 + b1, 0) @ w2
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return b, reference


def _no_compiling(monkeypatch):
    """Every way into lowering, scheduling or code generation raises from now on."""
    from tessel.codegen import tvm as backend
    from tessel.codegen import tvm_runtime
    from tessel.compiler import lowering, model, model_program

    def refuse(*a, **k):
        raise AssertionError("loading an artifact must not compile")

    monkeypatch.setattr(tvm_runtime, "compile_module", refuse)
    monkeypatch.setattr(backend, "compile_kernel", refuse)
    monkeypatch.setattr(lowering, "build_kernel", refuse)
    monkeypatch.setattr(model_program, "compile_program", refuse)
    monkeypatch.setattr(model, "compile_program", refuse)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    b, reference = _mlp()
    cm = ts.compile(b, target="cpu")
    path = tmp_path_factory.mktemp("art") / "mlp.tsl"
    assert cm.save(path) == str(path)
    return cm, reference, path


def test_loaded_model_runs_without_compiling_and_matches(saved, monkeypatch):
    cm, reference, path = saved
    _no_compiling(monkeypatch)
    with pytest.raises(AssertionError, match="must not compile"):  # the guard works: compiling now fails
        ts.compile(_mlp(hidden=7)[0], target="cpu")
    loaded = ts.load(path)
    assert loaded.loaded_from == str(path) and len(loaded.kernels) == len(cm.kernels) >= 2
    for _ in range(3):
        x = RNG.standard_normal((4, 16)).astype(np.float32)
        got = loaded(x)
        np.testing.assert_array_equal(got, cm(x))  # the same machine code on the same inputs
        np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-6)
    assert [k.ir for k in loaded.kernels] == [k.ir for k in cm.kernels]  # the IR text round-trips
    assert "def " in loaded.kernels[0].source  # the TVMScript source travels with it
    assert loaded.memory == cm.memory and "total" in loaded.summary()


def test_artifact_lists_every_entry_with_its_hash(saved):
    _, _, path = saved
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["format"] == "tessel.model" and manifest["format_version"] == artifact.FORMAT_VERSION
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert any(n.endswith(".so") for n in names) and any(n.endswith(".tir") for n in names)
    assert not any(n.endswith((".pkl", ".pickle")) for n in names)


def test_works_with_the_disk_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSEL_CACHE_DIR", "")
    b, reference = _mlp(hidden=12)
    cm = ts.compile(b, target="cpu")  # kernels live in memory only: the save exports them
    cm.save(tmp_path / "m.tsl")
    _no_compiling(monkeypatch)
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(ts.load(tmp_path / "m.tsl")(x), reference(x), rtol=1e-5, atol=1e-6)


def test_cli_compile_writes_an_artifact(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from tessel.cli import main

    w = RNG.standard_normal((6, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Tanh", ["m"], ["y"])],
                              "g", [x], [y], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    out = tmp_path / "sub" / "m.tsl"
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    a = RNG.standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_allclose(ts.load(out)(a), np.tanh(a @ w), rtol=1e-5, atol=1e-6)
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(out), "--check", "--runs", "1"]) == 0
    text = capsys.readouterr().out
    assert f"checking {out}, loaded back" in text and "FAIL" not in text and " OK" in text


def _cuda_model():
    from tessel.codegen.cuda_build import available_compilers

    if not available_compilers():
        pytest.skip("no CUDA compiler (nvcc or NVRTC) here to build the GPU kernels once")
    w = RNG.standard_normal((32, 16)).astype(np.float32)
    b = ts.GraphBuilder("gpu_mlp")
    x = b.input("x", (8, 32))
    b.output(b.softmax(b.relu(b.matmul(x, b.const(w))), axis=-1))

    def reference(a):
        z = np.maximum(a @ w, 0)
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return ts.compile(b, target="cuda:sm_90a"), reference


@pytest.fixture(scope="module")
def saved_cuda(tmp_path_factory):
    cm, reference = _cuda_model()
    return cm, reference, cm.save(tmp_path_factory.mktemp("gpu") / "gpu.tsl")


def _no_cuda_compiling(monkeypatch):
    from tessel.codegen import cuda, cuda_build

    def refuse(*a, **k):
        raise AssertionError("loading a CUDA artifact must not compile")

    monkeypatch.setattr(cuda_build, "compile_cuda", refuse)
    monkeypatch.setattr(cuda, "compile_cuda", refuse)
    _no_compiling(monkeypatch)


def test_cuda_model_loads_its_binaries_without_compiling(saved_cuda, monkeypatch):
    cm, reference, path = saved_cuda
    _no_cuda_compiling(monkeypatch)
    loaded = ts.load(path)
    assert loaded.on_gpu and loaded.target == cm.target == "cuda:sm_90a"
    assert [k.binary.code for k in loaded.kernels] == [k.binary.code for k in cm.kernels]
    assert [k.launch for k in loaded.kernels] == [k.launch for k in cm.kernels]
    x = RNG.standard_normal((8, 32)).astype(np.float32)
    got = loaded.run_interpreted(x)  # no GPU here: the interpreter runs the loaded kernels' IR
    np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got, cm.run_interpreted(x))


def test_cuda_artifact_whose_source_this_printer_would_not_print_is_refused(saved_cuda, tmp_path):
    import hashlib

    _, _, path = saved_cuda
    with zipfile.ZipFile(path) as z:
        cu = next(n for n in z.namelist() if n.endswith(".cu"))
    edited = None

    def edit_cu(name, raw):
        nonlocal edited
        if name == cu:
            edited = raw + b"// another printer\n"
            return edited
        return raw

    bad = _rewrite(path, tmp_path / "printer.tsl", entry_edit=edit_cu)
    fixed = _rewrite(bad, tmp_path / "printer2.tsl", manifest_edit=lambda m: m["files"][cu].update(
        sha256=hashlib.sha256(edited).hexdigest(), size=len(edited)))  # a consistent file from another tessel
    _one_line_error(fixed, "prints other CUDA source for its IR than the file holds")


def test_cuda_artifact_for_another_gpu_is_refused(saved_cuda, monkeypatch):
    from tessel.ir import target

    _, _, path = saved_cuda
    monkeypatch.setattr(target, "detect_cuda_arch", lambda: "sm_80")  # as on an A100
    _one_line_error(path, "was compiled for sm_90a (cubin), which this machine's GPU (sm_80) cannot run")


@pytest.mark.gpu
def test_cuda_artifact_runs_on_the_gpu(saved_cuda, monkeypatch):
    torch = pytest.importorskip("torch")
    cm, reference, path = saved_cuda
    _no_cuda_compiling(monkeypatch)
    loaded = ts.load(path)
    x = torch.from_numpy(RNG.standard_normal((8, 32)).astype(np.float32)).cuda()
    got = loaded(x)
    assert got.is_cuda
    np.testing.assert_allclose(got.cpu().numpy(), reference(x.cpu().numpy()), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.cpu().numpy(), cm(x).cpu().numpy())


# -- bad files ---------------------------------------------------------------------------------


def _rewrite(src, dst, manifest_edit=None, entry_edit=None):
    """Copy artifact `src` to `dst`, changing the manifest and/or the bytes of entries."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for name in z.namelist():
            raw = z.read(name)
            if name == "manifest.json" and manifest_edit is not None:
                m = json.loads(raw)
                manifest_edit(m)
                raw = json.dumps(m).encode()
            elif entry_edit is not None:
                raw = entry_edit(name, raw)
            out.writestr(name, raw)
    return dst


def _one_line_error(path, pattern):
    with pytest.raises(ArtifactError) as info:
        ts.load(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert pattern in msg, msg
    return msg


def test_truncated_file(saved, tmp_path):
    raw = saved[2].read_bytes()
    for cut in (len(raw) // 2, len(raw) - 30, 10):
        bad = tmp_path / f"cut{cut}.tsl"
        bad.write_bytes(raw[:cut])
        _one_line_error(bad, "not a tessel model file")


def test_corrupt_library_bytes(saved, tmp_path):
    def flip(name, raw):
        if name.endswith(".so"):
            k = len(raw) // 2
            return raw[:k] + bytes([raw[k] ^ 0xFF]) + raw[k + 1:]
        return raw

    bad = _rewrite(saved[2], tmp_path / "flip.tsl", entry_edit=flip)
    _one_line_error(bad, "does not match its hash")


def test_corrupt_bytes_inside_the_archive(saved, tmp_path):
    raw = bytearray(saved[2].read_bytes())
    with zipfile.ZipFile(saved[2]) as z:
        info = next(i for i in z.infolist() if i.filename.startswith("data/"))  # stored, not compressed
    raw[info.header_offset + 30 + len(info.filename) + 1] ^= 0xFF  # a byte of the entry's data
    bad = tmp_path / "crc.tsl"
    bad.write_bytes(bytes(raw))
    _one_line_error(bad, "is corrupt")


def test_missing_entry(saved, tmp_path):
    bad = tmp_path / "gone.tsl"
    with zipfile.ZipFile(saved[2]) as z, zipfile.ZipFile(bad, "w") as out:
        for name in z.namelist():
            if not name.endswith(".tir"):
                out.writestr(name, z.read(name))
    _one_line_error(bad, "is missing")


@pytest.mark.parametrize("version,word", [(artifact.FORMAT_VERSION + 1, "newer"), (0, "older")])
def test_other_format_version(saved, tmp_path, version, word):
    bad = _rewrite(saved[2], tmp_path / "v.tsl", manifest_edit=lambda m: m.update(format_version=version))
    msg = _one_line_error(bad, f"format version {version}, written by a{'n' if word == 'older' else ''} {word}")
    assert f"reads version {artifact.FORMAT_VERSION}" in msg


def test_built_for_another_cpu(saved, tmp_path):
    bad = _rewrite(saved[2], tmp_path / "cpu.tsl", manifest_edit=lambda m: m["host_target"].update(mcpu="cortex-a72"))
    _one_line_error(bad, "CPU 'cortex-a72'")


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.tsl"
    text.write_text("hello, not a model\n")
    _one_line_error(text, "not a zip archive")
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("readme.txt", "a zip of something else")
    _one_line_error(plain, "without manifest.json")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("manifest.json", json.dumps({"format": "someone.else", "format_version": 1}))
    _one_line_error(other, "format 'someone.else'")
    _one_line_error(tmp_path / "absent.tsl", "no such file")
    _one_line_error(tmp_path, "is a folder")


def test_saving_a_custom_output_structure_is_refused(tmp_path):
    from tessel.compiler.model import compile_graph

    b, _ = _mlp(hidden=8)
    cm = compile_graph(b.graph, restructure=lambda graph, outs: {"y": outs[0]})
    with pytest.raises(ArtifactError, match="custom function"):
        cm.save(tmp_path / "m.tsl")
    assert not (tmp_path / "m.tsl").exists()


# -- torch models ------------------------------------------------------------------------------


def test_torch_model_with_several_shapes_round_trips(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 6)
            self.norm = torch.nn.LayerNorm(6)

        def forward(self, x):
            h = self.norm(torch.nn.functional.gelu(self.fc(x)))
            return {"h": h, "score": h.sum(-1)}

    net = Net().eval()
    cm = ts.compile(net, (torch.randn(2, 8),), target="cpu")
    cm(torch.randn(5, 8))  # a second specialisation, saved too
    cm.save(tmp_path / "net.tsl")
    _no_compiling(monkeypatch)
    loaded = ts.load(tmp_path / "net.tsl")
    for batch in (2, 5):
        x = torch.randn(batch, 8)
        got, want = loaded(x), net(x)
        assert set(got) == {"h", "score"} and isinstance(got["h"], torch.Tensor)
        for k in want:
            np.testing.assert_allclose(got[k].numpy(), want[k].detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ArgumentError, match=r"loaded from .*net.tsl holds the input shapes .*float32\[2, 8\]"):
        loaded(torch.randn(3, 8))
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils._pytree", None)  # as where torch is not installed
    with pytest.raises(ArtifactError, match=r"net.tsl: holds a torch model, whose outputs need torch"):
        ts.load(tmp_path / "net.tsl")


def test_a_fresh_process_with_an_empty_cache_runs_the_artifact(saved, tmp_path):
    import os
    import subprocess
    import sys
    import textwrap

    cm, _, path = saved
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, tessel as ts
        from tessel.codegen import tvm as backend, tvm_runtime
        def refuse(*a, **k):
            raise AssertionError("compiled")
        tvm_runtime.compile_module = backend.compile_kernel = refuse
        np.save({str(tmp_path / "y.npy")!r}, ts.load({str(path)!r})(np.load({str(tmp_path / "x.npy")!r})))
    """)
    env = dict(os.environ, TESSEL_CACHE_DIR=str(tmp_path / "fresh-cache"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), cm(x))
    assert not (tmp_path / "fresh-cache" / "cpu").exists()  # nothing was built into the kernel cache


def test_a_cuda_artifact_loads_where_tvm_is_absent(saved_cuda, tmp_path):
    import subprocess
    import sys
    import textwrap

    cm, _, path = saved_cuda
    x = RNG.standard_normal((8, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tvm"] = None  # importing TVM now fails, as on the GPU machine, which has none
        import numpy as np, tessel as ts
        cm = ts.load({str(path)!r})
        np.save({str(tmp_path / "y.npy")!r}, cm.run_interpreted(np.load({str(tmp_path / "x.npy")!r})))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), cm.run_interpreted(x))


def test_compiling_an_artifact_again_says_to_load_it(saved, capsys):
    from tessel.cli import main

    _, _, path = saved
    with pytest.raises(ts.TesselError, match=r"is a compiled tessel model \(an artifact\): run it with tessel.load"):
        ts.compile(str(path))
    assert main(["compile", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already a compiled tessel model" in err[0]
