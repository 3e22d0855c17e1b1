"""PyTorch's operator database (`op_db`) through torch.export and `tessel.compile(target="cpu")`,
against eager PyTorch, per op: pass / wrong / unsupported (the aten op named) / export failed / error.

Each op's float32 CPU samples (the first --samples of them; 0 = all) are wrapped in a module whose
forward takes the sample's tensors (its other arguments are fixed), exported, compiled and run on
those same tensors; outputs are compared with eager at rtol 1e-4 / atol 1e-5 (NaN equal to NaN).
An op passes when every sample passes; an op whose graph draws random numbers (an aten op tagged
nondeterministic_seeded: rand_like, bernoulli, ...) is skipped, there is no value to compare.
Needs `expecttest` (torch's testing module imports it).

Run:  python bench/torch_ops.py --samples 2 --out /tmp/torch_ops.json      (about 1-2 s per sample)
      python bench/torch_ops.py --ops roll,cat,sum --samples 0 -v           (some ops, every sample)
      python bench/torch_ops.py --missing                                   (export only: rank the aten
                                                                             ops without a converter)
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import warnings


def _tensors_of(sample):
    """(flat list of the sample's tensors, rebuild(tensors) -> (input, args, kwargs))."""
    import torch

    slots = []

    def take(v):
        if isinstance(v, torch.Tensor):
            slots.append(v)
            return ("T", len(slots) - 1)
        if isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
            return ("L", type(v), [take(t) for t in v])
        return ("V", v)

    spec = (take(sample.input), [take(a) for a in sample.args], {k: take(v) for k, v in sample.kwargs.items()})

    def put(s, ts):
        if s[0] == "T":
            return ts[s[1]]
        if s[0] == "L":
            return s[1](put(x, ts) for x in s[2])
        return s[1]

    def rebuild(ts):
        inp, args, kwargs = spec
        return put(inp, ts), [put(a, ts) for a in args], {k: put(v, ts) for k, v in kwargs.items()}

    return slots, rebuild


def _module(op, rebuild):
    import torch

    class Wrapped(torch.nn.Module):
        def forward(self, *ts):
            inp, args, kwargs = rebuild(ts)
            return op.op(inp, *args, **kwargs)

    return Wrapped()


def _flat(out):
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out):
        return list(out)
    return None


def _random_op(message: str) -> str:
    """The aten op named by an 'unsupported op' message when torch tags it as drawing random numbers."""
    import re

    import torch

    m = re.search(r"unsupported (dropout|rrelu) in training mode", message)
    if m:
        return f"{m.group(1)} in training mode"
    m = re.search(r"unsupported op '(aten\.[\w.]+)'", message)
    if not m:
        return ""
    _, packet, overload = m.group(1).split(".")
    target = getattr(getattr(torch.ops.aten, packet, None), overload, None)
    return m.group(1) if target is not None and torch.Tag.nondeterministic_seeded in target.tags else ""


def _numpy(t):
    """A tensor as numpy (bfloat16, which numpy lacks, widened to float32: exact)."""
    import torch

    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def run_sample(op, sample) -> tuple[str, str]:
    """(status, detail) of one sample."""
    import numpy as np
    import torch

    import tessel as ts
    from tessel.errors import DTypeError, TesselError
    from tessel.frontend.ops import UnsupportedOpError
    from tessel.frontend.torch import TorchImportError

    tensors, rebuild = _tensors_of(sample)
    if not tensors:
        return "skip", "no tensor inputs"
    module = _module(op, rebuild)
    try:
        want = _flat(module(*tensors))
    except Exception as e:  # noqa: BLE001 - eager itself refuses this sample
        return "skip", f"eager fails: {type(e).__name__}"
    if want is None:
        return "skip", "non-tensor outputs"
    try:
        cm = ts.compile(module, tuple(tensors), target="cpu")
        got = cm(*tensors)
    except UnsupportedOpError as e:
        key = _random_op(str(e))
        if key:  # eager draws random numbers: there is nothing to compare with
            return "skip", f"random: {key}"
        return "unsupported", str(e).split(" (")[0][:120]
    except TorchImportError as e:
        return "export", str(e).splitlines()[0][:120]
    except DTypeError as e:
        if "has no tessel counterpart" not in str(e):
            return "error", f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        return "unsupported", str(e).splitlines()[0][:120]  # a dtype tessel lacks (complex, uint8, int16)
    except TesselError as e:
        return "error", f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    except Exception as e:  # noqa: BLE001 - a crash is a tessel bug: reported as such
        return "crash", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    got = [got] if len(want) == 1 and not isinstance(got, (list, tuple)) else list(got)
    for g, w in zip(got, want):
        g = _numpy(g) if isinstance(g, torch.Tensor) else np.asarray(g)
        w = _numpy(w)
        if g.shape != w.shape:
            return "wrong", f"shape {g.shape}, eager {w.shape}"
        if w.dtype.kind in "fc":
            ok = np.allclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True)
        else:
            ok = np.array_equal(g, w)
        if not ok:
            return "wrong", f"max abs diff {np.nanmax(np.abs(g.astype(np.float64) - w.astype(np.float64))):.3g}"
    return "pass", ""


def missing_ops(op, sample) -> set | str:
    """The aten ops of the sample's exported graph (decomposed where tessel needs it) that have no
    converter, or a string saying why there is no graph (export failed, no tensors ...)."""
    import torch

    from tessel.frontend.torch import decomposition_table, needs_decomposition, op_key

    tensors, rebuild = _tensors_of(sample)
    if not tensors:
        return "no tensor inputs"
    module = _module(op, rebuild)
    try:
        if _flat(module(*tensors)) is None:
            return "non-tensor outputs"
        ep = torch.export.export(module, tuple(tensors))
    except Exception as e:  # noqa: BLE001 - eager or export refuses this sample
        return f"export: {type(e).__name__}"
    bad = needs_decomposition(ep)
    if bad:
        try:
            ep = ep.run_decompositions(decomposition_table())
        except Exception as e:  # noqa: BLE001
            return f"decompose: {type(e).__name__}"
        bad = needs_decomposition(ep)
    return {op_key(n.target) for n in bad}


def rank_missing(ops, samples: int) -> None:
    """Print the aten ops without a converter, each with the op variants it alone blocks (the
    variant's only missing op) and the variants it appears in."""
    import torch

    from tessel.frontend.torch import quiet_torch_logs

    per_variant, start = {}, time.perf_counter()
    for op in ops:
        name = f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name
        try:
            got = list(op.sample_inputs("cpu", torch.float32, requires_grad=False))[:samples or None]
        except Exception:  # noqa: BLE001
            continue
        miss = set()
        for sample in got:
            with quiet_torch_logs():
                m = missing_ops(op, sample)
            if isinstance(m, set):
                miss |= m
        per_variant[name] = miss
    alone, anywhere = collections.Counter(), collections.Counter()
    for miss in per_variant.values():
        anywhere.update(miss)
        if len(miss) == 1:
            alone.update(miss)
    blocked = sum(1 for m in per_variant.values() if m)
    print(f"{len(per_variant)} op variants in {time.perf_counter() - start:.0f} s, {blocked} hold an aten op "
          "without a converter; per op: variants it alone blocks / variants it appears in")
    for key, n in sorted(anywhere.items(), key=lambda kv: (-alone[kv[0]], -kv[1], kv[0])):
        users = [v for v, m in per_variant.items() if key in m]
        print(f"  {alone[key]:3d} {n:3d}  {key:<44} {' '.join(users[:6])}{' ...' if len(users) > 6 else ''}")


# ops whose eager result is uninitialised memory: nothing to compare
NONDETERMINISTIC = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted"}
ORDER = ("wrong", "crash", "error", "unsupported", "export", "skip", "pass")


def variant_name(op) -> str:
    """'name.variant' of an op_db entry (its name alone when it has no variant)."""
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def select_ops(names=frozenset()) -> list:
    """op_db's entries with float32 CPU samples (those named, when names are given; by op name or
    variant name), minus the ones whose eager result is uninitialised memory."""
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    return [op for op in op_db if (not names or op.name in names or variant_name(op) in names)
            and torch.float32 in op.supported_dtypes("cpu") and op.name not in NONDETERMINISTIC]


def run_op(op, samples: int = 2) -> list:
    """[status, detail] of an op_db entry over its first `samples` float32 samples (0: all): the worst
    sample's, in the order of ORDER."""
    import torch

    from tessel.frontend.torch import quiet_torch_logs

    statuses = []
    try:
        got = list(op.sample_inputs("cpu", torch.float32, requires_grad=False))
    except Exception as e:  # noqa: BLE001
        got, statuses = [], [("skip", f"samples fail: {type(e).__name__}")]
    for sample in got[:samples or None]:
        with quiet_torch_logs():
            statuses.append(run_sample(op, sample))
    status = min((s for s, _ in statuses), key=ORDER.index, default="skip")
    return [status, next((d for s, d in statuses if s == status), "")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2, help="samples per op (0: all)")
    ap.add_argument("--ops", default="", help="comma-separated op names (default: every op)")
    ap.add_argument("--out", default="", help="write per-op results as JSON here")
    ap.add_argument("--missing", action="store_true", help="export only: rank the aten ops without a converter")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every op's result")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    ops = select_ops(set(filter(None, args.ops.split(","))))
    if args.missing:
        rank_missing(ops, args.samples)
        return 0
    results, start = {}, time.perf_counter()
    for op in ops:
        status, detail = results[variant_name(op)] = run_op(op, args.samples)
        if args.verbose or status in ("wrong", "crash"):
            print(f"{variant_name(op):<40} {status:<11} {detail}", flush=True)
    counts = collections.Counter(s for s, _ in results.values())
    exportable = sum(v for k, v in counts.items() if k not in ("export", "skip"))
    print(f"{len(results)} ops ({args.samples or 'all'} samples each) in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{k} {counts[k]}" for k in ORDER if counts[k])
          + (f"; pass {counts['pass'] / exportable:.0%} of the {exportable} that export" if exportable else ""))
    reasons = collections.Counter(d for s, d in results.values() if s == "unsupported")
    for reason, n in reasons.most_common(15):
        print(f"  {n:4d}  {reason}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if counts["wrong"] or counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
