"""The fast paths of the schedule toolkit (tessel/schedules/nest.py) give what the plain walks give.

Each primitive asks the kernel the same questions several times (find a loop, its path, the names
in use, the stores to a buffer, the init guards, whether a loop is data parallel): nest.py answers
from one walk over the statements, cached per tree, rebuilds only the spine above a replaced loop,
and checks a fused loop's iterations for colliding stores with numpy. Each is checked here against
the plain computation it replaces (a full pre-order walk, the rewrite engine, the point-by-point
enumeration), on kernels scheduled by random primitive sequences and on random index expressions.
"""

import itertools
import random

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir.nodes import Binary, Buffer, Const, For, Kernel, Stmt, Store, Var, rewrite, walk
from tessel.ir.verify_witness import evaluate
from tessel.schedules import nest
from tessel.schedules.generic import default_schedule, stages
from tessel.schedules.schedule import Schedule


def _seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0])


def _kernels():
    """Naive DSL kernels of a few shapes (GEMM, softmax-like reduction, elementwise, conv-like)."""
    A = ts.placeholder((12, 8), name="A")
    B = ts.placeholder((8, 16), name="B")
    k = ts.reduce_axis(8, name="k")
    C = ts.compute((12, 16), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    D = ts.compute((12, 16), lambda i, j: C[i, j] * 2.0 + 1.0, name="D")
    yield ts.lower([A, B, D])
    X = ts.placeholder((6, 10), name="X")
    r = ts.reduce_axis(10, name="r")
    M = ts.compute((6,), lambda i: ts.max(X[i, r], axis=r), name="M")
    E = ts.compute((6, 10), lambda i, j: ts.exp(X[i, j] - M[i]), name="E")
    yield ts.lower([X, E])
    P = ts.placeholder((2, 3, 9, 9), name="P")
    W = ts.placeholder((4, 3, 3, 3), name="W")
    c, kh, kw = ts.reduce_axis(3, name="c"), ts.reduce_axis(3, name="kh"), ts.reduce_axis(3, name="kw")
    O = ts.compute((2, 4, 7, 7), lambda n, o, y, x: ts.sum(P[n, c, y + kh, x + kw] * W[o, c, kh, kw],
                                                            axis=[c, kh, kw]), name="O")
    yield ts.lower([P, W, O])


def _random_schedule(kernel, rng: random.Random, steps: int = 12) -> Schedule:
    """Up to `steps` random split / fuse / reorder / annotate requests (refusals skipped)."""
    sch = Schedule(kernel)
    for _ in range(steps):
        loops = [n for n in walk(sch.kernel.body) if isinstance(n, For)]
        lp = rng.choice(loops)
        try:
            what = rng.choice(["split", "split", "fuse", "reorder", "parallel", "vectorize", "unroll"])
            if what == "split":
                sch.split(lp.var.name, [None, rng.choice([2, 3, 4, 5])])
            elif what == "fuse" and isinstance(lp.body, For):
                sch.fuse(lp.var.name, lp.body.var.name)
            elif what == "reorder" and isinstance(lp.body, For):
                sch.reorder(lp.body.var.name, lp.var.name)
            elif what in ("parallel", "vectorize", "unroll"):
                getattr(sch, what)(lp.var.name)
        except ScheduleError:
            pass
    return sch


def _plain_find_loop(node, name):
    return next((n for n in walk(node) if isinstance(n, For) and n.var.name == name), None)


def _plain_loop_path(node, name):
    """The enclosing loops of the first loop `name` in pre-order, by a recursive walk."""
    def go(n, path):
        if isinstance(n, For):
            path = path + [n]
            if n.var.name == name:
                return path
        for c in n.children():
            if isinstance(c, Stmt):
                got = go(c, path)
                if got is not None:
                    return got
        return None
    return go(node, [])


def test_loop_lookups_and_names_match_plain_walks_on_randomly_scheduled_kernels():
    seed = _seed()
    rng = random.Random(seed)
    for kernel in _kernels():
        sch = _random_schedule(kernel, rng)
        kern = sch.kernel
        names = [n.var.name for n in walk(kern.body) if isinstance(n, For)]
        assert names, f"seed {seed}"
        for name in names:
            assert nest.find_loop(kern.body, name) is _plain_find_loop(kern.body, name), f"seed {seed}: {name}"
            assert nest.loop_path(kern.body, name) == _plain_loop_path(kern.body, name), f"seed {seed}: {name}"
        plain = {n.name for n in walk(kern) if isinstance(n, (Var, Buffer))}
        assert nest.used_names(kern) == plain, f"seed {seed}"
        written = {n.buffer.name for n in walk(kern) if isinstance(n, Store)}
        for n in walk(kern.body):
            if isinstance(n, For):
                assert nest.used_names(n) == {x.name for x in walk(n) if isinstance(x, (Var, Buffer))}
                for buf in written:
                    plain = [x for x in walk(n) if isinstance(x, Store) and x.buffer.name == buf]
                    got = nest.stores_to(n, buf)
                    assert len(got) == len(plain) and all(a is b for a, b in zip(got, plain)), f"seed {seed}"
        with pytest.raises(ScheduleError, match="no loop named"):
            nest.find_loop(kern.body, "no_such_loop")


def test_replace_loop_gives_what_the_rewrite_gives():
    seed = _seed()
    rng = random.Random(seed)
    for kernel in _kernels():
        kern = _random_schedule(kernel, rng).kernel
        for lp in [n for n in walk(kern.body) if isinstance(n, For)]:
            name = lp.var.name
            for fn in (lambda old: For(old.var, old.extent, old.body, "unrolled"), lambda old: old,
                       lambda old: old.body):
                want = rewrite(kern, lambda n: fn(n) if isinstance(n, For) and n.var.name == name else None,
                               fixpoint=False)
                got = nest.replace_loop(kern, name, fn)
                assert got == want, f"seed {seed}: replacing {name}"


def test_replace_loop_of_a_loop_held_twice_replaces_both():
    i = Var("i")
    A = Buffer("A", (4,))
    loop = For(i, 4, Store(A, (i,), Const(1.0)))
    from tessel.ir.nodes import Seq

    kern = Kernel("twice", (A,), Seq((loop, loop)))
    got = nest.replace_loop(kern, "i", lambda old: For(old.var, old.extent, old.body, "unrolled"))
    assert [s.kind for s in got.body.stmts] == ["unrolled", "unrolled"]


def _random_index(rng, vars_):
    """A random integer index expression over `vars_`, mostly floordiv / floormod of sums."""
    def leaf():
        return rng.choice(vars_) if rng.random() < 0.7 else Const(rng.randrange(0, 5))

    def expr(depth):
        if depth == 0:
            return leaf()
        op = rng.choice(["add", "mul", "floordiv", "floormod", "floordiv", "floormod", "sub", "min", "max"])
        a = expr(depth - 1)
        b = Const(rng.choice([0, 1, 2, 3, 4, 6])) if op in ("floordiv", "floormod", "mul") else expr(depth - 1)
        return Binary(op, a, b)
    return expr(rng.randrange(1, 4))


def _plain_collision(loop_vars, sizes, free, indices):
    """The point-by-point enumeration (the definition nest._iterations_collide implements)."""
    seen = {}
    for point in itertools.product(*(range(n) for n in sizes)):
        env = dict(zip(loop_vars, point))
        env.update({x: 0 for x in free})
        idx = tuple(evaluate(i, env) for i in indices)
        if None in idx:
            return None
        first = seen.setdefault(idx, point[0])
        if first != point[0]:
            return first, point[0]
    return None


def test_collision_check_matches_the_enumeration_on_random_indices():
    seed = _seed()
    rng = random.Random(seed)
    f, a, b, z = Var("f"), Var("a"), Var("b"), Var("z")
    checked = fast = 0
    for _ in range(400):
        sizes = [rng.randrange(1, 13), rng.randrange(1, 5), rng.randrange(1, 5)]
        indices = tuple(_random_index(rng, [f, a, b, z]) for _ in range(rng.randrange(1, 4)))
        got = nest._first_collision_numpy(indices, [f, a, b], sizes, {z})
        if got is nest._SLOW:
            continue
        fast += 1
        want = _plain_collision([f, a, b], sizes, {z}, indices)
        assert got == want, f"seed {seed}: indices {[str(i) for i in indices]} sizes {sizes}"
        checked += want is not None
    assert fast > 100 and checked > 10, f"seed {seed}: only {fast} fast cases, {checked} with collisions"


def test_is_data_parallel_finds_the_colliding_iterations_of_a_fused_loop():
    # C[jk // 2] over a fused loop of 8: iterations 0 and 1 write element 0
    A, C = Buffer("A", (8,)), Buffer("C", (4,))
    f = Var("f")
    loop = For(f, 8, Store(C, (f // 2,), A[f]))
    ok, why = nest.is_data_parallel(loop)
    assert not ok and "iterations 0 and 1" in why
    loop = For(f, 8, Store(Buffer("D", (4, 2)), (f // 2, f % 2), A[f]))
    assert nest.is_data_parallel(loop) == (True, "")


def _plain_stages(kernel):
    body = kernel.body
    while hasattr(body, "buffer") and hasattr(body, "body"):  # Allocate
        body = body.body
    items = body.stmts if hasattr(body, "stmts") else (body,)
    out = []
    for st in items:
        written = {n.buffer.name for n in walk(st) if isinstance(n, Store)} if isinstance(st, For) else set()
        if len(written) == 1:
            out.append((written.pop(), st))
    return out


def test_stages_of_scheduled_kernels_match_a_plain_walk():
    seed = _seed()
    rng = random.Random(seed)
    for kernel in _kernels():
        assert stages(kernel) == _plain_stages(kernel)
        kern = _random_schedule(default_schedule(kernel).kernel, rng, steps=4).kernel
        assert stages(kern) == _plain_stages(kern), f"seed {seed}"


def test_identity_cache_keys_by_identity_and_keeps_its_size():
    calls = []
    cache = nest.IdentityCache(2)
    a, b, c = Var("x"), Var("x"), Var("y")  # a and b equal, not the same object
    for node in (a, a, b, c, a):
        cache.get(node, lambda n: calls.append(n) or len(calls))
    assert [x is a for x in calls] == [True, False, False, True]  # a, b, c, then a again (evicted)
    assert len(cache._d) == 2
    nest.release_caches()
    assert all(not k._d for k in nest._CACHES)
