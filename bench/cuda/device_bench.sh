#!/usr/bin/env bash
# The figures of bench/README.md in one device-machine session: GPU tests first (the benchmarks
# are only worth reading on a backend that passes them), then `longctx bench kernels` and
# `longctx bench e2e`. Binaries come from $BIN (built on the CPU machine and carried, with the
# shared libraries under $BIN/lib); logs go to $OUT. Prints a summary at the end.
#   bench/cuda/device_bench.sh [steps...]
#   steps: tests kernels e2e_1m e2e_decode e2e_prefill e2e_deep e2e_more e2e_1m_prefill
#   (default: the first five)
set -uo pipefail
BIN=${BIN:-.cuda-carry}
OUT=${OUT:-/tmp/longctx-bench}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$BIN/lib:${LD_LIBRARY_PATH:-}"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests kernels e2e_1m e2e_decode e2e_prefill)
summary=()
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv,noheader; date -u; } | tee "$OUT/device.txt"

# Every step ends before the session deadline (the device tool's limit is 600 s a command).
DEADLINE=$(( $(date +%s) + ${TOTAL_LIMIT:-570} ))
step() {  # log timeout command...
  local log=$1 limit=$2
  shift 2
  local start=$(date +%s)
  local left=$(( DEADLINE - start ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then summary+=("skipped (no time left): $*"); return 1; fi
  echo "### $*" >> "$OUT/$log.log"
  timeout "$limit" "$@" >> "$OUT/$log.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-60s rc=%-3s %4ss' "$(echo "$*" | cut -c1-60)" "$rc" "$(( $(date +%s) - start ))")")
  return $rc
}

E2E="$BIN/longctx bench e2e --synthetic flash --experts 8"
for s in "${steps[@]}"; do
  case $s in
    tests)
      step tests 90 "$BIN/cuda_kernel_tests"
      step tests 150 "$BIN/cuda_backend_tests" ;;
    kernels) step kernels ${KERNELS_LIMIT:-200} "$BIN/longctx" bench kernels --csv "$OUT/kernels.csv" ${KERNEL_ARGS:-} ;;
    e2e_prefill)  # all 43 layers, 8 experts: prefill then decode
      step e2e 60 $E2E --context 8192 --decode-steps 16
      step e2e ${PREFILL_LIMIT:-120} $E2E --context 32768 --decode-steps 16 --chunk 8192 ;;
    e2e_decode)  # decode over random KV pages (no prefill)
      step e2e 60 $E2E --context 131072 --random-kv --decode-steps 12
      step e2e 60 $E2E --context 131072 --random-kv --decode-steps 12 --batch 8 ;;
    e2e_1m) step e2e 90 $E2E --context 1048576 --random-kv --decode-steps 12 ;;
    e2e_1m_prefill)  # the whole 1,048,576-token request: prefill then decode (~330 s on an H200);
      # no --stage-times: stage timing puts the side lane's work on the main stream
      step e2e 585 $E2E --context 1048576 --chunk 8192 --decode-steps 8 ;;
    e2e_deep)  # prefill chunks deep in a context (random KV before them), then decode: the 1M request's tail
      step e2e 150 $E2E --context 1048576 --random-kv --prefill-tokens 2048 --chunk 2048 --decode-steps 8
      step e2e 120 $E2E --context 524288 --random-kv --prefill-tokens 2048 --chunk 2048 --decode-steps 4 ;;
    e2e_more)  # larger batches over random KV, V4-Pro shapes, and a checkpoint through --model
      step e2e 90 $E2E --context 131072 --random-kv --decode-steps 8 --batch 64
      step e2e 90 $E2E --context 1048576 --random-kv --decode-steps 8 --batch 4
      step e2e 90 "$BIN/longctx" bench e2e --synthetic pro --experts 8 --context 131072 --random-kv --decode-steps 12
      step e2e 120 "$BIN/longctx" bench e2e --synthetic pro --experts 8 --context 4096 --decode-steps 8
      step e2e 60 "$BIN/longctx" make-test-model /tmp/longctx-tiny
      step e2e 60 "$BIN/longctx" bench e2e --model /tmp/longctx-tiny --context 1024 --decode-steps 8 --chunk 256 ;;
    *) echo "unknown step $s" ;;
  esac
done

echo "==== summary"
grep -h -E "PASSED|FAILED|^\[  FAILED|error|Error|synthetic .* weights|synthetic KV" "$OUT/tests.log" 2>/dev/null | head -20
grep -h -E "^(model|weights|KV|prefill:|decode|  prefill chunk|  warning)" "$OUT/e2e.log" 2>/dev/null | cut -c1-230
printf '%s\n' "${summary[@]}"
