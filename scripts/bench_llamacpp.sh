#!/usr/bin/env bash
# thinkbench beside llama.cpp (through llama-cpp-python) on the same GGUF files (BF16, Q8_0, Q4_0,
# Q4_K_M) of the random-weight model shaped like DeepSeek-R1-Distill-Qwen-1.5B, same thread count,
# one run. The engines take turns, one process each. Run by make bench; see
# scripts/bench_llamacpp.py for the steps.
#
# Needs target/release/thinkbench (make bench builds it). Installs what else it needs once,
# outside CI: the reference python (scripts/setup-pyref.sh), the bench model
# (scripts/bench_reference.py build), llama-cpp-python built from source with native flags and
# llama.cpp's converter (scripts/setup-llamacpp.sh: 10-15 min the first time). LLAMA_CPP_DIR and
# CONV_PYTHON point it at another converter and python.
#
# BENCH_ISA=avx2 runs both as an AVX2-only CPU would, on an AVX-512 machine: llama.cpp's libraries
# built for AVX2 alone (scripts/setup-llamacpp-avx2.sh), thinkbench with THINKBENCH_ISA=avx2 (which
# caps libtorch, MKL and oneDNN too); results then go to target/bench-llamacpp-avx2.{jsonl,md}.
#
# Env: BENCH_THREADS (2), BENCH_ROUNDS (2), BENCH_KINDS (bf16,q8_0,q4_0,q4_k_m), BENCH_PREFILL (64),
# BENCH_DECODE (32), BENCH_REPEAT (2). GGUF files are cached in
# ~/.cache/thinkbench/bench-models/gguf/; raw results go to target/bench-llamacpp.jsonl and the
# table to target/bench-llamacpp.md.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${BENCH_THREADS:-2}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench"
models="$cache/bench-models"
gguf="$models/gguf"
bin="${THINKBENCH:-./target/release/thinkbench}"
[ -x "$bin" ] || { echo "bench_llamacpp: no $bin (build it first: make build)" >&2; exit 1; }

py="$(scripts/setup-pyref.sh)"
llama_cpp="${LLAMA_CPP_DIR:-$(scripts/setup-llamacpp.sh)}"
conv_py="${CONV_PYTHON:-$py}"
[ -f "$models/qwen2_1p5b_shape/config.json" ] || "$py" scripts/bench_reference.py build --out "$models"

start=$(date +%s)
echo "bench_llamacpp: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$py" scripts/bench_llamacpp.py prepare --model-dir "$models/qwen2_1p5b_shape" --out "$gguf" \
  --llama-cpp "$llama_cpp" --conv-python "$conv_py" --threads "$threads"
prepared=$(date +%s)

mkdir -p target
results=target/bench-llamacpp.jsonl
table=target/bench-llamacpp.md
if [ "${BENCH_ISA:-}" = avx2 ]; then
  export THINKBENCH_ISA=avx2 LLAMA_CPP_LIB_PATH="$(scripts/setup-llamacpp-avx2.sh)"
  results=target/bench-llamacpp-avx2.jsonl table=target/bench-llamacpp-avx2.md
  echo "bench_llamacpp: AVX2 only (llama.cpp from $LLAMA_CPP_LIB_PATH, THINKBENCH_ISA=avx2)" >&2
fi
: > "$results"
"$py" scripts/bench_llamacpp.py run --gguf-dir "$gguf" --thinkbench "$bin" --threads "$threads" \
  --rounds "${BENCH_ROUNDS:-2}" --kinds "${BENCH_KINDS:-bf16,q8_0,q4_0,q4_k_m}" --prefill "${BENCH_PREFILL:-64}" \
  --decode "${BENCH_DECODE:-32}" --repeat "${BENCH_REPEAT:-2}" --results "$results" || true
end=$(date +%s)

"$py" scripts/bench_llamacpp.py table "$results" --gguf-dir "$gguf" | tee "$table"
echo "bench_llamacpp: prepare $((prepared - start)) s, runs $((end - prepared)) s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
