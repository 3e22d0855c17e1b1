"""Dynamic shapes of torch models (issue 12 item 4) and the quiet export (item 5).

Models exported with `torch.export.Dim` ranges: calls with fresh random shapes inside the ranges
match torch eager, served by one program compiled for the range (tests/compiler/test_model_symbolic.py
checks that nothing compiles); a call outside the ranges raises ArgumentError naming the input, the
dimension and the range before anything is exported. torch's logs and warnings stay silent around
export unless `verbose=True`; export failures are one line.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ArgumentError, TesselError
from tessel.frontend.torch import TorchImportError, quiet_torch_logs

torch = pytest.importorskip("torch")
from torch.export import Dim  # noqa: E402

RNG = np.random.default_rng()


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x, y):
        return torch.tanh(self.fc(x)) * y


class Seq(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(6)

    def forward(self, x):
        return torch.softmax(self.norm(x), dim=1)


def _close(got, want):
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def pair():
    m = Pair().eval()
    batch = Dim("batch", min=1, max=32)
    cm = ts.compile(m, (torch.randn(3, 8), torch.randn(3, 4)), target="cpu",
                    dynamic_shapes={"x": {0: batch}, "y": {0: batch}})
    return m, cm


def test_shapes_inside_the_range_match_eager_with_one_program(pair):
    m, cm = pair
    assert cm.symbolic is not None and set(cm.symbolic.kinds.values()) == {"symbolic"}, cm.symbolic_reason
    sizes = [int(b) for b in RNG.choice(np.arange(1, 33), size=3, replace=False)] + [32, 1]
    for b in sizes + sizes[:2]:
        x, y = torch.randn(b, 8), torch.randn(b, 4)
        _close(cm(x, y), m(x, y))
    assert cm.specializations == [(((3, 8), "float32"), ((3, 4), "float32"))]  # the example's program only
    assert cm.input_ranges.describe() == "x: (batch in [1, 32], 8), y: (batch in [1, 32], 4)"


def test_out_of_range_names_input_dimension_and_range_before_exporting(pair, monkeypatch):
    m, cm = pair
    assert cm.symbolic is not None  # compiled on first use (here, if this test runs first): before export is patched

    def no_export(*a, **k):
        raise AssertionError("no call may reach torch.export")

    monkeypatch.setattr(torch.export, "export", no_export)
    with pytest.raises(ArgumentError, match=r"input 'x' dimension 0 is 33, outside the range \[1, 32\] of 'batch'"):
        cm(torch.randn(33, 8), torch.randn(33, 4))
    with pytest.raises(ArgumentError, match=r"input 'y' dimension 0 is 6 but input 'x' dimension 0 is 5; both are "
                                            r"'batch'"):
        cm(torch.randn(5, 8), torch.randn(6, 4))
    with pytest.raises(ArgumentError, match=r"input 'x' dimension 1 is 9; the model fixes it at 8"):
        cm(torch.randn(5, 9), torch.randn(5, 4))
    with pytest.raises(ArgumentError, match=r"input 'x' has 3 dimension"):
        cm(torch.randn(2, 5, 8), torch.randn(5, 4))
    # an in-range shape is served by the one symbolic program: no export either
    b = int(RNG.integers(1, 33))
    x, y = torch.randn(b, 8), torch.randn(b, 4)
    _close(cm(x, y), m(x, y))


def test_an_exported_program_compiles_with_its_own_ranges_and_examples():
    m = Seq().eval()
    seq = Dim("seq", min=2)
    ep = torch.export.export(m, (torch.randn(2, 5, 6),), dynamic_shapes=({1: seq},))
    cm = ts.compile(ep, target="cpu")  # example inputs: the program's own
    for n in (2, int(RNG.integers(3, 40)), 5):
        x = torch.randn(2, n, 6)
        _close(cm(x), m(x))
    with pytest.raises(ArgumentError, match=r"input 'x' dimension 1 is 1, outside the range \[2, inf\)"):
        cm(torch.randn(2, 1, 6))


def test_example_inputs_outside_the_ranges_are_refused():
    m = Seq().eval()
    ep = torch.export.export(m, (torch.randn(2, 5, 6),), dynamic_shapes=({1: Dim("seq", min=2, max=8)},))
    with pytest.raises(ArgumentError, match=r"dimension 1 is 9, outside the range \[2, 8\]"):
        ts.compile(ep, (torch.randn(2, 9, 6),), target="cpu")


def test_bad_dynamic_shapes_spec_is_one_line():
    m = Seq().eval()
    with pytest.raises(TorchImportError) as info:
        ts.compile(m, (torch.randn(2, 5, 6),), target="cpu", dynamic_shapes={"nope": {0: Dim("b")}})
    assert "\n" not in str(info.value) and "dynamic_shapes" in str(info.value)
    with pytest.raises(TesselError, match="applies to torch modules"):
        ts.compile(ts.GraphBuilder("g").graph, dynamic_shapes={})


def test_dynamic_model_artifact_keeps_its_ranges_and_its_symbolic_program(pair, tmp_path, monkeypatch):
    m, cm = pair
    assert cm.symbolic is not None  # built (on first use) before saving, so the artifact keeps it
    loaded = ts.load(cm.save(tmp_path / "pair.tsl"))
    assert loaded.symbolic is not None and loaded.symbolic.kinds == cm.symbolic.kinds

    def refuse(*a, **k):
        raise AssertionError("a loaded model must not compile")

    import tessel.compiler.driver as driver

    monkeypatch.setattr(driver, "build", refuse)
    for b in (3, int(RNG.integers(1, 33))):  # the example's shape (its own program) and any other in the range
        x, y = torch.randn(b, 8), torch.randn(b, 4)
        _close(loaded(x, y), m(x, y))
    with pytest.raises(ArgumentError, match=r"dimension 0 is 40, outside the range \[1, 32\] of 'batch'"):
        loaded(torch.randn(40, 8), torch.randn(40, 4))


# -- quiet export and one-line errors ----------------------------------------------------------


def test_quiet_torch_logs_silences_torch_loggers_and_warnings_unless_verbose(caplog):
    def noisy():
        logging.getLogger("torch._subclasses.fake_tensor").error("fake tensor trace")
        warnings.warn_explicit("torch says", UserWarning, "trace.py", 1, module="torch.export._trace")

    for verbose in (False, True):
        caplog.clear()
        with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.ERROR):
            warnings.simplefilter("always")
            with quiet_torch_logs(verbose):
                noisy()
        assert ("fake tensor trace" in caplog.text) is verbose
        assert any("torch says" in str(w.message) for w in seen) is verbose


def test_compile_is_silent_around_export_unless_verbose(monkeypatch, caplog):
    real = torch.export.export

    def chatty_export(*a, **k):  # export as torch's noisy cases do it: a log record and a warning
        logging.getLogger("torch.fx.experimental.symbolic_shapes").warning("guard added: s0 > 1")
        warnings.warn_explicit("export internals", UserWarning, "x.py", 1, module="torch._export.utils")
        return real(*a, **k)

    monkeypatch.setattr(torch.export, "export", chatty_export)
    m = Seq().eval()
    x = torch.randn(2, 3, 6)
    for verbose in (False, True):
        caplog.clear()
        with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            cm = ts.compile(m, (x,), target="cpu", verbose=verbose)
        assert ("guard added" in caplog.text) is verbose
        assert any("export internals" in str(w.message) for w in seen) is verbose
    _close(cm(x), m(x))


def test_export_failure_is_one_line():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1  # data-dependent control flow: export refuses it

    with pytest.raises(TorchImportError) as info:
        ts.compile(Branchy(), (torch.randn(4),), target="cpu")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("torch.export.export failed on Branchy:"), msg
