"""Planted bugs: deliberately wrong passes, registered when this module is imported.

They exist to show that each oracle fires (tests/fuzz) and to measure the fuzzer
(`bench/fuzz_eval.py`); nothing in tessel imports this module. Use them through
`tessel fuzz --plugin tessel.fuzz.planted` or `Campaign(plugins=["tessel.fuzz.planted"])`, which
import it in the campaign and in every worker.

| pass                  | bug                                                 | oracle          |
|-----------------------|-----------------------------------------------------|-----------------|
| planted_flip          | the first float `a + b` becomes `a - b`             | diff            |
| planted_crash         | raises KeyError on kernels with a reduction guard   | crash           |
| planted_bad_ir        | reads a variable no loop defines                    | verify          |
| planted_hang          | loops forever on kernels with a floormod            | hang            |
| planted_nondet        | wraps the body in a Seq on every other call         | nondet          |
| planted_drop_barrier  | deletes every barrier                               | race            |
| planted_segfault      | kills its process with SIGSEGV on int32 kernels     | died            |

Example:
    >>> from tessel.compiler.pipeline import PASSES
    >>> "planted_flip" in PASSES
    True
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import time

from tessel.compiler.pipeline import register_pass
from tessel.ir.nodes import Barrier, Binary, Load, Seq, Store, Var, rewrite, walk


def flip(kernel):
    done = [False]

    def f(n):
        if not done[0] and isinstance(n, Binary) and n.op == "add" and n.dtype.startswith("float"):
            done[0] = True
            return Binary("sub", n.a, n.b)
        return None

    return dataclasses.replace(kernel, body=rewrite(kernel.body, f, fixpoint=False))


def crash(kernel):
    if any(isinstance(n, Binary) and n.op == "eq" for n in walk(kernel.body)):
        raise KeyError("planted crash")
    return kernel


def bad_ir(kernel):
    stores = [n for n in walk(kernel.body) if isinstance(n, Store)]
    if not stores:
        return kernel
    s = stores[0]
    bad = Store(s.buffer, s.indices, s.value if not s.value.dtype.startswith("float") else
                Binary("add", s.value, Load(s.buffer, tuple(Var("nowhere") for _ in s.indices))))
    return dataclasses.replace(kernel, body=rewrite(kernel.body, lambda n: bad if n is s else None, fixpoint=False))


def hang(kernel):
    if any(isinstance(n, Binary) and n.op == "floormod" for n in walk(kernel.body)):
        while True:
            time.sleep(0.05)
    return kernel


_CALLS = itertools.count()


def nondet(kernel):  # (every other call: as if it depended on a set's iteration order)
    return dataclasses.replace(kernel, body=Seq((kernel.body,))) if next(_CALLS) % 2 == 0 else kernel


def drop_barrier(kernel):
    def f(n):
        if isinstance(n, Seq) and any(isinstance(x, Barrier) for x in n.stmts):
            return Seq(tuple(x for x in n.stmts if not isinstance(x, Barrier)))
        return None

    return dataclasses.replace(kernel, body=rewrite(kernel.body, f, fixpoint=False))


def segfault(kernel):
    if any(getattr(p, "dtype", "") == "int32" for p in kernel.params):
        os.kill(os.getpid(), signal.SIGSEGV)
    return kernel


PLANTED = {"planted_flip": "flip", "planted_crash": "crash", "planted_bad_ir": "bad_ir", "planted_hang": "hang",
           "planted_nondet": "nondet", "planted_drop_barrier": "drop_barrier", "planted_segfault": "segfault"}
for _name, _attr in PLANTED.items():
    register_pass(_name, __name__, _attr, doc="a planted bug (tessel/fuzz/planted.py)")

__all__ = ["PLANTED"]
