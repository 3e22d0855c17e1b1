"""Reductions and row-wise norms on the CPU: tessel against numpy and onnxruntime, in one run.

Each case is a one-op ONNX model (ReduceMean over H x W of NCHW, ReduceSum over the last axis,
LayerNormalization, Softmax, and softmax's parts: ReduceMax and Exp), compiled by tessel (`ts.compile`)
and run by onnxruntime; numpy
computes the same thing (`x.mean((2, 3))`, `x.sum(-1)`, the layer norm and softmax formulas). All on
one thread (TESSEL_NUM_THREADS=1, onnxruntime's intra/inter-op threads 1), each call timed by the
calling thread's CPU time (time.thread_time), so other jobs on this shared VM do not count; the best
of interleaved blocks' medians. Prints per case: time, GB/s (input + output bytes over the time), the
fraction of the memory floor (bytes over the copy bandwidth tessel's profile measures: a 32 MiB copy,
or a 256 KiB one when the arrays fit in 1 MiB), and the peer ratios (peer time / tessel time, above 1:
tessel faster). Run numpy figures with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` (FACTS.md).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/cpu_reduce.py
    python bench/cpu_reduce.py --cases gap,layernorm --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ["TESSEL_NUM_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from cpu_gemm import machine  # noqa: E402

# (name, ONNX op, input shape, attributes)
CASES = {
    "gap": [("reduce_mean", "ReduceMean", s, {"axes": [2, 3], "keepdims": 0})
            for s in ((1, 128, 8, 8), (16, 128, 8, 8), (16, 512, 7, 7), (8, 256, 28, 28))],
    "rowsum": [("row_sum", "ReduceSum", s, {"keepdims": 0}) for s in ((1024, 64), (256, 1000), (64, 100000))],
    "layernorm": [("layer_norm", "LayerNormalization", s, {"axis": -1, "epsilon": 1e-5})
                  for s in ((16, 64, 64), (8, 128, 768), (4096, 1024))],
    "softmax": [("softmax", "Softmax", s, {"axis": -1}) for s in ((64, 64, 64), (512, 1000), (16, 12, 128, 128))],
    # softmax's parts on their own (what bounds it): the row maximum and the elementwise exp
    "softmax_parts": [("row_max", "ReduceMax", (512, 1000), {"keepdims": 0}), ("exp", "Exp", (512, 1000), {})],
}


def onnx_model(op: str, shape: tuple, attrs: dict):
    import onnx
    from onnx import TensorProto, helper

    inputs, inits, names = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [], ["x"]
    attrs = dict(attrs)
    if op in ("ReduceSum", "ReduceMax"):
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [1], [len(shape) - 1]))
        names.append("axes")
    if op == "ReduceMean":  # opset 18: axes as an input
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [len(attrs["axes"])], attrs.pop("axes")))
        names.append("axes")
    if op == "LayerNormalization":
        rng = np.random.default_rng(0)
        for p in ("scale", "bias"):
            inits.append(helper.make_tensor(p, TensorProto.FLOAT, [shape[-1]], rng.standard_normal(shape[-1])))
            names.append(p)
    node = helper.make_node(op, names, ["y"], **attrs)
    if op == "ReduceMean":
        out_shape = [d for k, d in enumerate(shape) if k not in (2, 3)]
    else:
        out_shape = list(shape[:-1]) if op in ("ReduceSum", "ReduceMax") else list(shape)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    g = helper.make_graph([node], "one_op", inputs, [out], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m


def numpy_fn(op: str, shape: tuple, attrs: dict, model):
    if op == "ReduceMean":
        ax = tuple(attrs["axes"])
        return lambda x: x.mean(ax)
    if op == "ReduceSum":
        return lambda x: x.sum(-1)
    if op == "ReduceMax":
        return lambda x: x.max(-1)
    if op == "Exp":
        return np.exp
    if op == "Softmax":
        def softmax(x):
            e = np.exp(x - x.max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)
        return softmax
    from onnx import numpy_helper

    w, b = (numpy_helper.to_array(t) for t in model.graph.initializer)

    def layer_norm(x):
        mu = x.mean(-1, keepdims=True)
        d = x - mu
        return d / np.sqrt((d * d).mean(-1, keepdims=True) + 1e-5) * w + b
    return layer_norm


def _time(fn, repeat: int) -> float:
    fn()
    out = []
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        out.append(time.thread_time() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {','.join(CASES)}")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing blocks per peer")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds of calls per timing block")
    args = ap.parse_args()
    import onnxruntime as ort

    import tessel as ts
    from tessel.codegen.tvm_profile import CACHE_BYTES, host_peaks

    _, bw, cached = host_peaks()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start; one thread each, thread CPU time")
    print(f"memory floor: bytes / {bw / 1e9:.1f} GB/s (32 MiB copy), {cached / 1e9:.0f} GB/s when the arrays fit "
          f"in 1 MiB; peer ratio = peer time / tessel time")
    head = (f"{'case':12s} {'shape':18s} {'tessel us':>10s} {'GB/s':>6s} {'floor':>6s} {'numpy us':>9s} "
            f"{'ort us':>8s} {'np/ts':>6s} {'ort/ts':>6s} {'max err':>8s}")
    print(head)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    for case in args.cases.split(","):
        for name, op, shape, attrs in CASES[case]:
            model = onnx_model(op, shape, attrs)
            x = np.random.default_rng().standard_normal(shape).astype("float32")
            cm = ts.compile(model, (x,))
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            npf = numpy_fn(op, shape, attrs, model)
            want = sess.run(None, {"x": x})[0]
            got = np.asarray(cm(x))
            err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))
            nbytes = x.nbytes + want.nbytes
            fns = {"ts": lambda: cm(x), "np": lambda: npf(x), "ort": lambda: sess.run(None, {"x": x})}
            one = max(_time(fns["ts"], 3), 1e-6)
            repeat = max(5, min(2000, int(args.min_time / one)))
            best = {k: float("inf") for k in fns}
            for _ in range(args.rounds):
                for k, f in fns.items():
                    best[k] = min(best[k], _time(f, repeat))
            t = best["ts"]
            floor = nbytes / (cached if nbytes <= CACHE_BYTES else bw)
            print(f"{name:12s} {str(shape):18s} {t * 1e6:10.2f} {nbytes / t / 1e9:6.1f} {100 * floor / t:5.0f}% "
                  f"{best['np'] * 1e6:9.2f} {best['ort'] * 1e6:8.2f} {best['np'] / t:6.2f} {best['ort'] / t:6.2f} "
                  f"{err:8.1e}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
