"""Compile time and speed of real models on the CPU: 2-layer GPT-2 and Llama from small
`transformers` configs (random weights), against torch eager in the same run.

Each model is compiled in this process with empty kernel caches (a temporary TESSEL_CACHE_DIR),
so every kernel is generated and compiled; the TVM import is timed separately.

    python bench/compile_time.py               # gpt2 and llama
    python bench/compile_time.py --models gpt2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


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

    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"import tvm: {time.perf_counter() - t0:.2f} s")
    print(f"{'model':<6} {'compile s':>9} {'kernels':>7} {'tessel ms':>9} {'torch ms':>9} {'ratio':>6} "
          f"{'max rel err':>11}")
    makers = {"gpt2": gpt2, "llama": llama}
    for name in args.models.split(","):
        module, inputs = makers[name]()
        t0 = time.perf_counter()
        cm = ts.compile(module, inputs, target="cpu")
        compile_s = time.perf_counter() - t0
        with torch.no_grad():
            want = module(*inputs)
            want = want[0] if isinstance(want, (tuple, list)) else getattr(want, "logits", want)
            got = cm(*inputs)
            got = got[0] if isinstance(got, (tuple, list)) else getattr(got, "logits", got)
            err = float((got - want).abs().max() / want.abs().max())
            tt, tp = [], []
            for _ in range(args.runs):
                t = time.perf_counter()
                cm(*inputs)
                tt.append(time.perf_counter() - t)
                t = time.perf_counter()
                module(*inputs)
                tp.append(time.perf_counter() - t)
        mt, mp = statistics.median(tt) * 1e3, statistics.median(tp) * 1e3
        print(f"{name:<6} {compile_s:>9.2f} {len(cm.kernels):>7} {mt:>9.2f} {mp:>9.2f} {mp / mt:>6.2f} {err:>11.1e}")
    print("ratio = torch eager time / tessel time (above 1: tessel faster)")


if __name__ == "__main__":
    main()
