"""The torch importer, op family by op family: each small module is exported, imported, run with the
ops' numpy references (run_graph) and compared with torch eager on random inputs (float32, relative
error <= 1e-4; ints and bools exactly). Every case runs on export's graph as it is; each family also
runs bundled into one module after `run_decompositions` (decompose=True), which yields core ATen ops
(addmm, _softmax, convolution, max_pool2d_with_indices, _native_batch_norm_legit_no_training ...)
that need mappings of their own.
Also: output structures, folding of constants, node origins, and the unsupported-op error."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from tessel.frontend.ops import UnsupportedOpError  # noqa: E402
from tessel.frontend.reference import run_graph  # noqa: E402
from tessel.frontend.torch import import_torch, rebuild_outputs  # noqa: E402
from tests.frontend.torch_helpers import check_module, fn_module, randn  # noqa: E402

def _ints(*shape, high=10, seed=1):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def _fn(fn, *shapes):
    """A case: a function wrapped as a module, and random inputs of the given shapes."""
    return fn_module(fn), tuple(randn(*s, seed=k) for k, s in enumerate(shapes))


# Each family maps case name -> (module, inputs). Every case runs on export's graph as it is
# (test_case); each family also runs once bundled into one module after run_decompositions
# (test_family_after_decomposition), which yields core ATen ops with mappings of their own.
FAMILIES = {}

FAMILIES["elementwise"] = lambda: {
    "scalars": _fn(lambda x, y: (x * 2.5 + y - 3.0) / (y.abs() + 1.0), (3, 4), (4,)),
    "rsub_pow": _fn(lambda x, y: 1.0 - x ** 2 + 2.0 ** y + x.abs() ** y, (2, 3), (2, 3)),
    "min_max": _fn(lambda x, y: torch.maximum(x, y) - torch.minimum(x, y * 0.5) + x.clamp(-0.5, 0.7), (5,), (2, 5)),
    "where": _fn(lambda x, y: torch.where(x > y, x, y * 2) + torch.where(x < 0, 0.0, x), (3, 4), (3, 1)),
    "masked_fill": _fn(lambda x, y: x.masked_fill(y > 0.3, -1e4), (2, 3), (2, 3)),
    "compare": _fn(lambda x, y: ((x >= y) & (x != 0.5)) | ~(x <= y * 2), (4, 4), (4,)),
    "unary": _fn(lambda x, y: torch.exp(x) + torch.log(y.abs() + 0.1) + torch.sqrt(x.abs()) + torch.rsqrt(y.abs() + 1)
                 + torch.erf(x) + torch.sin(y) * torch.cos(x) + torch.floor(x * 3) + torch.ceil(y * 3)
                 + torch.reciprocal(x.abs() + 1) - torch.neg(y), (3, 5), (3, 5)),
    "activations": _fn(lambda x, y: F.relu(x) + F.gelu(y) + F.gelu(x, approximate="tanh") + F.silu(y)
                       + torch.sigmoid(x) + torch.tanh(y) + F.leaky_relu(x, 0.2) + F.hardtanh(y, -0.3, 0.4)
                       + F.relu6(x * 5), (4, 6), (4, 6)),
    "clamp_tensor": _fn(lambda x, y: torch.clamp(x, min=y - 1, max=y + 0.5) + x.clamp_min(0.1) * x.clamp_max(0.2),
                        (3, 3), (3,)),
    "div_modes": _fn(lambda x, y: torch.div(x * 4, y.abs() + 0.5, rounding_mode="floor")
                     + torch.div(x * 4, y.abs() + 0.5, rounding_mode="trunc"), (4, 4), (4, 4)),
    "tril_triu": _fn(lambda x, y: torch.tril(x) + torch.triu(y, 1), (2, 4, 4), (4, 4)),
    "mixed_dtypes": (fn_module(lambda i, x: (i * 0.5 + x, (i > 3).float() * x, i + 2, i.to(torch.float64) / 3,
                                             (i * x).sum(-1))), (_ints(3, 4), randn(3, 4))),
}

FAMILIES["reduction"] = lambda: {name: _fn(fn, (2, 5, 6)) for name, fn in {
    "mean_sum": lambda x: x.mean(-1) + x.sum(dim=(0, 2), keepdim=True).mean() + x.sum() * 0.01,
    "amax_amin": lambda x: x.amax(dim=1) - x.amin(dim=(1, 2), keepdim=True).squeeze(1),
    "max_dim": lambda x: tuple(torch.max(x, dim=1)),
    "min_dim": lambda x: tuple(torch.min(x, dim=-1, keepdim=True)),
    "argmax": lambda x: (x.argmax(), x.argmax(dim=2, keepdim=True), x.argmin(1), x.max()),
    "softmax": lambda x: F.softmax(x, -1) + F.log_softmax(x, dim=1),
    "bool_sum": lambda x: (x > 0).sum(-1),
}.items()}


def _norms(affine: bool):
    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(8, elementwise_affine=affine)
            self.ln2 = nn.LayerNorm((4, 8), eps=1e-3)
            self.rms = nn.RMSNorm(8, elementwise_affine=affine)
            self.bn = nn.BatchNorm1d(4, affine=affine)

        def forward(self, x):
            return self.ln(x) + self.ln2(x) * self.rms(x) + self.bn(x)

    return _randomised(Norms()), (randn(3, 4, 8),)


def _randomised(m):
    """Random parameters and running statistics (the defaults, ones and zeros, hide mistakes)."""
    with torch.no_grad():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.dtype.is_floating_point:
                t.uniform_(0.5, 2.0) if name.endswith("running_var") else t.uniform_(-1, 1)
    return m.eval()


FAMILIES["norm"] = lambda: {
    "affine": _norms(True),
    "plain": _norms(False),
    "batch_norm_2d": (_randomised(nn.BatchNorm2d(3)), (randn(2, 3, 4, 5),)),
}

FAMILIES["contraction"] = lambda: {
    "linear": _fn(lambda x, w, b: F.linear(x, w, b) + F.linear(x, w), (2, 3, 4), (5, 4), (5,)),
    "matmul": _fn(lambda a, b, c: a @ b + torch.matmul(a, c[0]), (2, 3, 4), (4, 5), (2, 4, 5)),
    "mm_bmm": _fn(lambda a, b, c: torch.bmm(a, c) + torch.mm(a[0], b), (2, 3, 4), (4, 5), (2, 4, 5)),
    "addmm": _fn(lambda x, a, b: torch.addmm(x, a, b, beta=0.5, alpha=2.0) + torch.addmm(x, a, b),
                 (5,), (3, 4), (4, 5)),
    "baddbmm": _fn(lambda x, a, b: torch.baddbmm(x, a, b, alpha=0.5), (2, 3, 5), (2, 3, 4), (2, 4, 5)),
    "vector": _fn(lambda a, b, c: a @ b[:, 0] + b[0] @ c, (3, 4), (4, 5), (5, 3)),
    "conv2d": (nn.Conv2d(4, 6, 3), (randn(2, 4, 9, 10),)),
    "conv2d_strided": (nn.Conv2d(4, 6, (3, 2), stride=2, padding=(1, 2), dilation=(2, 1), bias=False),
                       (randn(2, 4, 9, 10),)),
    "conv2d_grouped": (nn.Conv2d(4, 8, 3, padding=1, groups=2), (randn(2, 4, 7, 6),)),
    "conv1d": (nn.Conv1d(4, 6, 5, stride=2, padding=3, dilation=2), (randn(2, 4, 17),)),
    "conv1d_depthwise": (nn.Conv1d(4, 4, 3, groups=4), (randn(2, 4, 17),)),
}

FAMILIES["pool"] = lambda: {name: (m, (randn(2, 3, 12) if "1d" in name else randn(2, 3, 9, 8),)) for name, m in {
    "max": nn.MaxPool2d(2),
    "max_pad_ceil": nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    "max_dilated": nn.MaxPool2d((2, 3), stride=1, dilation=2),
    "avg": nn.AvgPool2d(2),
    "avg_pad_exclude": nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    "avg_pad_include": nn.AvgPool2d(3, stride=2, padding=1),
    "adaptive_1": nn.AdaptiveAvgPool2d(1),
    "adaptive_div": nn.AdaptiveAvgPool2d((3, 2)),
    "max1d": nn.MaxPool1d(3, stride=2, padding=1),
    "avg1d": nn.AvgPool1d(2),
}.items()}

FAMILIES["layout"] = lambda: {name: _fn(fn, (2, 3, 5)) for name, fn in {
    "view_flatten": lambda x: x.view(6, -1).flatten() * 2 + x.reshape(-1) + x.flatten(1).view(-1),
    "unflatten_squeeze": lambda x: x.unflatten(1, (3, 1)).squeeze(2).unsqueeze(0).squeeze(),
    "permute": lambda x: x.permute(2, 0, 1).transpose(0, 2).contiguous() + x.transpose(-3, 1),
    "t_expand": lambda x: x[0].t().expand(2, 5, 3) + x[:1, :, :1].expand(2, 3, 5).transpose(1, 2),
    "slices": lambda x: x[:, 1:, ::2] * x[-1:, :-1, ::2] + x[:, 1:, -3:-1:2] + x[:, -9:2, -100:3],
    "select_narrow": lambda x: x[1, 2] + x[:, 0, -1].sum() + x.narrow(2, 1, 3).select(1, -1).mean(),
    "cat_stack": lambda x: torch.cat([x, x * 2, x[:, :1]], dim=1).sum(1) + torch.stack([x[0], x[1]], -1)[..., 1].sum(0),
    "split_chunk": lambda x: (x.split(2, dim=2), x.chunk(3, dim=1), x.split([1, 1], 0), x.unbind(1)),
    "repeat": lambda x: x.repeat(2, 1, 2) + x.repeat(1, 1, 2).repeat(2, 1, 1),
    "pad": lambda x: F.pad(x, (1, 2)) + F.pad(x, (0, 3, 1, 1), value=0.5)[:, 1:-1] - F.pad(x, (2, 1, 0, 0, 1, 0))[1:],
}.items()}


class _Gathers(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, x, ids, i, j):
        return self.emb(ids), x[:, ids[0]], x[i, j], torch.index_select(x, 1, ids[1, :2]), x[i - 5], x[:, i, j]


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


def _attention(q, k, v, mask_f):
    b = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    c = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_f, scale=0.3)
    d = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_f > 0)
    e = F.scaled_dot_product_attention(q, k[:, :2], v[:, :2], enable_gqa=True)
    return b + c + d + e


FAMILIES["gather_attention"] = lambda: {
    "gathers": (_Gathers().eval(), (randn(6, 7, 5), torch.tensor([[1, 2, 0, 6], [5, 3, 3, 4]]),
                                    torch.tensor([[0, 5, -1], [2, 3, 4]]), torch.tensor([1, -2, 4]))),
    "sdpa": _fn(_attention, (2, 4, 6, 8), (2, 4, 6, 8), (2, 4, 6, 8), (6, 6)),
    "multihead": (_SelfAttention(), (randn(2, 5, 16),)),
}

FAMILIES["composed"] = lambda: {  # aten ops spelled with several ops of the op set
    "var_std": _fn(lambda a: a.var(-1) + a.std(0, keepdim=True).sum() + torch.var_mean(a, 1)[0].sum()
                   + torch.var_mean(a, 1, correction=0, keepdim=True)[1], (3, 4)),
    "vector_norm": _fn(lambda a: F.normalize(a, dim=-1) + torch.linalg.vector_norm(a, 1, 0)
                       + torch.linalg.vector_norm(a, float("inf")) + torch.linalg.vector_norm(a, 3, 1, keepdim=True),
                       (3, 4)),
    "activations": _fn(lambda a: F.hardswish(a) + F.hardsigmoid(a) + F.elu(a) + F.softplus(a) + F.mish(a) + F.selu(a)
                       + F.celu(a, 0.5), (3, 4)),
    "logs_and_sign": _fn(lambda a: torch.sign(a) + torch.exp2(a) + torch.log2(a.abs() + 1) + torch.log1p(a.abs())
                         + torch.expm1(a) + torch.log10(a.abs() + 2), (3, 4)),
    "roll_flip": _fn(lambda a: torch.roll(a, 1, 0) + torch.flip(a, [1]) + torch.roll(a, (-1, 2), (0, 1))
                     + torch.roll(a, 5), (3, 4)),
    "group_norm": (_randomised(nn.GroupNorm(2, 4)), (randn(2, 4, 5),)),
    "upsample_nearest": _fn(lambda a: F.interpolate(a, scale_factor=2, mode="nearest").sum(-1)
                            + F.interpolate(a, size=(6, 2), mode="nearest").sum(-1), (1, 2, 3, 3)),
    "upsample_nearest_1d": _fn(lambda a: F.interpolate(a, scale_factor=1.5, mode="nearest"), (1, 2, 5)),
    "any_all": _fn(lambda a: (a > 0).any(-1) & (a > -3).all(-1) | (a > 1).any(), (3, 4)),
    "take_along": _fn(lambda a: torch.gather(a, 1, torch.tensor([[0, 1], [1, 2], [3, 3]]))
                      + torch.gather(a, 0, torch.tensor([[0, 1], [1, 2]])).sum(), (3, 4)),
    "direct_aten": (fn_module(_direct_aten), (randn(4, 5), randn(2, 3, 2, 4, seed=1), randn(5, seed=2),
                                              randn(5, seed=3), randn(3, seed=4), randn(3, seed=5).abs() + 0.5)),
    "int_division": _fn(lambda a: (a * 10).long() // 3 + (a * 10).long() // -4
                        + torch.div((a * 7).long(), 2, rounding_mode="trunc"), (3, 4)),
}

aten = torch.ops.aten


def _direct_aten(x, y, w, b, m, v):
    """aten overloads called directly: what other decomposition paths or torch versions produce."""
    return (aten._softmax(x, 1, False), aten._log_softmax(x, 0, False),
            aten.native_layer_norm(x, [5], w, b, 1e-5)[0],
            aten._native_batch_norm_legit_no_training(y, w[:3], b[:3], m, v, 0.1, 1e-5)[0],
            aten.native_batch_norm(y, None, b[:3], m, v, False, 0.1, 1e-3)[0],
            aten.select_scatter(x, w, 0, 1), aten.slice_scatter(x, x[:, 1:3] * 2, 1, 1, 3),
            aten.clamp_min.Tensor(x, w), aten.clamp_max.Tensor(x, b), aten.where.Scalar(x > 0, 1.5, -2.0),
            aten.where.ScalarOther(x > 0, x, 3.0), aten.masked_fill.Tensor(x, x < 0, w[0]),
            aten.add.Scalar(x, 2), aten.mul.Scalar(x, 3), aten.div.Scalar(x, 4), aten.rsub.Tensor(x, w, alpha=2),
            aten.max.other(x, w), aten.min.other(x, b), aten.eq.Tensor(x, w), aten.ne.Tensor(x > 0, w > 0),
            aten.lt.Tensor(x, b), aten.logical_and(x > 0, w > 0), aten.logical_or(x > 0, w > 0), aten.min(x),
            aten._unsafe_view(x, [5, 4]), aten.view_copy(x, [20]), aten.concat([x, x], 1),
            aten.split.sizes(x, [1, 3], 0)[1], aten.tensor_split.sections(x, 2, 1)[1],
            aten.std.correction(x, [1], correction=0, keepdim=True), aten.all.dims(x > -1, [0, 1]),
            aten.any.dims(x > 1, [1]), aten.upsample_nearest2d.default(y, [4, 6]),
            aten.adaptive_avg_pool1d(y[0], [2]), aten.type_as(x > 0, x), aten.to.dtype_layout(x, dtype=torch.float64),
            aten.fill.Tensor(x, w[0]), aten.alias(x), aten.detach(x), aten.reshape_as(x, x.T), aten.view_as(x, x))


CASES = [(fam, name) for fam, make in FAMILIES.items() for name in make()]


@pytest.mark.parametrize("family,case", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_case(family, case):
    module, inputs = FAMILIES[family]()[case]
    check_module(module, inputs)


class _Bundle(nn.Module):
    """Several cases as one module: each takes its own slice of the inputs."""

    def __init__(self, cases):
        super().__init__()
        self.mods = nn.ModuleList([m for m, _ in cases])
        self.counts = [len(xs) for _, xs in cases]

    def forward(self, *xs):
        outs, k = [], 0
        for m, n in zip(self.mods, self.counts):
            outs.append(m(*xs[k:k + n]))
            k += n
        return tuple(outs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_after_decomposition(family):
    cases = list(FAMILIES[family]().values())
    check_module(_Bundle(cases), tuple(x for _, xs in cases for x in xs), decompose=True)


def test_float16_and_casts():
    def fn(x):
        return (x.half() * 2).float() + x.to(torch.float64).sum().float(), x.bool(), x.int()

    check_module(fn_module(fn), (randn(4, 3) * 3,), tol=1e-3)  # float16 rounding


# -- constants, outputs, origins ---------------------------------------------------------------------

def test_constants_are_folded_at_import():
    def fn(x):
        pos = torch.arange(x.shape[1], dtype=torch.float32)
        mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1)
        return x + pos + torch.zeros_like(x) + x.new_ones(x.shape[1]) * torch.ones(1), (x @ x.T + mask[0, :4])

    g = check_module(fn_module(fn), (randn(4, 5),))
    ops = [n.op for n in g.nodes.values()]
    assert ops.count("add") == 4 and "concat" not in ops, ops  # arange/full/zeros_like/new_ones are constants
    assert all(not g.values[v].is_const or g.values[v].data.dtype != object for v in g.values)


def test_parameters_become_constants_and_outputs_rebuild():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.register_buffer("shift", torch.tensor([0.5, -1.0]))

        def forward(self, x):
            y = self.lin(x) + self.shift
            return {"y": y, "pair": (y.relu(), x), "n": 3}

    m = Net().eval()
    x = randn(4, 3)
    g = import_torch(m, (x,))
    consts = {v.name: v.data for v in g.values.values() if v.is_const}
    np.testing.assert_array_equal(consts["p_lin_weight"], m.lin.weight.detach().numpy())
    np.testing.assert_array_equal(consts["b_shift"], m.shift.numpy())
    assert consts["p_lin_weight"] is not m.lin.weight.detach().numpy()  # copied, not shared
    out = rebuild_outputs(g, run_graph(g, [x.numpy()]))
    want = m(x)
    assert set(out) == {"y", "pair", "n"} and out["n"] == 3
    np.testing.assert_allclose(out["pair"][0], want["pair"][0].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["pair"][1], x.numpy())


def test_origins_name_fx_node_and_module():
    block = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    g = import_torch(block.eval(), (randn(3, 4),))
    origins = [n.origin for n in g.nodes.values()]
    assert any("fx node 'linear_1' (aten.linear.default) in module '1.1' (Linear)" == o for o in origins), origins
    assert any("in module '1.0' (ReLU)" in o for o in origins), origins


def test_inplace_ops_take_the_decomposition_path():
    def fn(x):
        y = x.clone()
        y.mul_(2).add_(1)
        y[:, 0] = 0.0
        y[1:, 2:] = x[:2, :2] * 3
        y[0] = x[2]
        return y

    check_module(fn_module(fn), (randn(3, 4),))


# -- bad input ---------------------------------------------------------------------------------------

class _Decomposer(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, a, b):
        return torch.linalg.svd(self.proj(a))[1] + b.sum()


def test_unsupported_op_names_op_node_module_and_input():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _Decomposer()

        def forward(self, x, y):
            return self.inner(x, y) + y.mean()

    with pytest.raises(UnsupportedOpError) as exc:
        import_torch(Outer().eval(), (randn(3, 4), randn(3)))
    msg = str(exc.value)
    assert "svd" in msg and "fx node '" in msg, msg
    assert "in module 'inner' (_Decomposer)" in msg, msg
    assert "model input(s) 'x'" in msg and "'y'" not in msg, msg


def test_unsupported_op_on_an_input_names_the_input():
    class Svd(nn.Module):  # (cumsum, this test's op before, is supported since aafc495)
        def forward(self, x, y):
            return torch.linalg.svdvals(x.reshape(1, 5, 1)) * 2 + y.sum()

    with pytest.raises(UnsupportedOpError, match=r"aten\._linalg_svd\.default.*computed from model input\(s\) 'x'$"):
        import_torch(Svd(), (randn(5), randn(5)))


def test_training_mode_dropout_is_refused():
    m = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train()
    with pytest.raises(UnsupportedOpError, match=r"dropout.*eval\(\)"):
        import_torch(m, (randn(2, 3),))


def test_non_tensor_example_input_is_refused():
    from tessel.errors import ArgumentError

    with pytest.raises(ArgumentError, match="example input 1"):
        import_torch(fn_module(lambda x, n: x * n), (randn(2), 3))


def test_max_pool_indices_match_eager():
    """max_pool2d's indices output (refused before decaed2) is computed: it matches eager."""
    import tessel as ts

    m = fn_module(lambda x: F.max_pool2d(x, 2, return_indices=True)[1] * 2)
    x = randn(1, 2, 4, 6)
    cm = ts.compile(m, (x,), target="cpu")
    np.testing.assert_array_equal(np.asarray(cm(x)), m(x).numpy())
