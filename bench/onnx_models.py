"""Real trained ONNX models from public packages (tessel.frontend.model_zoo): tessel against onnxruntime.

For each model, in one run: compile it for the CPU, run it and onnxruntime on `--seeds` fresh
realistic inputs (tessel.frontend.model_zoo_inputs), and print
- the match: the largest normwise relative error max|tessel - ort| / max|ort| over the float
  outputs and seeds (integer outputs: the number of differing elements),
- onnxruntime's own spread: the same figure between onnxruntime with all graph optimisations and
  with none (two valid float32 evaluations of the model; a model whose spread is near its tessel
  error amplifies float32 rounding, there is no single right float32 answer),
- with `--f64`: each one's error against a float64 evaluation of the model (tessel's numpy
  reference graph run in float64),
- the CPU time of each (best block median, interleaved blocks) and the ratio ort time / tessel time
  (above 1: tessel faster), with the machine and its load average,
- tessel's compile time, and the part of it in the graph passes (pattern rules, canonicalisation,
  folding: `report["passes_seconds"]`).
A model tessel cannot compile gets a row naming the error. silero's voice-activity detectors take
the sample rate `sr` as an input that an `If` branches on: it runs as control flow in the compiled
model (tessel.compiler.model_control: both branches compiled once, the one `sr` picks runs).

    python bench/onnx_models.py                          # every model, 3 seeds
    python bench/onnx_models.py --models ppocr_det,silero_vad --seeds 5 --repeat 20 --f64
    python bench/onnx_models.py --layers ppocr_det       # per-op error against float64, tessel and ort
    python bench/onnx_models.py --models ppocr_det --f64 --split-convs 64   # blocked conv sums in the graph

Float32 drift (what `--layers` found, 2026-12-04): on the PP-OCR detector every op cut out alone
is as close to float64 as onnxruntime's except Conv with long reductions (3x3 over 96 channels,
1x1 over 384: 0.7-1.1e-6 against onnxruntime's 1.6-3.8e-7): tessel sums each output's C*kh*kw
products in one sequential float32 chain, onnxruntime in blocks. Fast-math sigmoid, hard-sigmoid,
Resize, BatchNormalization and ConvTranspose are at or below onnxruntime's error. On random
(text-free) images the detector's output is about 1e-6, and a relative error there measures the
logits' absolute error: onnxruntime against itself without graph optimisations differs by 5e-2.

Models are downloaded once with pip into ~/.cache/tessel/models (TESSEL_MODEL_DIR).
`--threads N` gives both N threads (default: tessel TESSEL_NUM_THREADS or every core, onnxruntime
every core). On a loaded machine use `--threads 1`: a thread pool that waits for a descheduled
worker loses whole scheduler slices (4 ms each), which swamps kernels of microseconds.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cpu_gemm import machine  # noqa: E402
from cpu_models import timed_blocks  # noqa: E402


def rel_err(got, want) -> float:
    """Normwise relative error max|got - want| / max|want| (float), or the count of differing
    elements (integer and bool outputs)."""
    got, want = np.asarray(got), np.asarray(want)
    if want.dtype.kind not in "fc":
        return float(np.count_nonzero(got != want))
    scale = max(float(np.max(np.abs(want.astype(np.float64)))), 1e-30) if want.size else 1.0
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0.0)) / scale


def ort_session(path, optimize: bool = True, outputs=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if os.environ.get("TESSEL_NUM_THREADS", "").strip():  # --threads: the same count for both
        so.intra_op_num_threads = int(os.environ["TESSEL_NUM_THREADS"])
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = path if outputs is None else outputs.SerializeToString()
    return ort.InferenceSession(src if isinstance(src, (bytes, str)) else str(src), so,
                                providers=["CPUExecutionProvider"])


def compile_zoo(name: str, feeds: dict, split_convs: int = 0):
    """(compiled model, the feed names it takes in order, note): tessel.compile on the model file
    (silero's `If` on its input `sr` runs as control flow). `split_convs`: see `split_long_convs`."""
    import onnx

    import tessel as ts
    from tessel.frontend.model_zoo import fetch

    path = str(fetch(name))
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input if i.name in feeds]
    if split_convs:
        path = split_long_convs(onnx.load(path), split_convs)
    note = "sr at run time (If as control flow)" if name.startswith("silero_vad") else ""
    return ts.compile(path, tuple(feeds[k] for k in names), target="cpu"), names, note


def _as_list(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def split_long_convs(model, limit: int):
    """A copy of `model` whose ungrouped Convs with more than `limit` products per output are split
    into channel blocks of at most `limit` products, their partial convolutions added: blocked
    float32 accumulation, written in the graph (an experiment on the drift, not a speed-up)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    consts = {t.name: t for t in m.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in m.graph.node if n.op_type == "Constant"})
    nodes, extra = [], []
    for n in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type != "Conv" or attrs.get("group", 1) != 1 or n.input[1] not in consts:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(consts[n.input[1]])
        per = int(np.prod(w.shape[2:]))
        if w.shape[1] * per <= limit:
            nodes.append(n)
            continue
        c = max(d for d in range(1, w.shape[1] + 1) if w.shape[1] % d == 0 and d * per <= max(limit, per))
        acc = None
        for j in range(w.shape[1] // c):
            p = f"{n.name or n.output[0]}_blk{j}"
            extra += [numpy_helper.from_array(np.array([j * c], np.int64), p + "_s"),
                      numpy_helper.from_array(np.array([(j + 1) * c], np.int64), p + "_e"),
                      numpy_helper.from_array(np.array([1], np.int64), p + "_a"),
                      numpy_helper.from_array(np.ascontiguousarray(w[:, j * c:(j + 1) * c]), p + "_w")]
            nodes.append(helper.make_node("Slice", [n.input[0], p + "_s", p + "_e", p + "_a"], [p + "_x"]))
            bias = [n.input[2]] if j == 0 and len(n.input) > 2 and n.input[2] else []
            nodes.append(helper.make_node("Conv", [p + "_x", p + "_w"] + bias, [p + "_y"], **attrs))
            if acc is not None:
                last = j == w.shape[1] // c - 1
                nodes.append(helper.make_node("Add", [acc, p + "_y"], [n.output[0] if last else p + "_sum"]))
            acc = p + "_y" if acc is None else p + "_sum"
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.initializer.extend(extra)
    return m


def run_one(name: str, seeds: int, repeat: int, rounds: int, f64: bool, split_convs: int = 0) -> dict:
    from tessel.frontend.model_zoo import MODELS, fetch
    from tessel.frontend.model_zoo_inputs import example_inputs

    path = str(fetch(name))
    row = {"model": name, "domain": MODELS[name].domain}
    ort_opt, ort_none = ort_session(path), ort_session(path, optimize=False)
    feeds = example_inputs(name, np.random.default_rng(0))
    row["inputs"] = " ".join("x".join(map(str, v.shape)) or "()" for v in feeds.values())
    t0 = time.perf_counter()
    cm, names, row["note"] = compile_zoo(name, feeds, split_convs)
    if split_convs:
        row["note"] = f"convs split into blocks of {split_convs} products; {row['note']}".rstrip("; ")
    row["compile_s"] = time.perf_counter() - t0
    row["passes_s"] = float(cm.report.get("passes_seconds", float("nan")))  # graph passes (part of compile)
    row["err"], row["spread"], row["err64"], row["ort64"] = 0.0, 0.0, 0.0, 0.0
    for seed in range(seeds):
        feeds = example_inputs(name, np.random.default_rng(seed))
        want = ort_opt.run(None, feeds)
        got = _as_list(cm(*[feeds[k] for k in names]))
        row["err"] = max([row["err"]] + [rel_err(g, w) for g, w in zip(got, want)])
        row["spread"] = max([row["spread"]] + [rel_err(a, w) for a, w in zip(ort_none.run(None, feeds), want)])
        if f64:
            ref = float64_outputs(path, feeds)
            row["err64"] = max([row["err64"]] + [rel_err(g, r) for g, r in zip(got, ref)])
            row["ort64"] = max([row["ort64"]] + [rel_err(w, r) for w, r in zip(want, ref)])
    feeds = example_inputs(name, np.random.default_rng(0))
    args = [feeds[k] for k in names]
    row.update(timed_blocks({"tessel": lambda: cm(*args), "ort": lambda: ort_opt.run(None, feeds)}, repeat, rounds))
    return row


# -- float64 references and per-op errors ---------------------------------------------------------


def float64_model(model):
    """A copy of ONNX `model` computing in float64: float initializers, Constant values, Cast-to-float
    targets and value types become double, in subgraphs too (Resize's roi and scales stay float,
    as the op requires)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    _widen_graph(m.graph)
    return m


def _widen_graph(g) -> None:
    import onnx
    from onnx import TensorProto, numpy_helper

    keep = {i for n in g.node if n.op_type == "Resize" for i in n.input[1:3]}

    def widen(t):
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))

    for t in g.initializer:
        if t.name not in keep:
            widen(t)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and not set(n.output) & keep:
                widen(a.t)
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if a.type == onnx.AttributeProto.GRAPH:
                _widen_graph(a.g)
            for sub in a.graphs:
                _widen_graph(sub)
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.name not in keep and v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE


def float64_outputs(model_or_path, feeds: dict) -> list:
    """The model's outputs computed in float64 by tessel's numpy reference graph (not by generated
    code); integer feeds are bound as constants where an op needs their value."""
    import onnx

    from tessel.frontend.onnx import import_onnx
    from tessel.frontend.reference import run_graph

    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    wide = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    graph = import_onnx(float64_model(model), {k: v.shape for k, v in wide.items()},
                        input_values={k: v for k, v in wide.items() if v.dtype.kind in "iub"})
    return run_graph(graph, [wide[k] for k in graph.inputs])


def with_all_outputs(path, feeds: dict):
    """(model, names): the model with every float intermediate tensor also a graph output."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    m = onnx.load(str(path))
    for i in m.graph.input:
        if i.name in feeds:
            for d, s in zip(i.type.tensor_type.shape.dim, feeds[i.name].shape):
                d.Clear()
                d.dim_value = s
    m = shape_inference.infer_shapes(m, data_prop=True)
    types = {v.name: v.type.tensor_type.elem_type for v in list(m.graph.value_info) + list(m.graph.output)}
    outs = [o.name for o in m.graph.output]
    inter = [o for n in m.graph.node if n.op_type != "Constant" for o in n.output
             if o and types.get(o) == TensorProto.FLOAT and o not in outs]
    for o in inter:
        m.graph.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, None))
    return m, outs + inter


def layers(name: str, seed: int, top: int) -> None:
    """Per-op errors against float64 of onnxruntime and tessel, every intermediate tensor an output."""
    import tessel as ts
    from tessel.frontend.model_zoo import fetch
    from tessel.frontend.model_zoo_inputs import example_inputs

    path = fetch(name)
    feeds = example_inputs(name, np.random.default_rng(seed))
    model, names = with_all_outputs(path, feeds)
    o32 = dict(zip(names, ort_session(None, outputs=model).run(names, feeds)))
    o64 = dict(zip(names, float64_outputs(model, feeds)))
    t0 = time.perf_counter()
    args = tuple(feeds[i.name] for i in model.graph.input if i.name in feeds)  # in the model's input order
    ots = dict(zip(names, _as_list(ts.compile(model, args, target="cpu")(*args))))
    print(f"{name}: {len(names)} tensors compared (tessel compiled with all of them as outputs in "
          f"{time.perf_counter() - t0:.0f} s); error = max|x - x64| / max|x64| per tensor")
    op_of = {o: n for n in model.graph.node for o in n.output}
    err = {k: (rel_err(o32[k], o64[k]), rel_err(ots[k], o64[k])) for k in names}
    by_op = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for k, (eo, et) in err.items():
        acc = by_op[op_of[k].op_type]
        acc[0], acc[1], acc[2] = max(acc[0], eo), max(acc[1], et), acc[2] + 1
    print(f"{'op':<22} {'count':>5} {'ort max':>9} {'tessel max':>10}")
    for op, (eo, et, c) in sorted(by_op.items(), key=lambda kv: -kv[1][1]):
        print(f"{op:<22} {c:>5} {eo:>9.2e} {et:>10.2e}")
    growth = []
    for n in model.graph.node:
        for o in n.output:
            if o in err:
                base = max([err[i][1] for i in n.input if i in err], default=0.0)
                growth.append((err[o][1] / max(base, 1e-9), o, n.op_type, base, err[o][1], err[o][0]))
    print(f"largest growth of tessel's error across one node (of {len(growth)}):")
    for g in sorted(growth, reverse=True)[:top]:
        print(f"  x{g[0]:<8.1f} {g[1][:36]:<36} {g[2]:<18} in {g[3]:.2e} -> out {g[4]:.2e}  (ort out {g[5]:.2e})")
    final = names[0]
    print(f"final '{final}': ort vs f64 {err[final][0]:.2e}, tessel vs f64 {err[final][1]:.2e}, "
          f"tessel vs ort {rel_err(ots[final], o32[final]):.2e}")


def main(argv=None) -> None:
    from tessel.frontend.model_zoo import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seeds", type=int, default=3, help="fresh inputs per model for the match")
    ap.add_argument("--repeat", type=int, default=10, help="calls per timing block")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing blocks per peer")
    ap.add_argument("--f64", action="store_true", help="also each one's error against float64")
    ap.add_argument("--layers", metavar="MODEL", help="per-op errors of MODEL against float64, then stop")
    ap.add_argument("--top", type=int, default=12, help="with --layers: how many nodes to list")
    ap.add_argument("--split-convs", type=int, default=0, metavar="N",
                    help="tessel runs the model with long convs split into blocks of N products (drift experiment)")
    ap.add_argument("--threads", type=int, help="threads for tessel and onnxruntime alike (default: theirs)")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["TESSEL_NUM_THREADS"] = str(args.threads)  # read when tessel first loads TVM
    if args.layers:
        layers(args.layers, 0, args.top)
        return
    from tessel.codegen.tvm_runtime import num_threads

    print(f"machine: {machine()}; load average {open('/proc/loadavg').read().strip()} at start; "
          f"tessel threads {num_threads()}, onnxruntime threads {os.environ.get('TESSEL_NUM_THREADS') or 'default'}")
    print("err: max|tessel - ort| / max|ort| over outputs and seeds (ints: elements that differ); "
          "ort spread: the same between ort optimised and unoptimised")
    print("time: best block median per call; ratio = ort time / tessel time (above 1: tessel faster)")
    head = f"{'model':<18} {'domain':<6} {'inputs':<24} {'err':>8} {'ort spread':>10}"
    if args.f64:
        head += f" {'ts vs f64':>9} {'ort vs f64':>10}"
    print(head + f" {'tessel ms':>10} {'ort ms':>8} {'ort/ts':>7} {'compile s':>9} {'passes s':>8}")
    for name in args.models.split(","):
        try:
            r = run_one(name, args.seeds, args.repeat, args.rounds, args.f64, args.split_convs)
        except Exception as e:  # noqa: BLE001 - one model failing must not hide the others
            print(f"{name:<18} FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
            continue
        line = f"{name:<18} {r['domain']:<6} {r['inputs']:<24} {r['err']:>8.1e} {r['spread']:>10.1e}"
        if args.f64:
            line += f" {r['err64']:>9.1e} {r['ort64']:>10.1e}"
        line += (f" {r['tessel'] * 1e3:>10.3f} {r['ort'] * 1e3:>8.3f} {r['ort'] / r['tessel']:>7.2f}"
                 f" {r['compile_s']:>9.1f} {r['passes_s']:>8.2f}")
        print(line + (f"  ({r['note']})" if r["note"] else ""), flush=True)
    print(f"load average {open('/proc/loadavg').read().strip()} at the end")


if __name__ == "__main__":
    main()
