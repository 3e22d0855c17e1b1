"""GpuKernel: a compiled CUDA kernel, callable on GPU arrays, with its IR and its CUDA C++.

It shares the public surface of `tessel.codegen.kernel.Kernel` (and is one): `.ir`, `.name`,
`.params`, `.target`, `.source` (the generated CUDA C++), `.run_reference(*arrays)`, `.time(...)`,
calling it. It adds `.launch` (grid, block, dynamic shared memory), `.arch` and `.binary`.

Calling checks every argument before anything touches the driver, and raises ArgumentError naming
the parameter: host arrays (numpy, CPU tensors), wrong dtype or shape, non-contiguous layouts,
arrays on different GPUs, read-only or overlapping outputs. Then, with no CUDA bindings or no GPU,
TesselError says so (building never needs either). Kernels run on torch's current stream when
given torch tensors (tessel.codegen.cuda_runtime says how streams are chosen) and write their
outputs in place; they return None, as CPU kernels do.

Scalar parameters (int32 / int64 Vars of the IR) take Python or numpy ints and are passed by
value; the shapes, byte sizes (overlap checks), launch grid and TMA tensor maps that depend on
them are evaluated per call (and cached per set of values), so one binary serves every length.

Vector accesses need aligned base pointers: a call whose arrays are not aligned (say a tensor
slice starting at an odd element) runs a variant printed without vector accesses, compiled on
first need.

Example (skipped in the doctest run: building needs nvcc or NVRTC, though not a GPU):
    >>> from tessel.ir.nodes import Buffer, For, Kernel as IR, Store, Var
    >>> A, B, t = Buffer("A", (64,)), Buffer("B", (64,)), Var("t")
    >>> ir = IR("inc", (A, B), For(t, 64, Store(B, (t,), A[t] + 1.0), "threadIdx.x"), target="cuda")
    >>> from tessel.codegen.cuda import build_kernel       # doctest: +SKIP
    >>> kern = build_kernel(ir, "cuda:sm_80")               # doctest: +SKIP
    >>> kern.launch.block, "__global__" in kern.source      # doctest: +SKIP
    ((64, 1, 1), True)

With a scalar length n (one binary for every n; the reference run needs no GPU):
    >>> import numpy as np
    >>> from tessel.ir.nodes import IfThenElse, Launch
    >>> n, b = Var("n"), Var("b")
    >>> A, B, i = Buffer("A", (n,)), Buffer("B", (n,)), b * 64 + t
    >>> body = For(b, (n + 63) // 64, For(t, 64, IfThenElse(i < n, Store(B, (i,), A[i] + 1.0)), "threadIdx.x"),
    ...            "blockIdx.x")
    >>> ir = IR("inc_n", (A, n, B), body, target="cuda", launch=Launch(((n + 63) // 64, 1, 1), (64, 1, 1)))
    >>> kern = build_kernel(ir, "cuda:sm_80")               # doctest: +SKIP
    >>> a, out = np.arange(100, dtype="float32"), np.zeros(100, "float32")
    >>> kern.run_reference(a, 100, out); out[-1]            # doctest: +SKIP
    np.float32(100.0)
"""

from __future__ import annotations

import statistics

import numpy as np

from tessel.codegen.kernel import Kernel, _Bound, _values
from tessel.errors import ArgumentError, TesselError
from tessel.ir.nodes import Launch

_GRID_LIMIT = (2**31 - 1, 65535, 65535)


class GpuKernel(Kernel):
    """A kernel compiled for an NVIDIA GPU (see the module docstring)."""

    def __init__(self, ir, printed, binary, target):
        self.printed = printed  # before Kernel.__init__, whose shape evaluation (_bound) reads the grid
        super().__init__(ir, None, target, source=printed.source, inspect=self._inspect_code,
                         written=printed.written)  # the intrinsic table's operand roles
        self.binary = binary
        self.arch = binary.arch
        self._variants = {True: (printed, binary)}  # vectorized or not -> (PrintedKernel, Binary)
        self._devices_ok: set[int] = set()
        self._buffer_names = tuple(p.name for p in ir.buffer_params)
        self._names = tuple(p.name for p in ir.params)
        self._scalar_np = {i: np.dtype(self._specs[i].dtype).type for i in self._scalar_index}

    @property
    def launch(self) -> Launch:
        """Grid, block and dynamic shared memory (bytes) of every launch; grid entries may be
        expressions of the scalar parameters, evaluated per call."""
        p = self.printed
        return Launch(p.grid, p.block, p.shared_bytes)

    def _inspect_code(self, kind: str) -> str:
        if kind == "cuda":
            return self.source
        if kind in ("ptx", "asm"):
            from tessel.codegen.cuda_build import compile_cuda

            return compile_cuda(self.source, self.arch, name=self.name, kind="ptx").code.decode()
        raise ArgumentError(f"kernel '{self.name}': unknown code kind {kind!r}; expected 'cuda' or 'ptx' (also 'asm')")

    def __repr__(self) -> str:
        return super().__repr__().replace("<tessel.Kernel", "<tessel.GpuKernel")

    # -- calling ---------------------------------------------------------------------------------

    def __call__(self, *args) -> None:
        """Run the kernel on GPU arrays (torch CUDA tensors, cupy, DLPack) and ints (scalar
        parameters), one per parameter in order; outputs are written in place."""
        from tessel.codegen import cuda_runtime as rt

        infos, bound, launch_args = self._describe(args)
        device = infos[0].device if infos else 0
        stream = rt.current_stream_handle(infos, device)
        self._launch(infos, bound, launch_args, device, stream)

    def _bound(self, env: dict) -> _Bound:
        bound = super()._bound(env)
        grid = self.printed.grid
        if any(not isinstance(g, int) for g in grid):
            from tessel.ir.interp import interpret_expr

            grid = tuple(g if isinstance(g, int) else int(interpret_expr(g, env)) for g in grid)
            for axis, g, top, c in zip("xyz", grid, _GRID_LIMIT, self.printed.cluster):
                if not 1 <= g <= top:
                    raise ArgumentError(f"kernel '{self.name}': its launch grid {self._grid_text()} is {grid} for "
                                        f"{_values(env)}; gridDim.{axis} must be in 1..{top}")
                if g % c:
                    raise ArgumentError(f"kernel '{self.name}': its launch grid {self._grid_text()} is {grid} for "
                                        f"{_values(env)}, which the cluster {self.printed.cluster} does not divide")
        bound.extra["grid"] = grid
        return bound

    def _grid_text(self) -> str:
        from tessel.codegen.cuda_printer import _grid_text

        return _grid_text(self.printed.grid)

    def _launch(self, infos, bound: _Bound, args: list, device: int, stream: int) -> None:
        from tessel.codegen import cuda_runtime as rt

        if device not in self._devices_ok:
            cc = rt.device_capability(device)
            if not rt.arch_runs_on(self.arch, cc):
                raise TesselError(f"kernel '{self.name}' was compiled for {self.arch} (target {self.target}) but GPU "
                                  f"{device} has compute capability {cc[0]}.{cc[1]}; build it for target 'cuda' "
                                  f"(the visible GPU's architecture) or 'cuda:sm_{cc[0]}{cc[1]}'")
            self._devices_ok.add(device)
        printed, binary = self._variant(infos)
        grid = bound.extra["grid"]
        ptrs = list(args)
        ws = None
        if printed.workspace_bytes:
            ws = rt.Workspace(printed.workspace_bytes, infos, device, stream)
            ptrs.append(ws.ptr)
        configs = bound.extra.setdefault("configs", {})  # vectorized or not -> cuda.core LaunchConfig
        config = configs.get(printed.vectorized)
        if config is None:
            config = configs[printed.vectorized] = rt.launch_config(grid, printed.block, printed.shared_bytes)
        # TMA tensor maps over the parameters they name, their symbolic extents bound to this call's scalars
        maps = bound.extra.get(("maps", printed.vectorized))
        if maps is None:
            maps = bound.extra[("maps", printed.vectorized)] = [
                spec.bind(bound.scalars) for spec in getattr(printed, "tensor_maps", ())]
        names = self._names
        maps = [(spec, args[names.index(spec.buffer)]) for spec in maps]
        try:
            rt.launch(binary.code, binary.key, printed.symbol, self.name, grid, printed.block,
                      printed.shared_bytes, ptrs, device, stream, config, tensor_maps=maps)
        finally:
            if ws is not None:
                ws.release()

    def _variant(self, infos):
        """The vectorized code when every pointer is aligned as it needs, else the scalar variant."""
        printed, binary = self._variants[True]
        if printed.alignment:
            for name, info in zip(self._buffer_names, infos):
                need = printed.alignment.get(name)
                if need and info.ptr % need:
                    return self._scalar_variant()
        return printed, binary

    def _scalar_variant(self):
        got = self._variants.get(False)
        if got is None:
            from tessel.codegen.cuda_build import compile_cuda
            from tessel.codegen.cuda_printer import print_kernel

            printed = print_kernel(self.ir, vectorize=False)
            got = self._variants[False] = (printed, compile_cuda(printed.source, self.arch, name=self.name))
        return got

    def _describe(self, args) -> tuple[list, _Bound, list]:
        """Check a call's arguments; return the ArrayInfo of each array (in order), the call's
        _Bound, and the launch arguments (pointers, and numpy int32 / int64 scalars by value)."""
        from tessel.codegen.cuda_runtime import describe

        self._count(args)
        specs = self._specs
        bound = self._bind(args)
        infos, launch_args, where = [], [], []
        for k, (a, s, shape) in enumerate(zip(args, specs, bound.shapes)):
            if s.scalar:
                launch_args.append(self._scalar_np[k](a))
                continue
            what = f"kernel '{self.name}' argument '{s.name}'"
            info = describe(a, what)
            if info.dtype != s.dtype:
                raise ArgumentError(f"{what}: expected dtype {s.dtype}, got {info.dtype}")
            if info.shape != shape:
                if not self._scalar_index:
                    raise ArgumentError(f"{what}: expected shape {shape}, got {info.shape}")
                raise self._shape_error(s, shape, tuple(info.shape), bound.scalars)
            if not info.contiguous:
                raise ArgumentError(f"{what}: expected a C-contiguous array; pass .contiguous() / a copy")
            if s.output and info.readonly:
                raise ArgumentError(f"{what} is an output but the array given is read-only")
            infos.append(info)
            launch_args.append(info.ptr)
            where.append(k)
        for info, k in zip(infos[1:], where[1:]):
            if info.device != infos[0].device:
                raise ArgumentError(f"kernel '{self.name}' argument '{specs[k].name}' is on GPU {info.device} but "
                                    f"argument '{specs[where[0]].name}' is on GPU {infos[0].device}; all arrays must "
                                    f"be on one GPU")
        nbytes = bound.nbytes
        for i in self._outputs:
            lo, hi = launch_args[i], launch_args[i] + nbytes[i]
            for j in where:
                p = launch_args[j]
                if j != i and p < hi and lo < p + nbytes[j]:
                    raise ArgumentError(f"kernel '{self.name}' arguments '{specs[i].name}' and '{specs[j].name}' "
                                        f"overlap in memory; an output must not share memory with another argument")
        return infos, bound, launch_args

    def run_reference(self, *args) -> None:
        """Run `.ir` with the reference interpreter on numpy copies of the arrays (numpy arrays, torch
        tensors on any device, cupy arrays; ints for scalar parameters), writing the outputs back
        into the arrays given."""
        from tessel.ir.interp import run

        self._count(args)
        host = [a if s.scalar else _to_numpy(a, f"kernel '{self.name}' argument '{s.name}'")
                for a, s in zip(args, self._specs)]
        self._check(host)
        run(self.ir, *host)
        for a, h, s in zip(args, host, self._specs):
            if s.output and h is not a:
                _copy_back(a, h)

    def time(self, *args, number: int = 10, repeat: int = 5) -> float:
        """Median seconds per call over `repeat` rounds of `number` calls (after a warm-up), timed
        with CUDA events on the launch stream. Arguments as in a call; outputs are overwritten."""
        from tessel.codegen import cuda_runtime as rt

        if number < 1 or repeat < 1:
            raise ArgumentError(f"kernel '{self.name}': time() needs number >= 1 and repeat >= 1")
        infos, bound, launch_args = self._describe(args)
        device = infos[0].device if infos else 0
        stream = rt.current_stream_handle(infos, device)
        self._launch(infos, bound, launch_args, device, stream)
        times = []
        for _ in range(repeat):
            start, stop = _events(infos, device, stream)
            start.record()
            for _ in range(number):
                self._launch(infos, bound, launch_args, device, stream)
            stop.record()
            times.append(stop.elapsed_since(start) / 1e3 / number)
        return statistics.median(times)


class _TorchEvent:
    def __init__(self, stream: int):
        import torch

        self.ev = torch.cuda.Event(enable_timing=True)
        self.stream = torch.cuda.ExternalStream(stream) if stream else torch.cuda.current_stream()

    def record(self):
        self.ev.record(self.stream)

    def elapsed_since(self, start) -> float:
        self.ev.synchronize()
        return start.ev.elapsed_time(self.ev)


class _CoreEvent:
    def __init__(self, device: int, stream: int):
        from tessel.codegen.cuda_runtime import _RUNTIME, _core

        core = _core()
        dev = _RUNTIME.device(device)
        self.stream = _RUNTIME.stream(stream) if stream else dev.default_stream
        self.options = core.EventOptions(enable_timing=True)
        self.ev = None

    def record(self):
        self.ev = self.stream.record(options=self.options)

    def elapsed_since(self, start) -> float:
        self.ev.sync()
        return float(self.ev - start.ev)


def _events(infos, device: int, stream: int):
    if any(i.kind == "torch" for i in infos):
        return _TorchEvent(stream), _TorchEvent(stream)
    return _CoreEvent(device, stream), _CoreEvent(device, stream)


def _to_numpy(a, what: str) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    mod = type(a).__module__ or ""
    if mod.startswith("torch"):
        import torch

        t = a.detach().to("cpu")
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        return t.contiguous().numpy().copy()
    if mod.startswith("cupy"):
        import cupy

        return cupy.asnumpy(a)
    raise ArgumentError(f"{what}: run_reference takes numpy arrays, torch tensors or cupy arrays, "
                        f"got {type(a).__name__}")


def _copy_back(a, h: np.ndarray) -> None:
    mod = type(a).__module__ or ""
    if mod.startswith("torch"):
        import torch

        if a.dtype == torch.bfloat16:
            src = torch.from_numpy(np.ascontiguousarray(h).view(np.int16)).view(torch.bfloat16)
        else:
            src = torch.from_numpy(np.ascontiguousarray(h))
        a.copy_(src.to(a.device))
    elif mod.startswith("cupy"):
        a.set(np.ascontiguousarray(h))


__all__ = ["GpuKernel"]
