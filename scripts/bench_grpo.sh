#!/usr/bin/env bash
# GRPO speed, thinkbench beside TRL's GRPOTrainer, same machine, same configuration, one run:
# the tiny 4-layer deepseek_v3 benchmark model (scripts/bench_reference.py `tiny_deepseek_v3`) in
# f32 on the CPU, G = 8 completions per prompt, 2 prompts per step (16 completions of up to 64
# tokens), temperature 1.0, β = 0.04 (a frozen reference model), loss "dapo", μ = 1, AdamW.
#
#   scripts/bench_grpo.sh   # BENCH_THREADS (default 2); BENCH_GRPO_STEPS (default 12);
#                           # BENCH_GRPO_ROUNDS (default 3)
#
# Seconds per optimiser step (rollout + reference + update), the median after 2 warm-up steps,
# for each of BENCH_GRPO_ROUNDS rounds in which the engines take turns; the table gives the
# median of the rounds' medians.
# Threads: thinkbench runs BENCH_THREADS rollout workers (each its own model copy) on one libtorch
# thread each — its recommended CPU setup for tiny models; TRL runs with torch.set_num_threads
# (BENCH_THREADS, and 1 as well: on a busy machine libtorch's OpenMP threads can stall).
# The TRL side needs TRL 1.16 in the reference environment (~/.cache/thinkbench/pyref); the script
# installs it from the Python package index when missing, and runs thinkbench alone if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/grpo-bench-recipe.sh
threads="${BENCH_THREADS:-2}"
steps="${BENCH_GRPO_STEPS:-12}"
rounds="${BENCH_GRPO_ROUNDS:-3}"
models="${XDG_CACHE_HOME:-$HOME/.cache}/thinkbench/bench-models"
py="$(scripts/setup-pyref.sh)"
mkdir -p "$models"
"$py" scripts/bench_reference.py build --out "$models" >&2
# The benchmark model with a tokenizer and chat template (the built-in model's: its ids fit in the
# model's 1024-entry vocabulary), and 64 prompts of equal length.
model="$models/tiny_deepseek_v3_grpo"
if [ ! -f "$model/tokenizer.json" ]; then
  rm -rf "$model.tmp" && cp -r "$models/tiny_deepseek_v3" "$model.tmp"
  cp models/thinkbench-tiny/tokenizer.json models/thinkbench-tiny/tokenizer_config.json "$model.tmp/"
  mv "$model.tmp" "$model"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$py" - "$work/prompts.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(64):
        a, b = 1000 + 37 * i, 2000 + 91 * i
        f.write(json.dumps({"prompt": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n")
PY
grpo_bench_recipe bench-grpo "$work" "$model" 64 "$threads" "$steps" 1 > "$work/bench.toml"
results="target/bench-grpo.jsonl"
: > "$results"
if ! "$py" -c 'import trl, sys; sys.exit(0 if trl.__version__.startswith("1.16") else 1)' 2>/dev/null; then
  echo "bench-grpo: installing TRL 1.16 into the reference environment" >&2
  "$(dirname "$py")/pip" install --quiet "trl==1.16.*" >&2 || true
fi
have_trl=0
"$py" -c 'import trl' 2>/dev/null && have_trl=1
[ "$have_trl" = 1 ] || echo "bench-grpo: TRL is not installed and could not be installed; thinkbench alone" >&2
# The two sides take turns, round after round: this shared machine's speed drifts by tens of
# percent over a minute, and alternating gives both the same share of slow and fast spells.
for round in $(seq "$rounds"); do
  echo "bench-grpo: round $round/$rounds: thinkbench ($threads threads, $steps steps)" >&2
  rm -rf "$work/run"
  ./target/release/thinkbench train "$work/bench.toml" --no-eval > /dev/null
  "$py" - "$work/run/metrics.jsonl" "$threads" >> "$results" <<'PY'
import json, statistics, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step_time"' in l]
t = [s["step_time"] for s in steps][2:]
print(json.dumps(dict(engine="thinkbench (rollout workers, 1 libtorch thread each)", threads=int(sys.argv[2]), steps=len(t),
                      s_per_step_median=statistics.median(t), s_per_step_min=min(t),
                      rollout_s_median=statistics.median([s["rollout_time"] for s in steps][2:]),
                      update_s_median=statistics.median([s["update_time"] for s in steps][2:]),
                      mean_completion_length=statistics.mean(s["completions/mean_length"] for s in steps))))
PY
  if [ "$have_trl" = 1 ]; then
    for t in $(echo "$threads 1" | tr ' ' '\n' | awk '!seen[$0]++'); do
      echo "bench-grpo: round $round/$rounds: TRL ($t threads, $steps steps)" >&2
      "$py" scripts/bench_grpo_trl.py --model "$model" --data "$work/prompts.jsonl" --threads "$t" \
        --steps "$steps" --out "$work/trl" 2>/dev/null | tail -n 1 >> "$results"
    done
  fi
done
"$py" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sides = {}
for r in rows:
    sides.setdefault((r["engine"], r["threads"]), []).append(r)
print("| engine | threads | s/step (median of the rounds' medians) | rounds' medians | s/step (best) | mean completion length | thinkbench speed-up (median) |")
print("|---|---|---|---|---|---|---|")
ours = None  # the first side is thinkbench's
for (engine, threads), rs in sides.items():
    med = statistics.median(r["s_per_step_median"] for r in rs)
    first = ours is None
    ours = med if first else ours
    each = ", ".join(f"{r['s_per_step_median']:.3f}" for r in rs)
    best = min(r["s_per_step_min"] for r in rs)
    length = statistics.mean(r["mean_completion_length"] for r in rs)
    ratio = "" if first else f"{med / ours:.2f}x"
    print(f"| {engine} | {threads} | {med:.3f} | {each} | {best:.3f} | {length:.1f} | {ratio} |")
PY
echo "raw results: $results" >&2
