#!/usr/bin/env bash
# One device-machine session: GPU kernel tests (+ compute-sanitizer memcheck), backend tests,
# and `longctx logits --device cuda` vs `--device cpu` on generated models. Binaries come from
# $BIN (built on the CPU machine and carried); logs go to $OUT. Prints a table at the end.
#   tests/cuda/device_run.sh [steps...]   steps: kernels memcheck backend e2e flash kbench fbench
# (bench/cuda/device_bench.sh runs the figures of bench/README.md)
set -uo pipefail
BIN=${BIN:-.cuda-carry}
OUT=${OUT:-/tmp/longctx-out}
MODELS=${MODELS:-/tmp/longctx-models}
mkdir -p "$OUT" "$MODELS"
# The CLI links Debian's cpp-httplib; carried builds bring it under $BIN/lib.
export LD_LIBRARY_PATH="$PWD/$BIN/lib:${LD_LIBRARY_PATH:-}"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(kernels memcheck backend e2e)
summary=()
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader | tee "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"

step() {  # name timeout command...
  local name=$1 limit=$2
  shift 2
  local start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-28s rc=%-3s %4ss' "$name" "$rc" "$(( $(date +%s) - start ))")")
  return $rc
}

tokens() {  # n seed vocab -> comma list
  python3 -c "import random; r=random.Random($2); print(','.join(str(r.randrange($3)) for _ in range($1)))"
}

compare_pair() {  # label model tokens vocab extra-args...: the CPU against both CUDA modes
  local label=$1 model=$2 toks=$3 vocab=$4
  shift 4
  "$BIN/longctx" logits --model "$model" --tokens "$toks" --device cpu --output "$OUT/cpu.bin" "$@" 2>>"$OUT/e2e.err" || return
  "$BIN/longctx" logits --model "$model" --tokens "$toks" --device cuda --batch-invariant --output "$OUT/gpu.bin" "$@" 2>>"$OUT/e2e.err" &&
  python3 tests/cuda/compare_logits.py "$OUT/gpu.bin" "$OUT/cpu.bin" --vocab "$vocab" --label "$label [batch-invariant]" | tee -a "$OUT/e2e.txt"
  "$BIN/longctx" logits --model "$model" --tokens "$toks" --device cuda --output "$OUT/gpu.bin" "$@" 2>>"$OUT/e2e.err" &&
  python3 tests/cuda/compare_logits.py "$OUT/gpu.bin" "$OUT/cpu.bin" --vocab "$vocab" --label "$label [tensor cores]" | tee -a "$OUT/e2e.txt"
}

for s in "${steps[@]}"; do
  case $s in
    kernels) step kernel_tests 240 "$BIN/cuda_kernel_tests" ;;
    memcheck) step memcheck 300 compute-sanitizer --tool memcheck --error-exitcode 7 "$BIN/cuda_kernel_tests" ;;
    backend) step backend_tests 400 "$BIN/cuda_backend_tests" ;;
    memcheck_backend)  # the whole forward (decode graphs, chunked prefill, batches, MTP, both lanes, both modes) under memcheck
      step memcheck_backend 300 compute-sanitizer --tool memcheck --error-exitcode 7 "$BIN/cuda_backend_tests" \
        --gtest_filter=CudaBackendTest.DecodeChunkedAndBatchedEqualPrefill:CudaBackendTest.MtpMatchesCpu:CudaBackendTest.OverlappedStreamsGiveTheSameBitsAsOneStream:CudaBackendTest.Fp8CodesGiveTheBitsOfSimulatedCopies:CudaBackendTest.TensorCoreModeMatchesCpu ;;
    e2e) step e2e_tiny_probe 300 env KEEP_LOGS=1 bash "$0" _e2e ;;
    flashgen)  # in the background, while the GPU steps run
      ( start=$(date +%s)
        "$BIN/longctx" make-test-model "$MODELS/flash4" --preset flash --layers 4 --num-experts 8 > /dev/null 2>&1 &
        "$BIN/longctx" make-test-model "$MODELS/flash4probe" --preset flash --layers 4 --num-experts 8 \
          --dtype bf16 --experts bf16 --hash-layers 4 > /dev/null 2>&1 &
        wait
        echo "make-test-model flash4 + flash4probe: $(( $(date +%s) - start ))s" > "$OUT/flashgen.txt" ) &
      flashgen_pid=$! ;;
    flash)
      [ -n "${flashgen_pid:-}" ] && wait "$flashgen_pid"
      cat "$OUT/flashgen.txt" 2>/dev/null | tee -a "$OUT/e2e.txt"
      step e2e_flash 400 env KEEP_LOGS=1 bash "$0" _flash ;;
    serve)  # the OpenAI server on the GPU backend, plain and with MTP speculative decoding
      "$BIN/longctx" make-test-model "$MODELS/serve" > /dev/null
      step serve 120 python3 tests/cuda/serve_smoke.py "$BIN/longctx" "$MODELS/serve"
      step serve_mtp 120 python3 tests/cuda/serve_smoke.py "$BIN/longctx" "$MODELS/serve" --num-speculative-tokens 1 ;;
    kbench) step kernel_bench 200 "$BIN/longctx" bench kernels ${KBENCH_ARGS:-} ;;
    fbench)  # prefill 4096 (+ 32768 in chunks of 8192) and decode on the generated 4-layer Flash model
      [ -n "${flashgen_pid:-}" ] && wait "$flashgen_pid"
      step fbench_ctx4096_b1 120 "$BIN/longctx" bench e2e --model "$MODELS/flash4" --context 4128 --decode-steps 32 --chunk 4096
      step fbench_ctx4096_b16 150 "$BIN/longctx" bench e2e --model "$MODELS/flash4" --context 4128 --decode-steps 32 --chunk 4096 --batch 16
      step fbench_ctx4096_b1_nographs 120 env LONGCTX_CUDA_GRAPHS=0 "$BIN/longctx" bench e2e --model "$MODELS/flash4" --context 4128 --decode-steps 32 --chunk 4096
      step fbench_ctx32768_b4 200 "$BIN/longctx" bench e2e --model "$MODELS/flash4" --context 32800 --decode-steps 32 --batch 4 ;;
    _e2e)
      "$BIN/longctx" make-test-model "$MODELS/tiny" > /dev/null
      "$BIN/longctx" make-test-model "$MODELS/probe" --dtype bf16 --experts bf16 --hash-layers 4 --index-topk 512 > /dev/null
      t300=$(tokens 300 1 1024)
      compare_pair "probe prefill 300 kv fp32" "$MODELS/probe" "$t300" 1024 --kv-cache-dtype fp32 --indexer-dtype fp32
      compare_pair "probe prefill 100+200 decode kv bf16" "$MODELS/probe" "$t300" 1024 --prefill 100 --kv-cache-dtype bf16 --indexer-dtype bf16
      compare_pair "probe chunk 64 kv fp8/fp4" "$MODELS/probe" "$t300" 1024 --chunk-size 64 --kv-cache-dtype fp8 --indexer-dtype fp4
      compare_pair "tiny(fp8/fp4) prefill 300 kv fp32" "$MODELS/tiny" "$t300" 1024 --kv-cache-dtype fp32 --indexer-dtype fp32
      compare_pair "tiny(fp8/fp4) 100+200 decode kv fp8" "$MODELS/tiny" "$t300" 1024 --prefill 100 --kv-cache-dtype fp8 --indexer-dtype fp4
      for device in cpu cuda; do
        "$BIN/longctx" generate --model "$MODELS/probe" --tokens "$(tokens 40 3 1024)" --max-tokens 48 --temperature 0 \
          --print-tokens --ignore-eos --device $device --kv-cache-dtype fp32 --indexer-dtype fp32 \
          > "$OUT/gen_$device.txt" 2> "$OUT/gen_$device.err"
      done
      if [ -s "$OUT/gen_cpu.txt" ] && cmp -s "$OUT/gen_cpu.txt" "$OUT/gen_cuda.txt"; then verdict="identical"; else verdict="DIFFER (or failed)"; fi
      echo "generate greedy 48 tokens (probe, kv fp32): cpu and cuda token ids $verdict" | tee -a "$OUT/e2e.txt"
      tail -2 "$OUT/gen_cuda.err" | sed 's/^/  cuda generate: /' | tee -a "$OUT/e2e.txt"
      rm -f "$OUT"/gen_*
      ;;
    _flash)
      [ -d "$MODELS/flash4" ] || "$BIN/longctx" make-test-model "$MODELS/flash4" --preset flash --layers 4 --num-experts 8 ${FLASH_ARGS:-} > /dev/null
      t=$(tokens ${FLASH_TOKENS:-160} 2 ${FLASH_VOCAB:-129280})
      n=${FLASH_TOKENS:-160}
      compare_pair "flash4x8 probe(bf16) $n tokens, prefill ${FLASH_PREFILL:-128} kv fp32" "$MODELS/flash4probe" "$t" \
        ${FLASH_VOCAB:-129280} --kv-cache-dtype fp32 --indexer-dtype fp32 --prefill ${FLASH_PREFILL:-128}
      compare_pair "flash4x8 probe(bf16) $n tokens, chunk 48 kv fp8/fp4" "$MODELS/flash4probe" "$t" \
        ${FLASH_VOCAB:-129280} --kv-cache-dtype fp8 --indexer-dtype fp4 --chunk-size 48
      compare_pair "flash4x8 fp8/fp4 $n tokens, prefill ${FLASH_PREFILL:-128} kv fp32" "$MODELS/flash4" "$t" \
        ${FLASH_VOCAB:-129280} --kv-cache-dtype fp32 --indexer-dtype fp32 --prefill ${FLASH_PREFILL:-128}
      compare_pair "flash4x8 fp8/fp4 $n tokens, prefill ${FLASH_PREFILL:-128} kv fp8/fp4" "$MODELS/flash4" "$t" \
        ${FLASH_VOCAB:-129280} --kv-cache-dtype fp8 --indexer-dtype fp4 --prefill ${FLASH_PREFILL:-128}
      ;;
    *) echo "unknown step $s" ;;
  esac
done

echo "==== results"
grep -h -E "relative error|within|agreement|: positions|PASSED|FAILED|ERROR SUMMARY|^\[  FAILED|GB/s|tokens/s|make-test-model|Failure|error:" "$OUT"/*.log "$OUT/e2e.txt" 2>/dev/null | cut -c1-200 | tail -${TAIL_LINES:-80}
printf '%s\n' "${summary[@]}"
# At most a few files come back: keep one combined log (memcheck's tail only).
if [ -z "${KEEP_LOGS:-}" ]; then
  for f in "$OUT"/*.log; do
    [ -f "$f" ] || continue
    echo "===== $(basename "$f")"
    case $f in *memcheck*.log) grep -E "ERROR SUMMARY|PASSED|FAILED|Invalid|out of bounds" "$f" | head -20 ;; *) cat "$f" ;; esac
  done > "$OUT/all.txt"
  rm -f "$OUT"/*.log "$OUT"/*.bin "$OUT/e2e.err"
fi

