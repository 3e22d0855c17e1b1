"""Each mutator changes the case it is given; pipelines stay valid data; schedule mutations draw
legal primitives from the scheduled kernel."""

import random

import pytest

import tessel as ts
from tessel.compiler.pipeline import PASSES, as_pipeline
from tessel.fuzz.case import Case
from tessel.fuzz.mutate_ir import MUTATIONS, SCHEDULE_MUTATIONS, default_schedule_cmds, mutate, random_command
from tessel.fuzz.mutate_passes import base_pipeline, drop_passes, mutate_pipeline
from tessel.fuzz.oracles import schedule_case


def _case(target="cpu"):
    A = ts.placeholder((8, 16), name="A")
    B = ts.placeholder((16,), name="B")
    k = ts.reduce_axis(16, name="k")
    T = ts.compute((8, 16), lambda i, j: ts.where(i < j, ts.exp(A[i, j]) * 2.0, A[i, (j + 1) % 16] - B[j]), name="T")
    S = ts.compute((8,), lambda i: ts.sum(T[i, k].astype("float64"), axis=k), name="S")
    kern = ts.lower([A, B, S]) if target == "cpu" else ts.lower([A, B, T])
    return Case(kern, target, default_schedule_cmds(kern, target), base_pipeline(target), 1)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_general_mutation_changes_the_program(name):
    case = _case()
    changed = 0
    for seed in range(8):
        m = MUTATIONS[name](case, random.Random(seed))
        if m is not None:
            assert m.kernel != case.kernel, name
            assert m.schedule == case.schedule and m.pipeline == case.pipeline
            changed += 1
    assert changed > 0


@pytest.mark.parametrize("name", sorted(SCHEDULE_MUTATIONS))
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_schedule_mutation_changes_the_schedule(name, target):
    case = _case(target)
    if name == "template" and target == "cpu":  # one CPU template: start from no schedule
        case = case.replace(schedule=[])
    if name == "template" and target == "cuda":  # a transpose: gpu.transpose and gpu.elementwise both apply
        A = ts.placeholder((32, 64), name="A")
        kern = ts.lower([A, ts.compute((64, 32), lambda i, j: A[j, i], name="B")])
        case = Case(kern, "cuda", default_schedule_cmds(kern, "cuda"), base_pipeline("cuda"), 1)
    changed = 0
    for seed in range(8):
        m = SCHEDULE_MUTATIONS[name](case, random.Random(seed))
        if m is not None:
            assert m.schedule != case.schedule
            assert m.kernel == case.kernel
            changed += 1
    assert changed > 0


def test_added_primitives_apply():
    """add_primitive keeps only commands the schedule accepts."""
    case = _case("cuda")
    for seed in range(6):
        m = SCHEDULE_MUTATIONS["primitive"](case, random.Random(seed))
        if m is None:
            continue
        skipped = []
        schedule_case(m, on_skip=lambda c, e: skipped.append(c))
        assert skipped == []


def test_random_commands_name_real_loops():
    case = _case("cuda")
    loops = {n for n in schedule_case(case)[0].kernel.body.__repr__().split("'") if n}
    for seed in range(20):
        cmd = random_command(case, random.Random(seed))
        if cmd and "loop" in cmd["args"]:
            assert cmd["args"]["loop"] in loops


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_pipeline_mutations_are_valid_and_change_it(target):
    base = base_pipeline(target)
    hows = set()
    p = base
    for seed in range(60):
        q, how = mutate_pipeline(p, random.Random(seed))
        as_pipeline(q)  # valid data: registered passes, parameters in range
        if how != "param":
            assert q != p, how
        hows.add(how)
        p = q
    assert hows == {"insert", "delete", "swap", "repeat", "param"}
    assert all(x["name"] in PASSES for x in p)


def test_drop_passes():
    assert drop_passes([{"name": "simplify"}, {"name": "hoist"}, {"name": "unroll"}], {1}) == \
        [{"name": "simplify"}, {"name": "unroll"}]


def test_mutate_picks_both_kinds():
    case = _case()
    names = {mutate(case, random.Random(s))[1] for s in range(80)}
    assert names & set(MUTATIONS) and names & set(SCHEDULE_MUTATIONS)


@pytest.mark.parametrize("prim", ["cache_accumulate", "transform_layout"])
def test_new_primitives_are_drawn_and_judged(prim):
    """The new primitives cache_accumulate and transform_layout are among the random commands; where
    the schedule accepts one, the case still matches the reference (they change the summation order
    or where values live only)."""
    from tessel.fuzz.oracles import run_case

    case = _case("cpu")
    if prim == "transform_layout":  # (a 2-D temporary: T stays a separate stage)
        case = case.replace(schedule=[])
    drawn = 0
    for seed in range(400):
        cmd = random_command(case, random.Random(seed))
        if not cmd or cmd["primitive"] != prim:
            continue
        drawn += 1
        out = run_case(case.replace(schedule=case.schedule + [cmd]), determinism=False)
        assert out.status == "ok", (cmd, out.signature, out.message[:300])
        if drawn >= 3:
            break
    assert drawn > 0
