#!/usr/bin/env bash
# One GRPO step of recipes/r1-distill-qwen-1.5b-lora.toml at full size on a GPU: a random-weight
# model shaped like DeepSeek-R1-Distill-Qwen-1.5B (scripts/bench_reference.py builds it; the real
# weights are not needed to measure time and memory), the recipe's LoRA, G = 8, 2048 new tokens,
# micro-batches of 4. Prints the step's timings and the GPU's peak memory in use.
#
#   BIN=target/release scripts/device-check-grpo-1p5b.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
work=/tmp/grpo-1p5b
mkdir -p "$work"
"$py" scripts/bench_reference.py build --out "$work/models" 2>&1 | tail -n 1
model="$work/models/qwen2_1p5b_shape"
# Random weights speak no language: any tokenizer with the R1 chat template will do.
cp models/thinkbench-tiny/tokenizer.json models/thinkbench-tiny/tokenizer_config.json "$model/"
for i in $(seq 1 16); do echo "{\"prompt\": \"What is $i + $((i * 7))?\", \"answer\": \"$((i * 8))\"}"; done > "$work/problems.jsonl"
# zero_std = keep: random completions all score the same, and a skipped group would skip backward.
sed -e "s|^init = .*|init = \"$model\"|" -e "s|^path = .*|path = \"$work/problems.jsonl\"|" \
  -e "s|^eval_path = .*|eval_path = \"$work/problems.jsonl\"|" -e "s|^output_dir = .*|output_dir = \"$work/run\"|" \
  -e 's|^prompts_per_step = .*|prompts_per_step = 2|' -e 's|^steps = .*|steps = 1|' \
  -e 's|^zero_std = .*|zero_std = "keep"|' recipes/r1-distill-qwen-1.5b-lora.toml > "$work/recipe.toml"
rm -rf "$work/run"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$work/mem.csv" &
smi=$!
timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
"${timer[@]}" "$BIN/thinkbench" train "$work/recipe.toml" --no-eval > "$work/train.log" 2> "$work/time.log"
status=$?
kill $smi
tail -n 8 "$work/train.log"
grep -E "Maximum resident|Elapsed" "$work/time.log"
echo "GPU memory in use, peak: $(sort -n "$work/mem.csv" | tail -n 1) MiB"
"$py" - "$work/run/metrics.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if "step_time" in r:
        print({k: r[k] for k in ("step", "step_time", "rollout_time", "update_time", "completions/mean_length",
                                 "completions/clipped_ratio", "loss", "kl", "tokens_per_s") if k in r})
PY
cp "$work/run/metrics.jsonl" "$work/train.log" "$OUT/" 2>/dev/null
ls "$work/run/checkpoints"/*/ 2>/dev/null | head
exit $status
