#!/usr/bin/env bash
# Installs what longctx needs, builds it, writes the small bundled test model and generates
# from it on the CPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
./build/tools/longctx make-test-model test-model
./build/tools/longctx generate --model test-model --prompt "Hello, longctx!" --max-tokens 24
