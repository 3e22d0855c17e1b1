#!/usr/bin/env bash
# One device run that checks, then measures, everything GPU-side (the H200 of the device tool):
#   bash bench/gpu_session.sh [tests|gemm|conv|epilogue|tune|all]   (default: all)
# Writes logs and JSON rows to $OUT (or ./gpu_out) as it goes, so a run cut short still returns
# what it finished. GPU test files run one process each: a kernel fault poisons its CUDA context,
# and must not take the other files' tests with it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
what=${1:-all}
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader >"$OUT/machine.txt" 2>&1

if [[ $what == all || $what == tests ]]; then
  : >"$OUT/tests.log"
  for f in $(grep -rl "mark.gpu" tests --include='test_*.py' | sort); do
    echo "== $f" >>"$OUT/tests.log"
    timeout 300 python -m pytest -q -m gpu -p no:cacheprovider "$f" 2>&1 | tail -15 >>"$OUT/tests.log"
  done
  grep -E "^== |passed|failed|error" "$OUT/tests.log" >"$OUT/tests_summary.txt"
fi
if [[ $what == all || $what == gemm ]]; then
  # the Hopper template's defaults on the issue's shapes, then mma.sync at 4096^3 (bf16 and fp16)
  timeout 400 python bench/gemm.py --no-default --knobs '{"path":"hopper"}' --json "$OUT/gemm_hopper.json" \
    >"$OUT/gemm_hopper.txt" 2>&1
  timeout 200 python bench/gemm.py --shapes 4096x4096x4096 --json "$OUT/gemm_mma.json" >"$OUT/gemm_mma.txt" 2>&1
  # split-K on the skinny shapes (wgmma, then mma.sync), tf32 against cuBLAS tf32, batch folding
  timeout 240 python bench/gemm.py --shapes 128x8192x8192,8192x128x8192,512x512x16384 --dtypes bf16 \
    --no-default --split-k 1,2,4 --json "$OUT/gemm_splitk.json" >"$OUT/gemm_splitk.txt" 2>&1
  timeout 200 python bench/gemm.py --shapes 4096x4096x4096,8192x8192x8192,128x8192x8192 --dtypes tf32 \
    --json "$OUT/gemm_tf32.json" >"$OUT/gemm_tf32.txt" 2>&1
  timeout 200 python bench/gemm.py --shapes 16x4096x4096,32x8192x8192 --dtypes bf16 \
    --knobs '{"bm":16,"bn":128,"bk":64,"warps_m":1,"warps_n":4,"stages":4,"split_k":4}' \
    --json "$OUT/gemm_mma_splitk.json" >"$OUT/gemm_mma_splitk.txt" 2>&1
  timeout 200 python bench/gemm.py --fold --dtypes bf16 --json "$OUT/gemm_fold.json" >"$OUT/gemm_fold.txt" 2>&1
fi
if [[ $what == all || $what == conv ]]; then
  # implicit-GEMM 3x3 convolutions against cuDNN: the Hopper (TMA boxes + wgmma) and mma.sync paths
  timeout 300 python bench/gemm.py --conv --dtypes bf16 --knobs '{"path":"hopper"}' --json "$OUT/conv.json" \
    >"$OUT/conv.txt" 2>&1
  # the convolution's stmatrix + 4-D TMA-store epilogue against its direct stores
  timeout 240 python bench/gemm.py --conv "32,256,256,56,56,NHWC" --dtypes bf16 --no-default \
    --knobs '{"path":"hopper"}' --knobs '{"path":"hopper","epilogue":"tma"}' \
    --json "$OUT/conv_tma.json" >"$OUT/conv_tma.txt" 2>&1
fi
if [[ $what == all || $what == epilogue ]]; then
  timeout 200 python bench/gemm.py --epilogue --shapes 4096x4096x4096 --dtypes bf16 --knobs '{"path":"hopper"}' \
    --json "$OUT/epilogue.json" >"$OUT/epilogue.txt" 2>&1
fi
if [[ $what == all || $what == tune ]]; then
  # needs xgboost on the device (carry a wheel; else the search runs at random and says so)
  timeout 500 python bench/tuner_gpu.py >"$OUT/tuner_gpu.txt" 2>&1
fi
ls -l "$OUT"
