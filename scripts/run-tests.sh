#!/usr/bin/env bash
# Builds longctx and runs every test (ctest), on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir "${LONGCTX_BUILD_DIR:-build}" --output-on-failure --parallel "$(nproc)"
