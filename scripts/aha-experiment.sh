#!/usr/bin/env bash
# "An aha in miniature" end to end: the SFT model (recipes/aha-sft.toml, trained if missing), three
# GRPO seeds (recipes/aha-grpo.toml), and the sampled before/after evaluation of each, by level:
# pass@1 and pass@8, the share of long answers, reasoning tokens of right and wrong answers,
# checks and waits per answer, and how often a wait followed a real slip. Writes the reports to
# runs/aha/*.json and prints the README's tables. SEEDS="1 2 3" and N=240 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/thinkbench
seeds=${SEEDS:-1 2 3}
n=${N:-240}
out=runs/aha
mkdir -p "$out"
[[ -f models/thinkbench-aha/config.json ]] || "$bin" train recipes/aha-sft.toml
evaluate() { # MODEL REPORT
  "$bin" eval --model "$1" --task multiplication --n "$n" --samples 8 --temperature 1 \
    --max-new-tokens 700 --seed 0 --json > "$2"
}
[[ -f $out/sft.json ]] || evaluate models/thinkbench-aha "$out/sft.json"
for s in $seeds; do
  run=runs/aha-grpo-$s
  "$bin" train recipes/aha-grpo.toml --set seed=$s --set output_dir=$run
  last=$(ls -d $run/checkpoints/step-* | sort | tail -1)
  [[ -f $out/grpo-$s.json ]] || evaluate "$last" "$out/grpo-$s.json"
done
python3 scripts/aha-table.py "$out/sft.json" $(for s in $seeds; do echo "$out/grpo-$s.json"; done)
