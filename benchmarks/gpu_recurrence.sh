#!/usr/bin/env bash
# Everything the Pallas kernel needs on an NVIDIA GPU, in one command (issue 4):
#   tests  the kernel tests on the real Triton lowering (tests/test_pallas.py runs the kernels
#          compiled, not interpreted, when JAX's default backend is a GPU);
#   tune   a sweep of (block_d, num_warps, prefetch) at one enwik8-base shape;
#   table  pallas (defaults, and the sweep's best when a tune JSON is in OUT_DIR) vs the official
#          CUDA kernel of `sru==3.0.0.dev6` vs assoc vs scan, bf16 and float32, forward and
#          forward+backward.
# Usage (repository root):  [PARTS="tests tune table"] bash benchmarks/gpu_recurrence.sh [OUT_DIR]
# PARTS (default: all three) splits the work over calls that each fit a time limit.
# The sru wheel (pure Python; it compiles its CUDA kernel with nvcc and ninja on first use) is
# installed from .whl/ when there is one: `pip download --no-deps sru==3.0.0.dev6 -d .whl`.
# SIZES, TUNE_SIZE and REPEATS may be set in the environment (small values check the script on
# a CPU: there the kernels run in interpret mode).
set -euo pipefail
OUT=${1:-benchmarks/results}
PARTS=" ${PARTS:-tests tune table} "
SIZES=${SIZES:-4x1024x3072,16x1024x3072,4x1024x4096,16x1024x4096}
TUNE_SIZE=${TUNE_SIZE:-16x1024x4096}
REPEATS=${REPEATS:-20}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # leave GPU memory to the official (torch) kernel too
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv

if [[ $PARTS == *" tests "* ]]; then
  echo "== kernel tests on the real lowering"
  python3 -m pytest -q -p no:cacheprovider tests/test_pallas.py 2>&1 | tee "$OUT/gpu_tests.log"
fi

if [[ $PARTS == *" tune "* ]]; then
  echo "== tuning sweep at $TUNE_SIZE bfloat16"
  # block_d:num_warps:prefetch. One column per thread at 32 and 64 columns, two (4-byte
  # loads) at 64 on 1 warp, four at 128 on 4 warps; chunks of 0-8 steps (the kernel's
  # maximum: P = 16 did not finish compiling in 30 minutes, BENCHMARKS.md).
  variants=""
  for v in 32:1:0 32:1:2 32:1:4 32:1:8 64:1:4 64:1:8 64:2:4 64:2:8 128:4:8; do
    variants="$variants,pallas:$v"
  done
  python3 benchmarks/recurrence.py --impls "pallas$variants" --sizes "$TUNE_SIZE" \
    --dtype bfloat16 --repeats "$REPEATS" --out "$OUT/recurrence_tune.json" | tee "$OUT/tune.log"
fi

if [[ $PARTS == *" table "* ]]; then
  best=""
  if [ -f "$OUT/recurrence_tune.json" ]; then
    best=",$(python3 -c 'import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
print(min(rows, key=lambda r: r["fwd_bwd_ms"])["impl"])' "$OUT/recurrence_tune.json")"
  fi
  echo "== the table (the sweep's best forward+backward variant: ${best#,})"
  for dtype in bfloat16 float32; do
    python3 benchmarks/recurrence.py --impls "pallas$best,official,assoc,scan" \
      --sizes "$SIZES" --dtype "$dtype" --repeats "$REPEATS" \
      --out "$OUT/recurrence_gpu_$dtype.json" | tee "$OUT/table_$dtype.log"
  done
fi
