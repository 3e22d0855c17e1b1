"""Fused epilogues of contraction templates, as data: a list of ops applied to each float32
accumulator value in registers before the store.

An `Epilogue` is a tuple of `EpiOp`s. Each op maps the running value (float32 at first) of the
output element at index `idx` (the full index tuple of the output: batch.., row, column for a
GEMM; (n, f, h, w) for a convolution) to a new value:

- "bias":     v + f32(buf[idx[axis]])      (axis -1: per column, -2: per row; any axis of idx)
- "residual": v + beta * f32(buf[idx])     (buf has the output's shape)
- "scale":    alpha * v
- "relu", "gelu" (exact, erf), "gelu_tanh", "silu": the activation in float32
- "cast":     the value rounded to `dtype` (and on in that dtype: the graph's own intermediate roundings)
- "expr":     any elementwise IR expression `expr` of ACC (the running value) and the index
              variables IDX[0..], reading any buffers (what the graph's fusion hands over)

`Epilogue.apply(value, idx)` gives the IR expression; `Epilogue.buffers` the extra kernel
parameters the ops read (in order, each once); `Epilogue.hook(batch)` the `fn(value, row, col)`
callback form the Hopper template takes. `from_stage` turns a DSL elementwise stage that reads a
contraction's result pointwise into an "expr" epilogue (tessel.schedules.gemm uses it to fuse the
graph's GEMM + bias + GELU groups).

Example:
    >>> from tessel.ir.nodes import Buffer, Var
    >>> bias = Buffer("bias", (8,), "float16")
    >>> epi = Epilogue.of(("bias", bias), "relu", ("cast", "float16"))
    >>> [b.name for b in epi.buffers], str(epi.apply(Var("acc", "float32"), (Var("i"), Var("j"))))
    (['bias'], 'cast<float16>(max((acc + cast<float32>(bias[j])), 0.0f32))')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.nodes import Buffer, Call, Cast, Const, Expr, Load, Var, maximum, substitute, walk

KINDS = ("bias", "residual", "scale", "relu", "gelu", "gelu_tanh", "silu", "cast", "expr")
ACC = Var("epi_acc", "float32")


def idx_var(k: int) -> Var:
    """The k-th output index variable of an "expr" op."""
    return Var(f"epi_i{k}")


@dataclass(frozen=True)
class EpiOp:
    """One epilogue op (see the module docstring). `buffer`: bias / residual / None; `axis`: the
    bias's output axis; `value`: alpha (scale) or beta (residual); `dtype`: the cast's dtype;
    `expr`: the "expr" op's expression of ACC (any float dtype) and idx_var(k)."""

    kind: str
    buffer: Buffer | None = None
    axis: int = -1
    value: float = 1.0
    dtype: str | None = None
    expr: Expr | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ScheduleError(f"epilogue op {self.kind!r}: not one of {', '.join(KINDS)}")
        if self.kind in ("bias", "residual") and not isinstance(self.buffer, Buffer):
            raise ScheduleError(f"epilogue op {self.kind!r} needs a buffer")
        if self.kind == "bias" and self.buffer.ndim != 1:
            raise ScheduleError(f"epilogue bias '{self.buffer.name}' has shape {self.buffer.shape}; a bias is 1-D")
        if self.kind == "cast" and not self.dtype:
            raise ScheduleError("epilogue op 'cast' needs a dtype")
        if self.kind == "expr" and not isinstance(self.expr, Expr):
            raise ScheduleError("epilogue op 'expr' needs an IR expression")

    def buffers(self) -> list:
        if self.buffer is not None:
            return [self.buffer]
        if self.expr is not None:
            return [n.buffer for n in walk(self.expr) if isinstance(n, Load)]
        return []

    def apply(self, v: Expr, idx: tuple) -> Expr:
        f32 = v.dtype
        k = self.kind
        if k == "bias":
            return v + self.buffer[idx[self.axis]].astype(f32)
        if k == "residual":
            r = self.buffer[tuple(idx[-self.buffer.ndim:])].astype(f32)
            return v + (r if self.value == 1.0 else Const(float(self.value), f32) * r)
        if k == "scale":
            return Const(float(self.value), f32) * v
        if k == "relu":
            return maximum(v, Const(0.0, f32))
        if k == "gelu":
            return v * Const(0.5, f32) * (Call("erf", (v * Const(1 / math.sqrt(2), f32),)) + Const(1.0, f32))
        if k == "gelu_tanh":
            inner = Const(math.sqrt(2 / math.pi), f32) * (v + Const(0.044715, f32) * v * v * v)
            return Const(0.5, f32) * v * (Const(1.0, f32) + Call("tanh", (inner,)))
        if k == "silu":
            return v * Call("sigmoid", (v,))
        if k == "cast":
            return v.astype(self.dtype)
        env = {idx_var(i): e for i, e in enumerate(idx)}
        return substitute(substitute(self.expr, {ACC: v}), env)


@dataclass(frozen=True)
class Epilogue:
    """A sequence of EpiOps (see the module docstring)."""

    ops: tuple = ()

    @staticmethod
    def of(*specs) -> "Epilogue":
        """Build from short specs: "relu", ("bias", buf), ("bias", buf, -2), ("residual", buf, beta),
        ("scale", alpha), ("cast", dtype), or EpiOps."""
        ops = []
        for s in specs:
            if isinstance(s, EpiOp):
                ops.append(s)
                continue
            s = (s,) if isinstance(s, str) else tuple(s)
            kind, rest = s[0], s[1:]
            if kind == "bias":
                ops.append(EpiOp("bias", rest[0], axis=rest[1] if len(rest) > 1 else -1))
            elif kind == "residual":
                ops.append(EpiOp("residual", rest[0], value=rest[1] if len(rest) > 1 else 1.0))
            elif kind == "scale":
                ops.append(EpiOp("scale", value=rest[0]))
            elif kind == "cast":
                ops.append(EpiOp("cast", dtype=rest[0]))
            else:
                ops.append(EpiOp(kind, *rest))
        return Epilogue(tuple(ops))

    @property
    def buffers(self) -> tuple:
        out: list = []
        for op in self.ops:
            for b in op.buffers():
                if b not in out:
                    out.append(b)
        return tuple(out)

    def apply(self, value: Expr, idx: tuple) -> Expr:
        """The epilogue's IR expression for accumulator `value` of the output element at `idx`."""
        for op in self.ops:
            value = op.apply(value, tuple(idx))
        return value

    def hook(self, batch: tuple = ()):
        """The `fn(value, row, col)` form (tessel.schedules.gemm_hopper's epilogue hook)."""
        return lambda value, row, col: self.apply(value, tuple(batch) + (row, col))

    def describe(self) -> str:
        return "+".join(op.kind for op in self.ops) or "none"


def store_value(epilogue: Epilogue | None, value: Expr, idx: tuple, out_dtype: str) -> Expr:
    """`value` through `epilogue` (None: none), cast to the output's dtype."""
    if epilogue is not None:
        value = epilogue.apply(value, idx)
    return value if value.dtype == out_dtype else Cast(out_dtype, value)


def from_stage(store, loop_vars: tuple, acc: Buffer, acc_index: tuple | None = None) -> Epilogue:
    """The "expr" epilogue of a DSL elementwise stage: `store` (Store of the stage's output) at
    indices `loop_vars` (its loops, one per output dimension), reading `acc` (the contraction's
    float32 result) only at `acc_index` (default `loop_vars`: acc has the output's shape; a
    permutation of them for an accumulator in another layout). ScheduleError otherwise."""
    at = tuple(loop_vars) if acc_index is None else tuple(acc_index)
    if tuple(store.indices) != tuple(loop_vars):
        raise ScheduleError(f"epilogue stage '{store.buffer.name}' is not stored at its loop variables")
    if acc_index is None and tuple(store.buffer.shape) != tuple(acc.shape):
        raise ScheduleError(f"epilogue stage '{store.buffer.name}' has shape {store.buffer.shape}, the contraction "
                            f"{acc.shape}")
    for n in walk(store.value):
        if isinstance(n, Load) and n.buffer == acc and tuple(n.indices) != at:
            raise ScheduleError(f"epilogue stage '{store.buffer.name}' reads '{acc.name}' at other elements than its "
                                f"own (not a pointwise epilogue)")
    expr = substitute(store.value, {Load(acc, at): ACC})
    if any(isinstance(n, Load) and n.buffer == acc for n in walk(expr)):
        raise ScheduleError(f"epilogue stage '{store.buffer.name}': a read of '{acc.name}' is left")
    expr = substitute(expr, {v: idx_var(k) for k, v in enumerate(loop_vars)})
    return Epilogue((EpiOp("expr", expr=expr),))


__all__ = ["ACC", "EpiOp", "Epilogue", "KINDS", "from_stage", "idx_var", "store_value"]
