"""The cost model: ranks candidates by measured speed, saves and loads, and warm-starts from the
records of another shape of the same template (their features are in the log)."""

import numpy as np

import tessel as ts
from tessel.tune.cost_model import CostModel
from tessel.tune.features import FEATURE_NAMES, ir_features
from tests.tune.helpers import FakeExecutor, matmul


def _rows(seed, n=40):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0, 8, (n, 3))
    times = 1e-3 * (1 + (xs[:, 0] - 3) ** 2 + 0.5 * xs[:, 1])  # x2 is noise
    return xs, times


def test_ranks_fresh_points_by_speed_and_round_trips(tmp_path):
    m = CostModel(seed=0)
    xs, ts_ = _rows(0)
    for x, t in zip(xs, ts_):
        m.add("w", x, t)
    m.add("w", [1.0, 1.0, 1.0], None)  # a failed candidate is a row too
    m.fit()
    fresh, fresh_t = _rows(1, 30)
    s = m.predict(fresh)
    # higher score = faster: strongly anti-correlated with the true times (Spearman)
    rank = lambda v: np.argsort(np.argsort(v))
    assert np.corrcoef(rank(s), rank(fresh_t))[0, 1] < -0.7
    m.save(tmp_path / "m.json")
    again = CostModel.load(tmp_path / "m.json")
    np.testing.assert_allclose(again.predict(fresh), s)
    assert len(again.rows) == len(m.rows)


def test_warm_start_from_another_shape(tmp_path):
    log = tmp_path / "t.jsonl"
    ts.tune(matmul(32), target="cpu", trials=12, log=log, executor=FakeExecutor(), batch=4)
    from tessel.tune import api
    from tessel.tune.records import TuningLog
    from tessel.tune.reuse import target_info

    records = TuningLog(log).read().records
    trials = [r for r in records if r.verdict is None]  # the confirmation's verdict carries no features
    assert len(trials) == 12 and all(len(r.extra["features"]) > len(FEATURE_NAMES) for r in trials)
    space = api._space_for(ts.lower(matmul(48)), "cpu", None)
    model = CostModel(seed=0)
    api._warm_start(model, records, "another-key", space, target_info("cpu"))
    assert model.trained and len(model.rows) == 12  # ranks the new shape before measuring any of it


def test_ir_features_see_the_schedule():
    kernel = ts.lower(matmul(64))
    from tessel.schedules.template import get_template

    tpl = get_template("cpu.generic")
    small = ir_features(tpl.apply(kernel, {"tile_rows": 2, "tile_cols": 8}, "cpu").kernel, "cpu")
    big = ir_features(tpl.apply(kernel, {"tile_rows": 8, "tile_cols": 16}, "cpu").kernel, "cpu")
    naive = ir_features(kernel, "cpu")
    assert naive["flops"] == 2 * 64 ** 3 and naive["tile.local_elems"] == 0
    assert small["tile.local_elems"] < big["tile.local_elems"]
    assert (small["loop.vector"], big["loop.vector"]) == (8, 16)  # the tile columns are the vector loop
    assert big["loop.parallel"] > 0


def test_gpu_features_count_launch_and_occupancy():
    n = 1024
    A = ts.placeholder((n, n), "float16", name="A")
    B = ts.placeholder((n, n), "float16", name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    from tessel.schedules.template import get_template

    tpl = get_template("gemm.mma_sync")
    kernel = ts.lower([A, B, C])
    f = {}
    for bm in (64, 128):
        sch = tpl.apply(kernel, {"bm": bm, "bn": 128, "warps_m": 2, "warps_n": 2}, "cuda:sm_90a")
        f[bm] = ir_features(sch.kernel, "cuda:sm_90a")
        launch = sch.kernel.launch
        assert f[bm]["gpu.threads"] == np.prod(launch.block) and f[bm]["gpu.blocks"] == np.prod(launch.grid)
        assert 0 < f[bm]["gpu.occupancy"] <= 1 and f[bm]["tile.shared_bytes"] > 0
    assert f[64]["gpu.blocks"] == 2 * f[128]["gpu.blocks"] and f[64]["gpu.waves"] > f[128]["gpu.waves"]
    assert f[64]["intrin.flops"] > 0  # the mma intrinsics' cost from the table
