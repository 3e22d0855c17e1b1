"""Tensor IR -> TVM TIR (`tvm.tirx` PrimFunc), the first half of the CPU backend.

A CPU-scheduled tessel `Kernel` (serial / parallel / vectorized / unrolled loops, global and local
allocations, lets, ifs, stores, math calls) becomes one TVM PrimFunc whose parameters are the
kernel's buffers and scalar parameters in call order. `tessel.codegen.tvm_runtime` compiles it with
LLVM and calls it. Scalar parameters (int32 / int64 `Var`s) become TIR `Var` parameters, and the
buffer shapes, loop extents and allocations that use them are symbolic in the PrimFunc too (TVM's
packed entry checks each array's shape against them at call time): one compiled function serves
every length.

Why TIR nodes are built directly (not TVMScript text): measured on TVM 0.27,
  * speed: building the nodes of the default-scheduled GEMM, softmax and conv2d takes 1.5-3.6 ms,
    while `tvm.script.from_source` of the same functions' text takes 35-43 ms (2-core VM under
    load), plus about 130 ms for the first parse in a process;
  * robustness: no quoting, name mangling or printer/parser round trip; a let written as text
    (`x = value`) parses into a *mutable variable* binding that TVM 0.27's VectorizeLoop
    mis-compiles inside vectorized loops (every lane gets the last lane's value), while a `Bind`
    node built here is a true let and vectorizes correctly.
The TVMScript text is still available for reading: `to_tvm(kernel).script()`.

Semantics kept equal to the reference interpreter (`tessel.ir.interp`):
  * `floordiv` / `floormod` round toward minus infinity (TVM's FloorDiv/FloorMod do the same);
    `MIN // -1` wraps to MIN as in the interpreter (x86 would trap); integer division by zero is
    undefined in compiled code (the process gets SIGFPE) while the interpreter raises;
  * float -> int casts truncate toward zero and saturate, NaN giving 0 (LLVM fptosi.sat); casts to
    bool test `!= 0`;
  * `Select` is lazy when a branch could fault (a load, or integer division): it becomes
    `T.if_then_else`, which only evaluates the chosen branch; other Selects stay eager `Select`s,
    which vectorize to blend instructions;
  * math on float16 / bfloat16 is computed in float32 and rounded back (what numpy does); a cast
    to bfloat16 rounds on the bits, ties to even, because TVM's bfloat16 legalisation drops the
    rounding of a cast that is only read;
  * float32 exp, sigmoid and tanh are polynomials that vectorize (`tvm_fastmath`, within 2 ulp
    of libm), erf a rational approximation (within 7 ulp), instead of scalar libm calls;
  * float min / max propagate NaN and float floordiv / floormod follow numpy's fmod-based
    algorithm, as the interpreter (numpy scalars) does;
  * TVM 0.27's iter-map simplification (FlattenBuffer) merges floordiv / floormod terms of one
    access whose dividends differ by a constant as if they were equal (`in3[(i + 3) % 2, i % 2]`,
    flattened to `(i + 3) % 2 * 2 + i % 2`, read `in3[(i + 1) % 2 * 3]`): such terms are emitted
    in truncated form, which that analysis leaves alone, after nested floormods are folded
    (`((x % m) + c) % m` is `(x + c) % m`; fuzz case tvm_index_of_nested_floormod);
  * one difference remains: LLVM fuses `a * b + c` into one FMA (one rounding instead of two),
    which GEMMs need for speed; float results may differ from the interpreter in the last bits.

Scheduling choices are honoured, with these fallbacks (the code stays correct, only slower):
a `vectorized` or `unrolled` loop whose extent is not a constant runs serially, a `parallel` one
runs in parallel only when its extent times its body's static iterations reaches
`MIN_PARALLEL_WORK` at run time (the code holds both versions), and so does a
`vectorized` loop that allocates a buffer inside (TVM 0.27 computes wrong values there); a
`parallel` loop nested in another parallel or vectorized loop runs serially (TVM's thread pool is
not re-entrant). `shared` buffers act as `global` ones on the CPU. GPU constructs (thread-bound loops,
barriers, intrinsics) raise CodegenError.

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B = Buffer("A", (8,)), Buffer("B", (8,))
    >>> i = Var("i")
    >>> k = Kernel("double", (A, B), For(i, 8, Store(B, (i,), A[i] * 2.0), "vectorized"))
    >>> "T.vectorized(8)" in to_tvm(k).script()
    True
"""

from __future__ import annotations

import math

import re

from tessel.codegen import tvm_fastmath as _fastmath
from tessel.codegen import tvm_minmax
from tessel.codegen import tvm_select
from tessel.codegen.tvm_index import divides, fold_nested_mod, interval, offset_divmods
from tessel.errors import CodegenError
from tessel.ir.dtypes import bits, is_float, is_int, is_unsigned, numpy_dtype
from tessel.ir.nodes import (
    Allocate,
    Barrier,
    Buffer,
    Binary,
    Call,
    Cast,
    Const,
    Expr,
    For,
    IfThenElse,
    Intrinsic,
    Kernel,
    LetStmt,
    Load,
    Not,
    Select,
    Seq,
    Stmt,
    Store,
    Var,
    walk,
)

# Memory scopes on the CPU: there is one "block", so shared memory is ordinary memory.
_SCOPES = {"global": "global", "shared": "global", "local": "local"}


def symbol_name(kernel: Kernel) -> str:
    """The C symbol of a kernel's entry function: `tessel_` + its name made identifier-safe (the
    prefix keeps a kernel named `exp` or `main` from shadowing a libc symbol).

    >>> symbol_name(Kernel("my-gemm", (), Seq(())))
    'tessel_my_gemm'
    """
    return "tessel_" + re.sub(r"\W", "_", kernel.name)


def to_tvm(kernel: Kernel, bind_in_narrow: bool = True):
    """Translate a CPU-scheduled kernel into a `tvm.tirx.PrimFunc` (entry symbol `symbol_name`).

    Parameter buffers promise only element alignment, so numpy arrays at any address can be
    passed without copies. Fast-math functions bind their argument with a Let, except in kernels
    holding bfloat16 (TVM's bfloat16 legalisation mishandles a Let), and in float16 kernels when
    `bind_in_narrow` is off (`tessel.codegen.tvm.build_module` retries so where TVM refuses a build).
    Repeated instead of bound, a nested erf(erf(x)) grows multiplicatively: in a float16 kernel it
    took 20 s in TVM's passes (the fuzz campaigns' recurring hang).

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A = Buffer("A", (4,), "int32")
    >>> i = Var("i")
    >>> f = to_tvm(Kernel("k", (A,), For(i, 4, Store(A, (i,), i // 2))))
    >>> [p.name for p in f.params]
    ['A']
    """
    if kernel.target != "cpu":
        raise CodegenError(f"kernel '{kernel.name}' is scheduled for target '{kernel.target}'; "
                           f"the TVM backend compiles CPU kernels only")
    return _Translator(kernel, bind_in_narrow).function()


def has_narrow_floats(kernel: Kernel) -> bool:
    """Whether the kernel holds float16 or bfloat16 values (see `to_tvm`)."""
    from tessel.ir.nodes import walk

    return any(getattr(n, "dtype", None) in ("float16", "bfloat16") for n in walk(kernel))


class _Translator:
    """One translation: maps tessel variables and buffers (by name, scoped) to TVM objects."""

    def __init__(self, kernel: Kernel, bind_in_narrow: bool = True):
        import tvm.tirx as T

        self.T = T
        self.bind_in_narrow = bind_in_narrow
        self.kernel = kernel
        self.vars: dict[str, object] = {}
        self.buffers: dict[str, object] = {}
        self.parallel_depth = 0  # inside a parallel or vectorized loop: no nested parallel loops
        self.lazy_memo: dict[int, bool] = {}
        self.ranges: dict[str, tuple] = {}  # loop / let variable -> (min, max) where known
        self.vector_depth = 0  # inside a vectorized loop
        self.truncated: frozenset = frozenset()  # floordiv / floormod nodes emitted in truncated form

    # -- function --------------------------------------------------------------------------

    def function(self):
        T = self.T
        params = []
        for p in self.kernel.params:  # scalar parameters first: buffer shapes may use them
            if isinstance(p, Var):
                if p.name in self.vars:
                    raise CodegenError(f"kernel '{self.kernel.name}': two parameters are named '{p.name}'")
                self.vars[p.name] = T.Var(p.name, p.dtype)
        for p in self.kernel.params:
            if isinstance(p, Var):
                params.append(self.vars[p.name])
                continue
            if p.name in self.buffers or p.name in self.vars:
                raise CodegenError(f"kernel '{self.kernel.name}': two parameters are named '{p.name}'")
            # data_alignment = element size: numpy only guarantees that much, and TVM would
            # otherwise assume 64-byte aligned data (aligned vector moves fault on numpy slices).
            buf = T.decl_buffer(self.shape(p), p.dtype, name=p.name, data_alignment=max(1, bits(p.dtype) // 8))
            self.buffers[p.name] = buf
            params.append(buf)
        body = self.block(self.kernel.body)
        func = T.PrimFunc(params, body)
        # noalias: Kernel refuses overlapping arguments, so LLVM may keep values in registers.
        return func.with_attr({"global_symbol": symbol_name(self.kernel), "tir.noalias": True})

    # -- statements ------------------------------------------------------------------------

    def block(self, s: Stmt):
        stmts = self.stmts(s)
        if not stmts:
            return self.T.Evaluate(0)
        return stmts[0] if len(stmts) == 1 else self.T.SeqStmt(stmts)

    def stmts(self, s: Stmt) -> list:
        """TIR statements for `s`, as a list: TVM 0.27 lets and allocations are flat statements
        whose scope runs to the end of the enclosing SeqStmt, so scoped bodies are spliced in."""
        T = self.T
        if isinstance(s, Seq):
            out = []
            for x in s.stmts:
                out.extend(self.stmts(x))
            return out
        if isinstance(s, Store):
            buf = self.buffer(s.buffer.name, s)
            value = self.expr(s.value)
            return [T.BufferStore(buf, value, self.indices(s.indices))]
        if isinstance(s, For):
            return [self.loop(s)]
        if isinstance(s, IfThenElse):
            then = self.block(s.then)
            else_ = self.block(s.else_) if s.else_ is not None else None
            return [T.IfThenElse(self.expr(s.cond), then, else_)]
        if isinstance(s, LetStmt):
            value = self.expr(s.value)
            var = T.Var(s.var.name, s.var.dtype)
            with _Bound(self.vars, s.var.name, var), _Bound(self.ranges, s.var.name, interval(s.value, self.ranges)):
                return [T.Bind(var, value)] + self.stmts(s.body)
        if isinstance(s, Allocate):
            b = s.buffer
            if b.scope not in _SCOPES:
                raise CodegenError(f"kernel '{self.kernel.name}': buffer '{b.name}' has unknown scope '{b.scope}'")
            buf = T.decl_buffer(self.shape(b), b.dtype, name=b.name, scope=_SCOPES[b.scope])
            # TVM's LowerTVMBuiltin turns allocations inside parallel loops into workspace calls
            # whose pointers LLVM cannot prove unaliased, so a register tile is stored to memory
            # on every iteration (about 5x slower GEMM). Small local buffers stay on the stack.
            annotations = {"disable_lower_builtin": tvm_bool_true(T)} if _on_stack(b) else {}
            with _Bound(self.buffers, b.name, buf):
                return [T.AllocBuffer(buf, annotations=annotations)] + self.stmts(s.body)
        if isinstance(s, (Barrier, Intrinsic)):
            what = "a barrier" if isinstance(s, Barrier) else f"the intrinsic '{s.name}'"
            raise CodegenError(f"kernel '{self.kernel.name}' contains {what}, which the CPU backend cannot run")
        raise CodegenError(f"kernel '{self.kernel.name}': cannot translate statement {type(s).__name__}")

    def loop(self, s: For):
        T = self.T
        if s.thread_axis is not None:
            raise CodegenError(f"kernel '{self.kernel.name}': loop '{s.var.name}' is bound to {s.kind}, "
                               f"a GPU axis; the CPU backend cannot run it")
        constant = isinstance(s.extent, Const)
        kind = {"serial": T.ForKind.SERIAL, "parallel": T.ForKind.PARALLEL,
                "vectorized": T.ForKind.VECTORIZED, "unrolled": T.ForKind.UNROLLED}.get(s.kind)
        if kind is None:
            raise CodegenError(f"kernel '{self.kernel.name}': loop '{s.var.name}' has unknown kind '{s.kind}'")
        if s.kind in ("vectorized", "unrolled") and not constant:
            kind = T.ForKind.SERIAL  # TVM vectorizes and unrolls constant extents only
        if s.kind == "parallel" and self.parallel_depth:
            kind = T.ForKind.SERIAL  # nested parallelism: the outer loop already uses the pool
        if s.kind == "vectorized" and any(isinstance(n, Allocate) for n in walk(s.body)):
            kind = T.ForKind.SERIAL  # TVM 0.27 mis-vectorizes allocations inside the loop (wrong values)
        if kind == T.ForKind.PARALLEL and not constant:
            # A symbolic extent may be small at run time, where waking the thread pool costs more than
            # the loop (hundreds of us on a loaded machine): run it in parallel only when it is big.
            work = self.index(s.extent) * T.const(_static_work(s.body), s.extent.dtype)
            return T.IfThenElse(work >= T.const(MIN_PARALLEL_WORK, s.extent.dtype),
                                self._loop(s, kind, constant), self._loop(s, T.ForKind.SERIAL, constant))
        return self._loop(s, kind, constant)

    def _loop(self, s: For, kind, constant: bool):
        T = self.T
        extent = self.index(s.extent)
        var = T.Var(s.var.name, s.var.dtype)
        nested = kind in (T.ForKind.PARALLEL, T.ForKind.VECTORIZED)
        vector = kind == T.ForKind.VECTORIZED
        self.parallel_depth += nested
        self.vector_depth += vector
        span = (0, int(s.extent.value) - 1) if constant else None
        try:
            with _Bound(self.vars, s.var.name, var), _Bound(self.ranges, s.var.name, span):
                body = self.block(s.body)
        finally:
            self.parallel_depth -= nested
            self.vector_depth -= vector
        return T.For(var, T.const(0, s.var.dtype), extent, kind, body)

    # -- expressions -----------------------------------------------------------------------

    def shape(self, b: Buffer) -> list:
        """The TIR shape of `b`: ints, and symbolic entries (expressions of the scalar parameters)
        translated; TVM checks a parameter's symbolic shape against the array passed at call time."""
        return [d if isinstance(d, int) else self.index(d) for d in b.shape]

    def buffer(self, name: str, where):
        buf = self.buffers.get(name)
        if buf is None:
            raise CodegenError(f"kernel '{self.kernel.name}': buffer '{name}' is used outside its scope "
                               f"(in {type(where).__name__})")
        return buf

    def index(self, e: Expr):
        if not is_int(e.dtype):
            raise CodegenError(f"kernel '{self.kernel.name}': index or extent has dtype {e.dtype}, expected an int")
        return self.expr(e)

    def indices(self, idx: tuple) -> list:
        """The TIR indices of one buffer access; floordiv / floormod terms that TVM's iter-map
        analysis would merge are marked to be emitted truncated (module docstring)."""
        if not any(isinstance(n, Binary) and n.op in ("floordiv", "floormod") for i in idx for n in walk(i)):
            return [self.index(i) for i in idx]
        idx = tuple(fold_nested_mod(i) for i in idx)
        outer, self.truncated = self.truncated, offset_divmods(idx)
        try:
            return [self.index(i) for i in idx]
        finally:
            self.truncated = outer

    def truncated_divmod(self, op: str, e: Binary, a, b):
        """floordiv / floormod by a positive constant through truncdiv / truncmod (equal values)."""
        T = self.T
        r = interval(e.a, self.ranges)
        if r is not None and r[0] >= 0:
            return T.truncdiv(a, b) if op == "floordiv" else T.truncmod(a, b)
        mod = T.truncmod(T.truncmod(a, b) + b, b)
        return mod if op == "floormod" else T.truncdiv(a - mod, b)

    def expr(self, e: Expr):
        T = self.T
        if isinstance(e, Const):
            return T.const(_representable(e), e.dtype)
        if isinstance(e, Var):
            v = self.vars.get(e.name)
            if v is None:
                raise CodegenError(f"kernel '{self.kernel.name}': variable '{e.name}' is not bound here")
            return v
        if isinstance(e, Load):
            return T.BufferLoad(self.buffer(e.buffer.name, e), self.indices(e.indices))
        if isinstance(e, Binary):
            return self.binary(e)
        if isinstance(e, Not):
            return T.Not(self.expr(e.a))
        if isinstance(e, Select):
            if self.may_fault(e.t) or self.may_fault(e.f):
                if CLAMP_SELECTS and self.vector_depth and not (divides(e.t) or divides(e.f)) \
                        and tvm_select.clampable(e):
                    # in a vectorized loop a lazy if_then_else runs lane by lane: load at indices
                    # clamped into the buffer instead (equal wherever the select picks the load)
                    # and select eagerly, which vectorizes (zero-padding copies of convolutions)
                    t, f = (tvm_select.clamped(x, self._in_bounds) for x in (e.t, e.f))
                    return T.Select(self.expr(e.cond), self.expr(t), self.expr(f))
                return T.if_then_else(self.expr(e.cond), self.expr(e.t), self.expr(e.f))
            if tvm_select.constraint_may_move_a_load(e):
                return T.if_then_else(self.expr(e.cond), self.expr(e.t), self.expr(e.f))
            return T.Select(self.expr(e.cond), self.expr(e.t), self.expr(e.f))
        if isinstance(e, Cast):
            v = self.expr(e.value)
            if e.dtype == "bool" and e.value.dtype != "bool":
                return v != T.const(0, e.value.dtype)
            if is_int(e.dtype) and is_float(e.value.dtype):
                # Truncate toward zero, saturating out-of-range values and sending NaN to 0 (the
                # interpreter's, and CUDA's, rule); a plain fptosi would give poison there.
                if e.value.dtype in ("float16", "bfloat16"):
                    v = T.Cast("float32", v)
                sat = "llvm.fptoui.sat" if is_unsigned(e.dtype) else "llvm.fptosi.sat"
                return T.call_llvm_pure_intrin(e.dtype, sat, v)
            if e.dtype == "bfloat16" and e.value.dtype != "bfloat16":
                return T.Cast("bfloat16", self._round_to_bfloat16(v, e.value.dtype))
            return T.Cast(e.dtype, v)
        if isinstance(e, Call):
            return self.call(e)
        raise CodegenError(f"kernel '{self.kernel.name}': cannot translate expression {type(e).__name__}")

    def _round_to_bfloat16(self, v, dtype: str):
        """`v` rounded to the nearest bfloat16 (ties to even), as a float32 that bfloat16 holds exactly.

        TVM's bfloat16 legalisation computes bfloat16 values in float32 and drops the rounding of a
        cast whose result is only read, not stored (`cast<float32>(cast<bfloat16>(x))` gave x; fuzz
        case tvm_drops_bfloat16_round_trip), so the rounding is done here on the bits, once from the
        source's precision as ml_dtypes does. NaN keeps a quiet NaN (adding the rounding bias to its
        bits could carry it into infinity).
        """
        T = self.T
        if dtype == "float32":
            f = v
        else:
            # float64 (and the integers, through float64) to float32 rounded to odd: truncated toward
            # zero, lowest bit set when inexact. Rounding that to bfloat16 equals rounding the
            # original once (float32 keeps 16 more bits); plain float32 rounding would round twice.
            x = v if dtype == "float64" else T.Cast("float64", v)
            t = T.Cast("float32", x)
            tb = T.reinterpret("uint32", t)
            back = T.Cast("float64", t)
            tb = T.Select(T.abs(back) > T.abs(x), tb - T.const(1, "uint32"), tb)
            tb = T.Select(back != x, T.bitwise_or(tb, T.const(1, "uint32")), tb)
            f = T.Select(x != x, t, T.reinterpret("float32", tb))
        bits = T.reinterpret("uint32", f)
        lsb = T.bitwise_and(T.shift_right(bits, T.const(16, "uint32")), T.const(1, "uint32"))
        rounded = T.bitwise_and(bits + T.const(0x7FFF, "uint32") + lsb, T.const(0xFFFF0000, "uint32"))
        quiet = T.bitwise_or(T.bitwise_and(bits, T.const(0xFFFF0000, "uint32")), T.const(0x00400000, "uint32"))
        return T.reinterpret("float32", T.Select(f != f, quiet, rounded))

    def binary(self, e: Binary):
        T = self.T
        a, b = self.expr(e.a), self.expr(e.b)
        op = e.op
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
        if op == "div":
            # True division on floats; on ints the IR's only division is floordiv (see nodes.py).
            if not is_float(e.a.dtype) and isinstance(e.b, Const) and e.b.value == 0:
                return T.const(0, e.dtype)  # as floordiv by a constant zero below
            if is_float(e.a.dtype) and isinstance(e.b, Const) and e.b.value == 0:
                # x / +-0.0 is x * +-inf in IEEE arithmetic (0 and NaN give NaN either way); TVM's
                # constant folder aborts on a division by a constant zero (fuzz case
                # tvm_printer_folds_division_by_zero)
                return a * T.const(math.copysign(math.inf, float(e.b.value)), e.dtype)
            return T.Div(a, b) if is_float(e.a.dtype) else T.floordiv(a, b)
        if op in ("floordiv", "floormod"):
            if is_float(e.dtype):
                if isinstance(e.b, Const) and e.b.value == 0:
                    # numpy: x // +-0.0 is x / +-0.0, x % 0.0 is nan; a constant zero divisor must not
                    # reach TVM's folder, which aborts (fuzz case tvm_constant_float_floordiv_by_zero)
                    if op == "floormod":
                        return T.const(float("nan"), e.dtype)
                    return a * T.const(math.copysign(math.inf, float(e.b.value)), e.dtype)
                return self.float_divmod(op, a, b, e.dtype)
            if self.truncated and e in self.truncated:
                return self.truncated_divmod(op, e, a, b)
            if isinstance(e.b, Const) and e.b.value == 0:
                # TVM refuses to fold a constant zero divisor (compile error, even in dead code);
                # running it is undefined in compiled code anyway (see the module docstring): 0
                return T.const(0, e.dtype)
            if not isinstance(e.b, Const) and not is_unsigned(e.dtype) and not self._extent_param(e.b):
                # MIN // -1 traps on x86 (SIGFPE); divide by 1 instead and negate (wrapping, as the
                # interpreter does): branch-free, so it still vectorizes.
                minus_one = b == T.const(-1, e.dtype)
                b = T.Select(minus_one, T.const(1, e.dtype), b)
                if op == "floordiv":
                    q = T.floordiv(a, b)
                    return T.Select(minus_one, T.const(0, e.dtype) - q, q)
            return T.floordiv(a, b) if op == "floordiv" else T.floormod(a, b)
        if op in ("min", "max"):
            if is_float(e.dtype):  # NaN propagates, as in numpy.minimum / maximum; TVM's Min would drop it
                return tvm_minmax.float_extreme(T, op, e, a, b, bind=not self._has_narrow())
            return T.Min(a, b) if op == "min" else T.Max(a, b)
        if op == "and":
            return T.And(a, b)
        if op == "or":
            return T.Or(a, b)
        if op in ("eq", "ne") and is_float(e.a.dtype) and e.a == e.b:
            # The NaN test `x != x`: TVM's simplifier assumes no NaN and folds it to a constant.
            return T.isnan(a) if op == "ne" else T.Not(T.isnan(a))
        if e.a.dtype == "bool":  # TVM 0.27 emits a float compare (invalid LLVM) for bool == bool
            a, b = T.Cast("int8", a), T.Cast("int8", b)
        cmp = {"eq": T.EQ, "ne": T.NE, "lt": T.LT, "le": T.LE, "gt": T.GT, "ge": T.GE}.get(op)
        if cmp is None:
            raise CodegenError(f"kernel '{self.kernel.name}': unknown binary operator '{op}'")
        return cmp(a, b)

    def float_divmod(self, op: str, a, b, dtype: str):
        """numpy's floor_divide / remainder on floats (npy_divmod): fmod-based, so the results
        agree with numpy (and the interpreter) to the last bit. 16-bit floats compute in float32."""
        T = self.T
        narrow = dtype in ("float16", "bfloat16")
        if narrow:
            a, b = T.Cast("float32", a), T.Cast("float32", b)
        ft = "float32" if narrow else dtype
        zero, one, half = T.const(0.0, ft), T.const(1.0, ft), T.const(0.5, ft)
        mod = T.Mod(a, b)  # on floats this is LLVM frem, i.e. C fmod
        fix = T.And(mod != zero, T.Cast("int8", b < zero) != T.Cast("int8", mod < zero))  # (bool != bool: see binary)
        if op == "floormod":
            out = T.Select(fix, mod + b, T.Select(mod != zero, mod, T.copysign(zero, b)))
            # numpy: x % 0.0 and inf % y are nan (the fmod path's nan was lost in compiled code)
            out = T.Select(T.Or(b == zero, T.isinf(a)), T.const(float("nan"), ft), out)
        else:
            div = (a - mod) / b
            div = T.Select(fix, div - one, div)
            fl = T.floor(div)
            out = T.Select(div != zero, T.Select(div - fl > half, fl + one, fl), T.copysign(zero, a / b))
            # numpy: x // 0.0 is x / 0.0 (+-inf or nan); the fmod path gave 0 in compiled code
            # (fuzz case tvm_float_floordiv_by_zero)
            out = T.Select(b == zero, a / b, T.Select(T.isinf(a), T.const(float("nan"), ft), out))
        return T.Cast(dtype, out) if narrow else out

    def call(self, e: Call):
        T = self.T
        dtype = e.dtype
        args = [self.expr(a) for a in e.args]
        narrow = dtype in ("float16", "bfloat16") and e.func not in ("abs",)
        if narrow:  # no 16-bit libm: compute in float32 and round once, as numpy does
            args = [T.Cast("float32", a) for a in args]
        f = e.func
        if f == "pow":
            out = T.power(args[0], args[1])
        elif f == "abs":
            out = T.abs(args[0])
        elif f in ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "sin", "cos", "floor", "ceil"):
            if not is_float(dtype):
                raise CodegenError(f"kernel '{self.kernel.name}': {f}() of a {dtype} value; cast to a float first")
            if f in ("exp", "sigmoid", "tanh", "erf") and (narrow or dtype == "float32"):
                out = getattr(_fastmath, f)(T, args[0], not narrow and not self._has_narrow())  # vectorizable
            else:
                out = getattr(T, f)(args[0])
        else:
            raise CodegenError(f"kernel '{self.kernel.name}': unknown math function '{f}'")
        return T.Cast(dtype, out) if narrow else out

    def _extent_param(self, e: Expr) -> bool:
        """Whether `e` is a scalar parameter that is a whole dimension of a parameter buffer: never
        negative (the call checks shapes), so never -1 (a fused loop of symbolic extent divides by it)."""
        if not isinstance(e, Var):
            return False
        if not hasattr(self, "_extents"):
            self._extents = {d.name for p in self.kernel.params if isinstance(p, Buffer) for d in p.shape
                             if isinstance(d, Var)}
        return e.name in self._extents

    def _has_narrow(self) -> bool:
        """Whether fast-math calls must not bind: a kernel holding bfloat16 values (TVM's bfloat16
        legalisation copies subtrees: a copied Let binds its variable twice, which VectorizeLoop
        refuses, or the kernel silently computes NaN: softmax-bf16), or one holding float16 values
        translated with `bind_in_narrow` off."""
        if not hasattr(self, "_narrow"):
            from tessel.ir.nodes import walk

            dtypes = {getattr(n, "dtype", None) for n in walk(self.kernel)}
            self._narrow = "bfloat16" in dtypes or (not self.bind_in_narrow and "float16" in dtypes)
        return self._narrow

    def may_fault(self, e: Expr) -> bool:
        """`tvm_select.may_fault` under this kernel's loop ranges (memoised per node)."""
        key = id(e)
        hit = self.lazy_memo.get(key)
        if hit is None:
            hit = self.lazy_memo[key] = tvm_select.may_fault(e, self._in_bounds)
        return hit

    def _in_bounds(self, load: Load) -> bool:
        shape = load.buffer.shape
        if len(shape) != len(load.indices):
            return False
        for idx, dim in zip(load.indices, shape):
            span = interval(idx, self.ranges)
            if span is None or not isinstance(dim, int) or span[0] < 0 or span[1] >= dim:
                return False
        return True


MIN_PARALLEL_WORK = 4096  # inner iterations below which a parallel loop of symbolic extent runs serially


def _static_work(s: Stmt) -> int:
    """Iterations of the innermost statements of `s` per execution, counting loops of symbolic
    extent as 1 (a lower bound)."""
    if isinstance(s, For):
        return (s.extent.value if isinstance(s.extent, Const) else 1) * _static_work(s.body)
    if isinstance(s, Seq):
        return max(1, sum(_static_work(x) for x in s.stmts))
    if isinstance(s, IfThenElse):
        return max(_static_work(s.then), _static_work(s.else_) if s.else_ is not None else 0)
    if isinstance(s, (LetStmt, Allocate)):
        return _static_work(s.body)
    return 1


class _Bound:
    """Binds `name` in a scope dict for the duration of a `with` block, restoring the outer one."""

    def __init__(self, scope: dict, name: str, value):
        self.scope, self.name, self.value = scope, name, value

    def __enter__(self):
        self.outer = self.scope.get(self.name, _MISSING)
        self.scope[self.name] = self.value

    def __exit__(self, *exc):
        if self.outer is _MISSING:
            del self.scope[self.name]
        else:
            self.scope[self.name] = self.outer


_MISSING = object()


# Clamped eager selects in vectorized loops (see `expr`): off. A clamped index is no ramp, so TVM gathers;
# measured on one AVX-512 core, MobileNet's stride-2 depthwise conv (zero padding inlined into the
# contraction) went 9 -> 35 us, worse than the lane-by-lane if_then_else.
CLAMP_SELECTS = False

STACK_LIMIT_BYTES = 64 * 1024  # per allocation; parallel workers run on threads with MB-sized stacks


def _on_stack(b: Buffer) -> bool:
    """Whether a buffer is allocated on the stack (alloca) rather than through TVM's workspace."""
    return b.scope == "local" and not b.symbolic and b.size * max(1, bits(b.dtype) // 8) <= STACK_LIMIT_BYTES


def tvm_bool_true(T):
    """A TIR boolean constant (annotation values must be IR constants, not Python bools)."""
    return T.IntImm("bool", 1)


def _representable(c: Const):
    """The constant's value rounded to its dtype: TVM keeps a narrow float immediate as the double it
    was given and folds casts of it from that double (cast<float64>(-0.51f16) gave -0.51, not the
    float16 -0.509765625 the interpreter computes; fuzz case tvm_narrow_float_constant_not_rounded)."""
    if not is_float(c.dtype) or c.dtype == "float64" or not math.isfinite(c.value):
        return c.value
    import numpy as np

    with np.errstate(over="ignore"):
        return float(np.asarray(c.value).astype(numpy_dtype(c.dtype)))
