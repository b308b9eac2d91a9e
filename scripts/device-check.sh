#!/usr/bin/env bash
# The CUDA check: run on a machine with an NVIDIA GPU and a PyTorch install, with binaries built
# against that PyTorch (see "On a GPU" in the README). Checks, on the GPU:
#   1. the parity suite (greedy tokens, top-5 logprobs, MoE routing against transformers' recorded
#      outputs; KV cache == recompute; batched == single; generation behaviour) in f32;
#   2. the built-in model gives the same greedy tokens on CUDA as on the CPU, and runs in bf16;
#   3. a few GRPO steps of the shipped recipe on CUDA (finite loss, a checkpoint written);
#   4. decode and prefill speed beside transformers on the same GPU (random-weight bench models).
#
#   BIN=DIR OUT=DIR scripts/device-check.sh      # DIR holds `thinkbench` and `integration`
#   SKIP_BENCH=1 ...                              # checks 1-3 only
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
nvidia-smi -L
"$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
# The test binary finds its fixtures through the source path it was built in (CARGO_MANIFEST_DIR).
if [ -n "${BUILT_IN:-}" ] && [ ! -e "$BUILT_IN" ]; then mkdir -p "$(dirname "$BUILT_IN")"; ln -s "$PWD" "$BUILT_IN"; fi
status=0
step() { echo; echo "=== $*"; }

step "1. parity suite on cuda (f32)"
THINKBENCH_TEST_DEVICE=cuda "$BIN/integration" parity:: generation:: --test-threads=1 2>&1 | tee "$OUT/parity.log" || status=1

step "2. built-in model: cuda f32 greedy == cpu f32 greedy; bf16 runs"
gen() { "$BIN/thinkbench" generate --model models/thinkbench-tiny --chat "What is 4821 + 3907?" \
  --temperature 0 --max-new-tokens 160 --json "$@"; }
ids() { "$py" -c 'import json,sys; print([t["id"] for t in json.load(sys.stdin)["generated"]])'; }
gen --device cpu > "$OUT/gen-cpu.json" && gen --device cuda > "$OUT/gen-cuda.json" \
  && gen --device cuda --dtype bf16 > "$OUT/gen-cuda-bf16.json" || status=1
a="$(ids < "$OUT/gen-cpu.json")"; b="$(ids < "$OUT/gen-cuda.json")"
if [ "$a" = "$b" ]; then echo "cpu and cuda agree: $a"; else echo "MISMATCH cpu vs cuda"; status=1; fi
"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("bf16 text:", "".join(t["text"] for t in d["generated"])[-120:])' "$OUT/gen-cuda-bf16.json"

step "3. GRPO on cuda (5 steps of recipes/tiny-grpo.toml)"
sed -e 's|^device = .*|device = "cuda"|' -e 's|^steps = .*|steps = 5|' -e 's|^output_dir = .*|output_dir = "/tmp/grpo-cuda"|' \
  -e 's|^n = .*|n = 40|' -e 's|^every = .*|every = 5|' -e 's|^checkpoint_every = .*|checkpoint_every = 5|' \
  recipes/tiny-grpo.toml > /tmp/grpo-cuda.toml
rm -rf /tmp/grpo-cuda
"$BIN/thinkbench" train /tmp/grpo-cuda.toml 2>&1 | tail -n 12 || status=1
cp /tmp/grpo-cuda/metrics.jsonl "$OUT/grpo-cuda-metrics.jsonl" 2>/dev/null
ls /tmp/grpo-cuda/checkpoints 2>/dev/null || { echo "no checkpoint"; status=1; }

if [ -z "${SKIP_BENCH:-}" ]; then
step "4. speed beside transformers on the GPU"
models=/tmp/bench-models
"$py" scripts/bench_reference.py build --out "$models" 2>&1 | tail -n 2
: > "$OUT/bench.jsonl"
for spec in "tiny_deepseek_v3 f32 float32" "qwen2_1p5b_shape bf16 bfloat16"; do
  set -- $spec
  "$BIN/thinkbench" bench --model "$models/$1" --dtype "$2" --device cuda >> "$OUT/bench.jsonl" || status=1
  "$py" scripts/bench_reference.py run --model "$models/$1" --dtype "$3" --device cuda >> "$OUT/bench.jsonl" || status=1
done
"$py" scripts/bench_reference.py table "$OUT/bench.jsonl" | tee "$OUT/bench.md"
fi
echo; echo "device check: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
