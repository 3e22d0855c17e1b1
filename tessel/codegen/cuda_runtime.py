"""Launching compiled CUDA kernels on GPU arrays: argument checks, modules, streams, CUDA graphs.

Arrays: torch CUDA tensors (fast path: no DLPack round trip), anything with
`__cuda_array_interface__` (cupy, numba) and anything DLPack-capable on a CUDA device (read through
`cuda.core.utils.StridedMemoryView`). A host array (numpy, a CPU tensor) is refused with an
ArgumentError naming the argument, as are a wrong dtype, shape, device or layout.

Launches go through `cuda.core` (`launch(stream, LaunchConfig(grid, block, shmem_size), kernel,
*args)`, pointers passed as Python ints). The stream is, in order: the one `use_stream` set for
this thread, torch's current stream when an argument is a torch tensor (so kernels order with
torch's work and are captured by `torch.cuda.graph`), cupy's current stream for cupy arrays, else
the device's default stream. Nothing here imports torch, cupy or the CUDA bindings before a
kernel is called; without bindings or without a GPU, calling raises TesselError saying so.

`CudaGraph` captures a sequence of launches and replays it: through `torch.cuda.CUDAGraph` when
torch is installed (then torch work in the same region is captured too), else through the driver's
stream capture on a private stream.

Example (on a machine with a GPU):
    >>> import torch, tessel as ts                                   # doctest: +SKIP
    >>> kern = ts.build([A, B], target="cuda", schedule=...)          # doctest: +SKIP
    >>> g = CudaGraph()                                              # doctest: +SKIP
    >>> kern(a, b)                      # once before capture: loads the module  # doctest: +SKIP
    >>> with g.capture():                                            # doctest: +SKIP
    ...     kern(a, b)
    >>> g.replay()                                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np

from tessel.errors import ArgumentError, TesselError

_KDL_CPU, _KDL_CUDA, _KDL_CUDA_HOST, _KDL_CUDA_MANAGED = 1, 2, 3, 13
_TORCH_DTYPES = {"torch.float16": "float16", "torch.bfloat16": "bfloat16", "torch.float32": "float32",
                 "torch.float64": "float64", "torch.int8": "int8", "torch.int32": "int32", "torch.int64": "int64",
                 "torch.bool": "bool"}
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "int32": 4, "int64": 8, "bool": 1}


class ArrayInfo:
    """What a launch needs to know of a GPU array argument (a slotted class: built per argument
    per call, so it must be cheap)."""

    __slots__ = ("ptr", "shape", "dtype", "device", "kind", "contiguous", "readonly")

    def __init__(self, ptr: int, shape: tuple, dtype: str, device: int, kind: str, contiguous: bool,
                 readonly: bool = False):
        self.ptr, self.shape, self.dtype, self.device = ptr, shape, dtype, device
        self.kind, self.contiguous, self.readonly = kind, contiguous, readonly  # kind: "torch", "cupy", "other"

    @property
    def nbytes(self) -> int:
        n = _ITEMSIZE[self.dtype]
        for s in self.shape:
            n *= s
        return n


def _torch_dtypes(torch) -> dict:
    global _TORCH_DTYPE_OBJECTS
    if _TORCH_DTYPE_OBJECTS is None:
        _TORCH_DTYPE_OBJECTS = {getattr(torch, k.split(".")[1]): v for k, v in _TORCH_DTYPES.items()}
    return _TORCH_DTYPE_OBJECTS


_TORCH_DTYPE_OBJECTS = None  # torch dtype object -> tessel dtype, made once torch is in use


def _dtype_name(dt) -> str | None:
    """A tessel dtype name for a numpy / ml_dtypes / cupy dtype (or typestr), None if unknown."""
    try:
        name = np.dtype(dt).name
    except TypeError:
        name = str(dt)
    return name if name in _ITEMSIZE else None


def _c_contiguous(shape: tuple, strides, itemsize: int) -> bool:
    """Whether byte `strides` describe a C-contiguous layout (None means contiguous)."""
    if strides is None:
        return True
    expect = itemsize
    for n, s in zip(reversed(shape), reversed(tuple(strides))):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def describe(arr, what: str) -> ArrayInfo:
    """The ArrayInfo of a GPU array; ArgumentError naming `what` for anything else."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(arr, torch.Tensor):
        if not arr.is_cuda:
            raise ArgumentError(f"{what} is a torch tensor on {arr.device}; a CUDA kernel takes GPU arrays: "
                                f"move it with .cuda()")
        dtype = _torch_dtypes(torch).get(arr.dtype)
        if dtype is None:
            raise ArgumentError(f"{what} has dtype {arr.dtype}, which tessel does not support")
        return ArrayInfo(arr.data_ptr(), tuple(arr.shape), dtype, arr.get_device(), "torch", arr.is_contiguous())
    mod = type(arr).__module__ or ""
    if isinstance(arr, np.ndarray):
        raise ArgumentError(f"{what} is a numpy array in host memory; a CUDA kernel takes GPU arrays (torch CUDA "
                            f"tensors, cupy arrays or any DLPack / __cuda_array_interface__ GPU array), e.g. "
                            f"torch.from_numpy(a).cuda()")
    cai = getattr(arr, "__cuda_array_interface__", None)
    if cai is not None:
        return _from_cai(arr, cai, what, mod)
    if hasattr(arr, "__dlpack__") and hasattr(arr, "__dlpack_device__"):
        return _from_dlpack(arr, what, mod)
    raise ArgumentError(f"{what} is a {type(arr).__name__}; a CUDA kernel takes GPU arrays (torch CUDA tensors, "
                        f"cupy arrays or any DLPack / __cuda_array_interface__ GPU array)")


def _from_cai(arr, cai: dict, what: str, mod: str) -> ArrayInfo:
    shape = tuple(int(s) for s in cai["shape"])
    dtype = _dtype_name(getattr(arr, "dtype", None)) or _dtype_name(cai["typestr"])
    if dtype is None:
        raise ArgumentError(f"{what} has element type {cai['typestr']!r}, which tessel does not support")
    ptr, readonly = cai["data"]
    dev = getattr(getattr(arr, "device", None), "id", None)
    if dev is None:
        dev = _pointer_device(int(ptr))
    return ArrayInfo(int(ptr), shape, dtype, int(dev), "cupy" if mod.startswith("cupy") else "other",
                     _c_contiguous(shape, cai.get("strides"), _ITEMSIZE[dtype]), bool(readonly))


def _from_dlpack(arr, what: str, mod: str) -> ArrayInfo:
    dev_type, dev_id = arr.__dlpack_device__()
    if int(dev_type) not in (_KDL_CUDA, _KDL_CUDA_MANAGED, _KDL_CUDA_HOST):
        raise ArgumentError(f"{what} is a DLPack array on device type {int(dev_type)} (not a CUDA device); a CUDA "
                            f"kernel takes GPU arrays")
    try:
        try:
            from cuda.core.utils import StridedMemoryView
        except ImportError:
            from cuda.core.experimental.utils import StridedMemoryView
        view = StridedMemoryView(arr, stream_ptr=-1)
    except ImportError as e:
        raise TesselError(f"{what}: reading a DLPack array needs cuda.core ({e}); pip install cuda-core") from e
    dtype = _dtype_name(view.dtype)
    if dtype is None:
        raise ArgumentError(f"{what} has element type {view.dtype}, which tessel does not support")
    shape = tuple(view.shape)
    strides = None if view.strides is None else tuple(s * _ITEMSIZE[dtype] for s in view.strides)
    return ArrayInfo(int(view.ptr), shape, dtype, int(dev_id), "other", _c_contiguous(shape, strides, _ITEMSIZE[dtype]),
                     bool(getattr(view, "readonly", False)))


def _pointer_device(ptr: int) -> int:
    """The device ordinal a pointer belongs to (0 when the driver cannot tell)."""
    try:
        from cuda.bindings import driver

        err, dev = driver.cuPointerGetAttribute(driver.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr)
        return int(dev) if int(err) == 0 else 0
    except Exception:  # noqa: BLE001 - no bindings or no driver: the launch reports it properly
        return 0


# ---------------------------------------------------------------------------------------------
# Driver access: devices, modules, streams
# ---------------------------------------------------------------------------------------------


_CORE = []  # the cuda.core module once imported (an explicit one-entry cache)


def _core():
    """The cuda.core module (cuda.core.experimental before 0.4); TesselError when missing."""
    if _CORE:
        return _CORE[0]
    try:
        import cuda.core as core

        if not hasattr(core, "launch"):
            import cuda.core.experimental as core  # noqa: F811 - the older layout
    except ImportError as e:
        raise TesselError(f"calling a CUDA kernel needs NVIDIA's Python bindings (cuda.core): {e}; "
                          f"pip install cuda-core cuda-bindings") from e
    _CORE.append(core)
    return core


class _Runtime:
    """Per-process driver state: the loaded modules (an explicit cache keyed by binary and
    device) and stream objects for foreign handles."""

    def __init__(self):
        self.lock = threading.Lock()
        self.modules: dict[tuple, object] = {}
        self.streams: dict[int, object] = {}
        self.devices: dict[int, object] = {}

    def device(self, index: int):
        dev = self.devices.get(index)
        if dev is None:
            core = _core()
            try:
                dev = core.Device(index)
                dev.set_current()
            except Exception as e:  # noqa: BLE001 - no driver, no device: say so in our words
                raise TesselError(f"no usable CUDA GPU {index} ({type(e).__name__}: {e}); calling a CUDA kernel "
                                  f"needs an NVIDIA GPU and its driver") from e
            self.devices[index] = dev
        else:
            dev.set_current()
        return dev

    def kernel(self, code: bytes, key: str, symbol: str, index: int, shared_bytes: int, kernel_name: str):
        mod_key = (key, index)
        fn = self.modules.get(mod_key)
        if fn is not None:
            return fn
        with self.lock:
            fn = self.modules.get(mod_key)
            if fn is None:
                core = _core()
                self.device(index)
                try:
                    fn = core.ObjectCode.from_cubin(code, name=symbol).get_kernel(symbol)
                except Exception as e:  # noqa: BLE001 - a wrong arch shows up here
                    raise TesselError(f"kernel '{kernel_name}': loading its machine code on GPU {index} failed "
                                      f"({type(e).__name__}: {e})") from e
                if shared_bytes > 48 * 1024:
                    _allow_dynamic_shared(fn, shared_bytes, index, kernel_name)
                self.modules[mod_key] = fn
        return fn

    def stream(self, handle: int):
        s = self.streams.get(handle)
        if s is None:
            core = _core()
            s = core.Stream.from_handle(handle)
            if len(self.streams) > 64:  # foreign streams come and go: keep the cache small
                self.streams.clear()
            self.streams[handle] = s
        return s


_RUNTIME = _Runtime()


def _allow_dynamic_shared(fn, nbytes: int, device: int, kernel_name: str) -> None:
    """Raise the kernel's dynamic shared memory limit (needed above 48 KB)."""
    from cuda.bindings import driver

    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    handle = fn.handle
    if type(handle).__name__ == "CUkernel":
        err, = driver.cuKernelSetAttribute(attr, nbytes, handle, device)
    else:
        err, = driver.cuFuncSetAttribute(handle, attr, nbytes)
    if int(err) != 0:
        raise TesselError(f"kernel '{kernel_name}' needs {nbytes} bytes of shared memory per block; the device "
                          f"refused ({err})")


def device_capability(index: int) -> tuple[int, int]:
    """(major, minor) compute capability of GPU `index`."""
    dev = _RUNTIME.device(index)
    cc = dev.compute_capability
    return int(cc[0]), int(cc[1])


def arch_runs_on(arch: str, cc: tuple[int, int]) -> bool:
    """Whether a cubin for `arch` runs on a device of compute capability `cc`.

    >>> arch_runs_on("sm_80", (8, 6)), arch_runs_on("sm_90a", (9, 0)), arch_runs_on("sm_80", (9, 0))
    (True, True, False)
    """
    num = arch[3:].rstrip("a")
    major, minor = int(num[:-1]), int(num[-1])
    if arch.endswith("a"):
        return (major, minor) == cc
    return major == cc[0] and minor <= cc[1]


_LOCAL = threading.local()


@contextlib.contextmanager
def use_stream(handle: int):
    """Launch tessel kernels of this thread on the CUDA stream `handle` (an int cudaStream_t)
    inside the block, whatever the arguments are."""
    stack = getattr(_LOCAL, "streams", None)
    if stack is None:
        stack = _LOCAL.streams = []
    stack.append(int(handle))
    try:
        yield
    finally:
        stack.pop()


def current_stream_handle(infos: list[ArrayInfo], device: int) -> int:
    """The stream a launch goes to (see the module docstring), as an int handle."""
    stack = getattr(_LOCAL, "streams", None)
    if stack:
        return stack[-1]
    kinds = {i.kind for i in infos}
    if "torch" in kinds:
        torch = sys.modules["torch"]
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # an int, without a Stream object
        return int(raw(device)) if raw is not None else int(torch.cuda.current_stream(device).cuda_stream)
    if "cupy" in kinds:
        import cupy

        return int(cupy.cuda.get_current_stream().ptr)
    return 0  # the legacy default stream, as CUDA C++ launches without a stream use


class Workspace:
    """Global scratch memory for one launch, allocated the way the arguments are (torch's caching
    allocator, cupy's pool, or cuda.core) so that it is stream-ordered and graph-capturable."""

    def __init__(self, nbytes: int, infos: list[ArrayInfo], device: int, stream_handle: int):
        kinds = {i.kind for i in infos}
        self._keep = None
        if "torch" in kinds:
            import torch

            self._keep = torch.empty(nbytes, dtype=torch.uint8, device=f"cuda:{device}")
            self.ptr = self._keep.data_ptr()
        elif "cupy" in kinds:
            import cupy

            with cupy.cuda.Device(device):
                self._keep = cupy.empty(nbytes, dtype=cupy.uint8)
            self.ptr = int(self._keep.data.ptr)
        else:
            dev = _RUNTIME.device(device)
            self._stream = _RUNTIME.stream(stream_handle)
            self._buf = dev.allocate(nbytes, stream=self._stream)
            self.ptr = int(self._buf.handle)

    def release(self) -> None:
        buf = getattr(self, "_buf", None)
        if buf is not None:
            buf.close(self._stream)


def launch_config(grid: tuple, block: tuple, shared_bytes: int):
    """A cuda.core LaunchConfig (build it once per kernel and pass it to `launch`)."""
    return _core().LaunchConfig(grid=tuple(grid), block=tuple(block), shmem_size=int(shared_bytes))


def launch(code: bytes, key: str, symbol: str, kernel_name: str, grid: tuple, block: tuple, shared_bytes: int,
           pointers: list, device: int, stream_handle: int, config=None, tensor_maps=()) -> None:
    """Launch a cubin's kernel `symbol` on `stream_handle` of `device`.

    `pointers`: the arguments in parameter order: Python ints are pointers, numpy int32 / int64
    scalars are scalar parameters passed by value. `tensor_maps`: `(TensorMapSpec, pointer)` pairs
    (PrintedKernel.tensor_maps with the pointer of the parameter each names), encoded here and
    passed as the trailing `__grid_constant__` CUtensorMap parameters.
    """
    core = _core()
    fn = _RUNTIME.kernel(code, key, symbol, device, shared_bytes, kernel_name)
    if tensor_maps or any(isinstance(p, np.integer) for p in pointers):
        maps = [tensor_map_bytes(spec, ptr, kernel_name) for spec, ptr in tensor_maps]
        _launch_raw(fn, kernel_name, grid, block, shared_bytes, list(pointers), maps, device, stream_handle)
        return
    stream = _RUNTIME.stream(stream_handle) if stream_handle else _RUNTIME.device(device).default_stream
    if config is None:
        config = launch_config(grid, block, shared_bytes)
    try:
        core.launch(stream, config, fn, *pointers)
    except Exception as e:  # noqa: BLE001 - report the driver's error with the kernel's name
        raise TesselError(f"kernel '{kernel_name}': launch with grid {tuple(grid)}, block {tuple(block)}, "
                          f"{shared_bytes} bytes of shared memory failed ({type(e).__name__}: {e})") from e


_TMAP_DTYPES = {"bfloat16": "BFLOAT16", "float16": "FLOAT16", "float32": "FLOAT32", "float64": "FLOAT64",
                "int32": "INT32", "int64": "INT64", "int8": "UINT8", "bool": "UINT8"}
_TMAP_CACHE: dict = {}  # (spec, pointer) -> the encoded 128 bytes (explicit, bounded cache)


def tensor_map_bytes(spec, ptr: int, kernel_name: str = "?") -> bytes:
    """The 128-byte CUtensorMap of `spec` (tessel.ir.intrinsics.tma.TensorMapSpec) over the tensor
    at device pointer `ptr`, by cuTensorMapEncodeTiled: dimensions innermost first, row-major
    strides, the box, elementStrides 1, the swizzle, out-of-bounds elements read as zero."""
    key = (spec, int(ptr))
    out = _TMAP_CACHE.get(key)
    if out is not None:
        return out
    import ctypes

    from cuda.bindings import driver as drv

    if int(ptr) % 16:
        raise ArgumentError(f"kernel '{kernel_name}': tensor '{spec.buffer}' for a TMA copy must be 16-byte aligned "
                            f"(its pointer is {int(ptr):#x})")
    isz = _ITEMSIZE[spec.dtype]
    dims = list(reversed(spec.shape))
    strides, acc = [], isz
    for n in dims[:-1]:
        acc *= n
        strides.append(acc)
    if any(st % 16 for st in strides):
        raise ArgumentError(f"kernel '{kernel_name}': tensor '{spec.buffer}' of shape {spec.shape}: TMA needs every "
                            f"row stride to be a multiple of 16 bytes (strides {strides})")
    if not strides:
        # On the H200 a rank-1 map failed to encode with an empty strides list (CUDA_ERROR_INVALID_VALUE), and one
        # encoded with a padded one made the kernel fault (illegal instruction), which poisons the CUDA context.
        # Until a rank-1 map is verified, refuse it here, before anything reaches the GPU.
        raise ArgumentError(f"kernel '{kernel_name}': tensor '{spec.buffer}' of shape {spec.shape}: rank-1 TMA tensor "
                            f"maps are not supported yet; view it as 2-D (1, n) or use the 1-D bulk copy")
    t = drv.CUtensorMapDataType
    sw = {0: "NONE", 32: "32B", 64: "64B", 128: "128B"}[spec.swizzle]
    err, tmap = drv.cuTensorMapEncodeTiled(
        getattr(t, f"CU_TENSOR_MAP_DATA_TYPE_{_TMAP_DTYPES[spec.dtype]}"), len(dims), int(ptr),
        [drv.cuuint64_t(n) for n in dims], [drv.cuuint64_t(st) for st in strides],
        [drv.cuuint32_t(b) for b in reversed(spec.box)], [drv.cuuint32_t(1)] * len(dims),
        drv.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
        getattr(drv.CUtensorMapSwizzle, f"CU_TENSOR_MAP_SWIZZLE_{sw}"),
        drv.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        drv.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    if int(err) != 0:
        raise TesselError(f"kernel '{kernel_name}': cuTensorMapEncodeTiled for tensor '{spec.buffer}' (shape "
                          f"{spec.shape}, box {spec.box}, swizzle {spec.swizzle}) failed ({err})")
    out = ctypes.string_at(int(tmap.getPtr()), 128)
    if len(_TMAP_CACHE) > 256:
        _TMAP_CACHE.clear()
    _TMAP_CACHE[key] = out
    return out


def _launch_raw(fn, kernel_name, grid, block, shared_bytes, args, maps, device, stream_handle) -> None:
    """cuLaunchKernel with a hand-built parameter array: pointers, scalars by value, tensor maps."""
    import ctypes

    from cuda.bindings import driver as drv

    _RUNTIME.device(device)
    keep = []
    for a in args:
        if isinstance(a, np.int32):
            keep.append(ctypes.c_int32(int(a)))
        elif isinstance(a, np.integer):
            keep.append(ctypes.c_int64(int(a)))
        else:
            keep.append(ctypes.c_uint64(int(a)))
    for m in maps:
        buf = (ctypes.c_uint64 * 16)()
        ctypes.memmove(buf, m, 128)
        keep.append(buf)
    params = (ctypes.c_void_p * max(len(keep), 1))(*[ctypes.addressof(k) for k in keep])
    handle = fn.handle
    func = drv.CUfunction(int(handle)) if type(handle).__name__ == "CUkernel" else handle
    err, = drv.cuLaunchKernel(func, *[int(g) for g in grid], *[int(b) for b in block], int(shared_bytes),
                              drv.CUstream(int(stream_handle)), ctypes.addressof(params), 0)
    if int(err) != 0:
        raise TesselError(f"kernel '{kernel_name}': launch with grid {tuple(grid)}, block {tuple(block)}, "
                          f"{shared_bytes} bytes of shared memory failed ({err})")


def synchronize(device: int = 0) -> None:
    """Wait for all work on GPU `device`."""
    _RUNTIME.device(device).sync()


class CudaGraph:
    """Captures kernel launches once and replays them with one call.

    With torch installed this is `torch.cuda.CUDAGraph` (tessel kernels launch on torch's current
    stream, which the capture redirects; torch work in the block is captured too). Without torch,
    the launches of this thread go to a private stream captured through the driver. Arguments of
    a replayed launch are the ones captured (same pointers): update the arrays' contents, not the
    arrays. Call every kernel once before capturing: its first call loads its module, which is
    not allowed during a capture.

    >>> g = CudaGraph()                                    # doctest: +SKIP
    >>> with g.capture():                                  # doctest: +SKIP
    ...     k1(x, y); k2(y, z)
    >>> g.replay()                                         # doctest: +SKIP
    """

    def __init__(self, device: int = 0, use_torch: bool | None = None):
        self.device = device
        if use_torch is None:
            try:
                import torch  # noqa: F401
                use_torch = True
            except ImportError:
                use_torch = False
        self.use_torch = use_torch
        self._graph = None
        self._exec = None

    @contextlib.contextmanager
    def capture(self):
        if self.use_torch:
            import torch

            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.device(self.device), torch.cuda.graph(self._graph):
                yield self
            return
        from cuda.bindings import driver

        dev = _RUNTIME.device(self.device)
        self._stream = dev.create_stream()
        handle = int(self._stream.handle)
        mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        _check(driver.cuStreamBeginCapture(handle, mode), "cuStreamBeginCapture")
        try:
            with use_stream(handle):
                yield self
        finally:
            graph = _check(driver.cuStreamEndCapture(handle), "cuStreamEndCapture")
        self._graph = graph
        self._exec = _check(driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")

    def replay(self) -> None:
        """Run the captured launches again (asynchronously, on the current stream)."""
        if self._graph is None:
            raise TesselError("CudaGraph.replay() before anything was captured; use `with graph.capture(): ...`")
        if self.use_torch:
            self._graph.replay()
            return
        from cuda.bindings import driver

        stack = getattr(_LOCAL, "streams", None)
        handle = stack[-1] if stack else int(self._stream.handle)
        _check(driver.cuGraphLaunch(self._exec, handle), "cuGraphLaunch")


def _check(result, what: str):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TesselError(f"{what} failed ({err})")
    return rest[0] if len(rest) == 1 else tuple(rest)


__all__ = ["ArrayInfo", "CudaGraph", "Workspace", "arch_runs_on", "current_stream_handle", "describe",
           "device_capability", "launch", "launch_config", "synchronize", "tensor_map_bytes", "use_stream"]
