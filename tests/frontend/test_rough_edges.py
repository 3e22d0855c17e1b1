"""The rough edges a new user hits first (issue 12, item 5): each one ends in one clear line.

Every check runs the real command or API on fresh random inputs; none needs a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.cli import main
from tessel.errors import ArgumentError, ShapeError, TesselError

onnx = pytest.importorskip("onnx")  # the onnx extra; tessel's own modules are imported above and must load


def _relu_model(path, ir_version=None):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.save(model, str(path))
    return str(path)


def test_cuda_check_without_gpu_is_one_error_line(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    assert main(["compile", _relu_model(tmp_path / "m.onnx"), "--target", "cuda", "--check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tessel: error: compile --check: target 'cuda' needs an NVIDIA GPU")


@pytest.mark.parametrize("runs", ["-1", "0", "-3", "two"])
def test_demo_and_compile_refuse_non_positive_runs(runs, tmp_path, capsys):
    for argv in (["demo", "--runs", runs], ["compile", str(tmp_path / "m.onnx"), "--check", "--runs", runs]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert f"argument --runs: expected a positive number of runs, got '{runs}'" in capsys.readouterr().err


@pytest.mark.parametrize("runs", [0, -3, 1.5, True])
def test_run_demo_refuses_bad_runs(runs):
    from tessel.demo import run_demo

    with pytest.raises(TesselError, match="runs must be a positive number"):
        run_demo(sizes="tiny", runs=runs, progress=False)


def test_demo_shows_a_large_slowdown_as_a_ratio():
    from tessel.demo import Row, format_table

    row = Row("gemm", "8x8x8", max_error=0.0, passed=True, tessel_ms=300.0, numpy_ms=1.0, build_s=0.1)
    line = format_table([row]).splitlines()[2]
    assert line.split()[-1] == "0.00333"
    fast = Row("gemm", "8x8x8", max_error=0.0, passed=True, tessel_ms=1.0, numpy_ms=2.5, build_s=0.1)
    assert format_table([fast]).splitlines()[2].split()[-1] == "2.50"


def test_build_takes_llvm_like_compile():
    rng = np.random.default_rng()
    A = ts.placeholder((7, 5), name="A")
    B = ts.compute((7, 5), lambda i, j: A[i, j] * 3.0 + 1.0, name="B")
    kern = ts.build([A, B], target="llvm")
    a = rng.standard_normal((7, 5)).astype(np.float32)
    b = np.full((7, 5), np.nan, np.float32)
    kern(a, b)
    # LLVM contracts a * 3 + 1 into one FMA (one rounding, numpy rounds twice): near a = -1/3 the
    # result is close to 0, so the comparison needs an absolute floor at the inputs' scale.
    np.testing.assert_allclose(b, a * 3.0 + 1.0, rtol=1e-6, atol=1e-6)
    with pytest.raises(TesselError):
        ts.build([A, B], target="llvmx")


def test_check_says_when_onnxruntime_cannot_load_the_model(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    path = _relu_model(tmp_path / "future.onnx", ir_version=99)  # newer than any onnxruntime reads
    assert main(["compile", path, "--check", "--runs", "1"]) == 0
    out = capsys.readouterr()
    assert "cannot load this model" in out.out and "not installed" not in out.out
    assert "onnxruntime cannot run this model" in out.err


def test_torch_model_called_with_an_incompatible_shape_names_the_input(capfd):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, tokens):
            return torch.relu(self.fc(tokens))

    net = Net()
    cm = ts.compile(net, (torch.randn(2, 8),))
    x = torch.randn(3, 8)  # a new batch size still works: the model recompiles for it
    np.testing.assert_allclose(cm(x.numpy()), net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    capfd.readouterr()
    with pytest.raises(ArgumentError, match=r"input 0 \('tokens'\) has shape \(2, 5\).*compiled for \(2, 8\)"):
        cm(torch.randn(2, 5))
    err = capfd.readouterr().err
    assert "fake_tensor" not in err and "Traceback" not in err


def test_summary_prints_once(capsys):
    from tessel.frontend.builder import GraphBuilder

    b = GraphBuilder("tiny")
    x = b.input("x", (4, 6))
    b.output(b.relu(b.add(x, x)))
    cm = ts.compile(b, target="cpu")
    x = np.random.default_rng().standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(cm(x), np.maximum(2 * x, 0), rtol=1e-6)
    capsys.readouterr()
    print(cm.summary(x))
    out = capsys.readouterr().out
    assert out.count("time (us)") == 1
    text = cm.summary(x)
    assert repr(text) == str(text) and capsys.readouterr().out == ""


def test_dsl_refuses_elementwise_operands_whose_shapes_disagree():
    A = ts.placeholder((4, 5), name="A")
    B = ts.placeholder((6, 7), name="B")
    with pytest.raises(ShapeError, match=r"'A' \(4, 5\) and 'B' \(6, 7\) are both read elementwise as \[i, j\]"):
        ts.compute((4, 5), lambda i, j: A[i, j] + B[i, j], name="C")
    # reading part of a larger tensor on purpose still works, and computes the right values
    C = ts.compute((4, 5), lambda i, j: B[i, j] * 2.0 + B[i + 1, j + 2], name="C2")
    kern = ts.build([B, C], target="cpu")
    rng = np.random.default_rng()
    b = rng.standard_normal((6, 7)).astype(np.float32)
    c = np.full((4, 5), np.nan, np.float32)
    kern(b, c)
    np.testing.assert_allclose(c, b[:4, :5] * 2.0 + b[1:5, 2:7], rtol=1e-6)


def test_torch_model_with_a_bfloat16_output_returns_a_bfloat16_tensor():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x):
            return (x * 2.0 + 1.0).bfloat16()

    x = torch.randn(3, 5)
    got = ts.compile(Net(), (x,))(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, Net()(x))
