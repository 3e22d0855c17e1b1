"""IR mutators: change a case's program or its schedule.

General mutations of the unscheduled kernel (`MUTATIONS`): replace a constant, swap operands,
change an operator (or a math call of the same arity), insert or delete a statement, change a loop
extent, a cast's dtype, a temporary's dtype or memory scope, a loop kind (threads included), wrap
a statement in an `if` or an expression in a `select`. They need not keep the kernel valid: the
campaign verifies each mutant, and one that the verifier rejects is counted, not run.

Compiler-specific mutations of the schedule (`SCHEDULE_MUTATIONS`): append a random schedule
primitive with arguments drawn from the scheduled kernel's actual loops and buffers (split,
reorder, fuse, annotate, cache_read / cache_write, compute_at / compute_inline,
decompose_reduction, cache_accumulate, transform_layout; on GPU cases bind, cache_shared, pad,
swizzle, cross_thread_reduce, pipeline and tensorize attempts with intrinsics from the
interpreter's table), move a template's knobs one step (`Space.neighbors`) or to a random valid
point (`Space.sample`), switch to another applicable template, or delete a command. A command the
schedule refuses is skipped when the case runs (and counted).

Every mutator is `f(case, rng) -> Case | None` (None: nothing to mutate here).

Example:
    >>> import random
    >>> from tessel.ir.text import parse_kernel
    >>> from tessel.fuzz.case import Case
    >>> k = parse_kernel("kernel f(A: float32[4] global) target cpu { for i in 4 { A[i] = 1.5f32 } }")
    >>> m = mutate_const(Case(k), random.Random(0))
    >>> m.kernel != k
    True
"""

from __future__ import annotations

import dataclasses
import math
import random

from tessel.errors import TesselError
from tessel.fuzz.case import Case, is_gpu
from tessel.ir.nodes import (
    ARITH_OPS, COMPARE_OPS, LOOP_KINDS, MATH_FUNCS, SCOPES, Allocate, Binary, Buffer, Call, Cast, Const, For,
    IfThenElse, Load, Node, Select, Seq, Store, free_vars,
)

# ---------------------------------------------------------------------------------------------
# positions in a tree
# ---------------------------------------------------------------------------------------------


def preorder(node: Node):
    """Every node of the tree, parents first (the numbering `replace_nth` uses)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children()))


def replace_nth(root: Node, n: int, fn) -> Node:
    """`root` with its n-th node in preorder replaced by `fn(node)`."""
    count = [0]

    def go(node):
        me = count[0]
        count[0] += 1
        if me == n:
            return fn(node)
        kids = node.children()
        if not kids:
            return node
        return node.with_children([go(c) for c in kids])

    return go(root)


def _pick(kernel, rng: random.Random, pred):
    nodes = [(i, x) for i, x in enumerate(preorder(kernel.body)) if pred(x)]
    return rng.choice(nodes) if nodes else (None, None)


def _edit(case: Case, rng, pred, fn) -> Case | None:
    i, node = _pick(case.kernel, rng, pred)
    if node is None:
        return None
    new = fn(node)
    if new is None or new is node:
        return None
    body = replace_nth(case.kernel.body, i, lambda _: new)
    return case.replace(kernel=dataclasses.replace(case.kernel, body=body))


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


# ---------------------------------------------------------------------------------------------
# general mutations
# ---------------------------------------------------------------------------------------------


def mutate_const(case: Case, rng: random.Random) -> Case | None:
    """Replace a constant by a nearby or a special value of its dtype."""
    def fn(c: Const):
        v = c.value
        if c.dtype == "bool":
            return Const(not v, "bool")
        if _is_float(c.dtype):
            pool = (0.0, -0.0, 1.0, -1.0, v * 2, -v, v + 1, 0.5, rng.uniform(-4, 4), math.inf)
        else:
            pool = (0, 1, -1, v + 1, v - 1, v * 2, rng.randint(-8, 8), 1 << rng.randint(1, 5))
        options = [x for x in pool if Const(x, c.dtype) != c]
        return Const(rng.choice(options), c.dtype) if options else None
    return _edit(case, rng, lambda n: isinstance(n, Const), fn)


def mutate_swap(case: Case, rng: random.Random) -> Case | None:
    """Swap the operands of a binary operation (matters for sub, div, floordiv, lt, ...)."""
    return _edit(case, rng, lambda n: isinstance(n, Binary) and n.a.dtype == n.b.dtype,
                 lambda b: Binary(b.op, b.b, b.a))


def mutate_operator(case: Case, rng: random.Random) -> Case | None:
    """Change an operator to another of its kind, or a math call to another of the same arity."""
    def fn(n):
        if isinstance(n, Call):
            same = [f for f, a in MATH_FUNCS.items() if a == MATH_FUNCS[n.func] and f != n.func]
            return Call(rng.choice(same), n.args) if same else None
        group = ARITH_OPS if n.op in ARITH_OPS else COMPARE_OPS if n.op in COMPARE_OPS else ("and", "or")
        ops = [o for o in group if o != n.op and not (o == "div" and not _is_float(n.a.dtype))]
        return Binary(rng.choice(ops), n.a, n.b) if ops else None
    return _edit(case, rng, lambda n: isinstance(n, (Binary, Call)), fn)


def mutate_insert_stmt(case: Case, rng: random.Random) -> Case | None:
    """Insert a statement: a store repeated with a changed value right after itself."""
    def fn(s: Store):
        v = s.value
        changed = v + Const(1, v.dtype) if v.dtype != "bool" else Binary("and", v, v)
        return Seq((s, Store(s.buffer, s.indices, changed))) if rng.random() < 0.7 else Seq((s, s))
    return _edit(case, rng, lambda n: isinstance(n, Store), fn)


def mutate_delete_stmt(case: Case, rng: random.Random) -> Case | None:
    """Delete a statement from a sequence, or an if's guard (keeping its body)."""
    def fn(n):
        if isinstance(n, Seq):
            i = rng.randrange(len(n.stmts))
            return Seq(n.stmts[:i] + n.stmts[i + 1:])
        return n.then
    return _edit(case, rng, lambda n: (isinstance(n, Seq) and len(n.stmts) >= 2) or isinstance(n, IfThenElse), fn)


def mutate_extent(case: Case, rng: random.Random) -> Case | None:
    """Change a loop's extent (by one, doubled or halved)."""
    def fn(f: For):
        e = int(f.extent.value)
        new = max(1, rng.choice((e - 1, e + 1, e * 2, e // 2, 1)))
        return dataclasses.replace(f, extent=Const(new)) if new != e else None
    return _edit(case, rng, lambda n: isinstance(n, For) and isinstance(n.extent, Const), fn)


DTYPES = ("float32", "float16", "float64", "bfloat16", "int32", "int64", "int8", "bool")


def mutate_cast(case: Case, rng: random.Random) -> Case | None:
    """Change the dtype of a cast."""
    return _edit(case, rng, lambda n: isinstance(n, Cast),
                 lambda c: Cast(rng.choice([d for d in DTYPES if d != c.dtype]), c.value))


def _retype_buffer(case: Case, name: str, **changes) -> Case:
    """Every reference to buffer `name` (its allocation, loads and stores) changed alike."""
    def go(node):
        if isinstance(node, Buffer):
            return dataclasses.replace(node, **changes) if node.name == name else node
        kids = node.children()
        return node.with_children([go(c) for c in kids]) if kids else node
    return case.replace(kernel=dataclasses.replace(case.kernel, body=go(case.kernel.body)))


def mutate_buffer(case: Case, rng: random.Random) -> Case | None:
    """Change a temporary's dtype or memory scope (global / shared / local)."""
    allocs = [n for n in preorder(case.kernel.body) if isinstance(n, Allocate)]
    if not allocs:
        return None
    b = rng.choice(allocs).buffer
    if rng.random() < 0.5:
        return _retype_buffer(case, b.name, scope=rng.choice([s for s in SCOPES if s != b.scope]))
    return _retype_buffer(case, b.name, dtype=rng.choice([d for d in DTYPES[:5] if d != b.dtype]))


# parallel / vectorized are promises about dependences that no verifier checks (the interpreter runs
# them serially); written straight into a program they make invalid input, not a compiler bug, so
# they come only through the schedule primitive `annotate`, whose legality checks are under test.
IR_LOOP_KINDS = tuple(k for k in LOOP_KINDS if k not in ("parallel", "vectorized"))


def mutate_loop_kind(case: Case, rng: random.Random) -> Case | None:
    """Change how a loop runs: serial, unrolled, or bound to a GPU axis (see IR_LOOP_KINDS)."""
    return _edit(case, rng, lambda n: isinstance(n, For),
                 lambda f: dataclasses.replace(f, kind=rng.choice([k for k in IR_LOOP_KINDS if k != f.kind])))


def mutate_wrap(case: Case, rng: random.Random) -> Case | None:
    """Wrap a store in an `if` on one of its index variables, or its value in a select."""
    def fn(s: Store):
        vs = sorted((v for v in free_vars(s) if v.dtype.startswith("int")), key=lambda v: v.name)
        cond = Binary(rng.choice(("lt", "ge", "eq", "ne")), vs[0] if vs else Const(0), Const(rng.randint(0, 4)))
        if rng.random() < 0.5 or s.value.dtype == "bool":
            return IfThenElse(cond, s)
        other = Load(s.buffer, s.indices) if rng.random() < 0.5 else Const(0, s.value.dtype)
        return Store(s.buffer, s.indices, Select(cond, s.value, other))
    return _edit(case, rng, lambda n: isinstance(n, Store), fn)


MUTATIONS = {
    "const": mutate_const, "swap": mutate_swap, "operator": mutate_operator, "insert_stmt": mutate_insert_stmt,
    "delete_stmt": mutate_delete_stmt, "extent": mutate_extent, "cast": mutate_cast, "buffer": mutate_buffer,
    "loop_kind": mutate_loop_kind, "wrap": mutate_wrap,
}

# ---------------------------------------------------------------------------------------------
# schedule mutations (compiler-specific)
# ---------------------------------------------------------------------------------------------

AXES = ("blockIdx.x", "blockIdx.y", "threadIdx.x", "threadIdx.y")


def _scheduled(case: Case):
    """The case's scheduled kernel (in this process; schedules are pure Python; remembered by the
    case's program and schedule text, since a campaign mutates the same seeds again and again)."""
    import json

    from tessel.fuzz.oracles import ModuleLRU, schedule_case
    from tessel.ir.text import to_text

    global _SCHEDULED
    if _SCHEDULED is None:
        _SCHEDULED = ModuleLRU(256)
    key = (to_text(case.kernel), json.dumps(case.schedule, sort_keys=True))
    k = _SCHEDULED.get(key)
    if k is None:
        try:
            k = schedule_case(case)[0].kernel
        except Exception:  # noqa: BLE001 - a crash shows up again (and is recorded) when the case runs
            return case.kernel
        _SCHEDULED.put(key, k)
    return k


_SCHEDULED = None  # an explicit bounded cache (oracles.ModuleLRU), made on first use


def _loops(kernel) -> list:
    return [n for n in preorder(kernel.body) if isinstance(n, For)]


def random_command(case: Case, rng: random.Random, scheduled=None) -> dict | None:
    """A random schedule primitive with arguments from the scheduled kernel's loops and buffers
    (`scheduled`: that kernel, when the caller has it already)."""
    from tessel.ir.interp.intrinsics import INTRINSICS

    k = scheduled if scheduled is not None else _scheduled(case)
    loops = _loops(k)
    if not loops:
        return None
    lp = rng.choice(loops)
    name = lp.var.name
    temps = [n.buffer.name for n in preorder(k.body) if isinstance(n, Allocate)]
    bufs = temps + [p.name for p in k.buffer_params]
    stored = sorted({n.buffer.name for n in preorder(k.body) if isinstance(n, Store)})
    ext = int(lp.extent.value) if isinstance(lp.extent, Const) else 4
    gpu = is_gpu(case.target)
    prims = ["split", "split", "reorder", "fuse", "annotate", "cache_read", "cache_write", "compute_at",
             "compute_inline", "decompose_reduction", "cache_accumulate", "transform_layout"]
    if gpu:
        prims += ["bind", "bind", "cache_shared", "pad", "swizzle", "cross_thread_reduce", "pipeline", "tensorize",
                  "remove_dead_code"]
    p = rng.choice(prims)
    if p == "split":
        divs = [d for d in range(2, ext + 1) if ext % d == 0] or [2]
        f = rng.choice(divs + [rng.randint(2, 8)])
        return {"primitive": "split", "args": {"loop": name, "factors": rng.choice(([None, f], [f, None]))}}
    if p == "reorder":
        inner = [n.var.name for n in preorder(lp.body) if isinstance(n, For)]
        if not inner:
            return None
        return {"primitive": "reorder", "args": {"loops": [rng.choice(inner), name]}}
    if p == "fuse":
        if not isinstance(lp.body, For):
            return None
        return {"primitive": "fuse", "args": {"loops": [name, lp.body.var.name]}}
    if p == "annotate":
        kinds = ["parallel", "vectorized", "unrolled", "serial"] + (list(AXES) if gpu else [])
        return {"primitive": "annotate", "args": {"loop": name, "kind": rng.choice(kinds)}}
    if p in ("cache_read", "cache_write"):
        pool = bufs if p == "cache_read" else stored
        if not pool:
            return None
        return {"primitive": p, "args": {"buffer": rng.choice(pool), "at": name,
                                         "scope": rng.choice(("local", "shared") if gpu else ("local", "global"))}}
    if p == "compute_at":
        if not temps:
            return None
        return {"primitive": p, "args": {"producer": rng.choice(temps), "at": name}}
    if p == "compute_inline":
        return {"primitive": p, "args": {"producer": rng.choice(temps)}} if temps else None
    if p == "transform_layout":
        allocs = [n.buffer for n in preorder(k.body) if isinstance(n, Allocate) and len(n.buffer.shape) >= 2]
        if not allocs:
            return None
        b = rng.choice(allocs)
        order = list(range(len(b.shape)))
        rng.shuffle(order)
        return {"primitive": p, "args": {"buffer": b.name, "order": order}}
    if p == "cache_accumulate":
        if not stored:
            return None
        return {"primitive": p, "args": {"buffer": rng.choice(stored), "at": name,
                                         "scope": rng.choice(("local", "shared") if gpu else ("local", "global"))}}
    if p == "decompose_reduction":
        return {"primitive": p, "args": {"buffer": rng.choice(stored), "at": name}} if stored else None
    if p == "bind":
        return {"primitive": p, "args": {"loop": name, "axis": rng.choice(AXES)}}
    if p == "cache_shared":
        return {"primitive": p, "args": {"buffer": rng.choice(bufs), "at": name, "vector": rng.choice((1, 2, 4))}}
    if p in ("pad", "swizzle"):
        if not temps:
            return None
        args = {"buffer": rng.choice(temps)}
        if p == "pad":
            args["elements"] = rng.choice((1, 2, 4, 8))
        return {"primitive": p, "args": args}
    if p == "cross_thread_reduce":
        return {"primitive": p, "args": {"buffer": rng.choice(stored), "loop": name,
                                         "axis": rng.choice(("threadIdx.x", "threadIdx.y"))}} if stored else None
    if p == "pipeline":
        return {"primitive": p, "args": {"loop": name, "stages": rng.randint(2, 4)}}
    if p == "tensorize":
        intrinsic = rng.choice([n for n in sorted(INTRINSICS) if n.startswith(("mma.", "ldmatrix", "cp.async.c"))])
        return {"primitive": p, "args": {"loop": name, "intrinsic": intrinsic}}
    return {"primitive": "remove_dead_code", "args": {}}


def add_primitive(case: Case, rng: random.Random) -> Case | None:
    """Append a random legal schedule primitive (tries a few; a refused one is not kept)."""
    from tessel.schedules.schedule import Schedule

    base = _scheduled(case)
    for _ in range(4):
        cmd = random_command(case, rng, base)
        if cmd is None:
            continue
        try:
            Schedule(base).apply(cmd["primitive"], **cmd["args"])
        except TesselError:
            continue  # refused: try another
        except Exception:  # noqa: BLE001 - a crash: keep it, the worker records it
            pass
        return case.replace(schedule=case.schedule + [cmd])
    return None


def _template_cmds(case: Case):
    return [i for i, c in enumerate(case.schedule) if c.get("primitive") == "template"]


def _space(case: Case, i: int):
    from tessel.fuzz.oracles import schedule_case
    from tessel.schedules.template import get_template

    cmd = case.schedule[i]
    before = schedule_case(case.replace(schedule=case.schedule[:i]))[0].kernel
    return get_template(cmd["args"]["name"]).space(before, cmd["args"].get("target"))


def mutate_knobs(case: Case, rng: random.Random) -> Case | None:
    """Move a template's knobs one step (a valid neighbour) or to a random valid point."""
    idx = _template_cmds(case)
    if not idx:
        return None
    i = rng.choice(idx)
    try:
        space = _space(case, i)
        knobs = case.schedule[i]["args"].get("knobs") or space.default
        pts = space.neighbors(knobs) if rng.random() < 0.6 else []
        if not pts:
            pts = space.sample(1, rng.randrange(1 << 30))
    except Exception:  # noqa: BLE001 - a template that cannot even list its space: leave it be
        return None
    if not pts:
        return None
    cmd = {"primitive": "template", "args": {**case.schedule[i]["args"], "knobs": rng.choice(pts)}}
    return case.replace(schedule=case.schedule[:i] + [cmd] + case.schedule[i + 1:])


def switch_template(case: Case, rng: random.Random) -> Case | None:
    """Replace the schedule by another template that applies to the program (default knobs);
    None when no other applies."""
    from tessel.schedules.template import applicable

    current = {c["args"].get("name") for c in case.schedule if c.get("primitive") == "template"}
    try:
        names = [t.name for t in applicable(case.kernel, case.target) if t.name not in current]
    except Exception:  # noqa: BLE001
        return None
    if not names:
        return None
    cmd = {"primitive": "template", "args": {"name": rng.choice(names), "knobs": None, "target": case.target}}
    return case.replace(schedule=[cmd])


def delete_command(case: Case, rng: random.Random) -> Case | None:
    """Delete one schedule command."""
    if not case.schedule:
        return None
    i = rng.randrange(len(case.schedule))
    return case.replace(schedule=case.schedule[:i] + case.schedule[i + 1:])


SCHEDULE_MUTATIONS = {"primitive": add_primitive, "knobs": mutate_knobs, "template": switch_template,
                      "delete_command": delete_command}


def mutate(case: Case, rng: random.Random, general: float = 0.5) -> tuple[Case | None, str]:
    """One random mutation of the program (probability `general`) or of its schedule; returns
    (mutant or None, the mutation's name)."""
    table = MUTATIONS if rng.random() < general else SCHEDULE_MUTATIONS
    name = rng.choice(sorted(table))
    try:
        return table[name](case, rng), name
    except TesselError:
        return None, name  # e.g. a constant of a dtype the new value does not fit
    except Exception:  # noqa: BLE001 - tessel code the mutator calls (a template's space) crashed:
        return None, name + ".error"  # the campaign counts it; the same crash reappears when cases run


def default_schedule_cmds(kernel, target: str, rng: random.Random | None = None) -> list:
    """The default schedule of `kernel` on `target` ("cpu", "cuda", "cuda:sm_90a" ...) as commands
    (one template command). With `rng`, half the 3x3 convolutions cpu.conv can compute by Winograd
    start from its Winograd knobs: compile() picks Winograd only for large convolutions, so the
    campaign's small ones never ran its code (the planted-bug sample's misses were all there)."""
    if target == "cpu":  # (the template compile() would apply: a convolution's, attention's, else cpu.generic)
        from tessel.schedules.generic import default_cpu_template

        tpl = default_cpu_template(kernel)
        knobs = _winograd_knobs(tpl, kernel) if rng is not None and rng.random() < 0.5 else None
        return [{"primitive": "template", "args": {"name": tpl.name, "knobs": knobs, "target": "cpu"}}]
    from tessel.schedules.generic_gpu import default_gpu_template

    return [{"primitive": "template", "args": {"name": default_gpu_template(kernel, target).name, "knobs": None,
                                               "target": target}}]


def _winograd_knobs(tpl, kernel) -> dict | None:
    """cpu.conv's default knobs with the Winograd algorithm, where they are valid for `kernel`."""
    if tpl.name != "cpu.conv":
        return None
    try:
        space = tpl.space(kernel, "cpu")
        if "algorithm" not in {k.name for k in space.knobs}:
            return None
        point = {**space.default, "algorithm": "winograd"}
        return point if space.is_valid(point) else None
    except TesselError:
        return None


__all__ = ["MUTATIONS", "SCHEDULE_MUTATIONS", "default_schedule_cmds", "mutate", "preorder", "random_command",
           "replace_nth"]
