"""ONNX control flow. Folded at import time: `If` whose condition is known then, and `Loop` and
`Scan` unrolled when their trip counts are known then (the body subgraph is inlined once per
iteration, its names prefixed by `onnx_subgraph.renamed_graph`). A condition or trip count that
only the run time knows becomes an `if` or `loop` node holding its subgraphs as Graphs
(`onnx_control_graphs`), which the model compiler runs as control flow; where that cannot be (scan
outputs, branches of different shapes, sequences) the condition must be known at import, and the
error says why. Loops and Scans longer than UNROLL_LIMIT steps become `loop` nodes too (one body
compiled once, iterated), unless their body needs the iteration number as a constant; then they
unroll, up to MAX_UNROLL steps.

Example:
    >>> all(op in CONVERTERS for op in ("If", "Loop", "Scan"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, converter, ins, norm_axis, reshape  # noqa: F401
from tessel.frontend.onnx_ops_tensor import take

# Unrolling is per iteration: a larger trip count would make a graph too big to be worth compiling.
MAX_UNROLL = 4096
# Loops and Scans of more steps than this (with constant trip counts) run as a `loop` node that
# iterates one compiled body instead of unrolling, when their body allows (see _long_loop).
UNROLL_LIMIT = 64


def _base(ctx) -> str:
    return ctx.stack[-1][1]


def _bool_const(ctx, v, what: str) -> bool:
    return bool(np.asarray(ctx.need_const(v, what)).reshape(-1)[0])


def _runtime(ctx, build, v, what: str):
    """`build()` (a run-time control op), or NotConstantError on `v` saying why it cannot be one.
    A `v` computed from inputs whose values the caller offered (`import_onnx(input_values=)`) is
    bound instead: the control flow then folds, as it did before run-time control flow existed."""
    from tessel.frontend.onnx_control_graphs import NotRunnable

    src = ctx.derives.get(v, frozenset())
    if src and src <= set(ctx.available):
        ctx.need_const(v, what)  # raises NotConstantError: import_onnx binds those inputs and starts again
    try:
        return build()
    except NotRunnable as e:
        ctx.need_const(v, f"{what} (not run as control flow: {e})")  # raises: v is not constant
        raise


@converter("If")
def _if(ctx, node):
    (cond,) = ins(ctx, node)[:1]
    if ctx.try_const(cond) is None:
        from tessel.frontend.onnx_control_graphs import runtime_if

        return _runtime(ctx, lambda: runtime_if(ctx, node, cond, _base(ctx)), cond, "If's condition")
    branch = "then_branch" if _bool_const(ctx, cond, "If's condition") else "else_branch"
    return ctx.inline_graph(ctx.graph_attr(node, branch), [], f"{_base(ctx)}::{branch}::")


def _squeeze(ctx, x, axis):
    shape = ctx.shape(x)
    return reshape(ctx, x, shape[:axis] + shape[axis + 1:])


def _stack(ctx, values: list, axis: int) -> str:
    shape = ctx.shape(values[0])
    axis = norm_axis(ctx, axis, len(shape) + 1)
    parts = [reshape(ctx, v, shape[:axis] + (1,) + shape[axis:]) for v in values]
    return parts[0] if len(parts) == 1 else ctx.op("concat", parts, axis=axis)


@converter("Loop")
def _loop(ctx, node):
    vals = ins(ctx, node)
    trip, cond, carried = vals[0], vals[1], list(vals[2:])
    body = ctx.graph_attr(node, "body")
    n_scan = len(body.output) - 1 - len(carried)
    if (trip is not None and ctx.try_const(trip) is None) or (cond is not None and ctx.try_const(cond) is None):
        return _loop_at_run_time(ctx, node, trip, cond, carried, 0)
    limit = int(np.asarray(ctx.try_const(trip)).reshape(-1)[0]) if trip is not None else None
    if limit is None and cond is None:
        raise ctx.unsupported("a loop with neither trip count nor condition never ends")
    if limit is not None and limit > UNROLL_LIMIT and (cond is None or _bool_const(ctx, cond, "Loop's condition")):
        from tessel.frontend.onnx_control_graphs import runtime_loop

        outs = _long_loop(ctx, lambda: runtime_loop(ctx, node, trip, None, carried, f"{_base(ctx)}@loop", 0,
                                                    scans_ok=True))
        if outs is not None:
            return outs
    if (limit if limit is not None else 0) > MAX_UNROLL:
        raise ctx.unsupported(f"trip count {limit}: unrolled up to {MAX_UNROLL} iterations")
    scans: list = [[] for _ in range(n_scan)]
    i = 0
    while limit is None or i < limit:
        if cond is not None and ctx.try_const(cond) is None:  # the body made it a run-time value
            left = None if limit is None else ctx.const(np.array(limit - i, np.int64), "trip_left")
            return _loop_at_run_time(ctx, node, left, cond, carried, i)
        if cond is not None and not _bool_const(ctx, cond, "Loop's condition"):
            break
        if i >= MAX_UNROLL:
            raise ctx.unsupported(f"the condition still holds after {MAX_UNROLL} unrolled iterations")
        keep_going = cond if cond is not None else ctx.const(np.array(True), "cond")
        outs = ctx.inline_graph(body, [ctx.const(np.array(i, np.int64), "iter"), keep_going] + carried,
                                f"{_base(ctx)}::iter{i}::")
        cond, carried = outs[0], outs[1:1 + len(carried)]
        for k, v in enumerate(outs[1 + len(carried):]):
            scans[k].append(v)
        i += 1
    if n_scan and i == 0:
        raise ctx.unsupported("zero iterations: its scan outputs would be empty tensors")
    return carried + [_stack(ctx, s, 0) for s in scans]


def _long_loop(ctx, build):
    """`build()`: a long Loop or Scan as one iterated body; None (the graph unchanged) when its body
    needs the iteration number at import time, may stop early with scan outputs, or changes types."""
    from tessel.frontend.onnx_control_graphs import NotRunnable
    from tessel.frontend.onnx_import import NotConstantError

    try:
        return build()
    except (NotRunnable, NotConstantError):
        return None


def _loop_at_run_time(ctx, node, trip, cond, carried: list, start: int) -> list:
    from tessel.frontend.onnx_control_graphs import runtime_loop

    run_time = trip if trip is not None and ctx.try_const(trip) is None else cond
    what = "Loop's trip count" if run_time is trip else "Loop's condition"
    return _runtime(ctx, lambda: runtime_loop(ctx, node, trip, cond, carried, f"{_base(ctx)}@{start}", start),
                    run_time, what)


@converter("Scan")
def _scan(ctx, node):
    if ctx.version(node) < 9:
        return _scan8(ctx, node)
    vals = ins(ctx, node)
    n_in = int(ctx.attr(node, "num_scan_inputs"))
    states, xs = list(vals[:len(vals) - n_in]), vals[len(vals) - n_in:]
    body = ctx.graph_attr(node, "body")
    n_out = len(body.output) - len(states)
    in_axes = [norm_axis(ctx, a, len(ctx.shape(x))) for a, x in
               zip(ctx.attr(node, "scan_input_axes") or [0] * n_in, xs)]
    in_dirs = ctx.attr(node, "scan_input_directions") or [0] * n_in
    out_axes = ctx.attr(node, "scan_output_axes") or [0] * n_out
    out_dirs = ctx.attr(node, "scan_output_directions") or [0] * n_out
    return _scan_over(ctx, node, states, xs, in_axes, in_dirs, out_axes, out_dirs, _base(ctx))


def _scan_over(ctx, node, states, xs, in_axes, in_dirs, out_axes, out_dirs, base) -> list:
    body = ctx.graph_attr(node, "body")
    n_out = len(body.output) - len(states)
    steps = {ctx.shape(x)[a] for x, a in zip(xs, in_axes)}
    if len(steps) != 1:
        raise ctx.unsupported(f"scan inputs of different lengths {sorted(steps)}")
    (length,) = steps
    if length > UNROLL_LIMIT:
        from tessel.frontend.onnx_control_graphs import compiled_scan

        outs = _long_loop(ctx, lambda: compiled_scan(ctx, node, states, xs, in_axes, in_dirs, out_axes, out_dirs,
                                                     length, f"{base}@scan"))
        if outs is not None:
            return outs
    if length == 0 or length > MAX_UNROLL:
        raise ctx.unsupported(f"sequence length {length} (unrolled: 1 to {MAX_UNROLL})")
    scans: list = [[] for _ in range(n_out)]
    for t in range(length):
        slices = [_squeeze(ctx, take(ctx, x, [length - 1 - t if d else t], a), a)
                  for x, a, d in zip(xs, in_axes, in_dirs)]
        outs = ctx.inline_graph(body, states + slices, f"{base}::step{t}::")
        states = outs[:len(states)]
        for k, v in enumerate(outs[len(states):]):
            scans[k].append(v)
    return states + [_stack(ctx, s[::-1] if d else s, a) for s, a, d in zip(scans, out_axes, out_dirs)]


def _scan8(ctx, node):
    """Opset-8 Scan: inputs (sequence_lens, *states, *scan inputs), every one with a leading batch
    axis; the body runs per batch element over axis 1. Run as one opset-9 scan per batch element,
    the results stacked over the batch; sequence_lens must be absent or the full length."""
    vals = ins(ctx, node)
    lens, rest = vals[0], vals[1:]
    n_in = int(ctx.attr(node, "num_scan_inputs"))
    states, xs = list(rest[:len(rest) - n_in]), list(rest[len(rest) - n_in:])
    if not xs:
        raise ctx.unsupported("a Scan without scan inputs")
    batch, length = ctx.shape(xs[0])[:2]
    if lens is not None and not np.all(np.asarray(ctx.need_const(lens, "Scan's sequence_lens")) == length):
        raise ctx.unsupported("sequence_lens shorter than the sequence")
    dirs = ctx.attr(node, "directions") or [0] * n_in
    n_out = len(ctx.graph_attr(node, "body").output) - len(states)
    per_batch = []
    for b in range(batch):
        pick = [_squeeze(ctx, take(ctx, v, [b], 0), 0) for v in states + xs]
        per_batch.append(_scan_over(ctx, node, pick[:len(states)], pick[len(states):], [0] * n_in, dirs,
                                    [0] * n_out, [0] * n_out, f"{_base(ctx)}::batch{b}"))
    return [_stack(ctx, [outs[k] for outs in per_batch], 0) for k in range(len(per_batch[0]))]
