"""Translation of a kernel into Python source that runs it on numpy arrays.

The interpreter does not walk the tree per element: it translates a kernel once into a Python
function whose body mirrors the loop nest (a `for` per loop, an `if` per IfThenElse, one line per
Store), compiles it with `compile()`; the interpreter caches it. Expressions are translated by
expr.py. Buffers are passed flat, and every access computes a flat index; each index dimension is
checked against the shape at run time unless interval analysis proves it in range (so naive DSL
loop nests run without checks).

Threads: a loop bound to `blockIdx.*` / `threadIdx.*` becomes `v = _bid[0]` (or `_tid[...]`)
guarded by `if v < extent` when the extent is below the launch dimension; the function is then
run once per thread of the grid (gpu.py). A Barrier or an Intrinsic becomes a `yield`, which
makes the function a generator that the block scheduler steps thread by thread. With race
checking, each load / store of a shared buffer, a global allocation or a written global
parameter first calls that buffer's hook (`b_X_rd(flat, site, _act)` / `b_X_wr(...)`, race.py);
CPU kernels and runs without race checking get no hooks. Scalar (Var) parameters arrive as ints;
symbolic dims are computed once per binding and bounds-checked at run time.

CPython limits nested `for` blocks to 20 and indentation to 100 levels; deeper nests are moved
into separate functions that receive every visible name as a parameter.

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Load, Store, Var
    >>> i = Var("i"); A = Buffer("A", (4,)); B = Buffer("B", (4,))
    >>> t = translate_kernel(Kernel("k", (A, B), For(i, 4, Store(B, (i,), Load(A, (i,)) * 2.0))))
    >>> print(t.source.splitlines()[3])
        for v_i_3 in range(4):
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tessel.errors import DTypeError, ShapeError, VerifyError
from tessel.ir.dtypes import is_bool, is_int
from tessel.ir.interp.expr import Src, ExprTranslator, compile_source
from tessel.ir.interp.runtime import int_range
from tessel.ir.nodes import (
    LOOP_KINDS, SCOPES, THREAD_AXES, Allocate, Barrier, Buffer, BufferRef, Const, Expr, For, IfThenElse, Intrinsic,
    Kernel, LetStmt, Seq, Store, Var, walk,
)

BARRIER, INTRINSIC = "barrier", "intrinsic"  # the first item of what a thread yields
_AXES = {a: ("_bid" if a.startswith("block") else "_tid", "xyz".index(a[-1])) for a in THREAD_AXES}
_RUNTIME_PARAMS = ("_bufs", "_bid", "_tid", "_blk", "_glob", "_rc")
_MAX_LOOPS = 15  # nested `for`s per function (CPython allows 20 blocks)
_MAX_INDENT = 50  # indentation levels per function (CPython allows 100)


@dataclass
class Translation:
    """A kernel translated to Python: the function, its source, and what running it needs."""

    source: str
    fn: Callable
    params: tuple  # the kernel's parameter Buffers
    written: frozenset  # names of the parameters the kernel stores to or hands to an intrinsic
    intrinsics: frozenset  # names of the intrinsics it calls
    grid: tuple  # launch shape (x, y, z); (1, 1, 1) for CPU kernels; entries may be Exprs of scalar params
    block: tuple
    threaded: bool  # runs as a grid of threads (thread-bound loops, a launch, barriers or intrinsics)
    generator: bool  # threads yield at barriers and intrinsics
    cluster: tuple = (1, 1, 1)  # blocks co-scheduled as one unit (x, y, z)
    sites: tuple = ()  # load / store sites the race hooks name by index
    race: bool = False  # the hooks are in the code


class _Translator(ExprTranslator):
    """Translates a kernel's statements (expressions through ExprTranslator)."""

    def __init__(self, kernel: str, dims: dict, threaded: bool, race: bool = False):
        super().__init__(kernel)
        self.launch = dims  # launch dimension of each thread axis (None: symbolic, known at launch)
        self.threaded = threaded
        self.race = race  # emit race-checking hooks on shared and global accesses
        self.glob.update(_BARRIER=BARRIER, _INTRINSIC=INTRINSIC)
        self.loops = 0  # nested `for`s in the current function
        self.nsites = 0  # barriers and intrinsic calls, numbered in order of appearance
        self.written: set[str] = set()
        self.intrinsics: set[str] = set()

    def open_fn(self, name: str, params: tuple):
        fn = super().open_fn(name, params)
        if self.race:  # every function of a race-checked kernel knows its thread's actor
            saved, self.indent = self.indent, 1
            self.emit("_act = _rc[1]")
            self.indent = saved
        return fn

    def stmt(self, s) -> None:
        if isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x)
            return
        deep_loop = isinstance(s, For) and s.kind not in THREAD_AXES and self.loops >= _MAX_LOOPS
        if deep_loop or (self.indent >= _MAX_INDENT and isinstance(s, (For, IfThenElse))):
            self.split(s)
            return
        method = {For: self.for_, Store: self.store, Allocate: self.allocate, IfThenElse: self.if_,
                  LetStmt: self.let, Barrier: self.barrier, Intrinsic: self.intrinsic}.get(type(s))
        if method is None:
            raise self.error(VerifyError, f"cannot interpret the statement node {type(s).__name__}")
        method(s)

    def body(self, s) -> None:
        """`s` as an indented block."""
        self.indent += 1
        n = len(self.cur.lines)
        self.stmt(s)
        if len(self.cur.lines) == n:
            self.emit("pass")
        self.indent -= 1

    def split(self, s) -> None:
        """Move `s` into a function of its own that receives every visible name."""
        names = [n for n, _ in self.vars.values()] + [x for _, b, i, h in self.bufs.values()
                                                      for x in (b, i) + (h or ()) if x]
        names += [d for dims in self.shapes.values() for d in dims if not d.isdigit()]
        params = _RUNTIME_PARAMS + tuple(sorted(set(names)))
        saved = (self.cur, self.indent, self.loops)
        fn = self.open_fn(self.fresh("_part"), params)
        self.indent, self.loops = 1, 0
        try:
            self.stmt(s)
        finally:
            self.cur, self.indent, self.loops = saved
        call = f"{fn.name}({', '.join(params)})"
        self.emit(f"yield from {call}" if fn.yields else call)
        self.cur.yields |= fn.yields

    def for_(self, s: For) -> None:
        if not is_int(s.var.dtype) or not is_int(s.extent.dtype):
            raise self.error(DTypeError, f"loop '{s.var.name}' has var dtype {s.var.dtype} and extent dtype "
                                         f"{s.extent.dtype}; both must be integers")
        ext = self.expr(s.extent)
        name = self.fresh("v_" + s.var.name)
        if s.kind in THREAD_AXES:
            self.bound_loop(s, ext, name)
            return
        if s.kind not in LOOP_KINDS:
            raise self.error(VerifyError, f"loop '{s.var.name}' has unknown kind {s.kind!r}")
        # parallel / vectorized / unrolled run serially: their legality is the scheduler's business
        self.emit(f"for {name} in range({ext.src}):")
        self.loops += 1
        with self.bind(s.var, name, (0, max(ext.rng[1] - 1, 0))):
            self.body(s.body)
        self.loops -= 1

    def bound_loop(self, s: For, ext: Src, name: str) -> None:
        tup, pos = _AXES[s.kind]
        dim = self.launch[s.kind]
        self.emit(f"{name} = {tup}[{pos}]")
        if dim is None:  # a grid dimension known only at launch (symbolic): always guard
            with self.bind(s.var, name, (0, max(ext.rng[1] - 1, 0))):
                self.emit(f"if {name} < {ext.src}:")
                self.body(s.body)
            return
        if ext.rng[0] == ext.rng[1]:
            if ext.rng[0] > dim:
                raise self.error(VerifyError, f"loop '{s.var.name}' bound to {s.kind} has extent {ext.rng[0]} but "
                                              f"the launch has only {dim} along {s.kind}")
            guard = ext.rng[0] < dim
        else:
            self.emit(f"if {ext.src} > {dim}: _launch_error({self.kernel!r}, {s.var.name!r}, {s.kind!r}, "
                      f"{ext.src}, {dim})")
            guard = True
        with self.bind(s.var, name, (0, max(min(dim, ext.rng[1]) - 1, 0))):
            if guard:
                self.emit(f"if {name} < {ext.src}:")
                self.body(s.body)
            else:
                self.stmt(s.body)

    def store(self, s: Store) -> None:
        buf, name, _, hooks = self.buffer(s.buffer)
        if s.value.dtype != buf.dtype:
            raise self.error(DTypeError, f"store of a {s.value.dtype} value into buffer '{buf.name}' of {buf.dtype}")
        value = self.expr(s.value)
        flat = self.index(buf, s.indices, "store")
        if hooks is not None:
            flat = self.hoist(Src(flat, None, 0)).src
            self.emit(f"{hooks[1]}({flat}, {self.access_site('store', buf, s.indices)}, _act)")
        self.emit(f"{name}[{flat}] = {value.src}")
        self.written.add(buf.name)

    def allocate(self, s: Allocate) -> None:
        buf = s.buffer
        if buf.scope not in SCOPES:
            raise self.error(VerifyError, f"buffer '{buf.name}' has unknown scope {buf.scope!r}")
        key = f"{buf.name}#{self.fresh('')}"
        old, old_dims = self.bufs.get(buf.name), self.shapes.get(buf.name)
        dims = self.dims(buf) if buf.symbolic else None
        size = self.size_src(dims) if dims else buf.size
        if buf.scope == "shared":  # one per block
            src = f"_shared(_blk, {key!r}, {size}, {buf.dtype!r})"
        elif buf.scope == "global" and self.threaded:  # one per launch
            src = f"_shared(_glob, {key!r}, {size}, {buf.dtype!r})"
        else:  # one per execution of the Allocate (per thread in GPU kernels)
            src = f"_alloc({size}, {buf.dtype!r})"
        self.bind_buffer(buf, src, self.race and buf.scope != "local", dims)
        try:
            self.stmt(s.body)
        finally:
            if old is None:
                del self.bufs[buf.name]
            else:
                self.bufs[buf.name] = old
            if old_dims is None:
                self.shapes.pop(buf.name, None)
            else:
                self.shapes[buf.name] = old_dims

    def if_(self, s: IfThenElse) -> None:
        if not is_bool(s.cond.dtype):
            raise self.error(DTypeError, f"if condition has dtype {s.cond.dtype}, expected bool")
        c = self.expr(s.cond)
        self.emit(f"if {c.src}:")
        self.body(s.then)
        if s.else_ is not None:
            self.emit("else:")
            self.body(s.else_)

    def let(self, s: LetStmt) -> None:
        if s.var.dtype != s.value.dtype:
            raise self.error(DTypeError, f"let '{s.var.name}' of dtype {s.var.dtype} bound to a {s.value.dtype} value")
        v = self.expr(s.value)
        name = self.fresh("v_" + s.var.name)
        self.emit(f"{name} = {v.src}")
        with self.bind(s.var, name, v.rng):
            self.stmt(s.body)

    def barrier(self, s: Barrier) -> None:
        self.nsites += 1
        self.emit(f"yield (_BARRIER, 'barrier #{self.nsites}')")
        self.cur.yields = True

    def intrinsic(self, s: Intrinsic) -> None:
        args = []
        for a in s.args:
            if isinstance(a, BufferRef):
                buf, name, _, _ = self.buffer(a.buffer)
                if len(a.indices) != buf.ndim:
                    raise self.error(ShapeError, f"intrinsic '{s.name}': buffer '{buf.name}' given {len(a.indices)} "
                                                 f"indices; it has {buf.ndim} dimension(s)")
                start = "".join(f"{self.expr(i).src}, " for i in a.indices)
                args.append(f"_Ref({self.node(buf)}, {name}, ({start}), {self.kernel!r})")
                self.written.add(buf.name)
            else:
                args.append(self.expr(a).src)
        self.intrinsics.add(s.name)
        self.nsites += 1
        site = f"{s.name} #{self.nsites}"
        self.emit(f"yield (_INTRINSIC, {site!r}, {s.name!r}, ({''.join(a + ', ' for a in args)}))")
        self.cur.yields = True


def _launch_dims(kernel: Kernel):
    """The grid and block shapes (3-tuples), and whether the kernel runs as a grid of threads."""
    const_ext: dict[str, int] = {}
    dynamic, sync = set(), False
    for n in walk(kernel.body):
        if isinstance(n, For) and n.kind in THREAD_AXES:
            if isinstance(n.extent, Const):
                const_ext[n.kind] = max(const_ext.get(n.kind, 1), n.extent.value)
            else:
                dynamic.add(n.kind)
        elif isinstance(n, (Barrier, Intrinsic)):
            sync = True
    if kernel.launch is not None:
        grid, block = (tuple(kernel.launch.grid) + (1, 1, 1))[:3], (tuple(kernel.launch.block) + (1, 1, 1))[:3]
        for what, dims in (("grid", tuple(g for g in grid if not isinstance(g, Expr))), ("block", block)):
            if any(not isinstance(d, int) or d < 1 for d in dims):
                raise VerifyError(f"kernel '{kernel.name}': launch {what} {dims} must hold positive integers")
    else:
        if dynamic:
            raise VerifyError(f"kernel '{kernel.name}': a loop bound to {min(dynamic)} has a non-constant "
                              f"extent; give the kernel a Launch")
        grid = tuple(const_ext.get(f"blockIdx.{a}", 1) for a in "xyz")
        block = tuple(const_ext.get(f"threadIdx.{a}", 1) for a in "xyz")
    threaded = bool(const_ext or dynamic or sync) or kernel.launch is not None
    return grid, block, threaded


def translate_kernel(kernel: Kernel, race: bool = False, tracked: frozenset = frozenset()) -> Translation:
    """Translate `kernel` into a Python function `fn(bufs, bid, tid, blk, glob, rc)` (see the
    module docstring); `bufs` are the parameters' flat arrays. With `race` (threaded kernels
    only), loads and stores of shared buffers, global allocations and the parameters named in
    `tracked` call the hooks `rc(array, buffer)` returns (race.py); `rc` is unused otherwise."""
    if not isinstance(kernel, Kernel):
        raise VerifyError(f"expected a Kernel, got {type(kernel).__name__}")
    grid, block, threaded = _launch_dims(kernel)
    dims = {f"blockIdx.{a}": d if isinstance(d, int) else None for a, d in zip("xyz", grid)}
    dims.update({f"threadIdx.{a}": d for a, d in zip("xyz", block)})
    race = race and threaded
    t = _Translator(kernel.name, dims, threaded, race)
    main = t.open_fn("_kernel", _RUNTIME_PARAMS)
    names = set()
    for k, p in enumerate(kernel.params):  # scalar parameters first: buffer shapes may use them
        if not isinstance(p, (Buffer, Var)):
            raise t.error(VerifyError, f"parameter {k} is a {type(p).__name__}, neither a Buffer nor a scalar Var")
        if p.name in names:
            raise t.error(VerifyError, f"two parameters are named '{p.name}'")
        names.add(p.name)
        if isinstance(p, Var):
            if p.dtype not in ("int32", "int64"):
                raise t.error(DTypeError, f"scalar parameter '{p.name}' has dtype {p.dtype}; expected int32 or int64")
            t.vars[p] = (t.fresh("v_" + p.name), int_range(p.dtype))
            t.emit(f"{t.vars[p][0]} = _bufs[{k}]")
    for k, p in enumerate(kernel.params):
        if isinstance(p, Buffer):
            t.bind_buffer(p, f"_bufs[{k}]", race and p.name in tracked)
    t.stmt(kernel.body)
    source = t.source()
    fn = compile_source(source, kernel.name, t.glob, "_kernel")
    cluster = (tuple(kernel.launch.cluster) + (1, 1, 1))[:3] if kernel.launch is not None else (1, 1, 1)
    return Translation(source, fn, kernel.params, frozenset(t.written), frozenset(t.intrinsics), grid, block,
                       threaded, main.yields, cluster, tuple(t.sites), race)


__all__ = ["BARRIER", "INTRINSIC", "Translation", "translate_kernel"]
