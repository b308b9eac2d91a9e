#!/usr/bin/env bash
# Re-records the example sessions in sessions/ (opened by `thinkbench open sessions/<file>`, the
# docs and the tests). MODEL=DIR picks the model; the default is the workbench's default model
# (src/cli/demo.rs). Run after the default model changes: `make build && scripts/record-sessions.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/thinkbench
model=(); [[ -n "${MODEL:-}" ]] && model=(--model "$MODEL")
mkdir -p sessions
"$bin" record "${model[@]}" --out sessions/arithmetic.json --name "Two sums, with a regenerated branch" \
  --max-tokens 256 --seed 1 --branches 1 \
  "What is 4821 - 397?" "Compute 958 + 67."
"$bin" record "${model[@]}" --out sessions/thinking-budget.json --name "A thought closed by the budget" \
  --think-budget 24 --max-tokens 128 --seed 2 \
  "What is 123456 + 98765?"
"$bin" record "${model[@]}" --out sessions/greedy.json --name "Greedy decoding, a 7-digit sum the model cannot do" \
  --temperature 0 --max-tokens 320 --seed 0 \
  "How much is 4718265 + 3904177?"
"$bin" record "${model[@]}" --out sessions/follow-ups.json --name "Three questions in a row (earlier reasoning dropped, as R1's template does)" \
  --max-tokens 256 --seed 4 \
  "What is 47 + 8?" "Compute 4821 - 397." "How much is 3562 + 1289?"
# "An aha in miniature": the multiplication model after GRPO (recipes/aha-grpo.toml, seed 1) slips,
# its check catches it, it writes "wait" and redoes the product right.
"$bin" record --model models/thinkbench-aha-grpo --out sessions/aha-wait.json \
  --name "A slip, a failed check, wait, and the product redone (multiplication model after GRPO)" \
  --max-tokens 700 --temperature 1 --seed 1 \
  "Compute 58 * 3."
