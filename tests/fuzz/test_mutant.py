"""Mutation of tessel's source (tessel/fuzz/mutant.py): sites are listed per kind, and a mutant
applied through TESSEL_FUZZ_MUTANT changes behaviour in the process that imports the plugin."""

import os
import subprocess
import sys

from tessel.fuzz.mutant import KINDS, mutated_code, sites

CHECK = r"""
import tessel.fuzz.mutant  # applies TESSEL_FUZZ_MUTANT
from tessel.fuzz import planted
from tessel.ir.text import parse_kernel
k = parse_kernel("kernel f(A: float32[4] global) target cpu { for i in 4 { A[i] = (A[i] + 1.0f32) } }")
try:
    planted.crash(k)
    print("returned")
except KeyError:
    print("raised")
"""


def _run(mutant: str) -> str:
    env = {**os.environ, "TESSEL_FUZZ_MUTANT": mutant}
    r = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_sites_cover_every_kind():
    s = sites("tessel.passes.simplify")
    assert {x.kind for x in s} == set(KINDS)
    assert [x.index for x in s] == list(range(len(s)))
    assert sites("tessel.passes.simplify") == s  # stable
    assert mutated_code("tessel.passes.simplify", s[0].index).co_filename.endswith("simplify.py")


def test_a_flipped_comparison_changes_behaviour():
    # planted.crash raises on kernels with an `==` guard: flipping `n.op == "eq"` makes it raise on one without
    site = next(x for x in sites("tessel.fuzz.planted") if x.kind == "compare" and 'n.op == "eq"' in x.text)
    assert _run("") == "returned"
    assert _run(site.name) == "raised"
