#!/usr/bin/env bash
# One device run for the fuzzer's GPU side (issue 10), on a machine with a GPU and many cores:
#   bash bench/gpu_fuzz_session.sh
# 1. the gpu-marked tests of the GPU oracle and of the split-K schedules (a schedule fix touched them);
# 2. planted CUDA-printer bugs against the GPU oracle (bench/fuzz_gpu.py mutants);
# 3. a --target cuda campaign with GPU execution on, on most of the cores.
# Logs go to $OUT (or ./gpu_out) as they finish; the campaign's failures come back as one tarball
# (the device tool returns a bounded number of files).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader >"$OUT/machine.txt" 2>&1
nproc >>"$OUT/machine.txt"
SECONDS_FUZZ=${SECONDS_FUZZ:-90}
JOBS=${JOBS:-12}

# most valuable first: the oracle's own GPU tests, then the campaign (its failures tarred at once),
# then the planted printer bugs, then the split-K GPU tests
timeout 90 python -m pytest -q -p no:cacheprovider -rs tests/fuzz/test_gpu_oracle.py >"$OUT/gpu_tests.txt" 2>&1
timeout $((SECONDS_FUZZ + 60)) python bench/fuzz_gpu.py campaign --seconds "$SECONDS_FUZZ" --jobs "$JOBS" --seed 5 \
  --target cuda --reduce-s 8 --out /tmp/fzgpu --json "$OUT/fuzz_gpu_campaign.json" >"$OUT/campaign.txt" 2>&1
cp /tmp/fzgpu/report.md "$OUT/report.md" 2>/dev/null
tar czf "$OUT/fzgpu_failures.tgz" -C /tmp/fzgpu failures report.md coverage.png 2>/dev/null
timeout 90 python bench/fuzz_gpu.py mutants --cases 12 --json "$OUT/fuzz_gpu_mutants.json" >"$OUT/mutants.txt" 2>&1
timeout 60 python -m pytest -q -m gpu -p no:cacheprovider tests/schedules/test_gemm_splitk.py >"$OUT/splitk_tests.txt" 2>&1
cat "$OUT/machine.txt"; tail -5 "$OUT/gpu_tests.txt"; tail -c 2500 "$OUT/campaign.txt"
tail -12 "$OUT/mutants.txt"; tail -3 "$OUT/splitk_tests.txt"
