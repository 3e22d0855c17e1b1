"""The named tensor-IR pass pipeline of each target, as data, one comment per pass saying why it sits there.

A pipeline is a list of `Pass`es: a registered pass name and its parameters, e.g.
`Pass("unroll", {"max_extent": 8})`. Pipelines are plain data, so a caller (or the fuzzer) can
insert, delete, reorder and repeat passes and change their parameters, and store them as JSON
(`pipeline_to_json` / `pipeline_from_json`). `PASSES` is the registry: pass name -> where its
function lives (`module.attr`, a function `f(kernel, **params) -> Kernel`) and the parameters it
takes, with their types, defaults and ranges. An unknown pass name, an unknown parameter or a value
of the wrong type or outside its range raises `PipelineError` naming the pass and the parameter.

`run_pipeline` applies a pipeline in order; with `debug=True` (or `TESSEL_DEBUG=1` in the
environment) it runs the IR verifier before the first pass and after every pass, and a failure
names the pass that broke the kernel. The pass modules are imported when a pipeline runs, never at
import time.

Example:
    >>> [p.name for p in cpu_pipeline()]
    ['simplify', 'remove_dead_code']
    >>> p = pipeline_from_json('[{"name": "unroll", "params": {"max_extent": 4}}, "simplify"]')
    >>> p[0]
    Pass(name='unroll', params={'max_extent': 4})
    >>> pipeline_from_json(pipeline_to_json(p)) == p
    True
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from tessel.errors import PipelineError, VerifyError
from tessel.ir.nodes import Kernel


@dataclass(frozen=True)
class Param:
    """One parameter of a pass: its type (bool, int or str), default, and allowed values (an
    inclusive integer range `lo`..`hi`, or `choices`)."""

    type: type
    default: object
    lo: int | None = None
    hi: int | None = None
    choices: tuple = ()
    doc: str = ""

    def check(self, pass_name: str, name: str, value):
        ok_type = isinstance(value, self.type) and not (self.type is int and isinstance(value, bool))
        if not ok_type:
            raise PipelineError(f"pass '{pass_name}': parameter '{name}' must be {self.type.__name__}, "
                                f"got {value!r} ({type(value).__name__})")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise PipelineError(f"pass '{pass_name}': parameter '{name}' = {value!r} is outside "
                                f"[{self.lo}, {self.hi}]")
        if self.choices and value not in self.choices:
            raise PipelineError(f"pass '{pass_name}': parameter '{name}' = {value!r} is not one of "
                                f"{', '.join(map(repr, self.choices))}")
        return value


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: `module.attr` is `f(kernel, **params) -> Kernel`; `params` its parameters."""

    module: str
    attr: str
    params: dict = field(default_factory=dict)
    doc: str = ""


# The registry: every pass a pipeline may name. Parameters not given take their defaults.
PASSES: dict[str, PassInfo] = {
    "simplify": PassInfo("tessel.passes.simplify", "simplify",
                         doc="constant folding, algebraic and range-based index simplification"),
    "remove_dead_code": PassInfo("tessel.passes.dce", "remove_dead_code",
                                 doc="dead stores, unused allocations and lets, empty statements"),
    "vector_access": PassInfo(
        "tessel.codegen.cuda_vectorize", "decide_vector_loops",
        {"enabled": Param(bool, True, doc="False: every vectorized loop is printed as scalar accesses")},
        doc="decides which vectorized loops the CUDA printer turns into vector loads/stores"),
    "unroll": PassInfo(
        "tessel.passes.unroll", "unroll",
        {"max_extent": Param(int, 8, 0, 1024, doc="unroll loops of constant extent up to this"),
         "max_stmts": Param(int, 256, 1, 1 << 16, doc="largest unrolled body, in statements"),
         "serial": Param(bool, False, doc="also unroll serial loops, not only loops marked unrolled")},
        doc="full unrolling of small constant loops in the IR"),
    "storage_rewrite": PassInfo(
        "tessel.passes.storage", "rewrite_storage",
        {"shared": Param(bool, True, doc="also merge shared buffers separated by barriers"),
         "local": Param(bool, True, doc="merge local (register) buffers with disjoint lifetimes")},
        doc="sinks allocations to their uses and merges buffers whose lifetimes are disjoint"),
    "hoist": PassInfo(
        "tessel.passes.hoist", "hoist_invariants",
        {"min_ops": Param(int, 1, 1, 64, doc="hoist expressions with at least this many operations")},
        doc="loop-invariant index arithmetic as lets outside the loop"),
}


def register_pass(name: str, module: str, attr: str, params: dict | None = None, doc: str = "") -> None:
    """Add a pass to the registry (or replace one), so pipelines can name it.

    >>> register_pass("my_identity", "builtins", "id")
    >>> Pass("my_identity").name
    'my_identity'
    >>> unregister_pass("my_identity")
    """
    PASSES[name] = PassInfo(module, attr, dict(params or {}), doc)


def unregister_pass(name: str) -> None:
    PASSES.pop(name, None)


@dataclass(frozen=True, eq=True)
class Pass:
    """One step of a pipeline: a registered pass name and its parameters (the ones given; the
    others take their defaults). Validated when made.

    >>> Pass("unroll", {"max_extent": 4}).arguments()["max_stmts"]
    256
    >>> Pass("unrol")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tessel.errors.PipelineError: unknown pass 'unrol'; registered passes: simplify, remove_dead_code, vector_access, ...
    """

    name: str
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in PASSES:
            raise PipelineError(f"unknown pass {self.name!r}; registered passes: {', '.join(PASSES)}")
        if not isinstance(self.params, dict):
            raise PipelineError(f"pass '{self.name}': params must be a dict, got {type(self.params).__name__}")
        spec = PASSES[self.name].params
        for k, v in self.params.items():
            if k not in spec:
                known = ", ".join(spec) or "none"
                raise PipelineError(f"pass '{self.name}' has no parameter {k!r}; its parameters: {known}")
            spec[k].check(self.name, k, v)
        object.__setattr__(self, "params", dict(self.params))

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))

    def arguments(self) -> dict:
        """Every parameter's value: the given ones, then the defaults."""
        spec = PASSES[self.name].params
        return {k: self.params.get(k, p.default) for k, p in spec.items()}

    def function(self) -> Callable | None:
        info = PASSES[self.name]
        return _load(info.module, info.attr)

    def __call__(self, kernel: Kernel) -> Kernel:
        fn = self.function()
        return kernel if fn is None else fn(kernel, **self.arguments())

    def to_json(self) -> dict:
        return {"name": self.name, "params": dict(self.params)} if self.params else {"name": self.name}


def cpu_pipeline() -> list[Pass]:
    """The tensor-IR passes run on every CPU kernel after scheduling, before TVM codegen.

    >>> cpu_pipeline()[0]
    Pass(name='simplify', params={})
    """
    return [
        # Scheduling (split, fuse, compute_at) leaves index arithmetic such as (i_0 * 8 + i_1) // 8
        # and guards such as `k_0 * 4 + k_1 == 0` that fold to simple forms; simpler indices are
        # what TVM's vectorizer recognises as contiguous ramps.
        Pass("simplify"),
        # Guards folded to constants leave empty branches, and inlined producers leave buffers that
        # are written but never read; removing them saves work and allocations.
        Pass("remove_dead_code"),
    ]


def cuda_pipeline() -> list[Pass]:
    """The tensor-IR passes run on every GPU kernel after scheduling, before the CUDA printer.

    >>> [p.name for p in cuda_pipeline()]
    ['simplify', 'remove_dead_code', 'vector_access', 'unroll', 'simplify', 'storage_rewrite', 'hoist']
    """
    return [
        # GPU schedules (split, cache_read, pipeline, tensorize) leave `(0 % 2) * 2304`,
        # `(k_0 * 32 + k_1) - k_0 * 32` and extent-1 loops; thread-bound loop variables have known
        # ranges, so index arithmetic over threadIdx folds too. First, so every later pass (and
        # the vectorizer's alignment proof) sees the simplest indices.
        Pass("simplify"),
        # Guards folded to constants leave empty branches and unused temporaries.
        Pass("remove_dead_code"),
        # The printer turns a vectorized loop into 16-byte loads/stores only when it proves the
        # accesses contiguous and aligned; this makes that decision on the IR (loops that cannot
        # be vector accesses become unrolled scalar loops), before unrolling expands those, and
        # is where vector accesses are switched off (`enabled=False`).
        Pass("vector_access"),
        # Small constant loops marked unrolled (fragment element loops, vector fallbacks) are
        # expanded in the IR, so the next simplify folds their register-array indices to
        # constants; longer ones stay loops with `#pragma unroll`.
        Pass("unroll"),
        # Unrolling substituted constants for loop variables: fold what that made constant.
        Pass("simplify"),
        # Buffers whose lifetimes are disjoint share storage (shared memory only across
        # barriers), which lowers the shared memory per block; after unrolling, which refuses
        # bodies with allocations, so the sunk allocations do not block it.
        Pass("storage_rewrite"),
        # Last: lets hide the structure of an index from simplify and from the vectorizer's
        # alignment proof (which is why vectorized loops are left alone), so invariant index
        # arithmetic is hoisted only once nothing else needs to look into it.
        Pass("hoist"),
    ]


def pipeline_for(target) -> list[Pass]:
    """The pipeline of a target ("cpu", "cuda", or a Target).

    >>> [p.name for p in pipeline_for("cuda:sm_80")][:2]
    ['simplify', 'remove_dead_code']
    """
    kind = getattr(target, "kind", target)
    if isinstance(kind, str) and kind.split(":")[0].strip().lower() == "cuda":
        return cuda_pipeline()
    if kind == "cpu":
        return cpu_pipeline()
    return []


# ---------------------------------------------------------------------------------------------
# Pipelines as JSON
# ---------------------------------------------------------------------------------------------


def as_pipeline(value) -> list[Pass]:
    """A pipeline from what a caller may give: a list of Passes, of pass names, of
    `{"name": ..., "params": {...}}` dicts (mixed freely), or a JSON string of such a list.

    >>> [p.name for p in as_pipeline(["simplify", {"name": "hoist", "params": {"min_ops": 2}}])]
    ['simplify', 'hoist']
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise PipelineError(f"pipeline JSON does not parse: {e}") from e
    if isinstance(value, (Pass, dict)) or not isinstance(value, (list, tuple)):
        raise PipelineError(f"a pipeline is a list of passes, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, Pass):
            out.append(item)
        elif isinstance(item, str):
            out.append(Pass(item))
        elif isinstance(item, dict):
            extra = set(item) - {"name", "params"}
            if "name" not in item or extra:
                raise PipelineError(f"pipeline entry {i}: expected {{'name': ..., 'params': {{...}}}}, got {item!r}")
            out.append(Pass(item["name"], item.get("params") or {}))
        else:
            raise PipelineError(f"pipeline entry {i}: expected a Pass, a pass name or a dict, got {item!r}")
    return out


def pipeline_to_json(passes) -> str:
    """The JSON text of a pipeline (a list of {"name", "params"} objects)."""
    return json.dumps([p.to_json() for p in as_pipeline(passes)])


def pipeline_from_json(text) -> list[Pass]:
    """The pipeline a JSON text (or its parsed list) describes; PipelineError if it is not one."""
    return as_pipeline(text)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def debug_enabled() -> bool:
    """Whether `TESSEL_DEBUG` asks for the verifier between passes."""
    return os.environ.get("TESSEL_DEBUG", "").strip() not in ("", "0", "false", "no")


def run_pipeline(kernel: Kernel, passes, debug: bool = False) -> Kernel:
    """Apply `passes` (anything `as_pipeline` takes) in order. With `debug` (or TESSEL_DEBUG=1)
    verify the kernel before the first pass and after each one; a VerifyError names the pass
    after which the kernel went bad.

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A = Buffer("A", (4,)); i = Var("i")
    >>> k = Kernel("k", (A,), For(i, 4, Store(A, (i,), A[i] + 0.0)))
    >>> isinstance(run_pipeline(k, cpu_pipeline()), Kernel)
    True
    """
    passes = as_pipeline(passes)
    debug = debug or debug_enabled()
    verify = _load("tessel.ir.verify", "verify") if debug else None
    if verify is not None:
        _verify(verify, kernel, "before the first pass (the scheduled kernel)")
    for i, p in enumerate(passes):
        out = p(kernel)
        if not isinstance(out, Kernel):
            raise VerifyError(f"pass '{p.name}' returned {type(out).__name__} for kernel '{kernel.name}', "
                              f"expected a Kernel")
        kernel = out
        if verify is not None:
            _verify(verify, kernel, f"after pass '{p.name}' (step {i})")
    return kernel


def _verify(verify: Callable, kernel: Kernel, when: str) -> None:
    try:
        verify(kernel)
    except VerifyError as e:
        raise VerifyError(f"kernel '{kernel.name}' is not well formed {when}: {e}") from e


@functools.cache  # one import attempt (and one warning) per pass per process
def _load(module: str, attr: str) -> Callable | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:  # the module exists but something it imports is missing: a real bug
            raise
        warnings.warn(f"tessel: {module} is not available yet; its pass is skipped", RuntimeWarning, stacklevel=2)
        return None
    return getattr(mod, attr)


__all__ = [
    "PASSES", "Param", "Pass", "PassInfo", "as_pipeline", "cpu_pipeline", "cuda_pipeline", "debug_enabled",
    "pipeline_for", "pipeline_from_json", "pipeline_to_json", "register_pass", "run_pipeline", "unregister_pass",
]
