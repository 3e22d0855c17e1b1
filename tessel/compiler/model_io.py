"""Inputs and outputs of a compiled model: input specs, argument checks, conversions between numpy
arrays and torch tensors, random inputs. Shared by the CPU and GPU models (tessel.compiler.model,
model_cuda) and the artifact loader.

Example:
    >>> import numpy as np
    >>> spec = InputSpec("x", (2, 3), "float32")
    >>> [a.shape for a in random_inputs([spec])]
    [(2, 3)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tessel.errors import ArgumentError, TesselError


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape and dtype."""

    name: str
    shape: tuple
    dtype: str


def contiguous(a):
    """`a` as a C-contiguous array, 0-d arrays kept 0-d (np.ascontiguousarray makes them 1-d).

    >>> contiguous(np.float32(2.0)).shape
    ()
    """
    a = np.asarray(a)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _to_numpy(x, spec: InputSpec, where: str):
    if _is_torch(x):
        if getattr(x, "device", None) is not None and x.device.type != "cpu":
            raise ArgumentError(f"{where} '{spec.name}': expected a CPU tensor, got one on {x.device}")
        return x.detach().resolve_conj().resolve_neg().numpy()
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    raise ArgumentError(f"{where} '{spec.name}': expected a numpy array or a CPU torch tensor of "
                        f"{spec.dtype}{list(spec.shape)}, got {type(x).__name__}")


def _signature(inputs):
    """((shape, dtype name), ...) of the raw inputs, or None when some input is not an array."""
    key = []
    for x in inputs:
        if _is_torch(x):
            key.append((tuple(x.shape), str(x.dtype).replace("torch.", "")))
        elif isinstance(x, (np.ndarray, np.generic)):
            key.append((tuple(np.shape(x)), _dtype_name(np.asarray(x).dtype)))
        else:
            return None
    return tuple(key)


_DTYPE_NAMES: dict = {}  # explicit cache: numpy dtype -> tessel name (from_numpy_dtype costs ~1 us per call)


def _dtype_name(dt) -> str:
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        from tessel.ir.dtypes import from_numpy_dtype

        try:
            name = from_numpy_dtype(dt)
        except TesselError:
            name = str(dt)
        _DTYPE_NAMES[dt] = name
    return name


def _key_of(specs) -> tuple:
    return tuple((tuple(s.shape), s.dtype) for s in specs)


def _fmt_key(key) -> str:
    return "(" + ", ".join(f"{d}{list(s)}" for s, d in key) + ")"


def _check_inputs(program, inputs, where: str = "input") -> list:
    specs = program.inputs
    name = program.source.name
    if len(inputs) != len(specs):
        listed = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in specs)
        raise ArgumentError(f"model '{name}' takes {len(specs)} input(s) ({listed}), got {len(inputs)}")
    arrays = []
    for x, spec, npdt in zip(inputs, specs, program._np_dtypes):
        a = _to_numpy(x, spec, f"model '{name}' {where}")
        if a.dtype != npdt:
            raise ArgumentError(f"model '{name}' {where} '{spec.name}': expected dtype {spec.dtype}, "
                                f"got {_dtype_name(a.dtype)}")
        if tuple(a.shape) != tuple(spec.shape):
            raise ArgumentError(f"model '{name}' {where} '{spec.name}': expected shape {tuple(spec.shape)}, "
                                f"got {tuple(a.shape)}")
        arrays.append(contiguous(a))
    return arrays


def _check_example(program, example_inputs) -> None:
    ex = example_inputs if isinstance(example_inputs, (list, tuple)) else [example_inputs]
    # Example inputs only declare shapes and dtypes: GPU tensors (for a CUDA model) are checked
    # through a host copy, made once at compile time.
    ex = [x.detach().cpu() if hasattr(x, "is_cuda") and x.is_cuda else x for x in ex]
    try:
        _check_inputs(program, list(ex), where="example input")
    except ArgumentError as e:
        raise ArgumentError(f"{e} (the model's declared input shapes contradict the example inputs)") from None


def random_inputs(specs, seed: int = 0) -> list:
    """Random arrays for input specs: normal floats, small non-negative integers, random bools.

    >>> [a.shape for a in random_inputs([InputSpec("x", (2, 3), "float32")])]
    [(2, 3)]
    """
    from tessel.ir.dtypes import numpy_dtype

    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        dt = numpy_dtype(s.dtype)
        if s.dtype == "bool":
            out.append(rng.random(s.shape) < 0.5)
        elif np.issubdtype(dt, np.integer):
            out.append(rng.integers(0, 2, s.shape).astype(dt))
        else:
            out.append(rng.standard_normal(s.shape).astype(dt))
    return out


def _torch_of(r):
    """A numpy result as a torch tensor (bfloat16, which torch.from_numpy refuses, through its bits)."""
    import torch

    if r.dtype.name == "bfloat16":
        return torch.from_numpy(r.view("int16")).view(torch.bfloat16)
    return torch.from_numpy(r)
