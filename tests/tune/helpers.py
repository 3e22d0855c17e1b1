"""Shared pieces of the tuner tests: small workloads, deliberately bad builders, a fake executor.

The builders run in measurement children (they are looked up by module path there)."""

from __future__ import annotations

import ctypes
import time

import tessel as ts
from tessel.tune.measure import Executor, MeasureResult


def matmul(n: int = 32, name: str = "C"):
    A = ts.placeholder((n, n), name="A")
    B = ts.placeholder((n, n), name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name=name)
    return [A, B, C]


def segfault_builder(kernel, target, template, knobs):
    ctypes.string_at(0)


def hang_builder(kernel, target, template, knobs):
    while True:
        time.sleep(0.01)


def oom_builder(kernel, target, template, knobs):
    hog = []
    while True:
        hog.append(bytearray(64 * 2**20))


def wrong_builder(kernel, target, template, knobs):
    """Builds C = 1.5 * A @ B under the workload's names: a candidate that computes the wrong thing."""
    n = kernel.params[0].shape[0]
    A = ts.placeholder((n, n), name="A")
    B = ts.placeholder((n, n), name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k] * B[k, j] * 1.5, axis=k), name="C")
    return ts.build([A, B, C], target=target, name=kernel.name).ir


class FakeExecutor(Executor):
    """Measures nothing: a synthetic time from the knobs; counts the candidates and keeps them."""

    def __init__(self, cost=None):
        self.count = 0
        self.seen: list = []
        self.cost = cost or (lambda kn: 1e-3 * (1 + abs(kn.get("tile_rows", 1) - 4) + abs(kn.get("tile_cols", 1) - 8)))

    def measure(self, inputs):
        self.count += len(inputs)
        self.seen += [dict(m.knobs) for m in inputs]
        return [MeasureResult(self.cost(m.knobs), (self.cost(m.knobs),)) for m in inputs]


class NoMeasure(Executor):
    """An executor that fails the test if anything is measured."""

    def measure(self, inputs):
        raise AssertionError(f"{len(inputs)} candidate(s) measured, expected none")


def equals_rebuilt(kernel, n):
    """In a child: does the kernel received from the parent equal the same kernel built here?"""
    return kernel == ts.lower(matmul(n))
