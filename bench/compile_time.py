"""Compile time and speed of real models on the CPU: 2-layer GPT-2 and Llama from small
`transformers` configs (random weights), nn.TransformerEncoderLayer, and (on request) the
g2p_transformer ONNX model of the model zoo (6500 graph nodes, 294 kernels), against torch eager
(onnxruntime for g2p) in the same run.

Each model is compiled in this process with empty kernel caches (a temporary TESSEL_CACHE_DIR),
so every kernel is generated and compiled; the TVM import is timed separately. `compile s` is wall
clock; `cpu s` is the CPU time of this process and of the compilers it ran (the linker), which a
loaded machine inflates less; `sched s` is the CPU time of the default schedules alone.

    python bench/compile_time.py               # gpt2 and llama
    python bench/compile_time.py --models gpt2,llama,encoder,g2p
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def gpt2():
    """GPT-2, 2 layers, width 64, 4 heads, batch 2 x 12 tokens (the tests' configuration)."""
    import torch
    import transformers as tr

    torch.manual_seed(3)
    cfg = tr.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=100, use_cache=False,
                        bos_token_id=0, eos_token_id=0)
    return tr.GPT2LMHeadModel(cfg).eval(), (torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(4)),)


def llama():
    """Llama, 2 layers, width 64, 4 heads (2 KV heads), batch 2 x 12 tokens."""
    import torch
    import transformers as tr

    torch.manual_seed(5)
    cfg = tr.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100, max_position_embeddings=64, use_cache=False,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(6))
    return tr.LlamaForCausalLM(cfg).eval(), (ids,)


def encoder():
    """nn.TransformerEncoderLayer, width 32, 4 heads, batch 1 x 7 tokens (bench/cpu_models.py's)."""
    import torch

    torch.manual_seed(1)
    m = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    return m.eval(), (torch.randn(1, 7, 32),)


def g2p():
    """g2p_transformer from the model zoo (fetched with pip once, then cached), one word."""
    import numpy as np

    from tessel.frontend.model_zoo import fetch
    from tessel.frontend.model_zoo_inputs import example_inputs

    return str(fetch("g2p_transformer")), tuple(example_inputs("g2p_transformer", np.random.default_rng(0)).values())


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _peer(module):
    """The model run by its own framework: torch eager, or onnxruntime for an ONNX file."""
    import torch

    if isinstance(module, str):
        import onnxruntime as ort

        sess = ort.InferenceSession(module, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return lambda *xs: sess.run(None, dict(zip(names, xs)))[0]

    def run(*xs):
        with torch.no_grad():
            return _first(module(*xs))
    return run


def _first(out):
    """The first output (the logits of a transformers model) as a numpy array."""
    out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)
    return out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt2,llama")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    os.environ["TESSEL_CACHE_DIR"] = tempfile.mkdtemp(prefix="tessel-bench-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import tessel as ts

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from cpu_gemm import machine

    t0 = time.perf_counter()
    import tvm  # noqa: F401 - timed on its own: every CPU compile in a fresh process pays it once

    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    print(f"import tvm: {time.perf_counter() - t0:.2f} s")
    print(f"{'model':<7} {'compile s':>9} {'cpu s':>6} {'sched s':>7} {'kernels':>7} {'tessel ms':>9} "
          f"{'peer ms':>9} {'ratio':>6} {'max rel err':>11}")
    makers = {"gpt2": gpt2, "llama": llama, "encoder": encoder, "g2p": g2p}
    from tessel.schedules import generic

    default_schedule, sched = generic.default_schedule, [0.0]

    def timed_schedule(*a, **k):  # the default schedules' share of the compile
        t = time.thread_time()
        try:
            return default_schedule(*a, **k)
        finally:
            sched[0] += time.thread_time() - t

    generic.default_schedule = timed_schedule
    for name in args.models.split(","):
        module, inputs = makers[name]()
        peer = _peer(module)
        sched[0] = 0.0
        t0, c0 = time.perf_counter(), _cpu_seconds()
        cm = ts.compile(module, inputs, target="cpu")
        compile_s, cpu_s = time.perf_counter() - t0, _cpu_seconds() - c0
        arrays = [x.numpy() if hasattr(x, "numpy") else x for x in inputs]
        feed = arrays if isinstance(module, str) else inputs  # what the peer takes
        want = peer(*feed)
        got = _first(cm(*arrays))
        err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
        tt, tp = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            cm(*arrays)
            tt.append(time.perf_counter() - t)
            t = time.perf_counter()
            peer(*feed)
            tp.append(time.perf_counter() - t)
        mt, mp = statistics.median(tt) * 1e3, statistics.median(tp) * 1e3
        print(f"{name:<7} {compile_s:>9.2f} {cpu_s:>6.1f} {sched[0]:>7.2f} {len(cm.kernels):>7} {mt:>9.2f} "
              f"{mp:>9.2f} {mp / mt:>6.2f} {err:>11.1e}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print("ratio = peer time (torch eager; onnxruntime for g2p) / tessel time (above 1: tessel faster)")


if __name__ == "__main__":
    main()
