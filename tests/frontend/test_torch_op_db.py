"""PyTorch's operator database (op_db) through torch.export and `tessel.compile(target="cpu")`
against eager: no op variant gives a wrong value or crashes, and the number that pass does not fall
below the floor recorded here.

Every variant of the whole op_db is in `bench/torch_ops.py --samples 2` (about 25 minutes on two
loaded cores). CI runs a deterministic quarter of it to stay near 4 minutes: the variants whose
name hashes (CRC-32) to 0 modulo SUBSET, sorted by name and dealt into CHUNKS tests, each on the
first two float32 samples of each variant. The samples are op_db's own random tensors, fresh on
every run; each output is compared with eager at rtol 1e-4 / atol 1e-5 (NaN equal to NaN).

Statuses (bench/torch_ops.py): pass, wrong (a value differs: a tessel bug), crash (a non-tessel
exception: a tessel bug), error (a TesselError other than an unsupported op or dtype), unsupported
(the aten op, the case or the dtype tessel lacks is named), export (torch.export refuses), skip
(eager refuses, random ops, no tensors). A floor raised after adding converters keeps the gain.
Measured: the four chunks took 23-46 s each, 2.4 minutes in all, on the 2-core machine at load 3.
"""

from __future__ import annotations

import importlib.util
import pathlib
import zlib

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # torch's testing module imports it (the test extra has it)

SUBSET = 4
CHUNKS = 4
# passes per chunk, measured on 2026-12-04 (the whole op_db: 524 of the 609 variants that export pass)
FLOORS = [30, 31, 35, 33]

_BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "torch_ops.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_torch_ops", _BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def in_subset(name: str) -> bool:
    """The deterministic CI subset: a variant is in it when its name's CRC-32 is 0 modulo SUBSET."""
    return zlib.crc32(name.encode()) % SUBSET == 0


def chunk_ops(bench, k: int) -> list:
    ops = sorted((op for op in bench.select_ops() if in_subset(bench.variant_name(op))), key=bench.variant_name)
    return ops[k::CHUNKS]


def test_subset_is_a_quarter_and_deterministic():
    names = [f"op{k}" for k in range(4000)]
    share = sum(map(in_subset, names)) / len(names)
    assert 0.2 < share < 0.3
    assert [in_subset(n) for n in names[:50]] == [in_subset(n) for n in names[:50]]


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_op_db_chunk_matches_eager(chunk):
    import warnings

    bench = _bench()
    warnings.simplefilter("ignore")
    results = {bench.variant_name(op): bench.run_op(op, 2) for op in chunk_ops(bench, chunk)}
    bad = {n: r for n, r in results.items() if r[0] in ("wrong", "crash", "error")}
    assert not bad, f"op variants that give wrong values, crash or fail with an error: {bad}"
    # an unsupported variant names its aten op (or case), or the dtype tessel lacks
    unnamed = {n: r for n, r in results.items() if r[0] == "unsupported"
               and "unsupported" not in r[1] and "has no tessel counterpart" not in r[1]}
    assert not unnamed, f"unsupported without the op or dtype named: {unnamed}"
    passed = sum(1 for s, _ in results.values() if s == "pass")
    others = {n: r for n, r in results.items() if r[0] != "pass"}
    assert passed >= FLOORS[chunk], (f"chunk {chunk}: {passed} of {len(results)} pass, below the floor "
                                     f"{FLOORS[chunk]}; not passing: {others}")
