"""The graph passes under the differential oracle (tessel/fuzz/graph_case.py, graph_oracle.py):
graph cases round-trip through their file form; a wrong rewrite, a broken partition and a bad
pipeline entry are caught at the stage that made them and reduced; the energy mix of --target all
shares time and lets no target starve; a --target all campaign keeps cases of every target."""

import random

import numpy as np
import pytest

from tessel.frontend.graph import Graph
from tessel.fuzz.case import FuzzError
from tessel.fuzz.gen_graph import graph_program
from tessel.fuzz.graph_case import GraphCase, base_graph_pipeline, load_case, mutate_graph_case
from tessel.fuzz.graph_oracle import check_graph, run_graph_case
from tessel.fuzz.mix import TargetMix
from tessel.fuzz.reduce import reduce_case, size


def test_graph_cases_round_trip_and_run():
    seed = random.randrange(1 << 20)
    rng = random.Random(seed)
    statuses = []
    for _ in range(12):
        c = GraphCase(graph_program(rng), base_graph_pipeline(), rng.randrange(1000))
        m, _ = mutate_graph_case(c, rng, 0.0)
        for x in (c, m):
            if x is None:
                continue
            back = load_case(x.to_text())
            assert back == x and check_graph(back.graph) is None, seed
            for v, val in x.graph.values.items():  # constants keep their exact values
                if val.is_const:
                    assert np.array_equal(back.graph.values[v].data, val.data), (seed, v)
            statuses.append(run_graph_case(x).status)
    assert statuses.count("ok") >= len(statuses) // 2, (seed, statuses)


def _scaled_graph(c):
    g = Graph("t")
    x = g.add_input("x", (3, 4), "float32")
    (y,) = g.add_node("relu", [x])
    (z,) = g.add_node("mul", [y, g.add_const("c", np.float32(c))])
    (w,) = g.add_node("tanh", [z])
    (u,) = g.add_node("exp", [x])
    g.mark_outputs([w, u])
    return g


def test_a_wrong_rewrite_is_caught_at_its_pass_and_reduced(monkeypatch):
    from tessel.passes.graph import canonicalize as C
    from tessel.passes.graph.pattern import Const, Op, Rule, Val

    case = GraphCase(_scaled_graph(2.0), base_graph_pipeline(), seed=random.randrange(1000))
    assert run_graph_case(case).status == "ok"
    bad = Rule("mul_any_scalar", Op("mul", (Val("x"), Const("c"))), C._keep_x)  # x * c -> x for any c
    monkeypatch.setattr(C, "RULES", [bad, *C.RULES])
    out = run_graph_case(case)
    assert (out.status, out.kind, out.stage) == ("fail", "diff", "graph:canonicalize:mul_any_scalar"), out.message
    assert run_graph_case(case.replace(graph=_scaled_graph(1.0))).status == "ok"  # x * 1 -> x is right
    small = reduce_case(case, lambda c: run_graph_case(c).signature, budget_s=20)
    assert run_graph_case(small).signature == out.signature and size(small) < size(case)
    assert [p["name"] for p in small.pipeline] == ["canonicalize"] and "exp" not in str(small.graph)


def test_a_partition_that_drops_a_node_is_a_verify_failure(monkeypatch):
    from tessel.passes.graph import fusion

    real = fusion.fuse
    monkeypatch.setattr(fusion, "fuse", lambda g, **kw: real(g, **kw)[1:])
    out = run_graph_case(GraphCase(_scaled_graph(2.0), [], seed=1, fuse={"max_group_ops": 1}))
    assert (out.kind, out.stage) == ("verify", "fuse") and "missing" in out.message


def test_bad_graph_pipelines_and_files_are_clear_errors():
    out = run_graph_case(GraphCase(_scaled_graph(2.0), [{"name": "no_such_pass"}]))
    assert (out.status, out.kind) == ("rejected", "invalid")
    with pytest.raises(FuzzError, match="graph does not load"):
        load_case("# tessel fuzz graph case v1\n{not json\n")


def test_energy_mix_shares_time_and_never_starves():
    m = TargetMix(("cpu", "cuda:sm_90a", "graph"), random.Random(5))
    for t in range(200):  # cpu keeps finding arcs at 50 ms a case; sm_90a nothing at 1 s; graph little
        m.record("cpu", 0.05, 3, now=t)
        m.record("cuda:sm_90a", 1.0, 0, now=t)
        m.record("graph", 0.02, t % 10 == 0, now=t)
    s = m.shares()
    assert abs(sum(s.values()) - 1) < 1e-9 and s["cpu"] > s["graph"] and min(s.values()) >= 0.5 / 3
    picks = [m.pick() for _ in range(4000)]
    share_of_time = {t: picks.count(t) * m.cost(t) for t in s}
    total = sum(share_of_time.values())
    for t in s:  # drawn in proportion to share / cost: each target gets its share of the time
        assert abs(share_of_time[t] / total - s[t]) < 0.05, (t, share_of_time[t] / total, s[t])


def test_all_targets_campaign_keeps_cases_of_every_target(tmp_path):
    from tessel.fuzz.campaign import Campaign

    c = Campaign(str(tmp_path), target="all", seed=7, jobs=1, quiet=True, tvm_rate=0.0)
    drawn = [c.next_case() for _ in range(600)]  # (GPU cases are drawn less often: they take longer, ~1 in 30)
    assert {x.target for x in drawn} == {"cpu", "cuda:sm_90a", "cuda:sm_80", "graph"}
    s = c.run(seconds=4)
    assert s["cases"] > 5 and {x.target for x in c.corpus} >= {"cpu", "graph"}
    again = Campaign(str(tmp_path), target="all", seed=8, quiet=True)
    assert len(again.corpus) == len(c.corpus) and again.mix.cases == c.mix.cases
    graph_only = Campaign(str(tmp_path), target="graph", quiet=True)  # a graph campaign resumes the graph seeds
    assert {x.key() for x in graph_only.corpus} == {x.key() for x in c.by_target["graph"]}
