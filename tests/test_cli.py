"""The `tessel` command and the demo: exit codes, error lines, and the demo's checking logic.

The demo's checks are themselves checked with stand-in "kernels" that compute in numpy: a right one
must PASS, one that is slightly wrong or leaves an element unwritten must FAIL. The end-to-end run
through `tessel.build` is `test_demo_small`.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessel import demo
from tessel.cli import PLANNED, main
from tessel.errors import CodegenError, TesselError

def interp_run():
    """tessel.ir.interp.run(kernel, *arrays) (imported for real: a broken interpreter fails here)."""
    from tessel.ir.interp import run

    return run


def numpy_builder(perturb: float = 0.0, skip_last: bool = False, fail: str = ""):
    """A stand-in for tessel.build: the kernel computes the case's outputs with numpy in float32,
    optionally adding `perturb` (relative to the output's scale) to one element, or not writing the
    last element, or refusing to build the case named `fail`."""
    by_tensors = {}

    def build(tensors, target="cpu"):
        case = by_tensors[id(tensors[-1])]
        if case.name == fail:
            raise CodegenError(f"kernel '{case.name}': refused by the test builder")

        def kernel(*arrays):
            named = dict(zip((t.name for t in case.tensors), arrays))
            outs = case.numpy_fn(*(named[n] for n in case.inputs))
            for name, value in zip(case.outputs, outs):
                dst = named[name]
                if skip_last:
                    dst.reshape(-1)[:-1] = value.reshape(-1)[:-1]
                else:
                    dst[...] = value
                dst.reshape(-1)[0] += perturb * np.max(np.abs(value))
        return kernel

    def register(cases):
        for c in cases:
            by_tensors[id(c.tensors[-1])] = c
        return cases

    return build, register


def run_with(builder_and_register, monkeypatch, sizes="tiny"):
    build, register = builder_and_register
    real = demo.demo_cases
    monkeypatch.setattr(demo, "demo_cases", lambda s: register(real(s)))
    out = io.StringIO()
    rows = demo.run_demo(sizes=sizes, runs=1, out=out, progress=False, build=build)
    return rows, out.getvalue()


def test_demo_logic_passes_right_kernels(monkeypatch):
    rows, text = run_with(numpy_builder(), monkeypatch)
    assert [r.kernel for r in rows] == ["gemm", "softmax", "layernorm", "conv2d"]
    assert all(r.passed and r.status == "PASS" for r in rows), text
    assert all(r.max_error < 1e-5 and r.tessel_ms > 0 and r.numpy_ms > 0 for r in rows)
    assert "all kernels match numpy" in text and "machine:" in text
    for r in rows:
        assert r.kernel in text and r.shape in text


def test_demo_logic_fails_wrong_kernels(monkeypatch):
    rows, text = run_with(numpy_builder(perturb=1e-2), monkeypatch)
    assert not any(r.passed for r in rows), text
    assert all(0.005 < r.max_error < 0.02 for r in rows), [r.max_error for r in rows]
    assert "FAILED: gemm, softmax, layernorm, conv2d" in text


def test_demo_logic_fails_unwritten_outputs(monkeypatch):
    rows, _ = run_with(numpy_builder(skip_last=True), monkeypatch)
    assert [r.status for r in rows] == ["FAIL"] * 4
    assert all(r.max_error == float("inf") for r in rows)


def test_demo_build_error_is_one_row(monkeypatch):
    """A kernel that fails to build is an ERROR row; the other kernels still run."""
    rows, text = run_with(numpy_builder(fail="softmax"), monkeypatch)
    assert [r.status for r in rows] == ["PASS", "ERROR", "PASS", "PASS"]
    assert "softmax: build failed: kernel 'softmax': refused by the test builder" in text


def test_cli_demo_exit_codes(monkeypatch, capsys):
    import tessel.demo_models

    for builder, expected in ((numpy_builder(), 0), (numpy_builder(perturb=1e-2), 1)):
        build, register = builder
        real = demo.demo_cases
        monkeypatch.setattr(demo, "demo_cases", lambda s, real=real, register=register: register(real(s)))
        monkeypatch.setattr(demo, "_builder", lambda target, build=build: build)
        monkeypatch.setattr(tessel.demo_models, "run_model_demo", lambda **kw: [])  # tested below
        assert main(["demo", "--sizes", "tiny", "--runs", "1", "--no-progress"]) == expected
        monkeypatch.undo()
    assert "numpy/tessel" in capsys.readouterr().out


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2**32 - 1))
def test_np_conv2d_matches_direct_loops(n, c, h, w, k, r, s, pad, seed):
    """The numpy conv reference (im2col + matmul) agrees with the definition, written as loops."""
    if h + 2 * pad < r or w + 2 * pad < s:
        return
    rng = np.random.default_rng(seed)
    x, wt = rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c, r, s))
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - r + 1, w + 2 * pad - s + 1
    want = np.zeros((n, k, ho, wo))
    for b, f, y, z in itertools.product(range(n), range(k), range(ho), range(wo)):
        want[b, f, y, z] = np.sum(xp[b, :, y:y + r, z:z + s] * wt[f])
    np.testing.assert_allclose(demo.np_conv2d(x, wt, pad), want, rtol=1e-12, atol=1e-12)


def test_max_error_and_unknown_sizes():
    ref = np.array([1.0, -4.0])
    assert demo.max_error(np.array([1.0, -3.0]), ref) == pytest.approx(0.25)
    assert demo.max_error(np.array([np.nan, -4.0]), ref) == float("inf")
    with pytest.raises(TesselError, match="unknown sizes 'huge'"):
        demo.demo_cases("huge")


def test_demo_cases_lower():
    """The demo's kernels are valid DSL: they lower, with the parameters in call order."""
    import tessel as ts

    for case in demo.demo_cases("tiny"):
        kernel = ts.lower(case.tensors)
        assert [p.name for p in kernel.params] == list(case.inputs) + case.outputs


def test_demo_kernels_on_the_interpreter():
    """The demo's DSL kernels, lowered and run by the reference interpreter, match numpy (tiny sizes)."""
    import tessel as ts

    run = interp_run()

    def build(tensors, target="cpu"):
        kernel = ts.lower(tensors)
        return lambda *arrays: run(kernel, *arrays)

    out = io.StringIO()
    rows = demo.run_demo(sizes="tiny", runs=1, out=out, progress=False, build=build)
    assert [r.status for r in rows] == ["PASS"] * 4, out.getvalue()


def test_demo_small():
    """End to end: the demo's kernels built by tessel.build for the CPU all match numpy."""
    out = io.StringIO()
    rows = demo.run_demo(target="cpu", sizes="tiny", runs=1, out=out, progress=False)
    assert len(rows) == 4
    assert all(r.passed for r in rows), out.getvalue()


def test_model_demo_tiny():
    """End to end: the sample models (transformer block, FFT long convolution) compile and match
    the graph's numpy reference on random inputs."""
    from tessel.demo_models import run_model_demo

    out = io.StringIO()
    rows = run_model_demo(sizes="tiny", out=out, runs=1, seed=3)
    assert [r["model"] for r in rows] == ["transformer_block", "long_conv_block"]
    assert all(r["check"] == "PASS" for r in rows), out.getvalue()


@pytest.mark.parametrize("command", sorted(PLANNED))
def test_planned_commands_say_not_implemented(command, capsys):
    assert main([command, "some", "--args"]) == 2
    err = capsys.readouterr().err
    assert f"tessel {command}: not implemented yet" in err


def test_tessel_error_is_one_line(capsys):
    """A TesselError prints `tessel: error: ...` and exits 1; --debug shows the traceback instead."""
    assert main(["demo", "--target", "no-such-target"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tessel: error: demo: target 'no-such-target'") and err.count("\n") == 1
    with pytest.raises(TesselError):
        main(["--debug", "demo", "--target", "no-such-target"])
    with pytest.raises(TesselError):
        main(["demo", "--debug", "--target", "no-such-target"])


def test_version_and_usage(capsys):
    import tessel

    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"tessel {tessel.__version__}"
    assert main([]) == 2
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2
