#!/usr/bin/env bash
# Issue 22 on one H100/H200 in one device call of at most 9 minutes, everything under DIR:
#   tests     tests/test_pallas.py on the real Triton lowering (not the slow compiles; 30 s a test)
#   tune      the default and 6 kernel variants at the training shape 8x1024x3072 bf16
#                                                                 -> recurrence_tune.json
#   table     pallas (default and the sweep's best) vs the official CUDA kernel at 8x1024x3072,
#             16x1024x4096 and 1x2560x4096 bf16, 8x1024x3072 float32
#                                     -> recurrence_gpu_bfloat16.json, recurrence_gpu_float32.json
#   training  benchmarks/training.py: enwik8 base k=1 at B=8 and 32, k=5 at B=8, ours (pallas)
#             and the official sru.SRUpp in the same run                    -> training_gpu.json
#   precision benchmarks/training.py: enwik8 base k=1 at B=8, ours in bfloat16 and in float16
#             (dynamic loss scaling), each with model.remat none and layer: tokens/s and peak
#             memory                                               -> training_precision_gpu.json
#   main      main.py, 100 steps of enwik8 base k=1 at B=8 on the embedded corpus, steps 11-20
#             profiled; its logged tokens/s and ops by time                 -> main_train.json
#   summary   parts, numbers and issue 22's targets (benchmarks/gpu_summary.py) -> summary.json
# plus gpu_all.log (the whole output). Each part runs under its own time limit (T_TESTS, T_TUNE,
# T_TABLE, T_TRAIN, T_PRECISION, T_MAIN seconds; with the rest 540 s in all) and prints its JSON path when it
# finishes; a part that fails or runs out of time leaves the others to run (the benchmarks save
# each row as they go); the exit status is 1 when any part failed.
#
# Device call (repository root; .whl from `bash benchmarks/gpu_wheels.sh`):
#   run(command="bash benchmarks/gpu_all.sh $OUT", carry=[".whl"], timeout_s=600)
# then copy $OUT's recurrence_gpu_bfloat16.json and training_gpu.json to benchmarks/results/.
# Usage: [SIZES=full|toy] [PARTS="tests tune table training precision main"]
#        bash benchmarks/gpu_all.sh [DIR]
# DIR defaults to $OUT, else benchmarks/results. SIZES=toy is the rehearsal on a CPU
# (tests/test_benchmarks.py): toy shapes, the kernels interpreted, one kernel test, the training
# benchmark with the scan backend. OFFICIAL=auto (default) times the official code where torch
# sees a GPU; 1 or 0 forces it.
set -uo pipefail
DIR=${1:-${OUT:-benchmarks/results}}
SIZES=${SIZES:-full}
PARTS=" ${PARTS:-tests tune table training precision main} "
OFFICIAL=${OFFICIAL:-auto}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_all.XXXXXX")
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
for name in recurrence_tune recurrence_gpu_bfloat16 recurrence_gpu_float32 training_gpu \
            training_precision_gpu main_train summary; do
  rm -f "$DIR/$name.json"      # no stale result may pass for this run's
done
exec > >(tee "$DIR/gpu_all.log") 2>&1
cd "$(dirname "$0")/.."
source benchmarks/gpu_setup.sh || { echo "error: the wheels did not install"; exit 1; }
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false    # leave GPU memory to the official (torch) code too
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jax_cache}

case $SIZES in
  full)
    KERNEL_SIZES=8x1024x3072,16x1024x4096,1x2560x4096; F32_SIZES=8x1024x3072
    # besides the default (pallas = 32:1:8 here): chunks of 0, 2, 4; two and four columns a
    # thread; 2 warps last (its compile is the slowest; rows are saved as they finish)
    TUNE_SIZE=8x1024x3072; VARIANTS="32:1:0 32:1:2 32:1:4 64:1:8 128:4:8 64:2:8"; REPEATS=20
    COPY_MIB=0; IMPL=pallas
    TEST_SELECT=(-m "not slow")
    TRAIN_ARGS=(--runs base:8,base:32,k5:8 --warmup 2 --steps 10)
    PRECISION_ARGS=(--runs base:8 --warmup 2 --steps 6)
    MAIN_ARGS=(--config.train.batch_size=8 --config.train.steps=100
               --config.eval.unroll=1024 --config.eval.mem_len=1024 --config.eval.max_tokens=8192)
    LIMITS=(60 80 80 140 60 100) ;;
  toy)
    KERNEL_SIZES=2x8x12; F32_SIZES=2x8x12; TUNE_SIZE=2x8x12; VARIANTS="8:1:2"; REPEATS=2
    COPY_MIB=8; IMPL=scan        # a whole train step of interpreted kernels compiles for minutes
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"   # compile, not run
    TEST_SELECT=(-k "test_default_options_per_shape")
    TRAIN_ARGS=(--runs base:2,k5:2 --warmup 1 --steps 2
                --d 16 --d_proj 4 --layers 5 --unroll 8)
    PRECISION_ARGS=(--runs base:2 --warmup 1 --steps 2 --d 16 --d_proj 4 --layers 2 --unroll 8)
    MAIN_ARGS=(--config.train.batch_size=2 --config.train.steps=24
               --config.model.d=16 --config.model.d_proj=4 --config.model.num_layers=2
               --config.train.unroll=8 --config.data.max_bytes=60000
               --config.eval.unroll=16 --config.eval.mem_len=16 --config.eval.max_tokens=100)
    LIMITS=(120 120 120 120 120 120) ;;
  *) echo "error: SIZES=$SIZES; expected full or toy"; exit 2 ;;
esac
T_TESTS=${T_TESTS:-${LIMITS[0]}} T_TUNE=${T_TUNE:-${LIMITS[1]}} T_TABLE=${T_TABLE:-${LIMITS[2]}}
T_TRAIN=${T_TRAIN:-${LIMITS[3]}} T_PRECISION=${T_PRECISION:-${LIMITS[4]}}
T_MAIN=${T_MAIN:-${LIMITS[5]}}
FAILED=0

part() {   # part NAME SECONDS JSON COMMAND...: run COMMAND under a time limit, record the outcome
  local name=$1 limit=$2 json=$3 start=$SECONDS rc
  shift 3
  echo "== $name (at most ${limit} s)"
  timeout -k 10 "$limit" "$@"
  rc=$?
  [ "$rc" = 0 ] || FAILED=1
  echo "$name $rc $((SECONDS - start)) $json" >> "$WORK/parts.txt"
  if [ -n "$json" ] && [ -f "$json" ]; then
    echo "== $name done: $json (exit $rc, $((SECONDS - start)) s)"
  else
    echo "== $name done: no JSON (exit $rc, $((SECONDS - start)) s)"
  fi
}

echo "== $(date -u +%FT%TZ) SIZES=$SIZES DIR=$DIR commit $(git rev-parse --short HEAD 2>/dev/null)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm \
  --format=csv,noheader
"$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch',
  torch.__version__, 'cuda', torch.cuda.is_available())"
if [ "$OFFICIAL" = auto ]; then
  OFFICIAL=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
fi
if [ "$OFFICIAL" = 1 ]; then
  # `import sru` compiles its C++ and CUDA extensions (about a minute): in the background,
  # while the kernel tests run; a failed CUDA build is an error here, not sru's silent fallback.
  timeout -k 10 100 "$PY" -c "import torch, warnings
if torch.cuda.is_available():
    warnings.filterwarnings('error', 'Just-in-time loading')
import sru; print('sru', sru.__version__, 'built')" > "$WORK/sru_build.log" 2>&1 &
  SRU_BUILD=$!
fi
if [ "$SIZES" = toy ] && [ ! -d "$SITE/sru" ]; then   # rehearse the patch on a copy of sru's
  csrc=$("$PY" -c "import importlib.util, os; s = importlib.util.find_spec('sru')
print(os.path.join(s.submodule_search_locations[0], 'csrc') if s else '')")
  if [ -n "$csrc" ]; then
    mkdir -p "$WORK/csrc" && cp "$csrc/sru_cuda_kernel.cu" "$WORK/csrc/" && patch_sru "$WORK/csrc" \
      || FAILED=1
  fi
fi

export LOGS=$WORK REPEATS COPY_MIB
if [[ $PARTS == *" tests "* ]]; then
  timeout_arg=""
  "$PY" -c "import pytest_timeout" 2>/dev/null && timeout_arg="--timeout=30"
  part tests "$T_TESTS" "" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_pallas.py "${TEST_SELECT[@]}" $timeout_arg
fi
if [ -n "${SRU_BUILD:-}" ]; then
  wait "$SRU_BUILD" || OFFICIAL=0
  cat "$WORK/sru_build.log"
  [ "$OFFICIAL" = 1 ] || echo "== the official sru did not build: its rows are left out"
fi
if [[ $PARTS == *" tune "* ]]; then
  PARTS=tune TUNE_SIZE=$TUNE_SIZE TUNE_VARIANTS=$VARIANTS \
    part tune "$T_TUNE" "$DIR/recurrence_tune.json" bash benchmarks/gpu_recurrence.sh "$DIR"
fi
if [[ $PARTS == *" table "* ]]; then
  TABLE_IMPLS=$([ "$OFFICIAL" = 1 ] && echo official) PARTS=table SIZES=$KERNEL_SIZES \
    F32_SIZES=$F32_SIZES part table "$T_TABLE" "$DIR/recurrence_gpu_bfloat16.json" \
    bash benchmarks/gpu_recurrence.sh "$DIR"
fi
if [[ $PARTS == *" training "* ]]; then
  official_arg=--official
  [ "$OFFICIAL" = 1 ] || official_arg=--no-official
  part training "$T_TRAIN" "$DIR/training_gpu.json" "$PY" benchmarks/training.py \
    --impls "$IMPL" "${TRAIN_ARGS[@]}" "$official_arg" --out "$DIR/training_gpu.json"
fi
if [[ $PARTS == *" precision "* ]]; then
  part precision "$T_PRECISION" "$DIR/training_precision_gpu.json" "$PY" benchmarks/training.py \
    --impls "$IMPL" "${PRECISION_ARGS[@]}" --dtypes bfloat16,float16 --remats none,layer \
    --no-official --out "$DIR/training_precision_gpu.json"
fi
if [[ $PARTS == *" main "* ]]; then
  # log every 4 steps: the logged tokens/s (a window of 20 logs) then spans steps 21-100,
  # after the compile and the profile window of steps 11-20.
  part main "$T_MAIN" "$WORK/main/metrics.jsonl" "$PY" main.py --config=configs/enwik8.py \
    --workdir="$WORK/main" --config.data.name=default --config.data.cache_dir="$WORK/cache" \
    --config.train.warmup_steps=10 --config.train.log_every=4 \
    "--config.train.profile_steps=(10,20)" --config.train.eval_every=1000 \
    --config.train.checkpoint_every=1000 "${MAIN_ARGS[@]}"
  part main_json 20 "$DIR/main_train.json" "$PY" benchmarks/gpu_summary.py main "$WORK/main" \
    "$DIR/main_train.json" --steps 10
fi
echo "== summary"
"$PY" benchmarks/gpu_summary.py summary "$DIR" --parts "$WORK/parts.txt" || FAILED=1
rm -rf "$WORK"
exit "$FAILED"
