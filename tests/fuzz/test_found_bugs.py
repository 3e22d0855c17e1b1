"""Regression tests made from the reduced cases of real bugs the fuzzer found (tests/fuzz/cases/).

Each case replays in this process through the same oracles as a campaign. The bugs live in files
other helpers own; each is reported in /work/notes/REQUESTS.md. Until fixed, the test is a strict
xfail that checks the failure still has its signature (so it cannot pass by accident); once the
owner fixes the bug the test xpasses, strict mode turns that into a failure, and the marker goes.
Reproduce one from the shell: `tessel fuzz --replay tests/fuzz/cases/<name>.txt`.
"""

from pathlib import Path

import pytest

from tessel.fuzz.worker import load_case
from tessel.fuzz.worker import run_any as run_case

CASES = Path(__file__).parent / "cases"

FOUND: dict = {
    # name: (signature while the bug lives, owner file)
}

# Found, too slow to replay in a test (the campaign's worker time limit turned it into
# "hang:worker"): name -> (owner file, what). A test checks the property its fix restores (fixed by
# cpu's Let-binding in tvm_fastmath (6042137), found independently on an LSTM).
SLOW = {
    "fastmath_nested_exp_tanh_compile_blowup": (
        "tessel/codegen/tvm_fastmath.py", "exp/tanh/sigmoid repeat their argument, so exp(tanh(x)) is ~1 MB of "
        "TIR and TVM's FlattenBuffer + StmtSimplify take > 20 s on a 6x3x5 kernel"),
}


def test_nested_fastmath_grows_linearly():
    """The TIR of exp(tanh(x)) should be about exp's size plus tanh's, not exp's times tanh's (the
    SLOW case above: each fast-math function uses its argument several times, so a nested call
    copies the inner one's whole tree several times: 1.0 MB of TIR for exp(tanh(x)) before the fix).
    Binding the argument once (a Let) fixes it."""
    import tvm.tirx as T

    from tessel.codegen import tvm_fastmath as F

    x = T.Var("x", "float32")
    single = len(str(F.exp(T, x))) + len(str(F.tanh(T, x)))
    assert len(str(F.exp(T, F.tanh(T, x)))) < 4 * single


# Found and fixed: name -> the fixing commit. The case must now pass every oracle.
FIXED = {
    "attention_pv_nest_shorter_than_keys": "cpu.attention requires each sdpa nest to span its tensors "
                                           "(fuzz_eval throughput's campaign, not reduced)",
    "generic_kept_axis_reduction_of_a_select_crashes": "cpu.generic's kept-axis reduction takes only "
                                                       "`S = S op v` updates (not reduced)",
    "depthwise_init_never_true": "cpu.depthwise refuses an init guard that is not the first reduction step "
                                 "(not reduced)",
    "generic_reduction_init_guard_not_first_iteration": "cpu.generic leaves a stage whose init guard "
                                                         "is not the first reduction step unscheduled",
    "depthwise_partial_output_nest": "cpu.depthwise refuses a nest covering part of its output, "
                                      "or with an init not at the first step",
    "conv_nchw_analysis_crashes_on_copy_body": "cpu.conv_nchw's analysis skips a stage whose update is not a Binary",
    "conv_pad_condition_not_checked": "the padding select is checked along the middle "
                                       "row and column, not only at random points",
    "tvm_f64_output_of_f32_arithmetic": "the TVM and GPU oracles compare at the tolerance of the least "
                                        "precise float dtype the kernel computes in (an oracle false positive: "
                                        "TVM's fused multiply-add in float32, stored to a float64 output)",
    "generic_epilogue_fused_over_a_stage_it_reads": "cpu.generic fuses an epilogue into a contraction's "
                                                    "write-back only when it is the next statement",
    "rows_guarded_elementwise_store": "cpu_rows takes an elementwise stage only as one plain store per element",
    "tvm_select_branch_simplified_under_its_condition": "tvm_tir keeps a select lazy where TVM's simplifier would "
                                                        "rewrite a branch's div/mod index under the condition "
                                                        "(an out-of-bounds eager load: SIGSEGV)",
    "tvm_narrow_float_constant_not_rounded": "tvm_tir rounds a float constant to its dtype before TVM folds "
                                             "casts of it",
    "cache_write_around_block_loop_races": "cache_write refuses a loop holding blockIdx-bound loops (every "
                                           "block copied the whole region back)",
    "cache_shared_joins_a_copy_that_reads_it": "cache_shared does not join a copy group "
                                                "whose copy reads the new cache (cuda campaign)",
    "reduce_inner_into_a_temporary_races": "gpu.reduce_inner refuses a reduction into a temporary (cuda campaign)",
    "reduce_inner_of_an_empty_reduction_writes_the_identity": "cross_thread_reduce refuses an "
                                                               "empty reduction (cuda campaign)",
    "annotate_thread_axis_makes_sibling_stores_race": "annotate to a thread axis "
                                                       "runs bind's redundancy check (cuda campaign)",
    "remove_dead_code_drops_the_cluster": "with_launch keeps the cluster (remove_dead_code after split-K deadlocked)",
    "bind_thread_axis_duplicates_cp_async_race": "bind's redundancy check counts intrinsics "
                                                  "that write memory (cuda campaign)",
    "bind_thread_axis_duplicates_mbarrier_init": "bind's redundancy check counts intrinsics "
                                                  "that write memory (cuda campaign)",
    "bind_local_cache_copy_leaves_other_threads_unfilled": "bind refuses a short loop filling per-thread buffers",
    "cache_accumulate_shared_scope_in_cpu_kernel": "cache_accumulate refuses scope 'shared' in "
                                                    "a CPU kernel (cuda campaign)",
    "tvm_constant_float_floordiv_by_zero": "b3a83ef (tvm_tir: a float floordiv/floormod by a constant zero gives "
                                           "numpy's result; found by the plant helper's seed-21 all campaign)",
    "pad_reference_of_0d_value": "b3a83ef (pad's numpy reference returns a 0-d value unchanged; found by the "
                                 "plant helper's seed-21 all campaign)",
    "reorder_reduction_loops_with_partial_init_guard": "reorder keeps reduction loops in order under a partial guard",
    "pad_of_cp_async_buffer_misaligns": "pad refuses rows that misalign an intrinsic moving several elements",
    "reduce_inner_ignores_init_guard_value": "cross_thread_reduce refuses a guard other than the first iteration",
    "fuse_of_negative_extent_loops_runs_once": "fuse: a loop of extent <= 0 makes the fused loop's extent 0",
    "tvm_printer_folds_division_by_zero": "tvm_tir: x / +-0.0 is emitted as x * +-inf (IEEE; TVM's folder aborted)",
    "cache_write_conditional_store": "b9774ec (cache_write copies the buffer in when its stores are all guarded)",
    "compute_at_scalar_temporary": "compute_at moves a 0-d producer's whole nest",
    "split_of_thread_bound_loop_races": "split refuses a thread-bound loop (split before bind)",
    "annotate_block_axis_without_launch": "annotate refuses GPU axes (bind sizes the launch)",
    "cache_write_guarded_init_read_before_write": "cache_write counts an init guard only if it holds at iteration 0",
    "tvm_floormod_by_zero_in_dead_code": "tvm_tir: an integer division by a constant zero becomes 0 (undefined anyway)",
    "generic_negative_extent": "cpu.generic leaves stages with empty loops unscheduled",
    "generic_parallel_outer_scalar_output": "cpu.generic: a reduction to a 0-d output is not parallelized",
    "generic_consumer_extent_shorter_than_producer": "cpu_epilogue fuses only a consumer covering the whole producer",
    "tvm_float_floordiv_by_zero": "1079a54 (tvm_tir float floordiv follows numpy at the edges: x // 0.0 = x / 0.0)",
    "gpu_fuse_of_bound_loops_races": "906dde5 (fuse refuses loops bound to GPU axes)",
    "cache_read_shared_scope_in_cpu_kernel": "906dde5 (cache_read with scope 'shared' needs a GPU kernel)",
    "gemm_mma_sync_ignores_loop_extents": "54c4c33 (gemm templates refuse a nest whose loops do not span the operands)",
    "gemm_mma_sync_misaligned_cp_async": "54c4c33 (the same check: a 3x1x6 nest over 12x7 @ 7x8 is not the whole GEMM)",
    "decompose_reduction_loop_outside_guard_and_index": "decompose_reduction refuses a loop that neither indexes "
                                                         "the buffer nor is in the init guard (its init re-runs)",
    "wgmma_tma_epilogue_reuses_loop_variable": "gemm (hopper_pieces.store_accumulators_tma: one loop variable per "
                                               "fill loop; found 21:15 by a --target cuda:sm_90a generator run)",
    "gemm_epilogue_ignores_epilogue_loop_extent": "e957ab8 (gemm_plan: a fused stage must store every element of "
                                                  "its buffer; found by a --target cuda:sm_90a campaign)",
    "annotate_unbinds_block_bound_loop_races": "5d9e623 (annotate refuses re-annotating a loop bound to a GPU axis; "
                                               "found by a --target cuda:sm_90a campaign)",
    "cache_write_copies_out_a_loop_without_iterations": "2650f30 (cache_write; found by a 3-minute ablation "
                                                         "found by a --target cuda:sm_80 campaign)",
    "decompose_reduction_or_in_init_guard": "2650f30 (decompose_reduction refuses an init guard that holds other "
                                            "than at the first iteration; found by a 3-minute ablation campaign)",
    "annotate_gpu_axis_in_cpu_kernel_of_gpu_case": "b187764 (annotate with a GPU axis makes a cuda kernel; "
                                                    "found by a --target cuda:sm_80 campaign)",
    "transform_layout_of_mma_accumulator_two_buffers": "6315db9 (transform_layout refuses a buffer an intrinsic "
                                                       "takes as an operand; found by the 10-minute all campaign)",
    "erf_reference_of_0d_value": "96bf25a (op_library: erf/gelu numpy references keep a 0-d value an array; "
                                 "found by the graph oracle)",
    "tvm_drops_bfloat16_round_trip": "523fa94 (tvm_tir: a cast to bfloat16 rounds on the bits; found by a "
                                     "--target all campaign's graph case through tessel.compile)",
    "tvm_index_of_nested_floormod": "b84a956 (tvm_tir: floordiv/floormod terms of one access whose dividends "
                                    "differ by a constant)",
    "cache_write_in_gpu_reduce_outer_races": "4e900ad (cache_write in GPU kernels keeps one copy per thread)",
    "decompose_reduction_negative_extent": "decompose_reduction guards the hoisted init by the reduction loops' "
                                           "extents (a loop without iterations never ran it)",
    "tanh_exp_gelu_select_clamps_compile_hang": "tvm_fastmath clamps by llvm.maximum, not selects (LLVM took "
                                                "> 20 s on select chains in nested fast math; found by this "
                                                "session's cpu campaign, never released)",
}


def test_nested_fast_math_compiles_well_within_the_hang_limit():
    """The case above (tanh(exp(gelu(x))) on 5 x 2) built in 0.2 s; with the NaN-keeping clamps as
    selects LLVM took more than the fuzzer's 20-s hang limit. A limit check, not a speed figure."""
    import time

    from tessel.codegen.tvm import build_module
    from tessel.schedules.generic import default_schedule

    case = load_case((CASES / "tanh_exp_gelu_select_clamps_compile_hang.txt").read_text())
    kernel = default_schedule(case.kernel, "cpu")
    start = time.process_time()
    build_module(getattr(kernel, "kernel", kernel))
    assert time.process_time() - start < 10


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_bug_stays_fixed(name):
    case = load_case((CASES / f"{name}.txt").read_text())
    out = run_case(case)
    assert out.status == "ok", f"{name} (fixed in {FIXED[name]}) fails again: {out.signature}\n{out.message}"


def test_open_bugs_keep_their_signature():
    """While a bug lives its case fails exactly this way (the reducer kept the signature); once it
    passes, it belongs in FIXED. (One test over the dict rather than a parametrization: FOUND may
    be empty, and an empty parametrization only reports skips.)"""
    for name, (want, owner) in FOUND.items():
        out = run_case(load_case((CASES / f"{name}.txt").read_text()))
        assert out.status != "ok", f"{name} passes now: the bug in {owner} looks fixed; move it to FIXED"
        assert out.signature == want, name


def test_every_saved_case_is_listed():
    """No reduced case sits in tests/fuzz/cases without a test."""
    assert {p.stem for p in CASES.glob("*.txt")} == set(FOUND) | set(FIXED) | set(SLOW)


def test_nested_fastmath_in_a_float16_kernel_grows_linearly():
    """The campaigns' recurring hang:worker (a graph case: erf(erf(x) / sqrt 2) in a kernel that also
    casts to float16): fast-math calls in 16-bit kernels repeated their argument instead of binding it,
    so the nested erf grew multiplicatively and TVM's passes took 20 s. Bound by default now (a build
    TVM refuses is retried unbound, tessel.codegen.tvm.build_module)."""
    import tessel as ts
    from tessel.codegen.tvm_tir import to_tvm
    from tessel.schedules.generic import default_schedule

    def script(depth):
        x = ts.placeholder((4, 16), name="x", dtype="float16")

        def f(i, j):
            v = x[i, j].astype("float32")
            for _ in range(depth):
                v = ts.erf(v) * 0.5
            return v.astype("float16")
        kernel = default_schedule(ts.lower([x, ts.compute((4, 16), f, name="y")]), "cpu").kernel
        return len(to_tvm(kernel).script()), len(to_tvm(kernel, bind_in_narrow=False).script())

    one, two = script(1), script(2)
    assert two[0] < 3 * one[0]  # bound: the second erf adds about one erf
    assert two[1] > 3 * one[1]  # unbound (the old translation): it multiplies
