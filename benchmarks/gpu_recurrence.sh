#!/usr/bin/env bash
# Everything the Pallas kernel needs on an NVIDIA GPU, in one command (issue 4):
#   tests  the kernel tests on the real Triton lowering (tests/test_pallas.py runs the kernels
#          compiled, not interpreted, when JAX's default backend is a GPU);
#   tune   a sweep of (block_d, num_warps, prefetch) at one enwik8-base shape;
#   table  pallas (defaults, and the sweep's best when a tune JSON is in OUT_DIR) vs the official
#          CUDA kernel of `sru==3.0.0.dev6` vs assoc vs scan, bf16 and float32, forward and
#          forward+backward.
# Usage (repository root):  [PARTS="tests tune table"] bash benchmarks/gpu_recurrence.sh [OUT_DIR]
# PARTS (default: all three) splits the work over calls that each fit a time limit;
# benchmarks/gpu_all.sh calls it one part at a time, each under its own time limit.
# The wheels in .whl/ (`bash benchmarks/gpu_wheels.sh`) are installed and sru's CUDA source is
# patched by benchmarks/gpu_setup.sh; sru compiles its CUDA kernel with nvcc and ninja on
# first use.
# Settings from the environment (small values check the script on a CPU, where the kernels run
# in interpret mode): SIZES, F32_SIZES (default SIZES), TUNE_SIZE, TUNE_VARIANTS
# (block_d:num_warps:prefetch, space-separated), TABLE_IMPLS (after pallas and the sweep's
# best; may be empty), REPEATS, COPY_MIB (recurrence.py --copy_mib), PYTEST_ARGS (added to the
# test command), LOGS (where the logs go, default OUT_DIR), PYTHON (default python3).
set -euo pipefail
OUT=${1:-benchmarks/results}
PARTS=" ${PARTS:-tests tune table} "
SIZES=${SIZES:-4x1024x3072,16x1024x3072,4x1024x4096,16x1024x4096}
F32_SIZES=${F32_SIZES:-$SIZES}
TUNE_SIZE=${TUNE_SIZE:-16x1024x4096}
# One column per thread at 32 and 64 columns, two (4-byte loads) at 64 on 1 warp, four at 128
# on 4 warps; chunks of 0-8 steps (the kernel's maximum: P = 16 did not finish compiling in
# 30 minutes, BENCHMARKS.md).
TUNE_VARIANTS=${TUNE_VARIANTS:-32:1:0 32:1:2 32:1:4 32:1:8 64:1:4 64:1:8 64:2:4 64:2:8 128:4:8}
TABLE_IMPLS=${TABLE_IMPLS-official,assoc,scan}   # may be empty
REPEATS=${REPEATS:-20}
COPY_MIB=${COPY_MIB:-0}
LOGS=${LOGS:-$OUT}
mkdir -p "$OUT" "$LOGS"
source "$(dirname "$0")/gpu_setup.sh"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # leave GPU memory to the official (torch) kernel too

if [[ $PARTS == *" tests "* ]]; then
  echo "== kernel tests on the real lowering"
  # shellcheck disable=SC2086  # PYTEST_ARGS: several words
  "$PY" -m pytest -q -p no:cacheprovider tests/test_pallas.py ${PYTEST_ARGS:-} 2>&1 \
    | tee "$LOGS/gpu_tests.log"
fi

if [[ $PARTS == *" tune "* ]]; then
  echo "== tuning sweep at $TUNE_SIZE bfloat16"
  variants=""
  for v in $TUNE_VARIANTS; do
    variants="$variants,pallas:$v"
  done
  "$PY" benchmarks/recurrence.py --impls "pallas$variants" --sizes "$TUNE_SIZE" \
    --dtype bfloat16 --repeats "$REPEATS" --copy_mib "$COPY_MIB" --out "$OUT/recurrence_tune.json" \
    | tee "$LOGS/tune.log"
fi

if [[ $PARTS == *" table "* ]]; then
  best=""
  if [ -f "$OUT/recurrence_tune.json" ]; then
    best=$("$PY" -c 'import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
best = min(rows, key=lambda r: r["fwd_bwd_ms"])["impl"]
print("" if best == "pallas" else "," + best)' "$OUT/recurrence_tune.json")
  fi
  echo "== the table (the sweep's best forward+backward variant: ${best#,})"
  for dtype in bfloat16 float32; do
    sizes=$SIZES
    [ "$dtype" = float32 ] && sizes=$F32_SIZES
    [ -n "$sizes" ] || continue
    "$PY" benchmarks/recurrence.py --impls "pallas$best${TABLE_IMPLS:+,$TABLE_IMPLS}" \
      --sizes "$sizes" --dtype "$dtype" --repeats "$REPEATS" --copy_mib "$COPY_MIB" \
      --out "$OUT/recurrence_gpu_$dtype.json" | tee "$LOGS/table_$dtype.log"
  done
fi
