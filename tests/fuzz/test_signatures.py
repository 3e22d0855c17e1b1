"""Failure signatures tell root causes apart without splitting one bug into many: a broken schedule
primitive is one signature whatever else a case's schedule did, and another primitive another; a
wrong graph rule is named whichever rules the graph met besides; messages of one problem met by
different programs share a form, two problems do not."""

import random

import numpy as np

from tessel.frontend.graph import Graph
from tessel.fuzz.case import Case
from tessel.fuzz.graph_case import GraphCase
from tessel.fuzz.graph_oracle import run_graph_case
from tessel.fuzz.oracles import clear_caches, message_form, run_case
from tessel.ir.text import parse_kernel

KERNEL = ("kernel f(A: float32[8, 6] global, B: float32[8, 6] global) target cpu "
          "{ for i in 8 { for j in 6 { B[i, j] = ((A[i, j] * 2.0f32) + 1.0f32) } } }")


def _broken(fn):
    """A primitive that does its job and then makes the kernel add 1 to every stored value."""
    import dataclasses

    from tessel.ir.nodes import Binary, Const, Store, walk
    from tessel.ir.traverse import substitute

    def bad(kernel, **args):
        k, res = fn(kernel, **args)
        stores = {n: dataclasses.replace(n, value=Binary("add", n.value, Const(1.0, "float32")))
                  for n in walk(k.body) if isinstance(n, Store)}
        return dataclasses.replace(k, body=substitute(k.body, stores)), res

    return bad


def test_a_broken_primitive_is_one_signature_whatever_else_the_schedule_did(monkeypatch):
    from tessel.schedules import schedule

    k = parse_kernel(KERNEL)
    split = {"primitive": "split", "args": {"loop": "i", "factors": [None, 2]}}
    reorder = {"primitive": "reorder", "args": {"loops": ["j", "i"]}}
    cases = [Case(k, "cpu", s, [{"name": "simplify"}], seed=random.randrange(100))
             for s in ([split], [reorder, split], [split, {"primitive": "annotate", "args": {"loop": "j",
                                                                                           "kind": "unrolled"}}])]
    assert all(run_case(c).status == "ok" for c in cases)
    monkeypatch.setitem(schedule.PRIMITIVES, "split", (_broken(schedule.PRIMITIVES["split"][0]), ("loop", "factors")))
    clear_caches()  # (the scheduled kernels of the unbroken run must not answer)
    sigs = {run_case(c).signature for c in cases}
    assert sigs == {"diff:schedule:split"}, sigs
    monkeypatch.undo()
    clear_caches()
    monkeypatch.setitem(schedule.PRIMITIVES, "reorder", (_broken(schedule.PRIMITIVES["reorder"][0]), ("loops",)))
    assert run_case(cases[1]).signature == "diff:schedule:reorder"  # another primitive: another signature
    assert run_case(cases[0]).status == "ok"
    clear_caches()


def test_a_wrong_graph_rule_is_named_whichever_rules_fired_besides(monkeypatch):
    from tessel.passes.graph import canonicalize as C
    from tessel.passes.graph.pattern import Const, Op, Rule, Val

    def graph(extra):
        g = Graph("t")
        x = g.add_input("x", (2, 5), "float32")
        (y,) = g.add_node("mul", [x, g.add_const("c", np.float32(3.0))])
        if extra:  # an identity reshape and x + 0: two more rules fire
            (y,) = g.add_node("reshape", [y], {"shape": (2, 5)})
            (y,) = g.add_node("add", [y, g.add_const("z", np.float32(0.0))])
        g.mark_outputs([y])
        return g

    bad = Rule("mul_by_three_is_x", Op("mul", (Val("x"), Const("c"))), C._keep_x)
    monkeypatch.setattr(C, "RULES", [*C.RULES, bad])
    sigs = {run_graph_case(GraphCase(graph(e), [{"name": "canonicalize"}], seed=s)).signature
            for e in (False, True) for s in (1, 2)}
    assert sigs == {"diff:graph:canonicalize:mul_by_three_is_x"}, sigs


def test_message_forms_keep_problems_apart_and_names_out():
    a = "kernel 'fz1' failed verification with 1 problem(s):\n  - kernel 'fz1': variable 'k3' is used outside its loop"
    b = "kernel 'g' failed verification with 3 problem(s):\n  - kernel 'g': variable 'i' is used outside its loop"
    c = "kernel 'g' failed verification with 1 problem(s):\n  - kernel 'g': buffer 'B' has 2 indices, expected 3"
    assert message_form(a) == message_form(b) != message_form(c)
    oob = "kernel 'f': store of buffer 'C' at index (4, 9) is out of bounds for shape (4, 8)"
    assert message_form(oob) == message_form("kernel 'h': store of buffer 'X' at index (12,) is out of bounds for "
                                             "shape (12,)")
    g = "kernel 'f': data race on global buffer 'r3' element (0,): write by block 1 at 'r3[0] = x' and earlier " \
        "write by block 0 at 'r3[0] = y': no barrier orders them (seed 3)"
    s = g.replace("global", "shared")
    assert message_form(g) != message_form(s) and "global" in message_form(g)
