# Sourced by scripts/bench_grpo.sh and scripts/bench_grpo_memory.sh: the GRPO recipe both
# benchmarks run. The fixed part is the issue's benchmark setting (G = 8, 2 prompts per step,
# temperature 1, DAPO's overlong penalty as the reward, β = 0.04, `dapo`, μ = 1, AdamW at 1e-6,
# micro-batches of 8); the arguments are what the two benchmarks vary.
#
#   grpo_bench_recipe NAME WORK_DIR MODEL_DIR MAX_NEW_TOKENS WORKERS STEPS THREADS
# prints the recipe; the run goes to WORK_DIR/run, the prompts are WORK_DIR/prompts.jsonl.
grpo_bench_recipe() {
  cat <<TOML
kind = "grpo"
name = "$1"
seed = 1
output_dir = "$2/run"
[model]
init = "$3"
[data]
path = "$2/prompts.jsonl"
[rewards.overlong]
weight = 1.0
buffer = 32
[generation]
group_size = 8
prompts_per_step = 2
max_new_tokens = $4
temperature = 1.0
top_p = 1.0
workers = $5
[optimizer]
lr = 1e-6
betas = [0.9, 0.999]
eps = 1e-8
weight_decay = 0.0
warmup_steps = 0
min_lr_ratio = 1.0
grad_clip = 1.0
[grpo]
beta = 0.04
loss = "dapo"
iterations = 1
[train]
steps = $6
micro_batch_size = 8
threads = $7
checkpoint_every = 100000
TOML
}
