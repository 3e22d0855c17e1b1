"""The driver: `build` strings the stages together for one kernel.

    DSL tensors --lower--> loop nests --schedule--> scheduled IR --pipeline--> IR --codegen--> Kernel

`build` takes DSL tensors (lowered with `tessel.ir.dsl.lower`) or an IR Kernel, applies a schedule
(the target's default schedule when none is given), runs the target's tensor-IR pass pipeline
(`tessel.compiler.pipeline`), and hands the result to the backend (TVM -> LLVM for "cpu"), whose
compiled code is cached in memory and on disk (`tessel.codegen.cache`).

Example:
    >>> import numpy as np, tessel as ts
    >>> A = ts.placeholder((2, 3), name="A")
    >>> B = ts.compute((3, 2), lambda i, j: A[j, i], name="B")
    >>> kern = build([A, B], target="cpu")
    >>> a = np.arange(6, dtype="float32").reshape(2, 3); b = np.zeros((3, 2), "float32")
    >>> kern(a, b); bool((b == a.T).all())
    True
"""

from __future__ import annotations

import dataclasses
import importlib

from tessel.compiler.kernel import Kernel
from tessel.compiler.pipeline import as_pipeline, pipeline_for, run_pipeline
from tessel.compiler.target import Target, parse_target
from tessel.errors import CodegenError, ScheduleError, TesselError
from tessel.ir.nodes import Kernel as IRKernel


def build(tensors_or_kernel, target="cpu", schedule=None, tuning_log=None, name=None, pipeline=None) -> Kernel:
    """Compile DSL tensors (parameters in call order) or an IR Kernel into a callable Kernel.

    `schedule`: None (the target's default schedule), a callable `f(kernel_ir)` returning a
    scheduled IR Kernel (or a Schedule), a `tessel.schedules.schedule.Schedule`, or an already
    scheduled IR Kernel (used as is). `tuning_log`: a tuning log whose best record for this workload
    and target schedules it (no measurement; without a record: the default schedule, and a
    warning). `name` names the
    kernel (default: the last computed tensor, or the IR kernel's own name). `pipeline` replaces the
    target's tensor-IR pass pipeline (`tessel.compiler.pipeline`): a list of Passes, pass names or
    {"name", "params"} dicts, or its JSON text; `[]` runs no pass.

    >>> import tessel as ts
    >>> A = ts.placeholder((8,), name="A")
    >>> B = ts.compute((8,), lambda i: A[i] + 1.0, name="B")
    >>> build([A, B], name="inc").name
    'inc'
    """
    tgt = parse_target("cpu" if target == "llvm" else target)  # "llvm": TVM's name of the CPU, as compile() takes
    return _codegen(prepare(tensors_or_kernel, tgt, schedule, tuning_log, name, pipeline), tgt)


def prepare(tensors_or_kernel, target="cpu", schedule=None, tuning_log=None, name=None, pipeline=None) -> IRKernel:
    """What `build` hands the backend: the IR scheduled and through the target's pass pipeline
    (same arguments as `build`), without generating code.

    >>> import tessel as ts
    >>> A = ts.placeholder((8,), name="A"); B = ts.compute((8,), lambda i: A[i] + 1.0, name="B")
    >>> prepare([A, B], name="inc").target
    'cpu'
    """
    tgt = target if isinstance(target, Target) else parse_target("cpu" if target == "llvm" else target)
    if tuning_log is not None and schedule is not None:
        raise TesselError("build(): pass schedule=... or tuning_log=..., not both")
    passes = pipeline_for(tgt) if pipeline is None else as_pipeline(pipeline)  # bad pipeline data fails first
    ir = _to_ir(tensors_or_kernel, name)
    if tuning_log is not None:  # the log's best record for this workload, or the default schedule
        from tessel.tune.reuse import LogSchedules

        lookup = LogSchedules(tuning_log, tgt)
        schedule = lookup.schedule_for(ir)
        lookup.warn()
    ir = _schedule(ir, schedule, tgt)
    return run_pipeline(ir, passes)


def _to_ir(tensors_or_kernel, name) -> IRKernel:
    if isinstance(tensors_or_kernel, IRKernel):
        ir = tensors_or_kernel
        return dataclasses.replace(ir, name=name) if name is not None and name != ir.name else ir
    from tessel.ir.dsl import Tensor, lower

    if isinstance(tensors_or_kernel, Tensor):
        tensors_or_kernel = [tensors_or_kernel]
    if not isinstance(tensors_or_kernel, (list, tuple)):
        raise TesselError(f"build() takes a list of DSL tensors or a tessel.ir.nodes.Kernel, "
                          f"got {type(tensors_or_kernel).__name__}")
    return lower(list(tensors_or_kernel), name=name)


def _schedule(ir: IRKernel, schedule, target: Target) -> IRKernel:
    if schedule is None:
        schedule = _default_schedule(target)
        if schedule is None:
            return _retarget(ir, target)
    from tessel.schedules.schedule import Schedule

    if isinstance(schedule, Schedule):
        out = schedule.kernel
    elif isinstance(schedule, IRKernel):
        out = schedule
    elif callable(schedule):
        out = schedule(ir)
        if isinstance(out, Schedule):
            out = out.kernel
    else:
        raise ScheduleError(f"build(schedule=...): expected a Schedule, a scheduled Kernel or a function "
                            f"kernel -> Kernel, got {type(schedule).__name__}")
    if not isinstance(out, IRKernel):
        raise ScheduleError(f"the schedule for kernel '{ir.name}' produced {type(out).__name__}, "
                            f"expected a tessel.ir.nodes.Kernel")
    if out.name != ir.name:  # a Schedule built on the unnamed lowering keeps build(name=...)
        out = dataclasses.replace(out, name=ir.name)
    return _retarget(out, target)


def _default_schedule(target: Target):
    """The target's default schedule as a function of the IR, or None while none exists."""
    try:
        generic = importlib.import_module("tessel.schedules.generic")
    except ModuleNotFoundError as e:
        if e.name != "tessel.schedules.generic":
            raise
        return None
    return lambda ir: generic.default_schedule(ir, str(target))


def _retarget(ir: IRKernel, target: Target) -> IRKernel:
    # Lowering marks kernels "cpu"; a CPU build must not receive a GPU-scheduled kernel.
    if target.kind == "cpu" and ir.target != "cpu":
        raise ScheduleError(f"kernel '{ir.name}' is scheduled for '{ir.target}' but the build target is 'cpu'")
    if target.kind != "cpu" and ir.target != target.kind:
        ir = dataclasses.replace(ir, target=target.kind)
    return ir


def _codegen(ir: IRKernel, target: Target) -> Kernel:
    if target.kind == "cpu":
        from tessel.codegen import tvm as backend

        runner = backend.compile_kernel(ir)
        return Kernel(ir, runner, target, source=lambda: backend.tvm_script(ir),
                      inspect=lambda kind: backend.inspect(runner, ir, kind))
    try:
        cuda = importlib.import_module("tessel.codegen.cuda")
    except ModuleNotFoundError as e:
        if e.name != "tessel.codegen.cuda":
            raise
        raise CodegenError(f"target '{target}': the CUDA backend (tessel.codegen.cuda) is not available") from e
    return cuda.build_kernel(ir, target)
