#!/usr/bin/env bash
# The wheels a bare GPU machine lacks, into .whl/ (git-ignored) for the device call to carry:
# ml_collections and tensorboardX (this package's), sru==3.0.0.dev6 (the official code the
# benchmarks time). Their own requirements (absl-py, PyYAML, numpy, packaging, protobuf,
# torch, ninja) are on that machine. Pure-Python wheels for CPython 3.12, the machine's python.
# Usage (repository root, where pip can reach PyPI):  bash benchmarks/gpu_wheels.sh [DIR]
set -euo pipefail
DIR=${1:-.whl}
PY=${PYTHON:-python3}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d "$DIR" \
  ml_collections==1.1.0 tensorboardX==2.6.5 sru==3.0.0.dev6
ls -l "$DIR"
