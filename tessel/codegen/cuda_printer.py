"""The CUDA printer: a GPU-scheduled tessel Kernel in, CUDA C++ source out.

One `extern "C" __global__` function per kernel, parameters as `T* __restrict__` in call order
(`const` when the kernel never writes them). The generated code must compute what the reference
interpreter computes (tessel/ir/interp/__init__.py, "Semantics"); the header
`include/tessel_cuda.cuh` holds the helpers that make that possible, and each choice is listed
here with the cases where CUDA cannot follow the interpreter:

- Loops: a loop bound to `blockIdx.*` / `threadIdx.*` becomes `const int v = threadIdx.x;`, guarded
  by `if (v < extent)` when the extent is below the launch dimension; serial and parallel loops
  are `for` loops (parallel has no meaning inside one GPU thread); unrolled ones get
  `#pragma unroll`; vectorized ones become vector loads / stores when contiguous and aligned
  (cuda_vectorize.py), else unrolled loops.
- Memory: `shared` buffers are `__shared__` arrays, carved from `extern __shared__` memory when
  they need more than the 48 KB static shared memory allows (then `shared_bytes` is set and the
  runtime raises the kernel's limit); `local` buffers are register arrays; `global` buffers that
  the kernel allocates come from a workspace the runtime allocates per launch (one per launch,
  as in the interpreter).
- Barrier is `__syncthreads()`; an Intrinsic is the text of its entry in the intrinsic table
  (`tessel.ir.intrinsics`, `lookup(name).cuda_text(args)`): expression arguments as C
  expressions, BufferRefs as `&buf[flat index]`. The table's device header (prelude and every
  entry's wrapper) follows ours in the source.
- Arithmetic rounds to its dtype after every operation. float / double: C operators, compiled
  without FMA contraction (cuda_build.py), so `a * b + c` rounds twice as in the interpreter.
  float16 (`__half`) / bfloat16 (`__nv_bfloat16`): computed in float and rounded once per
  operation (exactly the correctly rounded result). Integers: C operators where interval
  analysis proves no overflow, wrapping helpers (unsigned arithmetic) elsewhere; int8 is computed
  in int and narrowed. floordiv / floormod round toward minus infinity on ints (plain `/` `%`
  when both sides are provably non-negative / positive) and follow numpy on floats.
  *Difference*: integer division by zero gives 0 (the interpreter raises).
- Float min / max propagate NaN. Comparisons of half / bfloat16 compare their float values.
  `and` / `or` short-circuit (`&&`, `||`): only loads differ, and a kernel whose loads pass the
  interpreter's bounds checks reads the same values. Select is `?:` (only the chosen branch runs).
- Casts follow the interpreter: float -> int truncates and saturates, NaN -> 0; int -> int wraps;
  to bool is `!= 0`; every float conversion rounds once to nearest, int64 -> float / half /
  bfloat16 going through double exactly as the interpreter does.
- Math: float uses CUDA's accurate single-precision functions (`expf`, not the approximate
  `__expf`, whose error grows with |x|: about 2 ulp plus; the cost is hidden in memory-bound
  kernels), double the double ones, half / bfloat16 the float ones rounded once. rsqrt is
  `1.0 / sqrt(x)` in double rounded once (exactly the interpreter's value; it is rare in inner
  loops, so the double arithmetic costs nothing that shows), sigmoid is 1 / (1 + exp(-x))
  evaluated without overflow as the interpreter does.
  *Difference*: the interpreter computes math in float64 and rounds once (correctly rounded);
  CUDA's functions are within 1-4 ulp (float) of that, so results can differ in the last bits,
  and half / bfloat16 results can differ by one ulp near rounding ties.
- Index arithmetic is int32 (the IR's index dtype); flat offsets into buffers of more than 2^31-1
  elements are computed in 64 bits.

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B = Buffer("A", (256,)), Buffer("B", (256,))
    >>> b, t = Var("b"), Var("t")
    >>> body = For(b, 2, For(t, 128, Store(B, (b * 128 + t,), A[b * 128 + t] * 2.0), "threadIdx.x"), "blockIdx.x")
    >>> out = print_kernel(Kernel("scale", (A, B), body, target="cuda"))
    >>> out.grid, out.block
    ((2, 1, 1), (128, 1, 1))
    >>> print(out.source.split("extern ")[1].splitlines()[0])
    "C" __global__ void __launch_bounds__(128) scale(const float* __restrict__ A, float* __restrict__ B) {
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tessel.codegen.cuda_text import (  # noqa: F401 - ctype and the literals are re-exported here
    CTYPES, INT_RANGE, LOWP, Names, ctype, float_literal, int_literal, intrinsic_headers, intrinsic_table, itemsize,
    lookup_intrinsic,
)
from tessel.codegen.cuda_vectorize import VecCopy, vectorize_loop
from tessel.errors import CodegenError
from tessel.ir.bounds import binop_range
from tessel.ir.dtypes import is_bool, is_float, is_int
from tessel.ir.nodes import (
    COMPARE_OPS, LOGIC_OPS, MATH_FUNCS, THREAD_AXES, Allocate, Barrier, Binary, Buffer, BufferRef, Call, Cast, Const,
    Expr, For, IfThenElse, Intrinsic, Kernel, LetStmt, Load, Not, Select, Seq, Stmt, Store, Var, walk,
)

STATIC_SHARED_LIMIT = 48 * 1024  # bytes of static __shared__ memory a kernel may declare
WORKSPACE_ALIGN = 256
_C_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">",
          "ge": ">=", "and": "&&", "or": "||"}
_WRAP = {"add": "tessel::wadd", "sub": "tessel::wsub", "mul": "tessel::wmul"}
_LOWP_FN = {"add": "tessel::add", "sub": "tessel::sub", "mul": "tessel::mul", "div": "tessel::div"}
_F32_MATH = {"exp": "expf", "log": "logf", "sqrt": "sqrtf", "tanh": "tanhf", "erf": "erff", "sin": "sinf",
             "cos": "cosf", "floor": "floorf", "ceil": "ceilf", "abs": "fabsf", "pow": "powf",
             "sigmoid": "tessel::sigmoid"}
_F64_MATH = {"exp": "exp", "log": "log", "sqrt": "sqrt", "tanh": "tanh", "erf": "erf", "sin": "sin", "cos": "cos",
             "floor": "floor", "ceil": "ceil", "abs": "fabs", "pow": "pow", "sigmoid": "tessel::sigmoid"}

@dataclass(frozen=True)
class PrintedKernel:
    """CUDA source of a kernel and what launching it needs.

    `symbol` is the `__global__` function's name; `grid` / `block` the launch shape;
    `shared_bytes` the dynamic shared memory per block; `workspace_bytes` the global scratch
    memory the runtime passes as a last pointer argument (0: none); `written` the names of the
    parameters the kernel writes; `alignment` the byte alignment each parameter's base pointer
    needs (vector accesses); `vectorized` whether vector accesses were printed.
    """

    source: str
    symbol: str
    grid: tuple
    block: tuple
    shared_bytes: int
    workspace_bytes: int
    params: tuple
    written: frozenset
    alignment: dict = field(default_factory=dict)
    vectorized: bool = True
    tensor_maps: tuple = ()  # TensorMapSpec per trailing CUtensorMap parameter (tessel.ir.intrinsics.tma)
    cluster: tuple = (1, 1, 1)  # blocks per cluster, printed as __cluster_dims__

    @property
    def threads(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]


def launch_shape(kernel: Kernel) -> tuple[tuple, tuple]:
    """The kernel's grid and block (3-tuples): its Launch, or else the largest constant extent
    bound to each axis (as the interpreter runs it)."""
    if kernel.launch is not None:
        grid = (tuple(kernel.launch.grid) + (1, 1, 1))[:3]
        block = (tuple(kernel.launch.block) + (1, 1, 1))[:3]
        for what, dims in (("grid", grid), ("block", block)):
            # a grid entry may be an integer Expr of scalar parameters: the runtime evaluates it per call
            sym = what == "grid" and kernel.scalar_params
            if any((not isinstance(d, int) or d < 1) and not (sym and isinstance(d, Expr) and is_int(d.dtype))
                   for d in dims):
                raise CodegenError(f"kernel '{kernel.name}': launch {what} {dims} must hold positive integers")
        return grid, block
    ext: dict[str, int] = {}
    for n in walk(kernel.body):
        if isinstance(n, For) and n.kind in THREAD_AXES:
            if not isinstance(n.extent, Const):
                raise CodegenError(f"kernel '{kernel.name}': loop '{n.var.name}' bound to {n.kind} has a "
                                   f"non-constant extent; give the kernel a Launch")
            ext[n.kind] = max(ext.get(n.kind, 1), int(n.extent.value))
    return (tuple(ext.get(f"blockIdx.{a}", 1) for a in "xyz"), tuple(ext.get(f"threadIdx.{a}", 1) for a in "xyz"))


def written_params(kernel: Kernel) -> frozenset:
    """Names of the parameters the kernel stores to or hands to an intrinsic."""
    out = {n.buffer.name for n in walk(kernel.body) if isinstance(n, Store)}
    out |= {a.buffer.name for n in walk(kernel.body) if isinstance(n, Intrinsic) for k, a in enumerate(n.args)
            if isinstance(a, BufferRef) and _may_write(n.name, k)}
    return frozenset(p.name for p in kernel.params if p.name in out)


def _may_write(name: str, position: int) -> bool:
    """Whether intrinsic `name` may write its buffer operand at `position` (the table's operand
    roles; an intrinsic the table does not know may write any)."""
    table = intrinsic_table()
    entry = getattr(table, "TABLE", {}).get(name) if table is not None else None
    if entry is None or not callable(getattr(entry, "writes", None)):
        return True
    return position in entry.writes()


def _shared_alignment(kernel: Kernel) -> dict[str, int]:
    """Byte alignment of shared buffers that intrinsics need beyond 16 (TMA boxes and wgmma tiles
    with a swizzle: 1024, the swizzle atom, so that the pattern matches the interpreter's)."""
    out: dict[str, int] = {}
    table = intrinsic_table()
    for n in walk(kernel.body):
        if isinstance(n, Intrinsic) and table is not None and n.name in getattr(table, "TABLE", {}):
            align = getattr(table.lookup(n.name), "shared_align", None)
            for a in n.args:
                if align and isinstance(a, BufferRef) and a.buffer.scope == "shared":
                    out[a.buffer.name] = max(out.get(a.buffer.name, 16), align)
    return out


def _fits(rng, dtype: str) -> bool:
    lo, hi = INT_RANGE[dtype]
    return rng is not None and lo <= rng[0] and rng[1] <= hi



class _Printer:
    def __init__(self, kernel: Kernel, grid: tuple, block: tuple, vectorize: bool, dynamic_shared: bool):
        self.kernel = kernel
        self.names = Names()
        self.lines: list[str] = []
        self.indent = 1
        self.ranges: dict[Var, tuple] = {}
        self.rng_memo: dict[Expr, tuple | None] = {}
        # a symbolic grid dimension has no known size: CUDA's limit stands in (thread loops keep their guards)
        self.dims = {f"blockIdx.{a}": d if isinstance(d, int) else (2**31 - 1 if a == "x" else 65535)
                     for a, d in zip("xyz", grid)}
        self.dims.update({f"threadIdx.{a}": d for a, d in zip("xyz", block)})
        self.vectorize = vectorize
        self.dynamic_shared = dynamic_shared
        self.shared_offset = 0
        self.workspace_offset = 0
        self.params = {p.name for p in kernel.params}
        self.taken = {n.name for n in walk(kernel) if isinstance(n, (Var, Buffer))}
        self.alignment: dict[str, int] = {}
        self.intrinsics: list[str] = []
        self.tensor_maps: list = []  # TensorMapSpecs, in parameter order (TMA intrinsics)
        self.shared_align = _shared_alignment(kernel)

    def error(self, msg: str) -> CodegenError:
        return CodegenError(f"kernel '{self.kernel.name}': {msg}")

    def emit(self, line: str) -> None:
        self.lines.append("  " * self.indent + line)

    def block(self, s: Stmt) -> None:
        self.indent += 1
        self.stmt(s)
        self.indent -= 1

    # -- value ranges of integer expressions (where C's signed overflow must be avoided) --------
    def rng(self, e: Expr):
        if is_bool(e.dtype):
            return 0, 1
        if not is_int(e.dtype):
            return None
        out = self.rng_memo.get(e)
        if out is None:
            out = self._rng(e)
            if not _fits(out, e.dtype):
                out = INT_RANGE[e.dtype]
            self.rng_memo[e] = out
        return out

    def _rng(self, e: Expr):
        if isinstance(e, Const):
            return int(e.value), int(e.value)
        if isinstance(e, Var):
            return self.ranges.get(e)
        if isinstance(e, Binary) and e.op not in COMPARE_OPS + LOGIC_OPS:
            a, b = self.rng(e.a), self.rng(e.b)
            return binop_range(e.op, a, b)
        if isinstance(e, Cast) and (is_int(e.value.dtype) or is_bool(e.value.dtype)):
            return self.rng(e.value)
        if isinstance(e, Select):
            t, f = self.rng(e.t), self.rng(e.f)
            return min(t[0], f[0]), max(t[1], f[1])
        if isinstance(e, Call) and e.func == "abs":
            lo, hi = self.rng(e.args[0])
            return (0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi))
        return None

    # -- expressions -----------------------------------------------------------------------------
    def expr(self, e: Expr) -> str:
        if isinstance(e, Var):
            return self.names.get(e.name)
        if isinstance(e, Const):
            return float_literal(e.value, e.dtype) if is_float(e.dtype) else int_literal(e.value, e.dtype)
        if isinstance(e, Load):
            return f"{self.names.get(e.buffer.name)}[{self.flat_index(e.buffer, e.indices)}]"
        if isinstance(e, Binary):
            return self.binary(e)
        if isinstance(e, Not):
            return f"(!{self.expr(e.a)})"
        if isinstance(e, Select):
            return f"({self.expr(e.cond)} ? {self.expr(e.t)} : {self.expr(e.f)})"
        if isinstance(e, Cast):
            return self.cast(e.value, e.dtype)
        if isinstance(e, Call):
            return self.call(e)
        raise self.error(f"cannot print the expression node {type(e).__name__}")

    def flat_index(self, buf: Buffer, indices: tuple) -> str:
        if len(indices) != buf.ndim:
            raise self.error(f"buffer '{buf.name}' of shape {buf.shape} indexed with {len(indices)} indices")
        if buf.symbolic:  # extents of scalar parameters: Horner form in 64 bits (no bound is known)
            if buf.scope != "global":
                raise self.error(f"{buf.scope} buffer '{buf.name}' has a symbolic shape {buf.shape}; only global "
                                 f"buffers may")
            out = f"(long long){self.expr(indices[0])}"
            for idx, n in zip(indices[1:], buf.shape[1:]):
                dim = self.expr(n) if isinstance(n, Expr) else str(n)
                out = f"({out} * {dim} + {self.expr(idx)})"
            return out
        wide = buf.size > INT_RANGE["int32"][1]
        terms, stride, offset = [], 1, 0
        for idx, n in reversed(list(zip(indices, buf.shape))):
            if isinstance(idx, Const):  # constant indices (unrolled register arrays) add up to one offset
                offset += int(idx.value) * stride
                stride *= n
                continue
            s = self.expr(idx)
            if wide and idx.dtype != "int64":
                s = f"(long long){s}"
            terms.append(s if stride == 1 else f"{s} * {stride}{'LL' if wide else ''}")
            stride *= n
        terms = list(reversed(terms))
        if offset:
            terms.append(f"{offset}{'LL' if wide else ''}")
        return " + ".join(terms) or "0"

    def binary(self, e: Binary) -> str:
        dt, op = e.a.dtype, e.op
        a, b = self.expr(e.a), self.expr(e.b)
        if op in COMPARE_OPS:
            if dt in LOWP:
                a, b = f"tessel::f32({a})", f"tessel::f32({b})"
            return f"({a} {_C_OPS[op]} {b})"
        if op in LOGIC_OPS:
            return f"({a} {_C_OPS[op]} {b})"
        if is_float(dt):
            if op in ("min", "max"):
                return f"tessel::f{op}_nan({a}, {b})"
            if op in ("floordiv", "floormod"):
                return f"tessel::f{op}({a}, {b})"
            if dt in LOWP:
                return f"{_LOWP_FN[op]}({a}, {b})"
            return f"({a} {_C_OPS[op]} {b})"
        if not is_int(dt) or op == "div":
            raise self.error(f"'{op}' on {dt} operands cannot be printed")
        if dt == "int8":  # computed in int (no overflow there), narrowed with wrap-around
            if op in ("min", "max"):
                return f"tessel::i{op}<signed char>({a}, {b})"
            if op in ("floordiv", "floormod"):
                return f"((signed char)tessel::i{op}<int>({a}, {b}))"
            return f"((signed char)({a} {_C_OPS[op]} {b}))"
        t = ctype(dt)
        if op in ("min", "max"):
            return f"tessel::i{op}<{t}>({a}, {b})"
        ra, rb = self.rng(e.a), self.rng(e.b)
        if op in ("floordiv", "floormod"):
            if ra[0] >= 0 and rb[0] > 0:  # C's truncation is the floor here
                return f"({a} {'/' if op == 'floordiv' else '%'} {b})"
            return f"tessel::i{op}<{t}>({a}, {b})"
        if _fits(binop_range(op, ra, rb), dt):
            return f"({a} {_C_OPS[op]} {b})"
        return f"{_WRAP[op]}({a}, {b})"

    def cast(self, value: Expr, to: str) -> str:
        frm = value.dtype
        x = self.expr(value)
        if frm == to:
            return x
        if is_bool(to):
            return f"(tessel::f32({x}) != 0.0f)" if frm in LOWP else f"({x} != 0)"
        if frm in LOWP:
            x, frm = f"tessel::f32({x})", "float32"
            if to == "float32":
                return x
        if is_bool(frm):
            x, frm = f"(int){x}", "int32"
        t = ctype(to)
        if is_int(to):
            if is_float(frm):
                return f"tessel::f2i<{t}>({x})"
            return f"(({t}){x})"
        # to a float dtype, from an int or float32 / float64
        if is_int(frm) and (to in LOWP or (to == "float32" and frm == "int64")):
            x, frm = f"(double){x}", "float64"  # one rounding from the exact double, as the interpreter
        if to == "float16":
            return f"__float2half_rn({x})" if frm == "float32" else f"__double2half({x})"
        if to == "bfloat16":
            return f"__float2bfloat16_rn({x})" if frm == "float32" else f"__double2bfloat16({x})"
        return f"(({t}){x})"

    def call(self, e: Call) -> str:
        if e.func not in MATH_FUNCS or len(e.args) != MATH_FUNCS[e.func]:
            raise self.error(f"unknown math function '{e.func}' with {len(e.args)} argument(s)")
        dt = e.args[0].dtype
        args = [self.expr(a) for a in e.args]
        if is_int(dt):
            if e.func != "abs":
                raise self.error(f"'{e.func}' needs float arguments, got {dt}")
            if dt == "int8":
                return f"((signed char)tessel::iabs<int>({args[0]}))"
            return f"tessel::iabs<{ctype(dt)}>({args[0]})"
        if not is_float(dt):
            raise self.error(f"'{e.func}' on {dt}")
        if dt in LOWP and e.func == "abs":
            return f"tessel::habs({args[0]})"
        if e.func == "rsqrt":  # in double then rounded once, exactly the interpreter's computation
            x = args[0] if dt == "float64" else f"(double){'tessel::f32(' + args[0] + ')' if dt in LOWP else args[0]}"
            out = f"(1.0 / sqrt({x}))"
            if dt == "float64":
                return out
            if dt in LOWP:
                return f"{'__double2half' if dt == 'float16' else '__double2bfloat16'}{out}"
            return f"((float){out})"
        table = _F64_MATH if dt == "float64" else _F32_MATH
        if dt in LOWP:
            args = [f"tessel::f32({a})" for a in args]
        out = f"{table[e.func]}({', '.join(args)})"
        if dt in LOWP:
            return f"{'__float2half_rn' if dt == 'float16' else '__float2bfloat16_rn'}({out})"
        return out

    # -- statements ------------------------------------------------------------------------------
    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x)
        elif isinstance(s, For):
            self.for_(s)
        elif isinstance(s, Store):
            buf = s.buffer
            if s.value.dtype != buf.dtype:
                raise self.error(f"store of a {s.value.dtype} value into buffer '{buf.name}' of {buf.dtype}")
            self.emit(f"{self.names.get(buf.name)}[{self.flat_index(buf, s.indices)}] = {self.expr(s.value)};")
        elif isinstance(s, Allocate):
            self.allocate(s)
        elif isinstance(s, IfThenElse):
            self.emit(f"if ({self.expr(s.cond)}) {{")
            self.block(s.then)
            if s.else_ is not None:
                self.emit("} else {")
                self.block(s.else_)
            self.emit("}")
        elif isinstance(s, LetStmt):
            self.ranges[s.var] = self.rng(s.value)
            self.emit("{")
            self.indent += 1
            self.emit(f"const {ctype(s.var.dtype)} {self.names.get(s.var.name)} = {self.expr(s.value)};")
            self.stmt(s.body)
            self.indent -= 1
            self.emit("}")
        elif isinstance(s, Barrier):
            self.emit("__syncthreads();")
        elif isinstance(s, Intrinsic):
            self.intrinsic(s)
        elif isinstance(s, VecCopy):
            t, n = ctype(s.local.dtype), s.lanes
            local, buf = self.names.get(s.local.name), self.names.get(s.buffer.name)
            off = self.expr(s.offset)
            if s.store:
                self.emit(f"tessel::store_vec<{t}, {n}>({buf} + {off}, {local});")
            else:
                self.emit(f"tessel::load_vec<{t}, {n}>({local}, {buf} + {off});")
        else:
            raise self.error(f"cannot print the statement node {type(s).__name__}")

    def for_(self, s: For) -> None:
        if not is_int(s.var.dtype) or not is_int(s.extent.dtype):
            raise self.error(f"loop '{s.var.name}' needs integer variable and extent dtypes")
        name, t = self.names.get(s.var.name), ctype(s.var.dtype)
        ext_rng = self.rng(s.extent)
        if s.kind in THREAD_AXES:
            dim = self.dims[s.kind]
            self.ranges[s.var] = (0, max(min(dim, ext_rng[1]) - 1, 0))
            const = isinstance(s.extent, Const)
            if const and s.extent.value > dim:
                raise self.error(f"loop '{s.var.name}' bound to {s.kind} has extent {s.extent.value} but the "
                                 f"launch has only {dim} along {s.kind}")
            self.emit("{")
            self.indent += 1
            self.emit(f"const {t} {name} = ({t}){s.kind};")
            if not const or s.extent.value < dim:
                self.emit(f"if ({name} < {self.expr(s.extent)}) {{")
                self.block(s.body)
                self.emit("}")
            else:
                self.stmt(s.body)
            self.indent -= 1
            self.emit("}")
            return
        self.ranges[s.var] = (0, max(ext_rng[1] - 1, 0))
        if s.kind == "vectorized" and self.vectorize:
            vec = vectorize_loop(s, self.params, self.taken)
            if vec is not None:
                self.taken |= {n.name for n in walk(vec.stmt) if isinstance(n, (Var, Buffer))}
                for k, v in vec.alignment.items():
                    self.alignment[k] = max(self.alignment.get(k, 1), v)
                self.stmt(vec.stmt)
                return
        if s.kind in ("unrolled", "vectorized") and isinstance(s.extent, Const):
            self.emit("#pragma unroll")
        self.emit(f"for ({t} {name} = 0; {name} < {self.expr(s.extent)}; ++{name}) {{")
        self.block(s.body)
        self.emit("}")

    def allocate(self, s: Allocate) -> None:
        buf = s.buffer
        name, t = self.names.get(buf.name), ctype(buf.dtype)
        nbytes = buf.size * itemsize(buf.dtype)
        if buf.scope == "shared":
            align = self.shared_align.get(buf.name, 16)
            if self.dynamic_shared:
                off = -(-self.shared_offset // align) * align
                self.shared_offset = off + -(-nbytes // 16) * 16
                self.emit(f"{t}* __restrict__ {name} = reinterpret_cast<{t}*>(tessel_smem + {off});")
            else:
                self.emit(f"__shared__ __align__({align}) {t} {name}[{max(buf.size, 1)}];")
        elif buf.scope == "local":
            self.emit(f"__align__(16) {t} {name}[{max(buf.size, 1)}];")
        elif buf.scope == "global":
            off = self.workspace_offset
            self.workspace_offset += -(-max(nbytes, 1) // WORKSPACE_ALIGN) * WORKSPACE_ALIGN
            self.emit(f"{t}* __restrict__ {name} = reinterpret_cast<{t}*>(tessel_ws + {off});")
        else:
            raise self.error(f"buffer '{buf.name}' has unknown scope {buf.scope!r}")
        self.emit("{")
        self.block(s.body)
        self.emit("}")

    def tensor_map(self, spec) -> str:
        """The name of the CUtensorMap parameter for `spec` (one per distinct spec)."""
        if spec.buffer not in self.params:
            raise self.error(f"a TMA copy of '{spec.buffer}': the tensor must be a kernel parameter")
        if spec not in self.tensor_maps:
            self.tensor_maps.append(spec)
        return f"tessel_tmap_{self.tensor_maps.index(spec)}"

    def intrinsic(self, s: Intrinsic) -> None:
        entry = lookup_intrinsic(s.name, self.kernel.name)
        args = []
        tensor_op = getattr(entry, "tensor_operand", None)
        for k, a in enumerate(s.args):
            if k == tensor_op:  # TMA: the tensor map parameter and the box coordinates
                args.append((self.tensor_map(entry.tensor_map_spec(s)), [self.expr(i) for i in a.indices]))
            elif isinstance(a, BufferRef):  # a pointer to the start element, as the table expects
                args.append(f"&{self.names.get(a.buffer.name)}[{self.flat_index(a.buffer, a.indices)}]")
            else:
                args.append(self.expr(a))
        try:
            text = entry.cuda_text(args) if hasattr(entry, "cuda_text") else entry.cuda(*args)
        except Exception as e:  # noqa: BLE001 - the table's errors name the intrinsic; add the kernel
            raise self.error(f"intrinsic '{s.name}': {e}") from e
        text = text.strip()
        self.intrinsics.append(s.name)
        self.emit(text if text.endswith((";", "}")) else text + ";")


def _grid_text(grid: tuple) -> str:
    from tessel.ir.text import to_text

    return "(" + ", ".join(str(g) if isinstance(g, int) else to_text(g) for g in grid) + ")"


def print_kernel(kernel: Kernel, vectorize: bool = True) -> PrintedKernel:
    """The CUDA C++ source of a GPU kernel and its launch requirements (see PrintedKernel).

    With `vectorize=False`, vectorized loops are printed as unrolled scalar loops (the variant
    the runtime uses when a pointer is not aligned for vector accesses).
    """
    if not isinstance(kernel, Kernel):
        raise CodegenError(f"print_kernel needs a tessel.ir.nodes.Kernel, got {type(kernel).__name__}")
    grid, block = launch_shape(kernel)
    threads = block[0] * block[1] * block[2]
    if threads > 1024:
        raise CodegenError(f"kernel '{kernel.name}': a block of {block} has {threads} threads; CUDA allows 1024")
    shared_total = sum(-(-n.buffer.size * itemsize(n.buffer.dtype) // 16) * 16 for n in walk(kernel.body)
                       if isinstance(n, Allocate) and n.buffer.scope == "shared")
    dynamic = shared_total > STATIC_SHARED_LIMIT
    p = _Printer(kernel, grid, block, vectorize, dynamic)
    names = p.names
    symbol = names.get(kernel.name)
    written = written_params(kernel)
    sig = []
    for buf in kernel.params:
        if isinstance(buf, Var):  # a scalar parameter (int32 / int64): passed by value
            if not is_int(buf.dtype):
                raise CodegenError(f"kernel '{kernel.name}': scalar parameter '{buf.name}' has dtype {buf.dtype}; "
                                   f"scalar parameters are int32 or int64")
            sig.append(f"const {ctype(buf.dtype)} {names.get(buf.name)}")
            continue
        if not isinstance(buf, Buffer):
            raise CodegenError(f"kernel '{kernel.name}': parameter {buf!r} is not a Buffer")
        const = "" if buf.name in written else "const "
        sig.append(f"{const}{ctype(buf.dtype)}* __restrict__ {names.get(buf.name)}")
    if dynamic:
        p.emit(f"extern __shared__ __align__({max(p.shared_align.values(), default=16)}) unsigned char tessel_smem[];")
    p.stmt(kernel.body)
    if p.workspace_offset:
        sig.append("unsigned char* __restrict__ tessel_ws")
    sig += [f"const __grid_constant__ tessel::TensorMap tessel_tmap_{i}" for i in range(len(p.tensor_maps))]
    cluster = tuple(getattr(kernel.launch, "cluster", None) or (1, 1, 1)) if kernel.launch is not None else (1, 1, 1)
    cluster = (cluster + (1, 1, 1))[:3]
    if any(isinstance(g, int) and g % c for g, c in zip(grid, cluster)):  # symbolic: checked per launch
        raise CodegenError(f"kernel '{kernel.name}': cluster {cluster} does not divide the grid {grid}")
    dims = f"__cluster_dims__({cluster[0]}, {cluster[1]}, {cluster[2]}) " if cluster != (1, 1, 1) else ""
    # setmaxnreg takes effect only under a register cap at entry: one block per SM
    bounds = f"{threads}, 1" if any(n.startswith("setmaxnreg") for n in p.intrinsics) else f"{threads}"
    head = [f"// Generated by tessel from kernel '{kernel.name}' (target {kernel.target}).",
            f"// Launch: grid {_grid_text(grid)}, block {block}, dynamic shared memory "
            f"{p.shared_offset if dynamic else 0} bytes"
            + (f", workspace {p.workspace_offset} bytes" if p.workspace_offset else "") + ".",
            '#include "tessel_cuda.cuh"']
    head += intrinsic_headers(p.intrinsics)
    launch_bytes = kernel.launch.shared_bytes if kernel.launch is not None else 0
    shared_bytes = max(p.shared_offset, launch_bytes)
    source = "\n".join(head + ["", f'extern "C" __global__ void {dims}__launch_bounds__({bounds}) {symbol}('
                               + ", ".join(sig) + ") {"] + p.lines + ["}", ""])
    return PrintedKernel(source, symbol, grid, block, shared_bytes, p.workspace_offset, kernel.params, written,
                         dict(p.alignment), vectorize, tuple(p.tensor_maps), cluster)


__all__ = ["CTYPES", "PrintedKernel", "ctype", "float_literal", "int_literal", "intrinsic_headers", "launch_shape",
           "lookup_intrinsic", "print_kernel", "written_params"]
