#!/usr/bin/env bash
# Outside CI: export recipes/tiny-grpo.toml for TRL and run it for a few steps with the reference
# venv's python on this CPU, three ways: as exported (then shown in the Train tab at 80x24), with
# a [lora] section (PEFT), and as two processes under `accelerate launch` (the multi-GPU path's
# data split and gradient sync, on the CPU with gloo). Installs TRL 1.16 and PEFT into the
# reference environment once.
#   scripts/trl-export-check.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-2}
py=${PYREF:-$HOME/.cache/thinkbench/pyref/bin/python}
tb=${THINKBENCH:-target/release/thinkbench}
"$py" -c 'import trl, peft' 2>/dev/null || "$(dirname "$py")/pip" install --quiet "trl==1.16.*" peft
out=$(mktemp -d)

echo "== 1. the built-in recipe, $steps steps"
"$tb" export trl recipes/tiny-grpo.toml --out "$out/export"
"$py" "$out/export/train.py" --max-steps "$steps" --output-dir "$out/run"
tmux new-session -d -s trlcheck -x 80 -y 24 "$tb --train $out/run"
sleep 4; tmux capture-pane -p -t trlcheck
tmux send-keys -t trlcheck 2; sleep 2; tmux capture-pane -p -t trlcheck
tmux kill-session -t trlcheck

echo "== 2. with [lora] (PEFT adapters on the attention projections)"
cp recipes/tiny-grpo.toml "$out/tiny-grpo-lora.toml"
printf '\n[lora]\nrank = 8\nalpha = 16.0\ntarget_modules = ["q_b_proj", "kv_b_proj", "o_proj"]\n' >> "$out/tiny-grpo-lora.toml"
"$tb" export trl "$out/tiny-grpo-lora.toml" --out "$out/export-lora"
"$py" "$out/export-lora/train.py" --max-steps "$steps" --output-dir "$out/run-lora"
test -s "$out/run-lora/metrics.jsonl"

echo "== 3. two processes (accelerate launch --cpu --num_processes 2)"
"$(dirname "$py")/accelerate" launch --cpu --num_processes 2 --num_machines 1 \
  --mixed_precision no --dynamo_backend no \
  "$out/export/train.py" --max-steps "$steps" --output-dir "$out/run-2proc"
test -s "$out/run-2proc/metrics.jsonl"
for r in run run-lora run-2proc; do
  echo "$r: $(grep -c '"reward"' "$out/$r/metrics.jsonl") step lines, $(wc -l < "$out/$r/rollouts.jsonl" 2>/dev/null || echo 0) rollout lines"
done
echo "run folders: $out"
