#!/usr/bin/env python3
"""GRPO with TRL 1.16: @RECIPE_NAME@, exported by `thinkbench export trl @RECIPE_FILE@`.

    python train.py [--max-steps N] [--output-dir RUN]
    accelerate launch --config_file accelerate/multi_gpu.yaml train.py     # see README.md

Every training key of the recipe is set below, with the recipe key it comes from in a comment.
What TRL has no field for is done here in plain code (the learning-rate schedule, weight decay
on matrices only, leaving zero-variance groups out of the loss, frozen routers) or by the
callbacks in thinkbench_callback.py (DeepSeek-V3 expert balancing, greedy held-out evaluation,
the run folder thinkbench's Train tab reads: `thinkbench --train RUN`).

Execution settings of thinkbench's own trainer are not training semantics and are not carried
over: generation.workers (rollout threads), model.device (accelerate places the model),
train.log_every (console rhythm; the callback logs every step). train.threads sets torch's CPU
threads here, as it does in thinkbench.
"""

import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# --- the recipe (written by thinkbench export; edit the recipe and export again) --------------
RECIPE = json.loads(r'''@RECIPE_JSON@''')
SETTINGS = @SETTINGS@
# GRPOConfig fields, each from the recipe key in its comment.
GRPO_ARGS = dict(
@GRPO_ARGS@
)
# The rewards (rewards.py); eos_text is filled from the tokenizer.
REWARDS = @REWARDS@


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-steps", type=int, default=SETTINGS["steps"],
                   help="stop after this many GRPO steps (the schedule stays the recipe's)")
    p.add_argument("--output-dir", default=SETTINGS["output_dir"], help="the run folder")
    return p.parse_args()


def batch_shape(world):
    """per_device_train_batch_size and gradient_accumulation_steps for one optimiser step per
    generation batch of prompts_per_step x group_size completions (thinkbench's step)."""
    total = SETTINGS["prompts_per_step"] * SETTINGS["group_size"]
    if total % world:
        sys.exit(f"prompts_per_step x group_size = {total} does not divide among {world} processes")
    local = total // world
    per_device = max(d for d in range(1, min(SETTINGS["micro_batch_size"], local) + 1) if local % d == 0)
    return per_device, local // per_device


def lr_factor(step):
    """thinkbench's schedule (src/train/optim.rs lr_at) over the recipe's steps: linear warm-up
    reaching lr at step warmup_steps - 1, then cosine to lr * min_lr_ratio. `step` counts GRPO
    steps (each `iterations` optimiser updates share one)."""
    s = SETTINGS
    if step < s["warmup_steps"]:
        return (step + 1) / s["warmup_steps"]
    span = max(s["steps"] - s["warmup_steps"], 1)
    progress = min((step - s["warmup_steps"]) / span, 1.0)
    lo = s["min_lr_ratio"]
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))


def conversation(row):
    """The problem as chat messages: earlier questions with their answers, then the question.
    The model's own chat template renders them (TRL's conversational format)."""
    msgs = []
    for turn in row.get("earlier") or []:
        msgs.append({"role": "user", "content": turn["prompt"]})
        msgs.append({"role": "assistant", "content": turn["reply"]})
    msgs.append({"role": "user", "content": row["prompt"]})
    return msgs


def load_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def make_reward_funcs(rewards, tokenizer):
    """One TRL reward function per recipe reward (weights go to GRPOConfig.reward_weights).
    Each decodes the completion ids with special tokens, as thinkbench scores its text, and
    knows a completion finished by its last id being end-of-sentence."""
    eos_ids = set(SETTINGS["eos_ids"] or [tokenizer.eos_token_id])
    cache = {}

    def scored(completion_ids, answers):
        key = id(completion_ids)
        if key not in cache:
            cache.clear()
            out = []
            for ids, ans in zip(completion_ids, answers):
                text = tokenizer.decode(ids, skip_special_tokens=False)
                done = bool(ids) and ids[-1] in eos_ids
                s = rewards.score(text, ans, len(ids), done)
                s.update(text=text, tokens=len(ids), finished=done)
                out.append(s)
            cache[key] = (completion_ids, out)
        return cache[key][1]

    def make(name, first):
        def fn(prompts, completions, completion_ids, answer, log_extra=None, **kw):
            out = scored(completion_ids, answer)
            if first and log_extra is not None:
                # Columns the rollout log needs (gathered by TRL across processes).
                log_extra("tb_text", [s["text"] for s in out])
                log_extra("tb_tokens", [s["tokens"] for s in out])
                log_extra("tb_finished", [s["finished"] for s in out])
                log_extra("tb_correct", [s["correct"] for s in out])
                log_extra("tb_extracted", [s["extracted"] for s in out])
                log_extra("tb_answer", list(answer))
                log_extra("tb_level", list(kw.get("level") or [None] * len(out)))
            return [s["parts"][name] for s in out]

        fn.__name__ = name
        return fn

    return [make(n, i == 0) for i, n in enumerate(rewards.names())]


def main():
    args = parse_args()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    import rewards as tb_rewards
    from thinkbench_callback import BalanceCallback, ThinkbenchCallback

    if SETTINGS["threads"] and not torch.cuda.is_available():
        torch.set_num_threads(SETTINGS["threads"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device, accum = batch_shape(world)
    mu = GRPO_ARGS["num_iterations"]
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[SETTINGS["dtype"]]

    config = GRPOConfig(
        output_dir=args.output_dir,
        run_name=RECIPE["name"],
        seed=RECIPE["seed"],  # seed
        per_device_train_batch_size=per_device,  # train.micro_batch_size (divided to fit)
        gradient_accumulation_steps=accum,  # generation.prompts_per_step x group_size / micro batch
        steps_per_generation=accum,  # one optimiser update per batch of rollouts (x iterations)
        max_steps=args.max_steps * mu,  # train.steps (x grpo.iterations: TRL counts updates)
        shuffle_dataset=False,  # train.jsonl is already in thinkbench's draw order
        logging_steps=mu,  # one metrics line per GRPO step
        save_steps=SETTINGS["checkpoint_every"] * mu,  # train.checkpoint_every
        save_total_limit=SETTINGS["keep_checkpoints"],  # train.keep_checkpoints
        report_to=[],
        log_completions=False,  # the callback writes rollouts.jsonl from the trainer's log
        model_init_kwargs={"dtype": dtype},  # model.dtype
        bf16=SETTINGS["dtype"] == "bf16",
        **GRPO_ARGS,
    )

    tokenizer = AutoTokenizer.from_pretrained(SETTINGS["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(SETTINGS["model"], dtype=dtype)
    if not SETTINGS["train_router"]:
        # model.train_router = false: router weights frozen; their balancing bias is a buffer
        # moved only by BalanceCallback.
        for name, p in model.named_parameters():
            if name.endswith(".mlp.gate.weight"):
                p.requires_grad_(False)

    peft_config = None
    if SETTINGS["lora"]:
        from peft import LoraConfig

        lora = SETTINGS["lora"]
        # [lora]: W x + (alpha / rank) B A x on the named modules; the reference policy is the
        # base with the adapters off (TRL does the same with PEFT).
        peft_config = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                 target_modules=lora["target_modules"], lora_dropout=0.0,
                                 bias="none", task_type="CAUSAL_LM")

    rows = load_rows(os.path.join(HERE, SETTINGS["train_data"]))
    need = args.max_steps * SETTINGS["prompts_per_step"]
    if len(rows) < need:
        sys.exit(f"{SETTINGS['train_data']} has {len(rows)} problems; {need} are needed")
    dataset = Dataset.from_list([
        {"prompt": conversation(r), "answer": r["answer"], "level": r.get("level")} for r in rows
    ])

    rewards = tb_rewards.Rewards(dict(REWARDS, eos_text=tokenizer.decode(
        [SETTINGS["eos_ids"][0] if SETTINGS["eos_ids"] else tokenizer.eos_token_id])))

    class _AdamW(torch.optim.AdamW):
        """AdamW that leaves the weights, moments and step count alone while `skip()` holds."""

        def __init__(self, skip, *a, **kw):
            super().__init__(*a, **kw)
            self._tb_skip = skip

        def step(self, closure=None):
            if self._tb_skip():
                return None
            return super().step(closure)

    class Trainer(GRPOTrainer):
        def create_optimizer(self, model=None):
            # optimizer.*: AdamW with decoupled weight decay on matrices only (thinkbench does
            # not decay norms or biases; HF's default picks by name instead).
            if self.optimizer is None:
                params = [p for p in self.model.parameters() if p.requires_grad]
                o = SETTINGS["optimizer"]
                self.optimizer = _AdamW(
                    lambda: getattr(self, "_tb_nothing_to_train", False),
                    [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o["weight_decay"]},
                     {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                    lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
            return self.optimizer

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer, lambda update: lr_factor(update // mu))
            return self.lr_scheduler

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._tb_rewards = out  # every process's rows, in order
            return out

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if SETTINGS["zero_std"] == "skip" and self.model.training:
                out = self._skip_zero_std(out)
            return out

        def _skip_zero_std(self, out):
            # grpo.zero_std = "skip": a group whose rewards are all equal leaves the loss and its
            # normaliser, as in thinkbench (TRL alone would keep its tokens in the denominator).
            w = self.reward_weights.to(self._tb_rewards.device)
            total = (self._tb_rewards * w.unsqueeze(0)).nansum(dim=1).view(-1, self.num_generations)
            same = (total == total[:, :1]).all(dim=1).repeat_interleave(self.num_generations)
            n = out["completion_mask"].size(0)
            rank = self.accelerator.process_index
            keep = (~same[rank * n:(rank + 1) * n]).to(out["completion_mask"].device)
            out["completion_mask"] = out["completion_mask"] * keep.unsqueeze(1).int()
            out["num_items_in_batch"] = self.accelerator.gather(out["completion_mask"].sum()).sum()
            self._tb_groups_trained = int((~same).sum().item()) // self.num_generations
            # Every group skipped: thinkbench makes no update at all. TRL would still step AdamW
            # with zero gradients, and its moments would move the weights; _AdamW does nothing
            # for the `iterations` updates of this batch.
            self._tb_nothing_to_train = self._tb_groups_trained == 0
            return out

    trainer = Trainer(
        model=model,
        reward_funcs=make_reward_funcs(rewards, tokenizer),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    eval_rows = None
    if SETTINGS["eval"]:
        eval_rows = load_rows(os.path.join(HERE, SETTINGS["eval_data"]))[: SETTINGS["eval"]["n"]]
    trainer.add_callback(ThinkbenchCallback(
        trainer, RECIPE, rewards, conversation, eval_rows, SETTINGS))
    if SETTINGS["bias_update_rate"]:
        trainer.add_callback(BalanceCallback(trainer.model, SETTINGS["bias_update_rate"], mu))
    trainer.train()

    final = os.path.join(args.output_dir, "final")
    save_dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[SETTINGS["save_dtype"]]
    trainer.model.to(save_dtype)  # model.save_dtype (checkpoints keep the training dtype)
    trainer.save_model(final)
    if SETTINGS["export_to"]:
        trainer.save_model(SETTINGS["export_to"])  # export_to


if __name__ == "__main__":
    main()
