#!/usr/bin/env bash
# Outside CI: export recipes/tiny-grpo.toml for TRL, run a few steps with the reference venv's
# python on this CPU, and show the run in the Train tab at 80x24.
#   scripts/trl-export-check.sh [STEPS]
set -euo pipefail
steps=${1:-2}
py=${PYREF:-$HOME/.cache/thinkbench/pyref/bin/python}
tb=${THINKBENCH:-target/release/thinkbench}
out=$(mktemp -d)
"$tb" export trl recipes/tiny-grpo.toml --out "$out/export"
"$py" "$out/export/train.py" --max-steps "$steps" --output-dir "$out/run"
tmux new-session -d -s trlcheck -x 80 -y 24 "$tb --train $out/run"
sleep 4; tmux capture-pane -p -t trlcheck
tmux send-keys -t trlcheck 2; sleep 2; tmux capture-pane -p -t trlcheck
tmux kill-session -t trlcheck
echo "run folder: $out/run"
