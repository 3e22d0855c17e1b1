"""One compiled program for every size of one or two dynamic dimensions (torch `Dim` ranges, ONNX symbolic dims).

`build_symbolic(specialize, ranges, example_specs, options)` imports the model at three prime sizes
of each dynamic dimension (every combination: 3 or 9 imports, through the model's own `specialize`,
the per-shape import), runs the graph passes and the fusion, lowers and schedules every group at
each point, and generalises the kernels into one whose extents are expressions of scalar size
parameters (`tessel.compiler.symbolic_ir`; with two dimensions over the first, then those results
over the second, so a fused `b * s` extent comes out as a product). Each group ends as one of:

  * "symbolic": its scheduled kernel generalises; compiled once, called with the sizes (one binary
    for every size in the ranges), its guarded split loops peeled into full tiles and a guarded tail
    (`tessel.compiler.symbolic_tail`);
  * "per-shape": only its unscheduled kernel generalises (the schedule chose differently at one
    size); it is instantiated, scheduled and compiled once per new size, lazily, and cached.

When the graphs themselves differ between the sizes (a constant folded at one size only, a fusion
that changed, three dynamic dimensions...), there is no symbolic program: `SymbolicUnsupported`
says why, and the model keeps compiling once per shape. `SymbolicProgram.bind(sizes)` gives what a
`CompiledModel` runs for one call: the input specs at those sizes and `run(arrays)`.

Example (a torch model; `CompiledModel.symbolic` reports how each kernel is compiled):
    >>> import torch, tessel as ts                                                   # doctest: +SKIP
    >>> cm = ts.compile(torch.nn.Linear(8, 4), (torch.randn(2, 8),),
    ...                 dynamic_shapes={"input": {0: torch.export.Dim("b", max=64)}})  # doctest: +SKIP
    >>> cm.symbolic.kinds                                                           # doctest: +SKIP
    {'matmul_add': 'symbolic'}
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np

from tessel.compiler.model_io import InputSpec
from tessel.errors import TesselError
from tessel.ir.nodes import Var

PER_SHAPE_CACHE = 16  # per-shape kernels kept per group (one per size seen)
BOUND_CACHE = 8  # sizes whose bound program (and intermediates) a SymbolicProgram keeps


class SymbolicUnsupported(TesselError):
    """The model cannot be compiled once for its range (the message says why)."""


def primes_in(lo: int, hi: int, count: int = 3) -> list:
    """The `count` largest primes in [lo, hi] (at least 5), descending; fewer when the range holds fewer.

    >>> primes_in(1, 32)
    [31, 29, 23]
    >>> primes_in(1, 6)
    [5]
    """
    out = []
    for p in range(hi, max(lo, 5) - 1, -1):
        if p > 1 and all(p % d for d in range(2, int(p ** 0.5) + 1)):
            out.append(p)
            if len(out) == count:
                break
    return out


MAX_DIMS = 2  # dynamic dimensions a symbolic program generalises over (3 ** dims sample sizes)
# ops x sample sizes a symbolic program may lower and schedule (each sample costs about what one
# per-shape compile's scheduling does): a 1-dim model of up to 500 ops, a 2-dim one of up to 166
BUDGET = 1500


class Dim:
    """One dynamic dimension: its label, range, where it sits in the inputs, and its size parameter."""

    def __init__(self, label: str, lo: int, hi, where: list, var: Var):
        self.label, self.lo, self.hi, self.where, self.var = label, lo, hi, list(where), var

    def text(self) -> str:
        from tessel.compiler.model_ranges import fmt_range

        return f"'{self.label}' in {fmt_range(self.lo, self.hi)}"


def _dynamic_dims(ranges, example_specs) -> list:
    """[(Dim, example size)] of the dynamic dimensions; SymbolicUnsupported when there are none, more
    than MAX_DIMS, or a derived one."""
    labels: dict = {}
    for k, (_, dims) in enumerate(ranges.inputs):
        for d, dim in enumerate(dims):
            if isinstance(dim, int):
                continue
            if dim == "derived":
                raise SymbolicUnsupported(f"input {k} dimension {d} is derived from other dimensions")
            label, lo, hi = dim
            labels.setdefault(label, (lo, hi, []))[2].append((k, d))
    if not 1 <= len(labels) <= MAX_DIMS:
        raise SymbolicUnsupported(f"{len(labels)} dynamic dimensions ({', '.join(labels) or 'none'}); a symbolic "
                                  f"program has at most {MAX_DIMS}")
    out = []
    for label, (lo, hi, where) in labels.items():
        var = Var("n_" + re.sub(r"\W", "_", label), "int32")
        out.append((Dim(label, lo, hi, where, var), max(example_specs[k].shape[d] for k, d in where)))
    return out


def _sizes(lo: int, hi, example: int) -> list:
    """The three largest primes of the range (close together, so the schedules choose alike at all
    three; a constant that depends on the size only through `n // 16` then looks constant: the
    bounds check of `check_bounds` catches what that breaks)."""
    top = hi if hi is not None else max(128, 2 * example)
    sizes = primes_in(max(lo, 5), top)
    if len(sizes) < 3:
        raise SymbolicUnsupported(f"the range [{lo}, {hi}] holds fewer than three primes >= 5 to generalise from")
    return sizes


class _Grid:
    """The sample points: every combination of each dimension's three sizes, and generalising a
    quantity over them (the first dimension first, then the next over those results)."""

    def __init__(self, dims: list, sizes: list):
        import itertools

        self.dims, self.sizes = dims, sizes
        self.points = list(itertools.product(*sizes))  # the first dimension varies slowest

    def generalize(self, values: list, why: list):
        """One tree for `values` (one per point, in `points` order), or None."""
        from tessel.compiler.symbolic_ir import generalize

        def over(vals: list, k: int):
            if k == len(self.dims):
                return vals[0]
            stride = len(vals) // len(self.sizes[k])
            parts = [over(vals[i * stride:(i + 1) * stride], k + 1) for i in range(len(self.sizes[k]))]
            if any(p is None for p in parts):
                return None
            return generalize(parts, self.sizes[k], self.dims[k].var, why)

        return over(values, 0)


def find_dims(ranges, example_specs, options: dict) -> list:
    """[(Dim, example size)] of a model's dynamic dimensions; SymbolicUnsupported where there can be
    no symbolic program (see `_dynamic_dims`, GPU targets, tuning logs)."""
    if options.get("target", "cpu") != "cpu":
        raise SymbolicUnsupported(f"symbolic programs are compiled for the CPU, not {options['target']}")
    if options.get("tuning_log") is not None:
        raise SymbolicUnsupported("a tuning log schedules kernels per shape")
    return _dynamic_dims(ranges, example_specs)


def build_symbolic(specialize, ranges, example_specs, options: dict, found: list | None = None) -> SymbolicProgram:
    """The SymbolicProgram of a model (see the module docstring) over the dimensions `found`
    (default: `find_dims`, each over its whole range); raises SymbolicUnsupported."""
    from tessel.compiler.symbolic_tail import peel_tails

    t0 = time.perf_counter()
    if found is None:
        found = find_dims(ranges, example_specs, options)
    dims = [d for d, _ in found]
    grid = _Grid(dims, [_sizes(d.lo, d.hi, ex) for d, ex in found])
    first = _import_at(specialize, example_specs, dims, grid.points[0], options)
    ops = len(first[0].nodes)
    if ops * len(grid.points) > BUDGET:
        raise SymbolicUnsupported(f"{ops} ops to lower at {len(grid.points)} sample sizes is over the budget of "
                                  f"{BUDGET} (compile time)")
    imported = [first] + [_import_at(specialize, example_specs, dims, p, options) for p in grid.points[1:]]
    why: list = []
    graphs = [x[0] for x in imported]
    names = [list(g.values) for g in graphs]
    if any(x != names[0] for x in names):
        raise SymbolicUnsupported("the optimised graphs hold other values at different sizes")
    for name in names[0]:
        vals = [g.values[name] for g in graphs]
        if vals[0].is_const and not all(v.is_const and v.data.shape == vals[0].data.shape
                                        and np.array_equal(v.data, vals[0].data, equal_nan=True) for v in vals):
            raise SymbolicUnsupported(f"constant '{name}' differs between sizes")
    shapes = {}
    for name in names[0]:
        s = grid.generalize([tuple(g.values[name].shape) for g in graphs], why)
        if s is None:
            raise SymbolicUnsupported(f"value '{name}': {why[-1]}")
        shapes[name] = s
    groups = [_lower(g, options) for g in graphs]  # only once the graphs agree: scheduling is the slow part
    if any(len(g) != len(groups[0]) for g in groups):
        raise SymbolicUnsupported("the fusion made another number of groups at another size")
    scalars = tuple(d.var for d in dims)
    steps, kinds, built = [], {}, {}
    for k in range(len(groups[0])):
        per = [g[k] for g in groups]
        if any((p.ops, p.args) != (per[0].ops, per[0].args) for p in per):
            raise SymbolicUnsupported(f"group {k} ({per[0].ops}) fuses other ops at another size")
        naive = grid.generalize([p.naive for p in per], why)
        if naive is None:
            raise SymbolicUnsupported(f"kernel '{per[0].name}' does not generalise: {why[-1]}")
        scheduled = grid.generalize([p.scheduled for p in per], why)
        kernel = _with_scalars(peel_tails(scheduled), scalars) if scheduled is not None else None
        key = kernel if kernel is not None else ("per-shape", naive)
        step_kernel = built.get(key)
        if step_kernel is None:
            name = _unique(per[0].name, built.values())
            if kernel is not None:
                step_kernel = _SymbolicKernel(name, _build(kernel, name), scalars, _with_scalars(naive, scalars))
            else:
                step_kernel = _PerShapeKernel(name, _with_scalars(naive, scalars), scalars,
                                              f"its schedule differs between sizes: {why[-1]}")
            built[key] = step_kernel
        kinds[step_kernel.name] = step_kernel.kind
        steps.append(_Step(step_kernel, per[0].group, per[0].args))
    return SymbolicProgram(graphs[0], imported[0][1], dims, shapes, steps, kinds, time.perf_counter() - t0)


class _Lowered:
    """One group at one size: its ops, its kernel's arguments, the naive and the scheduled IR."""

    def __init__(self, group, name, args, naive, scheduled):
        self.group, self.name, self.args, self.naive, self.scheduled = group, name, args, naive, scheduled
        self.ops = tuple(group.ops)


def _import_at(specialize, example_specs, dims: list, point: tuple, options: dict):
    """(optimised graph, source graph) of the model imported with the dynamic dimensions at the
    sizes of `point`."""
    from tessel.compiler.model_program import copy_graph
    from tessel.ir.dtypes import numpy_dtype
    from tessel.passes.graph import optimize

    at = {w: size for dim, size in zip(dims, point) for w in dim.where}
    inputs = []
    for k, spec in enumerate(example_specs):
        shape = [at.get((k, d), s) for d, s in enumerate(spec.shape)]
        inputs.append(np.zeros(shape, numpy_dtype(spec.dtype)))
    source = specialize(inputs)
    work = copy_graph(source)
    if options.get("optimize", True):
        optimize(work, options.get("fold_limit"))
    work.prune()
    work.reorder_topologically()
    return work, source


def _lower(work, options: dict) -> list:
    """[_Lowered per group] of an optimised graph: fused, lowered and default-scheduled."""
    from tessel.compiler.driver import prepare
    from tessel.compiler.lowering import lower_group
    from tessel.passes.graph.fusion import fuse
    from tessel.schedules.generic import default_schedule

    groups = fuse(work, max_group_ops=options.get("max_group_ops", 32),
                  max_prologue_ops=options.get("max_prologue_ops", 8))
    out = []
    for g in groups:
        low = lower_group(work, g, inline=True)
        ir = low.ir
        out.append(_Lowered(g, low.naive.name, list(low.args), low.naive,
                            prepare(ir, "cpu", schedule=default_schedule(ir).kernel)))
    return out


def _with_scalars(kernel, scalars: tuple):
    import dataclasses

    return dataclasses.replace(kernel, params=tuple(kernel.params) + tuple(scalars))


def _build(ir, name: str):
    from tessel.compiler.driver import build

    return build(ir, "cpu", schedule=ir, name=name, pipeline=[])


def _unique(base: str, taken) -> str:
    names = {k.name for k in taken}
    if base not in names:
        return base
    k = 1
    while f"{base}_{k}" in names:
        k += 1
    return f"{base}_{k}"


class _Step:
    def __init__(self, kernel, group, args):
        self.kernel, self.group, self.args = kernel, group, args


class _SymbolicKernel:
    """A compiled kernel whose last parameters are the sizes (`scalars`), for every size."""

    kind = "symbolic"

    def __init__(self, name, kernel, scalars: tuple, naive=None):
        self.name, self.compiled, self.scalars = name, kernel, tuple(scalars)
        self.ir = kernel.ir
        self.naive = naive if naive is not None else kernel.ir  # the unscheduled kernel (with the sizes)

    def at(self, sizes: tuple):
        return self.compiled


class _PerShapeKernel:
    """A group whose schedule does not generalise: instantiated, scheduled and compiled per size."""

    kind = "per-shape"

    def __init__(self, name, naive, scalars: tuple, why: str):
        self.name, self.naive, self.scalars, self.why = name, naive, tuple(scalars), why
        self.ir = naive
        self._built: dict = {}
        self._lock = threading.Lock()

    def at(self, sizes: tuple):
        with self._lock:
            hit = self._built.get(sizes)
            if hit is None:
                hit = self._built[sizes] = _PerShapeCall(self._compile(sizes), len(self.scalars))
                if len(self._built) > PER_SHAPE_CACHE:
                    self._built.pop(next(iter(self._built)))
            return hit

    def _compile(self, sizes: tuple):
        import dataclasses

        from tessel.compiler.driver import build
        from tessel.compiler.symbolic_ir import instantiate_all
        from tessel.schedules.generic import default_schedule

        ir = dataclasses.replace(self.naive, params=tuple(p for p in self.naive.params if p not in self.scalars))
        ir = instantiate_all(ir, {v.name: n for v, n in zip(self.scalars, sizes)})
        return build(ir, "cpu", schedule=default_schedule(ir).kernel, name=self.name)


class _PerShapeCall:
    """A per-shape Kernel called like a symbolic one (the trailing sizes are dropped)."""

    def __init__(self, kernel, drop: int):
        self.kernel, self.ir, self.name, self.drop = kernel, kernel.ir, kernel.name, drop

    def __call__(self, *args):
        self.kernel(*args[:-self.drop])


class SymbolicProgram:
    """Every size of the dynamic dimensions (`dims`): shapes as expressions of their size
    parameters, the steps, their kinds."""

    def __init__(self, graph, source, dims: list, shapes, steps, kinds, seconds):
        from tessel.ir.dtypes import numpy_dtype

        self.graph, self.source, self.dims = graph, source, list(dims)
        self.scalars = tuple(d.var for d in self.dims)
        self.shapes, self.steps, self.kinds, self.compile_seconds = shapes, steps, kinds, seconds
        self._dtypes = {name: numpy_dtype(v.dtype) for name, v in graph.values.items()}
        self._consts = {name: v.data for name, v in graph.values.items() if v.is_const}
        self._produced = {v for s in steps for v in s.group.outputs}
        self._bound: dict = {}

    @property
    def kernels(self) -> list:
        return list({id(s.kernel): s.kernel for s in self.steps}.values())

    def range_text(self) -> str:
        """"'batch' in [1, 32]" (dimensions joined by "and")."""
        return " and ".join(d.text() for d in self.dims)

    def describe(self) -> str:
        """'linear: symbolic; softmax: per-shape (why)' for messages and the summary."""
        parts = []
        for k in self.kernels:
            parts.append(f"{k.name}: {k.kind}" + (f" ({k.why})" if k.kind == "per-shape" else ""))
        return "; ".join(parts)

    def size_of(self, key) -> tuple | None:
        """The sizes for an input signature ((shape, dtype), ...), or None when a dimension's
        occurrences disagree."""
        out = []
        for d in self.dims:
            sizes = {key[k][0][i] for k, i in d.where if k < len(key) and i < len(key[k][0])}
            if len(sizes) != 1:
                return None
            out.append(sizes.pop())
        return tuple(out)

    def bind(self, sizes: tuple) -> BoundProgram:
        hit = self._bound.get(sizes)
        if hit is None:
            if len(self._bound) >= BOUND_CACHE:  # each holds its intermediates: keep the latest few
                self._bound.pop(next(iter(self._bound)))
            hit = self._bound[sizes] = BoundProgram(self, sizes)
        return hit

    def env(self, sizes: tuple) -> dict:
        return {v.name: n for v, n in zip(self.scalars, sizes)}

    def shape_at(self, name: str, sizes: tuple) -> tuple:
        from tessel.compiler.symbolic_ir import instantiate_all

        return tuple(int(getattr(d, "value", d)) for d in instantiate_all(self.shapes[name], self.env(sizes)))


class _Plan:
    def __init__(self, sizes: dict):
        self.offsets = dict.fromkeys(sizes, 0)
        self.sizes = sizes
        self.arena_bytes = self.naive_bytes = sum(sizes.values())


class BoundProgram:
    """A SymbolicProgram at one size: what CompiledModel calls (inputs, run, steps, plan, report).
    Its intermediates are allocated once, on the first call, and reused (a lock serialises calls,
    as for a per-shape program's arena); outputs are fresh arrays every call. After one checked
    call the steps run as one `tvm_runtime.BoundSteps` (fixed arrays viewed once)."""

    def __init__(self, sym: SymbolicProgram, size: tuple):
        from tessel.ir.dtypes import numpy_dtype

        g = sym.graph
        self.symbolic, self.size, self.source, self.graph = sym, tuple(size), sym.source, g
        self.inputs = [InputSpec(v, sym.shape_at(v, size), g.values[v].dtype) for v in g.inputs]
        self._np_dtypes = [numpy_dtype(s.dtype) for s in self.inputs]
        self.steps = [_Step(s.kernel.at(size), s.group, s.args) for s in sym.steps]
        self.compile_seconds = sym.compile_seconds
        self.report = {"symbolic": dict(sym.kinds), "sizes": dict(zip((d.label for d in sym.dims), self.size))}
        self.target = "cpu"
        produced = dict.fromkeys(v for s in sym.steps for v in s.group.outputs)
        outputs = set(g.outputs)
        self._fresh = [(v, sym.shape_at(v, size), sym._dtypes[v]) for v in produced if v in outputs]
        self._temps = [(v, sym.shape_at(v, size), sym._dtypes[v]) for v in produced if v not in outputs]
        self.plan = _Plan({v: int(np.prod(shape)) * dt.itemsize for v, shape, dt in self._temps})
        self._fixed = None  # constants and intermediates, made on the first call
        self._bound = None  # BoundSteps after the first checked call; False: a kernel is no TVM one
        self._lock = threading.Lock()

    @property
    def kernels(self) -> list:
        return list({id(s.kernel): s.kernel for s in self.steps}.values())

    def run(self, arrays: list, profile: dict | None = None, number: int = 5) -> list:
        with self._lock:
            if self._fixed is None:
                self._fixed = dict(self.symbolic._consts)
                self._fixed.update((v, np.empty(shape, dt)) for v, shape, dt in self._temps)
            changing = dict(zip(self.graph.inputs, arrays))
            changing.update((v, np.empty(shape, dt)) for v, shape, dt in self._fresh)
            if self._bound and profile is None:
                self._bound(*[changing[v] for v in self._order])
            else:
                self._checked(changing, profile, number)
            env = {**self._fixed, **changing}
            results, given = [], set()
            for o in self.graph.outputs:
                fresh = o in self.symbolic._produced and o not in given
                results.append(env[o] if fresh else np.array(env[o], copy=True))
                given.add(o)
            return results

    def _checked(self, changing: dict, profile, number: int) -> None:
        env = {**self._fixed, **changing}
        n = list(self.size)
        for k, step in enumerate(self.steps):
            args = [env[a] for a in step.args] + n
            step.kernel(*args)
            if profile is not None:
                kern = getattr(step.kernel, "kernel", step.kernel)
                call = args[:-len(n)] if kern is not step.kernel else args
                profile[k] = kern.time(*call, number=number, repeat=3)
        if self._bound is None:
            self._bound = self._bind(changing)

    def _bind(self, changing: dict):
        """The steps as one BoundSteps: inputs and fresh outputs change per call, the rest is fixed
        (the sizes go in as numpy ints, which BoundSteps passes by value)."""
        from tessel.codegen.tvm_runtime import BoundSteps, Runner

        self._order = list(changing)
        index = {v: k for k, v in enumerate(self._order)}
        sizes = [np.int64(n) for n in self.size]
        steps = []
        for step in self.steps:
            kern = getattr(step.kernel, "kernel", step.kernel)
            runner = getattr(kern, "_runner", None)
            if not isinstance(runner, Runner):
                return False
            args = [index[a] if a in index else self._fixed[a] for a in step.args]
            steps.append((runner, args if kern is not step.kernel else args + sizes))
        return BoundSteps(steps)


def check_bounds(sym: SymbolicProgram, extra: tuple = ()) -> None:
    """Every kernel, instantiated at sizes across the ranges (both ends, a power of two, the middle,
    `extra`), must pass the verifier's bounds check: an extent fitted as a constant that really
    depends on the size (a loop of `n // 16` full vectors, the same 3 at 61, 59 and 53) writes out of
    bounds at small sizes even where the results happen to be right. A symbolic kernel that fails
    becomes a per-shape one (its unscheduled kernel scheduled per size); an unscheduled kernel that
    fails raises SymbolicUnsupported naming it and the sizes."""
    import dataclasses
    import itertools

    from tessel.compiler.symbolic_ir import instantiate_all
    from tessel.errors import VerifyError
    from tessel.ir.verify import verify

    per_dim = []
    for k, d in enumerate(sym.dims):
        low = max(d.lo, 1)
        top = d.hi if d.hi is not None else max(2 * low, 256)
        found = {low, low + 1, top, _round_size(d), (low + top) // 2}
        found |= {e[k] for e in extra if e is not None and k < len(e)}
        per_dim.append(sorted(n for n in found if n is not None and low <= n <= top))

    def problem(ir):
        bare = dataclasses.replace(ir, params=tuple(p for p in ir.params if p not in sym.scalars))
        for sizes in itertools.product(*per_dim):
            try:
                verify(instantiate_all(bare, sym.env(sizes)))
            except VerifyError as e:
                return f"at sizes {sizes}: {str(e).splitlines()[-1].strip().lstrip('- ')}"
        return None

    demoted: dict = {}
    for kern in sym.kernels:
        why = problem(kern.naive)
        if why is not None:
            raise SymbolicUnsupported(f"kernel '{kern.name}' {why}")
        if kern.kind == "symbolic":
            why = problem(kern.compiled.ir)
            if why is not None:
                demoted[id(kern)] = _PerShapeKernel(kern.name, kern.naive, kern.scalars,
                                                    f"its symbolic schedule fails the bounds check {why}")
    if demoted:
        sym.steps = [_Step(demoted.get(id(s.kernel), s.kernel), s.group, s.args) for s in sym.steps]
        sym.kinds = {k.name: k.kind for k in sym.kernels}
        sym._bound.clear()


def check_against(sym: SymbolicProgram, base, specialize) -> None:
    """Run `sym` on random inputs at the example sizes (against `base`, the program compiled for them),
    at the smallest sizes of the ranges and at a power of two in them (against the graph's numpy
    reference, imported there):
    a formula fitted through three sizes that extrapolates wrongly is caught here. Raises
    SymbolicUnsupported naming the sizes and the output that differ."""
    from tessel.compiler.model_io import _key_of, random_inputs
    from tessel.frontend.reference import run_graph

    size = sym.size_of(_key_of(base.inputs))
    check_bounds(sym, (size,))
    if size is not None and all(n >= d.lo and (d.hi is None or n <= d.hi) for n, d in zip(size, sym.dims)):
        arrays = random_inputs(base.inputs, seed=1)
        _compare(sym.bind(size).run(arrays), base.run(arrays), size, "the program compiled for that shape")
    low = tuple(max(d.lo, 1) for d in sym.dims)
    # the low end, and a round size (the largest power of two in the range: divisible by every tile,
    # where the primes never are; 64 at most) unless the sizes coincide
    round_ = tuple(_round_size(d) for d in sym.dims)
    for k, point in enumerate(dict.fromkeys(p for p in (low, round_) if p != size and None not in p)):
        bound = sym.bind(point)
        arrays = random_inputs(bound.inputs, seed=2 + k)
        graph = specialize([np.zeros(s.shape, a.dtype) for s, a in zip(bound.inputs, arrays)])
        _compare(bound.run(arrays), run_graph(graph, arrays), point, "the numpy reference")


def _round_size(d: Dim):
    """The largest power of two in d's range (at most 64: the reference runs there), or None."""
    top = min(d.hi if d.hi is not None else 64, 64)
    p = 1 << (top.bit_length() - 1) if top >= 1 else 0
    return p if p >= max(d.lo, 1) else None


def _compare(got: list, want: list, size: int, what: str) -> None:
    for k, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        ok = g.shape == w.shape and (np.allclose(g, w, rtol=1e-3, atol=1e-4, equal_nan=True)
                                     if np.issubdtype(g.dtype, np.inexact) else np.array_equal(g, w))
        if not ok:
            raise SymbolicUnsupported(f"at sizes {size} output {k} of the symbolic program differs from {what}")
