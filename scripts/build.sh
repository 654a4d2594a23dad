#!/usr/bin/env bash
# Configures and builds longctx into ./build (Release, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${LONGCTX_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLONGCTX_WERROR=ON ${LONGCTX_CMAKE_ARGS:-}
cmake --build "$build_dir" --parallel "${LONGCTX_BUILD_JOBS:-$(nproc)}"
