"""The `tessel` command: `tessel demo`, `tessel version`, and (to come) compile, tune, fuzz, log, bench.

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
    "compile": ("compile an ONNX or PyTorch model into a callable", None),
    "tune": ("tune kernels or a model and append to a tuning log", None),
    "fuzz": ("run a fuzzing campaign against the compiler", None),
    "log": ("show, merge, or pick the best records of tuning logs", None),
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
    return 0 if rows and all(r.passed for r in rows) else EXIT_ERROR


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
    p.add_argument("--runs", type=int, default=None, help="timed runs per kernel, after one warm-up")
    p.add_argument("--seed", type=int, default=None, help="seed of the random inputs (default: fresh)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("version", parents=[debug], help="print the version")
    p.set_defaults(func=_cmd_version)

    for name, (what, _) in PLANNED.items():
        p = sub.add_parser(name, parents=[debug], help=f"(not implemented yet) {what}", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=_cmd_planned)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `tessel` command with `argv` (default: sys.argv[1:]); returns the exit status.

    >>> main(["compile", "model.onnx"])
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
