#!/usr/bin/env bash
# thinkbench beside llama.cpp (through llama-cpp-python) on the same GGUF files (BF16, Q8_0,
# Q4_0) of the random-weight model shaped like DeepSeek-R1-Distill-Qwen-1.5B, same thread count,
# one run. The engines take turns, one process each. See scripts/bench_llamacpp.py for the steps.
#
# Needs:
#   * target/release/thinkbench (built beforehand; this script does not build it);
#   * the bench model, ~/.cache/thinkbench/bench-models/qwen2_1p5b_shape
#     (scripts/bench_reference.py build --out ~/.cache/thinkbench/bench-models);
#   * llama-cpp-python installed in the reference python (PYREF, default
#     ~/.cache/thinkbench/pyref/bin/python), built from its source package;
#   * llama.cpp's converter folder (LLAMA_CPP_DIR: the vendor/llama.cpp folder of that source
#     package) and a python that can run it (CONV_PYTHON; see scripts/make_gguf_model_fixtures.py).
#
# Env: BENCH_THREADS (2), BENCH_ROUNDS (2), BENCH_KINDS (bf16,q8_0,q4_0), BENCH_PREFILL (64),
# BENCH_DECODE (32), BENCH_REPEAT (2). GGUF files are cached in
# ~/.cache/thinkbench/bench-models/gguf/; raw results go to target/bench-llamacpp.jsonl and the
# table to target/bench-llamacpp.md.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${BENCH_THREADS:-2}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench"
models="$cache/bench-models"
gguf="$models/gguf"
py="${PYREF:-$cache/pyref/bin/python}"
conv_py="${CONV_PYTHON:-/work/scratch/venv-conv/bin/python}"
llama_cpp="${LLAMA_CPP_DIR:-/work/scratch/llcpp/llama_cpp_python-0.3.36/vendor/llama.cpp}"
bin="${THINKBENCH:-./target/release/thinkbench}"

[ -x "$bin" ] || { echo "bench_llamacpp: no $bin (build it first)" >&2; exit 1; }
[ -f "$models/qwen2_1p5b_shape/config.json" ] || { echo "bench_llamacpp: no bench model; run scripts/bench_reference.py build --out $models" >&2; exit 1; }
[ -f "$llama_cpp/convert_hf_to_gguf.py" ] || { echo "bench_llamacpp: no converter in $llama_cpp (set LLAMA_CPP_DIR)" >&2; exit 1; }
"$py" -c "import llama_cpp" 2>/dev/null || { echo "bench_llamacpp: $py cannot import llama_cpp" >&2; exit 1; }

start=$(date +%s)
echo "bench_llamacpp: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$py" scripts/bench_llamacpp.py prepare --model-dir "$models/qwen2_1p5b_shape" --out "$gguf" \
  --llama-cpp "$llama_cpp" --conv-python "$conv_py" --threads "$threads"
prepared=$(date +%s)

mkdir -p target
results=target/bench-llamacpp.jsonl
: > "$results"
"$py" scripts/bench_llamacpp.py run --gguf-dir "$gguf" --thinkbench "$bin" --threads "$threads" \
  --rounds "${BENCH_ROUNDS:-2}" --kinds "${BENCH_KINDS:-bf16,q8_0,q4_0}" --prefill "${BENCH_PREFILL:-64}" \
  --decode "${BENCH_DECODE:-32}" --repeat "${BENCH_REPEAT:-2}" --results "$results" || true
end=$(date +%s)

"$py" scripts/bench_llamacpp.py table "$results" --gguf-dir "$gguf" | tee target/bench-llamacpp.md
echo "bench_llamacpp: prepare $((prepared - start)) s, runs $((end - prepared)) s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
