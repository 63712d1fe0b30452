# What a bare GPU machine lacks, sourced by benchmarks/gpu_all.sh and gpu_recurrence.sh:
#   - the wheels in $WHEELS (default .whl/: ml_collections, tensorboardX, sru; made here by
#     `bash benchmarks/gpu_wheels.sh`) installed once into $SITE (default /tmp/site), which goes
#     on PYTHONPATH;
#   - sru's CUDA source patched for torch >= 2.10 (DESIGN.md pitfalls: `U.type()` in its
#     AT_DISPATCH macros no longer compiles; `U.scalar_type()` compiles on every torch since
#     1.x, so the patch is applied to the sru installed here whatever the torch);
#   - the PyTorch extensions that `import sru` compiles go to $TORCH_EXTENSIONS_DIR, sm_90 only
#     (TORCH_CUDA_ARCH_LIST, unless set).
# Defines PY (the python, $PYTHON or python3) and patch_sru DIR (DIR = a copy of sru/csrc).
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}

patch_sru() {   # U.type() -> U.scalar_type() in DIR/sru_cuda_kernel.cu; fails if nothing matched
  local cu="$1/sru_cuda_kernel.cu"
  sed -i 's/U\.type(), "sru_/U.scalar_type(), "sru_/' "$cu" || return 1
  if grep -q 'U\.type(), "sru_' "$cu" || ! grep -q 'U\.scalar_type(), "sru_' "$cu"; then
    echo "error: the U.type() patch did not apply to $cu" >&2
    return 1
  fi
  echo "patched $cu: $(grep -c 'U\.scalar_type(), "sru_' "$cu") AT_DISPATCH calls"
}

if ls "$WHEELS"/*.whl >/dev/null 2>&1 && [ ! -f "$SITE/.installed" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || return 1
  if [ -d "$SITE/sru/csrc" ]; then patch_sru "$SITE/sru/csrc" || return 1; fi
  touch "$SITE/.installed"
fi
if [ -f "$SITE/.installed" ]; then
  case ":${PYTHONPATH:-}:" in
    *":$SITE:"*) ;;
    *) export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} ;;
  esac
fi
