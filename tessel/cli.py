"""The `tessel` command: `tessel demo`, `tessel compile [-o model.tsl]`, `tessel version`, tune, fuzz, log, and
(to come) bench.

Errors that tessel raises on purpose (TesselError) are printed as one line, `tessel: error: ...`,
with exit status 1; `--debug` shows the traceback instead. Subcommands that do not exist yet say so
and exit with status 2: they never pretend to work.

Example:
    >>> main(["version"])  # doctest: +ELLIPSIS
    tessel ...
    0
"""

from __future__ import annotations

import argparse
import sys

from tessel.errors import TesselError

# Planned subcommands: what each will do, and the tracking issue once there is one (the lead fills
# in numbers). They print "not implemented yet" and exit 2 until they land.
PLANNED = {
    "bench": ("benchmark tessel against its peers", None),
}
EXIT_ERROR, EXIT_USAGE, EXIT_NOT_IMPLEMENTED = 1, 2, 2


def _cmd_version(args: argparse.Namespace) -> int:
    import tessel

    print(f"tessel {tessel.__version__}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # numpy and the back end load only when the demo runs
    from tessel.demo import run_demo

    rows = run_demo(target=args.target, sizes=args.sizes, runs=args.runs, seed=args.seed,
                    progress=not args.no_progress)
    from tessel.demo_models import run_model_demo

    print("\nsample models (built with the graph builder, compiled with tessel.compile; numpy: the graph run "
          "with each op's numpy reference)")
    models = run_model_demo(sizes=args.sizes, runs=args.runs or 3, seed=args.seed or 0)
    ok = rows and all(r.passed for r in rows) and all(m["check"] == "PASS" for m in models)
    return 0 if ok else EXIT_ERROR


def _parse_input_shapes(specs: list) -> dict:
    """`["x=1,3,224,224", "mask=1,128"]` -> {"x": (1, 3, 224, 224), "mask": (1, 128)}."""
    shapes = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            shape = None
        if not sep or not name or shape is None or any(d < 0 for d in shape):
            raise TesselError(f"compile: --input-shape {spec!r}: expected NAME=D0,D1,... (e.g. x=1,3,224,224)")
        shapes[name] = shape
    return shapes


def _positive_int(text: str) -> int:
    """argparse type of a count of runs: a positive integer, else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of runs, got {text!r}")
    return value


def _require_gpu(target: str, what: str) -> None:
    """A one-line TesselError when `target` runs on CUDA and this machine has no GPU torch can use."""
    if not str(target).startswith("cuda"):
        return
    try:
        import torch
    except ImportError:
        raise TesselError(f"{what}: target {target!r} runs on a GPU through torch, which is not installed") from None
    if not torch.cuda.is_available():
        raise TesselError(f"{what}: target {target!r} needs an NVIDIA GPU to run on, and this machine has none that "
                          f"torch can use (torch.cuda.is_available() is False); drop --check to only compile, "
                          f"or use --target cpu")


def _cmd_compile(args: argparse.Namespace) -> int:
    # the ONNX importer, numpy, onnxruntime and the back end load only when this command runs
    import time

    from tessel.compiler.compile_api import compile as tessel_compile
    from tessel.errors import ShapeError
    from tessel.frontend.onnx import import_onnx

    shapes = _parse_input_shapes(args.input_shape)
    if args.check:  # before compiling: a missing GPU should not cost a compile first
        _require_gpu(args.target, "compile --check")
    from tessel.compiler.compile_api import _is_artifact

    if _is_artifact(args.model):
        raise TesselError(f"compile: {args.model} is already a compiled tessel model (an artifact); run it with "
                          f"tessel.load({args.model!r})")
    try:
        graph = import_onnx(args.model, shapes)
    except ShapeError as e:
        raise ShapeError(f"{e} (on the command line: --input-shape NAME=D0,D1,...)") from None
    start = time.perf_counter()
    cm = tessel_compile(graph, target=args.target)
    took = time.perf_counter() - start
    print(f"tessel compile: {args.model}: {len(graph.nodes)} ops -> {len(cm.kernels)} kernels for "
          f"{args.target}, compiled in {took:.2f} s")
    if args.output:
        cm.save(args.output)
        print(f"tessel compile: wrote {args.output} ({_size(args.output)}); run it with tessel.load({args.output!r})")
        if args.check:  # check what was written: the file, loaded back
            from tessel.compiler.artifact import load_model

            cm = load_model(args.output)
            print(f"checking {args.output}, loaded back")
    if not args.check:
        return 0
    return _check_compiled(args, graph, cm)


def _size(path) -> str:
    import os

    n = os.path.getsize(path)
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _check_compiled(args: argparse.Namespace, graph, cm) -> int:
    """Run on random inputs, compare with onnxruntime (else tessel's op references), time both."""
    import numpy as np

    from tessel.compiler.model import random_inputs

    inputs = random_inputs(cm.inputs, seed=args.seed)
    run_args = inputs
    if str(args.target).startswith("cuda"):  # a CUDA model takes GPU tensors: move the inputs there
        import torch

        run_args = [torch.from_numpy(np.ascontiguousarray(x)).cuda() for x in inputs]
    got = cm(*run_args)
    got = [got] if len(graph.outputs) == 1 else list(got)
    got = [g.cpu().numpy() if hasattr(g, "cpu") else g for g in got]
    feeds = dict(zip(graph.inputs, inputs))
    sess, why_not = _ort_session(args.model)
    if sess is not None:
        import onnxruntime

        oracle = f"onnxruntime {onnxruntime.__version__}"
        want = sess.run(None, feeds)
    else:
        oracle = f"tessel's op references ({why_not})"
        want = cm.run_reference(*inputs)
        want = [want] if len(graph.outputs) == 1 else list(want)
    print(f"check against {oracle} on random inputs (seed {args.seed}):")
    ok = True
    for name, g, w in zip(graph.outputs, got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            print(f"  output '{name}': shape {g.shape}, expected {w.shape}  FAIL")
            ok = False
            continue
        diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        abs_err = float(np.max(diff)) if diff.size else 0.0
        rel_err = abs_err / scale if scale > 0 else abs_err
        good = bool(np.isfinite(rel_err) and rel_err <= args.rtol)
        ok &= good
        print(f"  output '{name}' {g.dtype}{list(g.shape)}: max abs error {abs_err:.3g}, max rel error "
              f"{rel_err:.3g} (of max |value| {scale:.3g})  {'OK' if good else 'FAIL'}")
    def run_once():
        cm(*run_args)
        if run_args is not inputs:  # GPU work is asynchronous: time it to the end
            import torch

            torch.cuda.synchronize()

    t_tessel = _median_seconds(run_once, args.runs)
    line = f"time (median of {args.runs} runs): tessel {t_tessel * 1e3:.3f} ms"
    if sess is not None:
        t_ort = _median_seconds(lambda: sess.run(None, feeds), args.runs)
        line += (f", onnxruntime {t_ort * 1e3:.3f} ms, ratio {t_ort / t_tessel:.2f} (onnxruntime / tessel: "
                 f"above 1 means tessel is faster)")
    print(line)
    return 0 if ok else EXIT_ERROR


def _ort_session(model):
    """(an onnxruntime session of `model`, None) or (None, why there is none)."""
    try:
        import onnxruntime
    except ImportError:
        return None, "onnxruntime is not installed"
    opts = onnxruntime.SessionOptions()
    opts.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"]), ""
    except Exception as e:  # noqa: BLE001 - e.g. a model IR version newer than this onnxruntime reads
        print(f"onnxruntime cannot run this model ({str(e).splitlines()[0][:160]}); "
              f"checking against tessel's op references instead", file=sys.stderr)
        return None, f"onnxruntime {onnxruntime.__version__} cannot load this model"


def _median_seconds(fn, runs: int) -> float:
    import statistics
    import time

    fn()  # warm-up
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cmd_planned(args: argparse.Namespace) -> int:
    what, issue = PLANNED[args.command]
    where = f"see issue {issue}" if issue else "see the status table in README.md"
    print(f"tessel {args.command}: not implemented yet ({where}); it will {what}", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tessel` command (exposed for tests and docs)."""
    # --debug is accepted before or after the subcommand; SUPPRESS keeps a subparser from
    # overwriting a value given before it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of errors")
    about = "tessel: a tensor compiler. Models and DSL kernels in, fast kernels out."
    parser = argparse.ArgumentParser(prog="tessel", parents=[debug], description=about)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", parents=[debug], help="build GEMM, softmax, layer norm and conv2d; check and time them",
                       description="Build four DSL kernels, check them against numpy, and time them next to numpy.")
    p.add_argument("--target", default="cpu", help="target to build for (default: cpu)")
    p.add_argument("--sizes", default="small", choices=("tiny", "small"), help="problem sizes (default: small)")
    p.add_argument("--runs", type=_positive_int, default=None, help="timed runs per kernel, after one warm-up")
    p.add_argument("--seed", type=int, default=None, help="seed of the random inputs (default: fresh)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("compile", parents=[debug], help="compile an ONNX model; --check runs it against onnxruntime",
                       description="Compile an ONNX model. With --check, run it on random inputs, compare with "
                                   "onnxruntime (max abs/rel error) and time both.")
    p.add_argument("model", help="path of the .onnx file (external data files next to it)")
    p.add_argument("--target", default="cpu", help="target to compile for (default: cpu)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                   help="shape of an input with dynamic dims (repeat for several inputs)")
    p.add_argument("-o", "--output", metavar="FILE.tsl", default=None,
                   help="write the compiled model (kernels' IR, sources and libraries, metadata) to an artifact "
                        "file that tessel.load runs without compiling; with --check, the file "
                        "is loaded back and checked")
    p.add_argument("--check", action="store_true", help="run on random inputs, compare with onnxruntime, time both")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="largest max-error / max-|value| that --check accepts per output (default: 1e-4)")
    p.add_argument("--runs", type=_positive_int, default=10,
                   help="timed runs for --check, after one warm-up (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("version", parents=[debug], help="print the version")
    p.set_defaults(func=_cmd_version)

    from tessel.tune.commands import add_commands  # tune, log (light: the tuner loads when they run)

    add_commands(sub, debug)
    from tessel.fuzz.commands import add_commands as add_fuzz  # fuzz (light: campaigns load when they run)

    add_fuzz(sub, debug)
    for name, (what, _) in PLANNED.items():
        p = sub.add_parser(name, parents=[debug], help=f"(not implemented yet) {what}", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=_cmd_planned)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `tessel` command with `argv` (default: sys.argv[1:]); returns the exit status.

    >>> main(["bench"])
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except TesselError as e:
        if getattr(args, "debug", False):
            raise
        print(f"tessel: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tessel: interrupted", file=sys.stderr)
        return 130
