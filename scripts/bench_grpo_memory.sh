#!/usr/bin/env bash
# GRPO memory with a real-sized vocabulary: a 2-layer qwen2 with R1-Distill-Qwen's 151 936-entry
# vocabulary (random weights, f32, built here once), 16 completions of up to 512 tokens per step,
# micro-batches of 8, one worker. The logits of one micro-batch at once would be 8 × 512 × 151 936
# f32 = 2.5 GB, and the log-softmax, the entropy and their gradients as much again each; the
# trainer takes the head a slice of positions at a time (src/train/head.rs).
# Prints the peak resident memory of `thinkbench train` for 2 steps.
#
#   scripts/bench_grpo_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/grpo-bench-recipe.sh
py="$(scripts/setup-pyref.sh)"
models="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench/bench-models"
model="$models/qwen2_big_vocab"
if [ ! -f "$model/tokenizer.json" ]; then
  "$py" - "$model.tmp" <<'PY'
import sys, torch, transformers
torch.manual_seed(0)
cfg = transformers.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, vocab_size=151936,
                               max_position_embeddings=4096, tie_word_embeddings=False,
                               bos_token_id=0, eos_token_id=1)
transformers.Qwen2ForCausalLM(cfg).to(torch.float32).save_pretrained(sys.argv[1])
PY
  # The built-in model's tokenizer: its ids fit in any vocabulary of 1024 or more.
  cp models/thinkbench-tiny/tokenizer.json models/thinkbench-tiny/tokenizer_config.json "$model.tmp/"
  mv "$model.tmp" "$model"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$py" - "$work/prompts.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(16):
        f.write(json.dumps({"prompt": f"What is {100 + i} + {200 + 3 * i}?", "answer": str(300 + 4 * i)}) + "\n")
PY
grpo_bench_recipe bench-grpo-memory "$work" "$model" 512 1 2 2 > "$work/memory.toml"
echo "bench-grpo-memory: 2 GRPO steps, vocabulary 151 936, completions up to 512 tokens" >&2
"$py" - "$work" <<'PY'
import json, resource, subprocess, sys
work = sys.argv[1]
subprocess.run(["./target/release/thinkbench", "train", f"{work}/memory.toml", "--no-eval"],
               check=True, stdout=subprocess.DEVNULL)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
steps = [json.loads(l) for l in open(f"{work}/run/metrics.jsonl") if '"step_time"' in l]
longest = int(max(s["completions/max_length"] for s in steps))
logits = 8 * longest * 151936 * 4
print(f"GRPO, vocabulary 151 936, 8 completions of up to {longest} tokens per micro-batch: "
      f"peak RSS {peak / 1e9:.2f} GB (one micro-batch's logits at once would be {logits / 1e9:.2f} GB); "
      f"{sum(s['step_time'] for s in steps) / len(steps):.1f} s per step")
PY
