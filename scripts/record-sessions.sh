#!/usr/bin/env bash
# Re-records the example sessions in sessions/ (opened by `thinkbench open sessions/<file>`, the
# docs and the tests). MODEL=DIR picks the model; the default is the workbench's default model
# (src/cli/demo.rs). Run after the default model changes: `make build && scripts/record-sessions.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/thinkbench
model=(); [[ -n "${MODEL:-}" ]] && model=(--model "$MODEL")
mkdir -p sessions
"$bin" record "${model[@]}" --out sessions/arithmetic.json --name "Arithmetic, with a regenerated branch" \
  --think-budget 48 --max-tokens 96 --seed 1 --branches 1 \
  "What is 17 + 25?" "Now explain the carry step."
"$bin" record "${model[@]}" --out sessions/thinking-budget.json --name "A thought closed by the budget" \
  --think-budget 16 --max-tokens 64 --seed 2 \
  "Is 91 a prime number? Think it through."
"$bin" record "${model[@]}" --out sessions/greedy.json --name "Greedy decoding" \
  --temperature 0 --think-budget 32 --max-tokens 80 --seed 0 \
  "Name three colours of the rainbow."
