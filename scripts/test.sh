#!/usr/bin/env bash
# Installs what is missing, builds ScaleBERT with warnings as errors, and runs every test (ctest:
# the Python ground-truth generators first, then the C++ tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_dir="${SCALEBERT_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DSCALEBERT_WARNINGS_AS_ERRORS=ON >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
cd "$build_dir"
ctest --output-on-failure -j"$(nproc)" "$@"
