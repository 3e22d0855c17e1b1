"""The fused CPU attention template (tessel/schedules/cpu_attention.py): the sdpa nests become one
nest whose score temporaries live in local buffers, and the kernel matches a float64 numpy
attention on fresh random inputs for every knob value, mask kind, causal flag, broadcast batch,
key count (one vector, whole vectors, whole vectors plus a remainder) and compiled models."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.lowering import inline_temporaries
from tessel.errors import ScheduleError
from tessel.frontend.ops import get_op
from tessel.ir.nodes import Allocate, walk
from tessel.schedules.cpu_attention import CPU_ATTENTION
from tessel.schedules.generic import default_schedule
from tessel.schedules.template import applicable


def _attention_kernel(B, H, L, S, E, Ev, mask=None, causal=False, kv_batch=None, inline=True, scale=None):
    q = ts.placeholder((B, H, L, E), name="q")
    kb = kv_batch if kv_batch is not None else (B, H)
    k = ts.placeholder(kb + (S, E), name="k")
    v = ts.placeholder(kb + (S, Ev), name="v")
    ins = [q, k, v]
    if mask is not None:
        ins.append(ts.placeholder((1, 1, L, S) if mask == "bool" else (B, 1, L, S),
                                  "bool" if mask == "bool" else "float32", name="m"))
    attrs = {"is_causal": causal, "scale": scale}
    (out,) = get_op("sdpa").lower(ins, attrs, [((B, H, L, Ev), "float32")], ["o"])
    ir = ts.lower(ins + [out], name="attention")
    return (inline_temporaries(ir)[0] if inline else ir), [tuple(t.shape) for t in ins], ins


def _reference(q, k, v, m, causal, scale):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) * (scale if scale is not None else 1 / np.sqrt(q.shape[-1]))
    if m is not None:
        s = np.where(m, s, -np.inf) if m.dtype == bool else s + m
    if causal:
        L, S = s.shape[-2:]
        s = np.where(np.tril(np.ones((L, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def _inputs(shapes, ins, seed):
    rng = np.random.default_rng(seed)
    out = []
    for shape, t in zip(shapes, ins):
        if t.dtype == "bool":
            a = rng.random(shape) < 0.7
            a[..., 0] = True  # every row keeps a key (a fully masked row is NaN on both sides)
            out.append(a)
        else:
            out.append(rng.standard_normal(shape).astype(np.float32))
    return out


def _run(ir, shapes, ins, knobs, seed, causal=False, scale=None):
    sch = CPU_ATTENTION.apply(ir, knobs, "cpu")
    kern = ts.build(ir, target="cpu", schedule=sch.kernel)
    arrays = _inputs(shapes, ins, seed)
    got = np.full(ir.params[-1].shape, np.nan, np.float32)  # the output starts from garbage
    kern(*arrays, got)
    want = _reference(*arrays[:3], arrays[3] if len(arrays) > 3 else None, causal, scale)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    return sch


CASES = [  # B, H, L, S, E, Ev, mask, causal, kv_batch
    (2, 4, 12, 12, 16, 16, "bool", False, None),   # Llama / GPT-2 at these models' sizes, bool mask
    (1, 4, 7, 7, 8, 8, None, False, None),         # TransformerEncoderLayer
    (2, 2, 5, 37, 8, 20, "float", False, None),    # 2 whole key vectors + a remainder; Ev likewise
    (1, 3, 6, 32, 4, 3, None, True, None),         # causal, whole vectors only
    (3, 2, 4, 9, 5, 7, None, False, (1, 2)),       # keys and values broadcast over the batch
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:6])) + f"-{c[6]}-{c[7]}")
def test_fused_attention_matches_numpy(case):
    B, H, L, S, E, Ev, mask, causal, kvb = case
    ir, shapes, ins = _attention_kernel(B, H, L, S, E, Ev, mask, causal, kvb)
    sch = _run(ir, shapes, ins, None, seed=sum(case[:6]), causal=causal)
    temps = {n.buffer.name: n.buffer.scope for n in walk(sch.kernel.body) if isinstance(n, Allocate)}
    assert not {"o_qk", "o_max", "o_exp"} & set(temps)  # the score temporaries are gone
    assert temps["o_s"] == "local" and sch.trace[0].args["name"] == "cpu.attention"
    vec = [n for n in walk(sch.kernel.body) if getattr(n, "kind", None) == "vectorized"]
    assert len(vec) >= 6  # score, exp, value-column loops all vectorized


@pytest.mark.parametrize("knobs", [{"tile_rows": 1}, {"tile_rows": 3, "pack": False}, {"tile_rows": 6},
                                   {"min_parallel_work": 0, "vector_lanes": 4}, {"vector_lanes": 32, "tile_rows": 2}])
def test_every_knob_value_gives_the_same_attention(knobs):
    ir, shapes, ins = _attention_kernel(2, 3, 6, 21, 8, 12, "bool", True, None, scale=0.3)
    sch = _run(ir, shapes, ins, knobs, seed=7, causal=True, scale=0.3)
    if knobs.get("min_parallel_work") == 0:
        assert any(getattr(n, "kind", None) == "parallel" for n in walk(sch.kernel.body))
    if knobs.get("pack") is False:  # the keys are read in place: no packed copy
        assert not any(isinstance(n, Allocate) and n.buffer.name == "o_kt" for n in walk(sch.kernel.body))


def test_a_score_stage_left_as_a_nest_is_inlined_first():
    ir, shapes, ins = _attention_kernel(1, 2, 4, 6, 4, 4, "float", False, None, inline=False)
    sch = _run(ir, shapes, ins, None, seed=3)
    assert [s.primitive for s in sch.trace[:2]] == ["template", "compute_inline"]


def test_schedule_replays_and_is_the_default_and_tunable():
    ir, _, _ = _attention_kernel(1, 2, 4, 6, 4, 4, "bool", False, None)
    sch = default_schedule(ir)
    assert sch.trace[0].args["name"] == "cpu.attention"
    from tessel.schedules.schedule import Schedule

    assert Schedule.replay(ir, sch.trace) == sch.kernel
    names = [t.name for t in applicable(ir, "cpu")]
    assert names[:1] == ["cpu.attention"] or "cpu.attention" in names
    space = CPU_ATTENTION.space(ir, "cpu")
    assert {k.name for k in space.knobs} == {"tile_rows", "vector_lanes", "pack", "min_parallel_work"}
    assert sorted({p["tile_rows"] for p in space.valid_points()}) == [1, 2, 4]  # the divisors of L = 4


def test_refusals_name_the_reason():
    A = ts.placeholder((8, 8), name="A")
    plain = ts.lower([A, ts.compute((8, 8), lambda i, j: A[i, j] * 2.0, name="B")])
    assert "no sdpa loop nests" in CPU_ATTENTION.applies(plain, "cpu")
    ir, _, _ = _attention_kernel(1, 2, 6, 6, 4, 4)
    with pytest.raises(ScheduleError, match="tile_rows.*does not divide the 6 query rows"):
        CPU_ATTENTION.apply(ir, {"tile_rows": 4}, "cpu")


def test_compiled_models_match_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(11)
    F = torch.nn.functional

    class Att(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True) + 1.0

    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    cm = ts.compile(Att(), (q, k, v), target="cpu")
    assert any("sdpa" in s.kernel.name for s in cm.steps)
    got = cm(q.numpy(), k.numpy(), v.numpy())
    np.testing.assert_allclose(got, Att()(q, k, v).numpy(), rtol=1e-5, atol=1e-5)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    x = torch.randn(3, 9, 16)
    cm = ts.compile(layer, (x,), target="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(cm(x.numpy()), layer(x).numpy(), rtol=1e-4, atol=1e-4)
