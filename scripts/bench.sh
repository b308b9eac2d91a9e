#!/usr/bin/env bash
# make bench: thinkbench beside transformers 5.24, same machine, same thread count, one run.
# Builds its own random-weight checkpoints (cached in ~/.cache/thinkbench/bench-models).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${BENCH_THREADS:-2}"
models="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench/bench-models"
py="$(scripts/setup-pyref.sh)"
mkdir -p "$models"
"$py" scripts/bench_reference.py build --out "$models"
results="$(mktemp)"
# Every figure depends on the CPU: name it, and whether it has AVX-512 (BF16) or only AVX2.
echo "bench: CPU $(lscpu | sed -n 's/^Model name: *//p'); $(grep -qm1 avx512_bf16 /proc/cpuinfo && echo 'AVX-512 BF16' || (grep -qm1 avx2 /proc/cpuinfo && echo 'AVX2, no AVX-512 BF16' || echo 'no AVX2'))" | tee target/bench-cpu.txt
run_pair() { # name dtype(thinkbench) dtype(torch)
  local dir="$models/$1"
  echo "bench: $1 ($2, $threads threads)" >&2
  ./target/release/thinkbench bench --model "$dir" --dtype "$2" --threads "$threads" >> "$results"
  "$py" scripts/bench_reference.py run --model "$dir" --dtype "$3" --threads "$threads" >> "$results"
}
run_pair tiny_deepseek_v3 f32 float32
run_pair qwen2_1p5b_shape bf16 bfloat16
"$py" scripts/bench_reference.py table "$results"
cp "$results" target/bench-results.jsonl
echo "raw results: target/bench-results.jsonl" >&2
# How close prefill is to what libtorch's GEMM and the cores themselves allow.
"$py" scripts/bench_prefill_ceiling.py --threads "$threads" | tee target/bench-prefill-ceiling.txt
# `thinkbench serve`: aggregate tokens/s at 1, 4 and 16 concurrent clients, time to first token,
# overhead against `generate`, and a bounded load-and-fault run with the server's memory.
echo "bench: serve (built-in model, then the 1.5B shape)" >&2
python3 scripts/bench_serve.py --threads "$threads" | tee target/bench-serve.txt
python3 scripts/bench_serve.py --model "$models/qwen2_1p5b_shape" --label "1.5B shape (qwen2)" \
  --dtype bf16 --threads "$threads" --max-tokens 16 --per-client 1 --fault-rounds 0 \
  --overhead-runs 3 | tee -a target/bench-serve.txt
# llama.cpp on the same GGUF files (BF16, Q8_0, Q4_0, Q4_K_M of the 1.5B shape), same threads;
# builds llama-cpp-python once into the reference environment (scripts/setup-llamacpp.sh).
scripts/bench_llamacpp.sh
# GRPO: seconds per training step beside TRL's GRPOTrainer (scripts/bench_grpo.sh).
scripts/bench_grpo.sh | tee target/bench-grpo.txt
# GRPO's peak memory with a 152k vocabulary and 512-token completions (the head in slices).
scripts/bench_grpo_memory.sh | tee target/bench-grpo-memory.txt
# The workbench: rendering a 10 000-token session with the inspectors open (target ≤ 5 ms per
# frame) and keypress-to-screen latency while a reply streams.
echo "bench: workbench rendering and keypress latency" >&2
"${CARGO:-cargo}" bench --bench render 2>/dev/null | tee target/bench-render.txt
